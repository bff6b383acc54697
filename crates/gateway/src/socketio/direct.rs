//! Engine.IO over a WebSocket opened directly (`transport=websocket`
//! without a polling session first: what `@insforge/sdk` and most server
//! clients do), on Herald's own WebSocket stack, the one `/v1/ws` uses: a
//! 1 KiB read buffer, one reader task and one writer task that batches
//! frames into few writes. Sessions that start with long-polling (the stock
//! browser client's default) and upgrade are engineioxide's.
//!
//! Engine.IO here is small: the open packet, `4` message packets both ways,
//! a server `2` ping every `ping_interval_ms` answered by the client's `3`,
//! and `1` to close.

use super::connection::{
    connect_step, peer_ip, serve, Source, Step, CONNECT_TIMEOUT, MAX_CONNECT_ATTEMPTS,
};
use super::{packet, Inbound};
use crate::state::AppState;
use crate::ws::{accept, is_websocket_upgrade, text, within, Socket as Ws};
use axum::extract::Request;
use axum::http::{header, HeaderMap, Method, StatusCode};
use axum::response::{IntoResponse, Response};
use bytes::Bytes;
use engineioxide::Str;
use futures_util::stream::{SplitSink, SplitStream};
use futures_util::{SinkExt, StreamExt};
use herald_broker_node::outbound::Kick;
use herald_broker_node::Receiver;
use herald_protocol::server::DisconnectReason;
use std::sync::Arc;
use std::time::Duration;
use tokio::time::{sleep_until, timeout, Instant};
use tokio_tungstenite::tungstenite::{Error as WsError, Message, Utf8Bytes};

/// Frames the writer sends in one batch before it flushes.
const WRITE_BATCH: usize = 64;

/// Whether `request` opens an Engine.IO v4 session directly on a
/// WebSocket.
pub fn is_direct(request: &Request) -> bool {
    let query = request.uri().query().unwrap_or_default();
    let pairs = || query.split('&');
    request.method() == Method::GET
        && pairs().any(|p| p == "EIO=4")
        && pairs().any(|p| p == "transport=websocket")
        && !pairs().any(|p| p.starts_with("sid="))
        && is_websocket_upgrade(request.headers())
}

/// The upgrade (the session was admitted by `socketio::admit`).
pub fn upgrade(state: Arc<AppState>, request: Request) -> Response {
    let Some(key) = request.headers().get(header::SEC_WEBSOCKET_KEY).cloned() else {
        return StatusCode::BAD_REQUEST.into_response();
    };
    let (parts, body) = request.into_parts();
    let ip = peer_ip(&state, &parts);
    let headers = parts.headers.clone();
    let mut request = Request::from_parts(parts, body);
    accept(&state, &mut request, &key, move |state, ws| {
        run(state, ws, ip, headers)
    })
}

/// The Engine.IO timing a client is told in the open packet.
struct Timing {
    ping_every: Duration,
    /// How long to gather frames before a write (`write_delay_ms`).
    write_delay: Duration,
    /// How long past a ping a client may take to answer.
    ping_timeout: Duration,
    write_timeout: Duration,
}

fn timing(state: &AppState) -> Timing {
    Timing {
        ping_every: Duration::from_millis(state.config.ping_interval_ms),
        write_delay: Duration::from_millis(state.config.write_delay_ms),
        ping_timeout: Duration::from_millis(state.config.ping_interval_ms + 5_000),
        write_timeout: Duration::from_millis(state.config.write_timeout_ms),
    }
}

async fn run(state: Arc<AppState>, ws: Ws, ip: std::net::IpAddr, headers: HeaderMap) {
    let (mut sink, mut stream) = ws.split();
    let t = timing(&state);
    let open = format!(
        r#"0{{"sid":"{:016x}","upgrades":[],"pingInterval":{},"pingTimeout":{},"maxPayload":{}}}"#,
        rand::random::<u64>(),
        t.ping_every.as_millis(),
        t.ping_timeout.as_millis(),
        state.config.max_frame_bytes * 4,
    );
    if sink.send(Message::Text(open.into())).await.is_err() {
        return;
    }
    let admitted = Box::pin(handshake(&state, &mut sink, &mut stream, &headers)).await;
    drop(headers);
    let Some((app, identity)) = admitted else {
        let _ = timeout(Duration::from_secs(2), sink.close()).await;
        return;
    };
    let liveness = t.ping_every + t.ping_timeout;
    let source = move |kick| WsSource {
        stream,
        liveness,
        kick,
    };
    let writer = move |rx, kick| tokio::spawn(write_loop(sink, rx, kick, t));
    serve(state, app, identity, ip, source, writer).await;
}

/// Waits for the client's `CONNECT` to `/`; refusals go back as
/// `CONNECT_ERROR`s.
async fn handshake(
    state: &AppState,
    sink: &mut SplitSink<Ws, Message>,
    stream: &mut SplitStream<Ws>,
    headers: &HeaderMap,
) -> Option<(Arc<crate::auth::App>, crate::auth::Identity)> {
    let deadline = Instant::now() + CONNECT_TIMEOUT;
    let mut attempts = 0;
    loop {
        let message = tokio::select! {
            m = stream.next() => m?.ok()?,
            _ = sleep_until(deadline) => return None,
            _ = state.shutdown.cancelled() => return None,
        };
        let packet = match &message {
            Message::Text(t) => match t.as_str().strip_prefix('4') {
                Some(p) => p,
                None => continue,
            },
            Message::Close(_) => return None,
            _ => continue,
        };
        match connect_step(state, packet, headers).await {
            Step::Ignore => {}
            Step::Admit(app, identity) => return Some((app, identity)),
            Step::Refuse { packet, counts } => {
                sink.send(Message::Text(packet.into())).await.ok()?;
                attempts += usize::from(counts);
                if attempts >= MAX_CONNECT_ATTEMPTS {
                    return None;
                }
            }
        }
    }
}

/// A connected session's packets, read off the WebSocket.
struct WsSource {
    stream: SplitStream<Ws>,
    /// A client silent this long (it answers every ping) is gone.
    liveness: Duration,
    kick: Arc<Kick>,
}

impl Source for WsSource {
    async fn next(&mut self) -> Option<Inbound> {
        loop {
            let message = match timeout(self.liveness, self.stream.next()).await {
                Err(_) => {
                    self.kick.kick(DisconnectReason::NoPong);
                    return None;
                }
                Ok(Some(Ok(message))) => message,
                Ok(Some(Err(WsError::Capacity(_)))) => {
                    self.kick.kick(DisconnectReason::MessageTooBig);
                    return None;
                }
                Ok(_) => return None,
            };
            match message {
                Message::Text(t) => {
                    let bytes = Bytes::from(t);
                    match bytes.first() {
                        // SAFETY: the text was valid UTF-8 and `4` is one
                        // ASCII byte, so the rest is valid UTF-8.
                        Some(b'4') => {
                            let packet = unsafe { Str::from_bytes_unchecked(bytes.slice(1..)) };
                            return Some(Inbound::Text(packet));
                        }
                        Some(b'1') => return None,
                        // `3` (pong), `6` (noop): liveness only.
                        _ => {}
                    }
                }
                Message::Binary(_) => return Some(Inbound::Binary),
                Message::Close(_) => return None,
                _ => {}
            }
        }
    }
}

/// Drains the connection's queue to the WebSocket in batches, and pings
/// (`2`) on schedule. A write that cannot make progress within the write
/// timeout kicks the client as a slow consumer. When the connection is
/// kicked, what is queued goes first (but for a slow consumer), a token's
/// expiry ends the namespace (`DISCONNECT`), and the socket is closed.
async fn write_loop(
    mut sink: SplitSink<Ws, Message>,
    mut rx: Receiver,
    kick: Arc<Kick>,
    t: Timing,
) {
    let mut ping = tokio::time::interval_at(Instant::now() + t.ping_every, t.ping_every);
    let stalled = || WsError::Io(std::io::ErrorKind::TimedOut.into());
    let mut held = None;
    loop {
        let sent = tokio::select! {
            biased;
            _ = kick.kicked() => break,
            frame = rx.recv() => match frame {
                Some(frame) => {
                    // The frame waits in `held` until it is written: a kick during the
                    // delay leaves it there for the farewell.
                    held = Some(frame);
                    let batch = async {
                        // Frames queued during the delay go out with this
                        // one, in one write.
                        if !t.write_delay.is_zero() {
                            tokio::time::sleep(t.write_delay).await;
                        }
                        let mut next = held.take();
                        for _ in 0..WRITE_BATCH {
                            let Some(frame) = next.take().or_else(|| rx.try_recv()) else {
                                break;
                            };
                            within(t.write_timeout, sink.feed(text(frame))).await.ok_or_else(stalled)??;
                        }
                        within(t.write_timeout, sink.flush()).await.ok_or_else(stalled)?
                    };
                    tokio::select! {
                        r = batch => r,
                        _ = kick.kicked() => break,
                    }
                }
                None => {
                    let _ = timeout(Duration::from_secs(2), sink.close()).await;
                    return;
                }
            },
            _ = ping.tick() => within(t.write_timeout, sink.send(Message::Text(Utf8Bytes::from_static("2"))))
                .await
                .ok_or_else(stalled)
                .and_then(|r| r),
        };
        match sent {
            Ok(()) => {}
            Err(WsError::Io(e)) if e.kind() == std::io::ErrorKind::TimedOut => {
                kick.kick(DisconnectReason::SlowConsumer);
                break;
            }
            Err(_) => return,
        }
    }
    if let Some(reason) = kick.reason() {
        let farewell = async {
            if reason != DisconnectReason::SlowConsumer {
                while let Some(frame) = held.take().or_else(|| rx.try_recv()) {
                    sink.feed(text(frame)).await?;
                }
            }
            if reason == DisconnectReason::TokenExpired {
                sink.feed(Message::Text(Utf8Bytes::from_static(packet::DISCONNECT)))
                    .await?;
            }
            sink.send(Message::Close(None)).await
        };
        let _ = timeout(Duration::from_secs(2), farewell).await;
    }
}
