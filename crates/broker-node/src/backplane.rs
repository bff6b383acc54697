//! How publications reach every node.
//!
//! A backplane does the publish path's one atomic step: give the publication
//! its place in the channel's stream (keeping it when the channel keeps
//! history) and hand it to every node that has subscribers for the channel,
//! in offset order. A node subscribes to a channel's traffic only while it
//! has local subscribers.

use crate::hub::Hub;
use crate::key::ChannelKey;
use async_trait::async_trait;
use herald_history::{MemoryHistory, Publication, Retention, StoreError};
use herald_protocol::StreamPosition;
use parking_lot::Mutex;
use std::collections::HashMap;
use std::hash::{BuildHasher, RandomState};
use std::sync::atomic::{AtomicBool, AtomicU64};
use std::sync::Arc;

#[derive(Debug, thiserror::Error)]
pub enum BackplaneError {
    /// The store behind the backplane failed; its own error says how.
    #[error("backplane failed: {0}")]
    Store(#[source] StoreError),
    /// The app's dispatch stream holds as many entries as it may: workers
    /// are behind (or none runs).
    #[error("the dispatch backlog of app `{0}` is full")]
    DispatchFull(String),
}

/// Counters of a backplane's health, read by the gateway's metrics.
#[derive(Debug, Default)]
pub struct BackplaneStats {
    pub ready: AtomicBool,
    pub errors: AtomicU64,
    pub resubscribes: AtomicU64,
    /// Messages lost between the store's client and the node.
    pub lagged: AtomicU64,
    /// Messages that could not be read and were dropped (and logged).
    pub malformed: AtomicU64,
    /// Round trips of the backplane's probe (publish to itself and receive
    /// it back): what one Redis round trip costs this gateway.
    pub probe: crate::latency::Latency,
}

/// What a publish did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Published {
    /// The publication's place in its stream; `None` when it went nowhere
    /// (no listener and no history kept), or was a repeat.
    pub position: Option<StreamPosition>,
    /// Set when the publish repeated an idempotency key seen within its
    /// window: nothing was published, and this is what the first publish
    /// answered.
    pub repeat_of: Option<Original>,
}

/// The answer of the first publish under an idempotency key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Original {
    /// `None` when the first publication went nowhere.
    pub message_id: Option<String>,
    pub timestamp_ms: u64,
}

/// A publish that must happen at most once per key within `window`, per
/// channel, across the cluster.
#[derive(Debug, Clone, Copy)]
pub struct Idempotency<'a> {
    pub key: &'a str,
    pub window: std::time::Duration,
}

/// A publication that is also appended to its app's dispatch stream (a
/// channel with a definition): the durable record from which workers log
/// the message and deliver its webhooks.
#[derive(Debug, Clone, Copy)]
pub struct Dispatch<'a> {
    pub app: &'a str,
    /// What the worker needs beside the publication (JSON).
    pub head: &'a str,
    /// Entries the app's stream may hold; a publish beyond is refused.
    pub max: usize,
}

#[async_trait]
pub trait Backplane: Send + Sync + 'static {
    /// Numbers, keeps (per `retention`) and delivers a publication, and
    /// appends it to the dispatch stream when `dispatch` says so (the
    /// embedded backplane has none: its caller writes the log).
    async fn publish(
        &self,
        key: &ChannelKey,
        publication: Arc<Publication>,
        retention: Retention,
        idempotency: Option<Idempotency<'_>>,
        dispatch: Option<Dispatch<'_>>,
        now_ms: u64,
    ) -> Result<Published, BackplaneError>;

    /// Starts receiving the channel's traffic for one more local
    /// subscriber; returns once the subscription is confirmed. Called once
    /// for every local subscriber: the backplane counts, and subscribes to
    /// the channel's topic only while the count is above zero.
    async fn subscribe(&self, key: &ChannelKey) -> Result<(), BackplaneError>;

    /// Stops receiving the channel's traffic (called once for every
    /// `subscribe`; the backplane counts).
    async fn unsubscribe(&self, key: &ChannelKey) -> Result<(), BackplaneError>;

    /// Forgets a publish's idempotency key, so that a retry with it
    /// publishes again: for a publish whose later step (its log row)
    /// failed after the key was recorded.
    async fn forget(&self, _key: &ChannelKey, _idempotency: Idempotency<'_>) {}

    /// Whether the backplane is connected and known to deliver.
    fn ready(&self) -> bool {
        true
    }

    /// Periodic upkeep (forgetting expired idempotency keys, say).
    fn sweep(&self, _now_ms: u64) {}
}

const ORDER_SHARDS: usize = 64;

/// The embedded backplane: one node, so publishing is delivering to the
/// local hub. Publishes on one channel are serialized so that offsets reach
/// subscribers in order.
pub struct MemoryBackplane {
    hub: Arc<Hub>,
    history: Arc<MemoryHistory>,
    /// (channel id, idempotency key) -> first answer, expiry ms.
    seen: Mutex<HashMap<(String, String), (Original, u64)>>,
    order: Vec<Mutex<()>>,
    hasher: RandomState,
}

impl MemoryBackplane {
    pub fn new(hub: Arc<Hub>, history: Arc<MemoryHistory>) -> Self {
        MemoryBackplane {
            hub,
            history,
            seen: Mutex::new(HashMap::new()),
            order: (0..ORDER_SHARDS).map(|_| Mutex::new(())).collect(),
            hasher: RandomState::new(),
        }
    }
}

#[async_trait]
impl Backplane for MemoryBackplane {
    async fn publish(
        &self,
        key: &ChannelKey,
        publication: Arc<Publication>,
        retention: Retention,
        idempotency: Option<Idempotency<'_>>,
        _dispatch: Option<Dispatch<'_>>,
        now_ms: u64,
    ) -> Result<Published, BackplaneError> {
        let id = key.id();
        let _ordered = self.order[(self.hasher.hash_one(id) as usize) % ORDER_SHARDS].lock();
        let seen_key = idempotency.map(|i| (id.to_owned(), i.key.to_owned()));
        if let Some(seen_key) = &seen_key {
            if let Some((original, expires)) = self.seen.lock().get(seen_key) {
                if *expires > now_ms {
                    return Ok(Published {
                        position: None,
                        repeat_of: Some(original.clone()),
                    });
                }
            }
        }
        let listening = self.hub.has_subscribers(key);
        let position = (listening || retention.keeps_history()).then(|| {
            self.history
                .append_now(id, Arc::clone(&publication), retention, now_ms)
        });
        if let (Some(position), true) = (&position, listening) {
            self.hub.deliver_publication(id, &publication, position);
        }
        if let (Some(seen_key), Some(idempotency)) = (seen_key, idempotency) {
            // A logged publication went somewhere (the log) even with no
            // listener: a repeat answers with its id.
            let went = position.is_some() || publication.logged;
            let original = Original {
                message_id: went.then(|| publication.message_id.clone()),
                timestamp_ms: now_ms,
            };
            let expires = now_ms + idempotency.window.as_millis() as u64;
            self.seen.lock().insert(seen_key, (original, expires));
        }
        Ok(Published {
            position,
            repeat_of: None,
        })
    }

    async fn subscribe(&self, _key: &ChannelKey) -> Result<(), BackplaneError> {
        // The hub is the whole cluster: nothing to subscribe to.
        Ok(())
    }

    async fn unsubscribe(&self, _key: &ChannelKey) -> Result<(), BackplaneError> {
        Ok(())
    }

    async fn forget(&self, key: &ChannelKey, idempotency: Idempotency<'_>) {
        self.seen
            .lock()
            .remove(&(key.id().to_owned(), idempotency.key.to_owned()));
    }

    /// Forgets idempotency keys past their window, and idle streams.
    fn sweep(&self, now_ms: u64) {
        self.seen.lock().retain(|_, (_, expires)| *expires > now_ms);
        self.history.sweep(now_ms);
    }
}
