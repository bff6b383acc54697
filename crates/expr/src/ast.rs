//! The syntax tree of an expression program.
//!
//! Variables are resolved while parsing: `event` is [`ExprKind::Event`], and
//! every `let` binding, arrow parameter and `catch` binding is a slot in the
//! evaluator's environment stack ([`ExprKind::Var`]), so evaluation never
//! looks a name up. Every node records its depth so that the parser can
//! refuse trees deeper than the limit before anything recurses over them.

use std::fmt;

/// A place in the source: line and column, both counted from 1.
///
/// Positions are not part of a node's identity: two trees that differ only
/// in where their nodes stood compare equal (printing and reparsing a tree
/// moves every node).
#[derive(Clone, Copy, Debug, Default, Eq)]
pub struct Pos {
    pub line: u32,
    pub column: u32,
}

impl PartialEq for Pos {
    fn eq(&self, _: &Pos) -> bool {
        true
    }
}

impl fmt::Display for Pos {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}", self.line, self.column)
    }
}

/// A whole expression: statements, the last of which gives the value.
#[derive(Clone, Debug, PartialEq)]
pub struct Program {
    pub body: Vec<Stmt>,
}

#[derive(Clone, Debug, PartialEq)]
pub enum Stmt {
    /// `let name = value;` (the binding takes the next slot).
    Let {
        name: String,
        value: Expr,
    },
    /// `return value;`
    Return(Expr),
    /// `if (cond) { .. } else { .. }`; `else if` is an `else` block holding one `if`.
    If {
        cond: Expr,
        then: Vec<Stmt>,
        otherwise: Option<Vec<Stmt>>,
    },
    /// `try { .. } catch (name) { .. }`
    Try {
        body: Vec<Stmt>,
        name: String,
        handler: Vec<Stmt>,
    },
    Expr(Expr),
}

#[derive(Clone, Debug, PartialEq)]
pub struct Expr {
    pub kind: ExprKind,
    pub pos: Pos,
    /// 1 for a leaf, else 1 + the deepest child.
    pub depth: u32,
}

#[derive(Clone, Debug, PartialEq)]
pub enum ExprKind {
    Null,
    Bool(bool),
    Number(f64),
    String(String),
    Template(Vec<TemplatePart>),
    List(Vec<Expr>),
    /// Keys in source order; a repeated key is refused by the parser.
    Map(Vec<(String, Expr)>),
    /// The event being filtered.
    Event,
    /// A binding: its name (for printing and messages) and its slot.
    Var {
        name: String,
        slot: u32,
    },
    Member {
        object: Box<Expr>,
        name: String,
        optional: bool,
    },
    Index {
        object: Box<Expr>,
        index: Box<Expr>,
        optional: bool,
    },
    /// A method call when `callee` is a [`ExprKind::Member`], else a call of
    /// a function value.
    Call {
        callee: Box<Expr>,
        args: Vec<Expr>,
    },
    Unary {
        op: UnaryOp,
        operand: Box<Expr>,
    },
    Binary {
        op: BinaryOp,
        left: Box<Expr>,
        right: Box<Expr>,
    },
    Conditional {
        cond: Box<Expr>,
        then: Box<Expr>,
        otherwise: Box<Expr>,
    },
    /// `(a, b) => body`: `slot` is the first parameter's slot.
    Arrow {
        params: Vec<String>,
        slot: u32,
        body: Box<Expr>,
    },
    Throw(Box<Expr>),
}

#[derive(Clone, Debug, PartialEq)]
pub enum TemplatePart {
    Text(String),
    Expr(Expr),
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum UnaryOp {
    Not,
    Neg,
    Typeof,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BinaryOp {
    Coalesce,
    Or,
    And,
    Eq,
    Ne,
    Lt,
    Gt,
    Le,
    Ge,
    Add,
    Sub,
    Mul,
    Div,
    Rem,
}

impl BinaryOp {
    pub fn symbol(self) -> &'static str {
        use BinaryOp::*;
        match self {
            Coalesce => "??",
            Or => "||",
            And => "&&",
            Eq => "==",
            Ne => "!=",
            Lt => "<",
            Gt => ">",
            Le => "<=",
            Ge => ">=",
            Add => "+",
            Sub => "-",
            Mul => "*",
            Div => "/",
            Rem => "%",
        }
    }

    /// Binding power: higher binds tighter. All binary operators are
    /// left-associative.
    pub fn precedence(self) -> u8 {
        use BinaryOp::*;
        match self {
            Coalesce => 1,
            Or => 2,
            And => 3,
            Eq | Ne => 4,
            Lt | Gt | Le | Ge => 5,
            Add | Sub => 6,
            Mul | Div | Rem => 7,
        }
    }
}

impl Expr {
    /// A node at `pos`, its depth computed from its children.
    pub fn new(kind: ExprKind, pos: Pos) -> Expr {
        let depth = 1 + kind.children().map(|c| c.depth).max().unwrap_or(0);
        Expr { kind, pos, depth }
    }
}

impl ExprKind {
    /// The direct subexpressions, in evaluation order.
    pub fn children(&self) -> Box<dyn Iterator<Item = &Expr> + '_> {
        use ExprKind::*;
        match self {
            Null | Bool(_) | Number(_) | String(_) | Event | Var { .. } => {
                Box::new(std::iter::empty())
            }
            Template(parts) => Box::new(parts.iter().filter_map(|p| match p {
                TemplatePart::Expr(e) => Some(e),
                TemplatePart::Text(_) => None,
            })),
            List(items) => Box::new(items.iter()),
            Map(entries) => Box::new(entries.iter().map(|(_, v)| v)),
            Member { object, .. } => Box::new(std::iter::once(&**object)),
            Index { object, index, .. } => Box::new([&**object, &**index].into_iter()),
            Call { callee, args } => Box::new(std::iter::once(&**callee).chain(args.iter())),
            Unary { operand, .. } => Box::new(std::iter::once(&**operand)),
            Binary { left, right, .. } => Box::new([&**left, &**right].into_iter()),
            Conditional {
                cond,
                then,
                otherwise,
            } => Box::new([&**cond, &**then, &**otherwise].into_iter()),
            Arrow { body, .. } => Box::new(std::iter::once(&**body)),
            Throw(value) => Box::new(std::iter::once(&**value)),
        }
    }
}
