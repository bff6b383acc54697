//! Chaos in CI size: a gateway's link to Redis stalls without closing.

mod common;

use common::redis::RedisServer;
use common::Herald;
use serde_json::{json, Value};
use std::sync::Arc;
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;

/// A TCP proxy to `target` that the test can pause: paused, it stops
/// forwarding in both directions and keeps every socket open, as a link
/// that hangs (a dead NAT entry, a stuck load balancer) does.
struct Proxy {
    port: u16,
    paused: watch::Sender<bool>,
    _task: tokio::task::JoinHandle<()>,
}

impl Proxy {
    async fn start(target: u16) -> Proxy {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let (paused, watch) = watch::channel(false);
        let task = tokio::spawn(async move {
            while let Ok((client, _)) = listener.accept().await {
                let Ok(server) = TcpStream::connect(("127.0.0.1", target)).await else {
                    continue;
                };
                let (cr, cw) = client.into_split();
                let (sr, sw) = server.into_split();
                tokio::spawn(pump(cr, sw, watch.clone()));
                tokio::spawn(pump(sr, cw, watch.clone()));
            }
        });
        Proxy {
            port,
            paused,
            _task: task,
        }
    }

    fn pause(&self, on: bool) {
        let _ = self.paused.send(on);
    }
}

async fn pump(
    mut from: tokio::net::tcp::OwnedReadHalf,
    mut to: tokio::net::tcp::OwnedWriteHalf,
    mut paused: watch::Receiver<bool>,
) {
    let mut buf = vec![0u8; 16 * 1024];
    loop {
        if paused.wait_for(|p| !*p).await.is_err() {
            return;
        }
        let n = tokio::select! {
            n = from.read(&mut buf) => match n { Ok(0) | Err(_) => return, Ok(n) => n },
            // A pause stops the read too: nothing more is taken in.
            _ = paused.wait_for(|p| *p) => continue,
        };
        if paused.wait_for(|p| !*p).await.is_err() || to.write_all(&buf[..n]).await.is_err() {
            return;
        }
    }
}

async fn ready(h: &Herald) -> bool {
    reqwest::get(h.http("/readyz"))
        .await
        .is_ok_and(|r| r.status() == 200)
}

/// A stalled link: the probe notices and `/readyz` says so; publishes made
/// meanwhile are refused rather than accepted and lost; when the link
/// returns the gateway is ready again on its own and delivers.
#[tokio::test]
async fn a_stalled_redis_link_is_noticed_and_nothing_accepted_is_lost() {
    let redis = RedisServer::start();
    let proxy = Arc::new(Proxy::start(redis.port).await);
    let url = format!("redis://127.0.0.1:{}", proxy.port);
    let g = [
        Herald::start_clustered(&url, "").await,
        Herald::start_clustered(&url, "").await,
    ];
    let mut sub = g[1].user("app2", "s", json!({})).await;
    sub.subscribe("stall").await;
    let publish = |payload: Value| {
        g[0].post(
            "/api/v1/publish",
            "key-app2",
            json!({"channel":"stall","payload":payload}),
        )
    };
    let (status, _, _) = publish(json!("before")).await;
    assert_eq!(status, 200);
    assert_eq!(sub.expect("event").await["payload"], "before");

    proxy.pause(true);
    let deadline = tokio::time::Instant::now() + Duration::from_secs(15);
    while ready(&g[1]).await {
        assert!(
            tokio::time::Instant::now() < deadline,
            "the stall went unnoticed"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // Publishing meanwhile: refused (PUBLISH_FAILED), or accepted; whatever
    // is accepted must be delivered in the end.
    let mut accepted = Vec::new();
    for n in 0..3 {
        let (status, body, _) = publish(json!(format!("during-{n}"))).await;
        match status {
            200 => accepted.push(format!("during-{n}")),
            _ => assert_eq!(body["errors"][0]["code"], "PUBLISH_FAILED", "{body}"),
        }
    }

    proxy.pause(false);
    for gw in &g {
        gw.wait_ready(Duration::from_secs(30)).await;
    }
    let (status, _, _) = publish(json!("after")).await;
    assert_eq!(status, 200);
    let mut received = Vec::new();
    loop {
        let e = sub.expect("event").await;
        let payload = e["payload"].as_str().unwrap().to_owned();
        if payload == "after" {
            break;
        }
        received.push(payload);
    }
    for a in &accepted {
        assert!(
            received.contains(a),
            "accepted {a} was lost: got {received:?}"
        );
    }
}
