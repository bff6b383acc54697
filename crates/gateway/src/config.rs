//! Herald's configuration: one typed struct, loaded from a TOML file, then
//! `HERALD_*` environment variables, then command-line flags (flags win).
//! Every field is documented and defaulted here; `docs/configuration.md`
//! is the user's copy of this page.

use figment::providers::{Env, Format, Serialized, Toml};
use figment::Figment;
use herald_rate_limiter::Limit;
use serde::{Deserialize, Serialize};
use std::collections::HashSet;
use std::net::SocketAddr;
use std::path::Path;

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Config {
    /// Address the HTTP and WebSocket server listens on. Port 0 picks a free
    /// port; the chosen address is printed at start-up.
    pub listen: SocketAddr,
    /// `redis://...` or `redis-cluster://...` to join a cluster; unset runs
    /// embedded (one node, everything in memory).
    pub redis_url: Option<String>,
    /// `postgres://...` (a cluster's gateways share it) or `sqlite://...`:
    /// where channel definitions and realtime settings live. Unset: SQLite
    /// under `data_dir` when that is set, else in memory (embedded); a
    /// cluster without a database has no admin API for definitions.
    pub database_url: Option<String>,
    /// A directory for what an embedded gateway keeps across restarts
    /// (its SQLite database, `herald.db`).
    pub data_dir: Option<std::path::PathBuf>,
    /// This gateway's name in `connected` frames, logs and metrics.
    /// Default: `gw-` and a random suffix.
    pub node_id: Option<String>,
    /// Largest WebSocket text frame accepted, in bytes. A larger frame is
    /// answered with `PAYLOAD_TOO_LARGE` and the connection stays open, up to
    /// four times this size; beyond that the connection is closed (4009).
    pub max_frame_bytes: usize,
    /// Largest `payload` of a publish (WebSocket or server API), in bytes.
    pub max_payload_bytes: usize,
    /// Deepest nesting of arrays and objects a payload may have.
    pub max_payload_depth: usize,
    /// Channels one connection may be subscribed to at once.
    pub max_subscriptions_per_connection: usize,
    /// Frames queued for one connection before it counts as a slow consumer
    /// and is disconnected (4006, reconnect).
    pub outbound_queue_frames: usize,
    /// Bytes queued for one connection (deliveries and replies) before it
    /// is disconnected as a slow consumer; a reply waits for room instead.
    pub outbound_queue_bytes: usize,
    /// How long a write to a client may take before the connection is
    /// closed as a slow consumer, whatever its reader is doing.
    pub write_timeout_ms: u64,
    /// Largest reply to `history`, and largest replay of a subscribe, in
    /// bytes of payload: a longer one is cut (history) or not replayed
    /// (`recovered: false`).
    pub max_reply_bytes: usize,
    /// `presence` and `history` requests one connection may make per
    /// second (and at once); over it they get `RATE_LIMIT_EXCEEDED`. 0
    /// disables.
    pub reads_per_second_per_connection: u32,
    pub reads_burst_per_connection: u32,
    /// Members listed at most in a `presence` or subscribe reply (the
    /// earliest joined); the list says `truncated` when there are more.
    pub max_presence_members: usize,
    /// Joins and leaves are announced on a channel only while it has at
    /// most this many subscribers on the gateway, so that filling a channel
    /// costs linear, not quadratic, frames.
    pub presence_announce_limit: usize,
    /// Milliseconds a connection's writer waits after a frame is queued
    /// before writing, so that the frames queued meanwhile go out in the
    /// same system call. 0 (the default) writes at once. Trades this much
    /// latency on every frame for much less CPU per delivery when
    /// connections receive many frames per second.
    pub write_delay_ms: u64,
    /// Milliseconds between the server's WebSocket pings. A connection that
    /// sends nothing (not even a pong) for twice this long is closed (4008).
    pub ping_interval_ms: u64,
    /// On SIGTERM/SIGINT, how long connections get to drain before exit.
    pub shutdown_grace_ms: u64,
    /// Lifetime of a channel token when `ttlSeconds` is not given.
    pub token_default_ttl_seconds: u64,
    /// Longest lifetime a channel token may be signed for.
    pub token_max_ttl_seconds: u64,
    /// Most publications a `history` request returns.
    pub history_max_limit: usize,
    /// Most publications a `subscribe` replays (`since` or
    /// `replaySeconds`); a longer gap is answered with `recovered: false`.
    pub recovery_max_publications: usize,
    /// Inbound frames one connection may send per second, and at once. A
    /// frame over the limit is answered with `RATE_LIMIT_EXCEEDED` and not
    /// handled. 0 disables the limit.
    pub connection_frames_per_second: u32,
    pub connection_frames_burst: u32,
    /// Frames refused for rate in a row after which the connection is
    /// closed (4010, no reconnect).
    pub flood_disconnect_after: u32,
    /// New WebSocket connections per client IP per second at this gateway,
    /// and at once; over it the upgrade gets HTTP 429. 0 disables.
    pub connections_per_second_per_ip: u32,
    pub connections_burst_per_ip: u32,
    /// Take the client IP from `X-Forwarded-For` (behind trusted proxies)
    /// instead of the peer address.
    pub trust_forwarded_for: bool,
    /// How many trusted proxies append to `X-Forwarded-For` in front of the
    /// gateway: the client is the entry this many places from the right.
    /// Entries further left are the client's own claims and never used.
    pub trusted_proxy_hops: usize,
    /// How long a client may take to send a request's headers; also how
    /// long an idle keep-alive HTTP connection is kept.
    pub http_header_timeout_ms: u64,
    /// How long a client may take to send a request's body.
    pub http_body_timeout_ms: u64,
    /// Open TCP connections at most (HTTP and WebSocket), checked as they
    /// are accepted, before anything is read; over it they are refused.
    pub max_connections: usize,
    /// Open TCP connections at most from one client IP (the peer address),
    /// likewise; 0 disables.
    pub max_connections_per_ip: usize,
    /// When set, `/metrics` answers only requests with
    /// `Authorization: Bearer <metrics_token>`.
    pub metrics_token: Option<String>,
    /// How long an `idempotencyKey` is remembered per channel: a publish
    /// repeating it within this window is not published again.
    pub idempotency_window_seconds: u64,
    /// In a cluster: how long a connection's presence outlives its
    /// gateway's last heartbeat. A gateway that dies has its members leave
    /// within about this long.
    pub presence_ttl_seconds: u64,
    /// Log filter (`tracing` syntax, e.g. `info,herald_gateway=debug`);
    /// `RUST_LOG` wins when set.
    pub log_level: String,
    /// `text` or `json`.
    pub log_format: LogFormat,
    /// Run the dispatch workers here: the message log writer and the
    /// channel webhook sender (a cluster's gateways, each reading the
    /// dispatch streams as one consumer group), and the retention job.
    /// `herald worker` runs them without serving clients.
    pub worker: bool,
    /// Entries an app's dispatch stream may hold (in Redis) before
    /// publishes on channels with definitions are refused
    /// (`PUBLISH_FAILED`): the bound on what workers may fall behind.
    pub dispatch_stream_max: usize,
    /// A dispatch entry read by a worker and not acknowledged for this long
    /// (the worker died) is taken over by another.
    pub dispatch_claim_idle_ms: u64,
    /// How often the retention job looks for messages past their app's
    /// `retentionDays`.
    pub retention_interval_seconds: u64,
    /// Channel webhooks.
    pub webhooks: WebhookConfig,
    /// The app installations this gateway serves.
    pub apps: Vec<AppConfig>,
}

/// How channel webhooks are sent.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct WebhookConfig {
    /// Let webhooks reach private, loopback and link-local addresses
    /// (refused by default: a definition's URL must not reach inside the
    /// network Herald runs in).
    pub allow_private_targets: bool,
    /// One attempt's time limit.
    pub timeout_ms: u64,
    /// Delay before each attempt, from the previous failure, in seconds;
    /// the first is normally 0. A timeout, refused connection, 5xx or 429
    /// moves to the next; after the last the delivery is failed.
    pub retry_seconds: Vec<f64>,
    /// Attempts in flight at once per worker.
    pub concurrency: usize,
}

impl Default for WebhookConfig {
    fn default() -> Self {
        WebhookConfig {
            allow_private_targets: false,
            timeout_ms: 10_000,
            retry_seconds: vec![0.0, 5.0, 300.0, 1800.0, 7200.0, 18000.0, 36000.0, 36000.0],
            concurrency: 32,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    Text,
    Json,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            listen: SocketAddr::from(([127, 0, 0, 1], 8080)),
            redis_url: None,
            database_url: None,
            data_dir: None,
            node_id: None,
            max_frame_bytes: 64 * 1024,
            max_payload_bytes: 64 * 1024,
            max_payload_depth: 64,
            max_subscriptions_per_connection: 128,
            outbound_queue_frames: 1024,
            outbound_queue_bytes: 8 * 1024 * 1024,
            write_timeout_ms: 10_000,
            max_reply_bytes: 1024 * 1024,
            reads_per_second_per_connection: 10,
            reads_burst_per_connection: 20,
            max_presence_members: 1000,
            presence_announce_limit: 100,
            write_delay_ms: 0,
            ping_interval_ms: 25_000,
            shutdown_grace_ms: 10_000,
            token_default_ttl_seconds: 3600,
            token_max_ttl_seconds: 86_400,
            history_max_limit: 1000,
            recovery_max_publications: 1000,
            presence_ttl_seconds: 30,
            idempotency_window_seconds: 300,
            connection_frames_per_second: 1000,
            connection_frames_burst: 2000,
            flood_disconnect_after: 1000,
            connections_per_second_per_ip: 100,
            connections_burst_per_ip: 200,
            trust_forwarded_for: false,
            trusted_proxy_hops: 1,
            metrics_token: None,
            http_header_timeout_ms: 10_000,
            http_body_timeout_ms: 10_000,
            max_connections: 100_000,
            max_connections_per_ip: 1_000,
            log_level: "info".into(),
            log_format: LogFormat::Text,
            worker: true,
            dispatch_stream_max: 1_000_000,
            dispatch_claim_idle_ms: 30_000,
            retention_interval_seconds: 60,
            webhooks: WebhookConfig::default(),
            apps: Vec::new(),
        }
    }
}

/// One app installation (tenant). Nothing crosses apps.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct AppConfig {
    pub id: String,
    /// Keys app backends authenticate with (server API, `?apiKey=`).
    pub api_keys: Vec<String>,
    /// HS256 key for user JWTs and for signing channel tokens.
    pub jwt_secret: Option<String>,
    /// PEM public key (RSA or EC) for RS256/ES256 user JWTs, in addition to
    /// `jwt_secret`.
    pub jwt_public_key: Option<String>,
    /// Whether connections without credentials are accepted.
    pub allow_anonymous: bool,
    /// Anonymous keys (`anon_…`) Socket.IO clients hand over as
    /// `auth.token`, as InsForge's `anonKey`: the connection is anonymous
    /// in this app (whatever `allow_anonymous` says, the key is the
    /// credential).
    pub anon_keys: Vec<String>,
    /// Realtime operations (subscribe, publish, publishGlobal, token
    /// signing) per second for the whole app; 0 means unlimited.
    pub ops_per_second: u32,
    /// How many operations may come at once above the rate.
    pub ops_burst: u32,
    /// The most of the app's operation rate and burst one client (a user,
    /// or the anonymous connections of one IP) may use, per gateway.
    pub client_ops_share: f64,
    /// The part of the app's operation rate and burst client connections
    /// may never use: it stays for the app's backend (server API, API-key
    /// connections).
    pub server_ops_reserve: f64,
    /// Track presence and announce joins and leaves. Each join is sent to
    /// every subscriber of the channel: turn it off for broadcast channels
    /// with thousands of subscribers.
    pub presence: bool,
    /// Publications kept per channel for `history` and recovery; 0 keeps
    /// none, and then a reconnecting client can never be told it missed
    /// nothing (`recovered: false`).
    pub history_size: usize,
    /// How long publications are kept, and how long an idle channel's
    /// offsets survive.
    pub history_ttl_seconds: u64,
    /// Refuse a WebSocket publish on a channel the connection has not
    /// subscribed (`REALTIME_NOT_SUBSCRIBED`).
    pub publish_requires_subscription: bool,
    /// Only channels matching an enabled entry of `channels` may be used
    /// (`REALTIME_CHANNEL_NOT_FOUND` otherwise).
    pub require_channel_definitions: bool,
    /// The same rule for Socket.IO clients only (InsForge's behaviour: a
    /// channel without an enabled definition is `REALTIME_CHANNEL_NOT_FOUND`).
    pub socketio_require_channel_definitions: bool,
    pub channels: Vec<ChannelDefinition>,
    /// The key id of the app's key: when set, a user JWT whose `kid`
    /// header names another key is refused. Unset, `kid` is not looked at.
    pub jwt_key_id: Option<String>,
    /// When set, user JWTs must carry this `iss`.
    pub issuer: Option<String>,
    /// The identity provider's JSON Web Key Set: user JWTs signed with
    /// its keys (chosen by `kid`) are accepted.
    pub jwks_url: Option<String>,
    /// How often the JWKS is fetched again (and at once when a token
    /// names an unknown `kid`).
    pub jwks_refresh_seconds: u64,
    /// The `whsec_` secret channel webhooks are signed with (Standard
    /// Webhooks); unset, they go unsigned.
    pub webhook_secret: Option<String>,
    /// When set, user JWTs must carry this `aud` (one of theirs); when
    /// unset, `aud` is not looked at.
    pub audience: Option<String>,
    /// Channel names (exact, or a prefix ending in `*`) only the app's
    /// backend may publish on (the server API, or an API-key connection):
    /// users and anonymous clients are refused.
    pub server_only_channels: Vec<String>,
    /// Whether users may publish on global channels (scoped channels are
    /// theirs to publish on either way).
    pub user_publish_global: bool,
    /// Whether anonymous connections may publish at all.
    pub anonymous_publish: bool,
    /// Browser origins allowed to open connections (`Origin` header, e.g.
    /// `https://app.example.com`); empty allows any. Connections without an
    /// `Origin` (servers, native apps) are not affected.
    pub allowed_origins: Vec<String>,
    /// The longest a user JWT may still be valid for when it is presented:
    /// one whose `exp` is further out is refused.
    pub user_token_max_lifetime_seconds: u64,
}

impl Default for AppConfig {
    fn default() -> Self {
        AppConfig {
            id: String::new(),
            api_keys: Vec::new(),
            jwt_secret: None,
            jwt_public_key: None,
            allow_anonymous: false,
            anon_keys: Vec::new(),
            ops_per_second: 50,
            ops_burst: 50,
            client_ops_share: 0.2,
            server_ops_reserve: 0.2,
            presence: true,
            history_size: 100,
            history_ttl_seconds: 300,
            publish_requires_subscription: false,
            require_channel_definitions: false,
            socketio_require_channel_definitions: true,
            channels: Vec::new(),
            jwt_key_id: None,
            issuer: None,
            jwks_url: None,
            jwks_refresh_seconds: 300,
            webhook_secret: None,
            audience: None,
            server_only_channels: Vec::new(),
            user_publish_global: true,
            anonymous_publish: false,
            allowed_origins: Vec::new(),
            user_token_max_lifetime_seconds: 7 * 24 * 3600,
        }
    }
}

/// A channel an app declares. `name` is exact, or a prefix when it ends
/// in `*`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ChannelDefinition {
    pub name: String,
    #[serde(default = "yes")]
    pub enabled: bool,
}

fn yes() -> bool {
    true
}

impl ChannelDefinition {
    pub fn matches(&self, channel: &str) -> bool {
        matches_pattern(&self.name, channel)
    }
}

impl AppConfig {
    /// The app's operation limit (Forge's per-installation limit).
    pub fn ops_limit(&self) -> Limit {
        Limit {
            per_second: self.ops_per_second,
            burst: self.ops_burst.max(1),
        }
    }

    /// What one client may use of it.
    pub fn client_ops_limit(&self) -> Limit {
        self.ops_limit().fraction(self.client_ops_share)
    }

    /// What all client connections together may use of it: the whole
    /// less the backend's reserve, rounded up so that the reserve is never
    /// zero (and clients keep at least one). `None` when nothing is
    /// reserved.
    pub fn clients_ops_limit(&self) -> Option<Limit> {
        if self.server_ops_reserve <= 0.0 {
            return None;
        }
        let whole = self.ops_limit();
        let reserve = whole.fraction(self.server_ops_reserve);
        let rest = |all: u32, kept: u32| all.saturating_sub(kept).max(1);
        Some(Limit {
            per_second: match whole.per_second {
                0 => 0,
                all => rest(all, reserve.per_second),
            },
            burst: rest(whole.burst, reserve.burst),
        })
    }
}

/// A channel pattern: an exact name, or a prefix ending in `*`.
pub fn matches_pattern(pattern: &str, channel: &str) -> bool {
    match pattern.strip_suffix('*') {
        Some(prefix) => channel.starts_with(prefix),
        None => pattern == channel,
    }
}

/// Values given on the command line; `None` leaves the lower layers be.
#[derive(Debug, Default, Serialize)]
pub struct Overrides {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub listen: Option<SocketAddr>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub redis_url: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub database_url: Option<String>,
}

/// The development app `herald serve` starts with when nothing configures
/// any app. Its credentials are public: never use it beyond a laptop.
pub const DEV_APP: &str = "dev";
pub const DEV_API_KEY: &str = "dev-key";
pub const DEV_ANON_KEY: &str = "anon_dev_public_never_use_in_production";
pub const DEV_JWT_SECRET: &str = "dev-secret-public-never-use-in-production";

pub fn dev_app() -> AppConfig {
    AppConfig {
        id: DEV_APP.into(),
        api_keys: vec![DEV_API_KEY.into()],
        jwt_secret: Some(DEV_JWT_SECRET.into()),
        allow_anonymous: true,
        anon_keys: vec![DEV_ANON_KEY.into()],
        // A laptop's Socket.IO client works on any channel, and its
        // anonymous clients may publish.
        socketio_require_channel_definitions: false,
        anonymous_publish: true,
        history_size: 100,
        ..AppConfig::default()
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("{0}")]
    Load(#[from] Box<figment::Error>),
    #[error("config file {0} does not exist")]
    Missing(String),
    #[error("invalid configuration: {0}")]
    Invalid(String),
}

/// The deepest `max_payload_depth` allowed: a payload this deep, inside a
/// reply's publication list, stays under serde_json's 128 levels, so every
/// frame Herald sends can be read by the Rust client.
pub const MAX_PAYLOAD_DEPTH: usize = 100;

/// Shortest `jwt_secret` `check-config` accepts, in bytes (HS256 wants a
/// key at least as long as its 32-byte hash).
pub const MIN_SECRET_BYTES: usize = 32;

/// What is wrong with the apps' JWT secrets: too short, or one secret
/// shared by several apps (a token of one would then verify as the other's
/// signature). `check-config` refuses these; `serve` warns.
pub fn secret_problems(config: &Config) -> Vec<String> {
    let mut problems = Vec::new();
    let mut seen: std::collections::HashMap<&str, &str> = std::collections::HashMap::new();
    for app in &config.apps {
        let Some(secret) = app.jwt_secret.as_deref() else {
            continue;
        };
        if secret.len() < MIN_SECRET_BYTES {
            problems.push(format!(
                "app `{}`: jwt_secret is {} bytes; use at least {MIN_SECRET_BYTES} random bytes",
                app.id,
                secret.len()
            ));
        }
        if let Some(other) = seen.insert(secret, &app.id) {
            problems.push(format!(
                "apps `{other}` and `{}` share one jwt_secret; give each its own",
                app.id
            ));
        }
    }
    problems
}

/// How long a client is commonly away when it reconnects (a network
/// change, a laptop waking): history kept for less cannot cover it.
pub const RECONNECT_SECONDS: u64 = 30;

/// What an app's history cannot do for reconnecting clients: none kept,
/// or kept for less than a common reconnect takes. `check-config` prints
/// these as warnings.
pub fn history_warnings(config: &Config) -> Vec<String> {
    let mut warnings = Vec::new();
    for app in &config.apps {
        if app.history_size == 0 || app.history_ttl_seconds == 0 {
            warnings.push(format!(
                "app `{}` keeps no history: reconnecting clients are always told `recovered: false`",
                app.id
            ));
        } else if app.history_ttl_seconds < RECONNECT_SECONDS {
            warnings.push(format!(
                "app `{}` keeps publications {} s: a client away longer than that (a reconnect commonly takes up to {RECONNECT_SECONDS} s) cannot recover",
                app.id, app.history_ttl_seconds
            ));
        } else if app.ops_per_second > 0
            && (app.history_size as u64) < u64::from(app.ops_per_second) * RECONNECT_SECONDS
        {
            let covers = app.history_size as f64 / f64::from(app.ops_per_second);
            warnings.push(format!(
                "app `{}` keeps {} publications per channel: a channel publishing at the app's full rate ({}/s) fills them in {covers:.0} s, and a client away longer (a reconnect commonly takes up to {RECONNECT_SECONDS} s) cannot recover; raise history_size if channels publish that fast",
                app.id, app.history_size, app.ops_per_second
            ));
        }
    }
    warnings
}

/// Loads the configuration: `file` (or `HERALD_CONFIG`), then `HERALD_*`
/// variables, then `overrides`. Returns it with whether the development app
/// was added because no app was configured.
pub fn load(file: Option<&Path>, overrides: &Overrides) -> Result<(Config, bool), ConfigError> {
    let mut figment = Figment::from(Serialized::defaults(Config::default()));
    if let Some(path) = file {
        if !path.exists() {
            return Err(ConfigError::Missing(path.display().to_string()));
        }
        figment = figment.merge(Toml::file(path));
    }
    // Only variables naming a setting count: platforms set others with the
    // same prefix (Kubernetes adds HERALD_PORT, HERALD_SERVICE_HOST... for a
    // Service named `herald`), and those must not stop the server.
    let settings: Vec<String> = serde_json::to_value(Config::default())
        .ok()
        .and_then(|v| v.as_object().map(|o| o.keys().cloned().collect()))
        .unwrap_or_default();
    figment = figment
        .merge(Env::prefixed("HERALD_").filter(move |key| {
            settings
                .iter()
                .any(|s| key.as_str().eq_ignore_ascii_case(s))
        }))
        .merge(Serialized::defaults(overrides));
    let mut config: Config = figment.extract().map_err(Box::new)?;
    let dev = config.apps.is_empty();
    if dev {
        config.apps.push(dev_app());
    }
    config.validate()?;
    Ok((config, dev))
}

impl Config {
    pub fn validate(&self) -> Result<(), ConfigError> {
        let invalid = |m: String| Err(ConfigError::Invalid(m));
        if self.max_frame_bytes < 1024 {
            return invalid("max_frame_bytes must be at least 1024".into());
        }
        if self.max_payload_bytes == 0 || self.outbound_queue_frames == 0 {
            return invalid("max_payload_bytes and outbound_queue_frames must be positive".into());
        }
        if self.presence_ttl_seconds == 0 {
            return invalid("presence_ttl_seconds must be positive".into());
        }
        if !(1..=MAX_PAYLOAD_DEPTH).contains(&self.max_payload_depth) {
            return invalid(format!(
                "max_payload_depth must be 1 to {MAX_PAYLOAD_DEPTH}: deeper frames are more than clients' JSON readers take"
            ));
        }
        if self
            .metrics_token
            .as_deref()
            .is_some_and(|t| t.trim().is_empty())
        {
            return invalid(
                "metrics_token must not be empty (leave it out to keep /metrics open)".into(),
            );
        }
        if self.webhooks.retry_seconds.is_empty()
            || self
                .webhooks
                .retry_seconds
                .iter()
                .any(|s| !(0.0..=86_400.0).contains(s))
        {
            return invalid(
                "webhooks.retry_seconds must list at least one delay, each 0 to 86400".into(),
            );
        }
        if self.webhooks.timeout_ms == 0 || self.webhooks.concurrency == 0 {
            return invalid("webhooks.timeout_ms and webhooks.concurrency must be positive".into());
        }
        if self.dispatch_stream_max == 0 || self.retention_interval_seconds == 0 {
            return invalid(
                "dispatch_stream_max and retention_interval_seconds must be positive".into(),
            );
        }
        for app in &self.apps {
            if let Some(secret) = &app.webhook_secret {
                herald_dispatch::sign::Secret::parse(secret).map_err(|e| {
                    ConfigError::Invalid(format!("app `{}`: webhook_secret: {e}", app.id))
                })?;
            }
        }
        if self.write_delay_ms > 1000 {
            return invalid("write_delay_ms must be at most 1000".into());
        }
        if self.ping_interval_ms < 100 {
            return invalid("ping_interval_ms must be at least 100".into());
        }
        if self.token_default_ttl_seconds == 0
            || self.token_default_ttl_seconds > self.token_max_ttl_seconds
        {
            return invalid(
                "token_default_ttl_seconds must be positive and at most token_max_ttl_seconds"
                    .into(),
            );
        }
        let mut ids = HashSet::new();
        let mut keys = HashSet::new();
        for app in &self.apps {
            if app.id.is_empty() {
                return invalid("every app needs an `id`".into());
            }
            if !ids.insert(app.id.as_str()) {
                return invalid(format!("app id `{}` appears twice", app.id));
            }
            for key in &app.api_keys {
                if key.is_empty() || !keys.insert(key.as_str()) {
                    return invalid(format!(
                        "app `{}`: API keys must be non-empty and unique",
                        app.id
                    ));
                }
            }
            for key in &app.anon_keys {
                if !key.starts_with("anon_") || key.len() < 10 || !keys.insert(key.as_str()) {
                    return invalid(format!(
                        "app `{}`: anon_keys must start with `anon_`, have at least 5 characters after it, and be unique (API keys included)",
                        app.id
                    ));
                }
            }
            if let Some(url) = &app.jwks_url {
                let ok = url.parse::<axum::http::Uri>().is_ok_and(|u| {
                    matches!(u.scheme_str(), Some("http" | "https")) && u.host().is_some()
                });
                if !ok {
                    return invalid(format!("app `{}`: jwks_url must be an http(s) URL", app.id));
                }
                if app.jwks_refresh_seconds == 0 {
                    return invalid(format!(
                        "app `{}`: jwks_refresh_seconds must be positive",
                        app.id
                    ));
                }
            }
            if app.jwt_secret.as_deref().is_some_and(str::is_empty) {
                return invalid(format!("app `{}`: jwt_secret is empty", app.id));
            }
            let share_ok = app.client_ops_share > 0.0 && app.client_ops_share <= 1.0;
            if !share_ok || !(0.0..1.0).contains(&app.server_ops_reserve) {
                return invalid(format!(
                    "app `{}`: client_ops_share must be in (0, 1] and server_ops_reserve in [0, 1)",
                    app.id
                ));
            }
            if app.jwt_secret.is_none()
                && app.jwt_public_key.is_none()
                && app.jwks_url.is_none()
                && !app.allow_anonymous
                && app.api_keys.is_empty()
                && app.anon_keys.is_empty()
            {
                return invalid(format!(
                    "app `{}` accepts no one: give it jwt_secret, jwt_public_key, jwks_url, api_keys, anon_keys or allow_anonymous",
                    app.id
                ));
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    #[test]
    fn file_then_flags() {
        let mut f = tempfile::NamedTempFile::new().unwrap();
        writeln!(
            f,
            r#"listen = "127.0.0.1:9000"
max_frame_bytes = 2048
[[apps]]
id = "app1"
api_keys = ["key-app1"]
jwt_secret = "secret-app1"
allow_anonymous = false
"#
        )
        .unwrap();
        let (c, dev) = load(Some(f.path()), &Overrides::default()).unwrap();
        assert!(!dev);
        assert_eq!(c.listen.port(), 9000);
        assert_eq!(c.max_frame_bytes, 2048);
        assert_eq!(c.apps[0].ops_per_second, 50);
        let flags = Overrides {
            listen: Some("127.0.0.1:9100".parse().unwrap()),
            redis_url: None,
            database_url: None,
        };
        let (c, _) = load(Some(f.path()), &flags).unwrap();
        assert_eq!(c.listen.port(), 9100);
    }

    #[test]
    fn unrelated_prefixed_variables_are_ignored() {
        // What Kubernetes injects for a Service named `herald`.
        std::env::set_var("HERALD_PORT", "tcp://10.0.0.1:8080");
        std::env::set_var("HERALD_SERVICE_HOST", "10.0.0.1");
        // A real setting still reads from the environment.
        std::env::set_var("HERALD_HISTORY_MAX_LIMIT", "77");
        let loaded = load(None, &Overrides::default());
        std::env::remove_var("HERALD_PORT");
        std::env::remove_var("HERALD_SERVICE_HOST");
        std::env::remove_var("HERALD_HISTORY_MAX_LIMIT");
        let (config, _) = loaded.expect("unrelated variables must not fail the load");
        assert_eq!(config.history_max_limit, 77);
    }

    #[test]
    fn no_apps_means_the_dev_app() {
        let (c, dev) = load(None, &Overrides::default()).unwrap();
        assert!(dev);
        assert_eq!(c.apps[0].id, DEV_APP);
    }

    #[test]
    fn unknown_keys_are_errors() {
        let mut f = tempfile::NamedTempFile::new().unwrap();
        writeln!(f, "lisen = \"127.0.0.1:1\"").unwrap();
        assert!(load(Some(f.path()), &Overrides::default()).is_err());
    }

    #[test]
    fn duplicate_keys_are_refused() {
        let c = Config {
            apps: vec![
                dev_app(),
                AppConfig {
                    id: "b".into(),
                    ..dev_app()
                },
            ],
            ..Config::default()
        };
        assert!(c.validate().is_err());
    }

    #[test]
    fn channel_definitions_match_exactly_or_by_prefix() {
        let d = ChannelDefinition {
            name: "orders-*".into(),
            enabled: true,
        };
        assert!(d.matches("orders-1"));
        assert!(!d.matches("order"));
        let d = ChannelDefinition {
            name: "news".into(),
            enabled: true,
        };
        assert!(d.matches("news"));
        assert!(!d.matches("news-1"));
    }
}
