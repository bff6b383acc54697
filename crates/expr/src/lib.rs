//! Filter expressions: the subset of the Jira expressions language that
//! Forge uses to filter product events, with the limits that make it safe
//! to run an app's expression on every event.
//!
//! The way through the crate:
//!
//! - [`lexer`] and [`parser`] turn source text into a [`Program`] ([`ast`]),
//!   resolving every variable to a slot and refusing input that is too
//!   long, too deep or too large before anything recurses over it;
//! - [`cost`] estimates the steps an expression can take as a polynomial in
//!   the sizes of the lists it iterates, and applies Forge's refusal rules;
//! - [`eval`] (with [`methods`] and [`value`]) runs a program over an event
//!   borrowed as a `serde_json::Value`, charging every step against a budget;
//! - [`print`] turns a tree back into source.
//!
//! An [`Expression`] is compiled once and evaluated many times:
//!
//! ```
//! use herald_expr::Expression;
//! let filter = Expression::compile("event.issue.fields?.issueType?.name == 'Bug'").unwrap();
//! let event = serde_json::json!({"issue": {"fields": {"issueType": {"name": "Bug"}}}});
//! assert_eq!(filter.evaluate(&event).result, Ok(true));
//! assert_eq!(filter.complexity().to_string(), "6");
//! ```

pub mod ast;
pub mod cost;
mod error;
pub mod eval;
pub mod lexer;
pub mod methods;
pub mod parser;
pub mod print;
pub mod report;
#[doc(hidden)]
pub mod testgen;
pub mod value;

pub use ast::{Pos, Program};
pub use cost::Complexity;
pub use error::ExprError;

use eval::{Machine, Regexes};
use serde_json::Value;

/// The limits an expression is compiled and evaluated under.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Limits {
    /// Longest source, in characters (Forge: 10,000).
    pub max_length: usize,
    /// Deepest nesting of the syntax tree and of the parser's recursion.
    pub max_depth: u32,
    /// Most nodes in the syntax tree.
    pub max_nodes: u32,
    /// Most steps one evaluation may take (Forge: 50,000).
    pub max_steps: u64,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_length: 10_000,
            max_depth: 256,
            max_nodes: 10_000,
            max_steps: 50_000,
        }
    }
}

/// A compiled expression.
#[derive(Debug)]
pub struct Expression {
    program: Program,
    complexity: Complexity,
    regexes: Regexes,
    max_steps: u64,
}

// Triggers share a compiled expression between worker tasks.
const _: fn() = || {
    fn shared<T: Send + Sync>() {}
    shared::<Expression>();
};

/// The outcome of running a filter over one event.
#[derive(Clone, Debug, PartialEq)]
pub struct Evaluation {
    /// `true` delivers, `false` drops; an error (including a result that is
    /// not a Boolean) is for the trigger's `onError` to decide.
    pub result: Result<bool, ExprError>,
    /// Steps taken, up to the budget.
    pub steps: u64,
}

impl Expression {
    /// Parses `source` under the default [`Limits`].
    pub fn compile(source: &str) -> Result<Expression, ExprError> {
        Self::compile_with(source, &Limits::default())
    }

    /// Parses `source`, analyses its cost and compiles the regular
    /// expressions it gives as literals. A static cost over Forge's limits is
    /// not an error here: see [`Expression::check`].
    pub fn compile_with(source: &str, limits: &Limits) -> Result<Expression, ExprError> {
        if source.len() > limits.max_length {
            let chars = source.chars().count();
            if chars > limits.max_length {
                return Err(ExprError::new(
                    Pos { line: 1, column: 1 },
                    format!(
                        "The expression is too long: {chars} characters, at most {}.",
                        limits.max_length
                    ),
                ));
            }
        }
        let program = parser::parse(source, limits)?;
        let complexity = cost::analyse(&program);
        let mut regexes = Regexes::new();
        for stmt in &program.body {
            literal_patterns_in_stmt(stmt, &mut regexes)?;
        }
        Ok(Expression {
            program,
            complexity,
            regexes,
            max_steps: limits.max_steps,
        })
    }

    /// What a trigger runs when it is declared: [`Expression::compile_with`]
    /// and then Forge's refusal rules on the static cost.
    pub fn check(source: &str, limits: &Limits) -> Result<Expression, ExprError> {
        let expression = Self::compile_with(source, limits)?;
        expression
            .complexity
            .check()
            .map_err(|message| ExprError::new(Pos { line: 1, column: 1 }, message))?;
        Ok(expression)
    }

    pub fn program(&self) -> &Program {
        &self.program
    }

    pub fn complexity(&self) -> &Complexity {
        &self.complexity
    }

    /// Runs the expression as a filter: its value must be a Boolean.
    pub fn evaluate(&self, event: &Value) -> Evaluation {
        let mut machine = Machine::new(event, self.max_steps, &self.regexes);
        let result = match machine.run(&self.program) {
            Ok(value::Val::Bool(b)) => Ok(b),
            Ok(other) => Err(ExprError::new(
                Pos { line: 1, column: 1 },
                format!(
                    "The expression must evaluate to a Boolean, got {}.",
                    value::type_name(&other)
                ),
            )),
            Err(fault) => Err(fault.error),
        };
        Evaluation {
            result,
            steps: machine.steps,
        }
    }

    /// Runs the expression and returns its value, whatever its type, as JSON
    /// (functions become `null`), with the steps taken.
    pub fn evaluate_value(&self, event: &Value) -> (Result<Value, ExprError>, u64) {
        let mut machine = Machine::new(event, self.max_steps, &self.regexes);
        let result = machine
            .run(&self.program)
            .map(|v| v.to_json())
            .map_err(|fault| fault.error);
        (result, machine.steps)
    }
}

fn literal_patterns_in_stmt(stmt: &ast::Stmt, out: &mut Regexes) -> Result<(), ExprError> {
    use ast::Stmt;
    match stmt {
        Stmt::Let { value, .. } | Stmt::Return(value) | Stmt::Expr(value) => {
            literal_patterns(value, out)
        }
        Stmt::If {
            cond,
            then,
            otherwise,
        } => {
            literal_patterns(cond, out)?;
            for s in then.iter().chain(otherwise.iter().flatten()) {
                literal_patterns_in_stmt(s, out)?;
            }
            Ok(())
        }
        Stmt::Try { body, handler, .. } => {
            for s in body.iter().chain(handler) {
                literal_patterns_in_stmt(s, out)?;
            }
            Ok(())
        }
    }
}

/// Compiles every `x.match('literal')` pattern ahead of evaluation, so that
/// a bad pattern is a compile error and a good one is compiled once.
fn literal_patterns(e: &ast::Expr, out: &mut Regexes) -> Result<(), ExprError> {
    use ast::ExprKind;
    if let ExprKind::Call { callee, args } = &e.kind {
        if let (ExprKind::Member { name, .. }, [arg]) = (&callee.kind, args.as_slice()) {
            if let (true, ExprKind::String(pattern)) = (name == "match", &arg.kind) {
                if !out.contains_key(pattern) {
                    let regex = methods::compile_pattern(pattern)
                        .map_err(|message| ExprError::new(arg.pos, message))?;
                    out.insert(pattern.clone(), regex);
                }
            }
        }
    }
    for child in e.kind.children() {
        literal_patterns(child, out)?;
    }
    Ok(())
}
