//! In-process history for the embedded mode.

use crate::{new_epoch, HistoryError, HistoryRead, HistoryStore, Publication, Retention, Stored};
use async_trait::async_trait;
use herald_protocol::StreamPosition;
use parking_lot::Mutex;
use std::collections::{HashMap, VecDeque};
use std::hash::{BuildHasher, RandomState};
use std::sync::Arc;

const SHARDS: usize = 64;

/// Streams held in memory, sharded by stream name so that publishes on
/// different channels rarely meet on a lock.
pub struct MemoryHistory {
    shards: Vec<Mutex<HashMap<String, Stream>>>,
    hasher: RandomState,
}

struct Stream {
    epoch: String,
    top: u64,
    /// `(offset, appended at ms, publication)`, oldest first.
    entries: VecDeque<(u64, u64, Arc<Publication>)>,
    retention: Retention,
    touched_ms: u64,
}

impl Stream {
    fn new(retention: Retention, now_ms: u64) -> Self {
        Stream {
            epoch: new_epoch(),
            top: 0,
            entries: VecDeque::new(),
            retention,
            touched_ms: now_ms,
        }
    }

    fn position(&self) -> StreamPosition {
        StreamPosition {
            epoch: self.epoch.clone(),
            offset: self.top,
        }
    }

    fn trim(&mut self, now_ms: u64) {
        let ttl_ms = self.retention.ttl.as_millis() as u64;
        while self.entries.len() > self.retention.size {
            self.entries.pop_front();
        }
        while let Some(&(_, at, _)) = self.entries.front() {
            if now_ms.saturating_sub(at) < ttl_ms {
                break;
            }
            self.entries.pop_front();
        }
    }

    fn expired(&self, now_ms: u64) -> bool {
        now_ms.saturating_sub(self.touched_ms) >= self.retention.ttl.as_millis() as u64
    }
}

impl Default for MemoryHistory {
    fn default() -> Self {
        Self::new()
    }
}

impl MemoryHistory {
    pub fn new() -> Self {
        MemoryHistory {
            shards: (0..SHARDS).map(|_| Mutex::new(HashMap::new())).collect(),
            hasher: RandomState::new(),
        }
    }

    fn shard(&self, stream: &str) -> &Mutex<HashMap<String, Stream>> {
        &self.shards[(self.hasher.hash_one(stream) as usize) % SHARDS]
    }

    /// Runs `f` on the live stream named `stream`, creating it (with a new
    /// epoch) when it is absent or expired.
    fn with_stream<R>(
        &self,
        stream: &str,
        retention: Retention,
        now_ms: u64,
        f: impl FnOnce(&mut Stream) -> R,
    ) -> R {
        let mut shard = self.shard(stream).lock();
        let entry = shard
            .entry(stream.to_owned())
            .or_insert_with(|| Stream::new(retention, now_ms));
        if entry.expired(now_ms) {
            *entry = Stream::new(retention, now_ms);
        }
        entry.retention = retention;
        entry.touched_ms = now_ms;
        f(entry)
    }

    /// Synchronous append, for callers that must order it with other work
    /// under their own lock (the memory backplane).
    pub fn append_now(
        &self,
        stream: &str,
        publication: Arc<Publication>,
        retention: Retention,
        now_ms: u64,
    ) -> StreamPosition {
        self.with_stream(stream, retention, now_ms, |s| {
            s.top += 1;
            if retention.keeps_history() {
                s.entries.push_back((s.top, now_ms, publication));
            }
            s.trim(now_ms);
            s.position()
        })
    }

    pub fn position_now(&self, stream: &str, retention: Retention, now_ms: u64) -> StreamPosition {
        self.with_stream(stream, retention, now_ms, |s| s.position())
    }

    pub fn read_now(
        &self,
        stream: &str,
        since: Option<&StreamPosition>,
        limit: usize,
        now_ms: u64,
    ) -> Option<HistoryRead> {
        let mut shard = self.shard(stream).lock();
        let s = shard.get_mut(stream)?;
        if s.expired(now_ms) {
            shard.remove(stream);
            return None;
        }
        s.trim(now_ms);
        let (after, same_epoch) = match since {
            Some(p) => (p.offset, p.epoch == s.epoch && p.offset <= s.top),
            None => (0, true),
        };
        let first_kept = s.entries.front().map(|e| e.0).unwrap_or(s.top + 1);
        let nothing_trimmed = first_kept <= after + 1;
        let publications: Vec<Stored> = if same_epoch {
            s.entries
                .iter()
                .filter(|e| e.0 > after)
                .take(limit)
                .map(|(offset, _, p)| Stored {
                    offset: *offset,
                    publication: Arc::clone(p),
                })
                .collect()
        } else {
            Vec::new()
        };
        let reached_top = publications.last().map(|p| p.offset).unwrap_or(after) == s.top;
        Some(HistoryRead {
            position: s.position(),
            complete: same_epoch && (nothing_trimmed || since.is_none()) && reached_top,
            publications,
        })
    }

    /// Drops streams idle past their retention. Call it now and then; reads
    /// and appends also drop an expired stream they meet.
    pub fn sweep(&self, now_ms: u64) -> usize {
        let mut dropped = 0;
        for shard in &self.shards {
            let mut shard = shard.lock();
            let before = shard.len();
            shard.retain(|_, s| !s.expired(now_ms));
            dropped += before - shard.len();
        }
        dropped
    }

    pub fn stream_count(&self) -> usize {
        self.shards.iter().map(|s| s.lock().len()).sum()
    }
}

#[async_trait]
impl HistoryStore for MemoryHistory {
    async fn position(
        &self,
        stream: &str,
        retention: Retention,
        now_ms: u64,
    ) -> Result<StreamPosition, HistoryError> {
        Ok(self.position_now(stream, retention, now_ms))
    }

    async fn read(
        &self,
        stream: &str,
        since: Option<&StreamPosition>,
        limit: usize,
        _retention: Retention,
        now_ms: u64,
    ) -> Result<HistoryRead, HistoryError> {
        Ok(self
            .read_now(stream, since, limit, now_ms)
            .unwrap_or_else(|| HistoryRead {
                // No stream: nothing was kept. Only a caller with no position
                // has missed nothing.
                position: StreamPosition {
                    epoch: String::new(),
                    offset: 0,
                },
                publications: Vec::new(),
                complete: false,
            }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use herald_protocol::server::SenderType;
    use serde_json::value::RawValue;
    use std::time::Duration;

    fn publication(n: u64) -> Arc<Publication> {
        Arc::new(Publication {
            message_id: format!("m-{n}"),
            event: "e".into(),
            payload: Arc::from(RawValue::from_string(n.to_string()).unwrap()),
            sender_type: SenderType::System,
            sender_id: None,
            timestamp_ms: n,
            trace: None,
            logged: false,
        })
    }

    const KEEP_3: Retention = Retention {
        size: 3,
        ttl: Duration::from_secs(10),
    };

    #[test]
    fn offsets_are_contiguous_from_one() {
        let h = MemoryHistory::new();
        for n in 1..=5 {
            let p = h.append_now("s", publication(n), KEEP_3, 0);
            assert_eq!(p.offset, n);
        }
    }

    #[test]
    fn read_since_returns_exactly_the_missing_range() {
        let h = MemoryHistory::new();
        let mut epoch = String::new();
        for n in 1..=5 {
            epoch = h.append_now("s", publication(n), KEEP_3, 0).epoch;
        }
        let since = StreamPosition { epoch, offset: 3 };
        let read = h.read_now("s", Some(&since), 100, 1).unwrap();
        assert!(read.complete);
        let offsets: Vec<u64> = read.publications.iter().map(|p| p.offset).collect();
        assert_eq!(offsets, vec![4, 5]);
    }

    #[test]
    fn trimmed_range_is_incomplete() {
        let h = MemoryHistory::new();
        let mut epoch = String::new();
        for n in 1..=5 {
            epoch = h.append_now("s", publication(n), KEEP_3, 0).epoch;
        }
        // Offsets 1 and 2 were trimmed by the size bound.
        let read = h
            .read_now("s", Some(&StreamPosition { epoch, offset: 1 }), 100, 1)
            .unwrap();
        assert!(!read.complete);
    }

    #[test]
    fn other_epoch_is_incomplete_and_returns_nothing() {
        let h = MemoryHistory::new();
        h.append_now("s", publication(1), KEEP_3, 0);
        let since = StreamPosition {
            epoch: "other".into(),
            offset: 0,
        };
        let read = h.read_now("s", Some(&since), 100, 1).unwrap();
        assert!(!read.complete);
        assert!(read.publications.is_empty());
    }

    #[test]
    fn limit_cuts_and_says_so() {
        let h = MemoryHistory::new();
        for n in 1..=3 {
            h.append_now("s", publication(n), KEEP_3, 0);
        }
        let read = h.read_now("s", None, 2, 1).unwrap();
        assert_eq!(read.publications.len(), 2);
        assert!(!read.complete);
    }

    #[test]
    fn idle_stream_expires_with_a_new_epoch() {
        let h = MemoryHistory::new();
        let first = h.append_now("s", publication(1), KEEP_3, 0);
        assert_eq!(h.sweep(5_000), 0);
        assert_eq!(h.sweep(10_000), 1);
        let second = h.append_now("s", publication(2), KEEP_3, 10_001);
        assert_eq!(second.offset, 1);
        assert_ne!(first.epoch, second.epoch);
    }

    #[test]
    fn no_history_keeps_offsets_but_no_entries() {
        let h = MemoryHistory::new();
        h.append_now("s", publication(1), Retention::NONE, 0);
        let p = h.append_now("s", publication(2), Retention::NONE, 0);
        assert_eq!(p.offset, 2);
        let read = h.read_now("s", None, 10, 0).unwrap();
        assert!(read.publications.is_empty());
    }

    #[test]
    fn old_entries_age_out() {
        let h = MemoryHistory::new();
        h.append_now("s", publication(1), KEEP_3, 0);
        h.append_now("s", publication(2), KEEP_3, 9_000);
        let read = h.read_now("s", None, 10, 10_500).unwrap();
        let offsets: Vec<u64> = read.publications.iter().map(|p| p.offset).collect();
        assert_eq!(offsets, vec![2]);
    }
}
