//! Channel webhook senders: lease due deliveries from the database, POST
//! each (signed), record the outcome.
//!
//! A delivery is leased for longer than one attempt can take, so however
//! many senders run, one attempt at a time goes out for it; a sender that
//! dies leaves its leases to run out, and the delivery is tried again by
//! another (with the same `webhook-id`: at least once, never silently
//! lost).

use crate::sign::Secret;
use crate::Stats;
use herald_store::messages::{Delivery, Outcome};
use herald_store::Store;
use reqwest::dns::{Addrs, Name, Resolve, Resolving};
use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;
use tokio_util::sync::CancellationToken;

/// How webhooks are sent.
#[derive(Debug, Clone)]
pub struct WebhookOptions {
    /// One attempt's time limit.
    pub timeout: Duration,
    /// When each attempt is made, from the previous one's failure: the
    /// first entry is the first attempt's delay (normally zero); the
    /// series ends after the last.
    pub schedule: Vec<Duration>,
    /// Whether targets in private, loopback or link-local ranges may be
    /// called.
    pub allow_private: bool,
    /// Attempts in flight at once, per sender.
    pub concurrency: usize,
    /// Per app: the `whsec_` signing secret.
    pub secrets: HashMap<String, Secret>,
}

/// The Standard Webhooks default schedule: at once, 5 s, 5 min, 30 min,
/// 2 h, 5 h, 10 h, 10 h.
pub fn default_schedule() -> Vec<Duration> {
    [0, 5, 300, 1800, 7200, 18000, 36000, 36000]
        .into_iter()
        .map(Duration::from_secs)
        .collect()
}

/// Whether `ip` is in a range a webhook may not reach unless allowed:
/// loopback, private, link-local, shared, unspecified, multicast.
pub fn is_private(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V4(v4) => {
            let o = v4.octets();
            v4.is_loopback()
                || v4.is_private()
                || v4.is_link_local()
                || v4.is_unspecified()
                || v4.is_broadcast()
                || v4.is_multicast()
                || o[0] == 0
                || o[0] >= 240
                || (o[0] == 100 && (o[1] & 0xc0) == 64)
                || (o[0] == 198 && (o[1] & 0xfe) == 18)
                || (o[0] == 192 && o[1] == 0 && o[2] == 0)
        }
        IpAddr::V6(v6) => {
            if let Some(v4) = v6.to_ipv4_mapped() {
                return is_private(IpAddr::V4(v4));
            }
            let s = v6.segments();
            // NAT64 (64:ff9b::/96) and 6to4 (2002::/16) carry an IPv4
            // address: judged by it.
            let embedded =
                |a: u16, b: u16| IpAddr::from([(a >> 8) as u8, a as u8, (b >> 8) as u8, b as u8]);
            if s[0] == 0x64 && s[1] == 0xff9b && s[2..6] == [0, 0, 0, 0] {
                return is_private(embedded(s[6], s[7]));
            }
            if s[0] == 0x2002 {
                return is_private(embedded(s[1], s[2]));
            }
            v6.is_loopback()
                || v6.is_unspecified()
                || v6.is_multicast()
                || (s[0] & 0xfe00) == 0xfc00
                || (s[0] & 0xffc0) == 0xfe80
        }
    }
}

/// Checks a webhook URL as written: `http` or `https`, a host, and (unless
/// allowed) not a literal address in a private range. Names are checked
/// again when resolved, at each attempt.
pub fn check_url(url: &str, allow_private: bool) -> Result<(), String> {
    let parsed = reqwest::Url::parse(url).map_err(|e| format!("`{url}` is not a URL: {e}"))?;
    if !matches!(parsed.scheme(), "http" | "https") {
        return Err(format!("`{url}`: a webhook URL is http or https"));
    }
    let host = parsed
        .host()
        .ok_or_else(|| format!("`{url}`: a webhook URL names a host"))?;
    let literal = match host {
        url::Host::Ipv4(v4) => Some(IpAddr::V4(v4)),
        url::Host::Ipv6(v6) => Some(IpAddr::V6(v6)),
        url::Host::Domain(d) if d.eq_ignore_ascii_case("localhost") => {
            Some(IpAddr::from([127, 0, 0, 1]))
        }
        url::Host::Domain(_) => None,
    };
    match literal {
        Some(ip) if !allow_private && is_private(ip) => Err(format!(
            "`{url}` is in a private or loopback range; webhook targets there need `webhooks.allow_private_targets`"
        )),
        _ => Ok(()),
    }
}

/// What the resolver says when a name has only private addresses.
const PRIVATE_ONLY: &str = "resolves only to private or loopback addresses";

/// Resolves names, refusing addresses in private ranges (so a public name
/// that resolves to a private address is refused too).
struct PublicOnly;

impl Resolve for PublicOnly {
    fn resolve(&self, name: Name) -> Resolving {
        Box::pin(async move {
            let found: Vec<SocketAddr> =
                tokio::net::lookup_host((name.as_str(), 0)).await?.collect();
            let public: Vec<SocketAddr> =
                found.into_iter().filter(|a| !is_private(a.ip())).collect();
            if public.is_empty() {
                return Err(format!("`{}` {PRIVATE_ONLY}", name.as_str()).into());
            }
            Ok(Box::new(public.into_iter()) as Addrs)
        })
    }
}

/// Runs a sender until `stop`.
pub async fn run(
    store: Store,
    options: WebhookOptions,
    stats: Arc<Stats>,
    stop: CancellationToken,
) {
    let mut builder = reqwest::Client::builder()
        .timeout(options.timeout)
        // A proxy would resolve the name itself, past the check below.
        .no_proxy()
        .redirect(reqwest::redirect::Policy::none())
        .user_agent(concat!("Herald-Webhooks/", env!("CARGO_PKG_VERSION")));
    if !options.allow_private {
        builder = builder.dns_resolver(Arc::new(PublicOnly));
    }
    let client = match builder.build() {
        Ok(client) => client,
        Err(e) => {
            tracing::error!(error = %e, "cannot build the webhook client: webhooks are not sent");
            return;
        }
    };
    // Longer than an attempt (and its record) can take.
    // Longer than an attempt (and its record) can take.
    let lease = options.timeout * 2 + Duration::from_secs(5);
    let options = Arc::new(options);
    // Attempts in flight; more are leased only as slots free up, so a slow
    // receiver holds one slot, not the whole sender, and nothing leased
    // waits in a queue while its lease runs.
    let mut inflight = tokio::task::JoinSet::new();
    loop {
        let free = options.concurrency.saturating_sub(inflight.len());
        let mut claimed = 0;
        if free > 0 && !stop.is_cancelled() {
            let now = now_ms();
            match store
                .claim_deliveries(now, now + lease.as_millis() as i64, free as u32)
                .await
            {
                Ok(due) => {
                    claimed = due.len();
                    for delivery in due {
                        let (client, store, options, stats) = (
                            client.clone(),
                            store.clone(),
                            Arc::clone(&options),
                            Arc::clone(&stats),
                        );
                        inflight.spawn(async move {
                            let outcome = attempt(&client, &options, &delivery).await;
                            count(&stats, &outcome);
                            if let Err(e) = store.record_attempt(&delivery, &outcome).await {
                                // The lease runs out and the delivery is tried again.
                                stats.store_errors.fetch_add(1, Ordering::Relaxed);
                                tracing::warn!(error = %e, delivery = delivery.id, "cannot record a webhook attempt");
                            }
                        });
                    }
                }
                Err(e) => {
                    stats.store_errors.fetch_add(1, Ordering::Relaxed);
                    tracing::warn!(error = %e, "cannot read due webhook deliveries");
                }
            }
        }
        if stop.is_cancelled() {
            // Let the attempts in flight finish and be recorded.
            while inflight.join_next().await.is_some() {}
            return;
        }
        if claimed > 0 && inflight.len() < options.concurrency {
            continue;
        }
        // Wait for a slot, or for more to come due.
        tokio::select! {
            _ = stop.cancelled() => {}
            Some(_) = inflight.join_next(), if !inflight.is_empty() => {}
            _ = tokio::time::sleep(Duration::from_millis(100)) => {}
        }
    }
}

fn count(stats: &Stats, outcome: &Outcome) {
    let counter = match outcome {
        Outcome::Delivered => &stats.delivered,
        Outcome::Retry { .. } => &stats.retried,
        Outcome::Failed { .. } => &stats.failed,
        Outcome::Gone => &stats.gone,
        Outcome::Refused { .. } => &stats.refused,
    };
    counter.fetch_add(1, Ordering::Relaxed);
}

/// Makes one attempt and says what comes next.
async fn attempt(client: &reqwest::Client, options: &WebhookOptions, d: &Delivery) -> Outcome {
    if let Err(e) = check_url(&d.url, options.allow_private) {
        return Outcome::Refused { error: e };
    }
    let timestamp = now_ms() / 1000;
    let mut request = client
        .post(&d.url)
        .header("content-type", "application/json")
        .header("x-insforge-event", &d.event_name)
        .header("x-insforge-channel", &d.channel_name)
        .header("x-insforge-message-id", &d.message_id)
        .header("webhook-id", &d.id)
        .header("webhook-timestamp", timestamp.to_string());
    if let Some(secret) = options.secrets.get(&d.app) {
        request = request.header(
            "webhook-signature",
            secret.sign(&d.id, timestamp, d.body.as_bytes()),
        );
    }
    if let Some(trace) = &d.trace {
        request = request.header("traceparent", trace);
    }
    let (error, retry_after) = match request.body(d.body.clone()).send().await {
        Ok(response) => {
            let status = response.status();
            if status.is_success() {
                return Outcome::Delivered;
            }
            if status.as_u16() == 410 {
                return Outcome::Gone;
            }
            let retry_after = response
                .headers()
                .get("retry-after")
                .and_then(|v| v.to_str().ok())
                .and_then(|v| v.trim().parse::<u64>().ok())
                .map(Duration::from_secs);
            if !(status.is_server_error() || status.as_u16() == 429) {
                return Outcome::Failed {
                    error: format!("answered {status}; not retried"),
                };
            }
            (format!("answered {status}"), retry_after)
        }
        Err(e) if e.is_timeout() => (
            format!("no answer within {} ms", options.timeout.as_millis()),
            None,
        ),
        Err(e) => {
            let why = source_chain(&e);
            if why.contains(PRIVATE_ONLY) {
                // Refused here, not by the receiver: no retry will change it.
                return Outcome::Refused { error: why };
            }
            (format!("cannot reach it: {why}"), None)
        }
    };
    let next = d.attempts as usize + 1;
    match options.schedule.get(next) {
        Some(delay) => {
            let delay =
                retry_after.map_or(*delay, |r| r.max(*delay).min(Duration::from_secs(86400)));
            Outcome::Retry {
                at_ms: now_ms() + delay.as_millis() as i64,
                error,
            }
        }
        None => Outcome::Failed {
            error: format!("{error}; no attempts left"),
        },
    }
}

fn source_chain(e: &dyn std::error::Error) -> String {
    let mut text = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        text.push_str(": ");
        text.push_str(&s.to_string());
        source = s.source();
    }
    text
}

/// The wall clock in epoch ms, as the store's columns hold it.
pub(crate) fn now_ms() -> i64 {
    herald_protocol::now_ms() as i64
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn private_ranges_are_known() {
        for ip in [
            "127.0.0.1",
            "10.1.2.3",
            "192.168.0.1",
            "172.16.5.5",
            "169.254.169.254",
            "100.64.0.1",
            "0.0.0.0",
            "::1",
            "fd00::1",
            "fe80::1",
            "::ffff:127.0.0.1",
        ] {
            assert!(is_private(ip.parse().unwrap()), "{ip}");
        }
        for ip in [
            "198.18.0.1",
            "240.0.0.1",
            "192.0.0.8",
            "64:ff9b::a00:1",
            "2002:7f00:1::",
        ] {
            assert!(is_private(ip.parse().unwrap()), "{ip}");
        }
        for ip in [
            "8.8.8.8",
            "172.32.0.1",
            "100.128.0.1",
            "2001:4860::8888",
            "64:ff9b::808:808",
        ] {
            assert!(!is_private(ip.parse().unwrap()), "{ip}");
        }
    }

    #[tokio::test]
    async fn names_that_resolve_to_private_addresses_are_refused_at_send_time() {
        use std::str::FromStr;
        let refused = PublicOnly
            .resolve(Name::from_str("localhost").unwrap())
            .await
            .err()
            .expect("localhost resolves to loopback only");
        assert!(refused.to_string().contains(PRIVATE_ONLY), "{refused}");
        // Through a client as the sender builds it: refused, not retried.
        let client = reqwest::Client::builder()
            .no_proxy()
            .dns_resolver(Arc::new(PublicOnly))
            .build()
            .unwrap();
        let options = WebhookOptions {
            timeout: Duration::from_secs(2),
            schedule: default_schedule(),
            allow_private: true, // past the check of the URL as written
            concurrency: 1,
            secrets: HashMap::new(),
        };
        let delivery = Delivery {
            id: "msg_x".into(),
            app: "a".into(),
            message_id: "m".into(),
            channel_id: None,
            channel_name: "c".into(),
            event_name: "e".into(),
            url: "http://localhost:9/x".into(),
            body: "{}".into(),
            trace: None,
            attempts: 0,
            created_at_ms: 0,
        };
        match attempt(&client, &options, &delivery).await {
            Outcome::Refused { error } => assert!(error.contains(PRIVATE_ONLY), "{error}"),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn urls_are_checked_as_written() {
        assert!(check_url("https://hooks.example.com/x", false).is_ok());
        assert!(check_url("http://127.0.0.1:9/x", false)
            .unwrap_err()
            .contains("private"));
        assert!(check_url("http://localhost/x", false).is_err());
        assert!(check_url("http://[::1]/x", false).is_err());
        assert!(check_url("http://127.0.0.1:9/x", true).is_ok());
        assert!(check_url("ftp://example.com/x", true)
            .unwrap_err()
            .contains("http"));
        assert!(check_url("not a url", true).is_err());
    }
}
