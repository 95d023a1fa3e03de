//! The API-key check: `x-api-key: KEY` or `Authorization: Bearer KEY`, compared in
//! constant time against every accepted key. The key itself is never logged.

use axum::extract::{Request, State};
use axum::http::HeaderMap;
use axum::http::header::AUTHORIZATION;
use axum::middleware::Next;
use axum::response::Response;
use shared::{ApiError, ErrorCode};

use crate::AppState;

/// The key a request presents, if any.
fn presented_key(headers: &HeaderMap) -> Option<&str> {
    if let Some(key) = headers.get("x-api-key") {
        return key.to_str().ok();
    }
    let auth = headers.get(AUTHORIZATION)?.to_str().ok()?;
    let (scheme, token) = auth.split_once(' ')?;
    scheme.eq_ignore_ascii_case("bearer").then(|| token.trim())
}

/// Middleware: lets the request through only with a valid key, else `401`.
pub async fn require_api_key(
    State(state): State<AppState>,
    request: Request,
    next: Next,
) -> Result<Response, ApiError> {
    let reason = match presented_key(request.headers()) {
        Some(key) if state.keys.verify(key) => return Ok(next.run(request).await),
        Some(_) => "invalid",
        None => "missing",
    };
    state
        .metrics
        .auth_failures
        .with_label_values(&[reason])
        .inc();
    Err(ApiError::new(
        ErrorCode::Unauthorized,
        "a valid API key is required (header x-api-key, or Authorization: Bearer)",
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_the_key_in_either_header() {
        let mut h = HeaderMap::new();
        assert_eq!(presented_key(&h), None);
        h.insert(AUTHORIZATION, "Bearer abc".parse().expect("header"));
        assert_eq!(presented_key(&h), Some("abc"));
        h.insert(AUTHORIZATION, "Basic abc".parse().expect("header"));
        assert_eq!(presented_key(&h), None);
        h.insert("x-api-key", "xyz".parse().expect("header"));
        assert_eq!(presented_key(&h), Some("xyz"));
    }
}
