//! Reading the dispatch streams as a consumer group.
//!
//! The publish script appends each publication on a channel with a
//! definition to its app's stream (`keys::dispatch`). Workers read the
//! streams in the consumer group `workers`, each as its own consumer:
//! Redis hands every entry to one of them. A worker acknowledges an entry
//! (and deletes it) once what it caused is done or durably scheduled; an
//! entry left unacknowledged longer than the idle time (its worker died) is
//! claimed by another.
//!
//! A worker has its own connection: a blocking read holds the connection
//! it is sent on.

use crate::{keys, Redis, RedisError, RedisResult};
use fred::prelude::*;
use fred::types::streams::XReadResponse;

/// The consumer group every worker joins.
pub const GROUP: &str = "workers";

/// One entry of an app's dispatch stream.
#[derive(Debug, Clone)]
pub struct Entry {
    pub app: String,
    /// The stream entry id, to acknowledge.
    pub id: String,
    /// Head JSON (channel, definition, webhook URLs).
    pub head: String,
    /// The publication JSON.
    pub body: String,
}

/// A worker's view of the dispatch streams.
pub struct DispatchReader {
    redis: Redis,
    consumer: String,
}

impl DispatchReader {
    /// Connects to `url` as consumer `consumer`.
    pub async fn connect(url: &str, consumer: &str) -> RedisResult<DispatchReader> {
        Ok(DispatchReader {
            redis: Redis::connect(url).await?,
            consumer: consumer.to_owned(),
        })
    }

    /// Creates the consumer group on the app's stream (and the stream)
    /// unless it exists.
    pub async fn join(&self, app: &str) -> RedisResult<()> {
        let created: Result<(), _> = self
            .redis
            .client
            .xgroup_create(keys::dispatch(app), GROUP, "0", true)
            .await;
        match created {
            Err(e) if e.details().contains("BUSYGROUP") => Ok(()),
            other => Ok(other?),
        }
    }

    /// New entries of `app`'s stream for this consumer: at most `count`,
    /// waiting at most `block_ms` for the first (0: not waiting).
    pub async fn read(&self, app: &str, count: u64, block_ms: u64) -> RedisResult<Vec<Entry>> {
        let stream = keys::dispatch(app);
        let read: Result<Value, _> = self
            .redis
            .client
            .xreadgroup(
                GROUP,
                self.consumer.as_str(),
                Some(count),
                (block_ms > 0).then_some(block_ms),
                false,
                stream.as_str(),
                ">",
            )
            .await;
        let read: XReadResponse<String, String, String, String> = match read {
            // Nothing arrived while blocked.
            Ok(Value::Null) => return Ok(Vec::new()),
            Ok(read) => read.into_xread_response()?,
            // The stream (and its group) went away: Redis restarted empty.
            Err(e) if e.details().contains("NOGROUP") => {
                self.join(app).await?;
                return Ok(Vec::new());
            }
            Err(e) => return Err(e.into()),
        };
        let mut entries = Vec::new();
        for (_, list) in read {
            for (id, mut fields) in list {
                let (Some(head), Some(body)) = (fields.remove("h"), fields.remove("d")) else {
                    // Not Herald's: nothing to do but acknowledge it.
                    self.ack(app, &[id]).await?;
                    continue;
                };
                entries.push(Entry {
                    app: app.to_owned(),
                    id,
                    head,
                    body,
                });
            }
        }
        Ok(entries)
    }

    /// Takes over entries another consumer has left unacknowledged for at
    /// least `idle_ms`.
    pub async fn claim(&self, app: &str, idle_ms: u64, count: u64) -> RedisResult<Vec<Entry>> {
        let flat: Vec<String> = self
            .redis
            .eval(
                &self.redis.scripts.dispatch_claim,
                vec![keys::dispatch(app)],
                vec![
                    GROUP.into(),
                    self.consumer.as_str().into(),
                    (idle_ms as i64).into(),
                    (count as i64).into(),
                ],
            )
            .await?;
        if !flat.len().is_multiple_of(3) {
            return Err(RedisError::Protocol(format!(
                "dispatch claim answered {} values",
                flat.len()
            )));
        }
        Ok(flat
            .chunks(3)
            .map(|e| Entry {
                app: app.to_owned(),
                id: e[0].clone(),
                head: e[1].clone(),
                body: e[2].clone(),
            })
            .collect())
    }

    /// Acknowledges and deletes entries of `app`'s stream.
    pub async fn ack(&self, app: &str, ids: &[String]) -> RedisResult<()> {
        if ids.is_empty() {
            return Ok(());
        }
        let mut args: Vec<Value> = vec![GROUP.into()];
        args.extend(ids.iter().map(|id| Value::from(id.as_str())));
        let _: i64 = self
            .redis
            .eval(
                &self.redis.scripts.dispatch_ack,
                vec![keys::dispatch(app)],
                args,
            )
            .await?;
        Ok(())
    }

    /// Entries in `app`'s stream (read or not, not yet acknowledged), and
    /// the age in ms of the oldest.
    pub async fn depth(&self, app: &str, now_ms: u64) -> RedisResult<(u64, u64)> {
        let stream = keys::dispatch(app);
        let len: u64 = self.redis.client.xlen(stream.as_str()).await?;
        let first: Vec<(String, std::collections::HashMap<String, String>)> = self
            .redis
            .client
            .xrange_values(stream.as_str(), "-", "+", Some(1))
            .await?;
        let age = first
            .first()
            .and_then(|(id, _)| id.split('-').next()?.parse::<u64>().ok())
            .map_or(0, |ms| now_ms.saturating_sub(ms));
        Ok((len, age))
    }

    pub fn is_connected(&self) -> bool {
        self.redis.is_connected()
    }
}
