//! [`EventsApi`]: `GET {SERVER_URL}{API_PREFIX}/events` with the key and the cursor.
//! Sorts failures into [`FetchError::Transient`] (retry: network, `429`, `5xx`) and
//! [`FetchError::Rejected`] (the server refused the request itself: key, cursor).

use std::time::Duration;

use reqwest::StatusCode;
use shared::StartFrom;
use shared::api::EventsResponse;
use shared::error::ErrorBody;
use shared::wire::BatchView;

/// Why a poll got no events.
#[derive(Debug, thiserror::Error)]
pub enum FetchError {
    /// Worth retrying as is: the server or the network is down or busy.
    #[error("{message}")]
    Transient {
        message: String,
        retry_after: Option<Duration>,
    },
    /// The server refused the request (`4xx`); retrying unchanged will not help until the
    /// configuration or the server changes.
    #[error("server refused the request ({status}): {code}: {message}")]
    Rejected {
        status: u16,
        code: String,
        message: String,
    },
}

/// The public API, seen from the client.
#[derive(Debug, Clone)]
pub struct EventsApi {
    http: reqwest::Client,
    url: String,
    api_key: String,
}

impl EventsApi {
    /// `compress`: ask for zstd or gzip answers.
    pub fn new(
        server_url: &str,
        api_prefix: &str,
        api_key: &str,
        compress: bool,
    ) -> Result<Self, reqwest::Error> {
        let http = reqwest::Client::builder()
            .connect_timeout(Duration::from_secs(10))
            .zstd(compress)
            .gzip(compress)
            .user_agent(concat!(
                "kafka-replicator-client/",
                env!("CARGO_PKG_VERSION")
            ))
            .build()?;
        let url = format!("{}{}/events", server_url.trim_end_matches('/'), api_prefix);
        Ok(Self {
            http,
            url,
            api_key: api_key.to_owned(),
        })
    }

    /// One poll: events from `start`, long-polling up to `wait`.
    pub async fn fetch(
        &self,
        start: &StartFrom,
        limit: u32,
        wait: Duration,
    ) -> Result<BatchView, FetchError> {
        let wait_ms = wait
            .as_millis()
            .min(u128::from(shared::api::MAX_WAIT_MS))
            .to_string();
        let limit = limit.to_string();
        let mut query: Vec<(&str, String)> = vec![("limit", limit), ("wait_ms", wait_ms)];
        if let Some(cursor) = start.to_param() {
            query.push(("cursor", cursor));
        }
        let response = self
            .http
            .get(&self.url)
            .header("x-api-key", &self.api_key)
            .header(reqwest::header::ACCEPT, ACCEPT)
            .query(&query)
            .timeout(wait + Duration::from_secs(30))
            .send()
            .await
            .map_err(|e| FetchError::Transient {
                message: format!("cannot reach {}: {}", self.url, root_cause(&e)),
                retry_after: None,
            })?;
        let status = response.status();
        if status.is_success() {
            return read_batch(response).await;
        }
        let retry_after = response
            .headers()
            .get(reqwest::header::RETRY_AFTER)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.trim().parse::<u64>().ok())
            .map(Duration::from_secs);
        let body = response.json::<ErrorBody>().await.ok();
        let (code, message) = body.map_or_else(
            || {
                (
                    "unknown".to_owned(),
                    status.canonical_reason().unwrap_or("error").to_owned(),
                )
            },
            |b| (b.error.code.as_str().to_owned(), b.error.message),
        );
        if status == StatusCode::TOO_MANY_REQUESTS
            || status == StatusCode::REQUEST_TIMEOUT
            || status.is_server_error()
        {
            return Err(FetchError::Transient {
                message: format!("server busy or unavailable ({status}): {message}"),
                retry_after,
            });
        }
        Err(FetchError::Rejected {
            status: status.as_u16(),
            code,
            message,
        })
    }
}

/// Binary batches (`KRB2`) first; JSON from a server that does not offer them.
const ACCEPT: &str = "application/vnd.kafka-replicator.batch; v=2, application/json;q=0.5";

/// Reads a `200` answer in whichever form the server chose.
async fn read_batch(response: reqwest::Response) -> Result<BatchView, FetchError> {
    let unreadable = |why: String| FetchError::Transient {
        message: format!("answer cut off or unreadable: {why}"),
        retry_after: None,
    };
    let binary = response
        .headers()
        .get(reqwest::header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with(shared::wire::BATCH_CONTENT_TYPE));
    let body = response
        .bytes()
        .await
        .map_err(|e| unreadable(root_cause(&e)))?;
    if binary {
        return BatchView::parse(body).map_err(|e| unreadable(e.to_string()));
    }
    let answer: EventsResponse =
        serde_json::from_slice(&body).map_err(|e| unreadable(e.to_string()))?;
    let records: Vec<shared::Record> = answer
        .events
        .into_iter()
        .map(shared::Event::into_record)
        .collect::<Result<_, _>>()
        .map_err(|e| unreadable(e.to_string()))?;
    shared::wire::encode(records.iter(), &answer.next_cursor, &answer.gaps)
        .and_then(|body| BatchView::parse(body.into()))
        .map_err(|e| unreadable(e.to_string()))
}

/// The innermost error's text: the useful part of reqwest's layered errors.
fn root_cause(err: &(dyn std::error::Error + 'static)) -> String {
    let mut cause = err;
    while let Some(next) = cause.source() {
        cause = next;
    }
    cause.to_string()
}
