//! Latency histograms the hot paths can fill with two atomic adds: fixed
//! buckets, read by the gateway's metrics at scrape time as Prometheus
//! histograms.

use std::sync::atomic::{AtomicU64, Ordering};

/// Upper bounds of the buckets, in seconds (the last bucket is +Inf).
pub const BOUNDS: [f64; 14] = [
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
];

/// A latency histogram.
#[derive(Debug, Default)]
pub struct Latency {
    /// Observations per bucket (not cumulative); the last is beyond every
    /// bound.
    buckets: [AtomicU64; BOUNDS.len() + 1],
    /// Sum of the observations, in microseconds.
    sum_micros: AtomicU64,
}

/// A reading of a histogram: cumulative counts per bound, the total count
/// and the sum in seconds.
#[derive(Debug, Clone, PartialEq)]
pub struct Snapshot {
    pub cumulative: Vec<u64>,
    pub count: u64,
    pub sum: f64,
}

impl Latency {
    pub fn observe(&self, seconds: f64) {
        let seconds = seconds.max(0.0);
        let i = BOUNDS
            .iter()
            .position(|b| seconds <= *b)
            .unwrap_or(BOUNDS.len());
        self.buckets[i].fetch_add(1, Ordering::Relaxed);
        self.sum_micros
            .fetch_add((seconds * 1e6) as u64, Ordering::Relaxed);
    }

    pub fn snapshot(&self) -> Snapshot {
        let mut running = 0;
        let mut cumulative = Vec::with_capacity(BOUNDS.len());
        for bucket in &self.buckets[..BOUNDS.len()] {
            running += bucket.load(Ordering::Relaxed);
            cumulative.push(running);
        }
        let count = running + self.buckets[BOUNDS.len()].load(Ordering::Relaxed);
        Snapshot {
            cumulative,
            count,
            sum: self.sum_micros.load(Ordering::Relaxed) as f64 / 1e6,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn observations_land_in_their_bucket() {
        let l = Latency::default();
        l.observe(0.0002);
        l.observe(0.003);
        l.observe(0.003);
        l.observe(60.0);
        let s = l.snapshot();
        assert_eq!(s.count, 4);
        assert_eq!(s.cumulative[0], 1); // <= 0.5 ms
        assert_eq!(s.cumulative[2], 1); // <= 2.5 ms
        assert_eq!(s.cumulative[3], 3); // <= 5 ms
        assert_eq!(*s.cumulative.last().unwrap(), 3); // 60 s is beyond
        assert!((s.sum - 60.0062).abs() < 1e-6, "{}", s.sum);
    }
}
