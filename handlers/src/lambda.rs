//! The Lambda face of the router. [`handle`] answers one invocation exactly as
//! `handlers-lambda` does: an API Gateway REST API (v1), HTTP API (v2) or ALB event goes
//! through the same [`crate::router`], and anything else gets a 400 in gateway shape, never
//! an invocation error. Before routing, a stage prefix in the path (`/prod/api/v1/…`) is
//! stripped, the caller's address is taken from the event, long-polls are capped so they
//! end before the gateway's 30 s limit and the invocation's deadline, and answers are
//! capped at [`LAMBDA_MAX_BYTES`] so they stay under Lambda's 6 MB response limit.

use std::net::IpAddr;
use std::time::Duration;

use axum::Router;
use http::{Request, Uri};
use lambda_http::LambdaEvent;
use lambda_http::Service;
use lambda_http::request::{LambdaRequest, RequestContext};
use shared::{ApiError, ErrorCode};
use tower::ServiceBuilder;
use tower::util::MapRequest;

use crate::AppState;
use crate::guard::PeerIp;
use crate::routes::{MaxBytes, MaxWait};
use crate::stream::{NoStreaming, StreamBounds};

/// The service `handlers-lambda` runs: the public router behind stage stripping.
pub type LambdaService<B> = MapRequest<Router, fn(Request<B>) -> Request<B>>;

/// The public router, ready for `lambda_http::run`: whole answers (API Gateway, an ALB),
/// so `/events/stream` is refused and clients long-poll.
pub fn service<B>(state: AppState) -> LambdaService<B> {
    ServiceBuilder::new()
        .map_request(prepare as fn(Request<B>) -> Request<B>)
        .service(crate::router(state))
}

/// The public router for `lambda_http::run_with_streaming_response` (a function URL with
/// `InvokeMode: RESPONSE_STREAM`): `/events/stream` streams, within the invocation's
/// deadline and [`STREAM_MAX_BYTES`].
pub fn streaming_service<B>(state: AppState) -> LambdaService<B> {
    ServiceBuilder::new()
        .map_request(prepare_streaming as fn(Request<B>) -> Request<B>)
        .service(crate::router(state))
}

/// Most bytes one streamed answer carries: Lambda's response streaming takes 20 MB.
pub const STREAM_MAX_BYTES: u64 = 16 * 1024 * 1024;

/// Longest a long-poll may wait behind API Gateway (its integration limit is 30 s).
pub const GATEWAY_MAX_WAIT: Duration = Duration::from_secs(25);
/// The most `max_bytes` an answer may have here: 4 MiB of events, written as the answer
/// writes them, stays under Lambda's 6 MB response limit even once API Gateway has put a
/// binary answer in base64.
pub const LAMBDA_MAX_BYTES: u32 = 4 * 1024 * 1024;
/// Time kept back from the invocation's deadline for answering.
const DEADLINE_MARGIN: Duration = Duration::from_secs(3);

/// What the router needs from the Lambda event beyond the HTTP request, for whole
/// answers.
fn prepare<B>(mut request: Request<B>) -> Request<B> {
    request.extensions_mut().insert(NoStreaming);
    prepare_streaming(request)
}

/// What the router needs from the Lambda event beyond the HTTP request.
fn prepare_streaming<B>(mut request: Request<B>) -> Request<B> {
    if let Some(ip) = source_ip(&request) {
        request.extensions_mut().insert(PeerIp(ip));
    }
    let left = request
        .extensions()
        .get::<lambda_http::Context>()
        .filter(|c| c.deadline > 0)
        .and_then(|c| {
            let deadline = std::time::UNIX_EPOCH + Duration::from_millis(c.deadline);
            deadline.duration_since(std::time::SystemTime::now()).ok()
        })
        .map(|left| left.saturating_sub(DEADLINE_MARGIN));
    let wait = left.map_or(GATEWAY_MAX_WAIT, |left| left.min(GATEWAY_MAX_WAIT));
    request.extensions_mut().insert(MaxWait(wait));
    request.extensions_mut().insert(MaxBytes(LAMBDA_MAX_BYTES));
    request.extensions_mut().insert(StreamBounds {
        duration: left.unwrap_or(GATEWAY_MAX_WAIT),
        bytes: STREAM_MAX_BYTES,
    });
    strip_stage(request)
}

/// Answers one invocation: the router's answer in the shape the event's origin expects,
/// or `400` (API Gateway shape) for an event that is not an HTTP event.
pub async fn handle(
    service: LambdaService<lambda_http::Body>,
    event: LambdaEvent<serde_json::Value>,
) -> Result<serde_json::Value, lambda_http::Error> {
    let LambdaEvent { payload, context } = event;
    let request: LambdaRequest = match serde_json::from_value(payload) {
        Ok(request) => request,
        Err(err) => {
            tracing::warn!(error = %err, "invocation is not an API Gateway or ALB HTTP event");
            return Ok(not_an_http_event(&err));
        }
    };
    let mut adapter = lambda_http::Adapter::from(service);
    let response = match adapter.call(LambdaEvent::new(request, context)).await {
        Ok(response) => response,
        Err(never) => match never {},
    };
    Ok(serde_json::to_value(response)?)
}

/// `400 bad_request` for an event the router cannot take, in the gateways' response shape.
fn not_an_http_event(err: &serde_json::Error) -> serde_json::Value {
    let body = ApiError::new(
        ErrorCode::BadRequest,
        format!("the invocation is not an API Gateway or ALB HTTP event: {err}"),
    )
    .body();
    serde_json::json!({
        "statusCode": 400,
        "headers": {"content-type": "application/json"},
        "body": serde_json::to_string(&body).unwrap_or_default(),
        "isBase64Encoded": false,
    })
}

/// The caller's address: API Gateway's `sourceIp`, or for an ALB the address it appended
/// to `X-Forwarded-For` (the last entry).
fn source_ip<B>(request: &Request<B>) -> Option<IpAddr> {
    let text = match request.extensions().get::<RequestContext>()? {
        RequestContext::ApiGatewayV1(ctx) => ctx.identity.source_ip.clone(),
        RequestContext::ApiGatewayV2(ctx) => ctx.http.source_ip.clone(),
        RequestContext::Alb(_) => request
            .headers()
            .get("x-forwarded-for")
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.rsplit(',').next())
            .map(|v| v.trim().to_owned()),
        _ => None,
    }?;
    text.parse().ok()
}

/// Removes a leading `/{stage}` that API Gateway's stage put in the path.
fn strip_stage<B>(mut request: Request<B>) -> Request<B> {
    let stage = match request.extensions().get::<RequestContext>() {
        Some(RequestContext::ApiGatewayV1(ctx)) => ctx.stage.clone(),
        Some(RequestContext::ApiGatewayV2(ctx)) => ctx.stage.clone(),
        _ => None,
    };
    let Some(stage) = stage.filter(|s| !s.is_empty() && s != "$default") else {
        return request;
    };
    let prefix = format!("/{stage}");
    let path = request.uri().path();
    let Some(rest) = path
        .strip_prefix(prefix.as_str())
        .filter(|r| r.starts_with('/'))
    else {
        return request;
    };
    let path_and_query = match request.uri().query() {
        Some(q) => format!("{rest}?{q}"),
        None => rest.to_owned(),
    };
    let mut parts = request.uri().clone().into_parts();
    if let Ok(pq) = path_and_query.parse() {
        parts.path_and_query = Some(pq);
        if let Ok(uri) = Uri::from_parts(parts) {
            *request.uri_mut() = uri;
        }
    }
    request
}
