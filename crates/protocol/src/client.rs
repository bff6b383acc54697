//! Frames a WebSocket client sends.
//!
//! A frame is parsed in one pass into [`RawFrame`], a flat record of every
//! field any request may carry, and then checked into a typed [`Request`].
//! Parsing this way keeps the request `id` even when the rest is wrong, so
//! the error reply still reaches the caller that asked.

use crate::error::{ErrorBody, ErrorCode};
use crate::StreamPosition;
use serde::{Deserialize, Deserializer};
use serde_json::value::RawValue;

/// A client frame as it arrived, every field optional.
#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct RawFrame {
    pub id: Option<u64>,
    #[serde(rename = "type")]
    pub kind: Option<String>,
    pub channel: Option<String>,
    pub global: Option<bool>,
    pub token: Option<String>,
    pub context_overrides: Option<Vec<String>>,
    pub since: Option<StreamPosition>,
    pub replay_seconds: Option<u64>,
    pub event: Option<String>,
    #[serde(default, deserialize_with = "present_raw")]
    pub payload: Option<Box<RawValue>>,
    pub idempotency_key: Option<String>,
    pub limit: Option<usize>,
}

/// `Some` for any value that is present, `null` included.
fn present_raw<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Box<RawValue>>, D::Error> {
    Box::<RawValue>::deserialize(d).map(Some)
}

/// Where a channel lives and who may meet on it: the parts of a request that
/// together name one channel key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChannelRef {
    pub channel: String,
    pub global: bool,
    pub token: Option<String>,
    pub context_overrides: Option<Vec<String>>,
}

#[derive(Debug, Clone)]
pub enum Request {
    Subscribe {
        channel: ChannelRef,
        since: Option<StreamPosition>,
        replay_seconds: Option<u64>,
    },
    Unsubscribe {
        channel: ChannelRef,
    },
    Publish {
        channel: ChannelRef,
        event: Option<String>,
        payload: Box<RawValue>,
        idempotency_key: Option<String>,
    },
    Presence {
        channel: ChannelRef,
    },
    History {
        channel: ChannelRef,
        since: Option<StreamPosition>,
        limit: Option<usize>,
    },
    Refresh {
        token: String,
    },
}

impl Request {
    /// The frame's `type`.
    pub fn kind(&self) -> &'static str {
        match self {
            Request::Subscribe { .. } => "subscribe",
            Request::Unsubscribe { .. } => "unsubscribe",
            Request::Publish { .. } => "publish",
            Request::Presence { .. } => "presence",
            Request::History { .. } => "history",
            Request::Refresh { .. } => "refresh",
        }
    }
}

/// A frame that could not become a request: the error to answer with, and
/// the `id` to answer to when the frame carried one.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rejected {
    pub id: Option<u64>,
    pub error: ErrorBody,
}

/// Parses one text frame into its `id` and request.
pub fn parse(text: &str) -> Result<(Option<u64>, Request), Rejected> {
    let raw: RawFrame = serde_json::from_str(text).map_err(|e| Rejected {
        id: salvage_id(text),
        error: ErrorBody::new(
            ErrorCode::RealtimeInvalidChannelRequest,
            format!("malformed frame: {e}"),
        ),
    })?;
    let id = raw.id;
    raw.into_request()
        .map(|request| (id, request))
        .map_err(|error| Rejected { id, error })
}

/// The `id` of a frame whose other fields did not parse, when it has one.
pub fn salvage_id(text: &str) -> Option<u64> {
    #[derive(Deserialize)]
    struct IdOnly {
        id: Option<u64>,
    }
    serde_json::from_str::<IdOnly>(text).ok().and_then(|f| f.id)
}

fn invalid(detail: impl Into<String>) -> ErrorBody {
    ErrorBody::new(ErrorCode::RealtimeInvalidChannelRequest, detail)
}

impl RawFrame {
    fn channel_ref(&mut self) -> Result<ChannelRef, ErrorBody> {
        let channel = self
            .channel
            .take()
            .ok_or_else(|| invalid("missing field `channel`"))?;
        Ok(ChannelRef {
            channel,
            global: self.global.unwrap_or(false),
            token: self.token.take(),
            context_overrides: self.context_overrides.take(),
        })
    }

    pub fn into_request(mut self) -> Result<Request, ErrorBody> {
        let kind = self
            .kind
            .take()
            .ok_or_else(|| invalid("missing field `type`"))?;
        Ok(match kind.as_str() {
            "subscribe" => Request::Subscribe {
                channel: self.channel_ref()?,
                since: self.since.take(),
                replay_seconds: self.replay_seconds,
            },
            "unsubscribe" => Request::Unsubscribe {
                channel: self.channel_ref()?,
            },
            "publish" => Request::Publish {
                channel: self.channel_ref()?,
                event: self.event.take(),
                payload: self
                    .payload
                    .take()
                    .ok_or_else(|| invalid("missing field `payload`"))?,
                idempotency_key: self.idempotency_key.take(),
            },
            "presence" => Request::Presence {
                channel: self.channel_ref()?,
            },
            "history" => Request::History {
                channel: self.channel_ref()?,
                since: self.since.take(),
                limit: self.limit,
            },
            "refresh" => Request::Refresh {
                token: self
                    .token
                    .take()
                    .ok_or_else(|| invalid("missing field `token`"))?,
            },
            other => return Err(invalid(format!("unknown frame type `{other}`"))),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn publish_keeps_payload_text() {
        let (id, req) = parse(
            r#"{"id":3,"type":"publish","channel":"c","event":"e","payload":{"b":1,"a":[2]}}"#,
        )
        .unwrap();
        assert_eq!(id, Some(3));
        match req {
            Request::Publish { payload, event, .. } => {
                assert_eq!(payload.get(), r#"{"b":1,"a":[2]}"#);
                assert_eq!(event.as_deref(), Some("e"));
            }
            other => panic!("unexpected {other:?}"),
        }
    }

    #[test]
    fn null_payload_is_present() {
        let (_, req) = parse(r#"{"type":"publish","channel":"c","payload":null}"#).unwrap();
        assert!(matches!(req, Request::Publish { payload, .. } if payload.get() == "null"));
    }

    #[test]
    fn missing_payload_is_rejected_with_id() {
        let err = parse(r#"{"id":9,"type":"publish","channel":"c"}"#).unwrap_err();
        assert_eq!(err.id, Some(9));
        assert_eq!(err.error.code, ErrorCode::RealtimeInvalidChannelRequest);
        assert!(err.error.message.contains("payload"));
    }

    #[test]
    fn wrong_field_type_keeps_id() {
        let err = parse(r#"{"id":4,"type":"subscribe","channel":17}"#).unwrap_err();
        assert_eq!(err.id, Some(4));
    }

    #[test]
    fn malformed_json_is_rejected() {
        let err = parse("{not json").unwrap_err();
        assert_eq!(err.id, None);
        assert_eq!(err.error.code, ErrorCode::RealtimeInvalidChannelRequest);
    }

    #[test]
    fn unknown_type_is_named() {
        let err = parse(r#"{"id":1,"type":"dance"}"#).unwrap_err();
        assert!(err.error.message.contains("dance"));
    }

    #[test]
    fn subscribe_reads_optional_fields() {
        let (_, req) = parse(
            r#"{"type":"subscribe","channel":"c","global":true,"contextOverrides":["issue"],
                "since":{"epoch":"e1","offset":41},"replaySeconds":30}"#,
        )
        .unwrap();
        let Request::Subscribe {
            channel,
            since,
            replay_seconds,
        } = req
        else {
            panic!("not a subscribe: {req:?}");
        };
        assert_eq!(
            channel,
            ChannelRef {
                channel: "c".into(),
                global: true,
                token: None,
                context_overrides: Some(vec!["issue".into()]),
            }
        );
        assert_eq!(
            since,
            Some(StreamPosition {
                epoch: "e1".into(),
                offset: 41
            })
        );
        assert_eq!(replay_seconds, Some(30));
    }
}
