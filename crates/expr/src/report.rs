//! What the playground shows: the outcome of checking or evaluating an
//! expression, as the `herald expr` command prints it and
//! `POST /api/v1/expressions/evaluate` answers it.

use crate::{ExprError, Expression, Limits};
use serde::Serialize;
use serde_json::Value;
use std::collections::BTreeMap;

#[derive(Clone, Debug, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Report {
    /// The filter's result; `null` when there is an error.
    pub result: Option<bool>,
    /// Steps the evaluation took (0 when it did not run).
    pub steps: u64,
    /// The static estimate (`8*N + 4`); `null` when the expression does not parse.
    pub complexity: Option<String>,
    /// What each variable of the estimate stands for.
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub variables: BTreeMap<String, String>,
    /// Why a trigger with this expression would be refused, if it would.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub complexity_error: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<ErrorReport>,
}

#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct ErrorReport {
    /// `line:column`.
    pub location: String,
    pub line: u32,
    pub column: u32,
    pub message: String,
}

impl From<&ExprError> for ErrorReport {
    fn from(e: &ExprError) -> Self {
        ErrorReport {
            location: e.location(),
            line: e.pos.line,
            column: e.pos.column,
            message: e.message.clone(),
        }
    }
}

/// Compiles `source` and, when `event` is given, evaluates it as a filter.
pub fn report(source: &str, event: Option<&Value>, limits: &Limits) -> (Report, Option<ExprError>) {
    let mut report = Report {
        result: None,
        steps: 0,
        complexity: None,
        variables: BTreeMap::new(),
        complexity_error: None,
        error: None,
    };
    let expression = match Expression::compile_with(source, limits) {
        Ok(e) => e,
        Err(e) => {
            report.error = Some((&e).into());
            return (report, Some(e));
        }
    };
    let complexity = expression.complexity();
    report.complexity = Some(complexity.to_string());
    report.variables = complexity
        .variables
        .iter()
        .enumerate()
        .map(|(i, source)| (crate::Complexity::name(i.min(255) as u8), source.clone()))
        .collect();
    report.complexity_error = complexity.check().err();
    let Some(event) = event else {
        return (report, None);
    };
    let outcome = expression.evaluate(event);
    report.steps = outcome.steps;
    match outcome.result {
        Ok(b) => {
            report.result = Some(b);
            (report, None)
        }
        Err(e) => {
            report.error = Some((&e).into());
            (report, Some(e))
        }
    }
}
