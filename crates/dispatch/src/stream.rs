//! The stream worker: reads an app's dispatch stream as a member of the
//! consumer group, writes the message log rows and schedules the webhook
//! deliveries, then acknowledges. Entries another worker left
//! unacknowledged past the idle time are claimed and done here.

use crate::{message, write, Head, Stats};
use herald_history::Publication;
use herald_redis::dispatch::{DispatchReader, Entry};
use herald_store::Store;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio_util::sync::CancellationToken;

/// How long a worker that read less than a batch waits for more before
/// writing: at most this much added to a message's way into the log.
const LINGER: Duration = Duration::from_millis(25);

/// How a stream worker runs.
#[derive(Debug, Clone)]
pub struct StreamOptions {
    pub redis_url: String,
    /// This worker's consumer name (unique in the cluster: the node id).
    pub consumer: String,
    /// Entries read at once.
    pub batch: u64,
    /// An entry unacknowledged this long is claimed by another worker.
    pub claim_idle: Duration,
}

/// Runs the worker of `app`'s stream until `stop`.
pub async fn run(
    app: String,
    options: StreamOptions,
    store: Store,
    stats: Arc<Stats>,
    stop: CancellationToken,
) {
    let reader = loop {
        match DispatchReader::connect(&options.redis_url, &options.consumer).await {
            Ok(reader) => break reader,
            Err(e) => {
                tracing::warn!(app, error = %e, "dispatch worker cannot reach Redis; retrying");
                stats.stream_errors.fetch_add(1, Ordering::Relaxed);
                if pause(&stop, Duration::from_secs(1)).await {
                    return;
                }
            }
        }
    };
    let mut joined = false;
    let mut last_claim = Instant::now() - options.claim_idle;
    while !stop.is_cancelled() {
        if !joined {
            match reader.join(&app).await {
                Ok(()) => joined = true,
                Err(e) => {
                    stats.stream_errors.fetch_add(1, Ordering::Relaxed);
                    tracing::warn!(app, error = %e, "cannot join the dispatch consumer group");
                    if pause(&stop, Duration::from_secs(1)).await {
                        return;
                    }
                    continue;
                }
            }
        }
        let claim_due = last_claim.elapsed() >= options.claim_idle / 2;
        let read = if claim_due {
            last_claim = Instant::now();
            let claimed = reader
                .claim(&app, options.claim_idle.as_millis() as u64, options.batch)
                .await;
            if let Ok(c) = &claimed {
                if !c.is_empty() {
                    tracing::info!(
                        app,
                        entries = c.len(),
                        "claimed dispatch entries left by another worker"
                    );
                    stats.claimed.fetch_add(c.len() as u64, Ordering::Relaxed);
                }
            }
            claimed
        } else {
            tokio::select! {
                _ = stop.cancelled() => return,
                read = reader.read(&app, options.batch, 500) => read,
            }
        };
        let mut entries = match read {
            Ok(entries) => entries,
            Err(e) => {
                stats.stream_errors.fetch_add(1, Ordering::Relaxed);
                tracing::warn!(app, error = %e, "cannot read the dispatch stream");
                joined = false;
                if pause(&stop, Duration::from_millis(500)).await {
                    return;
                }
                continue;
            }
        };
        if entries.is_empty() {
            continue;
        }
        if !claim_due && (entries.len() as u64) < options.batch {
            // A trickle: let more gather, so each transaction (and its
            // commit) carries a batch rather than a message or two.
            if pause(&stop, LINGER).await {
                return;
            }
            if let Ok(more) = reader
                .read(&app, options.batch - entries.len() as u64, 0)
                .await
            {
                entries.extend(more);
            }
        }
        match take(&app, &entries, &store, &stats).await {
            Ok(()) => {
                let ids: Vec<String> = entries.into_iter().map(|e| e.id).collect();
                if let Err(e) = reader.ack(&app, &ids).await {
                    // Done but not acknowledged: claimed again later, and
                    // the rows absorb the repeat.
                    stats.stream_errors.fetch_add(1, Ordering::Relaxed);
                    tracing::warn!(app, error = %e, "cannot acknowledge dispatch entries");
                }
            }
            Err(e) => {
                // Left pending: claimed (by this worker or another) after
                // the idle time.
                stats.store_errors.fetch_add(1, Ordering::Relaxed);
                tracing::warn!(app, error = %e, "cannot write the message log; the entries stay pending");
                if pause(&stop, Duration::from_secs(1)).await {
                    return;
                }
            }
        }
    }
}

/// Writes the rows and deliveries of `entries`.
async fn take(
    app: &str,
    entries: &[Entry],
    store: &Store,
    stats: &Stats,
) -> Result<(), herald_store::StoreError> {
    let mut messages = Vec::with_capacity(entries.len());
    for entry in entries {
        let head = serde_json::from_str::<Head>(&entry.head);
        let publication = serde_json::from_str::<Publication>(&entry.body);
        match (head, publication) {
            (Ok(head), Ok(publication)) => messages.push(message(app, head, &publication)),
            (head, publication) => {
                stats.malformed.fetch_add(1, Ordering::Relaxed);
                tracing::error!(
                    app,
                    entry = entry.id,
                    head = ?head.err().map(|e| e.to_string()),
                    publication = ?publication.err().map(|e| e.to_string()),
                    "unreadable dispatch entry dropped"
                );
            }
        }
    }
    write(store, &mut messages).await?;
    stats
        .logged
        .fetch_add(messages.len() as u64, Ordering::Relaxed);
    Ok(())
}

/// Samples the depth and lag of the apps' streams for the metrics.
pub async fn watch_depth(
    apps: Vec<String>,
    redis_url: String,
    stats: Arc<Stats>,
    stop: CancellationToken,
) {
    let reader = loop {
        match DispatchReader::connect(&redis_url, "depth").await {
            Ok(reader) => break reader,
            Err(_) => {
                if pause(&stop, Duration::from_secs(2)).await {
                    return;
                }
            }
        }
    };
    loop {
        let now = herald_protocol::now_ms();
        let (mut depth, mut lag) = (0u64, 0u64);
        for app in &apps {
            if let Ok((n, age)) = reader.depth(app, now).await {
                depth += n;
                lag = lag.max(age);
            }
        }
        stats.stream_depth.store(depth as i64, Ordering::Relaxed);
        stats.stream_lag_ms.store(lag as i64, Ordering::Relaxed);
        if pause(&stop, Duration::from_secs(2)).await {
            return;
        }
    }
}

/// Sleeps `d`; true when stopped meanwhile.
pub(crate) async fn pause(stop: &CancellationToken, d: Duration) -> bool {
    tokio::select! {
        _ = stop.cancelled() => true,
        _ = tokio::time::sleep(d) => false,
    }
}
