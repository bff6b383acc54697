//! Recovery on subscribe in embedded mode: `since` and `replaySeconds`.

mod common;

use common::Herald;
use serde_json::{json, Value};
use std::time::Duration;

fn offsets(frames: &[Value]) -> Vec<u64> {
    frames
        .iter()
        .map(|e| e["meta"]["offset"].as_u64().unwrap())
        .collect()
}

#[tokio::test]
async fn reconnect_with_since_gets_exactly_what_was_missed() {
    let h = Herald::start().await;
    let mut publisher = h.user("app2", "p", json!({})).await;
    let mut sub = h.user("app2", "s", json!({})).await;
    let r = sub.subscribe("feed").await;
    let epoch = r["epoch"].as_str().unwrap().to_owned();
    for n in 1..=3 {
        publisher.publish("feed", json!(n)).await;
    }
    let mut last = 0;
    for _ in 0..3 {
        last = sub.expect("event").await["meta"]["offset"]
            .as_u64()
            .unwrap();
    }
    drop(sub);
    for n in 4..=7 {
        publisher.publish("feed", json!(n)).await;
    }
    let mut back = h.user("app2", "s", json!({})).await;
    let r = back
        .ok(json!({"type":"subscribe","channel":"feed","since":{"epoch":epoch,"offset":last}}))
        .await;
    assert_eq!(r["recovered"], true);
    let replayed = r["publications"].as_array().unwrap().clone();
    assert_eq!(offsets(&replayed), vec![4, 5, 6, 7]);
    assert_eq!(replayed[0]["payload"], 4);
    assert_eq!(r["offset"], 7);
    publisher.publish("feed", json!(8)).await;
    assert_eq!(back.expect("event").await["meta"]["offset"], 8);
}

#[tokio::test]
async fn recovery_under_concurrent_publishing_has_no_gap_and_no_duplicate() {
    let h = Herald::start().await;
    let mut publisher = h.user("deep", "p", json!({})).await;
    publisher.publish("busy", json!(0)).await;
    let publishing = tokio::spawn(async move {
        for n in 1..=3000 {
            publisher.publish("busy", json!(n)).await;
        }
    });
    // Join repeatedly while publishes keep arriving; every join must
    // continue exactly where its reply left off.
    let mut position: Option<(String, u64)> = None;
    let mut joins = 0;
    while !publishing.is_finished() && joins < 200 {
        joins += 1;
        let mut c = h.user("deep", "s", json!({})).await;
        let mut request = json!({"type":"subscribe","channel":"busy"});
        if let Some((epoch, offset)) = &position {
            request["since"] = json!({"epoch": epoch, "offset": offset});
        }
        let r = c.ok(request).await;
        let mut seen = match &position {
            Some((_, offset)) => {
                assert_eq!(r["recovered"], true, "{r}");
                let replayed = offsets(
                    r["publications"]
                        .as_array()
                        .map(Vec::as_slice)
                        .unwrap_or(&[]),
                );
                let expected: Vec<u64> = (offset + 1..=r["offset"].as_u64().unwrap()).collect();
                assert_eq!(
                    replayed, expected,
                    "replay must be exactly the missed range"
                );
                r["offset"].as_u64().unwrap()
            }
            None => r["offset"].as_u64().unwrap(),
        };
        // Read a few live events: they continue from the reply.
        for _ in 0..5 {
            match tokio::time::timeout(Duration::from_secs(2), c.expect("event")).await {
                Ok(e) => {
                    let offset = e["meta"]["offset"].as_u64().unwrap();
                    assert_eq!(offset, seen + 1, "gap or duplicate after the reply");
                    seen = offset;
                }
                Err(_) => break,
            }
        }
        position = Some((r["epoch"].as_str().unwrap().to_owned(), seen));
    }
    assert!(joins >= 5, "only {joins} joins overlapped the publishing");
    publishing.await.unwrap();
}

#[tokio::test]
async fn a_gap_longer_than_history_is_not_recovered() {
    let h = Herald::start().await;
    let mut publisher = h.user("app2", "p", json!({})).await;
    let mut sub = h.user("app2", "s", json!({})).await;
    let r = sub.subscribe("long").await;
    let epoch = r["epoch"].as_str().unwrap().to_owned();
    drop(sub);
    // app2 keeps 50 publications; 60 are published while away.
    for n in 1..=60 {
        publisher.publish("long", json!(n)).await;
    }
    let mut back = h.user("app2", "s", json!({})).await;
    let r = back
        .ok(json!({"type":"subscribe","channel":"long","since":{"epoch":epoch,"offset":0}}))
        .await;
    assert_eq!(r["recovered"], false);
    assert!(
        r.get("publications").is_none(),
        "nothing partial is replayed: {r}"
    );
    assert_eq!(r["offset"], 60);

    let r = back
        .ok(json!({"type":"subscribe","channel":"long","since":{"epoch":"no-such-epoch","offset":3}}))
        .await;
    assert_eq!(r["recovered"], false);
}

#[tokio::test]
async fn replay_seconds_returns_the_window() {
    let h = Herald::start().await;
    let mut publisher = h.user("app2", "p", json!({})).await;
    publisher.publish("w", json!("old")).await;
    tokio::time::sleep(Duration::from_millis(2200)).await;
    publisher.publish("w", json!("new1")).await;
    publisher.publish("w", json!("new2")).await;
    let mut c = h.user("app2", "s", json!({})).await;
    let r = c
        .ok(json!({"type":"subscribe","channel":"w","replaySeconds":1}))
        .await;
    let payloads: Vec<&Value> = r["publications"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| &p["payload"])
        .collect();
    assert_eq!(payloads, vec![&json!("new1"), &json!("new2")]);
    let mut d = h.user("app2", "t", json!({})).await;
    let r = d
        .ok(json!({"type":"subscribe","channel":"w","replaySeconds":60}))
        .await;
    assert_eq!(r["publications"].as_array().unwrap().len(), 3);
}

#[tokio::test]
async fn idempotent_publish_in_embedded_mode() {
    let h = Herald::start().await;
    let mut sub = h.user("app1", "s", json!({})).await;
    sub.subscribe("once").await;
    let mut p = h.user("app1", "p", json!({})).await;
    let frame = json!({"type":"publish","channel":"once","payload":1,"idempotencyKey":"k"});
    let first = p.ok(frame.clone()).await;
    let second = p.ok(frame).await;
    assert_eq!(first["eventId"], second["eventId"]);
    assert_eq!(sub.expect("event").await["payload"], 1);
    sub.expect_no_event(Duration::from_millis(300)).await;
    let long = "k".repeat(200);
    p.fails(
        json!({"type":"publish","channel":"once","payload":1,"idempotencyKey":long}),
        "REALTIME_INVALID_CHANNEL_REQUEST",
    )
    .await;
}
