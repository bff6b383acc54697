//! Rate limits for Herald, as GCRA (the generic cell rate algorithm): a rate
//! and a burst per key, checked without locks on the hot path.
//!
//! [`LocalLimiter`] holds one GCRA cell per key in this process, on
//! `governor`. It limits what a node sees by itself (an app's operations in
//! embedded mode, one connection's frames). Cluster-wide limits in Redis
//! come later behind the same [`Decision`].

use governor::clock::{Clock, DefaultClock};
use governor::{DefaultDirectRateLimiter, Quota};
use std::collections::HashMap;
use std::num::NonZeroU32;
use std::time::Duration;

/// A rate with a burst: `per_second` cells are restored each second, up to
/// `burst` at once.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limit {
    pub per_second: u32,
    pub burst: u32,
}

impl Limit {
    fn quota(self) -> Option<Quota> {
        let rate = NonZeroU32::new(self.per_second)?;
        let burst = NonZeroU32::new(self.burst.max(1))?;
        Some(Quota::per_second(rate).allow_burst(burst))
    }
}

/// The answer to a check.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Decision {
    Allowed,
    /// Over the limit; a retry after this long would be allowed.
    Denied {
        retry_after: Duration,
    },
}

impl Decision {
    pub fn allowed(self) -> bool {
        matches!(self, Decision::Allowed)
    }
}

/// One GCRA cell.
pub struct Cell {
    limiter: DefaultDirectRateLimiter,
    clock: DefaultClock,
}

impl Cell {
    /// A cell for `limit`; `None` when the rate is zero, meaning unlimited.
    pub fn new(limit: Limit) -> Option<Cell> {
        let clock = DefaultClock::default();
        Some(Cell {
            limiter: governor::RateLimiter::direct_with_clock(limit.quota()?, clock.clone()),
            clock,
        })
    }

    pub fn check(&self) -> Decision {
        match self.limiter.check() {
            Ok(()) => Decision::Allowed,
            Err(not_until) => Decision::Denied {
                retry_after: not_until.wait_time_from(self.clock.now()),
            },
        }
    }
}

/// A cell per key, fixed at start-up (the apps of the configuration).
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
        self.cells.get(key).map_or(Decision::Allowed, Cell::check)
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
        for _ in 0..3 {
            assert!(l.check("a").allowed());
        }
        match l.check("a") {
            Decision::Denied { retry_after } => {
                assert!(retry_after > Duration::ZERO && retry_after <= Duration::from_secs(1))
            }
            Decision::Allowed => panic!("fourth check inside one second was allowed"),
        }
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
        assert!(l.check("a").allowed());
        assert!(!l.check("a").allowed());
        for _ in 0..1000 {
            assert!(l.check("b").allowed());
            assert!(l.check("unknown").allowed());
        }
    }
}
