//! The admin API of the InsForge surface (`/api/realtime/...`) against a
//! real gateway: auth, bodies, status codes and the error shape; channel
//! definitions taking effect; SQLite under `data_dir` across a restart.

mod common;

use common::{now_secs, secret, Herald};
use reqwest::{Method, StatusCode};
use serde_json::{json, Value};

const KEY: &str = "key-insforge";

async fn call(
    herald: &Herald,
    method: Method,
    path: &str,
    auth: Option<(&str, &str)>,
    body: Option<Value>,
) -> (StatusCode, Value) {
    let mut request = reqwest::Client::new().request(method, herald.http(path));
    if let Some((name, value)) = auth {
        request = request.header(name, value);
    }
    if let Some(body) = body {
        request = request.json(&body);
    }
    let response = request.send().await.expect("request");
    let status = response.status();
    let text = response.text().await.expect("body");
    (
        status,
        serde_json::from_str(&text).unwrap_or(Value::String(text)),
    )
}

async fn admin(
    herald: &Herald,
    method: Method,
    path: &str,
    body: Option<Value>,
) -> (StatusCode, Value) {
    call(herald, method, path, Some(("x-api-key", KEY)), body).await
}

fn jwt(app: &str, claims: Value) -> String {
    jsonwebtoken::encode(
        &jsonwebtoken::Header::new(jsonwebtoken::Algorithm::HS256),
        &claims,
        &jsonwebtoken::EncodingKey::from_secret(secret(app).as_bytes()),
    )
    .unwrap()
}

fn assert_error(reply: &(StatusCode, Value), status: StatusCode, code: &str) {
    assert_eq!(reply.0, status, "{}", reply.1);
    assert_eq!(reply.1["error"], code, "{}", reply.1);
    assert_eq!(reply.1["statusCode"], status.as_u16());
    assert!(reply.1["message"].as_str().is_some_and(|m| !m.is_empty()));
}

#[tokio::test]
async fn channel_definitions_crud_with_insforge_shapes() {
    let herald = Herald::start().await;
    let (status, list) = admin(&herald, Method::GET, "/api/realtime/channels", None).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(list, json!([]));

    let body = json!({"pattern": "order:%", "description": "Order updates", "webhookUrls": ["https://example.com/hook"]});
    let (status, created) =
        admin(&herald, Method::POST, "/api/realtime/channels", Some(body)).await;
    assert_eq!(status, StatusCode::CREATED, "{created}");
    let id = created["id"].as_str().unwrap().to_owned();
    assert_eq!(id.len(), 36);
    assert_eq!(created["pattern"], "order:%");
    assert_eq!(created["description"], "Order updates");
    assert_eq!(created["webhookUrls"], json!(["https://example.com/hook"]));
    assert_eq!(created["enabled"], true);
    let iso = |v: &Value| {
        v.as_str()
            .is_some_and(|s| s.len() == 24 && s.ends_with('Z'))
    };
    assert!(
        iso(&created["createdAt"]) && iso(&created["updatedAt"]),
        "{created}"
    );

    // Duplicate pattern: 409; bad patterns: 400 with InsForge's code.
    let dup = admin(
        &herald,
        Method::POST,
        "/api/realtime/channels",
        Some(json!({"pattern": "order:%"})),
    )
    .await;
    assert_error(&dup, StatusCode::CONFLICT, "ALREADY_EXISTS");
    for bad in ["%", "order_1", "a::b", "", "with space"] {
        let r = admin(
            &herald,
            Method::POST,
            "/api/realtime/channels",
            Some(json!({"pattern": bad})),
        )
        .await;
        assert_error(
            &r,
            StatusCode::BAD_REQUEST,
            "REALTIME_INVALID_CHANNEL_PATTERN",
        );
    }
    // Strict bodies and queries: a misplaced field is named, never ignored.
    let r = admin(
        &herald,
        Method::POST,
        "/api/realtime/channels",
        Some(json!({"pattern": "x:%", "enable": false})),
    )
    .await;
    assert_error(&r, StatusCode::BAD_REQUEST, "INVALID_INPUT");
    assert!(
        r.1["message"].as_str().unwrap().contains("enable"),
        "{}",
        r.1
    );
    let r = admin(&herald, Method::GET, "/api/realtime/channels?limit=5", None).await;
    assert_error(&r, StatusCode::BAD_REQUEST, "INVALID_INPUT");
    assert!(r.1["message"].as_str().unwrap().contains("limit"));
    let r = admin(
        &herald,
        Method::POST,
        "/api/realtime/channels",
        Some(json!({"pattern": "x:%", "webhookUrls": ["ftp://x"]})),
    )
    .await;
    assert_error(&r, StatusCode::BAD_REQUEST, "INVALID_INPUT");

    let (status, one) = admin(
        &herald,
        Method::GET,
        &format!("/api/realtime/channels/{id}"),
        None,
    )
    .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(one, created);
    let r = admin(
        &herald,
        Method::GET,
        "/api/realtime/channels/no-such-id",
        None,
    )
    .await;
    assert_error(&r, StatusCode::NOT_FOUND, "NOT_FOUND");

    // PUT changes the fields given; `null` clears the description.
    let (status, updated) = admin(
        &herald,
        Method::PUT,
        &format!("/api/realtime/channels/{id}"),
        Some(json!({"description": null, "enabled": false})),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{updated}");
    assert_eq!(updated["description"], Value::Null);
    assert_eq!(updated["enabled"], false);
    assert_eq!(updated["webhookUrls"], created["webhookUrls"]);
    assert_eq!(updated["createdAt"], created["createdAt"]);

    let (status, listed) = admin(&herald, Method::GET, "/api/realtime/channels", None).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(listed, json!([updated]));

    let (status, deleted) = admin(
        &herald,
        Method::DELETE,
        &format!("/api/realtime/channels/{id}"),
        None,
    )
    .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(deleted, json!({"message": "Channel deleted"}));
    let r = admin(
        &herald,
        Method::DELETE,
        &format!("/api/realtime/channels/{id}"),
        None,
    )
    .await;
    assert_error(&r, StatusCode::NOT_FOUND, "NOT_FOUND");

    // Apps do not see each other's definitions.
    let (_, other) = call(
        &herald,
        Method::GET,
        "/api/realtime/channels",
        Some(("x-api-key", "key-app1")),
        None,
    )
    .await;
    assert_eq!(other, json!([]));
}

#[tokio::test]
async fn admin_auth_takes_an_api_key_or_a_project_admin_token() {
    let herald = Herald::start().await;
    let path = "/api/realtime/channels";
    let r = call(&herald, Method::GET, path, None, None).await;
    assert_error(&r, StatusCode::UNAUTHORIZED, "UNAUTHORIZED");
    let r = call(
        &herald,
        Method::GET,
        path,
        Some(("x-api-key", "wrong")),
        None,
    )
    .await;
    assert_error(&r, StatusCode::UNAUTHORIZED, "UNAUTHORIZED");
    let bearer = |t: &str| format!("Bearer {t}");
    let (status, _) = call(
        &herald,
        Method::GET,
        path,
        Some(("authorization", &bearer(KEY))),
        None,
    )
    .await;
    assert_eq!(status, StatusCode::OK);

    let exp = now_secs() + 300;
    let admin_token = jwt(
        "insforge",
        json!({"sub": "ops", "iss": "https://insforge.test", "role": "project_admin", "exp": exp}),
    );
    let (status, _) = call(
        &herald,
        Method::GET,
        path,
        Some(("authorization", &bearer(&admin_token))),
        None,
    )
    .await;
    assert_eq!(status, StatusCode::OK);
    // A user who is not an admin: 403; the role defaults to authenticated.
    let user = jwt(
        "insforge",
        json!({"sub": "u", "iss": "https://insforge.test", "exp": exp}),
    );
    let r = call(
        &herald,
        Method::GET,
        path,
        Some(("authorization", &bearer(&user))),
        None,
    )
    .await;
    assert_error(&r, StatusCode::FORBIDDEN, "FORBIDDEN");
    let expired = jwt(
        "insforge",
        json!({"sub": "ops", "iss": "https://insforge.test", "role": "project_admin", "exp": now_secs() - 10}),
    );
    let r = call(
        &herald,
        Method::GET,
        path,
        Some(("authorization", &bearer(&expired))),
        None,
    )
    .await;
    assert_error(&r, StatusCode::UNAUTHORIZED, "UNAUTHORIZED");
}

#[tokio::test]
async fn realtime_config_keeps_retention_days() {
    let herald = Herald::start().await;
    let path = "/api/realtime/config";
    let (status, config) = admin(&herald, Method::GET, path, None).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(config, json!({"retentionDays": null}));
    let (status, config) = admin(
        &herald,
        Method::PATCH,
        path,
        Some(json!({"retentionDays": 90})),
    )
    .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(config, json!({"retentionDays": 90}));
    // An empty change keeps it; null clears it; nonsense is refused.
    let (_, config) = admin(&herald, Method::PATCH, path, Some(json!({}))).await;
    assert_eq!(config, json!({"retentionDays": 90}));
    for bad in [
        json!({"retentionDays": 0}),
        json!({"retentionDays": -3}),
        json!({"retentionDays": "90"}),
        json!({"retention": 1}),
    ] {
        let r = admin(&herald, Method::PATCH, path, Some(bad)).await;
        assert_error(&r, StatusCode::BAD_REQUEST, "INVALID_INPUT");
    }
    let (_, config) = admin(
        &herald,
        Method::PATCH,
        path,
        Some(json!({"retentionDays": null})),
    )
    .await;
    assert_eq!(config, json!({"retentionDays": null}));
}

#[tokio::test]
async fn definitions_under_data_dir_survive_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    let settings = format!("data_dir = {:?}", dir.path().display().to_string());
    let herald = Herald::start_with(&settings).await;
    let (status, created) = admin(
        &herald,
        Method::POST,
        "/api/realtime/channels",
        Some(json!({"pattern": "kept:%"})),
    )
    .await;
    assert_eq!(status, StatusCode::CREATED);
    admin(
        &herald,
        Method::PATCH,
        "/api/realtime/config",
        Some(json!({"retentionDays": 7})),
    )
    .await;
    let _ = herald.terminate().await;

    let again = Herald::start_with(&settings).await;
    let (_, listed) = admin(&again, Method::GET, "/api/realtime/channels", None).await;
    assert_eq!(listed, json!([created]));
    let (_, config) = admin(&again, Method::GET, "/api/realtime/config", None).await;
    assert_eq!(config, json!({"retentionDays": 7}));
}

#[tokio::test]
async fn a_cluster_without_a_database_says_so() {
    let redis = common::redis::RedisServer::start();
    let herald = Herald::start_clustered(&redis.url(), "").await;
    let r = admin(&herald, Method::GET, "/api/realtime/channels", None).await;
    assert_error(&r, StatusCode::SERVICE_UNAVAILABLE, "DATABASE_UNAVAILABLE");
    assert!(r.1["message"].as_str().unwrap().contains("--database"));
}

#[tokio::test]
async fn an_unreachable_database_stops_the_start_with_a_clear_error() {
    let config = tempfile::NamedTempFile::new().unwrap();
    std::fs::write(
        config.path(),
        "database_url = \"postgres://herald:pw@127.0.0.1:1/none\"\n",
    )
    .unwrap();
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_herald"))
        .args(["serve", "--listen", "127.0.0.1:0", "--config"])
        .arg(config.path())
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("unreachable") && err.contains("127.0.0.1:1"),
        "{err}"
    );
    assert!(!err.contains("pw@"), "the password is not printed: {err}");
}

#[tokio::test]
async fn the_openapi_document_lists_every_route_and_every_listed_route_answers() {
    let herald = Herald::start().await;
    let (status, doc) = call(
        &herald,
        Method::GET,
        "/api/realtime/openapi.json",
        None,
        None,
    )
    .await;
    assert_eq!(status, StatusCode::OK);
    assert!(doc["openapi"].as_str().unwrap().starts_with("3."), "{doc}");
    let paths = doc["paths"].as_object().unwrap();
    let mut listed: Vec<(String, String)> = paths
        .iter()
        .flat_map(|(path, ops)| {
            ops.as_object()
                .unwrap()
                .keys()
                .map(move |m| (m.clone(), path.clone()))
        })
        .collect();
    listed.sort();
    let expected = [
        ("delete", "/api/realtime/channels/{id}"),
        ("delete", "/api/realtime/messages"),
        ("delete", "/api/realtime/permissions/{command}/{name}"),
        ("get", "/api/realtime/channels"),
        ("get", "/api/realtime/channels/{id}"),
        ("get", "/api/realtime/config"),
        ("get", "/api/realtime/messages"),
        ("get", "/api/realtime/messages/stats"),
        ("get", "/api/realtime/permissions"),
        ("patch", "/api/realtime/config"),
        ("post", "/api/realtime/channels"),
        ("post", "/api/realtime/permissions"),
        ("put", "/api/realtime/channels/{id}"),
    ];
    let expected: Vec<(String, String)> = expected
        .iter()
        .map(|(m, p)| (m.to_string(), p.to_string()))
        .collect();
    assert_eq!(listed, expected);
    for schema in [
        "Channel",
        "ErrorReply",
        "Settings",
        "Create",
        "Update",
        "SettingsChange",
        "LoggedMessage",
        "Cleared",
        "Stats",
    ] {
        assert!(doc["components"]["schemas"][schema].is_object(), "{schema}");
    }
    // Every documented route is served (never 404 for the route or 405).
    for (method, path) in &listed {
        let method = Method::from_bytes(method.to_uppercase().as_bytes()).unwrap();
        let path = path
            .replace("{id}", "00000000-0000-0000-0000-000000000000")
            .replace("{command}", "subscribe")
            .replace("{name}", "none");
        let (status, body) = admin(&herald, method.clone(), &path, Some(json!({}))).await;
        assert_ne!(status, StatusCode::METHOD_NOT_ALLOWED, "{method} {path}");
        assert!(
            status != StatusCode::NOT_FOUND || body["error"] == "NOT_FOUND",
            "{method} {path}: {body}"
        );
    }
}
