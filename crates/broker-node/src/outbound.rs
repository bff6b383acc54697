//! How the node reaches a connection.

use crate::codec::CodecRef;
use bytes::Bytes;
use herald_protocol::server::DisconnectReason;
use std::collections::VecDeque;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, OnceLock};
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

/// A frame already encoded by a connection's codec, shared by every
/// connection of that codec it is queued to. Always valid UTF-8: it can only
/// be made from a `String`.
#[derive(Debug, Clone)]
pub struct EncodedFrame(Bytes);

impl EncodedFrame {
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

/// A connection's bounded outbound queue, shared by its senders (the
/// session, the hub's subscriptions) and its one receiver (the writer).
///
/// Hand-rolled rather than a `tokio::sync::mpsc` channel, which allocates
/// a 32-slot block per channel up front (~1 KB for every idle connection);
/// this queue allocates nothing until a frame is queued and gives back a
/// grown buffer once it drains.
struct Queue {
    state: Mutex<QueueState>,
    capacity: usize,
    /// Bytes queued at most (a frame alone in the queue always fits).
    max_bytes: usize,
    /// How the connection's surface writes deliveries.
    codec: CodecRef,
    /// Wakes the receiver when a frame is queued or the last sender goes.
    filled: Notify,
    /// Wakes a waiting `send` when the receiver freed a full queue or went
    /// away.
    drained: Notify,
    senders: AtomicUsize,
}

#[derive(Debug, Default)]
struct QueueState {
    frames: VecDeque<EncodedFrame>,
    /// Bytes of the queued frames.
    bytes: usize,
    /// A `send` found the queue full and waits for a pop.
    sender_waits: bool,
    receiver_gone: bool,
}

/// Buffers larger than this are released when the queue drains.
const KEEP_CAPACITY: usize = 16;

impl Queue {
    fn lock(&self) -> MutexGuard<'_, QueueState> {
        // Nothing panics while holding the lock; a poisoned queue is
        // still consistent.
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn pop(&self) -> Option<EncodedFrame> {
        let mut state = self.lock();
        let frame = state.frames.pop_front();
        if let Some(frame) = &frame {
            state.bytes -= frame.len();
        }
        if state.frames.is_empty() && state.frames.capacity() > KEEP_CAPACITY {
            state.frames = VecDeque::new();
        }
        // A `send` waits only after finding the queue full (under this
        // lock) and saying so: only then does a pop wake it; the others
        // skip `notify_waiters` and its lock.
        let wake = frame.is_some() && std::mem::take(&mut state.sender_waits);
        drop(state);
        if wake {
            self.drained.notify_waiters();
        }
        frame
    }

    /// Whether `len` more bytes fit (a frame alone always does).
    fn has_room(&self, state: &QueueState, len: usize) -> bool {
        state.frames.len() < self.capacity
            && (state.frames.is_empty() || state.bytes + len <= self.max_bytes)
    }

    fn try_push(&self, frame: EncodedFrame, waits: bool) -> Result<(), Offer> {
        let mut state = self.lock();
        if state.receiver_gone {
            return Err(Offer::Closed);
        }
        if !self.has_room(&state, frame.len()) {
            state.sender_waits |= waits;
            return Err(Offer::SlowConsumer);
        }
        state.bytes += frame.len();
        state.frames.push_back(frame);
        drop(state);
        self.filled.notify_one();
        Ok(())
    }
}

/// The receiving end of a connection's queue, drained by its writer.
pub struct Receiver {
    queue: Arc<Queue>,
}

impl Receiver {
    /// The next frame; `None` once every sender is gone and the queue is
    /// empty.
    pub async fn recv(&mut self) -> Option<EncodedFrame> {
        loop {
            if let Some(frame) = self.queue.pop() {
                return Some(frame);
            }
            if self.queue.senders.load(Ordering::Acquire) == 0 {
                return self.queue.pop();
            }
            // `notify_one` stores a permit when nobody waits, so a frame
            // queued between the check and this wait is not missed.
            self.queue.filled.notified().await;
        }
    }

    /// The next frame if one is queued.
    pub fn try_recv(&mut self) -> Option<EncodedFrame> {
        self.queue.pop()
    }
}

impl Drop for Receiver {
    fn drop(&mut self) {
        let mut state = self.queue.lock();
        state.receiver_gone = true;
        state.frames = VecDeque::new();
        state.bytes = 0;
        drop(state);
        self.queue.drained.notify_waiters();
    }
}

/// The sending side of a connection: its bounded queue, its codec and its
/// kick.
pub struct Outbound {
    queue: Arc<Queue>,
    kick: Arc<Kick>,
}

impl Clone for Outbound {
    fn clone(&self) -> Self {
        self.queue.senders.fetch_add(1, Ordering::AcqRel);
        Outbound {
            queue: Arc::clone(&self.queue),
            kick: Arc::clone(&self.kick),
        }
    }
}

impl Drop for Outbound {
    fn drop(&mut self) {
        if self.queue.senders.fetch_sub(1, Ordering::AcqRel) == 1 {
            // The receiver sees no senders left once the queue is empty.
            self.queue.filled.notify_one();
        }
    }
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
    /// A connection's outbound side and the receiving end its writer drains;
    /// deliveries are written by `codec`. At most `capacity` frames queued.
    pub fn new(capacity: usize, codec: CodecRef) -> (Outbound, Receiver, Arc<Kick>) {
        Outbound::bounded(capacity, usize::MAX, codec)
    }

    /// As [`Outbound::new`], and at most `max_bytes` queued (replies and
    /// deliveries alike; a frame alone in the queue always fits).
    pub fn bounded(
        capacity: usize,
        max_bytes: usize,
        codec: CodecRef,
    ) -> (Outbound, Receiver, Arc<Kick>) {
        let queue = Arc::new(Queue {
            state: Mutex::new(QueueState::default()),
            capacity: capacity.max(1),
            max_bytes,
            codec,
            filled: Notify::new(),
            drained: Notify::new(),
            senders: AtomicUsize::new(1),
        });
        let kick = Arc::new(Kick::default());
        let receiver = Receiver {
            queue: Arc::clone(&queue),
        };
        (
            Outbound {
                queue,
                kick: Arc::clone(&kick),
            },
            receiver,
            kick,
        )
    }

    /// Queues a frame without waiting. A full queue means the client does
    /// not keep up: it is kicked rather than allowed to grow memory.
    pub fn offer(&self, frame: EncodedFrame) -> Offer {
        match self.queue.try_push(frame, false) {
            Ok(()) => Offer::Queued,
            Err(Offer::SlowConsumer) => {
                if self.kick.kick(DisconnectReason::SlowConsumer) {
                    Offer::SlowConsumer
                } else {
                    Offer::Closed
                }
            }
            Err(other) => other,
        }
    }

    /// Queues a frame, waiting for room: for replies, which only the
    /// connection's own requests produce.
    pub async fn send(&self, frame: EncodedFrame) -> bool {
        let wait_for_room = async {
            loop {
                let drained = self.queue.drained.notified();
                tokio::pin!(drained);
                // Registered before the check: a drain in between wakes it.
                drained.as_mut().enable();
                match self.queue.try_push(frame.clone(), true) {
                    Ok(()) => return true,
                    Err(Offer::Closed) => return false,
                    Err(_) => drained.await,
                }
            }
        };
        tokio::select! {
            sent = wait_for_room => sent,
            _ = self.kick.kicked() => false,
        }
    }

    pub fn kick(&self) -> &Kick {
        &self.kick
    }

    /// The codec of the connection's surface.
    pub fn codec(&self) -> CodecRef {
        self.queue.codec
    }
}

/// A connection's identity: a node-local number, which indexes it in the
/// hub, and a cluster-wide unique id, which names it in presence and logs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConnId {
    local: u64,
    id: Arc<str>,
}

impl ConnId {
    pub fn new(local: u64, id: impl Into<Arc<str>>) -> Self {
        ConnId {
            local,
            id: id.into(),
        }
    }

    /// The node-local number.
    pub fn local(&self) -> u64 {
        self.local
    }

    /// The cluster-wide id (`c-<16 hex digits>` for Herald's surfaces).
    pub fn as_str(&self) -> &str {
        &self.id
    }
}

impl std::fmt::Display for ConnId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.id)
    }
}

/// A connection subscribed to a channel.
#[derive(Clone)]
pub struct Subscriber {
    pub conn: ConnId,
    pub outbound: Outbound,
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::codec::NATIVE;
    use std::time::Duration;

    fn frame(text: &str) -> EncodedFrame {
        EncodedFrame::from_string(text.to_owned())
    }

    #[tokio::test]
    async fn frames_arrive_in_order_and_the_end_is_seen_after_the_last() {
        let (outbound, mut rx, _kick) = Outbound::new(8, &NATIVE);
        let hub_side = outbound.clone();
        assert_eq!(outbound.offer(frame("a")), Offer::Queued);
        assert_eq!(hub_side.offer(frame("b")), Offer::Queued);
        drop(outbound);
        assert_eq!(rx.recv().await.unwrap().as_str(), "a");
        drop(hub_side);
        assert_eq!(rx.recv().await.unwrap().as_str(), "b");
        assert!(rx.recv().await.is_none());
    }

    #[tokio::test]
    async fn a_waiting_receiver_is_woken_by_an_offer_from_another_task() {
        let (outbound, mut rx, _kick) = Outbound::new(8, &NATIVE);
        let waiter = tokio::spawn(async move { rx.recv().await.map(|f| f.as_str().to_owned()) });
        tokio::time::sleep(Duration::from_millis(20)).await;
        outbound.offer(frame("late"));
        let got = tokio::time::timeout(Duration::from_secs(5), waiter).await;
        assert_eq!(got.unwrap().unwrap().as_deref(), Some("late"));
    }

    #[tokio::test]
    async fn a_full_queue_kicks_a_slow_consumer_once() {
        let (outbound, _rx, kick) = Outbound::new(2, &NATIVE);
        assert_eq!(outbound.offer(frame("1")), Offer::Queued);
        assert_eq!(outbound.offer(frame("2")), Offer::Queued);
        assert_eq!(outbound.offer(frame("3")), Offer::SlowConsumer);
        assert_eq!(kick.reason(), Some(DisconnectReason::SlowConsumer));
        assert_eq!(outbound.offer(frame("4")), Offer::Closed);
    }

    #[tokio::test]
    async fn send_waits_for_room_instead_of_kicking() {
        let (outbound, mut rx, kick) = Outbound::new(1, &NATIVE);
        assert_eq!(outbound.offer(frame("event")), Offer::Queued);
        let sender = outbound.clone();
        let reply = tokio::spawn(async move { sender.send(frame("reply")).await });
        tokio::time::sleep(Duration::from_millis(20)).await;
        assert!(!reply.is_finished(), "the queue is full: send must wait");
        assert_eq!(rx.recv().await.unwrap().as_str(), "event");
        let sent = tokio::time::timeout(Duration::from_secs(5), reply).await;
        assert!(sent.unwrap().unwrap());
        assert_eq!(rx.recv().await.unwrap().as_str(), "reply");
        assert_eq!(kick.reason(), None);
    }

    #[tokio::test]
    async fn a_gone_receiver_closes_the_queue_and_releases_waiting_senders() {
        let (outbound, rx, _kick) = Outbound::new(1, &NATIVE);
        outbound.offer(frame("x"));
        let sender = outbound.clone();
        let waiting = tokio::spawn(async move { sender.send(frame("y")).await });
        tokio::time::sleep(Duration::from_millis(20)).await;
        drop(rx);
        let sent = tokio::time::timeout(Duration::from_secs(5), waiting).await;
        assert!(!sent.unwrap().unwrap());
        assert_eq!(outbound.offer(frame("z")), Offer::Closed);
    }

    #[tokio::test]
    async fn bytes_are_bounded_for_deliveries_and_replies() {
        let (outbound, mut rx, kick) = Outbound::bounded(100, 10, &NATIVE);
        // A frame alone always fits, however large.
        assert_eq!(outbound.offer(frame("0123456789abc")), Offer::Queued);
        let sender = outbound.clone();
        let reply = tokio::spawn(async move { sender.send(frame("reply")).await });
        tokio::time::sleep(Duration::from_millis(20)).await;
        assert!(
            !reply.is_finished(),
            "13 + 5 bytes exceed 10: send must wait"
        );
        assert_eq!(rx.recv().await.unwrap().as_str(), "0123456789abc");
        let sent = tokio::time::timeout(Duration::from_secs(5), reply).await;
        assert!(sent.unwrap().unwrap());
        assert_eq!(outbound.offer(frame("12345")), Offer::Queued);
        // 5 + 5 + 1 > 10: a delivery over the bound kicks.
        assert_eq!(outbound.offer(frame("x")), Offer::SlowConsumer);
        assert_eq!(kick.reason(), Some(DisconnectReason::SlowConsumer));
        assert_eq!(rx.try_recv().unwrap().as_str(), "reply");
    }

    #[tokio::test]
    async fn a_drained_queue_gives_back_a_grown_buffer() {
        let (outbound, mut rx, _kick) = Outbound::new(1000, &NATIVE);
        for i in 0..500 {
            outbound.offer(frame(&i.to_string()));
        }
        assert!(outbound.queue.lock().frames.capacity() >= 500);
        while rx.try_recv().is_some() {}
        assert_eq!(outbound.queue.lock().frames.capacity(), 0);
    }
}
