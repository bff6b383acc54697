//! Test support: a real `herald` process on a free loopback port, and real
//! WebSocket and HTTP clients talking to it.
#![allow(dead_code)]

use futures_util::{SinkExt, StreamExt};
use serde_json::{json, Value};
use std::collections::VecDeque;
use std::io::Write;
use std::process::Stdio;
use std::time::Duration;
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::net::TcpStream;
use tokio::process::{Child, Command};
use tokio_tungstenite::tungstenite::protocol::CloseFrame;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};

pub mod redis;

pub const WAIT: Duration = Duration::from_secs(5);

/// The apps most tests use. `app1` and `app2` are unlimited; `limited`,
/// `strict` exist for the error-code tests.
pub const APPS: &str = r#"
[[apps]]
id = "app1"
api_keys = ["key-app1"]
jwt_secret = "secret-app1-test-only-0123456789abcdefghij"
ops_per_second = 0
# Keeps no history: publications with no subscriber go nowhere.
history_size = 0

[[apps]]
id = "app2"
api_keys = ["key-app2"]
jwt_secret = "secret-app2-test-only-0123456789abcdefghij"
allow_anonymous = true
ops_per_second = 0
history_size = 50

[[apps]]
id = "deep"
api_keys = ["key-deep"]
jwt_secret = "secret-deep-test-only-0123456789abcdefghij"
ops_per_second = 0
history_size = 100000

[[apps]]
id = "limited"
api_keys = ["key-limited"]
jwt_secret = "secret-limited-test-only-0123456789abcdefghij"
# Forge's per-app counting alone: no client shares.
client_ops_share = 1.0
server_ops_reserve = 0.0
ops_per_second = 1
ops_burst = 3

[[apps]]
id = "limited2"
api_keys = ["key-limited2"]
jwt_secret = "secret-limited2-test-only-0123456789abcdefghij"
# Forge's per-app counting alone: no client shares.
client_ops_share = 1.0
server_ops_reserve = 0.0
ops_per_second = 1
ops_burst = 3

[[apps]]
id = "busy"
api_keys = ["key-busy"]
jwt_secret = "secret-busy-test-only-0123456789abcdefghij"
# Forge's per-app counting alone: no client shares.
client_ops_share = 1.0
server_ops_reserve = 0.0
ops_per_second = 100
ops_burst = 10

[[apps]]
id = "strict"
api_keys = ["key-strict"]
jwt_secret = "secret-strict-test-only-0123456789abcdefghij"
ops_per_second = 0
require_channel_definitions = true
publish_requires_subscription = true
channels = [{ name = "allowed-*" }, { name = "disabled", enabled = false }]

# InsForge-style: Socket.IO clients with an anonymous key, user JWTs from
# the app's own identity provider (no `app` claim: matched by issuer).
[[apps]]
id = "insforge"
api_keys = ["key-insforge"]
anon_keys = ["anon_insforge_test_key"]
jwt_secret = "secret-insforge-test-only-0123456789abcdefghij"
issuer = "https://insforge.test"
ops_per_second = 0
anonymous_publish = true
channels = [{ name = "order:*" }, { name = "chat:*" }, { name = "room:*" }, { name = "closed", enabled = false }]

[[apps]]
id = "insforge-limited"
api_keys = ["key-insforge-limited"]
client_ops_share = 1.0
server_ops_reserve = 0.0
ops_per_second = 1
ops_burst = 3
socketio_require_channel_definitions = false
"#;

/// A running `herald serve`, killed when dropped (also when a test fails).
pub struct Herald {
    child: Child,
    pub addr: String,
    _config: tempfile::NamedTempFile,
    /// What it was started with, for a restart at the same address.
    config: String,
    args: Vec<String>,
}

impl Herald {
    pub async fn start() -> Herald {
        Self::start_with("").await
    }

    /// Starts Herald with `extra` top-level settings before the shared apps.
    pub async fn start_with(extra: &str) -> Herald {
        Self::start_config(&format!("{extra}\n{APPS}")).await
    }

    /// Starts Herald with `settings`, the shared apps and `apps`.
    pub async fn start_with_apps(settings: &str, apps: &str) -> Herald {
        Self::start_config(&format!("{settings}\n{APPS}\n{apps}")).await
    }

    pub async fn start_config(config: &str) -> Herald {
        Self::spawn(config, &[]).await
    }

    /// A gateway of the cluster on `redis_url`, with `extra` settings.
    pub async fn start_clustered(redis_url: &str, extra: &str) -> Herald {
        Self::spawn(&format!("{extra}\n{APPS}"), &["--redis", redis_url]).await
    }

    /// A gateway of the cluster on `redis_url` with exactly `config`.
    pub async fn start_clustered_config(redis_url: &str, config: &str) -> Herald {
        Self::spawn(config, &["--redis", redis_url]).await
    }

    async fn spawn(config: &str, args: &[&str]) -> Herald {
        Self::spawn_at(config, args, "127.0.0.1:0").await
    }

    /// Stops this gateway with SIGTERM, as an orchestrator would, and
    /// starts it again at the same address with the same configuration
    /// (a rolling restart's step).
    pub async fn restart(self) -> Herald {
        let (config, args, addr) = (self.config.clone(), self.args.clone(), self.addr.clone());
        let status = self.terminate().await;
        assert!(status.success(), "exit after SIGTERM: {status:?}");
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        Self::spawn_at(&config, &args, &addr).await
    }

    async fn spawn_at(config: &str, args: &[&str], listen: &str) -> Herald {
        // Tests open many connections and send many frames from one
        // address; the limits tests set these themselves.
        let mut full = String::new();
        for (key, value) in [
            ("connections_per_second_per_ip", "0"),
            ("connection_frames_per_second", "0"),
        ] {
            if !config.contains(key) {
                full.push_str(&format!("{key} = {value}\n"));
            }
        }
        // Tests' webhook receivers are on loopback.
        if !config.contains("webhooks") {
            full.push_str("webhooks.allow_private_targets = true\n");
        }
        full.push_str(config);
        let mut file = tempfile::NamedTempFile::new().expect("temp config");
        file.write_all(full.as_bytes()).expect("write config");
        let mut child = Command::new(env!("CARGO_BIN_EXE_herald"))
            .args(["serve", "--listen", listen])
            .args(args)
            .arg("--config")
            .arg(file.path())
            .env_remove("HERALD_CONFIG")
            .env_remove("HERALD_LISTEN")
            .env_remove("HERALD_REDIS_URL")
            .env(
                "RUST_LOG",
                std::env::var("HERALD_TEST_LOG").unwrap_or_else(|_| "warn".into()),
            )
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .kill_on_drop(true)
            .spawn()
            .expect("spawn herald");
        let stdout = child.stdout.take().expect("stdout");
        let mut lines = BufReader::new(stdout).lines();
        let addr = tokio::time::timeout(Duration::from_secs(20), async {
            while let Some(line) = lines.next_line().await.expect("read stdout") {
                if let Some(rest) = line.strip_prefix("Herald listening on http://") {
                    return rest.split_whitespace().next().expect("address").to_owned();
                }
            }
            panic!("herald exited before listening");
        })
        .await
        .expect("herald did not start in time");
        // Keep draining stdout so the child never blocks on a full pipe.
        tokio::spawn(async move { while let Ok(Some(_)) = lines.next_line().await {} });
        Herald {
            child,
            addr,
            _config: file,
            config: config.to_owned(),
            args: args.iter().map(|a| a.to_string()).collect(),
        }
    }

    pub fn http(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }

    pub fn ws_url(&self, query: &str) -> String {
        format!("ws://{}/v1/ws?{query}", self.addr)
    }

    pub fn pid(&self) -> u32 {
        self.child.id().expect("running")
    }

    /// SIGKILL: the gateway dies without a word to anyone.
    pub async fn kill(mut self) {
        let _ = self.child.kill().await;
    }

    /// Waits until `/readyz` answers 200.
    pub async fn wait_ready(&self, within: Duration) {
        let deadline = tokio::time::Instant::now() + within;
        loop {
            if let Ok(r) = reqwest::get(self.http("/readyz")).await {
                if r.status() == 200 {
                    return;
                }
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "{} not ready in {within:?}",
                self.addr
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// Sends SIGTERM and waits for the exit status.
    pub async fn terminate(mut self) -> std::process::ExitStatus {
        let status = std::process::Command::new("kill")
            .args(["-TERM", &self.pid().to_string()])
            .status()
            .expect("kill");
        assert!(status.success());
        tokio::time::timeout(Duration::from_secs(20), self.child.wait())
            .await
            .expect("herald did not exit after SIGTERM")
            .expect("wait")
    }

    /// Connects a user of `app` (its secret is `secret-<app>-test-only-...`).
    pub async fn user(&self, app: &str, sub: &str, ctx: Value) -> Client {
        Client::connect(&self.ws_url(&format!("token={}", user_token(app, sub, ctx, 3600)))).await
    }

    pub async fn metrics(&self) -> String {
        reqwest::get(self.http("/metrics"))
            .await
            .expect("metrics")
            .text()
            .await
            .expect("body")
    }

    /// POSTs JSON to the server API with an API key; returns status and body.
    pub async fn post(
        &self,
        path: &str,
        api_key: &str,
        body: Value,
    ) -> (u16, Value, reqwest::header::HeaderMap) {
        let response = reqwest::Client::new()
            .post(self.http(path))
            .header("Authorization", format!("Bearer {api_key}"))
            .json(&body)
            .send()
            .await
            .expect("post");
        let status = response.status().as_u16();
        let headers = response.headers().clone();
        let body = response.json().await.expect("json body");
        (status, body, headers)
    }

    pub async fn channel_token(
        &self,
        app: &str,
        channel: &str,
        claims: Value,
        permissions: Option<Value>,
    ) -> String {
        let mut body = json!({"channel": channel, "claims": claims});
        if let Some(p) = permissions {
            body["permissions"] = p;
        }
        let (status, body, _) = self
            .post("/api/v1/token", &format!("key-{app}"), body)
            .await;
        assert_eq!(status, 200, "{body}");
        body["token"].as_str().expect("token").to_owned()
    }
}

/// The value of a metric line `name value` in Prometheus text.
pub fn metric(text: &str, name: &str) -> f64 {
    text.lines()
        .find(|l| l.starts_with(name) && l[name.len()..].starts_with(' '))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| panic!("no metric {name}"))
}

pub fn now_secs() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("clock")
        .as_secs()
}

/// A user JWT for `app`, signed with `secret-<app>-test-only-...`, valid `ttl` seconds
/// (negative: already expired).
pub fn user_token(app: &str, sub: &str, ctx: Value, ttl: i64) -> String {
    let exp = (now_secs() as i64 + ttl) as u64;
    let mut claims = json!({"sub": sub, "app": app, "exp": exp});
    if !ctx.is_null() {
        claims["ctx"] = ctx;
    }
    jsonwebtoken::encode(
        &jsonwebtoken::Header::new(jsonwebtoken::Algorithm::HS256),
        &claims,
        &jsonwebtoken::EncodingKey::from_secret(
            format!("secret-{app}-test-only-0123456789abcdefghij").as_bytes(),
        ),
    )
    .expect("sign")
}

/// A JWT of any `header` and `claims`, signed with HMAC-SHA256 under
/// `key` whatever the header says: for tokens Herald must refuse.
pub fn sign_hs256(header: &Value, claims: &Value, key: &[u8]) -> String {
    use base64::Engine;
    use hmac::{Hmac, Mac};
    let b64 = |v: &Value| {
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(serde_json::to_vec(v).unwrap())
    };
    let signing_input = format!("{}.{}", b64(header), b64(claims));
    let mut mac = Hmac::<sha2::Sha256>::new_from_slice(key).unwrap();
    mac.update(signing_input.as_bytes());
    let signature =
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(mac.finalize().into_bytes());
    format!("{signing_input}.{signature}")
}

/// Runs `herald check-config` on `config` written to a temporary file.
pub fn check_config(config: &str) -> std::process::Output {
    let dir = tempfile::tempdir().expect("temp dir");
    let path = dir.path().join("herald.toml");
    std::fs::write(&path, config).expect("write config");
    std::process::Command::new(env!("CARGO_BIN_EXE_herald"))
        .args(["check-config", "--config"])
        .arg(&path)
        .output()
        .expect("run herald")
}

/// The secret of a test app.
pub fn secret(app: &str) -> String {
    format!("secret-{app}-test-only-0123456789abcdefghij")
}

type Ws = WebSocketStream<MaybeTlsStream<TcpStream>>;

/// A WebSocket client speaking Herald's protocol.
pub struct Client {
    ws: Ws,
    next_id: u64,
    /// Frames read while waiting for something else.
    pending: VecDeque<Value>,
    pub connection_id: String,
    pub closed: Option<Option<CloseFrame>>,
}

impl Client {
    pub async fn connect(url: &str) -> Client {
        let (ws, _) = tokio_tungstenite::connect_async(url)
            .await
            .expect("connect");
        let mut client = Client {
            ws,
            next_id: 1,
            pending: VecDeque::new(),
            connection_id: String::new(),
            closed: None,
        };
        let hello = client.next_frame().await.expect("connected frame");
        assert_eq!(hello["type"], "connected", "{hello}");
        client.connection_id = hello["connectionId"]
            .as_str()
            .expect("connectionId")
            .to_owned();
        client
    }

    pub async fn send_text(&mut self, text: String) {
        self.ws
            .send(Message::Text(text.into()))
            .await
            .expect("send");
    }

    /// Closes the connection the way a well-behaved client does, and waits
    /// for the server's close.
    pub async fn close(mut self) {
        let _ = self.ws.close(None).await;
        while let Ok(Some(Ok(_))) = tokio::time::timeout(WAIT, self.ws.next()).await {}
    }

    /// Sends a close frame and goes away without waiting for the answer.
    pub async fn close_and_leave(mut self) {
        let _ = self.ws.close(None).await;
    }

    /// Sends, reporting instead of panicking when the connection is gone.
    pub async fn try_send_text(&mut self, text: String) -> bool {
        self.ws.send(Message::Text(text.into())).await.is_ok()
    }

    pub async fn send_raw(&mut self, message: Message) {
        self.ws.send(message).await.expect("send");
    }

    /// Sends a request with a fresh `id` and returns its reply; other frames
    /// read meanwhile are kept for `next_frame`.
    pub async fn request(&mut self, mut frame: Value) -> Value {
        let id = self.next_id;
        self.next_id += 1;
        frame["id"] = json!(id);
        self.send_text(frame.to_string()).await;
        let deadline = tokio::time::Instant::now() + WAIT;
        loop {
            let frame = tokio::time::timeout_at(deadline, self.read())
                .await
                .unwrap_or_else(|_| panic!("no reply to {frame}"))
                .unwrap_or_else(|| panic!("closed before reply to {frame}"));
            if frame["type"] == "reply" && frame["id"] == json!(id) {
                return frame;
            }
            self.pending.push_back(frame);
        }
    }

    /// A request that must succeed.
    pub async fn ok(&mut self, frame: Value) -> Value {
        let reply = self.request(frame.clone()).await;
        assert_eq!(reply["ok"], true, "request {frame} failed: {reply}");
        reply
    }

    /// A request that must fail with `code`.
    pub async fn fails(&mut self, frame: Value, code: &str) -> Value {
        let reply = self.request(frame.clone()).await;
        assert_eq!(reply["ok"], false, "request {frame} succeeded: {reply}");
        assert_eq!(reply["error"]["code"], code, "request {frame}: {reply}");
        reply
    }

    async fn read(&mut self) -> Option<Value> {
        loop {
            match self.ws.next().await {
                Some(Ok(Message::Text(t))) => {
                    return Some(serde_json::from_str(t.as_str()).expect("json frame"))
                }
                Some(Ok(Message::Close(frame))) => {
                    self.closed = Some(frame);
                    return None;
                }
                Some(Ok(_)) => continue,
                Some(Err(_)) | None => {
                    if self.closed.is_none() {
                        self.closed = Some(None);
                    }
                    return None;
                }
            }
        }
    }

    /// The next frame (kept ones first), or `None` when the connection
    /// closed or nothing came within `WAIT`.
    pub async fn next_frame(&mut self) -> Option<Value> {
        if let Some(f) = self.pending.pop_front() {
            return Some(f);
        }
        tokio::time::timeout(WAIT, self.read()).await.ok().flatten()
    }

    /// The next frame of `type`, skipping others.
    pub async fn expect(&mut self, kind: &str) -> Value {
        loop {
            let frame = self
                .next_frame()
                .await
                .unwrap_or_else(|| panic!("expected a `{kind}` frame, got none"));
            if frame["type"] == kind {
                return frame;
            }
        }
    }

    /// Asserts no `event` frame arrives within `wait`.
    pub async fn expect_no_event(&mut self, wait: Duration) {
        if let Some(f) = self.pending.iter().find(|f| f["type"] == "event") {
            panic!("unexpected event {f}");
        }
        let deadline = tokio::time::Instant::now() + wait;
        while let Ok(Some(frame)) = tokio::time::timeout_at(deadline, self.read()).await {
            assert_ne!(frame["type"], "event", "unexpected event {frame}");
            self.pending.push_back(frame);
        }
    }

    pub async fn subscribe(&mut self, channel: &str) -> Value {
        self.ok(json!({"type":"subscribe","channel":channel})).await
    }

    pub async fn publish(&mut self, channel: &str, payload: Value) -> Value {
        self.ok(json!({"type":"publish","channel":channel,"payload":payload}))
            .await
    }
}
