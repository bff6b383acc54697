//! Rate limits for Herald, as GCRA (the generic cell rate algorithm): a rate
//! and a burst per key.
//!
//! - [`gcra`]: the arithmetic, exact in microseconds, shared with the Redis
//!   script.
//! - [`Cell`], [`LocalLimiter`], [`KeyedLimiter`]: limits this process
//!   enforces by itself, on `governor` (lock-free): one connection's frames,
//!   one IP's new connections, an app's operations in embedded mode.
//! - [`ClusterLimiter`]: an app's operations across the whole cluster, one
//!   call to a [`SharedStore`] (Redis) per check. When the store is
//!   unreachable it falls back to a local share of the limit (the limit
//!   divided by the live nodes), says so, and goes back once the store
//!   answers again. It never fails open and never blocks on a dead store.

pub mod gcra;

use async_trait::async_trait;
use governor::clock::{Clock, DefaultClock};
use governor::middleware::StateInformationMiddleware;
use governor::{DefaultKeyedRateLimiter, Quota, RateLimiter};
use parking_lot::RwLock;
use std::collections::HashMap;
use std::hash::Hash;
use std::num::NonZeroU32;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// A rate with a burst: `per_second` cells are restored each second, up to
/// `burst` at once. A zero rate means unlimited.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Limit {
    pub per_second: u32,
    pub burst: u32,
}

impl Limit {
    /// `share` (0 to 1) of this limit, rate and burst rounded up: a
    /// fraction of a non-zero limit is never zero (unlimited).
    pub fn fraction(self, share: f64) -> Limit {
        let part = |n: u32| ((f64::from(n) * share).ceil() as u32).max(1);
        Limit {
            per_second: if self.per_second == 0 {
                0
            } else {
                part(self.per_second)
            },
            burst: part(self.burst.max(1)),
        }
    }

    fn quota(self) -> Option<Quota> {
        let rate = NonZeroU32::new(self.per_second)?;
        let burst = NonZeroU32::new(self.burst.max(1))?;
        Some(Quota::per_second(rate).allow_burst(burst))
    }

    /// This limit shared by `nodes` nodes (at least one cell per second).
    pub fn share(self, nodes: usize) -> Limit {
        if self.per_second == 0 {
            return self;
        }
        let nodes = nodes.max(1) as u32;
        Limit {
            per_second: (self.per_second / nodes).max(1),
            burst: (self.burst / nodes).max(1),
        }
    }
}

/// The answer to a check.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Decision {
    pub allowed: bool,
    /// The burst: most requests allowed at once.
    pub limit: u32,
    /// Requests still allowed right now.
    pub remaining: u32,
    /// When denied: how long until a retry can succeed.
    pub retry_after: Duration,
    /// How long until the allowance is whole again.
    pub reset_after: Duration,
}

impl Decision {
    pub const UNLIMITED: Decision = Decision {
        allowed: true,
        limit: u32::MAX,
        remaining: u32::MAX,
        retry_after: Duration::ZERO,
        reset_after: Duration::ZERO,
    };
}

type InfoLimiter = RateLimiter<
    governor::state::NotKeyed,
    governor::state::InMemoryState,
    DefaultClock,
    StateInformationMiddleware,
>;

/// One GCRA cell in this process.
pub struct Cell {
    limiter: InfoLimiter,
    clock: DefaultClock,
    burst: u32,
    interval: Duration,
}

impl Cell {
    /// A cell for `limit`; `None` when the rate is zero (unlimited).
    pub fn new(limit: Limit) -> Option<Cell> {
        let quota = limit.quota()?;
        let clock = DefaultClock::default();
        Some(Cell {
            limiter: RateLimiter::direct_with_clock(quota, clock.clone())
                .with_middleware::<StateInformationMiddleware>(),
            clock,
            burst: limit.burst.max(1),
            interval: quota.replenish_interval(),
        })
    }

    pub fn check(&self) -> Decision {
        match self.limiter.check() {
            Ok(state) => {
                let remaining = state.remaining_burst_capacity();
                Decision {
                    allowed: true,
                    limit: self.burst,
                    remaining,
                    retry_after: Duration::ZERO,
                    reset_after: self.interval * (self.burst - remaining),
                }
            }
            Err(not_until) => {
                let retry_after = not_until.wait_time_from(self.clock.now());
                Decision {
                    allowed: false,
                    limit: self.burst,
                    remaining: 0,
                    retry_after,
                    reset_after: self.interval * self.burst,
                }
            }
        }
    }
}

/// A cell per key, for keys known at start-up (the configured apps).
pub struct LocalLimiter {
    cells: HashMap<String, Cell>,
}

impl LocalLimiter {
    pub fn new<'a>(limits: impl IntoIterator<Item = (&'a str, Limit)>) -> Self {
        LocalLimiter {
            cells: limits
                .into_iter()
                .filter_map(|(key, limit)| Some((key.to_owned(), Cell::new(limit)?)))
                .collect(),
        }
    }

    /// Takes one cell from `key`'s allowance. A key without a limit is
    /// always allowed.
    pub fn check(&self, key: &str) -> Decision {
        self.cells.get(key).map_or(Decision::UNLIMITED, Cell::check)
    }
}

/// One limit over keys that come and go (client IPs). Idle keys are
/// forgotten by [`KeyedLimiter::forget_idle`], so memory stays bounded by
/// the keys active within a burst's time.
pub struct KeyedLimiter<K: Hash + Eq + Clone> {
    limiter: Option<DefaultKeyedRateLimiter<K>>,
    clock: DefaultClock,
}

impl<K: Hash + Eq + Clone> KeyedLimiter<K> {
    pub fn new(limit: Limit) -> Self {
        KeyedLimiter {
            limiter: limit.quota().map(RateLimiter::keyed),
            clock: DefaultClock::default(),
        }
    }

    /// `None` when allowed; the wait before a retry when not.
    pub fn check(&self, key: &K) -> Option<Duration> {
        let limiter = self.limiter.as_ref()?;
        limiter
            .check_key(key)
            .err()
            .map(|n| n.wait_time_from(self.clock.now()))
    }

    pub fn forget_idle(&self) {
        if let Some(limiter) = &self.limiter {
            limiter.retain_recent();
            limiter.shrink_to_fit();
        }
    }

    pub fn len(&self) -> usize {
        self.limiter.as_ref().map_or(0, |l| l.len())
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// A shared store's failure; the store's own error type says how.
pub type StoreError = Box<dyn std::error::Error + Send + Sync>;

/// Where cluster-wide GCRA state lives (Redis). One call per check.
#[async_trait]
pub trait SharedStore: Send + Sync + 'static {
    /// Runs one GCRA check of `limit` on `key` atomically. Any error
    /// (unreachable, timed out, a reply of the wrong shape) is answered from
    /// the local share.
    async fn check(&self, key: &str, limit: Limit) -> Result<Decision, StoreError>;
    /// How many nodes share the cluster now (for the fallback share).
    fn live_nodes(&self) -> usize;
}

/// How often the limiter tries the store again while falling back.
const RETRY_STORE_EVERY: Duration = Duration::from_millis(500);

/// Cluster-wide limits per key, with a local fallback.
pub struct ClusterLimiter {
    store: Arc<dyn SharedStore>,
    limits: HashMap<String, Limit>,
    fallback: RwLock<HashMap<String, (usize, Arc<Cell>)>>,
    falling_back: AtomicBool,
    /// Microseconds since `started` of the last failed store call.
    last_failure: parking_lot::Mutex<Option<Instant>>,
}

impl ClusterLimiter {
    pub fn new<'a>(
        store: Arc<dyn SharedStore>,
        limits: impl IntoIterator<Item = (&'a str, Limit)>,
    ) -> Self {
        ClusterLimiter {
            store,
            limits: limits
                .into_iter()
                .filter(|(_, l)| l.per_second > 0)
                .map(|(k, l)| (k.to_owned(), l))
                .collect(),
            fallback: RwLock::new(HashMap::new()),
            falling_back: AtomicBool::new(false),
            last_failure: parking_lot::Mutex::new(None),
        }
    }

    /// Takes one from this node's share of `key`'s limit (the limit over
    /// the live nodes), without asking the store: the nodes together never
    /// allow more than the limit, and the check costs no round trip, at
    /// the price of a node under more load than others allowing less.
    pub fn check_local(&self, key: &str) -> Decision {
        let Some(limit) = self.limits.get(key).copied() else {
            return Decision::UNLIMITED;
        };
        self.local_share(key, limit)
            .map_or(Decision::UNLIMITED, |cell| cell.check())
    }

    /// Whether checks are currently answered locally.
    pub fn in_fallback(&self) -> bool {
        self.falling_back.load(Ordering::Relaxed)
    }

    pub async fn check(&self, key: &str) -> Decision {
        let Some(limit) = self.limits.get(key).copied() else {
            return Decision::UNLIMITED;
        };
        let retry_store = self
            .last_failure
            .lock()
            .is_none_or(|at| at.elapsed() >= RETRY_STORE_EVERY);
        if !self.in_fallback() || retry_store {
            match self.store.check(key, limit).await {
                Ok(decision) => {
                    if self.falling_back.swap(false, Ordering::Relaxed) {
                        tracing::info!("rate limits: the shared store answers again; cluster-wide limits restored");
                    }
                    return decision;
                }
                Err(e) => {
                    tracing::debug!(error = %e, "rate limits: shared store check failed");
                    *self.last_failure.lock() = Some(Instant::now());
                    if !self.falling_back.swap(true, Ordering::Relaxed) {
                        tracing::warn!(error = %e, "rate limits: shared store unreachable; enforcing a local share");
                    }
                }
            }
        }
        self.local_share(key, limit)
            .map_or(Decision::UNLIMITED, |cell| cell.check())
    }

    /// This node's share of `limit`; `None` only for a zero rate, which
    /// `new` never keeps.
    fn local_share(&self, key: &str, limit: Limit) -> Option<Arc<Cell>> {
        let nodes = self.store.live_nodes().max(1);
        if let Some((n, cell)) = self.fallback.read().get(key) {
            if *n == nodes {
                return Some(Arc::clone(cell));
            }
        }
        let cell = Arc::new(Cell::new(limit.share(nodes))?);
        self.fallback
            .write()
            .insert(key.to_owned(), (nodes, Arc::clone(&cell)));
        Some(cell)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn burst_is_honoured_then_denied() {
        let l = LocalLimiter::new([(
            "a",
            Limit {
                per_second: 1,
                burst: 3,
            },
        )]);
        for n in 0..3 {
            let d = l.check("a");
            assert!(d.allowed);
            assert_eq!(d.remaining, 2 - n);
        }
        let d = l.check("a");
        assert!(!d.allowed);
        assert!(d.retry_after > Duration::ZERO && d.retry_after <= Duration::from_secs(1));
    }

    #[test]
    fn keys_are_independent_and_zero_means_unlimited() {
        let l = LocalLimiter::new([
            (
                "a",
                Limit {
                    per_second: 1,
                    burst: 1,
                },
            ),
            (
                "b",
                Limit {
                    per_second: 0,
                    burst: 0,
                },
            ),
        ]);
        assert!(l.check("a").allowed);
        assert!(!l.check("a").allowed);
        for _ in 0..1000 {
            assert!(l.check("b").allowed);
            assert!(l.check("unknown").allowed);
        }
    }

    #[test]
    fn keyed_limiter_limits_each_key() {
        let l = KeyedLimiter::new(Limit {
            per_second: 1,
            burst: 2,
        });
        assert!(l.check(&"1.2.3.4").is_none());
        assert!(l.check(&"1.2.3.4").is_none());
        assert!(l.check(&"1.2.3.4").is_some());
        assert!(l.check(&"5.6.7.8").is_none());
    }

    #[test]
    fn shares_divide_the_limit() {
        let l = Limit {
            per_second: 50,
            burst: 50,
        };
        assert_eq!(
            l.share(3),
            Limit {
                per_second: 16,
                burst: 16
            }
        );
        assert_eq!(
            Limit {
                per_second: 2,
                burst: 1
            }
            .share(5),
            Limit {
                per_second: 1,
                burst: 1
            }
        );
    }

    struct Down;

    /// Two live nodes, and a store that is down: a local check answers
    /// from this node's share all the same (`check_local` is synchronous,
    /// so it cannot ask the store at all).
    struct TwoNodesDown;

    #[async_trait]
    impl SharedStore for TwoNodesDown {
        async fn check(&self, _: &str, _: Limit) -> Result<Decision, StoreError> {
            Err("down".into())
        }
        fn live_nodes(&self) -> usize {
            2
        }
    }

    #[test]
    fn a_local_check_takes_this_nodes_share() {
        let limit = Limit {
            per_second: 1,
            burst: 10,
        };
        let l = ClusterLimiter::new(Arc::new(TwoNodesDown), [("k", limit)]);
        let allowed = (0..20).filter(|_| l.check_local("k").allowed).count();
        assert_eq!(allowed, 5, "half of the burst, for one of two nodes");
        assert!(l.check_local("unknown").allowed);
    }

    #[async_trait]
    impl SharedStore for Down {
        async fn check(&self, _: &str, _: Limit) -> Result<Decision, StoreError> {
            Err("down".into())
        }
        fn live_nodes(&self) -> usize {
            2
        }
    }

    #[tokio::test]
    async fn an_unreachable_store_falls_back_to_the_local_share() {
        let l = ClusterLimiter::new(
            Arc::new(Down),
            [(
                "app",
                Limit {
                    per_second: 10,
                    burst: 10,
                },
            )],
        );
        let mut allowed = 0;
        for _ in 0..100 {
            if l.check("app").await.allowed {
                allowed += 1;
            }
        }
        assert!(l.in_fallback());
        // Half of the burst: two live nodes share it.
        assert_eq!(allowed, 5);
        assert!(
            l.check("other").await.allowed,
            "unconfigured keys are unlimited"
        );
    }
}
