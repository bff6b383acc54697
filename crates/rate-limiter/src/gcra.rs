//! GCRA arithmetic, in whole microseconds so long runs do not drift.
//!
//! A limit of `rate` per second with `burst` allows a request at time `now`
//! when the theoretical arrival time (TAT) of the stream, pushed one
//! emission interval further, stays within `burst` intervals of `now`. The
//! same arithmetic runs in Redis (`gcra.lua` in broker-node); this is the
//! reference the tests hold both to.

use crate::{Decision, Limit};
use std::time::Duration;

/// A limit as GCRA sees it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Gcra {
    /// Microseconds between cells at the steady rate.
    pub interval_us: u64,
    /// How far ahead of now the TAT may run: `interval * burst`.
    pub window_us: u64,
    pub burst: u32,
}

impl Gcra {
    /// `None` for a zero rate (unlimited).
    pub fn new(limit: Limit) -> Option<Gcra> {
        if limit.per_second == 0 {
            return None;
        }
        let interval_us = (1_000_000 / u64::from(limit.per_second)).max(1);
        let burst = limit.burst.max(1);
        Some(Gcra {
            interval_us,
            window_us: interval_us * u64::from(burst),
            burst,
        })
    }

    /// Checks one request at `now_us` against the stored `tat_us` (`None`
    /// when the key has no state). Returns the decision and the TAT to
    /// store (unchanged when denied).
    pub fn check(&self, tat_us: Option<u64>, now_us: u64) -> (Decision, u64) {
        // A TAT in the past means idle time: it never banks more than the
        // burst. A clock that jumped backwards leaves the TAT ahead, which
        // only delays, never grants extra.
        let tat = tat_us.unwrap_or(now_us).max(now_us);
        let new_tat = tat + self.interval_us;
        let allow_at = new_tat.saturating_sub(self.window_us);
        if now_us < allow_at {
            let decision = Decision {
                allowed: false,
                limit: self.burst,
                remaining: 0,
                retry_after: Duration::from_micros(allow_at - now_us),
                reset_after: Duration::from_micros(tat - now_us),
            };
            return (decision, tat);
        }
        let ahead = new_tat - now_us;
        let remaining = (self.window_us - ahead) / self.interval_us;
        let decision = Decision {
            allowed: true,
            limit: self.burst,
            remaining: remaining.min(u64::from(u32::MAX)) as u32,
            retry_after: Duration::ZERO,
            reset_after: Duration::from_micros(ahead),
        };
        (decision, new_tat)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn gcra(per_second: u32, burst: u32) -> Gcra {
        Gcra::new(Limit { per_second, burst }).unwrap()
    }

    #[test]
    fn burst_then_steady_rate() {
        let g = gcra(10, 5);
        let mut tat = None;
        for n in 0..5 {
            let (d, t) = g.check(tat, 0);
            assert!(d.allowed, "request {n} of the burst");
            assert_eq!(d.remaining, 4 - n);
            tat = Some(t);
        }
        let (d, _) = g.check(tat, 0);
        assert!(!d.allowed);
        assert_eq!(d.retry_after, Duration::from_millis(100));
        // One interval later, one more.
        let (d, t) = g.check(tat, 100_000);
        assert!(d.allowed);
        let (d, _) = g.check(Some(t), 100_000);
        assert!(!d.allowed);
    }

    #[test]
    fn zero_rate_is_unlimited() {
        assert!(Gcra::new(Limit {
            per_second: 0,
            burst: 5
        })
        .is_none());
    }

    #[test]
    fn no_drift_over_a_long_run() {
        // 7 per second, asked every millisecond for an hour.
        let g = gcra(7, 3);
        let mut tat = None;
        let mut allowed = 0u64;
        let hour_us = 3_600_000_000u64;
        let mut now = 0;
        while now < hour_us {
            let (d, t) = g.check(tat, now);
            if d.allowed {
                allowed += 1;
            }
            tat = Some(t);
            now += 1000;
        }
        // interval = 142857 µs: an hour holds 25200.005 intervals.
        let expected = hour_us / g.interval_us + u64::from(g.burst);
        assert!(
            allowed <= expected && allowed + 1 >= expected,
            "{allowed} vs {expected}"
        );
    }

    #[test]
    fn clock_jumping_back_grants_nothing_extra() {
        let g = gcra(1, 2);
        let (_, t) = g.check(None, 100_000_000);
        let (_, t) = g.check(Some(t), 100_000_000);
        // The clock jumps back a minute.
        let (d, _) = g.check(Some(t), 100_000_000 - 60_000_000);
        assert!(!d.allowed);
    }

    proptest! {
        /// In any run of requests at arbitrary increasing times, at most
        /// `burst + rate * elapsed` are allowed.
        #[test]
        fn never_more_than_burst_plus_rate(
            per_second in 1u32..2000,
            burst in 1u32..100,
            gaps in proptest::collection::vec(0u64..20_000, 1..2000),
        ) {
            let g = gcra(per_second, burst);
            let mut tat = None;
            let mut now = 1_000_000u64;
            let start = now;
            let mut allowed = 0u64;
            for gap in gaps {
                now += gap;
                let (d, t) = g.check(tat, now);
                if d.allowed { allowed += 1; }
                tat = Some(t);
            }
            let elapsed = now - start;
            let bound = u64::from(g.burst) + elapsed / g.interval_us + 1;
            prop_assert!(allowed <= bound, "{} allowed, bound {}", allowed, bound);
        }

        /// A denial's retry hint is exact: retrying then is allowed, a
        /// microsecond earlier is not.
        #[test]
        fn retry_after_is_exact(per_second in 1u32..1000, burst in 1u32..50, extra in 0u32..50) {
            let g = gcra(per_second, burst);
            let mut tat = None;
            for _ in 0..(burst + extra) {
                let (_, t) = g.check(tat, 0);
                tat = Some(t);
            }
            let (d, _) = g.check(tat, 0);
            prop_assert!(!d.allowed);
            let wait = d.retry_after.as_micros() as u64;
            prop_assert!(!g.check(tat, wait - 1).0.allowed);
            prop_assert!(g.check(tat, wait).0.allowed);
        }
    }
}
