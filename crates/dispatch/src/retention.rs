//! The retention job: deletes messages older than each app's
//! `retentionDays`, in batches, one runner at a time across the cluster
//! (a lease in the database).

use crate::stream::pause;
use crate::webhook::now_ms;
use crate::Stats;
use herald_store::Store;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;
use tokio_util::sync::CancellationToken;

/// Messages deleted per statement.
pub const BATCH: u32 = 1000;
const LEASE: &str = "retention";

/// Runs the job every `every` until `stop`, for `apps`; `holder` names this
/// process in the lease.
pub async fn run(
    store: Store,
    apps: Vec<String>,
    holder: String,
    every: Duration,
    stats: Arc<Stats>,
    stop: CancellationToken,
) {
    loop {
        if let Err(e) = once(&store, &apps, &holder, every, &stats).await {
            stats.store_errors.fetch_add(1, Ordering::Relaxed);
            tracing::warn!(error = %e, "the retention job failed; it runs again later");
        }
        if pause(&stop, every).await {
            return;
        }
    }
}

/// One pass, if this process holds the lease: how many messages went.
pub async fn once(
    store: &Store,
    apps: &[String],
    holder: &str,
    every: Duration,
    stats: &Stats,
) -> Result<u64, herald_store::StoreError> {
    let lease_ms = (every.as_millis() as i64 * 2).max(10_000);
    if !store.lease(LEASE, holder, now_ms() + lease_ms).await? {
        return Ok(0);
    }
    // Counts reported for messages that never got a row (their entry was
    // lost with a Redis restarted empty, say) go after a day.
    store.sweep_audience(now_ms() - 86_400_000).await?;
    let mut total = 0;
    for app in apps {
        let Some(days) = store.settings(app).await?.retention_days else {
            continue;
        };
        let before = now_ms() - i64::from(days) * 86_400_000;
        loop {
            let n = store.delete_messages_before(app, before, BATCH).await?;
            total += n;
            stats.retention_deleted.fetch_add(n, Ordering::Relaxed);
            if n < u64::from(BATCH) {
                break;
            }
            // Renew the lease between batches of a long pass; a runner
            // that lost it stops.
            if !store.lease(LEASE, holder, now_ms() + lease_ms).await? {
                return Ok(total);
            }
        }
    }
    if total > 0 {
        tracing::info!(deleted = total, "retention: old messages deleted");
    }
    Ok(total)
}
