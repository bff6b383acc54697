//! One WebSocket connection: a reader (this task) that handles the client's
//! requests in order, and a writer task that drains the connection's bounded
//! queue to the socket in batches and sends pings.

use super::codec;
use crate::auth::{App, Identity};
use crate::realtime::{FloodGate, Gate, Session};
use crate::state::AppState;
use bytes::Bytes;
use futures_util::stream::{SplitSink, SplitStream};
use futures_util::{SinkExt, StreamExt};
use herald_broker_node::codec::Native;
use herald_broker_node::outbound::Kick;
use herald_broker_node::{ConnId, EncodedFrame, Outbound, Receiver, NATIVE};
use herald_protocol::client;
use herald_protocol::server::{Connected, DisconnectReason, ServerFrame};
use herald_protocol::{ErrorBody, ErrorCode};
use hyper::upgrade::Upgraded;
use hyper_util::rt::TokioIo;
use std::net::IpAddr;
use std::sync::Arc;
use std::time::Duration;
use tokio::time::{sleep_until, timeout, timeout_at, Instant};
use tokio_tungstenite::tungstenite::error::CapacityError;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::tungstenite::protocol::CloseFrame;
use tokio_tungstenite::tungstenite::{Error as WsError, Message, Utf8Bytes};
use tokio_tungstenite::WebSocketStream;
use tracing::Instrument;

type Socket = WebSocketStream<TokioIo<Upgraded>>;

/// Frames the writer sends in one batch before it flushes.
const WRITE_BATCH: usize = 64;
/// How long a closing connection gets to flush its farewell.
const FAREWELL_TIMEOUT: Duration = Duration::from_secs(2);

pub async fn run(state: Arc<AppState>, app: Arc<App>, identity: Identity, ip: IpAddr, ws: Socket) {
    let conn = ConnId::new(
        state.next_conn(),
        format!("c-{:016x}", rand::random::<u64>()),
    );
    let span = tracing::info_span!("connection", connection_id = %conn, app = app.id());
    async move {
        state.connection_opened();
        tracing::debug!(sender = ?identity.sender_type(), "connected");

        let (outbound, rx, kick) = Outbound::bounded(
            state.config.outbound_queue_frames,
            state.config.outbound_queue_bytes,
            &NATIVE,
        );
        let hello = ServerFrame::Connected(Connected {
            connection_id: conn.as_str().to_owned(),
            node: state.node.id().to_owned(),
            ping_interval: state.config.ping_interval_ms,
        });
        outbound.offer(Native::encode(&hello));

        let (sink, stream) = ws.split();
        let ping_every = Duration::from_millis(state.config.ping_interval_ms);
        let timing = Timing {
            ping_every,
            write_delay: Duration::from_millis(state.config.write_delay_ms),
            write_timeout: Duration::from_millis(state.config.write_timeout_ms),
        };
        let mut writer = tokio::spawn(write_loop(sink, rx, Arc::clone(&kick), timing));

        let mut session = Session::new(Arc::clone(&state), app, identity, conn, outbound, "ws", ip);
        let mut writer_done = false;
        read_loop(
            &state,
            &mut session,
            stream,
            &kick,
            &mut writer,
            &mut writer_done,
        )
        .await;
        Box::pin(session.close()).await;
        drop(session);

        state
            .connection_ended(&kick, &mut writer, writer_done, FAREWELL_TIMEOUT * 2)
            .await;
    }
    .instrument(span)
    .await
}

/// Waits for frames. Handling one is boxed: its future is far larger than
/// the wait, and an idle connection should only pay for the wait (the
/// reader task's state was ~4.3 KB per connection before).
async fn read_loop(
    state: &AppState,
    session: &mut Session,
    mut stream: SplitStream<Socket>,
    kick: &Kick,
    writer: &mut tokio::task::JoinHandle<()>,
    writer_done: &mut bool,
) {
    let liveness = Duration::from_millis(state.config.ping_interval_ms * 2 + 1000);
    let mut flood = FloodGate::new(state);
    let mut definitions = session.definition_watch();
    loop {
        let expiry = session.expiry();
        let frame = tokio::select! {
            _ = kick.kicked() => return,
            Ok(()) = crate::definitions::changed(&mut definitions) => {
                for (channel, e) in Box::pin(session.drop_undefined()).await {
                    Box::pin(codec::answer_error(session, None, Some(channel), e)).await;
                }
                continue;
            }
            _ = state.shutdown.cancelled() => {
                kick.kick(DisconnectReason::Shutdown);
                return;
            }
            _ = sleep_until(expiry) => {
                kick.kick(DisconnectReason::TokenExpired);
                return;
            }
            _ = &mut *writer => {
                *writer_done = true;
                return;
            }
            frame = timeout_at(Instant::now() + liveness, stream.next()) => frame,
        };
        match frame {
            Err(_) => {
                kick.kick(DisconnectReason::NoPong);
                return;
            }
            Ok(None) => return,
            Ok(Some(Ok(message))) if counts_toward_limit(&message) => {
                match flood.check(state, session.app_id()) {
                    Gate::Pass => Box::pin(handle_message(session, message)).await,
                    Gate::Refuse(e) => {
                        let id = match &message {
                            Message::Text(t) => client::salvage_id(t.as_str()),
                            _ => None,
                        };
                        Box::pin(codec::answer_error(session, id, None, e)).await;
                    }
                    Gate::Drop => {}
                    Gate::Disconnect => {
                        kick.kick(DisconnectReason::Flood);
                        return;
                    }
                }
            }
            Ok(Some(Ok(Message::Close(_)))) => return,
            Ok(Some(Ok(message))) => Box::pin(handle_message(session, message)).await,

            Ok(Some(Err(WsError::Capacity(CapacityError::MessageTooLong { .. })))) => {
                kick.kick(DisconnectReason::MessageTooBig);
                return;
            }
            Ok(Some(Err(e))) => {
                tracing::debug!(error = %e, "read failed");
                return;
            }
        }
    }
}

fn counts_toward_limit(message: &Message) -> bool {
    matches!(message, Message::Text(_) | Message::Binary(_))
}

async fn handle_message(session: &mut Session, message: Message) {
    match message {
        Message::Text(text) => codec::handle_text(session, text.as_str()).await,
        Message::Binary(_) => {
            let e = ErrorBody::new(
                ErrorCode::RealtimeInvalidChannelRequest,
                "binary frames are not supported; send JSON text frames",
            );
            codec::answer_error(session, None, None, e).await;
        }
        Message::Ping(_) | Message::Pong(_) | Message::Frame(_) | Message::Close(_) => {}
    }
}

/// The writer's clock.
struct Timing {
    ping_every: Duration,
    /// How long to gather frames before a write.
    write_delay: Duration,
    /// How long one write (a batch, or a ping) may take.
    write_timeout: Duration,
}

/// Drains the outbound queue to the socket, batching frames between
/// flushes, and pings on schedule. When the connection is kicked it sends
/// `disconnect` and a close frame with the same code. A write that takes
/// longer than the write timeout (a client that does not read) kicks the
/// connection as a slow consumer, whatever its reader is doing.
async fn write_loop(
    mut sink: SplitSink<Socket, Message>,
    mut rx: Receiver,
    kick: Arc<Kick>,
    timing: Timing,
) {
    let Timing {
        ping_every,
        write_delay,
        write_timeout,
    } = timing;
    let mut ping = tokio::time::interval_at(Instant::now() + ping_every, ping_every);
    let mut held = None;
    loop {
        let sent = tokio::select! {
            biased;
            _ = kick.kicked() => break,
            frame = rx.recv() => match frame {
                Some(frame) => {
                    // Batch what is already queued into one flush; a kick
                    // interrupts a flush the client is not reading.
                    // Each write must make progress within the write
                    // timeout: a client that reads, however slowly, is
                    // not cut off; one that stopped reading is.
                    let stalled = || WsError::Io(std::io::ErrorKind::TimedOut.into());
                    // The frame waits in `held` until it is written: a kick during the
                    // delay leaves it there for the farewell.
                    held = Some(frame);
                    let batch = async {
                        // Frames queued during the delay go out with this
                        // one, in one write.
                        if !write_delay.is_zero() {
                            tokio::time::sleep(write_delay).await;
                        }
                        let mut next = held.take();
                        for _ in 0..WRITE_BATCH {
                            let Some(frame) = next.take().or_else(|| rx.try_recv()) else {
                                break;
                            };
                            within(write_timeout, sink.feed(text(frame)))
                                .await
                                .ok_or_else(stalled)??;
                        }
                        within(write_timeout, sink.flush())
                            .await
                            .ok_or_else(stalled)?
                    };
                    tokio::select! {
                        r = batch => match r {
                            Err(WsError::Io(e)) if e.kind() == std::io::ErrorKind::TimedOut => {
                                kick.kick(DisconnectReason::SlowConsumer);
                                break;
                            }
                            r => r,
                        },
                        _ = kick.kicked() => break,
                    }
                }
                None => {
                    let _ = timeout(FAREWELL_TIMEOUT, sink.close()).await;
                    return;
                }
            },
            _ = ping.tick() => match timeout(write_timeout, sink.send(Message::Ping(Bytes::new()))).await {
                Ok(r) => r,
                Err(_) => {
                    kick.kick(DisconnectReason::SlowConsumer);
                    break;
                }
            },
        };
        if sent.is_err() {
            return;
        }
    }
    if let Some(reason) = kick.reason() {
        let farewell = async {
            // What was already queued goes first (replies, the last
            // events), except for a slow consumer, whose queue is the
            // problem.
            if reason != DisconnectReason::SlowConsumer {
                while let Some(frame) = held.take().or_else(|| rx.try_recv()) {
                    sink.feed(text(frame)).await?;
                }
            }
            let frame = Native::encode(&ServerFrame::Disconnect(reason.frame()));
            sink.feed(text(frame)).await?;
            sink.send(Message::Close(Some(CloseFrame {
                code: CloseCode::from(reason.code()),
                reason: Utf8Bytes::from_static(reason.reason()),
            })))
            .await
        };
        let _ = timeout(FAREWELL_TIMEOUT, farewell).await;
    }
}

/// `fut`'s output, or `None` if it does not complete within `limit`. A
/// future that is ready at once (most writes: the socket has room) costs
/// no timer: the clock is only started once it has to wait.
pub(crate) async fn within<T>(
    limit: Duration,
    fut: impl std::future::Future<Output = T>,
) -> Option<T> {
    use std::task::Poll;
    let mut fut = std::pin::pin!(fut);
    let first = std::future::poll_fn(|cx| {
        Poll::Ready(match fut.as_mut().poll(cx) {
            Poll::Ready(out) => Some(out),
            Poll::Pending => None,
        })
    })
    .await;
    match first {
        Some(out) => Some(out),
        None => timeout(limit, fut).await.ok(),
    }
}

pub(crate) fn text(frame: EncodedFrame) -> Message {
    // SAFETY: an `EncodedFrame` is only ever made from a `String`, so its
    // bytes are valid UTF-8.
    Message::Text(unsafe { Utf8Bytes::from_bytes_unchecked(frame.into_bytes()) })
}
