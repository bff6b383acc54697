//! The server API (`/api/v1/...`): what app backends call with an API key.

use crate::auth::{sign_channel_token, App, Identity};
use crate::edge::{refusal, set_header, Credentials};
use crate::realtime::{self, charge, error, ChannelSpec, Operation, Outgoing};
use crate::state::AppState;
use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use herald_protocol::api::{NodeInfo, PublishRequest, PublishResult, TokenRequest, TokenResult};
use herald_protocol::{now_ms, ErrorBody, ErrorCode};
use herald_rate_limiter::Decision;
use serde::de::DeserializeOwned;
use serde::Serialize;
use std::sync::Arc;

pub fn routes() -> Router<Arc<AppState>> {
    let routes = Router::new()
        .route("/api/v1/publish", post(publish_scoped))
        .route("/api/v1/publish/global", post(publish_global))
        .route("/api/v1/token", post(token))
        .route("/api/v1/nodes", get(nodes))
        .route(
            "/api/v1/expressions/evaluate",
            post(crate::expressions::evaluate),
        );
    // No server-API call takes query parameters: one sent is a mistake.
    routes.route_layer(axum::middleware::from_fn(no_query))
}

/// Refuses a server-API call with query parameters, naming the first.
async fn no_query(request: axum::extract::Request, next: axum::middleware::Next) -> Response {
    let Some(query) = request.uri().query().filter(|q| !q.is_empty()) else {
        return next.run(request).await;
    };
    let name = query.split('&').next().unwrap_or_default();
    let name = name.split('=').next().unwrap_or_default();
    let e = error(
        ErrorCode::RealtimeInvalidChannelRequest,
        format!("unknown query parameter `{name}`"),
    );
    #[derive(Serialize)]
    struct Refused {
        errors: Vec<ErrorBody>,
    }
    (StatusCode::BAD_REQUEST, Json(Refused { errors: vec![e] })).into_response()
}

/// A failed call: the error and the HTTP status it is answered with.
pub(crate) struct ApiError {
    pub error: ErrorBody,
    pub status: StatusCode,
    /// The app's burst, for `X-RateLimit-Limit` on a 429.
    pub limit: Option<u32>,
}

impl From<ErrorBody> for ApiError {
    fn from(error: ErrorBody) -> Self {
        let status =
            StatusCode::from_u16(error.code.http_status()).unwrap_or(StatusCode::BAD_REQUEST);
        ApiError {
            error,
            status,
            limit: None,
        }
    }
}

/// `?` on a realtime error inside a call of `app`.
pub(crate) fn for_app(app: &App) -> impl Fn(ErrorBody) -> ApiError + '_ {
    move |error| ApiError {
        limit: Some(app.config.ops_burst.max(1)),
        ..ApiError::from(error)
    }
}

/// `X-RateLimit-*` headers of an allowed call.
fn with_limit(mut response: Response, decision: Option<Decision>) -> Response {
    if let Some(d) = decision.filter(|d| d.limit != u32::MAX) {
        set_header(&mut response, "x-ratelimit-limit", u64::from(d.limit));
        set_header(
            &mut response,
            "x-ratelimit-remaining",
            u64::from(d.remaining),
        );
        set_header(
            &mut response,
            "x-ratelimit-reset",
            d.reset_after.as_secs_f64().ceil() as u64,
        );
    }
    response
}

impl ApiError {
    /// Answers with the body shape of the call's success.
    pub(crate) fn into_response<T: Serialize>(
        self,
        state: &AppState,
        shape: fn(ErrorBody) -> T,
    ) -> Response {
        state.metrics.error(self.error.code);
        refusal(
            self.status,
            &self.error.clone(),
            self.limit,
            shape(self.error),
        )
    }
}

fn publish_failure(error: ErrorBody) -> PublishResult {
    PublishResult {
        event_id: None,
        event_timestamp: None,
        errors: vec![error],
    }
}

fn token_failure(error: ErrorBody) -> TokenResult {
    TokenResult {
        token: None,
        expires_at: None,
        errors: vec![error],
    }
}

/// The app whose API key the call carries (`Authorization: Bearer` or
/// `X-API-Key`, read by [`Credentials`]).
pub(crate) fn authenticate(state: &AppState, headers: &HeaderMap) -> Result<Arc<App>, ApiError> {
    Credentials::from_headers(headers)
        .server_key()
        .and_then(|k| state.apps.by_api_key(k))
        .cloned()
        .ok_or_else(|| ApiError {
            error: error(ErrorCode::Unauthorized, ""),
            status: StatusCode::UNAUTHORIZED,
            limit: None,
        })
}

pub(crate) fn parse_body<T: DeserializeOwned>(
    state: &AppState,
    body: Result<Bytes, BytesRejection>,
) -> Result<T, ErrorBody> {
    let body = body.map_err(|e| {
        if e.status() == StatusCode::PAYLOAD_TOO_LARGE {
            error(ErrorCode::PayloadTooLarge, "request body too large")
        } else {
            error(ErrorCode::RealtimeInvalidChannelRequest, e.body_text())
        }
    })?;
    if body.len() > body_limit(state) {
        return Err(error(ErrorCode::PayloadTooLarge, "request body too large"));
    }
    serde_json::from_slice(&body).map_err(|e| {
        error(
            ErrorCode::RealtimeInvalidChannelRequest,
            format!("invalid body: {e}"),
        )
    })
}

/// The largest request body the server API reads.
pub fn body_limit(state: &AppState) -> usize {
    state.config.max_payload_bytes * 2 + 16 * 1024
}

async fn publish_scoped(
    State(state): State<Arc<AppState>>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Response {
    publish(state, headers, body, false).await
}

async fn publish_global(
    State(state): State<Arc<AppState>>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Response {
    publish(state, headers, body, true).await
}

async fn publish(
    state: Arc<AppState>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
    global: bool,
) -> Response {
    match try_publish(&state, &headers, body, global).await {
        Ok((result, decision)) => with_limit(Json(result).into_response(), decision),
        Err(e) => e.into_response(&state, publish_failure),
    }
}

async fn try_publish(
    state: &AppState,
    headers: &HeaderMap,
    body: Result<Bytes, BytesRejection>,
    global: bool,
) -> Result<(PublishResult, Option<Decision>), ApiError> {
    let app = authenticate(state, headers)?;
    let req: PublishRequest = parse_body(state, body)?;
    if global && req.context.is_some() {
        return Err(error(
            ErrorCode::RealtimeInvalidChannelRequest,
            "context applies to scoped channels only",
        )
        .into());
    }
    let no_context = serde_json::Map::new();
    let spec = ChannelSpec {
        channel: &req.channel,
        global,
        token: req.options.token.as_deref(),
        context_overrides: req.options.context_overrides.as_deref(),
        context: req.context.as_ref().unwrap_or(&no_context),
        client: None,
        require_definition: false,
    };
    let (key, decision) = realtime::resolve(state, &app, &spec, Operation::Publish)
        .await
        .map_err(for_app(&app))?;
    let accepted = realtime::publish::publish(
        state,
        &app,
        &Identity::System,
        &key,
        Outgoing {
            event: req.event,
            payload: Arc::from(req.payload),
            idempotency_key: req.options.idempotency_key.as_deref(),
            sender: "app",
            surface: "http",
        },
    )
    .await?;
    let result = PublishResult {
        event_id: accepted.event_id,
        event_timestamp: accepted.event_timestamp,
        errors: Vec::new(),
    };
    Ok((result, decision))
}

async fn token(
    State(state): State<Arc<AppState>>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Response {
    match try_token(&state, &headers, body).await {
        Ok((result, decision)) => with_limit(Json(result).into_response(), Some(decision)),
        Err(e) => e.into_response(&state, token_failure),
    }
}

async fn try_token(
    state: &AppState,
    headers: &HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Result<(TokenResult, Decision), ApiError> {
    let app = authenticate(state, headers)?;
    let req: TokenRequest = parse_body(state, body).map_err(|e| match e.code {
        ErrorCode::PayloadTooLarge => e,
        // A misplaced field is named, not folded into Forge's signing error.
        _ if e.message.contains("unknown field") => e,
        _ => error(ErrorCode::TokenSigningFailed, ""),
    })?;
    let decision = charge(state, &app, None).await.map_err(for_app(&app))?;
    let ttl = req
        .ttl_seconds
        .unwrap_or(state.config.token_default_ttl_seconds);
    if ttl == 0 || ttl > state.config.token_max_ttl_seconds {
        return Err(error(ErrorCode::TokenSigningFailed, "").into());
    }
    let (token, expires_at) = sign_channel_token(
        &app,
        &req.channel,
        req.claims,
        req.permissions,
        ttl,
        now_ms() / 1000,
    )?;
    let result = TokenResult {
        token: Some(token),
        expires_at: Some(expires_at),
        errors: Vec::new(),
    };
    Ok((result, decision))
}

/// `GET /api/v1/nodes`: the live gateways of the cluster.
async fn nodes(State(state): State<Arc<AppState>>, headers: HeaderMap) -> Response {
    #[derive(Serialize)]
    struct Nodes {
        nodes: Vec<NodeInfo>,
        errors: Vec<ErrorBody>,
    }
    let failed = |error| Nodes {
        nodes: Vec::new(),
        errors: vec![error],
    };
    if let Err(e) = authenticate(&state, &headers) {
        return e.into_response(&state, failed);
    }
    match state.node.nodes(&state.address).await {
        Ok(nodes) => Json(Nodes {
            nodes,
            errors: Vec::new(),
        })
        .into_response(),
        Err(e) => {
            tracing::warn!(error = %e, "listing nodes failed");
            ApiError::from(error(ErrorCode::InternalError, "node registry unavailable"))
                .into_response(&state, failed)
        }
    }
}
