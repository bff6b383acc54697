//! A short run of every scenario against an embedded Herald: the harness
//! works end to end, nothing is lost, and the server cleans up after the
//! connections are gone.

use std::io::{BufRead, BufReader, Write};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// `herald` sits beside this package's binary in the workspace build.
fn herald_binary() -> PathBuf {
    let loadtest = PathBuf::from(env!("CARGO_BIN_EXE_herald-loadtest"));
    let herald = loadtest.with_file_name("herald");
    assert!(
        herald.exists(),
        "{} is missing: build the workspace (scripts/test does) before this test",
        herald.display()
    );
    herald
}

struct Server {
    child: Child,
    url: String,
    http: String,
    _config: tempfile::NamedTempFile,
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn start() -> Server {
    start_with(&[], "")
}

/// A gateway with `args` added to `herald serve` and `extra` app settings.
fn start_with(args: &[&str], extra: &str) -> Server {
    let mut config = tempfile::NamedTempFile::new().unwrap();
    writeln!(
        config,
        "connections_per_second_per_ip = 0\n[[apps]]\nid = \"bench\"\napi_keys = [\"bench-key\"]\nops_per_second = 0\n{extra}"
    )
    .unwrap();
    let mut child = Command::new(herald_binary())
        .args(["serve", "--listen", "127.0.0.1:0"])
        .args(args)
        .arg("--config")
        .arg(config.path())
        .env("RUST_LOG", "warn")
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let stdout = child.stdout.take().unwrap();
    let mut lines = BufReader::new(stdout).lines();
    let addr = loop {
        let line = lines.next().expect("herald exited").unwrap();
        if let Some(rest) = line.strip_prefix("Herald listening on http://") {
            break rest.split_whitespace().next().unwrap().to_owned();
        }
    };
    std::thread::spawn(move || for _ in lines {});
    Server {
        child,
        url: format!("ws://{addr}"),
        http: format!("http://{addr}"),
        _config: config,
    }
}

/// Runs the harness; returns its JSON result and the folder holding it and
/// its plots (`result.json`, `result-latency.png`, `result-deliveries.png`).
fn run(server: &Server, args: &[&str]) -> (serde_json::Value, tempfile::TempDir) {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("result.json");
    let status = Command::new(env!("CARGO_BIN_EXE_herald-loadtest"))
        .args([
            "--url",
            &server.url,
            "--api-key",
            "bench-key",
            "--quiet",
            "--fail-on-loss",
        ])
        .args(["--pid", &server.child.id().to_string(), "--out"])
        .arg(&out)
        .args(args)
        .status()
        .unwrap();
    assert!(status.success(), "herald-loadtest {args:?} failed");
    let json = serde_json::from_str(&std::fs::read_to_string(&out).unwrap()).unwrap();
    (json, dir)
}

/// The timeline's deliveries add up to the run's, and both plots are PNGs
/// with something drawn in them.
fn assert_timeline_and_plots(report: &serde_json::Value, dir: &std::path::Path) {
    let seconds = report["timeline"].as_array().expect("timeline");
    let sum: u64 = seconds
        .iter()
        .map(|s| s["deliveries"].as_u64().unwrap())
        .sum();
    assert_eq!(sum, report["delivered"].as_u64().unwrap(), "{report}");
    assert!(seconds
        .iter()
        .any(|s| s["latency_ms"]["p99"].as_f64().unwrap() > 0.0));
    for name in ["result-latency.png", "result-deliveries.png"] {
        let bytes = std::fs::read(dir.join(name)).unwrap_or_else(|e| panic!("{name}: {e}"));
        assert!(
            bytes.starts_with(b"\x89PNG\r\n\x1a\n"),
            "{name} is not a PNG"
        );
        // A blank 1000x560 canvas compresses to a few hundred bytes; axes,
        // labels and lines make it tens of kilobytes.
        assert!(bytes.len() > 10_000, "{name}: only {} bytes", bytes.len());
    }
}

fn open_connections(server: &Server) -> f64 {
    let body = ureq_get(&format!("{}/metrics", server.http));
    body.lines()
        .find_map(|l| l.strip_prefix("herald_connections "))
        .and_then(|v| v.trim().parse().ok())
        .expect("herald_connections metric")
}

/// A plain HTTP GET on loopback, without pulling an HTTP client in.
fn ureq_get(url: &str) -> String {
    use std::io::Read;
    let rest = url.strip_prefix("http://").unwrap();
    let (host, path) = rest.split_once('/').unwrap();
    let mut stream = std::net::TcpStream::connect(host).unwrap();
    write!(stream, "GET /{path} HTTP/1.0\r\nHost: {host}\r\n\r\n").unwrap();
    let mut body = String::new();
    stream.read_to_string(&mut body).unwrap();
    body
}

#[test]
fn every_scenario_runs_and_nothing_is_lost() {
    let server = start();
    let (fanout, fanout_dir) = run(
        &server,
        &[
            "fanout",
            "--subscribers",
            "20",
            "--rate",
            "100",
            "--duration",
            "2",
        ],
    );
    assert_eq!(fanout["published"], 200);
    assert_eq!(fanout["delivered"], 4000);
    assert_eq!(fanout["lost"], 0);
    assert!(fanout["latency_ms"]["p99"].as_f64().unwrap() > 0.0);
    assert!(fanout["server"]["rss_connected_mib"].as_f64().unwrap() > 0.0);
    assert_timeline_and_plots(&fanout, fanout_dir.path());

    let (channels, _) = run(
        &server,
        &[
            "channels",
            "--channels",
            "5",
            "--subscribers",
            "4",
            "--rate",
            "50",
            "--duration",
            "2",
        ],
    );
    assert_eq!(channels["delivered"], 400);

    let (churn, _) = run(
        &server,
        &["presence-churn", "--users", "10", "--duration", "2"],
    );
    let ops = churn["operations"].as_u64().unwrap();
    assert!(ops > 0);
    // Every subscribe was announced as a join and every unsubscribe as a
    // leave, once (API-key connections are a member each).
    assert_eq!(churn["presence_joins"].as_u64().unwrap() * 2, ops);
    assert_eq!(churn["presence_joins"], churn["presence_leaves"]);

    let (storm, _) = run(
        &server,
        &["connect-storm", "--connections", "200", "--hold", "1"],
    );
    assert_eq!(storm["connections"], 200);
    assert_eq!(storm["connect_errors"], 0);
    // Spread over worker processes, as above 16,000 connections.
    let (storm, _) = run(
        &server,
        &[
            "connect-storm",
            "--connections",
            "300",
            "--hold",
            "1",
            "--workers",
            "3",
        ],
    );
    assert_eq!(storm["connections"], 300, "{storm}");
    assert_eq!(storm["connect_errors"], 0);
    assert!(
        storm["server"]["rss_per_connection_bytes"]
            .as_f64()
            .unwrap()
            > 0.0
    );

    // Every connection the harness opened is gone from the server's books.
    let deadline = Instant::now() + Duration::from_secs(5);
    while open_connections(&server) != 0.0 {
        assert!(
            Instant::now() < deadline,
            "connections left open on the server"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn non_loopback_targets_are_refused() {
    let status = Command::new(env!("CARGO_BIN_EXE_herald-loadtest"))
        .args(["--url", "ws://10.1.2.3:8080", "fanout"])
        .stderr(Stdio::null())
        .status()
        .unwrap();
    assert_eq!(status.code(), Some(2));
}

/// A `redis-server` on a free loopback port, stopped when dropped.
struct Redis(Child, u16);

impl Drop for Redis {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn redis() -> Redis {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let child = Command::new("redis-server")
        .args([
            "--port",
            &port.to_string(),
            "--bind",
            "127.0.0.1",
            "--save",
            "",
            "--appendonly",
            "no",
        ])
        .stdout(Stdio::null())
        .spawn()
        .expect("redis-server (scripts/test installs it)");
    let deadline = Instant::now() + Duration::from_secs(10);
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(Instant::now() < deadline, "redis-server did not start");
        std::thread::sleep(Duration::from_millis(20));
    }
    Redis(child, port)
}

#[test]
fn reconnect_scenario_recovers_everything_when_a_gateway_dies() {
    let redis = redis();
    let url = format!("redis://127.0.0.1:{}", redis.1);
    let args = ["--redis", url.as_str()];
    let settings = "presence = false\nhistory_size = 10000";
    let victim = start_with(&args, settings);
    let survivor = start_with(&args, settings);
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("result.json");
    let status = Command::new(env!("CARGO_BIN_EXE_herald-loadtest"))
        .args([
            "--url",
            &victim.url,
            "--url",
            &survivor.url,
            "--api-key",
            "bench-key",
            "--quiet",
        ])
        .arg("--out")
        .arg(&out)
        .args([
            "reconnect",
            "--subscribers",
            "20",
            "--rate",
            "100",
            "--duration",
            "3",
        ])
        .args([
            "--kill",
            &victim.child.id().to_string(),
            "--kill-after",
            "1",
        ])
        .status()
        .unwrap();
    assert!(status.success());
    let report: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&out).unwrap()).unwrap();
    assert_eq!(report["published"], 300);
    assert_eq!(report["delivered"], 6000, "{report}");
    assert_eq!(report["duplicated"], 0);
    assert_eq!(report["not_recovered"], 0);
    // Half the subscribers were on the killed gateway and came back.
    assert!(
        report["reconnect_ms"]["max"].as_f64().unwrap() > 0.0,
        "{report}"
    );
    assert_timeline_and_plots(&report, dir.path());
}
