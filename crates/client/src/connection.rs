//! The connection task: connects, reconnects, resubscribes with `since`,
//! keeps each channel's position and recovers gaps.

use crate::types::{
    position_of, Error, Event, Member, Publication, PublishOptions, StreamPosition,
    SubscribeOptions,
};
use crate::ClientConfig;
use futures_util::stream::SplitSink;
use futures_util::{SinkExt, StreamExt};
use serde_json::{json, Value};
use std::collections::HashMap;
use std::time::Duration;
use tokio::net::TcpStream;
use tokio::sync::{mpsc, oneshot};
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};

type Socket = WebSocketStream<MaybeTlsStream<TcpStream>>;
type Answer = oneshot::Sender<Result<Value, Error>>;

pub(crate) enum Command {
    Request(Request, Answer),
    Close,
}

pub(crate) enum Request {
    Subscribe {
        channel: String,
        options: SubscribeOptions,
    },
    Unsubscribe {
        channel: String,
        global: bool,
    },
    Publish {
        channel: String,
        payload: Value,
        options: PublishOptions,
    },
    /// A frame built by the caller (presence, history).
    Raw(Value),
}

/// (channel name, global)
type Slot = (String, bool);

struct Channel {
    options: SubscribeOptions,
    position: Option<StreamPosition>,
    /// A resubscribe with `since` is in flight: live events wait for it.
    recovering: bool,
}

enum Pending {
    Subscribe(Answer, Slot, SubscribeOptions),
    Unsubscribe(Answer, Slot),
    Other(Answer),
    Resubscribe(Slot),
}

enum Ended {
    /// The application closed the client, or the server said not to return.
    Stop,
    Reconnect,
}

struct State {
    config: ClientConfig,
    commands: mpsc::UnboundedReceiver<Command>,
    events: mpsc::Sender<Event>,
    ready: Option<oneshot::Sender<Result<(), Error>>>,
    channels: HashMap<Slot, Channel>,
    /// Requests made while disconnected, sent on the next connection.
    queued: Vec<(Request, Answer)>,
}

pub(crate) async fn run(
    config: ClientConfig,
    commands: mpsc::UnboundedReceiver<Command>,
    events: mpsc::Sender<Event>,
    ready: oneshot::Sender<Result<(), Error>>,
) {
    let mut state = State {
        config,
        commands,
        events,
        ready: Some(ready),
        channels: HashMap::new(),
        queued: Vec::new(),
    };
    let mut attempt: u32 = 0;
    let mut next_url = 0;
    loop {
        let url = state.url(next_url);
        next_url += 1;
        match tokio_tungstenite::connect_async(&url).await {
            Ok((ws, _)) => {
                attempt = 0;
                match state.session(ws).await {
                    Ended::Stop => return state.stop(),
                    Ended::Reconnect => {}
                }
            }
            Err(tokio_tungstenite::tungstenite::Error::Http(response))
                if response.status() == 401 =>
            {
                let body = response
                    .body()
                    .as_ref()
                    .map(|b| String::from_utf8_lossy(b).into_owned())
                    .unwrap_or_default();
                if let Some(ready) = state.ready.take() {
                    let _ = ready.send(Err(Error::Refused(body)));
                    return;
                }
                // The token no longer works: coming back would not help.
                state
                    .emit(Event::Disconnected {
                        code: None,
                        reason: format!("refused: {body}"),
                        reconnect: false,
                    })
                    .await;
                return state.stop();
            }
            Err(e) => tracing::debug!(url, error = %e, "connect failed"),
        }
        attempt = attempt.saturating_add(1);
        if !state.wait(backoff(state.config.backoff, attempt)).await {
            return state.stop();
        }
    }
}

/// Full-jitter exponential backoff.
fn backoff((min, max): (Duration, Duration), attempt: u32) -> Duration {
    let ceiling = min.saturating_mul(1u32 << attempt.min(16)).min(max);
    let millis = ceiling.as_millis().max(1) as u64;
    Duration::from_millis(rand::random_range(
        min.as_millis() as u64..=millis.max(min.as_millis() as u64),
    ))
}

impl State {
    fn url(&self, n: usize) -> String {
        let base = &self.config.urls[n % self.config.urls.len()];
        match &self.config.token {
            Some(token) if base.contains('?') => format!("{base}&token={token}"),
            Some(token) => format!("{base}?token={token}"),
            None => base.clone(),
        }
    }

    async fn emit(&self, event: Event) {
        let _ = self.events.send(event).await;
    }

    /// Fails everything waiting; the client is done.
    fn stop(mut self) {
        for (_, answer) in self.queued.drain(..) {
            let _ = answer.send(Err(Error::Closed));
        }
        if let Some(ready) = self.ready.take() {
            let _ = ready.send(Err(Error::Closed));
        }
    }

    /// Sleeps before a reconnect, queueing requests meanwhile. False when
    /// the application closed the client.
    async fn wait(&mut self, pause: Duration) -> bool {
        let until = tokio::time::Instant::now() + pause;
        loop {
            tokio::select! {
                _ = tokio::time::sleep_until(until) => return true,
                command = self.commands.recv() => match command {
                    Some(Command::Request(request, answer)) => self.queued.push((request, answer)),
                    Some(Command::Close) | None => return false,
                },
            }
        }
    }

    async fn session(&mut self, ws: Socket) -> Ended {
        let (sink, mut stream) = ws.split();
        let mut conn = Conn {
            sink,
            pending: HashMap::new(),
            next_id: 1,
        };
        // The server speaks first.
        match tokio::time::timeout(Duration::from_secs(10), stream.next()).await {
            Ok(Some(Ok(Message::Text(t)))) => {
                let hello: Value = serde_json::from_str(t.as_str()).unwrap_or_default();
                self.emit(Event::Connected {
                    connection_id: hello["connectionId"]
                        .as_str()
                        .unwrap_or_default()
                        .to_owned(),
                    node: hello["node"].as_str().unwrap_or_default().to_owned(),
                })
                .await;
            }
            _ => return Ended::Reconnect,
        }
        if let Some(ready) = self.ready.take() {
            let _ = ready.send(Ok(()));
        }
        // Every channel we had, from where we were.
        let slots: Vec<Slot> = self.channels.keys().cloned().collect();
        for slot in slots {
            self.resubscribe(&mut conn, slot).await;
        }
        for (request, answer) in std::mem::take(&mut self.queued) {
            conn.send_request(request, answer).await;
        }
        let ended = loop {
            tokio::select! {
                command = self.commands.recv() => match command {
                    Some(Command::Request(request, answer)) => conn.send_request(request, answer).await,
                    Some(Command::Close) | None => {
                        let _ = conn.sink.send(Message::Close(None)).await;
                        break Ended::Stop;
                    }
                },
                message = stream.next() => match message {
                    Some(Ok(Message::Text(text))) => {
                        let frame: Value = match serde_json::from_str(text.as_str()) {
                            Ok(frame) => frame,
                            Err(e) => {
                                let start: String = text.as_str().chars().take(200).collect();
                                self.emit(Event::Unreadable { error: e.to_string(), frame: start }).await;
                                continue;
                            }
                        };
                        if let Some(ended) = self.handle(&mut conn, frame).await {
                            break ended;
                        }
                    }
                    Some(Ok(Message::Close(frame))) => {
                        self.emit(Event::Disconnected {
                            code: frame.as_ref().map(|f| u16::from(f.code)),
                            reason: frame.map(|f| f.reason.to_string()).unwrap_or_default(),
                            reconnect: true,
                        })
                        .await;
                        break Ended::Reconnect;
                    }
                    Some(Ok(_)) => {}
                    Some(Err(_)) | None => {
                        self.emit(Event::Disconnected { code: None, reason: "connection lost".into(), reconnect: true })
                            .await;
                        break Ended::Reconnect;
                    }
                },
            }
        };
        // Whatever was in flight will not be answered on this connection.
        for (_, pending) in conn.pending.drain() {
            match pending {
                Pending::Subscribe(answer, ..)
                | Pending::Unsubscribe(answer, _)
                | Pending::Other(answer) => {
                    let _ = answer.send(Err(Error::Disconnected));
                }
                Pending::Resubscribe(_) => {}
            }
        }
        for channel in self.channels.values_mut() {
            channel.recovering = false;
        }
        ended
    }

    async fn resubscribe(&mut self, conn: &mut Conn, slot: Slot) {
        let Some(channel) = self.channels.get_mut(&slot) else {
            return;
        };
        channel.recovering = true;
        let mut options = channel.options.clone();
        options.since = channel.position.clone();
        options.replay_seconds = None;
        let id = conn.id();
        let frame = subscribe_frame(id, &slot.0, &options);
        conn.pending.insert(id, Pending::Resubscribe(slot));
        conn.send(frame).await;
    }

    /// Handles one server frame; `Some` ends the session.
    async fn handle(&mut self, conn: &mut Conn, frame: Value) -> Option<Ended> {
        match frame["type"].as_str().unwrap_or_default() {
            "event" => {
                let Ok(publication) = serde_json::from_value::<Publication>(frame) else {
                    return None;
                };
                self.live(conn, publication).await;
            }
            "reply" => {
                let id = frame["id"].as_u64()?;
                let pending = conn.pending.remove(&id)?;
                self.reply(pending, frame).await;
            }
            kind @ ("presence:join" | "presence:leave") => {
                let channel = frame["channel"].as_str().unwrap_or_default().to_owned();
                let global = frame["global"].as_bool().unwrap_or(false);
                let Ok(member) = serde_json::from_value::<Member>(frame["member"].clone()) else {
                    return None;
                };
                let event = if kind == "presence:join" {
                    Event::Join {
                        channel,
                        global,
                        member,
                    }
                } else {
                    Event::Leave {
                        channel,
                        global,
                        member,
                    }
                };
                self.emit(event).await;
            }
            "disconnect" => {
                let reconnect = frame["reconnect"].as_bool().unwrap_or(true);
                self.emit(Event::Disconnected {
                    code: frame["code"].as_u64().map(|c| c as u16),
                    reason: frame["reason"].as_str().unwrap_or_default().to_owned(),
                    reconnect,
                })
                .await;
                return Some(if reconnect {
                    Ended::Reconnect
                } else {
                    Ended::Stop
                });
            }
            "error" => tracing::debug!(%frame, "error frame"),
            _ => {}
        }
        None
    }

    /// A live publication: delivered when it is the next offset, dropped
    /// when already seen, and a gap starts a recovery.
    async fn live(&mut self, conn: &mut Conn, publication: Publication) {
        let slot = (publication.channel.clone(), publication.global);
        let Some(channel) = self.channels.get_mut(&slot) else {
            return;
        };
        if channel.recovering {
            // The recovery reply covers it, or it follows the reply.
            return;
        }
        let meta = &publication.meta;
        match &channel.position {
            Some(p) if p.epoch == meta.epoch && meta.offset <= p.offset => return,
            Some(p) if p.epoch == meta.epoch && meta.offset == p.offset + 1 => {}
            None => {}
            Some(_) => {
                // A gap, or a stream that started over: ask for what is missing.
                return self.resubscribe(conn, slot).await;
            }
        }
        channel.position = Some(StreamPosition {
            epoch: meta.epoch.clone(),
            offset: meta.offset,
        });
        self.emit(Event::Publication(publication)).await;
    }

    async fn replayed(&mut self, slot: &Slot, reply: &Value) {
        let publications: Vec<Publication> =
            serde_json::from_value(reply["publications"].clone()).unwrap_or_default();
        let after = self.channels.get(slot).and_then(|c| c.position.clone());
        for p in publications {
            // Never hand out an offset twice.
            if let Some(after) = &after {
                if after.epoch == p.meta.epoch && p.meta.offset <= after.offset {
                    continue;
                }
            }
            self.emit(Event::Publication(p)).await;
        }
        if let Some(channel) = self.channels.get_mut(slot) {
            channel.position = Some(position_of(reply));
            channel.recovering = false;
        }
    }

    async fn reply(&mut self, pending: Pending, reply: Value) {
        let ok = reply["ok"].as_bool().unwrap_or(false);
        let error = || Error::Server {
            code: reply["error"]["code"]
                .as_str()
                .unwrap_or_default()
                .to_owned(),
            message: reply["error"]["message"]
                .as_str()
                .unwrap_or_default()
                .to_owned(),
        };
        match pending {
            Pending::Subscribe(answer, slot, options) => {
                if !ok {
                    let _ = answer.send(Err(error()));
                    return;
                }
                let mut options = options;
                options.since = None;
                options.replay_seconds = None;
                self.channels.insert(
                    slot.clone(),
                    Channel {
                        options,
                        position: None,
                        recovering: false,
                    },
                );
                self.replayed(&slot, &reply).await;
                let _ = answer.send(Ok(reply));
            }
            Pending::Unsubscribe(answer, slot) => {
                if ok {
                    self.channels.remove(&slot);
                }
                let _ = answer.send(if ok { Ok(reply) } else { Err(error()) });
            }
            Pending::Other(answer) => {
                let _ = answer.send(if ok { Ok(reply) } else { Err(error()) });
            }
            Pending::Resubscribe(slot) => {
                if !ok {
                    tracing::warn!(channel = slot.0, %reply, "resubscribe refused");
                    self.channels.remove(&slot);
                    self.emit(Event::Resubscribed {
                        channel: slot.0,
                        global: slot.1,
                        recovered: false,
                    })
                    .await;
                    return;
                }
                // Only the server's word counts as a recovery.
                let recovered = reply["recovered"].as_bool().unwrap_or(false);
                self.replayed(&slot, &reply).await;
                self.emit(Event::Resubscribed {
                    channel: slot.0,
                    global: slot.1,
                    recovered,
                })
                .await;
            }
        }
    }
}

struct Conn {
    sink: SplitSink<Socket, Message>,
    pending: HashMap<u64, Pending>,
    next_id: u64,
}

impl Conn {
    fn id(&mut self) -> u64 {
        let id = self.next_id;
        self.next_id += 1;
        id
    }

    async fn send(&mut self, frame: Value) {
        let _ = self
            .sink
            .send(Message::Text(frame.to_string().into()))
            .await;
    }

    async fn send_request(&mut self, request: Request, answer: Answer) {
        let id = self.id();
        let (frame, pending) = match request {
            Request::Subscribe { channel, options } => {
                let frame = subscribe_frame(id, &channel, &options);
                let slot = (channel, options.global);
                (frame, Pending::Subscribe(answer, slot, options))
            }
            Request::Unsubscribe { channel, global } => (
                json!({"id": id, "type": "unsubscribe", "channel": channel, "global": global}),
                Pending::Unsubscribe(answer, (channel, global)),
            ),
            Request::Publish {
                channel,
                payload,
                options,
            } => {
                let mut frame = json!({"id": id, "type": "publish", "channel": channel,
                                       "global": options.global, "payload": payload});
                if let Some(event) = options.event {
                    frame["event"] = event.into();
                }
                if let Some(token) = options.token {
                    frame["token"] = token.into();
                }
                if let Some(overrides) = options.context_overrides {
                    frame["contextOverrides"] = overrides.into();
                }
                if let Some(key) = options.idempotency_key {
                    frame["idempotencyKey"] = key.into();
                }
                (frame, Pending::Other(answer))
            }
            Request::Raw(mut frame) => {
                frame["id"] = id.into();
                (frame, Pending::Other(answer))
            }
        };
        self.pending.insert(id, pending);
        self.send(frame).await;
    }
}

fn subscribe_frame(id: u64, channel: &str, options: &SubscribeOptions) -> Value {
    let mut frame =
        json!({"id": id, "type": "subscribe", "channel": channel, "global": options.global});
    if let Some(token) = &options.token {
        frame["token"] = token.clone().into();
    }
    if let Some(overrides) = &options.context_overrides {
        frame["contextOverrides"] = overrides.clone().into();
    }
    if let Some(since) = &options.since {
        frame["since"] = json!({"epoch": since.epoch, "offset": since.offset});
    }
    if let Some(seconds) = options.replay_seconds {
        frame["replaySeconds"] = seconds.into();
    }
    frame
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_stays_within_bounds_and_grows() {
        let bounds = (Duration::from_millis(100), Duration::from_secs(5));
        for attempt in 0..40 {
            let d = backoff(bounds, attempt);
            assert!(d >= bounds.0 && d <= bounds.1, "{d:?} at attempt {attempt}");
        }
        let late: Vec<Duration> = (0..50).map(|_| backoff(bounds, 10)).collect();
        assert!(
            late.iter().any(|d| *d > Duration::from_secs(1)),
            "backoff does not grow"
        );
    }
}
