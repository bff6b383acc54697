//! Cluster-wide rate limits: GCRA state in Redis, one script call a check
//! (`lua/gcra.lua`).

use super::{keys, Redis};
use async_trait::async_trait;
use fred::prelude::Value;
use fred::types::scripts::Script;
use herald_rate_limiter::gcra::Gcra;
use herald_rate_limiter::{Decision, Limit, SharedStore};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

const CHECK_TIMEOUT: Duration = Duration::from_millis(200);

pub struct RedisLimits {
    redis: Arc<Redis>,
    script: Script,
    live_nodes: Arc<AtomicUsize>,
}

impl RedisLimits {
    /// `live_nodes` is kept current by the node registry.
    pub fn new(redis: Arc<Redis>, live_nodes: Arc<AtomicUsize>) -> Self {
        RedisLimits {
            redis,
            script: Script::from_lua(include_str!("lua/gcra.lua")),
            live_nodes,
        }
    }
}

#[async_trait]
impl SharedStore for RedisLimits {
    async fn check(&self, key: &str, limit: Limit) -> Result<Decision, String> {
        let Some(gcra) = Gcra::new(limit) else {
            return Ok(Decision::UNLIMITED);
        };
        let call = self.redis.eval(
            &self.script,
            vec![keys::rate_limit(key)],
            vec![
                (gcra.interval_us as i64).into(),
                (gcra.window_us as i64).into(),
            ],
        );
        // A check must never hold a request up for long: past this, the
        // limiter answers from its local share instead.
        let reply: Vec<Value> = tokio::time::timeout(CHECK_TIMEOUT, call)
            .await
            .map_err(|_| "rate-limit check timed out".to_owned())??;
        let n = |i: usize| reply.get(i).and_then(Value::as_u64).unwrap_or(0);
        Ok(Decision {
            allowed: n(0) == 1,
            limit: gcra.burst,
            remaining: n(1).min(u64::from(u32::MAX)) as u32,
            retry_after: Duration::from_micros(n(2)),
            reset_after: Duration::from_micros(n(3)),
        })
    }

    fn live_nodes(&self) -> usize {
        self.live_nodes.load(Ordering::Relaxed).max(1)
    }
}
