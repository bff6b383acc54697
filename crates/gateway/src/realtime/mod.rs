//! The realtime rules every surface shares.
//!
//! Here: checking a channel request in Forge's order and resolving its key
//! ([`resolve`]), charging the app's operation allowance ([`charge`]).
//! A client connection is a [`Session`]; its operations are one per file
//! (`subscribe.rs`, `unsubscribe.rs`, `publish.rs`, `presence.rs`,
//! `history.rs`, `refresh.rs`), each returning a typed outcome that the
//! surface renders in its own wire format; `flood.rs` gates a connection's
//! frames. The server API shares `resolve` and [`publish::publish`].

mod flood;
mod history;
mod presence;
pub mod publish;
mod refresh;
mod session;
mod subscribe;
mod unsubscribe;

#[cfg(test)]
mod tests;

pub use flood::{FloodGate, Gate};
pub use history::HistoryPage;
pub use presence::capped;
pub use publish::{Accepted, Outgoing, MAX_IDEMPOTENCY_KEY};
pub use refresh::Refreshed;
pub use session::Session;
pub use subscribe::{recovery, Subscribed};

use crate::auth::{verify_channel_token, App};
use crate::edge::rate_limited;
use crate::state::{clients_key, AppState};
use herald_broker_node::{ChannelKey, KeyError, Scope};
use herald_protocol::api::Permission;
use herald_protocol::{ErrorBody, ErrorCode};
use herald_rate_limiter::Decision;
use serde_json::{Map, Value};

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
    /// The client, for its share of the app's operations (`user:<sub>`,
    /// `ip:<address>`); `None` for the app's backend.
    pub client: Option<&'a str>,
    /// The surface requires an enabled channel definition whatever the
    /// app's `require_channel_definitions` says (Socket.IO, by default).
    pub require_definition: bool,
}

pub fn error(code: ErrorCode, detail: impl Into<String>) -> ErrorBody {
    ErrorBody::new(code, detail)
}

/// Takes one realtime operation from the app's allowance; for a client
/// (`Some(key)`: `user:<sub>` or `ip:<address>`), first from that client's
/// share and from this gateway's share of what client connections together
/// may use (both local), so that no client drains the app and the backend
/// keeps its reserve.
pub async fn charge(
    state: &AppState,
    app: &App,
    client: Option<&str>,
) -> Result<Decision, ErrorBody> {
    let metrics = &state.metrics;
    let refuse = |kind: &str, wait| {
        metrics
            .ratelimit_rejections
            .with_label_values(&[kind, app.id()])
            .inc();
        Err(rate_limited(wait))
    };
    if let Some(client) = client {
        metrics
            .ratelimit_checks
            .with_label_values(&["ops_client"])
            .inc();
        let share = state.client_ops.get(app.id());
        if let Some(wait) = share.and_then(|l| l.check(&client.to_owned())) {
            return refuse("ops_client", wait);
        }
        if app.config.clients_ops_limit().is_some() {
            metrics
                .ratelimit_checks
                .with_label_values(&["ops_clients"])
                .inc();
            // This gateway's share of the clients' allowance: the gateways
            // together never exceed it, and a client operation keeps to
            // one round trip to the store (the app's limit).
            let decision = state.ops.check_local(&clients_key(app.id()));
            if !decision.allowed {
                return refuse("ops_clients", decision.retry_after);
            }
        }
    }
    let decision = state.ops.check(app.id()).await;
    metrics.ratelimit_checks.with_label_values(&["ops"]).inc();
    if decision.allowed {
        return Ok(decision);
    }
    refuse("ops", decision.retry_after)
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
        true => Some(charge(state, app, spec.client).await?),
        false => None,
    };
    if let Some(grant) = &grant {
        if !grant.allows(op.permission()) {
            return Err(error(ErrorCode::Unauthorized, ""));
        }
    }
    herald_broker_node::key::validate_channel_name(spec.channel).map_err(key_error)?;
    if (app.config.require_channel_definitions || spec.require_definition)
        && !state.definitions.allows(&app.config, spec.channel)
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
