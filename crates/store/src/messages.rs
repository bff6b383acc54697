//! The message log and channel webhook deliveries.
//!
//! Dispatch workers write here: a batch of messages with the webhook
//! deliveries they cause, in one transaction, idempotent by message id (a
//! redelivered dispatch entry never makes a second row or a second series
//! of attempts). Webhook senders lease due deliveries, so that however many
//! workers run, one attempt at a time goes out per delivery.

use crate::{now_ms, Backend, Store, StoreError};
use serde::Serialize;
use sqlx::any::AnyRow;
use sqlx::Row;

/// A message to log.
#[derive(Debug, Clone)]
pub struct NewMessage {
    pub id: String,
    pub app: String,
    pub event_name: String,
    pub channel_id: Option<String>,
    pub channel_name: String,
    /// JSON text.
    pub payload: String,
    pub sender_type: String,
    pub sender_id: Option<String>,
    /// The webhook URLs it goes to (the definition's, less disabled ones).
    pub webhook_urls: Vec<String>,
    pub trace: Option<String>,
    pub created_at_ms: i64,
}

/// A logged message, as the admin API lists it.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Message {
    pub id: String,
    pub event_name: String,
    pub channel_id: Option<String>,
    pub channel_name: String,
    pub payload: serde_json::Value,
    pub sender_type: String,
    pub sender_id: Option<String>,
    pub ws_audience_count: i64,
    pub wh_audience_count: i64,
    pub wh_delivered_count: i64,
    #[serde(skip)]
    pub created_at_ms: i64,
}

/// Which messages to list.
#[derive(Debug, Clone, Default)]
pub struct MessageFilter {
    pub channel_id: Option<String>,
    pub event_name: Option<String>,
    pub limit: u32,
    pub offset: u64,
}

/// `GET /api/realtime/messages/stats`.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct MessageStats {
    pub total_messages: i64,
    pub wh_delivery_rate: f64,
    pub top_events: Vec<EventCount>,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct EventCount {
    pub event_name: String,
    pub count: i64,
}

/// A webhook delivery leased to a sender.
#[derive(Debug, Clone)]
pub struct Delivery {
    /// The `webhook-id`, stable across attempts.
    pub id: String,
    pub app: String,
    pub message_id: String,
    pub channel_id: Option<String>,
    pub channel_name: String,
    pub event_name: String,
    pub url: String,
    pub body: String,
    pub trace: Option<String>,
    /// Attempts made before this one.
    pub attempts: u32,
    pub created_at_ms: i64,
}

/// How an attempt ended.
#[derive(Debug, Clone)]
pub enum Outcome {
    Delivered,
    /// Try again at `at_ms`.
    Retry {
        at_ms: i64,
        error: String,
    },
    /// The last attempt failed.
    Failed {
        error: String,
    },
    /// The URL answered 410 Gone: disabled for the channel.
    Gone,
    /// Not sent: the target is in a private range Herald may not call.
    Refused {
        error: String,
    },
}

/// Webhook deliveries not yet done.
#[derive(Debug, Clone, Copy, Default)]
pub struct Backlog {
    pub pending: i64,
    /// When the oldest pending delivery was created (ms), if any.
    pub oldest_ms: Option<i64>,
}

/// Rows per multi-row insert (11 parameters each, well inside both
/// databases' limits).
const INSERT_ROWS: usize = 200;

/// The webhook-id of a message's delivery to `url`: stable for the pair.
pub fn delivery_id(message_id: &str, url: &str) -> String {
    // FNV-1a: stable across processes and releases, unlike std's hasher.
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in url.bytes() {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    format!("msg_{message_id}_{h:016x}")
}

impl Store {
    /// Logs messages and schedules their webhook deliveries, in one
    /// transaction. A message already logged is left as it is, and so are
    /// its deliveries.
    pub async fn log_messages(&self, batch: &[NewMessage]) -> Result<(), StoreError> {
        if batch.is_empty() {
            return Ok(());
        }
        let mut tx = self.pool.begin().await?;
        for chunk in batch.chunks(INSERT_ROWS) {
            let mut sql = String::from(
                "INSERT INTO realtime_messages (id, app, event_name, channel_id, channel_name, \
                 payload, sender_type, sender_id, wh_audience_count, wh_delivered_count, \
                 created_at) VALUES ",
            );
            push_rows(&mut sql, chunk.len(), 11);
            sql.push_str(" ON CONFLICT (id) DO NOTHING");
            let mut query = sqlx::query(&sql);
            for m in chunk {
                query = query
                    .bind(&m.id)
                    .bind(&m.app)
                    .bind(&m.event_name)
                    .bind(m.channel_id.clone())
                    .bind(&m.channel_name)
                    .bind(&m.payload)
                    .bind(&m.sender_type)
                    .bind(m.sender_id.clone())
                    .bind(m.webhook_urls.len() as i64)
                    .bind(0i64)
                    .bind(m.created_at_ms);
            }
            query.execute(&mut *tx).await?;
        }
        let now = now_ms();
        let deliveries: Vec<(&NewMessage, &String)> = batch
            .iter()
            .flat_map(|m| m.webhook_urls.iter().map(move |u| (m, u)))
            .collect();
        for chunk in deliveries.chunks(INSERT_ROWS / 2) {
            let mut sql = String::from(
                "INSERT INTO realtime_webhooks (id, app, message_id, channel_id, channel_name, \
                 event_name, url, body, trace, status, attempts, next_at, lease_until, \
                 last_error, created_at, updated_at) VALUES ",
            );
            push_rows(&mut sql, chunk.len(), 16);
            sql.push_str(" ON CONFLICT (id) DO NOTHING");
            let mut query = sqlx::query(&sql);
            for (m, url) in chunk {
                query = query
                    .bind(delivery_id(&m.id, url))
                    .bind(&m.app)
                    .bind(&m.id)
                    .bind(m.channel_id.clone())
                    .bind(&m.channel_name)
                    .bind(&m.event_name)
                    .bind(url.as_str())
                    .bind(&m.payload)
                    .bind(m.trace.clone())
                    .bind(0i64)
                    .bind(0i64)
                    .bind(now)
                    .bind(0i64)
                    .bind(None::<String>)
                    .bind(m.created_at_ms)
                    .bind(now);
            }
            query.execute(&mut *tx).await?;
        }
        tx.commit().await?;
        Ok(())
    }

    /// Adds the sockets `node` delivered each message to.
    pub async fn add_audience(
        &self,
        node: &str,
        counts: &[(String, u64)],
    ) -> Result<(), StoreError> {
        if counts.is_empty() {
            return Ok(());
        }
        let now = now_ms();
        let mut tx = self.pool.begin().await?;
        for chunk in counts.chunks(INSERT_ROWS) {
            let mut sql = String::from(
                "INSERT INTO realtime_audience (message_id, node, sockets, created_at) VALUES ",
            );
            push_rows(&mut sql, chunk.len(), 4);
            sql.push_str(
                " ON CONFLICT (message_id, node) DO UPDATE \
                 SET sockets = realtime_audience.sockets + excluded.sockets",
            );
            let mut query = sqlx::query(&sql);
            for (id, n) in chunk {
                query = query.bind(id).bind(node).bind(*n as i64).bind(now);
            }
            query.execute(&mut *tx).await?;
        }
        tx.commit().await?;
        Ok(())
    }

    /// An app's messages, newest first, and how many match in all.
    pub async fn messages(
        &self,
        app: &str,
        filter: &MessageFilter,
    ) -> Result<(Vec<Message>, i64), StoreError> {
        let (clause, binds) = message_clause(
            app,
            filter.channel_id.as_deref(),
            filter.event_name.as_deref(),
            None,
        );
        let total_sql = format!("SELECT COUNT(*) FROM realtime_messages m WHERE {clause}");
        let total: i64 = query_with(&total_sql, &binds)
            .fetch_one(&self.pool)
            .await?
            .try_get(0)?;
        let n = binds.len();
        let sql = format!(
            "SELECT m.id, m.event_name, m.channel_id, m.channel_name, m.payload, m.sender_type, \
             m.sender_id, m.wh_audience_count, m.wh_delivered_count, m.created_at, \
             CAST(COALESCE((SELECT SUM(a.sockets) FROM realtime_audience a \
                            WHERE a.message_id = m.id), 0) AS BIGINT) AS ws_audience_count \
             FROM realtime_messages m WHERE {clause} \
             ORDER BY m.created_at DESC, m.id DESC LIMIT ${} OFFSET ${}",
            n + 1,
            n + 2
        );
        let rows = query_with(&sql, &binds)
            .bind(i64::from(filter.limit))
            .bind(filter.offset as i64)
            .fetch_all(&self.pool)
            .await?;
        let messages = rows.iter().map(message).collect::<Result<_, _>>()?;
        Ok((messages, total))
    }

    /// Deletes all of an app's messages; how many.
    pub async fn delete_messages(&self, app: &str) -> Result<u64, StoreError> {
        let mut tx = self.pool.begin().await?;
        sqlx::query(
            "DELETE FROM realtime_audience WHERE message_id IN \
             (SELECT id FROM realtime_messages WHERE app = $1)",
        )
        .bind(app)
        .execute(&mut *tx)
        .await?;
        // Their deliveries go too: a cleared log sends nothing more.
        sqlx::query("DELETE FROM realtime_webhooks WHERE app = $1")
            .bind(app)
            .execute(&mut *tx)
            .await?;
        let done = sqlx::query("DELETE FROM realtime_messages WHERE app = $1")
            .bind(app)
            .execute(&mut *tx)
            .await?;
        tx.commit().await?;
        Ok(done.rows_affected())
    }

    /// Deletes up to `batch` of an app's messages created before
    /// `before_ms`, with their audience counts and finished deliveries;
    /// how many messages went.
    pub async fn delete_messages_before(
        &self,
        app: &str,
        before_ms: i64,
        batch: u32,
    ) -> Result<u64, StoreError> {
        let mut tx = self.pool.begin().await?;
        let rows = sqlx::query(
            "SELECT id FROM realtime_messages WHERE app = $1 AND created_at < $2 \
             ORDER BY created_at LIMIT $3",
        )
        .bind(app)
        .bind(before_ms)
        .bind(i64::from(batch))
        .fetch_all(&mut *tx)
        .await?;
        let ids: Vec<String> = rows
            .iter()
            .map(|r| r.try_get::<String, _>(0))
            .collect::<Result<_, _>>()?;
        if ids.is_empty() {
            return Ok(0);
        }
        let list = placeholders(1, ids.len());
        let mut deleted = 0;
        for sql in [
            format!("DELETE FROM realtime_audience WHERE message_id IN ({list})"),
            format!("DELETE FROM realtime_webhooks WHERE status <> 0 AND message_id IN ({list})"),
            format!("DELETE FROM realtime_messages WHERE id IN ({list})"),
        ] {
            let mut query = sqlx::query(&sql);
            for id in &ids {
                query = query.bind(id);
            }
            // The rows this pass deleted (another runner may have taken
            // some): the last statement's are the messages.
            deleted = query.execute(&mut *tx).await?.rows_affected();
        }
        tx.commit().await?;
        Ok(deleted)
    }

    /// Deletes audience counts older than `before_ms` whose message was
    /// never logged (or is gone); how many.
    pub async fn sweep_audience(&self, before_ms: i64) -> Result<u64, StoreError> {
        let done = sqlx::query(
            "DELETE FROM realtime_audience WHERE created_at < $1 AND NOT EXISTS \
             (SELECT 1 FROM realtime_messages m WHERE m.id = realtime_audience.message_id)",
        )
        .bind(before_ms)
        .execute(&self.pool)
        .await?;
        Ok(done.rows_affected())
    }

    /// Statistics of an app's messages (of one channel, since a time).
    pub async fn message_stats(
        &self,
        app: &str,
        channel_id: Option<&str>,
        since_ms: Option<i64>,
    ) -> Result<MessageStats, StoreError> {
        let (clause, binds) = message_clause(app, channel_id, None, since_ms);
        let sql = format!(
            "SELECT COUNT(*), CAST(COALESCE(SUM(m.wh_audience_count), 0) AS BIGINT), \
             CAST(COALESCE(SUM(m.wh_delivered_count), 0) AS BIGINT) \
             FROM realtime_messages m WHERE {clause}"
        );
        let row = query_with(&sql, &binds).fetch_one(&self.pool).await?;
        let (total, audience, delivered): (i64, i64, i64) =
            (row.try_get(0)?, row.try_get(1)?, row.try_get(2)?);
        let sql = format!(
            "SELECT m.event_name, COUNT(*) AS n FROM realtime_messages m WHERE {clause} \
             GROUP BY m.event_name ORDER BY n DESC, m.event_name LIMIT 10"
        );
        let top_events = query_with(&sql, &binds)
            .fetch_all(&self.pool)
            .await?
            .iter()
            .map(|r| {
                Ok(EventCount {
                    event_name: r.try_get(0)?,
                    count: r.try_get(1)?,
                })
            })
            .collect::<Result<_, StoreError>>()?;
        Ok(MessageStats {
            total_messages: total,
            wh_delivery_rate: if audience > 0 {
                delivered as f64 / audience as f64
            } else {
                0.0
            },
            top_events,
        })
    }

    /// Leases up to `limit` due deliveries to `holder` until `lease_until`.
    pub async fn claim_deliveries(
        &self,
        now_ms: i64,
        lease_until: i64,
        limit: u32,
    ) -> Result<Vec<Delivery>, StoreError> {
        // PostgreSQL: concurrent senders skip each other's rows. SQLite
        // (one process) serializes writers anyway.
        let skip = match self.backend {
            Backend::Postgres => " FOR UPDATE SKIP LOCKED",
            Backend::Sqlite => "",
        };
        let sql = format!(
            "UPDATE realtime_webhooks SET lease_until = $1 WHERE id IN \
             (SELECT id FROM realtime_webhooks WHERE status = 0 AND next_at <= $2 \
              AND lease_until <= $2 ORDER BY next_at LIMIT $3{skip}) \
             RETURNING id, app, message_id, channel_id, channel_name, event_name, url, body, \
             trace, attempts, created_at"
        );
        let rows = sqlx::query(&sql)
            .bind(lease_until)
            .bind(now_ms)
            .bind(i64::from(limit))
            .fetch_all(&self.pool)
            .await?;
        rows.iter()
            .map(|r| {
                Ok(Delivery {
                    id: r.try_get("id")?,
                    app: r.try_get("app")?,
                    message_id: r.try_get("message_id")?,
                    channel_id: r.try_get("channel_id")?,
                    channel_name: r.try_get("channel_name")?,
                    event_name: r.try_get("event_name")?,
                    url: r.try_get("url")?,
                    body: r.try_get("body")?,
                    trace: r.try_get("trace")?,
                    attempts: r.try_get::<i64, _>("attempts")?.max(0) as u32,
                    created_at_ms: r.try_get("created_at")?,
                })
            })
            .collect()
    }

    /// Records how an attempt ended. Only a pending delivery changes, so a
    /// count is never taken twice.
    pub async fn record_attempt(
        &self,
        delivery: &Delivery,
        outcome: &Outcome,
    ) -> Result<(), StoreError> {
        let now = now_ms();
        let attempts = i64::from(delivery.attempts) + 1;
        let mut tx = self.pool.begin().await?;
        let (status, next_at, error) = match outcome {
            Outcome::Delivered => (1i64, now, None),
            Outcome::Retry { at_ms, error } => (0, *at_ms, Some(error.clone())),
            Outcome::Failed { error } | Outcome::Refused { error } => (2, now, Some(error.clone())),
            Outcome::Gone => (
                3,
                now,
                Some("410 Gone: the URL is disabled for the channel".into()),
            ),
        };
        let done = sqlx::query(
            "UPDATE realtime_webhooks SET status = $1, attempts = $2, next_at = $3, \
             lease_until = 0, last_error = $4, updated_at = $5 WHERE id = $6 AND status = 0",
        )
        .bind(status)
        .bind(attempts)
        .bind(next_at)
        .bind(error)
        .bind(now)
        .bind(&delivery.id)
        .execute(&mut *tx)
        .await?;
        if done.rows_affected() == 1 {
            match outcome {
                Outcome::Delivered => {
                    sqlx::query(
                        "UPDATE realtime_messages SET wh_delivered_count = wh_delivered_count + 1 \
                         WHERE id = $1",
                    )
                    .bind(&delivery.message_id)
                    .execute(&mut *tx)
                    .await?;
                }
                Outcome::Gone => {
                    if let Some(channel) = &delivery.channel_id {
                        sqlx::query(
                            "INSERT INTO realtime_webhook_disabled (channel_id, url, disabled_at) \
                             VALUES ($1, $2, $3) ON CONFLICT (channel_id, url) DO NOTHING",
                        )
                        .bind(channel)
                        .bind(&delivery.url)
                        .bind(now)
                        .execute(&mut *tx)
                        .await?;
                        // Later messages' pending deliveries to it stop too.
                        sqlx::query(
                            "UPDATE realtime_webhooks SET status = 3, updated_at = $1 \
                             WHERE channel_id = $2 AND url = $3 AND status = 0 \
                             AND lease_until <= $1",
                        )
                        .bind(now)
                        .bind(channel)
                        .bind(&delivery.url)
                        .execute(&mut *tx)
                        .await?;
                    }
                }
                _ => {}
            }
        }
        tx.commit().await?;
        Ok(())
    }

    /// The URLs disabled (410 Gone) per channel definition of an app.
    pub async fn disabled_webhooks(&self) -> Result<Vec<(String, String)>, StoreError> {
        let rows =
            sqlx::query("SELECT channel_id, url FROM realtime_webhook_disabled ORDER BY url")
                .fetch_all(&self.pool)
                .await?;
        rows.iter()
            .map(|r| Ok((r.try_get(0)?, r.try_get(1)?)))
            .collect()
    }

    /// Deliveries still pending, for the metrics.
    pub async fn webhook_backlog(&self) -> Result<Backlog, StoreError> {
        let row =
            sqlx::query("SELECT COUNT(*), MIN(created_at) FROM realtime_webhooks WHERE status = 0")
                .fetch_one(&self.pool)
                .await?;
        Ok(Backlog {
            pending: row.try_get(0)?,
            oldest_ms: row.try_get(1)?,
        })
    }

    /// Takes or renews the lease `name` for `holder` until `until_ms`;
    /// whether `holder` has it.
    pub async fn lease(&self, name: &str, holder: &str, until_ms: i64) -> Result<bool, StoreError> {
        let now = now_ms();
        let done = sqlx::query(
            "INSERT INTO herald_leases (name, holder, until_ms) VALUES ($1, $2, $3) \
             ON CONFLICT (name) DO UPDATE SET holder = excluded.holder, until_ms = excluded.until_ms \
             WHERE herald_leases.holder = excluded.holder OR herald_leases.until_ms < $4",
        )
        .bind(name)
        .bind(holder)
        .bind(until_ms)
        .bind(now)
        .execute(&self.pool)
        .await?;
        Ok(done.rows_affected() == 1)
    }
}

/// A query with the text parameters of `message_clause` bound.
fn query_with<'q>(
    sql: &'q str,
    binds: &'q [String],
) -> sqlx::query::Query<'q, sqlx::Any, sqlx::any::AnyArguments<'q>> {
    binds
        .iter()
        .fold(sqlx::query(sql), |query, b| query.bind(b.as_str()))
}

/// `($1, $2, …), (…)` for `rows` rows of `columns` parameters.
fn push_rows(sql: &mut String, rows: usize, columns: usize) {
    for r in 0..rows {
        if r > 0 {
            sql.push_str(", ");
        }
        sql.push('(');
        sql.push_str(&placeholders(r * columns + 1, columns));
        sql.push(')');
    }
}

/// `$first, …` for `n` parameters.
fn placeholders(first: usize, n: usize) -> String {
    (first..first + n)
        .map(|i| format!("${i}"))
        .collect::<Vec<_>>()
        .join(", ")
}

/// The `WHERE` clause of a message query and its parameters (all text;
/// the time, when given, is compared as a number).
fn message_clause(
    app: &str,
    channel_id: Option<&str>,
    event_name: Option<&str>,
    since_ms: Option<i64>,
) -> (String, Vec<String>) {
    let mut clause = String::from("m.app = $1");
    let mut binds = vec![app.to_owned()];
    if let Some(channel) = channel_id {
        binds.push(channel.to_owned());
        clause.push_str(&format!(" AND m.channel_id = ${}", binds.len()));
    }
    if let Some(event) = event_name {
        binds.push(event.to_owned());
        clause.push_str(&format!(" AND m.event_name = ${}", binds.len()));
    }
    if let Some(since) = since_ms {
        // A number, not a parameter: the parameters are all text.
        clause.push_str(&format!(" AND m.created_at >= {since}"));
    }
    (clause, binds)
}

fn message(row: &AnyRow) -> Result<Message, StoreError> {
    let payload: String = row.try_get("payload")?;
    Ok(Message {
        id: row.try_get("id")?,
        event_name: row.try_get("event_name")?,
        channel_id: row.try_get("channel_id")?,
        channel_name: row.try_get("channel_name")?,
        payload: serde_json::from_str(&payload)
            .map_err(|e| StoreError::Corrupt(format!("message payload: {e}")))?,
        sender_type: row.try_get("sender_type")?,
        sender_id: row.try_get("sender_id")?,
        ws_audience_count: row.try_get("ws_audience_count")?,
        wh_audience_count: row.try_get("wh_audience_count")?,
        wh_delivered_count: row.try_get("wh_delivered_count")?,
        created_at_ms: row.try_get("created_at")?,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::PostgresServer;

    fn msg(id: &str, event: &str, at: i64, urls: &[&str]) -> NewMessage {
        NewMessage {
            id: id.into(),
            app: "app1".into(),
            event_name: event.into(),
            channel_id: Some("def-1".into()),
            channel_name: "order:1".into(),
            payload: r#"{"n":1}"#.into(),
            sender_type: "system".into(),
            sender_id: None,
            webhook_urls: urls.iter().map(|u| u.to_string()).collect(),
            trace: None,
            created_at_ms: at,
        }
    }

    async fn contract(store: &Store) {
        let now = now_ms();
        // An audience count that arrives before its row still lands.
        store
            .add_audience("gw-a", &[("m1".into(), 2)])
            .await
            .unwrap();
        let batch = vec![
            msg("m1", "created", now - 3, &["http://a/1", "http://a/2"]),
            msg("m2", "created", now - 2, &[]),
            msg("m3", "paid", now - 1, &["http://a/1"]),
        ];
        store.log_messages(&batch).await.unwrap();
        // A redelivered batch makes no second row and no second delivery.
        store.log_messages(&batch).await.unwrap();
        store
            .add_audience("gw-b", &[("m1".into(), 3)])
            .await
            .unwrap();
        store
            .add_audience("gw-a", &[("m1".into(), 1)])
            .await
            .unwrap();

        let all = MessageFilter {
            limit: 100,
            ..MessageFilter::default()
        };
        let (rows, total) = store.messages("app1", &all).await.unwrap();
        assert_eq!(total, 3);
        let ids: Vec<&str> = rows.iter().map(|m| m.id.as_str()).collect();
        assert_eq!(ids, ["m3", "m2", "m1"], "newest first");
        assert_eq!(rows[2].ws_audience_count, 6);
        assert_eq!(rows[2].wh_audience_count, 2);
        assert_eq!(rows[2].payload, serde_json::json!({"n": 1}));
        let paid = MessageFilter {
            event_name: Some("paid".into()),
            limit: 1,
            ..MessageFilter::default()
        };
        assert_eq!(store.messages("app1", &paid).await.unwrap().1, 1);
        let page = MessageFilter {
            limit: 1,
            offset: 1,
            ..MessageFilter::default()
        };
        assert_eq!(store.messages("app1", &page).await.unwrap().0[0].id, "m2");
        assert_eq!(store.messages("app2", &all).await.unwrap().1, 0);

        // Three deliveries, leased once each.
        let now = now_ms() + 1;
        let far = now + 60_000;
        let due = store.claim_deliveries(now, far, 10).await.unwrap();
        assert_eq!(due.len(), 3);
        assert!(store
            .claim_deliveries(now, far, 10)
            .await
            .unwrap()
            .is_empty());
        let first = due
            .iter()
            .find(|d| d.message_id == "m1" && d.url == "http://a/1")
            .unwrap();
        assert_eq!(first.id, delivery_id("m1", "http://a/1"));
        store
            .record_attempt(first, &Outcome::Delivered)
            .await
            .unwrap();
        // A second report of the same attempt counts nothing.
        store
            .record_attempt(first, &Outcome::Delivered)
            .await
            .unwrap();
        let second = due
            .iter()
            .find(|d| d.message_id == "m1" && d.url == "http://a/2")
            .unwrap();
        let retry = Outcome::Retry {
            at_ms: now - 1,
            error: "500".into(),
        };
        store.record_attempt(second, &retry).await.unwrap();
        let again = store.claim_deliveries(now, far, 10).await.unwrap();
        assert_eq!(again.len(), 1);
        assert_eq!(again[0].attempts, 1);
        let third = due.iter().find(|d| d.message_id == "m3").unwrap();
        store.record_attempt(third, &Outcome::Gone).await.unwrap();
        assert_eq!(
            store.disabled_webhooks().await.unwrap(),
            vec![("def-1".to_owned(), "http://a/1".to_owned())]
        );
        assert_eq!(store.webhook_backlog().await.unwrap().pending, 1);

        let stats = store.message_stats("app1", None, None).await.unwrap();
        assert_eq!(stats.total_messages, 3);
        assert!(
            (stats.wh_delivery_rate - 1.0 / 3.0).abs() < 1e-9,
            "{stats:?}"
        );
        assert_eq!(
            stats.top_events[0],
            EventCount {
                event_name: "created".into(),
                count: 2
            }
        );
        let now = batch[2].created_at_ms + 1;
        let since = store
            .message_stats("app1", Some("def-1"), Some(now - 1))
            .await
            .unwrap();
        assert_eq!(since.total_messages, 1);

        // Retention: only older rows go, in batches.
        assert_eq!(
            store
                .delete_messages_before("app1", now - 2, 1)
                .await
                .unwrap(),
            1
        );
        assert_eq!(
            store
                .delete_messages_before("app1", now - 2, 1)
                .await
                .unwrap(),
            0
        );
        assert_eq!(store.messages("app1", &all).await.unwrap().1, 2);
        assert_eq!(store.delete_messages("app1").await.unwrap(), 2);

        // One lease holder at a time; it may renew, others wait it out.
        assert!(store.lease("job", "a", now + 60_000).await.unwrap());
        assert!(!store.lease("job", "b", now + 60_000).await.unwrap());
        assert!(store.lease("job", "a", now + 60_000).await.unwrap());
        assert!(store.lease("gone", "a", now - 1).await.unwrap());
        assert!(store.lease("gone", "b", now + 60_000).await.unwrap());
    }

    #[tokio::test]
    async fn sqlite_keeps_the_message_contract() {
        contract(&Store::memory().await.unwrap()).await;
    }

    #[tokio::test]
    async fn postgres_keeps_the_message_contract() {
        let pg = PostgresServer::start();
        contract(&Store::connect(&pg.url()).await.unwrap()).await;
    }
}
