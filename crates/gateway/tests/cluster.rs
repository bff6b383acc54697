//! Three gateways, one broker: Redis standalone and Redis Cluster.

mod common;

use common::redis::{RedisCluster, RedisServer};
use common::Herald;
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

/// Topics the gateways are subscribed to, with how many subscriber
/// connections each has, on standalone Redis (probe topics left out).
fn channel_topics(redis: &RedisServer) -> Vec<(String, u64)> {
    let topics: Vec<String> = redis
        .cli(&["pubsub", "channels", "herald:*:t"])
        .lines()
        .filter(|t| !t.contains("{probe:") && !t.is_empty())
        .map(str::to_owned)
        .collect();
    topics
        .into_iter()
        .map(|t| {
            let out = redis.cli(&["pubsub", "numsub", &t]);
            let count = out
                .lines()
                .nth(1)
                .and_then(|n| n.trim().parse().ok())
                .unwrap_or(0);
            (t, count)
        })
        .collect()
}

#[tokio::test]
async fn only_gateways_with_subscribers_receive_a_channel() {
    let redis = RedisServer::start();
    let g = gateways(&redis.url(), "").await;
    assert!(channel_topics(&redis).is_empty());
    let mut a = g[0].user("app1", "a", json!({})).await;
    a.subscribe("interest").await;
    let topics = channel_topics(&redis);
    assert_eq!(topics.len(), 1, "{topics:?}");
    assert_eq!(topics[0].1, 1, "only gateway 0 listens");
    // Two more subscribers on gateway 1: still one subscription per gateway.
    let mut b = g[1].user("app1", "b", json!({})).await;
    let mut b2 = g[1].user("app1", "b2", json!({})).await;
    b.subscribe("interest").await;
    b2.subscribe("interest").await;
    assert_eq!(channel_topics(&redis)[0].1, 2);
    // Gateway 2 has no subscriber: it is not subscribed and its fan-out
    // delivered nothing.
    let mut p = g[2].user("app1", "p", json!({})).await;
    p.publish("interest", json!(1)).await;
    for c in [&mut a, &mut b, &mut b2] {
        c.expect("event").await;
    }
    let m = g[2].metrics().await;
    assert!(
        m.contains("herald_messages_delivered_total 0"),
        "gateway 2 delivered: {m}"
    );
    // The last subscriber leaving a gateway unsubscribes it.
    b.ok(json!({"type":"unsubscribe","channel":"interest"}))
        .await;
    assert_eq!(channel_topics(&redis)[0].1, 2);
    drop(b2);
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    while channel_topics(&redis)[0].1 != 1 {
        assert!(
            tokio::time::Instant::now() < deadline,
            "gateway 1 stayed subscribed"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // The unsubscribe reply does not wait for Redis' UNSUBSCRIBE (a stray
    // publication meanwhile finds no local subscriber); it follows shortly.
    a.ok(json!({"type":"unsubscribe","channel":"interest"}))
        .await;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    while !channel_topics(&redis).is_empty() {
        assert!(
            tokio::time::Instant::now() < deadline,
            "gateway 0 stayed subscribed"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test]
async fn only_interested_shards_carry_a_channel_on_redis_cluster() {
    let cluster = RedisCluster::start();
    let g = gateways(&cluster.url(), "").await;
    let mut a = g[0].user("app1", "a", json!({})).await;
    a.subscribe("sharded").await;
    let shard_topics = |cluster: &RedisCluster| -> Vec<(String, u64)> {
        let mut out = Vec::new();
        for node in &cluster.nodes {
            for t in node.cli(&["pubsub", "shardchannels", "herald:*:t"]).lines() {
                if t.is_empty() || t.contains("{probe:") {
                    continue;
                }
                let n = node.cli(&["pubsub", "shardnumsub", t]);
                let count = n
                    .lines()
                    .nth(1)
                    .and_then(|c| c.trim().parse().ok())
                    .unwrap_or(0);
                out.push((t.to_owned(), count));
            }
        }
        out
    };
    let topics = shard_topics(&cluster);
    assert_eq!(topics.len(), 1, "{topics:?}");
    assert_eq!(topics[0].1, 1);
    let mut p = g[1].user("app1", "p", json!({})).await;
    p.publish("sharded", json!("x")).await;
    assert_eq!(a.expect("event").await["payload"], "x");
    let m = g[2].metrics().await;
    assert!(m.contains("herald_messages_delivered_total 0"));
}

/// The reply to a subscribe means the gateway receives: a publish from
/// another gateway right after it is never lost.
async fn subscribe_then_publish_never_loses_the_first(url: &str, rounds: usize) {
    let g = gateways(url, "").await;
    let mut sub = g[1].user("app1", "s", json!({})).await;
    for n in 0..rounds {
        // A new channel each round, so each subscribe is a new Redis
        // subscription.
        let channel = format!("race-{n}");
        sub.subscribe(&channel).await;
        let (status, body, _) = g[0]
            .post(
                "/api/v1/publish",
                "key-app1",
                json!({"channel":channel,"payload":n}),
            )
            .await;
        assert_eq!(status, 200);
        assert!(
            body["eventId"].is_string(),
            "round {n}: the publish found no listener"
        );
        let e = sub.expect("event").await;
        assert_eq!(e["channel"], channel.as_str());
        assert_eq!(e["payload"], n);
        sub.ok(json!({"type":"unsubscribe","channel":channel}))
            .await;
    }
}

#[tokio::test]
async fn subscribe_then_immediate_publish_from_another_gateway_is_never_lost() {
    let redis = RedisServer::start();
    subscribe_then_publish_never_loses_the_first(&redis.url(), 200).await;
}

#[tokio::test]
async fn subscribe_then_immediate_publish_is_never_lost_on_redis_cluster() {
    let cluster = RedisCluster::start();
    subscribe_then_publish_never_loses_the_first(&cluster.url(), 100).await;
}

#[tokio::test]
async fn presence_is_cluster_wide_and_a_dead_gateways_members_leave() {
    let redis = RedisServer::start();
    let mut g = gateways(&redis.url(), "presence_ttl_seconds = 3").await;
    let mut watcher = g[0].user("app1", "watcher", json!({})).await;
    watcher.subscribe("room").await;

    // The same user on gateways 1 and 2 is one member, announced once.
    let mut u1 = g[1].user("app1", "u", json!({})).await;
    let mut u2 = g[2].user("app1", "u", json!({})).await;
    let r = u1.subscribe("room").await;
    assert_eq!(r["presence"]["members"].as_array().unwrap().len(), 2, "{r}");
    let r = u2.subscribe("room").await;
    assert_eq!(r["presence"]["members"].as_array().unwrap().len(), 2, "{r}");
    let join = watcher.expect("presence:join").await;
    assert_eq!(join["member"]["presenceId"], "u");
    let p = watcher
        .ok(json!({"type":"presence","channel":"room"}))
        .await;
    assert_eq!(p["presence"]["members"].as_array().unwrap().len(), 2);

    // One of its connections leaves: no leave yet.
    u1.ok(json!({"type":"unsubscribe","channel":"room"})).await;
    // A second user, only on gateway 2.
    let mut only2 = g[2].user("app1", "only2", json!({})).await;
    only2.subscribe("room").await;
    assert_eq!(
        watcher.expect("presence:join").await["member"]["presenceId"],
        "only2"
    );

    // Gateway 2 dies without a word: both its members leave within the TTL
    // and a little sweeping.
    let dead = g.remove(2);
    drop(u2);
    drop(only2);
    let started = tokio::time::Instant::now();
    dead.kill().await;
    let mut left = Vec::new();
    while left.len() < 2 {
        let f = tokio::time::timeout(Duration::from_secs(10), watcher.expect("presence:leave"))
            .await
            .expect("no leave within 10 s");
        left.push(f["member"]["presenceId"].as_str().unwrap().to_owned());
    }
    left.sort();
    assert_eq!(left, vec!["only2", "u"]);
    assert!(
        started.elapsed() < Duration::from_secs(8),
        "leaves took {:?}",
        started.elapsed()
    );
    let p = watcher
        .ok(json!({"type":"presence","channel":"room"}))
        .await;
    let members: Vec<&Value> = p["presence"]["members"]
        .as_array()
        .unwrap()
        .iter()
        .collect();
    assert_eq!(members.len(), 1, "{members:?}");
    // Each leave was announced once.
    watcher.expect_no_event(Duration::from_secs(2)).await;
    let mut extra = 0;
    while let Ok(Some(f)) =
        tokio::time::timeout(Duration::from_millis(100), watcher.next_frame()).await
    {
        if f["type"] == "presence:leave" {
            extra += 1;
        }
    }
    assert_eq!(extra, 0, "a leave was announced twice");
}

#[tokio::test]
async fn gateways_recover_after_redis_restarts() {
    let mut redis = RedisServer::start();
    let g = gateways(&redis.url(), "").await;
    let mut sub = g[1].user("app1", "s", json!({})).await;
    sub.subscribe("resilient").await;
    let mut publisher = g[0].user("app1", "p", json!({})).await;
    publisher.publish("resilient", json!("before")).await;
    assert_eq!(sub.expect("event").await["payload"], "before");

    redis.kill();
    // Publishing cannot reach Redis: it fails plainly.
    publisher
        .fails(
            json!({"type":"publish","channel":"resilient","payload":"lost"}),
            "PUBLISH_FAILED",
        )
        .await;
    let (status, body, _) = g[0]
        .post(
            "/api/v1/publish",
            "key-app1",
            json!({"channel":"resilient","payload":"lost"}),
        )
        .await;
    assert_eq!(status, 500);
    assert_eq!(body["errors"][0]["code"], "PUBLISH_FAILED");
    // Readiness reports the outage.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        let r = reqwest::get(g[1].http("/readyz")).await.unwrap();
        if r.status() == 503 {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "readyz never reported the outage"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }

    redis.restart();
    for gw in &g {
        gw.wait_ready(Duration::from_secs(20)).await;
    }
    // The same client connections, no client action: delivery works again.
    publisher.publish("resilient", json!("after")).await;
    let e = sub.expect("event").await;
    assert_eq!(e["payload"], "after");
    let m = g[1].metrics().await;
    assert!(m.contains("herald_backplane_ready 1"));
}

#[tokio::test]
async fn forge_semantics_hold_across_gateways() {
    let redis = RedisServer::start();
    let g = gateways(&redis.url(), "").await;
    let token_a = g[0]
        .channel_token("app1", "room", json!({"room":"a"}), None)
        .await;
    let token_b = g[1]
        .channel_token("app1", "room", json!({"room":"b"}), None)
        .await;

    let mut scoped = g[1].user("app1", "s", json!({"issue":"1"})).await;
    let mut other_issue = g[2].user("app1", "o", json!({"issue":"2"})).await;
    let mut global = g[2].user("app1", "g", json!({"issue":"1"})).await;
    let mut with_a = g[1].user("app1", "ta", json!({})).await;
    let mut with_b = g[2].user("app1", "tb", json!({})).await;
    let mut app2 = g[1].user("app2", "x", json!({"issue":"1"})).await;
    scoped.subscribe("news").await;
    other_issue.subscribe("news").await;
    global
        .ok(json!({"type":"subscribe","channel":"news","global":true}))
        .await;
    with_a
        .ok(json!({"type":"subscribe","channel":"room","token":token_a}))
        .await;
    with_b
        .ok(json!({"type":"subscribe","channel":"room","token":token_b}))
        .await;
    app2.subscribe("news").await;

    let mut p = g[0].user("app1", "p", json!({"issue":"1"})).await;
    p.publish("news", json!("scoped")).await;
    assert_eq!(scoped.expect("event").await["payload"], "scoped");
    p.ok(json!({"type":"publish","channel":"news","global":true,"payload":"global"}))
        .await;
    assert_eq!(global.expect("event").await["payload"], "global");
    // Token holders have no context here, so their publisher has none either.
    let mut p2 = g[0].user("app1", "p2", json!({})).await;
    p2.ok(json!({"type":"publish","channel":"room","token":token_a,"payload":"a"}))
        .await;
    assert_eq!(with_a.expect("event").await["payload"], "a");
    for c in [
        &mut scoped,
        &mut other_issue,
        &mut global,
        &mut with_b,
        &mut app2,
    ] {
        c.expect_no_event(QUIET).await;
    }
}

/// The addresses `GET /api/v1/nodes` lists (asserting a 200).
async fn listed_addresses(gateway: &Herald) -> Vec<String> {
    let response = reqwest::Client::new()
        .get(gateway.http("/api/v1/nodes"))
        .header("X-API-Key", "key-app1")
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    let body: Value = response.json().await.unwrap();
    body["nodes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|n| n["address"].as_str().unwrap().to_owned())
        .collect()
}

#[tokio::test]
async fn nodes_are_listed_and_event_id_is_null_without_listeners() {
    let redis = RedisServer::start();
    let g = gateways(&redis.url(), "").await;
    let _c = g[2].user("app1", "u", json!({})).await;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    let mut addresses = listed_addresses(&g[0]).await;
    while addresses.len() < 3 && tokio::time::Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(200)).await;
        addresses = listed_addresses(&g[0]).await;
    }
    for gw in &g {
        assert!(
            addresses.contains(&gw.addr),
            "{addresses:?} lacks {}",
            gw.addr
        );
    }
    let status = reqwest::get(g[0].http("/api/v1/nodes"))
        .await
        .unwrap()
        .status();
    assert_eq!(status, 401);

    // app1 keeps no history: with no subscriber on any gateway, no event.
    let (_, r, _) = g[0]
        .post(
            "/api/v1/publish/global",
            "key-app1",
            json!({"channel":"void","payload":1}),
        )
        .await;
    assert_eq!(r["eventId"], Value::Null);
    // A subscriber on another gateway makes it count.
    let mut s = g[1].user("app1", "s", json!({})).await;
    s.ok(json!({"type":"subscribe","channel":"void","global":true}))
        .await;
    let (_, r, _) = g[0]
        .post(
            "/api/v1/publish/global",
            "key-app1",
            json!({"channel":"void","payload":2}),
        )
        .await;
    assert!(r["eventId"].is_string());
    assert_eq!(s.expect("event").await["payload"], 2);
}

/// Shutdown stops the registry heartbeat before deregistering, so a
/// stopped gateway leaves the list at once and does not come back.
#[tokio::test]
async fn a_stopped_gateway_leaves_the_registry_and_stays_gone() {
    let redis = RedisServer::start();
    let mut g = gateways(&redis.url(), "").await;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while listed_addresses(&g[0]).await.len() < 3 {
        assert!(
            tokio::time::Instant::now() < deadline,
            "gateways never listed"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let stopped = g.pop().unwrap();
    let address = stopped.addr.clone();
    assert!(stopped.terminate().await.success());
    assert!(!listed_addresses(&g[0]).await.contains(&address));
    // Past a heartbeat (2 s): still gone.
    tokio::time::sleep(Duration::from_secs(3)).await;
    let listed = listed_addresses(&g[0]).await;
    assert_eq!(listed.len(), 2, "{listed:?}");
    assert!(!listed.contains(&address));
}

#[tokio::test]
async fn ten_thousand_subscriptions_at_once_are_batched() {
    const CONNECTIONS: usize = 100;
    const CHANNELS: usize = 100;
    let redis = RedisServer::start();
    let g = Herald::start_clustered(&redis.url(), "").await;
    redis.cli(&["config", "resetstat"]);
    let mut tasks = Vec::new();
    for c in 0..CONNECTIONS {
        let mut client = g.user("app1", &format!("u{c}"), json!({})).await;
        tasks.push(tokio::spawn(async move {
            // Send every subscribe at once, then collect the replies.
            for n in 0..CHANNELS {
                let frame =
                    json!({"id": n + 1, "type":"subscribe","channel":format!("bulk-{c}-{n}")});
                client.send_text(frame.to_string()).await;
            }
            let mut ok = 0;
            while ok < CHANNELS {
                let r = client.expect("reply").await;
                assert_eq!(r["ok"], true, "{r}");
                ok += 1;
            }
            client
        }));
    }
    let mut clients = Vec::new();
    for t in tasks {
        clients.push(t.await.unwrap());
    }
    let stats = redis.cli(&["info", "commandstats"]);
    let calls: u64 = stats
        .lines()
        .find_map(|l| l.strip_prefix("cmdstat_subscribe:calls="))
        .and_then(|rest| rest.split(',').next())
        .and_then(|n| n.parse().ok())
        .expect("subscribe calls in commandstats");
    let subscribed = redis
        .cli(&["pubsub", "channels", "herald:*:t"])
        .lines()
        .filter(|t| !t.contains("{probe:") && !t.is_empty())
        .count();
    assert_eq!(subscribed, CONNECTIONS * CHANNELS);
    assert!(
        calls * 4 <= (CONNECTIONS * CHANNELS) as u64,
        "{calls} SUBSCRIBE commands for {} subscriptions",
        CONNECTIONS * CHANNELS
    );
    eprintln!(
        "{} subscriptions took {calls} SUBSCRIBE commands",
        CONNECTIONS * CHANNELS
    );
}
