//! Random programs, events and inputs for the property tests, the fuzzer
//! (`examples/fuzz.rs`) and its short run in the test suite. Not part of the
//! crate's API.
//!
//! A small xorshift generator keeps this free of dependencies and every
//! input reproducible from its seed.

use crate::ast::*;
use crate::methods::compile_pattern;
use crate::{Expression, Limits};
use serde_json::{json, Map, Value};

pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Rng {
        Rng(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1)
    }

    pub fn next_u64(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        self.0 = x;
        x
    }

    /// A number in `0..n` (n > 0).
    pub fn below(&mut self, n: usize) -> usize {
        (self.next_u64() % n as u64) as usize
    }

    pub fn chance(&mut self, percent: usize) -> bool {
        self.below(100) < percent
    }

    pub fn pick<'t, T>(&mut self, items: &'t [T]) -> &'t T {
        &items[self.below(items.len())]
    }
}

const KEYS: &[&str] = &["a", "b", "items", "name", "id", "if", "length"];
const METHODS: &[&str] = &[
    "filter",
    "map",
    "some",
    "every",
    "find",
    "flatMap",
    "reduce",
    "includes",
    "indexOf",
    "slice",
    "startsWith",
    "endsWith",
    "toLowerCase",
    "toUpperCase",
    "trim",
    "split",
    "match",
];
const STRINGS: &[&str] = &[
    "",
    "a",
    "it's",
    "line\nbreak",
    "$x",
    "back`tick",
    "ünï",
    "a,b",
    "\\",
    "\u{1}",
];

/// Valid patterns for `match` with a literal argument.
const PATTERNS: &[&str] = &["a", "[0-9]+", "^$", "(a|b)*", "\\\\", "\\n"];

/// A random event over the keys the generated programs use.
pub fn event(rng: &mut Rng, depth: u32) -> Value {
    match rng.below(if depth == 0 { 4 } else { 7 }) {
        0 => Value::Null,
        1 => json!(rng.chance(50)),
        2 => json!(rng.below(20) as f64 - 5.0),
        3 => json!(*rng.pick(STRINGS)),
        4 | 5 => {
            let mut map = Map::new();
            for _ in 0..rng.below(4) {
                map.insert((*rng.pick(KEYS)).to_owned(), event(rng, depth - 1));
            }
            Value::Object(map)
        }
        _ => Value::Array((0..rng.below(4)).map(|_| event(rng, depth - 1)).collect()),
    }
}

/// A random, well-scoped program.
pub fn program(rng: &mut Rng) -> Program {
    let mut g = Generator { rng, scope: 0 };
    let body = g.statements(3);
    Program { body }
}

struct Generator<'r> {
    rng: &'r mut Rng,
    /// Bindings in scope; binding `i` is named `v{i}`.
    scope: u32,
}

impl Generator<'_> {
    fn statements(&mut self, depth: u32) -> Vec<Stmt> {
        let mark = self.scope;
        let mut body = Vec::new();
        for _ in 0..self.rng.below(3) {
            body.push(self.statement(depth));
        }
        body.push(Stmt::Expr(self.expr(depth + 1)));
        self.scope = mark;
        body
    }

    fn statement(&mut self, depth: u32) -> Stmt {
        match self.rng.below(if depth == 0 { 2 } else { 5 }) {
            0 => {
                let value = self.expr(depth + 1);
                let name = format!("v{}", self.scope);
                self.scope += 1;
                Stmt::Let { name, value }
            }
            1 => Stmt::Expr(self.expr(depth + 1)),
            2 => Stmt::If {
                cond: self.expr(depth),
                then: self.statements(depth - 1),
                otherwise: self.rng.chance(50).then(|| self.statements(depth - 1)),
            },
            3 => {
                let body = self.statements(depth - 1);
                let name = format!("v{}", self.scope);
                self.scope += 1;
                let handler = self.statements(depth - 1);
                self.scope -= 1;
                Stmt::Try {
                    body,
                    name,
                    handler,
                }
            }
            _ => Stmt::Return(self.expr(depth)),
        }
    }

    fn leaf(&mut self) -> ExprKind {
        match self.rng.below(7) {
            0 => ExprKind::Null,
            1 => ExprKind::Bool(self.rng.chance(50)),
            2 => ExprKind::Number(self.rng.below(1000) as f64 / 8.0),
            3 => ExprKind::String((*self.rng.pick(STRINGS)).to_owned()),
            4 if self.scope > 0 => {
                let slot = self.rng.below(self.scope as usize) as u32;
                ExprKind::Var {
                    name: format!("v{slot}"),
                    slot,
                }
            }
            _ => ExprKind::Event,
        }
    }

    fn boxed(&mut self, depth: u32) -> Box<Expr> {
        Box::new(self.expr(depth - 1))
    }

    fn expr(&mut self, depth: u32) -> Expr {
        let pos = Pos::default();
        if depth == 0 || self.rng.chance(25) {
            return Expr::new(self.leaf(), pos);
        }
        let kind = match self.rng.below(13) {
            0 => ExprKind::List(
                (0..self.rng.below(4))
                    .map(|_| self.expr(depth - 1))
                    .collect(),
            ),
            1 => {
                let mut keys: Vec<&str> = KEYS.to_vec();
                let n = self.rng.below(3);
                ExprKind::Map(
                    (0..n)
                        .map(|_| {
                            let key = keys.remove(self.rng.below(keys.len()));
                            (key.to_owned(), self.expr(depth - 1))
                        })
                        .collect(),
                )
            }
            2 => {
                let mut parts = Vec::new();
                for i in 0..self.rng.below(4) {
                    if i % 2 == 0 {
                        parts.push(TemplatePart::Text(
                            (*self.rng.pick(&STRINGS[1..])).to_owned(),
                        ));
                    } else {
                        parts.push(TemplatePart::Expr(self.expr(depth - 1)));
                    }
                }
                ExprKind::Template(parts)
            }
            3 | 4 => ExprKind::Member {
                object: self.boxed(depth),
                name: (*self.rng.pick(KEYS)).to_owned(),
                optional: self.rng.chance(50),
            },
            5 => ExprKind::Index {
                object: self.boxed(depth),
                index: self.boxed(depth),
                optional: self.rng.chance(50),
            },
            6 | 7 => {
                let object = self.boxed(depth);
                let name = (*self.rng.pick(METHODS)).to_owned();
                let is_match = name == "match";
                let callee = Expr::new(
                    ExprKind::Member {
                        object,
                        name,
                        optional: self.rng.chance(30),
                    },
                    pos,
                );
                let mut args: Vec<Expr> = (0..self.rng.below(3))
                    .map(|_| {
                        if self.rng.chance(60) {
                            self.arrow(depth - 1)
                        } else {
                            self.expr(depth - 1)
                        }
                    })
                    .collect();
                // A literal pattern is compiled with the program, so an
                // invalid one (`'\\'`) would make the program not compile:
                // generated programs always do, so give `match` a valid one.
                if let (true, [arg]) = (is_match, args.as_mut_slice()) {
                    if matches!(&arg.kind, ExprKind::String(p) if compile_pattern(p).is_err()) {
                        arg.kind = ExprKind::String((*self.rng.pick(PATTERNS)).to_owned());
                    }
                }
                ExprKind::Call {
                    callee: Box::new(callee),
                    args,
                }
            }
            8 => ExprKind::Unary {
                op: *self
                    .rng
                    .pick(&[UnaryOp::Not, UnaryOp::Neg, UnaryOp::Typeof]),
                operand: self.boxed(depth),
            },
            9 | 10 => {
                use BinaryOp::*;
                ExprKind::Binary {
                    op: *self.rng.pick(&[
                        Coalesce, Or, And, Eq, Ne, Lt, Gt, Le, Ge, Add, Sub, Mul, Div, Rem,
                    ]),
                    left: self.boxed(depth),
                    right: self.boxed(depth),
                }
            }
            11 => ExprKind::Conditional {
                cond: self.boxed(depth),
                then: self.boxed(depth),
                otherwise: self.boxed(depth),
            },
            _ => {
                if self.rng.chance(50) {
                    ExprKind::Throw(self.boxed(depth))
                } else {
                    return self.arrow(depth);
                }
            }
        };
        Expr::new(kind, pos)
    }

    fn arrow(&mut self, depth: u32) -> Expr {
        let n = 1 + self.rng.below(2);
        let slot = self.scope;
        let params = (0..n as u32).map(|i| format!("v{}", slot + i)).collect();
        self.scope += n as u32;
        let body = Box::new(self.expr(depth.saturating_sub(1)));
        self.scope = slot;
        Expr::new(ExprKind::Arrow { params, slot, body }, Pos::default())
    }
}

// ---- fuzzing ----

const TOKENS: &[&str] = &[
    "event", "let", "return", "if", "else", "try", "catch", "throw", "typeof", "true", "false",
    "null", "x", "e", "(", ")", "[", "]", "{", "}", ".", "?.", "?", ":", "??", "||", "&&", "==",
    "!=", "<", ">", "<=", ">=", "+", "-", "*", "/", "%", "!", "=>", "=", ",", ";", "`", "${", "'",
    "\"", "\\", "0", "1.5", "1e308", "'s'", "\"t\"", "map", "filter", "reduce", "match", "length",
    "/*", "*/", "//", "\n", " ", "ü",
];

/// Seed inputs for mutation: typical filters and every construct.
pub const SEEDS: &[&str] = &[
    "event.issue.fields?.issueType?.name == 'Bug'",
    "try { return event.issue.fields? == 'Bug'; } catch (e) { throw `Unexpected error: \"${e.location}\" - ${e.message}.`; }",
    "event.changelog.items.some(i => i.field == 'status' && i.toString == 'Done')",
    "let l = event.a ?? []; if (l.length > 2) { l.map((x, i) => x + i) } else { l.reduce((a, b) => a + b, 0) }",
    "`${event.issue.key}: ${[1, 'a', null, {k: true}]}`.split(':').slice(-1)[0].match('[0-9]+')",
    "typeof event == 'Map' ? !event?.['x']?.y : -(1 % 2) / 3 * 4",
];

/// A random fuzz input: raw bytes, a soup of tokens, a mutated seed, or a
/// generated program printed.
pub fn fuzz_input(rng: &mut Rng) -> Vec<u8> {
    match rng.below(4) {
        0 => (0..rng.below(64)).map(|_| rng.next_u64() as u8).collect(),
        1 => {
            let mut out = String::new();
            for _ in 0..rng.below(40) {
                let token: &&str = rng.pick(TOKENS);
                out.push_str(token);
                if rng.chance(30) {
                    out.push(' ');
                }
            }
            out.into_bytes()
        }
        2 => {
            let mut bytes = rng.pick(SEEDS).as_bytes().to_vec();
            for _ in 0..1 + rng.below(4) {
                mutate(rng, &mut bytes);
            }
            bytes
        }
        _ => program(rng).to_string().into_bytes(),
    }
}

fn mutate(rng: &mut Rng, bytes: &mut Vec<u8>) {
    let at = rng.below(bytes.len() + 1);
    match rng.below(4) {
        0 if at < bytes.len() => {
            bytes.remove(at);
        }
        1 => {
            let token = rng.pick(TOKENS).as_bytes();
            bytes.splice(at..at, token.iter().copied());
        }
        2 if at < bytes.len() => bytes[at] = rng.next_u64() as u8,
        _ => {
            let end = (at + rng.below(16)).min(bytes.len());
            let span = bytes[at..end].to_vec();
            bytes.splice(at..at, span);
        }
    }
}

/// Runs one input through everything and checks what must always hold:
/// compiling never panics; a compiled program prints to text that parses
/// back to the same tree; evaluation stays within its budget; the cost
/// analysis renders. Returns what went wrong.
pub fn check_input(input: &[u8], events: &[Value]) -> Result<(), String> {
    let Ok(source) = std::str::from_utf8(input) else {
        return Ok(());
    };
    let limits = Limits::default();
    let Ok(expression) = Expression::compile_with(source, &limits) else {
        return Ok(());
    };
    let printed = expression.program().to_string();
    // Printing parenthesizes everything: the same tree, more text and more
    // parser nesting.
    let reparse = Limits {
        max_length: usize::MAX,
        max_depth: limits.max_depth * 4,
        ..limits.clone()
    };
    match Expression::compile_with(&printed, &reparse) {
        Ok(again) if again.program() == expression.program() => {}
        Ok(_) => return Err(format!("printing changed the tree: {printed}")),
        Err(e) => return Err(format!("printed form does not parse ({e}): {printed}")),
    }
    let _ = expression.complexity().to_string();
    let _ = expression.complexity().check();
    for event in events {
        let outcome = expression.evaluate(event);
        if outcome.steps > limits.max_steps {
            return Err(format!("{} steps taken", outcome.steps));
        }
    }
    Ok(())
}
