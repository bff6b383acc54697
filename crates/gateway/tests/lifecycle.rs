//! Connections over time: slow consumers, shutdown, presence, history,
//! token expiry and refresh, metrics, and the command line.

mod common;

use common::{metric, user_token, Client, Herald};
use futures_util::StreamExt;
use serde_json::json;
use std::process::Stdio;
use std::time::Duration;
use tokio::io::AsyncBufReadExt;
use tokio_tungstenite::tungstenite::Message;

#[tokio::test]
async fn slow_consumer_is_disconnected_while_a_fast_one_keeps_receiving() {
    const COUNT: usize = 600;
    let h = Herald::start_with("outbound_queue_frames = 8").await;
    // The slow client subscribes, then never reads again.
    let (mut slow, _) = tokio_tungstenite::connect_async(h.ws_url(&format!(
        "token={}",
        user_token("app1", "slow", json!({}), 3600)
    )))
    .await
    .unwrap();
    futures_util::SinkExt::send(
        &mut slow,
        Message::Text(
            json!({"id":1,"type":"subscribe","channel":"firehose"})
                .to_string()
                .into(),
        ),
    )
    .await
    .unwrap();
    let mut fast = h.user("app1", "fast", json!({})).await;
    fast.subscribe("firehose").await;
    let reader = tokio::spawn(async move {
        let mut offsets = Vec::new();
        while offsets.len() < COUNT {
            let e = fast.expect("event").await;
            offsets.push(e["meta"]["offset"].as_u64().unwrap());
        }
        (offsets, fast)
    });
    let mut publisher = h.user("app1", "pub", json!({})).await;
    let chunk = "x".repeat(32 * 1024);
    for n in 0..COUNT {
        publisher
            .publish("firehose", json!({"n": n, "pad": chunk}))
            .await;
    }
    let (offsets, _fast) = tokio::time::timeout(Duration::from_secs(30), reader)
        .await
        .unwrap()
        .unwrap();
    assert!(
        offsets.windows(2).all(|w| w[1] == w[0] + 1),
        "fast consumer saw a gap"
    );

    let metrics = h.metrics().await;
    assert_eq!(
        metric(&metrics, "herald_slow_consumer_disconnects_total"),
        1.0
    );
    // Now the slow client reads what reached it: fewer events than were
    // published, then the end of the connection (a `disconnect` 4006 first
    // when the socket had room for it).
    let mut events = 0;
    loop {
        match tokio::time::timeout(Duration::from_secs(10), slow.next())
            .await
            .unwrap()
        {
            Some(Ok(Message::Text(t))) => {
                let v: serde_json::Value = serde_json::from_str(t.as_str()).unwrap();
                match v["type"].as_str().unwrap() {
                    "event" => events += 1,
                    "disconnect" => {
                        assert_eq!(v["code"], 4006);
                        assert_eq!(v["reconnect"], true);
                    }
                    _ => {}
                }
            }
            Some(Ok(Message::Close(_))) | Some(Err(_)) | None => break,
            Some(Ok(_)) => {}
        }
    }
    assert!(
        events < COUNT,
        "slow consumer received everything ({events})"
    );
    let metrics = h.metrics().await;
    assert_eq!(
        metric(&metrics, "herald_connections"),
        1.0 + 1.0,
        "fast and publisher remain"
    );
}

#[tokio::test]
async fn graceful_shutdown_sends_disconnect_and_exits_zero() {
    let h = Herald::start().await;
    let mut a = h.user("app1", "a", json!({})).await;
    let mut b = Client::connect(&h.ws_url("apiKey=key-app1")).await;
    a.subscribe("ch").await;
    let status = h.terminate().await;
    for c in [&mut a, &mut b] {
        let d = c.expect("disconnect").await;
        assert_eq!(
            d,
            json!({"type":"disconnect","code":4005,"reason":"shutdown","reconnect":true})
        );
        assert!(c.next_frame().await.is_none());
        let close = c.closed.clone().flatten().expect("close frame");
        assert_eq!(u16::from(close.code), 4005);
    }
    assert!(status.success(), "exit status {status}");
}

#[tokio::test]
async fn presence_counts_users_once_and_announces_join_and_leave_once() {
    let h = Herald::start().await;
    let mut watcher = h.user("app1", "watcher", json!({})).await;
    watcher.subscribe("room").await;

    let mut u1a = h.user("app1", "u1", json!({})).await;
    let mut u1b = h.user("app1", "u1", json!({})).await;
    let r = u1a.subscribe("room").await;
    let ids: Vec<&str> = r["presence"]["members"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["presenceId"].as_str().unwrap())
        .collect();
    assert!(ids.contains(&"watcher") && ids.contains(&"u1"), "{ids:?}");
    let join = watcher.expect("presence:join").await;
    assert_eq!(join["member"]["presenceId"], "u1");
    assert_eq!(join["member"]["type"], "user");
    assert_eq!(join["channel"], "room");

    // A second connection of the same user: still one member, no new join.
    let r = u1b.subscribe("room").await;
    assert_eq!(r["presence"]["members"].as_array().unwrap().len(), 2);
    let p = watcher
        .ok(json!({"type":"presence","channel":"room"}))
        .await;
    assert_eq!(p["presence"]["members"].as_array().unwrap().len(), 2);

    // One connection leaves: u1 is still present.
    u1a.ok(json!({"type":"unsubscribe","channel":"room"})).await;
    // The other disconnects: now u1 leaves, once.
    drop(u1b);
    let leave = watcher.expect("presence:leave").await;
    assert_eq!(leave["member"]["presenceId"], "u1");
    let p = watcher
        .ok(json!({"type":"presence","channel":"room"}))
        .await;
    let members = p["presence"]["members"].as_array().unwrap();
    assert_eq!(members.len(), 1);
    assert_eq!(members[0]["presenceId"], "watcher");
    watcher.expect_no_event(Duration::from_millis(200)).await;
    // No second join or leave was queued for u1.
    while let Some(f) = tokio::time::timeout(Duration::from_millis(200), watcher.next_frame())
        .await
        .ok()
        .flatten()
    {
        assert!(
            f["type"] != "presence:join" && f["type"] != "presence:leave",
            "duplicate presence frame {f}"
        );
    }
}

#[tokio::test]
async fn history_reads_ranges_and_says_when_it_cannot() {
    let h = Herald::start().await;
    let mut c = h.user("app2", "u", json!({})).await;
    for n in 1..=5 {
        c.publish("log", json!(n)).await;
    }
    let r = c
        .ok(json!({"type":"history","channel":"log","limit":3}))
        .await;
    let pubs = r["publications"].as_array().unwrap();
    assert_eq!(pubs.len(), 3);
    assert_eq!(pubs[0]["payload"], 1);
    assert_eq!(pubs[0]["meta"]["offset"], 1);
    assert_eq!(r["offset"], 5);
    let epoch = r["epoch"].as_str().unwrap().to_owned();

    let r = c
        .ok(json!({"type":"history","channel":"log","since":{"epoch":epoch,"offset":3}}))
        .await;
    let offsets: Vec<u64> = r["publications"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["meta"]["offset"].as_u64().unwrap())
        .collect();
    assert_eq!(offsets, vec![4, 5]);
    assert_eq!(r["recovered"], true);

    let r = c
        .ok(json!({"type":"history","channel":"log","since":{"epoch":"other","offset":3}}))
        .await;
    assert_eq!(r["recovered"], false);
    assert_eq!(r["publications"], json!([]));

    // app1 keeps no history.
    let mut d = h.user("app1", "u", json!({})).await;
    d.subscribe("log").await;
    d.publish("log", json!(1)).await;
    let r = d.ok(json!({"type":"history","channel":"log"})).await;
    assert_eq!(r["publications"], json!([]));
}

#[tokio::test]
async fn expired_user_token_disconnects_unless_refreshed() {
    let h = Herald::start().await;
    let mut short =
        Client::connect(&h.ws_url(&format!("token={}", user_token("app1", "u", json!({}), 2))))
            .await;
    let mut refreshed =
        Client::connect(&h.ws_url(&format!("token={}", user_token("app1", "u", json!({}), 2))))
            .await;
    let fresh = user_token("app1", "u", json!({}), 3600);
    let r = refreshed.ok(json!({"type":"refresh","token":fresh})).await;
    assert!(r["expiresAt"].as_u64().unwrap() > common::now_secs() + 3000);
    refreshed
        .fails(
            json!({"type":"refresh","token":user_token("app1", "someone-else", json!({}), 3600)}),
            "UNAUTHORIZED",
        )
        .await;
    refreshed
        .fails(
            json!({"type":"refresh","token":user_token("app1", "u", json!({}), -5)}),
            "TOKEN_EXPIRED",
        )
        .await;

    let d = short.expect("disconnect").await;
    assert_eq!(d["code"], 4007);
    assert_eq!(d["reconnect"], true);
    // The refreshed connection outlived its first token.
    refreshed.subscribe("still").await;
}

#[tokio::test]
async fn metrics_count_traffic() {
    let h = Herald::start().await;
    let mut a = h.user("app1", "a", json!({})).await;
    let mut b = h.user("app1", "b", json!({})).await;
    b.subscribe("m").await;
    a.subscribe("m").await;
    for _ in 0..3 {
        a.publish("m", json!(1)).await;
    }
    for _ in 0..3 {
        b.expect("event").await;
    }
    h.post(
        "/api/v1/publish",
        "key-app1",
        json!({"channel":"m","payload":1}),
    )
    .await;
    let m = h.metrics().await;
    assert_eq!(metric(&m, "herald_connections"), 2.0);
    assert_eq!(metric(&m, "herald_channels"), 1.0);
    assert_eq!(metric(&m, "herald_subscriptions"), 2.0);
    assert_eq!(
        metric(&m, "herald_messages_published_total{surface=\"ws\"}"),
        3.0
    );
    assert_eq!(
        metric(&m, "herald_messages_published_total{surface=\"http\"}"),
        1.0
    );
    // 3 ws publishes to 2 subscribers; the http one had no context match.
    assert!(metric(&m, "herald_messages_delivered_total") >= 6.0);
    assert!(metric(&m, "herald_publish_duration_seconds_count") >= 4.0);
    let ready = reqwest::get(h.http("/readyz")).await.unwrap();
    assert_eq!(ready.status(), 200);
    let health = reqwest::get(h.http("/healthz")).await.unwrap();
    assert_eq!(health.status(), 200);
}

/// The README's quickstart: `herald serve` with no configuration prints a
/// development app's credentials, which work as printed.
#[tokio::test]
async fn quickstart_with_no_configuration() {
    let dir = tempfile::tempdir().unwrap();
    let mut child = tokio::process::Command::new(env!("CARGO_BIN_EXE_herald"))
        .args(["serve", "--listen", "127.0.0.1:0"])
        .current_dir(dir.path())
        .env_remove("HERALD_CONFIG")
        .stdout(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let mut lines = tokio::io::BufReader::new(child.stdout.take().unwrap()).lines();
    let (mut addr, mut token, mut key) = (None, None, None);
    while token.is_none() || key.is_none() || addr.is_none() {
        let line = tokio::time::timeout(Duration::from_secs(20), lines.next_line())
            .await
            .unwrap()
            .unwrap()
            .expect("banner ended early");
        if let Some(rest) = line.strip_prefix("Herald listening on http://") {
            addr = rest.split_whitespace().next().map(str::to_owned);
        }
        if let Some(rest) = line.trim().strip_prefix("user token:") {
            token = Some(rest.trim().to_owned());
        }
        if let Some(rest) = line.trim().strip_prefix("API key:") {
            key = Some(rest.trim().to_owned());
        }
    }
    let addr = addr.unwrap();
    let mut c = Client::connect(&format!("ws://{addr}/v1/ws?token={}", token.unwrap())).await;
    c.ok(json!({"type":"subscribe","channel":"news","global":true}))
        .await;
    let r = reqwest::Client::new()
        .post(format!("http://{addr}/api/v1/publish/global"))
        .header("Authorization", format!("Bearer {}", key.unwrap()))
        .json(&json!({"channel":"news","payload":{"hello":"world"}}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(c.expect("event").await["payload"], json!({"hello":"world"}));
}

#[tokio::test]
async fn command_line_tools() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("herald.toml");
    std::fs::write(&config, common::APPS).unwrap();
    let herald = env!("CARGO_BIN_EXE_herald");

    let out = std::process::Command::new(herald)
        .args(["check-config", "--config"])
        .arg(&config)
        .output()
        .unwrap();
    assert!(out.status.success());
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(stdout.contains("configuration is valid"));
    assert!(
        !stdout.contains("secret-app1"),
        "secrets must not be printed"
    );

    std::fs::write(dir.path().join("bad.toml"), "[[apps]]\nid = \"\"\n").unwrap();
    let out = std::process::Command::new(herald)
        .args(["check-config", "--config"])
        .arg(dir.path().join("bad.toml"))
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("id"));

    let out = std::process::Command::new(herald)
        .args([
            "token",
            "--app",
            "app1",
            "--sub",
            "cli-user",
            "--ctx",
            r#"{"issue":"7"}"#,
            "--config",
        ])
        .arg(&config)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let token = String::from_utf8(out.stdout).unwrap().trim().to_owned();

    // The minted token connects, and its ctx scopes its channels.
    let h = Herald::start().await;
    let mut minted = Client::connect(&h.ws_url(&format!("token={token}"))).await;
    minted.subscribe("ch").await;
    let mut same_issue = h.user("app1", "other", json!({"issue":"7"})).await;
    same_issue.publish("ch", json!("hi")).await;
    let e = minted.expect("event").await;
    assert_eq!(e["meta"]["senderId"], "other");
}

/// Clients that close cleanly are accounted for: the connection gauge goes
/// back to zero (a connection task that died on the way would leave it up).
#[tokio::test]
async fn clean_client_closes_are_counted_and_cleaned_up() {
    let h = Herald::start().await;
    let mut clients = Vec::new();
    for n in 0..5 {
        let mut c = h.user("app1", &format!("u{n}"), json!({})).await;
        c.subscribe("bye").await;
        clients.push(c);
    }
    for c in clients {
        c.close().await;
    }
    // And clients that vanish while the server is writing to them, which
    // ends the connection's writer before its reader.
    let mut publisher = h.user("app1", "p", json!({})).await;
    for n in 0..5 {
        let mut c = h.user("app1", &format!("v{n}"), json!({})).await;
        c.subscribe("bye").await;
        let pad = "x".repeat(16 * 1024);
        for _ in 0..20 {
            publisher.publish("bye", json!({"pad": pad})).await;
        }
        if n % 2 == 0 {
            drop(c);
        } else {
            c.close_and_leave().await;
        }
    }
    for _ in 0..50 {
        publisher.publish("bye", json!(0)).await;
    }
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    loop {
        let m = h.metrics().await;
        if metric(&m, "herald_connections") == 1.0 && metric(&m, "herald_subscriptions") == 0.0 {
            assert_eq!(
                metric(&m, "herald_disconnects_total{reason=\"client\"}"),
                10.0
            );
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "connections not cleaned up: {m}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test]
async fn write_delay_holds_every_write_back_and_loses_nothing() {
    let h = Herald::start_with("write_delay_ms = 300").await;
    let mut sub = h.user("app1", "sub", json!({})).await;
    // The reply waits the delay in the writer before it is written.
    let started = std::time::Instant::now();
    sub.subscribe("batched").await;
    assert!(started.elapsed() >= Duration::from_millis(300));
    let mut publisher = h.user("app1", "pub", json!({})).await;
    for n in 1..=6 {
        publisher.publish("batched", json!(n)).await;
    }
    for n in 1..=6 {
        assert_eq!(sub.expect("event").await["payload"], n);
    }
}
