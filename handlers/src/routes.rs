//! The public routes: `/health`, `/ready`, `/events`, `/metrics`, and the JSON answers for
//! unknown routes and methods.

use axum::Json;
use axum::extract::rejection::QueryRejection;
use axum::extract::{Query, State};
use axum::http::StatusCode;
use axum::http::header;
use axum::response::IntoResponse;
use shared::api::{EventsQuery, EventsResponse, HealthResponse, ReadyResponse};
use shared::{ApiError, ErrorCode};

use crate::AppState;

/// `GET /health`: the process is alive. Says nothing secret.
pub async fn health() -> Json<HealthResponse> {
    Json(HealthResponse {
        status: "ok".into(),
        service: "kafka-replicator".into(),
        version: env!("CARGO_PKG_VERSION").into(),
    })
}

/// `GET /ready`: `200` when the consumer pod answers and is consuming, else `503`.
pub async fn ready(State(state): State<AppState>) -> (StatusCode, Json<ReadyResponse>) {
    let reason = match state.pod.status().await {
        Ok(status) if status.consuming => {
            return (
                StatusCode::OK,
                Json(ReadyResponse {
                    status: "ready".into(),
                    reason: None,
                }),
            );
        }
        Ok(status) => status.last_error.map_or_else(
            || "the consumer pod is not consuming yet".to_owned(),
            |e| format!("source Kafka: {e}"),
        ),
        Err(err) => err.message,
    };
    (
        StatusCode::SERVICE_UNAVAILABLE,
        Json(ReadyResponse {
            status: "not_ready".into(),
            reason: Some(reason),
        }),
    )
}

/// `GET /events`: events after a cursor.
pub async fn events(
    State(state): State<AppState>,
    query: Result<Query<EventsQuery>, QueryRejection>,
) -> Result<Json<EventsResponse>, ApiError> {
    let Query(query) = query.map_err(|e| {
        ApiError::new(
            ErrorCode::BadRequest,
            format!("bad query string: {}", e.body_text()),
        )
    })?;
    let request = query.validate()?;
    state.pod.fetch(&request).await.map(Json)
}

/// `GET /metrics`: this process's metrics followed by the consumer pod's.
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
