//! A client connection as the realtime rules see it, whatever its surface:
//! who it is, which app it belongs to, what it is subscribed to.

use super::{ChannelSpec, Operation};
use crate::auth::{App, Identity};
use crate::edge::rate_limited;
use crate::state::AppState;
use herald_broker_node::{ChannelKey, ConnId, Outbound};
use herald_protocol::client::ChannelRef;
use herald_protocol::server::Member;
use herald_protocol::{now_ms, timestamp_string, ErrorBody};
use herald_rate_limiter::{Cell, Limit};
use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::Arc;
use std::time::Duration;
use tokio::time::Instant;

pub struct Session {
    pub(super) state: Arc<AppState>,
    pub(super) app: Arc<App>,
    pub(super) identity: Identity,
    pub(super) conn: ConnId,
    /// The connection's queue; deliveries are written by its codec.
    pub(super) outbound: Outbound,
    /// The surface's name, for metrics (`ws`, ...).
    pub(super) surface: &'static str,
    /// One subscription per (channel name, global); subscribing the same
    /// name again with another token or context replaces it.
    pub(super) subscriptions: HashMap<(String, bool), ChannelKey>,
    /// The connection's allowance of `presence` and `history` requests,
    /// made on the first one: an idle connection does not pay for it.
    reads: Option<Box<Cell>>,
    /// The client, for its share of the app's operations: `user:<sub>`, or
    /// `ip:<address>` for anonymous connections; `None` for the app's
    /// backend (an API-key connection).
    client: Option<String>,
}

impl Session {
    pub fn new(
        state: Arc<AppState>,
        app: Arc<App>,
        identity: Identity,
        conn: ConnId,
        outbound: Outbound,
        surface: &'static str,
        ip: IpAddr,
    ) -> Self {
        let client = match &identity {
            Identity::User { sub, .. } => Some(format!("user:{sub}")),
            Identity::Anonymous => Some(format!("ip:{ip}")),
            Identity::System => None,
        };
        Session {
            state,
            app,
            identity,
            conn,
            outbound,
            surface,
            subscriptions: HashMap::new(),
            reads: None,
            client,
        }
    }

    /// Takes one read (`presence`, `history`) from the connection's
    /// allowance: reads are answered with whole lists, so they are limited
    /// apart from the app's operations, which they do not count toward.
    pub(super) fn charge_read(&mut self) -> Result<(), ErrorBody> {
        if self.reads.is_none() {
            let config = &self.state.config;
            let limit = Limit {
                per_second: config.reads_per_second_per_connection,
                burst: config.reads_burst_per_connection.max(1),
            };
            match Cell::new(limit) {
                Some(cell) => self.reads = Some(Box::new(cell)),
                None => return Ok(()),
            }
        }
        let Some(reads) = &self.reads else {
            return Ok(());
        };
        let metrics = &self.state.metrics;
        metrics.ratelimit_checks.with_label_values(&["reads"]).inc();
        let decision = reads.check();
        if decision.allowed {
            return Ok(());
        }
        metrics
            .ratelimit_rejections
            .with_label_values(&["reads", self.app.id()])
            .inc();
        Err(rate_limited(decision.retry_after))
    }

    /// What every handler shares, for the surface's own limits and metrics.
    pub fn state(&self) -> &AppState {
        &self.state
    }

    pub fn app_id(&self) -> &str {
        self.app.id()
    }

    pub fn conn(&self) -> &ConnId {
        &self.conn
    }

    pub fn identity(&self) -> &Identity {
        &self.identity
    }

    /// The connection's queue, for the surface's replies.
    pub fn outbound(&self) -> &Outbound {
        &self.outbound
    }

    /// Whether the connection holds a subscription to `name` (global or
    /// not).
    pub fn holds(&self, name: &str, global: bool) -> bool {
        self.subscriptions.contains_key(&(name.to_owned(), global))
    }

    /// How many channels the connection is subscribed to.
    pub fn subscription_count(&self) -> usize {
        self.subscriptions.len()
    }

    /// When the connection's user token expires (the surface ends the
    /// connection then); far away for other identities.
    pub fn expiry(&self) -> Instant {
        let far = Instant::now() + Duration::from_secs(365 * 24 * 3600);
        match self.identity.expires_at() {
            Some(exp) => {
                let left = exp.saturating_mul(1000).saturating_sub(now_ms());
                Instant::now() + Duration::from_millis(left)
            }
            None => far,
        }
    }

    /// The connection's presence id: a user's `sub` (one member however
    /// many connections it has), or the connection's own id. `None` where
    /// the app keeps no presence.
    pub fn presence_id(&self) -> Option<String> {
        self.app.config.presence.then(|| {
            self.identity
                .sub()
                .map_or_else(|| self.conn.as_str().to_owned(), str::to_owned)
        })
    }

    /// This connection as a presence member, joining now.
    pub(super) fn member(&self) -> Option<Member> {
        self.presence_id().map(|presence_id| Member {
            presence_id,
            kind: self.identity.sender_type(),
            joined_at: timestamp_string(now_ms()),
        })
    }

    pub(super) async fn resolve(
        &self,
        channel: &ChannelRef,
        op: Operation,
    ) -> Result<ChannelKey, ErrorBody> {
        let spec = ChannelSpec {
            channel: &channel.channel,
            global: channel.global,
            token: channel.token.as_deref(),
            context_overrides: channel.context_overrides.as_deref(),
            context: self.identity.context(),
            client: self.client.as_deref(),
            require_definition: self.definitions_required(),
        };
        super::resolve(&self.state, &self.app, &spec, op)
            .await
            .map(|(key, _)| key)
    }

    /// Checks the app's permission policies for `command` on a global
    /// channel with a definition in the store (`permissions.rs`).
    pub(super) fn permit(
        &self,
        key: &ChannelKey,
        command: &str,
        message: Option<crate::permissions::MessageView<'_>>,
    ) -> Result<(), ErrorBody> {
        if !key.global() || matches!(self.identity, Identity::System) {
            return Ok(());
        }
        let Some(policies) = self.state.definitions.policies(self.app.id()) else {
            return Ok(());
        };
        let list = match command {
            "subscribe" => &policies.subscribe,
            _ => &policies.publish,
        };
        if list.is_empty() {
            return Ok(());
        }
        let Some(def) = self.state.definitions.governing(self.app.id(), key.name()) else {
            return Ok(());
        };
        crate::permissions::check(
            list,
            &self.identity,
            command,
            key.name(),
            &def.pattern,
            message,
        )
    }

    /// Leaves a channel on the node (presence and hub); failures are
    /// logged, as there is no one left to tell.
    pub(super) async fn leave(&self, key: &ChannelKey) {
        let presence_id = self.presence_id();
        if let Err(e) = self
            .state
            .node
            .unsubscribe(key, &self.conn, presence_id.as_deref())
            .await
        {
            tracing::warn!(error = %e, channel = key.name(), "unsubscribe failed");
        }
    }

    /// Whether channels used on this connection need an enabled
    /// definition.
    pub fn definitions_required(&self) -> bool {
        self.app.config.require_channel_definitions
            || (self.surface == "socketio" && self.app.config.socketio_require_channel_definitions)
    }

    /// A watch of definition changes, for a connection whose channels
    /// need definitions (`None` otherwise: nothing to watch).
    pub fn definition_watch(&self) -> Option<tokio::sync::watch::Receiver<u64>> {
        self.definitions_required()
            .then(|| self.state.definitions.changes())
    }

    /// Leaves every channel that no longer has an enabled definition where
    /// one is required (a definition was disabled, deleted or changed), or
    /// that the app's subscribe policies no longer allow this client: the
    /// channels left with the error to tell the client.
    pub async fn drop_undefined(&mut self) -> Vec<(String, ErrorBody)> {
        if !self.definitions_required() {
            return Vec::new();
        }
        let mut gone: Vec<((String, bool), ErrorBody)> = Vec::new();
        for (slot, key) in &self.subscriptions {
            if !self.state.definitions.allows(&self.app.config, &slot.0) {
                let e = ErrorBody::new(
                    herald_protocol::ErrorCode::RealtimeChannelNotFound,
                    format!(
                        "`{}` lost its channel definition (disabled or deleted): unsubscribed",
                        slot.0
                    ),
                );
                gone.push((slot.clone(), e));
            } else if let Err(e) = self.permit(key, "subscribe", None) {
                gone.push((slot.clone(), e));
            }
        }
        let mut lost = Vec::with_capacity(gone.len());
        for (slot, e) in gone {
            if let Some(key) = self.subscriptions.remove(&slot) {
                self.leave(&key).await;
            }
            lost.push((slot.0, e));
        }
        lost
    }

    /// Leaves every channel; called once when the connection ends.
    pub async fn close(&mut self) {
        let keys: Vec<ChannelKey> = self.subscriptions.drain().map(|(_, k)| k).collect();
        for key in keys {
            self.leave(&key).await;
        }
    }
}
