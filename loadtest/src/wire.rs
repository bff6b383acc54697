//! Shared wire helpers.

use std::time::{SystemTime, UNIX_EPOCH};
use tokio::net::TcpStream;
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};

pub type Socket = WebSocketStream<MaybeTlsStream<TcpStream>>;

pub fn now_us() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_micros() as u64)
        .unwrap_or(0)
}

/// The `id`, success and error code of a Herald reply frame.
pub fn reply(frame: &str) -> Option<(u64, Result<(), String>)> {
    let v: serde_json::Value = serde_json::from_str(frame).ok()?;
    if v["type"] != "reply" {
        return None;
    }
    let id = v["id"].as_u64()?;
    if v["ok"] == true {
        return Some((id, Ok(())));
    }
    Some((
        id,
        Err(v["error"]["code"].as_str().unwrap_or("UNKNOWN").to_owned()),
    ))
}
