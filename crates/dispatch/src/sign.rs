//! Standard Webhooks signing: `webhook-signature: v1,<base64 HMAC-SHA256
//! of "id.timestamp.body">`, keyed with the base64 part of a `whsec_`
//! secret.

use base64::engine::general_purpose::STANDARD;
use base64::Engine;
use hmac::{Hmac, Mac};
use sha2::Sha256;

/// A signing secret, decoded once.
#[derive(Clone)]
pub struct Secret(Vec<u8>);

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Secret(***)")
    }
}

impl Secret {
    /// Reads `whsec_<base64>`.
    pub fn parse(text: &str) -> Result<Secret, String> {
        let encoded = text
            .strip_prefix("whsec_")
            .ok_or("a webhook secret starts with `whsec_`")?;
        let key = STANDARD
            .decode(encoded)
            .map_err(|e| format!("a webhook secret is `whsec_` and base64: {e}"))?;
        if key.len() < 16 {
            return Err("a webhook secret holds at least 16 bytes".into());
        }
        Ok(Secret(key))
    }

    /// The `webhook-signature` header value.
    pub fn sign(&self, id: &str, timestamp: i64, body: &[u8]) -> String {
        let mut mac = Hmac::<Sha256>::new_from_slice(&self.0).expect("HMAC takes any key length");
        mac.update(id.as_bytes());
        mac.update(b".");
        mac.update(timestamp.to_string().as_bytes());
        mac.update(b".");
        mac.update(body);
        format!("v1,{}", STANDARD.encode(mac.finalize().into_bytes()))
    }
}

#[cfg(test)]
mod tests {
    use super::Secret;

    #[test]
    fn the_test_vector_signs_as_published() {
        let secret = Secret::parse("whsec_C2FVsBQIhrscChlQIMV+b5sSYspob7oD").unwrap();
        let body = br#"{"email":"test@example.com","username":"test_user"}"#;
        assert_eq!(
            secret.sign("msg_27UH4WbU6Z5A5EzD8u03UvzRbpk", 1649367553, body),
            "v1,tZ1I4/hDygAJgO5TYxiSd6Sd0kDW6hPenDe+bTa3Kkw="
        );
    }

    #[test]
    fn bad_secrets_are_refused_with_the_reason() {
        assert!(Secret::parse("C2FVsBQIhrscChlQIMV")
            .unwrap_err()
            .contains("whsec_"));
        assert!(Secret::parse("whsec_!!!").unwrap_err().contains("base64"));
        assert!(Secret::parse("whsec_AAAA")
            .unwrap_err()
            .contains("16 bytes"));
    }
}
