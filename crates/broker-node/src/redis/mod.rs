//! Herald on Redis: what makes several gateways one broker.
//!
//! - [`keys`]: every key and topic name.
//! - `lua/*.lua`: each atomic operation is one script, loaded once and
//!   called by SHA: publish (number, keep, publish in one round trip),
//!   position, read, and the presence scripts.
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
pub mod history;
pub mod keys;
pub mod limits;
pub mod presence;
pub mod registry;

use fred::clients::SubscriberClient;
use fred::prelude::*;
use fred::types::config::{ClusterDiscoveryPolicy, ServerConfig};
use fred::types::scripts::Script;
use std::time::Duration;

/// A connection to Redis: a command client and a pub/sub client.
pub struct Redis {
    pub(crate) client: Client,
    pub(crate) subscriber: SubscriberClient,
    pub(crate) cluster: bool,
    pub(crate) scripts: Scripts,
}

pub(crate) struct Scripts {
    pub publish: Script,
    pub position: Script,
    pub read: Script,
    pub presence_join: Script,
    pub presence_leave: Script,
    pub presence_sweep: Script,
    pub presence_members: Script,
}

impl Scripts {
    fn new() -> Self {
        Scripts {
            publish: Script::from_lua(include_str!("lua/publish.lua")),
            position: Script::from_lua(include_str!("lua/position.lua")),
            read: Script::from_lua(include_str!("lua/read.lua")),
            presence_join: Script::from_lua(include_str!("lua/presence_join.lua")),
            presence_leave: Script::from_lua(include_str!("lua/presence_leave.lua")),
            presence_sweep: Script::from_lua(include_str!("lua/presence_sweep.lua")),
            presence_members: Script::from_lua(include_str!("lua/presence_members.lua")),
        }
    }
}

/// A Redis failure, as text for logs and errors.
pub type RedisResult<T> = Result<T, String>;

/// How long a command may wait for Redis before it fails.
const COMMAND_TIMEOUT: Duration = Duration::from_secs(3);

/// Reads `redis://host:port[/db]` (standalone) or
/// `redis-cluster://host:port[,host:port...]` (Redis Cluster).
pub fn parse_url(url: &str) -> RedisResult<(Config, bool)> {
    if let Some(rest) = url.strip_prefix("redis-cluster://") {
        if rest.contains('?') || rest.contains('@') {
            let config = Config::from_url(url).map_err(|e| e.to_string())?;
            return Ok((config, true));
        }
        let mut hosts = Vec::new();
        for part in rest.trim_end_matches('/').split(',') {
            let (host, port) = part
                .rsplit_once(':')
                .ok_or_else(|| format!("`{part}` in {url} is not host:port"))?;
            let port: u16 = port.parse().map_err(|_| format!("bad port in `{part}`"))?;
            hosts.push((host.to_owned(), port));
        }
        if hosts.is_empty() {
            return Err(format!("{url} names no node"));
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
        return Ok((Config::from_url(url).map_err(|e| e.to_string())?, false));
    }
    Err(format!(
        "unsupported Redis URL `{url}`: use redis://host:port or redis-cluster://host:port,..."
    ))
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
        let client = builder.build().map_err(|e| e.to_string())?;
        // Publications arrive on the subscriber's channel before fan-out; a
        // burst must not overflow it. fred preallocates nine channels of
        // this capacity per client (at 1 << 16 that was ~40 MB resident),
        // so only the subscriber gets a deep one. A lag is counted
        // (`herald_backplane_lagged_total`) and subscribers repair the gap.
        builder.with_performance_config(|p| p.broadcast_channel_capacity = 1 << 14);
        let subscriber = builder
            .build_subscriber_client()
            .map_err(|e| e.to_string())?;
        client
            .init()
            .await
            .map_err(|e| format!("cannot connect to {url}: {e}"))?;
        subscriber
            .init()
            .await
            .map_err(|e| format!("cannot connect to {url}: {e}"))?;
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
            return Err("not connected to Redis".into());
        }
        script
            .evalsha_with_reload(&self.client, keys, args)
            .await
            .map_err(|e| e.to_string())
    }

    pub(crate) async fn publish_raw(&self, topic: &str, message: String) -> RedisResult<i64> {
        if self.cluster {
            self.client.spublish(topic, message).await
        } else {
            self.client.publish(topic, message).await
        }
        .map_err(|e| e.to_string())
    }

    pub(crate) async fn subscribe_topics(&self, topics: Vec<String>) -> RedisResult<()> {
        if !self.cluster {
            self.subscriber
                .subscribe(topics)
                .await
                .map_err(|e| e.to_string())?;
            // fred answers SUBSCRIBE as soon as it is written, not when Redis
            // confirms it. A PING on the same connection is answered only
            // after Redis has processed everything sent before it, so once
            // it returns the subscription is in place.
            return self
                .subscriber
                .ping::<Value>(None)
                .await
                .map(|_| ())
                .map_err(|e| e.to_string());
        }
        // SSUBSCRIBE, unlike SUBSCRIBE, is answered by fred only when Redis
        // confirms it.
        // SSUBSCRIBE takes channels of one slot at a time.
        let groups = fred::util::group_by_hash_slot(topics).map_err(|e| e.to_string())?;
        let calls = groups.into_values().map(|keys| {
            let keys: Vec<String> = keys.into_iter().filter_map(|k| k.into_string()).collect();
            self.subscriber.ssubscribe(keys)
        });
        futures_util::future::try_join_all(calls)
            .await
            .map(|_| ())
            .map_err(|e| e.to_string())
    }

    pub(crate) async fn unsubscribe_topics(&self, topics: Vec<String>) -> RedisResult<()> {
        if !self.cluster {
            return self
                .subscriber
                .unsubscribe(topics)
                .await
                .map_err(|e| e.to_string());
        }
        let groups = fred::util::group_by_hash_slot(topics).map_err(|e| e.to_string())?;
        let calls = groups.into_values().map(|keys| {
            let keys: Vec<String> = keys.into_iter().filter_map(|k| k.into_string()).collect();
            self.subscriber.sunsubscribe(keys)
        });
        futures_util::future::try_join_all(calls)
            .await
            .map(|_| ())
            .map_err(|e| e.to_string())
    }

    pub fn is_connected(&self) -> bool {
        self.client.is_connected() && self.subscriber.is_connected()
    }
}

/// A random epoch, used when a stream starts.
pub(crate) fn new_epoch() -> String {
    format!("{:08x}", rand::random::<u32>())
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
        assert!(parse_url("redis-cluster://nohost").is_err());
    }
}
