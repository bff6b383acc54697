//! The local subscription index and fan-out.
//!
//! Channels are spread over shards by key id, each behind its own lock, so
//! subscribes and deliveries on different channels rarely contend. Fan-out
//! never waits: it encodes a delivery once per codec among the channel's
//! subscribers (see [`crate::codec`]), offers the shared bytes to each
//! subscriber's bounded queue and kicks the ones that are full.
//!
//! A subscriber joins in two steps. [`Hub::add`] puts it in the index
//! *joining*: frames for it are held back, with their offsets. Once its
//! subscription is in place and its reply is ready (with any replayed
//! history), [`Hub::go_live`] queues the reply and then the held frames
//! newer than what the reply covered, under the channel's lock, so nothing
//! published meanwhile is lost, duplicated or overtakes the reply.

use crate::codec::{CodecRef, Encodings};
use crate::key::ChannelKey;
use crate::outbound::{EncodedFrame, Offer, Subscriber};
use herald_history::Publication;
use herald_protocol::server::{DisconnectReason, Member};
use herald_protocol::StreamPosition;
use parking_lot::RwLock;
use std::collections::HashMap;
use std::hash::{BuildHasher, RandomState};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};

const SHARDS: usize = 64;

/// Frames held back for one joining subscriber before it is kicked as too
/// slow to join.
pub const JOIN_BUFFER_LIMIT: usize = 4096;

struct Channel {
    key: ChannelKey,
    subscribers: HashMap<u64, Entry>,
    /// Subscribers still joining (`held` is `Some`): fan-out takes the
    /// slow path only while this is above zero, without scanning.
    joining: usize,
}

struct Entry {
    subscriber: Subscriber,
    /// `Some` while joining: frames held back, with their offsets
    /// (`None` for frames that have none, such as presence changes).
    held: Option<Vec<(Option<u64>, EncodedFrame)>>,
}

/// Counters of what fan-out did, read by the gateway's metrics.
#[derive(Debug, Default)]
pub struct FanoutStats {
    pub delivered: AtomicU64,
    pub slow_consumers: AtomicU64,
    /// From a publication's timestamp (when it was accepted, on whichever
    /// gateway) to its fan-out here.
    pub latency: crate::latency::Latency,
}

/// Most messages whose audience a hub holds before they are taken;
/// beyond it counts are dropped (and counted as dropped).
pub const AUDIENCE_LIMIT: usize = 100_000;

/// Sockets each logged message reached on this node, until the gateway
/// takes them to the message log.
#[derive(Debug, Default)]
pub struct Audience {
    counts: parking_lot::Mutex<HashMap<String, u64>>,
    pub dropped: AtomicU64,
}

impl Audience {
    /// Puts counts back that could not be reported (to try again).
    pub fn restore(&self, counts: Vec<(String, u64)>) {
        for (id, n) in counts {
            self.add(&id, n as usize);
        }
    }

    fn add(&self, message_id: &str, sockets: usize) {
        let mut counts = self.counts.lock();
        if let Some(n) = counts.get_mut(message_id) {
            *n += sockets as u64;
        } else if counts.len() < AUDIENCE_LIMIT {
            counts.insert(message_id.to_owned(), sockets as u64);
        } else {
            self.dropped.fetch_add(1, Ordering::Relaxed);
        }
    }

    /// The counts gathered since the last call.
    pub fn take(&self) -> Vec<(String, u64)> {
        std::mem::take(&mut *self.counts.lock())
            .into_iter()
            .collect()
    }
}

pub struct Hub {
    shards: Vec<RwLock<HashMap<String, Channel>>>,
    hasher: RandomState,
    pub stats: FanoutStats,
    pub audience: Audience,
    /// Presence changes are delivered only to channels with at most this
    /// many local subscribers.
    presence_announce_limit: AtomicUsize,
}

/// Whether a presence change is a join or a leave.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PresenceKind {
    Join,
    Leave,
}

impl Default for Hub {
    fn default() -> Self {
        Self::new()
    }
}

impl Hub {
    pub fn new() -> Self {
        Hub {
            shards: (0..SHARDS).map(|_| RwLock::new(HashMap::new())).collect(),
            hasher: RandomState::new(),
            stats: FanoutStats::default(),
            audience: Audience::default(),
            presence_announce_limit: AtomicUsize::new(usize::MAX),
        }
    }

    /// Announces joins and leaves only on channels with at most `max`
    /// local subscribers: filling a channel of N then costs at most N × max
    /// frames, not N².
    pub fn limit_presence_announcements(&self, max: usize) {
        self.presence_announce_limit.store(max, Ordering::Relaxed);
    }

    fn shard(&self, id: &str) -> &RwLock<HashMap<String, Channel>> {
        &self.shards[(self.hasher.hash_one(id) as usize) % SHARDS]
    }

    /// Adds a subscriber, joining (see the module doc). True when the
    /// connection was not yet subscribed to the channel on this node.
    pub fn add(&self, key: &ChannelKey, subscriber: Subscriber) -> bool {
        let mut shard = self.shard(key.id()).write();
        let channel = shard.entry(key.id().to_owned()).or_insert_with(|| Channel {
            key: key.clone(),
            subscribers: HashMap::new(),
            joining: 0,
        });
        let entry = Entry {
            held: Some(Vec::new()),
            subscriber,
        };
        let replaced = channel
            .subscribers
            .insert(entry.subscriber.conn.local(), entry);
        // A replaced entry that was joining is already counted.
        if replaced.as_ref().is_none_or(|e| e.held.is_none()) {
            channel.joining += 1;
        }
        replaced.is_none()
    }

    /// Ends a subscriber's join: queues `reply` (when there is one), then the
    /// frames held back meanwhile whose offset is above `covered` (what the
    /// reply already accounts for). False when the subscriber is gone.
    pub fn go_live(
        &self,
        key: &ChannelKey,
        conn: u64,
        covered: u64,
        reply: Option<EncodedFrame>,
    ) -> bool {
        let mut shard = self.shard(key.id()).write();
        let Some(channel) = shard.get_mut(key.id()) else {
            return false;
        };
        let Some(entry) = channel.subscribers.get_mut(&conn) else {
            return false;
        };
        let held = match entry.held.take() {
            Some(held) => {
                channel.joining -= 1;
                held
            }
            None => Vec::new(),
        };
        let outbound = &entry.subscriber.outbound;
        if let Some(reply) = reply {
            if outbound.offer(reply) == Offer::SlowConsumer {
                self.stats.slow_consumers.fetch_add(1, Ordering::Relaxed);
            }
        }
        for (offset, frame) in held {
            if offset.is_none_or(|o| o > covered) && outbound.offer(frame) == Offer::SlowConsumer {
                self.stats.slow_consumers.fetch_add(1, Ordering::Relaxed);
            }
        }
        true
    }

    /// Removes a subscriber; true when it was subscribed.
    pub fn remove(&self, key: &ChannelKey, conn: u64) -> bool {
        let mut shard = self.shard(key.id()).write();
        let Some(channel) = shard.get_mut(key.id()) else {
            return false;
        };
        let Some(removed) = channel.subscribers.remove(&conn) else {
            return false;
        };
        if removed.held.is_some() {
            channel.joining -= 1;
        }
        if channel.subscribers.is_empty() {
            shard.remove(key.id());
        }
        true
    }

    pub fn has_subscribers(&self, key: &ChannelKey) -> bool {
        self.shard(key.id()).read().contains_key(key.id())
    }

    pub fn is_subscribed(&self, key: &ChannelKey, conn: u64) -> bool {
        self.shard(key.id())
            .read()
            .get(key.id())
            .and_then(|c| c.subscribers.get(&conn))
            .is_some_and(|e| e.held.is_none())
    }

    /// Number of channels with at least one local subscriber.
    pub fn channel_count(&self) -> usize {
        self.shards.iter().map(|s| s.read().len()).sum()
    }

    /// Number of (channel, connection) subscriptions on this node.
    pub fn subscription_count(&self) -> usize {
        self.shards
            .iter()
            .map(|s| {
                s.read()
                    .values()
                    .map(|c| c.subscribers.len())
                    .sum::<usize>()
            })
            .sum()
    }

    /// Delivers a publication to the local subscribers of its channel.
    /// Returns how many subscribers it was queued to.
    pub fn deliver_publication(
        &self,
        key_id: &str,
        publication: &Publication,
        position: &StreamPosition,
    ) -> usize {
        let sockets = self.fan_out(key_id, Some(position.offset), |key, codec| {
            codec.publication(key, publication, position)
        });
        if sockets > 0 {
            let age_ms = herald_protocol::now_ms().saturating_sub(publication.timestamp_ms);
            self.stats.latency.observe(age_ms as f64 / 1000.0);
        }
        if publication.logged && sockets > 0 {
            self.audience.add(&publication.message_id, sockets);
        }
        sockets
    }

    /// Delivers a presence join or leave to the local subscribers of a
    /// channel.
    pub fn deliver_presence(&self, key_id: &str, kind: PresenceKind, member: &Member) -> usize {
        let limit = self.presence_announce_limit.load(Ordering::Relaxed);
        let too_many = self
            .shard(key_id)
            .read()
            .get(key_id)
            .is_some_and(|c| c.subscribers.len() > limit);
        if too_many {
            return 0;
        }
        self.fan_out(key_id, None, |key, codec| codec.presence(key, kind, member))
    }

    fn fan_out(
        &self,
        key_id: &str,
        offset: Option<u64>,
        render: impl Fn(&ChannelKey, CodecRef) -> EncodedFrame,
    ) -> usize {
        let shard = self.shard(key_id).upgradable_read();
        let Some(channel) = shard.get(key_id) else {
            return 0;
        };
        // Encode once per codec; its subscribers all get the same bytes.
        let mut encodings = Encodings::default();
        if channel.joining > 0 {
            // Someone is joining: take the write lock to hold its copy back,
            // having encoded under the read lock (no subscriber can come or
            // go in between: the upgradable lock excludes writers).
            for entry in channel.subscribers.values() {
                encodings.get(entry.subscriber.outbound.codec(), |codec| {
                    render(&channel.key, codec)
                });
            }
            let mut shard = parking_lot::RwLockUpgradableReadGuard::upgrade(shard);
            let Some(Channel {
                key, subscribers, ..
            }) = shard.get_mut(key_id)
            else {
                return 0;
            };
            let mut queued = 0;
            for entry in subscribers.values_mut() {
                let encoded = encodings.get(entry.subscriber.outbound.codec(), |codec| {
                    render(key, codec)
                });
                match &mut entry.held {
                    Some(held) if held.len() < JOIN_BUFFER_LIMIT => {
                        held.push((offset, encoded.clone()))
                    }
                    Some(_) => {
                        if entry
                            .subscriber
                            .outbound
                            .kick()
                            .kick(DisconnectReason::SlowConsumer)
                        {
                            self.stats.slow_consumers.fetch_add(1, Ordering::Relaxed);
                        }
                    }
                    None => queued += self.offer(&entry.subscriber, encoded),
                }
            }
            self.stats
                .delivered
                .fetch_add(queued as u64, Ordering::Relaxed);
            return queued;
        }
        let mut queued = 0;
        for entry in channel.subscribers.values() {
            let encoded = encodings.get(entry.subscriber.outbound.codec(), |codec| {
                render(&channel.key, codec)
            });
            queued += self.offer(&entry.subscriber, encoded);
        }
        self.stats
            .delivered
            .fetch_add(queued as u64, Ordering::Relaxed);
        queued
    }

    fn offer(&self, subscriber: &Subscriber, frame: &EncodedFrame) -> usize {
        match subscriber.outbound.offer(frame.clone()) {
            Offer::Queued => 1,
            Offer::SlowConsumer => {
                self.stats.slow_consumers.fetch_add(1, Ordering::Relaxed);
                0
            }
            Offer::Closed => 0,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::codec::{Codec, NATIVE};
    use crate::key::Scope;
    use crate::outbound::{ConnId, Outbound};
    use herald_protocol::server::SenderType;
    use serde_json::value::RawValue;
    use std::sync::Arc;

    fn publication() -> Publication {
        Publication {
            message_id: "m".into(),
            event: "e".into(),
            payload: Arc::from(RawValue::from_string("1".into()).unwrap()),
            sender_type: SenderType::System,
            sender_id: None,
            timestamp_ms: 0,
            trace: None,
            logged: false,
        }
    }

    fn sub(conn: u64, outbound: Outbound) -> Subscriber {
        Subscriber {
            conn: ConnId::new(conn, format!("c-{conn}")),
            outbound,
        }
    }

    /// A second surface's codec: counts its encodings.
    struct Counting(AtomicU64);

    static COUNTING: Counting = Counting(AtomicU64::new(0));

    impl Codec for Counting {
        fn name(&self) -> &'static str {
            "counting"
        }

        fn publication(
            &self,
            _key: &ChannelKey,
            _publication: &Publication,
            position: &StreamPosition,
        ) -> EncodedFrame {
            self.0.fetch_add(1, Ordering::Relaxed);
            EncodedFrame::from_string(format!("publication {}", position.offset))
        }

        fn presence(&self, _key: &ChannelKey, kind: PresenceKind, member: &Member) -> EncodedFrame {
            self.0.fetch_add(1, Ordering::Relaxed);
            EncodedFrame::from_string(format!("{kind:?} {}", member.presence_id))
        }
    }

    #[test]
    fn each_subscriber_gets_its_own_codec_encoded_once_per_delivery() {
        let hub = Hub::new();
        let key = ChannelKey::new("a", "ch", &Scope::Global, None).unwrap();
        let mut native = Vec::new();
        let mut counting = Vec::new();
        for conn in 0..3 {
            let (outbound, rx, _kick) = Outbound::new(16, &NATIVE);
            hub.add(&key, sub(conn, outbound));
            assert!(hub.go_live(&key, conn, 0, None));
            native.push(rx);
            let (outbound, rx, _kick) = Outbound::new(16, &COUNTING);
            hub.add(&key, sub(10 + conn, outbound));
            assert!(hub.go_live(&key, 10 + conn, 0, None));
            counting.push(rx);
        }
        let position = StreamPosition {
            epoch: "e".into(),
            offset: 7,
        };
        assert_eq!(
            hub.deliver_publication(key.id(), &publication(), &position),
            6
        );
        assert_eq!(COUNTING.0.load(Ordering::Relaxed), 1, "encoded once");
        for rx in &mut native {
            assert_eq!(offset_of(&rx.try_recv().unwrap()), Some(7));
        }
        for rx in &mut counting {
            assert_eq!(rx.try_recv().unwrap().as_str(), "publication 7");
        }
        let member = Member {
            presence_id: "u".into(),
            kind: SenderType::User,
            joined_at: "0".into(),
        };
        hub.deliver_presence(key.id(), PresenceKind::Join, &member);
        assert_eq!(COUNTING.0.load(Ordering::Relaxed), 2);
        assert_eq!(counting[0].try_recv().unwrap().as_str(), "Join u");
        let frame = native[0].try_recv().unwrap();
        assert!(
            frame.as_str().contains(r#""type":"presence:join""#),
            "{}",
            frame.as_str()
        );
    }

    fn offset_of(frame: &EncodedFrame) -> Option<u64> {
        let v: serde_json::Value = serde_json::from_str(frame.as_str()).unwrap();
        v["meta"]["offset"].as_u64()
    }

    #[test]
    fn joining_subscriber_gets_reply_first_then_only_newer_frames() {
        let hub = Hub::new();
        let key = ChannelKey::new("a", "ch", &Scope::Global, None).unwrap();
        let (outbound, mut rx, _kick) = Outbound::new(16, &NATIVE);
        hub.add(&key, sub(1, outbound));
        for offset in [4, 5] {
            let position = StreamPosition {
                epoch: "e".into(),
                offset,
            };
            hub.deliver_publication(key.id(), &publication(), &position);
        }
        assert!(rx.try_recv().is_none(), "frames must be held while joining");
        assert!(!hub.is_subscribed(&key, 1));
        let reply = EncodedFrame::from_string(r#"{"type":"reply"}"#.into());
        assert!(hub.go_live(&key, 1, 4, Some(reply)));
        assert_eq!(rx.try_recv().unwrap().as_str(), r#"{"type":"reply"}"#);
        assert_eq!(offset_of(&rx.try_recv().unwrap()), Some(5));
        assert!(rx.try_recv().is_none());
        // Live from now on.
        let position = StreamPosition {
            epoch: "e".into(),
            offset: 6,
        };
        hub.deliver_publication(key.id(), &publication(), &position);
        assert_eq!(offset_of(&rx.try_recv().unwrap()), Some(6));
        assert!(hub.is_subscribed(&key, 1));
    }

    #[test]
    fn a_joiner_that_falls_too_far_behind_is_kicked() {
        let hub = Hub::new();
        let key = ChannelKey::new("a", "ch", &Scope::Global, None).unwrap();
        let (outbound, _rx, kick) = Outbound::new(16, &NATIVE);
        hub.add(&key, sub(1, outbound));
        for offset in 0..=JOIN_BUFFER_LIMIT as u64 {
            let position = StreamPosition {
                epoch: "e".into(),
                offset,
            };
            hub.deliver_publication(key.id(), &publication(), &position);
        }
        assert_eq!(kick.reason(), Some(DisconnectReason::SlowConsumer));
    }

    #[test]
    fn a_resubscribe_while_joining_or_a_removed_joiner_leaves_the_fast_path_on() {
        let hub = Hub::new();
        let key = ChannelKey::new("a", "ch", &Scope::Global, None).unwrap();
        let joining = |hub: &Hub| hub.shard(key.id()).read()[key.id()].joining;
        let (outbound, mut rx, _kick) = Outbound::new(16, &NATIVE);
        // The same connection subscribing again replaces its entry.
        hub.add(&key, sub(1, outbound.clone()));
        hub.add(&key, sub(1, outbound));
        assert_eq!(joining(&hub), 1);
        let (other, _other_rx, _) = Outbound::new(16, &NATIVE);
        hub.add(&key, sub(2, other));
        assert_eq!(joining(&hub), 2);
        assert!(hub.remove(&key, 2));
        assert!(hub.go_live(&key, 1, 0, None));
        assert_eq!(joining(&hub), 0);
        let position = StreamPosition {
            epoch: "e".into(),
            offset: 1,
        };
        hub.deliver_publication(key.id(), &publication(), &position);
        assert_eq!(offset_of(&rx.try_recv().unwrap()), Some(1));
    }
}
