//! How a surface writes what the node delivers.
//!
//! Each connection carries the [`Codec`] of the surface it came in on (the
//! native WebSocket protocol, Socket.IO, ...). Fan-out renders a delivery
//! once per codec present among a channel's subscribers, lazily: a channel
//! whose subscribers all speak one codec pays one encoding, as before
//! codecs existed. Replies are the surface's own business; they use the
//! same codec through the surface.

use crate::hub::PresenceKind;
use crate::key::ChannelKey;
use crate::outbound::EncodedFrame;
use herald_history::Publication;
use herald_protocol::server::{Event, EventMeta, Member, PresenceChange, ServerFrame};
use herald_protocol::{timestamp_string, StreamPosition};
use std::sync::Arc;

/// Renders deliveries in one surface's wire format.
pub trait Codec: Send + Sync + 'static {
    /// Names the codec; two subscribers share an encoding when their codecs
    /// have the same name.
    fn name(&self) -> &'static str;

    /// A publication on `key`, at `position` of its stream.
    fn publication(
        &self,
        key: &ChannelKey,
        publication: &Publication,
        position: &StreamPosition,
    ) -> EncodedFrame;

    /// A member joining or leaving `key`.
    fn presence(&self, key: &ChannelKey, kind: PresenceKind, member: &Member) -> EncodedFrame;
}

/// A codec, as connections carry it.
pub type CodecRef = &'static dyn Codec;

/// Herald's native protocol: JSON text frames (`docs/protocol.md`).
pub struct Native;

/// The native codec.
pub static NATIVE: Native = Native;

impl Native {
    /// The `event` frame of a publication, as fan-out sends it and as
    /// replies list replayed and historic publications.
    pub fn event(key: &ChannelKey, p: &Publication, position: &StreamPosition) -> Event {
        Event {
            channel: key.name().to_owned(),
            global: key.global(),
            event: p.event.clone(),
            payload: Arc::clone(&p.payload),
            meta: EventMeta {
                message_id: p.message_id.clone(),
                sender_type: p.sender_type,
                sender_id: p.sender_id.clone(),
                timestamp: timestamp_string(p.timestamp_ms),
                epoch: position.epoch.clone(),
                offset: position.offset,
            },
        }
    }

    /// Encodes any server frame.
    pub fn encode(frame: &ServerFrame) -> EncodedFrame {
        EncodedFrame::from_string(frame.to_json())
    }
}

impl Codec for Native {
    fn name(&self) -> &'static str {
        "native"
    }

    fn publication(
        &self,
        key: &ChannelKey,
        publication: &Publication,
        position: &StreamPosition,
    ) -> EncodedFrame {
        Native::encode(&ServerFrame::Event(Native::event(
            key,
            publication,
            position,
        )))
    }

    fn presence(&self, key: &ChannelKey, kind: PresenceKind, member: &Member) -> EncodedFrame {
        let change = PresenceChange {
            channel: key.name().to_owned(),
            global: key.global(),
            member: member.clone(),
        };
        Native::encode(&match kind {
            PresenceKind::Join => ServerFrame::PresenceJoin(change),
            PresenceKind::Leave => ServerFrame::PresenceLeave(change),
        })
    }
}

/// A delivery's encodings, made on first use for each codec by the
/// `render` given at that use.
#[derive(Default)]
pub(crate) struct Encodings {
    /// The first codec met (the only one, on most channels).
    first: Option<(&'static str, EncodedFrame)>,
    others: Vec<(&'static str, EncodedFrame)>,
}

impl Encodings {
    /// The delivery encoded for `codec`, rendered now if it is the first
    /// subscriber of that codec.
    pub(crate) fn get(
        &mut self,
        codec: CodecRef,
        render: impl FnOnce(CodecRef) -> EncodedFrame,
    ) -> &EncodedFrame {
        let name = codec.name();
        if self.first.is_none() {
            self.first = Some((name, render(codec)));
        } else if self.first.as_ref().is_some_and(|(first, _)| *first != name)
            && !self.others.iter().any(|(n, _)| *n == name)
        {
            self.others.push((name, render(codec)));
        }
        match &self.first {
            Some((first, frame)) if *first == name => frame,
            _ => self
                .others
                .iter()
                .find_map(|(n, frame)| (*n == name).then_some(frame))
                .expect("rendered above"),
        }
    }
}
