//! Stock `socket.io-client` and `@insforge/sdk` against real `herald`
//! processes: the Node tests in `tests/socketio/` (Node's test runner),
//! started here against an embedded gateway, and against two gateways
//! over one Redis and one PostgreSQL. `scripts/test` installs their packages from the
//! committed lockfile (`scripts/node-deps`).

mod common;

use common::redis::RedisServer;
use common::Herald;
use herald_store::testing::PostgresServer;
use std::path::PathBuf;
use std::time::Duration;
use tokio::process::Command;

fn suite_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../tests/socketio")
}

/// Runs one Node test file with `env`; fails with its output.
async fn node_test(file: &str, env: &[(&str, String)]) {
    let dir = suite_dir();
    assert!(
        dir.join("node_modules/socket.io-client").exists(),
        "the Node packages of {} are not installed: run scripts/test, or scripts/node-deps tests/socketio",
        dir.display()
    );
    let mut command = Command::new("node");
    command
        .args([
            "--test",
            "--test-reporter=spec",
            "--test-concurrency=1",
            file,
        ])
        .current_dir(&dir)
        .kill_on_drop(true);
    for (key, value) in env {
        command.env(key, value);
    }
    let output = tokio::time::timeout(Duration::from_secs(180), command.output())
        .await
        .expect("node tests took longer than 180 s")
        .expect("run node (Node 20 or later is needed)");
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    println!("{stdout}");
    eprintln!("{stderr}");
    assert!(
        output.status.success(),
        "{file} failed:\n{stdout}\n{stderr}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn stock_clients_against_an_embedded_gateway() {
    let herald = Herald::start().await;
    // A gateway with a low frame rate per connection, for the flood test,
    // and a ping every second, for the liveness tests.
    let strict = Herald::start_with(
        "connection_frames_per_second = 5\nconnection_frames_burst = 5\nflood_disconnect_after = 20\nping_interval_ms = 1000",
    )
    .await;
    node_test(
        "embedded.test.mjs",
        &[
            ("HERALD_URL", format!("http://{}", herald.addr)),
            ("HERALD_URL_FLOOD", format!("http://{}", strict.addr)),
        ],
    )
    .await;
}

#[tokio::test(flavor = "multi_thread")]
async fn stock_clients_against_two_gateways_over_redis() {
    let redis = RedisServer::start();
    let postgres = PostgresServer::start();
    let settings = format!(
        "presence_ttl_seconds = 3\ndatabase_url = {:?}",
        postgres.url()
    );
    let settings = settings.as_str();
    let a = Herald::start_clustered(&redis.url(), settings).await;
    let b = Herald::start_clustered(&redis.url(), settings).await;
    a.wait_ready(Duration::from_secs(10)).await;
    b.wait_ready(Duration::from_secs(10)).await;
    node_test(
        "cluster.test.mjs",
        &[
            ("HERALD_URL", format!("http://{}", a.addr)),
            ("HERALD_URL_B", format!("http://{}", b.addr)),
            ("HERALD_PID_B", b.pid().to_string()),
        ],
    )
    .await;
}
