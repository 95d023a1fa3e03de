//! The Lambda face of the router: API Gateway REST API (v1) and HTTP API (v2) with a named
//! stage put the stage in front of the path (`/prod/api/v1/…`); this strips it again so
//! the very same [`crate::router`] matches, whatever the deployment's stage is called.

use axum::Router;
use http::{Request, Uri};
use lambda_http::request::RequestContext;
use tower::ServiceBuilder;
use tower::util::MapRequest;

use crate::AppState;

/// The service `handlers-lambda` runs: the public router behind stage stripping.
pub type LambdaService<B> = MapRequest<Router, fn(Request<B>) -> Request<B>>;

/// The public router, ready for `lambda_http::run`.
pub fn service<B>(state: AppState) -> LambdaService<B> {
    ServiceBuilder::new()
        .map_request(strip_stage as fn(Request<B>) -> Request<B>)
        .service(crate::router(state))
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
