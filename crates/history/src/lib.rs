//! Per-channel ordered history.
//!
//! Every channel key has a stream: an `epoch` naming this incarnation of its
//! history and a `top` offset, contiguous from 1. A publication appended to a
//! stream gets the next offset; a channel whose retention keeps history also
//! keeps the publication, bounded in length and age. When a stream is lost
//! (idle past its retention, evicted, flushed) it comes back with a new
//! epoch, so a client holding an old position can tell its offsets no longer
//! mean anything.
//!
//! [`HistoryStore`] is the seam; [`MemoryHistory`] serves the embedded,
//! single-node mode, and `herald-redis` keeps streams in Redis for a
//! cluster.

mod memory;

pub use memory::MemoryHistory;

use async_trait::async_trait;
use herald_protocol::server::SenderType;
use herald_protocol::StreamPosition;
use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;
use std::sync::Arc;
use std::time::Duration;

/// One published event, as history keeps it and fan-out delivers it.
///
/// Its JSON form (field names shortened) is what crosses the Redis
/// backplane and what Redis streams keep.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Publication {
    #[serde(rename = "m")]
    pub message_id: String,
    #[serde(rename = "e")]
    pub event: String,
    #[serde(rename = "st")]
    pub sender_type: SenderType,
    #[serde(rename = "si", default, skip_serializing_if = "Option::is_none")]
    pub sender_id: Option<String>,
    #[serde(rename = "ts")]
    pub timestamp_ms: u64,
    /// W3C trace context of the publish, carried so one publish can be
    /// followed across gateways.
    #[serde(rename = "tp", default, skip_serializing_if = "Option::is_none")]
    pub trace: Option<String>,
    /// Published on a channel with a definition: it is in the message log,
    /// and each gateway reports how many sockets it reached.
    #[serde(rename = "lg", default, skip_serializing_if = "is_false")]
    pub logged: bool,
    #[serde(rename = "p")]
    pub payload: Arc<RawValue>,
}

fn is_false(b: &bool) -> bool {
    !*b
}

/// Whether a read after `after` that returned `offsets` (ascending) from a
/// stream at `top` covers everything after `after`.
pub fn covers_all(after: u64, top: u64, offsets: &[u64]) -> bool {
    match (offsets.first(), offsets.last()) {
        (Some(first), Some(last)) => *first == after + 1 && *last == top,
        _ => after == top,
    }
}

/// A publication with its place in the stream.
#[derive(Debug, Clone)]
pub struct Stored {
    pub offset: u64,
    pub publication: Arc<Publication>,
}

/// How much history a channel keeps.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Retention {
    /// Publications kept at most; 0 keeps none.
    pub size: usize,
    /// How long a publication is kept, and how long an idle stream's epoch
    /// and offset survive.
    pub ttl: Duration,
}

impl Retention {
    pub const NONE: Retention = Retention {
        size: 0,
        ttl: Duration::from_secs(300),
    };

    pub fn keeps_history(&self) -> bool {
        self.size > 0 && !self.ttl.is_zero()
    }
}

/// What a read of a stream found.
#[derive(Debug, Clone)]
pub struct HistoryRead {
    /// The stream's current epoch and top offset.
    pub position: StreamPosition,
    /// Publications after the requested offset, oldest first.
    pub publications: Vec<Stored>,
    /// Whether `publications` is every publication after the requested
    /// position: same epoch, nothing trimmed, nothing cut by the limit.
    pub complete: bool,
}

/// An error a store's own error type converts into.
pub type StoreError = Box<dyn std::error::Error + Send + Sync>;

#[derive(Debug, thiserror::Error)]
pub enum HistoryError {
    /// The store failed; its own error says how.
    #[error("history store failed: {0}")]
    Store(#[source] StoreError),
}

/// A random epoch, for a stream that starts.
pub fn new_epoch() -> String {
    format!("{:08x}", rand::random::<u32>())
}

#[async_trait]
pub trait HistoryStore: Send + Sync + 'static {
    /// The stream's current position, starting the stream if it has none.
    async fn position(
        &self,
        stream: &str,
        retention: Retention,
        now_ms: u64,
    ) -> Result<StreamPosition, HistoryError>;

    /// Publications after `since` (all kept ones when `None`), at most
    /// `limit`, not older than `retention` allows.
    async fn read(
        &self,
        stream: &str,
        since: Option<&StreamPosition>,
        limit: usize,
        retention: Retention,
        now_ms: u64,
    ) -> Result<HistoryRead, HistoryError>;
}
