//! Values during evaluation.
//!
//! Whatever comes from the event is borrowed, never copied: a property
//! access on the event is a map lookup that yields a reference into it
//! ([`Val::JsonMap`], [`Val::JsonList`], [`Str::Borrowed`]). Only what the
//! expression builds itself (lists, maps, strings, functions) is owned, and
//! it records its nesting depth so that no value can grow deep enough to
//! overflow the stack when it is compared, printed or dropped.

use crate::ast::Expr;
use serde_json::{Map, Value};
use std::fmt::Write;
use std::rc::Rc;

/// How deep a value built by an expression may nest.
pub const MAX_VALUE_DEPTH: u32 = 64;

#[derive(Clone, Debug)]
pub enum Str<'a> {
    Borrowed(&'a str),
    Owned(Rc<str>),
}

impl Str<'_> {
    pub fn as_str(&self) -> &str {
        match self {
            Str::Borrowed(s) => s,
            Str::Owned(s) => s,
        }
    }
}

#[derive(Clone, Debug)]
pub enum Val<'a> {
    Null,
    Bool(bool),
    Num(f64),
    Str(Str<'a>),
    JsonList(&'a [Value]),
    JsonMap(&'a Map<String, Value>),
    List(Rc<ListVal<'a>>),
    Map(Rc<MapVal<'a>>),
    Func(Rc<Closure<'a>>),
}

#[derive(Debug)]
pub struct ListVal<'a> {
    pub items: Vec<Val<'a>>,
    pub depth: u32,
}

#[derive(Debug)]
pub struct MapVal<'a> {
    /// Unique keys, in insertion order.
    pub entries: Vec<(Str<'a>, Val<'a>)>,
    pub depth: u32,
}

/// An arrow function with the environment it was made in.
#[derive(Debug)]
pub struct Closure<'a> {
    pub params: &'a [String],
    pub slot: u32,
    pub body: &'a Expr,
    pub env: Vec<Val<'a>>,
    pub depth: u32,
}

/// The type names of the language, as `typeof` and error messages give them.
pub fn type_name(v: &Val<'_>) -> &'static str {
    match v {
        Val::Null => "Null",
        Val::Bool(_) => "Boolean",
        Val::Num(_) => "Number",
        Val::Str(_) => "String",
        Val::JsonList(_) | Val::List(_) => "List",
        Val::JsonMap(_) | Val::Map(_) => "Map",
        Val::Func(_) => "Function",
    }
}

impl<'a> Val<'a> {
    pub fn from_json(v: &'a Value) -> Val<'a> {
        match v {
            Value::Null => Val::Null,
            Value::Bool(b) => Val::Bool(*b),
            Value::Number(n) => Val::Num(n.as_f64().unwrap_or(f64::NAN)),
            Value::String(s) => Val::Str(Str::Borrowed(s)),
            Value::Array(items) => Val::JsonList(items),
            Value::Object(map) => Val::JsonMap(map),
        }
    }

    pub fn owned_str(s: String) -> Val<'a> {
        Val::Str(Str::Owned(Rc::from(s)))
    }

    /// Nesting depth: 0 for scalars; event data counts as 1, since the JSON
    /// parser that made it already bounds its depth.
    pub fn depth(&self) -> u32 {
        match self {
            Val::JsonList(_) | Val::JsonMap(_) => 1,
            Val::List(l) => l.depth,
            Val::Map(m) => m.depth,
            Val::Func(c) => c.depth,
            _ => 0,
        }
    }

    pub fn is_list(&self) -> bool {
        matches!(self, Val::JsonList(_) | Val::List(_))
    }

    /// The list's length, if this is a list.
    pub fn list_len(&self) -> Option<usize> {
        match self {
            Val::JsonList(items) => Some(items.len()),
            Val::List(l) => Some(l.items.len()),
            _ => None,
        }
    }

    /// Item `i` of a list (the caller checked the bounds).
    pub fn list_item(&self, i: usize) -> Val<'a> {
        match self {
            Val::JsonList(items) => Val::from_json(&items[i]),
            Val::List(l) => l.items[i].clone(),
            _ => Val::Null,
        }
    }

    /// Property `key` of a map; `None` when absent or not a map.
    pub fn map_get(&self, key: &str) -> Option<Val<'a>> {
        match self {
            Val::JsonMap(map) => map.get(key).map(Val::from_json),
            Val::Map(m) => m
                .entries
                .iter()
                .find(|(k, _)| k.as_str() == key)
                .map(|(_, v)| v.clone()),
            _ => None,
        }
    }

    /// The value as JSON (functions become `null`).
    pub fn to_json(&self) -> Value {
        match self {
            Val::Null | Val::Func(_) => Value::Null,
            Val::Bool(b) => Value::Bool(*b),
            Val::Num(n) => number_json(*n),
            Val::Str(s) => Value::String(s.as_str().to_owned()),
            Val::JsonList(items) => Value::Array(items.to_vec()),
            Val::JsonMap(map) => Value::Object((*map).clone()),
            Val::List(l) => Value::Array(l.items.iter().map(Val::to_json).collect()),
            Val::Map(m) => Value::Object(
                m.entries
                    .iter()
                    .map(|(k, v)| (k.as_str().to_owned(), v.to_json()))
                    .collect(),
            ),
        }
    }

    /// The text `+` and template literals make of a value.
    pub fn write_text(&self, out: &mut String) {
        match self {
            Val::Null => out.push_str("null"),
            Val::Bool(b) => {
                let _ = write!(out, "{b}");
            }
            Val::Num(n) => write_number(out, *n),
            Val::Str(s) => out.push_str(s.as_str()),
            Val::Func(_) => out.push_str("<function>"),
            other => out.push_str(&other.to_json().to_string()),
        }
    }
}

fn number_json(n: f64) -> Value {
    if n.fract() == 0.0 && n.abs() < 9.007_199_254_740_992e15 {
        Value::from(n as i64)
    } else {
        serde_json::Number::from_f64(n).map_or(Value::Null, Value::Number)
    }
}

/// Numbers print as JavaScript prints them for the common cases: integers
/// without a fraction, `-0` as `0`.
pub fn write_number(out: &mut String, n: f64) {
    if n == 0.0 {
        out.push('0');
    } else {
        let _ = write!(out, "{n}");
    }
}
