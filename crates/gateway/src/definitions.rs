//! Channel definitions as this gateway sees them: the apps' `channels`
//! from the configuration, and the definitions operators manage over the
//! admin API, kept in the store and cached here.
//!
//! Every gateway polls the store's revision twice a second and reloads
//! when it moved, so a change made on any gateway takes effect on all of
//! them within a second; each change is announced to the gateway's
//! connections (`changes`), which drop subscriptions that lost their
//! definition.

use crate::config::AppConfig;
use crate::permissions::{AppPolicies, PolicyMap};
use herald_store::{pattern, Definition, Store, StoreError};
use parking_lot::RwLock;
use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

/// The next change seen by `watch` (none ever without one). The wait is
/// boxed: a connection's reader holds this future while idle, and only
/// connections that watch should pay for its size.
pub async fn changed(
    watch: &mut Option<watch::Receiver<u64>>,
) -> Result<(), watch::error::RecvError> {
    match watch {
        Some(rx) => Box::pin(rx.changed()).await,
        None => std::future::pending().await,
    }
}

/// How often the store's revision is read.
pub const POLL: Duration = Duration::from_millis(500);

pub struct Definitions {
    store: Option<Store>,
    by_app: RwLock<HashMap<String, Arc<[Definition]>>>,
    /// The apps' permission policies, compiled.
    policies: RwLock<PolicyMap>,
    /// The store revision last loaded.
    loaded: RwLock<Option<i64>>,
    /// One reload at a time (the poller and the admin API both reload):
    /// a slower one must not install an older snapshot over a newer one.
    reloading: tokio::sync::Mutex<()>,
    changed: watch::Sender<u64>,
}

impl Definitions {
    pub fn new(store: Option<Store>) -> Definitions {
        Definitions {
            store,
            by_app: RwLock::new(HashMap::new()),
            policies: RwLock::new(HashMap::new()),
            loaded: RwLock::new(None),
            reloading: tokio::sync::Mutex::new(()),
            changed: watch::channel(0).0,
        }
    }

    /// The store, where this gateway has one.
    pub fn store(&self) -> Option<&Store> {
        self.store.as_ref()
    }

    /// Reloads everything from the store when its revision moved;
    /// announces the change.
    pub async fn refresh(&self) -> Result<(), StoreError> {
        let Some(store) = &self.store else {
            return Ok(());
        };
        let _one = self.reloading.lock().await;
        let revision = store.revision().await?;
        if *self.loaded.read() == Some(revision) {
            return Ok(());
        }
        let mut by_app: HashMap<String, Vec<Definition>> = HashMap::new();
        for def in store.all_definitions().await? {
            by_app.entry(def.app.clone()).or_default().push(def);
        }
        let policies = crate::permissions::load(store.all_policies().await?);
        *self.by_app.write() = by_app
            .into_iter()
            .map(|(app, defs)| (app, Arc::from(defs)))
            .collect();
        *self.policies.write() = policies;
        *self.loaded.write() = Some(revision);
        self.changed.send_modify(|n| *n += 1);
        Ok(())
    }

    /// Polls the store until `stop`; a store that cannot be read is
    /// logged, and the last definitions stay in force.
    pub async fn run(self: Arc<Self>, stop: CancellationToken) {
        if self.store.is_none() {
            return;
        }
        let mut tick = tokio::time::interval(POLL);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut failing = false;
        loop {
            tokio::select! {
                _ = stop.cancelled() => return,
                _ = tick.tick() => {}
            }
            match self.refresh().await {
                Ok(()) if failing => {
                    tracing::info!("channel definitions are read from the database again");
                    failing = false;
                }
                Ok(()) => {}
                Err(e) if !failing => {
                    tracing::warn!(error = %e, "cannot read channel definitions; keeping the last ones");
                    failing = true;
                }
                Err(_) => {}
            }
        }
    }

    /// Announces each change of the definitions.
    pub fn changes(&self) -> watch::Receiver<u64> {
        self.changed.subscribe()
    }

    /// The app's definitions in the store, oldest first.
    pub fn of(&self, app: &str) -> Arc<[Definition]> {
        self.by_app
            .read()
            .get(app)
            .cloned()
            .unwrap_or_else(|| Arc::from(Vec::new()))
    }

    /// The app's permission policies, if it has any.
    pub fn policies(&self, app: &str) -> Option<Arc<AppPolicies>> {
        self.policies.read().get(app).cloned()
    }

    /// The enabled definition in the store that governs `channel` (the
    /// most specific match): its messages are logged and go to its
    /// webhooks. Definitions in the configuration only allow channels.
    pub fn governing(&self, app: &str, channel: &str) -> Option<Definition> {
        let defs = self.of(app);
        pattern::most_specific(
            channel,
            defs.iter()
                .filter(|d| d.enabled)
                .map(|d| (d.pattern.as_str(), d)),
        )
        .map(|(_, d)| d.clone())
    }

    /// Whether an enabled definition (in the configuration or the store)
    /// lets `channel` be used.
    pub fn allows(&self, app: &AppConfig, channel: &str) -> bool {
        app.channels.iter().any(|d| d.enabled && d.matches(channel))
            || self
                .of(&app.id)
                .iter()
                .any(|d| d.enabled && pattern::matches(&d.pattern, channel))
    }
}
