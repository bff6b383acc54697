//! Publishing: a session's `publish` (with the app's
//! `publish_requires_subscription` rule), and the publish step the server
//! API shares.

use super::{error, key_error, Operation, Session};
use crate::auth::{App, Identity};
use crate::config::{matches_pattern, AppConfig};
use crate::state::AppState;
use herald_broker_node::backplane::{Dispatch, Idempotency};
use herald_broker_node::key::validate_event_name;
use herald_broker_node::ChannelKey;
use herald_dispatch::Head;
use herald_history::Publication;
use herald_protocol::client::ChannelRef;
use herald_protocol::{now_ms, timestamp_string, ErrorBody, ErrorCode};
use serde_json::value::RawValue;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Whether a client connection's identity may publish on `channel` under
/// the app's publish rules (the app's backend always may).
fn may_publish(
    app: &AppConfig,
    identity: &Identity,
    channel: &ChannelRef,
) -> Result<(), ErrorBody> {
    let refuse = |why: String| Err(error(ErrorCode::Unauthorized, why));
    match identity {
        Identity::System => Ok(()),
        Identity::Anonymous if !app.anonymous_publish => {
            refuse("anonymous connections may not publish in this app".into())
        }
        _ if channel.global && !app.user_publish_global => {
            refuse("clients may not publish on global channels in this app".into())
        }
        _ if app
            .server_only_channels
            .iter()
            .any(|pattern| matches_pattern(pattern, &channel.channel)) =>
        {
            refuse(format!(
                "only the app's backend publishes on `{}`",
                channel.channel
            ))
        }
        _ => Ok(()),
    }
}

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
        // The app's publish rules refuse before anything is charged.
        may_publish(&self.app.config, &self.identity, channel)?;
        let key = self.resolve(channel, Operation::Publish).await?;
        let message = crate::permissions::MessageView {
            event: event.as_deref().unwrap_or("message"),
            payload: payload.get(),
        };
        self.permit(&key, "publish", Some(message))?;
        if self.app.config.publish_requires_subscription
            && !self.state.node.is_subscribed(&key, &self.conn)
        {
            return Err(error(
                ErrorCode::RealtimeNotSubscribed,
                format!("subscribe to `{}` before publishing on it", channel.channel),
            ));
        }
        let sender = match &self.identity {
            Identity::User { sub, .. } => format!("user:{sub}"),
            Identity::System => "app".to_owned(),
            Identity::Anonymous => format!("anonymous:{}", self.conn),
        };
        let outgoing = Outgoing {
            event,
            payload: Arc::from(payload),
            idempotency_key,
            sender: &sender,
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
    /// Who publishes, for the idempotency scope: `app` (an app backend),
    /// `user:<sub>`, `anonymous:<connection id>`. A key is remembered per
    /// (channel, sender, key), so no one can answer for another's key.
    pub sender: &'a str,
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
        sender,
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
    let max_depth = state.config.max_payload_depth;
    if let Some(depth) = nesting_beyond(payload.get(), max_depth) {
        return Err(error(
            ErrorCode::PayloadTooLarge,
            format!("payload is nested {depth} levels deep; at most {max_depth} allowed"),
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
    // Length-prefixed, so no sender and key can spell another's.
    let scoped = idempotency_key.map(|key| format!("{}:{sender}:{key}", sender.len()));
    let idempotency = scoped.as_deref().map(|key| Idempotency {
        key,
        window: Duration::from_secs(state.config.idempotency_window_seconds),
    });
    let now = now_ms();
    // A channel with a definition in the store: the message is logged and
    // goes to the definition's webhooks.
    let governing = key
        .global()
        .then(|| state.definitions.governing(app.id(), key.name()))
        .flatten();
    let head = governing.map(|d| Head {
        channel: key.name().to_owned(),
        definition: d.id,
        urls: d.webhook_urls,
    });
    // The stream's head is for Redis; embedded, the log is written below.
    let head_json = match (&head, &state.config.redis_url) {
        (Some(head), Some(_)) => Some(serde_json::to_string(head).map_err(|e| {
            tracing::error!(error = %e, "dispatch head not encodable");
            error(ErrorCode::PublishFailed, "")
        })?),
        _ => None,
    };
    let dispatch = head_json.as_deref().map(|head| Dispatch {
        app: app.id(),
        head,
        max: state.config.dispatch_stream_max,
    });
    let publication = Arc::new(Publication {
        message_id: format!("m-{}", uuid::Uuid::new_v4().simple()),
        event,
        payload,
        sender_type: identity.sender_type(),
        sender_id: identity.sub().map(str::to_owned),
        timestamp_ms: now,
        trace: None,
        logged: head.is_some(),
    });
    let published = state
        .node
        .publish(
            key,
            Arc::clone(&publication),
            app.retention,
            idempotency,
            dispatch,
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
    // Embedded: the log row and webhook deliveries are written before the
    // publisher is answered (a cluster's went into the dispatch stream).
    if let (Some(head), Some(log)) = (head.clone(), &state.embedded_log) {
        if let Err(e) = log
            .log(herald_dispatch::message(app.id(), head, &publication))
            .await
        {
            tracing::warn!(error = %e, channel = key.name(), app = app.id(), "publish not logged");
            // Reported failed: a retry with the key publishes again.
            if let Some(i) = idempotency {
                state.node.forget_idempotency(key, i).await;
            }
            return Err(error(ErrorCode::PublishFailed, ""));
        }
    }
    state.metrics.published.with_label_values(&[surface]).inc();
    state
        .metrics
        .publish_seconds
        .observe(started.elapsed().as_secs_f64());
    Ok(match (published.position, &head) {
        (Some(_), _) | (None, Some(_)) => Accepted {
            event_id: Some(publication.message_id.clone()),
            event_timestamp: Some(timestamp_string(now)),
        },
        (None, None) => Accepted {
            event_id: None,
            event_timestamp: None,
        },
    })
}

/// The nesting depth of JSON `text` (each array or object one level) when
/// it goes beyond `max`, found without parsing; `None` within it. Deep
/// payloads are refused so that no client's parser (serde_json stops at
/// 128 levels) meets one it cannot read.
pub fn nesting_beyond(text: &str, max: usize) -> Option<usize> {
    let (mut depth, mut in_string, mut escaped) = (0usize, false, false);
    for byte in text.bytes() {
        if in_string {
            match byte {
                _ if escaped => escaped = false,
                b'\\' => escaped = true,
                b'"' => in_string = false,
                _ => {}
            }
            continue;
        }
        match byte {
            b'"' => in_string = true,
            b'[' | b'{' => {
                depth += 1;
                if depth > max {
                    return Some(depth);
                }
            }
            b']' | b'}' => depth = depth.saturating_sub(1),
            _ => {}
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::nesting_beyond;

    #[test]
    fn nesting_is_counted_outside_strings_only() {
        assert_eq!(nesting_beyond("1", 0), None);
        assert_eq!(nesting_beyond("[]", 0), Some(1));
        assert_eq!(nesting_beyond("[[{}]]", 3), None);
        assert_eq!(nesting_beyond("[[{}]]", 2), Some(3));
        assert_eq!(nesting_beyond(r#"{"a":"[[[[\"[["}"#, 1), None);
        assert_eq!(nesting_beyond(r#"["\\",[[]]]"#, 2), Some(3));
        let deep = format!("{}{}", "[".repeat(65), "]".repeat(65));
        assert_eq!(nesting_beyond(&deep, 64), Some(65));
        assert_eq!(nesting_beyond(&deep, 65), None);
    }
}
