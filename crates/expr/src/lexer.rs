//! Source text to tokens, one at a time, on the parser's demand.
//!
//! The lexer is lazy because template literals switch modes: after a
//! backtick the parser asks for raw text chunks ([`Lexer::template_chunk`])
//! and, between `${` and `}`, for ordinary tokens again. The lexer is `Clone`
//! (a position in the text), which is how the parser looks ahead for an
//! arrow function's parameter list and backs off when there is none.

use crate::ast::Pos;
use crate::error::ExprError;

#[derive(Clone, Debug, PartialEq)]
pub enum Tok {
    Num(f64),
    Str(String),
    Ident(String),
    /// The opening backtick of a template literal.
    Backtick,
    Punct(Punct),
    Eof,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Punct {
    Dot,
    QuestionDot,
    LParen,
    RParen,
    LBracket,
    RBracket,
    LBrace,
    RBrace,
    Comma,
    Semicolon,
    Colon,
    Question,
    QuestionQuestion,
    OrOr,
    AndAnd,
    EqEq,
    NotEq,
    Lt,
    Gt,
    Le,
    Ge,
    Plus,
    Minus,
    Star,
    Slash,
    Percent,
    Bang,
    Arrow,
    Assign,
}

impl Punct {
    pub fn text(self) -> &'static str {
        use Punct::*;
        match self {
            Dot => ".",
            QuestionDot => "?.",
            LParen => "(",
            RParen => ")",
            LBracket => "[",
            RBracket => "]",
            LBrace => "{",
            RBrace => "}",
            Comma => ",",
            Semicolon => ";",
            Colon => ":",
            Question => "?",
            QuestionQuestion => "??",
            OrOr => "||",
            AndAnd => "&&",
            EqEq => "==",
            NotEq => "!=",
            Lt => "<",
            Gt => ">",
            Le => "<=",
            Ge => ">=",
            Plus => "+",
            Minus => "-",
            Star => "*",
            Slash => "/",
            Percent => "%",
            Bang => "!",
            Arrow => "=>",
            Assign => "=",
        }
    }
}

impl Tok {
    /// How the token is named in a syntax error.
    pub fn describe(&self) -> String {
        match self {
            Tok::Num(n) => format!("number {n}"),
            Tok::Str(_) => "a string".into(),
            Tok::Ident(name) => format!("`{name}`"),
            Tok::Backtick => "`` ` ``".into(),
            Tok::Punct(p) => format!("`{}`", p.text()),
            Tok::Eof => "the end of the expression".into(),
        }
    }
}

#[derive(Clone)]
pub struct Lexer<'s> {
    src: &'s str,
    at: usize,
    line: u32,
    column: u32,
}

type Lexed<T> = Result<T, ExprError>;

impl<'s> Lexer<'s> {
    pub fn new(src: &'s str) -> Self {
        Lexer {
            src,
            at: 0,
            line: 1,
            column: 1,
        }
    }

    pub fn pos(&self) -> Pos {
        Pos {
            line: self.line,
            column: self.column,
        }
    }

    fn peek_char(&self) -> Option<char> {
        self.src[self.at..].chars().next()
    }

    fn peek_second(&self) -> Option<char> {
        let mut chars = self.src[self.at..].chars();
        chars.next();
        chars.next()
    }

    fn bump(&mut self) -> Option<char> {
        let c = self.peek_char()?;
        self.at += c.len_utf8();
        if c == '\n' {
            self.line += 1;
            self.column = 1;
        } else {
            self.column += 1;
        }
        Some(c)
    }

    fn skip_trivia(&mut self) -> Lexed<()> {
        loop {
            match (self.peek_char(), self.peek_second()) {
                (Some(c), _) if c.is_whitespace() => {
                    self.bump();
                }
                (Some('/'), Some('/')) => {
                    while let Some(c) = self.peek_char() {
                        if c == '\n' {
                            break;
                        }
                        self.bump();
                    }
                }
                (Some('/'), Some('*')) => {
                    let start = self.pos();
                    self.bump();
                    self.bump();
                    loop {
                        match self.bump() {
                            None => return Err(ExprError::new(start, "Unterminated comment.")),
                            Some('*') if self.peek_char() == Some('/') => {
                                self.bump();
                                break;
                            }
                            Some(_) => {}
                        }
                    }
                }
                _ => return Ok(()),
            }
        }
    }

    /// The next token and where it starts.
    pub fn next_token(&mut self) -> Lexed<(Tok, Pos)> {
        self.skip_trivia()?;
        let pos = self.pos();
        let Some(c) = self.peek_char() else {
            return Ok((Tok::Eof, pos));
        };
        let tok = match c {
            '0'..='9' => self.number(pos)?,
            '\'' | '"' => {
                self.bump();
                Tok::Str(self.string(c, pos)?)
            }
            '`' => {
                self.bump();
                Tok::Backtick
            }
            c if c.is_ascii_alphabetic() || c == '_' || c == '$' => {
                let start = self.at;
                while matches!(self.peek_char(), Some(c) if c.is_ascii_alphanumeric() || c == '_' || c == '$')
                {
                    self.bump();
                }
                Tok::Ident(self.src[start..self.at].to_owned())
            }
            _ => Tok::Punct(self.punct(pos)?),
        };
        Ok((tok, pos))
    }

    fn punct(&mut self, pos: Pos) -> Lexed<Punct> {
        use Punct::*;
        let c = self.bump().unwrap_or('\0');
        let next = self.peek_char();
        let two = |lexer: &mut Self, p| {
            lexer.bump();
            Ok(p)
        };
        match (c, next) {
            ('?', Some('.')) if !matches!(self.peek_second(), Some('0'..='9')) => {
                two(self, QuestionDot)
            }
            ('?', Some('?')) => two(self, QuestionQuestion),
            ('|', Some('|')) => two(self, OrOr),
            ('&', Some('&')) => two(self, AndAnd),
            ('=', Some('=')) => two(self, EqEq),
            ('=', Some('>')) => two(self, Arrow),
            ('!', Some('=')) => two(self, NotEq),
            ('<', Some('=')) => two(self, Le),
            ('>', Some('=')) => two(self, Ge),
            ('.', _) => Ok(Dot),
            ('?', _) => Ok(Question),
            ('(', _) => Ok(LParen),
            (')', _) => Ok(RParen),
            ('[', _) => Ok(LBracket),
            (']', _) => Ok(RBracket),
            ('{', _) => Ok(LBrace),
            ('}', _) => Ok(RBrace),
            (',', _) => Ok(Comma),
            (';', _) => Ok(Semicolon),
            (':', _) => Ok(Colon),
            ('<', _) => Ok(Lt),
            ('>', _) => Ok(Gt),
            ('+', _) => Ok(Plus),
            ('-', _) => Ok(Minus),
            ('*', _) => Ok(Star),
            ('/', _) => Ok(Slash),
            ('%', _) => Ok(Percent),
            ('!', _) => Ok(Bang),
            ('=', _) => Ok(Assign),
            _ => Err(ExprError::new(pos, format!("Unexpected character `{c}`."))),
        }
    }

    fn number(&mut self, pos: Pos) -> Lexed<Tok> {
        let start = self.at;
        let digits = |lexer: &mut Self| {
            while matches!(lexer.peek_char(), Some('0'..='9')) {
                lexer.bump();
            }
        };
        digits(self);
        if self.peek_char() == Some('.') && matches!(self.peek_second(), Some('0'..='9')) {
            self.bump();
            digits(self);
        }
        if matches!(self.peek_char(), Some('e' | 'E')) {
            let mark = self.clone();
            self.bump();
            if matches!(self.peek_char(), Some('+' | '-')) {
                self.bump();
            }
            if matches!(self.peek_char(), Some('0'..='9')) {
                digits(self);
            } else {
                *self = mark;
            }
        }
        if matches!(self.peek_char(), Some(c) if c.is_ascii_alphanumeric() || c == '_') {
            return Err(ExprError::new(pos, "Invalid number."));
        }
        let text = &self.src[start..self.at];
        match text.parse::<f64>() {
            Ok(n) if n.is_finite() => Ok(Tok::Num(n)),
            _ => Err(ExprError::new(
                pos,
                format!("Number `{text}` is out of range."),
            )),
        }
    }

    /// The rest of a quoted string after its opening quote.
    fn string(&mut self, quote: char, start: Pos) -> Lexed<String> {
        let mut out = String::new();
        loop {
            let at = self.pos();
            match self.bump() {
                None | Some('\n') => return Err(ExprError::new(start, "Unterminated string.")),
                Some(c) if c == quote => return Ok(out),
                Some('\\') => out.push(self.escape(at)?),
                Some(c) => out.push(c),
            }
        }
    }

    fn escape(&mut self, at: Pos) -> Lexed<char> {
        let c = match self.bump() {
            Some('n') => '\n',
            Some('t') => '\t',
            Some('r') => '\r',
            Some('0') => '\0',
            Some('u') => {
                let mut code = 0u32;
                for _ in 0..4 {
                    let d = self.bump().and_then(|c| c.to_digit(16)).ok_or_else(|| {
                        ExprError::new(at, "Invalid \\u escape: four hex digits expected.")
                    })?;
                    code = code * 16 + d;
                }
                char::from_u32(code)
                    .ok_or_else(|| ExprError::new(at, "Invalid \\u escape: not a character."))?
            }
            Some(c @ ('\\' | '\'' | '"' | '`' | '$' | '/')) => c,
            Some(c) => return Err(ExprError::new(at, format!("Unknown escape `\\{c}`."))),
            None => return Err(ExprError::new(at, "Unterminated string.")),
        };
        Ok(c)
    }

    /// Literal text of a template up to `${` (then `true`) or the closing
    /// backtick (then `false`).
    pub fn template_chunk(&mut self, start: Pos) -> Lexed<(String, bool)> {
        let mut out = String::new();
        loop {
            let at = self.pos();
            match self.bump() {
                None => return Err(ExprError::new(start, "Unterminated template literal.")),
                Some('`') => return Ok((out, false)),
                Some('$') if self.peek_char() == Some('{') => {
                    self.bump();
                    return Ok((out, true));
                }
                Some('\\') => out.push(self.escape(at)?),
                Some(c) => out.push(c),
            }
        }
    }
}
