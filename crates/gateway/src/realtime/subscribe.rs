//! Subscribing: the per-connection subscription cap, replacing a
//! subscription to the same name, presence, and recovery.

use super::{error, Operation, Session};
use herald_broker_node::{ChannelKey, EncodedFrame, Join, Recovery, SubscribeOutcome, Subscriber};
use herald_protocol::client::ChannelRef;
use herald_protocol::{now_ms, ErrorBody, ErrorCode, StreamPosition};

/// What a subscribe asks to be replayed: everything after `since` (a
/// reconnecting client; it wins when both are given), else the last
/// `replay_seconds` (Forge's option), else nothing.
pub fn recovery(since: Option<StreamPosition>, replay_seconds: Option<u64>) -> Recovery {
    match (since, replay_seconds) {
        (Some(since), _) => Recovery::Since(since),
        (None, Some(seconds)) => Recovery::Window(seconds.saturating_mul(1000)),
        (None, None) => Recovery::None,
    }
}

/// A subscription in place, for the surface to render its reply from.
pub struct Subscribed<'a> {
    /// The channel as the client named it.
    pub channel: &'a ChannelRef,
    pub key: &'a ChannelKey,
    /// Members (the newcomer included), position, replayed publications
    /// and whether recovery covered everything asked for.
    pub outcome: &'a SubscribeOutcome,
}

impl Session {
    /// Subscribes the connection to a channel. The reply `render` makes is
    /// queued by the node ahead of every live publication that follows it,
    /// so nothing published meanwhile is lost or sent twice.
    pub async fn subscribe(
        &mut self,
        channel: &ChannelRef,
        recovery: Recovery,
        render: impl FnOnce(Subscribed<'_>) -> Option<EncodedFrame>,
    ) -> Result<(), ErrorBody> {
        let key = self.resolve(channel, Operation::Subscribe).await?;
        self.permit(&key, "subscribe", None)?;
        let slot = (channel.channel.clone(), channel.global);
        match self.subscriptions.get(&slot) {
            Some(existing) if *existing == key => {}
            Some(existing) => {
                // The same name with another token or context: replace it.
                let existing = existing.clone();
                self.leave(&existing).await;
                self.subscriptions.remove(&slot);
            }
            None if self.subscriptions.len()
                >= self.state.config.max_subscriptions_per_connection =>
            {
                return Err(error(
                    ErrorCode::RealtimeInvalidChannelRequest,
                    format!(
                        "at most {} subscriptions per connection",
                        self.state.config.max_subscriptions_per_connection
                    ),
                ));
            }
            None => {}
        }
        let member = self.member();
        let join = Join {
            key: &key,
            subscriber: Subscriber {
                conn: self.conn.clone(),
                outbound: self.outbound.clone(),
            },
            member: member.as_ref(),
            retention: self.app.retention,
            recovery,
            max_recovery: self.state.config.recovery_max_publications,
            max_recovery_bytes: self.state.config.max_reply_bytes,
            now_ms: now_ms(),
        };
        let reply = |outcome: &SubscribeOutcome| {
            render(Subscribed {
                channel,
                key: &key,
                outcome,
            })
        };
        self.state.node.subscribe(join, reply).await.map_err(|e| {
            tracing::warn!(error = %e, channel = key.name(), "subscribe failed");
            error(ErrorCode::InternalError, "subscription could not be set up")
        })?;
        self.subscriptions.insert(slot, key);
        Ok(())
    }
}
