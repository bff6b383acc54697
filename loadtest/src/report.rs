//! What a run measured: a summary table and a JSON file.

use hdrhistogram::Histogram;
use serde::Serialize;

#[derive(Debug, Default, Serialize)]
pub struct Report {
    pub scenario: String,
    pub parameters: serde_json::Value,
    pub connections: usize,
    pub connect_errors: usize,
    pub connect_seconds: f64,
    pub connects_per_second: f64,
    /// Publishes the server accepted.
    pub published: u64,
    /// Publishes the server refused, by error code.
    pub publish_errors: std::collections::BTreeMap<String, u64>,
    pub expected_deliveries: u64,
    pub delivered: u64,
    pub lost: u64,
    pub duplicated: u64,
    /// Delivered after a later publication of the same channel.
    pub reordered: u64,
    pub publish_seconds: f64,
    pub deliveries_per_second: f64,
    pub latency_ms: Latency,
    /// reconnect: time from losing the connection to being resubscribed,
    /// per subscriber that lost it.
    pub reconnect_ms: Option<Latency>,
    /// reconnect: resubscribes the server could not recover.
    pub not_recovered: u64,
    /// presence-churn: subscribe and unsubscribe round trips completed.
    pub operations: u64,
    pub operations_per_second: f64,
    /// presence-churn: joins and leaves a watcher saw.
    pub presence_joins: u64,
    pub presence_leaves: u64,
    /// Deliveries and latency percentiles in each second of the run (by
    /// delivery time, from the start of publishing).
    pub timeline: Vec<crate::timeline::Second>,
    pub server: Option<ServerCost>,
}

#[derive(Debug, Default, Clone, Copy, Serialize)]
pub struct Latency {
    pub p50: f64,
    pub p90: f64,
    pub p99: f64,
    pub p999: f64,
    pub max: f64,
}

impl Latency {
    pub fn of(h: &Histogram<u64>) -> Latency {
        let ms = |us: u64| us as f64 / 1000.0;
        Latency {
            p50: ms(h.value_at_quantile(0.50)),
            p90: ms(h.value_at_quantile(0.90)),
            p99: ms(h.value_at_quantile(0.99)),
            p999: ms(h.value_at_quantile(0.999)),
            max: ms(h.max()),
        }
    }
}

#[derive(Debug, Default, Serialize)]
pub struct ServerCost {
    pub rss_before_mib: f64,
    pub rss_connected_mib: f64,
    pub rss_after_mib: f64,
    /// (RSS with the connections open - RSS before) / connections.
    pub rss_per_connection_bytes: f64,
    pub cpu_seconds: f64,
    pub cpu_seconds_per_million_deliveries: f64,
}

impl Report {
    pub fn table(&self) -> String {
        let mut out = String::new();
        let mut row = |k: &str, v: String| out.push_str(&format!("{k:<28} {v}\n"));
        row("scenario", self.scenario.clone());
        row("parameters", self.parameters.to_string());
        row(
            "connections",
            format!("{} ({} failed)", self.connections, self.connect_errors),
        );
        row(
            "connect rate",
            format!(
                "{:.0}/s over {:.2} s",
                self.connects_per_second, self.connect_seconds
            ),
        );
        if self.published > 0 {
            row("published (accepted)", self.published.to_string());
            if !self.publish_errors.is_empty() {
                row("publishes refused", format!("{:?}", self.publish_errors));
            }
            row(
                "delivered",
                format!("{} of {}", self.delivered, self.expected_deliveries),
            );
            row(
                "lost / duplicated / reordered",
                format!("{} / {} / {}", self.lost, self.duplicated, self.reordered),
            );
            row("deliveries/s", format!("{:.0}", self.deliveries_per_second));
            let l = &self.latency_ms;
            if l.max > 0.0 {
                row(
                    "latency ms p50/p90/p99/p99.9/max",
                    format!(
                        "{:.2} / {:.2} / {:.2} / {:.2} / {:.2}",
                        l.p50, l.p90, l.p99, l.p999, l.max
                    ),
                );
            }
        }
        if let Some(r) = &self.reconnect_ms {
            row(
                "reconnect ms p50/p99/max",
                format!("{:.1} / {:.1} / {:.1}", r.p50, r.p99, r.max),
            );
            row("not recovered", self.not_recovered.to_string());
        }
        if self.operations > 0 {
            row(
                "operations",
                format!("{} ({:.0}/s)", self.operations, self.operations_per_second),
            );
            row(
                "presence joins / leaves seen",
                format!("{} / {}", self.presence_joins, self.presence_leaves),
            );
            let l = &self.latency_ms;
            row(
                "op latency ms p50/p99/max",
                format!("{:.2} / {:.2} / {:.2}", l.p50, l.p99, l.max),
            );
        }
        if let Some(s) = &self.server {
            row(
                "server RSS MiB",
                format!(
                    "{:.1} -> {:.1} (connected) -> {:.1}",
                    s.rss_before_mib, s.rss_connected_mib, s.rss_after_mib
                ),
            );
            row(
                "RSS per connection",
                format!("{:.0} bytes", s.rss_per_connection_bytes),
            );
            row(
                "server CPU",
                format!(
                    "{:.2} s ({:.2} s per million deliveries)",
                    s.cpu_seconds, s.cpu_seconds_per_million_deliveries
                ),
            );
        }
        out
    }

    pub fn json(&self) -> String {
        serde_json::to_string_pretty(self).unwrap_or_default()
    }
}
