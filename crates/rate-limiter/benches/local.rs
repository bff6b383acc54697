//! The cost of a local check: `cargo bench -p herald-rate-limiter --bench local`.

use criterion::{black_box, criterion_group, criterion_main, Criterion};
use herald_rate_limiter::gcra::Gcra;
use herald_rate_limiter::{Cell, KeyedLimiter, Limit, LocalLimiter};

fn local(c: &mut Criterion) {
    let limit = Limit {
        per_second: 1_000_000_000,
        burst: 1_000_000,
    };
    let cell = Cell::new(limit).expect("limited");
    c.bench_function("cell check (governor)", |b| {
        b.iter(|| black_box(cell.check()))
    });
    let apps = LocalLimiter::new([("app1", limit), ("app2", limit)]);
    c.bench_function("app limiter check (lookup + governor)", |b| {
        b.iter(|| black_box(apps.check(black_box("app1"))))
    });
    let ips = KeyedLimiter::new(limit);
    let ip = std::net::IpAddr::from([10, 1, 2, 3]);
    c.bench_function("keyed check (per IP)", |b| {
        b.iter(|| black_box(ips.check(black_box(&ip))))
    });
    let gcra = Gcra::new(limit).expect("limited");
    let mut now = 0u64;
    let mut tat = None;
    c.bench_function("gcra arithmetic", |b| {
        b.iter(|| {
            now += 1;
            let (d, t) = gcra.check(tat, black_box(now));
            tat = Some(t);
            black_box(d)
        })
    });
}

criterion_group!(benches, local);
criterion_main!(benches);
