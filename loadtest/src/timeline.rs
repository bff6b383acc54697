//! Latency and deliveries second by second, for the JSON result and the
//! plots.
//!
//! Subscribers record into a local buffer of (second, latency) pairs and
//! flush it into the shared per-second histograms in batches, so the lock
//! is taken once per few hundred deliveries, not once per delivery.

use crate::report::Latency;
use crate::wire::now_us;
use hdrhistogram::Histogram;
use serde::Serialize;
use std::sync::{Arc, Mutex};

/// Deliveries buffered by a recorder before it flushes.
const BATCH: usize = 512;

pub struct Timeline {
    start_us: u64,
    seconds: Mutex<Vec<Histogram<u64>>>,
}

/// One second of the run, by delivery time.
#[derive(Debug, Default, Serialize)]
pub struct Second {
    /// Seconds since the timeline started (publishing began).
    pub second: u32,
    pub deliveries: u64,
    pub latency_ms: Latency,
}

impl Timeline {
    /// A timeline whose second 0 starts now.
    pub fn start() -> Arc<Timeline> {
        Arc::new(Timeline {
            start_us: now_us(),
            seconds: Mutex::new(Vec::new()),
        })
    }

    pub fn recorder(self: &Arc<Self>) -> Recorder {
        Recorder {
            timeline: Arc::clone(self),
            pending: Vec::new(),
        }
    }

    fn flush(&self, pending: &mut Vec<(u32, u64)>) {
        let mut seconds = self.seconds.lock().unwrap_or_else(|e| e.into_inner());
        for &(second, latency_us) in pending.iter() {
            let second = second as usize;
            while seconds.len() <= second {
                // 1 µs to 60 s, 2 significant digits: small and cheap to
                // record into; the run's overall percentiles keep 3.
                seconds.push(Histogram::new_with_bounds(1, 60_000_000, 2).expect("valid bounds"));
            }
            let _ = seconds[second].record(latency_us.clamp(1, 60_000_000));
        }
        pending.clear();
    }

    /// Every second from the start to the last delivery.
    pub fn seconds(&self) -> Vec<Second> {
        let seconds = self.seconds.lock().unwrap_or_else(|e| e.into_inner());
        seconds
            .iter()
            .enumerate()
            .map(|(i, h)| Second {
                second: i as u32,
                deliveries: h.len(),
                latency_ms: if h.is_empty() {
                    Latency::default()
                } else {
                    Latency::of(h)
                },
            })
            .collect()
    }
}

/// One subscriber's handle on the timeline; flushes when dropped.
pub struct Recorder {
    timeline: Arc<Timeline>,
    pending: Vec<(u32, u64)>,
}

impl Recorder {
    /// A delivery seen at `now_us` that took `latency_us`.
    pub fn record(&mut self, now_us: u64, latency_us: u64) {
        let second = (now_us.saturating_sub(self.timeline.start_us) / 1_000_000) as u32;
        if self.pending.capacity() == 0 {
            self.pending.reserve_exact(BATCH);
        }
        self.pending.push((second, latency_us));
        if self.pending.len() >= BATCH {
            self.timeline.flush(&mut self.pending);
        }
    }
}

impl Drop for Recorder {
    fn drop(&mut self) {
        if !self.pending.is_empty() {
            self.timeline.flush(&mut self.pending);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn deliveries_land_in_their_second_with_their_latency() {
        let timeline = Timeline::start();
        let t0 = timeline.start_us;
        {
            let mut a = timeline.recorder();
            let mut b = timeline.recorder();
            for i in 0..1000 {
                a.record(t0 + 10, 1_000 + i);
            }
            b.record(t0 + 2_500_000, 40_000);
        }
        let seconds = timeline.seconds();
        assert_eq!(seconds.len(), 3);
        assert_eq!(seconds[0].deliveries, 1000);
        assert!((seconds[0].latency_ms.p50 - 1.5).abs() < 0.05);
        assert_eq!(seconds[1].deliveries, 0);
        assert_eq!(seconds[2].deliveries, 1);
        assert!((seconds[2].latency_ms.max - 40.0).abs() < 0.5);
    }
}
