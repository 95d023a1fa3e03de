//! The pod's internal HTTP server on `CONSUMER_ADDR` (TCP or Unix socket): fetch, status,
//! metrics and the rate-limit counts every handler replica shares. Never exposed publicly; no API key (the network policy
//! admits only the handlers).

use std::sync::Arc;

use axum::extract::State;
use axum::http::header;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use shared::ApiError;
use shared::api::FetchRequest;
use shared::internal::{
    FETCH_PATH, METRICS_PATH, PodStatus, RATE_PATH, RateCheck, RateDecision, STATUS_PATH,
};
use shared::ratelimit::RateLimiter;

use crate::buffer::RecordBuffer;
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
}

/// The internal router.
pub fn router(state: PodState) -> Router {
    Router::new()
        .route(FETCH_PATH, post(fetch))
        .route(STATUS_PATH, get(status))
        .route(METRICS_PATH, get(metrics))
        .route(RATE_PATH, post(rate))
        .with_state(state)
}

async fn fetch(
    State(state): State<PodState>,
    Json(req): Json<FetchRequest>,
) -> Result<Response, ApiError> {
    let fetched = state.reader.fetch(&req).await?;
    if !req.binary {
        return Ok(Json(fetched.into_events()).into_response());
    }
    let body = fetched.encode_batch().map_err(|e| {
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
