//! Cluster-wide presence on Redis.
//!
//! Each (channel, connection) is an entry with an expiry. The gateway that
//! holds the connection refreshes its entries every third of the presence
//! TTL; joins, leaves and expiries run as scripts that decide and announce
//! in one step, so a member's join and leave are announced once, whichever
//! gateways its connections are on. When a gateway dies its entries stop
//! being refreshed, and every surviving gateway sweeps the channels whose
//! entries are due: the first to reach an expired entry removes it and
//! announces the leave.

use crate::{keys, Redis, RedisResult};
use async_trait::async_trait;
use fred::prelude::*;
use fred::types::sorted_sets::Ordering as ZOrdering;
use herald_broker_node::presence::{sort_members, PresenceError, PresenceStore};
use herald_broker_node::{Background, ChannelKey};
use herald_protocol::now_ms;
use herald_protocol::server::Member;
use parking_lot::Mutex;
use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

/// Channels swept per round.
const SWEEP_BATCH: i64 = 256;

pub struct RedisPresence {
    redis: Arc<Redis>,
    ttl: Duration,
    /// This gateway's own entries: channel id -> field -> member JSON.
    local: Mutex<HashMap<String, HashMap<String, String>>>,
}

fn field(conn: &str, presence_id: &str) -> String {
    format!("{conn} {presence_id}")
}

fn presence_keys(channel: &str) -> Vec<String> {
    vec![
        keys::presence_members(channel),
        keys::presence_expiry(channel),
        keys::presence_counts(channel),
    ]
}

impl RedisPresence {
    /// Starts the refresh and sweep tasks in `background`.
    pub fn start(redis: Arc<Redis>, ttl: Duration, background: &Background) -> Arc<RedisPresence> {
        let presence = Arc::new(RedisPresence {
            redis,
            ttl,
            local: Mutex::new(HashMap::new()),
        });
        let refresher = Arc::clone(&presence);
        background.spawn("presence refresh", async move {
            let mut tick = tokio::time::interval(refresher.ttl / 3);
            loop {
                tick.tick().await;
                refresher.refresh().await;
            }
        });
        let sweeper = Arc::clone(&presence);
        background.spawn("presence sweep", async move {
            let every =
                (sweeper.ttl / 10).clamp(Duration::from_millis(200), Duration::from_secs(1));
            let mut tick = tokio::time::interval(every);
            loop {
                tick.tick().await;
                if let Err(e) = sweeper.sweep().await {
                    tracing::debug!(error = %e, "presence sweep failed");
                }
            }
        });
        presence
    }

    /// Runs the join script for one entry: adds it (announcing the member
    /// when it is new) or pushes its expiry out.
    async fn put(
        &self,
        channel: &str,
        field: &str,
        presence_id: &str,
        member_json: &str,
    ) -> RedisResult<()> {
        let expires = now_ms() + self.ttl.as_millis() as u64;
        let _: i64 = self
            .redis
            .eval(
                &self.redis.scripts.presence_join,
                presence_keys(channel),
                vec![
                    field.into(),
                    presence_id.into(),
                    member_json.into(),
                    (expires as i64).into(),
                    self.redis.publish_command().into(),
                    keys::topic(channel).into(),
                    ((self.ttl.as_millis() * 3) as i64).into(),
                ],
            )
            .await?;
        // Sweepers look at the channel no later than this entry's expiry.
        let _: Value = self
            .redis
            .client
            .zadd(
                keys::PRESENCE_INDEX,
                None,
                Some(ZOrdering::LessThan),
                false,
                false,
                (expires as f64, channel),
            )
            .await?;
        Ok(())
    }

    /// Pushes out the expiry of every entry this gateway holds, re-adding
    /// any that Redis lost (a restart, a failover).
    async fn refresh(&self) {
        let entries: Vec<(String, String, String)> = self
            .local
            .lock()
            .iter()
            .flat_map(|(channel, fields)| {
                fields
                    .iter()
                    .map(move |(field, json)| (channel.clone(), field.clone(), json.clone()))
            })
            .collect();
        for chunk in entries.chunks(256) {
            let calls = chunk.iter().map(|(channel, field, json)| {
                let presence_id = field.split_once(' ').map_or("", |(_, p)| p);
                self.put(channel, field, presence_id, json)
            });
            for result in futures_util::future::join_all(calls).await {
                if let Err(e) = result {
                    tracing::debug!(error = %e, "presence refresh failed");
                }
            }
        }
    }

    /// Sweeps the channels whose entries may have expired.
    async fn sweep(&self) -> RedisResult<()> {
        let now = now_ms();
        let due: Vec<String> = self
            .redis
            .client
            .zrangebyscore(
                keys::PRESENCE_INDEX,
                "-inf",
                now as f64,
                false,
                Some((0i64, SWEEP_BATCH)),
            )
            .await?;
        for channel in due {
            let next: i64 = self
                .redis
                .eval(
                    &self.redis.scripts.presence_sweep,
                    presence_keys(&channel),
                    vec![
                        (now as i64).into(),
                        self.redis.publish_command().into(),
                        keys::topic(&channel).into(),
                    ],
                )
                .await?;
            let result: Result<Value, _> = if next < 0 {
                self.redis
                    .client
                    .zrem(keys::PRESENCE_INDEX, channel.as_str())
                    .await
            } else {
                self.redis
                    .client
                    .zadd(
                        keys::PRESENCE_INDEX,
                        None,
                        None,
                        false,
                        false,
                        (next as f64, channel.as_str()),
                    )
                    .await
            };
            result?;
        }
        Ok(())
    }
}

#[async_trait]
impl PresenceStore for RedisPresence {
    async fn join(
        &self,
        key: &ChannelKey,
        member: &Member,
        conn: &str,
    ) -> Result<(), PresenceError> {
        let json = serde_json::to_string(member)
            .map_err(|e| crate::RedisError::Protocol(format!("member not encodable: {e}")))?;
        let field = field(conn, &member.presence_id);
        self.put(key.id(), &field, &member.presence_id, &json)
            .await?;
        self.local
            .lock()
            .entry(key.id().to_owned())
            .or_default()
            .insert(field, json);
        Ok(())
    }

    async fn leave(
        &self,
        key: &ChannelKey,
        presence_id: &str,
        conn: &str,
    ) -> Result<(), PresenceError> {
        let field = field(conn, presence_id);
        {
            let mut local = self.local.lock();
            if let Some(fields) = local.get_mut(key.id()) {
                fields.remove(&field);
                if fields.is_empty() {
                    local.remove(key.id());
                }
            }
        }
        let _: i64 = self
            .redis
            .eval(
                &self.redis.scripts.presence_leave,
                presence_keys(key.id()),
                vec![
                    field.into(),
                    presence_id.into(),
                    self.redis.publish_command().into(),
                    keys::topic(key.id()).into(),
                ],
            )
            .await?;
        Ok(())
    }

    async fn members(&self, key: &ChannelKey) -> Result<Vec<Member>, PresenceError> {
        let values: Vec<Value> = self
            .redis
            .eval(
                &self.redis.scripts.presence_members,
                vec![
                    keys::presence_members(key.id()),
                    keys::presence_expiry(key.id()),
                ],
                vec![(now_ms() as i64).into()],
            )
            .await?;
        // One entry per member, however many connections it has.
        let mut members: HashMap<String, Member> = HashMap::new();
        for value in values {
            let member = value
                .into_string()
                .and_then(|json| serde_json::from_str::<Member>(&json).ok());
            let Some(member) = member else {
                tracing::warn!(channel = key.name(), "unreadable presence entry, skipped");
                continue;
            };
            match members.get(&member.presence_id) {
                Some(known) if known.joined_at <= member.joined_at => {}
                _ => {
                    members.insert(member.presence_id.clone(), member);
                }
            }
        }
        let mut members: Vec<Member> = members.into_values().collect();
        sort_members(&mut members);
        Ok(members)
    }
}
