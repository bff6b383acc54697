//! Permission policies of the InsForge surface: who may subscribe to and
//! publish on global channels that have a definition.
//!
//! InsForge evaluates PostgreSQL row-level-security policies; Herald keeps
//! the model with its filter-expression language in place of SQL. Per app
//! and command, each policy names the roles it applies to (`anon`,
//! `authenticated`, `project_admin`; none listed: every role) and may carry
//! a condition over `channel` (`name`, `pattern`), `user` (`sub`, `role`,
//! `claims`) and, for `publish`, `message` (`event`, `payload`). As with
//! permissive RLS policies: a command with no policy is open; otherwise a
//! client is allowed when some policy for its role has no condition or a
//! condition that is `true` (an error counts as `false`). API-key
//! connections are the app's backend and are not checked.

use crate::auth::{Identity, DEFAULT_ROLE};
use herald_expr::{ExprError, Expression, Limits};
use herald_protocol::{ErrorBody, ErrorCode};
use herald_store::policies::Policy;
use serde_json::{json, Value};
use std::collections::HashMap;
use std::sync::Arc;

/// The roles a policy may name.
pub const ROLES: [&str; 3] = ["anon", "authenticated", "project_admin"];
/// The commands a policy may govern.
pub const COMMANDS: [&str; 2] = ["subscribe", "publish"];

/// Bound before a condition so it may name `channel`, `user` and
/// `message`; on its own line, so errors are reported one line down.
const PRELUDE: &str =
    "let channel = event.channel; let user = event.user; let message = event.message;\n";

/// Compiles a condition as a policy runs it: the filter-expression limits
/// and static cost rules; errors located in the condition as written.
pub fn compile(condition: &str) -> Result<Expression, ExprError> {
    let source = format!("{PRELUDE}{condition}");
    Expression::check(&source, &Limits::default()).map_err(|mut e| {
        e.pos.line = e.pos.line.saturating_sub(1).max(1);
        e
    })
}

/// A policy ready to run.
pub struct Compiled {
    pub name: String,
    pub roles: Vec<String>,
    /// `None`: the roles alone decide. A condition that no longer compiles
    /// (written by hand in the database) allows nothing.
    pub condition: Option<Result<Expression, ExprError>>,
}

/// One app's policies, by command.
#[derive(Default)]
pub struct AppPolicies {
    pub subscribe: Vec<Compiled>,
    pub publish: Vec<Compiled>,
}

/// Every app's policies, as loaded with the definitions.
pub type PolicyMap = HashMap<String, Arc<AppPolicies>>;

/// Compiles the store's policies by app.
pub fn load(policies: Vec<Policy>) -> PolicyMap {
    let mut by_app: HashMap<String, AppPolicies> = HashMap::new();
    for p in policies {
        let compiled = Compiled {
            condition: p.condition.as_deref().map(|c| {
                compile(c).inspect_err(|e| {
                    tracing::error!(app = p.app, policy = p.policy_name, error = %e, "a stored policy condition does not compile: the policy allows nothing");
                })
            }),
            name: p.policy_name,
            roles: p.roles,
        };
        let app = by_app.entry(p.app).or_default();
        match p.command.as_str() {
            "subscribe" => app.subscribe.push(compiled),
            "publish" => app.publish.push(compiled),
            other => tracing::error!(
                command = other,
                "a stored policy has an unknown command; ignored"
            ),
        }
    }
    by_app.into_iter().map(|(k, v)| (k, Arc::new(v))).collect()
}

/// The role policies see for an identity (`None`: the app's backend,
/// which policies do not apply to).
pub fn role(identity: &Identity) -> Option<&str> {
    match identity {
        Identity::System => None,
        Identity::Anonymous => Some("anon"),
        Identity::User { .. } => Some(identity.role().unwrap_or(DEFAULT_ROLE)),
    }
}

/// What a publish policy sees of the message.
pub struct MessageView<'a> {
    pub event: &'a str,
    pub payload: &'a str,
}

/// Checks `command` on `channel` (governed by the definition `pattern`)
/// against the app's policies.
pub fn check(
    policies: &[Compiled],
    identity: &Identity,
    command: &str,
    channel: &str,
    pattern: &str,
    message: Option<MessageView<'_>>,
) -> Result<(), ErrorBody> {
    let Some(role) = role(identity) else {
        return Ok(());
    };
    if policies.is_empty() {
        return Ok(());
    }
    let applicable: Vec<&Compiled> = policies
        .iter()
        .filter(|p| p.roles.is_empty() || p.roles.iter().any(|r| r == role))
        .collect();
    let denied = || {
        Err(ErrorBody::new(
            ErrorCode::Unauthorized,
            format!("no {command} policy allows role `{role}` on `{channel}`"),
        ))
    };
    if applicable.is_empty() {
        return denied();
    }
    if applicable.iter().any(|p| p.condition.is_none()) {
        return Ok(());
    }
    let context = context(identity, role, channel, pattern, message);
    for p in applicable {
        if let Some(Ok(expression)) = &p.condition {
            match expression.evaluate(&context).result {
                Ok(true) => return Ok(()),
                Ok(false) => {}
                Err(e) => {
                    tracing::debug!(policy = p.name, error = %e, "policy condition failed: counts as false")
                }
            }
        }
    }
    denied()
}

fn context(
    identity: &Identity,
    role: &str,
    channel: &str,
    pattern: &str,
    message: Option<MessageView<'_>>,
) -> Value {
    let user = match identity {
        Identity::User { sub, ctx, .. } => json!({
            "sub": sub,
            "role": role,
            "claims": {"sub": sub, "role": role, "email": identity.email(), "ctx": ctx},
        }),
        _ => json!({"sub": null, "role": role, "claims": {}}),
    };
    let message = message.map_or(Value::Null, |m| {
        json!({
            "event": m.event,
            "payload": serde_json::from_str::<Value>(m.payload).unwrap_or(Value::Null),
        })
    });
    json!({
        "channel": {"name": channel, "pattern": pattern},
        "user": user,
        "message": message,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::Map;

    fn user(sub: &str) -> Identity {
        Identity::User {
            sub: sub.into(),
            ctx: Map::new(),
            exp: u64::MAX,
            profile: None,
        }
    }

    fn policy(roles: &[&str], condition: Option<&str>) -> Compiled {
        Compiled {
            name: "p".into(),
            roles: roles.iter().map(|r| r.to_string()).collect(),
            condition: condition.map(compile),
        }
    }

    #[test]
    fn no_policy_is_open_and_the_backend_is_never_checked() {
        assert!(check(&[], &Identity::Anonymous, "subscribe", "a", "%", None).is_ok());
        let strict = [policy(&["authenticated"], Some("false"))];
        assert!(check(&strict, &Identity::System, "subscribe", "a", "%", None).is_ok());
        assert!(check(&strict, &user("u1"), "subscribe", "a", "%", None).is_err());
    }

    #[test]
    fn roles_and_conditions_decide() {
        let own = [policy(
            &["authenticated"],
            Some("channel.name == 'order:' + user.sub"),
        )];
        assert!(check(&own, &user("u1"), "subscribe", "order:u1", "order:%", None).is_ok());
        let e = check(&own, &user("u1"), "subscribe", "order:u2", "order:%", None).unwrap_err();
        assert_eq!(e.code, ErrorCode::Unauthorized);
        assert!(check(
            &own,
            &Identity::Anonymous,
            "subscribe",
            "order:u1",
            "order:%",
            None
        )
        .is_err());
        // Any applicable policy allows (permissive policies).
        let two = [
            policy(&["anon"], None),
            policy(&["authenticated"], Some("false")),
        ];
        assert!(check(&two, &Identity::Anonymous, "subscribe", "x", "%", None).is_ok());
        // A condition that fails counts as false.
        let broken = [policy(&[], Some("message.payload.text.length < 5"))];
        assert!(check(&broken, &user("u"), "subscribe", "x", "%", None).is_err());
        let short = MessageView {
            event: "chat",
            payload: r#"{"text":"hi"}"#,
        };
        assert!(check(&broken, &user("u"), "publish", "x", "%", Some(short)).is_ok());
    }

    #[test]
    fn bad_conditions_are_refused_where_they_are_wrong() {
        let e = compile("channel.name ==").err().unwrap();
        assert_eq!(e.pos.line, 1, "{e}");
        assert!(compile("nobody.knows").is_err());
        assert!(compile("user.role == 'anon' && channel.pattern.startsWith('order:')").is_ok());
    }
}
