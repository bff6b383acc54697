//! Work an adapter runs in the background (a topic manager, a presence
//! refresh, a registry heartbeat), stoppable in order.
//!
//! Each task gets its own cancellation token. A task spawned with
//! [`Background::spawn`] stops at its next await point once cancelled; one
//! spawned with [`Background::spawn_until`] is handed its token and stops
//! where it chooses (between two heartbeats, not inside one).
//! [`Background::stop`] waits for each task to be gone before it stops the
//! next, and the node deregisters only after all are: a heartbeat cannot
//! register a node again after it deregistered.

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

    /// Spawns `work` with its cancellation token: the task must end soon
    /// after the token is cancelled, at a point of its choosing.
    pub fn spawn_until<F, W>(&self, name: &'static str, work: W)
    where
        W: FnOnce(CancellationToken) -> F,
        F: Future<Output = ()> + Send + 'static,
    {
        let stop = CancellationToken::new();
        let handle = tokio::spawn(work(stop.clone()));
        self.tasks.lock().push(Task { name, stop, handle });
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
