//! The accept loop: caps on open connections, overall and per client IP,
//! checked before anything is read, and HTTP timeouts, so that slow and
//! idle clients cannot hold the gateway's sockets.
//!
//! Written on hyper's HTTP/1.1 connection rather than `axum::serve`, which
//! sets no header-read timeout and no connection cap. HTTP/1.1 only: the
//! header-read timeout then runs from the first moment a connection is
//! open (an HTTP/2 preface sniffer would wait for bytes without one), and
//! also closes idle keep-alive connections. A connection's [`Slot`]
//! travels with it into a WebSocket upgrade, so upgraded connections stay
//! counted until they close.

use crate::state::AppState;
use axum::body::Body;
use axum::extract::ConnectInfo;
use axum::http::Request;
use axum::Router;
use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper_util::rt::{TokioIo, TokioTimer};
use parking_lot::Mutex;
use std::collections::HashMap;
use std::future::Future;
use std::net::IpAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;
use tokio::io::AsyncWriteExt;
use tokio::net::{TcpListener, TcpStream};
use tokio_util::task::TaskTracker;
use tower::ServiceExt;

/// Places beyond `max_connections` kept for health checks: a connection
/// in one may only ask `/healthz` or `/readyz`.
pub const HEALTH_RESERVE: usize = 32;

/// Descriptors kept free of connections, for Redis, files and logs.
const SPARE_DESCRIPTORS: usize = 64;

/// Counts open connections, overall and per IP.
pub struct Gate {
    max_total: usize,
    /// 0: no per-IP cap.
    max_per_ip: usize,
    open: Mutex<(usize, HashMap<IpAddr, usize>)>,
}

/// One admitted connection; dropping the last clone frees its place.
#[derive(Clone)]
pub struct Slot(Arc<SlotInner>);

struct SlotInner {
    gate: Arc<Gate>,
    ip: IpAddr,
    /// Admitted into the health reserve: health checks only.
    health_only: bool,
}

impl Slot {
    /// Whether the connection came in over the cap, into the places kept
    /// for health checks.
    pub fn health_only(&self) -> bool {
        self.0.health_only
    }
}

impl Drop for SlotInner {
    fn drop(&mut self) {
        let mut open = self.gate.open.lock();
        open.0 -= 1;
        if let Some(n) = open.1.get_mut(&self.ip) {
            *n -= 1;
            if *n == 0 {
                open.1.remove(&self.ip);
            }
        }
    }
}

impl Gate {
    pub fn new(max_total: usize, max_per_ip: usize) -> Arc<Gate> {
        Arc::new(Gate {
            max_total,
            max_per_ip,
            open: Mutex::new((0, HashMap::new())),
        })
    }

    /// A place for a connection from `ip`, or `None` when a cap is
    /// reached. Past `max_total`, up to [`HEALTH_RESERVE`] more connections
    /// get a health-only place.
    pub fn enter(self: &Arc<Gate>, ip: IpAddr) -> Option<Slot> {
        let mut open = self.open.lock();
        let from_ip = open.1.get(&ip).copied().unwrap_or(0);
        let per_ip_full = self.max_per_ip > 0 && from_ip >= self.max_per_ip;
        if per_ip_full || open.0 >= self.max_total + HEALTH_RESERVE {
            return None;
        }
        let health_only = open.0 >= self.max_total;
        open.0 += 1;
        *open.1.entry(ip).or_insert(0) += 1;
        Some(Slot(Arc::new(SlotInner {
            gate: Arc::clone(self),
            ip,
            health_only,
        })))
    }

    /// Open connections now.
    pub fn open(&self) -> usize {
        self.open.lock().0
    }
}

/// `configured`, lowered to what the process's descriptor limit allows
/// with room for the health reserve and everything else.
fn effective_max_connections(configured: usize) -> usize {
    #[cfg(unix)]
    {
        let mut limit = libc::rlimit {
            rlim_cur: 0,
            rlim_max: 0,
        };
        // SAFETY: getrlimit only writes the struct it is given.
        if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) } == 0 {
            let descriptors = usize::try_from(limit.rlim_cur).unwrap_or(usize::MAX);
            let room = descriptors.saturating_sub(SPARE_DESCRIPTORS + HEALTH_RESERVE);
            if room < configured {
                tracing::warn!(
                    configured,
                    descriptors,
                    "max_connections lowered to {room} to fit the descriptor limit (ulimit -n)"
                );
                return room.max(1);
            }
        }
    }
    configured
}

/// Answers a connection over a cap with a 503 (best effort, without
/// waiting) and closes it.
fn refuse(tcp: TcpStream) {
    const BUSY: &[u8] =
        b"HTTP/1.1 503 Service Unavailable\r\nconnection: close\r\ncontent-length: 0\r\n\r\n";
    let _ = tcp.try_write(BUSY);
    tokio::spawn(async move {
        let mut tcp = tcp;
        let _ = tokio::time::timeout(Duration::from_millis(100), tcp.shutdown()).await;
    });
}

/// Serves `router` on `listener` until the state's shutdown token is
/// cancelled; returns the HTTP connections, closed for new ones, to wait
/// for: each finishes the request in flight, then closes. Upgraded
/// (WebSocket) connections are not among them: the caller drains those.
pub async fn serve(listener: TcpListener, router: Router, state: Arc<AppState>) -> TaskTracker {
    let config = &state.config;
    let gate = Gate::new(
        effective_max_connections(config.max_connections),
        config.max_connections_per_ip,
    );
    let mut builder = http1::Builder::new();
    builder
        .timer(TokioTimer::new())
        .header_read_timeout(Duration::from_millis(config.http_header_timeout_ms));
    let connections = TaskTracker::new();
    loop {
        let accepted = tokio::select! {
            accepted = listener.accept() => accepted,
            _ = state.shutdown.cancelled() => break,
        };
        let (tcp, peer) = match accepted {
            Ok(accepted) => accepted,
            Err(e) => {
                // Out of descriptors, say: wait a little rather than spin.
                tracing::warn!(error = %e, "accept failed");
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        let Some(slot) = gate.enter(peer.ip()) else {
            // Over every cap: even the health reserve is full.
            state
                .metrics
                .connections_refused
                .with_label_values(&["OVER_CAPACITY"])
                .inc();
            refuse(tcp);
            continue;
        };
        // Small frames go out at once: without NODELAY, Nagle and delayed
        // ACKs hold them back for tens of milliseconds.
        let _ = tcp.set_nodelay(true);
        let router = router.clone();
        let body_timeout = Duration::from_millis(config.http_body_timeout_ms);
        let service = hyper::service::service_fn(move |mut request: Request<Incoming>| {
            let health = matches!(request.uri().path(), "/healthz" | "/readyz");
            let refused = slot.health_only() && !health;
            request.extensions_mut().insert(ConnectInfo(peer));
            request.extensions_mut().insert(slot.clone());
            let router = router.clone();
            async move {
                if refused {
                    // Over the cap: only health checks are served here.
                    let busy = axum::http::Response::builder()
                        .status(503)
                        .header("connection", "close")
                        .body(Body::from("over capacity"))
                        .expect("a static response");
                    return Ok(busy);
                }
                // A request without a body (a WebSocket upgrade, a GET)
                // needs no deadline, nor its timer.
                let request = if http_body::Body::is_end_stream(request.body()) {
                    request.map(Body::new)
                } else {
                    request.map(|b| Body::new(DeadlineBody::new(b, body_timeout)))
                };
                router.oneshot(request).await
            }
        });
        let connection = builder
            .serve_connection(TokioIo::new(tcp), service)
            .with_upgrades();
        let stop = state.shutdown.clone();
        connections.spawn(async move {
            tokio::pin!(connection);
            let ended = tokio::select! {
                ended = connection.as_mut() => ended,
                _ = stop.cancelled() => {
                    connection.as_mut().graceful_shutdown();
                    connection.await
                }
            };
            if let Err(e) = ended {
                tracing::debug!(error = %e, "http connection ended");
            }
        });
    }
    connections.close();
    connections
}

/// A request body that must arrive whole before a deadline, however it
/// trickles (a timeout between chunks would let one byte every few
/// seconds hold a request for hours).
struct DeadlineBody {
    inner: Incoming,
    deadline: Pin<Box<tokio::time::Sleep>>,
}

impl DeadlineBody {
    fn new(inner: Incoming, within: Duration) -> Self {
        DeadlineBody {
            inner,
            deadline: Box::pin(tokio::time::sleep(within)),
        }
    }
}

impl http_body::Body for DeadlineBody {
    type Data = bytes::Bytes;
    type Error = Box<dyn std::error::Error + Send + Sync>;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<http_body::Frame<Self::Data>, Self::Error>>> {
        if let Poll::Ready(frame) = Pin::new(&mut self.inner).poll_frame(cx) {
            return Poll::Ready(frame.map(|f| f.map_err(Into::into)));
        }
        if self.deadline.as_mut().poll(cx).is_ready() {
            return Poll::Ready(Some(Err("the request body did not arrive in time".into())));
        }
        Poll::Pending
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> http_body::SizeHint {
        self.inner.size_hint()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn caps_hold_and_places_come_back() {
        let gate = Gate::new(3, 2);
        let a: IpAddr = "10.0.0.1".parse().unwrap();
        let b: IpAddr = "10.0.0.2".parse().unwrap();
        let a1 = gate.enter(a).unwrap();
        let a2 = gate.enter(a).unwrap();
        assert!(gate.enter(a).is_none(), "per-IP cap");
        let b1 = gate.enter(b).unwrap();
        assert!(!b1.health_only());
        let over = gate.enter(b).unwrap();
        assert!(over.health_only(), "over the cap: the health reserve");
        drop(over);
        let shared = a1.clone();
        drop(a1);
        assert_eq!(gate.open(), 3, "a clone keeps the place");
        drop(shared);
        let _a3 = gate.enter(a).unwrap();
        drop((a2, b1));
        assert_eq!(gate.open(), 1);
        let unlimited_ip = Gate::new(10, 0);
        let held: Vec<_> = (0..10 + HEALTH_RESERVE)
            .map(|_| unlimited_ip.enter(a).unwrap())
            .collect();
        assert!(unlimited_ip.enter(b).is_none(), "the reserve is full too");
        drop(held);
    }
}
