//! Who is on a channel.
//!
//! Members are logical: a user is one member however many connections it
//! has; an anonymous or API-key connection is a member of its own. A member
//! joins with its first connection on the channel and leaves after its last.

use async_trait::async_trait;
use herald_protocol::server::Member;
use parking_lot::Mutex;
use std::collections::{HashMap, HashSet};

#[derive(Debug, thiserror::Error)]
pub enum PresenceError {
    #[error("presence backend unavailable: {0}")]
    Unavailable(String),
}

#[async_trait]
pub trait PresenceStore: Send + Sync + 'static {
    /// Records `conn` as one of `member`'s connections on the channel; true
    /// when it is the member's first there.
    async fn join(&self, channel: &str, member: &Member, conn: &str)
        -> Result<bool, PresenceError>;

    /// Forgets `conn`; returns the member when that was its last connection
    /// on the channel.
    async fn leave(
        &self,
        channel: &str,
        presence_id: &str,
        conn: &str,
    ) -> Result<Option<Member>, PresenceError>;

    /// Every current member of the channel.
    async fn members(&self, channel: &str) -> Result<Vec<Member>, PresenceError>;
}

/// Presence for the embedded, single-node mode.
#[derive(Default)]
pub struct MemoryPresence {
    channels: Mutex<HashMap<String, HashMap<String, Entry>>>,
}

struct Entry {
    member: Member,
    conns: HashSet<String>,
}

#[async_trait]
impl PresenceStore for MemoryPresence {
    async fn join(
        &self,
        channel: &str,
        member: &Member,
        conn: &str,
    ) -> Result<bool, PresenceError> {
        let mut channels = self.channels.lock();
        let members = channels.entry(channel.to_owned()).or_default();
        let entry = members
            .entry(member.presence_id.clone())
            .or_insert_with(|| Entry {
                member: member.clone(),
                conns: HashSet::new(),
            });
        let first = entry.conns.is_empty();
        entry.conns.insert(conn.to_owned());
        Ok(first)
    }

    async fn leave(
        &self,
        channel: &str,
        presence_id: &str,
        conn: &str,
    ) -> Result<Option<Member>, PresenceError> {
        let mut channels = self.channels.lock();
        let Some(members) = channels.get_mut(channel) else {
            return Ok(None);
        };
        let Some(entry) = members.get_mut(presence_id) else {
            return Ok(None);
        };
        if !entry.conns.remove(conn) || !entry.conns.is_empty() {
            return Ok(None);
        }
        let gone = members.remove(presence_id).map(|e| e.member);
        if members.is_empty() {
            channels.remove(channel);
        }
        Ok(gone)
    }

    async fn members(&self, channel: &str) -> Result<Vec<Member>, PresenceError> {
        let channels = self.channels.lock();
        let mut members: Vec<Member> = channels
            .get(channel)
            .map(|m| m.values().map(|e| e.member.clone()).collect())
            .unwrap_or_default();
        members.sort_by(|a, b| {
            a.joined_at
                .cmp(&b.joined_at)
                .then(a.presence_id.cmp(&b.presence_id))
        });
        Ok(members)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use herald_protocol::server::SenderType;

    fn user(id: &str) -> Member {
        Member {
            presence_id: id.into(),
            kind: SenderType::User,
            joined_at: "1".into(),
        }
    }

    #[tokio::test]
    async fn a_user_is_one_member_across_connections() {
        let p = MemoryPresence::default();
        assert!(p.join("ch", &user("u-1"), "c-1").await.unwrap());
        assert!(!p.join("ch", &user("u-1"), "c-2").await.unwrap());
        assert_eq!(p.members("ch").await.unwrap().len(), 1);
        assert!(p.leave("ch", "u-1", "c-1").await.unwrap().is_none());
        assert_eq!(
            p.leave("ch", "u-1", "c-2").await.unwrap(),
            Some(user("u-1"))
        );
        assert!(p.members("ch").await.unwrap().is_empty());
    }

    #[tokio::test]
    async fn leaving_twice_reports_once() {
        let p = MemoryPresence::default();
        p.join("ch", &user("u-1"), "c-1").await.unwrap();
        assert!(p.leave("ch", "u-1", "c-1").await.unwrap().is_some());
        assert!(p.leave("ch", "u-1", "c-1").await.unwrap().is_none());
    }
}
