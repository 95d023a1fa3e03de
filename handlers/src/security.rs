//! What every answer gets and every request must respect: Helmet's security headers
//! (with a CSP that Swagger UI works under), CORS from `ALLOWED_ORIGINS` only, and size
//! and time limits that answer with the contract's JSON error.

use std::time::Duration;

use crate::config::CorsArgs;
use axum::body::HttpBody;
use axum::extract::Request;
use axum::http::header::{self, HeaderName, HeaderValue};
use axum::http::{HeaderMap, Method};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use shared::{ApiError, ErrorCode};
use tower_http::cors::{AllowOrigin, CorsLayer};

/// Largest request body accepted (the API takes none; this leaves room for proxies).
pub const MAX_BODY_BYTES: u64 = 16 * 1024;
/// Largest total of request header names and values.
pub const MAX_HEADER_BYTES: usize = 16 * 1024;
/// Longest a request may take: the longest long-poll (30 s) plus room for the pod.
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(50);

/// The Content-Security-Policy: only this origin's scripts, styles (inline ones too, as
/// Swagger UI sets some), images (and data: URLs for its icons); never framed.
pub const CONTENT_SECURITY_POLICY: &str = "default-src 'self'; base-uri 'self'; \
    connect-src 'self'; font-src 'self' data:; form-action 'self'; frame-ancestors 'none'; \
    img-src 'self' data:; object-src 'none'; script-src 'self'; script-src-attr 'none'; \
    style-src 'self' 'unsafe-inline'";

/// The headers Helmet sets by default, with `X-Frame-Options: DENY` and
/// `frame-ancestors 'none'` since nothing here is meant to be framed.
const SECURITY_HEADERS: [(&str, &str); 11] = [
    ("content-security-policy", CONTENT_SECURITY_POLICY),
    ("cross-origin-opener-policy", "same-origin"),
    ("cross-origin-resource-policy", "same-origin"),
    ("origin-agent-cluster", "?1"),
    ("referrer-policy", "no-referrer"),
    (
        "strict-transport-security",
        "max-age=31536000; includeSubDomains",
    ),
    ("x-content-type-options", "nosniff"),
    ("x-dns-prefetch-control", "off"),
    ("x-frame-options", "DENY"),
    ("x-permitted-cross-domain-policies", "none"),
    ("x-xss-protection", "0"),
];

/// Middleware on every answer: the security headers, no `Server`/`X-Powered-By`, and
/// `Cache-Control: no-store` unless the route chose otherwise.
pub async fn security_headers(request: Request, next: Next) -> Response {
    let mut response = next.run(request).await;
    let headers = response.headers_mut();
    for (name, value) in SECURITY_HEADERS {
        headers.insert(
            HeaderName::from_static(name),
            HeaderValue::from_static(value),
        );
    }
    headers.remove(header::SERVER);
    headers.remove("x-powered-by");
    headers
        .entry(header::CACHE_CONTROL)
        .or_insert(HeaderValue::from_static("no-store"));
    response
}

/// Middleware: refuses oversized requests and requests that take longer than
/// [`REQUEST_TIMEOUT`], with JSON.
pub async fn request_limits(request: Request, next: Next) -> Response {
    limit_request(REQUEST_TIMEOUT, request, next).await
}

async fn limit_request(timeout: Duration, request: Request, next: Next) -> Response {
    if let Some(err) = oversized(request.headers()) {
        return err.into_response();
    }
    // A body already in memory (a Lambda event's) has an exact size, without headers.
    if request.body().size_hint().lower() > MAX_BODY_BYTES {
        return ApiError::new(
            ErrorCode::PayloadTooLarge,
            format!("request bodies over {MAX_BODY_BYTES} bytes are refused"),
        )
        .into_response();
    }
    match tokio::time::timeout(timeout, next.run(request)).await {
        Ok(response) => response,
        Err(_) => ApiError::new(
            ErrorCode::RequestTimeout,
            format!("the request took longer than {timeout:?}"),
        )
        .into_response(),
    }
}

fn oversized(headers: &HeaderMap) -> Option<ApiError> {
    let header_bytes: usize = headers
        .iter()
        .map(|(name, value)| name.as_str().len() + value.len())
        .sum();
    if header_bytes > MAX_HEADER_BYTES {
        return Some(ApiError::new(
            ErrorCode::HeadersTooLarge,
            format!("request headers over {MAX_HEADER_BYTES} bytes"),
        ));
    }
    let body = headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if body.is_some_and(|n| n > MAX_BODY_BYTES) || headers.contains_key(header::TRANSFER_ENCODING) {
        return Some(ApiError::new(
            ErrorCode::PayloadTooLarge,
            format!("request bodies over {MAX_BODY_BYTES} bytes (or streamed) are refused"),
        ));
    }
    None
}

/// CORS for the configured origins; `None` when none are (no cross-origin access).
pub fn cors(args: &CorsArgs) -> Option<CorsLayer> {
    let origins: Vec<&str> = args
        .allowed_origins
        .iter()
        .map(|o| o.trim())
        .filter(|o| !o.is_empty())
        .collect();
    if origins.is_empty() {
        return None;
    }
    let allow = if origins.contains(&"*") {
        AllowOrigin::any()
    } else {
        AllowOrigin::list(
            origins
                .iter()
                .filter_map(|o| HeaderValue::from_str(o.trim_end_matches('/')).ok()),
        )
    };
    Some(
        CorsLayer::new()
            .allow_origin(allow)
            .allow_methods([Method::GET, Method::OPTIONS])
            .allow_headers([
                HeaderName::from_static("x-api-key"),
                header::AUTHORIZATION,
                header::CONTENT_TYPE,
            ])
            .expose_headers([
                header::RETRY_AFTER,
                HeaderName::from_static("ratelimit-limit"),
                HeaderName::from_static("ratelimit-remaining"),
                HeaderName::from_static("ratelimit-reset"),
                HeaderName::from_static("ratelimit-policy"),
            ])
            .max_age(Duration::from_secs(600)),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn oversized_requests_are_named() {
        let mut headers = HeaderMap::new();
        assert!(oversized(&headers).is_none());
        headers.insert(
            header::CONTENT_LENGTH,
            HeaderValue::from(MAX_BODY_BYTES + 1),
        );
        assert_eq!(
            oversized(&headers).map(|e| e.code),
            Some(ErrorCode::PayloadTooLarge)
        );
        let mut headers = HeaderMap::new();
        headers.insert(
            "x-filler",
            HeaderValue::from_str(&"a".repeat(MAX_HEADER_BYTES)).expect("value"),
        );
        assert_eq!(
            oversized(&headers).map(|e| e.code),
            Some(ErrorCode::HeadersTooLarge)
        );
    }

    #[tokio::test]
    async fn slow_requests_get_a_json_408() {
        use axum::Router;
        use axum::body::Body;
        use axum::routing::get;
        use tower::ServiceExt;

        let app = Router::new()
            .route(
                "/slow",
                get(|| async {
                    tokio::time::sleep(Duration::from_secs(5)).await;
                    "late"
                }),
            )
            .route("/quick", get(|| async { "on time" }))
            .layer(axum::middleware::from_fn(|request, next| {
                limit_request(Duration::from_millis(50), request, next)
            }));
        let call = |path: &'static str| {
            app.clone()
                .oneshot(Request::get(path).body(Body::empty()).expect("request"))
        };
        let slow = call("/slow").await.expect("answer");
        assert_eq!(slow.status(), 408);
        let body = axum::body::to_bytes(slow.into_body(), 1024)
            .await
            .expect("body");
        assert!(
            String::from_utf8_lossy(&body).contains("\"request_timeout\""),
            "{body:?}"
        );
        assert_eq!(call("/quick").await.expect("answer").status(), 200);
    }

    #[test]
    fn no_origins_no_cors() {
        assert!(cors(&CorsArgs::default()).is_none());
        assert!(
            cors(&CorsArgs {
                allowed_origins: vec!["https://app.example.com".into()]
            })
            .is_some()
        );
    }
}
