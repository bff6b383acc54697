//! A connection's state and its requests: `subscribe`, `unsubscribe`,
//! `publish`, `presence`, `history`, `refresh`. Requests are handled one at a
//! time, in the order the client sent them.

use crate::auth::{verify_user_token, App, Identity};
use crate::realtime::{self, error, ChannelSpec, Operation};
use crate::state::{now_ms, AppState};
use herald_broker_node::hub::event_frame;
use herald_broker_node::node::Recovery;
use herald_broker_node::{ChannelKey, EncodedFrame, Outbound, SubscribeOutcome, Subscriber};
use herald_protocol::client::{self, ChannelRef, Request};
use herald_protocol::server::{ErrorFrame, Member, PresenceList, Reply, ServerFrame};
use herald_protocol::{timestamp_string, ErrorBody, ErrorCode, StreamPosition};
use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;
use tokio::time::Instant;
use tracing::Instrument;

/// Publications a `history` request returns when it names no `limit`.
const DEFAULT_HISTORY_LIMIT: usize = 100;

/// How a request was answered.
enum Answered {
    /// With this reply, to be sent when the request has an `id`.
    Reply(Box<Reply>),
    /// Already queued (a subscribe's reply is queued by the node).
    Queued,
}

pub struct Session {
    state: Arc<AppState>,
    app: Arc<App>,
    identity: Identity,
    conn: u64,
    conn_id: String,
    outbound: Outbound,
    /// One subscription per (channel name, global); subscribing the same
    /// name again with another token or context replaces it.
    subscriptions: HashMap<(String, bool), ChannelKey>,
}

impl Session {
    pub fn new(
        state: Arc<AppState>,
        app: Arc<App>,
        identity: Identity,
        conn: u64,
        conn_id: String,
        outbound: Outbound,
    ) -> Self {
        Session {
            state,
            app,
            identity,
            conn,
            conn_id,
            outbound,
            subscriptions: HashMap::new(),
        }
    }

    pub fn app_id(&self) -> &str {
        self.app.id()
    }

    /// When the connection's user token expires; far away for others.
    pub fn expiry(&self) -> Instant {
        let far = Instant::now() + Duration::from_secs(365 * 24 * 3600);
        match self.identity.expires_at() {
            Some(exp) => {
                let left = (exp * 1000).saturating_sub(now_ms());
                Instant::now() + Duration::from_millis(left)
            }
            None => far,
        }
    }

    pub async fn handle_text(&mut self, text: &str) {
        let max = self.state.config.max_frame_bytes;
        if text.len() > max {
            let e = error(
                ErrorCode::PayloadTooLarge,
                format!("frame is {} bytes; at most {max} allowed", text.len()),
            );
            return self.answer_error(client::salvage_id(text), None, e).await;
        }
        match client::parse(text) {
            Ok((id, request)) => {
                let channel = request_channel(&request);
                let span = tracing::debug_span!(
                    "request",
                    kind = request.kind(),
                    id,
                    channel = channel.as_deref().unwrap_or("")
                );
                match self.handle(id, request).instrument(span).await {
                    Ok(Answered::Reply(reply)) => {
                        if let Some(id) = id {
                            self.send(ServerFrame::Reply(Box::new(Reply { id, ..*reply })))
                                .await;
                        }
                    }
                    Ok(Answered::Queued) => {}
                    Err(e) => self.answer_error(id, channel, e).await,
                }
            }
            Err(rejected) => self.answer_error(rejected.id, None, rejected.error).await,
        }
    }

    /// Answers a failed request: a `reply` when it carried an `id`, an
    /// `error` frame otherwise.
    pub async fn answer_error(&mut self, id: Option<u64>, channel: Option<String>, e: ErrorBody) {
        self.state.metrics.error(e.code);
        let frame = match id {
            Some(id) => ServerFrame::Reply(Box::new(Reply {
                channel,
                ..Reply::err(id, e)
            })),
            None => ServerFrame::Error(ErrorFrame { channel, error: e }),
        };
        self.send(frame).await;
    }

    async fn send(&self, frame: ServerFrame) {
        self.outbound.send(EncodedFrame::encode(&frame)).await;
    }

    async fn handle(&mut self, id: Option<u64>, request: Request) -> Result<Answered, ErrorBody> {
        let reply = match request {
            Request::Subscribe {
                channel,
                since,
                replay_seconds,
            } => {
                let recovery = match (since, replay_seconds) {
                    (Some(since), _) => Recovery::Since(since),
                    (None, Some(seconds)) => Recovery::Window(seconds.saturating_mul(1000)),
                    (None, None) => Recovery::None,
                };
                return self.subscribe(id, channel, recovery).await;
            }
            Request::Unsubscribe { channel } => self.unsubscribe(channel).await,
            Request::Publish {
                channel,
                event,
                payload,
                idempotency_key,
            } => self.publish(channel, event, payload, idempotency_key).await,
            Request::Presence { channel } => self.presence(channel).await,
            Request::History {
                channel,
                since,
                limit,
            } => self.history(channel, since, limit).await,
            Request::Refresh { token } => self.refresh(&token),
        };
        reply.map(|r| Answered::Reply(Box::new(r)))
    }

    async fn resolve(&self, channel: &ChannelRef, op: Operation) -> Result<ChannelKey, ErrorBody> {
        let spec = ChannelSpec {
            channel: &channel.channel,
            global: channel.global,
            token: channel.token.as_deref(),
            context_overrides: channel.context_overrides.as_deref(),
            context: self.identity.context(),
        };
        realtime::resolve(&self.state, &self.app, &spec, op)
            .await
            .map(|(key, _)| key)
    }

    /// This connection as a presence member; `None` where the app keeps
    /// no presence.
    fn member(&self) -> Option<Member> {
        self.app.config.presence.then(|| Member {
            presence_id: self
                .identity
                .sub()
                .map_or_else(|| self.conn_id.clone(), str::to_owned),
            kind: self.identity.sender_type(),
            joined_at: timestamp_string(now_ms()),
        })
    }

    fn presence_id(&self) -> Option<String> {
        self.app.config.presence.then(|| {
            self.identity
                .sub()
                .map_or_else(|| self.conn_id.clone(), str::to_owned)
        })
    }

    async fn subscribe(
        &mut self,
        id: Option<u64>,
        channel: ChannelRef,
        recovery: Recovery,
    ) -> Result<Answered, ErrorBody> {
        let key = self.resolve(&channel, Operation::Subscribe).await?;
        let slot = (channel.channel.clone(), channel.global);
        match self.subscriptions.get(&slot) {
            Some(existing) if *existing == key => {}
            Some(existing) => {
                let existing = existing.clone();
                self.leave(&existing).await;
                self.subscriptions.remove(&slot);
            }
            None if self.subscriptions.len()
                >= self.state.config.max_subscriptions_per_connection =>
            {
                return Err(error(
                    ErrorCode::RealtimeInvalidChannelRequest,
                    format!(
                        "at most {} subscriptions per connection",
                        self.state.config.max_subscriptions_per_connection
                    ),
                ));
            }
            None => {}
        }
        let subscriber = Subscriber {
            conn: self.conn,
            outbound: self.outbound.clone(),
        };
        // The node queues the reply itself, ahead of the live publications
        // that follow it.
        let reply = |outcome: &SubscribeOutcome| {
            let id = id?;
            let publications = outcome
                .publications
                .iter()
                .map(|s| {
                    event_frame(
                        &key,
                        &s.publication,
                        outcome.position.epoch.clone(),
                        s.offset,
                    )
                })
                .collect::<Vec<_>>();
            let reply = Reply {
                channel: Some(channel.channel.clone()),
                presence: Some(PresenceList {
                    members: outcome.members.clone(),
                }),
                epoch: Some(outcome.position.epoch.clone()),
                offset: Some(outcome.position.offset),
                recovered: outcome.recovered,
                publications: (!publications.is_empty()).then_some(publications),
                ..Reply::ok(id)
            };
            Some(EncodedFrame::encode(&ServerFrame::Reply(Box::new(reply))))
        };
        self.state
            .node
            .subscribe(
                &key,
                subscriber,
                &self.conn_id,
                self.member().as_ref(),
                self.app.retention,
                recovery,
                self.state.config.recovery_max_publications,
                now_ms(),
                reply,
            )
            .await
            .map_err(|e| {
                tracing::warn!(error = %e, channel = key.name(), "subscribe failed");
                error(ErrorCode::InternalError, "subscription could not be set up")
            })?;
        self.subscriptions.insert(slot, key);
        Ok(Answered::Queued)
    }

    async fn leave(&self, key: &ChannelKey) {
        if let Err(e) = self
            .state
            .node
            .unsubscribe(key, self.conn, &self.conn_id, self.presence_id().as_deref())
            .await
        {
            tracing::warn!(error = %e, channel = key.name(), "unsubscribe failed");
        }
    }

    async fn unsubscribe(&mut self, channel: ChannelRef) -> Result<Reply, ErrorBody> {
        let slot = (channel.channel, channel.global);
        let Some(key) = self.subscriptions.remove(&slot) else {
            return Err(error(
                ErrorCode::RealtimeNotSubscribed,
                format!("not subscribed to `{}`", slot.0),
            ));
        };
        self.leave(&key).await;
        Ok(Reply {
            channel: Some(slot.0),
            ..Reply::ok(0)
        })
    }

    async fn publish(
        &mut self,
        channel: ChannelRef,
        event: Option<String>,
        payload: Box<serde_json::value::RawValue>,
        idempotency_key: Option<String>,
    ) -> Result<Reply, ErrorBody> {
        let key = self.resolve(&channel, Operation::Publish).await?;
        if self.app.config.publish_requires_subscription
            && !self.state.node.is_subscribed(&key, self.conn)
        {
            return Err(error(
                ErrorCode::RealtimeNotSubscribed,
                format!("subscribe to `{}` before publishing on it", channel.channel),
            ));
        }
        let accepted = realtime::publish(
            &self.state,
            &self.app,
            &self.identity,
            &key,
            realtime::Outgoing {
                event,
                payload: Arc::from(payload),
                idempotency_key: idempotency_key.as_deref(),
                surface: "ws",
            },
        )
        .await?;
        Ok(Reply {
            channel: Some(channel.channel),
            event_id: accepted.event_id,
            event_timestamp: accepted.event_timestamp,
            ..Reply::ok(0)
        })
    }

    async fn presence(&mut self, channel: ChannelRef) -> Result<Reply, ErrorBody> {
        let key = self.resolve(&channel, Operation::Read).await?;
        let members = match self.app.config.presence {
            true => self.state.node.presence(&key).await.map_err(|e| {
                tracing::warn!(error = %e, "presence failed");
                error(ErrorCode::InternalError, "presence unavailable")
            })?,
            false => Vec::new(),
        };
        Ok(Reply {
            channel: Some(channel.channel),
            presence: Some(PresenceList { members }),
            ..Reply::ok(0)
        })
    }

    async fn history(
        &mut self,
        channel: ChannelRef,
        since: Option<StreamPosition>,
        limit: Option<usize>,
    ) -> Result<Reply, ErrorBody> {
        let key = self.resolve(&channel, Operation::Read).await?;
        let limit = limit
            .unwrap_or(DEFAULT_HISTORY_LIMIT)
            .min(self.state.config.history_max_limit);
        let read = self
            .state
            .node
            .history(&key, since.as_ref(), limit, self.app.retention, now_ms())
            .await
            .map_err(|e| {
                tracing::warn!(error = %e, "history failed");
                error(ErrorCode::InternalError, "history unavailable")
            })?;
        let publications = read
            .publications
            .iter()
            .map(|s| event_frame(&key, &s.publication, read.position.epoch.clone(), s.offset))
            .collect();
        Ok(Reply {
            channel: Some(channel.channel),
            epoch: Some(read.position.epoch),
            offset: Some(read.position.offset),
            recovered: since.map(|_| read.complete),
            publications: Some(publications),
            ..Reply::ok(0)
        })
    }

    fn refresh(&mut self, token: &str) -> Result<Reply, ErrorBody> {
        let (app, identity) = verify_user_token(&self.state.apps, token)?;
        let same_user = app.id() == self.app.id()
            && identity.sub().is_some()
            && identity.sub() == self.identity.sub();
        if !same_user {
            return Err(error(ErrorCode::Unauthorized, ""));
        }
        let expires_at = identity.expires_at();
        self.identity = identity;
        Ok(Reply {
            expires_at,
            ..Reply::ok(0)
        })
    }

    /// Leaves every channel; called once when the connection ends.
    pub async fn close(&mut self) {
        let keys: Vec<ChannelKey> = self.subscriptions.drain().map(|(_, k)| k).collect();
        for key in keys {
            self.leave(&key).await;
        }
    }
}

fn request_channel(request: &Request) -> Option<String> {
    match request {
        Request::Subscribe { channel, .. }
        | Request::Unsubscribe { channel }
        | Request::Publish { channel, .. }
        | Request::Presence { channel }
        | Request::History { channel, .. } => Some(channel.channel.clone()),
        Request::Refresh { .. } => None,
    }
}
