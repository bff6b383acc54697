//! The Socket.IO surface: `/socket.io/`, Engine.IO v4 / Socket.IO v5,
//! namespace `/`, WebSocket and HTTP long-polling with upgrade, speaking
//! InsForge Realtime's events (`docs/insforge.md`).
//!
//! A session opened directly on a WebSocket runs on Herald's own WebSocket
//! stack (`direct.rs`); one that starts with long-polling (and may upgrade)
//! runs on `engineioxide`, the Engine.IO layer of `socketioxide`. The Socket.IO layer above it is
//! this module's: Herald's fan-out hands every Socket.IO subscriber of a
//! channel the same encoded bytes and bounds each connection's queue in
//! bytes, and `socketioxide` offers neither (its `emit` serializes per
//! socket, its send of pre-encoded packets is private, and its rooms would
//! be a second broker beside `broker-node`). See `docs/architecture.md`.

mod codec;
mod connection;
mod direct;
mod packet;

pub use codec::{iso, SocketIo, SOCKETIO};
pub use connection::reserved;

use crate::edge::open_connection;
use crate::state::AppState;
use axum::extract::{ConnectInfo, Request, State};
use axum::middleware::Next;
use axum::response::Response;
use bytes::Bytes;
use engineioxide::config::EngineIoConfig;
use engineioxide::handler::EngineIoHandler;
use engineioxide::service::EngineIoService;
use engineioxide::{DisconnectReason, Str};
use parking_lot::Mutex;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::mpsc;

/// Where clients connect.
pub const PATH: &str = "/socket.io";

/// Packets a client may have waiting to be handled, at most: the frame
/// burst a connection is allowed (`connection_frames_burst`), at least 64,
/// at most 4,096 (a channel allocates in blocks of 32 as it fills, so an
/// idle client pays for none of it). Beyond it the client sends faster
/// than any limit lets it be served: it is disconnected as a flood.
fn inbox_capacity(state: &AppState) -> usize {
    (state.config.connection_frames_burst as usize).clamp(64, 4096)
}

/// Packets Engine.IO buffers for a client (between two polls, say); the
/// connection's own byte-bounded queue holds the rest.
const ENGINE_BUFFER: usize = 256;

pub type EioSocket = engineioxide::Socket<SocketData>;

/// What arrives from a client.
pub enum Inbound {
    Text(Str),
    Binary,
}

/// The surface's side of an Engine.IO session: where its packets go.
#[derive(Default)]
pub struct SocketData {
    inbox: Mutex<Option<mpsc::Sender<Inbound>>>,
    /// Set when the client overflowed its inbox (the session ends as a
    /// flood).
    flooded: std::sync::atomic::AtomicBool,
}

impl SocketData {
    /// Whether the client overflowed its inbox.
    pub fn flooded(&self) -> bool {
        self.flooded.load(std::sync::atomic::Ordering::Relaxed)
    }
}

/// The handler Engine.IO calls.
pub struct Surface {
    state: Arc<AppState>,
}

impl std::fmt::Debug for Surface {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("socketio::Surface")
    }
}

impl Surface {
    fn deliver(&self, socket: &EioSocket, inbound: Inbound) {
        let inbox = socket.data.inbox.lock().clone();
        let Some(inbox) = inbox else {
            return;
        };
        if let Err(mpsc::error::TrySendError::Full(_)) = inbox.try_send(inbound) {
            // Far past the frame rate limit: the client does not wait for
            // anything it is told. The session counts the disconnect.
            socket
                .data
                .flooded
                .store(true, std::sync::atomic::Ordering::Relaxed);
            socket.close(DisconnectReason::TransportClose);
        }
    }
}

impl EngineIoHandler for Surface {
    type Data = SocketData;

    fn on_connect(self: Arc<Self>, socket: Arc<EioSocket>) {
        let (tx, rx) = mpsc::channel(inbox_capacity(&self.state));
        *socket.data.inbox.lock() = Some(tx);
        let state = Arc::clone(&self.state);
        self.state
            .connections
            .spawn(connection::run(state, socket, rx));
    }

    fn on_disconnect(&self, socket: Arc<EioSocket>, _reason: DisconnectReason) {
        // The session sees its inbox end, and ends.
        socket.data.inbox.lock().take();
    }

    fn on_message(self: &Arc<Self>, msg: Str, socket: Arc<EioSocket>) {
        self.deliver(&socket, Inbound::Text(msg));
    }

    fn on_binary(self: &Arc<Self>, _data: Bytes, socket: Arc<EioSocket>) {
        self.deliver(&socket, Inbound::Binary);
    }
}

/// Everything this surface reads from a client's packet, as the fuzzer
/// feeds it hostile text: the packet, an ack id salvaged from it, the
/// request object, and the payload flattened as a delivery would be.
pub fn read_hostile(text: &str) {
    let _ = connection::salvage_ack(text);
    if let Ok(packet::Incoming::Event { args, .. }) = packet::parse(text) {
        for arg in args {
            connection::read_request(arg);
            codec::flatten(arg.get(), r#"{"m":1}"#);
        }
    }
}

/// Engine.IO's service for `/socket.io/`.
pub fn service(state: &Arc<AppState>) -> EngineIoService<Surface> {
    let config = &state.config;
    // Packets up to the frame limit are read and refused with an error
    // the client sees (PAYLOAD_TOO_LARGE); larger than four times that
    // end the session at the transport, as on `/v1/ws`.
    let transport_max = config.max_frame_bytes * 4;
    let engine = EngineIoConfig::builder()
        .req_path(PATH)
        .ping_interval(Duration::from_millis(config.ping_interval_ms))
        .ping_timeout(Duration::from_millis(config.ping_interval_ms + 5_000))
        .max_buffer_size(ENGINE_BUFFER)
        .max_payload(transport_max as u64)
        .ws_max_message_size(transport_max)
        .ws_max_frame_size(transport_max)
        .build();
    let surface = Arc::new(Surface {
        state: Arc::clone(state),
    });
    EngineIoService::with_config(surface, engine)
}

/// The routes of `/socket.io/`: direct WebSocket sessions here, the rest
/// (long-polling, upgrades) to engineioxide; every new session admitted
/// first.
pub fn routes(state: &Arc<AppState>) -> axum::Router<Arc<AppState>> {
    use axum::response::IntoResponse;
    use tower::ServiceExt;
    let engine = service(state);
    let entry = move |State(state): State<Arc<AppState>>, request: Request| {
        let engine = engine.clone();
        async move {
            if direct::is_direct(&request) {
                return direct::upgrade(state, request);
            }
            match engine.oneshot(request).await {
                Ok(response) => response.map(axum::body::Body::new),
                Err(never) => match never {},
            }
            .into_response()
        }
    };
    axum::Router::new()
        .route("/socket.io/", axum::routing::any(entry))
        .route_layer(axum::middleware::from_fn_with_state(
            Arc::clone(state),
            admit,
        ))
        .route_layer(axum::middleware::from_fn_with_state(
            Arc::clone(state),
            cors,
        ))
}

/// Whether some app may be connected to from `origin` (one without an
/// `allowed_origins` list, or one listing it).
fn origin_allowed_anywhere(state: &AppState, origin: &str) -> bool {
    let origin = origin.trim_end_matches('/');
    state.apps.iter().any(|app| {
        let allowed = &app.config.allowed_origins;
        allowed.is_empty() || allowed.iter().any(|a| a.trim_end_matches('/') == origin)
    })
}

/// CORS for browser pages on other origins: long-polling is plain HTTP, so
/// a page may read its answers only when they name its origin. The origin
/// is echoed where some app may be connected to from it; which app, and
/// whether that app allows the origin, is decided at `CONNECT`. Preflight
/// requests are answered here.
async fn cors(State(state): State<Arc<AppState>>, request: Request, next: Next) -> Response {
    use axum::http::{header, HeaderValue, Method, StatusCode};
    use axum::response::IntoResponse;
    let origin = request
        .headers()
        .get(header::ORIGIN)
        .filter(|o| o.to_str().is_ok_and(|o| origin_allowed_anywhere(&state, o)))
        .cloned();
    let preflight = request.method() == Method::OPTIONS;
    let asked_headers = request
        .headers()
        .get(header::ACCESS_CONTROL_REQUEST_HEADERS)
        .cloned();
    let mut response = if preflight {
        StatusCode::NO_CONTENT.into_response()
    } else {
        next.run(request).await
    };
    let headers = response.headers_mut();
    headers.append(header::VARY, HeaderValue::from_static("origin"));
    if let Some(origin) = origin {
        headers.insert(header::ACCESS_CONTROL_ALLOW_ORIGIN, origin);
        headers.insert(
            header::ACCESS_CONTROL_ALLOW_CREDENTIALS,
            HeaderValue::from_static("true"),
        );
        if preflight {
            headers.insert(
                header::ACCESS_CONTROL_ALLOW_METHODS,
                HeaderValue::from_static("GET, POST"),
            );
            headers.insert(
                header::ACCESS_CONTROL_ALLOW_HEADERS,
                asked_headers.unwrap_or(HeaderValue::from_static("content-type")),
            );
            headers.insert(
                header::ACCESS_CONTROL_MAX_AGE,
                HeaderValue::from_static("600"),
            );
        }
    }
    response
}

/// Admits a new Engine.IO session (a request without `sid`): refused with
/// 503 while shutting down and 429 past the per-IP connection rate, as
/// every surface. Credentials come later, in the Socket.IO `CONNECT`.
pub async fn admit(
    State(state): State<Arc<AppState>>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    request: Request,
    next: Next,
) -> Response {
    let opens = !request
        .uri()
        .query()
        .unwrap_or_default()
        .split('&')
        .any(|pair| pair.starts_with("sid="));
    if opens {
        if let Err(refused) = open_connection(&state, peer, request.headers()) {
            return *refused;
        }
    }
    next.run(request).await
}
