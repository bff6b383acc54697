//! Who is on a channel.
//!
//! Members are logical: a user is one member however many connections it
//! has; an anonymous or API-key connection is a member of its own. A member
//! joins with its first connection on the channel and leaves after its last.
//!
//! A presence store also announces: it tells the channel's subscribers on
//! every node when a member joins or leaves, in the same step that decides
//! it, so each join and leave is announced exactly once.

use crate::hub::{Hub, PresenceKind};
use crate::key::ChannelKey;
use async_trait::async_trait;
use herald_protocol::server::Member;
use parking_lot::Mutex;
use std::collections::{HashMap, HashSet};
use std::sync::Arc;

#[derive(Debug, thiserror::Error)]
pub enum PresenceError {
    /// The store failed; its own error says how.
    #[error("presence store failed: {0}")]
    Store(#[source] herald_history::StoreError),
}

#[async_trait]
pub trait PresenceStore: Send + Sync + 'static {
    /// Records `conn` as one of `member`'s connections on the channel, and
    /// announces the member when it is its first.
    async fn join(
        &self,
        key: &ChannelKey,
        member: &Member,
        conn: &str,
    ) -> Result<(), PresenceError>;

    /// Forgets `conn`, and announces the member's leave when that was its
    /// last connection on the channel.
    async fn leave(
        &self,
        key: &ChannelKey,
        presence_id: &str,
        conn: &str,
    ) -> Result<(), PresenceError>;

    /// Every current member of the channel.
    async fn members(&self, key: &ChannelKey) -> Result<Vec<Member>, PresenceError>;
}

/// The order members are listed in: earliest joined first.
pub fn sort_members(members: &mut [Member]) {
    members.sort_by(|a, b| {
        a.joined_at
            .cmp(&b.joined_at)
            .then(a.presence_id.cmp(&b.presence_id))
    });
}

/// Presence for the embedded, single-node mode: announcements go straight
/// to the local hub.
pub struct MemoryPresence {
    hub: Arc<Hub>,
    sets: MemberSets,
}

impl MemoryPresence {
    pub fn new(hub: Arc<Hub>) -> Self {
        MemoryPresence {
            hub,
            sets: MemberSets::default(),
        }
    }
}

#[async_trait]
impl PresenceStore for MemoryPresence {
    async fn join(
        &self,
        key: &ChannelKey,
        member: &Member,
        conn: &str,
    ) -> Result<(), PresenceError> {
        if self.sets.join(key.id(), member, conn) {
            self.hub
                .deliver_presence(key.id(), PresenceKind::Join, member);
        }
        Ok(())
    }

    async fn leave(
        &self,
        key: &ChannelKey,
        presence_id: &str,
        conn: &str,
    ) -> Result<(), PresenceError> {
        if let Some(member) = self.sets.leave(key.id(), presence_id, conn) {
            self.hub
                .deliver_presence(key.id(), PresenceKind::Leave, &member);
        }
        Ok(())
    }

    async fn members(&self, key: &ChannelKey) -> Result<Vec<Member>, PresenceError> {
        Ok(self.sets.members(key.id()))
    }
}

/// Logical members per channel, each with the connections it has there.
#[derive(Default)]
pub struct MemberSets {
    channels: Mutex<HashMap<String, HashMap<String, Entry>>>,
}

struct Entry {
    member: Member,
    conns: HashSet<String>,
}

impl MemberSets {
    /// Adds a connection; true when it is the member's first.
    pub fn join(&self, channel: &str, member: &Member, conn: &str) -> bool {
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
        first
    }

    /// Removes a connection; the member when it was its last.
    pub fn leave(&self, channel: &str, presence_id: &str, conn: &str) -> Option<Member> {
        let mut channels = self.channels.lock();
        let members = channels.get_mut(channel)?;
        let entry = members.get_mut(presence_id)?;
        if !entry.conns.remove(conn) || !entry.conns.is_empty() {
            return None;
        }
        let gone = members.remove(presence_id).map(|e| e.member);
        if members.is_empty() {
            channels.remove(channel);
        }
        gone
    }

    pub fn members(&self, channel: &str) -> Vec<Member> {
        let channels = self.channels.lock();
        let mut members: Vec<Member> = channels
            .get(channel)
            .map(|m| m.values().map(|e| e.member.clone()).collect())
            .unwrap_or_default();
        sort_members(&mut members);
        members
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

    #[test]
    fn a_user_is_one_member_across_connections() {
        let p = MemberSets::default();
        assert!(p.join("ch", &user("u-1"), "c-1"));
        assert!(!p.join("ch", &user("u-1"), "c-2"));
        assert_eq!(p.members("ch").len(), 1);
        assert!(p.leave("ch", "u-1", "c-1").is_none());
        assert_eq!(p.leave("ch", "u-1", "c-2"), Some(user("u-1")));
        assert!(p.members("ch").is_empty());
    }

    #[test]
    fn leaving_twice_reports_once() {
        let p = MemberSets::default();
        p.join("ch", &user("u-1"), "c-1");
        assert!(p.leave("ch", "u-1", "c-1").is_some());
        assert!(p.leave("ch", "u-1", "c-1").is_none());
    }
}
