//! The public API as one axum [`Router`], built by [`router`] and run unchanged by two thin
//! binaries: `handlers-server` (`axum::serve`) and `handlers-lambda` (`lambda_http::run`).
//! Stateless: events and cursors live in the consumer pods; rate counts there or in Redis.

pub mod api_keys;
pub mod config;
pub mod guard;
pub mod keys;
pub mod lambda;
pub mod metrics;
pub mod openapi;
pub mod pod;
pub mod redis_limits;
pub mod routes;
pub mod security;
pub mod server;
pub mod stream;

use std::sync::Arc;
use std::time::Instant;

use crate::config::{CorsArgs, RateLimitArgs};
use axum::Router;
use axum::extract::{MatchedPath, Request, State};
use axum::middleware::{self, Next};
use axum::response::Response;
use axum::routing::get;
use shared::ratelimit::RateLimiter;
use tower_http::compression::Predicate;
use tower_http::compression::predicate::{DefaultPredicate, NotForContentType};

pub use api_keys::ApiKeys;
pub use config::Config;
pub use keys::KeyStore;
pub use metrics::HandlerMetrics;
pub use pod::PodClient;

/// What every request handler shares.
#[derive(Debug, Clone)]
pub struct AppState {
    pub keys: KeyStore,
    pub pod: PodClient,
    pub metrics: HandlerMetrics,
    pub api_prefix: String,
    pub limits: Arc<RateLimitArgs>,
    pub cors: Arc<CorsArgs>,
    /// Where the counts every replica shares live when not in the pod
    /// (`RATE_LIMIT_REDIS_URL`).
    pub redis_limits: Option<Arc<redis_limits::RedisLimits>>,
    /// Counts used only while neither Redis nor the consumer pod can be asked.
    pub local_limiter: Arc<RateLimiter>,
    /// `/ready`'s last answer, reused for about a second: the route needs no key, so it
    /// must not let anyone make the pod work per request.
    pub ready: Arc<routes::ReadyCache>,
    /// How long a `/events/stream` answer lasts (`STREAM_MAX_SECS`).
    pub stream_max: std::time::Duration,
    /// Cancelled when the server begins to stop: open streams end cleanly then (the client
    /// comes back where it stands), so they never hold the drain up.
    pub closing: tokio_util::sync::CancellationToken,
}

/// Why the handlers could not start.
#[derive(Debug, thiserror::Error)]
pub enum HandlersError {
    #[error(transparent)]
    Config(#[from] shared::config::ConfigError),
    #[error(transparent)]
    Pod(#[from] pod::PodClientError),
    #[error(transparent)]
    Keys(#[from] keys::KeyStoreError),
    #[error(transparent)]
    RedisUrl(#[from] redis_limits::RedisUrlError),
}

impl AppState {
    /// Builds the state from validated configuration, reading the keys from wherever it
    /// says (a Secrets Manager secret is read now).
    pub async fn from_config(config: &Config) -> Result<Self, HandlersError> {
        let keys = KeyStore::from_config(&config.keys).await?;
        Self::with_keys(config, keys)
    }

    /// Builds the state with these keys.
    pub fn with_keys(config: &Config, keys: KeyStore) -> Result<Self, HandlersError> {
        Ok(Self {
            keys,
            pod: PodClient::new(&config.consumer_addr, config.internal_token.as_deref())?,
            metrics: HandlerMetrics::new(),
            api_prefix: config.api_prefix.clone(),
            limits: Arc::new(config.limits.clone()),
            cors: Arc::new(config.cors.clone()),
            redis_limits: config
                .limits
                .redis_url()
                .map(redis_limits::RedisLimits::new)
                .transpose()?
                .map(Arc::new),
            local_limiter: Arc::new(RateLimiter::new()),
            ready: Arc::default(),
            stream_max: std::time::Duration::from_secs(config.stream_max_secs),
            closing: tokio_util::sync::CancellationToken::new(),
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
        .route("/events/stream", get(stream::events_stream))
        .route("/metrics", get(routes::metrics))
        .route_layer(middleware::from_fn_with_state(
            state.clone(),
            guard::require_api_key,
        ));
    let api = open
        .merge(keyed)
        .method_not_allowed_fallback(routes::method_not_allowed);
    let app = if state.api_prefix.is_empty() {
        api
    } else {
        Router::new().nest(&state.api_prefix, api)
    };
    let app = app.merge(openapi::docs_router(&state.api_prefix));
    // Outermost last: security headers on everything, then metrics, CORS (preflights
    // answered before any count), size and time limits, compression, and the guard.
    let app = app
        .fallback(routes::not_found)
        .layer(middleware::from_fn_with_state(state.clone(), guard::guard));
    let app = security::with_request_limits(app)
        // Negotiated by Accept-Encoding (zstd, gzip); worth most on the long way to a
        // laptop, where 1 KiB JSON events shrink several times.
        // Streams are left alone: an encoder here would hold frames back until its buffer
        // fills (SSE is excluded by the default predicate; binary frames compress
        // themselves, flushed frame by frame).
        .layer(
            tower_http::compression::CompressionLayer::new()
                .quality(tower_http::compression::CompressionLevel::Fastest)
                .compress_when(DefaultPredicate::new().and(NotForContentType::const_new(
                    shared::wire::stream::STREAM_CONTENT_TYPE,
                ))),
        );
    let app = match security::cors(&state.cors) {
        Some(cors) => app.layer(cors),
        None => app,
    };
    let app = app.layer(middleware::from_fn_with_state(
        state.clone(),
        record_request,
    ));
    security::with_security_headers(app).with_state(state)
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
