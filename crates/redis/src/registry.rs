//! Live gateways: each registers itself with a heartbeat.

use crate::{keys, Redis, RedisError, RedisResult};
use async_trait::async_trait;
use fred::prelude::*;
use herald_broker_node::{Background, Membership};
use herald_history::StoreError;
use herald_protocol::api::NodeInfo;
use herald_protocol::now_ms;
use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

const HEARTBEAT: Duration = Duration::from_secs(2);
/// A gateway that missed this many heartbeats is gone.
const LIFETIME: Duration = Duration::from_secs(10);

pub struct Registry {
    redis: Arc<Redis>,
    id: String,
    /// Live gateways at the last heartbeat (this one included).
    pub live: Arc<AtomicUsize>,
}

impl Registry {
    /// Registers `info` now and every heartbeat (a task of `background`),
    /// with the live connection count read from `connections`.
    pub fn start(
        redis: Arc<Redis>,
        info: NodeInfo,
        connections: Arc<AtomicUsize>,
        background: &Background,
    ) -> Arc<Registry> {
        let registry = Arc::new(Registry {
            redis,
            id: info.id.clone(),
            live: Arc::new(AtomicUsize::new(1)),
        });
        let beating = Arc::clone(&registry);
        // Stopped between beats, never inside one: a beat cut after its
        // HSET would leave a registration without an expiry.
        background.spawn_until("registry heartbeat", |stop| async move {
            let mut tick = tokio::time::interval(HEARTBEAT);
            loop {
                tokio::select! {
                    _ = stop.cancelled() => return,
                    _ = tick.tick() => {}
                }
                let info = NodeInfo {
                    connections: connections.load(Ordering::Relaxed),
                    ..info.clone()
                };
                if let Err(e) = beating.beat(&info).await {
                    tracing::debug!(error = %e, "node heartbeat failed");
                }
            }
        });
        registry
    }

    async fn beat(&self, info: &NodeInfo) -> RedisResult<()> {
        let key = keys::node(&info.id);
        let fields: HashMap<&str, String> = HashMap::from([
            ("id", info.id.clone()),
            ("address", info.address.clone()),
            ("connections", info.connections.to_string()),
            ("startedAt", info.started_at.clone()),
        ]);
        let client = &self.redis.client;
        let _: () = client.hset(&key, fields).await?;
        let _: () = client
            .pexpire(&key, LIFETIME.as_millis() as i64, None)
            .await?;
        // Forget gateways that stopped beating.
        let _: () = client
            .zremrangebyscore(keys::NODES, "-inf", now_ms() as f64)
            .await?;
        let expires = (now_ms() + LIFETIME.as_millis() as u64) as f64;
        let _: () = client
            .zadd(
                keys::NODES,
                None,
                None,
                false,
                false,
                (expires, info.id.as_str()),
            )
            .await?;
        let live: u64 = client
            .zcount(keys::NODES, now_ms() as f64, f64::INFINITY)
            .await?;
        self.live.store((live as usize).max(1), Ordering::Relaxed);
        Ok(())
    }

    /// The gateways whose registration is current.
    pub async fn list(&self) -> RedisResult<Vec<NodeInfo>> {
        let client = &self.redis.client;
        let ids: Vec<String> = client
            .zrangebyscore(keys::NODES, now_ms() as f64, "+inf", false, None)
            .await?;
        let mut nodes = Vec::new();
        for id in ids {
            let fields: HashMap<String, String> = client.hgetall(keys::node(&id)).await?;
            if fields.is_empty() {
                continue;
            }
            match registration(&id, &fields) {
                Ok(node) => nodes.push(node),
                Err(e) => tracing::warn!(node = id, error = %e, "unreadable registration, skipped"),
            }
        }
        nodes.sort_by(|a, b| a.id.cmp(&b.id));
        Ok(nodes)
    }
}

/// A gateway's registration hash, read back.
fn registration(id: &str, fields: &HashMap<String, String>) -> RedisResult<NodeInfo> {
    let field = |name: &str| {
        fields
            .get(name)
            .cloned()
            .ok_or_else(|| RedisError::Protocol(format!("registered without `{name}`")))
    };
    let connections = field("connections")?;
    Ok(NodeInfo {
        id: id.to_owned(),
        address: field("address")?,
        connections: connections
            .parse()
            .map_err(|_| RedisError::Protocol(format!("connections `{connections}`")))?,
        started_at: field("startedAt")?,
    })
}

#[async_trait]
impl Membership for Registry {
    async fn nodes(&self, _this: NodeInfo) -> Result<Vec<NodeInfo>, StoreError> {
        Ok(self.list().await?)
    }

    /// Removes this gateway's registration. The node stops the heartbeat
    /// (a background task) before it calls this, so nothing re-registers it.
    async fn deregister(&self) {
        let _: Result<(), _> = self.redis.client.zrem(keys::NODES, self.id.as_str()).await;
        let _: Result<(), _> = self.redis.client.del(keys::node(&self.id)).await;
    }
}
