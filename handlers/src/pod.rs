//! [`PodClient`]: the handlers' side of the internal socket to the consumer pod (TCP or
//! Unix socket). An unreachable pod is a `503` with `Retry-After`, never a `500`.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use reqwest::StatusCode;
use shared::ApiError;
use shared::api::FetchRequest;
use shared::error::ErrorBody;
use shared::internal::ConsumerAddr;
use shared::internal::{
    FETCH_PATH, METRICS_PATH, PodStatus, RATE_PATH, RateCheck, RateDecision, STATUS_PATH,
};

/// The pod's answer to a fetch, already in its public form — the JSON of
/// [`shared::api::EventsResponse`] or the binary batch of [`shared::wire`] — so the handlers
/// pass it on without decoding and encoding the events again. The body streams through as
/// it arrives: the caller receives the start of a large batch while the pod sends the rest.
/// Should the pod's connection break midway, the caller gets a body cut short, which the
/// client retries like any other failed fetch.
#[derive(Debug)]
pub struct EventsBody {
    pub content_type: axum::http::HeaderValue,
    pub body: axum::body::Body,
}

impl axum::response::IntoResponse for EventsBody {
    fn into_response(self) -> axum::response::Response {
        (
            [
                (axum::http::header::CONTENT_TYPE, self.content_type),
                (
                    axum::http::header::VARY,
                    axum::http::HeaderValue::from_static("accept"),
                ),
            ],
            self.body,
        )
            .into_response()
    }
}

/// Seconds a client is told to wait when the pod does not answer.
const RETRY_AFTER_SECS: u64 = 2;
/// Time to open a connection to the pod.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(2);
/// Time for a pod answer beyond the long-poll wait itself.
const ANSWER_SLACK: Duration = Duration::from_secs(15);

/// A client of the consumer pod's internal server.
#[derive(Debug, Clone)]
pub struct PodClient {
    http: reqwest::Client,
    base: String,
    addr: ConsumerAddr,
    /// Whether the last call got through: an outage is logged once, not per request.
    reachable: Arc<AtomicBool>,
}

/// Why the pod client could not be built.
#[derive(Debug, thiserror::Error)]
pub enum PodClientError {
    #[error("cannot build the HTTP client for {addr}: {source}")]
    Build {
        addr: ConsumerAddr,
        source: reqwest::Error,
    },
    #[error("Unix sockets are not supported on this platform: {0}")]
    UnixUnsupported(ConsumerAddr),
    #[error(
        "INTERNAL_TOKEN cannot be sent in an HTTP header: use printable ASCII, e.g. $(handlers-server generate-api-key)"
    )]
    BadToken,
}

impl PodClient {
    /// A client of the pod at `addr`, sending `token` (its `INTERNAL_TOKEN`) with every
    /// request.
    pub fn new(addr: ConsumerAddr, token: Option<&str>) -> Result<Self, PodClientError> {
        let mut headers = reqwest::header::HeaderMap::new();
        if let Some(token) = token {
            let mut value = reqwest::header::HeaderValue::from_str(&format!("Bearer {token}"))
                .map_err(|_| PodClientError::BadToken)?;
            value.set_sensitive(true);
            headers.insert(reqwest::header::AUTHORIZATION, value);
        }
        let builder = reqwest::Client::builder()
            .default_headers(headers)
            .connect_timeout(CONNECT_TIMEOUT)
            .pool_idle_timeout(Duration::from_secs(30));
        let (builder, base) = match &addr {
            ConsumerAddr::Tcp(host_port) => (builder, format!("http://{host_port}")),
            #[cfg(unix)]
            ConsumerAddr::Unix(path) => (
                builder.unix_socket(path.as_path()),
                "http://consumer-pod".to_owned(),
            ),
            #[cfg(not(unix))]
            ConsumerAddr::Unix(_) => return Err(PodClientError::UnixUnsupported(addr)),
        };
        let http = builder.build().map_err(|source| PodClientError::Build {
            addr: addr.clone(),
            source,
        })?;
        Ok(Self {
            http,
            base,
            addr,
            reachable: Arc::new(AtomicBool::new(true)),
        })
    }

    fn unreachable(&self, err: &reqwest::Error) -> ApiError {
        if self.reachable.swap(false, Ordering::Relaxed) {
            tracing::warn!(pod = %self.addr, error = %err, "consumer pod unreachable; answering 503 until it is back");
        } else {
            tracing::debug!(pod = %self.addr, error = %err, "consumer pod still unreachable");
        }
        ApiError::unavailable(
            "the event source is not reachable now; retry later",
            RETRY_AFTER_SECS,
        )
    }

    fn reached(&self) {
        if !self.reachable.swap(true, Ordering::Relaxed) {
            tracing::info!(pod = %self.addr, "consumer pod reachable again");
        }
    }

    /// Events for a validated request.
    pub async fn fetch(&self, req: &FetchRequest) -> Result<EventsBody, ApiError> {
        let response = self.fetch_response(req).await?;
        if response.status().is_success() {
            let content_type = response
                .headers()
                .get(reqwest::header::CONTENT_TYPE)
                .and_then(|v| axum::http::HeaderValue::from_bytes(v.as_bytes()).ok())
                .unwrap_or_else(|| axum::http::HeaderValue::from_static("application/json"));
            let body = http::Response::<reqwest::Body>::from(response).into_body();
            return Ok(EventsBody {
                content_type,
                body: axum::body::Body::new(body),
            });
        }
        Err(self.error_from(response).await)
    }

    /// A whole answer of the pod to `req` (the stream reads each before it sends it on).
    pub async fn fetch_bytes(&self, req: &FetchRequest) -> Result<bytes::Bytes, ApiError> {
        let response = self.fetch_response(req).await?;
        if response.status().is_success() {
            return response.bytes().await.map_err(|e| self.unreachable(&e));
        }
        Err(self.error_from(response).await)
    }

    /// The pod's answer to `req`, whatever its status.
    async fn fetch_response(&self, req: &FetchRequest) -> Result<reqwest::Response, ApiError> {
        let timeout = Duration::from_millis(u64::from(req.wait_ms)) + ANSWER_SLACK;
        let response = self
            .http
            .post(format!("{}{FETCH_PATH}", self.base))
            .timeout(timeout)
            .json(req)
            .send()
            .await
            .map_err(|e| self.unreachable(&e))?;
        if response.status() != StatusCode::UNAUTHORIZED {
            self.reached();
        }
        Ok(response)
    }

    /// Counts a request against a shared rate-limit budget; `None` when the pod cannot be
    /// asked now (the caller then counts locally).
    pub async fn rate(&self, check: &RateCheck) -> Option<RateDecision> {
        let answer = self
            .http
            .post(format!("{}{RATE_PATH}", self.base))
            .timeout(CONNECT_TIMEOUT)
            .json(check)
            .send()
            .await
            .and_then(reqwest::Response::error_for_status);
        match answer {
            Ok(response) => response.json().await.ok(),
            Err(err) => {
                tracing::debug!(pod = %self.addr, error = %err, "rate check counted locally");
                None
            }
        }
    }

    /// The pod's own view of its health.
    pub async fn status(&self) -> Result<PodStatus, ApiError> {
        let response = self.get(STATUS_PATH).await?;
        response.json().await.map_err(|e| self.unreachable(&e))
    }

    /// The pod's metrics, Prometheus text.
    pub async fn metrics(&self) -> Result<String, ApiError> {
        let response = self.get(METRICS_PATH).await?;
        response.text().await.map_err(|e| self.unreachable(&e))
    }

    /// A short `GET` of an internal route; error answers become [`ApiError`]s.
    async fn get(&self, path: &str) -> Result<reqwest::Response, ApiError> {
        let response = self
            .http
            .get(format!("{}{path}", self.base))
            .timeout(CONNECT_TIMEOUT * 2)
            .send()
            .await
            .map_err(|e| self.unreachable(&e))?;
        if response.status() != StatusCode::UNAUTHORIZED {
            self.reached();
        }
        if !response.status().is_success() {
            return Err(self.error_from(response).await);
        }
        Ok(response)
    }

    /// Turns a pod error answer into the same error for the client.
    async fn error_from(&self, response: reqwest::Response) -> ApiError {
        let status = response.status();
        if status == StatusCode::UNAUTHORIZED {
            // The pod refused this service, not the caller: never a 401 to the client,
            // whose key is fine.
            if self.reachable.swap(false, Ordering::Relaxed) {
                tracing::error!(pod = %self.addr, "the consumer pod refused this service: set the same INTERNAL_TOKEN on both; answering 503 until then");
            }
            return ApiError::unavailable(
                "the event source is not reachable now; retry later",
                RETRY_AFTER_SECS,
            );
        }
        let retry_after = shared::api::retry_after(response.headers()).map(|d| d.as_secs());
        match response.json::<ErrorBody>().await {
            Ok(body) => ApiError {
                retry_after_secs: retry_after,
                ..ApiError::from(body)
            },
            Err(_) if status == StatusCode::SERVICE_UNAVAILABLE => ApiError::unavailable(
                "the event source is not reachable now; retry later",
                RETRY_AFTER_SECS,
            ),
            Err(err) => {
                tracing::error!(pod = %self.addr, %status, error = %err, "consumer pod answered without an error body");
                ApiError::new(shared::ErrorCode::Internal, "internal error")
            }
        }
    }
}
