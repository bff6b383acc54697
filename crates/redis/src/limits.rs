//! Cluster-wide rate limits: GCRA state in Redis, one script call a check
//! (`lua/gcra.lua`).

use crate::{keys, Redis, RedisError};
use async_trait::async_trait;
use fred::prelude::Value;
use herald_rate_limiter::gcra::Gcra;
use herald_rate_limiter::{Decision, Limit, SharedStore, StoreError};
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
    async fn check(&self, key: &str, limit: Limit) -> Result<Decision, StoreError> {
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
            .map_err(|_| RedisError::Timeout)??;
        Ok(decision(&reply, gcra.burst)?)
    }

    fn live_nodes(&self) -> usize {
        self.live_nodes.load(Ordering::Relaxed).max(1)
    }
}

/// Reads `gcra.lua`'s answer: `[allowed 0|1, remaining, retry after µs,
/// reset after µs]`. A reply of another shape is an error, which the
/// limiter answers from its local share; it is never read as a denial.
fn decision(reply: &[Value], burst: u32) -> Result<Decision, RedisError> {
    let numbers: Option<Vec<u64>> = reply.iter().map(Value::as_u64).collect();
    let malformed = || RedisError::Protocol(format!("gcra.lua answered {reply:?}"));
    let [allowed, remaining, retry_after, reset_after] = numbers.ok_or_else(malformed)?[..] else {
        return Err(malformed());
    };
    if allowed > 1 {
        return Err(malformed());
    }
    Ok(Decision {
        allowed: allowed == 1,
        limit: burst,
        remaining: remaining.min(u64::from(u32::MAX)) as u32,
        retry_after: Duration::from_micros(retry_after),
        reset_after: Duration::from_micros(reset_after),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_reply_of_another_shape_is_an_error_not_a_denial() {
        let n = |v: i64| Value::Integer(v);
        let ok = decision(&[n(1), n(4), n(0), n(2_000)], 5).unwrap();
        assert!(ok.allowed);
        assert_eq!((ok.limit, ok.remaining), (5, 4));
        let denied = decision(&[n(0), n(0), n(1_500), n(9_000)], 5).unwrap();
        assert!(!denied.allowed);
        assert_eq!(denied.retry_after, Duration::from_micros(1_500));
        for bad in [
            vec![],
            vec![n(1), n(4), n(0)],
            vec![n(1), n(4), n(0), n(2), n(9)],
            vec![n(1), Value::Null, n(0), n(2)],
            vec![n(7), n(4), n(0), n(2)],
            vec![Value::String("x".into()), n(4), n(0), n(2)],
        ] {
            let e = decision(&bad, 5).unwrap_err();
            assert!(matches!(e, RedisError::Protocol(_)), "{bad:?}: {e}");
        }
    }
}
