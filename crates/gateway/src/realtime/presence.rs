//! Reading a channel's members.

use super::{error, Operation, Session};
use herald_protocol::client::ChannelRef;
use herald_protocol::server::Member;
use herald_protocol::{ErrorBody, ErrorCode};

impl Session {
    /// The channel's members, earliest first; none where the app keeps no
    /// presence.
    pub async fn presence(&mut self, channel: &ChannelRef) -> Result<Vec<Member>, ErrorBody> {
        self.charge_read()?;
        let key = self.resolve(channel, Operation::Read).await?;
        if !self.app.config.presence {
            return Ok(Vec::new());
        }
        self.state.node.presence(&key).await.map_err(|e| {
            tracing::warn!(error = %e, "presence failed");
            error(ErrorCode::InternalError, "presence unavailable")
        })
    }
}
