//! The recovery promise and strict server-API bodies (docs/reliability.md).

mod common;

use common::{Client, Herald};
use serde_json::{json, Value};
use std::time::Duration;

/// Apps for these tests: history off, a short history, a short-lived one,
/// and the defaults (history on).
const APPS: &str = r#"
[[apps]]
id = "off"
api_keys = ["key-off"]
jwt_secret = "secret-off-test-only-0123456789abcdefghij"
ops_per_second = 0
history_size = 0

[[apps]]
id = "short"
api_keys = ["key-short"]
jwt_secret = "secret-short-test-only-0123456789abcdefghij"
ops_per_second = 0
history_size = 2

[[apps]]
id = "brief"
api_keys = ["key-brief"]
jwt_secret = "secret-brief-test-only-0123456789abcdefghij"
ops_per_second = 0
history_ttl_seconds = 2

[[apps]]
id = "default"
api_keys = ["key-default"]
jwt_secret = "secret-default-test-only-0123456789abcdefghij"
ops_per_second = 0
"#;

/// Subscribes to `channel`, leaves, lets the backend publish `n` times,
/// and subscribes again with `since` the position it had: the reply.
async fn away_and_back(h: &Herald, app: &str, n: u32, away: Duration) -> Value {
    let url = h.ws_url(&format!("apiKey=key-{app}"));
    let mut c = Client::connect(&url).await;
    let r = c
        .ok(json!({"type":"subscribe","channel":"r","global":true}))
        .await;
    let since = json!({"epoch": r["epoch"], "offset": r["offset"]});
    c.ok(json!({"type":"unsubscribe","channel":"r","global":true}))
        .await;
    for i in 0..n {
        let (status, body, _) = h
            .post(
                "/api/v1/publish/global",
                &format!("key-{app}"),
                json!({"channel":"r","payload":i}),
            )
            .await;
        assert_eq!(status, 200, "{body}");
    }
    tokio::time::sleep(away).await;
    c.ok(json!({"type":"subscribe","channel":"r","global":true,"since": since}))
        .await
}

fn replayed(reply: &Value) -> Vec<Value> {
    reply["publications"]
        .as_array()
        .map(|p| p.iter().map(|e| e["payload"].clone()).collect())
        .unwrap_or_default()
}

/// Where the server cannot prove nothing was missed, `since` answers
/// `recovered: false` and replays nothing; where it can, it replays all.
#[tokio::test]
async fn since_never_claims_a_recovery_that_did_not_happen() {
    let h = Herald::start_config(APPS).await;
    // History off: the publications went nowhere and left no trace.
    let r = away_and_back(&h, "off", 3, Duration::ZERO).await;
    assert_eq!(r["recovered"], false, "history off: {r}");
    assert!(replayed(&r).is_empty(), "{r}");
    // Trimmed: 2 kept of 5.
    let r = away_and_back(&h, "short", 5, Duration::ZERO).await;
    assert_eq!(r["recovered"], false, "trimmed: {r}");
    assert!(replayed(&r).is_empty(), "{r}");
    // Expired: kept 2 s. The stream lives on (a publication 1.5 s in
    // keeps it), so this is the first publications aging out, not a new
    // epoch.
    let url = h.ws_url("apiKey=key-brief");
    let mut c = Client::connect(&url).await;
    let r = c
        .ok(json!({"type":"subscribe","channel":"e","global":true}))
        .await;
    let since = json!({"epoch": r["epoch"], "offset": r["offset"]});
    c.ok(json!({"type":"unsubscribe","channel":"e","global":true}))
        .await;
    let publish = |n: u32| {
        h.post(
            "/api/v1/publish/global",
            "key-brief",
            json!({"channel":"e","payload":n}),
        )
    };
    publish(1).await;
    tokio::time::sleep(Duration::from_millis(1500)).await;
    publish(2).await;
    tokio::time::sleep(Duration::from_millis(1000)).await;
    let r = c
        .ok(json!({"type":"subscribe","channel":"e","global":true,"since": since}))
        .await;
    assert_eq!(r["epoch"], since["epoch"], "the same stream: {r}");
    assert_eq!(r["recovered"], false, "expired: {r}");
    assert!(replayed(&r).is_empty(), "{r}");
    // The defaults keep history: everything missed is replayed.
    let r = away_and_back(&h, "default", 3, Duration::ZERO).await;
    assert_eq!(r["recovered"], true, "defaults: {r}");
    assert_eq!(replayed(&r), vec![json!(0), json!(1), json!(2)]);

    // Another epoch: the stream the client knew is gone.
    let mut c = Client::connect(&h.ws_url("apiKey=key-default")).await;
    let r = c
        .ok(json!({"type":"subscribe","channel":"r","global":true,
                   "since":{"epoch":"00000000","offset":1}}))
        .await;
    assert_eq!(r["recovered"], false, "epoch changed: {r}");
    assert!(replayed(&r).is_empty(), "{r}");

    // `history` with `since` follows the same rule.
    let mut c = Client::connect(&h.ws_url("apiKey=key-off")).await;
    let r = c
        .ok(json!({"type":"subscribe","channel":"h","global":true}))
        .await;
    let since = json!({"epoch": r["epoch"], "offset": r["offset"]});
    let r = c
        .ok(json!({"type":"history","channel":"h","global":true,"since": since}))
        .await;
    assert_eq!(r["recovered"], false, "history off: {r}");
}

/// A gap larger than the server replays (`recovery_max_publications`,
/// `max_reply_bytes`) is not replayed in part: `recovered: false`.
#[tokio::test]
async fn a_gap_beyond_the_replay_bounds_is_not_recovered() {
    let h = Herald::start_config(&format!(
        "recovery_max_publications = 3\nmax_reply_bytes = 100000\n{APPS}"
    ))
    .await;
    // 4 publications: one more than the count bound.
    let r = away_and_back(&h, "default", 4, Duration::ZERO).await;
    assert_eq!(r["recovered"], false, "over the count: {r}");
    assert!(replayed(&r).is_empty(), "{r}");
    // 3 publications: within it, replayed.
    let r = away_and_back(&h, "default", 3, Duration::ZERO).await;
    assert_eq!(r["recovered"], true, "within the count: {r}");
    // 2 publications of 60 KB: within the count, over the bytes.
    let url = h.ws_url("apiKey=key-default");
    let mut c = Client::connect(&url).await;
    let r = c
        .ok(json!({"type":"subscribe","channel":"big","global":true}))
        .await;
    let since = json!({"epoch": r["epoch"], "offset": r["offset"]});
    c.ok(json!({"type":"unsubscribe","channel":"big","global":true}))
        .await;
    for _ in 0..2 {
        let (status, body, _) = h
            .post(
                "/api/v1/publish/global",
                "key-default",
                json!({"channel":"big","payload":"x".repeat(60_000)}),
            )
            .await;
        assert_eq!(status, 200, "{body}");
    }
    let r = c
        .ok(json!({"type":"subscribe","channel":"big","global":true,"since": since}))
        .await;
    assert_eq!(r["recovered"], false, "over the bytes: {r}");
    assert!(replayed(&r).is_empty());
}

/// A misplaced or unknown field in a server-API body, or a query
/// parameter, is refused with the field's name, never ignored.
#[tokio::test]
async fn server_api_bodies_are_strict() {
    let h = Herald::start_config(APPS).await;
    let cases = [
        (
            "/api/v1/publish/global",
            json!({"channel":"c","payload":1,"idempotencyKey":"k"}),
            "idempotencyKey",
        ),
        (
            "/api/v1/publish",
            json!({"channel":"c","payload":1,"options":{"idempotency_key":"k"}}),
            "idempotency_key",
        ),
        (
            "/api/v1/token",
            json!({"channel":"c","claims":{},"ttl":60}),
            "ttl",
        ),
        (
            "/api/v1/expressions/evaluate",
            json!({"expression":"true","event":{},"strict":true}),
            "strict",
        ),
    ];
    for (path, body, field) in cases {
        let (status, answer, _) = h.post(path, "key-default", body).await;
        assert_eq!(status, 400, "{path}: {answer}");
        let message = answer["errors"][0]["message"].as_str().unwrap_or_default();
        assert!(message.contains(&format!("`{field}`")), "{path}: {answer}");
    }
    let r = reqwest::Client::new()
        .post(h.http("/api/v1/publish/global?dryRun=1"))
        .header("x-api-key", "key-default")
        .json(&json!({"channel":"c","payload":1}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 400);
    let answer: Value = r.json().await.unwrap();
    assert!(
        answer["errors"][0]["message"]
            .as_str()
            .unwrap()
            .contains("`dryRun`"),
        "{answer}"
    );
    // WebSocket frames keep ignoring unknown fields (forward compatible).
    let mut c = Client::connect(&h.ws_url("apiKey=key-default")).await;
    c.ok(json!({"type":"subscribe","channel":"c","global":true,"future":1}))
        .await;
}

/// `check-config` warns where history cannot cover a reconnect.
#[test]
fn check_config_warns_where_history_cannot_cover_a_reconnect() {
    let out = common::check_config(APPS);
    assert!(out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("app `off` keeps no history"), "{stderr}");
    assert!(
        stderr.contains("app `brief` keeps publications 2 s"),
        "{stderr}"
    );
    assert!(!stderr.contains("app `default`"), "{stderr}");
    assert!(!stderr.contains("app `short`"), "{stderr}");
    // At its full operation rate, 100 kept publications cover 2 s.
    let rated =
        "[[apps]]\nid = \"rated\"\napi_keys = [\"k\"]\nops_per_second = 50\nhistory_size = 100\n";
    let out = common::check_config(rated);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("app `rated`") && stderr.contains("2 s"),
        "{stderr}"
    );
}
