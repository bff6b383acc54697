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

/// Packets a client may have waiting to be handled; beyond them it is
/// flooding (the frame rate limit usually tells it first).
const INBOX: usize = 64;

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
            // anything it is told.
            self.state
                .metrics
                .disconnects
                .with_label_values(&["flood"])
                .inc();
            socket.close(DisconnectReason::TransportClose);
        }
    }
}

impl EngineIoHandler for Surface {
    type Data = SocketData;

    fn on_connect(self: Arc<Self>, socket: Arc<EioSocket>) {
        let (tx, rx) = mpsc::channel(INBOX);
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
    // the client sees (PAYLOAD_TOO_LARGE); far larger ones end the
    // session at the transport.
    let transport_max = (config.max_frame_bytes * 4).max(1_000_000);
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
