//! Permission policies: per app and command (`subscribe`, `publish`), a
//! name, the roles it applies to and a condition (a filter expression,
//! checked by the gateway before it is stored). Every change bumps the
//! revision, so gateways reload them with the definitions.

use crate::{bump, now_ms, Store, StoreError};
use serde::Serialize;
use sqlx::any::AnyRow;
use sqlx::Row;

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Policy {
    pub id: String,
    #[serde(skip)]
    pub app: String,
    pub command: String,
    pub policy_name: String,
    pub roles: Vec<String>,
    pub condition: Option<String>,
    #[serde(skip)]
    pub created_at_ms: i64,
}

#[derive(Debug, Clone)]
pub struct NewPolicy {
    pub command: String,
    pub name: String,
    pub roles: Vec<String>,
    pub condition: Option<String>,
}

const SELECT: &str =
    "SELECT id, app, command, name, roles, condition, created_at FROM realtime_policies";

impl Store {
    /// Every policy of every app, oldest first.
    pub async fn all_policies(&self) -> Result<Vec<Policy>, StoreError> {
        let rows = sqlx::query(&format!("{SELECT} ORDER BY created_at, id"))
            .fetch_all(&self.pool)
            .await?;
        rows.iter().map(policy).collect()
    }

    /// An app's policies, oldest first.
    pub async fn policies(&self, app: &str) -> Result<Vec<Policy>, StoreError> {
        let rows = sqlx::query(&format!("{SELECT} WHERE app = $1 ORDER BY created_at, id"))
            .bind(app)
            .fetch_all(&self.pool)
            .await?;
        rows.iter().map(policy).collect()
    }

    /// Creates a policy; `Duplicate` when the app has one of that name for
    /// the command.
    pub async fn create_policy(&self, app: &str, new: NewPolicy) -> Result<Policy, StoreError> {
        let p = Policy {
            id: uuid::Uuid::new_v4().to_string(),
            app: app.to_owned(),
            command: new.command,
            policy_name: new.name,
            roles: new.roles,
            condition: new.condition,
            created_at_ms: now_ms(),
        };
        let mut tx = self.pool.begin().await?;
        let inserted = sqlx::query(
            "INSERT INTO realtime_policies (id, app, command, name, roles, condition, created_at) \
             VALUES ($1, $2, $3, $4, $5, $6, $7)",
        )
        .bind(&p.id)
        .bind(&p.app)
        .bind(&p.command)
        .bind(&p.policy_name)
        .bind(serde_json::to_string(&p.roles).unwrap_or_else(|_| "[]".into()))
        .bind(p.condition.clone())
        .bind(p.created_at_ms)
        .execute(&mut *tx)
        .await;
        match inserted {
            Err(sqlx::Error::Database(e)) if e.is_unique_violation() => {
                return Err(StoreError::Duplicate(p.policy_name));
            }
            other => {
                other?;
            }
        }
        bump(&mut tx).await?;
        tx.commit().await?;
        Ok(p)
    }

    /// Deletes a policy; whether there was one.
    pub async fn delete_policy(
        &self,
        app: &str,
        command: &str,
        name: &str,
    ) -> Result<bool, StoreError> {
        let mut tx = self.pool.begin().await?;
        let done = sqlx::query(
            "DELETE FROM realtime_policies WHERE app = $1 AND command = $2 AND name = $3",
        )
        .bind(app)
        .bind(command)
        .bind(name)
        .execute(&mut *tx)
        .await?;
        if done.rows_affected() == 0 {
            return Ok(false);
        }
        bump(&mut tx).await?;
        tx.commit().await?;
        Ok(true)
    }
}

fn policy(row: &AnyRow) -> Result<Policy, StoreError> {
    let roles: String = row.try_get("roles")?;
    Ok(Policy {
        id: row.try_get("id")?,
        app: row.try_get("app")?,
        command: row.try_get("command")?,
        policy_name: row.try_get("name")?,
        roles: serde_json::from_str(&roles)
            .map_err(|e| StoreError::Corrupt(format!("policy roles `{roles}`: {e}")))?,
        condition: row.try_get("condition")?,
        created_at_ms: row.try_get("created_at")?,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn policies_are_kept_per_app_and_command() {
        let store = Store::memory().await.unwrap();
        let r0 = store.revision().await.unwrap();
        let new = |name: &str, command: &str| NewPolicy {
            command: command.into(),
            name: name.into(),
            roles: vec!["authenticated".into()],
            condition: Some("user.sub != null".into()),
        };
        let a = store
            .create_policy("app1", new("own", "subscribe"))
            .await
            .unwrap();
        assert!(store.revision().await.unwrap() > r0);
        assert!(matches!(
            store.create_policy("app1", new("own", "subscribe")).await,
            Err(StoreError::Duplicate(n)) if n == "own"
        ));
        store
            .create_policy("app1", new("own", "publish"))
            .await
            .unwrap();
        store
            .create_policy("app2", new("own", "subscribe"))
            .await
            .unwrap();
        // (Two made in the same millisecond may list in either order.)
        assert!(store.policies("app1").await.unwrap().contains(&a));
        assert_eq!(store.all_policies().await.unwrap().len(), 3);
        assert!(store
            .delete_policy("app1", "subscribe", "own")
            .await
            .unwrap());
        assert!(!store
            .delete_policy("app1", "subscribe", "own")
            .await
            .unwrap());
        assert_eq!(store.policies("app1").await.unwrap().len(), 1);
    }
}
