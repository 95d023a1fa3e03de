//! [`LambdaBridge`]: the emulator's API as API Gateway (HTTP API) fronts a Lambda function.
//! Each HTTP request becomes an API Gateway v2 event, is answered by
//! [`handlers::lambda::handle`] (the code `handlers-lambda` runs for every invocation), and
//! the Lambda response becomes the HTTP answer again; like Lambda, a response over 6 MB
//! fails the invocation (API Gateway answers 502).

use std::net::SocketAddr;

use axum::body::Body;
use axum::extract::{ConnectInfo, Request};
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use handlers::lambda::LambdaService;
use lambda_http::aws_lambda_events::apigw::{
    ApiGatewayV2httpRequest, ApiGatewayV2httpRequestContext,
    ApiGatewayV2httpRequestContextHttpDescription, ApiGatewayV2httpResponse,
};
use lambda_http::aws_lambda_events::encodings::Body as LambdaBody;
use lambda_http::{Context, LambdaEvent};
use serde_json::json;

/// Lambda's limit on a synchronous invocation's response (6 MB): a larger one fails the
/// invocation, and API Gateway answers 502.
pub const LAMBDA_RESPONSE_LIMIT: usize = 6 * 1024 * 1024;

/// Largest request body turned into an event (API Gateway's own payload limit is 10 MB;
/// the API takes none, so this only bounds memory).
const MAX_EVENT_BODY: usize = 1024 * 1024;

/// The handlers behind an emulated API Gateway HTTP API.
#[derive(Clone)]
pub struct LambdaBridge {
    service: LambdaService<lambda_http::Body>,
}

impl std::fmt::Debug for LambdaBridge {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LambdaBridge").finish_non_exhaustive()
    }
}

impl LambdaBridge {
    pub fn new(state: handlers::AppState) -> Self {
        Self {
            service: handlers::lambda::service(state),
        }
    }

    /// A router answering every request through the Lambda path.
    pub fn router(self) -> axum::Router {
        axum::Router::new().fallback(move |request: Request| {
            let bridge = self.clone();
            async move { bridge.answer(request).await }
        })
    }

    async fn answer(&self, request: Request) -> Response {
        let event = match to_event(request).await {
            Ok(event) => event,
            Err(response) => return response,
        };
        // lambda_http's response conversion is not `Send` (the Lambda runtime polls one
        // invocation at a time), so each invocation runs to completion on a blocking thread.
        let Ok(event) = serde_json::to_value(&event) else {
            return StatusCode::BAD_GATEWAY.into_response();
        };
        let service = self.service.clone();
        let runtime = tokio::runtime::Handle::current();
        let invoked = tokio::task::spawn_blocking(move || {
            runtime.block_on(handlers::lambda::handle(
                service,
                LambdaEvent::new(event, Context::default()),
            ))
        })
        .await;
        match invoked {
            Ok(Ok(answer)) => {
                let size = serde_json::to_vec(&answer).map_or(usize::MAX, |b| b.len());
                if size > LAMBDA_RESPONSE_LIMIT {
                    tracing::error!(
                        bytes = size,
                        "Lambda response over the 6 MB limit: the invocation fails"
                    );
                    return (
                        StatusCode::BAD_GATEWAY,
                        axum::Json(json!({"message": "Internal Server Error"})),
                    )
                        .into_response();
                }
                from_answer(answer)
            }
            Ok(Err(err)) => {
                // What API Gateway answers when the function fails.
                tracing::error!(error = %err, "Lambda invocation failed");
                (
                    StatusCode::BAD_GATEWAY,
                    axum::Json(json!({"message": "Internal Server Error"})),
                )
                    .into_response()
            }
            Err(join) => {
                tracing::error!(error = %join, "Lambda invocation panicked");
                StatusCode::BAD_GATEWAY.into_response()
            }
        }
    }
}

/// The API Gateway v2 (HTTP API, payload format 2.0) event for a request.
async fn to_event(request: Request) -> Result<ApiGatewayV2httpRequest, Response> {
    let (parts, body) = request.into_parts();
    let body = axum::body::to_bytes(body, MAX_EVENT_BODY)
        .await
        .map_err(|_| {
            (
                StatusCode::PAYLOAD_TOO_LARGE,
                axum::Json(json!({"message": "Request Entity Too Large"})),
            )
                .into_response()
        })?;
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX));
    let text = |name: axum::http::HeaderName| {
        parts
            .headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned)
    };
    let mut http = ApiGatewayV2httpRequestContextHttpDescription::default();
    http.method = parts.method.clone();
    http.path = Some(parts.uri.path().to_owned());
    http.protocol = Some("HTTP/1.1".into());
    http.source_ip = Some(
        parts
            .extensions
            .get::<ConnectInfo<SocketAddr>>()
            .map_or_else(|| "127.0.0.1".to_owned(), |c| c.0.ip().to_string()),
    );
    http.user_agent = Some(text(header::USER_AGENT).unwrap_or_default());
    let mut context = ApiGatewayV2httpRequestContext::default();
    context.route_key = Some("$default".into());
    context.account_id = Some("000000000000".into());
    context.stage = Some("$default".into());
    context.request_id = Some(format!("emulator-{now}"));
    context.apiid = Some("emulator".into());
    context.domain_name = text(header::HOST);
    context.time_epoch = now;
    context.http = http;
    let mut event = ApiGatewayV2httpRequest::default();
    event.version = Some("2.0".into());
    event.route_key = Some("$default".into());
    event.raw_path = Some(parts.uri.path().to_owned());
    event.raw_query_string = Some(parts.uri.query().unwrap_or_default().to_owned());
    event.query_string_parameters = parts
        .uri
        .query()
        .unwrap_or_default()
        .parse()
        .unwrap_or_default();
    // API Gateway joins a repeated header's values with commas, and passes text only.
    for name in parts.headers.keys() {
        let values: Vec<&str> = parts
            .headers
            .get_all(name)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .collect();
        if let Ok(joined) = HeaderValue::from_str(&values.join(",")) {
            event.headers.insert(name.clone(), joined);
        }
    }
    event.request_context = context;
    if !body.is_empty() {
        event.body = Some(STANDARD.encode(&body));
        event.is_base64_encoded = true;
    }
    Ok(event)
}

/// The HTTP answer for a Lambda response to an API Gateway v2 event; a response that is not
/// one is what API Gateway answers for it, a 502.
fn from_answer(answer: serde_json::Value) -> Response {
    let Ok(answer) = serde_json::from_value::<ApiGatewayV2httpResponse>(answer) else {
        tracing::error!("the Lambda response is not an API Gateway v2 response");
        return StatusCode::BAD_GATEWAY.into_response();
    };
    let status = u16::try_from(answer.status_code)
        .ok()
        .and_then(|s| StatusCode::from_u16(s).ok())
        .unwrap_or(StatusCode::BAD_GATEWAY);
    let body = match answer.body {
        None | Some(LambdaBody::Empty) => Vec::new(),
        Some(LambdaBody::Binary(bytes)) => bytes,
        Some(LambdaBody::Text(text)) if answer.is_base64_encoded => {
            STANDARD.decode(text).unwrap_or_default()
        }
        Some(LambdaBody::Text(text)) => text.into_bytes(),
        // The enum is non-exhaustive; nothing else exists today.
        Some(_) => Vec::new(),
    };
    let mut response = Response::new(Body::from(body));
    *response.status_mut() = status;
    let headers = response.headers_mut();
    headers.extend(answer.headers);
    for (name, value) in &answer.multi_value_headers {
        headers.append(name.clone(), value.clone());
    }
    for cookie in &answer.cookies {
        if let Ok(value) = HeaderValue::from_str(cookie) {
            headers.append(header::SET_COOKIE, value);
        }
    }
    response
}
