//! Delivery and Forge-style channel semantics on one node.

mod common;

use common::{Client, Herald};
use serde_json::json;
use std::time::Duration;

const QUIET: Duration = Duration::from_millis(300);

#[tokio::test]
async fn publish_reaches_other_connections_with_contiguous_offsets() {
    let h = Herald::start().await;
    let ctx = json!({"issue": "10001"});
    let mut alice = h.user("app1", "alice", ctx.clone()).await;
    let mut bob = h.user("app1", "bob", ctx.clone()).await;
    let reply = bob.subscribe("ch").await;
    let first_offset = reply["offset"].as_u64().unwrap();
    let epoch = reply["epoch"].as_str().unwrap().to_owned();

    for n in 0..5 {
        let r = alice
            .ok(json!({"type":"publish","channel":"ch","event":"status_changed","payload":{"n":n}}))
            .await;
        assert!(r["eventId"].as_str().unwrap().starts_with("m-"));
        assert!(r["eventTimestamp"].as_str().unwrap().parse::<u64>().is_ok());
    }
    for n in 0..5u64 {
        let e = bob.expect("event").await;
        assert_eq!(e["channel"], "ch");
        assert_eq!(e["global"], false);
        assert_eq!(e["event"], "status_changed");
        assert_eq!(e["payload"], json!({"n": n}));
        assert_eq!(e["meta"]["senderType"], "user");
        assert_eq!(e["meta"]["senderId"], "alice");
        assert_eq!(e["meta"]["epoch"], epoch.as_str());
        assert_eq!(e["meta"]["offset"], first_offset + n + 1);
    }

    // The server API publishes as `system`, with the context passed explicitly.
    let (status, body, _) = h
        .post(
            "/api/v1/publish",
            "key-app1",
            json!({"channel":"ch","payload":"from backend","context":{"issue":"10001"}}),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    assert!(body["eventId"].is_string());
    assert_eq!(body["errors"], json!([]));
    let e = bob.expect("event").await;
    assert_eq!(e["payload"], "from backend");
    assert_eq!(e["event"], "message");
    assert_eq!(e["meta"]["senderType"], "system");
    assert!(e["meta"].get("senderId").is_none());
}

#[tokio::test]
async fn scoped_and_global_are_separate_namespaces() {
    let h = Herald::start().await;
    let ctx = json!({"issue": "1"});
    let mut scoped = h.user("app1", "s", ctx.clone()).await;
    let mut global = h.user("app1", "g", ctx.clone()).await;
    let mut publisher = h.user("app1", "p", ctx.clone()).await;
    scoped.subscribe("news").await;
    global
        .ok(json!({"type":"subscribe","channel":"news","global":true}))
        .await;

    publisher.publish("news", json!("scoped")).await;
    assert_eq!(scoped.expect("event").await["payload"], "scoped");
    global.expect_no_event(QUIET).await;

    publisher
        .ok(json!({"type":"publish","channel":"news","global":true,"payload":"global"}))
        .await;
    let e = global.expect("event").await;
    assert_eq!(e["payload"], "global");
    assert_eq!(e["global"], true);
    scoped.expect_no_event(QUIET).await;

    // publishGlobal from the server API reaches only the global subscriber.
    let (status, _, _) = h
        .post(
            "/api/v1/publish/global",
            "key-app1",
            json!({"channel":"news","payload":"api"}),
        )
        .await;
    assert_eq!(status, 200);
    assert_eq!(global.expect("event").await["payload"], "api");
    scoped.expect_no_event(QUIET).await;
}

#[tokio::test]
async fn context_must_match_and_overrides_match_exactly() {
    let h = Herald::start().await;
    let issue1 = json!({"module":"jira:issuePanel","issue":"1","project":"P"});
    let issue2 = json!({"module":"jira:issuePanel","issue":"2","project":"P"});
    let other_module = json!({"module":"jira:glance","issue":"1","project":"P"});

    let mut on_issue1 = h.user("app1", "a", issue1.clone()).await;
    let mut on_issue2 = h.user("app1", "b", issue2.clone()).await;
    let mut glance = h.user("app1", "c", other_module.clone()).await;
    on_issue1.subscribe("ch").await;
    on_issue2.subscribe("ch").await;
    glance.subscribe("ch").await;

    // By default the whole context scopes: only the same issue AND module.
    let mut pub1 = h.user("app1", "p", issue1.clone()).await;
    pub1.publish("ch", json!(1)).await;
    assert_eq!(on_issue1.expect("event").await["payload"], 1);
    on_issue2.expect_no_event(QUIET).await;
    glance.expect_no_event(QUIET).await;

    // contextOverrides ["project"]: both issues meet; module no longer counts.
    let project_only = json!({"type":"subscribe","channel":"proj","contextOverrides":["project"]});
    on_issue1.ok(project_only.clone()).await;
    on_issue2.ok(project_only.clone()).await;
    glance.ok(project_only).await;
    pub1.ok(json!({"type":"publish","channel":"proj","contextOverrides":["project"],"payload":2}))
        .await;
    for c in [&mut on_issue1, &mut on_issue2, &mut glance] {
        assert_eq!(c.expect("event").await["payload"], 2);
    }

    // [project, issue] does not reach subscribers of [project], in any order.
    pub1.ok(json!({"type":"publish","channel":"proj","contextOverrides":["issue","project"],"payload":3}))
        .await;
    for c in [&mut on_issue1, &mut on_issue2, &mut glance] {
        c.expect_no_event(QUIET).await;
    }
}

#[tokio::test]
async fn channel_tokens_isolate_by_claims_and_enforce_permissions() {
    let h = Herald::start().await;
    let ctx = json!({});
    let room_a = h
        .channel_token(
            "app1",
            "room",
            json!({"room":"a","tier":{"x":1,"y":2}}),
            None,
        )
        .await;
    // Same claims, signed separately, keys in another order.
    let room_a2 = h
        .channel_token(
            "app1",
            "room",
            json!({"tier":{"y":2,"x":1},"room":"a"}),
            None,
        )
        .await;
    let room_b = h
        .channel_token("app1", "room", json!({"room":"b"}), None)
        .await;
    let sub_only = h
        .channel_token(
            "app1",
            "room",
            json!({"room":"a","tier":{"x":1,"y":2}}),
            Some(json!(["subscribe"])),
        )
        .await;
    let pub_only = h
        .channel_token(
            "app1",
            "room",
            json!({"room":"a","tier":{"x":1,"y":2}}),
            Some(json!(["publish"])),
        )
        .await;

    let mut a = h.user("app1", "a", ctx.clone()).await;
    let mut b = h.user("app1", "b", ctx.clone()).await;
    let mut plain = h.user("app1", "plain", ctx.clone()).await;
    let mut publisher = h.user("app1", "p", ctx.clone()).await;
    a.ok(json!({"type":"subscribe","channel":"room","token":room_a}))
        .await;
    b.ok(json!({"type":"subscribe","channel":"room","token":room_b}))
        .await;
    plain.subscribe("room").await;

    publisher
        .ok(json!({"type":"publish","channel":"room","token":room_a2,"payload":"for a"}))
        .await;
    assert_eq!(a.expect("event").await["payload"], "for a");
    b.expect_no_event(QUIET).await;
    plain.expect_no_event(QUIET).await;

    publisher.publish("room", json!("no token")).await;
    assert_eq!(plain.expect("event").await["payload"], "no token");
    a.expect_no_event(QUIET).await;

    // Permissions.
    publisher
        .fails(
            json!({"type":"publish","channel":"room","token":sub_only,"payload":1}),
            "UNAUTHORIZED",
        )
        .await;
    publisher
        .fails(
            json!({"type":"subscribe","channel":"room","token":pub_only}),
            "UNAUTHORIZED",
        )
        .await;
    publisher
        .ok(json!({"type":"publish","channel":"room","token":pub_only,"payload":"pub-only"}))
        .await;
    assert_eq!(a.expect("event").await["payload"], "pub-only");

    // Token errors, with the contract's exact messages.
    let r = publisher
        .fails(
            json!({"type":"subscribe","channel":"other","token":room_a}),
            "CHANNEL_NAME_MISMATCH",
        )
        .await;
    assert_eq!(
        r["error"]["message"],
        "Realtime token validation failed: CHANNEL_NAME_MISMATCH"
    );
    let r = publisher
        .fails(
            json!({"type":"subscribe","channel":"room","token":"not-a-token"}),
            "INVALID_TOKEN",
        )
        .await;
    assert_eq!(
        r["error"]["message"],
        "Realtime token validation failed: INVALID_TOKEN"
    );
    let other_app = h
        .channel_token("app2", "room", json!({"room":"a"}), None)
        .await;
    publisher
        .fails(
            json!({"type":"subscribe","channel":"room","token":other_app}),
            "INVALID_TOKEN",
        )
        .await;
    let expired = expired_channel_token("app1", "room");
    let r = publisher
        .fails(
            json!({"type":"subscribe","channel":"room","token":expired}),
            "TOKEN_EXPIRED",
        )
        .await;
    assert_eq!(
        r["error"]["message"],
        "Realtime token validation failed: TOKEN_EXPIRED"
    );
}

/// A channel token shaped like Herald's own, expired a minute ago: the
/// server API cannot be asked for one.
fn expired_channel_token(app: &str, channel: &str) -> String {
    let now = common::now_secs();
    jsonwebtoken::encode(
        &jsonwebtoken::Header::new(jsonwebtoken::Algorithm::HS256),
        &json!({"typ":"herald.channel","app":app,"ch":channel,"claims":{},
                "perms":["subscribe","publish"],"iat":now - 120,"exp":now - 60}),
        &jsonwebtoken::EncodingKey::from_secret(
            format!("secret-{app}-test-only-0123456789abcdefghij").as_bytes(),
        ),
    )
    .unwrap()
}

#[tokio::test]
async fn token_result_has_expiry_in_epoch_seconds() {
    let h = Herald::start().await;
    let (status, body, _) = h
        .post(
            "/api/v1/token",
            "key-app1",
            json!({"channel":"ch","claims":{"a":1},"ttlSeconds":120}),
        )
        .await;
    assert_eq!(status, 200);
    let exp = body["expiresAt"].as_u64().unwrap();
    let now = common::now_secs();
    assert!(
        exp >= now + 115 && exp <= now + 125,
        "expiresAt {exp}, now {now}"
    );
    let (_, body, _) = h
        .post(
            "/api/v1/token",
            "key-app1",
            json!({"channel":"ch","claims":{}}),
        )
        .await;
    let exp = body["expiresAt"].as_u64().unwrap();
    assert!(
        exp >= now + 3595 && exp <= now + 3605,
        "default TTL is one hour"
    );
}

#[tokio::test]
async fn apps_are_isolated() {
    let h = Herald::start().await;
    let mut app1 = h.user("app1", "u", json!({})).await;
    let mut app2 = h.user("app2", "u", json!({})).await;
    app1.ok(json!({"type":"subscribe","channel":"shared","global":true}))
        .await;
    app2.ok(json!({"type":"subscribe","channel":"shared","global":true}))
        .await;
    app2.ok(json!({"type":"publish","channel":"shared","global":true,"payload":"app2"}))
        .await;
    assert_eq!(app2.expect("event").await["payload"], "app2");
    app1.expect_no_event(QUIET).await;
    let (_, _, _) = h
        .post(
            "/api/v1/publish/global",
            "key-app1",
            json!({"channel":"shared","payload":"app1"}),
        )
        .await;
    assert_eq!(app1.expect("event").await["payload"], "app1");
    app2.expect_no_event(QUIET).await;
    // A user token of app2 signed with app1's key is refused.
    let forged = jsonwebtoken::encode(
        &jsonwebtoken::Header::new(jsonwebtoken::Algorithm::HS256),
        &json!({"sub":"x","app":"app2","exp":common::now_secs() + 60}),
        &jsonwebtoken::EncodingKey::from_secret(b"secret-app1-test-only-0123456789abcdefghij"),
    )
    .unwrap();
    let status = reqwest::get(h.http(&format!("/v1/ws?token={forged}")))
        .await
        .unwrap()
        .status();
    assert_eq!(status, 401);
}

#[tokio::test]
async fn event_id_is_null_when_nobody_listens_and_no_history_is_kept() {
    let h = Herald::start().await;
    let body = json!({"channel":"empty","payload":1});
    let (status, r, _) = h
        .post("/api/v1/publish/global", "key-app1", body.clone())
        .await;
    assert_eq!(status, 200);
    assert_eq!(r["eventId"], serde_json::Value::Null);
    assert_eq!(r["eventTimestamp"], serde_json::Value::Null);
    assert_eq!(r["errors"], json!([]));

    // app2 keeps history: the event is kept, so it has an id.
    let (_, r, _) = h
        .post("/api/v1/publish/global", "key-app2", body.clone())
        .await;
    assert!(r["eventId"].is_string());

    // With a subscriber, app1's event has an id too.
    let mut c = h.user("app1", "u", json!({})).await;
    c.ok(json!({"type":"subscribe","channel":"empty","global":true}))
        .await;
    let (_, r, _) = h.post("/api/v1/publish/global", "key-app1", body).await;
    assert!(r["eventId"].is_string());
    assert_eq!(c.expect("event").await["meta"]["messageId"], r["eventId"]);
}

#[tokio::test]
async fn api_key_and_anonymous_connections() {
    let h = Herald::start().await;
    let mut system = Client::connect(&h.ws_url("apiKey=key-app2")).await;
    let mut anon = Client::connect(&h.ws_url("app=app2")).await;
    anon.ok(json!({"type":"subscribe","channel":"lobby","global":true}))
        .await;
    system
        .ok(json!({"type":"publish","channel":"lobby","global":true,"payload":"hi"}))
        .await;
    let e = anon.expect("event").await;
    assert_eq!(e["meta"]["senderType"], "system");
    // app1 does not allow anonymous connections.
    let status = reqwest::get(h.http("/v1/ws?app=app1"))
        .await
        .unwrap()
        .status();
    assert_eq!(status, 401);
}
