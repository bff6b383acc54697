//! The dashboard and the alert rules against a real Prometheus (Debian's
//! `prometheus`, installed by `scripts/test`) scraping two real gateways
//! over Redis: every dashboard expression returns a series, every alert
//! rule evaluates, and no rule names a metric Herald does not export.

mod common;

use common::redis::RedisServer;
use common::Herald;
use serde_json::{json, Value};
use std::collections::BTreeSet;
use std::path::PathBuf;
use std::time::Duration;
use tokio::process::Command;

fn deploy(path: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../../deploy")
        .join(path)
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

struct Prometheus {
    _child: tokio::process::Child,
    url: String,
    _dir: tempfile::TempDir,
}

impl Prometheus {
    async fn start(targets: &[&str]) -> Prometheus {
        let dir = tempfile::tempdir().unwrap();
        let config = json!({
            "global": {"scrape_interval": "1s", "evaluation_interval": "1s"},
            "rule_files": [deploy("prometheus/alerts.yml")],
            "scrape_configs": [{
                "job_name": "herald",
                "static_configs": [{"targets": targets}],
            }],
        });
        // JSON is YAML.
        let file = dir.path().join("prometheus.yml");
        std::fs::write(&file, config.to_string()).unwrap();
        let port = free_port();
        let child = Command::new("prometheus")
            .arg(format!("--config.file={}", file.display()))
            .arg(format!(
                "--storage.tsdb.path={}",
                dir.path().join("data").display()
            ))
            .arg(format!("--web.listen-address=127.0.0.1:{port}"))
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .kill_on_drop(true)
            .spawn()
            .expect(
                "prometheus is not installed: run scripts/test, which installs Debian's prometheus",
            );
        Prometheus {
            _child: child,
            url: format!("http://127.0.0.1:{port}"),
            _dir: dir,
        }
    }

    async fn query(&self, expr: &str) -> Value {
        let response = reqwest::Client::new()
            .get(format!("{}/api/v1/query", self.url))
            .query(&[("query", expr)])
            .send()
            .await;
        match response {
            Ok(r) => r.json().await.unwrap_or(Value::Null),
            Err(_) => Value::Null,
        }
    }

    async fn get(&self, path: &str) -> Value {
        reqwest::get(format!("{}{path}", self.url))
            .await
            .unwrap()
            .json()
            .await
            .unwrap()
    }
}

fn series(answer: &Value) -> usize {
    answer["data"]["result"].as_array().map_or(0, Vec::len)
}

/// Traffic that makes every labelled counter appear: publishes over HTTP
/// and WebSocket, a refused connection, a rate-limit refusal, and a
/// disconnect.
async fn traffic(a: &Herald, b: &Herald) {
    let mut alice = b.user("app1", "alice", Value::Null).await;
    alice.subscribe("dash").await;
    let (status, _, _) = a
        .post(
            "/api/v1/publish/global",
            "key-app1",
            json!({"channel": "dash", "payload": {"n": 1}}),
        )
        .await;
    assert_eq!(status, 200);
    alice.publish("dash", json!({"n": 2})).await;
    let refused = tokio_tungstenite::connect_async(a.ws_url("token=not-a-token")).await;
    assert!(refused.is_err());
    for n in 0..6 {
        a.post(
            "/api/v1/publish/global",
            "key-limited",
            json!({"channel": "x", "payload": {"n": n}}),
        )
        .await;
    }
    let mut bob = a.user("app1", "bob", Value::Null).await;
    bob.subscribe("dash").await;
    bob.close().await;
    alice.close().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn the_dashboard_and_alert_rules_hold_against_a_real_prometheus() {
    let check = std::process::Command::new("promtool")
        .args(["check", "rules"])
        .arg(deploy("prometheus/alerts.yml"))
        .output()
        .expect("promtool (Debian's prometheus package)");
    assert!(
        check.status.success(),
        "{}",
        String::from_utf8_lossy(&check.stdout)
    );

    let redis = RedisServer::start();
    let a = Herald::start_clustered(&redis.url(), "").await;
    let b = Herald::start_clustered(&redis.url(), "").await;
    a.wait_ready(Duration::from_secs(10)).await;
    b.wait_ready(Duration::from_secs(10)).await;
    traffic(&a, &b).await;
    let prometheus = Prometheus::start(&[&a.addr, &b.addr]).await;

    // Both gateways scraped, several times (rates need two samples).
    let mut up = 0;
    for _ in 0..300 {
        let answer = prometheus.query("sum(up{job=\"herald\"})").await;
        up = answer["data"]["result"][0]["value"][1]
            .as_str()
            .and_then(|v| v.parse::<f64>().ok())
            .unwrap_or(0.0) as usize;
        if up == 2 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(up, 2, "both gateways scraped");
    tokio::time::sleep(Duration::from_secs(4)).await;

    let dashboard: Value =
        serde_json::from_str(&std::fs::read_to_string(deploy("grafana/herald.json")).unwrap())
            .unwrap();
    let exprs: Vec<String> = dashboard["panels"]
        .as_array()
        .unwrap()
        .iter()
        .flat_map(|p| p["targets"].as_array().unwrap().clone())
        .map(|t| t["expr"].as_str().unwrap().to_owned())
        .collect();
    assert!(exprs.len() >= 15, "{} expressions", exprs.len());
    let mut empty = Vec::new();
    for expr in &exprs {
        let answer = prometheus.query(expr).await;
        assert_eq!(answer["status"], "success", "{expr}: {answer}");
        if series(&answer) == 0 {
            empty.push(expr.clone());
        }
    }
    assert!(empty.is_empty(), "expressions without a series: {empty:#?}");

    // Every alert rule evaluates without error, and every metric it names
    // is scraped from the gateways.
    let mut rules_ok = false;
    for _ in 0..50 {
        let rules = prometheus.get("/api/v1/rules").await;
        let all: Vec<Value> = rules["data"]["groups"]
            .as_array()
            .unwrap()
            .iter()
            .flat_map(|g| g["rules"].as_array().unwrap().clone())
            .collect();
        if !all.is_empty() && all.iter().all(|r| r["health"] == "ok") {
            rules_ok = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert!(rules_ok, "every rule evaluated");
    let alerts = std::fs::read_to_string(deploy("prometheus/alerts.yml")).unwrap();
    let mut names = BTreeSet::new();
    for text in exprs
        .iter()
        .map(String::as_str)
        .chain(std::iter::once(alerts.as_str()))
    {
        let mut rest = text;
        while let Some(at) = rest.find("herald_") {
            let name: String = rest[at..]
                .chars()
                .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
                .collect();
            rest = &rest[at + name.len()..];
            names.insert(name);
        }
    }
    for name in &names {
        let answer = prometheus
            .query(&format!("count({{__name__=\"{name}\"}})"))
            .await;
        assert!(series(&answer) > 0, "{name} is not exported by Herald");
    }
}
