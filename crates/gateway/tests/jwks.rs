//! User tokens from an app's own identity provider, verified with keys
//! from its JWKS URL: a local HTTP server serves the key set and rotates
//! it; tokens carry no Herald `app` claim (they are matched by issuer).

mod common;

use axum::extract::State;
use axum::routing::get;
use axum::{Json, Router};
use common::{now_secs, Client, Herald};
use parking_lot::Mutex;
use serde_json::{json, Value};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;
use tokio::io::{AsyncBufReadExt, BufReader};

/// Two P-256 key pairs made for this test only.
const K1_PRIVATE: &str = "-----BEGIN PRIVATE KEY-----\nMIGHAgEAMBMGByqGSM49AgEGCCqGSM49AwEHBG0wawIBAQQgc/dPpdBv/OdHF5y1\numN4/5/DKzA9MIUe9BZR1rISK4mhRANCAASiZ5UVV5Qf7R6sdS/VIjalgqdcTJR9\nLk620OqxXNaqBKr/O+oJ8MZVj2BIH+OvsrKxt5IgRz58wq8ZCYDRUo00\n-----END PRIVATE KEY-----\n";
const K1_X: &str = "omeVFVeUH-0erHUv1SI2pYKnXEyUfS5OttDqsVzWqgQ";
const K1_Y: &str = "qv876gnwxlWPYEgf46-ysrG3kiBHPnzCrxkJgNFSjTQ";
const K2_PRIVATE: &str = "-----BEGIN PRIVATE KEY-----\nMIGHAgEAMBMGByqGSM49AgEGCCqGSM49AwEHBG0wawIBAQQgmULCtIDuPSBW2DZY\nCHNjOVqd+vwjpajUzRORK25buHqhRANCAATTZlR5cvWexgndOUzLgnGrfwDr97X3\ntzF1geHIgC43O5RWXFMqHwIg73LMfc96dL+5OPDgKzDBhvyYetpFgTkX\n-----END PRIVATE KEY-----\n";
const K2_X: &str = "02ZUeXL1nsYJ3TlMy4Jxq38A6_e197cxdYHhyIAuNzs";
const K2_Y: &str = "lFZcUyofAiDvcsx9z3p0v7k48OArMMGG_Jh62kWBORc";

const ISSUER: &str = "https://idp.test";

fn jwk(kid: &str, x: &str, y: &str) -> Value {
    json!({"kty": "EC", "crv": "P-256", "use": "sig", "alg": "ES256", "kid": kid, "x": x, "y": y})
}

/// The identity provider: serves `set` at `/jwks.json`, counting fetches.
struct Provider {
    set: Mutex<Value>,
    fetches: AtomicUsize,
}

async fn serve(provider: Arc<Provider>) -> String {
    async fn jwks(State(p): State<Arc<Provider>>) -> Json<Value> {
        p.fetches.fetch_add(1, Ordering::SeqCst);
        Json(p.set.lock().clone())
    }
    let app = Router::new()
        .route("/jwks.json", get(jwks))
        .with_state(provider);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    format!("http://{addr}/jwks.json")
}

fn token(private: &str, kid: &str, sub: &str) -> String {
    let mut header = jsonwebtoken::Header::new(jsonwebtoken::Algorithm::ES256);
    header.kid = Some(kid.to_owned());
    let claims = json!({"sub": sub, "iss": ISSUER, "role": "authenticated", "email": format!("{sub}@example.com"), "exp": now_secs() + 300});
    let key = jsonwebtoken::EncodingKey::from_ec_pem(private.as_bytes()).unwrap();
    jsonwebtoken::encode(&header, &claims, &key).unwrap()
}

fn app(jwks_url: &str) -> String {
    format!(
        "[[apps]]\nid = \"oidc\"\nissuer = \"{ISSUER}\"\njwks_url = \"{jwks_url}\"\njwks_refresh_seconds = 3600\nops_per_second = 0\n"
    )
}

/// The HTTP status a `/v1/ws` upgrade with `token` gets (101 when it
/// connects).
async fn upgrade_status(herald: &Herald, token: &str) -> u16 {
    match tokio_tungstenite::connect_async(herald.ws_url(&format!("token={token}"))).await {
        Ok((_, response)) => response.status().as_u16(),
        Err(tokio_tungstenite::tungstenite::Error::Http(response)) => response.status().as_u16(),
        Err(e) => panic!("upgrade failed: {e}"),
    }
}

/// Opens an Engine.IO session by long-polling and sends a Socket.IO
/// `CONNECT` with `token`: the packets the server answers with.
async fn socketio_connect(herald: &Herald, token: &str) -> String {
    let http = reqwest::Client::new();
    let base = herald.http("/socket.io/?EIO=4&transport=polling");
    let open = http.get(&base).send().await.unwrap().text().await.unwrap();
    let open: Value = serde_json::from_str(open.trim_start_matches('0')).unwrap();
    let sid = open["sid"].as_str().unwrap();
    let session = format!("{base}&sid={sid}");
    let connect = format!("40{}", json!({ "token": token }));
    let posted = http.post(&session).body(connect).send().await.unwrap();
    assert!(posted.status().is_success(), "{posted:?}");
    // A poll may carry only a ping before the answer.
    let mut seen = String::new();
    for _ in 0..5 {
        let polled = http.get(&session).send().await.unwrap();
        assert!(polled.status().is_success(), "{polled:?}");
        seen += &polled.text().await.unwrap();
        if seen.contains("40{") || seen.contains("44{") {
            break;
        }
    }
    seen
}

#[tokio::test(flavor = "multi_thread")]
async fn keys_come_from_the_jwks_and_a_rotation_is_picked_up_on_the_new_kid() {
    let provider = Arc::new(Provider {
        set: Mutex::new(json!({"keys": [jwk("k1", K1_X, K1_Y)]})),
        fetches: AtomicUsize::new(0),
    });
    let url = serve(Arc::clone(&provider)).await;
    let herald = Herald::start_with_apps("", &app(&url)).await;
    assert_eq!(
        provider.fetches.load(Ordering::SeqCst),
        1,
        "fetched at start"
    );

    // A token without an `app` claim, signed with k1: the app by issuer.
    let mut alice =
        Client::connect(&herald.ws_url(&format!("token={}", token(K1_PRIVATE, "k1", "alice"))))
            .await;
    let reply = alice.subscribe("news").await;
    assert_eq!(reply["ok"], true, "{reply}");
    assert_eq!(reply["presence"]["members"][0]["presenceId"], "alice");

    // The provider rotates to k2: the first token naming k2 makes Herald
    // fetch the set again.
    *provider.set.lock() = json!({"keys": [jwk("k2", K2_X, K2_Y)]});
    let k2 = token(K2_PRIVATE, "k2", "bob");
    assert_eq!(upgrade_status(&herald, &k2).await, 101);
    assert_eq!(provider.fetches.load(Ordering::SeqCst), 2);
    // k1 left the set: its tokens are refused now.
    assert_eq!(
        upgrade_status(&herald, &token(K1_PRIVATE, "k1", "carol")).await,
        401
    );

    // Made-up kids do not hammer the provider: one fetch per 10 s at most.
    for i in 0..20 {
        let forged = token(K1_PRIVATE, &format!("made-up-{i}"), "mallory");
        assert_eq!(upgrade_status(&herald, &forged).await, 401);
    }
    assert_eq!(provider.fetches.load(Ordering::SeqCst), 2);

    // The right kid with the wrong key is refused.
    assert_eq!(
        upgrade_status(&herald, &token(K1_PRIVATE, "k2", "mallory")).await,
        401
    );

    // Socket.IO takes the same tokens.
    let answer = socketio_connect(&herald, &k2).await;
    assert!(answer.contains("40{\"sid\""), "{answer}");
    let answer = socketio_connect(&herald, &token(K1_PRIVATE, "k1", "carol")).await;
    assert!(
        answer.contains("44{") && answer.contains("INVALID_TOKEN"),
        "{answer}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn an_unreachable_jwks_is_said_at_start_and_its_tokens_are_refused() {
    // A port nothing listens on.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let url = format!("http://127.0.0.1:{port}/jwks.json");
    let config = tempfile::NamedTempFile::new().unwrap();
    std::fs::write(config.path(), app(&url)).unwrap();
    let mut child = tokio::process::Command::new(env!("CARGO_BIN_EXE_herald"))
        .args(["serve", "--listen", "127.0.0.1:0", "--config"])
        .arg(config.path())
        .env("RUST_LOG", "warn")
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(child.stderr.take().unwrap()).lines();
    let said = tokio::time::timeout(Duration::from_secs(20), async {
        while let Some(line) = lines.next_line().await.unwrap() {
            if line.contains("cannot fetch the app's JWKS") {
                return line;
            }
        }
        panic!("herald exited without saying the JWKS is unreachable");
    })
    .await
    .expect("no word about the JWKS within 20 s");
    assert!(
        said.contains("unreachable") && said.contains(&url),
        "{said}"
    );
    child.kill().await.unwrap();

    // Served anyway: its tokens are refused, others work.
    let herald = Herald::start_with_apps("", &app(&url)).await;
    assert_eq!(
        upgrade_status(&herald, &token(K1_PRIVATE, "k1", "alice")).await,
        401
    );
    let mut ok = herald.user("app1", "u", Value::Null).await;
    assert_eq!(ok.subscribe("x").await["ok"], true);
}
