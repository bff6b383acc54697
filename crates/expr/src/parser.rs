//! Tokens to a [`Program`]: recursive descent for statements, precedence
//! climbing for binary operators.
//!
//! Precedence, lowest first: `?:`, `throw`, `??`, `||`, `&&`, `==` `!=`,
//! `<` `>` `<=` `>=`, `+` `-`, `*` `/` `%`, unary `!` `-` `typeof`, then
//! member access, indexing and calls. `throw` is a prefix whose operand runs
//! to the end of the `??` level, so `x ?? throw 'missing'` reads as it does
//! in Jira.
//!
//! Guards: every recursive descent counts against [`Limits::max_depth`],
//! every node against [`Limits::max_nodes`], and every node's depth is
//! checked as it is built, so a long `a + a + ... + a` (a left-deep tree
//! built in a loop) is refused too, before anything recurses over it.

use crate::ast::*;
use crate::error::ExprError;
use crate::lexer::{Lexer, Punct, Tok};
use crate::Limits;

const KEYWORDS: &[&str] = &[
    "let", "return", "if", "else", "try", "catch", "throw", "typeof", "true", "false", "null",
];

type Parsed<T> = Result<T, ExprError>;

pub fn parse(src: &str, limits: &Limits) -> Parsed<Program> {
    let mut parser = Parser {
        lexer: Lexer::new(src),
        peeked: None,
        scope: Vec::new(),
        nesting: 0,
        nodes: 0,
        limits,
    };
    let mut body = Vec::new();
    while parser.peek()?.0 != Tok::Eof {
        body.push(parser.statement()?);
    }
    if body.is_empty() {
        return Err(ExprError::new(
            Pos { line: 1, column: 1 },
            "The expression is empty.",
        ));
    }
    Ok(Program { body })
}

struct Parser<'s, 'l> {
    lexer: Lexer<'s>,
    peeked: Option<(Tok, Pos)>,
    /// Names in scope; a name's index is its slot.
    scope: Vec<String>,
    nesting: u32,
    nodes: u32,
    limits: &'l Limits,
}

impl Parser<'_, '_> {
    fn peek(&mut self) -> Parsed<&(Tok, Pos)> {
        if self.peeked.is_none() {
            self.peeked = Some(self.lexer.next_token()?);
        }
        Ok(self.peeked.as_ref().expect("just filled"))
    }

    fn advance(&mut self) -> Parsed<(Tok, Pos)> {
        match self.peeked.take() {
            Some(t) => Ok(t),
            None => self.lexer.next_token(),
        }
    }

    fn at_punct(&mut self, p: Punct) -> Parsed<bool> {
        Ok(self.peek()?.0 == Tok::Punct(p))
    }

    fn at_keyword(&mut self, word: &str) -> Parsed<bool> {
        Ok(matches!(&self.peek()?.0, Tok::Ident(w) if w == word))
    }

    fn eat_punct(&mut self, p: Punct) -> Parsed<bool> {
        let found = self.at_punct(p)?;
        if found {
            self.advance()?;
        }
        Ok(found)
    }

    fn expect_punct(&mut self, p: Punct) -> Parsed<Pos> {
        let (tok, pos) = self.advance()?;
        if tok == Tok::Punct(p) {
            Ok(pos)
        } else {
            Err(ExprError::new(
                pos,
                format!("Expected `{}` but found {}.", p.text(), tok.describe()),
            ))
        }
    }

    fn expect_keyword(&mut self, word: &str) -> Parsed<()> {
        let (tok, pos) = self.advance()?;
        match tok {
            Tok::Ident(w) if w == word => Ok(()),
            other => Err(ExprError::new(
                pos,
                format!("Expected `{word}` but found {}.", other.describe()),
            )),
        }
    }

    /// A new variable name (not a keyword).
    fn binding_name(&mut self) -> Parsed<String> {
        let (tok, pos) = self.advance()?;
        match tok {
            Tok::Ident(name) if !KEYWORDS.contains(&name.as_str()) => Ok(name),
            other => Err(ExprError::new(
                pos,
                format!("Expected a variable name but found {}.", other.describe()),
            )),
        }
    }

    fn node(&mut self, kind: ExprKind, pos: Pos) -> Parsed<Expr> {
        self.nodes += 1;
        if self.nodes > self.limits.max_nodes {
            return Err(ExprError::new(
                pos,
                format!(
                    "The expression is too large: more than {} nodes.",
                    self.limits.max_nodes
                ),
            ));
        }
        let expr = Expr::new(kind, pos);
        if expr.depth > self.limits.max_depth {
            return Err(self.too_deep(pos));
        }
        Ok(expr)
    }

    fn too_deep(&self, pos: Pos) -> ExprError {
        ExprError::new(
            pos,
            format!(
                "The expression is nested too deeply: more than {} levels.",
                self.limits.max_depth
            ),
        )
    }

    /// Runs `f` one level of recursion deeper.
    fn nested<T>(&mut self, f: impl FnOnce(&mut Self) -> Parsed<T>) -> Parsed<T> {
        self.nesting += 1;
        if self.nesting > self.limits.max_depth {
            let pos = self.lexer.pos();
            return Err(self.too_deep(pos));
        }
        // As in evaluation: the nesting limit, not the thread's stack, is
        // what bounds the recursion.
        let result = if self.nesting.is_multiple_of(8) {
            stacker::maybe_grow(256 * 1024, 1024 * 1024, || f(self))
        } else {
            f(self)
        };
        self.nesting -= 1;
        result
    }

    // ---- statements ----

    fn statement(&mut self) -> Parsed<Stmt> {
        if self.at_keyword("let")? {
            self.advance()?;
            let name = self.binding_name()?;
            self.expect_punct(Punct::Assign)?;
            let value = self.expression()?;
            self.terminator()?;
            self.scope.push(name.clone());
            return Ok(Stmt::Let { name, value });
        }
        if self.at_keyword("return")? {
            self.advance()?;
            let value = self.expression()?;
            self.terminator()?;
            return Ok(Stmt::Return(value));
        }
        if self.at_keyword("if")? {
            return self.if_statement();
        }
        if self.at_keyword("try")? {
            self.advance()?;
            let body = self.block()?;
            self.expect_keyword("catch")?;
            self.expect_punct(Punct::LParen)?;
            let name = self.binding_name()?;
            self.expect_punct(Punct::RParen)?;
            self.scope.push(name.clone());
            let handler = self.block();
            self.scope.pop();
            return Ok(Stmt::Try {
                body,
                name,
                handler: handler?,
            });
        }
        let value = self.expression()?;
        self.terminator()?;
        Ok(Stmt::Expr(value))
    }

    fn if_statement(&mut self) -> Parsed<Stmt> {
        self.nested(|p| {
            p.expect_keyword("if")?;
            p.expect_punct(Punct::LParen)?;
            let cond = p.expression()?;
            p.expect_punct(Punct::RParen)?;
            let then = p.block()?;
            let otherwise = if p.at_keyword("else")? {
                p.advance()?;
                if p.at_keyword("if")? {
                    Some(vec![p.if_statement()?])
                } else {
                    Some(p.block()?)
                }
            } else {
                None
            };
            Ok(Stmt::If {
                cond,
                then,
                otherwise,
            })
        })
    }

    /// `{ statements }`; bindings made inside end with it.
    fn block(&mut self) -> Parsed<Vec<Stmt>> {
        self.nested(|p| {
            p.expect_punct(Punct::LBrace)?;
            let mark = p.scope.len();
            let mut body = Vec::new();
            let result = loop {
                if p.eat_punct(Punct::RBrace)? {
                    break Ok(body);
                }
                if p.peek()?.0 == Tok::Eof {
                    let pos = p.peek()?.1;
                    break Err(ExprError::new(
                        pos,
                        "Expected `}` but found the end of the expression.",
                    ));
                }
                match p.statement() {
                    Ok(s) => body.push(s),
                    Err(e) => break Err(e),
                }
            };
            p.scope.truncate(mark);
            result
        })
    }

    /// `;` after a statement, optional before `}` and at the end.
    fn terminator(&mut self) -> Parsed<()> {
        if self.eat_punct(Punct::Semicolon)? {
            return Ok(());
        }
        let (tok, pos) = self.peek()?.clone();
        match tok {
            Tok::Eof | Tok::Punct(Punct::RBrace) => Ok(()),
            other => Err(ExprError::new(
                pos,
                format!("Expected `;` but found {}.", other.describe()),
            )),
        }
    }

    // ---- expressions ----

    pub fn expression(&mut self) -> Parsed<Expr> {
        self.nested(|p| {
            let cond = p.binary(0)?;
            if !p.at_punct(Punct::Question)? {
                return Ok(cond);
            }
            let (_, pos) = p.advance()?;
            let then = p.expression()?;
            p.expect_punct(Punct::Colon)?;
            let otherwise = p.expression()?;
            p.node(
                ExprKind::Conditional {
                    cond: Box::new(cond),
                    then: Box::new(then),
                    otherwise: Box::new(otherwise),
                },
                pos,
            )
        })
    }

    fn binary(&mut self, min_precedence: u8) -> Parsed<Expr> {
        let mut left = self.unary()?;
        loop {
            let op = match &self.peek()?.0 {
                Tok::Punct(p) => binary_op(*p),
                _ => None,
            };
            let Some(op) = op.filter(|op| op.precedence() > min_precedence) else {
                return Ok(left);
            };
            let (_, pos) = self.advance()?;
            let right = self.nested(|p| p.binary(op.precedence()))?;
            left = self.node(
                ExprKind::Binary {
                    op,
                    left: Box::new(left),
                    right: Box::new(right),
                },
                pos,
            )?;
        }
    }

    fn unary(&mut self) -> Parsed<Expr> {
        let (tok, pos) = self.peek()?.clone();
        let op = match &tok {
            Tok::Punct(Punct::Bang) => Some(UnaryOp::Not),
            Tok::Punct(Punct::Minus) => Some(UnaryOp::Neg),
            Tok::Ident(w) if w == "typeof" => Some(UnaryOp::Typeof),
            Tok::Ident(w) if w == "throw" => {
                self.advance()?;
                let value = self.nested(|p| p.binary(0))?;
                return self.node(ExprKind::Throw(Box::new(value)), pos);
            }
            _ => None,
        };
        let Some(op) = op else {
            return self.postfix();
        };
        self.advance()?;
        let operand = self.nested(|p| p.unary())?;
        self.node(
            ExprKind::Unary {
                op,
                operand: Box::new(operand),
            },
            pos,
        )
    }

    fn postfix(&mut self) -> Parsed<Expr> {
        let mut expr = self.primary()?;
        loop {
            let (tok, pos) = self.peek()?.clone();
            let kind = match tok {
                Tok::Punct(Punct::Dot) => {
                    self.advance()?;
                    self.member(expr, false)?
                }
                Tok::Punct(Punct::QuestionDot) => {
                    self.advance()?;
                    if self.eat_punct(Punct::LBracket)? {
                        self.index(expr, true)?
                    } else {
                        self.member(expr, true)?
                    }
                }
                Tok::Punct(Punct::LBracket) => {
                    self.advance()?;
                    self.index(expr, false)?
                }
                Tok::Punct(Punct::LParen) => {
                    self.advance()?;
                    let args = self.items(Punct::RParen)?;
                    ExprKind::Call {
                        callee: Box::new(expr),
                        args,
                    }
                }
                _ => return Ok(expr),
            };
            expr = self.node(kind, pos)?;
        }
    }

    /// After `.` or `?.`: the property name.
    fn member(&mut self, object: Expr, optional: bool) -> Parsed<ExprKind> {
        let name = self.member_name()?;
        Ok(ExprKind::Member {
            object: Box::new(object),
            name,
            optional,
        })
    }

    /// After `[` or `?.[`: the index and its `]`.
    fn index(&mut self, object: Expr, optional: bool) -> Parsed<ExprKind> {
        let index = self.expression()?;
        self.expect_punct(Punct::RBracket)?;
        Ok(ExprKind::Index {
            object: Box::new(object),
            index: Box::new(index),
            optional,
        })
    }

    fn member_name(&mut self) -> Parsed<String> {
        let (tok, pos) = self.advance()?;
        match tok {
            Tok::Ident(name) => Ok(name),
            other => Err(ExprError::new(
                pos,
                format!("Expected a property name but found {}.", other.describe()),
            )),
        }
    }

    /// Comma-separated expressions up to `close` (a trailing comma allowed).
    fn items(&mut self, close: Punct) -> Parsed<Vec<Expr>> {
        let mut items = Vec::new();
        loop {
            if self.eat_punct(close)? {
                return Ok(items);
            }
            items.push(self.expression()?);
            if !self.eat_punct(Punct::Comma)? {
                self.expect_punct(close)?;
                return Ok(items);
            }
        }
    }

    fn primary(&mut self) -> Parsed<Expr> {
        let (tok, pos) = self.advance()?;
        let kind = match tok {
            Tok::Num(n) => ExprKind::Number(n),
            Tok::Str(s) => ExprKind::String(s),
            Tok::Backtick => return self.template(pos),
            Tok::Ident(name) => match name.as_str() {
                "true" => ExprKind::Bool(true),
                "false" => ExprKind::Bool(false),
                "null" => ExprKind::Null,
                _ if KEYWORDS.contains(&name.as_str()) => {
                    return Err(ExprError::new(pos, format!("Unexpected `{name}`.")));
                }
                _ if self.at_punct(Punct::Arrow)? => {
                    return self.arrow(vec![name], pos);
                }
                _ => self.variable(name, pos)?,
            },
            Tok::Punct(Punct::LParen) => {
                if let Some(params) = self.arrow_params()? {
                    return self.arrow(params, pos);
                }
                let inner = self.expression()?;
                self.expect_punct(Punct::RParen)?;
                return Ok(inner);
            }
            Tok::Punct(Punct::LBracket) => ExprKind::List(self.items(Punct::RBracket)?),
            Tok::Punct(Punct::LBrace) => ExprKind::Map(self.map_entries()?),
            Tok::Eof => return Err(ExprError::new(pos, "The expression ended unexpectedly.")),
            other => {
                return Err(ExprError::new(
                    pos,
                    format!("Unexpected {}.", other.describe()),
                ))
            }
        };
        self.node(kind, pos)
    }

    fn variable(&mut self, name: String, pos: Pos) -> Parsed<ExprKind> {
        if let Some(slot) = self.scope.iter().rposition(|n| *n == name) {
            return Ok(ExprKind::Var {
                name,
                slot: slot as u32,
            });
        }
        if name == "event" {
            return Ok(ExprKind::Event);
        }
        Err(ExprError::new(pos, format!("Unknown variable `{name}`.")))
    }

    /// After `(`: the parameters of an arrow function and its `=>`, or
    /// `None` (nothing consumed) when this is a parenthesized expression.
    fn arrow_params(&mut self) -> Parsed<Option<Vec<String>>> {
        let saved = (self.lexer.clone(), self.peeked.clone());
        let mut params = Vec::new();
        let found = loop {
            match self.advance() {
                Ok((Tok::Punct(Punct::RParen), _)) if params.is_empty() => break true,
                Ok((Tok::Ident(name), _)) if !KEYWORDS.contains(&name.as_str()) => {
                    params.push(name);
                    match self.advance() {
                        Ok((Tok::Punct(Punct::Comma), _)) => continue,
                        Ok((Tok::Punct(Punct::RParen), _)) => break true,
                        _ => break false,
                    }
                }
                _ => break false,
            }
        };
        if found && matches!(self.peek(), Ok((Tok::Punct(Punct::Arrow), _))) {
            return Ok(Some(params));
        }
        (self.lexer, self.peeked) = saved;
        Ok(None)
    }

    fn arrow(&mut self, params: Vec<String>, pos: Pos) -> Parsed<Expr> {
        self.expect_punct(Punct::Arrow)?;
        for (i, p) in params.iter().enumerate() {
            if params[..i].contains(p) {
                return Err(ExprError::new(pos, format!("Duplicate parameter `{p}`.")));
            }
        }
        let slot = self.scope.len() as u32;
        self.scope.extend(params.iter().cloned());
        let body = self.expression();
        self.scope.truncate(slot as usize);
        let body = body?;
        self.node(
            ExprKind::Arrow {
                params,
                slot,
                body: Box::new(body),
            },
            pos,
        )
    }

    fn map_entries(&mut self) -> Parsed<Vec<(String, Expr)>> {
        let mut entries: Vec<(String, Expr)> = Vec::new();
        loop {
            if self.eat_punct(Punct::RBrace)? {
                return Ok(entries);
            }
            let (tok, pos) = self.advance()?;
            let key = match tok {
                Tok::Ident(k) | Tok::Str(k) => k,
                other => {
                    return Err(ExprError::new(
                        pos,
                        format!("Expected a map key but found {}.", other.describe()),
                    ))
                }
            };
            if entries.iter().any(|(k, _)| *k == key) {
                return Err(ExprError::new(
                    pos,
                    format!("Duplicate key `{key}` in a map."),
                ));
            }
            self.expect_punct(Punct::Colon)?;
            let value = self.expression()?;
            entries.push((key, value));
            if !self.eat_punct(Punct::Comma)? {
                self.expect_punct(Punct::RBrace)?;
                return Ok(entries);
            }
        }
    }

    fn template(&mut self, pos: Pos) -> Parsed<Expr> {
        let mut parts = Vec::new();
        loop {
            debug_assert!(self.peeked.is_none());
            let (text, more) = self.lexer.template_chunk(pos)?;
            if !text.is_empty() {
                parts.push(TemplatePart::Text(text));
            }
            if !more {
                break;
            }
            let value = self.expression()?;
            let (tok, at) = self.advance()?;
            if tok != Tok::Punct(Punct::RBrace) {
                return Err(ExprError::new(
                    at,
                    format!("Expected `}}` to close `${{` but found {}.", tok.describe()),
                ));
            }
            parts.push(TemplatePart::Expr(value));
        }
        self.node(ExprKind::Template(parts), pos)
    }
}

fn binary_op(p: Punct) -> Option<BinaryOp> {
    use BinaryOp::*;
    Some(match p {
        Punct::QuestionQuestion => Coalesce,
        Punct::OrOr => Or,
        Punct::AndAnd => And,
        Punct::EqEq => Eq,
        Punct::NotEq => Ne,
        Punct::Lt => Lt,
        Punct::Gt => Gt,
        Punct::Le => Le,
        Punct::Ge => Ge,
        Punct::Plus => Add,
        Punct::Minus => Sub,
        Punct::Star => Mul,
        Punct::Slash => Div,
        Punct::Percent => Rem,
        _ => return None,
    })
}
