//! Socket.IO v5 packets in their text form, as they travel inside Engine.IO
//! `message` packets: `<type>[<namespace>,][<ack id>][<JSON>]`.
//!
//! Packets Herald writes carry Engine.IO's message type in front (`4`), as
//! they travel on a WebSocket; over engineioxide, which adds its own, the
//! first byte is cut off (without a copy).
//!
//! Only what Herald's surface needs is read: `CONNECT` (with its `auth`
//! object), `DISCONNECT`, `EVENT` (with an ack id when the client passed a
//! callback) and the client's `ACK`s (which Herald never asks for, and
//! ignores). Binary packets are refused: every Herald payload is JSON.

use serde_json::value::RawValue;
use std::fmt::Write;

/// A packet from a client.
#[derive(Debug)]
pub enum Incoming<'a> {
    /// `CONNECT` to `namespace` with the handshake's `auth` object (`None`
    /// when the client sent none).
    Connect {
        namespace: &'a str,
        auth: Option<&'a RawValue>,
    },
    Disconnect {
        namespace: &'a str,
    },
    /// `EVENT`: the event's name and its arguments (the first is the one
    /// Herald reads), with the ack id the answer goes to.
    Event {
        namespace: &'a str,
        ack: Option<u64>,
        name: String,
        args: Vec<&'a RawValue>,
    },
    /// A client's `ACK` (to an ack Herald never asked for).
    Ack,
}

/// Why a packet could not be read; the ack id when one could be found,
/// so the refusal can answer it.
#[derive(Debug, PartialEq, Eq)]
pub struct Malformed {
    pub why: &'static str,
    pub ack: Option<u64>,
}

fn malformed(why: &'static str, ack: Option<u64>) -> Malformed {
    Malformed { why, ack }
}

/// Reads one packet.
pub fn parse(text: &str) -> Result<Incoming<'_>, Malformed> {
    let bytes = text.as_bytes();
    let Some(&kind) = bytes.first() else {
        return Err(malformed("empty packet", None));
    };
    if !kind.is_ascii_digit() {
        return Err(malformed("unknown packet type", None));
    }
    let mut rest = &text[1..];
    // Namespace: present when the packet goes to one other than `/`.
    let namespace = if rest.starts_with('/') {
        match rest.find(',') {
            Some(end) => {
                let ns = &rest[..end];
                rest = &rest[end + 1..];
                ns
            }
            None => {
                let ns = rest;
                rest = "";
                ns
            }
        }
    } else {
        "/"
    };
    // Ack id: the digits before the JSON.
    let digits = rest.bytes().take_while(u8::is_ascii_digit).count();
    let ack = match digits {
        0 => None,
        // More digits than any id a client makes (they count from 0).
        n if n > 15 => return Err(malformed("ack id too long", None)),
        n => rest[..n].parse().ok(),
    };
    rest = &rest[digits..];
    match kind {
        b'0' => {
            let auth = match rest.trim() {
                "" => None,
                json => Some(
                    serde_json::from_str::<&RawValue>(json)
                        .map_err(|_| malformed("CONNECT data is not JSON", None))?,
                ),
            };
            Ok(Incoming::Connect { namespace, auth })
        }
        b'1' => Ok(Incoming::Disconnect { namespace }),
        b'2' => {
            let args: Vec<&RawValue> = serde_json::from_str(rest)
                .map_err(|_| malformed("EVENT data must be a JSON array", ack))?;
            let Some(first) = args.first() else {
                return Err(malformed("EVENT has no name", ack));
            };
            let name: String = serde_json::from_str(first.get())
                .map_err(|_| malformed("EVENT name must be a string", ack))?;
            Ok(Incoming::Event {
                namespace,
                ack,
                name,
                args: args[1..].to_vec(),
            })
        }
        b'3' => Ok(Incoming::Ack),
        b'5' | b'6' => Err(malformed(
            "binary packets are not supported; send JSON",
            None,
        )),
        _ => Err(malformed("unknown packet type", ack)),
    }
}

/// `CONNECT` accepted: the Socket.IO session id.
pub fn connected(sid: &str) -> String {
    format!(r#"40{{"sid":{}}}"#, json_string(sid))
}

/// `CONNECT_ERROR` to `namespace`, with a message and `data.code`.
pub fn connect_error(namespace: &str, message: &str, code: &str) -> String {
    let mut out = String::from("44");
    if namespace != "/" {
        out.push_str(namespace);
        out.push(',');
    }
    let _ = write!(
        out,
        r#"{{"message":{},"data":{{"code":{}}}}}"#,
        json_string(message),
        json_string(code)
    );
    out
}

/// `DISCONNECT` of the namespace `/`, sent by the server: the client does
/// not reconnect on its own.
pub const DISCONNECT: &str = "41";

/// `EVENT` `name` with one argument, already JSON.
pub fn event(name: &str, data: &str) -> String {
    let name = json_string(name);
    let mut out = String::with_capacity(5 + name.len() + data.len());
    out.push_str("42[");
    out.push_str(&name);
    out.push(',');
    out.push_str(data);
    out.push(']');
    out
}

/// `ACK` `id` with one argument, already JSON.
pub fn ack(id: u64, data: &str) -> String {
    format!("43{id}[{data}]")
}

pub fn json_string(s: &str) -> String {
    serde_json::to_string(s).unwrap_or_else(|_| "\"\"".to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_what_socket_io_client_sends() {
        match parse(r#"0{"token":"anon_x"}"#).unwrap() {
            Incoming::Connect { namespace, auth } => {
                assert_eq!(namespace, "/");
                assert_eq!(auth.unwrap().get(), r#"{"token":"anon_x"}"#);
            }
            other => panic!("{other:?}"),
        }
        assert!(matches!(
            parse("0").unwrap(),
            Incoming::Connect {
                namespace: "/",
                auth: None
            }
        ));
        assert!(matches!(
            parse("0/admin,").unwrap(),
            Incoming::Connect {
                namespace: "/admin",
                ..
            }
        ));
        match parse(r#"212["realtime:subscribe",{"channel":"a"}]"#).unwrap() {
            Incoming::Event {
                ack, name, args, ..
            } => {
                assert_eq!(ack, Some(12));
                assert_eq!(name, "realtime:subscribe");
                assert_eq!(args[0].get(), r#"{"channel":"a"}"#);
            }
            other => panic!("{other:?}"),
        }
        match parse(r#"2/chat,["hi"]"#).unwrap() {
            Incoming::Event {
                namespace,
                ack,
                args,
                ..
            } => {
                assert_eq!((namespace, ack), ("/chat", None));
                assert!(args.is_empty());
            }
            other => panic!("{other:?}"),
        }
        assert!(matches!(parse("1").unwrap(), Incoming::Disconnect { .. }));
        assert!(matches!(parse("31[]").unwrap(), Incoming::Ack));
    }

    #[test]
    fn refuses_what_it_cannot_read_keeping_the_ack_id() {
        assert_eq!(parse("").unwrap_err().why, "empty packet");
        assert_eq!(parse("27{").unwrap_err().ack, Some(7));
        assert_eq!(parse("2[]").unwrap_err().why, "EVENT has no name");
        assert_eq!(parse("23[1]").unwrap_err().ack, Some(3));
        assert!(parse("51-[\"x\",{\"_placeholder\":true,\"num\":0}]").is_err());
        assert!(parse("9").is_err());
        // A first character of several bytes is not sliced through.
        assert!(parse("é2[]").is_err());
        assert!(parse("0{nope").is_err());
        assert!(parse("21234567890123456[\"x\"]").is_err());
    }

    #[test]
    fn writes_packets_the_client_reads() {
        assert_eq!(connected("s1"), r#"40{"sid":"s1"}"#);
        assert_eq!(
            connect_error("/", "bad \"key\"", "UNAUTHORIZED"),
            r#"44{"message":"bad \"key\"","data":{"code":"UNAUTHORIZED"}}"#
        );
        assert_eq!(
            connect_error("/x", "m", "C"),
            r#"44/x,{"message":"m","data":{"code":"C"}}"#
        );
        assert_eq!(event("a\"b", "{}"), r#"42["a\"b",{}]"#);
        assert_eq!(ack(4, r#"{"ok":true}"#), r#"434[{"ok":true}]"#);
    }
}
