//! One Socket.IO client: the handshake's `CONNECT` and its `auth`, then
//! the client's events in order, answered as InsForge answers them
//! (`docs/insforge.md`), through the same realtime session rules as
//! `/v1/ws`.
//!
//! Two tasks per client: this one reads (requests are handled in order)
//! and a writer that drains the connection's bounded queue into Engine.IO.
//! Every frame this surface sends goes through that one queue, so a
//! subscribe's ack always precedes the messages that follow it.

use super::codec::{self, SOCKETIO};
use super::packet::{self, Incoming};
use super::{EioSocket, Inbound};
use crate::auth::{verify_user_token_fetching, App, Identity};
use crate::edge::{self, client_ip};
use crate::realtime::{capped, recovery, FloodGate, Gate, Session, Subscribed};
use crate::state::AppState;
use axum::extract::ConnectInfo;
use axum::http::HeaderMap;
use engineioxide::Str;
use herald_broker_node::outbound::Kick;
use herald_broker_node::{ConnId, EncodedFrame, Outbound, Receiver, Recovery};
use herald_protocol::client::ChannelRef;
use herald_protocol::server::DisconnectReason;
use herald_protocol::{now_ms, ErrorBody, ErrorCode, StreamPosition};
use serde::Deserialize;
use serde_json::json;
use serde_json::value::RawValue;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::mpsc;
use tokio::time::{sleep, sleep_until, Instant};
use tracing::Instrument;

/// How long a new Engine.IO session has to send its `CONNECT`.
pub(super) const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// Refused `CONNECT`s before the Engine.IO session is closed.
pub(super) const MAX_CONNECT_ATTEMPTS: usize = 3;
/// How often the writer retries when Engine.IO's own buffer is full (a
/// polling client between two polls).
const RETRY_FULL: Duration = Duration::from_millis(5);

/// Event names a client may not publish under: the surface's own, and
/// Socket.IO's reserved ones (a client that used them could spoof the
/// server or break its peers' delivery).
pub fn reserved(event: &str) -> bool {
    event.starts_with("realtime:")
        || event.starts_with("presence:")
        || matches!(
            event,
            "notification"
                | "connect"
                | "disconnect"
                | "disconnecting"
                | "connect_error"
                | "newListener"
                | "removeListener"
        )
}

/// The code a Socket.IO client sees for a refusal: InsForge's
/// `REALTIME_UNAUTHORIZED` for an authorization failure; every other
/// failure keeps its own code.
fn code(e: &ErrorBody) -> &'static str {
    match e.code {
        ErrorCode::Unauthorized | ErrorCode::InvalidToken | ErrorCode::ChannelNameMismatch => {
            "REALTIME_UNAUTHORIZED"
        }
        other => other.as_str(),
    }
}

fn error_json(channel: Option<&str>, e: &ErrorBody) -> String {
    let mut body = json!({ "code": code(e), "message": e.message });
    if let Some(channel) = channel {
        body["channel"] = json!(channel);
    }
    body.to_string()
}

/// The `auth` object of a `CONNECT`.
#[derive(Deserialize, Default)]
#[serde(rename_all = "camelCase")]
struct Auth {
    api_key: Option<String>,
    token: Option<String>,
}

/// Authenticates a `CONNECT`: an API key (the app's backend), an
/// anonymous key (`anon_…`), or a user JWT.
async fn authenticate(
    state: &AppState,
    auth: Option<&RawValue>,
) -> Result<(Arc<App>, Identity), ErrorBody> {
    let unauthorized = |m: &str| ErrorBody::new(ErrorCode::Unauthorized, m);
    let auth: Auth = match auth {
        Some(raw) => serde_json::from_str(raw.get())
            .map_err(|_| unauthorized("auth must be an object with apiKey or token"))?,
        None => Auth::default(),
    };
    let trimmed = |s: Option<String>| s.map(|s| s.trim().to_owned());
    if let Some(key) = trimmed(auth.api_key) {
        return state
            .apps
            .by_api_key(&key)
            .map(|app| (Arc::clone(app), Identity::System))
            .ok_or_else(|| unauthorized("invalid API key"));
    }
    match trimmed(auth.token) {
        Some(token) if token.starts_with("anon_") => state
            .apps
            .by_anon_key(&token)
            .map(|app| (Arc::clone(app), Identity::Anonymous))
            .ok_or_else(|| unauthorized("invalid anonymous key")),
        Some(token) => verify_user_token_fetching(&state.apps, &token).await,
        None => Err(unauthorized(
            "authentication required: auth.token (a user JWT or anon_ key) or auth.apiKey",
        )),
    }
}

/// The message a refused `CONNECT` carries (the code is in `data.code`).
fn connect_message(e: &ErrorBody) -> String {
    match e.code {
        ErrorCode::TokenExpired => "token expired".to_owned(),
        ErrorCode::InvalidToken => "invalid token".to_owned(),
        _ if e.message.is_empty() => "unauthorized".to_owned(),
        _ => e.message.clone(),
    }
}

/// What a packet received before the session is connected leads to.
pub(super) enum Step {
    /// Not a `CONNECT` to `/`: ignored.
    Ignore,
    /// A refusal to send (`CONNECT_ERROR`); `counts` when it was a refused
    /// `CONNECT` to `/` (three end the session).
    Refuse {
        packet: String,
        counts: bool,
    },
    Admit(Arc<App>, Identity),
}

/// Reads one packet of a session not yet connected: a `CONNECT` to `/` is
/// authenticated (and its origin checked); refusals are `CONNECT_ERROR`s
/// with `data.code`.
pub(super) async fn connect_step(state: &AppState, text: &str, headers: &HeaderMap) -> Step {
    let Ok(Incoming::Connect { namespace, auth }) = packet::parse(text) else {
        return Step::Ignore;
    };
    if namespace != "/" {
        return Step::Refuse {
            packet: packet::connect_error(namespace, "Invalid namespace", "INVALID_NAMESPACE"),
            counts: false,
        };
    }
    let admitted = authenticate(state, auth).await.and_then(|(app, identity)| {
        edge::check_origin(&app, headers)?;
        Ok((app, identity))
    });
    match admitted {
        Ok((app, identity)) => Step::Admit(app, identity),
        Err(e) => {
            state
                .metrics
                .connections_refused
                .with_label_values(&[e.code.as_str()])
                .inc();
            Step::Refuse {
                packet: packet::connect_error("/", &connect_message(&e), e.code.as_str()),
                counts: true,
            }
        }
    }
}

/// Where a connected session's packets come from.
pub(super) trait Source {
    /// The next packet (a Socket.IO packet, without Engine.IO's framing);
    /// `None` when the transport ended.
    fn next(&mut self) -> impl std::future::Future<Output = Option<Inbound>> + Send;
}

/// An engineioxide session's packets, as its handler queued them.
struct EngineSource {
    inbox: mpsc::Receiver<Inbound>,
    socket: Arc<EioSocket>,
    kick: Arc<Kick>,
}

impl Source for EngineSource {
    async fn next(&mut self) -> Option<Inbound> {
        let next = self.inbox.recv().await;
        if next.is_none() && self.socket.data.flooded() {
            self.kick.kick(DisconnectReason::Flood);
        }
        next
    }
}

/// The client's address, as admission reads it.
pub(super) fn peer_ip(state: &AppState, parts: &axum::http::request::Parts) -> IpAddr {
    let peer = parts
        .extensions
        .get::<ConnectInfo<SocketAddr>>()
        .map_or(SocketAddr::from(([127, 0, 0, 1], 0)), |c| c.0);
    client_ip(state, peer, &parts.headers)
}

/// Runs one session of Engine.IO (engineioxide's) from its handshake to
/// its end.
pub async fn run(state: Arc<AppState>, socket: Arc<EioSocket>, mut inbox: mpsc::Receiver<Inbound>) {
    let admitted = Box::pin(handshake(&state, &socket, &mut inbox)).await;
    let Some((app, identity)) = admitted else {
        socket.close(engineioxide::DisconnectReason::TransportClose);
        return;
    };
    let ip = peer_ip(&state, &socket.req_parts);
    let write_timeout = Duration::from_millis(state.config.write_timeout_ms);
    let writer_socket = Arc::clone(&socket);
    let spawn_writer =
        move |rx, kick| tokio::spawn(write_loop(writer_socket, rx, kick, write_timeout));
    let source_socket = Arc::clone(&socket);
    let source = move |kick| EngineSource {
        inbox,
        socket: source_socket,
        kick,
    };
    serve(state, app, identity, ip, source, spawn_writer).await;
    socket.close(engineioxide::DisconnectReason::TransportClose);
}

/// A connected session, whatever its transport: the connection's queue,
/// its writer (made by `spawn_writer`), and its requests read from
/// `source` in order.
pub(super) async fn serve<S: Source>(
    state: Arc<AppState>,
    app: Arc<App>,
    identity: Identity,
    ip: IpAddr,
    make_source: impl FnOnce(Arc<Kick>) -> S,
    spawn_writer: impl FnOnce(Receiver, Arc<Kick>) -> tokio::task::JoinHandle<()>,
) {
    let sid = format!("{:016x}", rand::random::<u64>());
    let conn = ConnId::new(state.next_conn(), sid);
    let span = tracing::info_span!("socketio", connection_id = %conn, app = app.id());
    async move {
        state.connection_opened();
        let (outbound, rx, kick) = Outbound::bounded(
            state.config.outbound_queue_frames,
            state.config.outbound_queue_bytes,
            &SOCKETIO,
        );
        outbound.offer(frame(packet::connected(conn.as_str())));
        let mut writer = spawn_writer(rx, Arc::clone(&kick));
        let mut source = make_source(Arc::clone(&kick));
        let mut session = Session::new(
            Arc::clone(&state),
            app,
            identity,
            conn,
            outbound,
            "socketio",
            ip,
        );
        let mut writer_done = false;
        read_loop(
            &state,
            &mut session,
            &mut source,
            &kick,
            &mut writer,
            &mut writer_done,
        )
        .await;
        Box::pin(session.close()).await;
        drop(session);
        state
            .connection_ended(&kick, &mut writer, writer_done, Duration::from_secs(4))
            .await;
    }
    .instrument(span)
    .await
}

/// Waits for the client's `CONNECT` to `/` and authenticates it. `None`
/// ends the session.
async fn handshake(
    state: &AppState,
    socket: &EioSocket,
    inbox: &mut mpsc::Receiver<Inbound>,
) -> Option<(Arc<App>, Identity)> {
    let deadline = Instant::now() + CONNECT_TIMEOUT;
    let mut attempts = 0;
    loop {
        let inbound = tokio::select! {
            inbound = inbox.recv() => inbound?,
            _ = sleep_until(deadline) => return None,
            _ = state.shutdown.cancelled() => return None,
        };
        let Inbound::Text(text) = inbound else {
            continue;
        };
        match connect_step(state, &text, &socket.req_parts.headers).await {
            Step::Ignore => {}
            Step::Admit(app, identity) => return Some((app, identity)),
            Step::Refuse { packet, counts } => {
                // Engine.IO adds the message packet's `4` itself.
                let _ = socket.emit(packet[1..].to_owned());
                attempts += usize::from(counts);
                if attempts >= MAX_CONNECT_ATTEMPTS {
                    // Let the refusal reach a polling client before the
                    // session goes.
                    sleep(Duration::from_millis(200)).await;
                    return None;
                }
            }
        }
    }
}

fn frame(text: String) -> EncodedFrame {
    EncodedFrame::from_string(text)
}

async fn read_loop<S: Source>(
    state: &AppState,
    session: &mut Session,
    source: &mut S,
    kick: &Kick,
    writer: &mut tokio::task::JoinHandle<()>,
    writer_done: &mut bool,
) {
    let mut flood = FloodGate::new(state);
    let mut definitions = session.definition_watch();
    loop {
        let expiry = session.expiry();
        let inbound = tokio::select! {
            _ = kick.kicked() => return,
            Ok(()) = crate::definitions::changed(&mut definitions) => {
                for (channel, e) in Box::pin(session.drop_undefined()).await {
                    answer_error(session, None, Some(&channel), &e);
                }
                continue;
            }
            _ = state.shutdown.cancelled() => {
                let notice = json!({
                    "level": "warning",
                    "title": "Server Shutdown",
                    "message": "This server is shutting down; reconnect to continue",
                    "meta": { "timestamp": codec::iso(now_ms()) },
                });
                session.outbound().offer(frame(packet::event("notification", &notice.to_string())));
                kick.kick(DisconnectReason::Shutdown);
                return;
            }
            _ = sleep_until(expiry) => {
                let e = ErrorBody::new(ErrorCode::TokenExpired, "the user token expired");
                session.outbound().offer(frame(packet::event("realtime:error", &error_json(None, &e))));
                kick.kick(DisconnectReason::TokenExpired);
                return;
            }
            _ = &mut *writer => {
                *writer_done = true;
                return;
            }
            inbound = source.next() => inbound,
        };
        let Some(inbound) = inbound else {
            return;
        };
        match flood.check(state, session.app_id()) {
            Gate::Pass => {}
            Gate::Refuse(e) => {
                let ack = match &inbound {
                    Inbound::Text(t) => salvage_ack(t),
                    Inbound::Binary => None,
                };
                answer_error(session, ack, None, &e);
                continue;
            }
            Gate::Drop => continue,
            Gate::Disconnect => {
                kick.kick(DisconnectReason::Flood);
                return;
            }
        }
        match inbound {
            Inbound::Text(text) => {
                if Box::pin(handle(session, &text)).await == Flow::End {
                    return;
                }
            }
            Inbound::Binary => {
                let e = ErrorBody::new(
                    ErrorCode::RealtimeInvalidChannelRequest,
                    "binary attachments are not supported; send JSON",
                );
                answer_error(session, None, None, &e);
            }
        }
    }
}

#[derive(PartialEq, Eq)]
enum Flow {
    Go,
    End,
}

/// The ack id of a packet too large or too frequent to be read whole.
pub(super) fn salvage_ack(text: &str) -> Option<u64> {
    let head = text.get(..text.len().min(32)).unwrap_or_default();
    let rest = head.strip_prefix('2')?;
    let rest = match rest.strip_prefix('/') {
        Some(r) => &r[r.find(',')? + 1..],
        None => rest,
    };
    let digits: String = rest.chars().take_while(char::is_ascii_digit).collect();
    digits.parse().ok()
}

/// A failure: answered on the client's ack when it passed one, else as a
/// `realtime:error` event.
fn answer_error(session: &Session, ack: Option<u64>, channel: Option<&str>, e: &ErrorBody) {
    session.state().metrics.error(e.code);
    tell(session, ack, channel, e);
}

fn tell(session: &Session, ack: Option<u64>, channel: Option<&str>, e: &ErrorBody) {
    let text = match ack {
        Some(id) => {
            let mut body = json!({
                "ok": false,
                "error": { "code": code(e), "message": e.message },
            });
            if let Some(channel) = channel {
                body["channel"] = json!(channel);
            }
            packet::ack(id, &body.to_string())
        }
        None => packet::event("realtime:error", &error_json(channel, e)),
    };
    session.outbound().offer(frame(text));
}

/// The first argument of `realtime:subscribe` / `unsubscribe` / `publish`.
#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct Request {
    channel: Option<serde_json::Value>,
    event: Option<serde_json::Value>,
    payload: Option<Box<RawValue>>,
    /// Herald's addition to `realtime:subscribe`: recover everything after
    /// this position (a delivered message's `meta.epoch` and `meta.offset`).
    since: Option<StreamPosition>,
    /// Herald's addition: replay the last seconds of the channel.
    replay_seconds: Option<u64>,
}

fn invalid(message: impl Into<String>) -> ErrorBody {
    ErrorBody::new(ErrorCode::RealtimeInvalidChannelRequest, message)
}

/// Reads one request argument the way the handlers do (for the fuzzer).
pub(super) fn read_request(arg: &RawValue) {
    let _ = request(&[arg]);
}

/// Reads a request's object; the channel it names, when it names one.
fn request(args: &[&RawValue]) -> Result<(Request, String), (ErrorBody, Option<String>)> {
    let Some(first) = args.first() else {
        return Err((invalid("the request needs an object: {channel, ...}"), None));
    };
    let request: Request = serde_json::from_str(first.get()).map_err(|_| {
        (
            invalid("the request must be an object: {channel, ...}"),
            None,
        )
    })?;
    let channel = match &request.channel {
        Some(serde_json::Value::String(c)) if !c.is_empty() => c.clone(),
        Some(_) => return Err((invalid("`channel` must be a non-empty string"), None)),
        None => return Err((invalid("`channel` is required"), None)),
    };
    Ok((request, channel))
}

fn global(channel: &str) -> ChannelRef {
    ChannelRef {
        channel: channel.to_owned(),
        global: true,
        token: None,
        context_overrides: None,
    }
}

async fn handle(session: &mut Session, text: &str) -> Flow {
    let max = session.state().config.max_frame_bytes;
    if text.len() > max {
        let e = ErrorBody::new(
            ErrorCode::PayloadTooLarge,
            format!("packet is {} bytes; at most {max} allowed", text.len()),
        );
        answer_error(session, salvage_ack(text), None, &e);
        return Flow::Go;
    }
    let (ack, name, args) = match packet::parse(text) {
        Ok(Incoming::Event {
            namespace: "/",
            ack,
            name,
            args,
        }) => (ack, name, args),
        Ok(Incoming::Event { .. }) | Ok(Incoming::Ack) => return Flow::Go,
        Ok(Incoming::Connect { namespace: "/", .. }) => return Flow::Go,
        Ok(Incoming::Connect { namespace, .. }) => {
            let refusal =
                packet::connect_error(namespace, "Invalid namespace", "INVALID_NAMESPACE");
            session.outbound().offer(frame(refusal));
            return Flow::Go;
        }
        Ok(Incoming::Disconnect { namespace }) => {
            return if namespace == "/" {
                Flow::End
            } else {
                Flow::Go
            };
        }
        Err(m) => {
            answer_error(session, m.ack, None, &invalid(m.why));
            return Flow::Go;
        }
    };
    let (request, channel) = match name.as_str() {
        "realtime:subscribe" | "realtime:unsubscribe" | "realtime:publish" => {
            match request(&args) {
                Ok(found) => found,
                Err((e, channel)) => {
                    answer_error(session, ack, channel.as_deref(), &e);
                    return Flow::Go;
                }
            }
        }
        other => {
            let e = ErrorBody::new(
                ErrorCode::RealtimeInvalidEvent,
                if reserved(other) {
                    format!("`{other}` is reserved")
                } else {
                    format!(
                        "unknown event `{other}`; send realtime:subscribe, realtime:unsubscribe or realtime:publish"
                    )
                },
            );
            answer_error(session, ack, None, &e);
            return Flow::Go;
        }
    };
    match name.as_str() {
        "realtime:subscribe" => {
            let wanted = recovery(request.since, request.replay_seconds);
            subscribe(session, ack, &channel, wanted).await
        }
        "realtime:unsubscribe" => {
            if let Err(e) = session.unsubscribe(&global(&channel)).await {
                // Unsubscribing what is not subscribed is no failure here:
                // InsForge answers nothing either way.
                if e.code != ErrorCode::RealtimeNotSubscribed {
                    answer_error(session, ack, Some(&channel), &e);
                    return Flow::Go;
                }
            }
            if let Some(id) = ack {
                let body = json!({ "ok": true, "channel": channel });
                session
                    .outbound()
                    .offer(frame(packet::ack(id, &body.to_string())));
            }
        }
        _ => publish(session, ack, &channel, request).await,
    }
    Flow::Go
}

/// `realtime:subscribe`: acked with the members (the subscriber among
/// them) and the channel's position; with `since` or `replaySeconds`, also
/// whether everything asked for was recovered and the replayed messages,
/// oldest first (live messages follow the ack). A refused subscribe also
/// ends a subscription the socket held to that channel: it never keeps
/// receiving what it was just refused.
async fn subscribe(session: &mut Session, ack: Option<u64>, channel: &str, wanted: Recovery) {
    let max_members = session.state().config.max_presence_members;
    let render = |s: Subscribed<'_>| {
        ack.map(|id| {
            let outcome = s.outcome;
            let members = capped(outcome.members.clone(), max_members);
            let members: Vec<_> = members.members.iter().map(codec::member).collect();
            let mut body = json!({
                "ok": true,
                "channel": s.channel.channel,
                "presence": { "members": members },
                "epoch": outcome.position.epoch,
                "offset": outcome.position.offset,
            });
            if let Some(recovered) = outcome.recovered {
                body["recovered"] = json!(recovered);
            }
            if !outcome.publications.is_empty() {
                let replayed: Vec<_> = outcome
                    .publications
                    .iter()
                    .map(|p| {
                        let position = StreamPosition {
                            epoch: outcome.position.epoch.clone(),
                            offset: p.offset,
                        };
                        let message = codec::message(s.key, &p.publication, &position);
                        // Written by the codec: valid JSON.
                        let message: serde_json::Value =
                            serde_json::from_str(&message).unwrap_or_default();
                        json!({ "event": p.publication.event, "message": message })
                    })
                    .collect();
                body["publications"] = json!(replayed);
            }
            frame(packet::ack(id, &body.to_string()))
        })
    };
    let target = global(channel);
    if let Err(e) = session.subscribe(&target, wanted, render).await {
        // Refused (not authorized, no definition): a subscription the
        // socket held ends too. A rate limit or an internal failure says
        // "not now", and leaves a working subscription be.
        let transient = matches!(
            e.code,
            ErrorCode::RateLimitExceeded | ErrorCode::InternalError
        );
        if !transient && session.holds(channel, true) {
            let _ = session.unsubscribe(&target).await;
        }
        answer_error(session, ack, Some(channel), &e);
    }
}

/// `realtime:publish`: the socket must hold a subscription to the channel;
/// the publisher receives its own message. Acked `{ok, messageId}` when
/// the client passed a callback; a failure is always a `realtime:error`.
async fn publish(session: &mut Session, ack: Option<u64>, channel: &str, request: Request) {
    let refuse = |session: &Session, e: ErrorBody| {
        if ack.is_some() {
            tell(session, ack, Some(channel), &e);
        }
        answer_error(session, None, Some(channel), &e);
    };
    let event = match request.event {
        Some(serde_json::Value::String(e)) if !e.is_empty() => e,
        Some(_) => return refuse(session, invalid("`event` must be a non-empty string")),
        None => return refuse(session, invalid("`event` is required")),
    };
    if reserved(&event) {
        let e = ErrorBody::new(
            ErrorCode::RealtimeInvalidEvent,
            format!("`{event}` is reserved and cannot be published"),
        );
        return refuse(session, e);
    }
    let Some(payload) = request.payload else {
        return refuse(session, invalid("`payload` is required"));
    };
    if !session.holds(channel, true) {
        let e = ErrorBody::new(
            ErrorCode::RealtimeNotSubscribed,
            format!("subscribe to `{channel}` before publishing on it"),
        );
        return refuse(session, e);
    }
    match session
        .publish(&global(channel), Some(event), payload, None)
        .await
    {
        Ok(accepted) => {
            if let Some(id) = ack {
                let body = json!({ "ok": true, "messageId": accepted.event_id });
                session
                    .outbound()
                    .offer(frame(packet::ack(id, &body.to_string())));
            }
        }
        Err(e) => refuse(session, e),
    }
}

/// Drains the connection's queue into Engine.IO. A client that does not
/// take its frames within the write timeout (Engine.IO's buffer stays
/// full) is kicked as a slow consumer; when the connection is kicked, what
/// is queued goes out first (but for a slow consumer), then a token's
/// expiry ends the namespace (`DISCONNECT`: the client does not reconnect
/// with the same token on its own).
async fn write_loop(socket: Arc<EioSocket>, mut rx: Receiver, kick: Arc<Kick>, limit: Duration) {
    loop {
        let frame = tokio::select! {
            biased;
            _ = kick.kicked() => break,
            frame = rx.recv() => frame,
        };
        let Some(frame) = frame else {
            return;
        };
        if !emit(&socket, frame, limit, &kick).await {
            if kick.reason().is_none() {
                kick.kick(DisconnectReason::SlowConsumer);
            }
            return;
        }
    }
    let Some(reason) = kick.reason() else {
        return;
    };
    if reason != DisconnectReason::SlowConsumer {
        while let Some(frame) = rx.try_recv() {
            if !emit(&socket, frame, Duration::from_secs(1), &Kick::default()).await {
                return;
            }
        }
    }
    if reason == DisconnectReason::TokenExpired {
        let _ = socket.emit(&packet::DISCONNECT[1..]);
    }
    // Give a polling client its last frames before the session goes.
    sleep(Duration::from_millis(100)).await;
}

/// Hands one frame to Engine.IO, waiting (up to `limit`) while its buffer
/// is full. `false` when the client could not take it.
async fn emit(socket: &EioSocket, frame: EncodedFrame, limit: Duration, kick: &Kick) -> bool {
    // Frames carry Engine.IO's message type (`4`); engineioxide adds its
    // own. SAFETY: an `EncodedFrame` is only ever made from a `String`, and
    // its first byte is the ASCII `4`, so the rest is valid UTF-8.
    let mut text = unsafe { Str::from_bytes_unchecked(frame.into_bytes().slice(1..)) };
    let deadline = Instant::now() + limit;
    loop {
        match socket.emit(text) {
            Ok(()) => return true,
            Err(mpsc::error::TrySendError::Closed(_)) => return false,
            Err(mpsc::error::TrySendError::Full(back)) => {
                if Instant::now() >= deadline || kick.reason().is_some() {
                    return false;
                }
                text = back;
                sleep(RETRY_FULL).await;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A Socket.IO session on an embedded node with a store, without a
    /// transport: no reader applies definition changes, so what a
    /// re-subscribe does is seen alone.
    async fn session_with_store() -> (Session, Receiver, Arc<AppState>, herald_store::Store) {
        use crate::config::{AppConfig, Config};
        let app = AppConfig {
            id: "a1".into(),
            api_keys: vec!["key-a1".into()],
            ops_per_second: 0,
            ..AppConfig::default()
        };
        let config = Config {
            apps: vec![app],
            ..Config::default()
        };
        let store = herald_store::Store::memory().await.unwrap();
        let node = herald_broker_node::Node::embedded("n1");
        let state = AppState::new(config, node, "127.0.0.1:0".into(), Some(store.clone())).unwrap();
        let (outbound, rx, _kick) = Outbound::new(256, &SOCKETIO);
        let app = Arc::clone(state.apps.get("a1").unwrap());
        let ip = std::net::Ipv4Addr::LOCALHOST.into();
        let conn = ConnId::new(1, "s1");
        let session = Session::new(
            Arc::clone(&state),
            app,
            Identity::System,
            conn,
            outbound,
            "socketio",
            ip,
        );
        (session, rx, state, store)
    }

    #[tokio::test]
    async fn a_denied_re_subscribe_ends_the_subscription() {
        let (mut session, mut rx, state, store) = session_with_store().await;
        let new = herald_store::NewDefinition {
            pattern: "room:%".into(),
            description: None,
            webhook_urls: vec![],
            enabled: true,
        };
        let def = store.create("a1", new).await.unwrap();
        state.definitions.refresh().await.unwrap();
        subscribe(&mut session, Some(1), "room:1", Recovery::None).await;
        assert!(session.holds("room:1", true));
        let ack = rx.try_recv().unwrap();
        assert!(ack.as_str().starts_with("431[") && ack.as_str().contains(r#""ok":true"#));

        // The definition is disabled; this session has not been told (no
        // reader here), and re-subscribes: refused, and unsubscribed.
        let off = herald_store::DefinitionChange {
            enabled: Some(false),
            ..Default::default()
        };
        store.update("a1", &def.id, off).await.unwrap();
        state.definitions.refresh().await.unwrap();
        subscribe(&mut session, Some(2), "room:1", Recovery::None).await;
        let refused = rx.try_recv().unwrap();
        assert!(
            refused.as_str().contains("REALTIME_CHANNEL_NOT_FOUND"),
            "{}",
            refused.as_str()
        );
        assert!(!session.holds("room:1", true));
        let key = herald_broker_node::ChannelKey::new(
            "a1",
            "room:1",
            &herald_broker_node::Scope::Global,
            None,
        )
        .unwrap();
        assert!(!state.node.is_subscribed(&key, session.conn()));
    }

    #[test]
    fn reserved_names_are_refused_and_others_pass() {
        for name in [
            "realtime:error",
            "realtime:publish",
            "presence:join",
            "presence:leave",
            "notification",
            "connect",
            "disconnect",
            "disconnecting",
            "connect_error",
            "newListener",
            "removeListener",
        ] {
            assert!(reserved(name), "{name}");
        }
        for name in ["message", "order.created", "chat", "connected", "realtime"] {
            assert!(!reserved(name), "{name}");
        }
    }

    #[test]
    fn ack_ids_are_found_without_reading_the_packet() {
        assert_eq!(salvage_ack(r#"27["realtime:publish",{"#), Some(7));
        assert_eq!(salvage_ack(r#"2/x,12["a"]"#), Some(12));
        assert_eq!(salvage_ack(r#"2["a"]"#), None);
        assert_eq!(salvage_ack("0"), None);
    }

    #[test]
    fn authorization_failures_carry_insforge_code() {
        let e = ErrorBody::new(ErrorCode::Unauthorized, "no");
        assert_eq!(code(&e), "REALTIME_UNAUTHORIZED");
        let e = ErrorBody::new(ErrorCode::RealtimeNotSubscribed, "no");
        assert_eq!(code(&e), "REALTIME_NOT_SUBSCRIBED");
        let v: serde_json::Value = serde_json::from_str(&error_json(Some("a"), &e)).unwrap();
        assert_eq!(v["channel"], "a");
        assert_eq!(v["code"], "REALTIME_NOT_SUBSCRIBED");
    }
}
