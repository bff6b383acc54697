//! The realtime operations both surfaces share (WebSocket frames and the
//! server API): checking a channel request in Forge's order, resolving its
//! key, and publishing.

use crate::auth::{verify_channel_token, App, Identity};
use crate::state::{now_ms, AppState};
use herald_broker_node::backplane::Idempotency;
use herald_broker_node::key::validate_event_name;
use herald_broker_node::{ChannelKey, KeyError, Scope};
use herald_history::Publication;
use herald_protocol::api::Permission;
use herald_protocol::{timestamp_string, ErrorBody, ErrorCode};
use herald_rate_limiter::Decision;
use serde_json::value::RawValue;
use serde_json::{Map, Value};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Longest `idempotencyKey` accepted, in bytes.
pub const MAX_IDEMPOTENCY_KEY: usize = 128;

/// What a channel request is for; decides which checks apply.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Operation {
    Subscribe,
    Publish,
    /// Reading presence or history: needs subscribe rights, not counted.
    Read,
}

impl Operation {
    fn permission(self) -> Permission {
        match self {
            Operation::Publish => Permission::Publish,
            Operation::Subscribe | Operation::Read => Permission::Subscribe,
        }
    }

    fn counted(self) -> bool {
        !matches!(self, Operation::Read)
    }
}

/// A channel as a request names it.
pub struct ChannelSpec<'a> {
    pub channel: &'a str,
    pub global: bool,
    pub token: Option<&'a str>,
    pub context_overrides: Option<&'a [String]>,
    /// The product context the caller speaks for.
    pub context: &'a Map<String, Value>,
}

pub fn error(code: ErrorCode, detail: impl Into<String>) -> ErrorBody {
    ErrorBody::new(code, detail)
}

/// Takes one realtime operation from the app's allowance.
pub async fn charge(state: &AppState, app: &App) -> Result<Decision, ErrorBody> {
    let decision = state.ops.check(app.id()).await;
    state
        .metrics
        .ratelimit_checks
        .with_label_values(&["ops"])
        .inc();
    if decision.allowed {
        return Ok(decision);
    }
    state
        .metrics
        .ratelimit_rejections
        .with_label_values(&["ops", app.id()])
        .inc();
    Err(rate_limited(decision))
}

/// `RATE_LIMIT_EXCEEDED` with its retry hint.
pub fn rate_limited(decision: Decision) -> ErrorBody {
    let mut e = error(ErrorCode::RateLimitExceeded, "");
    e.retry_after_ms = Some(decision.retry_after.as_millis().max(1) as u64);
    e
}

/// Checks a channel request and resolves the key it meets others on.
///
/// The order is Forge's: the channel token is prevalidated first, and a
/// request it rejects does not count toward the rate limit; everything
/// rejected after the limit is charged has counted.
pub async fn resolve(
    state: &AppState,
    app: &App,
    spec: &ChannelSpec<'_>,
    op: Operation,
) -> Result<(ChannelKey, Option<Decision>), ErrorBody> {
    let grant = match spec.token {
        Some(token) => Some(verify_channel_token(app, token, spec.channel)?),
        None => None,
    };
    let decision = match op.counted() {
        true => Some(charge(state, app).await?),
        false => None,
    };
    if let Some(grant) = &grant {
        if !grant.allows(op.permission()) {
            return Err(error(ErrorCode::Unauthorized, ""));
        }
    }
    herald_broker_node::key::validate_channel_name(spec.channel).map_err(key_error)?;
    if app.config.require_channel_definitions
        && !app
            .config
            .channels
            .iter()
            .any(|d| d.enabled && d.matches(spec.channel))
    {
        return Err(error(
            ErrorCode::RealtimeChannelNotFound,
            format!("no enabled channel definition matches `{}`", spec.channel),
        ));
    }
    let scope = if spec.global {
        if spec.context_overrides.is_some_and(|o| !o.is_empty()) {
            return Err(error(
                ErrorCode::RealtimeInvalidChannelRequest,
                "contextOverrides applies to scoped channels only",
            ));
        }
        Scope::Global
    } else {
        Scope::Context {
            context: spec.context,
            overrides: spec.context_overrides,
        }
    };
    let claims = grant.as_ref().map(|g| &g.claims);
    let key = ChannelKey::new(app.id(), spec.channel, &scope, claims).map_err(key_error)?;
    Ok((key, decision))
}

pub fn key_error(e: KeyError) -> ErrorBody {
    match e {
        KeyError::InvalidChannel(m) => error(ErrorCode::RealtimeInvalidChannelRequest, m),
        KeyError::InvalidEvent(m) => error(ErrorCode::RealtimeInvalidEvent, m),
    }
}

/// A publication that was accepted. Both fields are `None` when it went
/// nowhere: no subscriber anywhere and no history kept.
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

/// Publishes on a resolved channel.
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
