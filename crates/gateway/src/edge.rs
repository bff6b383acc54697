//! Admission, the same for every endpoint: reading credentials, the
//! client's address, the per-IP connection limit, and rate-limit
//! rejections.
//!
//! Credentials are read one way everywhere ([`Credentials`]): from the same
//! headers, plus the query on an upgrade, trimmed; a credential sent empty
//! is still a credential (and fails), never taken for none. Each kind of
//! endpoint then has one order: the server API takes `X-API-Key`, else the
//! bearer, as the app's API key ([`Credentials::server_key`]); a client
//! connection takes the bearer as a user JWT, else the API key as a
//! server-side connection, else is anonymous ([`authenticate_connection`]).
//!
//! A client connection is admitted by [`admit`], a middleware any upgrade
//! endpoint sits behind: shutdown, then the per-IP limit (before any
//! credential is checked), then authentication. The endpoint finds the
//! result in the request's extensions as [`Admitted`].

use crate::auth::{verify_user_token_fetching, App, Identity};
use crate::state::AppState;
use axum::extract::{ConnectInfo, Request, State};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::Json;
use herald_protocol::{ErrorBody, ErrorCode};
use serde::{Deserialize, Serialize};
use serde_json::json;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

/// The credentials a request carries.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Credentials {
    /// `Authorization: Bearer <token>`, or `?token=` on an upgrade.
    pub bearer: Option<String>,
    /// `X-API-Key: <key>`, or `?apiKey=` on an upgrade.
    pub api_key: Option<String>,
    /// `?app=`: the app of an anonymous connection.
    pub app: Option<String>,
}

/// The credential query parameters of an upgrade (browsers cannot set
/// headers on a WebSocket).
#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
struct CredentialParams {
    token: Option<String>,
    api_key: Option<String>,
    app: Option<String>,
}

fn trimmed(value: Option<&str>) -> Option<String> {
    value.map(|v| v.trim().to_owned())
}

impl Credentials {
    /// From headers alone (the server API).
    pub fn from_headers(headers: &HeaderMap) -> Self {
        let header = |name: &str| headers.get(name).and_then(|v| v.to_str().ok());
        Credentials {
            bearer: trimmed(
                header(header::AUTHORIZATION.as_str()).and_then(|v| v.strip_prefix("Bearer ")),
            ),
            api_key: trimmed(header("x-api-key")),
            app: None,
        }
    }

    /// From headers and the query string (upgrade endpoints); a query
    /// parameter wins over the header of the same kind. A query that cannot
    /// be read (a parameter given twice, say) is refused.
    pub fn from_upgrade(headers: &HeaderMap, query: Option<&str>) -> Result<Self, ErrorBody> {
        let params: CredentialParams = match query {
            Some(q) => serde_urlencoded::from_str(q).map_err(|e| {
                ErrorBody::new(
                    ErrorCode::RealtimeInvalidChannelRequest,
                    format!("invalid query string: {e}"),
                )
            })?,
            None => CredentialParams::default(),
        };
        let from_headers = Credentials::from_headers(headers);
        Ok(Credentials {
            bearer: trimmed(params.token.as_deref()).or(from_headers.bearer),
            api_key: trimmed(params.api_key.as_deref()).or(from_headers.api_key),
            app: trimmed(params.app.as_deref()),
        })
    }

    /// The API key of a server-API call: `X-API-Key`, else the bearer.
    pub fn server_key(&self) -> Option<&str> {
        self.api_key.as_deref().or(self.bearer.as_deref())
    }
}

/// Authenticates a client connection: a user JWT, else an API key, else
/// anonymous where the app allows it.
pub async fn authenticate_connection(
    state: &AppState,
    credentials: &Credentials,
) -> Result<(Arc<App>, Identity), ErrorBody> {
    if let Some(token) = &credentials.bearer {
        return verify_user_token_fetching(&state.apps, token).await;
    }
    if let Some(key) = &credentials.api_key {
        return state
            .apps
            .by_api_key(key)
            .map(|app| (Arc::clone(app), Identity::System))
            .ok_or_else(|| ErrorBody::new(ErrorCode::Unauthorized, ""));
    }
    let app = match credentials.app.as_deref() {
        Some(id) => state.apps.get(id),
        None => state.apps.only(),
    };
    match app {
        Some(app) if app.config.allow_anonymous => Ok((Arc::clone(app), Identity::Anonymous)),
        _ => Err(ErrorBody::new(ErrorCode::Unauthorized, "")),
    }
}

/// The client's address: the peer, or, when the gateway trusts its
/// proxies, the `X-Forwarded-For` entry `trusted_proxy_hops` places from
/// the right (what the outermost trusted proxy saw). Entries to its left
/// are whatever the client sent and are never used; a header with fewer
/// entries than hops did not come through every proxy, and the peer is
/// used.
pub fn client_ip(state: &AppState, peer: SocketAddr, headers: &HeaderMap) -> IpAddr {
    if !state.config.trust_forwarded_for {
        return peer.ip();
    }
    let hops = state.config.trusted_proxy_hops.max(1);
    // Several headers count as one list, in order.
    let entries: Vec<&str> = headers
        .get_all("x-forwarded-for")
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .map(str::trim)
        .collect();
    entries
        .len()
        .checked_sub(hops)
        .and_then(|at| entries[at].parse().ok())
        .unwrap_or(peer.ip())
}

/// `RATE_LIMIT_EXCEEDED`, retry after `wait` (at least 1 ms).
pub fn rate_limited(wait: Duration) -> ErrorBody {
    let mut e = ErrorBody::new(ErrorCode::RateLimitExceeded, "");
    e.retry_after_ms = Some(wait.as_millis().max(1) as u64);
    e
}

pub(crate) fn set_header(response: &mut Response, name: &'static str, value: u64) {
    if let Ok(v) = HeaderValue::from_str(&value.to_string()) {
        response.headers_mut().insert(name, v);
    }
}

/// An HTTP answer to a refused request: `body` (the endpoint's own shape)
/// with `status`, and for a rate-limit refusal `Retry-After` (whole seconds,
/// rounded up, at least 1) and the `X-RateLimit-*` headers (`limit` is the
/// burst, where one applies).
pub fn refusal<T: Serialize>(
    status: StatusCode,
    error: &ErrorBody,
    limit: Option<u32>,
    body: T,
) -> Response {
    let mut response = (status, Json(body)).into_response();
    if let Some(ms) = error.retry_after_ms {
        let secs = ms.div_ceil(1000).max(1);
        set_header(&mut response, "retry-after", secs);
        set_header(&mut response, "x-ratelimit-remaining", 0);
        set_header(&mut response, "x-ratelimit-reset", secs);
        if let Some(limit) = limit {
            set_header(&mut response, "x-ratelimit-limit", u64::from(limit));
        }
    }
    response
}

/// Refuses a browser connection from an origin the app does not list
/// (where it lists any).
pub(crate) fn check_origin(app: &App, headers: &HeaderMap) -> Result<(), ErrorBody> {
    let allowed = &app.config.allowed_origins;
    let Some(origin) = headers.get(header::ORIGIN) else {
        return Ok(());
    };
    let origin = origin.to_str().unwrap_or_default().trim_end_matches('/');
    if allowed.is_empty() || allowed.iter().any(|a| a.trim_end_matches('/') == origin) {
        return Ok(());
    }
    Err(ErrorBody::new(
        ErrorCode::Unauthorized,
        format!("origin `{origin}` is not allowed for this app"),
    ))
}

/// A connection that passed admission.
#[derive(Clone)]
pub struct Admitted {
    pub app: Arc<App>,
    pub identity: Identity,
    pub ip: IpAddr,
}

/// Refuses a connection before its upgrade, counted by error code.
pub fn refuse_connection(state: &AppState, status: StatusCode, error: ErrorBody) -> Response {
    state
        .metrics
        .connections_refused
        .with_label_values(&[error.code.as_str()])
        .inc();
    refusal(status, &error, None, json!({ "error": &error }))
}

/// The first step of admitting any client connection, whatever its
/// surface: refused with 503 while shutting down and 429 past the per-IP
/// connection rate (before any credential is looked at). The client's
/// address when it may go on.
pub fn open_connection(
    state: &AppState,
    peer: SocketAddr,
    headers: &HeaderMap,
) -> Result<IpAddr, Box<Response>> {
    if state.shutdown.is_cancelled() {
        let e = ErrorBody::new(ErrorCode::InternalError, "server is shutting down");
        return Err(Box::new(refuse_connection(
            state,
            StatusCode::SERVICE_UNAVAILABLE,
            e,
        )));
    }
    let ip = client_ip(state, peer, headers);
    state
        .metrics
        .ratelimit_checks
        .with_label_values(&["connections"])
        .inc();
    if let Some(wait) = state.connects.check(&ip) {
        state
            .metrics
            .ratelimit_rejections
            .with_label_values(&["connections", "-"])
            .inc();
        return Err(Box::new(refuse_connection(
            state,
            StatusCode::TOO_MANY_REQUESTS,
            rate_limited(wait),
        )));
    }
    Ok(ip)
}

/// Admits a client connection: refused with 503 while shutting down, 429
/// past the per-IP connection limit (checked before credentials), 401 for
/// bad credentials. Admitted requests carry [`Admitted`].
pub async fn admit(
    State(state): State<Arc<AppState>>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    mut request: Request,
    next: Next,
) -> Response {
    let ip = match open_connection(&state, peer, request.headers()) {
        Ok(ip) => ip,
        Err(refused) => return *refused,
    };
    let headers = request.headers();
    let credentials = match Credentials::from_upgrade(headers, request.uri().query()) {
        Ok(credentials) => credentials,
        Err(e) => return refuse_connection(&state, StatusCode::BAD_REQUEST, e),
    };
    let (app, identity) = match authenticate_connection(&state, &credentials).await {
        Ok(found) => found,
        Err(e) => return refuse_connection(&state, StatusCode::UNAUTHORIZED, e),
    };
    if let Err(e) = check_origin(&app, request.headers()) {
        return refuse_connection(&state, StatusCode::FORBIDDEN, e);
    }
    request
        .extensions_mut()
        .insert(Admitted { app, identity, ip });
    next.run(request).await
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(pairs: &[(&'static str, &str)]) -> HeaderMap {
        let mut map = HeaderMap::new();
        for (name, value) in pairs {
            map.insert(*name, value.parse().unwrap());
        }
        map
    }

    #[test]
    fn credentials_are_trimmed_and_read_the_same_from_headers_and_query() {
        let h = headers(&[("authorization", "Bearer  abc "), ("x-api-key", " key-1 ")]);
        let c = Credentials::from_headers(&h);
        assert_eq!(c.bearer.as_deref(), Some("abc"));
        assert_eq!(c.api_key.as_deref(), Some("key-1"));
        assert_eq!(c.server_key(), Some("key-1"));
        let c = Credentials::from_upgrade(&h, Some("apiKey=%20key-2&app=a1")).unwrap();
        assert_eq!(c.api_key.as_deref(), Some("key-2"));
        assert_eq!(c.bearer.as_deref(), Some("abc"));
        assert_eq!(c.app.as_deref(), Some("a1"));
        let c = Credentials::from_upgrade(&HeaderMap::new(), Some("token=t&x=1")).unwrap();
        assert_eq!(c.bearer.as_deref(), Some("t"));
        // Sent empty is sent: it fails as a credential, it is not "none".
        let empty = Credentials::from_headers(&headers(&[("x-api-key", "  ")]));
        assert_eq!(empty.api_key.as_deref(), Some(""));
        let e = Credentials::from_upgrade(&HeaderMap::new(), Some("token=a&token=b")).unwrap_err();
        assert_eq!(e.code, ErrorCode::RealtimeInvalidChannelRequest);
    }

    #[test]
    fn a_refusal_rounds_retry_after_up_to_whole_seconds() {
        for (wait_ms, secs) in [(1, "1"), (999, "1"), (1000, "1"), (1001, "2"), (2500, "3")] {
            let e = rate_limited(Duration::from_millis(wait_ms));
            assert_eq!(e.retry_after_ms, Some(wait_ms));
            let r = refusal(StatusCode::TOO_MANY_REQUESTS, &e, Some(5), json!({}));
            assert_eq!(r.headers()["retry-after"], secs, "{wait_ms} ms");
            assert_eq!(r.headers()["x-ratelimit-limit"], "5");
            assert_eq!(r.headers()["x-ratelimit-remaining"], "0");
        }
        let e = rate_limited(Duration::ZERO);
        assert_eq!(e.retry_after_ms, Some(1));
        let plain = ErrorBody::new(ErrorCode::Unauthorized, "");
        let r = refusal(StatusCode::UNAUTHORIZED, &plain, Some(5), json!({}));
        assert!(r.headers().get("retry-after").is_none());
    }
}
