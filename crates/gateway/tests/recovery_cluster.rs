//! History and recovery across a cluster: a subscriber whose gateway dies
//! reconnects elsewhere and gets exactly what it missed.

mod common;

use common::redis::RedisServer;
use common::{user_token, Herald};
use herald_client::{ClientConfig, Event, SubscribeOptions};
use serde_json::json;
use std::time::Duration;

async fn gateways(url: &str) -> Vec<Herald> {
    let mut out = Vec::new();
    for _ in 0..3 {
        out.push(Herald::start_clustered(url, "").await);
    }
    out
}

#[tokio::test]
async fn sdk_subscriber_survives_its_gateway_being_killed_with_nothing_lost_or_doubled() {
    const TOTAL: u64 = 10_000;
    let redis = RedisServer::start();
    let mut g = gateways(&redis.url()).await;
    let urls = [g[1].ws_url(""), g[2].ws_url("")];
    let config = ClientConfig::new(urls, user_token("deep", "sub", json!({}), 3600));
    let (client, mut events) = herald_client::connect(config).await.unwrap();
    client
        .subscribe("ticker", SubscribeOptions::default())
        .await
        .unwrap();

    let mut publisher = g[0].user("deep", "pub", json!({})).await;
    let victim = g.remove(1);
    let publishing = tokio::spawn(async move {
        let mut victim = Some(victim);
        let mut pace = tokio::time::interval(Duration::from_micros(250));
        for n in 1..=TOTAL {
            pace.tick().await;
            publisher.publish("ticker", json!({"n": n})).await;
            if n == TOTAL / 3 {
                // The subscriber's gateway dies mid-stream.
                if let Some(v) = victim.take() {
                    v.kill().await;
                }
            }
        }
    });

    let mut offsets = Vec::with_capacity(TOTAL as usize);
    let mut disconnected = false;
    let mut recovered = None;
    while (offsets.len() as u64) < TOTAL {
        let event = tokio::time::timeout(Duration::from_secs(30), events.recv())
            .await
            .expect("events stopped")
            .expect("client ended");
        match event {
            Event::Publication(p) => {
                assert_eq!(p.payload["n"], p.meta.offset, "payload and offset disagree");
                offsets.push(p.meta.offset);
            }
            Event::Disconnected { .. } => disconnected = true,
            Event::Resubscribed { recovered: r, .. } => recovered = Some(r),
            _ => {}
        }
    }
    publishing.await.unwrap();
    assert!(disconnected, "the subscriber never noticed its gateway die");
    assert_eq!(
        recovered,
        Some(true),
        "the reconnect did not recover the gap"
    );
    let expected: Vec<u64> = (1..=TOTAL).collect();
    assert!(offsets == expected, "events lost, doubled or out of order");
    client.close();
}

#[tokio::test]
async fn recovery_across_gateways_says_plainly_when_it_cannot() {
    let redis = RedisServer::start();
    let g = gateways(&redis.url()).await;
    let mut publisher = g[0].user("app2", "p", json!({})).await;

    // Missed more than app2 keeps (50): not recovered, nothing replayed.
    let mut s = g[1].user("app2", "s", json!({})).await;
    let r = s.subscribe("kept").await;
    let epoch = r["epoch"].as_str().unwrap().to_owned();
    drop(s);
    for n in 1..=60 {
        publisher.publish("kept", json!(n)).await;
    }
    let mut back = g[2].user("app2", "s", json!({})).await;
    let r = back
        .ok(json!({"type":"subscribe","channel":"kept","since":{"epoch":epoch,"offset":0}}))
        .await;
    assert_eq!(r["recovered"], false);
    assert!(r.get("publications").is_none());
    assert_eq!(r["offset"], 60);

    // Within what is kept: exactly the missed range, from another gateway.
    let r = back
        .ok(json!({"type":"subscribe","channel":"kept","since":{"epoch":epoch,"offset":55}}))
        .await;
    assert_eq!(r["recovered"], true);
    let offsets: Vec<u64> = r["publications"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["meta"]["offset"].as_u64().unwrap())
        .collect();
    assert_eq!(offsets, vec![56, 57, 58, 59, 60]);

    // Redis flushed: the epoch changes and recovery says so.
    redis.cli(&["flushall"]);
    publisher.publish("kept", json!("after flush")).await;
    let mut again = g[1].user("app2", "s2", json!({})).await;
    let r = again
        .ok(json!({"type":"subscribe","channel":"kept","since":{"epoch":epoch,"offset":60}}))
        .await;
    assert_eq!(r["recovered"], false);
    assert_ne!(
        r["epoch"],
        epoch.as_str(),
        "the epoch must change when history is lost"
    );
    assert_eq!(r["offset"], 1);
}

#[tokio::test]
async fn replay_seconds_across_gateways() {
    let redis = RedisServer::start();
    let g = gateways(&redis.url()).await;
    let mut publisher = g[0].user("app2", "p", json!({})).await;
    publisher.publish("w", json!("old")).await;
    tokio::time::sleep(Duration::from_millis(2200)).await;
    publisher.publish("w", json!("new1")).await;
    publisher.publish("w", json!("new2")).await;
    let mut c = g[1].user("app2", "s", json!({})).await;
    let r = c
        .ok(json!({"type":"subscribe","channel":"w","replaySeconds":1}))
        .await;
    let payloads: Vec<&serde_json::Value> = r["publications"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| &p["payload"])
        .collect();
    assert_eq!(payloads, vec![&json!("new1"), &json!("new2")]);
}

/// A key is the sender's: one user's two connections on two gateways
/// publish once; the app's backend, from any gateway, publishes once under
/// its own scope.
#[tokio::test]
async fn idempotent_publish_from_two_gateways_is_one_event() {
    let redis = RedisServer::start();
    let g = gateways(&redis.url()).await;
    let mut sub = g[2].user("app1", "s", json!({})).await;
    sub.subscribe("once").await;
    let mut a = g[0].user("app1", "a", json!({})).await;
    let mut b = g[1].user("app1", "a", json!({})).await;
    let frame =
        json!({"type":"publish","channel":"once","payload":"x","idempotencyKey":"order-42"});
    let first = a.ok(frame.clone()).await;
    let second = b.ok(frame.clone()).await;
    assert!(first["eventId"].is_string());
    assert_eq!(first["eventId"], second["eventId"]);
    assert_eq!(first["eventTimestamp"], second["eventTimestamp"]);
    assert_eq!(sub.expect("event").await["payload"], "x");
    sub.expect_no_event(Duration::from_millis(500)).await;
    // The server API, from two gateways: once, apart from the user's.
    let body = json!({"channel":"once","payload":"z","options":{"idempotencyKey":"order-42"}});
    let (_, third, _) = g[1].post("/api/v1/publish", "key-app1", body.clone()).await;
    let (_, fourth, _) = g[0].post("/api/v1/publish", "key-app1", body).await;
    assert!(third["eventId"].is_string());
    assert_ne!(third["eventId"], first["eventId"]);
    assert_eq!(fourth["eventId"], third["eventId"]);
    assert_eq!(sub.expect("event").await["payload"], "z");
    sub.expect_no_event(Duration::from_millis(500)).await;
    // Another key publishes.
    a.ok(json!({"type":"publish","channel":"once","payload":"y","idempotencyKey":"order-43"}))
        .await;
    assert_eq!(sub.expect("event").await["payload"], "y");
}
