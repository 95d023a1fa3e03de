//! [`EventsApi`]: `GET {SERVER_URL}{API_PREFIX}/events` with the key and the cursor, paced
//! by the key's rate-limit budget ([`Pacer`]). Sorts failures into
//! [`FetchError::Transient`] (retry: network, `5xx`), [`FetchError::RateLimited`] (`429`:
//! wait as told) and [`FetchError::Rejected`] (the server refused the request itself: key,
//! cursor, a redirect). Redirects are never followed, so the key goes only to `SERVER_URL`.

use std::time::Duration;

use reqwest::StatusCode;
use shared::api::EventsResponse;
use shared::error::ErrorBody;
use shared::wire::BatchView;
use shared::{Cursor, StartFrom};

use crate::pace::Pacer;

/// Why a poll got no events.
#[derive(Debug, thiserror::Error)]
pub enum FetchError {
    /// Worth retrying as is: the server or the network is down or busy.
    #[error("{message}")]
    Transient {
        message: String,
        retry_after: Option<Duration>,
    },
    /// Over the key's rate limit (`429`): something else spent the budget too.
    #[error("{message}")]
    RateLimited {
        message: String,
        retry_after: Duration,
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
    pacer: Pacer,
}

/// `max_bytes` of a request while the key's budget paces the client.
pub const PACED_MAX_BYTES: u32 = 8 * 1024 * 1024;

/// How much one request asks for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BatchSize {
    /// `limit`: most events.
    pub events: u32,
    /// `max_bytes`: most bytes of events.
    pub bytes: u32,
}

impl BatchSize {
    /// What a client asks for first: `events` and the server's default bytes.
    pub fn new(events: u32) -> Self {
        Self {
            events: events.clamp(1, shared::api::MAX_LIMIT),
            bytes: shared::api::DEFAULT_MAX_BYTES,
        }
    }

    /// What a request asks for while the key's budget holds requests back: the most
    /// events the API allows, in up to 8 MiB. Fewer requests for the same events, while the
    /// two answers a client holds at once stay within a few tens of MB; at 20 requests a
    /// second that is still 160 MB/s, more than any link to a laptop carries.
    pub fn paced() -> Self {
        Self {
            events: shared::api::MAX_LIMIT,
            bytes: PACED_MAX_BYTES,
        }
    }

    /// The smallest request: one event, for where a log starts or ends.
    pub fn probe() -> Self {
        Self {
            events: 1,
            bytes: shared::api::MIN_MAX_BYTES,
        }
    }

    /// Whether an answer of `events` in a body of `body_bytes` filled what was asked: the
    /// source had more.
    pub fn filled_by(self, events: usize, body_bytes: usize) -> bool {
        events >= self.events as usize || body_bytes.saturating_mul(4) >= self.bytes as usize * 3
    }
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
            // The key goes to SERVER_URL only: a redirect is reported, never followed.
            .redirect(reqwest::redirect::Policy::none())
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
            pacer: Pacer::new(),
        })
    }

    /// Whether requests are held back for the key's budget now: the client should ask for
    /// more per request.
    pub fn is_paced(&self) -> bool {
        self.pacer.is_pacing()
    }

    /// The server's log end of every partition: where a reader starting at `latest` stands
    /// (one request, answered at once).
    pub async fn log_end(&self) -> Result<Cursor, FetchError> {
        let batch = self
            .fetch(&StartFrom::Latest, BatchSize::probe(), Duration::ZERO)
            .await?;
        decode_next(&batch)
    }

    /// The oldest offset the source retains of every partition: where a reader starting at
    /// `earliest` stands (one request, answered at once).
    pub async fn log_start(&self) -> Result<Cursor, FetchError> {
        let batch = self
            .fetch(&StartFrom::Earliest, BatchSize::probe(), Duration::ZERO)
            .await?;
        let mut start = decode_next(&batch)?;
        // The one event the answer holds is the first of its partition.
        for record in batch.records() {
            start.set(record.topic, record.partition, record.offset);
        }
        Ok(start)
    }

    /// One poll: events from `start`, long-polling up to `wait`, once the key's budget
    /// allows.
    pub async fn fetch(
        &self,
        start: &StartFrom,
        size: BatchSize,
        wait: Duration,
    ) -> Result<BatchView, FetchError> {
        let wait_ms = wait
            .as_millis()
            .min(u128::from(shared::api::MAX_WAIT_MS))
            .to_string();
        let mut query = batch_query(start, size);
        query.push(("wait_ms", wait_ms));
        let _admitted = self.pacer.admit().await;
        let response = self
            .http
            .get(&self.url)
            .header("x-api-key", &self.api_key)
            .header(reqwest::header::ACCEPT, ACCEPT)
            .query(&query)
            .timeout(wait + Duration::from_secs(30))
            .send()
            .await
            .map_err(|e| no_answer(&self.url, &e))?;
        self.pacer.observe(response.headers());
        if response.status().is_success() {
            return read_batch(response).await;
        }
        Err(self.refusal(response).await)
    }

    /// Opens `GET /events/stream` from `start`, each batch holding at most `size`, once
    /// the key's budget allows. `Ok(Err(why))`: this server, or a gateway before it, cannot
    /// stream.
    pub async fn open_stream(
        &self,
        start: &StartFrom,
        size: BatchSize,
    ) -> Result<Result<crate::feed::EventStream, String>, FetchError> {
        let query = batch_query(start, size);
        let url = format!("{}/stream", self.url);
        let _admitted = self.pacer.admit().await;
        let response = self
            .http
            .get(&url)
            .header("x-api-key", &self.api_key)
            .header(
                reqwest::header::ACCEPT,
                shared::wire::stream::STREAM_CONTENT_TYPE,
            )
            .query(&query)
            .send()
            .await
            .map_err(|e| no_answer(&url, &e))?;
        self.pacer.observe(response.headers());
        let status = response.status();
        if status.is_success() {
            let streams = response
                .headers()
                .get(reqwest::header::CONTENT_TYPE)
                .and_then(|v| v.to_str().ok())
                .is_some_and(|v| v.starts_with(shared::wire::stream::STREAM_CONTENT_TYPE));
            if !streams {
                return Ok(Err(format!(
                    "GET {url} answered with something other than a stream"
                )));
            }
            return Ok(Ok(crate::feed::EventStream::new(response, size)));
        }
        // An earlier server has no such route; API Gateway before a Lambda says 501.
        if matches!(status.as_u16(), 404 | 405 | 501) {
            let why = match self.refusal(response).await {
                FetchError::Rejected { code, message, .. } => format!("{code}: {message}"),
                other => other.to_string(),
            };
            return Ok(Err(format!(
                "GET {url} answered {}: {why}",
                status.as_u16()
            )));
        }
        Err(self.refusal(response).await)
    }

    /// What a failed answer means for the client.
    async fn refusal(&self, response: reqwest::Response) -> FetchError {
        let status = response.status();
        if status.is_redirection() {
            let to = response
                .headers()
                .get(reqwest::header::LOCATION)
                .and_then(|v| v.to_str().ok())
                .unwrap_or("another address")
                .to_owned();
            return FetchError::Rejected {
                status: status.as_u16(),
                code: "redirect".into(),
                message: format!(
                    "the server sends the client to {to}; set SERVER_URL to the address that answers (the key is never sent on to another address)"
                ),
            };
        }
        let retry_after = shared::api::retry_after(response.headers());
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
        if status == StatusCode::TOO_MANY_REQUESTS {
            let retry_after = retry_after.unwrap_or(Duration::from_secs(1));
            self.pacer.refused(retry_after);
            return FetchError::RateLimited {
                message: format!("over the API key's rate limit: {message}"),
                retry_after,
            };
        }
        if status == StatusCode::REQUEST_TIMEOUT || status.is_server_error() {
            return FetchError::Transient {
                message: format!("server busy or unavailable ({status}): {message}"),
                retry_after,
            };
        }
        FetchError::Rejected {
            status: status.as_u16(),
            code,
            message,
        }
    }
}

/// The cursor after `batch`.
fn decode_next(batch: &BatchView) -> Result<Cursor, FetchError> {
    Cursor::decode(batch.next_cursor()).map_err(|e| FetchError::Transient {
        message: format!("the server sent a cursor that cannot be decoded: {e}"),
        retry_after: None,
    })
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
        .map_err(|e| unreadable(shared::error::error_chain(&e)))?;
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

/// The query of a batch from `start` of at most `size`, as `/events` and `/events/stream`
/// both take it.
fn batch_query(start: &StartFrom, size: BatchSize) -> Vec<(&'static str, String)> {
    let mut query = vec![
        ("limit", size.events.to_string()),
        ("max_bytes", size.bytes.to_string()),
    ];
    if let Some(cursor) = start.to_param() {
        query.push(("cursor", cursor));
    }
    query
}

/// A request to `url` that got no answer: worth retrying.
fn no_answer(url: &str, err: &reqwest::Error) -> FetchError {
    FetchError::Transient {
        message: format!("cannot reach {url}: {}", shared::error::error_chain(err)),
        retry_after: None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::time::Instant;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    /// A server that answers every request with `answer` and counts the requests.
    async fn server(answer: String) -> (String, Arc<AtomicUsize>) {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let url = format!("http://{}", listener.local_addr().expect("addr"));
        let count = Arc::new(AtomicUsize::new(0));
        let seen = Arc::clone(&count);
        tokio::spawn(async move {
            while let Ok((mut conn, _)) = listener.accept().await {
                seen.fetch_add(1, Ordering::SeqCst);
                let answer = answer.clone();
                tokio::spawn(async move {
                    let mut buf = vec![0u8; 8192];
                    let _ = conn.read(&mut buf).await;
                    let _ = conn.write_all(answer.as_bytes()).await;
                });
            }
        });
        (url, count)
    }

    #[tokio::test]
    async fn a_redirect_is_reported_and_never_followed_with_the_key() {
        let (elsewhere, reached) =
            server("HTTP/1.1 200 OK\r\ncontent-length: 0\r\n\r\n".into()).await;
        let (url, _) = server(format!(
            "HTTP/1.1 302 Found\r\nlocation: {elsewhere}/api/v1/events\r\ncontent-length: 0\r\n\r\n"
        ))
        .await;
        let api = EventsApi::new(&url, "/api/v1", "secret-key-0123456789", false).expect("client");
        let err = api
            .fetch(&StartFrom::Earliest, BatchSize::new(10), Duration::ZERO)
            .await
            .expect_err("a redirect is no answer");
        match err {
            FetchError::Rejected {
                status,
                code,
                message,
            } => {
                assert_eq!((status, code.as_str()), (302, "redirect"));
                assert!(message.contains(&elsewhere), "{message}");
            }
            other => panic!("expected a refusal, got {other:?}"),
        }
        assert_eq!(
            reached.load(Ordering::SeqCst),
            0,
            "the key never went elsewhere"
        );
    }

    #[tokio::test]
    async fn a_429_holds_every_request_back_for_its_retry_after() {
        let (url, asked) = server(
            "HTTP/1.1 429 Too Many Requests\r\nretry-after: 2\r\nratelimit-limit: 10\r\nratelimit-remaining: 0\r\nratelimit-reset: 2\r\ncontent-type: application/json\r\ncontent-length: 50\r\n\r\n{\"error\":{\"code\":\"rate_limited\",\"message\":\"over\"}}"
                .into(),
        )
        .await;
        let api = EventsApi::new(&url, "/api/v1", "secret-key-0123456789", false).expect("client");
        let err = api
            .fetch(&StartFrom::Earliest, BatchSize::new(10), Duration::ZERO)
            .await
            .expect_err("refused");
        assert!(
            matches!(err, FetchError::RateLimited { retry_after, .. } if retry_after == Duration::from_secs(2)),
            "{err:?}"
        );
        assert!(api.is_paced(), "the next request waits");
        let started = Instant::now();
        let _ = api
            .fetch(&StartFrom::Earliest, BatchSize::new(10), Duration::ZERO)
            .await;
        assert!(
            started.elapsed() >= Duration::from_millis(1500),
            "{:?}",
            started.elapsed()
        );
        assert_eq!(asked.load(Ordering::SeqCst), 2);
    }

    #[test]
    fn batches_know_their_paced_size_and_when_they_were_filled() {
        let base = BatchSize::new(1000);
        assert_eq!(base.bytes, shared::api::DEFAULT_MAX_BYTES);
        let paced = BatchSize::paced();
        assert_eq!((paced.events, paced.bytes), (10_000, 8 * 1024 * 1024));
        assert!(paced.bytes <= shared::api::MAX_MAX_BYTES);
        assert!(base.filled_by(1000, 10));
        assert!(base.filled_by(3, 3_200_000), "bytes filled it");
        assert!(!base.filled_by(999, 1_000_000));
    }
}
