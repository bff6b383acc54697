//! The background work a gateway (or `herald worker`) runs beside serving
//! clients: the dispatch stream workers, the webhook sender, the retention
//! job (all in `herald-dispatch`), and the audience reporter.

use crate::config::Config;
use herald_broker_node::Node;
use herald_dispatch::sign::Secret;
use herald_dispatch::stream::StreamOptions;
use herald_dispatch::webhook::WebhookOptions;
use herald_dispatch::{retention, stream, webhook, Stats};
use herald_store::Store;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

/// How often a gateway reports the sockets its logged messages reached.
const AUDIENCE_EVERY: Duration = Duration::from_millis(250);

/// Starts the dispatch workers (when `config.worker`), for a process whose
/// node id is `node_id`.
pub fn start_dispatch(
    config: &Config,
    node_id: &str,
    store: &Store,
    stats: &Arc<Stats>,
    stop: &CancellationToken,
    tasks: &mut JoinSet<()>,
) {
    if !config.worker {
        return;
    }
    let apps: Vec<String> = config.apps.iter().map(|a| a.id.clone()).collect();
    if let Some(url) = &config.redis_url {
        for app in &apps {
            let options = StreamOptions {
                redis_url: url.clone(),
                consumer: node_id.to_owned(),
                batch: 500,
                claim_idle: Duration::from_millis(config.dispatch_claim_idle_ms.max(100)),
            };
            tasks.spawn(stream::run(
                app.clone(),
                options,
                store.clone(),
                Arc::clone(stats),
                stop.child_token(),
            ));
        }
        tasks.spawn(stream::watch_depth(
            apps.clone(),
            url.clone(),
            Arc::clone(stats),
            stop.child_token(),
        ));
    }
    tasks.spawn(webhook::run(
        store.clone(),
        webhook_options(config),
        Arc::clone(stats),
        stop.child_token(),
    ));
    tasks.spawn(watch_backlog(
        store.clone(),
        Arc::clone(stats),
        stop.child_token(),
    ));
    tasks.spawn(retention::run(
        store.clone(),
        apps,
        node_id.to_owned(),
        Duration::from_secs(config.retention_interval_seconds),
        Arc::clone(stats),
        stop.child_token(),
    ));
}

pub fn webhook_options(config: &Config) -> WebhookOptions {
    WebhookOptions {
        timeout: Duration::from_millis(config.webhooks.timeout_ms),
        schedule: config
            .webhooks
            .retry_seconds
            .iter()
            .map(|s| Duration::from_secs_f64(*s))
            .collect(),
        allow_private: config.webhooks.allow_private_targets,
        concurrency: config.webhooks.concurrency,
        secrets: config
            .apps
            .iter()
            .filter_map(|a| {
                let secret = Secret::parse(a.webhook_secret.as_deref()?).ok()?;
                Some((a.id.clone(), secret))
            })
            .collect(),
    }
}

/// Reports the sockets this gateway delivered logged messages to, until
/// `stop` (and once more after it, so a drain's last counts land).
pub async fn report_audience(
    node: Arc<Node>,
    node_id: String,
    store: Store,
    stats: Arc<Stats>,
    stop: CancellationToken,
) {
    loop {
        let stopped = tokio::select! {
            _ = stop.cancelled() => true,
            _ = tokio::time::sleep(AUDIENCE_EVERY) => false,
        };
        let counts = node.take_audience();
        if !counts.is_empty() {
            if let Err(e) = store.add_audience(&node_id, &counts).await {
                stats.store_errors.fetch_add(1, Ordering::Relaxed);
                tracing::warn!(error = %e, messages = counts.len(), "cannot report message audience; trying again");
                // Kept (within the hub's bound) for the next report.
                node.restore_audience(counts);
            }
        }
        if stopped {
            return;
        }
    }
}

/// Samples the webhook backlog for the metrics.
async fn watch_backlog(store: Store, stats: Arc<Stats>, stop: CancellationToken) {
    loop {
        if let Ok(backlog) = store.webhook_backlog().await {
            let now = herald_protocol::now_ms() as i64;
            stats
                .webhook_pending
                .store(backlog.pending, Ordering::Relaxed);
            stats.webhook_lag_ms.store(
                backlog.oldest_ms.map_or(0, |o| (now - o).max(0)),
                Ordering::Relaxed,
            );
        }
        tokio::select! {
            _ = stop.cancelled() => return,
            _ = tokio::time::sleep(Duration::from_secs(2)) => {}
        }
    }
}

/// `herald worker`: the dispatch workers alone, for deployments that scale
/// delivery apart from connections. Needs Redis (the dispatch streams) and
/// a database (the message log). Serves `/healthz`, `/readyz` and
/// `/metrics` on `config.listen`; stops on `shutdown`, letting attempts in
/// flight finish (at most 10 s).
pub async fn run_worker(
    config: Config,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> Result<(), String> {
    use axum::routing::get;
    let Some(_) = &config.redis_url else {
        return Err(
            "`herald worker` reads the dispatch streams in Redis: give --redis (or redis_url)"
                .into(),
        );
    };
    let Some(url) = &config.database_url else {
        return Err(
            "`herald worker` writes the message log: give --database (or database_url)".into(),
        );
    };
    let store = Store::connect(url).await.map_err(|e| e.to_string())?;
    let node_id = config
        .node_id
        .clone()
        .unwrap_or_else(|| format!("worker-{:06x}", rand::random::<u32>() & 0xff_ffff));
    let listener = tokio::net::TcpListener::bind(config.listen)
        .await
        .map_err(|e| format!("cannot listen on {}: {e}", config.listen))?;
    let addr = listener.local_addr().map_err(|e| e.to_string())?;
    let stats = Arc::new(Stats::default());
    let stop = CancellationToken::new();
    let mut tasks = JoinSet::new();
    let mut config = config;
    config.worker = true;
    start_dispatch(&config, &node_id, &store, &stats, &stop, &mut tasks);
    let registry = crate::metrics::worker_registry(Arc::clone(&stats));
    let ready_store = store.clone();
    let app = axum::Router::new()
        .route("/healthz", get(|| async { "ok" }))
        .route(
            "/readyz",
            get(move || {
                let store = ready_store.clone();
                async move {
                    match store.revision().await {
                        Ok(_) => (axum::http::StatusCode::OK, "ready"),
                        Err(_) => (
                            axum::http::StatusCode::SERVICE_UNAVAILABLE,
                            "database unreachable",
                        ),
                    }
                }
            }),
        )
        .route(
            "/metrics",
            get(move || {
                let text = crate::metrics::render(&registry);
                async move {
                    (
                        [(
                            axum::http::header::CONTENT_TYPE,
                            "text/plain; version=0.0.4",
                        )],
                        text,
                    )
                }
            }),
        );
    println!("Herald worker {node_id} listening on http://{addr}");
    let http_stop = stop.clone();
    let http = tokio::spawn(async move {
        let _ = axum::serve(listener, app)
            .with_graceful_shutdown(async move { http_stop.cancelled().await })
            .await;
    });
    shutdown.await;
    tracing::info!("worker stopping");
    stop.cancel();
    let _ = tokio::time::timeout(Duration::from_secs(10), async {
        while tasks.join_next().await.is_some() {}
    })
    .await;
    let _ = http.await;
    store.close().await;
    Ok(())
}
