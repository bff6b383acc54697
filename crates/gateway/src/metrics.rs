//! Prometheus metrics at `/metrics`.
//!
//! Counters the gateway moves itself are ordinary `prometheus` metrics.
//! What the node counts (deliveries, slow consumers, channels) is read from
//! the node at scrape time by [`NodeCollector`], so the fan-out path only
//! bumps an atomic.

use herald_broker_node::backplane::BackplaneStats;
use herald_broker_node::Node;
use herald_protocol::ErrorCode;
use prometheus::core::{Collector, Desc, Describer};
use prometheus::proto::MetricFamily;
use prometheus::{
    Encoder, Histogram, HistogramOpts, IntCounter, IntCounterVec, IntGauge, Opts, Registry,
    TextEncoder,
};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

pub struct Metrics {
    registry: Registry,
    pub connections: IntGauge,
    pub connections_total: IntCounter,
    pub connections_refused: IntCounterVec,
    pub disconnects: IntCounterVec,
    pub published: IntCounterVec,
    pub errors: IntCounterVec,
    pub publish_seconds: Histogram,
    pub ratelimit_checks: IntCounterVec,
    pub ratelimit_rejections: IntCounterVec,
    pub ratelimit_fallback: IntGauge,
}

fn register<C: Collector + Clone + 'static>(registry: &Registry, c: C) -> C {
    // Names are fixed and unique, so registration cannot collide.
    let _ = registry.register(Box::new(c.clone()));
    c
}

impl Metrics {
    pub fn new(node: Arc<Node>, dispatch: Arc<herald_dispatch::Stats>) -> Metrics {
        let registry = Registry::new();
        let m = Metrics {
            connections: register(
                &registry,
                IntGauge::new("herald_connections", "Open WebSocket connections").expect("static metric definition"),
            ),
            connections_total: register(
                &registry,
                IntCounter::new("herald_connections_total", "WebSocket connections accepted")
                    .expect("static metric definition"),
            ),
            connections_refused: register(
                &registry,
                IntCounterVec::new(
                    Opts::new("herald_connections_refused_total", "WebSocket upgrades refused, by error code"),
                    &["code"],
                )
                .expect("static metric definition"),
            ),
            disconnects: register(
                &registry,
                IntCounterVec::new(
                    Opts::new("herald_disconnects_total", "Connections the server closed, by reason"),
                    &["reason"],
                )
                .expect("static metric definition"),
            ),
            published: register(
                &registry,
                IntCounterVec::new(
                    Opts::new("herald_messages_published_total", "Publications accepted, by surface"),
                    &["surface"],
                )
                .expect("static metric definition"),
            ),
            errors: register(
                &registry,
                IntCounterVec::new(Opts::new("herald_errors_total", "Errors answered, by code"), &["code"])
                    .expect("static metric definition"),
            ),
            publish_seconds: register(
                &registry,
                Histogram::with_opts(
                    HistogramOpts::new(
                        "herald_publish_duration_seconds",
                        "Time from a publish request to its publication being queued to local subscribers",
                    )
                    .buckets(vec![
                        0.00005, 0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25,
                    ]),
                )
                .expect("static metric definition"),
            ),
            ratelimit_checks: register(
                &registry,
                IntCounterVec::new(
                    Opts::new("herald_ratelimit_checks_total", "Rate-limit checks, by limit (ops, frames, connections)"),
                    &["limit"],
                )
                .expect("static metric definition"),
            ),
            ratelimit_rejections: register(
                &registry,
                IntCounterVec::new(
                    Opts::new(
                        "herald_ratelimit_rejections_total",
                        "Requests refused by a rate limit, by limit and app (`-` where no app is known)",
                    ),
                    &["limit", "app"],
                )
                .expect("static metric definition"),
            ),
            ratelimit_fallback: register(
                &registry,
                IntGauge::new(
                    "herald_ratelimit_fallback",
                    "1 while cluster-wide limits are enforced as a local share because Redis is unreachable",
                )
                .expect("static metric definition"),
            ),
            registry,
        };
        for code in ErrorCode::ALL {
            m.errors.with_label_values(&[code.as_str()]);
        }
        let m_node = Arc::clone(&node);
        let _ = m.registry.register(Box::new(NodeCollector::new(node)));
        let _ = m
            .registry
            .register(Box::new(DispatchCollector::new(dispatch)));
        let _ = m
            .registry
            .register(Box::new(LatencyCollector::new(Arc::clone(&m_node))));
        m
    }

    pub fn error(&self, code: ErrorCode) {
        self.errors.with_label_values(&[code.as_str()]).inc();
    }

    pub fn render(&self) -> String {
        let mut out = Vec::new();
        let _ = TextEncoder::new().encode(&self.registry.gather(), &mut out);
        String::from_utf8(out).unwrap_or_default()
    }
}

/// Reads the node's own counters at scrape time.
struct NodeCollector {
    node: Arc<Node>,
    descs: Vec<Desc>,
}

#[derive(Clone, Copy)]
enum Kind {
    Gauge,
    Counter,
}

/// What the node reports: name, help, kind. The order is the order of the
/// values `NodeCollector::values` returns.
const NODE_METRICS: [(&str, &str, Kind); 10] = [
    (
        "herald_channels",
        "Channels with at least one subscriber on this node",
        Kind::Gauge,
    ),
    (
        "herald_subscriptions",
        "Subscriptions (channel, connection) on this node",
        Kind::Gauge,
    ),
    (
        "herald_messages_delivered_total",
        "Frames queued to subscribers by fan-out",
        Kind::Counter,
    ),
    (
        "herald_slow_consumer_disconnects_total",
        "Connections kicked because their queue was full",
        Kind::Counter,
    ),
    (
        "herald_backplane_ready",
        "1 while the backplane delivers (always 1 embedded)",
        Kind::Gauge,
    ),
    (
        "herald_backplane_errors_total",
        "Backplane commands that failed",
        Kind::Counter,
    ),
    (
        "herald_backplane_resubscribes_total",
        "Times the probe found the node deaf and re-subscribed every topic",
        Kind::Counter,
    ),
    (
        "herald_backplane_lagged_total",
        "Backplane messages dropped because the receive loop fell behind",
        Kind::Counter,
    ),
    (
        "herald_backplane_malformed_total",
        "Backplane messages that could not be read, logged and dropped",
        Kind::Counter,
    ),
    (
        "herald_audience_dropped_total",
        "Sockets-reached counts of logged messages dropped because too many waited to be reported (the database unreachable for long)",
        Kind::Counter,
    ),
];

impl NodeCollector {
    fn new(node: Arc<Node>) -> Self {
        let descs = NODE_METRICS
            .iter()
            .filter_map(|(name, help, _)| Opts::new(*name, *help).describe().ok())
            .collect();
        NodeCollector { node, descs }
    }

    fn values(&self) -> [u64; 10] {
        let stats = self.node.stats();
        let counter = |read: fn(&BackplaneStats) -> &AtomicU64| {
            read(self.node.backplane_stats()).load(Ordering::Relaxed)
        };
        [
            stats.channels as u64,
            stats.subscriptions as u64,
            stats.delivered,
            stats.slow_consumers,
            u64::from(self.node.ready()),
            counter(|b| &b.errors),
            counter(|b| &b.resubscribes),
            counter(|b| &b.lagged),
            counter(|b| &b.malformed),
            self.node.audience_dropped(),
        ]
    }
}

/// One gauge or counter with `value`, as a scrape reads it.
fn family(name: &str, help: &str, kind: Kind, value: i64) -> Vec<MetricFamily> {
    match kind {
        Kind::Gauge => IntGauge::new(name, help)
            .map(|g| {
                g.set(value);
                g.collect()
            })
            .unwrap_or_default(),
        Kind::Counter => IntCounter::new(name, help)
            .map(|c| {
                c.inc_by(value.max(0) as u64);
                c.collect()
            })
            .unwrap_or_default(),
    }
}

impl Collector for NodeCollector {
    fn desc(&self) -> Vec<&Desc> {
        self.descs.iter().collect()
    }

    fn collect(&self) -> Vec<MetricFamily> {
        NODE_METRICS
            .iter()
            .zip(self.values())
            .flat_map(|((name, help, kind), value)| family(name, help, *kind, value as i64))
            .collect()
    }
}

/// Reads the dispatch counters (message log, webhooks, retention) at
/// scrape time.
pub struct DispatchCollector {
    stats: Arc<herald_dispatch::Stats>,
    descs: Vec<Desc>,
}

type Read = fn(&herald_dispatch::Stats) -> i64;

fn load(a: &AtomicU64) -> i64 {
    a.load(Ordering::Relaxed) as i64
}

const DISPATCH_METRICS: [(&str, &str, Kind, Read); 9] = [
    (
        "herald_messages_logged_total",
        "Messages written to the message log (redelivered entries included)",
        Kind::Counter,
        |s| load(&s.logged),
    ),
    (
        "herald_dispatch_malformed_total",
        "Dispatch entries that could not be read, logged and dropped",
        Kind::Counter,
        |s| load(&s.malformed),
    ),
    (
        "herald_dispatch_claimed_total",
        "Dispatch entries taken over from a worker that did not acknowledge them",
        Kind::Counter,
        |s| load(&s.claimed),
    ),
    (
        "herald_dispatch_errors_total",
        "Dispatch stream (Redis) and database operations that failed",
        Kind::Counter,
        |s| load(&s.stream_errors) + load(&s.store_errors),
    ),
    (
        "herald_dispatch_stream_depth",
        "Entries in the dispatch streams not yet acknowledged",
        Kind::Gauge,
        |s| s.stream_depth.load(Ordering::Relaxed),
    ),
    (
        "herald_dispatch_lag_seconds",
        "Age of the oldest unacknowledged dispatch entry",
        Kind::Gauge,
        |s| s.stream_lag_ms.load(Ordering::Relaxed) / 1000,
    ),
    (
        "herald_webhook_pending",
        "Webhook deliveries not yet delivered or failed",
        Kind::Gauge,
        |s| s.webhook_pending.load(Ordering::Relaxed),
    ),
    (
        "herald_webhook_lag_seconds",
        "Age of the oldest pending webhook delivery",
        Kind::Gauge,
        |s| s.webhook_lag_ms.load(Ordering::Relaxed) / 1000,
    ),
    (
        "herald_retention_deleted_total",
        "Messages deleted by the retention job",
        Kind::Counter,
        |s| load(&s.retention_deleted),
    ),
];

const WEBHOOK_ATTEMPTS: &str = "herald_webhook_attempts_total";
const WEBHOOK_ATTEMPTS_HELP: &str =
    "Webhook attempts by outcome: delivered, retry (to be tried again), failed (no attempts left, or a 4xx), gone (410: the URL is disabled for the channel), refused (not sent: the target is in a private range)";

impl DispatchCollector {
    pub fn new(stats: Arc<herald_dispatch::Stats>) -> Self {
        let mut descs: Vec<Desc> = DISPATCH_METRICS
            .iter()
            .filter_map(|(name, help, _, _)| Opts::new(*name, *help).describe().ok())
            .collect();
        descs.extend(
            Opts::new(WEBHOOK_ATTEMPTS, WEBHOOK_ATTEMPTS_HELP)
                .variable_label("outcome")
                .describe()
                .ok(),
        );
        DispatchCollector { stats, descs }
    }
}

impl Collector for DispatchCollector {
    fn desc(&self) -> Vec<&Desc> {
        self.descs.iter().collect()
    }

    fn collect(&self) -> Vec<MetricFamily> {
        let mut families: Vec<MetricFamily> = DISPATCH_METRICS
            .iter()
            .flat_map(|(name, help, kind, read)| family(name, help, *kind, read(&self.stats)))
            .collect();
        if let Ok(v) = IntCounterVec::new(
            Opts::new(WEBHOOK_ATTEMPTS, WEBHOOK_ATTEMPTS_HELP),
            &["outcome"],
        ) {
            let s = &self.stats;
            for (outcome, n) in [
                ("delivered", &s.delivered),
                ("retry", &s.retried),
                ("failed", &s.failed),
                ("gone", &s.gone),
                ("refused", &s.refused),
            ] {
                v.with_label_values(&[outcome])
                    .inc_by(n.load(Ordering::Relaxed));
            }
            families.extend(v.collect());
        }
        families
    }
}

/// The registry of a `herald worker`: the dispatch metrics only.
pub fn worker_registry(stats: Arc<herald_dispatch::Stats>) -> Registry {
    let registry = Registry::new();
    let _ = registry.register(Box::new(DispatchCollector::new(stats)));
    registry
}

/// Renders a registry in the text format.
pub fn render(registry: &Registry) -> String {
    let mut out = Vec::new();
    let _ = TextEncoder::new().encode(&registry.gather(), &mut out);
    String::from_utf8(out).unwrap_or_default()
}

/// The node's latency histograms, read at scrape time.
struct LatencyCollector {
    node: Arc<Node>,
    descs: Vec<Desc>,
}

const FANOUT_LATENCY: (&str, &str) = (
    "herald_fanout_latency_seconds",
    "From a publication's acceptance (its timestamp, on whichever gateway) to its fan-out on this gateway; across gateways it includes their clock difference",
);
const PROBE_LATENCY: (&str, &str) = (
    "herald_backplane_probe_seconds",
    "Round trips of the backplane probe (a publish to this gateway's own topic, received back): one Redis round trip as this gateway sees it",
);

impl LatencyCollector {
    fn new(node: Arc<Node>) -> Self {
        let descs = [FANOUT_LATENCY, PROBE_LATENCY]
            .iter()
            .filter_map(|(name, help)| Opts::new(*name, *help).describe().ok())
            .collect();
        LatencyCollector { node, descs }
    }
}

fn histogram_family(
    (name, help): (&str, &str),
    s: herald_broker_node::latency::Snapshot,
) -> MetricFamily {
    use prometheus::proto;
    let mut h = proto::Histogram::default();
    h.set_sample_count(s.count);
    h.set_sample_sum(s.sum);
    let buckets = herald_broker_node::latency::BOUNDS
        .iter()
        .zip(&s.cumulative)
        .map(|(bound, count)| {
            let mut b = proto::Bucket::default();
            b.set_upper_bound(*bound);
            b.set_cumulative_count(*count);
            b
        })
        .collect();
    h.set_bucket(buckets);
    let mut metric = proto::Metric::default();
    metric.set_histogram(h);
    let mut family = MetricFamily::default();
    family.set_name(name.to_owned());
    family.set_help(help.to_owned());
    family.set_field_type(proto::MetricType::HISTOGRAM);
    family.set_metric(vec![metric]);
    family
}

impl Collector for LatencyCollector {
    fn desc(&self) -> Vec<&Desc> {
        self.descs.iter().collect()
    }

    fn collect(&self) -> Vec<MetricFamily> {
        vec![
            histogram_family(FANOUT_LATENCY, self.node.fanout_latency()),
            histogram_family(PROBE_LATENCY, self.node.backplane_stats().probe.snapshot()),
        ]
    }
}
