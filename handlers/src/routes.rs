//! The public routes: `/health`, `/ready`, `/events`, `/metrics`, and the JSON answers for
//! unknown routes and methods.

use axum::extract::rejection::QueryRejection;
use axum::extract::{Query, State};
use axum::http::StatusCode;
use axum::http::{HeaderMap, header};
use axum::response::IntoResponse;
use axum::{Extension, Json};
use shared::api::{EventsQuery, EventsResponse, HealthResponse, ReadyResponse};
use shared::error::ErrorBody;
use shared::{ApiError, ErrorCode};

use crate::AppState;
use crate::guard::Authenticated;
use crate::pod::EventsBody;

/// `GET /health`: the process is alive. Says nothing secret.
#[utoipa::path(
    get,
    path = "/health",
    tag = "service",
    summary = "Liveness",
    description = "Answers 200 while the process runs. Needs no key and is never rate-limited (orchestrator probes call it).",
    responses(
        (status = 200, description = "Alive", body = HealthResponse,
            example = json!({"status": "ok", "service": "kafka-replicator", "version": "0.1.0"})),
    )
)]
pub async fn health() -> Json<HealthResponse> {
    Json(HealthResponse {
        status: "ok".into(),
        service: "kafka-replicator".into(),
        version: env!("CARGO_PKG_VERSION").into(),
    })
}

/// `GET /ready`: `200` when the consumer pod answers and is consuming, else `503`.
#[utoipa::path(
    get,
    path = "/ready",
    tag = "service",
    summary = "Readiness",
    description = "200 when a consumer pod (any one, where there are several) is reachable and consuming the source Kafka, else 503 with a short, generic reason (details are in the service's logs). Answers are reused for about a second. Needs no key and is never rate-limited.",
    responses(
        (status = 200, description = "Ready to serve events", body = ReadyResponse,
            example = json!({"status": "ready"})),
        (status = 503, description = "The consumer pod or the source Kafka is not available", body = ReadyResponse,
            example = json!({"status": "not_ready", "reason": "the event source is not reachable"})),
    )
)]
pub async fn ready(State(state): State<AppState>) -> ReadyAnswer {
    let mut cached = state.ready.answer.lock().await;
    if let Some((at, answer)) = cached.as_ref()
        && at.elapsed() < READY_CACHE_FOR
    {
        return answer.clone();
    }
    let reason = match state.pod.status().await {
        Ok(status) if status.consuming => None,
        Ok(status) => {
            tracing::debug!(last_error = ?status.last_error, "not ready: the consumer pod is not consuming");
            Some("the event source is not consuming yet")
        }
        Err(err) => {
            tracing::debug!(error = %err, "not ready: the consumer pod did not answer");
            Some("the event source is not reachable")
        }
    };
    let answer = match reason {
        None => (
            StatusCode::OK,
            Json(ReadyResponse {
                status: "ready".into(),
                reason: None,
            }),
        ),
        Some(reason) => (
            StatusCode::SERVICE_UNAVAILABLE,
            Json(ReadyResponse {
                status: "not_ready".into(),
                reason: Some(reason.to_owned()),
            }),
        ),
    };
    *cached = Some((std::time::Instant::now(), answer.clone()));
    answer
}

/// How long one `/ready` answer is reused.
pub const READY_CACHE_FOR: std::time::Duration = std::time::Duration::from_secs(1);

/// The last `/ready` answer and when it was made. Callers that come while the pod is being
/// asked wait for that answer instead of asking again.
#[derive(Debug, Default)]
pub struct ReadyCache {
    answer: tokio::sync::Mutex<Option<(std::time::Instant, ReadyAnswer)>>,
}

/// What `/ready` answers.
type ReadyAnswer = (StatusCode, Json<ReadyResponse>);

/// The longest long-poll this deployment allows (set per request by the Lambda adapter,
/// which must answer before the gateway's and the invocation's time limits).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MaxWait(pub std::time::Duration);

/// The largest `max_bytes` this deployment allows (set per request by the Lambda adapter,
/// whose answers must stay under Lambda's 6 MB response limit).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MaxBytes(pub u32);

/// `GET /events`: events after a cursor.
#[utoipa::path(
    get,
    path = "/events",
    tag = "events",
    summary = "Events after a cursor",
    description = "Returns up to `limit` events after `cursor`, fairly over partitions, in offset order per partition, and the cursor to pass next. With `wait_ms`, waits up to that long for at least one event (long-poll). Offsets the source no longer holds (retention) come back as `gaps`.",
    params(
        ("cursor" = Option<String>, Query, description = "A `next_cursor` from an earlier answer, or `earliest` (the oldest retained offsets) or `latest` (the end of the log). Absent: the newest buffered events.", example = "earliest"),
        ("limit" = Option<u32>, Query, minimum = 1, maximum = 10000, description = "Most events to return (default 500).", example = 500),
        ("max_bytes" = Option<u32>, Query, minimum = 1024, maximum = 16777216, description = "Most bytes the events take in the answer, as written there (JSON escaping or base64 included), so at most this many of keys, values and headers; always at least one event. Default 4194304 (4 MiB); the AWS Lambda deployment caps it at 4 MiB.", example = 4194304),
        ("wait_ms" = Option<u32>, Query, minimum = 0, maximum = 30000, description = "Long-poll: wait up to this many milliseconds for an event (default 0).", example = 1000),
        ("topic" = Option<String>, Query, description = "Only these topics: one carried topic, or several comma-separated. Default: all.", example = "orders"),
    ),
    responses(
        (status = 200, description = "Events, the next cursor and any gaps. JSON unless the request sends `Accept: application/vnd.kafka-replicator.batch; v=2`, which gets the same answer in the compact binary form the client uses (README, \"Binary batches\")", body = EventsResponse,
            headers(
                ("RateLimit-Limit" = u32, description = "Requests allowed per window for this key"),
                ("RateLimit-Remaining" = u32, description = "Requests left in this window"),
                ("RateLimit-Reset" = u64, description = "Seconds until the window resets"),
                ("RateLimit-Policy" = String, description = "The budget and its window in seconds, e.g. `18000;w=900`"),
            ),
            example = json!({"events": [{"topic": "orders", "partition": 0, "offset": 42, "timestamp": 1764033600000_i64, "key": "device-7", "value": "{\"seq\":42}", "headers": [{"key": "source", "value": "pos"}], "encoding": "utf8"}], "next_cursor": "AgAAAA…", "gaps": []})),
        (status = 400, description = "A bad parameter or cursor: `bad_request`, `invalid_limit`, `invalid_max_bytes`, `invalid_wait`, `unknown_topic`, `invalid_cursor`, `cursor_cluster_mismatch`, `cursor_topic_mismatch`, `cursor_ahead`", body = ErrorBody,
            example = json!({"error": {"code": "invalid_limit", "message": "limit must be a whole number from 1 to 10000"}})),
        (status = 401, description = "Missing or wrong API key", body = ErrorBody,
            example = json!({"error": {"code": "unauthorized", "message": "a valid API key is required (header x-api-key, or Authorization: Bearer)"}})),
        (status = 403, description = "A scoped key named a topic it may not read, in `topic` or in the cursor: `forbidden_topic`. Without `topic` such a key reads only its own topics.", body = ErrorBody,
            example = json!({"error": {"code": "forbidden_topic", "message": "this key may not read topic \"payments\" (named in topic); it reads orders"}})),
        (status = 408, description = "The request took too long", body = ErrorBody),
        (status = 413, description = "A request body was sent", body = ErrorBody),
        (status = 429, description = "Over the rate limit; retry after `Retry-After` seconds", body = ErrorBody,
            headers(("Retry-After" = u64, description = "Seconds to wait")),
            example = json!({"error": {"code": "rate_limited", "message": "too many requests: 2000 per 900 s allowed; retry after the window resets"}})),
        (status = 431, description = "Request headers too large", body = ErrorBody),
        (status = 503, description = "The consumer pod or source Kafka cannot answer now; retry after `Retry-After` seconds", body = ErrorBody,
            headers(("Retry-After" = u64, description = "Seconds to wait")),
            example = json!({"error": {"code": "unavailable", "message": "the event source is not reachable now; retry later"}})),
    ),
    security(("api_key" = []), ("bearer" = []))
)]
pub async fn events(
    State(state): State<AppState>,
    caller: Option<Extension<Authenticated>>,
    max_wait: Option<Extension<MaxWait>>,
    max_bytes: Option<Extension<MaxBytes>>,
    headers: HeaderMap,
    query: Result<Query<EventsQuery>, QueryRejection>,
) -> Result<EventsBody, ApiError> {
    let query = events_query(query)?;
    let mut request = query.validate()?;
    if let Some(Extension(Authenticated(caller))) = caller {
        caller.scope(&mut request)?;
    }
    request.binary = accepts_batch(&headers);
    if let Some(Extension(MaxWait(max))) = max_wait {
        let max_ms = u32::try_from(max.as_millis()).unwrap_or(u32::MAX);
        request.wait_ms = request.wait_ms.min(max_ms);
    }
    if let Some(Extension(MaxBytes(max))) = max_bytes {
        request.max_bytes = request.max_bytes.min(max);
    }
    state.pod.fetch(&request).await
}

/// The `/events` query string (also `/events/stream`'s), or `400 bad_request`.
pub fn events_query(
    query: Result<Query<EventsQuery>, QueryRejection>,
) -> Result<EventsQuery, ApiError> {
    query.map(|Query(q)| q).map_err(|e| {
        ApiError::new(
            ErrorCode::BadRequest,
            format!("bad query string: {}", e.body_text()),
        )
    })
}

/// Whether the caller asked for the binary batch form this build writes (`Accept` names it
/// with its version, `v=2`, and not with `q=0`). A caller that names the media type
/// without the version is an earlier client, which reads only `KRB1`: it gets JSON, which
/// it reads too.
fn accepts_batch(headers: &HeaderMap) -> bool {
    header_items(headers, header::ACCEPT).any(|item| {
        let mut parts = item.split(';').map(str::trim);
        let media = parts.next().unwrap_or_default();
        let params: Vec<String> = parts.map(|p| p.replace(' ', "")).collect();
        media.eq_ignore_ascii_case(shared::wire::BATCH_CONTENT_TYPE)
            && params
                .iter()
                .any(|p| p.eq_ignore_ascii_case(shared::wire::BATCH_VERSION_PARAM))
            && !params
                .iter()
                .any(|p| p.starts_with("q=0") && !p.contains(|c: char| ('1'..='9').contains(&c)))
    })
}

/// The items of a comma-separated list header (`Accept`, `Accept-Encoding`), in order.
pub fn header_items(headers: &HeaderMap, name: header::HeaderName) -> impl Iterator<Item = &str> {
    headers
        .get_all(name)
        .into_iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
}

/// `GET /metrics`: this process's metrics followed by the consumer pod's.
#[utoipa::path(
    get,
    path = "/metrics",
    tag = "service",
    summary = "Prometheus metrics",
    description = "The whole system on one scrape: these handlers' request counts, latencies, auth failures and rate-limit refusals, then the consumer pod's consumption, buffer, lag and error metrics. Prometheus can send the key as `Authorization: Bearer`.",
    responses(
        (status = 200, description = "Prometheus text exposition format", content_type = "text/plain; version=0.0.4", body = String,
            example = "# TYPE api_requests_total counter\napi_requests_total{method=\"GET\",route=\"/api/v1/events\",status=\"200\"} 12\n"),
        (status = 401, description = "Missing or wrong API key", body = ErrorBody),
        (status = 429, description = "Over the rate limit", body = ErrorBody,
            headers(("Retry-After" = u64, description = "Seconds to wait"))),
    ),
    security(("api_key" = []), ("bearer" = []))
)]
pub async fn metrics(State(state): State<AppState>) -> impl IntoResponse {
    let mut text = shared::metrics::render(&state.metrics.registry);
    match state.pod.metrics().await {
        Ok(pod) => text.push_str(&pod),
        Err(err) => tracing::warn!(error = %err, "consumer pod metrics missing from /metrics"),
    }
    ([(header::CONTENT_TYPE, "text/plain; version=0.0.4")], text)
}

/// Any unknown path.
pub async fn not_found() -> ApiError {
    ApiError::new(ErrorCode::NotFound, "no such route")
}

/// A known path with a method it does not take.
pub async fn method_not_allowed() -> ApiError {
    ApiError::new(
        ErrorCode::MethodNotAllowed,
        "method not allowed on this route",
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn accept(value: &str) -> HeaderMap {
        let mut headers = HeaderMap::new();
        headers.insert(header::ACCEPT, value.parse().unwrap());
        headers
    }

    #[test]
    fn binary_only_when_asked_for_with_its_version() {
        assert!(accepts_batch(&accept(
            "application/vnd.kafka-replicator.batch; v=2"
        )));
        assert!(accepts_batch(&accept(
            "application/json;q=0.5, application/vnd.kafka-replicator.batch;v=2"
        )));
        assert!(accepts_batch(&accept(
            "application/vnd.kafka-replicator.batch; v=2; q=0.8"
        )));
        assert!(!accepts_batch(&accept(
            "application/vnd.kafka-replicator.batch;v=2;q=0"
        )));
        // An earlier client: the media type without the version.
        assert!(!accepts_batch(&accept(
            "application/vnd.kafka-replicator.batch, application/json;q=0.5"
        )));
        assert!(!accepts_batch(&accept("application/json")));
        assert!(!accepts_batch(&accept("*/*")));
        assert!(!accepts_batch(&HeaderMap::new()));
    }
}
