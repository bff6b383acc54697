//! Static cost analysis: how many steps an expression may take, as a
//! polynomial in the sizes of the lists it iterates, and Forge's rules for
//! refusing one that is too complex.
//!
//! The analysis counts what the evaluator charges: one per variable access,
//! property access, operator and call, one per item of a literal. A list
//! method that takes a function multiplies what its function costs by the
//! size of its receiver: a literal list's length is a constant, anything
//! else is an *inferred variable* named after the receiver's source
//! (`event.changelog.items`), so the same list iterated twice is one
//! variable. `map`, `filter` and `slice` keep their receiver's size; a
//! `let` keeps its value's. Both branches of a condition are counted, so
//! the result is an upper bound on the steps, up to the sizes of texts,
//! which the evaluator also charges for.

use crate::ast::*;
use std::collections::BTreeMap;

/// Forge's limits on the estimate.
pub const MAX_VARIABLES: usize = 3;
pub const MAX_COMBINATIONS: usize = 3;
pub const MAX_VARIABLES_PER_COMBINATION: usize = 3;
pub const MAX_CONSTANT: u64 = 10_000;

const NAMES: &[&str] = &["N", "M", "L", "K", "J", "I", "H", "G", "F", "E", "D", "C"];

/// The estimate: terms (variables multiplied, with a coefficient) and what
/// each variable stands for.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Complexity {
    /// Most variables first; the constant (no variables) last.
    pub terms: Vec<Term>,
    /// `variables[i]` is the source of the list variable `i` counts.
    pub variables: Vec<String>,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Term {
    /// Indexes into [`Complexity::variables`], sorted, repeated for a power.
    pub variables: Vec<u8>,
    pub coefficient: u64,
}

impl Complexity {
    /// The name the rendering gives variable `i` (`N`, `M`, `L`, `K`, ...).
    pub fn name(i: u8) -> String {
        NAMES
            .get(i as usize)
            .map_or_else(|| format!("V{i}"), |n| (*n).to_owned())
    }

    pub fn constant(&self) -> u64 {
        self.terms
            .iter()
            .find(|t| t.variables.is_empty())
            .map_or(0, |t| t.coefficient)
    }

    /// Forge's refusal rules: at most 3 variables, 3 combinations, 3
    /// variables in a combination, and a constant of at most 10,000.
    pub fn check(&self) -> Result<(), String> {
        let combinations: Vec<&Term> = self
            .terms
            .iter()
            .filter(|t| !t.variables.is_empty())
            .collect();
        let too_complex =
            |why: String| Err(format!("The expression is too complex: {self}. {why}"));
        let mut used: Vec<u8> = combinations
            .iter()
            .flat_map(|t| t.variables.iter().copied())
            .collect();
        used.sort_unstable();
        used.dedup();
        if used.len() > MAX_VARIABLES {
            return too_complex(format!(
                "At most {MAX_VARIABLES} inferred variables are allowed, found {}.",
                used.len()
            ));
        }
        if combinations.len() > MAX_COMBINATIONS {
            return too_complex(format!(
                "At most {MAX_COMBINATIONS} variable combinations are allowed, found {}.",
                combinations.len()
            ));
        }
        if let Some(t) = combinations
            .iter()
            .find(|t| t.variables.len() > MAX_VARIABLES_PER_COMBINATION)
        {
            return too_complex(format!(
                "At most {MAX_VARIABLES_PER_COMBINATION} variables are allowed in one combination, found {}.",
                t.variables.len()
            ));
        }
        if self.constant() > MAX_CONSTANT {
            return too_complex(format!(
                "The constant part may be at most {MAX_CONSTANT}, found {}.",
                self.constant()
            ));
        }
        Ok(())
    }
}

/// `N*M + 10*N + 20`.
impl std::fmt::Display for Complexity {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if self.terms.is_empty() {
            return f.write_str("0");
        }
        for (i, term) in self.terms.iter().enumerate() {
            if i > 0 {
                f.write_str(" + ")?;
            }
            let names: Vec<String> = term
                .variables
                .iter()
                .map(|&v| Complexity::name(v))
                .collect();
            match (term.coefficient, names.is_empty()) {
                (c, true) => write!(f, "{c}")?,
                (1, false) => f.write_str(&names.join("*"))?,
                (c, false) => write!(f, "{c}*{}", names.join("*"))?,
            }
        }
        Ok(())
    }
}

/// The estimate for a program.
pub fn analyse(program: &Program) -> Complexity {
    let mut a = Analysis {
        poly: BTreeMap::new(),
        variables: Vec::new(),
        multiplier: Vec::new(),
        factor: 1,
        sizes: Vec::new(),
    };
    a.block(&program.body);
    let mut terms: Vec<Term> = a
        .poly
        .into_iter()
        .filter(|(_, c)| *c > 0)
        .map(|(variables, coefficient)| Term {
            variables,
            coefficient,
        })
        .collect();
    terms.sort_by(|x, y| {
        y.variables
            .len()
            .cmp(&x.variables.len())
            .then_with(|| x.variables.cmp(&y.variables))
    });
    Complexity {
        terms,
        variables: a.variables,
    }
}

/// What is known of a value's length.
#[derive(Clone, Copy)]
enum Size {
    Unknown,
    Constant(u64),
    Variable(u8),
}

struct Analysis {
    poly: BTreeMap<Vec<u8>, u64>,
    variables: Vec<String>,
    /// The variables the current code runs once per item of.
    multiplier: Vec<u8>,
    /// Constant iteration counts multiplied together.
    factor: u64,
    /// Per slot: the size of the binding's value.
    sizes: Vec<Size>,
}

impl Analysis {
    fn add(&mut self, steps: u64) {
        let mut key = self.multiplier.clone();
        key.sort_unstable();
        let cost = steps.saturating_mul(self.factor);
        let entry = self.poly.entry(key).or_insert(0);
        *entry = entry.saturating_add(cost);
    }

    fn block(&mut self, body: &[Stmt]) {
        let mark = self.sizes.len();
        for stmt in body {
            match stmt {
                Stmt::Let { value, .. } => {
                    let size = self.expr(value);
                    self.sizes.push(size);
                }
                Stmt::Return(value) | Stmt::Expr(value) => {
                    self.expr(value);
                }
                Stmt::If {
                    cond,
                    then,
                    otherwise,
                } => {
                    self.expr(cond);
                    self.block(then);
                    if let Some(otherwise) = otherwise {
                        self.block(otherwise);
                    }
                }
                Stmt::Try { body, handler, .. } => {
                    self.block(body);
                    let mark = self.sizes.len();
                    self.sizes.push(Size::Unknown);
                    self.block(handler);
                    self.sizes.truncate(mark);
                }
            }
        }
        self.sizes.truncate(mark);
    }

    fn expr(&mut self, e: &Expr) -> Size {
        use ExprKind::*;
        match &e.kind {
            Null | Bool(_) | Number(_) | String(_) => Size::Unknown,
            Throw(value) => {
                self.expr(value);
                Size::Unknown
            }
            Template(_) | Unary { .. } | Binary { .. } | Index { .. } => {
                self.add(1);
                for child in e.kind.children() {
                    self.expr(child);
                }
                Size::Unknown
            }
            List(items) => {
                self.add(items.len() as u64);
                for item in items {
                    self.expr(item);
                }
                Size::Constant(items.len() as u64)
            }
            Map(entries) => {
                self.add(entries.len() as u64);
                for (_, value) in entries {
                    self.expr(value);
                }
                Size::Unknown
            }
            Event => {
                self.add(1);
                Size::Unknown
            }
            Var { slot, .. } => {
                self.add(1);
                self.sizes
                    .get(*slot as usize)
                    .copied()
                    .unwrap_or(Size::Unknown)
            }
            Member { object, .. } => {
                self.expr(object);
                self.add(1);
                Size::Unknown
            }
            Conditional {
                cond,
                then,
                otherwise,
            } => {
                self.expr(cond);
                self.expr(then);
                self.expr(otherwise);
                Size::Unknown
            }
            Arrow { slot, params, body } => {
                self.function(*slot, params.len(), body);
                Size::Unknown
            }
            Call { callee, args } => match &callee.kind {
                Member { object, name, .. } => {
                    let receiver = self.expr(object);
                    self.add(1);
                    self.method(receiver, object, name, args)
                }
                _ => {
                    self.expr(callee);
                    for arg in args {
                        self.expr(arg);
                    }
                    self.add(1);
                    Size::Unknown
                }
            },
        }
    }

    fn function(&mut self, slot: u32, params: usize, body: &Expr) {
        let mark = self.sizes.len();
        self.sizes.resize(slot as usize, Size::Unknown);
        self.sizes
            .extend(std::iter::repeat_n(Size::Unknown, params));
        self.expr(body);
        self.sizes.truncate(mark);
    }

    fn method(&mut self, receiver: Size, object: &Expr, name: &str, args: &[Expr]) -> Size {
        match name {
            "filter" | "map" | "some" | "every" | "find" | "flatMap" | "reduce" => {
                let size = self.size_of(receiver, object);
                for init in args.iter().skip(1) {
                    self.expr(init);
                }
                self.times(size, |a| {
                    a.add(1);
                    if let Some(f) = args.first() {
                        match &f.kind {
                            ExprKind::Arrow { slot, params, body } => {
                                a.function(*slot, params.len(), body)
                            }
                            _ => {
                                a.expr(f);
                            }
                        }
                    }
                });
                match name {
                    "map" | "filter" => size,
                    _ => Size::Unknown,
                }
            }
            "includes" | "indexOf" | "slice" => {
                for arg in args {
                    self.expr(arg);
                }
                // A list of known size is scanned item by item; a string (or
                // a list of unknown size) costs one step here.
                if matches!(receiver, Size::Constant(_) | Size::Variable(_)) && name != "slice" {
                    self.times(receiver, |a| a.add(1));
                }
                if name == "slice" {
                    receiver
                } else {
                    Size::Unknown
                }
            }
            _ => {
                for arg in args {
                    self.expr(arg);
                }
                Size::Unknown
            }
        }
    }

    /// The size of a list about to be iterated: known, or a variable named
    /// after its source.
    fn size_of(&mut self, known: Size, object: &Expr) -> Size {
        match known {
            Size::Unknown => {
                let source = object.to_string();
                let i = match self.variables.iter().position(|v| *v == source) {
                    Some(i) => i,
                    None => {
                        self.variables.push(source);
                        self.variables.len() - 1
                    }
                };
                Size::Variable(i.min(u8::MAX as usize) as u8)
            }
            size => size,
        }
    }

    fn times(&mut self, size: Size, f: impl FnOnce(&mut Self)) {
        match size {
            Size::Constant(k) => {
                let saved = self.factor;
                self.factor = self.factor.saturating_mul(k);
                f(self);
                self.factor = saved;
            }
            Size::Variable(v) => {
                self.multiplier.push(v);
                f(self);
                self.multiplier.pop();
            }
            Size::Unknown => f(self),
        }
    }
}
