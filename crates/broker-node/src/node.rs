//! The node: the operations a gateway calls, over the hub, the backplane,
//! history and presence chosen at start-up.

use crate::backplane::{Backplane, BackplaneError, MemoryBackplane, Published};
use crate::hub::{Hub, PresenceKind};
use crate::key::{ChannelKey, KeyError};
use crate::outbound::Subscriber;
use crate::presence::{MemoryPresence, PresenceError, PresenceStore};
use herald_history::{
    HistoryError, HistoryRead, HistoryStore, MemoryHistory, Publication, Retention,
};
use herald_protocol::server::Member;
use herald_protocol::StreamPosition;
use std::sync::atomic::Ordering;
use std::sync::Arc;

#[derive(Debug, thiserror::Error)]
pub enum NodeError {
    #[error(transparent)]
    Key(#[from] KeyError),
    #[error(transparent)]
    Backplane(#[from] BackplaneError),
    #[error(transparent)]
    History(#[from] HistoryError),
    #[error(transparent)]
    Presence(#[from] PresenceError),
}

/// What a subscriber learns when its subscription is in place.
#[derive(Debug, Clone)]
pub struct SubscribeOutcome {
    pub members: Vec<Member>,
    pub position: StreamPosition,
}

/// A snapshot of the node's counters and sizes, for metrics.
#[derive(Debug, Clone, Copy, Default)]
pub struct NodeStats {
    pub channels: usize,
    pub subscriptions: usize,
    pub delivered: u64,
    pub slow_consumers: u64,
}

pub struct Node {
    id: String,
    hub: Arc<Hub>,
    backplane: Arc<dyn Backplane>,
    history: Arc<dyn HistoryStore>,
    presence: Arc<dyn PresenceStore>,
    /// Set in embedded mode, where the node itself ages out idle streams.
    memory_history: Option<Arc<MemoryHistory>>,
}

impl Node {
    /// A single node with everything in memory: no Redis, nothing else to
    /// start.
    pub fn embedded(id: impl Into<String>) -> Arc<Node> {
        let hub = Arc::new(Hub::new());
        let history = Arc::new(MemoryHistory::new());
        let backplane = Arc::new(MemoryBackplane::new(Arc::clone(&hub), Arc::clone(&history)));
        Arc::new(Node {
            id: id.into(),
            hub,
            backplane,
            history: Arc::clone(&history) as Arc<dyn HistoryStore>,
            presence: Arc::new(MemoryPresence::default()),
            memory_history: Some(history),
        })
    }

    pub fn id(&self) -> &str {
        &self.id
    }

    /// Subscribes a connection. Existing subscribers are told of the member
    /// (when it is new to the channel) before the connection joins, so the
    /// newcomer learns the members from the outcome, itself included.
    pub async fn subscribe(
        &self,
        key: &ChannelKey,
        subscriber: Subscriber,
        conn_id: &str,
        member: &Member,
        retention: Retention,
        now_ms: u64,
    ) -> Result<SubscribeOutcome, NodeError> {
        let conn = subscriber.conn;
        if self.presence.join(key.id(), member, conn_id).await? {
            self.backplane
                .presence(key, PresenceKind::Join, member)
                .await?;
        }
        if self.hub.add(key, subscriber) {
            if let Err(e) = self.backplane.subscribe(key).await {
                self.unsubscribe(key, conn, conn_id, &member.presence_id)
                    .await?;
                return Err(e.into());
            }
        }
        let members = self.presence.members(key.id()).await?;
        let position = self.history.position(key.id(), retention, now_ms).await?;
        Ok(SubscribeOutcome { members, position })
    }

    /// Unsubscribes a connection; tells the others when its member left.
    pub async fn unsubscribe(
        &self,
        key: &ChannelKey,
        conn: u64,
        conn_id: &str,
        presence_id: &str,
    ) -> Result<(), NodeError> {
        if self.hub.remove(key, conn) {
            self.backplane.unsubscribe(key).await?;
        }
        if let Some(member) = self.presence.leave(key.id(), presence_id, conn_id).await? {
            self.backplane
                .presence(key, PresenceKind::Leave, &member)
                .await?;
        }
        Ok(())
    }

    pub fn is_subscribed(&self, key: &ChannelKey, conn: u64) -> bool {
        self.hub.is_subscribed(key, conn)
    }

    pub async fn publish(
        &self,
        key: &ChannelKey,
        publication: Arc<Publication>,
        retention: Retention,
        now_ms: u64,
    ) -> Result<Published, NodeError> {
        Ok(self
            .backplane
            .publish(key, publication, retention, now_ms)
            .await?)
    }

    pub async fn presence(&self, key: &ChannelKey) -> Result<Vec<Member>, NodeError> {
        Ok(self.presence.members(key.id()).await?)
    }

    pub async fn history(
        &self,
        key: &ChannelKey,
        since: Option<&StreamPosition>,
        limit: usize,
        now_ms: u64,
    ) -> Result<HistoryRead, NodeError> {
        Ok(self.history.read(key.id(), since, limit, now_ms).await?)
    }

    /// Periodic upkeep: ages out idle in-memory streams.
    pub fn maintain(&self, now_ms: u64) {
        if let Some(history) = &self.memory_history {
            history.sweep(now_ms);
        }
    }

    pub fn stats(&self) -> NodeStats {
        NodeStats {
            channels: self.hub.channel_count(),
            subscriptions: self.hub.subscription_count(),
            delivered: self.hub.stats.delivered.load(Ordering::Relaxed),
            slow_consumers: self.hub.stats.slow_consumers.load(Ordering::Relaxed),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::key::Scope;
    use crate::outbound::Outbound;
    use herald_protocol::server::SenderType;
    use serde_json::value::RawValue;
    use std::time::Duration;

    fn member(id: &str) -> Member {
        Member {
            presence_id: id.into(),
            kind: SenderType::User,
            joined_at: "0".into(),
        }
    }

    fn publication(n: u32) -> Arc<Publication> {
        Arc::new(Publication {
            message_id: format!("m-{n}"),
            event: "e".into(),
            payload: Arc::from(RawValue::from_string(n.to_string()).unwrap()),
            sender_type: SenderType::System,
            sender_id: None,
            timestamp_ms: 0,
        })
    }

    #[tokio::test]
    async fn publish_reaches_subscriber_in_order_with_offsets() {
        let node = Node::embedded("n1");
        let key = ChannelKey::new("a", "ch", &Scope::Global, None).unwrap();
        let (outbound, mut rx, _kick) = Outbound::new(16);
        node.subscribe(
            &key,
            Subscriber { conn: 1, outbound },
            "c-1",
            &member("u"),
            Retention::NONE,
            0,
        )
        .await
        .unwrap();
        for n in 1..=3 {
            let p = node
                .publish(&key, publication(n), Retention::NONE, 0)
                .await
                .unwrap();
            assert_eq!(p.position.unwrap().offset, u64::from(n));
        }
        for n in 1..=3u64 {
            let frame = rx.recv().await.unwrap();
            let v: serde_json::Value = serde_json::from_str(frame.as_str()).unwrap();
            assert_eq!(v["meta"]["offset"], n);
            assert_eq!(v["payload"], n);
        }
    }

    #[tokio::test]
    async fn publish_without_listener_or_history_goes_nowhere() {
        let node = Node::embedded("n1");
        let key = ChannelKey::new("a", "ch", &Scope::Global, None).unwrap();
        let p = node
            .publish(&key, publication(1), Retention::NONE, 0)
            .await
            .unwrap();
        assert_eq!(p.position, None);
        let keep = Retention {
            size: 10,
            ttl: Duration::from_secs(60),
        };
        let p = node.publish(&key, publication(2), keep, 0).await.unwrap();
        assert!(p.position.is_some());
    }

    #[tokio::test]
    async fn full_queue_kicks_only_the_slow_subscriber() {
        let node = Node::embedded("n1");
        let key = ChannelKey::new("a", "ch", &Scope::Global, None).unwrap();
        let (slow, _slow_rx, slow_kick) = Outbound::new(2);
        let (fast, mut fast_rx, fast_kick) = Outbound::new(64);
        node.subscribe(
            &key,
            Subscriber {
                conn: 1,
                outbound: slow,
            },
            "c-1",
            &member("a"),
            Retention::NONE,
            0,
        )
        .await
        .unwrap();
        node.subscribe(
            &key,
            Subscriber {
                conn: 2,
                outbound: fast,
            },
            "c-2",
            &member("b"),
            Retention::NONE,
            0,
        )
        .await
        .unwrap();
        while fast_rx.try_recv().is_ok() {}
        for n in 0..10 {
            node.publish(&key, publication(n), Retention::NONE, 0)
                .await
                .unwrap();
        }
        assert!(slow_kick.reason().is_some());
        assert!(fast_kick.reason().is_none());
        let mut got = 0;
        while fast_rx.try_recv().is_ok() {
            got += 1;
        }
        assert_eq!(got, 10);
        assert_eq!(node.stats().slow_consumers, 1);
    }
}
