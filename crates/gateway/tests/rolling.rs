//! A rolling restart rehearsed on loopback, as Kubernetes does one: three
//! gateways over Redis are stopped one at a time with SIGTERM and started
//! again at the same address, while Rust SDK subscribers spread over them
//! stream publications. Nothing is lost, doubled or reordered, and every
//! client is back within the shutdown grace period.

mod common;

use common::redis::RedisServer;
use common::{user_token, Herald};
use herald_client::{ClientConfig, Event, SubscribeOptions};
use serde_json::json;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

const SUBSCRIBERS: usize = 30;
/// `shutdown_grace_ms` of the gateways.
const GRACE: Duration = Duration::from_secs(5);

#[tokio::test(flavor = "multi_thread")]
async fn a_rolling_restart_loses_nothing_and_every_client_comes_back() {
    let redis = RedisServer::start();
    let settings = format!("shutdown_grace_ms = {}", GRACE.as_millis());
    let mut gateways = Vec::new();
    for _ in 0..3 {
        gateways.push(Herald::start_clustered(&redis.url(), &settings).await);
    }
    for g in &gateways {
        g.wait_ready(Duration::from_secs(10)).await;
    }
    let addrs: Vec<String> = gateways.iter().map(|g| g.addr.clone()).collect();

    // Subscribers start on different gateways and know all three; each
    // is read as it streams, so reconnect times are real.
    let stop = Arc::new(AtomicBool::new(false));
    let accepted = Arc::new(AtomicU64::new(0));
    let mut readers = Vec::new();
    for i in 0..SUBSCRIBERS {
        let mut urls: Vec<String> = addrs.iter().map(|a| format!("ws://{a}/v1/ws")).collect();
        urls.rotate_left(i % 3);
        let config = ClientConfig::new(urls, user_token("deep", &format!("s{i}"), json!({}), 3600));
        let (client, mut events) = herald_client::connect(config).await.unwrap();
        client
            .subscribe("rolling", SubscribeOptions::global())
            .await
            .unwrap();
        let (stop, accepted) = (Arc::clone(&stop), Arc::clone(&accepted));
        readers.push(tokio::spawn(async move {
            let mut seen = Vec::new();
            let mut down_since: Option<Instant> = None;
            let mut slowest = Duration::ZERO;
            let mut reconnects = 0;
            let mut last = Instant::now();
            loop {
                if stop.load(Ordering::Relaxed)
                    && seen.len() as u64 >= accepted.load(Ordering::Relaxed)
                {
                    break;
                }
                // Short waits, so the end (known only once the publisher
                // stops) is noticed; a stall of 30 s is a failure.
                let wait = Duration::from_millis(200);
                let event = match tokio::time::timeout(wait, events.recv()).await {
                    Ok(Some(event)) => {
                        last = Instant::now();
                        event
                    }
                    Ok(None) => panic!("subscriber {i}: client ended at {}", seen.len()),
                    Err(_) if last.elapsed() > Duration::from_secs(30) => {
                        panic!("subscriber {i} stopped at {}", seen.len())
                    }
                    Err(_) => continue,
                };
                match event {
                    Event::Publication(p) => seen.push(p.payload["n"].as_u64().unwrap()),
                    Event::Disconnected { .. } => down_since = down_since.or(Some(Instant::now())),
                    Event::Resubscribed { recovered, .. } => {
                        assert!(recovered, "subscriber {i}: a reconnect did not recover");
                        if let Some(since) = down_since.take() {
                            slowest = slowest.max(since.elapsed());
                            reconnects += 1;
                        }
                    }
                    _ => {}
                }
            }
            client.close();
            (seen, slowest, reconnects)
        }));
    }

    // The backend publishes through whichever gateway answers.
    let publisher = {
        let (stop, accepted, addrs) = (Arc::clone(&stop), Arc::clone(&accepted), addrs.clone());
        tokio::spawn(async move {
            let http = reqwest::Client::new();
            let mut n = 0u64;
            let mut at = 0;
            while !stop.load(Ordering::Relaxed) {
                // Idempotent: a request that timed out after the publish
                // was taken is not published twice when repeated.
                let body = json!({
                    "channel": "rolling",
                    "payload": {"n": n + 1},
                    "options": {"idempotencyKey": format!("n-{}", n + 1)},
                });
                let sent = http
                    .post(format!("http://{}/api/v1/publish/global", addrs[at % 3]))
                    .header("x-api-key", "key-deep")
                    .json(&body)
                    .timeout(Duration::from_secs(2))
                    .send()
                    .await;
                match sent {
                    Ok(r) if r.status() == 200 => {
                        n += 1;
                        accepted.store(n, Ordering::Relaxed);
                    }
                    // Refused (shutting down) or unreachable: try the next
                    // gateway with the same publication.
                    _ => at += 1,
                }
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
        })
    };

    // Each gateway in turn: SIGTERM, exit, start again at its address.
    tokio::time::sleep(Duration::from_millis(500)).await;
    for i in 0..3 {
        let g = gateways.remove(i);
        let restarted = g.restart().await;
        restarted.wait_ready(Duration::from_secs(10)).await;
        gateways.insert(i, restarted);
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    stop.store(true, Ordering::Relaxed);
    publisher.await.unwrap();
    let total = accepted.load(Ordering::Relaxed);
    assert!(total > 100, "only {total} publications accepted");

    // Every subscriber ends with every publication once, in order, and
    // every reconnect took less than the grace period.
    let mut slowest = Duration::ZERO;
    let mut reconnects = 0;
    for (i, reader) in readers.into_iter().enumerate() {
        let (seen, slow, n) = reader.await.unwrap();
        let expected: Vec<u64> = (1..=total).collect();
        assert!(
            seen == expected,
            "subscriber {i}: lost, doubled or reordered"
        );
        slowest = slowest.max(slow);
        reconnects += n;
    }
    assert!(reconnects >= SUBSCRIBERS, "only {reconnects} reconnects");
    assert!(slowest < GRACE, "a client took {slowest:?} to come back");
    println!("{total} publications; {reconnects} reconnects, slowest {slowest:?}");
}
