//! Unsubscribing from a channel the connection is subscribed to.

use super::{error, Session};
use herald_protocol::client::ChannelRef;
use herald_protocol::{ErrorBody, ErrorCode};

impl Session {
    /// Leaves a channel; refused when the connection is not subscribed to
    /// it under that name.
    pub async fn unsubscribe(&mut self, channel: &ChannelRef) -> Result<(), ErrorBody> {
        let slot = (channel.channel.clone(), channel.global);
        let Some(key) = self.subscriptions.remove(&slot) else {
            return Err(error(
                ErrorCode::RealtimeNotSubscribed,
                format!("not subscribed to `{}`", channel.channel),
            ));
        };
        self.leave(&key).await;
        Ok(())
    }
}
