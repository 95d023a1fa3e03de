//! The error every API answers with: one [`ErrorCode`] per failure, each with one HTTP
//! status and one stable `code` string, rendered as
//! `{"error":{"code":"…","message":"…"}}`. Messages never carry secrets or internals.

use serde::{Deserialize, Serialize};

/// Every failure a client can see, each mapped to one status and one `code`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "snake_case")]
pub enum ErrorCode {
    /// Missing or wrong API key (401).
    Unauthorized,
    /// The key may not read a topic the request names, in `topic` or in the cursor (403).
    ForbiddenTopic,
    /// The `cursor` parameter is not a cursor this service made (400).
    InvalidCursor,
    /// The cursor belongs to another source cluster (400).
    CursorClusterMismatch,
    /// The cursor names topics this service does not carry (400).
    CursorTopicMismatch,
    /// The cursor points past the end of the source log (400).
    CursorAhead,
    /// `limit` is not a number in range (400).
    InvalidLimit,
    /// `wait_ms` is not a number in range (400).
    InvalidWait,
    /// `max_bytes` is not a number in range (400).
    InvalidMaxBytes,
    /// `topic` names no topic this service carries (400).
    UnknownTopic,
    /// Any other malformed request (400).
    BadRequest,
    /// No such route (404).
    NotFound,
    /// The route exists but not for this method (405).
    MethodNotAllowed,
    /// Too many requests in the rate-limit window; `Retry-After` says when to retry (429).
    RateLimited,
    /// The request body is larger than the API accepts (413).
    PayloadTooLarge,
    /// The request headers are larger than the API accepts (431).
    HeadersTooLarge,
    /// The request took longer than the API allows (408).
    RequestTimeout,
    /// The source Kafka or the consumer pod cannot answer now; retry later (503).
    Unavailable,
    /// This deployment cannot stream answers (AWS Lambda behind API Gateway); long-poll
    /// `/events` instead (501).
    StreamingUnsupported,
    /// A fault on our side (500); details go to the logs, never to the client.
    Internal,
}

impl ErrorCode {
    /// The HTTP status this code is answered with.
    pub fn status(self) -> u16 {
        match self {
            Self::Unauthorized => 401,
            Self::ForbiddenTopic => 403,
            Self::InvalidCursor
            | Self::CursorClusterMismatch
            | Self::CursorTopicMismatch
            | Self::CursorAhead
            | Self::InvalidLimit
            | Self::InvalidWait
            | Self::InvalidMaxBytes
            | Self::UnknownTopic
            | Self::BadRequest => 400,
            Self::NotFound => 404,
            Self::MethodNotAllowed => 405,
            Self::RateLimited => 429,
            Self::PayloadTooLarge => 413,
            Self::HeadersTooLarge => 431,
            Self::RequestTimeout => 408,
            Self::Unavailable => 503,
            Self::StreamingUnsupported => 501,
            Self::Internal => 500,
        }
    }

    /// The stable `code` string of the JSON error.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Unauthorized => "unauthorized",
            Self::ForbiddenTopic => "forbidden_topic",
            Self::InvalidCursor => "invalid_cursor",
            Self::CursorClusterMismatch => "cursor_cluster_mismatch",
            Self::CursorTopicMismatch => "cursor_topic_mismatch",
            Self::CursorAhead => "cursor_ahead",
            Self::InvalidLimit => "invalid_limit",
            Self::InvalidWait => "invalid_wait",
            Self::InvalidMaxBytes => "invalid_max_bytes",
            Self::UnknownTopic => "unknown_topic",
            Self::BadRequest => "bad_request",
            Self::NotFound => "not_found",
            Self::MethodNotAllowed => "method_not_allowed",
            Self::RateLimited => "rate_limited",
            Self::PayloadTooLarge => "payload_too_large",
            Self::HeadersTooLarge => "headers_too_large",
            Self::RequestTimeout => "request_timeout",
            Self::Unavailable => "unavailable",
            Self::StreamingUnsupported => "streaming_unsupported",
            Self::Internal => "internal",
        }
    }
}

/// An error answer: what went wrong, said safely to the client.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{}: {message}", code.as_str())]
pub struct ApiError {
    pub code: ErrorCode,
    pub message: String,
    /// Seconds the client should wait before retrying (`Retry-After`), for 429 and 503.
    pub retry_after_secs: Option<u64>,
}

impl ApiError {
    pub fn new(code: ErrorCode, message: impl Into<String>) -> Self {
        Self {
            code,
            message: message.into(),
            retry_after_secs: None,
        }
    }

    /// A 503 that tells the client when to come back.
    pub fn unavailable(message: impl Into<String>, retry_after_secs: u64) -> Self {
        Self {
            retry_after_secs: Some(retry_after_secs),
            ..Self::new(ErrorCode::Unavailable, message)
        }
    }

    /// The JSON body of this error.
    pub fn body(&self) -> ErrorBody {
        ErrorBody {
            error: ErrorDetail {
                code: self.code,
                message: self.message.clone(),
            },
        }
    }
}

impl From<crate::CursorError> for ApiError {
    fn from(err: crate::CursorError) -> Self {
        Self::new(ErrorCode::InvalidCursor, format!("invalid cursor: {err}"))
    }
}

/// `{"error":{"code","message"}}`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct ErrorBody {
    pub error: ErrorDetail,
}

/// The inside of [`ErrorBody`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct ErrorDetail {
    pub code: ErrorCode,
    pub message: String,
}

impl From<ErrorBody> for ApiError {
    fn from(body: ErrorBody) -> Self {
        Self::new(body.error.code, body.error.message)
    }
}

#[cfg(feature = "server")]
impl axum::response::IntoResponse for ApiError {
    fn into_response(self) -> axum::response::Response {
        let status = axum::http::StatusCode::from_u16(self.code.status())
            .unwrap_or(axum::http::StatusCode::INTERNAL_SERVER_ERROR);
        let mut response = (status, axum::Json(self.body())).into_response();
        if let Some(secs) = self.retry_after_secs {
            response.headers_mut().insert(
                axum::http::header::RETRY_AFTER,
                axum::http::HeaderValue::from(secs),
            );
        }
        response
    }
}

/// An error and its causes on one line, most general first, each cause only when it adds
/// to the text before it (layered errors often repeat their source).
pub fn error_chain(err: &(dyn std::error::Error + 'static)) -> String {
    let mut text = err.to_string();
    let mut cause = err.source();
    while let Some(next) = cause {
        let part = next.to_string();
        if !text.contains(&part) {
            text.push_str(": ");
            text.push_str(&part);
        }
        cause = next.source();
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_error_chain_says_each_cause_once() {
        #[derive(Debug, thiserror::Error)]
        #[error("cannot load keys")]
        struct Outer(#[source] Middle);
        #[derive(Debug, thiserror::Error)]
        #[error("request failed: {0}")]
        struct Middle(#[source] std::io::Error);
        let io = std::io::Error::other("connection refused");
        assert_eq!(
            error_chain(&Outer(Middle(io))),
            "cannot load keys: request failed: connection refused"
        );
    }

    #[test]
    fn body_matches_the_contract() {
        let err = ApiError::new(ErrorCode::Unauthorized, "missing API key");
        let json = serde_json::to_value(err.body()).expect("serialize");
        assert_eq!(
            json,
            serde_json::json!({"error":{"code":"unauthorized","message":"missing API key"}})
        );
        assert_eq!(ErrorCode::Unauthorized.status(), 401);
    }

    #[test]
    fn codes_serialize_as_their_strings() {
        for code in [
            ErrorCode::InvalidCursor,
            ErrorCode::Unavailable,
            ErrorCode::MethodNotAllowed,
        ] {
            assert_eq!(
                serde_json::to_value(code).expect("serialize"),
                code.as_str()
            );
        }
    }
}
