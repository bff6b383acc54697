//! Reading a channel's members.

use super::{error, Operation, Session};
use herald_protocol::client::ChannelRef;
use herald_protocol::server::{Member, PresenceList};
use herald_protocol::{ErrorBody, ErrorCode};

impl Session {
    /// The channel's members, earliest first, at most
    /// `max_presence_members`; none where the app keeps no presence.
    /// Reading needs what subscribing needs (channel token, context,
    /// definitions), and is limited per connection.
    pub async fn presence(&mut self, channel: &ChannelRef) -> Result<PresenceList, ErrorBody> {
        self.charge_read()?;
        let key = self.resolve(channel, Operation::Read).await?;
        // Reading a channel takes what subscribing to it takes.
        self.permit(&key, "subscribe", None)?;
        if !self.app.config.presence {
            return Ok(capped(Vec::new(), 0));
        }
        let members = self.state.node.presence(&key).await.map_err(|e| {
            tracing::warn!(error = %e, "presence failed");
            error(ErrorCode::InternalError, "presence unavailable")
        })?;
        Ok(capped(members, self.state.config.max_presence_members))
    }
}

/// A member list of at most `max`, saying whether it was cut.
pub fn capped(mut members: Vec<Member>, max: usize) -> PresenceList {
    let truncated = members.len() > max;
    members.truncate(max);
    PresenceList { members, truncated }
}
