//! Herald's node core.
//!
//! - [`key`]: channel keys. A channel as an app names it becomes a routing
//!   key made of the app, the namespace (scoped or global), the name, the
//!   product context that scopes it and the claims of a channel token.
//! - [`outbound`]: what a connection hands the node so it can be reached:
//!   a bounded queue of encoded frames and a way to kick it.
//! - [`hub`]: the local subscription index and fan-out. A publication is
//!   encoded once and the same bytes are queued to every local subscriber.
//! - [`presence`]: who is on a channel, as logical members.
//! - [`backplane`]: how publications reach every node; the in-process
//!   implementation serves the embedded mode.
//! - [`redis`]: the same seams on Redis, for a cluster of gateways.
//! - [`node`]: the node itself, tying the above into the operations a
//!   gateway calls: subscribe, unsubscribe, publish, presence, history.

pub mod backplane;
pub mod hub;
pub mod key;
pub mod node;
pub mod outbound;
pub mod presence;
pub mod redis;

pub use key::{ChannelKey, KeyError, Scope};
/// Wall-clock milliseconds since the Unix epoch (0 if the clock is before it).
pub fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

pub use node::{ClusterOptions, Node, NodeError, NodeStats, SubscribeOutcome};
pub use outbound::{EncodedFrame, Outbound, Receiver, Subscriber};
pub use redis::registry::NodeInfo;
