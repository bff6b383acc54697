//! What the client hands the application.

use serde::Deserialize;
use serde_json::Value;

pub use herald_protocol::server::{EventMeta, Member, SenderType};
pub use herald_protocol::StreamPosition;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("invalid configuration: {0}")]
    Config(String),
    /// The server answered the request with an error.
    #[error("{code}: {message}")]
    Server { code: String, message: String },
    /// The connection dropped before the reply arrived.
    #[error("disconnected before the reply")]
    Disconnected,
    /// The server refused the connection (bad or expired token...).
    #[error("connection refused: {0}")]
    Refused(String),
    /// The client was closed, or the server said not to reconnect.
    #[error("client closed")]
    Closed,
}

/// Everything that happens on the connection, in order.
#[derive(Debug, Clone)]
pub enum Event {
    /// A (re)connection succeeded.
    Connected { connection_id: String, node: String },
    /// A publication, in offset order per channel, each once.
    Publication(Publication),
    Join {
        channel: String,
        global: bool,
        member: Member,
    },
    Leave {
        channel: String,
        global: bool,
        member: Member,
    },
    /// After a reconnect or a gap, a channel was subscribed again.
    /// `recovered: false` means the server cannot show that nothing was
    /// missed (publications were missed and are not kept, or the app keeps
    /// no history, where every reconnect says so): refetch the channel's
    /// state.
    Resubscribed {
        channel: String,
        global: bool,
        recovered: bool,
    },
    /// The server sent a frame the client could not read (not JSON, or
    /// nested beyond serde_json's 128 levels). It is skipped; the
    /// connection goes on. `frame` is its first 200 bytes.
    Unreadable { error: String, frame: String },
    /// The connection ended; `reconnect` tells whether the client goes on.
    Disconnected {
        code: Option<u16>,
        reason: String,
        reconnect: bool,
    },
}

#[derive(Debug, Clone, Deserialize)]
pub struct Publication {
    pub channel: String,
    pub global: bool,
    pub event: String,
    pub payload: Value,
    pub meta: EventMeta,
}

/// How to subscribe.
#[derive(Debug, Clone, Default)]
pub struct SubscribeOptions {
    pub global: bool,
    /// A channel token from the server API.
    pub token: Option<String>,
    pub context_overrides: Option<Vec<String>>,
    /// Continue from here (replay what came after it).
    pub since: Option<StreamPosition>,
    /// On a first subscribe, replay the last this-many seconds.
    pub replay_seconds: Option<u64>,
}

impl SubscribeOptions {
    pub fn global() -> Self {
        SubscribeOptions {
            global: true,
            ..SubscribeOptions::default()
        }
    }
}

#[derive(Debug, Clone, Default)]
pub struct PublishOptions {
    pub global: bool,
    pub event: Option<String>,
    pub token: Option<String>,
    pub context_overrides: Option<Vec<String>>,
    /// A repeat within the server's window is not published again.
    pub idempotency_key: Option<String>,
}

/// The answer to a subscribe.
#[derive(Debug, Clone)]
pub struct Subscribed {
    pub members: Vec<Member>,
    pub position: StreamPosition,
    pub recovered: Option<bool>,
}

impl Subscribed {
    pub(crate) fn from_reply(reply: &Value) -> Self {
        Subscribed {
            members: serde_json::from_value(reply["presence"]["members"].clone())
                .unwrap_or_default(),
            position: position_of(reply),
            recovered: reply["recovered"].as_bool(),
        }
    }
}

#[derive(Debug, Clone)]
pub struct PublishAck {
    /// `None` when the event went nowhere (no subscriber, no history).
    pub event_id: Option<String>,
    pub event_timestamp: Option<String>,
}

#[derive(Debug, Clone)]
pub struct History {
    pub position: StreamPosition,
    pub publications: Vec<Publication>,
    pub recovered: Option<bool>,
}

impl History {
    pub(crate) fn from_reply(reply: &Value) -> Self {
        History {
            position: position_of(reply),
            publications: serde_json::from_value(reply["publications"].clone()).unwrap_or_default(),
            recovered: reply["recovered"].as_bool(),
        }
    }
}

pub(crate) fn position_of(reply: &Value) -> StreamPosition {
    StreamPosition {
        epoch: reply["epoch"].as_str().unwrap_or_default().to_owned(),
        offset: reply["offset"].as_u64().unwrap_or(0),
    }
}
