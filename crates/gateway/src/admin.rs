//! The admin API of InsForge's realtime surface (`/api/realtime/...`):
//! channel definitions and the app's realtime settings, in the store.
//!
//! Auth: the app's API key (`X-API-Key`, or `Authorization: Bearer`), or a
//! user JWT of the app whose `role` is `project_admin`. Success bodies are
//! raw JSON; errors are `{error: "<CODE>", message, statusCode}`. Bodies
//! are strict: an unknown field is refused, named.

use crate::auth::verify_user_token_fetching;
use crate::auth::App;
use crate::edge::Credentials;
use crate::socketio::iso;
use crate::state::AppState;
use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use herald_store::{pattern, Definition, DefinitionChange, NewDefinition, RealtimeSettings};
use herald_store::{Store, StoreError};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Deserializer, Serialize};
use std::sync::Arc;
use utoipa::{OpenApi, ToSchema};

/// The role a user JWT needs for the admin API.
pub const ADMIN_ROLE: &str = "project_admin";
/// Webhook URLs per definition, at most.
pub const MAX_WEBHOOKS: usize = 10;
const MAX_URL: usize = 2048;
const MAX_DESCRIPTION: usize = 1024;

/// The admin API's OpenAPI document, served at [`OPENAPI_PATH`].
#[derive(OpenApi)]
#[openapi(
    info(
        title = "Herald admin API (InsForge realtime)",
        description = "Channel definitions and realtime settings of the app whose API key (X-API-Key, or Authorization: Bearer) or project_admin user token the call carries. Errors are {error, message, statusCode}; bodies are strict (unknown fields are refused). See docs/insforge.md."
    ),
    paths(
        list,
        create,
        get_one,
        update,
        remove,
        settings,
        set_settings,
        messages,
        delete_messages,
        message_stats,
        permissions,
        create_policy,
        delete_policy
    ),
    components(schemas(
        Channel,
        Settings,
        ErrorReply,
        Deleted,
        Create,
        Update,
        SettingsChange,
        LoggedMessage,
        Cleared,
        Stats,
        NewPolicyBody,
        PolicyView,
        RlsPolicy,
        PolicyList,
        Permissions
    ))
)]
pub struct AdminApi;

pub const OPENAPI_PATH: &str = "/api/realtime/openapi.json";

async fn openapi() -> Response {
    Json(AdminApi::openapi()).into_response()
}

pub fn routes() -> Router<Arc<AppState>> {
    Router::new()
        .route(OPENAPI_PATH, get(openapi))
        .route("/api/realtime/channels", get(list).post(create))
        .route(
            "/api/realtime/channels/{id}",
            get(get_one).put(update).delete(remove),
        )
        .route("/api/realtime/config", get(settings).patch(set_settings))
        .route(
            "/api/realtime/permissions",
            get(permissions).post(create_policy),
        )
        .route(
            "/api/realtime/permissions/{command}/{name}",
            axum::routing::delete(delete_policy),
        )
        .route_layer(axum::middleware::from_fn(no_query))
        // These take query parameters (and refuse unknown ones).
        .route(
            "/api/realtime/messages",
            get(messages).delete(delete_messages),
        )
        .route("/api/realtime/messages/stats", get(message_stats))
}

/// An admin API failure.
#[derive(Debug)]
pub struct AdminError {
    pub status: StatusCode,
    pub code: &'static str,
    pub message: String,
}

impl AdminError {
    fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> Self {
        AdminError {
            status,
            code,
            message: message.into(),
        }
    }

    fn invalid(message: impl Into<String>) -> Self {
        AdminError::new(StatusCode::BAD_REQUEST, "INVALID_INPUT", message)
    }
}

impl IntoResponse for AdminError {
    fn into_response(self) -> Response {
        let body = ErrorReply {
            error: self.code.to_owned(),
            message: self.message,
            status_code: self.status.as_u16(),
        };
        (self.status, Json(body)).into_response()
    }
}

impl From<StoreError> for AdminError {
    fn from(e: StoreError) -> Self {
        match e {
            StoreError::Duplicate(pattern) => AdminError::new(
                StatusCode::CONFLICT,
                "ALREADY_EXISTS",
                format!("a channel with pattern `{pattern}` already exists"),
            ),
            StoreError::Unreachable { .. } => {
                tracing::warn!(error = %e, "admin API: database unreachable");
                AdminError::new(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "DATABASE_UNAVAILABLE",
                    "the database is unreachable",
                )
            }
            e => {
                tracing::warn!(error = %e, "admin API: database error");
                AdminError::new(
                    StatusCode::INTERNAL_SERVER_ERROR,
                    "INTERNAL_ERROR",
                    "the database failed",
                )
            }
        }
    }
}

type Answer = Result<Response, AdminError>;

/// Refuses a call with query parameters, naming the first: none of these
/// routes takes any.
async fn no_query(request: axum::extract::Request, next: axum::middleware::Next) -> Response {
    let Some(query) = request.uri().query().filter(|q| !q.is_empty()) else {
        return next.run(request).await;
    };
    let name = query.split(['&', '=']).next().unwrap_or_default();
    AdminError::invalid(format!("unknown query parameter `{name}`")).into_response()
}

/// The app an admin call is for: its API key, or an admin's user JWT.
async fn admit(state: &AppState, headers: &HeaderMap) -> Result<Arc<App>, AdminError> {
    let credentials = Credentials::from_headers(headers);
    if let Some(app) = credentials
        .server_key()
        .and_then(|k| state.apps.by_api_key(k))
    {
        return Ok(Arc::clone(app));
    }
    let unauthorized = || {
        AdminError::new(
            StatusCode::UNAUTHORIZED,
            "UNAUTHORIZED",
            "an API key or a project admin's token is required",
        )
    };
    let token = credentials.bearer.as_deref().ok_or_else(unauthorized)?;
    let (app, identity) = verify_user_token_fetching(&state.apps, token)
        .await
        .map_err(|_| unauthorized())?;
    if identity.role() != Some(ADMIN_ROLE) {
        return Err(AdminError::new(
            StatusCode::FORBIDDEN,
            "FORBIDDEN",
            format!("the token's role must be `{ADMIN_ROLE}`"),
        ));
    }
    Ok(app)
}

fn store(state: &AppState) -> Result<&Store, AdminError> {
    state.definitions.store().ok_or_else(|| {
        AdminError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "DATABASE_UNAVAILABLE",
            "this gateway has no database: start every gateway with --database postgres://… to manage channels",
        )
    })
}

fn body<T: DeserializeOwned>(body: Result<Bytes, BytesRejection>) -> Result<T, AdminError> {
    let body = body.map_err(|e| {
        if e.status() == StatusCode::PAYLOAD_TOO_LARGE {
            AdminError::new(
                StatusCode::PAYLOAD_TOO_LARGE,
                "PAYLOAD_TOO_LARGE",
                "request body too large",
            )
        } else {
            AdminError::invalid(e.body_text())
        }
    })?;
    serde_json::from_slice(&body).map_err(|e| AdminError::invalid(format!("invalid body: {e}")))
}

/// A channel definition.
#[derive(Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct Channel {
    /// A UUID.
    pub id: String,
    /// SQL `LIKE` pattern: `%` is the only wildcard.
    #[schema(example = "order:%")]
    pub pattern: String,
    pub description: Option<String>,
    pub webhook_urls: Vec<String>,
    pub enabled: bool,
    /// ISO 8601.
    pub created_at: String,
    /// ISO 8601.
    pub updated_at: String,
    /// Webhook URLs that answered `410 Gone`: no more messages go to them
    /// (a Herald addition; absent when none).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub disabled_webhook_urls: Vec<String>,
}

/// The app's realtime settings.
#[derive(Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct Settings {
    /// Days messages are kept; `null` keeps them indefinitely.
    pub retention_days: Option<u32>,
}

/// An error.
#[derive(Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct ErrorReply {
    #[schema(example = "REALTIME_INVALID_CHANNEL_PATTERN")]
    pub error: String,
    pub message: String,
    pub status_code: u16,
}

/// A deletion's answer.
#[derive(Serialize, ToSchema)]
pub struct Deleted {
    #[schema(example = "Channel deleted")]
    pub message: String,
}

/// A definition as the API shows it.
pub fn view(def: &Definition) -> Channel {
    Channel {
        id: def.id.clone(),
        pattern: def.pattern.clone(),
        description: def.description.clone(),
        webhook_urls: def.webhook_urls.clone(),
        enabled: def.enabled,
        created_at: iso(def.created_at_ms.max(0) as u64),
        updated_at: iso(def.updated_at_ms.max(0) as u64),
        disabled_webhook_urls: Vec::new(),
    }
}

/// A definition with the URLs disabled for it (`(channel id, url)` pairs).
fn view_with(def: &Definition, disabled: &[(String, String)]) -> Channel {
    let mut channel = view(def);
    channel.disabled_webhook_urls = disabled
        .iter()
        .filter(|(c, _)| *c == def.id)
        .map(|(_, u)| u.clone())
        .collect();
    channel
}

/// A field that may be sent as `null` to clear it: absent is `None`,
/// `null` is `Some(None)`.
fn nullable<'de, D: Deserializer<'de>, T: Deserialize<'de>>(
    d: D,
) -> Result<Option<Option<T>>, D::Error> {
    Option::<T>::deserialize(d).map(Some)
}

/// A new channel definition.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct Create {
    pattern: String,
    description: Option<String>,
    webhook_urls: Option<Vec<String>>,
    enabled: Option<bool>,
}

/// The fields to change; `description: null` clears it.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct Update {
    pattern: Option<String>,
    #[serde(default, deserialize_with = "nullable")]
    #[schema(value_type = Option<String>)]
    description: Option<Option<String>>,
    webhook_urls: Option<Vec<String>>,
    enabled: Option<bool>,
}

fn check_pattern(p: &str) -> Result<(), AdminError> {
    pattern::validate(p).map_err(|why| {
        AdminError::new(
            StatusCode::BAD_REQUEST,
            "REALTIME_INVALID_CHANNEL_PATTERN",
            format!("invalid pattern `{p}`: {why}"),
        )
    })
}

fn check_description(d: Option<&str>) -> Result<(), AdminError> {
    match d {
        Some(d) if d.chars().count() > MAX_DESCRIPTION => Err(AdminError::invalid(format!(
            "description is longer than {MAX_DESCRIPTION} characters"
        ))),
        _ => Ok(()),
    }
}

/// Webhook URLs: at most [`MAX_WEBHOOKS`], each `http` or `https` with a
/// host, and not an address in a private or loopback range unless the
/// configuration allows those.
pub fn check_webhooks(urls: &[String], allow_private: bool) -> Result<(), AdminError> {
    if urls.len() > MAX_WEBHOOKS {
        return Err(AdminError::invalid(format!(
            "at most {MAX_WEBHOOKS} webhookUrls"
        )));
    }
    for url in urls {
        let parsed: Option<Uri> = (url.len() <= MAX_URL).then(|| url.parse().ok()).flatten();
        let ok = parsed.is_some_and(|u| {
            matches!(u.scheme_str(), Some("http" | "https"))
                && u.host().is_some_and(|h| !h.is_empty())
        });
        if !ok {
            return Err(AdminError::invalid(format!(
                "webhookUrls: `{url}` is not an http(s) URL with a host"
            )));
        }
        herald_dispatch::webhook::check_url(url, allow_private)
            .map_err(|e| AdminError::invalid(format!("webhookUrls: {e}")))?;
    }
    if let Some((i, url)) = urls
        .iter()
        .enumerate()
        .find(|(i, u)| urls[..*i].contains(u))
    {
        return Err(AdminError::invalid(format!(
            "webhookUrls: `{url}` is listed twice (at {i})"
        )));
    }
    Ok(())
}

#[utoipa::path(get, path = "/api/realtime/channels", tag = "channels",
    responses((status = 200, description = "The app's definitions, oldest first", body = [Channel]),
              (status = 401, body = ErrorReply), (status = 403, body = ErrorReply), (status = 503, body = ErrorReply)))]
async fn list(State(state): State<Arc<AppState>>, headers: HeaderMap) -> Answer {
    let app = admit(&state, &headers).await?;
    let store = store(&state)?;
    let defs = store.definitions(app.id()).await?;
    let disabled = store.disabled_webhooks().await?;
    Ok(Json(
        defs.iter()
            .map(|d| view_with(d, &disabled))
            .collect::<Vec<_>>(),
    )
    .into_response())
}

#[utoipa::path(post, path = "/api/realtime/channels", tag = "channels", request_body = Create,
    responses((status = 201, body = Channel),
              (status = 400, description = "REALTIME_INVALID_CHANNEL_PATTERN or INVALID_INPUT", body = ErrorReply),
              (status = 409, description = "ALREADY_EXISTS", body = ErrorReply),
              (status = 401, body = ErrorReply), (status = 503, body = ErrorReply)))]
async fn create(
    State(state): State<Arc<AppState>>,
    headers: HeaderMap,
    raw: Result<Bytes, BytesRejection>,
) -> Answer {
    let app = admit(&state, &headers).await?;
    let store = store(&state)?;
    let req: Create = body(raw)?;
    check_pattern(&req.pattern)?;
    check_description(req.description.as_deref())?;
    let webhook_urls = req.webhook_urls.unwrap_or_default();
    check_webhooks(&webhook_urls, state.config.webhooks.allow_private_targets)?;
    let new = NewDefinition {
        pattern: req.pattern,
        description: req.description,
        webhook_urls,
        enabled: req.enabled.unwrap_or(true),
    };
    let def = store.create(app.id(), new).await?;
    applied(&state).await;
    Ok((StatusCode::CREATED, Json(view(&def))).into_response())
}

fn not_found(id: &str) -> AdminError {
    AdminError::new(
        StatusCode::NOT_FOUND,
        "NOT_FOUND",
        format!("no channel with id `{id}`"),
    )
}

#[utoipa::path(get, path = "/api/realtime/channels/{id}", tag = "channels",
    params(("id" = String, Path, description = "The definition's id")),
    responses((status = 200, body = Channel), (status = 404, body = ErrorReply), (status = 401, body = ErrorReply)))]
async fn get_one(
    State(state): State<Arc<AppState>>,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> Answer {
    let app = admit(&state, &headers).await?;
    let store = store(&state)?;
    match store.definition(app.id(), &id).await? {
        Some(def) => Ok(Json(view_with(&def, &store.disabled_webhooks().await?)).into_response()),
        None => Err(not_found(&id)),
    }
}

#[utoipa::path(put, path = "/api/realtime/channels/{id}", tag = "channels", request_body = Update,
    params(("id" = String, Path, description = "The definition's id")),
    responses((status = 200, body = Channel), (status = 400, body = ErrorReply), (status = 404, body = ErrorReply),
              (status = 409, body = ErrorReply), (status = 401, body = ErrorReply)))]
async fn update(
    State(state): State<Arc<AppState>>,
    headers: HeaderMap,
    Path(id): Path<String>,
    raw: Result<Bytes, BytesRejection>,
) -> Answer {
    let app = admit(&state, &headers).await?;
    let store = store(&state)?;
    let req: Update = body(raw)?;
    if let Some(p) = &req.pattern {
        check_pattern(p)?;
    }
    check_description(req.description.as_ref().and_then(Option::as_deref))?;
    if let Some(urls) = &req.webhook_urls {
        check_webhooks(urls, state.config.webhooks.allow_private_targets)?;
    }
    let change = DefinitionChange {
        pattern: req.pattern,
        description: req.description,
        webhook_urls: req.webhook_urls,
        enabled: req.enabled,
    };
    match store.update(app.id(), &id, change).await? {
        Some(def) => {
            applied(&state).await;
            Ok(Json(view(&def)).into_response())
        }
        None => Err(not_found(&id)),
    }
}

#[utoipa::path(delete, path = "/api/realtime/channels/{id}", tag = "channels",
    params(("id" = String, Path, description = "The definition's id")),
    responses((status = 200, body = Deleted), (status = 404, body = ErrorReply), (status = 401, body = ErrorReply)))]
async fn remove(
    State(state): State<Arc<AppState>>,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> Answer {
    let app = admit(&state, &headers).await?;
    if !store(&state)?.delete(app.id(), &id).await? {
        return Err(not_found(&id));
    }
    applied(&state).await;
    Ok(Json(Deleted {
        message: "Channel deleted".into(),
    })
    .into_response())
}

/// Applies a change on this gateway at once (the others within
/// `definitions::POLL`).
async fn applied(state: &AppState) {
    if let Err(e) = state.definitions.refresh().await {
        tracing::warn!(error = %e, "cannot reload channel definitions after a change");
    }
}

fn settings_view(s: RealtimeSettings) -> Response {
    Json(Settings {
        retention_days: s.retention_days,
    })
    .into_response()
}

#[utoipa::path(get, path = "/api/realtime/config", tag = "config",
    responses((status = 200, body = Settings), (status = 401, body = ErrorReply)))]
async fn settings(State(state): State<Arc<AppState>>, headers: HeaderMap) -> Answer {
    let app = admit(&state, &headers).await?;
    Ok(settings_view(store(&state)?.settings(app.id()).await?))
}

/// A change of the settings: `retentionDays` null or a positive integer.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct SettingsChange {
    #[serde(default, deserialize_with = "nullable")]
    #[schema(value_type = Option<i64>, minimum = 1)]
    retention_days: Option<Option<i64>>,
}

#[utoipa::path(patch, path = "/api/realtime/config", tag = "config", request_body = SettingsChange,
    responses((status = 200, body = Settings), (status = 400, body = ErrorReply), (status = 401, body = ErrorReply)))]
async fn set_settings(
    State(state): State<Arc<AppState>>,
    headers: HeaderMap,
    raw: Result<Bytes, BytesRejection>,
) -> Answer {
    let app = admit(&state, &headers).await?;
    let store = store(&state)?;
    let req: SettingsChange = body(raw)?;
    let mut current = store.settings(app.id()).await?;
    if let Some(days) = req.retention_days {
        current.retention_days = match days {
            None => None,
            Some(d) if (1..=i64::from(u32::MAX)).contains(&d) => Some(d as u32),
            Some(d) => {
                return Err(AdminError::invalid(format!(
                    "retentionDays must be null or a positive integer, not {d}"
                )))
            }
        };
    }
    let saved = store.set_settings(app.id(), current).await?;
    applied(&state).await;
    Ok(settings_view(saved))
}

/// A new permission policy.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct NewPolicyBody {
    /// `subscribe` or `publish`.
    command: String,
    policy_name: String,
    /// Any of `anon`, `authenticated`, `project_admin`; empty or absent:
    /// every role.
    roles: Option<Vec<String>>,
    /// A filter expression over `channel` (`name`, `pattern`), `user`
    /// (`sub`, `role`, `claims`) and, for publish, `message` (`event`,
    /// `payload`); absent: the roles alone decide.
    condition: Option<String>,
}

/// A policy as Herald stores it.
#[derive(Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct PolicyView {
    pub id: String,
    pub command: String,
    pub policy_name: String,
    pub roles: Vec<String>,
    pub condition: Option<String>,
    /// ISO 8601.
    pub created_at: String,
}

/// A policy in the original's listing shape.
#[derive(Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct RlsPolicy {
    pub policy_name: String,
    /// `channels` (subscribe) or `messages` (publish).
    pub table_name: String,
    /// `SELECT` (subscribe) or `INSERT` (publish).
    pub command: String,
    pub roles: Vec<String>,
    /// The condition of a subscribe policy.
    pub using: Option<String>,
    /// The condition of a publish policy.
    pub with_check: Option<String>,
}

#[derive(Serialize, ToSchema)]
pub struct PolicyList {
    pub policies: Vec<RlsPolicy>,
}

/// `GET /api/realtime/permissions`.
#[derive(Serialize, ToSchema)]
pub struct Permissions {
    pub subscribe: PolicyList,
    pub publish: PolicyList,
}

const MAX_POLICY_NAME: usize = 63;

#[utoipa::path(get, path = "/api/realtime/permissions", tag = "permissions",
    responses((status = 200, body = Permissions), (status = 401, body = ErrorReply)))]
async fn permissions(State(state): State<Arc<AppState>>, headers: HeaderMap) -> Answer {
    let app = admit(&state, &headers).await?;
    let policies = store(&state)?.policies(app.id()).await?;
    let list = |command: &str| PolicyList {
        policies: policies
            .iter()
            .filter(|p| p.command == command)
            .map(|p| {
                let subscribe = command == "subscribe";
                RlsPolicy {
                    policy_name: p.policy_name.clone(),
                    table_name: if subscribe { "channels" } else { "messages" }.into(),
                    command: if subscribe { "SELECT" } else { "INSERT" }.into(),
                    roles: if p.roles.is_empty() {
                        vec!["public".into()]
                    } else {
                        p.roles.clone()
                    },
                    using: p.condition.clone().filter(|_| subscribe),
                    with_check: p.condition.clone().filter(|_| !subscribe),
                }
            })
            .collect(),
    };
    Ok(Json(Permissions {
        subscribe: list("subscribe"),
        publish: list("publish"),
    })
    .into_response())
}

#[utoipa::path(post, path = "/api/realtime/permissions", tag = "permissions", request_body = NewPolicyBody,
    responses((status = 201, body = PolicyView),
              (status = 400, description = "INVALID_INPUT: unknown command or role, or a condition that does not compile (with its error)", body = ErrorReply),
              (status = 409, body = ErrorReply), (status = 401, body = ErrorReply)))]
async fn create_policy(
    State(state): State<Arc<AppState>>,
    headers: HeaderMap,
    raw: Result<Bytes, BytesRejection>,
) -> Answer {
    let app = admit(&state, &headers).await?;
    let store = store(&state)?;
    let req: NewPolicyBody = body(raw)?;
    if !crate::permissions::COMMANDS.contains(&req.command.as_str()) {
        return Err(AdminError::invalid(format!(
            "command must be `subscribe` or `publish`, not `{}`",
            req.command
        )));
    }
    let name = req.policy_name.trim();
    if name.is_empty() || name.len() > MAX_POLICY_NAME {
        return Err(AdminError::invalid(format!(
            "policyName must be 1 to {MAX_POLICY_NAME} bytes"
        )));
    }
    let roles = req.roles.unwrap_or_default();
    if let Some(bad) = roles
        .iter()
        .find(|r| !crate::permissions::ROLES.contains(&r.as_str()))
    {
        return Err(AdminError::invalid(format!(
            "unknown role `{bad}`: use anon, authenticated or project_admin"
        )));
    }
    if let Some(condition) = &req.condition {
        crate::permissions::compile(condition)
            .map_err(|e| AdminError::invalid(format!("condition: {e}")))?;
    }
    let policy = store
        .create_policy(
            app.id(),
            herald_store::policies::NewPolicy {
                command: req.command,
                name: name.to_owned(),
                roles,
                condition: req.condition,
            },
        )
        .await
        .map_err(|e| match e {
            StoreError::Duplicate(name) => AdminError::new(
                StatusCode::CONFLICT,
                "ALREADY_EXISTS",
                format!("a policy named `{name}` exists for this command"),
            ),
            e => e.into(),
        })?;
    applied(&state).await;
    Ok((
        StatusCode::CREATED,
        Json(PolicyView {
            created_at: iso(policy.created_at_ms.max(0) as u64),
            id: policy.id,
            command: policy.command,
            policy_name: policy.policy_name,
            roles: policy.roles,
            condition: policy.condition,
        }),
    )
        .into_response())
}

#[utoipa::path(delete, path = "/api/realtime/permissions/{command}/{name}", tag = "permissions",
    params(("command" = String, Path, description = "subscribe or publish"), ("name" = String, Path, description = "The policy's name")),
    responses((status = 200, body = Deleted), (status = 404, body = ErrorReply), (status = 401, body = ErrorReply)))]
async fn delete_policy(
    State(state): State<Arc<AppState>>,
    headers: HeaderMap,
    Path((command, name)): Path<(String, String)>,
) -> Answer {
    let app = admit(&state, &headers).await?;
    if !store(&state)?
        .delete_policy(app.id(), &command, &name)
        .await?
    {
        return Err(AdminError::new(
            StatusCode::NOT_FOUND,
            "NOT_FOUND",
            format!("no {command} policy named `{name}`"),
        ));
    }
    applied(&state).await;
    Ok(Json(Deleted {
        message: "Policy deleted".into(),
    })
    .into_response())
}

/// Reads a query string strictly: an unknown parameter is refused, named.
fn query<T: DeserializeOwned>(uri: &Uri) -> Result<T, AdminError> {
    serde_urlencoded::from_str(uri.query().unwrap_or_default())
        .map_err(|e| AdminError::invalid(format!("invalid query: {e}")))
}

/// `GET /api/realtime/messages`.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct MessagesQuery {
    channel_id: Option<String>,
    event_name: Option<String>,
    /// 1 to 1000, default 100.
    limit: Option<String>,
    offset: Option<String>,
}

/// A logged message.
#[derive(Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct LoggedMessage {
    pub id: String,
    pub event_name: String,
    pub channel_id: Option<String>,
    pub channel_name: String,
    #[schema(value_type = Object)]
    pub payload: serde_json::Value,
    /// `system` (the app's backend) or `user`.
    pub sender_type: String,
    pub sender_id: Option<String>,
    /// Sockets the message was delivered to, on every gateway together.
    pub ws_audience_count: i64,
    /// Webhook URLs it was to go to.
    pub wh_audience_count: i64,
    /// Of those, how many took it.
    pub wh_delivered_count: i64,
    /// ISO 8601.
    pub created_at: String,
}

fn number<T: std::str::FromStr>(
    name: &str,
    value: Option<&str>,
    default: T,
) -> Result<T, AdminError> {
    match value {
        None => Ok(default),
        Some(v) => v.parse().map_err(|_| {
            AdminError::invalid(format!("{name} must be a non-negative integer, not `{v}`"))
        }),
    }
}

#[utoipa::path(get, path = "/api/realtime/messages", tag = "messages",
    params(("channelId" = Option<String>, Query), ("eventName" = Option<String>, Query),
           ("limit" = Option<u32>, Query, description = "1 to 1000, default 100"), ("offset" = Option<u64>, Query)),
    responses((status = 200, description = "Newest first; X-Total-Count says how many match", body = [LoggedMessage]),
              (status = 400, body = ErrorReply), (status = 401, body = ErrorReply)))]
async fn messages(State(state): State<Arc<AppState>>, headers: HeaderMap, uri: Uri) -> Answer {
    let app = admit(&state, &headers).await?;
    let q: MessagesQuery = query(&uri)?;
    let limit: u32 = number("limit", q.limit.as_deref(), 100)?;
    if !(1..=1000).contains(&limit) {
        return Err(AdminError::invalid(format!(
            "limit must be 1 to 1000, not {limit}"
        )));
    }
    let filter = herald_store::messages::MessageFilter {
        channel_id: q.channel_id,
        event_name: q.event_name,
        limit,
        offset: number("offset", q.offset.as_deref(), 0)?,
    };
    let (rows, total) = store(&state)?.messages(app.id(), &filter).await?;
    let rows: Vec<LoggedMessage> = rows
        .into_iter()
        .map(|m| LoggedMessage {
            created_at: iso(m.created_at_ms.max(0) as u64),
            id: m.id,
            event_name: m.event_name,
            channel_id: m.channel_id,
            channel_name: m.channel_name,
            payload: m.payload,
            sender_type: m.sender_type,
            sender_id: m.sender_id,
            ws_audience_count: m.ws_audience_count,
            wh_audience_count: m.wh_audience_count,
            wh_delivered_count: m.wh_delivered_count,
        })
        .collect();
    Ok(([("x-total-count", total.to_string())], Json(rows)).into_response())
}

/// `DELETE /api/realtime/messages`'s answer.
#[derive(Serialize, ToSchema)]
pub struct Cleared {
    pub deleted: u64,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct NoQuery {}

#[utoipa::path(delete, path = "/api/realtime/messages", tag = "messages",
    responses((status = 200, body = Cleared), (status = 401, body = ErrorReply)))]
async fn delete_messages(
    State(state): State<Arc<AppState>>,
    headers: HeaderMap,
    uri: Uri,
) -> Answer {
    let app = admit(&state, &headers).await?;
    let _: NoQuery = query(&uri)?;
    let deleted = store(&state)?.delete_messages(app.id()).await?;
    Ok(Json(Cleared { deleted }).into_response())
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct StatsQuery {
    channel_id: Option<String>,
    /// ISO 8601, or epoch milliseconds.
    since: Option<String>,
}

/// Message statistics.
#[derive(Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct Stats {
    pub total_messages: i64,
    /// Webhook deliveries made over webhook deliveries due; 0 when none.
    pub wh_delivery_rate: f64,
    /// The ten most published event names.
    #[schema(value_type = Vec<Object>)]
    pub top_events: Vec<herald_store::messages::EventCount>,
    pub retention_days: Option<u32>,
}

/// Reads `since`: RFC 3339 (`2026-11-23T10:00:00Z`) or epoch milliseconds.
fn since_ms(text: &str) -> Result<i64, AdminError> {
    if let Ok(ms) = text.parse::<i64>() {
        return Ok(ms);
    }
    time::OffsetDateTime::parse(text, &time::format_description::well_known::Rfc3339)
        .map(|t| (t.unix_timestamp_nanos() / 1_000_000) as i64)
        .map_err(|e| {
            AdminError::invalid(format!(
                "since must be an ISO 8601 time or epoch milliseconds: {e}"
            ))
        })
}

#[utoipa::path(get, path = "/api/realtime/messages/stats", tag = "messages",
    params(("channelId" = Option<String>, Query), ("since" = Option<String>, Query, description = "ISO 8601 or epoch ms")),
    responses((status = 200, body = Stats), (status = 400, body = ErrorReply), (status = 401, body = ErrorReply)))]
async fn message_stats(State(state): State<Arc<AppState>>, headers: HeaderMap, uri: Uri) -> Answer {
    let app = admit(&state, &headers).await?;
    let q: StatsQuery = query(&uri)?;
    let since = q.since.as_deref().map(since_ms).transpose()?;
    let store = store(&state)?;
    let stats = store
        .message_stats(app.id(), q.channel_id.as_deref(), since)
        .await?;
    let retention_days = store.settings(app.id()).await?.retention_days;
    Ok(Json(Stats {
        total_messages: stats.total_messages,
        wh_delivery_rate: stats.wh_delivery_rate,
        top_events: stats.top_events,
        retention_days,
    })
    .into_response())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn webhook_urls_must_be_http_with_a_host() {
        let ok = |u: &str| check_webhooks(&[u.to_owned()], true).is_ok();
        assert!(
            check_webhooks(&["http://127.0.0.1:9000/x".to_owned()], false)
                .unwrap_err()
                .message
                .contains("private")
        );
        assert!(ok("https://example.com/hook"));
        assert!(ok("http://127.0.0.1:9000/x?y=1"));
        assert!(!ok("ftp://example.com/"));
        assert!(!ok("example.com/hook"));
        assert!(!ok("https://"));
        assert!(!ok("not a url"));
        let many: Vec<String> = (0..=MAX_WEBHOOKS)
            .map(|i| format!("https://h/{i}"))
            .collect();
        assert!(check_webhooks(&many, true).is_err());
        let twice = ["https://h/a".to_owned(), "https://h/a".to_owned()];
        assert!(check_webhooks(&twice, true)
            .unwrap_err()
            .message
            .contains("twice"));
    }

    #[test]
    fn errors_have_insforge_shape() {
        let r = AdminError::invalid("nope").into_response();
        assert_eq!(r.status(), StatusCode::BAD_REQUEST);
    }
}
