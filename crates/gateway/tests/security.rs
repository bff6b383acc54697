//! Security guarantees (docs/security.md), black-box against the binary:
//! each test fails on a gateway without the guarantee.

mod common;

use common::{now_secs, Client, Herald};
use serde_json::{json, Value};
use std::process::Command;

/// Opens a WebSocket to `url` with extra `headers`: `Ok` when upgraded,
/// else the HTTP status and JSON body of the refusal.
async fn upgrade(url: &str, headers: &[(&'static str, String)]) -> Result<(), (u16, Value)> {
    use tokio_tungstenite::tungstenite::client::IntoClientRequest;
    let mut request = url.into_client_request().unwrap();
    for (name, value) in headers {
        request.headers_mut().append(*name, value.parse().unwrap());
    }
    match tokio_tungstenite::connect_async(request).await {
        Ok(_) => Ok(()),
        Err(tokio_tungstenite::tungstenite::Error::Http(response)) => {
            let body = serde_json::from_slice(response.body().as_deref().unwrap_or_default())
                .unwrap_or(Value::Null);
            Err((response.status().as_u16(), body))
        }
        Err(e) => panic!("{url}: {e}"),
    }
}

fn sign(claims: Value, header: Value) -> String {
    let app = claims["app"].as_str().unwrap().to_owned();
    common::sign_hs256(&header, &claims, common::secret(&app).as_bytes())
}

fn hs256() -> Value {
    json!({"alg": "HS256", "typ": "JWT"})
}

/// Finding 10: `nbf` and `iat` in the future, `crit`, a lifetime past the
/// app's maximum, and the app's issuer and audience.
#[tokio::test]
async fn user_tokens_are_checked_for_time_critical_headers_issuer_and_audience() {
    let h = Herald::start_with_apps(
        "",
        r#"
[[apps]]
id = "aud"
api_keys = ["key-aud"]
jwt_secret = "secret-aud-test-only-0123456789abcdefghij"
issuer = "https://issuer.example"
audience = "herald"
user_token_max_lifetime_seconds = 3600
"#,
    )
    .await;
    let now = now_secs();
    let claims = |extra: Value| {
        let mut c = json!({"sub": "u", "app": "app1", "exp": now + 60});
        c.as_object_mut()
            .unwrap()
            .extend(extra.as_object().unwrap().clone());
        c
    };
    let refused = |token: String| {
        let url = h.ws_url(&format!("token={token}"));
        async move { upgrade(&url, &[]).await }
    };
    let cases = [
        (
            "nbf in the future",
            sign(claims(json!({"nbf": now + 600})), hs256()),
        ),
        (
            "iat in the future",
            sign(claims(json!({"iat": now + 600})), hs256()),
        ),
        (
            "crit header",
            sign(claims(json!({})), json!({"alg":"HS256","crit":["exp"]})),
        ),
        (
            "a thousand years",
            sign(
                claims(json!({"exp": now + 1000 * 365 * 24 * 3600})),
                hs256(),
            ),
        ),
    ];
    for (what, token) in cases {
        let (status, body) = refused(token).await.expect_err(what);
        assert_eq!(status, 401, "{what}");
        assert_eq!(body["error"]["code"], "INVALID_TOKEN", "{what}");
    }
    // Within the leeway, and in the past: fine.
    let fine = sign(claims(json!({"nbf": now + 2, "iat": now - 10})), hs256());
    refused(fine).await.expect("nbf within the leeway");
    // An app that names no audience does not look at `aud`.
    let with_aud = sign(claims(json!({"aud": "someone"})), hs256());
    refused(with_aud)
        .await
        .expect("aud ignored without an app audience");

    // The `aud` app wants its issuer and audience.
    let aud = |extra: Value| {
        let mut c = json!({"sub": "u", "app": "aud", "exp": now + 60});
        c.as_object_mut()
            .unwrap()
            .extend(extra.as_object().unwrap().clone());
        sign(c, hs256())
    };
    let good = json!({"iss": "https://issuer.example", "aud": "herald"});
    refused(aud(good)).await.expect("issuer and audience match");
    for bad in [
        json!({"iss": "https://issuer.example"}),
        json!({"aud": "herald"}),
        json!({"iss": "https://evil.example", "aud": "herald"}),
        json!({"iss": "https://issuer.example", "aud": "other"}),
        json!({"iss": "https://issuer.example", "aud": "herald", "exp": now + 7200}),
    ] {
        let (status, _) = refused(aud(bad.clone())).await.expect_err(&bad.to_string());
        assert_eq!(status, 401, "{bad}");
    }
}

/// Finding 10: `check-config` refuses short and shared secrets.
#[test]
fn check_config_refuses_weak_and_shared_secrets() {
    let check = common::check_config;
    let out = check("[[apps]]\nid = \"a\"\njwt_secret = \"short\"\n");
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("at least 32"));
    let shared = "0123456789abcdef0123456789abcdef-shared";
    let out = check(&format!(
        "[[apps]]\nid = \"a\"\njwt_secret = \"{shared}\"\n[[apps]]\nid = \"b\"\njwt_secret = \"{shared}\"\n"
    ));
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("share one jwt_secret"));
    let out = check(common::APPS);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Finding 8: a Redis password is never printed: not by `check-config`,
/// not in the error of a start that cannot reach Redis.
#[test]
fn redis_passwords_are_redacted() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("herald.toml");
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let url = format!("redis://herald:s3cret-password@127.0.0.1:{port}");
    std::fs::write(&path, format!("redis_url = \"{url}\"\n{}", common::APPS)).unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_herald"))
        .args(["check-config", "--config"])
        .arg(&path)
        .output()
        .unwrap();
    assert!(out.status.success());
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(stdout.contains("herald:***@127.0.0.1"), "{stdout}");
    assert!(!stdout.contains("s3cret"), "{stdout}");
    // Nothing listens on the port: the start fails and says why.
    let out = Command::new(env!("CARGO_BIN_EXE_herald"))
        .args(["serve", "--listen", "127.0.0.1:0", "--config"])
        .arg(&path)
        .env_remove("HERALD_REDIS_URL")
        .env("RUST_LOG", "debug")
        .output()
        .unwrap();
    assert!(!out.status.success());
    let printed = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(printed.contains("127.0.0.1"), "{printed}");
    assert!(!printed.contains("s3cret"), "{printed}");
}

/// Finding 6: behind one trusted proxy, the client is the rightmost
/// `X-Forwarded-For` entry; what it writes further left changes nothing.
#[tokio::test]
async fn forwarded_for_is_read_from_the_right() {
    let limits = "trust_forwarded_for = true\nconnections_per_second_per_ip = 1\nconnections_burst_per_ip = 1";
    let h = Herald::start_with(limits).await;
    let url = h.ws_url("apiKey=key-app1");
    let xff = |left: &str| vec![("x-forwarded-for", format!("{left}, 203.0.113.9"))];
    upgrade(&url, &xff("10.0.0.1")).await.expect("first");
    let (status, body) = upgrade(&url, &xff("10.0.0.2")).await.expect_err("rotated");
    assert_eq!(status, 429);
    assert_eq!(body["error"]["code"], "RATE_LIMIT_EXCEEDED");
    // Another client behind the same proxy is someone else.
    upgrade(&url, &[("x-forwarded-for", "203.0.113.10".into())])
        .await
        .expect("another client");

    // Behind two proxies the client is second from the right.
    let h = Herald::start_with(&format!("{limits}\ntrusted_proxy_hops = 2")).await;
    let url = h.ws_url("apiKey=key-app1");
    let two = |client: &str| vec![("x-forwarded-for", format!("1.1.1.1, {client}, 10.1.1.1"))];
    upgrade(&url, &two("198.51.100.1")).await.expect("first");
    upgrade(&url, &two("198.51.100.2"))
        .await
        .expect("another client");
    upgrade(&url, &two("198.51.100.1"))
        .await
        .expect_err("same client again");
}

/// Finding 5: payloads nested deeper than `max_payload_depth` are refused
/// on every publish path.
#[tokio::test]
async fn deeply_nested_payloads_are_refused_everywhere() {
    let h = Herald::start().await;
    let nest = |depth: usize| -> Value {
        serde_json::from_str(&format!("{}1{}", "[".repeat(depth), "]".repeat(depth))).unwrap()
    };
    let mut c = h.user("app1", "u", json!({})).await;
    c.subscribe("deep").await;
    let r = c
        .fails(
            json!({"type":"publish","channel":"deep","global":true,"payload": nest(65)}),
            "PAYLOAD_TOO_LARGE",
        )
        .await;
    assert!(
        r["error"]["message"]
            .as_str()
            .unwrap()
            .contains("65 levels"),
        "{r}"
    );
    let (status, body, _) = h
        .post(
            "/api/v1/publish/global",
            "key-app1",
            json!({"channel":"deep","payload": nest(65)}),
        )
        .await;
    assert_eq!(status, 413, "{body}");
    assert_eq!(body["errors"][0]["code"], "PAYLOAD_TOO_LARGE");
    // At the limit: delivered, and the Rust client reads it.
    c.publish("deep", nest(64)).await;
    assert_eq!(c.expect("event").await["payload"], nest(64));
}

/// Finding 11: `/metrics` behind a token; browser origins per app.
#[tokio::test]
async fn metrics_token_and_allowed_origins() {
    let h = Herald::start_with_apps(
        "metrics_token = \"scrape-me\"",
        r#"
[[apps]]
id = "web"
api_keys = ["key-web"]
jwt_secret = "secret-web-test-only-0123456789abcdefghij"
allowed_origins = ["https://app.example.com"]
"#,
    )
    .await;
    let http = reqwest::Client::new();
    let status = http.get(h.http("/metrics")).send().await.unwrap().status();
    assert_eq!(status, 401);
    let r = http
        .get(h.http("/metrics"))
        .bearer_auth("scrape-me")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert!(r.text().await.unwrap().contains("herald_connections"));

    let url = h.ws_url("apiKey=key-web");
    let origin = |o: &str| vec![("origin", o.to_owned())];
    let (status, body) = upgrade(&url, &origin("https://evil.example"))
        .await
        .expect_err("foreign origin");
    assert_eq!(status, 403);
    assert_eq!(body["error"]["code"], "UNAUTHORIZED");
    upgrade(&url, &origin("https://app.example.com"))
        .await
        .expect("listed origin");
    upgrade(&url, &[]).await.expect("no origin: not a browser");
    // Apps that list no origins accept any.
    let other = h.ws_url("apiKey=key-app1");
    upgrade(&other, &origin("https://evil.example"))
        .await
        .expect("app1 lists none");
    let _ = Client::connect(&other).await;
}

/// Finding 4: idempotency keys are scoped to their sender, and an app
/// decides who publishes where.
#[tokio::test]
async fn senders_cannot_forge_backend_events_or_hijack_their_keys() {
    let h = Herald::start_with_apps(
        "",
        r#"
[[apps]]
id = "guarded"
api_keys = ["key-guarded"]
jwt_secret = "secret-guarded-test-only-0123456789abcdefghij"
ops_per_second = 0
server_only_channels = ["billing:*"]
user_publish_global = false
"#,
    )
    .await;
    // A user takes the key the backend will use: the backend still
    // publishes its own event, and subscribers get both.
    let mut watcher = h.user("app1", "w", json!({})).await;
    watcher
        .ok(json!({"type":"subscribe","channel":"orders","global":true}))
        .await;
    let mut mallory = h.user("app1", "mallory", json!({})).await;
    let forged = mallory
        .ok(json!({"type":"publish","channel":"orders","global":true,
                   "payload":{"status":"refunded"},"idempotencyKey":"order-7"}))
        .await;
    let (status, real, _) = h
        .post(
            "/api/v1/publish/global",
            "key-app1",
            json!({"channel":"orders","payload":{"status":"paid"},
                   "options":{"idempotencyKey":"order-7"}}),
        )
        .await;
    assert_eq!(status, 200);
    assert!(real["eventId"].is_string());
    assert_ne!(real["eventId"], forged["eventId"]);
    assert_eq!(
        watcher.expect("event").await["payload"]["status"],
        "refunded"
    );
    let e = watcher.expect("event").await;
    assert_eq!(e["payload"]["status"], "paid");
    assert_eq!(e["meta"]["senderType"], "system");
    // The backend's own repeat is still recognised.
    let (_, again, _) = h
        .post(
            "/api/v1/publish/global",
            "key-app1",
            json!({"channel":"orders","payload":{"status":"paid"},
                   "options":{"idempotencyKey":"order-7"}}),
        )
        .await;
    assert_eq!(again["eventId"], real["eventId"]);

    // Anonymous connections do not publish unless the app says so.
    let mut anon = Client::connect(&h.ws_url("app=app2")).await;
    anon.fails(
        json!({"type":"publish","channel":"lobby","global":true,"payload":1}),
        "UNAUTHORIZED",
    )
    .await;

    // Server-only channels, and no user publishing on global channels.
    let mut user = h.user("guarded", "u", json!({"issue": "1"})).await;
    for channel in [
        json!({"channel":"billing:1","global":false}),
        json!({"channel":"news","global":true}),
    ] {
        let mut frame = json!({"type":"publish","payload":1});
        frame
            .as_object_mut()
            .unwrap()
            .extend(channel.as_object().unwrap().clone());
        user.fails(frame, "UNAUTHORIZED").await;
    }
    user.ok(json!({"type":"publish","channel":"chat","global":false,"payload":1}))
        .await;
    let (status, body, _) = h
        .post(
            "/api/v1/publish/global",
            "key-guarded",
            json!({"channel":"billing:1","payload":1}),
        )
        .await;
    assert_eq!(status, 200, "{body}");
}

/// Finding 5, client side: a frame the Rust client cannot read (here from
/// a server that does not limit depth) is surfaced as an event, and the
/// connection goes on.
#[tokio::test]
async fn the_rust_client_surfaces_a_frame_it_cannot_read() {
    use futures_util::{SinkExt, StreamExt};
    use herald_client::{ClientConfig, Event};
    use tokio_tungstenite::tungstenite::Message;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let server = tokio::spawn(async move {
        let (tcp, _) = listener.accept().await.unwrap();
        let mut ws = tokio_tungstenite::accept_async(tcp).await.unwrap();
        let send = |v: String| Message::Text(v.into());
        ws.send(send(
            r#"{"type":"connected","connectionId":"c-1","node":"n","pingInterval":25000}"#.into(),
        ))
        .await
        .unwrap();
        let deep = format!("{}1{}", "[".repeat(200), "]".repeat(200));
        ws.send(send(format!(
            r#"{{"type":"event","channel":"c","global":true,"event":"e","payload":{deep},"meta":{{"messageId":"m","senderType":"system","timestamp":"0","epoch":"e","offset":1}}}}"#
        )))
        .await
        .unwrap();
        ws.send(send(r#"{"type":"presence:join","channel":"c","global":true,"member":{"presenceId":"p","type":"user","joinedAt":"0"}}"#.into()))
            .await
            .unwrap();
        // Hold the connection until the client has read everything.
        let _ = tokio::time::timeout(std::time::Duration::from_secs(10), ws.next()).await;
    });
    let config = ClientConfig::new([format!("ws://{addr}/")], "t");
    let (_client, mut events) = herald_client::connect(config).await.unwrap();
    let wait = std::time::Duration::from_secs(10);
    let mut next = async || {
        tokio::time::timeout(wait, events.recv())
            .await
            .unwrap()
            .unwrap()
    };
    assert!(matches!(next().await, Event::Connected { .. }));
    match next().await {
        Event::Unreadable { error, frame } => {
            assert!(error.contains("recursion limit"), "{error}");
            assert!(frame.starts_with(r#"{"type":"event""#), "{frame}");
        }
        other => panic!("expected Unreadable, got {other:?}"),
    }
    assert!(matches!(next().await, Event::Join { .. }));
    server.abort();
}

fn rss_bytes(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let kb: u64 = status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap();
    kb * 1024
}

/// Finding 1: a client that asks for large replies and never reads pins
/// neither memory nor its connection: replies are capped in bytes, reads
/// are rate-limited, the queue is bounded in bytes, and a stalled writer
/// is closed after the write timeout.
#[tokio::test]
async fn a_client_that_never_reads_cannot_pin_memory() {
    use futures_util::{SinkExt, StreamExt};
    use tokio_tungstenite::tungstenite::Message;
    let h = Herald::start_with(
        // A burst of 80 reads of 1 MiB is more than loopback's socket
        // buffers hold (up to 32 MiB received, 4 MiB sent): the writer stalls.
        "outbound_queue_bytes = 1048576\nwrite_timeout_ms = 2000\nmax_reply_bytes = 1048576\n\
         reads_burst_per_connection = 80",
    )
    .await;
    let big = "x".repeat(60_000);
    for n in 0..60 {
        let (status, body, _) = h
            .post(
                "/api/v1/publish/global",
                "key-deep",
                json!({"channel":"big","payload":{"n": n, "pad": big}}),
            )
            .await;
        assert_eq!(status, 200, "{body}");
    }
    // A history reply is cut at max_reply_bytes, and says so.
    let mut reader = Client::connect(&h.ws_url("apiKey=key-deep")).await;
    let r = reader
        .ok(json!({"type":"history","channel":"big","global":true,"limit":1000}))
        .await;
    // 17 payloads of 60 KB fit in 1 MiB, the oldest first.
    let publications = r["publications"].as_array().unwrap();
    assert_eq!(publications.len(), 17);
    assert_eq!(publications[0]["payload"]["n"], 0);
    let before = rss_bytes(h.pid());

    let (ws, _) = tokio_tungstenite::connect_async(h.ws_url("apiKey=key-deep"))
        .await
        .unwrap();
    let (mut sink, mut stream) = ws.split();
    for id in 1..=300 {
        let frame = json!({"type":"history","id":id,"channel":"big","global":true,"limit":1000});
        if sink
            .send(Message::Text(frame.to_string().into()))
            .await
            .is_err()
        {
            break;
        }
    }
    // Never read; let the gateway do its worst.
    tokio::time::sleep(std::time::Duration::from_secs(5)).await;
    let grown = rss_bytes(h.pid()).saturating_sub(before);
    assert!(
        grown < 64 * 1024 * 1024,
        "grew {} MB",
        grown / (1024 * 1024)
    );
    // The writer stalled past write_timeout_ms: the gateway closed the
    // connection (what was buffered drains first).
    tokio::time::timeout(std::time::Duration::from_secs(10), async {
        while let Some(Ok(_)) = stream.next().await {}
    })
    .await
    .expect("the connection stays open");
    // The gateway serves others on.
    reader
        .ok(json!({"type":"presence","channel":"big","global":true}))
        .await;
}

/// Finding 7: filling a channel costs linear frames (joins are announced
/// only while a channel is small), member lists are capped, and reading
/// presence or history needs what subscribing needs.
#[tokio::test]
async fn presence_is_bounded_and_reading_needs_subscribe_rights() {
    let h = Herald::start_with("presence_announce_limit = 10\nmax_presence_members = 5").await;
    let mut first = h.user("app1", "u0", json!({})).await;
    first.subscribe("room").await;
    let mut others = Vec::new();
    for n in 1..30 {
        let mut c = h.user("app1", &format!("u{n}"), json!({})).await;
        let r = c.subscribe("room").await;
        let members = r["presence"]["members"].as_array().unwrap().len();
        assert!(members <= 5, "{r}");
        let truncated = r["presence"]["truncated"].as_bool().unwrap_or(false);
        assert_eq!(truncated, n >= 5, "{r}");
        others.push(c);
    }
    // Joins were announced while the channel had at most 10 subscribers
    // here: u1 to u10.
    let mut joins = 0;
    while let Ok(Some(frame)) =
        tokio::time::timeout(std::time::Duration::from_millis(500), first.next_frame()).await
    {
        joins += usize::from(frame["type"] == "presence:join");
    }
    assert_eq!(joins, 10);
    let r = first.ok(json!({"type":"presence","channel":"room"})).await;
    assert_eq!(r["presence"]["members"].as_array().unwrap().len(), 5);
    assert_eq!(r["presence"]["truncated"], true);

    // A channel token that grants publishing only does not let one read.
    let token = h
        .channel_token(
            "app1",
            "vault",
            json!({"team":"a"}),
            Some(json!(["publish"])),
        )
        .await;
    for kind in ["presence", "history", "subscribe"] {
        first
            .fails(
                json!({"type": kind, "channel":"vault","global":true,"token": token}),
                "UNAUTHORIZED",
            )
            .await;
    }
    // Nor does a channel the app does not define.
    let mut strict = h.user("strict", "s", json!({})).await;
    for kind in ["presence", "history", "subscribe"] {
        strict
            .fails(
                json!({"type": kind, "channel":"undefined"}),
                "REALTIME_CHANNEL_NOT_FOUND",
            )
            .await;
    }
}

/// Finding 3: one client cannot drain its app's budget, and clients
/// together cannot starve the app's backend.
#[tokio::test]
async fn no_client_drains_the_app_and_the_backend_keeps_its_reserve() {
    // 1 operation per second, burst 20 (refill is negligible over the
    // test): one client may use 20% (burst 4), clients together 80%
    // (burst 16); 4 stay for the backend.
    let h = Herald::start_with_apps(
        "",
        r#"
[[apps]]
id = "shared"
api_keys = ["key-shared"]
jwt_secret = "secret-shared-test-only-0123456789abcdefghij"
ops_per_second = 1
ops_burst = 20
"#,
    )
    .await;
    let mut total = 0;
    for n in 0..5 {
        let mut c = h.user("shared", &format!("u{n}"), json!({})).await;
        let mut accepted = 0;
        for _ in 0..50 {
            let r = c
                .request(json!({"type":"publish","channel":"c","global":true,"payload":1}))
                .await;
            if r["ok"] == true {
                accepted += 1;
            } else {
                assert_eq!(r["error"]["code"], "RATE_LIMIT_EXCEEDED", "{r}");
            }
        }
        // Its share, and at most one more refilled while it tried.
        assert!(accepted <= 5, "user {n} got {accepted}");
        if n == 0 {
            assert!(accepted >= 4, "the first user got {accepted}");
        }
        total += accepted;
    }
    // Without the clients' cap the five would have had 20.
    assert!((16..=18).contains(&total), "clients together got {total}");
    let metrics = h.metrics().await;
    for limit in ["ops_client", "ops_clients"] {
        let name = format!(r#"herald_ratelimit_rejections_total{{app="shared",limit="{limit}"}}"#);
        assert!(
            common::metric(&metrics, &name) > 0.0,
            "{limit} never refused"
        );
    }
    for _ in 0..2 {
        let (status, body, _) = h
            .post(
                "/api/v1/publish/global",
                "key-shared",
                json!({"channel":"c","payload":"backend"}),
            )
            .await;
        assert_eq!(status, 200, "the backend was starved: {body}");
    }
}

/// A TCP connection to `addr` from the loopback address `from`.
async fn tcp_from(from: &str, addr: &str) -> tokio::net::TcpStream {
    let socket = tokio::net::TcpSocket::new_v4().unwrap();
    socket.bind(format!("{from}:0").parse().unwrap()).unwrap();
    socket.connect(addr.parse().unwrap()).await.unwrap()
}

/// Reads until the peer closes; true when it did within `within`.
async fn closed_within(tcp: &mut tokio::net::TcpStream, within: std::time::Duration) -> bool {
    use tokio::io::AsyncReadExt;
    let mut buf = [0u8; 1024];
    tokio::time::timeout(within, async {
        loop {
            match tcp.read(&mut buf).await {
                Ok(0) | Err(_) => return,
                Ok(_) => continue,
            }
        }
    })
    .await
    .is_ok()
}

/// Finding 2: half-sent requests, idle sockets and trickled bodies are
/// closed after their timeouts; connections are capped per IP and overall
/// before anything is read; health checks answer meanwhile.
#[tokio::test]
async fn slow_and_idle_connections_are_closed_and_capped() {
    use std::time::Duration;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let h = Herald::start_with("http_header_timeout_ms = 1000\nhttp_body_timeout_ms = 1000").await;
    // Headers never finished; nothing sent at all.
    let mut half = tcp_from("127.0.0.2", &h.addr).await;
    half.write_all(b"GET /healthz HTTP/1.1\r\nhost: x\r\n")
        .await
        .unwrap();
    let mut idle = tcp_from("127.0.0.2", &h.addr).await;
    for (what, tcp) in [("half-sent headers", &mut half), ("idle", &mut idle)] {
        assert!(
            closed_within(tcp, Duration::from_secs(4)).await,
            "{what} still open"
        );
    }
    // A body trickled a byte every 300 ms: refused at the body deadline,
    // though it never goes silent for long.
    let mut slow = tcp_from("127.0.0.2", &h.addr).await;
    slow.write_all(
        b"POST /api/v1/publish/global HTTP/1.1\r\nhost: x\r\nx-api-key: key-app1\r\n\
          content-type: application/json\r\ncontent-length: 100\r\n\r\n",
    )
    .await
    .unwrap();
    let started = tokio::time::Instant::now();
    let mut answer = Vec::new();
    while started.elapsed() < Duration::from_secs(5) {
        if slow.write_all(b" ").await.is_err() {
            break;
        }
        let mut buf = [0u8; 512];
        match tokio::time::timeout(Duration::from_millis(300), slow.read(&mut buf)).await {
            Ok(Ok(0)) | Ok(Err(_)) => break,
            Ok(Ok(n)) => {
                answer.extend_from_slice(&buf[..n]);
                break;
            }
            Err(_) => {}
        }
    }
    assert!(
        started.elapsed() < Duration::from_secs(3),
        "trickled body still held"
    );
    let answer = String::from_utf8_lossy(&answer);
    assert!(
        answer.is_empty() || answer.starts_with("HTTP/1.1 400"),
        "{answer}"
    );

    // Caps: 20 per address, 25 overall, and past those a reserve that
    // serves health checks only. Headers may take 10 s here.
    let h = Herald::start_with("max_connections_per_ip = 20\nmax_connections = 25").await;
    let mut held = Vec::new();
    for _ in 0..20 {
        held.push(tcp_from("127.0.0.3", &h.addr).await);
    }
    tokio::time::sleep(Duration::from_millis(100)).await;
    let read_all = |mut tcp: tokio::net::TcpStream| async move {
        let mut answer = String::new();
        let _ = tokio::time::timeout(Duration::from_secs(2), tcp.read_to_string(&mut answer)).await;
        answer
    };
    let over_ip = read_all(tcp_from("127.0.0.3", &h.addr).await).await;
    assert!(
        over_ip.starts_with("HTTP/1.1 503"),
        "per-IP cap: {over_ip:?}"
    );
    for _ in 0..5 {
        held.push(tcp_from("127.0.0.5", &h.addr).await);
    }
    tokio::time::sleep(Duration::from_millis(100)).await;
    let ask = |from: &'static str, path: &'static str| {
        let addr = h.addr.clone();
        async move {
            let mut tcp = tcp_from(from, &addr).await;
            let request = format!("GET {path} HTTP/1.1\r\nhost: x\r\nconnection: close\r\n\r\n");
            tcp.write_all(request.as_bytes()).await.unwrap();
            read_all(tcp).await
        }
    };
    let api = ask("127.0.0.6", "/api/v1/nodes").await;
    assert!(api.starts_with("HTTP/1.1 503"), "overall cap: {api:?}");
    let health = ask("127.0.0.4", "/healthz").await;
    assert!(
        health.starts_with("HTTP/1.1 200"),
        "health under the cap: {health:?}"
    );
    let ready = ask("127.0.0.4", "/readyz").await;
    assert!(
        ready.starts_with("HTTP/1.1 200"),
        "readiness under the cap: {ready:?}"
    );
    // Once the held sockets go, everyone is let in again.
    drop(held);
    tokio::time::sleep(Duration::from_millis(200)).await;
    let again = ask("127.0.0.3", "/healthz").await;
    assert!(again.starts_with("HTTP/1.1 200"), "{again:?}");
}

/// Finding 9: what is hashed into a channel key is read exactly: large
/// integers and decimals in claims or contexts are refused, duplicate keys
/// are refused, an absent context property is not `null`.
#[tokio::test]
async fn claims_and_contexts_are_read_exactly() {
    let h = Herald::start().await;
    let http = reqwest::Client::new();
    let post = |path: &str, body: &str| {
        http.post(h.http(path))
            .header("x-api-key", "key-app1")
            .header("content-type", "application/json")
            .body(body.to_owned())
            .send()
    };
    for claims in [
        r#"{"uid":18446744073709551617}"#,
        r#"{"uid":9007199254740993}"#,
        r#"{"uid":1.5}"#,
        r#"{"uid":1,"uid":2}"#,
    ] {
        let body = format!(r#"{{"channel":"c","claims":{claims}}}"#);
        let r = post("/api/v1/token", &body).await.unwrap();
        assert_eq!(r.status(), 400, "{claims}");
        let answer: Value = r.json().await.unwrap();
        assert_eq!(
            answer["errors"][0]["code"], "TOKEN_SIGNING_FAILED",
            "{claims}"
        );
    }
    let r = post(
        "/api/v1/token",
        r#"{"channel":"c","claims":{"uid":"18446744073709551617"}}"#,
    )
    .await
    .unwrap();
    assert_eq!(r.status(), 200, "as a string it is exact");
    let r = post(
        "/api/v1/publish",
        r#"{"channel":"c","payload":1,"context":{"issue":"1","issue":"2"}}"#,
    )
    .await
    .unwrap();
    assert_eq!(r.status(), 400);
    let answer: Value = r.json().await.unwrap();
    assert!(
        answer["errors"][0]["message"]
            .as_str()
            .unwrap()
            .contains("twice"),
        "{answer}"
    );
    // A user JWT whose ctx cannot be read exactly is refused.
    let token = common::user_token("app1", "u", json!({"issue": 1.5}), 60);
    let (status, _) = upgrade(&h.ws_url(&format!("token={token}")), &[])
        .await
        .expect_err("inexact ctx");
    assert_eq!(status, 401);
    // Absent is not null: these two never meet.
    let mut with_null = h.user("app1", "a", json!({"issue": null})).await;
    let mut without = h.user("app1", "b", json!({"module": "m"})).await;
    let scoped = |c: &str| json!({"type":"subscribe","channel":c,"contextOverrides":["issue"]});
    with_null.ok(scoped("room")).await;
    without.ok(scoped("room")).await;
    with_null
        .ok(json!({"type":"publish","channel":"room","contextOverrides":["issue"],"payload":1}))
        .await;
    assert_eq!(with_null.expect("event").await["payload"], 1);
    without
        .expect_no_event(std::time::Duration::from_millis(300))
        .await;
}
