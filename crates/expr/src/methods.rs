//! The methods of lists and strings.
//!
//! Lists: `filter`, `map`, `some`, `every`, `find`, `flatMap`, `reduce`
//! (each takes a function, called with the item and its index), `includes`,
//! `indexOf`, `slice`. Strings: `includes`, `startsWith`, `endsWith`,
//! `toLowerCase`, `toUpperCase`, `trim`, `split`, `match`. `length` is a
//! property of both, handled with member access. A map's property holding a
//! function can be called like a method.
//!
//! Regular expressions use the `regex` crate, whose matching time is linear
//! in the text: a pattern cannot backtrack catastrophically. Patterns given
//! as literals are compiled with the expression; others are compiled when
//! met, with size limits, and charged for.

use crate::ast::{Expr, ExprKind, Pos};
use crate::eval::{fail, Machine, R};
use crate::value::{type_name, Val};

/// Longest pattern `match` compiles while evaluating.
pub const MAX_PATTERN_LENGTH: usize = 1000;

pub(crate) fn call<'a>(
    m: &mut Machine<'a>,
    receiver: Val<'a>,
    name: &str,
    args: &'a [Expr],
    pos: Pos,
) -> R<Val<'a>> {
    match &receiver {
        Val::JsonList(_) | Val::List(_) => list_method(m, receiver, name, args, pos),
        Val::Str(s) => string_method(m, s.as_str(), name, args, pos),
        Val::JsonMap(_) | Val::Map(_) => match receiver.map_get(name) {
            Some(f @ Val::Func(_)) => {
                let values = m.eval_all(args)?;
                m.call_value(&f, &values, pos)
            }
            Some(other) => fail(
                pos,
                format!(
                    "Property \"{name}\" is a {}, not a function.",
                    type_name(&other)
                ),
            ),
            None => fail(pos, format!("Unknown method \"{name}\" of Map.")),
        },
        Val::Null => fail(pos, format!("Can't call \"{name}\" on null.")),
        other => fail(
            pos,
            format!("Unknown method \"{name}\" of {}.", type_name(other)),
        ),
    }
}

fn arity(name: &str, args: &[Expr], min: usize, max: usize, pos: Pos) -> R<()> {
    if args.len() < min || args.len() > max {
        let expected = if min == max {
            format!("{min}")
        } else {
            format!("{min} to {max}")
        };
        return fail(
            pos,
            format!(
                "\"{name}\" takes {expected} argument{}, got {}.",
                if max == 1 { "" } else { "s" },
                args.len()
            ),
        );
    }
    Ok(())
}

/// The function a list method calls per item. An arrow function written
/// in place runs in the current environment, without making a closure.
enum Callback<'a> {
    Inline {
        params: &'a [String],
        slot: u32,
        body: &'a Expr,
    },
    Value(Val<'a>),
}

impl<'a> Callback<'a> {
    fn new(m: &mut Machine<'a>, arg: &'a Expr) -> R<Self> {
        match &arg.kind {
            ExprKind::Arrow { params, slot, body } => Ok(Callback::Inline {
                params,
                slot: *slot,
                body,
            }),
            _ => match m.eval(arg)? {
                f @ Val::Func(_) => Ok(Callback::Value(f)),
                other => fail(
                    arg.pos,
                    format!("A function was expected, got {}.", type_name(&other)),
                ),
            },
        }
    }

    fn invoke(&self, m: &mut Machine<'a>, args: &[Val<'a>], pos: Pos) -> R<Val<'a>> {
        m.charge(1, pos)?;
        match self {
            Callback::Inline { params, slot, body } => m.apply(params, *slot, body, args, pos),
            Callback::Value(f) => m.call_value(f, args, pos),
        }
    }
}

fn list_method<'a>(
    m: &mut Machine<'a>,
    list: Val<'a>,
    name: &str,
    args: &'a [Expr],
    pos: Pos,
) -> R<Val<'a>> {
    let n = list.list_len().unwrap_or(0);
    match name {
        "filter" | "map" | "some" | "every" | "find" | "flatMap" => {
            arity(name, args, 1, 1, pos)?;
            let f = Callback::new(m, &args[0])?;
            let mut out = Vec::new();
            for i in 0..n {
                let item = list.list_item(i);
                let r = f.invoke(m, &[item.clone(), Val::Num(i as f64)], pos)?;
                match name {
                    "map" => out.push(r),
                    "flatMap" => match r {
                        inner if inner.is_list() => {
                            let len = inner.list_len().unwrap_or(0);
                            m.charge(len as u64, pos)?;
                            out.extend((0..len).map(|j| inner.list_item(j)));
                        }
                        other => out.push(other),
                    },
                    _ => {
                        let Val::Bool(hit) = r else {
                            return fail(
                                pos,
                                format!(
                                    "The function given to \"{name}\" must return a Boolean, got {}.",
                                    type_name(&r)
                                ),
                            );
                        };
                        match (name, hit) {
                            ("filter", true) => out.push(item),
                            ("some", true) => return Ok(Val::Bool(true)),
                            ("every", false) => return Ok(Val::Bool(false)),
                            ("find", true) => return Ok(item),
                            _ => {}
                        }
                    }
                }
            }
            match name {
                "some" => Ok(Val::Bool(false)),
                "every" => Ok(Val::Bool(true)),
                "find" => Ok(Val::Null),
                _ => m.make_list(out, pos),
            }
        }
        "reduce" => {
            arity(name, args, 1, 2, pos)?;
            let f = Callback::new(m, &args[0])?;
            let (mut acc, start) = match args.get(1) {
                Some(init) => (m.eval(init)?, 0),
                None if n == 0 => {
                    return fail(pos, "\"reduce\" of an empty List needs an initial value.")
                }
                None => (list.list_item(0), 1),
            };
            for i in start..n {
                acc = f.invoke(m, &[acc, list.list_item(i), Val::Num(i as f64)], pos)?;
                m.check_depth(acc.depth(), pos)?;
            }
            Ok(acc)
        }
        "includes" | "indexOf" => {
            arity(name, args, 1, 1, pos)?;
            let wanted = m.eval(&args[0])?;
            for i in 0..n {
                m.charge(1, pos)?;
                if m.equal(&list.list_item(i), &wanted, false, pos)? {
                    return Ok(if name == "includes" {
                        Val::Bool(true)
                    } else {
                        Val::Num(i as f64)
                    });
                }
            }
            Ok(if name == "includes" {
                Val::Bool(false)
            } else {
                Val::Num(-1.0)
            })
        }
        "slice" => {
            arity(name, args, 1, 2, pos)?;
            let start = slice_bound(m, &args[0], n, name)?;
            let end = match args.get(1) {
                Some(e) => slice_bound(m, e, n, name)?,
                None => n,
            };
            let items: Vec<Val<'a>> = (start..end.max(start)).map(|i| list.list_item(i)).collect();
            m.charge(items.len() as u64, pos)?;
            m.make_list(items, pos)
        }
        _ => fail(pos, format!("Unknown method \"{name}\" of List.")),
    }
}

/// A `slice` bound: a whole number, negative counting from the end,
/// clamped to the list.
fn slice_bound<'a>(m: &mut Machine<'a>, arg: &'a Expr, len: usize, name: &str) -> R<usize> {
    match m.eval(arg)? {
        Val::Num(n) => {
            let n = n.trunc();
            let len = len as f64;
            let at = if n < 0.0 {
                (len + n).max(0.0)
            } else {
                n.min(len)
            };
            Ok(at as usize)
        }
        other => fail(
            arg.pos,
            format!(
                "The arguments of \"{name}\" must be Numbers, got {}.",
                type_name(&other)
            ),
        ),
    }
}

fn string_arg<'a>(m: &mut Machine<'a>, arg: &'a Expr, name: &str) -> R<String> {
    match m.eval(arg)? {
        Val::Str(s) => Ok(s.as_str().to_owned()),
        other => fail(
            arg.pos,
            format!(
                "The argument of \"{name}\" must be a String, got {}.",
                type_name(&other)
            ),
        ),
    }
}

fn string_method<'a>(
    m: &mut Machine<'a>,
    s: &str,
    name: &str,
    args: &'a [Expr],
    pos: Pos,
) -> R<Val<'a>> {
    match name {
        "includes" | "startsWith" | "endsWith" => {
            arity(name, args, 1, 1, pos)?;
            let needle = string_arg(m, &args[0], name)?;
            m.charge_text(s.len() + needle.len(), pos)?;
            Ok(Val::Bool(match name {
                "includes" => s.contains(needle.as_str()),
                "startsWith" => s.starts_with(needle.as_str()),
                _ => s.ends_with(needle.as_str()),
            }))
        }
        "toLowerCase" | "toUpperCase" | "trim" => {
            arity(name, args, 0, 0, pos)?;
            m.charge_text(s.len(), pos)?;
            Ok(Val::owned_str(match name {
                "toLowerCase" => s.to_lowercase(),
                "toUpperCase" => s.to_uppercase(),
                _ => s.trim().to_owned(),
            }))
        }
        "split" => {
            arity(name, args, 0, 1, pos)?;
            m.charge_text(s.len(), pos)?;
            let parts: Vec<String> = match args.first() {
                None => vec![s.to_owned()],
                Some(arg) => {
                    let sep = string_arg(m, arg, name)?;
                    if sep.is_empty() {
                        s.chars().map(String::from).collect()
                    } else {
                        s.split(sep.as_str()).map(str::to_owned).collect()
                    }
                }
            };
            m.charge(parts.len() as u64, pos)?;
            m.make_list(parts.into_iter().map(Val::owned_str).collect(), pos)
        }
        "match" => {
            arity(name, args, 1, 1, pos)?;
            let pattern = string_arg(m, &args[0], name)?;
            let regex = match m.regexes.get(&pattern) {
                Some(r) => r.clone(),
                None => match m.compiled.get(&pattern) {
                    Some(r) => r.clone(),
                    None => {
                        // Compiling costs far more than a step (measured in
                        // tests/limits.rs): 1,000 steps and 10 per byte of
                        // pattern, once per pattern and evaluation.
                        m.charge(1000 + 10 * pattern.len() as u64, pos)?;
                        let r = compile_pattern(&pattern).or_else(|e| fail(args[0].pos, e))?;
                        m.compiled.insert(pattern, r.clone());
                        r
                    }
                },
            };
            m.charge_text(s.len(), pos)?;
            let mut found = Vec::new();
            for hit in regex.find_iter(s) {
                m.charge(1, pos)?;
                found.push(Val::owned_str(hit.as_str().to_owned()));
            }
            m.make_list(found, pos)
        }
        _ => fail(pos, format!("Unknown method \"{name}\" of String.")),
    }
}

/// A pattern for `match`, with bounds on its size.
pub fn compile_pattern(pattern: &str) -> Result<regex::Regex, String> {
    if pattern.len() > MAX_PATTERN_LENGTH {
        return Err(format!(
            "A regular expression may be at most {MAX_PATTERN_LENGTH} bytes long."
        ));
    }
    regex::RegexBuilder::new(pattern)
        .size_limit(1 << 20)
        .dfa_size_limit(1 << 20)
        .nest_limit(64)
        .build()
        .map_err(|e| {
            let detail = e.to_string();
            let last = detail.lines().last().unwrap_or("").trim().to_owned();
            format!("Invalid regular expression: {last}")
        })
}
