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
use std::net::IpAddr;
use std::sync::Arc;
use std::time::Duration;
use tokio::io::AsyncWriteExt;
use tokio::net::{TcpListener, TcpStream};
use tokio_util::task::TaskTracker;
use tower::ServiceExt;

/// Counts open connections, overall and per IP.
pub struct Gate {
    max_total: usize,
    /// 0: no per-IP cap.
    max_per_ip: usize,
    open: Mutex<(usize, HashMap<IpAddr, usize>)>,
}

/// One admitted connection; dropping the last clone frees its place.
#[derive(Clone)]
pub struct Slot(#[allow(dead_code)] Arc<SlotInner>);

struct SlotInner {
    gate: Arc<Gate>,
    ip: IpAddr,
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

    /// A place for a connection from `ip`, or `None` when a cap is reached.
    pub fn enter(self: &Arc<Gate>, ip: IpAddr) -> Option<Slot> {
        let mut open = self.open.lock();
        let from_ip = open.1.get(&ip).copied().unwrap_or(0);
        if open.0 >= self.max_total || (self.max_per_ip > 0 && from_ip >= self.max_per_ip) {
            return None;
        }
        open.0 += 1;
        *open.1.entry(ip).or_insert(0) += 1;
        Some(Slot(Arc::new(SlotInner {
            gate: Arc::clone(self),
            ip,
        })))
    }

    /// Open connections now.
    pub fn open(&self) -> usize {
        self.open.lock().0
    }
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
    let gate = Gate::new(config.max_connections, config.max_connections_per_ip);
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
        let service = hyper::service::service_fn(move |mut request: Request<Incoming>| {
            request.extensions_mut().insert(ConnectInfo(peer));
            request.extensions_mut().insert(slot.clone());
            router.clone().oneshot(request.map(Body::new))
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
        assert!(gate.enter(b).is_none(), "overall cap");
        let shared = a1.clone();
        drop(a1);
        assert_eq!(gate.open(), 3, "a clone keeps the place");
        drop(shared);
        let _a3 = gate.enter(a).unwrap();
        drop((a2, b1));
        assert_eq!(gate.open(), 1);
        let unlimited_ip = Gate::new(10, 0);
        let held: Vec<_> = (0..10).map(|_| unlimited_ip.enter(a).unwrap()).collect();
        assert!(unlimited_ip.enter(b).is_none());
        drop(held);
    }
}
