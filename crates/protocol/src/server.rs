//! Frames the server sends to a WebSocket client.

use crate::error::ErrorBody;
use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;
use std::sync::Arc;

/// Every frame the server sends, tagged by `type`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(tag = "type")]
pub enum ServerFrame {
    #[serde(rename = "connected")]
    Connected(Connected),
    #[serde(rename = "reply")]
    Reply(Box<Reply>),
    #[serde(rename = "event")]
    Event(Event),
    #[serde(rename = "presence:join")]
    PresenceJoin(PresenceChange),
    #[serde(rename = "presence:leave")]
    PresenceLeave(PresenceChange),
    #[serde(rename = "error")]
    Error(ErrorFrame),
    #[serde(rename = "disconnect")]
    Disconnect(Disconnect),
}

impl ServerFrame {
    /// The frame as JSON text. Serializing these types cannot fail: every
    /// map key is a string and every payload is already valid JSON.
    pub fn to_json(&self) -> String {
        serde_json::to_string(self).unwrap_or_else(|_| String::from("{}"))
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Connected {
    pub connection_id: String,
    pub node: String,
    /// Milliseconds between the server's WebSocket pings.
    pub ping_interval: u64,
}

/// The answer to a request that carried an `id`.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Reply {
    pub id: u64,
    pub ok: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub channel: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub presence: Option<PresenceList>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub epoch: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub offset: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub recovered: Option<bool>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub publications: Option<Vec<Event>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub event_id: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub event_timestamp: Option<String>,
    /// Epoch seconds at which the connection's user token expires (`refresh`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub expires_at: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<ErrorBody>,
}

impl Reply {
    pub fn ok(id: u64) -> Self {
        Reply {
            id,
            ok: true,
            ..Reply::default()
        }
    }

    pub fn err(id: u64, error: ErrorBody) -> Self {
        Reply {
            id,
            ok: false,
            error: Some(error),
            ..Reply::default()
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct PresenceList {
    /// Earliest joined first, at most the server's `max_presence_members`.
    pub members: Vec<Member>,
    /// Set when the channel has more members than the list holds.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub truncated: bool,
}

/// One logical presence member: a user (all its connections), or one
/// anonymous or API-key connection.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Member {
    pub presence_id: String,
    #[serde(rename = "type")]
    pub kind: SenderType,
    pub joined_at: String,
}

/// Who is behind a connection or a publication.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum SenderType {
    /// A user authenticated by a user JWT.
    User,
    /// An app backend: an API-key connection or the server API.
    System,
    /// A connection without credentials, where the app allows it.
    Anonymous,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Event {
    pub channel: String,
    pub global: bool,
    pub event: String,
    pub payload: Arc<RawValue>,
    pub meta: EventMeta,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct EventMeta {
    pub message_id: String,
    pub sender_type: SenderType,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub sender_id: Option<String>,
    pub timestamp: String,
    pub epoch: String,
    pub offset: u64,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct PresenceChange {
    pub channel: String,
    pub global: bool,
    pub member: Member,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ErrorFrame {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub channel: Option<String>,
    pub error: ErrorBody,
}

/// Sent before every close the server starts.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Disconnect {
    pub code: u16,
    pub reason: String,
    pub reconnect: bool,
}

/// The reasons the server closes a connection. The code is also the
/// WebSocket close code.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DisconnectReason {
    /// The server is shutting down; reconnect (to another gateway).
    Shutdown,
    /// The client did not read fast enough and its queue overflowed;
    /// reconnect and recover.
    SlowConsumer,
    /// The user token expired without a `refresh`; reconnect with a new one.
    TokenExpired,
    /// No pong or frame within the liveness window.
    NoPong,
    /// A frame over the hard size limit.
    MessageTooBig,
    /// The client kept flooding after being told to slow down.
    Flood,
}

impl DisconnectReason {
    pub fn code(self) -> u16 {
        match self {
            DisconnectReason::Shutdown => 4005,
            DisconnectReason::SlowConsumer => 4006,
            DisconnectReason::TokenExpired => 4007,
            DisconnectReason::NoPong => 4008,
            DisconnectReason::MessageTooBig => 4009,
            DisconnectReason::Flood => 4010,
        }
    }

    pub fn reason(self) -> &'static str {
        match self {
            DisconnectReason::Shutdown => "shutdown",
            DisconnectReason::SlowConsumer => "slow consumer",
            DisconnectReason::TokenExpired => "token expired",
            DisconnectReason::NoPong => "no pong",
            DisconnectReason::MessageTooBig => "message too big",
            DisconnectReason::Flood => "flood",
        }
    }

    pub fn reconnect(self) -> bool {
        !matches!(self, DisconnectReason::Flood)
    }

    pub fn frame(self) -> Disconnect {
        Disconnect {
            code: self.code(),
            reason: self.reason().to_owned(),
            reconnect: self.reconnect(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn frames_are_tagged_as_the_contract_says() {
        let f = ServerFrame::Disconnect(DisconnectReason::Shutdown.frame());
        let v: serde_json::Value = serde_json::from_str(&f.to_json()).unwrap();
        assert_eq!(
            v,
            json!({"type":"disconnect","code":4005,"reason":"shutdown","reconnect":true})
        );
        let f = ServerFrame::PresenceJoin(PresenceChange {
            channel: "c".into(),
            global: false,
            member: Member {
                presence_id: "u-1".into(),
                kind: SenderType::User,
                joined_at: "1".into(),
            },
        });
        let v: serde_json::Value = serde_json::from_str(&f.to_json()).unwrap();
        assert_eq!(v["type"], "presence:join");
        assert_eq!(v["member"]["presenceId"], "u-1");
        assert_eq!(v["member"]["type"], "user");
    }

    #[test]
    fn reply_omits_absent_fields() {
        let f = ServerFrame::Reply(Box::new(Reply {
            event_id: Some("m-1".into()),
            event_timestamp: Some("1767225600000".into()),
            ..Reply::ok(3)
        }));
        let v: serde_json::Value = serde_json::from_str(&f.to_json()).unwrap();
        assert_eq!(
            v,
            json!({"type":"reply","id":3,"ok":true,"eventId":"m-1","eventTimestamp":"1767225600000"})
        );
    }
}
