//! `GET /events/stream`: the events as they come, on one long answer. A loop long-polls
//! the consumer pod from the cursor and writes each batch as soon as the pod has it: as
//! Server-Sent Events (`event: batch`, `id:` the cursor after it, `data:` the `/events`
//! JSON), or, with `Accept: application/vnd.kafka-replicator.stream`, as binary frames
//! ([`shared::wire::stream`]), zstd-compressed and flushed frame by frame when the caller
//! accepts zstd. A keep-alive goes out after 15 s of quiet; the answer ends after
//! `STREAM_MAX_SECS`, so connections recycle through load balancers.

use std::io::Write;
use std::time::Duration;

use axum::body::{Body, Bytes};
use axum::extract::{Extension, Query, State, rejection::QueryRejection};
use axum::http::{HeaderMap, HeaderValue, header};
use axum::response::{IntoResponse, Response};
use shared::api::{EventsQuery, FetchRequest};
use shared::wire::BatchView;
use shared::wire::stream::{KEEP_ALIVE, STREAM_CONTENT_TYPE, frame_header};
use shared::{ApiError, ErrorCode};
use tokio::time::Instant;

use crate::AppState;
use crate::guard::Authenticated;
use crate::pod::PodClient;
use crate::routes::{MaxBytes, header_items};

/// The longest quiet on a stream: a keep-alive goes out at least this often.
pub const KEEP_ALIVE_EVERY: Duration = Duration::from_secs(15);
/// How long one long-poll of the pod waits, a little under [`KEEP_ALIVE_EVERY`].
const POLL_WAIT: Duration = Duration::from_secs(14);
/// The SSE keep-alive: a comment line.
const SSE_KEEP_ALIVE: &[u8] = b": keep-alive\n\n";
/// zstd level of a compressed binary stream: the fastest, as for `/events`.
const ZSTD_LEVEL: i32 = 1;

/// Set by a runtime that buffers whole answers (AWS Lambda behind API Gateway): a stream
/// is refused with [`ErrorCode::StreamingUnsupported`], and the client long-polls.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct NoStreaming;

/// Bounds a runtime puts on one stream (a Lambda function URL: the invocation's deadline
/// and its response size limit).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StreamBounds {
    pub duration: Duration,
    pub bytes: u64,
}

/// One Server-Sent Event of the stream (keep-alives are comments, not events).
#[derive(Debug, utoipa::ToSchema)]
pub struct StreamEvent {
    /// Always `batch`.
    #[schema(example = "batch")]
    pub event: String,
    /// The cursor after this batch: what `Last-Event-ID` resumes from.
    pub id: String,
    /// The batch: the same JSON as a `/events` answer (`events`, `next_cursor`, `gaps`).
    pub data: String,
}

/// `GET /events/stream`.
#[utoipa::path(
    get,
    path = "/events/stream",
    tag = "events",
    summary = "Events as they come (Server-Sent Events)",
    description = "Keeps the answer open and sends each batch as soon as it is there: one Server-Sent Event per batch, `event: batch`, `id:` the cursor after it, `data:` the same JSON as a `/events` answer. A `: keep-alive` comment follows 15 s of quiet; the stream ends after `STREAM_MAX_SECS` (default 300). Reconnect with `Last-Event-ID` (browsers do it by themselves) to carry on exactly after the last batch received. With `Accept: application/vnd.kafka-replicator.stream` the batches come as binary frames (a u32 length, then the binary batch). `curl -N -H 'x-api-key: KEY' 'https://HOST/api/v1/events/stream?cursor=latest'` follows it in a terminal. The AWS Lambda deployment behind API Gateway cannot stream and answers `501 streaming_unsupported`; use `/events` there.",
    params(
        ("cursor" = Option<String>, Query, description = "Where to start, as for `/events`: a cursor, `earliest` or `latest`. Absent: the newest buffered events.", example = "latest"),
        ("Last-Event-ID" = Option<String>, Header, description = "The `id` of the last batch received: the stream carries on exactly after it (it wins over `cursor`).", example = "AhZJXzI1SjAwVUNMcjcybzJaUlh4WHN3AQtkZW1vLWV2ZW50cwMAzw0BixMC-Aq-_xCh"),
        ("limit" = Option<u32>, Query, minimum = 1, maximum = 10000, description = "Most events per batch (default 500).", example = 500),
        ("max_bytes" = Option<u32>, Query, minimum = 1024, maximum = 16777216, description = "Most bytes of events per batch, as for `/events`.", example = 4194304),
        ("topic" = Option<String>, Query, description = "Only these topics, as for `/events`.", example = "orders"),
    ),
    responses(
        (status = 200, description = "The stream: `text/event-stream`, one event per batch, or binary frames with `Accept: application/vnd.kafka-replicator.stream`", content_type = "text/event-stream", body = StreamEvent,
            example = json!({"event": "batch", "id": "AhZJXzI1SjAwVUNMcjcybzJaUlh4WHN3AQtkZW1vLWV2ZW50cwMAzw0BixMC-Aq-_xCh", "data": "{\"events\":[],\"next_cursor\":\"AhZJXzI1SjAwVUNMcjcybzJaUlh4WHN3AQtkZW1vLWV2ZW50cwMAzw0BixMC-Aq-_xCh\",\"gaps\":[]}"})),
        (status = 400, description = "A bad parameter, cursor or Last-Event-ID (codes as for `/events`)", body = shared::error::ErrorBody),
        (status = 401, description = "Missing or wrong API key", body = shared::error::ErrorBody),
        (status = 403, description = "A scoped key named a topic it may not read, in `topic` or in the cursor: `forbidden_topic`", body = shared::error::ErrorBody),
        (status = 429, description = "Over the rate limit; retry after `Retry-After` seconds", body = shared::error::ErrorBody),
        (status = 501, description = "This deployment cannot stream (AWS Lambda behind API Gateway): `streaming_unsupported`; use `/events`", body = shared::error::ErrorBody,
            example = json!({"error": {"code": "streaming_unsupported", "message": "this deployment cannot stream answers; long-poll GET /events instead"}})),
        (status = 503, description = "The consumer pod or source Kafka cannot answer now; retry after `Retry-After` seconds", body = shared::error::ErrorBody),
    ),
    security(("api_key" = []), ("bearer" = []))
)]
pub async fn events_stream(
    State(state): State<AppState>,
    caller: Option<Extension<Authenticated>>,
    no_streaming: Option<Extension<NoStreaming>>,
    bounds: Option<Extension<StreamBounds>>,
    max_bytes: Option<Extension<MaxBytes>>,
    headers: HeaderMap,
    query: Result<Query<EventsQuery>, QueryRejection>,
) -> Result<Response, ApiError> {
    if no_streaming.is_some() {
        return Err(ApiError::new(
            ErrorCode::StreamingUnsupported,
            "this deployment cannot stream answers; long-poll GET /events instead",
        ));
    }
    let mut query = crate::routes::events_query(query)?;
    if let Some(last) = headers.get("last-event-id") {
        let last = last.to_str().map_err(|_| {
            ApiError::new(ErrorCode::InvalidCursor, "Last-Event-ID is not a cursor")
        })?;
        query.cursor = Some(last.to_owned());
    }
    // The server decides how long each poll waits.
    query.wait_ms = None;
    let mut request = query.validate()?;
    if let Some(Extension(Authenticated(caller))) = caller {
        caller.scope(&mut request)?;
    }
    request.binary = accepts_stream(&headers);
    if let Some(Extension(MaxBytes(max))) = max_bytes {
        request.max_bytes = request.max_bytes.min(max);
    }
    let (mut duration, mut byte_budget) = (state.stream_max, u64::MAX);
    if let Some(Extension(bounds)) = bounds {
        duration = duration.min(bounds.duration);
        byte_budget = bounds.bytes;
    }
    let zstd = request.binary && accepts_zstd(&headers);
    let mut stream = Streamer {
        pod: state.pod.clone(),
        last_id: request.cursor.clone(),
        request,
        until: Instant::now() + duration,
        bytes_left: byte_budget,
        zstd: zstd
            .then(|| zstd::stream::write::Encoder::new(Vec::new(), ZSTD_LEVEL).ok())
            .flatten(),
        first: None,
        done: false,
        closing: state.closing.clone(),
    };
    // The first answer at once, so a bad cursor, an unknown topic or a pod that is down is
    // an error status, not a stream that ends.
    stream.first = Some(stream.pod.fetch_bytes(&stream.request).await?);
    let content_type = if stream.request.binary {
        STREAM_CONTENT_TYPE
    } else {
        "text/event-stream"
    };
    let compressed = stream.zstd.is_some();
    let body = Body::from_stream(futures::stream::unfold(stream, |mut s| async move {
        s.next_chunk()
            .await
            .map(|chunk| (Ok::<_, std::convert::Infallible>(chunk), s))
    }));
    let mut response = (
        [
            (header::CONTENT_TYPE, HeaderValue::from_static(content_type)),
            (header::CACHE_CONTROL, HeaderValue::from_static("no-cache")),
            (
                header::VARY,
                HeaderValue::from_static("accept, accept-encoding"),
            ),
            // Proxies that buffer (nginx) pass it on as it comes.
            (
                header::HeaderName::from_static("x-accel-buffering"),
                HeaderValue::from_static("no"),
            ),
        ],
        body,
    )
        .into_response();
    if compressed {
        response
            .headers_mut()
            .insert(header::CONTENT_ENCODING, HeaderValue::from_static("zstd"));
    }
    Ok(response)
}

/// The loop behind one stream.
struct Streamer {
    pod: PodClient,
    request: FetchRequest,
    /// The `id` of the last batch sent (or the cursor asked for).
    last_id: Option<String>,
    until: Instant,
    bytes_left: u64,
    /// The zstd stream the frames go through, flushed after each.
    zstd: Option<zstd::stream::write::Encoder<'static, Vec<u8>>>,
    /// The answer fetched before the stream began.
    first: Option<Bytes>,
    done: bool,
    /// The server is stopping: the stream ends at once.
    closing: tokio_util::sync::CancellationToken,
}

impl Streamer {
    /// The next bytes of the answer; `None` once it ends.
    async fn next_chunk(&mut self) -> Option<Bytes> {
        if self.done {
            return None;
        }
        let left = self.until.saturating_duration_since(Instant::now());
        if left.is_zero() || self.bytes_left == 0 || self.closing.is_cancelled() {
            return self.end();
        }
        let answer = match self.first.take() {
            Some(answer) => Ok(answer),
            None => {
                self.request.wait_ms = u32::try_from(left.min(POLL_WAIT).as_millis()).unwrap_or(0);
                let closing = self.closing.clone();
                let fetched = tokio::select! {
                    answer = self.pod.fetch_bytes(&self.request) => Some(answer),
                    () = closing.cancelled() => None,
                };
                let Some(answer) = fetched else {
                    tracing::debug!("stream ends: the server is stopping");
                    return self.end();
                };
                answer
            }
        };
        // The pod failed or went away: the stream ends here, and the client comes back
        // from the last batch it has (its answer to the new request says whether the pod
        // is back).
        let answer = match answer {
            Ok(answer) => answer,
            Err(err) => {
                tracing::debug!(error = %err, "stream ends: the pod did not answer");
                return self.end();
            }
        };
        let Some((events, next)) = self.read(&answer) else {
            tracing::warn!("stream ends: the pod's answer could not be read");
            return self.end();
        };
        let moved = self.last_id.as_deref() != Some(next.as_str());
        let chunk = if events > 0 || moved {
            self.request.cursor = Some(next.clone());
            self.last_id = Some(next.clone());
            self.batch(&answer, &next)
        } else if self.request.binary {
            KEEP_ALIVE.to_vec()
        } else {
            SSE_KEEP_ALIVE.to_vec()
        };
        self.bytes_left = self.bytes_left.saturating_sub(chunk.len() as u64);
        Some(self.encode(&chunk))
    }

    /// The events in the pod's `answer` and the cursor after them.
    fn read(&self, answer: &Bytes) -> Option<(usize, String)> {
        if self.request.binary {
            let view = BatchView::parse(answer.clone()).ok()?;
            return Some((view.len(), view.next_cursor().to_owned()));
        }
        #[derive(serde::Deserialize)]
        struct Shape {
            events: Vec<serde::de::IgnoredAny>,
            next_cursor: String,
        }
        let shape: Shape = serde_json::from_slice(answer).ok()?;
        Some((shape.events.len(), shape.next_cursor))
    }

    /// One batch as the stream carries it.
    fn batch(&self, answer: &[u8], next: &str) -> Vec<u8> {
        if self.request.binary {
            let Ok(header) = frame_header(answer) else {
                return KEEP_ALIVE.to_vec();
            };
            let mut frame = Vec::with_capacity(4 + answer.len());
            frame.extend_from_slice(&header);
            frame.extend_from_slice(answer);
            return frame;
        }
        let mut event = Vec::with_capacity(answer.len() + next.len() + 32);
        event.extend_from_slice(b"event: batch\nid: ");
        event.extend_from_slice(next.as_bytes());
        event.push(b'\n');
        // One data line per line of the JSON (it has none: string newlines are escaped).
        for line in answer.split(|&b| b == b'\n') {
            event.extend_from_slice(b"data: ");
            event.extend_from_slice(line);
            event.push(b'\n');
        }
        event.push(b'\n');
        event
    }

    /// `chunk` through the zstd stream (flushed, so the client can read it now), or as is.
    fn encode(&mut self, chunk: &[u8]) -> Bytes {
        let Some(encoder) = self.zstd.as_mut() else {
            return Bytes::copy_from_slice(chunk);
        };
        if encoder
            .write_all(chunk)
            .and_then(|()| encoder.flush())
            .is_err()
        {
            self.done = true;
            return Bytes::new();
        }
        Bytes::from(std::mem::take(encoder.get_mut()))
    }

    /// The end of the answer: the zstd stream's epilogue, if any.
    fn end(&mut self) -> Option<Bytes> {
        self.done = true;
        let encoder = self.zstd.take()?;
        encoder.finish().ok().map(Bytes::from)
    }
}

/// Whether the caller asked for binary frames.
fn accepts_stream(headers: &HeaderMap) -> bool {
    header_items(headers, header::ACCEPT).any(|item| {
        item.split(';')
            .next()
            .is_some_and(|media| media.trim().eq_ignore_ascii_case(STREAM_CONTENT_TYPE))
    })
}

/// Whether the caller takes zstd (`Accept-Encoding`, not with `q=0`).
fn accepts_zstd(headers: &HeaderMap) -> bool {
    header_items(headers, header::ACCEPT_ENCODING).any(|item| {
        let mut parts = item.split(';').map(str::trim);
        parts.next().is_some_and(|c| c.eq_ignore_ascii_case("zstd"))
            && !parts.any(|p| p.replace(' ', "") == "q=0")
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(pairs: &[(&'static str, &'static str)]) -> HeaderMap {
        let mut map = HeaderMap::new();
        for (k, v) in pairs {
            map.append(*k, HeaderValue::from_static(v));
        }
        map
    }

    #[test]
    fn binary_frames_and_zstd_are_what_the_caller_asks_for() {
        assert!(accepts_stream(&headers(&[(
            "accept",
            "application/vnd.kafka-replicator.stream"
        )])));
        assert!(!accepts_stream(&headers(&[(
            "accept",
            "text/event-stream"
        )])));
        assert!(accepts_zstd(&headers(&[("accept-encoding", "gzip, zstd")])));
        assert!(!accepts_zstd(&headers(&[(
            "accept-encoding",
            "zstd;q=0, gzip"
        )])));
        assert!(!accepts_zstd(&headers(&[("accept-encoding", "gzip")])));
    }
}
