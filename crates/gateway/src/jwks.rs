//! Signing keys from an app's identity provider, read from its JWKS URL
//! (`jwks_url`): keys are chosen by the token's `kid`, fetched at start,
//! again on the app's schedule (`jwks_refresh_seconds`), and at once when
//! a token names a `kid` not yet known (at most once per
//! [`UNKNOWN_KID_INTERVAL`], so made-up `kid`s cannot hammer the
//! provider). What is kept is bounded: at most [`MAX_KEYS`] keys from a
//! document of at most [`MAX_DOCUMENT`] bytes.

use jsonwebtoken::jwk::{AlgorithmParameters, EllipticCurve, Jwk, JwkSet};
use jsonwebtoken::{Algorithm, DecodingKey};
use parking_lot::{Mutex, RwLock};
use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Keys kept from one JWKS at most.
pub const MAX_KEYS: usize = 32;
/// Largest JWKS document read, in bytes.
pub const MAX_DOCUMENT: usize = 256 * 1024;
/// Least time between two fetches asked for by unknown `kid`s.
pub const UNKNOWN_KID_INTERVAL: Duration = Duration::from_secs(10);
const FETCH_TIMEOUT: Duration = Duration::from_secs(5);

/// One usable key.
#[derive(Clone)]
pub struct Key {
    pub key: DecodingKey,
    pub algorithms: Vec<Algorithm>,
}

/// An app's JWKS.
pub struct Jwks {
    url: String,
    http: reqwest::Client,
    keys: RwLock<Arc<HashMap<String, Key>>>,
    /// The last fetch asked for by an unknown `kid`.
    last_unknown: Mutex<Option<Instant>>,
    /// One fetch at a time.
    fetching: tokio::sync::Mutex<()>,
    /// Why the last fetch failed, for refusals and logs.
    last_error: RwLock<Option<String>>,
}

impl std::fmt::Debug for Jwks {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Jwks").field("url", &self.url).finish()
    }
}

/// What a key may verify: its `alg` when it names one, else what its type
/// allows.
fn algorithms(jwk: &Jwk) -> Vec<Algorithm> {
    let by_type = match &jwk.algorithm {
        AlgorithmParameters::RSA(_) => vec![
            Algorithm::RS256,
            Algorithm::RS384,
            Algorithm::RS512,
            Algorithm::PS256,
            Algorithm::PS384,
            Algorithm::PS512,
        ],
        AlgorithmParameters::EllipticCurve(p) => match p.curve {
            EllipticCurve::P256 => vec![Algorithm::ES256],
            EllipticCurve::P384 => vec![Algorithm::ES384],
            _ => vec![],
        },
        AlgorithmParameters::OctetKeyPair(_) => vec![Algorithm::EdDSA],
        // A shared secret has no place in a public key set.
        AlgorithmParameters::OctetKey(_) => vec![],
    };
    match &jwk.common.key_algorithm {
        Some(named) => by_type
            .into_iter()
            .filter(|a| format!("{a:?}") == format!("{named:?}"))
            .collect(),
        None => by_type,
    }
}

/// The usable keys of a JWKS document, by `kid` (a key without one is
/// kept as `""`, used only by tokens without a `kid`).
pub fn parse(document: &[u8]) -> Result<HashMap<String, Key>, String> {
    let set: JwkSet =
        serde_json::from_slice(document).map_err(|e| format!("not a JWKS document: {e}"))?;
    let mut keys = HashMap::new();
    for jwk in &set.keys {
        if keys.len() == MAX_KEYS {
            tracing::warn!(kept = MAX_KEYS, "JWKS has more keys than are kept");
            break;
        }
        if jwk
            .common
            .public_key_use
            .as_ref()
            .is_some_and(|u| !matches!(u, jsonwebtoken::jwk::PublicKeyUse::Signature))
        {
            continue;
        }
        let algorithms = algorithms(jwk);
        if algorithms.is_empty() {
            continue;
        }
        let Ok(key) = DecodingKey::from_jwk(jwk) else {
            continue;
        };
        let kid = jwk.common.key_id.clone().unwrap_or_default();
        keys.insert(kid, Key { key, algorithms });
    }
    Ok(keys)
}

impl Jwks {
    pub fn new(url: String) -> Jwks {
        let http = reqwest::Client::builder()
            .timeout(FETCH_TIMEOUT)
            .build()
            .unwrap_or_default();
        Jwks {
            url,
            http,
            keys: RwLock::new(Arc::new(HashMap::new())),
            last_unknown: Mutex::new(None),
            fetching: tokio::sync::Mutex::new(()),
            last_error: RwLock::new(None),
        }
    }

    pub fn url(&self) -> &str {
        &self.url
    }

    /// The key a token with `kid` (or none) is verified with.
    pub fn key(&self, kid: Option<&str>) -> Option<Key> {
        let keys = Arc::clone(&self.keys.read());
        match kid {
            Some(kid) => keys.get(kid).cloned(),
            // No `kid`: only a set with a single key says which one.
            None if keys.len() == 1 => keys.values().next().cloned(),
            None => None,
        }
    }

    /// Why the keys could not be fetched last time, if they could not.
    pub fn last_error(&self) -> Option<String> {
        self.last_error.read().clone()
    }

    /// Fetches the set now; on failure the keys already known stay.
    pub async fn refresh(&self) -> Result<usize, String> {
        let _one = self.fetching.lock().await;
        let result = self.fetch().await;
        match &result {
            Ok(keys) => {
                let n = keys.len();
                *self.keys.write() = Arc::new(keys.clone());
                *self.last_error.write() = None;
                return Ok(n);
            }
            Err(e) => *self.last_error.write() = Some(e.clone()),
        }
        result.map(|k| k.len())
    }

    /// A token named a `kid` not known: fetch again, unless that was done
    /// within [`UNKNOWN_KID_INTERVAL`].
    pub async fn refresh_for_unknown(&self) {
        {
            let mut last = self.last_unknown.lock();
            if last.is_some_and(|at| at.elapsed() < UNKNOWN_KID_INTERVAL) {
                return;
            }
            *last = Some(Instant::now());
        }
        if let Err(e) = self.refresh().await {
            tracing::warn!(url = %self.url, error = %e, "cannot fetch the JWKS for an unknown kid");
        }
    }

    async fn fetch(&self) -> Result<HashMap<String, Key>, String> {
        let unreachable = |e: String| format!("JWKS {} is unreachable: {e}", self.url);
        let mut response = self
            .http
            .get(&self.url)
            .send()
            .await
            .map_err(|e| unreachable(e.to_string()))?;
        if !response.status().is_success() {
            return Err(format!(
                "JWKS {} answered HTTP {}",
                self.url,
                response.status()
            ));
        }
        let mut document = Vec::new();
        while let Some(chunk) = response
            .chunk()
            .await
            .map_err(|e| unreachable(e.to_string()))?
        {
            if document.len() + chunk.len() > MAX_DOCUMENT {
                return Err(format!(
                    "JWKS {} is larger than {MAX_DOCUMENT} bytes",
                    self.url
                ));
            }
            document.extend_from_slice(&chunk);
        }
        parse(&document).map_err(|e| format!("JWKS {}: {e}", self.url))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn keys_are_kept_by_kid_with_the_algorithms_their_type_allows() {
        let doc = json!({"keys": [
            {"kty": "EC", "crv": "P-256", "kid": "k1", "use": "sig",
             "x": "omeVFVeUH-0erHUv1SI2pYKnXEyUfS5OttDqsVzWqgQ", "y": "qv876gnwxlWPYEgf46-ysrG3kiBHPnzCrxkJgNFSjTQ"},
            {"kty": "EC", "crv": "P-256", "kid": "enc", "use": "enc",
             "x": "omeVFVeUH-0erHUv1SI2pYKnXEyUfS5OttDqsVzWqgQ", "y": "qv876gnwxlWPYEgf46-ysrG3kiBHPnzCrxkJgNFSjTQ"},
            {"kty": "oct", "kid": "secret", "k": "c2VjcmV0"},
        ]});
        let keys = parse(doc.to_string().as_bytes()).unwrap();
        assert_eq!(keys.len(), 1, "encryption and symmetric keys are not kept");
        assert_eq!(keys["k1"].algorithms, vec![Algorithm::ES256]);
        assert!(parse(b"{}").is_err());
        assert!(parse(b"not json").is_err());
    }

    #[test]
    fn a_set_is_bounded() {
        let one = json!({"kty": "EC", "crv": "P-256",
            "x": "omeVFVeUH-0erHUv1SI2pYKnXEyUfS5OttDqsVzWqgQ", "y": "qv876gnwxlWPYEgf46-ysrG3kiBHPnzCrxkJgNFSjTQ"});
        let keys: Vec<_> = (0..MAX_KEYS + 10)
            .map(|i| {
                let mut k = one.clone();
                k["kid"] = json!(format!("k{i}"));
                k
            })
            .collect();
        let parsed = parse(json!({ "keys": keys }).to_string().as_bytes()).unwrap();
        assert_eq!(parsed.len(), MAX_KEYS);
    }
}
