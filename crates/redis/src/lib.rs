//! Herald on Redis: what makes several gateways one broker.
//!
//! [`cluster_parts`] connects and assembles a `herald_broker_node::Node`'s
//! parts on Redis; the node's logic stays in `herald-broker-node`.
//!
//! - [`keys`]: every key and topic name.
//! - `lua/*.lua`: each atomic operation is one script, loaded once (all of
//!   them through [`Scripts`]) and called by SHA: publish (number, keep,
//!   publish in one round trip), position, read, the presence scripts and
//!   the rate-limit check.
//! - [`backplane`]: publish through the script; interest-routed, batched
//!   topic subscriptions; the receive loop feeding the hub; a probe that
//!   proves the node still receives.
//! - [`history`]: stream positions and reads.
//! - [`presence`]: cluster-wide members, refreshed by each gateway's
//!   heartbeat and swept when a gateway stops refreshing.
//! - [`registry`]: live gateways.
//! - [`limits`]: cluster-wide GCRA rate limits (`lua/gcra.lua`).
//!
//! Standalone Redis uses `PUBLISH`/`SUBSCRIBE`; Redis Cluster uses sharded
//! pub/sub (`SPUBLISH`/`SSUBSCRIBE`) on hash-tagged topics.

pub mod backplane;
pub mod dispatch;
pub mod history;
pub mod keys;
pub mod limits;
pub mod presence;
pub mod registry;

use fred::clients::SubscriberClient;
use fred::error::{Error as FredError, ErrorKind};
use fred::prelude::*;
use fred::types::config::{ClusterDiscoveryPolicy, ServerConfig};
use fred::types::scripts::Script;
use herald_broker_node::backplane::BackplaneError;
use herald_broker_node::presence::PresenceError;
use herald_broker_node::{Background, Hub, Parts};
use herald_history::HistoryError;
use herald_protocol::api::NodeInfo;
use std::sync::atomic::AtomicUsize;
use std::sync::Arc;
use std::time::Duration;

/// What went wrong talking to Redis.
#[derive(Debug, Clone, thiserror::Error)]
pub enum RedisError {
    /// No connection, or it broke: Redis is down, unreachable or failing
    /// over.
    #[error("Redis unreachable: {0}")]
    Unreachable(String),
    /// Redis did not answer in time.
    #[error("Redis did not answer in time")]
    Timeout,
    /// Redis answered something Herald cannot read.
    #[error("unexpected reply from Redis: {0}")]
    Protocol(String),
    /// Redis refused a script or command.
    #[error("Redis refused the call: {0}")]
    Script(String),
    /// The URL or settings cannot work.
    #[error("bad Redis settings: {0}")]
    Config(String),
    /// A part of this adapter was stopped (on shutdown).
    #[error("{0} stopped")]
    Stopped(&'static str),
}

impl From<FredError> for RedisError {
    fn from(e: FredError) -> Self {
        let detail = e.details().to_owned();
        match e.kind() {
            ErrorKind::Timeout => RedisError::Timeout,
            ErrorKind::IO
            | ErrorKind::Canceled
            | ErrorKind::Routing
            | ErrorKind::Cluster
            | ErrorKind::Backpressure
            | ErrorKind::Auth
            | ErrorKind::Sentinel => RedisError::Unreachable(detail),
            ErrorKind::Protocol | ErrorKind::Parse | ErrorKind::NotFound => {
                RedisError::Protocol(detail)
            }
            ErrorKind::Config | ErrorKind::Url => RedisError::Config(detail),
            _ => RedisError::Script(detail),
        }
    }
}

impl From<RedisError> for BackplaneError {
    fn from(e: RedisError) -> Self {
        BackplaneError::Store(Box::new(e))
    }
}

impl From<RedisError> for HistoryError {
    fn from(e: RedisError) -> Self {
        HistoryError::Store(Box::new(e))
    }
}

impl From<RedisError> for PresenceError {
    fn from(e: RedisError) -> Self {
        PresenceError::Store(Box::new(e))
    }
}

/// A connection to Redis: a command client and a pub/sub client.
pub struct Redis {
    pub(crate) client: Client,
    pub(crate) subscriber: SubscriberClient,
    pub(crate) cluster: bool,
    pub(crate) scripts: Scripts,
}

/// Every Lua script Herald runs, each loaded once and called by SHA.
pub(crate) struct Scripts {
    pub publish: Script,
    pub dispatch: Script,
    pub dispatch_claim: Script,
    pub dispatch_ack: Script,
    pub position: Script,
    pub read: Script,
    pub presence_join: Script,
    pub presence_leave: Script,
    pub presence_sweep: Script,
    pub presence_members: Script,
    pub gcra: Script,
}

impl Scripts {
    fn new() -> Self {
        Scripts {
            publish: Script::from_lua(include_str!("lua/publish.lua")),
            dispatch: Script::from_lua(include_str!("lua/dispatch.lua")),
            dispatch_claim: Script::from_lua(include_str!("lua/dispatch_claim.lua")),
            dispatch_ack: Script::from_lua(include_str!("lua/dispatch_ack.lua")),
            position: Script::from_lua(include_str!("lua/position.lua")),
            read: Script::from_lua(include_str!("lua/read.lua")),
            presence_join: Script::from_lua(include_str!("lua/presence_join.lua")),
            presence_leave: Script::from_lua(include_str!("lua/presence_leave.lua")),
            presence_sweep: Script::from_lua(include_str!("lua/presence_sweep.lua")),
            presence_members: Script::from_lua(include_str!("lua/presence_members.lua")),
            gcra: Script::from_lua(include_str!("lua/gcra.lua")),
        }
    }
}

pub type RedisResult<T> = Result<T, RedisError>;

/// How a clustered node joins Redis.
#[derive(Debug, Clone)]
pub struct ClusterOptions {
    /// `redis://...` or `redis-cluster://host:port,...`
    pub redis_url: String,
    /// How long a presence entry outlives its gateway's last refresh.
    pub presence_ttl: Duration,
    /// The address this gateway serves on, for the node registry.
    pub address: String,
}

/// Connects to Redis and assembles the parts of node `id` of a cluster:
/// publications, history and presence go through Redis, and the node
/// registers itself there. The background tasks (topic manager, receive
/// loop, probe, presence refresh and sweep, registry heartbeat) are in the
/// parts' `background`.
pub async fn cluster_parts(id: &str, options: ClusterOptions) -> RedisResult<Parts> {
    let redis = Arc::new(Redis::connect(&options.redis_url).await?);
    let hub = Arc::new(Hub::new());
    let connections = Arc::new(AtomicUsize::new(0));
    let started_at_ms = herald_protocol::now_ms();
    let background = Background::new();
    let backplane =
        backplane::RedisBackplane::start(Arc::clone(&redis), Arc::clone(&hub), id, &background)
            .await;
    let presence =
        presence::RedisPresence::start(Arc::clone(&redis), options.presence_ttl, &background);
    let registry = registry::Registry::start(
        Arc::clone(&redis),
        NodeInfo {
            id: id.to_owned(),
            address: options.address,
            connections: 0,
            started_at: started_at_ms.to_string(),
        },
        Arc::clone(&connections),
        &background,
    );
    let limits = limits::RedisLimits::new(Arc::clone(&redis), Arc::clone(&registry.live));
    Ok(Parts {
        hub,
        connections,
        stats: Arc::clone(&backplane.stats),
        backplane,
        history: Arc::new(history::RedisHistory::new(redis)),
        presence,
        membership: registry,
        shared_limits: Some(Arc::new(limits)),
        started_at_ms,
        background,
    })
}

/// How long a command may wait for Redis before it fails.
const COMMAND_TIMEOUT: Duration = Duration::from_secs(3);

/// Reads `redis://host:port[/db]` (standalone) or
/// `redis-cluster://host:port[,host:port...]` (Redis Cluster).
/// `url` with the password of its user info replaced by `***`
/// (`redis://user:***@host`); a user info without `:` is hidden whole.
/// Every message that names a Redis URL names it this way.
pub fn redact(url: &str) -> String {
    let Some((scheme, rest)) = url.split_once("://") else {
        return url.to_owned();
    };
    // The user info ends at the last `@` before the query; a password
    // may hold an unencoded `/`, so the path cannot mark its end.
    let end = rest.find('?').unwrap_or(rest.len());
    let Some(at) = rest[..end].rfind('@') else {
        return url.to_owned();
    };
    let user = match rest[..at].split_once(':') {
        Some((user, _)) => format!("{user}:***"),
        None => "***".to_owned(),
    };
    format!("{scheme}://{user}{}", &rest[at..])
}

/// Reads a URL with fred, naming it redacted if fred refuses it.
fn from_url(url: &str) -> RedisResult<Config> {
    Config::from_url(url)
        .map_err(|e| RedisError::Config(format!("{}: {}", redact(url), e.details())))
}

pub fn parse_url(url: &str) -> RedisResult<(Config, bool)> {
    let shown = redact(url);
    if let Some(rest) = url.strip_prefix("redis-cluster://") {
        if rest.contains('?') || rest.contains('@') {
            let config = from_url(url)?;
            return Ok((config, true));
        }
        let mut hosts = Vec::new();
        for part in rest.trim_end_matches('/').split(',') {
            let (host, port) = part.rsplit_once(':').ok_or_else(|| {
                RedisError::Config(format!("`{part}` in {shown} is not host:port"))
            })?;
            let port: u16 = port
                .parse()
                .map_err(|_| RedisError::Config(format!("bad port in `{part}`")))?;
            hosts.push((host.to_owned(), port));
        }
        if hosts.is_empty() {
            return Err(RedisError::Config(format!("{shown} names no node")));
        }
        let server = ServerConfig::Clustered {
            hosts: hosts
                .into_iter()
                .map(|(h, p)| fred::types::config::Server::new(h, p))
                .collect(),
            policy: ClusterDiscoveryPolicy::default(),
        };
        return Ok((
            Config {
                server,
                ..Config::default()
            },
            true,
        ));
    }
    if url.starts_with("redis://") {
        return Ok((from_url(url)?, false));
    }
    Err(RedisError::Config(format!(
        "unsupported Redis URL `{shown}`: use redis://host:port or redis-cluster://host:port,..."
    )))
}

impl Redis {
    /// Connects both clients; fails when Redis cannot be reached at all.
    pub async fn connect(url: &str) -> RedisResult<Redis> {
        let (config, cluster) = parse_url(url)?;
        let mut builder = Builder::from_config(config);
        builder
            .with_connection_config(|c| {
                c.connection_timeout = Duration::from_secs(2);
                c.internal_command_timeout = Duration::from_secs(2);
                c.max_command_attempts = 2;
                c.tcp.nodelay = Some(true);
            })
            .with_performance_config(|p| p.default_command_timeout = COMMAND_TIMEOUT)
            .set_policy(ReconnectPolicy::new_exponential(0, 100, 2_000, 2));
        let client = builder.build()?;
        // Publications arrive on the subscriber's channel before fan-out; a
        // burst must not overflow it. fred preallocates nine channels of
        // this capacity per client (at 1 << 16 that was ~40 MB resident),
        // so only the subscriber gets a deep one. A lag is counted
        // (`herald_backplane_lagged_total`) and subscribers repair the gap.
        builder.with_performance_config(|p| p.broadcast_channel_capacity = 1 << 14);
        let subscriber = builder.build_subscriber_client()?;
        let unreachable = |e: FredError| {
            RedisError::Unreachable(format!("cannot connect to {}: {e}", redact(url)))
        };
        client.init().await.map_err(unreachable)?;
        subscriber.init().await.map_err(unreachable)?;
        // Re-subscribe every topic after any reconnect.
        subscriber.manage_subscriptions();
        Ok(Redis {
            client,
            subscriber,
            cluster,
            scripts: Scripts::new(),
        })
    }

    /// `SPUBLISH` on Redis Cluster, `PUBLISH` otherwise.
    pub(crate) fn publish_command(&self) -> &'static str {
        if self.cluster {
            "SPUBLISH"
        } else {
            "PUBLISH"
        }
    }

    /// Runs a script; fails at once while Redis is unreachable rather than
    /// queueing the call.
    pub(crate) async fn eval<R: FromValue>(
        &self,
        script: &Script,
        keys: Vec<String>,
        args: Vec<Value>,
    ) -> RedisResult<R> {
        if !self.client.is_connected() {
            return Err(RedisError::Unreachable("not connected".into()));
        }
        script
            .evalsha_with_reload(&self.client, keys, args)
            .await
            .map_err(RedisError::from)
    }

    pub(crate) async fn del(&self, key: &str) -> RedisResult<()> {
        let _: i64 = self.client.del(key).await?;
        Ok(())
    }

    pub(crate) async fn publish_raw(&self, topic: &str, message: String) -> RedisResult<i64> {
        Ok(if self.cluster {
            self.client.spublish(topic, message).await?
        } else {
            self.client.publish(topic, message).await?
        })
    }

    pub(crate) async fn subscribe_topics(&self, topics: Vec<String>) -> RedisResult<()> {
        if !self.cluster {
            self.subscriber.subscribe(topics).await?;
            // fred answers SUBSCRIBE as soon as it is written, not when Redis
            // confirms it. A PING on the same connection is answered only
            // after Redis has processed everything sent before it, so once
            // it returns the subscription is in place.
            let _: Value = self.subscriber.ping(None).await?;
            return Ok(());
        }
        // SSUBSCRIBE, unlike SUBSCRIBE, is answered by fred only when Redis
        // confirms it. It takes channels of one slot at a time.
        let calls = by_slot(topics)?
            .into_iter()
            .map(|topics| self.subscriber.ssubscribe(topics));
        futures_util::future::try_join_all(calls).await?;
        Ok(())
    }

    pub(crate) async fn unsubscribe_topics(&self, topics: Vec<String>) -> RedisResult<()> {
        if !self.cluster {
            return Ok(self.subscriber.unsubscribe(topics).await?);
        }
        let calls = by_slot(topics)?
            .into_iter()
            .map(|topics| self.subscriber.sunsubscribe(topics));
        futures_util::future::try_join_all(calls).await?;
        Ok(())
    }

    pub fn is_connected(&self) -> bool {
        self.client.is_connected() && self.subscriber.is_connected()
    }
}

/// Topics grouped by Redis Cluster hash slot: sharded pub/sub commands
/// take the topics of one slot at a time.
fn by_slot(topics: Vec<String>) -> RedisResult<Vec<Vec<String>>> {
    let groups = fred::util::group_by_hash_slot(topics)?;
    Ok(groups
        .into_values()
        .map(|keys| keys.into_iter().filter_map(|k| k.into_string()).collect())
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls() {
        assert!(!parse_url("redis://127.0.0.1:6379").unwrap().1);
        let (config, cluster) = parse_url("redis-cluster://127.0.0.1:7000,127.0.0.1:7001").unwrap();
        assert!(cluster);
        assert!(
            matches!(config.server, ServerConfig::Clustered { ref hosts, .. } if hosts.len() == 2)
        );
        assert!(parse_url("http://x").is_err());
        assert_eq!(
            redact("redis://user:s3cret@10.0.0.1:6379/0"),
            "redis://user:***@10.0.0.1:6379/0"
        );
        assert_eq!(redact("redis://:s3cret@h:1"), "redis://:***@h:1");
        assert_eq!(redact("redis://s3cret@h:1"), "redis://***@h:1");
        assert_eq!(redact("redis://u:ab/cd+e=@h:1/0"), "redis://u:***@h:1/0");
        assert_eq!(redact("redis://h:1/?x=a@b"), "redis://h:1/?x=a@b");
        assert_eq!(redact("redis-cluster://h:1,h:2"), "redis-cluster://h:1,h:2");
        let e = parse_url("redis-cluster://u:s3cret@nohost:port")
            .unwrap_err()
            .to_string();
        assert!(!e.contains("s3cret"), "{e}");
        let e = parse_url("rediss://u:s3cret@h:1").unwrap_err().to_string();
        assert!(!e.contains("s3cret"), "{e}");
        assert!(parse_url("redis-cluster://nohost").is_err());
    }
}
