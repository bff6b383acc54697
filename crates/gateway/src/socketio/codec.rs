//! How Socket.IO clients are written to: deliveries as InsForge delivers
//! them (`docs/insforge.md`), encoded once per delivery for every
//! Socket.IO subscriber of a channel.
//!
//! A frame is a Socket.IO packet (`2["event",{...}]`); the connection hands
//! its bytes to Engine.IO as they are.

use super::packet;
use herald_broker_node::hub::PresenceKind;
use herald_broker_node::{ChannelKey, Codec, EncodedFrame};
use herald_history::Publication;
use herald_protocol::server::{Member, SenderType};
use herald_protocol::{now_ms, StreamPosition};
use std::fmt::Write;

/// The Socket.IO codec.
pub struct SocketIo;

pub static SOCKETIO: SocketIo = SocketIo;

/// InsForge's `senderType`: `system` for the app's backend, `user` for
/// every client (an anonymous one has no `senderId`).
fn sender_type(t: SenderType) -> &'static str {
    match t {
        SenderType::System => "system",
        SenderType::User | SenderType::Anonymous => "user",
    }
}

/// An epoch-milliseconds time as ISO 8601 with milliseconds, as
/// JavaScript's `toISOString` writes it (`2026-11-23T17:36:32.840Z`).
pub fn iso(ms: u64) -> String {
    let format = time::macros::format_description!(
        "[year]-[month]-[day]T[hour]:[minute]:[second].[subsecond digits:3]Z"
    );
    time::OffsetDateTime::from_unix_timestamp_nanos(i128::from(ms) * 1_000_000)
        .ok()
        .and_then(|t| t.format(format).ok())
        .unwrap_or_default()
}

/// A delivered message: the payload object with `meta` added (a payload
/// that is not an object becomes `{value: <payload>, meta}`). Beside
/// InsForge's fields, `meta` carries the message's place in its channel's
/// stream (`epoch`, `offset`), which a client hands back as `since` to
/// recover what it missed.
pub fn message(key: &ChannelKey, p: &Publication, position: &StreamPosition) -> String {
    let mut meta = String::with_capacity(160);
    let _ = write!(
        meta,
        r#"{{"channel":{},"messageId":{},"senderType":"{}""#,
        packet::json_string(&format!("realtime:{}", key.name())),
        packet::json_string(&p.message_id),
        sender_type(p.sender_type),
    );
    if let Some(id) = &p.sender_id {
        let _ = write!(meta, r#","senderId":{}"#, packet::json_string(id));
    }
    let _ = write!(
        meta,
        r#","timestamp":"{}","epoch":{},"offset":{}}}"#,
        iso(p.timestamp_ms),
        packet::json_string(&position.epoch),
        position.offset
    );
    flatten(p.payload.get(), &meta)
}

/// `{...payload, meta}` written without parsing the payload: a `meta` the
/// payload carries comes first and is overridden, as a spread would.
pub(super) fn flatten(payload: &str, meta: &str) -> String {
    let payload = payload.trim();
    let mut out = String::with_capacity(payload.len() + meta.len() + 16);
    match payload.strip_prefix('{').and_then(|p| p.strip_suffix('}')) {
        Some(inner) if inner.trim().is_empty() => {
            let _ = write!(out, r#"{{"meta":{meta}}}"#);
        }
        Some(inner) => {
            let _ = write!(out, r#"{{{inner},"meta":{meta}}}"#);
        }
        None => {
            let _ = write!(out, r#"{{"value":{payload},"meta":{meta}}}"#);
        }
    }
    out
}

/// A presence member as InsForge lists it: `joinedAt` in ISO 8601.
pub fn member(m: &Member) -> serde_json::Value {
    let joined = m
        .joined_at
        .parse()
        .map_or_else(|_| m.joined_at.clone(), iso);
    serde_json::json!({ "type": m.kind, "presenceId": m.presence_id, "joinedAt": joined })
}

/// A presence change: `{member, meta}` with the bare channel name.
pub fn presence(channel: &str, m: &Member) -> String {
    format!(
        r#"{{"member":{},"meta":{{"channel":{},"senderType":"system","messageId":"{}","timestamp":"{}"}}}}"#,
        member(m),
        packet::json_string(channel),
        uuid::Uuid::new_v4(),
        iso(now_ms()),
    )
}

impl Codec for SocketIo {
    fn name(&self) -> &'static str {
        "socketio"
    }

    fn publication(
        &self,
        key: &ChannelKey,
        publication: &Publication,
        position: &StreamPosition,
    ) -> EncodedFrame {
        EncodedFrame::from_string(packet::event(
            &publication.event,
            &message(key, publication, position),
        ))
    }

    fn presence(&self, key: &ChannelKey, kind: PresenceKind, member: &Member) -> EncodedFrame {
        let name = match kind {
            PresenceKind::Join => "presence:join",
            PresenceKind::Leave => "presence:leave",
        };
        EncodedFrame::from_string(packet::event(name, &presence(key.name(), member)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn times_are_iso_8601_with_milliseconds() {
        assert_eq!(iso(0), "1970-01-01T00:00:00.000Z");
        assert_eq!(iso(1_795_455_392_840), "2026-11-23T17:36:32.840Z");
    }

    #[test]
    fn flattens_objects_and_wraps_everything_else() {
        let meta = r#"{"m":1}"#;
        assert_eq!(flatten(r#"{"a":1}"#, meta), r#"{"a":1,"meta":{"m":1}}"#);
        assert_eq!(flatten(" { } ", meta), r#"{"meta":{"m":1}}"#);
        assert_eq!(flatten("[1,2]", meta), r#"{"value":[1,2],"meta":{"m":1}}"#);
        assert_eq!(flatten("\"s\"", meta), r#"{"value":"s","meta":{"m":1}}"#);
        assert_eq!(flatten("null", meta), r#"{"value":null,"meta":{"m":1}}"#);
        // A payload's own `meta` is overridden, as `{...payload, meta}`.
        let v: serde_json::Value =
            serde_json::from_str(&flatten(r#"{"meta":"mine","x":{"y":"}"}}"#, meta)).unwrap();
        assert_eq!(v["meta"]["m"], 1);
        assert_eq!(v["x"]["y"], "}");
    }
}
