//! A Rust client for Herald's native WebSocket protocol.
//!
//! ```no_run
//! # async fn run() -> Result<(), herald_client::Error> {
//! use herald_client::{ClientConfig, Event, SubscribeOptions};
//! let config = ClientConfig::new(["ws://127.0.0.1:8080/v1/ws"], "<user token>");
//! let (client, mut events) = herald_client::connect(config).await?;
//! client.subscribe("news", SubscribeOptions::global()).await?;
//! while let Some(event) = events.recv().await {
//!     if let Event::Publication(p) = event {
//!         println!("{} {}: {}", p.channel, p.meta.offset, p.payload);
//!     }
//! }
//! # Ok(()) }
//! ```
//!
//! What it does for you:
//! - **Reconnects** with jittered exponential backoff, trying the gateway
//!   URLs in turn, whenever the connection drops or the server says
//!   `disconnect` with `reconnect: true`.
//! - **Recovers.** It remembers each channel's epoch and offset and
//!   resubscribes with `since` after a reconnect; it watches offsets on the
//!   live stream and recovers a gap the same way. Publications reach you in
//!   offset order, each once. When the server cannot show that nothing was
//!   missed (a gap it cannot replay, or an app without history), you get
//!   [`Event::Resubscribed`] with `recovered: false`: refetch your state.
//! - Requests (`subscribe`, `publish`, `presence`, `history`) wait for a
//!   connection; one in flight when the connection drops fails with
//!   [`Error::Disconnected`] (retry it; an `idempotency_key` makes a publish
//!   safe to retry).

mod connection;
mod types;

pub use types::*;

use serde_json::Value;
use std::time::Duration;
use tokio::sync::{mpsc, oneshot};

/// How to reach Herald.
#[derive(Debug, Clone)]
pub struct ClientConfig {
    /// Gateway WebSocket URLs (`ws://host:port/v1/ws`), tried in turn.
    pub urls: Vec<String>,
    /// A user JWT (sent as `?token=`); `None` connects without one (with
    /// the URL's own query, e.g. `?apiKey=` or `?app=`).
    pub token: Option<String>,
    /// Shortest and longest wait between reconnect attempts.
    pub backoff: (Duration, Duration),
    /// Events buffered for the application before the client stops reading
    /// the socket.
    pub event_buffer: usize,
}

impl ClientConfig {
    pub fn new<I, S>(urls: I, token: impl Into<String>) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        ClientConfig {
            urls: urls.into_iter().map(Into::into).collect(),
            token: Some(token.into()),
            backoff: (Duration::from_millis(100), Duration::from_secs(5)),
            event_buffer: 4096,
        }
    }
}

/// A handle to a connection. Cheap to clone; the connection closes when the
/// last handle is dropped or [`Client::close`] is called.
#[derive(Clone)]
pub struct Client {
    commands: mpsc::UnboundedSender<connection::Command>,
}

/// Connects (waiting for the first successful connection) and returns the
/// client with its stream of events.
pub async fn connect(config: ClientConfig) -> Result<(Client, mpsc::Receiver<Event>), Error> {
    if config.urls.is_empty() {
        return Err(Error::Config("no gateway URL".into()));
    }
    let (commands, rx) = mpsc::unbounded_channel();
    let (events_tx, events) = mpsc::channel(config.event_buffer.max(16));
    let (ready_tx, ready) = oneshot::channel();
    tokio::spawn(connection::run(config, rx, events_tx, ready_tx));
    ready.await.map_err(|_| Error::Closed)??;
    Ok((Client { commands }, events))
}

impl Client {
    async fn call(&self, request: connection::Request) -> Result<Value, Error> {
        let (done, answer) = oneshot::channel();
        self.commands
            .send(connection::Command::Request(request, done))
            .map_err(|_| Error::Closed)?;
        answer.await.map_err(|_| Error::Closed)?
    }

    /// Subscribes to a channel. The reply's replayed publications (with
    /// `since` or `replay_seconds`) arrive as events before live ones.
    pub async fn subscribe(
        &self,
        channel: &str,
        options: SubscribeOptions,
    ) -> Result<Subscribed, Error> {
        let reply = self
            .call(connection::Request::Subscribe {
                channel: channel.to_owned(),
                options,
            })
            .await?;
        Ok(Subscribed::from_reply(&reply))
    }

    pub async fn unsubscribe(&self, channel: &str, global: bool) -> Result<(), Error> {
        self.call(connection::Request::Unsubscribe {
            channel: channel.to_owned(),
            global,
        })
        .await
        .map(|_| ())
    }

    pub async fn publish(
        &self,
        channel: &str,
        payload: Value,
        options: PublishOptions,
    ) -> Result<PublishAck, Error> {
        let reply = self
            .call(connection::Request::Publish {
                channel: channel.to_owned(),
                payload,
                options,
            })
            .await?;
        Ok(PublishAck {
            event_id: reply["eventId"].as_str().map(str::to_owned),
            event_timestamp: reply["eventTimestamp"].as_str().map(str::to_owned),
        })
    }

    pub async fn presence(&self, channel: &str, global: bool) -> Result<Vec<Member>, Error> {
        let frame = serde_json::json!({"type":"presence","channel":channel,"global":global});
        let reply = self.call(connection::Request::Raw(frame)).await?;
        Ok(serde_json::from_value(reply["presence"]["members"].clone()).unwrap_or_default())
    }

    /// Reads a channel's kept history.
    pub async fn history(
        &self,
        channel: &str,
        global: bool,
        since: Option<StreamPosition>,
        limit: Option<usize>,
    ) -> Result<History, Error> {
        let mut frame = serde_json::json!({"type":"history","channel":channel,"global":global});
        if let Some(since) = since {
            frame["since"] = serde_json::json!({"epoch": since.epoch, "offset": since.offset});
        }
        if let Some(limit) = limit {
            frame["limit"] = limit.into();
        }
        let reply = self.call(connection::Request::Raw(frame)).await?;
        Ok(History::from_reply(&reply))
    }

    /// Closes the connection; no reconnect follows.
    pub fn close(&self) {
        let _ = self.commands.send(connection::Command::Close);
    }
}
