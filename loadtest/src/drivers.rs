//! The three wire protocols the harness speaks, so one scenario measures
//! the same work on Herald, on a Socket.IO cluster and on a Pusher-protocol
//! server (Sockudo).
//!
//! - `native`: Herald's protocol; subscribers and publisher on API-key
//!   connections, publishes acknowledged by replies.
//! - `socketio`: Engine.IO 4 / Socket.IO 5 packets over WebSocket. The
//!   server under test handles two events, `subscribe` (joins the room, with
//!   an ack) and `publish` (`io.to(room).emit("message", payload)`), as
//!   `loadtest/compare` sets it up.
//! - `insforge`: Socket.IO as InsForge Realtime speaks it, for Herald's
//!   own `/socket.io/` (`docs/insforge.md`): the API key in the `CONNECT`
//!   packet's auth, `realtime:subscribe` (acknowledged) and
//!   `realtime:publish`; the publisher subscribes to the channels it
//!   publishes on, as the surface requires, and discards its own copies.
//! - `pusher`: the Pusher channels protocol; subscribers use
//!   `pusher:subscribe`, publishes go through the signed HTTP API.

use crate::wire::{now_us, Socket};
use futures_util::{SinkExt, StreamExt};
use hmac::{Hmac, Mac};
use md5::{Digest as _, Md5};
use sha2::Sha256;
use std::time::Duration;
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;
use tokio_tungstenite::tungstenite::Message;

#[derive(Debug, Clone, PartialEq, Eq, clap::ValueEnum)]
pub enum Kind {
    Native,
    Socketio,
    Insforge,
    Pusher,
}

/// Events in one Pusher `batch_events` request (the protocol's limit).
pub const PUSHER_BATCH: usize = 10;

/// A driver with its credentials.
#[derive(Debug, Clone)]
pub struct Driver {
    pub kind: Kind,
    /// Herald: the API key. Pusher: the app key.
    pub key: String,
    /// Pusher: app id and secret, for the HTTP API.
    pub app_id: String,
    pub secret: String,
}

async fn open_socket(url: &str) -> Result<Socket, String> {
    let config = WebSocketConfig::default()
        .read_buffer_size(4096)
        .write_buffer_size(0);
    let mut attempt = 0;
    loop {
        match tokio_tungstenite::connect_async_with_config(url, Some(config), true).await {
            Ok((ws, _)) => return Ok(ws),
            Err(tokio_tungstenite::tungstenite::Error::Http(r))
                if r.status() == 429 && attempt < 30 =>
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

async fn next_text(ws: &mut Socket, within: Duration) -> Result<String, String> {
    loop {
        match tokio::time::timeout(within, ws.next()).await {
            Ok(Some(Ok(Message::Text(t)))) => return Ok(t.as_str().to_owned()),
            Ok(Some(Ok(_))) => {}
            other => return Err(format!("connection ended: {other:?}")),
        }
    }
}

impl Driver {
    /// Connects and completes the protocol's handshake.
    pub async fn connect(&self, base: &str) -> Result<Socket, String> {
        let base = base.trim_end_matches('/');
        let wait = Duration::from_secs(10);
        match self.kind {
            Kind::Native => {
                let mut ws = open_socket(&format!("{base}/v1/ws?apiKey={}", self.key)).await?;
                let hello = next_text(&mut ws, wait).await?;
                if !hello.contains("\"connected\"") {
                    return Err(format!("unexpected first frame {hello}"));
                }
                Ok(ws)
            }
            Kind::Socketio | Kind::Insforge => {
                let mut ws =
                    open_socket(&format!("{base}/socket.io/?EIO=4&transport=websocket")).await?;
                let open = next_text(&mut ws, wait).await?;
                if !open.starts_with('0') {
                    return Err(format!("unexpected Engine.IO open {open}"));
                }
                let connect = match self.kind {
                    Kind::Insforge => format!(r#"40{{"apiKey":"{}"}}"#, self.key),
                    _ => "40".to_owned(),
                };
                ws.send(Message::Text(connect.into()))
                    .await
                    .map_err(|e| e.to_string())?;
                loop {
                    let frame = next_text(&mut ws, wait).await?;
                    if frame.starts_with("40") {
                        return Ok(ws);
                    }
                    if frame.starts_with("44") {
                        return Err(format!("refused: {frame}"));
                    }
                }
            }
            Kind::Pusher => {
                let mut ws = open_socket(&format!(
                    "{base}/app/{}?protocol=7&client=herald-loadtest&version=1.0",
                    self.key
                ))
                .await?;
                let hello = next_text(&mut ws, wait).await?;
                if !hello.contains("pusher:connection_established") {
                    return Err(format!("unexpected first frame {hello}"));
                }
                Ok(ws)
            }
        }
    }

    /// Subscribes and waits for the confirmation.
    pub async fn subscribe(&self, ws: &mut Socket, channel: &str) -> Result<(), String> {
        let (frame, confirmed): (String, fn(&str) -> bool) = match self.kind {
            Kind::Native => (
                format!(r#"{{"id":1,"type":"subscribe","channel":"{channel}","global":true}}"#),
                |f| f.contains("\"reply\"") && f.contains("\"ok\":true"),
            ),
            // `421` asks for ack 1; the server acks with `431`.
            Kind::Socketio => (format!(r#"421["subscribe","{channel}"]"#), |f| {
                f.starts_with("431")
            }),
            Kind::Insforge => (
                format!(r#"421["realtime:subscribe",{{"channel":"{channel}"}}]"#),
                |f| f.starts_with("431") && f.contains("\"ok\":true"),
            ),
            Kind::Pusher => (
                format!(r#"{{"event":"pusher:subscribe","data":{{"channel":"{channel}"}}}}"#),
                |f| f.contains("subscription_succeeded"),
            ),
        };
        ws.send(Message::Text(frame.into()))
            .await
            .map_err(|e| e.to_string())?;
        loop {
            let f = next_text(ws, Duration::from_secs(30)).await?;
            if confirmed(&f) {
                return Ok(());
            }
            if f.contains("\"ok\":false") || f.contains("pusher:error") {
                return Err(f);
            }
        }
    }

    /// The payload of a publication: send time, sequence, padding.
    pub fn payload(seq: u64, size: usize) -> String {
        let head = format!(r#"{{"t":{},"s":{seq},"p":""#, now_us());
        let pad = size.saturating_sub(head.len() + 2);
        format!("{head}{}\"}}", "x".repeat(pad))
    }

    /// A publish frame for the WebSocket publishers (native, socketio).
    pub fn publish_frame(&self, id: u64, channel: &str, payload: &str) -> String {
        match self.kind {
            Kind::Native => format!(
                r#"{{"id":{id},"type":"publish","channel":"{channel}","global":true,"payload":{payload}}}"#
            ),
            Kind::Socketio => {
                format!(r#"42["publish",{{"room":"{channel}","payload":{payload}}}]"#)
            }
            Kind::Insforge => format!(
                r#"42["realtime:publish",{{"channel":"{channel}","event":"message","payload":{payload}}}]"#
            ),
            Kind::Pusher => String::new(),
        }
    }

    /// Pusher: the signed HTTP request publishing `payload` on `channel`.
    pub fn pusher_request(
        &self,
        base_http: &str,
        channel: &str,
        payload: &str,
    ) -> (String, String) {
        let body = serde_json::json!({"name": "message", "channels": [channel], "data": payload})
            .to_string();
        self.pusher_signed(base_http, &format!("/apps/{}/events", self.app_id), body)
    }

    /// Pusher: one signed request for several publications (channel,
    /// payload), in order (`batch_events`, at most
    /// [`PUSHER_BATCH`] events); one event goes to `events`.
    pub fn pusher_batch_request(
        &self,
        base_http: &str,
        events: &[(&str, &str)],
    ) -> (String, String) {
        if let [(channel, payload)] = events {
            return self.pusher_request(base_http, channel, payload);
        }
        let batch: Vec<serde_json::Value> = events
            .iter()
            .map(|(channel, payload)| {
                serde_json::json!({"name": "message", "channel": channel, "data": payload})
            })
            .collect();
        let body = serde_json::json!({ "batch": batch }).to_string();
        self.pusher_signed(
            base_http,
            &format!("/apps/{}/batch_events", self.app_id),
            body,
        )
    }

    fn pusher_signed(&self, base_http: &str, path: &str, body: String) -> (String, String) {
        let body_md5 = hex::encode(Md5::digest(body.as_bytes()));
        let timestamp = now_us() / 1_000_000;
        let query = format!(
            "auth_key={}&auth_timestamp={timestamp}&auth_version=1.0&body_md5={body_md5}",
            self.key
        );
        let to_sign = format!("POST\n{path}\n{query}");
        let signature = match Hmac::<Sha256>::new_from_slice(self.secret.as_bytes()) {
            Ok(mut mac) => {
                mac.update(to_sign.as_bytes());
                hex::encode(mac.finalize().into_bytes())
            }
            Err(_) => String::new(),
        };
        (
            format!("{base_http}{path}?{query}&auth_signature={signature}"),
            body,
        )
    }

    /// What a subscriber answers to a server frame (Engine.IO pings).
    pub fn answer(&self, frame: &str) -> Option<&'static str> {
        (matches!(self.kind, Kind::Socketio | Kind::Insforge) && frame == "2").then_some("3")
    }
}

/// The send time and sequence number of a delivered publication, from
/// whichever protocol carried it (Pusher nests the payload as a string, so
/// its quotes arrive escaped).
pub fn stamp(frame: &str) -> Option<(u64, u64)> {
    // Called for every delivery: no allocation.
    let number = |plain: &str, escaped: &str| -> Option<u64> {
        for pattern in [plain, escaped] {
            if let Some(at) = frame.find(pattern) {
                let rest = &frame[at + pattern.len()..];
                let end = rest
                    .find(|c: char| !c.is_ascii_digit())
                    .unwrap_or(rest.len());
                return rest[..end].parse().ok();
            }
        }
        None
    };
    let is_publication = frame.starts_with("{\"type\":\"event\"")
        || frame.starts_with("42[\"message\"")
        || (frame.contains("\"event\":\"message\"") && frame.contains("\"data\""));
    if !is_publication {
        return None;
    }
    Some((
        number("\"t\":", "\\\"t\\\":")?,
        number("\"s\":", "\\\"s\\\":")?,
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stamps_in_every_protocol() {
        let payload = Driver::payload(9, 64);
        let native = format!(
            r#"{{"type":"event","channel":"b","global":true,"event":"message","payload":{payload},"meta":{{}}}}"#
        );
        let socketio = format!(r#"42["message",{payload}]"#);
        let pusher =
            serde_json::json!({"event":"message","channel":"b","data": payload}).to_string();
        for frame in [native, socketio, pusher] {
            let (t, s) = stamp(&frame).unwrap_or_else(|| panic!("no stamp in {frame}"));
            assert_eq!(s, 9);
            assert!(t > 0);
        }
        assert!(stamp(r#"{"type":"reply","id":1}"#).is_none());
    }

    #[test]
    fn pusher_signature_matches_the_documented_example() {
        // The worked example of the Pusher HTTP API reference.
        let d = Driver {
            kind: Kind::Pusher,
            key: "278d425bdf160c739803".into(),
            app_id: "3".into(),
            secret: "7ad3773142a6692b25b8".into(),
        };
        let to_sign = "POST\n/apps/3/events\nauth_key=278d425bdf160c739803&auth_timestamp=1353088179&auth_version=1.0&body_md5=ec365a775a4cd0599faeb73354201b6f";
        let mut mac = Hmac::<Sha256>::new_from_slice(d.secret.as_bytes()).unwrap();
        mac.update(to_sign.as_bytes());
        assert_eq!(
            hex::encode(mac.finalize().into_bytes()),
            "da454824c97ba181a32ccc17a72625ba02771f50b50e1e7430e47a1f3f457e6c"
        );
        let (url, body) = d.pusher_request("http://127.0.0.1:6001", "bench-0", "{}");
        assert!(
            url.starts_with("http://127.0.0.1:6001/apps/3/events?auth_key=278d425bdf160c739803")
        );
        assert!(body.contains("\"channels\":[\"bench-0\"]"));
    }
}
