//! Stream positions and reads on Redis (`lua/position.lua`, `lua/read.lua`).
//! Appends happen in the publish script of the backplane.

use crate::{keys, Redis, RedisError};
use async_trait::async_trait;
use fred::prelude::Value;
use herald_history::{
    covers_all, new_epoch, HistoryError, HistoryRead, HistoryStore, Publication, Retention, Stored,
};
use herald_protocol::StreamPosition;
use std::sync::Arc;

pub struct RedisHistory {
    redis: Arc<Redis>,
}

impl RedisHistory {
    pub fn new(redis: Arc<Redis>) -> Self {
        RedisHistory { redis }
    }
}

#[async_trait]
impl HistoryStore for RedisHistory {
    async fn position(
        &self,
        stream: &str,
        retention: Retention,
        _now_ms: u64,
    ) -> Result<StreamPosition, HistoryError> {
        let (epoch, offset): (String, u64) = self
            .redis
            .eval(
                &self.redis.scripts.position,
                vec![keys::meta(stream), keys::stream(stream)],
                vec![
                    new_epoch().into(),
                    (retention.ttl.as_millis().max(1) as i64).into(),
                ],
            )
            .await?;
        Ok(StreamPosition { epoch, offset })
    }

    async fn read(
        &self,
        stream: &str,
        since: Option<&StreamPosition>,
        limit: usize,
        retention: Retention,
        now_ms: u64,
    ) -> Result<HistoryRead, HistoryError> {
        let after = since.map_or(0, |p| p.offset);
        let oldest = now_ms.saturating_sub(retention.ttl.as_millis() as u64);
        let reply: Vec<Value> = self
            .redis
            .eval(
                &self.redis.scripts.read,
                vec![keys::meta(stream), keys::stream(stream)],
                vec![
                    (after as i64).into(),
                    // Lua numbers are doubles: keep the count exact.
                    (limit.min(1 << 30) as i64).into(),
                    (oldest as i64).into(),
                ],
            )
            .await?;
        let mut values = reply.into_iter();
        let epoch = values.next().and_then(|v| v.into_string());
        let top = values.next().map(|v| v.as_u64());
        let Some(epoch) = epoch else {
            // No stream: nothing was kept.
            return Ok(HistoryRead {
                position: StreamPosition {
                    epoch: String::new(),
                    offset: 0,
                },
                publications: Vec::new(),
                complete: false,
            });
        };
        let Some(Some(top)) = top else {
            return Err(
                RedisError::Protocol(format!("stream {stream} read without a top offset")).into(),
            );
        };
        let mut publications = Vec::new();
        // An entry that cannot be read is skipped and logged; the read is
        // then not complete.
        let mut skipped = false;
        while let (Some(offset), Some(body)) = (values.next(), values.next()) {
            let (Some(offset), Some(body)) = (offset.as_u64(), body.into_string()) else {
                tracing::warn!(stream, "unreadable history entry, skipped");
                skipped = true;
                continue;
            };
            match serde_json::from_str::<Publication>(&body) {
                Ok(p) => publications.push(Stored {
                    offset,
                    publication: Arc::new(p),
                }),
                Err(e) => {
                    tracing::warn!(stream, offset, error = %e, "unreadable history entry, skipped");
                    skipped = true;
                }
            }
        }
        let offsets: Vec<u64> = publications.iter().map(|p| p.offset).collect();
        let same_epoch = since.is_none_or(|p| p.epoch == epoch && p.offset <= top);
        let complete = same_epoch
            && !skipped
            && match since {
                Some(_) => covers_all(after, top, &offsets),
                // Without a position the read is complete when it reached
                // the top of what is kept.
                None => offsets.last().is_none_or(|last| *last == top),
            };
        if !same_epoch {
            publications.clear();
        }
        Ok(HistoryRead {
            position: StreamPosition { epoch, offset: top },
            publications,
            complete,
        })
    }
}
