//! The local subscription index and fan-out.
//!
//! Channels are spread over shards by key id, each behind its own lock, so
//! subscribes and deliveries on different channels rarely contend. Fan-out
//! never waits: it offers one shared encoded frame to each subscriber's
//! bounded queue and kicks the ones that are full.

use crate::key::ChannelKey;
use crate::outbound::{EncodedFrame, Offer, Subscriber};
use herald_history::Publication;
use herald_protocol::server::{Event, EventMeta, Member, PresenceChange, ServerFrame};
use herald_protocol::{timestamp_string, StreamPosition};
use parking_lot::RwLock;
use std::collections::HashMap;
use std::hash::{BuildHasher, RandomState};
use std::sync::atomic::{AtomicU64, Ordering};

const SHARDS: usize = 64;

struct Channel {
    key: ChannelKey,
    subscribers: HashMap<u64, Subscriber>,
}

/// Counters of what fan-out did, read by the gateway's metrics.
#[derive(Debug, Default)]
pub struct FanoutStats {
    pub delivered: AtomicU64,
    pub slow_consumers: AtomicU64,
}

pub struct Hub {
    shards: Vec<RwLock<HashMap<String, Channel>>>,
    hasher: RandomState,
    pub stats: FanoutStats,
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
        }
    }

    fn shard(&self, id: &str) -> &RwLock<HashMap<String, Channel>> {
        &self.shards[(self.hasher.hash_one(id) as usize) % SHARDS]
    }

    /// Adds a subscriber; true when it is the channel's first on this node.
    pub fn add(&self, key: &ChannelKey, subscriber: Subscriber) -> bool {
        let mut shard = self.shard(key.id()).write();
        let channel = shard.entry(key.id().to_owned()).or_insert_with(|| Channel {
            key: key.clone(),
            subscribers: HashMap::new(),
        });
        let first = channel.subscribers.is_empty();
        channel.subscribers.insert(subscriber.conn, subscriber);
        first
    }

    /// Removes a subscriber; true when it was the channel's last on this node.
    pub fn remove(&self, key: &ChannelKey, conn: u64) -> bool {
        let mut shard = self.shard(key.id()).write();
        let Some(channel) = shard.get_mut(key.id()) else {
            return false;
        };
        if channel.subscribers.remove(&conn).is_none() {
            return false;
        }
        if channel.subscribers.is_empty() {
            shard.remove(key.id());
            return true;
        }
        false
    }

    pub fn has_subscribers(&self, key: &ChannelKey) -> bool {
        self.shard(key.id()).read().contains_key(key.id())
    }

    pub fn is_subscribed(&self, key: &ChannelKey, conn: u64) -> bool {
        self.shard(key.id())
            .read()
            .get(key.id())
            .is_some_and(|c| c.subscribers.contains_key(&conn))
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
        self.fan_out(key_id, |key| {
            ServerFrame::Event(event_frame(
                key,
                publication,
                position.epoch.clone(),
                position.offset,
            ))
        })
    }

    /// Delivers a presence join or leave to the local subscribers of a
    /// channel.
    pub fn deliver_presence(&self, key_id: &str, kind: PresenceKind, member: &Member) -> usize {
        self.fan_out(key_id, |key| {
            let change = PresenceChange {
                channel: key.name().to_owned(),
                global: key.global(),
                member: member.clone(),
            };
            match kind {
                PresenceKind::Join => ServerFrame::PresenceJoin(change),
                PresenceKind::Leave => ServerFrame::PresenceLeave(change),
            }
        })
    }

    fn fan_out(&self, key_id: &str, frame: impl FnOnce(&ChannelKey) -> ServerFrame) -> usize {
        let shard = self.shard(key_id).read();
        let Some(channel) = shard.get(key_id) else {
            return 0;
        };
        // Encode once; every subscriber gets the same bytes.
        let encoded = EncodedFrame::encode(&frame(&channel.key));
        let mut queued = 0;
        for subscriber in channel.subscribers.values() {
            match subscriber.outbound.offer(encoded.clone()) {
                Offer::Queued => queued += 1,
                Offer::SlowConsumer => {
                    self.stats.slow_consumers.fetch_add(1, Ordering::Relaxed);
                }
                Offer::Closed => {}
            }
        }
        self.stats
            .delivered
            .fetch_add(queued as u64, Ordering::Relaxed);
        queued
    }
}

/// The `event` frame of a publication on a channel.
pub fn event_frame(key: &ChannelKey, p: &Publication, epoch: String, offset: u64) -> Event {
    Event {
        channel: key.name().to_owned(),
        global: key.global(),
        event: p.event.clone(),
        payload: std::sync::Arc::clone(&p.payload),
        meta: EventMeta {
            message_id: p.message_id.clone(),
            sender_type: p.sender_type,
            sender_id: p.sender_id.clone(),
            timestamp: timestamp_string(p.timestamp_ms),
            epoch,
            offset,
        },
    }
}
