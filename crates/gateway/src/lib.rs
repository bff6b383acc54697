//! The Herald gateway: Herald's edge, as a library the `herald` binary
//! runs (and unit tests drive without starting a process).
//!
//! - [`config`]: one typed configuration.
//! - [`auth`]: user JWTs, API keys, channel tokens.
//! - [`edge`]: admission, shared by every endpoint: credentials, client
//!   address, per-IP connection limits, rate-limit rejections.
//! - [`realtime`]: the session rules every client surface shares, one
//!   operation per file (subscribe, unsubscribe, publish, presence,
//!   history, refresh) plus the flood gate; each returns a typed outcome
//!   that a surface renders in its own wire format.
//! - [`ws`]: the native WebSocket surface: transport and codec only.
//! - [`api`]: the server API; [`expressions`]: the expression playground
//!   endpoint.
//! - [`listener`]: the accept loop: connection caps and HTTP timeouts.
//! - [`metrics`], [`state`], and [`server`] (routes, start-up, shutdown).
//!
//! Adding a client surface means adding a codec (`herald_broker_node::Codec`
//! for deliveries, plus rendering the realtime outcomes) and a transport
//! that admits connections through [`edge`] and drives a
//! [`realtime::Session`].

pub mod admin;
pub mod api;
pub mod auth;
pub mod config;
pub mod definitions;
pub mod edge;
pub mod expressions;
pub mod fuzz;
pub mod jwks;
pub mod listener;
pub mod metrics;
pub mod permissions;
pub mod realtime;
pub mod server;
pub mod socketio;
pub mod state;
pub mod workers;
pub mod ws;
