//! The message log and channel webhooks against real processes: gateways
//! (embedded, and a cluster over a real Redis and PostgreSQL), `herald
//! worker` processes, and a real HTTP receiver in the test.

mod common;

use base64::Engine;
use common::redis::RedisServer;
use common::{Herald, WAIT};
use hmac::{Hmac, Mac};
use parking_lot::Mutex;
use serde_json::{json, Value};
use sha2::Sha256;
use std::collections::HashMap;
use std::io::Write;
use std::process::Stdio;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::io::{AsyncBufReadExt, BufReader};

/// The Standard Webhooks test vector's secret.
const SECRET: &str = "whsec_C2FVsBQIhrscChlQIMV+b5sSYspob7oD";
const KEY: &str = "key-hooks";

fn apps() -> String {
    format!(
        r#"
[[apps]]
id = "hooks"
api_keys = ["{KEY}"]
jwt_secret = "secret-hooks-test-only-0123456789abcdefghij"
ops_per_second = 0
webhook_secret = "{SECRET}"
"#
    )
}

/// What the receiver does with a request.
#[derive(Clone, Copy, Debug)]
enum Answer {
    Status(u16),
    RetryAfter(u16, u64),
    Hang,
}

/// One request the receiver got.
#[derive(Clone, Debug)]
struct Hit {
    path: String,
    headers: HashMap<String, String>,
    body: String,
    answered: u16,
    at: Instant,
}

/// A real HTTP receiver on loopback; `script(path, n)` answers the n-th
/// request (from 0) for a webhook-id on `path`.
struct Receiver {
    addr: String,
    hits: Arc<Mutex<Vec<Hit>>>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for Receiver {
    fn drop(&mut self) {
        self.task.abort();
    }
}

type Script = Arc<dyn Fn(&str, usize) -> Answer + Send + Sync>;

impl Receiver {
    async fn start(script: Script, delay: Duration) -> Receiver {
        use axum::extract::Request;
        let hits: Arc<Mutex<Vec<Hit>>> = Arc::default();
        let seen = Arc::clone(&hits);
        let app = axum::Router::new().fallback(move |request: Request| {
            let (seen, script) = (Arc::clone(&seen), Arc::clone(&script));
            async move {
                let path = request.uri().path().to_owned();
                let headers: HashMap<String, String> = request
                    .headers()
                    .iter()
                    .map(|(k, v)| (k.as_str().to_owned(), v.to_str().unwrap_or("").to_owned()))
                    .collect();
                let body = axum::body::to_bytes(request.into_body(), 1 << 20)
                    .await
                    .map(|b| String::from_utf8_lossy(&b).into_owned())
                    .unwrap_or_default();
                let id = headers.get("webhook-id").cloned().unwrap_or_default();
                let n = seen
                    .lock()
                    .iter()
                    .filter(|h| h.path == path && h.headers.get("webhook-id") == Some(&id))
                    .count();
                let answer = script(&path, n);
                let answered = match answer {
                    Answer::Status(s) | Answer::RetryAfter(s, _) => s,
                    Answer::Hang => 0,
                };
                seen.lock().push(Hit {
                    path,
                    headers,
                    body,
                    answered,
                    at: Instant::now(),
                });
                tokio::time::sleep(delay).await;
                let status = axum::http::StatusCode::from_u16(answered.max(200)).unwrap();
                match answer {
                    Answer::Hang => {
                        tokio::time::sleep(Duration::from_secs(30)).await;
                        (status, [("retry-after", String::new())]).into_response_parts()
                    }
                    Answer::RetryAfter(_, secs) => {
                        (status, [("retry-after", secs.to_string())]).into_response_parts()
                    }
                    Answer::Status(_) => (status, [("x-ok", "1".to_owned())]).into_response_parts(),
                }
            }
        });
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap().to_string();
        let task = tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        Receiver { addr, hits, task }
    }

    fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }

    fn hits(&self) -> Vec<Hit> {
        self.hits.lock().clone()
    }

    /// Successful deliveries per (path, webhook-id).
    fn delivered(&self) -> HashMap<(String, String), usize> {
        let mut out = HashMap::new();
        for h in self.hits() {
            if (200..300).contains(&h.answered) {
                let id = h.headers.get("webhook-id").cloned().unwrap_or_default();
                *out.entry((h.path.clone(), id)).or_default() += 1;
            }
        }
        out
    }
}

trait IntoParts {
    fn into_response_parts(self) -> axum::response::Response;
}

impl IntoParts for (axum::http::StatusCode, [(&'static str, String); 1]) {
    fn into_response_parts(self) -> axum::response::Response {
        use axum::response::IntoResponse;
        let (status, [(name, value)]) = self;
        let mut response = status.into_response();
        if !value.is_empty() {
            response.headers_mut().insert(name, value.parse().unwrap());
        }
        response
    }
}

async fn admin(
    herald: &Herald,
    method: reqwest::Method,
    path: &str,
    body: Option<Value>,
) -> (u16, Value, reqwest::header::HeaderMap) {
    let mut request = reqwest::Client::new()
        .request(method, herald.http(path))
        .header("x-api-key", KEY);
    if let Some(body) = body {
        request = request.json(&body);
    }
    let response = request.send().await.expect("admin request");
    let status = response.status().as_u16();
    let headers = response.headers().clone();
    let text = response.text().await.unwrap();
    (
        status,
        serde_json::from_str(&text).unwrap_or(Value::String(text)),
        headers,
    )
}

async fn define(herald: &Herald, pattern: &str, urls: &[String]) -> String {
    let (status, body, _) = admin(
        herald,
        reqwest::Method::POST,
        "/api/realtime/channels",
        Some(json!({"pattern": pattern, "webhookUrls": urls})),
    )
    .await;
    assert_eq!(status, 201, "{body}");
    body["id"].as_str().unwrap().to_owned()
}

async fn publish(herald: &Herald, channel: &str, event: &str, payload: Value) -> Value {
    let (status, body, _) = herald
        .post(
            "/api/v1/publish/global",
            KEY,
            json!({"channel": channel, "event": event, "payload": payload}),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    body
}

/// Polls `check` until it holds, failing with `what` after `within`.
async fn eventually<F, Fut>(within: Duration, what: &str, mut check: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<(), String>>,
{
    let deadline = Instant::now() + within;
    loop {
        match check().await {
            Ok(()) => return,
            Err(e) if Instant::now() > deadline => panic!("{what}: {e}"),
            Err(_) => tokio::time::sleep(Duration::from_millis(100)).await,
        }
    }
}

async fn messages(herald: &Herald, query: &str) -> (Vec<Value>, i64) {
    let (status, body, headers) = admin(
        herald,
        reqwest::Method::GET,
        &format!("/api/realtime/messages{query}"),
        None,
    )
    .await;
    assert_eq!(status, 200, "{body}");
    let total = headers["x-total-count"].to_str().unwrap().parse().unwrap();
    (body.as_array().unwrap().clone(), total)
}

/// Verifies a hit's signature as Standard Webhooks specifies, written out
/// here rather than calling Herald's signer.
fn verify(hit: &Hit) {
    let id = &hit.headers["webhook-id"];
    let ts = &hit.headers["webhook-timestamp"];
    let key = base64::engine::general_purpose::STANDARD
        .decode(SECRET.trim_start_matches("whsec_"))
        .unwrap();
    let mut mac = Hmac::<Sha256>::new_from_slice(&key).unwrap();
    mac.update(format!("{id}.{ts}.{}", hit.body).as_bytes());
    let expected = format!(
        "v1,{}",
        base64::engine::general_purpose::STANDARD.encode(mac.finalize().into_bytes())
    );
    assert_eq!(
        hit.headers["webhook-signature"], expected,
        "signature of {id}"
    );
    let age = common::now_secs() as i64 - ts.parse::<i64>().unwrap();
    assert!((0..60).contains(&age), "timestamp {ts} is {age} s old");
}

#[tokio::test]
async fn embedded_messages_are_logged_and_their_webhooks_signed_and_counted() {
    let receiver = Receiver::start(Arc::new(|_, _| Answer::Status(200)), Duration::ZERO).await;
    let herald = Herald::start_config(&apps()).await;
    let urls = [receiver.url("/a"), receiver.url("/b")];
    let def = define(&herald, "order:%", &urls).await;
    let mut subscribers = Vec::new();
    for sub in ["u1", "u2"] {
        let mut c = herald.user("hooks", sub, json!({})).await;
        c.ok(json!({"type":"subscribe","channel":"order:1","global":true}))
            .await;
        subscribers.push(c);
    }
    let mut ids = Vec::new();
    for n in 0..3 {
        let event = if n == 2 { "paid" } else { "created" };
        let result = publish(&herald, "order:1", event, json!({"n": n})).await;
        ids.push(result["eventId"].as_str().expect("eventId").to_owned());
        // Listed newest first by their millisecond timestamps: apart.
        tokio::time::sleep(Duration::from_millis(3)).await;
    }
    // A channel without a definition is not logged.
    publish(&herald, "news", "created", json!({})).await;

    eventually(WAIT, "six deliveries", || async {
        let d = receiver.delivered();
        (d.len() == 6).then_some(()).ok_or(format!("{d:?}"))
    })
    .await;
    for hit in receiver.hits() {
        verify(&hit);
        assert_eq!(hit.headers["content-type"], "application/json");
        assert_eq!(hit.headers["x-insforge-channel"], "order:1");
        let id = &hit.headers["x-insforge-message-id"];
        assert!(ids.contains(id), "{id}");
        let n = ids.iter().position(|i| i == id).unwrap();
        assert_eq!(
            hit.body,
            format!(r#"{{"n":{n}}}"#),
            "the body is the payload"
        );
        assert_eq!(
            hit.headers["x-insforge-event"],
            if n == 2 { "paid" } else { "created" }
        );
    }

    eventually(WAIT, "counts", || async {
        let (rows, total) = messages(&herald, "").await;
        if total != 3 {
            return Err(format!("total {total}"));
        }
        for row in &rows {
            if row["wsAudienceCount"] != 2 || row["whDeliveredCount"] != 2 {
                return Err(row.to_string());
            }
        }
        Ok(())
    })
    .await;
    let (rows, _) = messages(&herald, "").await;
    assert_eq!(rows[0]["id"], ids[2].as_str(), "newest first");
    assert_eq!(rows[0]["eventName"], "paid");
    assert_eq!(rows[0]["channelId"], def.as_str());
    assert_eq!(rows[0]["channelName"], "order:1");
    assert_eq!(rows[0]["payload"], json!({"n": 2}));
    assert_eq!(rows[0]["senderType"], "system");
    assert_eq!(rows[0]["whAudienceCount"], 2);
    assert!(rows[0]["createdAt"].as_str().unwrap().ends_with('Z'));
    let (page, total) = messages(&herald, "?eventName=created&limit=1&offset=1").await;
    assert_eq!((page.len(), total), (1, 2));
    assert_eq!(page[0]["id"], ids[0].as_str());

    let (status, stats, _) = admin(
        &herald,
        reqwest::Method::GET,
        "/api/realtime/messages/stats",
        None,
    )
    .await;
    assert_eq!(status, 200);
    assert_eq!(stats["totalMessages"], 3);
    assert_eq!(stats["whDeliveryRate"], 1.0);
    assert_eq!(
        stats["topEvents"][0],
        json!({"eventName": "created", "count": 2})
    );
    assert_eq!(stats["retentionDays"], Value::Null);

    // Bad queries are refused, named.
    for (query, word) in [
        ("?limit=0", "limit"),
        ("?limit=1001", "limit"),
        ("?bogus=1", "bogus"),
    ] {
        let (status, body, _) = admin(
            &herald,
            reqwest::Method::GET,
            &format!("/api/realtime/messages{query}"),
            None,
        )
        .await;
        assert_eq!(status, 400, "{query}");
        assert!(body["message"].as_str().unwrap().contains(word), "{body}");
    }
    let (status, body, _) = admin(
        &herald,
        reqwest::Method::GET,
        "/api/realtime/messages/stats?since=yesterday",
        None,
    )
    .await;
    assert_eq!(status, 400, "{body}");

    // Deleting the definition keeps the messages, without a channel.
    let (status, _, _) = admin(
        &herald,
        reqwest::Method::DELETE,
        &format!("/api/realtime/channels/{def}"),
        None,
    )
    .await;
    assert_eq!(status, 200);
    let (rows, _) = messages(&herald, "").await;
    assert_eq!(rows[0]["channelId"], Value::Null);
    let (status, body, _) = admin(
        &herald,
        reqwest::Method::DELETE,
        "/api/realtime/messages",
        None,
    )
    .await;
    assert_eq!((status, body), (200, json!({"deleted": 3})));
    assert_eq!(messages(&herald, "").await.1, 0);
}

#[tokio::test]
async fn a_failing_receiver_is_retried_until_it_accepts_and_410_disables_the_url() {
    // /flaky: 500, 500, no answer in time, 429 with Retry-After: 1, then 200.
    let script: Script = Arc::new(|path, n| match (path, n) {
        ("/flaky", 0 | 1) => Answer::Status(500),
        ("/flaky", 2) => Answer::Hang,
        ("/flaky", 3) => Answer::RetryAfter(429, 1),
        ("/gone", _) => Answer::Status(410),
        _ => Answer::Status(204),
    });
    let receiver = Receiver::start(script, Duration::ZERO).await;
    let config = format!(
        "[webhooks]\nallow_private_targets = true\ntimeout_ms = 500\nretry_seconds = [0, 0.1, 0.1, 0.1, 0.1, 0.1]\n{}",
        apps()
    );
    let herald = Herald::start_config(&config).await;
    define(
        &herald,
        "pay:%",
        &[receiver.url("/flaky"), receiver.url("/gone")],
    )
    .await;
    let first = publish(&herald, "pay:1", "paid", json!({"amount": 5})).await;
    let id = first["eventId"].as_str().unwrap().to_owned();

    eventually(
        Duration::from_secs(15),
        "delivered after four failures",
        || async {
            let d = receiver.delivered();
            (d.len() == 1).then_some(()).ok_or(format!("{d:?}"))
        },
    )
    .await;
    let flaky: Vec<Hit> = receiver
        .hits()
        .into_iter()
        .filter(|h| h.path == "/flaky")
        .collect();
    let answered: Vec<u16> = flaky.iter().map(|h| h.answered).collect();
    assert_eq!(answered, [500, 500, 0, 429, 204]);
    let webhook_ids: std::collections::HashSet<&String> =
        flaky.iter().map(|h| &h.headers["webhook-id"]).collect();
    assert_eq!(webhook_ids.len(), 1, "one webhook-id across the attempts");
    for hit in &flaky {
        verify(hit);
    }
    let waited = flaky[4].at - flaky[3].at;
    assert!(
        waited >= Duration::from_millis(950),
        "Retry-After: 1 honoured, waited {waited:?}"
    );

    // The 410 disabled /gone for the channel: listed, and not called again.
    let gone_calls = || receiver.hits().iter().filter(|h| h.path == "/gone").count();
    assert_eq!(gone_calls(), 1);
    let (_, defs, _) = admin(
        &herald,
        reqwest::Method::GET,
        "/api/realtime/channels",
        None,
    )
    .await;
    assert_eq!(
        defs[0]["disabledWebhookUrls"],
        json!([receiver.url("/gone")])
    );
    publish(&herald, "pay:2", "paid", json!({"amount": 6})).await;
    eventually(
        Duration::from_secs(15),
        "second message delivered",
        || async {
            let d = receiver.delivered();
            (d.len() == 2).then_some(()).ok_or(format!("{d:?}"))
        },
    )
    .await;
    assert_eq!(gone_calls(), 1);

    let (rows, _) = messages(&herald, "").await;
    let row = rows.iter().find(|r| r["id"] == id.as_str()).unwrap();
    assert_eq!(row["whAudienceCount"], 2);
    assert_eq!(row["whDeliveredCount"], 1);
    let newer = rows.iter().find(|r| r["id"] != id.as_str()).unwrap();
    assert_eq!(
        newer["whAudienceCount"], 1,
        "the disabled URL is no longer in the audience"
    );
    let text = herald.metrics().await;
    // Each message's /flaky series: four failures, then delivered.
    assert_eq!(
        common::metric(&text, "herald_webhook_attempts_total{outcome=\"retry\"}"),
        8.0
    );
    assert_eq!(
        common::metric(
            &text,
            "herald_webhook_attempts_total{outcome=\"delivered\"}"
        ),
        2.0
    );
    assert_eq!(
        common::metric(&text, "herald_webhook_attempts_total{outcome=\"gone\"}"),
        1.0
    );
}

#[tokio::test]
async fn private_targets_are_refused_unless_allowed() {
    let config = format!("[webhooks]\nallow_private_targets = false\n{}", apps());
    let herald = Herald::start_config(&config).await;
    for url in [
        "http://127.0.0.1:9/x",
        "http://10.0.0.1/x",
        "http://[::1]/x",
        "http://localhost/x",
    ] {
        let (status, body, _) = admin(
            &herald,
            reqwest::Method::POST,
            "/api/realtime/channels",
            Some(json!({"pattern": "p:%", "webhookUrls": [url]})),
        )
        .await;
        assert_eq!(status, 400, "{url}: {body}");
        assert!(
            body["message"].as_str().unwrap().contains("private"),
            "{body}"
        );
    }
}

/// A `herald worker` process, killed when dropped.
struct Worker {
    child: tokio::process::Child,
    addr: String,
    _config: tempfile::NamedTempFile,
}

impl Worker {
    async fn start(config: &str, redis: &str, database: &str) -> Worker {
        let mut file = tempfile::NamedTempFile::new().unwrap();
        file.write_all(config.as_bytes()).unwrap();
        let mut child = tokio::process::Command::new(env!("CARGO_BIN_EXE_herald"))
            .args([
                "worker",
                "--listen",
                "127.0.0.1:0",
                "--redis",
                redis,
                "--database",
                database,
                "--config",
            ])
            .arg(file.path())
            .env(
                "RUST_LOG",
                std::env::var("HERALD_TEST_LOG").unwrap_or_else(|_| "warn".into()),
            )
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .kill_on_drop(true)
            .spawn()
            .unwrap();
        let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
        let addr = tokio::time::timeout(Duration::from_secs(20), async {
            while let Some(line) = lines.next_line().await.unwrap() {
                if let Some((_, rest)) = line.split_once("listening on http://") {
                    return rest.trim().to_owned();
                }
            }
            panic!("worker exited before listening");
        })
        .await
        .expect("worker did not start");
        tokio::spawn(async move { while let Ok(Some(_)) = lines.next_line().await {} });
        Worker {
            child,
            addr,
            _config: file,
        }
    }

    fn kill9(&mut self) {
        let pid = self.child.id().unwrap() as i32;
        unsafe { libc::kill(pid, libc::SIGKILL) };
    }
}

/// How many messages the cluster tests publish (1,000; set
/// `HERALD_WEBHOOK_MESSAGES` to change it).
fn message_count() -> usize {
    std::env::var("HERALD_WEBHOOK_MESSAGES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(1000)
}

#[tokio::test]
async fn two_gateways_log_every_message_once_and_deliver_once_per_url() {
    let redis = RedisServer::start();
    let pg = herald_store::testing::PostgresServer::start();
    let receiver = Receiver::start(Arc::new(|_, _| Answer::Status(200)), Duration::ZERO).await;
    let settings = format!("database_url = \"{}\"\n{}", pg.url(), apps());
    let a = Herald::start_clustered_config(&redis.url(), &settings).await;
    let b = Herald::start_clustered_config(&redis.url(), &settings).await;
    define(&a, "order:%", &[receiver.url("/one"), receiver.url("/two")]).await;
    // Two sockets on one gateway, one on the other; definitions reach b
    // within a second.
    tokio::time::sleep(Duration::from_millis(1200)).await;
    let mut sockets = Vec::new();
    for (gw, sub) in [(&a, "u1"), (&a, "u2"), (&b, "u3")] {
        let mut c = gw.user("hooks", sub, json!({})).await;
        c.ok(json!({"type":"subscribe","channel":"order:7","global":true}))
            .await;
        sockets.push(c);
    }
    let n = message_count();
    for i in 0..n {
        let gw = if i % 2 == 0 { &a } else { &b };
        publish(gw, "order:7", "created", json!({"i": i})).await;
    }
    eventually(Duration::from_secs(60), "every delivery", || async {
        let d = receiver.delivered();
        (d.len() == 2 * n)
            .then_some(())
            .ok_or(format!("{} of {}", d.len(), 2 * n))
    })
    .await;
    let delivered = receiver.delivered();
    let repeated: Vec<_> = delivered.iter().filter(|(_, c)| **c != 1).collect();
    assert!(
        repeated.is_empty(),
        "delivered more than once: {repeated:?}"
    );
    eventually(
        Duration::from_secs(10),
        "rows with their counts",
        || async {
            let (rows, total) = messages(&a, "?limit=1000").await;
            if total != n as i64 {
                return Err(format!("{total} rows"));
            }
            match rows
                .iter()
                .find(|r| r["wsAudienceCount"] != 3 || r["whDeliveredCount"] != 2)
            {
                Some(row) => Err(row.to_string()),
                None => Ok(()),
            }
        },
    )
    .await;
    // Each socket got every message.
    for socket in &mut sockets {
        for _ in 0..n {
            socket.expect("event").await;
        }
    }
}

#[tokio::test]
async fn a_worker_killed_mid_stream_loses_nothing() {
    let redis = RedisServer::start();
    let pg = herald_store::testing::PostgresServer::start();
    // A slow receiver, so deliveries are in flight when the worker dies.
    let receiver = Receiver::start(
        Arc::new(|_, _| Answer::Status(200)),
        Duration::from_millis(100),
    )
    .await;
    let worker_config = format!(
        "dispatch_claim_idle_ms = 1000\n[webhooks]\nallow_private_targets = true\ntimeout_ms = 1000\nconcurrency = 4\n{}",
        apps()
    );
    let settings = format!(
        "database_url = \"{}\"\nworker = false\n{}",
        pg.url(),
        apps()
    );
    let gateway = Herald::start_clustered_config(&redis.url(), &settings).await;
    let mut first = Worker::start(&worker_config, &redis.url(), &pg.url()).await;
    let second = Worker::start(&worker_config, &redis.url(), &pg.url()).await;
    define(&gateway, "job:%", &[receiver.url("/hook")]).await;
    let n = message_count();
    for i in 0..n {
        publish(&gateway, "job:1", "run", json!({"i": i})).await;
    }
    // Kill one worker while deliveries are going out: its leased
    // deliveries run out and the other takes them.
    eventually(Duration::from_secs(30), "deliveries under way", || async {
        let hits = receiver.hits().len();
        (hits >= n / 4).then_some(()).ok_or(format!("{hits} hits"))
    })
    .await;
    let before = reqwest::get(format!("http://{}/metrics", first.addr))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let by_first = common::metric(
        &before,
        "herald_webhook_attempts_total{outcome=\"delivered\"}",
    );
    assert!(by_first > 0.0, "the worker killed had been delivering");
    first.kill9();
    let hits_at_kill = receiver.hits().len();
    eventually(
        Duration::from_secs(90),
        "every message delivered",
        || async {
            let d = receiver.delivered();
            (d.len() == n)
                .then_some(())
                .ok_or(format!("{} of {n}", d.len()))
        },
    )
    .await;
    // Every row, each delivery recorded: what the dead worker had in
    // flight is sent again once its lease runs out (same webhook-id).
    eventually(
        Duration::from_secs(30),
        "every row, every delivery recorded",
        || async {
            let (rows, total) = messages(&gateway, "?limit=1000").await;
            if total != n as i64 {
                return Err(format!("{total} rows"));
            }
            match rows.iter().find(|r| r["whDeliveredCount"] != 1) {
                Some(row) => Err(row.to_string()),
                None => Ok(()),
            }
        },
    )
    .await;
    let metrics = reqwest::get(format!("http://{}/metrics", second.addr))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        metrics.contains("herald_messages_logged_total"),
        "{metrics}"
    );
    let repeats: usize = receiver.delivered().values().map(|c| c - 1).sum();
    eprintln!(
        "{n} messages; the killed worker had delivered {by_first} when {hits_at_kill} requests had arrived; {repeats} delivered again after the kill (same webhook-id)"
    );
}

/// Entries a worker read and never acknowledged (it died between reading
/// and writing the rows) are claimed by another worker after the idle time.
#[tokio::test]
async fn entries_a_dead_worker_read_are_claimed_and_logged() {
    let redis = RedisServer::start();
    let pg = herald_store::testing::PostgresServer::start();
    let settings = format!(
        "database_url = \"{}\"\nworker = false\n{}",
        pg.url(),
        apps()
    );
    let gateway = Herald::start_clustered_config(&redis.url(), &settings).await;
    define(&gateway, "task:%", &[]).await;
    let stream = "herald:{dispatch:hooks}:q";
    redis.cli(&["XGROUP", "CREATE", stream, "workers", "0", "MKSTREAM"]);
    let n = 50;
    for i in 0..n {
        publish(&gateway, "task:1", "run", json!({"i": i})).await;
    }
    // A consumer of the group reads every entry and dies.
    let read = redis.cli(&[
        "XREADGROUP",
        "GROUP",
        "workers",
        "dead",
        "COUNT",
        "1000",
        "STREAMS",
        stream,
        ">",
    ]);
    assert_eq!(read.matches("\"i\"").count(), n, "{read}");
    assert_eq!(messages(&gateway, "").await.1, 0, "nothing logged yet");
    let config = format!("dispatch_claim_idle_ms = 500\n{}", apps());
    let worker = Worker::start(&config, &redis.url(), &pg.url()).await;
    eventually(Duration::from_secs(15), "every row", || async {
        let (_, total) = messages(&gateway, "").await;
        (total == n as i64)
            .then_some(())
            .ok_or(format!("{total} rows"))
    })
    .await;
    let metrics = reqwest::get(format!("http://{}/metrics", worker.addr))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert_eq!(
        common::metric(&metrics, "herald_dispatch_claimed_total"),
        n as f64
    );
    // Done and deleted: the stream is empty.
    eventually(Duration::from_secs(5), "stream emptied", || async {
        let len = redis.cli(&["XLEN", stream]);
        (len.trim() == "0").then_some(()).ok_or(len)
    })
    .await;
}

/// Redis killed and restarted (with its append-only file) while messages
/// are published: publishes fail loudly during the outage, and every
/// publish that was accepted has its row.
#[tokio::test]
async fn redis_restarted_mid_stream_loses_no_accepted_message() {
    let mut redis = RedisServer::start_with(&["--appendonly", "yes", "--appendfsync", "always"]);
    let pg = herald_store::testing::PostgresServer::start();
    let settings = format!("database_url = \"{}\"\n{}", pg.url(), apps());
    let gateway = Herald::start_clustered_config(&redis.url(), &settings).await;
    define(&gateway, "feed:%", &[]).await;
    let (mut accepted, mut failed) = (Vec::new(), 0usize);
    let client = reqwest::Client::new();
    for i in 0..300 {
        if i == 100 {
            redis.kill();
        }
        if i == 110 {
            redis.restart();
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
        let response = client
            .post(gateway.http("/api/v1/publish/global"))
            .header("Authorization", format!("Bearer {KEY}"))
            .json(&json!({"channel": "feed:1", "event": "tick", "payload": {"i": i}}))
            .timeout(Duration::from_secs(10))
            .send()
            .await
            .unwrap();
        let status = response.status().as_u16();
        let body: Value = response.json().await.unwrap();
        if status == 200 {
            accepted.push(body["eventId"].as_str().unwrap().to_owned());
        } else {
            assert_eq!(
                body["errors"][0]["code"], "PUBLISH_FAILED",
                "{status} {body}"
            );
            failed += 1;
        }
    }
    assert!(failed >= 5, "the outage was seen: {failed} failed");
    assert!(
        accepted.len() >= 150,
        "publishing resumed: {} accepted",
        accepted.len()
    );
    eventually(
        Duration::from_secs(30),
        "a row for every accepted publish",
        || async {
            let (rows, _) = messages(&gateway, "?limit=1000").await;
            let ids: std::collections::HashSet<&str> =
                rows.iter().map(|r| r["id"].as_str().unwrap()).collect();
            let missing = accepted
                .iter()
                .filter(|id| !ids.contains(id.as_str()))
                .count();
            (missing == 0)
                .then_some(())
                .ok_or(format!("{missing} accepted publishes without a row"))
        },
    )
    .await;
    let (_, total) = messages(&gateway, "").await;
    assert!(
        total as usize <= accepted.len() + failed,
        "{total} rows for {} accepted and {failed} failed",
        accepted.len()
    );
    eprintln!(
        "{} accepted, {failed} refused during the outage, {total} rows",
        accepted.len()
    );
}

/// Retention across a cluster: rows older than `retentionDays` go (in
/// batches), younger ones stay, and one gateway does the deleting.
#[tokio::test]
async fn retention_deletes_old_rows_once_across_a_cluster() {
    let redis = RedisServer::start();
    let pg = herald_store::testing::PostgresServer::start();
    let settings = format!(
        "database_url = \"{}\"\nretention_interval_seconds = 1\n{}",
        pg.url(),
        apps()
    );
    let a = Herald::start_clustered_config(&redis.url(), &settings).await;
    let b = Herald::start_clustered_config(&redis.url(), &settings).await;
    define(&a, "old:%", &[]).await;
    // 2,500 rows from three days ago, written as a worker writes them.
    let store = herald_store::Store::connect(&pg.url()).await.unwrap();
    let three_days_ago = common::now_secs() as i64 * 1000 - 3 * 86_400_000;
    let old: Vec<herald_store::messages::NewMessage> = (0..2500)
        .map(|i| herald_store::messages::NewMessage {
            id: format!("old-{i}"),
            app: "hooks".into(),
            event_name: "past".into(),
            channel_id: None,
            channel_name: "old:1".into(),
            payload: "{}".into(),
            sender_type: "system".into(),
            sender_id: None,
            webhook_urls: Vec::new(),
            trace: None,
            created_at_ms: three_days_ago + i,
        })
        .collect();
    store.log_messages(&old).await.unwrap();
    for i in 0..5 {
        publish(&a, "old:1", "now", json!({"i": i})).await;
    }
    eventually(WAIT, "all rows", || async {
        let (_, total) = messages(&a, "").await;
        (total == 2505).then_some(()).ok_or(format!("{total}"))
    })
    .await;
    let (status, _, _) = admin(
        &a,
        reqwest::Method::PATCH,
        "/api/realtime/config",
        Some(json!({"retentionDays": 2})),
    )
    .await;
    assert_eq!(status, 200);
    eventually(Duration::from_secs(15), "old rows deleted", || async {
        let (rows, total) = messages(&b, "").await;
        if total != 5 {
            return Err(format!("{total} rows"));
        }
        match rows.iter().find(|r| r["eventName"] != "now") {
            Some(r) => Err(r.to_string()),
            None => Ok(()),
        }
    })
    .await;
    let deleted = |text: String| common::metric(&text, "herald_retention_deleted_total");
    let (da, db) = (deleted(a.metrics().await), deleted(b.metrics().await));
    assert_eq!(da + db, 2500.0, "each row deleted once: {da} + {db}");
    assert!(da == 0.0 || db == 0.0, "one deleter: {da} and {db}");
}

/// On Redis Cluster the dispatch stream is in another slot than the
/// channel: appended by its own script, read by the workers all the same.
#[tokio::test]
async fn messages_are_logged_over_redis_cluster() {
    let cluster = common::redis::RedisCluster::start();
    let pg = herald_store::testing::PostgresServer::start();
    let receiver = Receiver::start(Arc::new(|_, _| Answer::Status(200)), Duration::ZERO).await;
    let settings = format!("database_url = \"{}\"\n{}", pg.url(), apps());
    let a = Herald::start_clustered_config(&cluster.url(), &settings).await;
    let b = Herald::start_clustered_config(&cluster.url(), &settings).await;
    define(&a, "order:%", &[receiver.url("/c")]).await;
    tokio::time::sleep(Duration::from_millis(1200)).await;
    let n = 40;
    for i in 0..n {
        let gw = if i % 2 == 0 { &a } else { &b };
        publish(gw, &format!("order:{}", i % 7), "created", json!({"i": i})).await;
    }
    eventually(Duration::from_secs(20), "rows and deliveries", || async {
        let (rows, total) = messages(&b, "").await;
        if total != n as i64 {
            return Err(format!("{total} rows"));
        }
        match rows.iter().find(|r| r["whDeliveredCount"] != 1) {
            Some(r) => Err(r.to_string()),
            None => Ok(()),
        }
    })
    .await;
    assert_eq!(receiver.delivered().len(), n);
}

/// Embedded with a `data_dir`: the log and the pending deliveries are in
/// SQLite, so a restart loses neither; a delivery still failing when the
/// gateway stops is made after it starts again.
#[tokio::test]
async fn an_embedded_restart_loses_no_row_and_no_pending_delivery() {
    let accept = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let open = Arc::clone(&accept);
    let script: Script = Arc::new(move |_, _| {
        if open.load(std::sync::atomic::Ordering::SeqCst) {
            Answer::Status(200)
        } else {
            Answer::Status(503)
        }
    });
    let receiver = Receiver::start(script, Duration::ZERO).await;
    let dir = tempfile::tempdir().unwrap();
    let config = format!(
        "data_dir = \"{}\"\n[webhooks]\nallow_private_targets = true\nretry_seconds = [0, 0.3, 0.3, 0.3, 0.3, 0.3, 0.3, 0.3, 0.3, 0.3, 0.3, 0.3, 0.3, 0.3, 0.3, 0.3, 0.3, 0.3, 0.3, 0.3]\n{}",
        dir.path().display(),
        apps()
    );
    let herald = Herald::start_config(&config).await;
    define(&herald, "keep:%", &[receiver.url("/k")]).await;
    for i in 0..5 {
        publish(&herald, "keep:1", "e", json!({"i": i})).await;
    }
    eventually(WAIT, "first attempts refused", || async {
        let hits = receiver.hits().len();
        (hits >= 5).then_some(()).ok_or(format!("{hits}"))
    })
    .await;
    let herald = herald.restart().await;
    accept.store(true, std::sync::atomic::Ordering::SeqCst);
    eventually(
        Duration::from_secs(15),
        "delivered after the restart",
        || async {
            let (rows, total) = messages(&herald, "").await;
            if total != 5 {
                return Err(format!("{total} rows"));
            }
            match rows.iter().find(|r| r["whDeliveredCount"] != 1) {
                Some(r) => Err(r.to_string()),
                None => Ok(()),
            }
        },
    )
    .await;
    assert_eq!(receiver.delivered().len(), 5);
}

/// The dispatch stream is bounded: a publish beyond `dispatch_stream_max`
/// fails loudly, and a retry with its idempotency key, once workers have
/// made room, is published and logged (not answered as the failed one).
async fn a_full_stream_refuses_and_a_retry_is_logged(
    redis_url: &str,
    pg: &herald_store::testing::PostgresServer,
) {
    let settings = format!(
        "database_url = \"{}\"\nworker = false\ndispatch_stream_max = 3\n{}",
        pg.url(),
        apps()
    );
    let gateway = Herald::start_clustered_config(redis_url, &settings).await;
    define(&gateway, "cap:%", &[]).await;
    let send = |key: &'static str| {
        let gateway = &gateway;
        async move {
            gateway
                .post(
                    "/api/v1/publish/global",
                    KEY,
                    json!({"channel": "cap:1", "event": "e", "payload": {"k": key},
                           "options": {"idempotencyKey": key}}),
                )
                .await
        }
    };
    for key in ["a", "b", "c"] {
        let (status, body, _) = send(key).await;
        assert_eq!(status, 200, "{body}");
    }
    let (status, body, _) = send("d").await;
    assert_ne!(status, 200, "a full stream refuses: {body}");
    assert_eq!(body["errors"][0]["code"], "PUBLISH_FAILED", "{body}");
    // Workers make room; the retry publishes and is logged.
    let config = format!("dispatch_claim_idle_ms = 500\n{}", apps());
    let _worker = Worker::start(&config, redis_url, &pg.url()).await;
    eventually(Duration::from_secs(10), "three rows", || async {
        let (_, total) = messages(&gateway, "").await;
        (total == 3).then_some(()).ok_or(format!("{total}"))
    })
    .await;
    let (status, body, _) = send("d").await;
    assert_eq!(status, 200, "{body}");
    let id = body["eventId"]
        .as_str()
        .expect("an id: published, not a repeat of the failure");
    eventually(Duration::from_secs(10), "the retry's row", || async {
        let (rows, total) = messages(&gateway, "").await;
        let found = rows.iter().any(|r| r["id"] == id);
        (total == 4 && found)
            .then_some(())
            .ok_or(format!("{total} rows"))
    })
    .await;
}

#[tokio::test]
async fn a_full_stream_refuses_and_a_retry_is_logged_on_redis() {
    let redis = RedisServer::start();
    let pg = herald_store::testing::PostgresServer::start();
    a_full_stream_refuses_and_a_retry_is_logged(&redis.url(), &pg).await;
}

#[tokio::test]
async fn a_full_stream_refuses_and_a_retry_is_logged_on_redis_cluster() {
    let cluster = common::redis::RedisCluster::start();
    let pg = herald_store::testing::PostgresServer::start();
    a_full_stream_refuses_and_a_retry_is_logged(&cluster.url(), &pg).await;
}
