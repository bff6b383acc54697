//! JSON read exactly, for what decides who meets whom: channel-token
//! claims and product contexts are hashed into channel keys, so two
//! different inputs must never read as the same value.
//!
//! Refused: a key given twice in an object (serde_json keeps the last one
//! silently), and a number that is not an integer within ±(2^53 − 1)
//! (serde_json reads larger integers and decimals as binary floating point,
//! which rounds). Send such values as strings.

use serde::de::{self, Deserializer, MapAccess, SeqAccess, Visitor};
use serde::Deserialize;
use serde_json::{Map, Value};
use std::fmt;

/// The largest integer every JSON reader keeps exactly (2^53 − 1).
pub const MAX_EXACT_INTEGER: u64 = (1 << 53) - 1;

struct Exact(Value);

impl<'de> Deserialize<'de> for Exact {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_any(ExactVisitor)
    }
}

struct ExactVisitor;

fn inexact<E: de::Error>(what: impl fmt::Display) -> E {
    E::custom(format!(
        "{what} cannot be kept exactly: use integers within ±{MAX_EXACT_INTEGER}, or strings"
    ))
}

impl<'de> Visitor<'de> for ExactVisitor {
    type Value = Exact;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a JSON value")
    }

    fn visit_bool<E>(self, v: bool) -> Result<Exact, E> {
        Ok(Exact(Value::Bool(v)))
    }

    fn visit_i64<E: de::Error>(self, v: i64) -> Result<Exact, E> {
        if v.unsigned_abs() > MAX_EXACT_INTEGER {
            return Err(inexact(v));
        }
        Ok(Exact(Value::from(v)))
    }

    fn visit_u64<E: de::Error>(self, v: u64) -> Result<Exact, E> {
        if v > MAX_EXACT_INTEGER {
            return Err(inexact(v));
        }
        Ok(Exact(Value::from(v)))
    }

    fn visit_f64<E: de::Error>(self, v: f64) -> Result<Exact, E> {
        Err(inexact(format!("the number {v}")))
    }

    fn visit_str<E>(self, v: &str) -> Result<Exact, E> {
        Ok(Exact(Value::String(v.to_owned())))
    }

    fn visit_string<E>(self, v: String) -> Result<Exact, E> {
        Ok(Exact(Value::String(v)))
    }

    fn visit_unit<E>(self) -> Result<Exact, E> {
        Ok(Exact(Value::Null))
    }

    fn visit_none<E>(self) -> Result<Exact, E> {
        Ok(Exact(Value::Null))
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Exact, A::Error> {
        let mut items = Vec::new();
        while let Some(Exact(item)) = seq.next_element()? {
            items.push(item);
        }
        Ok(Exact(Value::Array(items)))
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Exact, A::Error> {
        let mut out = Map::new();
        while let Some(key) = map.next_key::<String>()? {
            if out.contains_key(&key) {
                return Err(de::Error::custom(format!("key `{key}` appears twice")));
            }
            let Exact(value) = map.next_value()?;
            out.insert(key, value);
        }
        Ok(Exact(Value::Object(out)))
    }
}

/// `deserialize_with` for a `Value` read exactly.
pub fn value<'de, D: Deserializer<'de>>(d: D) -> Result<Value, D::Error> {
    Exact::deserialize(d).map(|Exact(v)| v)
}

/// `deserialize_with` for an optional object read exactly.
pub fn opt_map<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Map<String, Value>>, D::Error> {
    match Option::<Exact>::deserialize(d)? {
        None | Some(Exact(Value::Null)) => Ok(None),
        Some(Exact(Value::Object(map))) => Ok(Some(map)),
        Some(_) => Err(de::Error::custom("expected an object")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Deserialize)]
    struct Holder {
        #[serde(deserialize_with = "value")]
        v: Value,
    }

    fn read(text: &str) -> Result<Value, String> {
        serde_json::from_str::<Holder>(text)
            .map(|h| h.v)
            .map_err(|e| e.to_string())
    }

    #[test]
    fn what_cannot_be_kept_exactly_is_refused() {
        assert_eq!(read(r#"{"v":{"a":[1,"x",null,true]}}"#).unwrap()["a"][0], 1);
        assert_eq!(
            read(r#"{"v":9007199254740991}"#).unwrap(),
            9007199254740991u64
        );
        assert_eq!(
            read(r#"{"v":-9007199254740991}"#).unwrap(),
            -9007199254740991i64
        );
        for bad in [
            r#"{"v":9007199254740992}"#,
            r#"{"v":-9007199254740992}"#,
            r#"{"v":18446744073709551617}"#,
            r#"{"v":1.5}"#,
            r#"{"v":1e3}"#,
            r#"{"v":{"uid":[0.1]}}"#,
        ] {
            let e = read(bad).unwrap_err();
            assert!(e.contains("exactly"), "{bad}: {e}");
        }
        let e = read(r#"{"v":{"a":1,"b":{"c":1,"c":2}}}"#).unwrap_err();
        assert!(e.contains("`c` appears twice"), "{e}");
        assert_eq!(
            read(r#"{"v":"18446744073709551617"}"#).unwrap(),
            "18446744073709551617"
        );
    }
}
