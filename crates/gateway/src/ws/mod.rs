//! The native WebSocket endpoint, `GET /v1/ws`.
//!
//! Credentials are checked before the upgrade (by [`crate::edge::admit`]):
//! a bad or expired token is answered with HTTP 401 and a JSON error, never
//! accepted and dropped. `connection.rs` is the transport (reader, writer,
//! liveness); `codec.rs` turns frames into realtime operations and their
//! outcomes into frames.
//! The upgrade itself is done here on hyper and tokio-tungstenite, so that
//! encoded frames go to the socket without another copy.

mod codec;
mod connection;

pub(crate) use connection::{text, within};

use crate::edge::{refuse_connection, Admitted};
use crate::listener::Slot;
use crate::state::AppState;
use axum::body::Body;
use axum::extract::{Request, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use herald_protocol::{ErrorBody, ErrorCode};
use hyper_util::rt::TokioIo;
use std::sync::Arc;
use tokio_tungstenite::tungstenite::handshake::derive_accept_key;
use tokio_tungstenite::tungstenite::protocol::{Role, WebSocketConfig};
use tokio_tungstenite::WebSocketStream;

pub(crate) fn is_websocket_upgrade(headers: &HeaderMap) -> bool {
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

/// The upgrade, for a connection [`crate::edge::admit`] let in.
pub async fn upgrade(
    State(state): State<Arc<AppState>>,
    headers: HeaderMap,
    mut request: Request,
) -> Response {
    // Taken, not cloned: admission put it there for this handler alone.
    let Some(Admitted { app, identity, ip }) = request.extensions_mut().remove::<Admitted>() else {
        let e = ErrorBody::new(ErrorCode::InternalError, "connection was not admitted");
        return refuse_connection(&state, StatusCode::INTERNAL_SERVER_ERROR, e);
    };
    let key = match headers.get(header::SEC_WEBSOCKET_KEY) {
        Some(key) if is_websocket_upgrade(&headers) => key.clone(),
        _ => {
            let e = ErrorBody::new(
                ErrorCode::RealtimeInvalidChannelRequest,
                "expected a WebSocket upgrade (version 13)",
            );
            return refuse_connection(&state, StatusCode::BAD_REQUEST, e);
        }
    };
    accept(&state, &mut request, &key, move |state, ws| {
        connection::run(state, app, identity, ip, ws)
    })
}

/// A WebSocket of Herald's: a 1 KiB read buffer that grows for the rare
/// large frame.
pub(crate) type Socket = WebSocketStream<TokioIo<hyper::upgrade::Upgraded>>;

/// Accepts the WebSocket upgrade of `request` (whose `Sec-WebSocket-Key`
/// is `key`) and runs `serve` on the socket as a connection task, which
/// keeps the connection's place under the caps while it lives; answers
/// `101`.
pub(crate) fn accept<F, Fut>(
    state: &Arc<AppState>,
    request: &mut Request,
    key: &axum::http::HeaderValue,
    serve: F,
) -> Response
where
    F: FnOnce(Arc<AppState>, Socket) -> Fut + Send + 'static,
    Fut: std::future::Future<Output = ()> + Send,
{
    let on_upgrade = hyper::upgrade::on(&mut *request);
    let slot = request.extensions_mut().remove::<Slot>();
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
    let task_state = Arc::clone(state);
    state.connections.spawn(async move {
        match on_upgrade.await {
            Ok(upgraded) => {
                let ws = WebSocketStream::from_raw_socket(
                    TokioIo::new(upgraded),
                    Role::Server,
                    Some(config),
                )
                .await;
                serve(task_state, ws).await;
                drop(slot);
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
