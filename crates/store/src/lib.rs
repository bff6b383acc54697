//! Herald's database: what operators manage and gateways share, kept in
//! SQL: channel definitions, per-app realtime settings, and the message
//! log with its webhook deliveries (`messages`).
//!
//! One implementation over `sqlx`'s `Any` driver serves both databases:
//! SQLite for an embedded gateway (in memory, or a file under its
//! `data_dir`), PostgreSQL for a cluster. The schema is written for both
//! (`migrations/`, applied at start; PostgreSQL serializes concurrent
//! starts with an advisory lock). Every change bumps one revision row in
//! the same transaction, which gateways poll to reload what they cache.

pub mod messages;
pub mod pattern;
pub mod policies;
#[doc(hidden)]
pub mod testing;

use serde::Serialize;
use sqlx::any::{AnyPoolOptions, AnyRow};
use sqlx::{AnyPool, Row};
use std::time::Duration;

/// What went wrong at the database.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The database could not be reached (or did not answer in time).
    #[error("database {url} is unreachable: {source}")]
    Unreachable {
        url: String,
        #[source]
        source: sqlx::Error,
    },
    /// The schema could not be brought up to date.
    #[error("database migrations failed: {0}")]
    Migration(#[from] sqlx::migrate::MigrateError),
    /// A channel definition with this pattern exists in the app.
    #[error("a channel definition with pattern `{0}` already exists")]
    Duplicate(String),
    /// A row Herald cannot read (edited by hand, say).
    #[error("unreadable row: {0}")]
    Corrupt(String),
    #[error("database error: {0}")]
    Query(#[from] sqlx::Error),
}

/// A channel definition, as the admin API shows it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Definition {
    pub id: String,
    #[serde(skip)]
    pub app: String,
    pub pattern: String,
    pub description: Option<String>,
    pub webhook_urls: Vec<String>,
    pub enabled: bool,
    /// Epoch milliseconds.
    #[serde(skip)]
    pub created_at_ms: i64,
    #[serde(skip)]
    pub updated_at_ms: i64,
}

/// A new definition.
#[derive(Debug, Clone)]
pub struct NewDefinition {
    pub pattern: String,
    pub description: Option<String>,
    pub webhook_urls: Vec<String>,
    pub enabled: bool,
}

/// The fields of a definition an update changes (`None` keeps one).
#[derive(Debug, Clone, Default)]
pub struct DefinitionChange {
    pub pattern: Option<String>,
    pub description: Option<Option<String>>,
    pub webhook_urls: Option<Vec<String>>,
    pub enabled: Option<bool>,
}

/// An app's realtime settings.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct RealtimeSettings {
    /// Days messages are kept; `None` keeps them.
    pub retention_days: Option<u32>,
}

/// Which database a store is on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    Sqlite,
    Postgres,
}

/// The database.
#[derive(Clone)]
pub struct Store {
    pool: AnyPool,
    backend: Backend,
}

static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("./migrations");

/// A database URL without its password (in the user part, or a
/// `password=` parameter), for messages.
pub fn redact(url: &str) -> String {
    let (base, query) = match url.split_once('?') {
        Some((base, query)) => (base, Some(query)),
        None => (url, None),
    };
    let mut out = match (base.find("://"), base.rfind('@')) {
        (Some(scheme), Some(at)) if at > scheme => {
            let userinfo = &base[scheme + 3..at];
            let user = userinfo.split(':').next().unwrap_or_default();
            format!("{}{user}:***{}", &base[..scheme + 3], &base[at..])
        }
        _ => base.to_owned(),
    };
    if let Some(query) = query {
        let params: Vec<String> = query
            .split('&')
            .map(|p| match p.split_once('=') {
                Some((k, _)) if k.eq_ignore_ascii_case("password") => format!("{k}=***"),
                _ => p.to_owned(),
            })
            .collect();
        out.push('?');
        out.push_str(&params.join("&"));
    }
    out
}

fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64)
}

impl Store {
    /// Connects to `url` (`postgres://…`, `sqlite://…`, `sqlite::memory:`)
    /// and applies the migrations.
    pub async fn connect(url: &str) -> Result<Store, StoreError> {
        sqlx::any::install_default_drivers();
        let backend = if url.starts_with("sqlite:") {
            Backend::Sqlite
        } else {
            Backend::Postgres
        };
        let memory = url.contains(":memory:") || url.contains("mode=memory");
        let options = AnyPoolOptions::new()
            .acquire_timeout(Duration::from_secs(5))
            // An in-memory SQLite database lives in its one connection.
            .max_connections(if memory { 1 } else { 8 })
            .min_connections(if memory { 1 } else { 0 })
            .idle_timeout(if memory {
                None
            } else {
                Some(Duration::from_secs(300))
            })
            .max_lifetime(if memory {
                None
            } else {
                Some(Duration::from_secs(1800))
            });
        let pool = options
            .connect(url)
            .await
            .map_err(|source| StoreError::Unreachable {
                url: redact(url),
                source,
            })?;
        MIGRATOR.run(&pool).await?;
        Ok(Store { pool, backend })
    }

    /// An in-memory SQLite store (an embedded gateway without `data_dir`).
    pub async fn memory() -> Result<Store, StoreError> {
        Store::connect("sqlite::memory:").await
    }

    /// A SQLite store in `dir` (created if missing).
    pub async fn in_dir(dir: &std::path::Path) -> Result<Store, StoreError> {
        std::fs::create_dir_all(dir).map_err(|e| StoreError::Unreachable {
            url: dir.display().to_string(),
            source: sqlx::Error::Io(e),
        })?;
        let path = dir.join("herald.db");
        Store::connect(&format!("sqlite://{}?mode=rwc", path.display())).await
    }

    pub fn backend(&self) -> Backend {
        self.backend
    }

    /// The revision of everything here: it changes with every write.
    pub async fn revision(&self) -> Result<i64, StoreError> {
        let row = sqlx::query("SELECT revision FROM realtime_revision WHERE id = 1")
            .fetch_one(&self.pool)
            .await?;
        Ok(row.try_get::<i64, _>(0)?)
    }

    /// Every definition of every app, for the gateways' cache.
    pub async fn all_definitions(&self) -> Result<Vec<Definition>, StoreError> {
        let rows = sqlx::query(&format!("{SELECT} ORDER BY app, pattern"))
            .fetch_all(&self.pool)
            .await?;
        rows.iter().map(definition).collect()
    }

    /// An app's definitions, oldest first.
    pub async fn definitions(&self, app: &str) -> Result<Vec<Definition>, StoreError> {
        let rows = sqlx::query(&format!("{SELECT} WHERE app = $1 ORDER BY created_at, id"))
            .bind(app)
            .fetch_all(&self.pool)
            .await?;
        rows.iter().map(definition).collect()
    }

    pub async fn definition(&self, app: &str, id: &str) -> Result<Option<Definition>, StoreError> {
        let row = sqlx::query(&format!("{SELECT} WHERE app = $1 AND id = $2"))
            .bind(app)
            .bind(id)
            .fetch_optional(&self.pool)
            .await?;
        row.as_ref().map(definition).transpose()
    }

    /// Creates a definition; `Duplicate` when the app has the pattern.
    pub async fn create(&self, app: &str, new: NewDefinition) -> Result<Definition, StoreError> {
        let now = now_ms();
        let def = Definition {
            id: uuid::Uuid::new_v4().to_string(),
            app: app.to_owned(),
            pattern: new.pattern,
            description: new.description,
            webhook_urls: new.webhook_urls,
            enabled: new.enabled,
            created_at_ms: now,
            updated_at_ms: now,
        };
        let mut tx = self.pool.begin().await?;
        let inserted = sqlx::query(
            "INSERT INTO realtime_channels \
             (id, app, pattern, description, webhook_urls, enabled, created_at, updated_at) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8)",
        )
        .bind(&def.id)
        .bind(&def.app)
        .bind(&def.pattern)
        .bind(def.description.clone())
        .bind(urls_json(&def.webhook_urls))
        .bind(i64::from(def.enabled))
        .bind(def.created_at_ms)
        .bind(def.updated_at_ms)
        .execute(&mut *tx)
        .await;
        duplicate(inserted, &def.pattern)?;
        bump(&mut tx).await?;
        tx.commit().await?;
        Ok(def)
    }

    /// Changes a definition; `None` when the app has no such definition.
    pub async fn update(
        &self,
        app: &str,
        id: &str,
        change: DefinitionChange,
    ) -> Result<Option<Definition>, StoreError> {
        let mut tx = self.pool.begin().await?;
        let row = sqlx::query(&format!("{SELECT} WHERE app = $1 AND id = $2"))
            .bind(app)
            .bind(id)
            .fetch_optional(&mut *tx)
            .await?;
        let Some(row) = row else {
            return Ok(None);
        };
        let mut def = definition(&row)?;
        if let Some(pattern) = change.pattern {
            def.pattern = pattern;
        }
        if let Some(description) = change.description {
            def.description = description;
        }
        if let Some(urls) = change.webhook_urls {
            def.webhook_urls = urls;
        }
        if let Some(enabled) = change.enabled {
            def.enabled = enabled;
        }
        def.updated_at_ms = now_ms().max(def.created_at_ms);
        let updated = sqlx::query(
            "UPDATE realtime_channels SET pattern = $1, description = $2, webhook_urls = $3, \
             enabled = $4, updated_at = $5 WHERE app = $6 AND id = $7",
        )
        .bind(&def.pattern)
        .bind(def.description.clone())
        .bind(urls_json(&def.webhook_urls))
        .bind(i64::from(def.enabled))
        .bind(def.updated_at_ms)
        .bind(app)
        .bind(id)
        .execute(&mut *tx)
        .await;
        duplicate(updated, &def.pattern)?;
        bump(&mut tx).await?;
        tx.commit().await?;
        Ok(Some(def))
    }

    /// Deletes a definition; whether there was one.
    pub async fn delete(&self, app: &str, id: &str) -> Result<bool, StoreError> {
        let mut tx = self.pool.begin().await?;
        let done = sqlx::query("DELETE FROM realtime_channels WHERE app = $1 AND id = $2")
            .bind(app)
            .bind(id)
            .execute(&mut *tx)
            .await?;
        if done.rows_affected() == 0 {
            return Ok(false);
        }
        // Its messages stay, without a channel.
        sqlx::query("UPDATE realtime_messages SET channel_id = NULL WHERE channel_id = $1")
            .bind(id)
            .execute(&mut *tx)
            .await?;
        bump(&mut tx).await?;
        tx.commit().await?;
        Ok(true)
    }

    pub async fn settings(&self, app: &str) -> Result<RealtimeSettings, StoreError> {
        let row = sqlx::query("SELECT retention_days FROM realtime_config WHERE app = $1")
            .bind(app)
            .fetch_optional(&self.pool)
            .await?;
        let days = match row {
            Some(row) => row.try_get::<Option<i64>, _>(0)?,
            None => None,
        };
        Ok(RealtimeSettings {
            retention_days: days.map(|d| u32::try_from(d).unwrap_or(u32::MAX)),
        })
    }

    pub async fn set_settings(
        &self,
        app: &str,
        settings: RealtimeSettings,
    ) -> Result<RealtimeSettings, StoreError> {
        let mut tx = self.pool.begin().await?;
        sqlx::query(
            "INSERT INTO realtime_config (app, retention_days) VALUES ($1, $2) \
             ON CONFLICT (app) DO UPDATE SET retention_days = excluded.retention_days",
        )
        .bind(app)
        .bind(settings.retention_days.map(i64::from))
        .execute(&mut *tx)
        .await?;
        bump(&mut tx).await?;
        tx.commit().await?;
        Ok(settings)
    }

    /// Closes the pool's connections.
    pub async fn close(&self) {
        self.pool.close().await;
    }
}

const SELECT: &str = "SELECT id, app, pattern, description, webhook_urls, enabled, \
                      created_at, updated_at FROM realtime_channels";

fn urls_json(urls: &[String]) -> String {
    serde_json::to_string(urls).unwrap_or_else(|_| "[]".into())
}

fn definition(row: &AnyRow) -> Result<Definition, StoreError> {
    let urls: String = row.try_get("webhook_urls")?;
    let webhook_urls = serde_json::from_str(&urls)
        .map_err(|e| StoreError::Corrupt(format!("webhook_urls `{urls}`: {e}")))?;
    Ok(Definition {
        id: row.try_get("id")?,
        app: row.try_get("app")?,
        pattern: row.try_get("pattern")?,
        description: row.try_get("description")?,
        webhook_urls,
        enabled: row.try_get::<i64, _>("enabled")? != 0,
        created_at_ms: row.try_get("created_at")?,
        updated_at_ms: row.try_get("updated_at")?,
    })
}

fn duplicate<T>(result: Result<T, sqlx::Error>, pattern: &str) -> Result<T, StoreError> {
    match result {
        Err(sqlx::Error::Database(e)) if e.is_unique_violation() => {
            Err(StoreError::Duplicate(pattern.to_owned()))
        }
        other => Ok(other?),
    }
}

async fn bump(tx: &mut sqlx::Transaction<'_, sqlx::Any>) -> Result<(), StoreError> {
    sqlx::query("UPDATE realtime_revision SET revision = revision + 1 WHERE id = 1")
        .execute(&mut **tx)
        .await?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn new(pattern: &str) -> NewDefinition {
        NewDefinition {
            pattern: pattern.into(),
            description: Some("orders".into()),
            webhook_urls: vec!["http://127.0.0.1:9/hook".into()],
            enabled: true,
        }
    }

    /// The store's contract, on whichever database `store` is.
    pub async fn contract(store: &Store) {
        let r0 = store.revision().await.unwrap();
        let a = store.create("app1", new("order:%")).await.unwrap();
        assert!(store.revision().await.unwrap() > r0);
        assert!(matches!(
            store.create("app1", new("order:%")).await,
            Err(StoreError::Duplicate(p)) if p == "order:%"
        ));
        // Unique per app, not across apps.
        store.create("app2", new("order:%")).await.unwrap();
        let b = store.create("app1", new("chat:%")).await.unwrap();
        let listed = store.definitions("app1").await.unwrap();
        assert_eq!(listed.len(), 2);
        assert!(listed.contains(&a) && listed.contains(&b));
        assert_eq!(
            store.definition("app1", &a.id).await.unwrap(),
            Some(a.clone())
        );
        assert_eq!(store.definition("app2", &a.id).await.unwrap(), None);

        let change = DefinitionChange {
            enabled: Some(false),
            description: Some(None),
            ..DefinitionChange::default()
        };
        let changed = store.update("app1", &a.id, change).await.unwrap().unwrap();
        assert!(!changed.enabled);
        assert_eq!(changed.description, None);
        assert_eq!(changed.webhook_urls, a.webhook_urls);
        assert_eq!(
            store.definition("app1", &a.id).await.unwrap(),
            Some(changed)
        );
        let clash = DefinitionChange {
            pattern: Some("chat:%".into()),
            ..DefinitionChange::default()
        };
        assert!(matches!(
            store.update("app1", &a.id, clash).await,
            Err(StoreError::Duplicate(_))
        ));
        assert_eq!(
            store
                .update("app1", "no-such-id", DefinitionChange::default())
                .await
                .unwrap(),
            None
        );

        let r1 = store.revision().await.unwrap();
        assert!(store.delete("app1", &a.id).await.unwrap());
        assert!(!store.delete("app1", &a.id).await.unwrap());
        assert!(store.revision().await.unwrap() > r1);
        assert_eq!(store.all_definitions().await.unwrap().len(), 2);

        assert_eq!(store.settings("app1").await.unwrap().retention_days, None);
        let set = RealtimeSettings {
            retention_days: Some(30),
        };
        store.set_settings("app1", set).await.unwrap();
        assert_eq!(store.settings("app1").await.unwrap(), set);
        store
            .set_settings("app1", RealtimeSettings::default())
            .await
            .unwrap();
        assert_eq!(store.settings("app1").await.unwrap().retention_days, None);
    }

    #[tokio::test]
    async fn sqlite_in_memory_keeps_the_contract() {
        contract(&Store::memory().await.unwrap()).await;
    }

    #[tokio::test]
    async fn sqlite_in_a_directory_keeps_the_contract_and_survives_a_restart() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::in_dir(dir.path()).await.unwrap();
        contract(&store).await;
        store.close().await;
        // Migrations are applied once; the data is still there.
        let again = Store::in_dir(dir.path()).await.unwrap();
        assert_eq!(again.all_definitions().await.unwrap().len(), 2);
        assert_eq!(again.settings("app1").await.unwrap().retention_days, None);
    }

    #[tokio::test]
    async fn postgres_keeps_the_contract() {
        let pg = testing::PostgresServer::start();
        contract(&Store::connect(&pg.url()).await.unwrap()).await;
    }

    #[tokio::test]
    async fn gateways_starting_together_migrate_once() {
        let pg = testing::PostgresServer::start();
        let url = pg.url();
        let starts: Vec<_> = (0..4)
            .map(|_| {
                let url = url.clone();
                tokio::spawn(async move { Store::connect(&url).await.map(|_| ()) })
            })
            .collect();
        for start in starts {
            start.await.unwrap().unwrap();
        }
        let store = Store::connect(&url).await.unwrap();
        assert_eq!(store.revision().await.unwrap(), 0);
    }

    #[tokio::test]
    async fn an_unreachable_database_is_a_clear_error() {
        let e = Store::connect("postgres://herald:secret@127.0.0.1:1/herald")
            .await
            .err()
            .unwrap();
        let text = e.to_string();
        assert!(text.contains("unreachable"), "{text}");
        assert!(!text.contains("secret"), "{text}");
    }

    #[test]
    fn urls_are_redacted() {
        assert_eq!(redact("postgres://u:pw@h:5/db"), "postgres://u:***@h:5/db");
        assert_eq!(redact("sqlite::memory:"), "sqlite::memory:");
        assert_eq!(
            redact("postgres://h/db?user=u&password=pw&sslmode=require"),
            "postgres://h/db?user=u&password=***&sslmode=require"
        );
        assert_eq!(redact("sqlite://x.db?mode=rwc"), "sqlite://x.db?mode=rwc");
    }
}
