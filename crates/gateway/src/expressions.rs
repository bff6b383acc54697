//! `POST /api/v1/expressions/evaluate`: the filter-expression playground for
//! app developers (API-key auth). The body is `{expression, event}`; the
//! answer is `herald_expr::report::Report`: `{result, steps, complexity,
//! variables?, complexityError?, error?}`. An expression that fails is a
//! successful call with an `error`; a bad call (credentials, body, rate
//! limit) is answered as the rest of the server API answers it.

use crate::api::{authenticate, for_app, parse_body, ApiError};
use crate::realtime::{charge, error};
use crate::state::AppState;
use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use herald_expr::Limits;
use herald_protocol::{ErrorBody, ErrorCode};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use std::sync::Arc;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct EvaluateRequest {
    expression: String,
    event: Value,
}

#[derive(Serialize)]
struct Failed {
    errors: Vec<ErrorBody>,
}

fn failed(error: ErrorBody) -> Failed {
    Failed {
        errors: vec![error],
    }
}

pub async fn evaluate(
    State(state): State<Arc<AppState>>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Response {
    match try_evaluate(&state, &headers, body).await {
        Ok(report) => Json(report).into_response(),
        Err(e) => e.into_response(&state, failed),
    }
}

async fn try_evaluate(
    state: &AppState,
    headers: &HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Result<herald_expr::report::Report, ApiError> {
    let app = authenticate(state, headers)?;
    let req: EvaluateRequest = parse_body(state, body)?;
    charge(state, &app, None).await.map_err(for_app(&app))?;
    // Up to 50,000 steps: off the async workers.
    let report = tokio::task::spawn_blocking(move || {
        herald_expr::report::report(&req.expression, Some(&req.event), &Limits::default()).0
    })
    .await
    .map_err(|_| ApiError {
        error: error(ErrorCode::InternalError, "evaluation failed"),
        status: StatusCode::INTERNAL_SERVER_ERROR,
        limit: None,
    })?;
    Ok(report)
}
