//! Work an adapter runs in the background (a topic manager, a presence
//! refresh, a registry heartbeat), stoppable in order.
//!
//! Each task gets its own cancellation token: it stops at its next await
//! point once cancelled, and [`Background::stop`] waits for it to be gone
//! before it stops the next one, so a heartbeat cannot re-register a node
//! after the node deregistered.

use parking_lot::Mutex;
use std::future::Future;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

struct Task {
    name: &'static str,
    stop: CancellationToken,
    handle: JoinHandle<()>,
}

/// A set of named background tasks.
#[derive(Default)]
pub struct Background {
    tasks: Mutex<Vec<Task>>,
}

impl Background {
    pub fn new() -> Self {
        Self::default()
    }

    /// Spawns `work`, which runs until it ends or the task is stopped.
    pub fn spawn(&self, name: &'static str, work: impl Future<Output = ()> + Send + 'static) {
        let stop = CancellationToken::new();
        let token = stop.clone();
        let handle = tokio::spawn(async move {
            tokio::select! {
                _ = token.cancelled() => {}
                _ = work => {}
            }
        });
        self.tasks.lock().push(Task { name, stop, handle });
    }

    /// Takes over the tasks of `other`, to be stopped after these.
    pub fn adopt(&self, other: Background) {
        let taken = std::mem::take(&mut *other.tasks.lock());
        self.tasks.lock().extend(taken);
    }

    /// Stops every task, in the order they were spawned, waiting for each.
    pub async fn stop(&self) {
        let tasks = std::mem::take(&mut *self.tasks.lock());
        for task in tasks {
            task.stop.cancel();
            if let Err(e) = task.handle.await {
                tracing::warn!(task = task.name, error = %e, "background task failed");
            }
        }
    }

    /// The names of the running tasks, in stopping order.
    pub fn names(&self) -> Vec<&'static str> {
        self.tasks.lock().iter().map(|t| t.name).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::sync::Arc;
    use std::time::Duration;

    #[tokio::test]
    async fn stop_ends_every_task_in_order_and_nothing_runs_after() {
        let background = Background::new();
        let ticks = Arc::new(AtomicUsize::new(0));
        let order = Arc::new(Mutex::new(Vec::new()));
        for name in ["first", "second"] {
            let ticks = Arc::clone(&ticks);
            let order = Arc::clone(&order);
            background.spawn(name, async move {
                struct Ended(&'static str, Arc<Mutex<Vec<&'static str>>>);
                impl Drop for Ended {
                    fn drop(&mut self) {
                        self.1.lock().push(self.0);
                    }
                }
                let _ended = Ended(name, order);
                loop {
                    ticks.fetch_add(1, Ordering::Relaxed);
                    tokio::time::sleep(Duration::from_millis(1)).await;
                }
            });
        }
        assert_eq!(background.names(), ["first", "second"]);
        tokio::time::sleep(Duration::from_millis(20)).await;
        background.stop().await;
        assert_eq!(*order.lock(), ["first", "second"]);
        let after = ticks.load(Ordering::Relaxed);
        tokio::time::sleep(Duration::from_millis(20)).await;
        assert_eq!(ticks.load(Ordering::Relaxed), after);
        assert!(background.names().is_empty());
    }
}
