//! Herald's native protocol, as much as the harness needs.

use futures_util::{SinkExt, StreamExt};
use std::time::{Duration, SystemTime, UNIX_EPOCH};
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};

pub type Socket = WebSocketStream<MaybeTlsStream<TcpStream>>;

pub fn now_us() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_micros() as u64)
        .unwrap_or(0)
}

/// Connects as an API-key connection and waits for `connected`. A 429
/// (per-IP connection limit) is retried after the server's hint, at most
/// `retries` times.
pub async fn connect(base: &str, api_key: &str, retries: u32) -> Result<Socket, String> {
    let url = format!("{}/v1/ws?apiKey={api_key}", base.trim_end_matches('/'));
    let mut attempt = 0;
    loop {
        // Small read buffers (tens of thousands of sockets live here) and
        // no Nagle: small frames must leave at once.
        let config = tokio_tungstenite::tungstenite::protocol::WebSocketConfig::default()
            .read_buffer_size(4096)
            .write_buffer_size(0);
        match tokio_tungstenite::connect_async_with_config(&url, Some(config), true).await {
            Ok((mut ws, _)) => {
                match tokio::time::timeout(Duration::from_secs(10), ws.next()).await {
                    Ok(Some(Ok(Message::Text(t)))) if t.as_str().contains("\"connected\"") => {
                        return Ok(ws)
                    }
                    other => return Err(format!("no connected frame: {other:?}")),
                }
            }
            Err(tokio_tungstenite::tungstenite::Error::Http(r))
                if r.status() == 429 && attempt < retries =>
            {
                attempt += 1;
                let wait = r
                    .headers()
                    .get("retry-after")
                    .and_then(|v| v.to_str().ok())
                    .and_then(|v| v.parse::<u64>().ok())
                    .unwrap_or(1);
                tokio::time::sleep(Duration::from_secs(wait)).await;
            }
            Err(e) => return Err(e.to_string()),
        }
    }
}

/// Subscribes to a global channel and waits for the reply.
pub async fn subscribe(ws: &mut Socket, channel: &str) -> Result<(), String> {
    let frame = format!(r#"{{"id":1,"type":"subscribe","channel":"{channel}","global":true}}"#);
    ws.send(Message::Text(frame.into()))
        .await
        .map_err(|e| e.to_string())?;
    loop {
        match tokio::time::timeout(Duration::from_secs(30), ws.next()).await {
            Ok(Some(Ok(Message::Text(t)))) => {
                let t = t.as_str();
                if t.contains("\"reply\"") {
                    return if t.contains("\"ok\":true") {
                        Ok(())
                    } else {
                        Err(t.to_owned())
                    };
                }
            }
            Ok(Some(Ok(_))) => {}
            other => return Err(format!("subscribe failed: {other:?}")),
        }
    }
}

/// A publish frame with `id`: the payload carries the send time and a
/// sequence number, padded to `size` bytes.
pub fn publish_frame(id: u64, channel: &str, seq: u64, size: usize) -> String {
    let head = format!(r#"{{"t":{},"s":{seq},"p":""#, now_us());
    let pad = size.saturating_sub(head.len() + 2);
    format!(
        r#"{{"id":{id},"type":"publish","channel":"{channel}","global":true,"payload":{head}{}"}}}}"#,
        "x".repeat(pad)
    )
}

/// The `id`, success and error code of a reply frame.
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

/// Reads `"t":<µs>` and `"s":<seq>` from an event frame without parsing
/// the whole frame.
pub fn stamp(frame: &str) -> Option<(u64, u64)> {
    let number = |key: &str| -> Option<u64> {
        let at = frame.find(key)? + key.len();
        let digits: String = frame[at..]
            .chars()
            .take_while(|c| c.is_ascii_digit())
            .collect();
        digits.parse().ok()
    };
    if !frame.starts_with("{\"type\":\"event\"") {
        return None;
    }
    Some((number("\"t\":")?, number("\"s\":")?))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frames_round_trip_their_stamp() {
        let frame = publish_frame(7, "bench", 42, 200);
        let v: serde_json::Value = serde_json::from_str(&frame).unwrap();
        assert_eq!(v["payload"]["s"], 42);
        assert_eq!(v["id"], 7);
        assert!(v["payload"].to_string().len() >= 190);
        let event = format!(
            r#"{{"type":"event","channel":"bench","global":true,"event":"message","payload":{},"meta":{{}}}}"#,
            v["payload"]
        );
        let (t, s) = stamp(&event).unwrap();
        assert_eq!(s, 42);
        assert!(t > 0);
    }
}
