//! Cluster-wide rate-limit checks against a real Redis, from one process:
//! `cargo bench -p herald-redis --bench cluster_limits`
//! (starts its own `redis-server` on a free loopback port).

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use futures_util::stream::{FuturesUnordered, StreamExt};
use herald_rate_limiter::{Limit, SharedStore};
use herald_redis::limits::RedisLimits;
use herald_redis::Redis;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::AtomicUsize;
use std::sync::Arc;
use std::time::{Duration, Instant};

struct RedisProcess(Child);

impl Drop for RedisProcess {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn start_redis() -> (RedisProcess, u16) {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("free port");
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
        .expect("redis-server on PATH");
    std::thread::sleep(Duration::from_millis(300));
    (RedisProcess(child), port)
}

const BATCH: u64 = 20_000;
const IN_FLIGHT: usize = 512;

fn cluster_checks(c: &mut Criterion) {
    let (_redis, port) = start_redis();
    let runtime = tokio::runtime::Runtime::new().expect("runtime");
    let limits = runtime.block_on(async {
        let redis = Arc::new(
            Redis::connect(&format!("redis://127.0.0.1:{port}"))
                .await
                .expect("connect"),
        );
        Arc::new(RedisLimits::new(redis, Arc::new(AtomicUsize::new(1))))
    });
    let limit = Limit {
        per_second: 1_000_000,
        burst: 1_000_000,
    };
    let mut group = c.benchmark_group("cluster rate limit");
    group.throughput(Throughput::Elements(BATCH));
    group.sample_size(10);
    group.bench_function(format!("{BATCH} checks, {IN_FLIGHT} in flight"), |b| {
        b.iter_custom(|iters| {
            runtime.block_on(async {
                let started = Instant::now();
                for _ in 0..iters {
                    let mut pending = FuturesUnordered::new();
                    let mut sent = 0;
                    while sent < BATCH || !pending.is_empty() {
                        while sent < BATCH && pending.len() < IN_FLIGHT {
                            let limits = Arc::clone(&limits);
                            pending.push(async move { limits.check("bench", limit).await });
                            sent += 1;
                        }
                        if let Some(result) = pending.next().await {
                            result.expect("check");
                        }
                    }
                }
                started.elapsed()
            })
        })
    });
    group.finish();
}

criterion_group!(benches, cluster_checks);
criterion_main!(benches);
