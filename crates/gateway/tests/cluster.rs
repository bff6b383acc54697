//! Three gateways, one broker: Redis standalone and Redis Cluster.

mod common;

use common::redis::{RedisCluster, RedisServer};
use common::{Client, Herald};
use serde_json::{json, Value};
use std::time::Duration;

const QUIET: Duration = Duration::from_millis(400);

async fn gateways(url: &str, extra: &str) -> Vec<Herald> {
    let mut out = Vec::new();
    for _ in 0..3 {
        out.push(Herald::start_clustered(url, extra).await);
    }
    out
}

/// A publish on one gateway reaches the subscribers on the others once
/// each, in order, with contiguous offsets.
async fn fan_out_across_gateways(url: &str) {
    let g = gateways(url, "").await;
    let mut subs = Vec::new();
    for gw in &g[1..] {
        let mut c = gw.user("app1", "sub", json!({"issue":"1"})).await;
        c.subscribe("orders").await;
        subs.push(c);
    }
    let mut publisher = g[0].user("app1", "pub", json!({"issue":"1"})).await;
    for n in 0..100 {
        let r = publisher.publish("orders", json!(n)).await;
        assert!(r["eventId"].is_string(), "{r}");
    }
    let (status, body, _) = g[0]
        .post(
            "/api/v1/publish",
            "key-app1",
            json!({"channel":"orders","payload":"api","context":{"issue":"1"}}),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    for c in &mut subs {
        let mut last = None;
        for n in 0..101 {
            let e = c.expect("event").await;
            let expected = if n < 100 { json!(n) } else { json!("api") };
            assert_eq!(e["payload"], expected);
            let offset = e["meta"]["offset"].as_u64().unwrap();
            if let Some(last) = last {
                assert_eq!(offset, last + 1, "offsets must be contiguous");
            }
            last = Some(offset);
        }
        c.expect_no_event(QUIET).await;
    }
}

#[tokio::test]
async fn publish_reaches_every_gateway_on_standalone_redis() {
    let redis = RedisServer::start();
    fan_out_across_gateways(&redis.url()).await;
}

#[tokio::test]
async fn publish_reaches_every_gateway_on_redis_cluster() {
    let cluster = RedisCluster::start();
    fan_out_across_gateways(&cluster.url()).await;
}
