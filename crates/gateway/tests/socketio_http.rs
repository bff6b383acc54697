//! `/socket.io/` at the HTTP level: CORS for browser pages on other
//! origins (long-polling is plain HTTP), and admission of new sessions.

mod common;

use common::Herald;
use reqwest::{Method, StatusCode};

const ONE_APP: &str = r#"
[[apps]]
id = "web"
api_keys = ["key-web"]
anon_keys = ["anon_web_test_key"]
allowed_origins = ["https://good.example"]
ops_per_second = 0
"#;

async fn handshake(herald: &Herald, origin: Option<&str>) -> reqwest::Response {
    let mut request =
        reqwest::Client::new().get(herald.http("/socket.io/?EIO=4&transport=polling"));
    if let Some(origin) = origin {
        request = request.header("origin", origin);
    }
    request.send().await.unwrap()
}

#[tokio::test]
async fn long_polling_answers_cors_for_origins_an_app_allows() {
    let herald = Herald::start_config(ONE_APP).await;
    let ok = handshake(&herald, Some("https://good.example")).await;
    assert_eq!(ok.status(), StatusCode::OK);
    assert_eq!(
        ok.headers()["access-control-allow-origin"],
        "https://good.example"
    );
    assert_eq!(ok.headers()["access-control-allow-credentials"], "true");
    assert!(ok.text().await.unwrap().starts_with("0{"));

    // An origin no app allows gets no CORS grant (the browser then keeps
    // the answer from the page).
    let other = handshake(&herald, Some("https://evil.example")).await;
    assert!(other.headers().get("access-control-allow-origin").is_none());

    // A preflight is answered here, not counted as a new session.
    let preflight = reqwest::Client::new()
        .request(
            Method::OPTIONS,
            herald.http("/socket.io/?EIO=4&transport=polling"),
        )
        .header("origin", "https://good.example")
        .header("access-control-request-method", "POST")
        .header("access-control-request-headers", "content-type")
        .send()
        .await
        .unwrap();
    assert_eq!(preflight.status(), StatusCode::NO_CONTENT);
    assert_eq!(
        preflight.headers()["access-control-allow-origin"],
        "https://good.example"
    );
    assert!(preflight.headers()["access-control-allow-methods"]
        .to_str()
        .unwrap()
        .contains("POST"));
    assert_eq!(
        preflight.headers()["access-control-allow-headers"],
        "content-type"
    );
}

#[tokio::test]
async fn apps_without_an_origin_list_let_any_page_poll() {
    let herald = Herald::start().await;
    let ok = handshake(&herald, Some("https://anywhere.example")).await;
    assert_eq!(
        ok.headers()["access-control-allow-origin"],
        "https://anywhere.example"
    );
    // Without an Origin (not a browser), no CORS headers are needed.
    let plain = handshake(&herald, None).await;
    assert!(plain.headers().get("access-control-allow-origin").is_none());
}

#[tokio::test]
async fn new_sessions_are_admitted_like_any_connection() {
    let herald = Herald::start_config(&format!(
        "connections_per_second_per_ip = 1\nconnections_burst_per_ip = 2\n{ONE_APP}"
    ))
    .await;
    let statuses: Vec<u16> = {
        let mut all = Vec::new();
        for _ in 0..4 {
            all.push(handshake(&herald, None).await.status().as_u16());
        }
        all
    };
    assert_eq!(&statuses[..2], &[200, 200], "{statuses:?}");
    assert!(statuses[2..].contains(&429), "{statuses:?}");
}
