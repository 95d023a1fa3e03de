//! [`LambdaBridge`]: the emulator's API as API Gateway (HTTP API) fronts a Lambda function.
//! Each HTTP request becomes an API Gateway v2 event, is answered by
//! [`handlers::lambda::handle`] (the code `handlers-lambda` runs for every invocation), and
//! the Lambda response becomes the HTTP answer again; like Lambda, a response over 6 MB
//! fails the invocation (API Gateway answers 502).

use std::net::SocketAddr;

use axum::body::Body;
use axum::extract::{ConnectInfo, Request};
use axum::http::{HeaderName, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use handlers::lambda::LambdaService;
use lambda_http::{Context, LambdaEvent};
use serde_json::{Map, Value, json};

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
                from_answer(&answer)
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
async fn to_event(request: Request) -> Result<Value, Response> {
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
    let mut headers = Map::new();
    for name in parts.headers.keys() {
        let joined: Vec<&str> = parts
            .headers
            .get_all(name)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .collect();
        headers.insert(name.as_str().to_owned(), Value::String(joined.join(",")));
    }
    let source_ip = parts
        .extensions
        .get::<ConnectInfo<SocketAddr>>()
        .map_or_else(|| "127.0.0.1".to_owned(), |c| c.0.ip().to_string());
    let path = parts.uri.path().to_owned();
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis());
    let user_agent = parts
        .headers
        .get("user-agent")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default();
    let mut event = json!({
        "version": "2.0",
        "routeKey": "$default",
        "rawPath": path,
        "rawQueryString": parts.uri.query().unwrap_or_default(),
        "headers": headers,
        "requestContext": {
            "accountId": "000000000000",
            "apiId": "emulator",
            "domainName": headers.get("host").cloned().unwrap_or(Value::Null),
            "http": {
                "method": parts.method.as_str(),
                "path": path,
                "protocol": "HTTP/1.1",
                "sourceIp": source_ip,
                "userAgent": user_agent,
            },
            "requestId": format!("emulator-{now}"),
            "routeKey": "$default",
            "stage": "$default",
            "timeEpoch": now,
        },
        "isBase64Encoded": false,
    });
    if !body.is_empty() {
        event["body"] = Value::String(STANDARD.encode(&body));
        event["isBase64Encoded"] = Value::Bool(true);
    }
    Ok(event)
}

/// The HTTP answer for a Lambda response in API Gateway v2 (or v1/ALB) shape.
fn from_answer(answer: &Value) -> Response {
    let status = answer["statusCode"]
        .as_u64()
        .and_then(|s| StatusCode::from_u16(u16::try_from(s).ok()?).ok())
        .unwrap_or(StatusCode::BAD_GATEWAY);
    let text = answer["body"].as_str().unwrap_or_default();
    let body = if answer["isBase64Encoded"].as_bool() == Some(true) {
        STANDARD.decode(text).unwrap_or_default()
    } else {
        text.as_bytes().to_vec()
    };
    let mut response = Response::new(Body::from(body));
    *response.status_mut() = status;
    let headers = response.headers_mut();
    let single = answer["headers"].as_object().into_iter().flatten();
    for (name, value) in single {
        if let (Ok(name), Some(Ok(value))) = (
            HeaderName::try_from(name.as_str()),
            value.as_str().map(HeaderValue::from_str),
        ) {
            headers.append(name, value);
        }
    }
    for (name, values) in answer["multiValueHeaders"]
        .as_object()
        .into_iter()
        .flatten()
    {
        let Ok(name) = HeaderName::try_from(name.as_str()) else {
            continue;
        };
        for value in values.as_array().into_iter().flatten() {
            if let Some(Ok(value)) = value.as_str().map(HeaderValue::from_str) {
                headers.append(name.clone(), value);
            }
        }
    }
    for cookie in answer["cookies"].as_array().into_iter().flatten() {
        if let Some(Ok(value)) = cookie.as_str().map(HeaderValue::from_str) {
            headers.append(axum::http::header::SET_COOKIE, value);
        }
    }
    response
}
