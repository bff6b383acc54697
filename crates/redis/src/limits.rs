//! Cluster-wide rate limits: GCRA state in Redis, one script call a check
//! (`lua/gcra.lua`).

use crate::{keys, Redis, RedisError};
use async_trait::async_trait;
use fred::prelude::Value;
use herald_rate_limiter::gcra::Gcra;
use herald_rate_limiter::{Decision, Limit, SharedStore};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

const CHECK_TIMEOUT: Duration = Duration::from_millis(200);

pub struct RedisLimits {
    redis: Arc<Redis>,
    live_nodes: Arc<AtomicUsize>,
}

impl RedisLimits {
    /// `live_nodes` is kept current by the node registry.
    pub fn new(redis: Arc<Redis>, live_nodes: Arc<AtomicUsize>) -> Self {
        RedisLimits { redis, live_nodes }
    }
}

#[async_trait]
impl SharedStore for RedisLimits {
    async fn check(&self, key: &str, limit: Limit) -> Result<Decision, String> {
        let Some(gcra) = Gcra::new(limit) else {
            return Ok(Decision::UNLIMITED);
        };
        let call = self.redis.eval(
            &self.redis.scripts.gcra,
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
            .map_err(|_| RedisError::Timeout.to_string())?
            .map_err(|e| e.to_string())?;
        // A reply of another shape is an error, answered from the local
        // share, never read as a denial.
        let numbers: Option<Vec<u64>> = reply.iter().map(Value::as_u64).collect();
        let [allowed, remaining, retry_after, reset_after] = numbers.as_deref().unwrap_or(&[])
        else {
            return Err(RedisError::Protocol(format!("gcra.lua answered {reply:?}")).to_string());
        };
        Ok(Decision {
            allowed: *allowed == 1,
            limit: gcra.burst,
            remaining: (*remaining).min(u64::from(u32::MAX)) as u32,
            retry_after: Duration::from_micros(*retry_after),
            reset_after: Duration::from_micros(*reset_after),
        })
    }

    fn live_nodes(&self) -> usize {
        self.live_nodes.load(Ordering::Relaxed).max(1)
    }
}
