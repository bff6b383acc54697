//! Channel keys and scoping.
//!
//! Two parties meet on a channel only when every part of the key is equal:
//! the app, the namespace, the name, the scope (which product context
//! properties count, and their values) and the channel-token claims. The key
//! is reduced to a fixed-size id, a hash of a canonical encoding of those
//! parts, which names the channel everywhere else (index, history, topics).

use serde_json::{Map, Value};
use sha2::{Digest, Sha256};
use std::fmt;
use std::sync::Arc;

/// Longest channel name accepted.
pub const MAX_CHANNEL_NAME: usize = 128;
/// Longest event name accepted.
pub const MAX_EVENT_NAME: usize = 64;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum KeyError {
    #[error("{0}")]
    InvalidChannel(String),
    #[error("{0}")]
    InvalidEvent(String),
}

/// The product context that scopes a channel.
#[derive(Debug, Clone, Copy)]
pub enum Scope<'a> {
    /// A global channel: no context.
    Global,
    /// A scoped channel: the context of the party, narrowed to the
    /// properties named in `overrides` when given.
    Context {
        context: &'a Map<String, Value>,
        overrides: Option<&'a [String]>,
    },
}

/// A resolved channel key. Cheap to clone.
#[derive(Clone)]
pub struct ChannelKey {
    inner: Arc<KeyInner>,
}

struct KeyInner {
    id: String,
    app: String,
    name: String,
    global: bool,
}

impl ChannelKey {
    /// Resolves the key a party meets others on. `claims` are the claims of
    /// the channel token the party presented, if any.
    pub fn new(
        app: &str,
        name: &str,
        scope: &Scope<'_>,
        claims: Option<&Value>,
    ) -> Result<ChannelKey, KeyError> {
        validate_channel_name(name)?;
        let mut canon = String::with_capacity(128);
        canon.push_str("herald/v1\n");
        push_field(&mut canon, app);
        push_field(&mut canon, name);
        let global = match scope {
            Scope::Global => {
                canon.push_str("g\n");
                true
            }
            Scope::Context { context, overrides } => {
                canon.push_str("s\n");
                match overrides {
                    None => canonical_map(context, &mut canon),
                    Some(names) => {
                        let mut names: Vec<&String> = names.iter().collect();
                        names.sort();
                        names.dedup();
                        // The names are part of the key; a property the
                        // context lacks stays absent, which is not `null`.
                        let mut picked = Map::new();
                        for n in &names {
                            if let Some(value) = context.get(*n) {
                                picked.insert((*n).clone(), value.clone());
                            }
                        }
                        canon.push('o');
                        canonical_json(
                            &Value::Array(
                                names.iter().map(|n| Value::String((*n).clone())).collect(),
                            ),
                            &mut canon,
                        );
                        canonical_map(&picked, &mut canon);
                    }
                }
                canon.push('\n');
                false
            }
        };
        match claims {
            None => canon.push('-'),
            Some(c) => {
                canon.push('c');
                canonical_json(c, &mut canon);
            }
        }
        let digest = Sha256::digest(canon.as_bytes());
        Ok(ChannelKey {
            inner: Arc::new(KeyInner {
                id: hex::encode(&digest[..16]),
                app: app.to_owned(),
                name: name.to_owned(),
                global,
            }),
        })
    }

    /// 32 hex characters naming this key; the same on every node.
    pub fn id(&self) -> &str {
        &self.inner.id
    }

    pub fn app(&self) -> &str {
        &self.inner.app
    }

    /// The channel name as the application wrote it.
    pub fn name(&self) -> &str {
        &self.inner.name
    }

    pub fn global(&self) -> bool {
        self.inner.global
    }
}

impl PartialEq for ChannelKey {
    fn eq(&self, other: &Self) -> bool {
        self.inner.id == other.inner.id
    }
}
impl Eq for ChannelKey {}

impl std::hash::Hash for ChannelKey {
    fn hash<H: std::hash::Hasher>(&self, state: &mut H) {
        self.inner.id.hash(state)
    }
}

impl fmt::Debug for ChannelKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ChannelKey")
            .field("id", &self.inner.id)
            .field("app", &self.inner.app)
            .field("name", &self.inner.name)
            .field("global", &self.inner.global)
            .finish()
    }
}

fn push_field(out: &mut String, s: &str) {
    // Length-prefixed, so no choice of names can make two keys collide.
    out.push_str(&s.len().to_string());
    out.push(':');
    out.push_str(s);
    out.push('\n');
}

/// JSON with object keys sorted at every depth, so that key order never
/// changes which channel a party lands on.
pub fn canonical_json(v: &Value, out: &mut String) {
    match v {
        Value::Object(map) => canonical_map(map, out),
        Value::Array(items) => {
            out.push('[');
            for (i, v) in items.iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                canonical_json(v, out);
            }
            out.push(']');
        }
        other => out.push_str(&other.to_string()),
    }
}

fn canonical_map(map: &Map<String, Value>, out: &mut String) {
    let mut entries: Vec<(&String, &Value)> = map.iter().collect();
    entries.sort_by(|a, b| a.0.cmp(b.0));
    out.push('{');
    for (i, (k, v)) in entries.into_iter().enumerate() {
        if i > 0 {
            out.push(',');
        }
        out.push_str(&Value::String(k.clone()).to_string());
        out.push(':');
        canonical_json(v, out);
    }
    out.push('}');
}

fn allowed_in_channel(c: char) -> bool {
    c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.' | ':' | '/' | '@' | '=' | '+' | '#')
}

pub fn validate_channel_name(name: &str) -> Result<(), KeyError> {
    if name.is_empty() {
        return Err(KeyError::InvalidChannel("channel name is empty".into()));
    }
    if name.len() > MAX_CHANNEL_NAME {
        return Err(KeyError::InvalidChannel(format!(
            "channel name is {} bytes; at most {MAX_CHANNEL_NAME} allowed",
            name.len()
        )));
    }
    if let Some(bad) = name.chars().find(|c| !allowed_in_channel(*c)) {
        return Err(KeyError::InvalidChannel(format!(
            "channel name contains {bad:?}; allowed are letters, digits and - _ . : / @ = + #"
        )));
    }
    Ok(())
}

pub fn validate_event_name(name: &str) -> Result<(), KeyError> {
    if name.is_empty() || name.len() > MAX_EVENT_NAME {
        return Err(KeyError::InvalidEvent(format!(
            "event name must be 1 to {MAX_EVENT_NAME} bytes"
        )));
    }
    if let Some(bad) = name
        .chars()
        .find(|c| !(c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.' | ':')))
    {
        return Err(KeyError::InvalidEvent(format!(
            "event name contains {bad:?}; allowed are letters, digits and - _ . :"
        )));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    /// The key of a scoped channel for context `c`, narrowed by `overrides`.
    fn scoped(c: Value, overrides: Option<&[&str]>) -> ChannelKey {
        let context = c.as_object().unwrap().clone();
        let overrides: Option<Vec<String>> =
            overrides.map(|o| o.iter().map(|s| s.to_string()).collect());
        let scope = Scope::Context {
            context: &context,
            overrides: overrides.as_deref(),
        };
        key(&scope, None)
    }

    fn key(scope: &Scope, claims: Option<&Value>) -> ChannelKey {
        ChannelKey::new("app1", "ch", scope, claims).unwrap()
    }

    #[test]
    fn context_key_order_does_not_matter() {
        let a = scoped(json!({"issue":"1","project":"2"}), None);
        let b = scoped(json!({"project":"2","issue":"1"}), None);
        assert_eq!(a, b);
    }

    #[test]
    fn whole_context_scopes_by_default() {
        let a = scoped(json!({"module":"m1","issue":"1"}), None);
        let b = scoped(json!({"module":"m2","issue":"1"}), None);
        assert_ne!(a, b);
    }

    #[test]
    fn overrides_pick_properties() {
        let a = scoped(json!({"module":"m1","issue":"1"}), Some(&["issue"]));
        let b = scoped(json!({"module":"m2","issue":"1"}), Some(&["issue"]));
        assert_eq!(a, b);
    }

    #[test]
    fn an_absent_property_is_not_null() {
        let absent = scoped(json!({"module":"m"}), Some(&["issue"]));
        let null = scoped(json!({"issue":null}), Some(&["issue"]));
        assert_ne!(absent, null);
        assert_eq!(absent, scoped(json!({}), Some(&["issue"])));
        assert_ne!(scoped(json!({}), None), scoped(json!({"issue":null}), None));
    }

    #[test]
    fn override_lists_must_match_exactly() {
        let c = json!({"project":"2","issue":"1"});
        let a = scoped(c.clone(), Some(&["project"]));
        let b = scoped(c.clone(), Some(&["project", "issue"]));
        let b2 = scoped(c, Some(&["issue", "project"]));
        assert_ne!(a, b);
        assert_eq!(b, b2);
    }

    #[test]
    fn global_is_its_own_namespace() {
        let g = key(&Scope::Global, None);
        let s = scoped(json!({}), None);
        assert_ne!(g, s);
        assert!(g.global());
    }

    #[test]
    fn claims_compare_canonically() {
        let s = Scope::Global;
        let a = key(&s, Some(&json!({"a":1,"b":{"x":1,"y":2}})));
        let b = key(&s, Some(&json!({"b":{"y":2,"x":1},"a":1})));
        let c = key(&s, Some(&json!({"a":2,"b":{"y":2,"x":1}})));
        let none = key(&s, None);
        assert_eq!(a, b);
        assert_ne!(a, c);
        assert_ne!(a, none);
    }

    #[test]
    fn apps_never_share_keys() {
        let a = ChannelKey::new("app1", "ch", &Scope::Global, None).unwrap();
        let b = ChannelKey::new("app2", "ch", &Scope::Global, None).unwrap();
        assert_ne!(a, b);
    }

    #[test]
    fn names_are_checked() {
        assert!(validate_channel_name("my-channel:1/a@b").is_ok());
        assert!(validate_channel_name("").is_err());
        assert!(validate_channel_name("has space").is_err());
        assert!(validate_channel_name(&"x".repeat(129)).is_err());
        assert!(validate_event_name("status_changed").is_ok());
        assert!(validate_event_name("bad event").is_err());
    }
}
