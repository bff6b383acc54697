//! Reading a channel's history, within the gateway's limit.

use super::{error, Operation, Session};
use herald_broker_node::ChannelKey;
use herald_history::{HistoryRead, Stored};
use herald_protocol::client::ChannelRef;
use herald_protocol::{now_ms, ErrorBody, ErrorCode, StreamPosition};

/// Publications a `history` request returns when it names no `limit`.
pub const DEFAULT_HISTORY_LIMIT: usize = 100;

/// A page of history, for the surface to render.
pub struct HistoryPage {
    pub key: ChannelKey,
    pub read: HistoryRead,
    /// With `since`: whether the page is everything after it.
    pub recovered: Option<bool>,
}

impl Session {
    /// Publications after `since` (the oldest kept when `None`), at most
    /// `limit` (default 100), never more than `history_max_limit`.
    pub async fn history(
        &mut self,
        channel: &ChannelRef,
        since: Option<StreamPosition>,
        limit: Option<usize>,
    ) -> Result<HistoryPage, ErrorBody> {
        self.charge_read()?;
        let key = self.resolve(channel, Operation::Read).await?;
        // Reading a channel takes what subscribing to it takes.
        self.permit(&key, "subscribe", None)?;
        let limit = history_limit(limit, self.state.config.history_max_limit);
        let mut read = self
            .state
            .node
            .history(&key, since.as_ref(), limit, self.app.retention, now_ms())
            .await
            .map_err(|e| {
                tracing::warn!(error = %e, "history failed");
                error(ErrorCode::InternalError, "history unavailable")
            })?;
        // A reply is built whole: keep it within the byte bound, oldest
        // first; the client asks again from the last offset it got.
        if cut_to_bytes(&mut read.publications, self.state.config.max_reply_bytes) {
            read.complete = false;
        }
        let recovered = since.map(|_| read.complete);
        Ok(HistoryPage {
            key,
            read,
            recovered,
        })
    }
}

/// Keeps the oldest publications whose payloads fit in `max_bytes` (at
/// least one); true when some were cut.
pub fn cut_to_bytes(publications: &mut Vec<Stored>, max_bytes: usize) -> bool {
    let mut total = 0usize;
    let keep = publications
        .iter()
        .position(|p| {
            total += p.publication.payload.get().len();
            total > max_bytes
        })
        .map_or(publications.len(), |at| at.max(1));
    let cut = keep < publications.len();
    publications.truncate(keep);
    cut
}

/// The limit a history read applies.
pub fn history_limit(asked: Option<usize>, max: usize) -> usize {
    asked.unwrap_or(DEFAULT_HISTORY_LIMIT).min(max)
}
