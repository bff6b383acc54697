//! Bodies of the server API (`/api/v1/...`), called by app backends with an
//! API key. Request bodies refuse unknown fields: a misplaced field (an
//! `idempotencyKey` beside `options` instead of in it) must not be
//! silently ignored.

use crate::error::ErrorBody;
use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;

/// `POST /api/v1/publish` and `POST /api/v1/publish/global`.
#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct PublishRequest {
    pub channel: String,
    pub payload: Box<RawValue>,
    pub event: Option<String>,
    /// The product context the publisher speaks for (scoped channels only),
    /// read exactly ([`crate::exact`]).
    #[serde(default, deserialize_with = "crate::exact::opt_map")]
    pub context: Option<serde_json::Map<String, serde_json::Value>>,
    #[serde(default)]
    pub options: PublishOptions,
}

#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct PublishOptions {
    pub token: Option<String>,
    pub context_overrides: Option<Vec<String>>,
    /// A repeat of this key on the same channel within the idempotency
    /// window is not published again.
    pub idempotency_key: Option<String>,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PublishResult {
    pub event_id: Option<String>,
    pub event_timestamp: Option<String>,
    pub errors: Vec<ErrorBody>,
}

/// `POST /api/v1/token`.
#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct TokenRequest {
    pub channel: String,
    /// Read exactly ([`crate::exact`]): they are part of the channel key.
    #[serde(deserialize_with = "crate::exact::value")]
    pub claims: serde_json::Value,
    pub permissions: Option<Vec<Permission>>,
    pub ttl_seconds: Option<u64>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Permission {
    Subscribe,
    Publish,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct TokenResult {
    pub token: Option<String>,
    /// Epoch seconds: the token's `exp`.
    pub expires_at: Option<u64>,
    pub errors: Vec<ErrorBody>,
}

/// One gateway, as `GET /api/v1/nodes` lists it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct NodeInfo {
    pub id: String,
    pub address: String,
    pub connections: usize,
    /// Epoch milliseconds.
    pub started_at: String,
}
