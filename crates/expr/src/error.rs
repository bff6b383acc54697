//! The one error shape of the crate: a location and a message, printed the
//! way Jira prints expression errors (`1:24: Can't compare Number to String.`).

use crate::ast::Pos;

/// A syntax error, a refused expression, or a failed evaluation.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{pos}: {message}")]
pub struct ExprError {
    /// Where in the source it happened (line and column, from 1).
    pub pos: Pos,
    pub message: String,
}

impl ExprError {
    pub fn new(pos: Pos, message: impl Into<String>) -> Self {
        ExprError {
            pos,
            message: message.into(),
        }
    }

    /// `line:column`, as `e.location` gives it in a `catch` block.
    pub fn location(&self) -> String {
        self.pos.to_string()
    }

    /// The source line the error is on with a caret under its column, for
    /// people reading it at a terminal.
    pub fn caret(&self, source: &str) -> String {
        let line = source
            .lines()
            .nth(self.pos.line.saturating_sub(1) as usize)
            .unwrap_or("");
        let indent: String = line
            .chars()
            .take(self.pos.column.saturating_sub(1) as usize)
            .map(|c| if c == '\t' { '\t' } else { ' ' })
            .collect();
        format!("{line}\n{indent}^")
    }
}
