//! Wire types of Herald's public surfaces.
//!
//! Everything a client, an app backend or a test sees on the wire is defined
//! here, and nothing else is: no sockets, no Redis, only serde.
//!
//! - [`client`]: frames a WebSocket client sends (`subscribe`, `publish`, ...).
//! - [`server`]: frames the server sends (`connected`, `reply`, `event`, ...).
//! - [`api`]: request and answer bodies of the server API (`/api/v1/...`).
//! - [`error`]: the error codes of the contract, their messages and HTTP status.
//! - [`exact`]: JSON read exactly, for claims and contexts.
//!
//! The contract itself is documented for users in `docs/protocol.md`.

pub mod api;
pub mod client;
pub mod error;
pub mod exact;
pub mod server;

pub use error::{ErrorBody, ErrorCode};

use serde::{Deserialize, Serialize};

/// A position in a channel's stream: the history it belongs to (`epoch`)
/// and the publication's number in it (`offset`, contiguous from 1).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StreamPosition {
    pub epoch: String,
    pub offset: u64,
}

/// Epoch milliseconds as a string, the way Forge's `eventTimestamp` is written.
pub fn timestamp_string(millis: u64) -> String {
    millis.to_string()
}

/// Wall-clock milliseconds since the Unix epoch (0 if the clock is before
/// it): the clock of every timestamp on the wire.
pub fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}
