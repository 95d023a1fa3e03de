//! The pod's internal HTTP server on `CONSUMER_ADDR` (TCP or Unix socket): fetch, status,
//! metrics and the rate-limit counts every handler replica shares. Never exposed publicly;
//! with `INTERNAL_TOKEN` set it answers only requests that carry it (the network policy
//! admits only the handlers, but a Lambda deployment reaches it from a VPC).

use std::sync::Arc;

use axum::extract::{Request, State};
use axum::http::header;
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use shared::ApiError;
use shared::api::FetchRequest;
use shared::internal::{
    FETCH_PATH, METRICS_PATH, PodStatus, RATE_PATH, RateCheck, RateDecision, STATUS_PATH,
};
use shared::ratelimit::RateLimiter;
use tokio::sync::Semaphore;

use crate::buffer::{RecordBuffer, TopicPartition};
use crate::kafka::SourceStatus;
use crate::metrics::ConsumerMetrics;
use crate::reader::EventReader;

/// What the internal routes share.
#[derive(Debug, Clone)]
pub struct PodState {
    pub reader: Arc<EventReader>,
    pub buffer: Arc<RecordBuffer>,
    pub status: Arc<SourceStatus>,
    pub metrics: ConsumerMetrics,
    pub limiter: Arc<RateLimiter>,
    /// One permit per fetch served now (`MAX_CONCURRENT_FETCHES`).
    pub fetches: Arc<Semaphore>,
    /// `INTERNAL_TOKEN`: when set, every request must carry it.
    pub internal_token: Option<Arc<str>>,
}

/// The internal router.
pub fn router(state: PodState) -> Router {
    Router::new()
        .route(FETCH_PATH, post(fetch))
        .route(STATUS_PATH, get(status))
        .route(METRICS_PATH, get(metrics))
        .route(RATE_PATH, post(rate))
        .layer(middleware::from_fn_with_state(
            state.clone(),
            require_internal_token,
        ))
        .with_state(state)
}

/// Refuses, with `401`, a request without the pod's `INTERNAL_TOKEN` when one is set.
async fn require_internal_token(
    State(state): State<PodState>,
    request: Request,
    next: Next,
) -> Result<Response, ApiError> {
    let Some(token) = &state.internal_token else {
        return Ok(next.run(request).await);
    };
    let presented = request
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split_once(' '))
        .filter(|(scheme, _)| scheme.eq_ignore_ascii_case("bearer"))
        .map(|(_, t)| t.trim());
    if presented.is_some_and(|p| same_secret(p, token)) {
        return Ok(next.run(request).await);
    }
    Err(ApiError::new(
        shared::ErrorCode::Unauthorized,
        "this internal socket needs the INTERNAL_TOKEN (Authorization: Bearer); set the same value on the handlers",
    ))
}

/// Notes that the key named in `req` asked now, and how far behind the end of each
/// partition (as this pod consumed it) the position it presented is.
fn note_client(state: &PodState, req: &FetchRequest) {
    let Some(key) = req.key_name.as_deref() else {
        return;
    };
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default();
    state
        .metrics
        .client_last_poll
        .with_label_values(&[key])
        .set(now.as_secs_f64());
    let Ok(shared::StartFrom::Cursor(cursor)) = req.start() else {
        return;
    };
    for (topic, partition, offset) in cursor.iter() {
        if let Some(end) = state.buffer.end(&TopicPartition::new(topic, partition)) {
            state
                .metrics
                .client_lag
                .with_label_values(&[key, topic, &partition.to_string()])
                .set((end - offset).max(0));
        }
    }
}

async fn fetch(
    State(state): State<PodState>,
    Json(req): Json<FetchRequest>,
) -> Result<Response, ApiError> {
    let Ok(_serving) = state.fetches.try_acquire() else {
        state
            .metrics
            .fetches_refused
            .with_label_values(&["fetches"])
            .inc();
        return Err(ApiError::unavailable(
            "the service is answering as many requests as it may at once; retry shortly",
            crate::reader::BUSY_RETRY_AFTER_SECS,
        ));
    };
    let _counted = InFlight::count(&state.metrics.fetches_in_flight);
    note_client(&state, &req);
    let fetched = state.reader.fetch(&req).await?;
    if !req.binary {
        return Ok(Json(fetched.into_events()).into_response());
    }
    let body = fetched.into_batch().map_err(|e| {
        ApiError::new(
            shared::ErrorCode::Internal,
            format!("cannot encode the batch: {e}"),
        )
    })?;
    Ok((
        [(
            axum::http::header::CONTENT_TYPE,
            axum::http::HeaderValue::from_static(shared::wire::BATCH_CONTENT_TYPE_V2),
        )],
        body,
    )
        .into_response())
}

/// One fetch counted in `gauge` for as long as it lives, however the fetch ends.
struct InFlight<'a>(&'a prometheus::IntGauge);

impl<'a> InFlight<'a> {
    fn count(gauge: &'a prometheus::IntGauge) -> Self {
        gauge.inc();
        Self(gauge)
    }
}

impl Drop for InFlight<'_> {
    fn drop(&mut self) {
        self.0.dec();
    }
}

async fn rate(State(state): State<PodState>, Json(check): Json<RateCheck>) -> Json<RateDecision> {
    let decision = state.limiter.check(&check);
    state
        .metrics
        .rate_limit_buckets
        .set(i64::try_from(state.limiter.len()).unwrap_or(i64::MAX));
    Json(decision)
}

async fn status(State(state): State<PodState>) -> Json<PodStatus> {
    let (buffered_events, buffered_bytes, _) = state.buffer.stats();
    let assigned_partitions = state.status.assigned_partitions();
    Json(PodStatus {
        consuming: state.status.reachable() && assigned_partitions > 0,
        topics: state.reader.topics().to_vec(),
        assigned_partitions,
        buffered_events,
        buffered_bytes,
        last_error: state.status.last_error(),
    })
}

async fn metrics(State(state): State<PodState>) -> impl IntoResponse {
    (
        [(header::CONTENT_TYPE, "text/plain; version=0.0.4")],
        shared::metrics::render(&state.metrics.registry),
    )
}

/// Whether two secrets are equal, compared in constant time.
fn same_secret(presented: &str, expected: &str) -> bool {
    use subtle::ConstantTimeEq;
    presented.as_bytes().ct_eq(expected.as_bytes()).into()
}
