//! What every handler shares.

use crate::auth::Apps;
use crate::config::Config;
use crate::definitions::Definitions;
use crate::metrics::Metrics;
use herald_broker_node::Node;
use herald_rate_limiter::{ClusterLimiter, Decision, KeyedLimiter, Limit, LocalLimiter};
use herald_store::Store;
use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

pub struct AppState {
    pub config: Config,
    pub node: Arc<Node>,
    pub apps: Apps,
    /// Realtime operations per app (subscribe, publish, token signing).
    pub ops: OpsLimiter,
    /// Per app: each client's share of its operations, at this gateway.
    pub client_ops: HashMap<String, KeyedLimiter<String>>,
    /// New WebSocket connections per client IP, at this gateway.
    pub connects: KeyedLimiter<IpAddr>,
    pub metrics: Metrics,
    /// Cancelled when the server starts shutting down.
    pub shutdown: CancellationToken,
    /// Every connection task, so shutdown can wait for them to drain.
    pub connections: TaskTracker,
    /// The address this gateway listens on.
    pub address: String,
    /// Channel definitions (configuration and store).
    pub definitions: Arc<Definitions>,
    /// Counters of the message log, webhooks and retention.
    pub dispatch: Arc<herald_dispatch::Stats>,
    /// Embedded with a store: the message log writer of the publish path.
    pub embedded_log: Option<herald_dispatch::Embedded>,
    next_conn: AtomicU64,
}

impl AppState {
    pub fn new(
        config: Config,
        node: Arc<Node>,
        address: String,
        store: Option<Store>,
    ) -> Result<Arc<AppState>, String> {
        let apps = Apps::new(&config.apps)?;
        // Per app: its whole allowance (cluster-wide), and what its client
        // connections together may use of it (`clients:<app>`, checked as
        // each gateway's share).
        let keys: Vec<(String, Limit)> = config
            .apps
            .iter()
            .flat_map(|a| {
                let clients = a.clients_ops_limit().map(|l| (clients_key(&a.id), l));
                std::iter::once((a.id.clone(), a.ops_limit())).chain(clients)
            })
            .collect();
        let limits = keys.iter().map(|(k, l)| (k.as_str(), *l));
        let client_ops = config
            .apps
            .iter()
            .map(|a| (a.id.clone(), KeyedLimiter::new(a.client_ops_limit())))
            .collect();
        let ops = match node.shared_limits() {
            Some(store) => OpsLimiter::Cluster(ClusterLimiter::new(store, limits)),
            None => OpsLimiter::Local(LocalLimiter::new(limits)),
        };
        let connects = KeyedLimiter::new(Limit {
            per_second: config.connections_per_second_per_ip,
            burst: config.connections_burst_per_ip.max(1),
        });
        node.limit_presence_announcements(config.presence_announce_limit);
        let dispatch = Arc::new(herald_dispatch::Stats::default());
        let config_redis = config.redis_url.clone();
        Ok(Arc::new(AppState {
            metrics: Metrics::new(Arc::clone(&node), Arc::clone(&dispatch)),
            config,
            node,
            apps,
            ops,
            client_ops,
            connects,
            shutdown: CancellationToken::new(),
            connections: TaskTracker::new(),
            address,
            embedded_log: match (&config_redis, &store) {
                (None, Some(store)) => Some(herald_dispatch::Embedded::start(
                    store.clone(),
                    Arc::clone(&dispatch),
                )),
                _ => None,
            },
            dispatch,
            definitions: Arc::new(Definitions::new(store)),
            next_conn: AtomicU64::new(1),
        }))
    }

    /// A node-local connection number.
    pub fn next_conn(&self) -> u64 {
        self.next_conn.fetch_add(1, Ordering::Relaxed)
    }

    /// Counts a client connection that opened (any surface).
    pub fn connection_opened(&self) {
        self.metrics.connections.inc();
        self.node.connections.fetch_add(1, Ordering::Relaxed);
        self.metrics.connections_total.inc();
    }

    /// Ends a client connection whose session is closed, any surface:
    /// waits up to `farewell` for its writer (unless it already finished:
    /// a finished JoinHandle must not be polled again), then counts the
    /// disconnect with the kick's reason (`client` when none).
    pub async fn connection_ended(
        &self,
        kick: &herald_broker_node::outbound::Kick,
        writer: &mut tokio::task::JoinHandle<()>,
        writer_done: bool,
        farewell: std::time::Duration,
    ) {
        let reason = kick.reason().map_or("client", |r| r.reason());
        if !writer_done && tokio::time::timeout(farewell, &mut *writer).await.is_err() {
            writer.abort();
        }
        self.metrics.disconnects.with_label_values(&[reason]).inc();
        self.metrics.connections.dec();
        self.node.connections.fetch_sub(1, Ordering::Relaxed);
        tracing::debug!(reason, "disconnected");
    }
}

/// The key of what an app's client connections together may use.
pub fn clients_key(app: &str) -> String {
    format!("clients:{app}")
}

/// An app's operation limit: local in embedded mode, cluster-wide (with a
/// local fallback) in a cluster.
pub enum OpsLimiter {
    Local(LocalLimiter),
    Cluster(ClusterLimiter),
}

impl OpsLimiter {
    pub async fn check(&self, app: &str) -> Decision {
        match self {
            OpsLimiter::Local(l) => l.check(app),
            OpsLimiter::Cluster(c) => c.check(app).await,
        }
    }

    /// This node's share of `key`'s limit, without a round trip to the
    /// store (all of it on a single node).
    pub fn check_local(&self, key: &str) -> Decision {
        match self {
            OpsLimiter::Local(l) => l.check(key),
            OpsLimiter::Cluster(c) => c.check_local(key),
        }
    }

    /// Whether cluster-wide limits are answered locally for now.
    pub fn in_fallback(&self) -> bool {
        matches!(self, OpsLimiter::Cluster(c) if c.in_fallback())
    }
}
