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
}
