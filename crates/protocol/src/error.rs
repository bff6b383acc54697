//! Error codes of the contract (`protocol.md`, "Error codes").

use serde::{Deserialize, Serialize};
use std::fmt;

/// Every error code a client or app backend can receive.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum ErrorCode {
    RateLimitExceeded,
    InvalidToken,
    TokenExpired,
    ChannelNameMismatch,
    Unauthorized,
    PublishFailed,
    TokenSigningFailed,
    RealtimeChannelNotFound,
    RealtimeInvalidChannelRequest,
    RealtimeInvalidEvent,
    RealtimeNotSubscribed,
    PayloadTooLarge,
    InternalError,
}

impl ErrorCode {
    pub const ALL: [ErrorCode; 13] = [
        ErrorCode::RateLimitExceeded,
        ErrorCode::InvalidToken,
        ErrorCode::TokenExpired,
        ErrorCode::ChannelNameMismatch,
        ErrorCode::Unauthorized,
        ErrorCode::PublishFailed,
        ErrorCode::TokenSigningFailed,
        ErrorCode::RealtimeChannelNotFound,
        ErrorCode::RealtimeInvalidChannelRequest,
        ErrorCode::RealtimeInvalidEvent,
        ErrorCode::RealtimeNotSubscribed,
        ErrorCode::PayloadTooLarge,
        ErrorCode::InternalError,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            ErrorCode::RateLimitExceeded => "RATE_LIMIT_EXCEEDED",
            ErrorCode::InvalidToken => "INVALID_TOKEN",
            ErrorCode::TokenExpired => "TOKEN_EXPIRED",
            ErrorCode::ChannelNameMismatch => "CHANNEL_NAME_MISMATCH",
            ErrorCode::Unauthorized => "UNAUTHORIZED",
            ErrorCode::PublishFailed => "PUBLISH_FAILED",
            ErrorCode::TokenSigningFailed => "TOKEN_SIGNING_FAILED",
            ErrorCode::RealtimeChannelNotFound => "REALTIME_CHANNEL_NOT_FOUND",
            ErrorCode::RealtimeInvalidChannelRequest => "REALTIME_INVALID_CHANNEL_REQUEST",
            ErrorCode::RealtimeInvalidEvent => "REALTIME_INVALID_EVENT",
            ErrorCode::RealtimeNotSubscribed => "REALTIME_NOT_SUBSCRIBED",
            ErrorCode::PayloadTooLarge => "PAYLOAD_TOO_LARGE",
            ErrorCode::InternalError => "INTERNAL_ERROR",
        }
    }

    /// The fixed message the contract gives this code, where it gives one.
    pub fn fixed_message(self) -> Option<&'static str> {
        Some(match self {
            ErrorCode::RateLimitExceeded => "RATE_LIMIT_EXCEEDED",
            ErrorCode::InvalidToken => "Realtime token validation failed: INVALID_TOKEN",
            ErrorCode::TokenExpired => "Realtime token validation failed: TOKEN_EXPIRED",
            ErrorCode::ChannelNameMismatch => {
                "Realtime token validation failed: CHANNEL_NAME_MISMATCH"
            }
            ErrorCode::Unauthorized => "Unauthorized request",
            ErrorCode::PublishFailed => "Error publishing event to channel",
            ErrorCode::TokenSigningFailed => "Error signing realtime token",
            _ => return None,
        })
    }

    /// Whether a request rejected with this code still counts toward the
    /// app's rate limit (Forge's rule: token prevalidation failures do not).
    pub fn counts_toward_rate_limit(self) -> bool {
        !matches!(
            self,
            ErrorCode::RateLimitExceeded
                | ErrorCode::InvalidToken
                | ErrorCode::TokenExpired
                | ErrorCode::ChannelNameMismatch
        )
    }

    /// HTTP status of the server API for this code.
    pub fn http_status(self) -> u16 {
        match self {
            ErrorCode::RateLimitExceeded => 429,
            ErrorCode::InvalidToken | ErrorCode::TokenExpired => 401,
            ErrorCode::Unauthorized | ErrorCode::RealtimeNotSubscribed => 403,
            ErrorCode::RealtimeChannelNotFound => 404,
            ErrorCode::PayloadTooLarge => 413,
            ErrorCode::PublishFailed | ErrorCode::InternalError => 500,
            ErrorCode::ChannelNameMismatch
            | ErrorCode::TokenSigningFailed
            | ErrorCode::RealtimeInvalidChannelRequest
            | ErrorCode::RealtimeInvalidEvent => 400,
        }
    }
}

impl fmt::Display for ErrorCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// `{"code","message"}`, the error shape of every surface.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ErrorBody {
    pub code: ErrorCode,
    pub message: String,
    /// With `RATE_LIMIT_EXCEEDED`: milliseconds until a retry can succeed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retry_after_ms: Option<u64>,
}

impl ErrorBody {
    /// An error with the contract's fixed message, or `detail` where the
    /// contract fixes none.
    pub fn new(code: ErrorCode, detail: impl Into<String>) -> Self {
        let message = match code.fixed_message() {
            Some(fixed) => fixed.to_owned(),
            None => detail.into(),
        };
        ErrorBody {
            code,
            message,
            retry_after_ms: None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes_serialize_as_their_names() {
        for code in ErrorCode::ALL {
            let json = serde_json::to_string(&code).unwrap();
            assert_eq!(json, format!("\"{}\"", code.as_str()));
        }
    }

    #[test]
    fn fixed_messages_win_over_details() {
        let e = ErrorBody::new(ErrorCode::TokenExpired, "ignored");
        assert_eq!(e.message, "Realtime token validation failed: TOKEN_EXPIRED");
        let e = ErrorBody::new(ErrorCode::PayloadTooLarge, "payload is 70000 bytes");
        assert_eq!(e.message, "payload is 70000 bytes");
    }

    #[test]
    fn prevalidation_failures_do_not_count() {
        assert!(!ErrorCode::InvalidToken.counts_toward_rate_limit());
        assert!(!ErrorCode::ChannelNameMismatch.counts_toward_rate_limit());
        assert!(ErrorCode::Unauthorized.counts_toward_rate_limit());
        assert!(ErrorCode::PublishFailed.counts_toward_rate_limit());
    }
}
