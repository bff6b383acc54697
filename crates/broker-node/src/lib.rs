//! Herald's node core.
//!
//! - [`key`]: channel keys. A channel as an app names it becomes a routing
//!   key made of the app, the namespace (scoped or global), the name, the
//!   product context that scopes it and the claims of a channel token.
//! - [`outbound`]: what a connection hands the node so it can be reached:
//!   a bounded queue of encoded frames, its surface's codec and a way to
//!   kick it.
//! - [`codec`]: how a surface writes deliveries; the native protocol's
//!   codec.
//! - [`hub`]: the local subscription index and fan-out. A publication is
//!   encoded once per codec and the same bytes are queued to every local
//!   subscriber of that codec.
//! - [`presence`]: who is on a channel, as logical members.
//! - [`backplane`]: how publications reach every node; the in-process
//!   implementation serves the embedded mode.
//! - [`background`]: adapters' background tasks, stoppable in order.
//! - [`node`]: the node itself, assembled from [`Parts`] (in memory here;
//!   on Redis by `herald-redis`), tying the above into the operations a
//!   gateway calls: subscribe, unsubscribe, publish, presence, history.

pub mod background;
pub mod backplane;
pub mod codec;
pub mod hub;
pub mod key;
pub mod latency;
pub mod node;
pub mod outbound;
pub mod presence;

pub use background::Background;
pub use codec::{Codec, CodecRef, NATIVE};
pub use hub::Hub;
pub use key::{ChannelKey, KeyError, Scope};
pub use node::{
    Alone, Join, Membership, Node, NodeError, NodeStats, Parts, Recovery, SubscribeOutcome,
};
pub use outbound::{ConnId, EncodedFrame, Outbound, Receiver, Subscriber};
