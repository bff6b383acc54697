//! The native WebSocket endpoint, `GET /v1/ws`.
//!
//! Credentials are checked before the upgrade: a bad or expired token is
//! answered with HTTP 401 and a JSON error, never accepted and dropped.
//! The upgrade itself is done here on hyper and tokio-tungstenite, so that
//! encoded frames go to the socket without another copy.

mod connection;
mod session;

use crate::auth::{verify_user_token, App, Identity};
use crate::state::AppState;
use axum::body::Body;
use axum::extract::{ConnectInfo, Query, Request, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use herald_protocol::{ErrorBody, ErrorCode};
use hyper_util::rt::TokioIo;
use serde::Deserialize;
use serde_json::json;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use tokio_tungstenite::tungstenite::handshake::derive_accept_key;
use tokio_tungstenite::tungstenite::protocol::{Role, WebSocketConfig};
use tokio_tungstenite::WebSocketStream;

#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ConnectParams {
    token: Option<String>,
    api_key: Option<String>,
    /// The app of an anonymous connection (optional when only one app is
    /// configured).
    app: Option<String>,
}

fn refuse(state: &AppState, status: StatusCode, error: ErrorBody) -> Response {
    state
        .metrics
        .connections_refused
        .with_label_values(&[error.code.as_str()])
        .inc();
    (status, Json(json!({ "error": error }))).into_response()
}

/// Authenticates a connection: user JWT, then API key, then anonymous.
fn authenticate(
    state: &AppState,
    params: &ConnectParams,
    headers: &HeaderMap,
) -> Result<(Arc<App>, Identity), ErrorBody> {
    let bearer = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .map(str::trim);
    if let Some(token) = params.token.as_deref().or(bearer) {
        return verify_user_token(&state.apps, token);
    }
    let key = params
        .api_key
        .as_deref()
        .or_else(|| headers.get("x-api-key").and_then(|v| v.to_str().ok()));
    if let Some(key) = key {
        return state
            .apps
            .by_api_key(key)
            .map(|app| (Arc::clone(app), Identity::System))
            .ok_or_else(|| ErrorBody::new(ErrorCode::Unauthorized, ""));
    }
    let app = match params.app.as_deref() {
        Some(id) => state.apps.get(id),
        None => state.apps.only(),
    };
    match app {
        Some(app) if app.config.allow_anonymous => Ok((Arc::clone(app), Identity::Anonymous)),
        _ => Err(ErrorBody::new(ErrorCode::Unauthorized, "")),
    }
}

fn is_websocket_upgrade(headers: &HeaderMap) -> bool {
    let has = |name: header::HeaderName, token: &str| {
        headers.get_all(name).iter().any(|v| {
            v.to_str()
                .map(|s| s.split(',').any(|p| p.trim().eq_ignore_ascii_case(token)))
                .unwrap_or(false)
        })
    };
    has(header::CONNECTION, "upgrade")
        && has(header::UPGRADE, "websocket")
        && headers
            .get(header::SEC_WEBSOCKET_VERSION)
            .is_some_and(|v| v == "13")
}

/// The client's address: the peer, or the first `X-Forwarded-For` entry
/// when the gateway is told to trust it.
fn client_ip(state: &AppState, peer: SocketAddr, headers: &HeaderMap) -> IpAddr {
    if state.config.trust_forwarded_for {
        let forwarded = headers
            .get("x-forwarded-for")
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.split(',').next())
            .and_then(|ip| ip.trim().parse().ok());
        if let Some(ip) = forwarded {
            return ip;
        }
    }
    peer.ip()
}

pub async fn upgrade(
    State(state): State<Arc<AppState>>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    Query(params): Query<ConnectParams>,
    headers: HeaderMap,
    mut request: Request,
) -> Response {
    if state.shutdown.is_cancelled() {
        let e = ErrorBody::new(ErrorCode::InternalError, "server is shutting down");
        return refuse(&state, StatusCode::SERVICE_UNAVAILABLE, e);
    }
    state
        .metrics
        .ratelimit_checks
        .with_label_values(&["connections"])
        .inc();
    if let Some(wait) = state.connects.check(&client_ip(&state, peer, &headers)) {
        state
            .metrics
            .ratelimit_rejections
            .with_label_values(&["connections", "-"])
            .inc();
        let mut e = ErrorBody::new(ErrorCode::RateLimitExceeded, "");
        let secs = wait.as_secs_f64().ceil().max(1.0) as u64;
        e.retry_after_ms = Some(wait.as_millis().max(1) as u64);
        let mut response = refuse(&state, StatusCode::TOO_MANY_REQUESTS, e);
        if let Ok(v) = secs.to_string().parse() {
            response.headers_mut().insert(header::RETRY_AFTER, v);
        }
        return response;
    }
    let (app, identity) = match authenticate(&state, &params, &headers) {
        Ok(found) => found,
        Err(e) => return refuse(&state, StatusCode::UNAUTHORIZED, e),
    };
    let key = match headers.get(header::SEC_WEBSOCKET_KEY) {
        Some(key) if is_websocket_upgrade(&headers) => key.clone(),
        _ => {
            let e = ErrorBody::new(
                ErrorCode::RealtimeInvalidChannelRequest,
                "expected a WebSocket upgrade (version 13)",
            );
            return refuse(&state, StatusCode::BAD_REQUEST, e);
        }
    };
    let on_upgrade = hyper::upgrade::on(&mut request);
    let hard_limit = state.config.max_frame_bytes * 4;
    // tungstenite allocates its read buffer up front: 128 KiB by default,
    // which would make every idle connection cost that much. Frames are
    // small; the buffer grows for the rare large one. (Idle RSS per
    // connection, release build: 1.2 MB at the default, 13 KB at 4 KiB,
    // 10 KB at 1 KiB; see docs/benchmarks.md.)
    let config = WebSocketConfig::default()
        .read_buffer_size(1024)
        .write_buffer_size(16 * 1024)
        .max_message_size(Some(hard_limit))
        .max_frame_size(Some(hard_limit));
    let task_state = Arc::clone(&state);
    state.connections.spawn(async move {
        match on_upgrade.await {
            Ok(upgraded) => {
                let ws = WebSocketStream::from_raw_socket(
                    TokioIo::new(upgraded),
                    Role::Server,
                    Some(config),
                )
                .await;
                connection::run(task_state, app, identity, ws).await;
            }
            Err(e) => tracing::debug!(error = %e, "upgrade failed"),
        }
    });
    Response::builder()
        .status(StatusCode::SWITCHING_PROTOCOLS)
        .header(header::CONNECTION, "upgrade")
        .header(header::UPGRADE, "websocket")
        .header(
            header::SEC_WEBSOCKET_ACCEPT,
            derive_accept_key(key.as_bytes()),
        )
        .body(Body::empty())
        .unwrap_or_else(|_| StatusCode::INTERNAL_SERVER_ERROR.into_response())
}
