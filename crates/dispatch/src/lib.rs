//! Durable delivery: what a publication on a channel with a definition
//! causes after it has been delivered to sockets.
//!
//! The publish path appends each such publication to its app's dispatch
//! stream in Redis (in the publish script's round trip). Workers here read
//! the streams as a consumer group (`stream`): each entry becomes a row of
//! the message log and one scheduled webhook delivery per URL, written in
//! one transaction, and only then is the entry acknowledged. Webhook
//! senders (`webhook`) lease due deliveries from the database, so one
//! attempt at a time goes out per message and URL however many workers
//! run, and a dead sender's leases run out for another to take. An
//! embedded gateway has no Redis: it writes the same rows in its publish
//! path (`Embedded`), batched, before answering the publisher.
//!
//! Later work (product-event triggers) reuses the stream reader and the
//! sender.

pub mod retention;
pub mod sign;
pub mod stream;
pub mod webhook;

use herald_history::Publication;
use herald_store::messages::NewMessage;
use herald_store::{Store, StoreError};
use serde::{Deserialize, Serialize};
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::sync::Arc;
use tokio::sync::{mpsc, oneshot};

/// What a dispatch entry carries beside the publication: where it was
/// published and what its definition asked for at that moment.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct Head {
    /// The channel's name.
    #[serde(rename = "c")]
    pub channel: String,
    /// The id of the channel's definition.
    #[serde(rename = "d")]
    pub definition: String,
    /// The definition's webhook URLs.
    #[serde(rename = "u", default, skip_serializing_if = "Vec::is_empty")]
    pub urls: Vec<String>,
}

/// Counters of the dispatch machinery, read by the gateway's metrics.
#[derive(Debug, Default)]
pub struct Stats {
    /// Messages written to the log (including redeliveries absorbed).
    pub logged: AtomicU64,
    /// Entries that could not be read and were dropped (and logged).
    pub malformed: AtomicU64,
    /// Entries taken over from a worker that did not acknowledge them.
    pub claimed: AtomicU64,
    pub store_errors: AtomicU64,
    pub stream_errors: AtomicU64,
    /// Webhook attempts by outcome.
    pub delivered: AtomicU64,
    pub retried: AtomicU64,
    pub failed: AtomicU64,
    pub gone: AtomicU64,
    /// Attempts refused before sending: the target is in a private range.
    pub refused: AtomicU64,
    /// Entries in the dispatch streams not yet acknowledged (all apps).
    pub stream_depth: AtomicI64,
    /// Age of the oldest such entry, ms.
    pub stream_lag_ms: AtomicI64,
    /// Webhook deliveries pending, and the age of the oldest, ms.
    pub webhook_pending: AtomicI64,
    pub webhook_lag_ms: AtomicI64,
    /// Messages deleted by the retention job.
    pub retention_deleted: AtomicU64,
}

/// The log row of a publication.
pub fn message(app: &str, head: Head, publication: &Publication) -> NewMessage {
    NewMessage {
        id: publication.message_id.clone(),
        app: app.to_owned(),
        event_name: publication.event.clone(),
        channel_id: Some(head.definition),
        channel_name: head.channel,
        payload: publication.payload.get().to_owned(),
        sender_type: sender_type(publication).to_owned(),
        sender_id: publication.sender_id.clone(),
        webhook_urls: head.urls,
        trace: publication.trace.clone(),
        created_at_ms: publication.timestamp_ms as i64,
    }
}

fn sender_type(publication: &Publication) -> &'static str {
    // InsForge's two sender types: the app's backend is `system`.
    match publication.sender_type {
        herald_protocol::server::SenderType::System => "system",
        _ => "user",
    }
}

/// Drops URLs disabled (410 Gone) for the message's channel.
pub fn without_disabled(message: &mut NewMessage, disabled: &[(String, String)]) {
    if let Some(channel) = &message.channel_id {
        message
            .webhook_urls
            .retain(|u| !disabled.iter().any(|(c, d)| c == channel && d == u));
    }
}

/// Most messages an embedded gateway writes in one transaction.
const EMBEDDED_BATCH: usize = 512;

/// An embedded gateway's dispatch: the log rows and webhook deliveries are
/// written in the publish path, batched with whatever else is being
/// published, before the publisher is answered.
#[derive(Clone)]
pub struct Embedded {
    tx: mpsc::Sender<(NewMessage, oneshot::Sender<Result<(), String>>)>,
}

impl Embedded {
    pub fn start(store: Store, stats: Arc<Stats>) -> Embedded {
        let (tx, mut rx) =
            mpsc::channel::<(NewMessage, oneshot::Sender<Result<(), String>>)>(EMBEDDED_BATCH * 4);
        tokio::spawn(async move {
            let mut batch = Vec::with_capacity(EMBEDDED_BATCH);
            while rx.recv_many(&mut batch, EMBEDDED_BATCH).await > 0 {
                let (mut messages, answers): (Vec<_>, Vec<_>) = batch.drain(..).unzip();
                let result = write(&store, &mut messages).await;
                match &result {
                    Ok(()) => {
                        stats
                            .logged
                            .fetch_add(messages.len() as u64, Ordering::Relaxed);
                    }
                    Err(e) => {
                        stats.store_errors.fetch_add(1, Ordering::Relaxed);
                        tracing::warn!(error = %e, "cannot write the message log");
                    }
                }
                for answer in answers {
                    let _ = answer.send(result.as_ref().map(|_| ()).map_err(|e| e.to_string()));
                }
            }
        });
        Embedded { tx }
    }

    /// Writes one message's row and deliveries; returns once committed.
    pub async fn log(&self, message: NewMessage) -> Result<(), String> {
        let (done, result) = oneshot::channel();
        self.tx
            .send((message, done))
            .await
            .map_err(|_| "the message log writer stopped".to_owned())?;
        result
            .await
            .map_err(|_| "the message log writer stopped".to_owned())?
    }
}

async fn write(store: &Store, messages: &mut [NewMessage]) -> Result<(), StoreError> {
    if messages.iter().any(|m| !m.webhook_urls.is_empty()) {
        let disabled = store.disabled_webhooks().await?;
        for m in messages.iter_mut() {
            without_disabled(m, &disabled);
        }
    }
    store.log_messages(messages).await
}
