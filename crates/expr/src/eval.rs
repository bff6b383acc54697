//! The evaluator: walks a compiled [`Program`] over one event.
//!
//! Every step is charged before it is taken ([`Machine::charge`]): a
//! variable access, a property access, an operator, a function call, one
//! per item a list method visits or a literal builds, and one per 64 bytes
//! of text an operation reads or writes. The budget therefore bounds time
//! and memory together, not just the number of nodes visited. Two more
//! bounds keep the native stack safe: evaluation depth (function values
//! can call each other) and the nesting depth of built values.
//!
//! Errors are catchable by `try/catch` unless they are about a limit: an
//! expression that ran out of budget must not get to run more code.

use crate::ast::*;
use crate::error::ExprError;
use crate::methods;
use crate::value::*;
use serde_json::Value;
use std::collections::HashMap;
use std::rc::Rc;

/// Deepest evaluation recursion, counting nested calls of function values.
pub const MAX_EVAL_DEPTH: u32 = 1024;

/// Room left on the stack below which evaluation continues on a new segment.
const STACK_RED_ZONE: usize = 256 * 1024;
const STACK_SEGMENT: usize = 1024 * 1024;

pub(crate) type Regexes = HashMap<String, regex::Regex>;

pub(crate) struct Fault {
    pub error: ExprError,
    /// False for limits (budget, depth): a `catch` must not see them.
    pub catchable: bool,
}

pub(crate) type R<T> = Result<T, Fault>;

pub(crate) fn fail<T>(pos: Pos, message: impl Into<String>) -> R<T> {
    Err(Fault {
        error: ExprError::new(pos, message),
        catchable: true,
    })
}

fn limit(pos: Pos, message: String) -> Fault {
    Fault {
        error: ExprError::new(pos, message),
        catchable: false,
    }
}

enum Flow<'a> {
    Normal(Option<Val<'a>>),
    Return(Val<'a>),
}

pub(crate) struct Machine<'a> {
    pub event: &'a Value,
    pub env: Vec<Val<'a>>,
    pub steps: u64,
    pub max_steps: u64,
    depth: u32,
    /// Patterns given as literals, compiled with the expression.
    pub regexes: &'a Regexes,
    /// Patterns computed while evaluating, compiled once per evaluation.
    pub compiled: Regexes,
}

impl<'a> Machine<'a> {
    pub fn new(event: &'a Value, max_steps: u64, regexes: &'a Regexes) -> Self {
        Machine {
            event,
            env: Vec::new(),
            steps: 0,
            max_steps,
            depth: 0,
            regexes,
            compiled: Regexes::new(),
        }
    }

    pub fn charge(&mut self, steps: u64, pos: Pos) -> R<()> {
        self.steps += steps;
        if self.steps > self.max_steps {
            self.steps = self.max_steps;
            return Err(limit(
                pos,
                format!("Evaluation exceeded the limit of {} steps.", self.max_steps),
            ));
        }
        Ok(())
    }

    /// Charges for touching `bytes` of text: one step per 64 bytes.
    pub fn charge_text(&mut self, bytes: usize, pos: Pos) -> R<()> {
        self.charge((bytes / 64) as u64, pos)
    }

    fn deeper<T>(&mut self, pos: Pos, f: impl FnOnce(&mut Self) -> R<T>) -> R<T> {
        self.depth += 1;
        if self.depth > MAX_EVAL_DEPTH {
            self.depth -= 1;
            return Err(limit(
                pos,
                format!("Evaluation nested too deeply: more than {MAX_EVAL_DEPTH} levels."),
            ));
        }
        // Debug builds take several times the stack of release builds per
        // level; growing the stack on demand keeps the depth limit the only
        // limit, whatever the profile and the thread's stack size. Checking
        // every 8th level is enough: the red zone holds 8 levels' frames.
        let result = if self.depth.is_multiple_of(8) {
            stacker::maybe_grow(STACK_RED_ZONE, STACK_SEGMENT, || f(self))
        } else {
            f(self)
        };
        self.depth -= 1;
        result
    }

    /// A built value may not nest deeper than [`MAX_VALUE_DEPTH`].
    pub fn check_depth(&self, depth: u32, pos: Pos) -> R<u32> {
        if depth > MAX_VALUE_DEPTH {
            return Err(limit(
                pos,
                format!("A value may nest at most {MAX_VALUE_DEPTH} levels deep."),
            ));
        }
        Ok(depth)
    }

    pub fn make_list(&self, items: Vec<Val<'a>>, pos: Pos) -> R<Val<'a>> {
        let depth = 1 + items.iter().map(Val::depth).max().unwrap_or(0);
        let depth = self.check_depth(depth, pos)?;
        Ok(Val::List(Rc::new(ListVal { items, depth })))
    }

    // ---- statements ----

    pub fn run(&mut self, program: &'a Program) -> R<Val<'a>> {
        match self.block(&program.body)? {
            Flow::Return(v) | Flow::Normal(Some(v)) => Ok(v),
            Flow::Normal(None) => fail(
                Pos { line: 1, column: 1 },
                "The expression has no value: end it with an expression or a `return`.",
            ),
        }
    }

    fn block(&mut self, body: &'a [Stmt]) -> R<Flow<'a>> {
        let mark = self.env.len();
        let result = self.statements(body);
        self.env.truncate(mark);
        result
    }

    fn statements(&mut self, body: &'a [Stmt]) -> R<Flow<'a>> {
        let mut last = None;
        for stmt in body {
            match stmt {
                Stmt::Let { value, .. } => {
                    let v = self.eval(value)?;
                    self.env.push(v);
                }
                Stmt::Return(value) => return Ok(Flow::Return(self.eval(value)?)),
                Stmt::Expr(value) => last = Some(self.eval(value)?),
                Stmt::If {
                    cond,
                    then,
                    otherwise,
                } => {
                    let branch = match self.eval(cond)? {
                        Val::Bool(true) => Some(then),
                        Val::Bool(false) => otherwise.as_ref(),
                        other => {
                            return fail(
                                cond.pos,
                                format!(
                                    "The condition of `if` must be a Boolean, got {}.",
                                    type_name(&other)
                                ),
                            )
                        }
                    };
                    if let Some(branch) = branch {
                        match self.deeper(cond.pos, |m| m.block(branch))? {
                            Flow::Return(v) => return Ok(Flow::Return(v)),
                            Flow::Normal(v) => last = v.or(last),
                        }
                    }
                }
                Stmt::Try { body, handler, .. } => {
                    let mark = self.env.len();
                    let flow = match self.block(body) {
                        Ok(flow) => flow,
                        Err(fault) if fault.catchable => {
                            self.env.truncate(mark);
                            let caught = self.error_value(&fault.error);
                            self.env.push(caught);
                            let flow = self.block(handler);
                            self.env.truncate(mark);
                            flow?
                        }
                        Err(fault) => return Err(fault),
                    };
                    match flow {
                        Flow::Return(v) => return Ok(Flow::Return(v)),
                        Flow::Normal(v) => last = v.or(last),
                    }
                }
            }
        }
        Ok(Flow::Normal(last))
    }

    /// What a `catch` binding holds: `{message, location}`.
    fn error_value(&self, error: &ExprError) -> Val<'a> {
        Val::Map(Rc::new(MapVal {
            entries: vec![
                (
                    Str::Borrowed("message"),
                    Val::owned_str(error.message.clone()),
                ),
                (Str::Borrowed("location"), Val::owned_str(error.location())),
            ],
            depth: 1,
        }))
    }

    // ---- expressions ----

    /// The values of call arguments, in order.
    pub fn eval_all(&mut self, args: &'a [Expr]) -> R<Vec<Val<'a>>> {
        args.iter().map(|a| self.eval(a)).collect()
    }

    pub fn eval(&mut self, e: &'a Expr) -> R<Val<'a>> {
        self.deeper(e.pos, |m| m.eval_node(e))
    }

    fn eval_node(&mut self, e: &'a Expr) -> R<Val<'a>> {
        use ExprKind::*;
        match &e.kind {
            Null => Ok(Val::Null),
            Bool(b) => Ok(Val::Bool(*b)),
            Number(n) => Ok(Val::Num(*n)),
            String(s) => Ok(Val::Str(Str::Borrowed(s))),
            Event => {
                self.charge(1, e.pos)?;
                Ok(Val::from_json(self.event))
            }
            Var { slot, .. } => {
                self.charge(1, e.pos)?;
                Ok(self.env.get(*slot as usize).cloned().unwrap_or(Val::Null))
            }
            Member { .. } | Index { .. } | Call { .. } => Ok(self.chain(e)?.unwrap_or(Val::Null)),
            Template(parts) => self.template(parts, e.pos),
            List(items) => {
                self.charge(items.len() as u64, e.pos)?;
                let mut values = Vec::with_capacity(items.len());
                for item in items {
                    values.push(self.eval(item)?);
                }
                self.make_list(values, e.pos)
            }
            Map(entries) => {
                self.charge(entries.len() as u64, e.pos)?;
                let mut values = Vec::with_capacity(entries.len());
                for (key, value) in entries {
                    values.push((Str::Borrowed(key.as_str()), self.eval(value)?));
                }
                let depth = 1 + values.iter().map(|(_, v)| v.depth()).max().unwrap_or(0);
                let depth = self.check_depth(depth, e.pos)?;
                Ok(Val::Map(Rc::new(MapVal {
                    entries: values,
                    depth,
                })))
            }
            Unary { op, operand } => self.unary(*op, operand, e.pos),
            Binary { op, left, right } => self.binary(*op, left, right, e.pos),
            Conditional {
                cond,
                then,
                otherwise,
            } => match self.eval(cond)? {
                Val::Bool(true) => self.eval(then),
                Val::Bool(false) => self.eval(otherwise),
                other => fail(
                    e.pos,
                    format!(
                        "The condition of `?:` must be a Boolean, got {}.",
                        type_name(&other)
                    ),
                ),
            },
            Arrow { params, slot, body } => {
                let depth = 1 + self.env.iter().map(Val::depth).max().unwrap_or(0);
                let depth = self.check_depth(depth, e.pos)?;
                Ok(Val::Func(Rc::new(Closure {
                    params,
                    slot: *slot,
                    body,
                    env: self.env.clone(),
                    depth,
                })))
            }
            Throw(value) => {
                let v = self.eval(value)?;
                let mut message = std::string::String::new();
                v.write_text(&mut message);
                fail(e.pos, message)
            }
        }
    }

    fn template(&mut self, parts: &'a [TemplatePart], pos: Pos) -> R<Val<'a>> {
        self.charge(1, pos)?;
        let mut out = std::string::String::new();
        for part in parts {
            match part {
                TemplatePart::Text(text) => out.push_str(text),
                TemplatePart::Expr(e) => self.eval(e)?.write_text(&mut out),
            }
        }
        self.charge_text(out.len(), pos)?;
        Ok(Val::owned_str(out))
    }

    /// Member access, indexing and calls. `None` means an optional access
    /// met null or a missing key: the rest of the chain is skipped and the
    /// whole chain is `null`, as in JavaScript.
    fn chain(&mut self, e: &'a Expr) -> R<Option<Val<'a>>> {
        match &e.kind {
            ExprKind::Member {
                object,
                name,
                optional,
            } => {
                let Some(obj) = self.receiver(object, *optional)? else {
                    return Ok(None);
                };
                self.charge(1, e.pos)?;
                self.member(obj, name, *optional, object, e.pos)
            }
            ExprKind::Index {
                object,
                index,
                optional,
            } => {
                let Some(obj) = self.receiver(object, *optional)? else {
                    return Ok(None);
                };
                let index = self.eval(index)?;
                self.charge(1, e.pos)?;
                self.index(obj, index, *optional, object, e.pos)
            }
            ExprKind::Call { callee, args } => match &callee.kind {
                ExprKind::Member {
                    object,
                    name,
                    optional,
                } => {
                    let Some(receiver) = self.receiver(object, *optional)? else {
                        return Ok(None);
                    };
                    self.charge(1, callee.pos)?;
                    methods::call(self, receiver, name, args, callee.pos).map(Some)
                }
                _ => {
                    let f = self.eval(callee)?;
                    let values = self.eval_all(args)?;
                    self.charge(1, e.pos)?;
                    self.call_value(&f, &values, e.pos).map(Some)
                }
            },
            _ => self.eval(e).map(Some),
        }
    }

    /// What a member access, index or method call applies to; `None` when
    /// the chain stops there (an optional access on null, or earlier).
    fn receiver(&mut self, object: &'a Expr, optional: bool) -> R<Option<Val<'a>>> {
        match self.link(object)? {
            Some(Val::Null) if optional => Ok(None),
            found => Ok(found),
        }
    }

    /// The object of a member access, index or call: itself part of the chain.
    fn link(&mut self, e: &'a Expr) -> R<Option<Val<'a>>> {
        match e.kind {
            ExprKind::Member { .. } | ExprKind::Index { .. } | ExprKind::Call { .. } => {
                self.deeper(e.pos, |m| m.chain(e))
            }
            _ => self.eval(e).map(Some),
        }
    }

    fn member(
        &mut self,
        obj: Val<'a>,
        name: &str,
        optional: bool,
        object: &Expr,
        pos: Pos,
    ) -> R<Option<Val<'a>>> {
        match &obj {
            Val::JsonMap(_) | Val::Map(_) => match obj.map_get(name) {
                Some(v) => Ok(Some(v)),
                None if optional => Ok(None),
                None => fail(
                    pos,
                    format!(
                        "Unrecognized property of `{}`: \"{name}\".",
                        describe(object)
                    ),
                ),
            },
            Val::JsonList(_) | Val::List(_) if name == "length" => {
                Ok(obj.list_len().map(|n| Val::Num(n as f64)))
            }
            Val::Str(s) if name == "length" => {
                let s = s.as_str();
                self.charge_text(s.len(), pos)?;
                Ok(Some(Val::Num(s.chars().count() as f64)))
            }
            Val::Null => fail(
                pos,
                format!(
                    "Can't read property \"{name}\" of null (`{}` is null).",
                    describe(object)
                ),
            ),
            _ if optional => Ok(None),
            other => fail(
                pos,
                format!(
                    "Unrecognized property of {} `{}`: \"{name}\".",
                    type_name(other),
                    describe(object)
                ),
            ),
        }
    }

    fn index(
        &mut self,
        obj: Val<'a>,
        index: Val<'a>,
        optional: bool,
        object: &Expr,
        pos: Pos,
    ) -> R<Option<Val<'a>>> {
        match (&obj, &index) {
            (Val::JsonMap(_) | Val::Map(_), Val::Str(key)) => {
                let key = key.as_str();
                match obj.map_get(key) {
                    Some(v) => Ok(Some(v)),
                    None if optional => Ok(None),
                    None => fail(
                        pos,
                        format!(
                            "Unrecognized property of `{}`: \"{key}\".",
                            describe(object)
                        ),
                    ),
                }
            }
            (Val::JsonList(_) | Val::List(_), Val::Num(n)) => {
                let len = obj.list_len().unwrap_or(0);
                match whole_index(*n).filter(|&i| i < len) {
                    Some(i) => Ok(Some(obj.list_item(i))),
                    None if optional => Ok(None),
                    None => fail(
                        pos,
                        format!("Index {n} is out of range for a List of length {len}."),
                    ),
                }
            }
            (Val::Str(s), Val::Num(n)) => {
                let s = s.as_str();
                self.charge_text(s.len(), pos)?;
                match whole_index(*n).and_then(|i| s.chars().nth(i)) {
                    Some(c) => Ok(Some(Val::owned_str(c.to_string()))),
                    None if optional => Ok(None),
                    None => fail(pos, format!("Index {n} is out of range for a String.")),
                }
            }
            (Val::Null, _) => fail(
                pos,
                format!("Can't index null (`{}` is null).", describe(object)),
            ),
            (o, i) => fail(
                pos,
                format!("Can't index a {} with a {}.", type_name(o), type_name(i)),
            ),
        }
    }

    /// Calls a function value with `args` (missing parameters are null,
    /// extra arguments are ignored).
    pub fn call_value(&mut self, f: &Val<'a>, args: &[Val<'a>], pos: Pos) -> R<Val<'a>> {
        let Val::Func(closure) = f else {
            return fail(pos, format!("A {} is not a function.", type_name(f)));
        };
        let saved = std::mem::replace(&mut self.env, closure.env.clone());
        let result = self.apply(closure.params, closure.slot, closure.body, args, pos);
        self.env = saved;
        result
    }

    /// Binds parameters in the current environment and evaluates `body`.
    pub fn apply(
        &mut self,
        params: &'a [String],
        slot: u32,
        body: &'a Expr,
        args: &[Val<'a>],
        pos: Pos,
    ) -> R<Val<'a>> {
        debug_assert_eq!(self.env.len(), slot as usize);
        self.env.truncate(slot as usize);
        for i in 0..params.len() {
            self.env.push(args.get(i).cloned().unwrap_or(Val::Null));
        }
        let result = self.deeper(pos, |m| m.eval(body));
        self.env.truncate(slot as usize);
        result
    }

    fn unary(&mut self, op: UnaryOp, operand: &'a Expr, pos: Pos) -> R<Val<'a>> {
        let v = self.eval(operand)?;
        self.charge(1, pos)?;
        match (op, v) {
            (UnaryOp::Not, Val::Bool(b)) => Ok(Val::Bool(!b)),
            (UnaryOp::Neg, Val::Num(n)) => Ok(Val::Num(-n)),
            (UnaryOp::Typeof, v) => Ok(Val::Str(Str::Borrowed(type_name(&v)))),
            (UnaryOp::Not, v) => fail(
                pos,
                format!("Operator `!` requires a Boolean, got {}.", type_name(&v)),
            ),
            (UnaryOp::Neg, v) => fail(
                pos,
                format!("Operator `-` requires a Number, got {}.", type_name(&v)),
            ),
        }
    }

    fn binary(&mut self, op: BinaryOp, left: &'a Expr, right: &'a Expr, pos: Pos) -> R<Val<'a>> {
        use BinaryOp::*;
        let l = self.eval(left)?;
        self.charge(1, pos)?;
        match op {
            And | Or => {
                let Val::Bool(l) = l else {
                    return fail(pos, logic_error(op, &l));
                };
                if l == (op == Or) {
                    return Ok(Val::Bool(l));
                }
                match self.eval(right)? {
                    Val::Bool(r) => Ok(Val::Bool(r)),
                    r => fail(pos, logic_error(op, &r)),
                }
            }
            Coalesce => match l {
                Val::Null => self.eval(right),
                l => Ok(l),
            },
            _ => {
                let r = self.eval(right)?;
                match op {
                    Eq => self.equal(&l, &r, true, pos).map(Val::Bool),
                    Ne => self.equal(&l, &r, true, pos).map(|b| Val::Bool(!b)),
                    Lt | Gt | Le | Ge => compare(op, &l, &r, pos),
                    Add => self.add(l, r, pos),
                    _ => arithmetic(op, &l, &r, pos),
                }
            }
        }
    }

    fn add(&mut self, l: Val<'a>, r: Val<'a>, pos: Pos) -> R<Val<'a>> {
        match (&l, &r) {
            (Val::Num(a), Val::Num(b)) => finite(a + b, "+", pos),
            (Val::Str(_), _) | (_, Val::Str(_)) if is_scalar(&l) && is_scalar(&r) => {
                let mut out = std::string::String::new();
                l.write_text(&mut out);
                r.write_text(&mut out);
                self.charge_text(out.len(), pos)?;
                Ok(Val::owned_str(out))
            }
            _ => fail(
                pos,
                format!(
                    "Operator `+` can't be applied to {} and {}.",
                    type_name(&l),
                    type_name(&r)
                ),
            ),
        }
    }

    /// `==`: null equals only null; values of one type compare by value
    /// (lists and maps deeply); different types are an error when `strict`,
    /// else unequal (inside lists and maps, and for `includes`).
    pub fn equal(&mut self, a: &Val<'a>, b: &Val<'a>, strict: bool, pos: Pos) -> R<bool> {
        match (a, b) {
            (Val::Null, Val::Null) => Ok(true),
            (Val::Null, _) | (_, Val::Null) => Ok(false),
            (Val::Bool(x), Val::Bool(y)) => Ok(x == y),
            (Val::Num(x), Val::Num(y)) => Ok(x == y),
            (Val::Str(x), Val::Str(y)) => {
                self.charge_text(x.as_str().len().min(y.as_str().len()), pos)?;
                Ok(x.as_str() == y.as_str())
            }
            (Val::Func(x), Val::Func(y)) => Ok(Rc::ptr_eq(x, y)),
            _ if a.is_list() && b.is_list() => {
                let n = a.list_len().unwrap_or(0);
                if n != b.list_len().unwrap_or(0) {
                    return Ok(false);
                }
                self.charge(n as u64, pos)?;
                for i in 0..n {
                    if !self.equal(&a.list_item(i), &b.list_item(i), false, pos)? {
                        return Ok(false);
                    }
                }
                Ok(true)
            }
            (Val::JsonMap(_) | Val::Map(_), Val::JsonMap(_) | Val::Map(_)) => {
                let keys = map_keys(a);
                if keys.len() != map_keys(b).len() {
                    return Ok(false);
                }
                self.charge(keys.len() as u64, pos)?;
                for key in keys {
                    let (Some(x), Some(y)) = (a.map_get(key), b.map_get(key)) else {
                        return Ok(false);
                    };
                    if !self.equal(&x, &y, false, pos)? {
                        return Ok(false);
                    }
                }
                Ok(true)
            }
            _ if strict => fail(
                pos,
                format!("Can't compare {} to {}.", type_name(a), type_name(b)),
            ),
            _ => Ok(false),
        }
    }
}

fn map_keys<'v>(m: &'v Val<'_>) -> Vec<&'v str> {
    match m {
        Val::JsonMap(map) => map.keys().map(String::as_str).collect(),
        Val::Map(m) => m.entries.iter().map(|(k, _)| k.as_str()).collect(),
        _ => Vec::new(),
    }
}

fn is_scalar(v: &Val<'_>) -> bool {
    matches!(v, Val::Null | Val::Bool(_) | Val::Num(_) | Val::Str(_))
}

fn logic_error(op: BinaryOp, v: &Val<'_>) -> String {
    format!(
        "Operator `{}` requires Boolean operands, got {}.",
        op.symbol(),
        type_name(v)
    )
}

fn finite<'a>(n: f64, op: &str, pos: Pos) -> R<Val<'a>> {
    if n.is_finite() {
        Ok(Val::Num(n))
    } else {
        fail(pos, format!("The result of `{op}` is not a finite number."))
    }
}

fn arithmetic<'a>(op: BinaryOp, l: &Val<'a>, r: &Val<'a>, pos: Pos) -> R<Val<'a>> {
    let (Val::Num(a), Val::Num(b)) = (l, r) else {
        return fail(
            pos,
            format!(
                "Operator `{}` can't be applied to {} and {}.",
                op.symbol(),
                type_name(l),
                type_name(r)
            ),
        );
    };
    if matches!(op, BinaryOp::Div | BinaryOp::Rem) && *b == 0.0 {
        return fail(pos, "Division by zero.");
    }
    let n = match op {
        BinaryOp::Sub => a - b,
        BinaryOp::Mul => a * b,
        BinaryOp::Div => a / b,
        _ => a % b,
    };
    finite(n, op.symbol(), pos)
}

fn compare<'a>(op: BinaryOp, l: &Val<'a>, r: &Val<'a>, pos: Pos) -> R<Val<'a>> {
    let ordering = match (l, r) {
        (Val::Num(a), Val::Num(b)) => a.partial_cmp(b),
        (Val::Str(a), Val::Str(b)) => Some(a.as_str().cmp(b.as_str())),
        _ => {
            return fail(
                pos,
                format!("Can't compare {} to {}.", type_name(l), type_name(r)),
            )
        }
    };
    let Some(ordering) = ordering else {
        return Ok(Val::Bool(false));
    };
    use std::cmp::Ordering::*;
    Ok(Val::Bool(match op {
        BinaryOp::Lt => ordering == Less,
        BinaryOp::Gt => ordering == Greater,
        BinaryOp::Le => ordering != Greater,
        _ => ordering != Less,
    }))
}

/// A list or string index: a whole, non-negative number.
fn whole_index(n: f64) -> Option<usize> {
    (n >= 0.0 && n.fract() == 0.0 && n < 1e15).then_some(n as usize)
}

/// How an error message names an expression: its source, shortened.
pub(crate) fn describe(e: &Expr) -> String {
    let text = e.to_string();
    if text.chars().count() <= 60 {
        text
    } else {
        let short: String = text.chars().take(57).collect();
        format!("{short}...")
    }
}
