//! The HTTP server: routes, start-up and graceful shutdown.

use crate::admin;
use crate::api;
use crate::config::Config;
use crate::edge::{self, Credentials};
use crate::listener;
use crate::socketio;
use crate::state::AppState;
use crate::workers;
use crate::ws;
use axum::extract::{DefaultBodyLimit, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{middleware, Router};
use herald_broker_node::Node;
use herald_protocol::now_ms;
use herald_redis::ClusterOptions;
use herald_store::Store;
use std::sync::Arc;
use std::time::Duration;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

pub fn router(state: Arc<AppState>) -> Router {
    let body_limit = api::body_limit(&state);
    // Every client surface's upgrade goes through the same admission.
    let upgrades = Router::new().route("/v1/ws", get(ws::upgrade)).route_layer(
        middleware::from_fn_with_state(Arc::clone(&state), edge::admit),
    );
    // Socket.IO authenticates in its `CONNECT` packet; the session's
    // first request is admitted like every other surface's.
    let socketio = socketio::routes(&state);
    Router::new()
        .merge(upgrades)
        .merge(socketio)
        .route("/healthz", get(|| async { "ok" }))
        .route("/readyz", get(ready))
        .route("/metrics", get(metrics))
        .merge(api::routes())
        .merge(admin::routes())
        .layer(DefaultBodyLimit::max(body_limit))
        .with_state(state)
}

async fn ready(State(state): State<Arc<AppState>>) -> impl IntoResponse {
    if state.shutdown.is_cancelled() {
        (StatusCode::SERVICE_UNAVAILABLE, "shutting down")
    } else if !state.node.ready() {
        (StatusCode::SERVICE_UNAVAILABLE, "backplane not ready")
    } else {
        (StatusCode::OK, "ready")
    }
}

async fn metrics(State(state): State<Arc<AppState>>, headers: HeaderMap) -> Response {
    if let Some(token) = &state.config.metrics_token {
        let sent = Credentials::from_headers(&headers)
            .bearer
            .unwrap_or_default();
        if !same_secret(sent.as_bytes(), token.as_bytes()) {
            return (StatusCode::UNAUTHORIZED, "metrics need the metrics token").into_response();
        }
    }
    state
        .metrics
        .ratelimit_fallback
        .set(i64::from(state.ops.in_fallback()));
    (
        [(header::CONTENT_TYPE, "text/plain; version=0.0.4")],
        state.metrics.render(),
    )
        .into_response()
}

/// Compares a presented secret with the expected one in time that does not
/// depend on where they differ.
fn same_secret(sent: &[u8], expected: &[u8]) -> bool {
    sent.len() == expected.len()
        && sent
            .iter()
            .zip(expected)
            .fold(0u8, |diff, (a, b)| diff | (a ^ b))
            == 0
}

/// A bound, not yet serving, server.
pub struct Server {
    state: Arc<AppState>,
    listener: TcpListener,
}

impl Server {
    pub async fn bind(config: Config) -> Result<Server, String> {
        let node_id = config
            .node_id
            .clone()
            .unwrap_or_else(|| format!("gw-{:06x}", rand::random::<u32>() & 0xff_ffff));
        let listener = TcpListener::bind(config.listen)
            .await
            .map_err(|e| format!("cannot listen on {}: {e}", config.listen))?;
        let address = listener
            .local_addr()
            .map_err(|e| e.to_string())?
            .to_string();
        let node = match &config.redis_url {
            None => Node::embedded(node_id),
            Some(url) => {
                let options = ClusterOptions {
                    redis_url: url.clone(),
                    presence_ttl: Duration::from_secs(config.presence_ttl_seconds),
                    address: address.clone(),
                };
                let parts = herald_redis::cluster_parts(&node_id, options)
                    .await
                    .map_err(|e| e.to_string())?;
                let node = Node::new(node_id, parts);
                // Serve once the backplane has proved it delivers, or say
                // why not.
                let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
                while !node.ready() && tokio::time::Instant::now() < deadline {
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
                if !node.ready() {
                    tracing::warn!("the Redis backplane is not ready yet; serving, and /readyz says 503 until it is");
                }
                node
            }
        };
        let store = open_store(&config).await?;
        let state = AppState::new(config, node, address, store)?;
        fetch_jwks(&state).await;
        state
            .definitions
            .refresh()
            .await
            .map_err(|e| format!("cannot read channel definitions: {e}"))?;
        Ok(Server { state, listener })
    }

    /// `embedded` or `cluster`, for the start-up line.
    pub fn mode(&self) -> &'static str {
        if self.state.config.redis_url.is_some() {
            "cluster"
        } else {
            "embedded"
        }
    }

    pub fn local_addr(&self) -> std::io::Result<std::net::SocketAddr> {
        self.listener.local_addr()
    }

    pub fn state(&self) -> &Arc<AppState> {
        &self.state
    }

    /// Serves until `shutdown` resolves, then sends every client
    /// `disconnect` (reconnect: true) and waits for them to drain, at most
    /// the configured grace.
    pub async fn run(
        self,
        shutdown: impl std::future::Future<Output = ()> + Send + 'static,
    ) -> std::io::Result<()> {
        let state = self.state;
        let upkeep = tokio::spawn(upkeep(Arc::clone(&state)));
        let jwks = tokio::spawn(refresh_jwks(Arc::clone(&state)));
        let definitions =
            tokio::spawn(Arc::clone(&state.definitions).run(state.shutdown.child_token()));
        // Background work stops after the connections have drained, so the
        // last deliveries' audience counts still land.
        let work_stop = CancellationToken::new();
        let mut work = tokio::task::JoinSet::new();
        if let Some(store) = state.definitions.store() {
            workers::start_dispatch(
                &state.config,
                state.node.id(),
                store,
                &state.dispatch,
                &work_stop,
                &mut work,
            );
            work.spawn(workers::report_audience(
                Arc::clone(&state.node),
                state.node.id().to_owned(),
                store.clone(),
                Arc::clone(&state.dispatch),
                work_stop.child_token(),
            ));
        }
        let stop = state.shutdown.clone();
        tokio::spawn(async move {
            shutdown.await;
            tracing::info!("shutting down: closing connections");
            stop.cancel();
        });
        let app = router(Arc::clone(&state));
        let http = listener::serve(self.listener, app, Arc::clone(&state)).await;
        state.connections.close();
        // HTTP requests in flight and WebSocket connections drain together.
        let grace = Duration::from_millis(state.config.shutdown_grace_ms);
        let drained = async { tokio::join!(http.wait(), state.connections.wait()) };
        if tokio::time::timeout(grace, drained).await.is_err() {
            tracing::warn!(
                left = state.connections.len(),
                "shutdown grace elapsed with connections still open"
            );
        }
        work_stop.cancel();
        if tokio::time::timeout(Duration::from_secs(5), async {
            while work.join_next().await.is_some() {}
        })
        .await
        .is_err()
        {
            tracing::warn!("background work did not stop within 5 s");
        }
        upkeep.abort();
        definitions.abort();
        jwks.abort();
        state.node.shutdown().await;
        if let Some(store) = state.definitions.store() {
            store.close().await;
        }
        tracing::info!("stopped");
        Ok(())
    }
}

/// The database: `database_url` when set; embedded, SQLite under
/// `data_dir` or in memory; a cluster without one has none (definitions
/// come from the configuration only, and the admin API says so).
async fn open_store(config: &Config) -> Result<Option<Store>, String> {
    let store = match (&config.database_url, &config.redis_url, &config.data_dir) {
        (Some(url), _, _) => Store::connect(url).await,
        (None, None, Some(dir)) => Store::in_dir(dir).await,
        (None, None, None) => Store::memory().await,
        (None, Some(_), _) => {
            tracing::warn!(
                "no database (--database postgres://…): channel definitions come from the configuration only, and the admin API cannot change them"
            );
            return Ok(None);
        }
    };
    store.map(Some).map_err(|e| e.to_string())
}

/// Fetches every app's JWKS once at start. A provider that cannot be
/// reached does not stop the gateway: it says so, and tokens signed with
/// that provider's keys are refused until a later fetch succeeds.
async fn fetch_jwks(state: &AppState) {
    for app in state.apps.iter() {
        let Some(jwks) = &app.jwks else {
            continue;
        };
        match jwks.refresh().await {
            Ok(keys) => tracing::info!(app = app.id(), url = jwks.url(), keys, "JWKS fetched"),
            Err(e) => tracing::error!(
                app = app.id(),
                error = %e,
                "cannot fetch the app's JWKS: user tokens signed with its keys are refused until it can be fetched (retried every jwks_refresh_seconds, and on each unknown kid)"
            ),
        }
    }
}

/// Fetches each app's JWKS again on its schedule.
async fn refresh_jwks(state: Arc<AppState>) {
    let apps: Vec<_> = state
        .apps
        .iter()
        .filter(|a| a.jwks.is_some())
        .cloned()
        .collect();
    let mut tasks = tokio::task::JoinSet::new();
    for app in apps {
        tasks.spawn(async move {
            let Some(jwks) = app.jwks.clone() else {
                return;
            };
            let every = Duration::from_secs(app.config.jwks_refresh_seconds.max(1));
            loop {
                tokio::time::sleep(every).await;
                if let Err(e) = jwks.refresh().await {
                    tracing::warn!(app = app.id(), error = %e, "cannot fetch the app's JWKS; keeping the keys already known");
                }
            }
        });
    }
    while tasks.join_next().await.is_some() {}
}

async fn upkeep(state: Arc<AppState>) {
    let mut tick = tokio::time::interval(Duration::from_secs(10));
    loop {
        tick.tick().await;
        state.node.maintain(now_ms());
        state.connects.forget_idle();
        for limiter in state.client_ops.values() {
            limiter.forget_idle();
        }
    }
}

/// Resolves on SIGTERM or SIGINT. The handlers are installed when this is
/// called, inside the runtime and before the gateway says it listens, so a
/// signal that comes at once (an orchestrator's stop right after start) is
/// never taken by the default action, which would end the process without
/// its drain.
pub fn signal() -> impl std::future::Future<Output = ()> + Send + 'static {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{signal, Signal, SignalKind};
        let term = signal(SignalKind::terminate()).ok();
        let int = signal(SignalKind::interrupt()).ok();
        async move {
            async fn next(s: Option<Signal>) {
                match s {
                    Some(mut s) => {
                        s.recv().await;
                    }
                    None => std::future::pending::<()>().await,
                }
            }
            tokio::select! {
                _ = next(term) => {}
                _ = next(int) => {}
            }
        }
    }
    #[cfg(not(unix))]
    async {
        let _ = tokio::signal::ctrl_c().await;
    }
}
