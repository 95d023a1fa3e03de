//! The Lambda face of the router: API Gateway REST API (v1) and HTTP API (v2) with a named
//! stage put the stage in front of the path (`/prod/api/v1/…`); this strips it again so
//! the very same [`crate::router`] matches, whatever the deployment's stage is called. It
//! also hands the router the caller's address as the gateway or ALB saw it.

use std::net::IpAddr;

use axum::Router;
use http::{Request, Uri};
use lambda_http::request::RequestContext;
use tower::ServiceBuilder;
use tower::util::MapRequest;

use crate::AppState;
use crate::guard::PeerIp;

/// The service `handlers-lambda` runs: the public router behind stage stripping.
pub type LambdaService<B> = MapRequest<Router, fn(Request<B>) -> Request<B>>;

/// The public router, ready for `lambda_http::run`.
pub fn service<B>(state: AppState) -> LambdaService<B> {
    ServiceBuilder::new()
        .map_request(prepare as fn(Request<B>) -> Request<B>)
        .service(crate::router(state))
}

/// What the router needs from the Lambda event beyond the HTTP request.
fn prepare<B>(mut request: Request<B>) -> Request<B> {
    if let Some(ip) = source_ip(&request) {
        request.extensions_mut().insert(PeerIp(ip));
    }
    strip_stage(request)
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
