//! How the node reaches a connection.

use bytes::Bytes;
use herald_protocol::server::{DisconnectReason, ServerFrame};
use std::sync::{Arc, OnceLock};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

/// A server frame already encoded as JSON text, shared by every connection
/// it is queued to. Always valid UTF-8: it can only be made from a `String`.
#[derive(Debug, Clone)]
pub struct EncodedFrame(Bytes);

impl EncodedFrame {
    pub fn encode(frame: &ServerFrame) -> Self {
        EncodedFrame(Bytes::from(frame.to_json()))
    }

    pub fn from_string(text: String) -> Self {
        EncodedFrame(Bytes::from(text))
    }

    /// The UTF-8 bytes of the frame.
    pub fn into_bytes(self) -> Bytes {
        self.0
    }

    pub fn len(&self) -> usize {
        self.0.len()
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    pub fn as_str(&self) -> &str {
        // The bytes came from a `String`.
        std::str::from_utf8(&self.0).unwrap_or_default()
    }
}

/// Why and whether a connection was told to go.
#[derive(Debug, Default)]
pub struct Kick {
    reason: OnceLock<DisconnectReason>,
    token: CancellationToken,
}

impl Kick {
    /// Asks the connection to close with `reason`. The first reason wins.
    pub fn kick(&self, reason: DisconnectReason) -> bool {
        let first = self.reason.set(reason).is_ok();
        self.token.cancel();
        first
    }

    pub fn reason(&self) -> Option<DisconnectReason> {
        self.reason.get().copied()
    }

    /// Resolves once the connection has been kicked.
    pub async fn kicked(&self) {
        self.token.cancelled().await
    }
}

/// The sending side of a connection: its bounded queue and its kick.
#[derive(Debug, Clone)]
pub struct Outbound {
    tx: mpsc::Sender<EncodedFrame>,
    kick: Arc<Kick>,
}

/// What happened to a frame offered to a connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Offer {
    Queued,
    /// The queue was full: the connection is too slow and has been kicked.
    SlowConsumer,
    /// The connection is gone.
    Closed,
}

impl Outbound {
    /// A connection's outbound side and the receiving end its writer drains.
    pub fn new(capacity: usize) -> (Outbound, mpsc::Receiver<EncodedFrame>, Arc<Kick>) {
        let (tx, rx) = mpsc::channel(capacity.max(1));
        let kick = Arc::new(Kick::default());
        (
            Outbound {
                tx,
                kick: Arc::clone(&kick),
            },
            rx,
            kick,
        )
    }

    /// Queues a frame without waiting. A full queue means the client does
    /// not keep up: it is kicked rather than allowed to grow memory.
    pub fn offer(&self, frame: EncodedFrame) -> Offer {
        match self.tx.try_send(frame) {
            Ok(()) => Offer::Queued,
            Err(mpsc::error::TrySendError::Full(_)) => {
                if self.kick.kick(DisconnectReason::SlowConsumer) {
                    Offer::SlowConsumer
                } else {
                    Offer::Closed
                }
            }
            Err(mpsc::error::TrySendError::Closed(_)) => Offer::Closed,
        }
    }

    /// Queues a frame, waiting for room: for replies, which only the
    /// connection's own requests produce.
    pub async fn send(&self, frame: EncodedFrame) -> bool {
        tokio::select! {
            sent = self.tx.send(frame) => sent.is_ok(),
            _ = self.kick.kicked() => false,
        }
    }

    pub fn kick(&self) -> &Kick {
        &self.kick
    }
}

/// A connection subscribed to a channel.
#[derive(Debug, Clone)]
pub struct Subscriber {
    /// Node-local connection number.
    pub conn: u64,
    pub outbound: Outbound,
}
