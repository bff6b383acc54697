//! Publishing: a session's `publish` (with the app's
//! `publish_requires_subscription` rule), and the publish step the server
//! API shares.

use super::{error, key_error, Operation, Session};
use crate::auth::{App, Identity};
use crate::state::AppState;
use herald_broker_node::backplane::Idempotency;
use herald_broker_node::key::validate_event_name;
use herald_broker_node::ChannelKey;
use herald_history::Publication;
use herald_protocol::client::ChannelRef;
use herald_protocol::{now_ms, timestamp_string, ErrorBody, ErrorCode};
use serde_json::value::RawValue;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Longest `idempotencyKey` accepted, in bytes.
pub const MAX_IDEMPOTENCY_KEY: usize = 128;

impl Session {
    /// Publishes on a channel as this connection. Where the app says so,
    /// only on a channel the connection is subscribed to.
    pub async fn publish(
        &mut self,
        channel: &ChannelRef,
        event: Option<String>,
        payload: Box<RawValue>,
        idempotency_key: Option<&str>,
    ) -> Result<Accepted, ErrorBody> {
        let key = self.resolve(channel, Operation::Publish).await?;
        if self.app.config.publish_requires_subscription
            && !self.state.node.is_subscribed(&key, &self.conn)
        {
            return Err(error(
                ErrorCode::RealtimeNotSubscribed,
                format!("subscribe to `{}` before publishing on it", channel.channel),
            ));
        }
        let outgoing = Outgoing {
            event,
            payload: Arc::from(payload),
            idempotency_key,
            surface: self.surface,
        };
        publish(&self.state, &self.app, &self.identity, &key, outgoing).await
    }
}

/// A publication that was accepted. Both fields are `None` when it went
/// nowhere: no subscriber anywhere and no history kept.
#[derive(Debug)]
pub struct Accepted {
    pub event_id: Option<String>,
    pub event_timestamp: Option<String>,
}

/// What a caller asks to publish.
pub struct Outgoing<'a> {
    /// Default `"message"`.
    pub event: Option<String>,
    pub payload: Arc<RawValue>,
    pub idempotency_key: Option<&'a str>,
    /// `ws` or `http`, for metrics.
    pub surface: &'static str,
}

/// Publishes on a resolved channel: the step every surface's publish ends
/// in, after its own checks.
pub async fn publish(
    state: &AppState,
    app: &App,
    identity: &Identity,
    key: &ChannelKey,
    outgoing: Outgoing<'_>,
) -> Result<Accepted, ErrorBody> {
    let Outgoing {
        event,
        payload,
        idempotency_key,
        surface,
    } = outgoing;
    let started = Instant::now();
    let event = event.unwrap_or_else(|| "message".to_owned());
    validate_event_name(&event).map_err(key_error)?;
    let size = payload.get().len();
    if size > state.config.max_payload_bytes {
        return Err(error(
            ErrorCode::PayloadTooLarge,
            format!(
                "payload is {size} bytes; at most {} allowed",
                state.config.max_payload_bytes
            ),
        ));
    }
    if let Some(k) = idempotency_key {
        if k.is_empty() || k.len() > MAX_IDEMPOTENCY_KEY {
            return Err(error(
                ErrorCode::RealtimeInvalidChannelRequest,
                format!("idempotencyKey must be 1 to {MAX_IDEMPOTENCY_KEY} bytes"),
            ));
        }
    }
    let idempotency = idempotency_key.map(|key| Idempotency {
        key,
        window: Duration::from_secs(state.config.idempotency_window_seconds),
    });
    let now = now_ms();
    let publication = Arc::new(Publication {
        message_id: format!("m-{}", uuid::Uuid::new_v4().simple()),
        event,
        payload,
        sender_type: identity.sender_type(),
        sender_id: identity.sub().map(str::to_owned),
        timestamp_ms: now,
        trace: None,
    });
    let published = state
        .node
        .publish(
            key,
            Arc::clone(&publication),
            app.retention,
            idempotency,
            now,
        )
        .await
        .map_err(|e| {
            tracing::warn!(error = %e, channel = key.name(), app = app.id(), "publish failed");
            error(ErrorCode::PublishFailed, "")
        })?;
    if let Some(first) = published.repeat_of {
        // Published before under this key: answer as the first time.
        return Ok(Accepted {
            event_timestamp: first
                .message_id
                .as_ref()
                .map(|_| timestamp_string(first.timestamp_ms)),
            event_id: first.message_id,
        });
    }
    state.metrics.published.with_label_values(&[surface]).inc();
    state
        .metrics
        .publish_seconds
        .observe(started.elapsed().as_secs_f64());
    Ok(match published.position {
        Some(_) => Accepted {
            event_id: Some(publication.message_id.clone()),
            event_timestamp: Some(timestamp_string(now)),
        },
        None => Accepted {
            event_id: None,
            event_timestamp: None,
        },
    })
}
