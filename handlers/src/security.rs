//! What every answer gets and every request must respect: Helmet's security headers
//! (with a CSP that Swagger UI works under), CORS from `ALLOWED_ORIGINS` only, and size
//! and time limits that answer with the contract's JSON error, from tower-http's layers.

use std::time::Duration;

use axum::Router;
use axum::body::HttpBody;
use axum::extract::Request;
use axum::http::header::{self, HeaderName, HeaderValue};
use axum::http::{HeaderMap, Method, StatusCode};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use shared::{ApiError, ErrorCode};
use tower_http::cors::{AllowOrigin, CorsLayer};
use tower_http::limit::RequestBodyLimitLayer;
use tower_http::set_header::SetResponseHeaderLayer;
use tower_http::timeout::TimeoutLayer;

use crate::config::CorsArgs;

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

/// The security headers on every answer (tower-http's set-header layers), and
/// `Cache-Control: no-store` unless the route chose otherwise.
pub fn with_security_headers<S: Clone + Send + Sync + 'static>(app: Router<S>) -> Router<S> {
    let app = SECURITY_HEADERS.iter().fold(app, |app, (name, value)| {
        app.layer(SetResponseHeaderLayer::overriding(
            HeaderName::from_static(name),
            HeaderValue::from_static(value),
        ))
    });
    app.layer(SetResponseHeaderLayer::if_not_present(
        header::CACHE_CONTROL,
        HeaderValue::from_static("no-store"),
    ))
}

/// Refuses oversized requests and requests that take longer than [`REQUEST_TIMEOUT`],
/// with the contract's JSON error.
pub fn with_request_limits<S: Clone + Send + Sync + 'static>(app: Router<S>) -> Router<S> {
    limited(app, REQUEST_TIMEOUT)
}

fn limited<S: Clone + Send + Sync + 'static>(app: Router<S>, timeout: Duration) -> Router<S> {
    app.layer(TimeoutLayer::with_status_code(
        StatusCode::REQUEST_TIMEOUT,
        timeout,
    ))
    .layer(RequestBodyLimitLayer::new(MAX_BODY_BYTES as usize))
    .layer(middleware::from_fn(refuse_what_no_layer_sees))
    .layer(middleware::map_response(
        move |response: Response| async move { as_json_error(response, timeout) },
    ))
}

/// The layers above answer 408 and 413 with an empty or plain-text body; the API answers
/// every error with its JSON shape. A 413 also closes the connection: the body it refused
/// was never read, so the connection cannot carry another request.
fn as_json_error(response: Response, timeout: Duration) -> Response {
    let mut response = match response.status() {
        StatusCode::REQUEST_TIMEOUT if !is_json(&response) => ApiError::new(
            ErrorCode::RequestTimeout,
            format!("the request took longer than {timeout:?}"),
        )
        .into_response(),
        StatusCode::PAYLOAD_TOO_LARGE if !is_json(&response) => too_large().into_response(),
        _ => response,
    };
    if response.status() == StatusCode::PAYLOAD_TOO_LARGE {
        response
            .headers_mut()
            .insert(header::CONNECTION, HeaderValue::from_static("close"));
    }
    response
}

fn is_json(response: &Response) -> bool {
    response
        .headers()
        .get(header::CONTENT_TYPE)
        .is_some_and(|v| v.as_bytes().starts_with(b"application/json"))
}

fn too_large() -> ApiError {
    ApiError::new(
        ErrorCode::PayloadTooLarge,
        format!("request bodies over {MAX_BODY_BYTES} bytes (or streamed) are refused"),
    )
}

/// What tower-http's limits do not catch, because they act only on a body being read and
/// no route reads one: the total size of the headers (no layer counts it), a streamed
/// body, and a body already in memory (a Lambda event's, with no Content-Length).
async fn refuse_what_no_layer_sees(request: Request, next: Next) -> Response {
    if let Some(err) = oversized(request.headers()) {
        return err.into_response();
    }
    // A declared length is RequestBodyLimitLayer's to judge.
    let undeclared = !request.headers().contains_key(header::CONTENT_LENGTH);
    if undeclared && request.body().size_hint().lower() > MAX_BODY_BYTES {
        return too_large().into_response();
    }
    next.run(request).await
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
    headers
        .contains_key(header::TRANSFER_ENCODING)
        .then(too_large)
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
            header::TRANSFER_ENCODING,
            HeaderValue::from_static("chunked"),
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

    async fn code_of(response: Response) -> String {
        let body = axum::body::to_bytes(response.into_body(), 4096)
            .await
            .expect("body");
        let json: serde_json::Value = serde_json::from_slice(&body).expect("a JSON error");
        json["error"]["code"]
            .as_str()
            .unwrap_or_default()
            .to_owned()
    }

    #[tokio::test]
    async fn slow_and_large_requests_get_json_errors() {
        use axum::body::Body;
        use axum::routing::{get, post};
        use tower::ServiceExt;

        let app = limited(
            Router::new()
                .route(
                    "/slow",
                    get(|| async {
                        tokio::time::sleep(Duration::from_secs(5)).await;
                        "late"
                    }),
                )
                .route("/quick", get(|| async { "on time" }))
                .route("/echo", post(|body: String| async move { body })),
            Duration::from_millis(50),
        );
        let call = |request: Request| app.clone().oneshot(request);
        let slow = call(Request::get("/slow").body(Body::empty()).unwrap())
            .await
            .unwrap();
        assert_eq!(slow.status(), 408);
        assert_eq!(code_of(slow).await, "request_timeout");
        let quick = Request::get("/quick").body(Body::empty()).unwrap();
        assert_eq!(call(quick).await.unwrap().status(), 200);
        let declared = Request::post("/echo")
            .header(header::CONTENT_LENGTH, MAX_BODY_BYTES + 1)
            .body(Body::from(vec![b'x'; MAX_BODY_BYTES as usize + 1]))
            .unwrap();
        let declared = call(declared).await.unwrap();
        assert_eq!(declared.status(), 413);
        assert_eq!(declared.headers()[header::CONNECTION], "close");
        assert_eq!(code_of(declared).await, "payload_too_large");
        // No Content-Length, the body in memory (a Lambda event's).
        let in_memory = Body::from(vec![b'x'; MAX_BODY_BYTES as usize + 1]);
        let in_memory = call(Request::post("/echo").body(in_memory).unwrap())
            .await
            .unwrap();
        assert_eq!(in_memory.status(), 413);
        assert_eq!(code_of(in_memory).await, "payload_too_large");
        let small = Request::post("/echo").body(Body::from("hello")).unwrap();
        assert_eq!(call(small).await.unwrap().status(), 200);
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
