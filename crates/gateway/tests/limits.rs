//! Rate limits: per app across the cluster, per connection, per client IP.

mod common;

use common::redis::RedisServer;
use common::{metric, user_token, Client, Herald};
use serde_json::json;
use std::time::{Duration, Instant};

#[tokio::test]
async fn a_flooding_connection_is_told_then_closed_and_others_are_unaffected() {
    let h = Herald::start_with(
        "connection_frames_per_second = 50\nconnection_frames_burst = 20\nflood_disconnect_after = 30",
    )
    .await;
    let mut calm = h.user("app1", "calm", json!({})).await;
    let mut flood = h.user("app1", "flood", json!({})).await;
    for n in 0..200 {
        let frame = json!({"id": n + 1, "type":"presence","channel":"c"});
        // The server may close the connection before all are sent.
        if !flood.try_send_text(frame.to_string()).await {
            break;
        }
    }
    let mut told = None;
    let mut disconnect = None;
    while let Some(f) = flood.next_frame().await {
        if f["type"] == "reply" && f["ok"] == false && told.is_none() {
            told = Some(f.clone());
        }
        if f["type"] == "disconnect" {
            disconnect = Some(f);
        }
    }
    let told = told.expect("the flood was never told");
    assert_eq!(told["error"]["code"], "RATE_LIMIT_EXCEEDED");
    assert!(told["error"]["retryAfterMs"].as_u64().unwrap() > 0);
    assert_eq!(
        disconnect.expect("the flood was not closed"),
        json!({"type":"disconnect","code":4010,"reason":"flood","reconnect":false})
    );
    calm.subscribe("c").await;
    let m = h.metrics().await;
    assert!(
        metric(
            &m,
            "herald_ratelimit_rejections_total{app=\"app1\",limit=\"frames\"}"
        ) >= 30.0
    );
}

#[tokio::test]
async fn new_connections_per_ip_are_limited_before_the_upgrade() {
    let h =
        Herald::start_with("connections_per_second_per_ip = 1\nconnections_burst_per_ip = 3").await;
    let token = user_token("app1", "u", json!({}), 3600);
    let mut open = Vec::new();
    for _ in 0..3 {
        open.push(Client::connect(&h.ws_url(&format!("token={token}"))).await);
    }
    match tokio_tungstenite::connect_async(h.ws_url(&format!("token={token}"))).await {
        Err(tokio_tungstenite::tungstenite::Error::Http(response)) => {
            assert_eq!(response.status(), 429);
            assert!(response.headers().get("retry-after").is_some());
            let body: serde_json::Value =
                serde_json::from_slice(response.body().as_deref().unwrap_or_default()).unwrap();
            assert_eq!(body["error"]["code"], "RATE_LIMIT_EXCEEDED");
        }
        other => panic!(
            "fourth connection within a second was not refused: {:?}",
            other.map(|_| ())
        ),
    }
    // A second later there is room again.
    tokio::time::sleep(Duration::from_millis(1100)).await;
    open.push(Client::connect(&h.ws_url(&format!("token={token}"))).await);
}

#[tokio::test]
async fn server_api_reports_its_limit_in_headers() {
    let h = Herald::start().await;
    let (status, _, headers) = h
        .post(
            "/api/v1/publish/global",
            "key-limited",
            json!({"channel":"c","payload":1}),
        )
        .await;
    assert_eq!(status, 200);
    assert_eq!(headers["x-ratelimit-limit"], "3");
    assert_eq!(headers["x-ratelimit-remaining"], "2");
    assert!(headers.get("x-ratelimit-reset").is_some());
    for _ in 0..2 {
        h.post(
            "/api/v1/publish/global",
            "key-limited",
            json!({"channel":"c","payload":1}),
        )
        .await;
    }
    let (status, body, headers) = h
        .post(
            "/api/v1/publish/global",
            "key-limited",
            json!({"channel":"c","payload":1}),
        )
        .await;
    assert_eq!(status, 429);
    assert_eq!(body["errors"][0]["code"], "RATE_LIMIT_EXCEEDED");
    assert_eq!(headers["retry-after"], "1");
    assert_eq!(headers["x-ratelimit-limit"], "3");
    assert_eq!(headers["x-ratelimit-remaining"], "0");
}

/// Publishes as fast as it can on `gateway` until `until`; returns how many
/// were accepted and how many were limited.
async fn hammer(gateway: &Herald, app: &str, until: Instant) -> (u64, u64) {
    let mut c = gateway.user(app, "hammer", json!({})).await;
    let (mut ok, mut limited) = (0, 0);
    while Instant::now() < until {
        let r = c
            .request(json!({"type":"publish","channel":"h","payload":1}))
            .await;
        if r["ok"] == true {
            ok += 1;
        } else {
            assert_eq!(r["error"]["code"], "RATE_LIMIT_EXCEEDED", "{r}");
            limited += 1;
        }
    }
    (ok, limited)
}

#[tokio::test]
async fn an_app_limit_holds_across_three_gateways() {
    let redis = RedisServer::start();
    let mut g = Vec::new();
    for _ in 0..3 {
        g.push(Herald::start_clustered(&redis.url(), "").await);
    }
    let started = Instant::now();
    let until = started + Duration::from_secs(3);
    let (a, b, c) = tokio::join!(
        hammer(&g[0], "busy", until),
        hammer(&g[1], "busy", until),
        hammer(&g[2], "busy", until),
    );
    let elapsed = started.elapsed().as_secs_f64();
    let accepted = (a.0 + b.0 + c.0) as f64;
    let limited = a.1 + b.1 + c.1;
    // busy: 100 per second, burst 10.
    let expected = 100.0 * elapsed + 10.0;
    assert!(limited > 0, "the app was never limited");
    assert!(
        (accepted - expected).abs() <= expected * 0.10,
        "accepted {accepted} in {elapsed:.2} s, expected {expected:.0} ± 10%"
    );
    // Another app on the same cluster keeps its whole allowance.
    let mut other = g[1].user("limited", "u", json!({})).await;
    for n in 0..3 {
        other.publish(&format!("c{n}"), json!(n)).await;
    }
}

#[tokio::test]
async fn forge_counting_rules_hold_across_gateways() {
    let redis = RedisServer::start();
    let mut g = Vec::new();
    for _ in 0..3 {
        g.push(Herald::start_clustered(&redis.url(), "").await);
    }
    // Token prevalidation failures, on every gateway, do not count.
    for gw in &g {
        let mut c = gw.user("limited", "u", json!({})).await;
        for _ in 0..5 {
            c.fails(
                json!({"type":"subscribe","channel":"c","token":"bad"}),
                "INVALID_TOKEN",
            )
            .await;
        }
    }
    let mut c = g[0].user("limited", "u", json!({})).await;
    for n in 0..3 {
        c.ok(json!({"type":"subscribe","channel":format!("c{n}")}))
            .await;
    }
    c.fails(
        json!({"type":"subscribe","channel":"c9"}),
        "RATE_LIMIT_EXCEEDED",
    )
    .await;

    // Authorization failures count: three of them use up limited2's burst.
    let sub_only = g[0]
        .channel_token("limited2", "room", json!({}), Some(json!(["subscribe"])))
        .await;
    let mut d = g[1].user("limited2", "u", json!({})).await;
    let mut unauthorized = 0;
    for _ in 0..2 {
        let r = d
            .request(json!({"type":"publish","channel":"room","token":sub_only,"payload":1}))
            .await;
        if r["error"]["code"] == "UNAUTHORIZED" {
            unauthorized += 1;
        }
    }
    assert_eq!(unauthorized, 2);
    // Token signing counted too (1) + 2 unauthorized = the burst of 3.
    let mut e = g[2].user("limited2", "u", json!({})).await;
    e.fails(
        json!({"type":"subscribe","channel":"x"}),
        "RATE_LIMIT_EXCEEDED",
    )
    .await;
}

/// Signs channel tokens through the server API as fast as it can until
/// `until` (an operation that needs no Redis besides its limit).
async fn hammer_tokens(gateway: &Herald, app: &str, until: Instant) -> (u64, u64) {
    let http = reqwest::Client::new();
    let (mut ok, mut limited) = (0, 0);
    while Instant::now() < until {
        let status = http
            .post(gateway.http("/api/v1/token"))
            .header("X-API-Key", format!("key-{app}"))
            .json(&json!({"channel":"c","claims":{}}))
            .send()
            .await
            .unwrap()
            .status();
        match status.as_u16() {
            200 => ok += 1,
            429 => limited += 1,
            other => panic!("token signing answered {other}"),
        }
    }
    (ok, limited)
}

#[tokio::test]
async fn limits_fall_back_to_a_local_share_while_redis_is_down() {
    let mut redis = RedisServer::start();
    let mut g = Vec::new();
    for _ in 0..3 {
        g.push(Herald::start_clustered(&redis.url(), "").await);
    }
    // Let every gateway see the other two.
    tokio::time::sleep(Duration::from_millis(2500)).await;
    redis.kill();
    let started = Instant::now();
    let (accepted, limited) = hammer_tokens(&g[0], "busy", started + Duration::from_secs(2)).await;
    let elapsed = started.elapsed().as_secs_f64();
    eprintln!("fallback: accepted {accepted}, limited {limited} in {elapsed:.2} s");
    // A third of 100/s (burst 10 / 3 = 3) at this gateway alone.
    let share = 33.0 * elapsed + 3.0;
    assert!(limited > 0);
    assert!(
        accepted as f64 <= share * 1.15,
        "accepted {accepted}, local share {share:.0}"
    );
    assert!(
        accepted as f64 >= share * 0.5,
        "accepted {accepted}, local share {share:.0}"
    );
    let m = g[0].metrics().await;
    assert_eq!(metric(&m, "herald_ratelimit_fallback"), 1.0);

    redis.restart();
    g[0].wait_ready(Duration::from_secs(20)).await;
    // Checks go back to Redis once it answers again.
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        hammer_tokens(&g[0], "busy", Instant::now() + Duration::from_millis(300)).await;
        let m = g[0].metrics().await;
        if metric(&m, "herald_ratelimit_fallback") == 0.0 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "still falling back 10 s after Redis returned"
        );
    }
}
