//! Every Redis key and topic Herald uses is named here, and nowhere else.
//! `docs/cluster.md` lists them for operators.
//!
//! A channel's keys and its topic share the hash tag `{<channel id>}`, so on
//! Redis Cluster they live in one slot: a publish script can touch the
//! stream and publish to the shard channel atomically.

/// Stream metadata hash: `e` = epoch, `o` = top offset.
pub fn meta(channel: &str) -> String {
    format!("herald:{{{channel}}}:m")
}

/// Stream of kept publications: entry id `<offset>-1`, fields `d` (the
/// publication JSON) and `t` (ms appended).
pub fn stream(channel: &str) -> String {
    format!("herald:{{{channel}}}:s")
}

/// The first answer to a publish with this idempotency key:
/// `<message id or -> <ms>`, kept for the idempotency window.
pub fn idempotency(channel: &str, key: &str) -> String {
    format!("herald:{{{channel}}}:i:{key}")
}

/// The channel's pub/sub topic (shard channel on Redis Cluster).
pub fn topic(channel: &str) -> String {
    format!("herald:{{{channel}}}:t")
}

/// Presence: field `<connection id> <presence id>` -> member JSON.
pub fn presence_members(channel: &str) -> String {
    format!("herald:{{{channel}}}:pm")
}

/// Presence: field -> ms at which the connection's entry expires unless its
/// gateway refreshes it.
pub fn presence_expiry(channel: &str) -> String {
    format!("herald:{{{channel}}}:px")
}

/// Presence: presence id -> live connections of that member.
pub fn presence_counts(channel: &str) -> String {
    format!("herald:{{{channel}}}:pc")
}

/// Channels with presence entries -> ms at which the next entry may expire;
/// every gateway sweeps the ones that are due.
pub const PRESENCE_INDEX: &str = "herald:presence";

/// GCRA state (theoretical arrival time, µs) of a cluster-wide limit;
/// `limit` names it, e.g. `ops:app1`.
pub fn rate_limit(limit: &str) -> String {
    format!("herald:rl:{{{limit}}}")
}

/// An app's dispatch stream: entries `h` (head JSON: channel, definition,
/// webhook URLs) and `d` (the publication JSON), read by the `workers`
/// consumer group; acknowledged entries are deleted.
pub fn dispatch(app: &str) -> String {
    format!("herald:{{dispatch:{app}}}:q")
}

/// Live gateways -> ms at which their registration expires.
pub const NODES: &str = "herald:nodes";

/// One gateway's registration hash: `id`, `address`, `connections`,
/// `startedAt`.
pub fn node(id: &str) -> String {
    format!("herald:node:{id}")
}

/// A gateway's probe topic: it publishes to itself to prove it receives.
pub fn probe_topic(node: &str) -> String {
    format!("herald:{{probe:{node}}}:t")
}

/// The channel id of a channel topic (`None` for other topics).
pub fn channel_of_topic(topic: &str) -> Option<&str> {
    let inner = topic.strip_prefix("herald:{")?.strip_suffix("}:t")?;
    (!inner.starts_with("probe:")).then_some(inner)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn topics_round_trip_and_share_the_slot_tag() {
        let id = "0123456789abcdef0123456789abcdef";
        assert_eq!(channel_of_topic(&topic(id)), Some(id));
        assert_eq!(channel_of_topic(&probe_topic("gw-1")), None);
        for key in [meta(id), stream(id), topic(id), presence_members(id)] {
            assert!(key.contains(&format!("{{{id}}}")), "{key}");
        }
    }
}
