//! Live gateways: each registers itself with a heartbeat.

use super::{keys, Redis};
use crate::now_ms;
use fred::prelude::*;
use serde::Serialize;
use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

const HEARTBEAT: Duration = Duration::from_secs(2);
/// A gateway that missed this many heartbeats is gone.
const LIFETIME: Duration = Duration::from_secs(10);

/// One gateway, as `GET /api/v1/nodes` lists it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct NodeInfo {
    pub id: String,
    pub address: String,
    pub connections: usize,
    /// Epoch milliseconds.
    pub started_at: String,
}

pub struct Registry {
    redis: Arc<Redis>,
    /// Live gateways at the last heartbeat (this one included).
    pub live: Arc<AtomicUsize>,
}

impl Registry {
    /// Registers `info` now and every heartbeat, with the live connection
    /// count read from `connections`.
    pub fn start(
        redis: Arc<Redis>,
        info: NodeInfo,
        connections: Arc<AtomicUsize>,
    ) -> Arc<Registry> {
        let registry = Arc::new(Registry {
            redis,
            live: Arc::new(AtomicUsize::new(1)),
        });
        let beating = Arc::clone(&registry);
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(HEARTBEAT);
            loop {
                tick.tick().await;
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

    async fn beat(&self, info: &NodeInfo) -> Result<(), Error> {
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
    pub async fn list(&self) -> Result<Vec<NodeInfo>, String> {
        let client = &self.redis.client;
        let ids: Vec<String> = client
            .zrangebyscore(keys::NODES, now_ms() as f64, "+inf", false, None)
            .await
            .map_err(|e| e.to_string())?;
        let mut nodes = Vec::new();
        for id in ids {
            let fields: HashMap<String, String> = client
                .hgetall(keys::node(&id))
                .await
                .map_err(|e| e.to_string())?;
            if fields.is_empty() {
                continue;
            }
            nodes.push(NodeInfo {
                id,
                address: fields.get("address").cloned().unwrap_or_default(),
                connections: fields
                    .get("connections")
                    .and_then(|c| c.parse().ok())
                    .unwrap_or(0),
                started_at: fields.get("startedAt").cloned().unwrap_or_default(),
            });
        }
        nodes.sort_by(|a, b| a.id.cmp(&b.id));
        Ok(nodes)
    }

    /// Removes this gateway's registration (on shutdown).
    pub async fn deregister(&self, id: &str) {
        let _: Result<(), _> = self.redis.client.zrem(keys::NODES, id).await;
        let _: Result<(), _> = self.redis.client.del(keys::node(id)).await;
    }
}
