//! Who is calling: user JWTs, API keys, anonymous connections, and the
//! channel tokens the server API signs.

use crate::config::AppConfig;
use crate::jwks::Jwks;
use herald_history::Retention;
use herald_protocol::api::Permission;
use herald_protocol::server::SenderType;
use herald_protocol::{ErrorBody, ErrorCode};
use jsonwebtoken::errors::ErrorKind;
use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

/// Longest user JWT or channel token accepted, in bytes.
pub const MAX_TOKEN_BYTES: usize = 8 * 1024;

/// Largest `claims` object a channel token may carry, in bytes of JSON.
pub const MAX_TOKEN_CLAIMS_BYTES: usize = 4096;

/// An app installation with its keys ready for use.
pub struct App {
    pub config: AppConfig,
    secret: Option<(EncodingKey, DecodingKey)>,
    public: Option<(DecodingKey, Vec<Algorithm>)>,
    /// The identity provider's keys, where the app names a `jwks_url`.
    pub jwks: Option<Arc<Jwks>>,
    pub retention: Retention,
}

impl App {
    fn new(config: AppConfig) -> Result<App, String> {
        let secret = config.jwt_secret.as_ref().map(|s| {
            (
                EncodingKey::from_secret(s.as_bytes()),
                DecodingKey::from_secret(s.as_bytes()),
            )
        });
        let public = match &config.jwt_public_key {
            None => None,
            Some(pem) => Some(public_key(pem).map_err(|e| format!("app `{}`: {e}", config.id))?),
        };
        let retention = Retention {
            size: config.history_size,
            ttl: Duration::from_secs(config.history_ttl_seconds),
        };
        let jwks = config.jwks_url.clone().map(|url| Arc::new(Jwks::new(url)));
        Ok(App {
            config,
            secret,
            public,
            jwks,
            retention,
        })
    }

    pub fn id(&self) -> &str {
        &self.config.id
    }
}

impl std::fmt::Debug for App {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Keys stay out of logs.
        f.debug_struct("App")
            .field("id", &self.config.id)
            .finish_non_exhaustive()
    }
}

fn public_key(pem: &str) -> Result<(DecodingKey, Vec<Algorithm>), String> {
    if let Ok(k) = DecodingKey::from_rsa_pem(pem.as_bytes()) {
        return Ok((
            k,
            vec![Algorithm::RS256, Algorithm::RS384, Algorithm::RS512],
        ));
    }
    if let Ok(k) = DecodingKey::from_ec_pem(pem.as_bytes()) {
        return Ok((k, vec![Algorithm::ES256, Algorithm::ES384]));
    }
    Err("jwt_public_key is neither an RSA nor an EC public key in PEM".into())
}

/// Every configured app, by id and by API key.
pub struct Apps {
    by_id: HashMap<String, Arc<App>>,
    by_key: HashMap<String, Arc<App>>,
    by_anon_key: HashMap<String, Arc<App>>,
}

impl Apps {
    pub fn new(configs: &[AppConfig]) -> Result<Apps, String> {
        let mut by_id = HashMap::new();
        let mut by_key = HashMap::new();
        let mut by_anon_key = HashMap::new();
        for config in configs {
            let app = Arc::new(App::new(config.clone())?);
            for key in &config.api_keys {
                by_key.insert(key.clone(), Arc::clone(&app));
            }
            for key in &config.anon_keys {
                by_anon_key.insert(key.clone(), Arc::clone(&app));
            }
            by_id.insert(config.id.clone(), app);
        }
        Ok(Apps {
            by_id,
            by_key,
            by_anon_key,
        })
    }

    pub fn get(&self, id: &str) -> Option<&Arc<App>> {
        self.by_id.get(id)
    }

    pub fn by_api_key(&self, key: &str) -> Option<&Arc<App>> {
        self.by_key.get(key)
    }

    /// The app of a user token without an `app` claim: the one app whose
    /// `issuer` it carries (and, where the app names one, `audience`), else
    /// the only app there is. Never a guess between several.
    pub fn for_token(&self, iss: Option<&str>, aud: Option<&Value>) -> Option<&Arc<App>> {
        let carries = |want: &str| match aud {
            Some(Value::String(a)) => a == want,
            Some(Value::Array(all)) => all.iter().any(|a| a.as_str() == Some(want)),
            _ => false,
        };
        let mut found = self.by_id.values().filter(|app| {
            app.config.issuer.is_some()
                && app.config.issuer.as_deref() == iss
                && app.config.audience.as_deref().is_none_or(carries)
        });
        match (found.next(), found.next()) {
            (Some(app), None) => Some(app),
            (Some(_), Some(_)) => None,
            (None, _) => self.only(),
        }
    }

    /// Every app.
    pub fn iter(&self) -> impl Iterator<Item = &Arc<App>> {
        self.by_id.values()
    }

    /// The app of an anonymous key (`anon_…`).
    pub fn by_anon_key(&self, key: &str) -> Option<&Arc<App>> {
        self.by_anon_key.get(key)
    }

    pub fn only(&self) -> Option<&Arc<App>> {
        if self.by_id.len() == 1 {
            self.by_id.values().next()
        } else {
            None
        }
    }
}

/// Who a connection or request speaks for.
#[derive(Debug, Clone)]
pub enum Identity {
    User {
        sub: String,
        ctx: Map<String, Value>,
        /// Epoch seconds.
        exp: u64,
        /// The token's `role` and `email`, when it has either (read as
        /// InsForge reads them; kept boxed: most tokens carry neither).
        profile: Option<Box<Profile>>,
    },
    /// An app backend (API key).
    System,
    Anonymous,
}

/// What a user token says about its user beyond `sub`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Profile {
    pub role: Option<String>,
    pub email: Option<String>,
}

/// InsForge's role of a signed-in user whose token names none.
pub const DEFAULT_ROLE: &str = "authenticated";

impl Identity {
    /// A user's role: the token's `role`, `authenticated` by default;
    /// `None` for the app's backend and anonymous connections.
    pub fn role(&self) -> Option<&str> {
        match self {
            Identity::User { profile, .. } => Some(
                profile
                    .as_ref()
                    .and_then(|p| p.role.as_deref())
                    .unwrap_or(DEFAULT_ROLE),
            ),
            _ => None,
        }
    }

    /// A user's `email` claim.
    pub fn email(&self) -> Option<&str> {
        match self {
            Identity::User { profile, .. } => profile.as_ref().and_then(|p| p.email.as_deref()),
            _ => None,
        }
    }

    pub fn sender_type(&self) -> SenderType {
        match self {
            Identity::User { .. } => SenderType::User,
            Identity::System => SenderType::System,
            Identity::Anonymous => SenderType::Anonymous,
        }
    }

    pub fn sub(&self) -> Option<&str> {
        match self {
            Identity::User { sub, .. } => Some(sub),
            _ => None,
        }
    }

    /// The product context: a user's `ctx` claim; empty for others.
    pub fn context(&self) -> &Map<String, Value> {
        static EMPTY: std::sync::OnceLock<Map<String, Value>> = std::sync::OnceLock::new();
        match self {
            Identity::User { ctx, .. } => ctx,
            _ => EMPTY.get_or_init(Map::new),
        }
    }

    pub fn expires_at(&self) -> Option<u64> {
        match self {
            Identity::User { exp, .. } => Some(*exp),
            _ => None,
        }
    }
}

/// The claims of a user JWT.
#[derive(Debug, Serialize, Deserialize)]
pub struct UserClaims {
    pub sub: String,
    /// The app the token is for. A token from an app's own identity
    /// provider carries none: it is matched by its issuer and audience
    /// ([`Apps::for_token`]).
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub app: String,
    pub exp: u64,
    /// Not before (epoch seconds).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub nbf: Option<u64>,
    /// Issued at (epoch seconds).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub iat: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub role: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub email: Option<String>,
    /// The product context, read exactly (`herald_protocol::exact`).
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        deserialize_with = "herald_protocol::exact::opt_map"
    )]
    pub ctx: Option<Map<String, Value>>,
}

fn token_error(code: ErrorCode) -> ErrorBody {
    ErrorBody::new(code, "")
}

/// How far `nbf` and `iat` may lie in the future: clocks drift a little.
pub const CLOCK_LEEWAY_SECONDS: u64 = 5;

fn strict(algorithms: Vec<Algorithm>) -> Validation {
    let mut v = Validation::new(algorithms[0]);
    v.algorithms = algorithms;
    v.leeway = 0;
    v.validate_exp = true;
    v.set_required_spec_claims(&["exp"]);
    v
}

/// A user JWT's checks: `strict`, plus the app's issuer and audience when
/// it names them. `nbf` and `iat` are checked apart, with a leeway.
fn for_user(algorithms: Vec<Algorithm>, app: &AppConfig) -> Validation {
    let mut v = strict(algorithms);
    v.validate_nbf = false;
    let mut required = vec!["exp"];
    match &app.issuer {
        Some(iss) => {
            v.set_issuer(&[iss]);
            required.push("iss");
        }
        None => v.iss = None,
    }
    match &app.audience {
        Some(aud) => {
            v.set_audience(&[aud]);
            required.push("aud");
        }
        None => v.validate_aud = false,
    }
    v.set_required_spec_claims(&required);
    v
}

/// Whether the token's header names critical extensions (`crit`): Herald
/// implements none, so such a token must be refused (RFC 7515, 4.1.11).
fn has_crit_header(token: &str) -> bool {
    use base64::Engine;
    let Some(segment) = token.split('.').next() else {
        return false;
    };
    let Ok(bytes) = base64::engine::general_purpose::URL_SAFE_NO_PAD.decode(segment) else {
        return false;
    };
    serde_json::from_slice::<Map<String, Value>>(&bytes).is_ok_and(|h| h.contains_key("crit"))
}

fn decode_error(e: jsonwebtoken::errors::Error) -> ErrorBody {
    match e.kind() {
        ErrorKind::ExpiredSignature => token_error(ErrorCode::TokenExpired),
        _ => token_error(ErrorCode::InvalidToken),
    }
}

/// The app a user JWT is for and its header, read without verifying
/// anything: what decides the key to verify it with.
fn token_app<'a>(apps: &'a Apps, token: &str) -> Option<(&'a Arc<App>, jsonwebtoken::Header)> {
    #[derive(Deserialize)]
    struct Peek {
        #[serde(default)]
        app: Option<String>,
        #[serde(default)]
        iss: Option<String>,
        #[serde(default)]
        aud: Option<Value>,
    }
    if token.len() > MAX_TOKEN_BYTES {
        return None;
    }
    let peek = jsonwebtoken::dangerous::insecure_decode::<Peek>(token).ok()?;
    let peek = peek.claims;
    let app = match &peek.app {
        Some(id) => apps.get(id),
        None => apps.for_token(peek.iss.as_deref(), peek.aud.as_ref()),
    }?;
    let header = jsonwebtoken::decode_header(token).ok()?;
    Some((app, header))
}

/// As [`verify_user_token`], first fetching the app's JWKS again when the
/// token names a key it does not list yet (a rotation at the provider).
pub async fn verify_user_token_fetching(
    apps: &Apps,
    token: &str,
) -> Result<(Arc<App>, Identity), ErrorBody> {
    let unknown = token_app(apps, token).and_then(|(app, header)| {
        let jwks = app.jwks.as_ref()?;
        (header.alg != Algorithm::HS256 && jwks.key(header.kid.as_deref()).is_none())
            .then(|| Arc::clone(jwks))
    });
    if let Some(jwks) = unknown {
        jwks.refresh_for_unknown().await;
    }
    verify_user_token(apps, token)
}

/// Verifies a user JWT: signed with its app's key, not expired. Keys from
/// the app's JWKS are the ones already fetched
/// ([`verify_user_token_fetching`] fetches on an unknown `kid`).
pub fn verify_user_token(apps: &Apps, token: &str) -> Result<(Arc<App>, Identity), ErrorBody> {
    let invalid = || token_error(ErrorCode::InvalidToken);
    // The app names the key to verify with; nothing read here is trusted
    // until that verification passes.
    let (app, header) = token_app(apps, token).ok_or_else(invalid)?;
    if has_crit_header(token) {
        return Err(invalid());
    }
    // Where the app names its key, a `kid` must name that key (identity
    // providers send one; without `jwt_key_id` it is not looked at).
    if let (Some(kid), Some(want)) = (&header.kid, &app.config.jwt_key_id) {
        if kid != want {
            return Err(invalid());
        }
    }
    let from_jwks;
    let (key, algorithms) = match header.alg {
        Algorithm::HS256 => {
            let (_, key) = app.secret.as_ref().ok_or_else(invalid)?;
            (key, vec![Algorithm::HS256])
        }
        _ => match (&app.jwks, &app.public) {
            (Some(jwks), public) => match jwks.key(header.kid.as_deref()) {
                Some(found) => {
                    from_jwks = found;
                    (&from_jwks.key, from_jwks.algorithms.clone())
                }
                // A token without a `kid` may still be the configured key's.
                None if header.kid.is_none() && public.is_some() => {
                    let (key, algs) = public.as_ref().ok_or_else(invalid)?;
                    (key, algs.clone())
                }
                None => {
                    if let Some(why) = jwks.last_error() {
                        tracing::warn!(app = app.id(), error = %why, "a user token names a key the app's JWKS could not provide");
                    }
                    return Err(invalid());
                }
            },
            (None, Some((key, algs))) => (key, algs.clone()),
            (None, None) => return Err(invalid()),
        },
    };
    let data = jsonwebtoken::decode::<UserClaims>(token, key, &for_user(algorithms, &app.config))
        .map_err(decode_error)?;
    let claims = data.claims;
    if (!claims.app.is_empty() && claims.app != app.config.id) || claims.sub.is_empty() {
        return Err(invalid());
    }
    let now = jsonwebtoken::get_current_timestamp();
    let ahead = |at: Option<u64>| at.is_some_and(|t| t > now + CLOCK_LEEWAY_SECONDS);
    if ahead(claims.nbf) || ahead(claims.iat) {
        return Err(invalid());
    }
    if claims.exp.saturating_sub(now) > app.config.user_token_max_lifetime_seconds {
        return Err(invalid());
    }
    Ok((
        Arc::clone(app),
        Identity::User {
            sub: claims.sub,
            ctx: claims.ctx.unwrap_or_default(),
            exp: claims.exp,
            profile: (claims.role.is_some() || claims.email.is_some()).then(|| {
                Box::new(Profile {
                    role: claims.role,
                    email: claims.email,
                })
            }),
        },
    ))
}

/// Mints a user JWT with the app's HS256 secret (for `herald token` and
/// tests; production apps mint their own with any JWT library).
pub fn mint_user_token(secret: &str, claims: &UserClaims) -> Result<String, String> {
    jsonwebtoken::encode(
        &Header::new(Algorithm::HS256),
        claims,
        &EncodingKey::from_secret(secret.as_bytes()),
    )
    .map_err(|e| e.to_string())
}

/// The claims of a channel token.
#[derive(Debug, Serialize, Deserialize)]
struct ChannelClaims {
    typ: String,
    app: String,
    ch: String,
    claims: Value,
    perms: Vec<Permission>,
    iat: u64,
    exp: u64,
}

const CHANNEL_TOKEN_TYPE: &str = "herald.channel";

/// What a valid channel token grants.
#[derive(Debug, Clone)]
pub struct ChannelGrant {
    pub claims: Value,
    pub permissions: Vec<Permission>,
}

impl ChannelGrant {
    pub fn allows(&self, p: Permission) -> bool {
        self.permissions.contains(&p)
    }
}

/// Signs a channel token; returns it with its `exp` (epoch seconds).
pub fn sign_channel_token(
    app: &App,
    channel: &str,
    claims: Value,
    permissions: Option<Vec<Permission>>,
    ttl_seconds: u64,
    now_seconds: u64,
) -> Result<(String, u64), ErrorBody> {
    let failed = || token_error(ErrorCode::TokenSigningFailed);
    if !claims.is_object() || claims.to_string().len() > MAX_TOKEN_CLAIMS_BYTES {
        return Err(failed());
    }
    herald_broker_node::key::validate_channel_name(channel).map_err(|_| failed())?;
    let (key, _) = app.secret.as_ref().ok_or_else(failed)?;
    let exp = now_seconds + ttl_seconds;
    let mut perms = permissions.unwrap_or_else(|| vec![Permission::Subscribe, Permission::Publish]);
    perms.sort_by_key(|p| *p as u8);
    perms.dedup();
    let body = ChannelClaims {
        typ: CHANNEL_TOKEN_TYPE.into(),
        app: app.config.id.clone(),
        ch: channel.to_owned(),
        claims,
        perms,
        iat: now_seconds,
        exp,
    };
    let token =
        jsonwebtoken::encode(&Header::new(Algorithm::HS256), &body, key).map_err(|_| failed())?;
    Ok((token, exp))
}

/// Checks a channel token presented for `channel` (the prevalidation that
/// does not count toward rate limits).
pub fn verify_channel_token(
    app: &App,
    token: &str,
    channel: &str,
) -> Result<ChannelGrant, ErrorBody> {
    let invalid = || token_error(ErrorCode::InvalidToken);
    if token.len() > MAX_TOKEN_BYTES {
        return Err(invalid());
    }
    let (_, key) = app.secret.as_ref().ok_or_else(invalid)?;
    let data = jsonwebtoken::decode::<ChannelClaims>(token, key, &strict(vec![Algorithm::HS256]))
        .map_err(decode_error)?;
    let c = data.claims;
    if c.typ != CHANNEL_TOKEN_TYPE || c.app != app.config.id {
        return Err(invalid());
    }
    if c.ch != channel {
        return Err(token_error(ErrorCode::ChannelNameMismatch));
    }
    Ok(ChannelGrant {
        claims: c.claims,
        permissions: c.perms,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::dev_app;
    use serde_json::json;

    fn now() -> u64 {
        jsonwebtoken::get_current_timestamp()
    }

    fn apps() -> Apps {
        let other = AppConfig {
            id: "other".into(),
            api_keys: vec!["other-key".into()],
            jwt_secret: Some("other-secret".into()),
            ..AppConfig::default()
        };
        Apps::new(&[dev_app(), other]).unwrap()
    }

    fn user_token(secret: &str, app: &str, exp: u64) -> String {
        mint_user_token(
            secret,
            &UserClaims {
                sub: "u-1".into(),
                app: app.into(),
                exp,
                nbf: None,
                iat: None,
                role: None,
                email: None,
                ctx: Some(json!({"issue":"1"}).as_object().unwrap().clone()),
            },
        )
        .unwrap()
    }

    #[test]
    fn user_token_round_trip() {
        let apps = apps();
        let (app, id) = verify_user_token(
            &apps,
            &user_token(crate::config::DEV_JWT_SECRET, "dev", now() + 60),
        )
        .unwrap();
        assert_eq!(app.id(), "dev");
        assert_eq!(id.sub(), Some("u-1"));
        assert_eq!(id.context()["issue"], "1");
    }

    #[test]
    fn user_token_failures() {
        let apps = apps();
        let code = |t: &str| verify_user_token(&apps, t).unwrap_err().code;
        assert_eq!(
            code(&user_token(crate::config::DEV_JWT_SECRET, "dev", now() - 5)),
            ErrorCode::TokenExpired
        );
        assert_eq!(
            code(&user_token("wrong", "dev", now() + 60)),
            ErrorCode::InvalidToken
        );
        // Signed by one app's key, claiming another app.
        assert_eq!(
            code(&user_token(
                crate::config::DEV_JWT_SECRET,
                "other",
                now() + 60
            )),
            ErrorCode::InvalidToken
        );
        assert_eq!(code("garbage"), ErrorCode::InvalidToken);
    }

    #[test]
    fn a_token_without_an_app_claim_finds_its_app_by_issuer_and_audience() {
        let idp = |id: &str, iss: &str, aud: Option<&str>| AppConfig {
            id: id.into(),
            jwt_secret: Some(format!("secret-{id}-0123456789abcdefghijklmnop")),
            issuer: Some(iss.into()),
            audience: aud.map(Into::into),
            ..AppConfig::default()
        };
        let apps = Apps::new(&[
            idp("a", "https://idp.a", None),
            idp("b", "https://idp.shared", Some("b-aud")),
            idp("c", "https://idp.shared", Some("c-aud")),
        ])
        .unwrap();
        let mint = |iss: &str, aud: &str, secret: &str| {
            let claims = json!({"sub": "u", "iss": iss, "aud": aud, "exp": now() + 60});
            jsonwebtoken::encode(
                &Header::new(Algorithm::HS256),
                &claims,
                &EncodingKey::from_secret(secret.as_bytes()),
            )
            .unwrap()
        };
        let found = |t: &str| verify_user_token(&apps, t).map(|(app, _)| app.id().to_owned());
        let secret = |id: &str| format!("secret-{id}-0123456789abcdefghijklmnop");
        assert_eq!(
            found(&mint("https://idp.a", "x", &secret("a"))).unwrap(),
            "a"
        );
        assert_eq!(
            found(&mint("https://idp.shared", "c-aud", &secret("c"))).unwrap(),
            "c"
        );
        // An issuer and audience no app names: several apps, no guess.
        assert!(found(&mint("https://idp.other", "b-aud", &secret("b"))).is_err());
        // The right issuer, signed with another app's key.
        assert!(found(&mint("https://idp.shared", "b-aud", &secret("c"))).is_err());
        // One app: a token without `app` is that app's (and still checked).
        let one = Apps::new(&[dev_app()]).unwrap();
        let claims = json!({"sub": "u", "exp": now() + 60});
        let token = |secret: &str| {
            jsonwebtoken::encode(
                &Header::new(Algorithm::HS256),
                &claims,
                &EncodingKey::from_secret(secret.as_bytes()),
            )
            .unwrap()
        };
        let (app, _) = verify_user_token(&one, &token(crate::config::DEV_JWT_SECRET)).unwrap();
        assert_eq!(app.id(), "dev");
        assert!(verify_user_token(&one, &token("wrong-secret")).is_err());
    }

    /// A P-256 key pair made for this test only.
    const TEST_EC_PRIVATE: &str = "-----BEGIN PRIVATE KEY-----\nMIGHAgEAMBMGByqGSM49AgEGCCqGSM49AwEHBG0wawIBAQQgIewDDb5aPgLdOqIv\nxfavS+M0+A/lViQIZ4RjpzryCaChRANCAARKVc3/BBbgkLhSOqojWPsTvZVo+UXB\nlpKbiIErtn1sFIxI9Z2mt1lYzB4W+HfP6JVKmRX4F8OgPxsmLvoy4RHG\n-----END PRIVATE KEY-----\n";
    const TEST_EC_PUBLIC: &str = "-----BEGIN PUBLIC KEY-----\nMFkwEwYHKoZIzj0CAQYIKoZIzj0DAQcDQgAESlXN/wQW4JC4UjqqI1j7E72VaPlF\nwZaSm4iBK7Z9bBSMSPWdprdZWMweFvh3z+iVSpkV+BfDoD8bJi76MuERxg==\n-----END PUBLIC KEY-----\n";

    #[test]
    fn es256_user_tokens_verify_with_the_public_key() {
        let app = AppConfig {
            id: "ec".into(),
            jwt_public_key: Some(TEST_EC_PUBLIC.into()),
            ..AppConfig::default()
        };
        let apps = Apps::new(&[app]).unwrap();
        let claims = UserClaims {
            sub: "u-ec".into(),
            app: "ec".into(),
            exp: now() + 60,
            nbf: None,
            iat: None,
            role: None,
            email: None,
            ctx: None,
        };
        let key = EncodingKey::from_ec_pem(TEST_EC_PRIVATE.as_bytes()).unwrap();
        let token = jsonwebtoken::encode(&Header::new(Algorithm::ES256), &claims, &key).unwrap();
        let (_, identity) = verify_user_token(&apps, &token).unwrap();
        assert_eq!(identity.sub(), Some("u-ec"));
        // The app has no HS256 secret: an HS256 token for it is refused.
        let hs = mint_user_token("guess", &claims).unwrap();
        assert_eq!(
            verify_user_token(&apps, &hs).unwrap_err().code,
            ErrorCode::InvalidToken
        );
    }

    #[test]
    fn channel_token_checks() {
        let apps = apps();
        let dev = apps.get("dev").unwrap();
        let other = apps.get("other").unwrap();
        let (t, exp) = sign_channel_token(dev, "ch", json!({"room":"a"}), None, 60, now()).unwrap();
        assert!(exp >= now() + 59);
        let grant = verify_channel_token(dev, &t, "ch").unwrap();
        assert!(grant.allows(Permission::Publish) && grant.allows(Permission::Subscribe));
        assert_eq!(
            verify_channel_token(dev, &t, "ch2").unwrap_err().code,
            ErrorCode::ChannelNameMismatch
        );
        assert_eq!(
            verify_channel_token(other, &t, "ch").unwrap_err().code,
            ErrorCode::InvalidToken
        );
        let (old, _) = sign_channel_token(dev, "ch", json!({}), None, 1, now() - 10).unwrap();
        assert_eq!(
            verify_channel_token(dev, &old, "ch").unwrap_err().code,
            ErrorCode::TokenExpired
        );
        let user = user_token(crate::config::DEV_JWT_SECRET, "dev", now() + 60);
        assert_eq!(
            verify_channel_token(dev, &user, "ch").unwrap_err().code,
            ErrorCode::InvalidToken
        );
    }

    #[test]
    fn signing_refuses_bad_input() {
        let apps = apps();
        let dev = apps.get("dev").unwrap();
        let code = |ch: &str, claims: Value| {
            sign_channel_token(dev, ch, claims, None, 60, now())
                .unwrap_err()
                .code
        };
        assert_eq!(code("bad name", json!({})), ErrorCode::TokenSigningFailed);
        assert_eq!(code("ch", json!([1])), ErrorCode::TokenSigningFailed);
        assert_eq!(
            code("ch", json!({"x": "y".repeat(5000)})),
            ErrorCode::TokenSigningFailed
        );
    }
}
