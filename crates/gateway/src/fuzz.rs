//! Fuzzing the gateway's parsers of hostile input, on stable Rust: the
//! WebSocket frame parser, the server-API bodies, user-JWT and
//! channel-token verification, the Socket.IO packet decoder with the
//! requests and payloads it reads, and channel-definition patterns. No fuzzing engine crate runs on stable
//! without a nightly toolchain (cargo-fuzz) or an external binary (AFL), so
//! this is a mutation fuzzer of its own, without coverage feedback: valid
//! seeds, mutated by byte flips, insertions of syntax and of edge-case
//! tokens, deletions, duplications, splices and long repetitions, fed to
//! each target under `catch_unwind` with every call timed. For tokens, half
//! the inputs mutate the header and claims and are then signed with the
//! app's key, so that they pass the signature and reach the checks after it.
//!
//! `cargo run --release -p herald-gateway --example fuzz -- 10000000 7`
//! runs 10 million inputs per target; `tests/fuzz.rs` runs a short one in
//! CI.

use crate::auth::{
    mint_user_token, sign_channel_token, verify_channel_token, verify_user_token, Apps, UserClaims,
};
use crate::config::AppConfig;
use herald_protocol::api::{PublishRequest, TokenRequest};
use serde_json::json;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::time::{Duration, Instant};

/// A small deterministic generator (xorshift64*).
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Self {
        Rng(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1)
    }

    pub fn next_u64(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    pub fn below(&mut self, n: usize) -> usize {
        (self.next_u64() % n.max(1) as u64) as usize
    }
}

/// What the fuzzer inserts: JSON syntax, edge-case values, token pieces.
const PIECES: &[&str] = &[
    "{",
    "}",
    "[",
    "]",
    ":",
    ",",
    "\"",
    "\\",
    "\\u0000",
    "\\ud800",
    "null",
    "true",
    "-0",
    "1e999",
    "18446744073709551617",
    "9007199254740993",
    "0.1",
    "\"type\"",
    "\"subscribe\"",
    "\"publish\"",
    "\"history\"",
    "\"refresh\"",
    "\"channel\"",
    "\"payload\"",
    "\"since\"",
    "\"options\"",
    "\"claims\"",
    "realtime:",
    "presence:",
    "42",
    "/",
    "%",
    "_",
    ".",
    "..",
    "eyJ",
    "alg",
    "none",
    "HS256",
    "=",
    "\u{0}",
    "é",
    "\u{FEFF}",
    "[[[[[[[[[[[[[[[[",
    "]]]]]]]]]]]]]]]]",
];

/// One mutation of `seed`, drawing on `others` for splices.
pub fn mutate(rng: &mut Rng, seed: &[u8], others: &[Vec<u8>]) -> Vec<u8> {
    let mut out = seed.to_vec();
    for _ in 0..1 + rng.below(4) {
        let at = rng.below(out.len() + 1);
        match rng.below(7) {
            0 if !out.is_empty() => {
                let i = rng.below(out.len());
                out[i] ^= 1 << rng.below(8);
            }
            1 => {
                let piece = PIECES[rng.below(PIECES.len())].as_bytes();
                out.splice(at..at, piece.iter().copied());
            }
            2 if !out.is_empty() => {
                let end = (at + 1 + rng.below(16)).min(out.len());
                out.drain(at.min(end)..end);
            }
            3 if !out.is_empty() => {
                let start = rng.below(out.len());
                let end = (start + 1 + rng.below(64)).min(out.len());
                let copy: Vec<u8> = out[start..end].to_vec();
                out.splice(at..at, copy);
            }
            4 if !others.is_empty() => {
                let other = &others[rng.below(others.len())];
                let from = rng.below(other.len() + 1);
                out.truncate(at);
                out.extend_from_slice(&other[from..]);
            }
            5 => out.insert(at.min(out.len()), rng.next_u64() as u8),
            6 if rng.below(8) == 0 => {
                // A long run: deep nesting, a huge string or number.
                let piece = PIECES[rng.below(PIECES.len())].as_bytes();
                let times = 1 + rng.below(4096);
                let run: Vec<u8> = piece
                    .iter()
                    .copied()
                    .cycle()
                    .take(piece.len() * times)
                    .collect();
                out.splice(at..at, run);
            }
            _ => out.truncate(at),
        }
    }
    // Bounded: nothing a client could send is larger than a frame.
    out.truncate(64 * 1024);
    out
}

/// A token whose header and claims (as JSON text) are mutated, then
/// signed with the app's key: it passes the signature check.
fn resign(rng: &mut Rng, token: &[u8], key: &jsonwebtoken::EncodingKey) -> Vec<u8> {
    use base64::Engine;
    let engine = base64::engine::general_purpose::URL_SAFE_NO_PAD;
    let text = String::from_utf8_lossy(token);
    let mut parts = text.split('.');
    let (Some(header), Some(claims)) = (parts.next(), parts.next()) else {
        return token.to_vec();
    };
    let decode = |part: &str| engine.decode(part).unwrap_or_default();
    let (mut header, mut claims) = (decode(header), decode(claims));
    if rng.below(4) == 0 {
        header = mutate(rng, &header, &[]);
    } else {
        claims = mutate(rng, &claims, &[]);
    }
    let message = format!("{}.{}", engine.encode(&header), engine.encode(&claims));
    match jsonwebtoken::crypto::sign(message.as_bytes(), key, jsonwebtoken::Algorithm::HS256) {
        Ok(signature) => format!("{message}.{signature}").into_bytes(),
        Err(_) => token.to_vec(),
    }
}

/// What a run found.
#[derive(Debug, Default)]
pub struct Report {
    pub inputs: u64,
    pub panics: Vec<String>,
    /// The slowest single input.
    pub slowest: Duration,
}

/// The fuzz targets.
pub const TARGETS: &[&str] = &[
    "frames",
    "api-bodies",
    "user-tokens",
    "channel-tokens",
    "socketio-packets",
    "channel-patterns",
];

fn socketio_seeds() -> Vec<Vec<u8>> {
    [
        r#"0{"token":"anon_fuzz","apiKey":"k"}"#,
        "0/admin,",
        r#"212["realtime:subscribe",{"channel":"order:1","since":{"epoch":"e","offset":3},"replaySeconds":5}]"#,
        r#"2/chat,3["realtime:publish",{"channel":"a","event":"e","payload":{"x":[1,{"meta":null}]}}]"#,
        r#"2["realtime:publish",{"channel":"a","event":"e","payload":"text"}]"#,
        r#"27["realtime:unsubscribe",{"channel":"a"}]"#,
        r#"31[{"ok":true}]"#,
        "1",
        r#"451-["x",{"_placeholder":true,"num":0}]"#,
    ]
    .iter()
    .map(|s| s.as_bytes().to_vec())
    .collect()
}

fn pattern_seeds() -> Vec<Vec<u8>> {
    ["order:%", "chat:%:messages", "a-b:%c%:d", "orders", "x:%%"]
        .iter()
        .map(|s| s.as_bytes().to_vec())
        .collect()
}

fn frame_seeds() -> Vec<Vec<u8>> {
    [
        r#"{"type":"subscribe","id":1,"channel":"c","global":true,"token":"t","contextOverrides":["issue"],"since":{"epoch":"e","offset":3},"replaySeconds":5}"#,
        r#"{"type":"publish","id":2,"channel":"c","event":"e","payload":{"a":[1,2,{"b":null}]},"idempotencyKey":"k"}"#,
        r#"{"type":"unsubscribe","channel":"c"}"#,
        r#"{"type":"presence","id":3,"channel":"c","global":false}"#,
        r#"{"type":"history","id":4,"channel":"c","limit":10,"since":{"epoch":"e","offset":0}}"#,
        r#"{"type":"refresh","id":5,"token":"eyJhbGciOiJIUzI1NiJ9.e30.x"}"#,
    ]
    .iter()
    .map(|s| s.as_bytes().to_vec())
    .collect()
}

fn body_seeds() -> Vec<Vec<u8>> {
    [
        r#"{"channel":"c","payload":{"x":1},"event":"e","context":{"issue":"1","n":2},"options":{"token":"t","contextOverrides":["issue"],"idempotencyKey":"k"}}"#,
        r#"{"channel":"c","claims":{"uid":7,"teams":["a"]},"permissions":["subscribe","publish"],"ttlSeconds":60}"#,
    ]
    .iter()
    .map(|s| s.as_bytes().to_vec())
    .collect()
}

const SECRET: &str = "fuzz-secret-0123456789abcdefghijklmnop";

fn apps() -> Apps {
    Apps::new(&[AppConfig {
        id: "f".into(),
        jwt_secret: Some(SECRET.into()),
        ..AppConfig::default()
    }])
    .expect("a valid app")
}

fn token_seeds(apps: &Apps) -> Vec<Vec<u8>> {
    let now = jsonwebtoken::get_current_timestamp();
    let user = mint_user_token(
        SECRET,
        &UserClaims {
            sub: "u".into(),
            app: "f".into(),
            exp: now + 600,
            nbf: None,
            iat: Some(now),
            role: None,
            email: None,
            ctx: json!({"issue": "1", "n": 2}).as_object().cloned(),
        },
    )
    .expect("mint");
    let app = apps.get("f").expect("the app");
    let (channel, _) =
        sign_channel_token(app, "c", json!({"team": "a"}), None, 600, now).expect("sign");
    vec![user.into_bytes(), channel.into_bytes()]
}

/// Runs `inputs` mutated inputs through `target` from `seed`.
pub fn run(target: &str, inputs: u64, seed: u64) -> Report {
    let mut rng = Rng::new(seed);
    let apps = apps();
    let seeds = match target {
        "frames" => frame_seeds(),
        "api-bodies" => body_seeds(),
        "socketio-packets" => socketio_seeds(),
        "channel-patterns" => pattern_seeds(),
        _ => token_seeds(&apps),
    };
    let app = apps.get("f").expect("the app");
    let key = jsonwebtoken::EncodingKey::from_secret(SECRET.as_bytes());
    let tokens = target.ends_with("tokens");
    let mut report = Report::default();
    for _ in 0..inputs {
        let seed_input = &seeds[rng.below(seeds.len())];
        let input = if tokens && rng.below(2) == 0 {
            resign(&mut rng, seed_input, &key)
        } else {
            mutate(&mut rng, seed_input, &seeds)
        };
        let text = String::from_utf8_lossy(&input);
        let started = Instant::now();
        let outcome = catch_unwind(AssertUnwindSafe(|| match target {
            "frames" => {
                let _ = herald_protocol::client::parse(&text);
                let _ = herald_protocol::client::salvage_id(&text);
            }
            "api-bodies" => {
                let _ = serde_json::from_slice::<PublishRequest>(&input);
                let _ = serde_json::from_slice::<TokenRequest>(&input);
                let _ = crate::realtime::publish::nesting_beyond(&text, 64);
            }
            "user-tokens" => {
                let _ = verify_user_token(&apps, &text);
            }
            "socketio-packets" => crate::socketio::read_hostile(&text),
            "channel-patterns" => {
                use herald_store::pattern;
                let _ = pattern::validate(&text);
                let mid = (0..=text.len() / 2)
                    .rev()
                    .find(|&i| text.is_char_boundary(i))
                    .unwrap_or(0);
                let (p, c) = text.split_at(mid);
                let _ = pattern::matches(p, c);
                let _ = pattern::most_specific(c, [(p, ()), (text.as_ref(), ())]);
            }
            _ => {
                let _ = verify_channel_token(app, &text, "c");
            }
        }));
        report.slowest = report.slowest.max(started.elapsed());
        report.inputs += 1;
        if outcome.is_err() && report.panics.len() < 10 {
            report.panics.push(text.into_owned());
        }
    }
    report
}
