//! Trees back to source text. Every compound expression is printed inside
//! parentheses, so the text parses back to the same tree whatever the
//! precedence; the cost analysis also uses this text to name the lists it
//! iterates.

use crate::ast::*;
use std::fmt::{self, Display, Formatter, Write};

impl Display for Program {
    fn fmt(&self, f: &mut Formatter<'_>) -> fmt::Result {
        statements(f, &self.body)
    }
}

fn statements(f: &mut Formatter<'_>, body: &[Stmt]) -> fmt::Result {
    for (i, stmt) in body.iter().enumerate() {
        if i > 0 {
            f.write_char(' ')?;
        }
        write!(f, "{stmt}")?;
    }
    Ok(())
}

fn block(f: &mut Formatter<'_>, body: &[Stmt]) -> fmt::Result {
    f.write_str("{ ")?;
    statements(f, body)?;
    f.write_str(" }")
}

impl Display for Stmt {
    fn fmt(&self, f: &mut Formatter<'_>) -> fmt::Result {
        match self {
            Stmt::Let { name, value } => write!(f, "let {name} = {value};"),
            Stmt::Return(value) => write!(f, "return {value};"),
            Stmt::Expr(value) => write!(f, "{value};"),
            Stmt::If {
                cond,
                then,
                otherwise,
            } => {
                write!(f, "if ({cond}) ")?;
                block(f, then)?;
                if let Some(otherwise) = otherwise {
                    f.write_str(" else ")?;
                    block(f, otherwise)?;
                }
                Ok(())
            }
            Stmt::Try {
                body,
                name,
                handler,
            } => {
                f.write_str("try ")?;
                block(f, body)?;
                write!(f, " catch ({name}) ")?;
                block(f, handler)
            }
        }
    }
}

/// A string literal that reads back as `s`.
pub fn quote(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 2);
    out.push('\'');
    escape_into(&mut out, s, '\'');
    out.push('\'');
    out
}

fn escape_into(out: &mut String, s: &str, quote: char) {
    for c in s.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            '$' if quote == '`' => out.push_str("\\$"),
            c if c == quote => {
                out.push('\\');
                out.push(c);
            }
            c if c.is_control() => {
                let _ = write!(out, "\\u{:04x}", c as u32);
            }
            c => out.push(c),
        }
    }
}

fn list(f: &mut Formatter<'_>, items: &[Expr]) -> fmt::Result {
    for (i, item) in items.iter().enumerate() {
        if i > 0 {
            f.write_str(", ")?;
        }
        write!(f, "{item}")?;
    }
    Ok(())
}

impl Display for Expr {
    fn fmt(&self, f: &mut Formatter<'_>) -> fmt::Result {
        use ExprKind::*;
        match &self.kind {
            Null => f.write_str("null"),
            Bool(b) => write!(f, "{b}"),
            Number(n) => write!(f, "{n}"),
            String(s) => f.write_str(&quote(s)),
            Template(parts) => {
                f.write_char('`')?;
                for part in parts {
                    match part {
                        TemplatePart::Text(text) => {
                            let mut out = std::string::String::new();
                            escape_into(&mut out, text, '`');
                            f.write_str(&out)?;
                        }
                        TemplatePart::Expr(e) => write!(f, "${{{e}}}")?,
                    }
                }
                f.write_char('`')
            }
            List(items) => {
                f.write_char('[')?;
                list(f, items)?;
                f.write_char(']')
            }
            Map(entries) => {
                f.write_char('{')?;
                for (i, (key, value)) in entries.iter().enumerate() {
                    if i > 0 {
                        f.write_str(", ")?;
                    }
                    write!(f, "{}: {value}", quote(key))?;
                }
                f.write_char('}')
            }
            Event => f.write_str("event"),
            Var { name, .. } => f.write_str(name),
            Member {
                object,
                name,
                optional,
            } => write!(f, "{object}{}{name}", if *optional { "?." } else { "." }),
            Index {
                object,
                index,
                optional,
            } => write!(f, "{object}{}[{index}]", if *optional { "?." } else { "" }),
            Call { callee, args } => {
                write!(f, "{callee}(")?;
                list(f, args)?;
                f.write_char(')')
            }
            Unary { op, operand } => {
                let op = match op {
                    UnaryOp::Not => "!",
                    UnaryOp::Neg => "-",
                    UnaryOp::Typeof => "typeof ",
                };
                write!(f, "({op}{operand})")
            }
            Binary { op, left, right } => write!(f, "({left} {} {right})", op.symbol()),
            Conditional {
                cond,
                then,
                otherwise,
            } => write!(f, "({cond} ? {then} : {otherwise})"),
            Arrow { params, body, .. } => write!(f, "(({}) => {body})", params.join(", ")),
            Throw(value) => write!(f, "(throw {value})"),
        }
    }
}
