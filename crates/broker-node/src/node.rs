//! The node: the operations a gateway calls, over the hub, the backplane,
//! history and presence chosen at start-up.

use crate::background::Background;
use crate::backplane::{
    Backplane, BackplaneError, BackplaneStats, Dispatch, Idempotency, MemoryBackplane, Published,
};
use crate::hub::Hub;
use crate::key::{ChannelKey, KeyError};
use crate::outbound::{ConnId, EncodedFrame, Subscriber};
use crate::presence::{MemoryPresence, PresenceError, PresenceStore};
use async_trait::async_trait;
use herald_history::{
    HistoryError, HistoryRead, HistoryStore, MemoryHistory, Publication, Retention, StoreError,
    Stored,
};
use herald_protocol::api::NodeInfo;
use herald_protocol::server::Member;
use herald_protocol::StreamPosition;
use herald_rate_limiter::SharedStore;
use std::sync::atomic::{AtomicUsize, Ordering};
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
    #[error("node registry failed: {0}")]
    Registry(#[source] StoreError),
}

/// What a subscriber asks to be replayed when it joins.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Recovery {
    /// Nothing: live publications from now on.
    None,
    /// Every publication after this position (a reconnecting client).
    Since(StreamPosition),
    /// The publications of the last this-many milliseconds (Forge's
    /// `replaySeconds` on a first subscribe).
    Window(u64),
}

/// A subscription to set up.
pub struct Join<'a> {
    pub key: &'a ChannelKey,
    pub subscriber: Subscriber,
    /// The connection as a presence member; `None` where the app keeps no
    /// presence.
    pub member: Option<&'a Member>,
    pub retention: Retention,
    pub recovery: Recovery,
    /// Publications replayed at most.
    pub max_recovery: usize,
    /// Payload bytes replayed at most: a `since` gap larger than this is
    /// not replayed (`recovered: false`); a window keeps its newest.
    pub max_recovery_bytes: usize,
    pub now_ms: u64,
}

/// What a subscriber learns when its subscription is in place.
#[derive(Debug, Clone)]
pub struct SubscribeOutcome {
    pub members: Vec<Member>,
    /// The channel's position the reply stands for: live publications
    /// after it follow the reply.
    pub position: StreamPosition,
    /// Replayed publications, oldest first.
    pub publications: Vec<Stored>,
    /// For `Recovery::Since`: whether `publications` is everything after
    /// the position asked for. When it is not, nothing is replayed.
    pub recovered: Option<bool>,
}

/// A snapshot of the node's counters and sizes, for metrics.
#[derive(Debug, Clone, Copy, Default)]
pub struct NodeStats {
    pub channels: usize,
    pub subscriptions: usize,
    pub delivered: u64,
    pub slow_consumers: u64,
}

/// The gateways of a cluster, as a store keeps them.
#[async_trait]
pub trait Membership: Send + Sync + 'static {
    /// The gateways whose registration is current; `this` is the asking
    /// node as it would be listed.
    async fn nodes(&self, this: NodeInfo) -> Result<Vec<NodeInfo>, StoreError>;
    /// Removes this gateway's registration (the node stops its background
    /// work, a heartbeat included, first).
    async fn deregister(&self);
}

/// A node on its own: the only member of its cluster.
pub struct Alone;

#[async_trait]
impl Membership for Alone {
    async fn nodes(&self, this: NodeInfo) -> Result<Vec<NodeInfo>, StoreError> {
        Ok(vec![this])
    }

    async fn deregister(&self) {}
}

/// A node's parts, assembled by whoever chooses the stores: in memory for
/// a single node ([`Parts::memory`]), `herald_redis::cluster_parts` for a
/// cluster.
pub struct Parts {
    pub hub: Arc<Hub>,
    /// Open connections on this node (the gateway keeps it current; a
    /// registry heartbeat reads it).
    pub connections: Arc<AtomicUsize>,
    pub backplane: Arc<dyn Backplane>,
    /// The backplane's health counters (all zero in memory).
    pub stats: Arc<BackplaneStats>,
    pub history: Arc<dyn HistoryStore>,
    pub presence: Arc<dyn PresenceStore>,
    pub membership: Arc<dyn Membership>,
    /// Where cluster-wide rate limits live; `None` where limits are the
    /// node's own.
    pub shared_limits: Option<Arc<dyn SharedStore>>,
    /// When the node started, epoch milliseconds.
    pub started_at_ms: u64,
    /// The adapters' background tasks, stopped in order on shutdown.
    pub background: Background,
}

impl Parts {
    /// Everything in memory: one node, no Redis, nothing else to start.
    pub fn memory() -> Parts {
        let hub = Arc::new(Hub::new());
        let history = Arc::new(MemoryHistory::new());
        let backplane = Arc::new(MemoryBackplane::new(Arc::clone(&hub), Arc::clone(&history)));
        Parts {
            presence: Arc::new(MemoryPresence::new(Arc::clone(&hub))),
            hub,
            connections: Arc::new(AtomicUsize::new(0)),
            backplane,
            stats: Arc::new(BackplaneStats::default()),
            history,
            membership: Arc::new(Alone),
            shared_limits: None,
            started_at_ms: herald_protocol::now_ms(),
            background: Background::new(),
        }
    }
}

pub struct Node {
    id: String,
    started_at_ms: u64,
    /// Open connections on this node (the gateway keeps it current).
    pub connections: Arc<AtomicUsize>,
    hub: Arc<Hub>,
    backplane: Arc<dyn Backplane>,
    stats: Arc<BackplaneStats>,
    history: Arc<dyn HistoryStore>,
    presence: Arc<dyn PresenceStore>,
    membership: Arc<dyn Membership>,
    shared_limits: Option<Arc<dyn SharedStore>>,
    background: Background,
}

impl Node {
    /// A node made of `parts`.
    pub fn new(id: impl Into<String>, parts: Parts) -> Arc<Node> {
        Arc::new(Node {
            id: id.into(),
            started_at_ms: parts.started_at_ms,
            connections: parts.connections,
            hub: parts.hub,
            backplane: parts.backplane,
            stats: parts.stats,
            history: parts.history,
            presence: parts.presence,
            membership: parts.membership,
            shared_limits: parts.shared_limits,
            background: parts.background,
        })
    }

    /// A single node with everything in memory.
    pub fn embedded(id: impl Into<String>) -> Arc<Node> {
        Node::new(id, Parts::memory())
    }

    pub fn id(&self) -> &str {
        &self.id
    }

    /// Whether the node can serve: always in embedded mode; in a cluster,
    /// while Redis answers and the node's probe comes back.
    pub fn ready(&self) -> bool {
        self.backplane.ready()
    }

    /// The live nodes of the cluster (this one alone in embedded mode);
    /// `address` is where this node serves.
    pub async fn nodes(&self, address: &str) -> Result<Vec<NodeInfo>, NodeError> {
        let this = NodeInfo {
            id: self.id.clone(),
            address: address.to_owned(),
            connections: self.connections.load(Ordering::Relaxed),
            started_at: self.started_at_ms.to_string(),
        };
        self.membership
            .nodes(this)
            .await
            .map_err(NodeError::Registry)
    }

    /// Stops the adapters' background work, in order, then leaves the
    /// cluster's registry (on shutdown).
    pub async fn shutdown(&self) {
        self.background.stop().await;
        self.membership.deregister().await;
    }

    /// Where cluster-wide rate limits live, in a cluster.
    pub fn shared_limits(&self) -> Option<Arc<dyn SharedStore>> {
        self.shared_limits.clone()
    }

    /// Announces joins and leaves only on channels with at most `max`
    /// subscribers on this node.
    pub fn limit_presence_announcements(&self, max: usize) {
        self.hub.limit_presence_announcements(max);
    }

    /// The backplane's health counters.
    /// Sockets each logged message reached on this node since the last
    /// call (for the message log's `wsAudienceCount`).
    pub fn take_audience(&self) -> Vec<(String, u64)> {
        self.hub.audience.take()
    }

    /// Audience counts that could not be reported, to report later.
    pub fn restore_audience(&self, counts: Vec<(String, u64)>) {
        self.hub.audience.restore(counts);
    }

    /// Audience counts dropped because too many waited to be reported.
    pub fn audience_dropped(&self) -> u64 {
        self.hub
            .audience
            .dropped
            .load(std::sync::atomic::Ordering::Relaxed)
    }

    /// Publish-to-fan-out latency on this node.
    pub fn fanout_latency(&self) -> crate::latency::Snapshot {
        self.hub.stats.latency.snapshot()
    }

    pub fn backplane_stats(&self) -> &BackplaneStats {
        &self.stats
    }

    /// Subscribes a connection and queues its reply, made by `reply` from
    /// the outcome, ahead of every live publication that follows it.
    ///
    /// The subscriber joins the hub first, with live frames held back, then
    /// the backplane subscription is confirmed, then history is read; the
    /// reply and the held frames newer than it are queued together. Nothing
    /// published meanwhile is lost or sent twice. Existing subscribers are
    /// told of the member (when it is new to the channel); the newcomer
    /// learns the members, itself included, from the outcome.
    pub async fn subscribe(
        &self,
        join: Join<'_>,
        reply: impl FnOnce(&SubscribeOutcome) -> Option<EncodedFrame>,
    ) -> Result<(), NodeError> {
        let Join {
            key,
            subscriber,
            member,
            retention,
            recovery,
            max_recovery,
            max_recovery_bytes,
            now_ms,
        } = join;
        let conn = subscriber.conn.clone();
        let joined = async {
            if let Some(member) = member {
                self.presence.join(key, member, conn.as_str()).await?;
            }
            if self.hub.add(key, subscriber) {
                self.backplane.subscribe(key).await?;
            }
            let members = match member {
                Some(_) => self.presence.members(key).await?,
                None => Vec::new(),
            };
            let bound = (max_recovery, max_recovery_bytes);
            let (position, publications, recovered) =
                self.replay(key, retention, recovery, bound, now_ms).await?;
            Ok::<_, NodeError>(SubscribeOutcome {
                members,
                position,
                publications,
                recovered,
            })
        };
        match joined.await {
            Ok(outcome) => {
                self.hub
                    .go_live(key, conn.local(), outcome.position.offset, reply(&outcome));
                Ok(())
            }
            Err(e) => {
                // Leave no half subscription behind.
                let presence_id = member.map(|m| m.presence_id.as_str());
                let _ = self.unsubscribe(key, &conn, presence_id).await;
                Err(e)
            }
        }
    }

    /// What a subscriber is replayed: at most `max_recovery` publications
    /// and `max_bytes` bytes of payload.
    async fn replay(
        &self,
        key: &ChannelKey,
        retention: Retention,
        recovery: Recovery,
        (max_recovery, max_bytes): (usize, usize),
        now_ms: u64,
    ) -> Result<(StreamPosition, Vec<Stored>, Option<bool>), NodeError> {
        match recovery {
            Recovery::None => {
                let position = self.history.position(key.id(), retention, now_ms).await?;
                Ok((position, Vec::new(), None))
            }
            Recovery::Since(since) => {
                let read = self
                    .history
                    .read(key.id(), Some(&since), max_recovery, retention, now_ms)
                    .await?;
                // Without history nothing proves that nothing was missed:
                // publications made while no one listened went nowhere and
                // left no offset behind.
                let provable = retention.keeps_history();
                if provable && read.complete && payload_bytes(&read.publications) <= max_bytes {
                    return Ok((read.position, read.publications, Some(true)));
                }
                // Replaying part of a range would mislead: replay nothing
                // and give the current position to start again from.
                let position = self
                    .read_position(key, read.position, retention, now_ms)
                    .await?;
                Ok((position, Vec::new(), Some(false)))
            }
            Recovery::Window(window_ms) => {
                let read = self
                    .history
                    .read(key.id(), None, usize::MAX, retention, now_ms)
                    .await?;
                let position = self
                    .read_position(key, read.position, retention, now_ms)
                    .await?;
                let from = now_ms.saturating_sub(window_ms);
                let mut publications: Vec<Stored> = read
                    .publications
                    .into_iter()
                    .filter(|s| s.publication.timestamp_ms >= from)
                    .collect();
                // Over the bounds, the newest ones are replayed.
                let excess = publications.len().saturating_sub(max_recovery);
                publications.drain(..excess);
                let mut bytes = payload_bytes(&publications);
                let mut oldest = 0;
                while publications.len() - oldest > 1 && bytes > max_bytes {
                    bytes -= publications[oldest].publication.payload.get().len();
                    oldest += 1;
                }
                publications.drain(..oldest);
                Ok((position, publications, None))
            }
        }
    }

    /// The position a read stands for. A read that found no stream saw
    /// offset 0 of the stream's new epoch: anything in it now was published
    /// after the read, and so was held back for the joining subscriber.
    async fn read_position(
        &self,
        key: &ChannelKey,
        read: StreamPosition,
        retention: Retention,
        now_ms: u64,
    ) -> Result<StreamPosition, NodeError> {
        if !read.epoch.is_empty() {
            return Ok(read);
        }
        let epoch = self
            .history
            .position(key.id(), retention, now_ms)
            .await?
            .epoch;
        Ok(StreamPosition { epoch, offset: 0 })
    }

    /// Unsubscribes a connection; tells the others when its member left.
    pub async fn unsubscribe(
        &self,
        key: &ChannelKey,
        conn: &ConnId,
        presence_id: Option<&str>,
    ) -> Result<(), NodeError> {
        if self.hub.remove(key, conn.local()) {
            self.backplane.unsubscribe(key).await?;
        }
        if let Some(presence_id) = presence_id {
            self.presence.leave(key, presence_id, conn.as_str()).await?;
        }
        Ok(())
    }

    pub fn is_subscribed(&self, key: &ChannelKey, conn: &ConnId) -> bool {
        self.hub.is_subscribed(key, conn.local())
    }

    pub async fn publish(
        &self,
        key: &ChannelKey,
        publication: Arc<Publication>,
        retention: Retention,
        idempotency: Option<Idempotency<'_>>,
        dispatch: Option<Dispatch<'_>>,
        now_ms: u64,
    ) -> Result<Published, NodeError> {
        Ok(self
            .backplane
            .publish(key, publication, retention, idempotency, dispatch, now_ms)
            .await?)
    }

    /// See [`Backplane::forget`].
    pub async fn forget_idempotency(&self, key: &ChannelKey, idempotency: Idempotency<'_>) {
        self.backplane.forget(key, idempotency).await;
    }

    pub async fn presence(&self, key: &ChannelKey) -> Result<Vec<Member>, NodeError> {
        Ok(self.presence.members(key).await?)
    }

    pub async fn history(
        &self,
        key: &ChannelKey,
        since: Option<&StreamPosition>,
        limit: usize,
        retention: Retention,
        now_ms: u64,
    ) -> Result<HistoryRead, NodeError> {
        let mut read = self
            .history
            .read(key.id(), since, limit, retention, now_ms)
            .await?;
        // As for recovery: without history, nothing proves completeness.
        if !retention.keeps_history() {
            read.complete = false;
        }
        Ok(read)
    }

    /// Periodic upkeep: ages out idle in-memory streams and idempotency
    /// keys (stores that expire their own, as Redis does, do nothing).
    pub fn maintain(&self, now_ms: u64) {
        self.backplane.sweep(now_ms);
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

/// The payload bytes of `publications`.
fn payload_bytes(publications: &[Stored]) -> usize {
    publications
        .iter()
        .map(|s| s.publication.payload.get().len())
        .sum()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::codec::NATIVE;
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

    fn joining<'a>(
        key: &'a ChannelKey,
        conn: u64,
        outbound: Outbound,
        m: &'a Member,
        recovery: Recovery,
    ) -> Join<'a> {
        Join {
            key,
            subscriber: Subscriber {
                conn: ConnId::new(conn, format!("c-{conn}")),
                outbound,
            },
            member: Some(m),
            retention: KEEP,
            recovery,
            max_recovery: 1000,
            max_recovery_bytes: usize::MAX,
            now_ms: 0,
        }
    }

    async fn join(
        node: &Node,
        key: &ChannelKey,
        conn: u64,
        outbound: Outbound,
        m: &Member,
        recovery: Recovery,
    ) {
        node.subscribe(joining(key, conn, outbound, m, recovery), |_| None)
            .await
            .unwrap();
    }

    const KEEP: Retention = Retention {
        size: 100,
        ttl: Duration::from_secs(60),
    };

    fn publication(n: u32) -> Arc<Publication> {
        Arc::new(Publication {
            message_id: format!("m-{n}"),
            event: "e".into(),
            payload: Arc::from(RawValue::from_string(n.to_string()).unwrap()),
            sender_type: SenderType::System,
            sender_id: None,
            timestamp_ms: 0,
            trace: None,
            logged: false,
        })
    }

    #[tokio::test]
    async fn publish_reaches_subscriber_in_order_with_offsets() {
        let node = Node::embedded("n1");
        let key = ChannelKey::new("a", "ch", &Scope::Global, None).unwrap();
        let (outbound, mut rx, _kick) = Outbound::new(16, &NATIVE);
        join(&node, &key, 1, outbound, &member("u"), Recovery::None).await;
        for n in 1..=3 {
            let p = node
                .publish(&key, publication(n), Retention::NONE, None, None, 0)
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
            .publish(&key, publication(1), Retention::NONE, None, None, 0)
            .await
            .unwrap();
        assert_eq!(p.position, None);
        let keep = Retention {
            size: 10,
            ttl: Duration::from_secs(60),
        };
        let p = node
            .publish(&key, publication(2), keep, None, None, 0)
            .await
            .unwrap();
        assert!(p.position.is_some());
    }

    #[tokio::test]
    async fn full_queue_kicks_only_the_slow_subscriber() {
        let node = Node::embedded("n1");
        let key = ChannelKey::new("a", "ch", &Scope::Global, None).unwrap();
        let (slow, _slow_rx, slow_kick) = Outbound::new(2, &NATIVE);
        let (fast, mut fast_rx, fast_kick) = Outbound::new(64, &NATIVE);
        join(&node, &key, 1, slow, &member("a"), Recovery::None).await;
        join(&node, &key, 2, fast, &member("b"), Recovery::None).await;
        while fast_rx.try_recv().is_some() {}
        for n in 0..10 {
            node.publish(&key, publication(n), Retention::NONE, None, None, 0)
                .await
                .unwrap();
        }
        assert!(slow_kick.reason().is_some());
        assert!(fast_kick.reason().is_none());
        let mut got = 0;
        while fast_rx.try_recv().is_some() {
            got += 1;
        }
        assert_eq!(got, 10);
        assert_eq!(node.stats().slow_consumers, 1);
    }

    /// Subscribes with `since` and returns what the reply would be made of.
    async fn recover(node: &Node, key: &ChannelKey, since: StreamPosition) -> SubscribeOutcome {
        let (outbound, _rx, _kick) = Outbound::new(16, &NATIVE);
        let mut seen = None;
        let m = member("u");
        let join = joining(key, 1, outbound, &m, Recovery::Since(since));
        node.subscribe(join, |o| {
            seen = Some(o.clone());
            None
        })
        .await
        .unwrap();
        seen.unwrap()
    }

    #[tokio::test]
    async fn subscribe_since_replays_exactly_the_missed_range() {
        let node = Node::embedded("n1");
        let key = ChannelKey::new("a", "ch", &Scope::Global, None).unwrap();
        let mut epoch = String::new();
        for n in 1..=5 {
            let p = node
                .publish(&key, publication(n), KEEP, None, None, 0)
                .await
                .unwrap();
            epoch = p.position.unwrap().epoch;
        }
        let outcome = recover(
            &node,
            &key,
            StreamPosition {
                epoch: epoch.clone(),
                offset: 2,
            },
        )
        .await;
        assert_eq!(outcome.recovered, Some(true));
        let offsets: Vec<u64> = outcome.publications.iter().map(|p| p.offset).collect();
        assert_eq!(offsets, vec![3, 4, 5]);
        assert_eq!(outcome.position, StreamPosition { epoch, offset: 5 });
    }

    #[tokio::test]
    async fn subscribe_since_an_unknown_epoch_replays_nothing() {
        let node = Node::embedded("n1");
        let key = ChannelKey::new("a", "ch", &Scope::Global, None).unwrap();
        node.publish(&key, publication(1), KEEP, None, None, 0)
            .await
            .unwrap();
        let outcome = recover(
            &node,
            &key,
            StreamPosition {
                epoch: "gone".into(),
                offset: 0,
            },
        )
        .await;
        assert_eq!(outcome.recovered, Some(false));
        assert!(outcome.publications.is_empty());
        assert_eq!(outcome.position.offset, 1);
    }
}
