//! Permission policies over the admin API, enforced on the native
//! surface's global channels with definitions (the Socket.IO surface is
//! covered by `tests/socketio/embedded.test.mjs`), live on every gateway.

mod common;

use common::redis::RedisServer;
use common::{Client, Herald};
use serde_json::{json, Value};
use std::time::{Duration, Instant};

const KEY: &str = "key-perm";

fn apps() -> &'static str {
    r#"
[[apps]]
id = "perm"
api_keys = ["key-perm"]
jwt_secret = "secret-perm-test-only-0123456789abcdefghij"
allow_anonymous = true
anonymous_publish = true
user_publish_global = true
ops_per_second = 0
"#
}

async fn admin(
    h: &Herald,
    method: reqwest::Method,
    path: &str,
    body: Option<Value>,
) -> (u16, Value) {
    let mut request = reqwest::Client::new()
        .request(method, h.http(path))
        .header("x-api-key", KEY);
    if let Some(body) = body {
        request = request.json(&body);
    }
    let response = request.send().await.unwrap();
    let status = response.status().as_u16();
    let text = response.text().await.unwrap();
    (
        status,
        serde_json::from_str(&text).unwrap_or(Value::String(text)),
    )
}

async fn policy(h: &Herald, body: Value) -> (u16, Value) {
    admin(
        h,
        reqwest::Method::POST,
        "/api/realtime/permissions",
        Some(body),
    )
    .await
}

fn token(sub: &str, role: Option<&str>) -> String {
    let mut claims = json!({"sub": sub, "app": "perm", "exp": common::now_secs() + 3600});
    if let Some(role) = role {
        claims["role"] = json!(role);
    }
    jsonwebtoken::encode(
        &jsonwebtoken::Header::new(jsonwebtoken::Algorithm::HS256),
        &claims,
        &jsonwebtoken::EncodingKey::from_secret(common::secret("perm").as_bytes()),
    )
    .unwrap()
}

async fn user(h: &Herald, sub: &str, role: Option<&str>) -> Client {
    Client::connect(&h.ws_url(&format!("token={}", token(sub, role)))).await
}

fn sub(channel: &str) -> Value {
    json!({"type":"subscribe","channel":channel,"global":true})
}

fn publish(channel: &str, event: &str, payload: Value) -> Value {
    json!({"type":"publish","channel":channel,"global":true,"event":event,"payload":payload})
}

#[tokio::test]
async fn roles_and_conditions_allow_and_deny_on_the_native_surface() {
    let h = Herald::start_config(apps()).await;
    let (status, _) = admin(
        &h,
        reqwest::Method::POST,
        "/api/realtime/channels",
        Some(json!({"pattern": "order:%"})),
    )
    .await;
    assert_eq!(status, 201);

    // No policy: open to every role.
    let mut anon = Client::connect(&h.ws_url("app=perm")).await;
    anon.ok(sub("order:u1")).await;

    // A bad condition is refused at creation, with where and why.
    let (status, body) = policy(
        &h,
        json!({"command": "subscribe", "policyName": "bad", "roles": ["authenticated"], "condition": "channel.name =="}),
    )
    .await;
    assert_eq!(status, 400, "{body}");
    let message = body["message"].as_str().unwrap();
    assert!(message.starts_with("condition: 1:"), "{message}");
    for (body, word) in [
        (json!({"command": "read", "policyName": "x"}), "command"),
        (
            json!({"command": "subscribe", "policyName": "x", "roles": ["root"]}),
            "role",
        ),
        (
            json!({"command": "subscribe", "policyName": "x", "using": "true"}),
            "using",
        ),
    ] {
        let (status, reply) = policy(&h, body).await;
        assert_eq!(status, 400, "{reply}");
        assert!(reply["message"].as_str().unwrap().contains(word), "{reply}");
    }

    // Users see their own orders; project admins see all.
    let (status, created) = policy(
        &h,
        json!({"command": "subscribe", "policyName": "own orders", "roles": ["authenticated"],
               "condition": "channel.name == 'order:' + user.sub && channel.pattern == 'order:%'"}),
    )
    .await;
    assert_eq!(status, 201, "{created}");
    assert_eq!(created["policyName"], "own orders");
    let (status, _) = policy(
        &h,
        json!({"command": "subscribe", "policyName": "admins", "roles": ["project_admin"]}),
    )
    .await;
    assert_eq!(status, 201);
    let (status, dup) = policy(&h, json!({"command": "subscribe", "policyName": "admins"})).await;
    assert_eq!(status, 409, "{dup}");
    // Short chat messages only, from signed-in users.
    let (status, _) = policy(
        &h,
        json!({"command": "publish", "policyName": "short chat", "roles": ["authenticated"],
               "condition": "message.event == 'chat' && message.payload.text.length <= 10"}),
    )
    .await;
    assert_eq!(status, 201);

    let mut u1 = user(&h, "u1", None).await;
    u1.ok(sub("order:u1")).await;
    // Forge's fixed message for UNAUTHORIZED.
    let denied = u1.fails(sub("order:u2"), "UNAUTHORIZED").await;
    assert_eq!(denied["error"]["message"], "Unauthorized request");
    // Reading a channel's history or presence takes what subscribing takes.
    u1.fails(
        json!({"type":"history","channel":"order:u2","global":true}),
        "UNAUTHORIZED",
    )
    .await;
    u1.fails(
        json!({"type":"presence","channel":"order:u2","global":true}),
        "UNAUTHORIZED",
    )
    .await;
    u1.ok(json!({"type":"history","channel":"order:u1","global":true}))
        .await;
    let mut admin_user = user(&h, "boss", Some("project_admin")).await;
    admin_user.ok(sub("order:u2")).await;
    // No subscribe policy names `anon`: anonymous clients are refused now.
    anon.fails(sub("order:u3"), "UNAUTHORIZED").await;
    // The app's backend is never checked.
    let mut backend = Client::connect(&h.ws_url(&format!("apiKey={KEY}"))).await;
    backend.ok(sub("order:u9")).await;
    // Channels without a definition are not governed.
    u1.ok(sub("news")).await;

    u1.ok(publish("order:u1", "chat", json!({"text": "hi"})))
        .await;
    u1.fails(
        publish("order:u1", "chat", json!({"text": "far too long a text"})),
        "UNAUTHORIZED",
    )
    .await;
    u1.fails(
        publish("order:u1", "order", json!({"text": "hi"})),
        "UNAUTHORIZED",
    )
    .await;
    // No publish policy names project_admin; anon neither.
    admin_user
        .fails(
            publish("order:u2", "chat", json!({"text": "hi"})),
            "UNAUTHORIZED",
        )
        .await;
    anon.fails(
        publish("order:u1", "chat", json!({"text": "hi"})),
        "UNAUTHORIZED",
    )
    .await;
    backend.ok(publish("order:u9", "anything", json!({}))).await;

    // Listed in the original's shape.
    let (status, list) = admin(&h, reqwest::Method::GET, "/api/realtime/permissions", None).await;
    assert_eq!(status, 200);
    let subscribe = list["subscribe"]["policies"].as_array().unwrap();
    assert_eq!(subscribe.len(), 2);
    let own = subscribe
        .iter()
        .find(|p| p["policyName"] == "own orders")
        .expect("own orders listed");
    assert_eq!(own["tableName"], "channels");
    assert_eq!(own["command"], "SELECT");
    assert_eq!(own["roles"], json!(["authenticated"]));
    assert!(own["using"].as_str().unwrap().contains("user.sub"));
    assert_eq!(own["withCheck"], Value::Null);
    let publish_list = &list["publish"]["policies"];
    assert_eq!(publish_list[0]["tableName"], "messages");
    assert_eq!(publish_list[0]["command"], "INSERT");
    assert!(publish_list[0]["withCheck"]
        .as_str()
        .unwrap()
        .contains("message.event"));

    // Deleting the publish policy opens publishing again.
    let (status, _) = admin(
        &h,
        reqwest::Method::DELETE,
        "/api/realtime/permissions/publish/short%20chat",
        None,
    )
    .await;
    assert_eq!(status, 200);
    let (status, _) = admin(
        &h,
        reqwest::Method::DELETE,
        "/api/realtime/permissions/publish/short%20chat",
        None,
    )
    .await;
    assert_eq!(status, 404);
    anon.ok(publish(
        "order:u1",
        "chat",
        json!({"text": "anything at all"}),
    ))
    .await;
}

#[tokio::test]
async fn a_policy_made_on_one_gateway_applies_on_the_other_within_a_second() {
    let redis = RedisServer::start();
    let pg = herald_store::testing::PostgresServer::start();
    let settings = format!("database_url = \"{}\"\n{}", pg.url(), apps());
    let a = Herald::start_clustered_config(&redis.url(), &settings).await;
    let b = Herald::start_clustered_config(&redis.url(), &settings).await;
    let (status, _) = admin(
        &a,
        reqwest::Method::POST,
        "/api/realtime/channels",
        Some(json!({"pattern": "room:%"})),
    )
    .await;
    assert_eq!(status, 201);
    let (status, _) = policy(
        &a,
        json!({"command": "subscribe", "policyName": "members", "roles": ["authenticated"]}),
    )
    .await;
    assert_eq!(status, 201);
    let started = Instant::now();
    let mut anon = Client::connect(&b.ws_url("app=perm")).await;
    loop {
        let reply = anon.request(sub("room:1")).await;
        if reply["ok"] == false {
            assert_eq!(reply["error"]["code"], "UNAUTHORIZED", "{reply}");
            break;
        }
        anon.request(json!({"type":"unsubscribe","channel":"room:1","global":true}))
            .await;
        assert!(
            started.elapsed() < Duration::from_secs(2),
            "the policy did not reach gateway b"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let mut member = user(&b, "u1", None).await;
    member.ok(sub("room:1")).await;
}
