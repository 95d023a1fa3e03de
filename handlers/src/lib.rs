//! The public API as one axum [`Router`], built by [`router`] and run unchanged by two thin
//! binaries: `handlers-server` (`axum::serve`) and `handlers-lambda` (`lambda_http::run`).
//! Stateless: events, cursors and rate counts live in the consumer pod.

pub mod auth;
pub mod lambda;
pub mod metrics;
pub mod pod;
pub mod routes;

use std::sync::Arc;
use std::time::Instant;

use axum::Router;
use axum::extract::{MatchedPath, Request, State};
use axum::middleware::{self, Next};
use axum::response::Response;
use axum::routing::get;
use shared::ApiKeys;
use shared::config::HandlersConfig;

pub use metrics::HandlerMetrics;
pub use pod::PodClient;

/// What every request handler shares.
#[derive(Debug, Clone)]
pub struct AppState {
    pub keys: Arc<ApiKeys>,
    pub pod: PodClient,
    pub metrics: HandlerMetrics,
    pub api_prefix: String,
}

/// Why the handlers could not start.
#[derive(Debug, thiserror::Error)]
pub enum HandlersError {
    #[error(transparent)]
    Config(#[from] shared::config::ConfigError),
    #[error(transparent)]
    Pod(#[from] pod::PodClientError),
}

impl AppState {
    /// Builds the state from validated configuration.
    pub fn from_config(config: &HandlersConfig) -> Result<Self, HandlersError> {
        Ok(Self {
            keys: Arc::new(config.api_keys()?),
            pod: PodClient::new(config.consumer_addr.clone())?,
            metrics: HandlerMetrics::new(),
            api_prefix: config.api_prefix.clone(),
        })
    }
}

/// The public API under `state.api_prefix`.
pub fn router(state: AppState) -> Router {
    let open = Router::new()
        .route("/health", get(routes::health))
        .route("/ready", get(routes::ready));
    let keyed = Router::new()
        .route("/events", get(routes::events))
        .route("/metrics", get(routes::metrics))
        .route_layer(middleware::from_fn_with_state(
            state.clone(),
            auth::require_api_key,
        ));
    let api = open
        .merge(keyed)
        .method_not_allowed_fallback(routes::method_not_allowed);
    let app = if state.api_prefix.is_empty() {
        api
    } else {
        Router::new().nest(&state.api_prefix, api)
    };
    app.fallback(routes::not_found)
        .layer(middleware::from_fn_with_state(
            state.clone(),
            record_request,
        ))
        .with_state(state)
}

/// Counts and times every answer by route (the matched pattern, never the raw path).
async fn record_request(State(state): State<AppState>, request: Request, next: Next) -> Response {
    let route = request
        .extensions()
        .get::<MatchedPath>()
        .map_or("unmatched", |p| p.as_str())
        .to_owned();
    let method = request.method().as_str().to_owned();
    let started = Instant::now();
    let response = next.run(request).await;
    state
        .metrics
        .duration
        .with_label_values(&[route.as_str()])
        .observe(started.elapsed().as_secs_f64());
    state
        .metrics
        .requests
        .with_label_values(&[route.as_str(), method.as_str(), response.status().as_str()])
        .inc();
    response
}
