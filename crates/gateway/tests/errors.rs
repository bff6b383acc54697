//! Bad input and every error code a single node can produce.

mod common;

use common::{user_token, Client, Herald};
use serde_json::json;
use tokio_tungstenite::tungstenite::Message;

#[tokio::test]
async fn every_error_code_reachable_on_one_node() {
    let h = Herald::start().await;
    let mut c = h.user("app1", "u", json!({})).await;

    // Token prevalidation.
    let token = h
        .channel_token("app1", "room", json!({}), Some(json!(["subscribe"])))
        .await;
    c.fails(
        json!({"type":"subscribe","channel":"room","token":"x.y.z"}),
        "INVALID_TOKEN",
    )
    .await;
    c.fails(
        json!({"type":"subscribe","channel":"other","token":token}),
        "CHANNEL_NAME_MISMATCH",
    )
    .await;
    // Authorization.
    c.fails(
        json!({"type":"publish","channel":"room","token":token,"payload":1}),
        "UNAUTHORIZED",
    )
    .await;
    // Request shape.
    c.fails(
        json!({"type":"subscribe","channel":"bad name!"}),
        "REALTIME_INVALID_CHANNEL_REQUEST",
    )
    .await;
    c.fails(
        json!({"type":"publish","channel":"ok","event":"bad event","payload":1}),
        "REALTIME_INVALID_EVENT",
    )
    .await;
    c.fails(
        json!({"type":"unsubscribe","channel":"never"}),
        "REALTIME_NOT_SUBSCRIBED",
    )
    .await;
    let big = "x".repeat(70 * 1024);
    c.fails(
        json!({"type":"publish","channel":"ok","payload":big}),
        "PAYLOAD_TOO_LARGE",
    )
    .await;

    // Channel definitions and publish-requires-subscription (app `strict`).
    let mut s = h.user("strict", "u", json!({})).await;
    s.fails(
        json!({"type":"subscribe","channel":"elsewhere"}),
        "REALTIME_CHANNEL_NOT_FOUND",
    )
    .await;
    s.fails(
        json!({"type":"subscribe","channel":"disabled"}),
        "REALTIME_CHANNEL_NOT_FOUND",
    )
    .await;
    s.fails(
        json!({"type":"publish","channel":"allowed-1","payload":1}),
        "REALTIME_NOT_SUBSCRIBED",
    )
    .await;
    s.subscribe("allowed-1").await;
    s.publish("allowed-1", json!(1)).await;

    // Rate limit (app `limited`: burst 3, then 1/s). The reply carries a
    // retry hint.
    let mut l = h.user("limited", "u", json!({})).await;
    let mut limited = None;
    for n in 0..10 {
        let r = l
            .request(json!({"type":"subscribe","channel":format!("c{n}")}))
            .await;
        if r["ok"] == false {
            limited = Some(r);
            break;
        }
    }
    let r = limited.expect("rate limit never hit");
    assert_eq!(r["error"]["code"], "RATE_LIMIT_EXCEEDED");
    assert_eq!(r["error"]["message"], "RATE_LIMIT_EXCEEDED");
    assert!(r["error"]["retryAfterMs"].as_u64().unwrap() > 0);

    // Server API: signing failures and 429 with Retry-After.
    let (status, body, _) = h
        .post(
            "/api/v1/token",
            "key-app1",
            json!({"channel":"bad name","claims":{}}),
        )
        .await;
    assert_eq!(status, 400);
    assert_eq!(body["errors"][0]["code"], "TOKEN_SIGNING_FAILED");
    assert_eq!(body["errors"][0]["message"], "Error signing realtime token");
    assert_eq!(body["token"], serde_json::Value::Null);
    let (status, body, _) = h
        .post(
            "/api/v1/token",
            "key-app1",
            json!({"channel":"ok","claims":{},"ttlSeconds":999999999}),
        )
        .await;
    assert_eq!(status, 400, "{body}");
    let mut saw_429 = false;
    for _ in 0..10 {
        let (status, body, headers) = h
            .post(
                "/api/v1/publish/global",
                "key-limited",
                json!({"channel":"c","payload":1}),
            )
            .await;
        if status == 429 {
            assert_eq!(body["errors"][0]["code"], "RATE_LIMIT_EXCEEDED");
            assert!(headers.get("retry-after").is_some());
            saw_429 = true;
            break;
        }
    }
    assert!(saw_429, "server API was never rate limited");

    // Every code above shows in the metrics.
    let metrics = h.metrics().await;
    for code in [
        "INVALID_TOKEN",
        "CHANNEL_NAME_MISMATCH",
        "UNAUTHORIZED",
        "REALTIME_INVALID_CHANNEL_REQUEST",
        "REALTIME_INVALID_EVENT",
        "REALTIME_NOT_SUBSCRIBED",
        "PAYLOAD_TOO_LARGE",
        "REALTIME_CHANNEL_NOT_FOUND",
        "RATE_LIMIT_EXCEEDED",
        "TOKEN_SIGNING_FAILED",
    ] {
        let line = metrics
            .lines()
            .find(|l| l.starts_with(&format!("herald_errors_total{{code=\"{code}\"}}")))
            .unwrap_or_else(|| panic!("no metric for {code}"));
        assert!(!line.ends_with(" 0"), "{line}");
    }
}

#[tokio::test]
async fn token_prevalidation_failures_do_not_count_toward_the_limit() {
    let h = Herald::start().await;
    let mut l = h.user("limited", "u", json!({})).await;
    // Far more invalid-token requests than the burst allows...
    for _ in 0..20 {
        l.fails(
            json!({"type":"subscribe","channel":"c","token":"bad"}),
            "INVALID_TOKEN",
        )
        .await;
    }
    // ...and the allowance is still whole.
    for n in 0..3 {
        l.ok(json!({"type":"subscribe","channel":format!("c{n}")}))
            .await;
    }
    l.fails(
        json!({"type":"subscribe","channel":"c9"}),
        "RATE_LIMIT_EXCEEDED",
    )
    .await;
}

#[tokio::test]
async fn malformed_frames_get_errors_and_the_connection_stays_usable() {
    let h = Herald::start().await;
    let mut c = h.user("app1", "u", json!({})).await;

    c.send_text("{not json".into()).await;
    let e = c.expect("error").await;
    assert_eq!(e["error"]["code"], "REALTIME_INVALID_CHANNEL_REQUEST");

    c.fails(json!({"type":"dance"}), "REALTIME_INVALID_CHANNEL_REQUEST")
        .await;
    c.fails(json!({"channel":"x"}), "REALTIME_INVALID_CHANNEL_REQUEST")
        .await;
    let r = c
        .fails(
            json!({"type":"publish","channel":"x"}),
            "REALTIME_INVALID_CHANNEL_REQUEST",
        )
        .await;
    assert!(r["error"]["message"].as_str().unwrap().contains("payload"));
    c.fails(
        json!({"type":"subscribe","channel":42}),
        "REALTIME_INVALID_CHANNEL_REQUEST",
    )
    .await;
    c.fails(
        json!({"type":"subscribe","channel":""}),
        "REALTIME_INVALID_CHANNEL_REQUEST",
    )
    .await;
    c.fails(
        json!({"type":"subscribe","channel":"x","global":true,"contextOverrides":["issue"]}),
        "REALTIME_INVALID_CHANNEL_REQUEST",
    )
    .await;
    c.send_raw(Message::Binary(vec![1, 2, 3].into())).await;
    assert_eq!(
        c.expect("error").await["error"]["code"],
        "REALTIME_INVALID_CHANNEL_REQUEST"
    );

    // Still usable.
    c.subscribe("x").await;
    c.publish("x", json!("still here")).await;
    assert_eq!(c.expect("event").await["payload"], "still here");
}

#[tokio::test]
async fn oversized_frames() {
    let h = Herald::start().await;
    let mut c = h.user("app1", "u", json!({})).await;
    // Over the limit (64 KiB): an error, and the connection stays open.
    let big = json!({"id":77,"type":"publish","channel":"x","payload":"y".repeat(100 * 1024)});
    c.send_text(big.to_string()).await;
    let r = c.expect("reply").await;
    assert_eq!(r["id"], 77);
    assert_eq!(r["error"]["code"], "PAYLOAD_TOO_LARGE");
    c.subscribe("x").await;

    // Over four times the limit: the connection is closed with 4009.
    c.send_text("z".repeat(300 * 1024)).await;
    let d = c.expect("disconnect").await;
    assert_eq!(d["code"], 4009);
    assert!(c.next_frame().await.is_none());
    let close = c.closed.clone().flatten().expect("close frame");
    assert_eq!(u16::from(close.code), 4009);
}

#[tokio::test]
async fn bad_credentials_are_refused_before_the_upgrade() {
    let h = Herald::start().await;
    let attempt = |query: String| {
        let url = h.ws_url(&query);
        async move { tokio_tungstenite::connect_async(url).await }
    };
    let cases = [
        (String::new(), "UNAUTHORIZED"),
        ("token=garbage".to_string(), "INVALID_TOKEN"),
        (
            format!("token={}", user_token("app1", "u", json!({}), -30)),
            "TOKEN_EXPIRED",
        ),
        ("apiKey=wrong".to_string(), "UNAUTHORIZED"),
    ];
    for (query, code) in cases {
        match attempt(query.clone()).await {
            Err(tokio_tungstenite::tungstenite::Error::Http(response)) => {
                assert_eq!(response.status(), 401, "{query}");
                let body: serde_json::Value =
                    serde_json::from_slice(response.body().as_deref().unwrap_or_default()).unwrap();
                assert_eq!(body["error"]["code"], code, "{query}");
            }
            Err(e) => panic!("{query}: unexpected error {e}"),
            Ok(_) => panic!("{query}: connection accepted"),
        }
    }
    // The Authorization header works as well as the query.
    let mut request =
        tokio_tungstenite::tungstenite::client::IntoClientRequest::into_client_request(
            h.ws_url(""),
        )
        .unwrap();
    request.headers_mut().insert(
        "authorization",
        format!("Bearer {}", user_token("app1", "u", json!({}), 60))
            .parse()
            .unwrap(),
    );
    assert!(tokio_tungstenite::connect_async(request).await.is_ok());
    let _ = Client::connect(&h.ws_url("apiKey=key-app1")).await;
}

#[tokio::test]
async fn too_many_subscriptions_are_refused() {
    let h = Herald::start_with("max_subscriptions_per_connection = 3").await;
    let mut c = h.user("app1", "u", json!({})).await;
    for n in 0..3 {
        c.subscribe(&format!("c{n}")).await;
    }
    // Resubscribing to a channel it has is fine.
    c.subscribe("c0").await;
    let r = c
        .fails(
            json!({"type":"subscribe","channel":"c3"}),
            "REALTIME_INVALID_CHANNEL_REQUEST",
        )
        .await;
    assert!(r["error"]["message"]
        .as_str()
        .unwrap()
        .contains("at most 3"));
    c.ok(json!({"type":"unsubscribe","channel":"c0"})).await;
    c.subscribe("c3").await;
}

#[tokio::test]
async fn server_api_rejects_bad_requests() {
    let h = Herald::start().await;
    let (status, body, _) = h
        .post(
            "/api/v1/publish",
            "wrong-key",
            json!({"channel":"c","payload":1}),
        )
        .await;
    assert_eq!(status, 401);
    assert_eq!(body["errors"][0]["code"], "UNAUTHORIZED");
    let (status, body, _) = h
        .post("/api/v1/publish", "key-app1", json!({"payload":1}))
        .await;
    assert_eq!(status, 400);
    assert_eq!(
        body["errors"][0]["code"],
        "REALTIME_INVALID_CHANNEL_REQUEST"
    );
    let (status, body, _) = h
        .post(
            "/api/v1/publish",
            "key-app1",
            json!({"channel":"c","payload":"x".repeat(70 * 1024)}),
        )
        .await;
    assert_eq!(status, 413);
    assert_eq!(body["errors"][0]["code"], "PAYLOAD_TOO_LARGE");
    let response = reqwest::Client::new()
        .post(h.http("/api/v1/publish"))
        .header("X-API-Key", "key-app1")
        .body("{broken")
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 400);
    let body: serde_json::Value = response.json().await.unwrap();
    assert_eq!(
        body["errors"][0]["code"],
        "REALTIME_INVALID_CHANNEL_REQUEST"
    );
    // A body far over any limit is refused with the same JSON shape.
    let response = reqwest::Client::new()
        .post(h.http("/api/v1/publish"))
        .header("X-API-Key", "key-app1")
        .body(vec![b' '; 160 * 1024])
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 413);
    let body: serde_json::Value = response.json().await.unwrap();
    assert_eq!(body["errors"][0]["code"], "PAYLOAD_TOO_LARGE");
}
