//! The Redis backplane.
//!
//! Publishing runs `lua/publish.lua`: next offset, `XADD` when the channel
//! keeps history, `PUBLISH`/`SPUBLISH` to the channel's topic, all in one
//! round trip. Every gateway with local subscribers for a channel is
//! subscribed to its topic, and only those: the topic manager counts local
//! subscribers per topic, batches the `SUBSCRIBE`s that arrive together into
//! one command (one per hash slot on Redis Cluster), and answers each caller
//! once Redis has confirmed. The receive loop hands each message to the hub,
//! which encodes it once for all local subscribers.
//!
//! A probe publishes to this gateway's own topic every second; while the
//! probe does not come back the gateway reports not ready and re-subscribes
//! everything, so a subscription that went silently deaf (after a failover,
//! say) is repaired rather than trusted.

use crate::{keys, Redis, RedisError};
use async_trait::async_trait;
use fred::interfaces::EventInterface;
use fred::prelude::Value;
use fred::types::Message;
use herald_broker_node::backplane::{
    Backplane, BackplaneError, BackplaneStats, Dispatch, Idempotency, Original, Published,
};
use herald_broker_node::hub::{Hub, PresenceKind};
use herald_broker_node::{Background, ChannelKey};
use herald_history::new_epoch;
use herald_history::{Publication, Retention};
use herald_protocol::server::Member;
use herald_protocol::StreamPosition;
use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::{broadcast, mpsc, oneshot, Notify};

/// Topic operations the manager may fold into one batch.
const TOPIC_BATCH: usize = 4096;
/// How long the topic manager gathers operations into one batch.
const TOPIC_WINDOW: Duration = Duration::from_millis(1);
const PROBE_EVERY: Duration = Duration::from_secs(1);
const PROBE_WAIT: Duration = Duration::from_secs(2);

enum TopicOp {
    Add(String, oneshot::Sender<Result<(), RedisError>>),
    Remove(String),
}

pub struct RedisBackplane {
    redis: Arc<Redis>,
    topics: mpsc::UnboundedSender<TopicOp>,
    pub stats: Arc<BackplaneStats>,
}

impl RedisBackplane {
    /// Starts the topic manager, the receive loop and the probe in
    /// `background`.
    pub async fn start(
        redis: Arc<Redis>,
        hub: Arc<Hub>,
        node_id: &str,
        background: &Background,
    ) -> Arc<RedisBackplane> {
        let stats = Arc::new(BackplaneStats::default());
        let (topics, rx) = mpsc::unbounded_channel();
        let probe = Arc::new(Probe::default());
        background.spawn("backplane topics", manage_topics(Arc::clone(&redis), rx));
        background.spawn(
            "backplane receive",
            receive(
                redis.subscriber.message_rx(),
                hub,
                Arc::clone(&probe),
                Arc::clone(&stats),
            ),
        );
        let backplane = Arc::new(RedisBackplane {
            redis: Arc::clone(&redis),
            topics,
            stats: Arc::clone(&stats),
        });
        let topic = keys::probe_topic(node_id);
        if let Err(e) = backplane.add_topic(topic.clone()).await {
            tracing::warn!(error = %e, "probe subscription failed; the probe will retry");
        }
        background.spawn("backplane probe", watch(redis, stats, probe, topic));
        backplane
    }

    async fn add_topic(&self, topic: String) -> Result<(), RedisError> {
        let stopped = || RedisError::Stopped("topic manager");
        let (done, confirmed) = oneshot::channel();
        self.topics
            .send(TopicOp::Add(topic, done))
            .map_err(|_| stopped())?;
        confirmed.await.map_err(|_| stopped())?
    }
}

/// Publishes to the node's own probe topic every second; readiness
/// follows whether the probe comes back.
async fn watch(redis: Arc<Redis>, stats: Arc<BackplaneStats>, probe: Arc<Probe>, topic: String) {
    let mut tick = tokio::time::interval(PROBE_EVERY);
    loop {
        tick.tick().await;
        let nonce = rand::random::<u64>();
        let seen = probe.expect(nonce);
        let started = std::time::Instant::now();
        let sent = redis.publish_raw(&topic, format!("probe {nonce}")).await;
        let back = sent.is_ok() && tokio::time::timeout(PROBE_WAIT, seen).await.is_ok();
        if back {
            stats.probe.observe(started.elapsed().as_secs_f64());
        }
        let was_ready = stats.ready.swap(back, Ordering::Relaxed);
        if back {
            if !was_ready {
                tracing::info!("backplane ready: the probe came back");
            }
            continue;
        }
        if was_ready {
            tracing::warn!(
                published = sent.is_ok(),
                "backplane not ready: the probe did not come back"
            );
        }
        if redis.is_connected() {
            // Connected yet deaf: subscribe everything again.
            stats.resubscribes.fetch_add(1, Ordering::Relaxed);
            if let Err(e) = redis.subscriber.resubscribe_all().await {
                tracing::warn!(error = %e, "re-subscribing failed");
            }
        }
    }
}

#[async_trait]
impl Backplane for RedisBackplane {
    async fn publish(
        &self,
        key: &ChannelKey,
        publication: Arc<Publication>,
        retention: Retention,
        idempotency: Option<Idempotency<'_>>,
        dispatch: Option<Dispatch<'_>>,
        now_ms: u64,
    ) -> Result<Published, BackplaneError> {
        let id = key.id();
        let body = serde_json::to_string(&*publication)
            .map_err(|e| RedisError::Protocol(format!("publication not encodable: {e}")))?;
        let size = if retention.keeps_history() {
            retention.size
        } else {
            0
        };
        let mut keys = vec![keys::meta(id), keys::stream(id)];
        let mut args: Vec<Value> = vec![
            keys::topic(id).into(),
            body.as_str().into(),
            (size as i64).into(),
            (retention.ttl.as_millis().max(1) as i64).into(),
            (now_ms as i64).into(),
            new_epoch().into(),
            self.redis.publish_command().into(),
        ];
        match idempotency {
            Some(idempotency) => {
                keys.push(keys::idempotency(id, idempotency.key));
                args.push((idempotency.window.as_millis().max(1) as i64).into());
            }
            None => args.push("".into()),
        }
        args.push(publication.message_id.as_str().into());
        // On Redis Cluster the app's stream is in another slot: appended
        // by its own script once the publish is done.
        let inline = dispatch.filter(|_| !self.redis.cluster);
        match inline {
            Some(d) => {
                keys.push(keys::dispatch(d.app));
                args.push(d.head.into());
                args.push((d.max as i64).into());
            }
            None => args.push("".into()),
        }
        let (offset, epoch, receivers): (i64, String, i64) = self
            .redis
            .eval(&self.redis.scripts.publish, keys, args)
            .await
            .inspect_err(|_| {
                self.stats.errors.fetch_add(1, Ordering::Relaxed);
            })?;
        if offset == -2 {
            let app = dispatch.map(|d| d.app).unwrap_or_default();
            return Err(BackplaneError::DispatchFull(app.to_owned()));
        }
        if let (Some(d), true, true) = (dispatch, self.redis.cluster, offset > 0) {
            let appended: Result<i64, RedisError> = self
                .redis
                .eval(
                    &self.redis.scripts.dispatch,
                    vec![keys::dispatch(d.app)],
                    vec![d.head.into(), body.as_str().into(), (d.max as i64).into()],
                )
                .await;
            let failed = match appended {
                Ok(n) if n >= 0 => None,
                Ok(_) => Some(BackplaneError::DispatchFull(d.app.to_owned())),
                Err(e) => {
                    self.stats.errors.fetch_add(1, Ordering::Relaxed);
                    Some(e.into())
                }
            };
            if let Some(e) = failed {
                // The publish is reported failed: a retry with its key
                // must publish (and be logged) again, not repeat this one.
                if let Some(i) = idempotency {
                    self.forget(key, i).await;
                }
                return Err(e);
            }
        }
        if offset < 0 {
            // A repeat: `epoch` holds the first answer, `<message id or -> <ms>`.
            let original = epoch
                .split_once(' ')
                .and_then(|(id, at)| Some((id, at.parse().ok()?)));
            let Some((message_id, timestamp_ms)) = original else {
                self.stats.errors.fetch_add(1, Ordering::Relaxed);
                let detail = format!("publish script answered repeat `{epoch}`");
                return Err(RedisError::Protocol(detail).into());
            };
            return Ok(Published {
                position: None,
                repeat_of: Some(Original {
                    message_id: (message_id != "-").then(|| message_id.to_owned()),
                    timestamp_ms,
                }),
            });
        }
        Ok(Published {
            position: (receivers > 0 || size > 0 || dispatch.is_some()).then_some(StreamPosition {
                epoch,
                offset: offset as u64,
            }),
            repeat_of: None,
        })
    }

    async fn forget(&self, key: &ChannelKey, idempotency: Idempotency<'_>) {
        let record = keys::idempotency(key.id(), idempotency.key);
        if let Err(e) = self.redis.del(&record).await {
            tracing::warn!(error = %e, "cannot forget an idempotency key; a retry with it answers as the failed publish");
        }
    }

    async fn subscribe(&self, key: &ChannelKey) -> Result<(), BackplaneError> {
        self.add_topic(keys::topic(key.id())).await.map_err(|e| {
            self.stats.errors.fetch_add(1, Ordering::Relaxed);
            e.into()
        })
    }

    async fn unsubscribe(&self, key: &ChannelKey) -> Result<(), BackplaneError> {
        self.topics
            .send(TopicOp::Remove(keys::topic(key.id())))
            .map_err(|_| RedisError::Stopped("topic manager").into())
    }

    fn ready(&self) -> bool {
        self.stats.ready.load(Ordering::Relaxed)
    }
}

/// Keeps a count of local subscribers per topic and turns the changes into
/// batched `SUBSCRIBE`/`UNSUBSCRIBE` commands. Operations are applied in the
/// order they arrive, so an unsubscribe never overtakes a later subscribe.
async fn manage_topics(redis: Arc<Redis>, mut rx: mpsc::UnboundedReceiver<TopicOp>) {
    let mut counts: HashMap<String, usize> = HashMap::new();
    while let Some(first) = rx.recv().await {
        // Gather what arrives within a short window: subscribes come in
        // bursts (a reconnect wave, a page subscribing to many channels),
        // and one command for the burst beats one round trip each.
        let mut ops = vec![first];
        let gathered = tokio::time::Instant::now() + TOPIC_WINDOW;
        while ops.len() < TOPIC_BATCH {
            match tokio::time::timeout_at(gathered, rx.recv()).await {
                Ok(Some(op)) => ops.push(op),
                Ok(None) | Err(_) => break,
            }
        }
        let mut subscribe: HashSet<String> = HashSet::new();
        let mut unsubscribe: HashSet<String> = HashSet::new();
        let mut waiters = Vec::new();
        for op in ops {
            match op {
                TopicOp::Add(topic, done) => {
                    let count = counts.entry(topic.clone()).or_insert(0);
                    *count += 1;
                    // Still subscribed in Redis if its unsubscribe is only
                    // pending in this batch.
                    if *count == 1 && !unsubscribe.remove(&topic) {
                        subscribe.insert(topic.clone());
                    }
                    waiters.push((topic, done));
                }
                TopicOp::Remove(topic) => {
                    let Some(count) = counts.get_mut(&topic) else {
                        continue;
                    };
                    *count -= 1;
                    if *count == 0 {
                        counts.remove(&topic);
                        if !subscribe.remove(&topic) {
                            unsubscribe.insert(topic);
                        }
                    }
                }
            }
        }
        if !unsubscribe.is_empty() {
            if let Err(e) = redis
                .unsubscribe_topics(unsubscribe.into_iter().collect())
                .await
            {
                tracing::warn!(error = %e, "unsubscribing topics failed");
            }
        }
        let result = if subscribe.is_empty() {
            Ok(())
        } else {
            redis
                .subscribe_topics(subscribe.iter().cloned().collect())
                .await
        };
        for (topic, done) in waiters {
            let answer = if subscribe.contains(&topic) {
                result.clone()
            } else {
                Ok(())
            };
            let _ = done.send(answer);
        }
    }
}

/// Hands every message from Redis to the hub, in arrival order.
async fn receive(
    mut rx: broadcast::Receiver<Message>,
    hub: Arc<Hub>,
    probe: Arc<Probe>,
    stats: Arc<BackplaneStats>,
) {
    loop {
        let message = match rx.recv().await {
            Ok(message) => message,
            Err(broadcast::error::RecvError::Lagged(n)) => {
                // Subscribers see an offset gap and recover it.
                stats.lagged.fetch_add(n, Ordering::Relaxed);
                tracing::warn!(lost = n, "receive loop fell behind Redis");
                continue;
            }
            Err(broadcast::error::RecvError::Closed) => return,
        };
        let Some(text) = message.value.as_str() else {
            malformed(&stats, &message.channel, "not text");
            continue;
        };
        let text: &str = &text;
        match keys::channel_of_topic(&message.channel) {
            Some(channel) => {
                if let Err(why) = deliver(&hub, channel, text) {
                    malformed(&stats, &message.channel, why);
                }
            }
            None => probe.saw(text),
        }
    }
}

/// Counts and logs a message on a topic that could not be read.
fn malformed(stats: &BackplaneStats, topic: &str, why: &str) {
    stats.malformed.fetch_add(1, Ordering::Relaxed);
    tracing::warn!(topic, why, "unreadable message on the backplane, dropped");
}

/// The messages on a channel topic: `p <offset> <epoch> <publication>`,
/// `j <member>` and `l <member>`.
fn deliver(hub: &Hub, channel: &str, text: &str) -> Result<(), &'static str> {
    let (kind, rest) = text.split_once(' ').ok_or("no message kind")?;
    match kind {
        "p" => {
            let mut parts = rest.splitn(3, ' ');
            let (Some(offset), Some(epoch), Some(body)) =
                (parts.next(), parts.next(), parts.next())
            else {
                return Err("publication without offset, epoch and body");
            };
            let offset = offset
                .parse()
                .map_err(|_| "publication offset not a number")?;
            let publication = serde_json::from_str::<Publication>(body)
                .map_err(|_| "publication body unreadable")?;
            let position = StreamPosition {
                epoch: epoch.to_owned(),
                offset,
            };
            hub.deliver_publication(channel, &publication, &position);
        }
        "j" | "l" => {
            let member =
                serde_json::from_str::<Member>(rest).map_err(|_| "presence member unreadable")?;
            let kind = if kind == "j" {
                PresenceKind::Join
            } else {
                PresenceKind::Leave
            };
            hub.deliver_presence(channel, kind, &member);
        }
        _ => return Err("unknown message kind"),
    }
    Ok(())
}

/// The nonce the probe waits for.
#[derive(Default)]
struct Probe {
    expected: AtomicU64,
    seen: Notify,
}

impl Probe {
    fn expect(&self, nonce: u64) -> impl std::future::Future<Output = ()> + '_ {
        self.expected.store(nonce, Ordering::Relaxed);
        self.seen.notified()
    }

    fn saw(&self, text: &str) {
        let nonce = text
            .strip_prefix("probe ")
            .and_then(|n| n.parse::<u64>().ok());
        if nonce == Some(self.expected.load(Ordering::Relaxed)) {
            self.seen.notify_waiters();
        }
    }
}
