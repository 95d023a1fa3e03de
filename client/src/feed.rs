//! [`Feed`]: where the replicator's batches come from. Streaming (`STREAM=auto`, the
//! default): one `GET /events/stream` answer carries batch after batch in binary frames as
//! the server has them, and is opened again where the client stands when it ends or the
//! client rewinds. Polling (`STREAM=off`, or a server or gateway that cannot stream): one
//! long-poll per batch, the next one asked for while the last is written.

use std::future::Future;
use std::pin::Pin;
use std::time::Duration;

use shared::wire::BatchView;
use shared::wire::stream::{Frame, FrameReader};
use shared::{Cursor, StartFrom};

use crate::api::{BatchSize, EventsApi, FetchError};
use crate::config::StreamMode;

/// Longest a stream may stay silent: three keep-alive intervals.
const STREAM_SILENCE: Duration = Duration::from_secs(45);

/// A batch from the feed, with what it took.
#[derive(Debug)]
pub struct Fetched {
    pub answer: Result<BatchView, FetchError>,
    /// Whether the server could hold the request for the poll interval: an empty answer
    /// then came after it waited (polling only).
    pub long_polled: bool,
    /// What the request asked for.
    pub asked: BatchSize,
    /// Another batch is here already (the stream sent it meanwhile): more may go into the
    /// same transaction.
    pub more: bool,
}

/// The source of batches.
#[derive(Debug)]
pub struct Feed {
    api: EventsApi,
    mode: StreamMode,
    /// The stream being read and where it stands (the cursor after its last batch).
    stream: Option<(EventStream, StartFrom)>,
    /// The server cannot stream: long-polling instead.
    polling: bool,
    /// The next poll, asked for while the last batch is written, and where it starts.
    ahead: Option<(PendingFetch, StartFrom)>,
    interval: Duration,
}

impl Feed {
    pub fn new(api: EventsApi, mode: StreamMode, interval: Duration) -> Self {
        Self {
            api,
            polling: mode == StreamMode::Off,
            mode,
            stream: None,
            ahead: None,
            interval,
        }
    }

    /// The next batch after `from`, asking for `size`. `prompt` (a transaction is open or
    /// committing): a stream that has no batch here now answers at once with none, so the
    /// client commits and counts what it wrote instead of waiting for events that may be
    /// long to come.
    pub async fn next(&mut self, from: &StartFrom, size: BatchSize, prompt: bool) -> Fetched {
        loop {
            if self.polling {
                return self.poll(from, size).await;
            }
            if self.stream.as_ref().is_none_or(|(_, at)| at != from) {
                // Opened where the client stands: after a rewind, or once the last ended.
                self.stream = None;
                match self.api.open_stream(from, size).await {
                    Ok(Ok(stream)) => self.stream = Some((stream, from.clone())),
                    Ok(Err(why)) if self.mode == StreamMode::Auto => {
                        tracing::warn!(reason = %why, "the server cannot stream; long-polling instead");
                        self.polling = true;
                        continue;
                    }
                    Ok(Err(why)) => {
                        return Fetched {
                            answer: Err(FetchError::Rejected {
                                status: 501,
                                code: "streaming_unsupported".into(),
                                message: format!(
                                    "{why}; STREAM=on needs a server that streams (STREAM=auto falls back to long-polling)"
                                ),
                            }),
                            long_polled: false,
                            asked: size,
                            more: false,
                        };
                    }
                    Err(err) => {
                        return Fetched {
                            answer: Err(err),
                            long_polled: false,
                            asked: size,
                            more: false,
                        };
                    }
                }
            }
            let Some((stream, at)) = self.stream.as_mut() else {
                continue;
            };
            let asked = stream.asked;
            if prompt && !stream.ready().await {
                return Fetched {
                    answer: empty_at(at),
                    long_polled: false,
                    asked,
                    more: false,
                };
            }
            match stream.next().await {
                Ok(Some(batch)) => match Cursor::decode(batch.next_cursor()) {
                    Ok(next) => {
                        *at = StartFrom::Cursor(next);
                        let more = stream.ready().await;
                        return Fetched {
                            answer: Ok(batch),
                            long_polled: false,
                            asked,
                            more,
                        };
                    }
                    Err(err) => {
                        self.stream = None;
                        return Fetched {
                            answer: Err(FetchError::Transient {
                                message: format!(
                                    "the server sent a cursor that cannot be decoded: {err}"
                                ),
                                retry_after: None,
                            }),
                            long_polled: false,
                            asked,
                            more: false,
                        };
                    }
                },
                // The answer ended (STREAM_MAX_SECS): opened again from here.
                Ok(None) => self.stream = None,
                Err(err) => {
                    self.stream = None;
                    return Fetched {
                        answer: Err(err),
                        long_polled: false,
                        asked,
                        more: false,
                    };
                }
            }
        }
    }

    /// While polling, asks for the batch after `from` now, to be taken by [`Self::next`];
    /// `long_poll`: the server may hold it for the poll interval. Streaming needs none.
    pub fn prefetch(&mut self, from: &StartFrom, size: BatchSize, long_poll: bool) {
        if self.polling {
            self.ahead = Some((self.spawn_fetch(from, size, long_poll), from.clone()));
        }
    }

    async fn poll(&mut self, from: &StartFrom, size: BatchSize) -> Fetched {
        let fetch = match self.ahead.take() {
            Some((fetch, at)) if at == *from => fetch,
            // Asked from elsewhere (the client rewound): dropped, which aborts it.
            _ => self.spawn_fetch(from, size, true),
        };
        let (long_polled, asked) = (fetch.long_poll, fetch.asked);
        Fetched {
            answer: fetch.answer.await,
            long_polled,
            asked,
            more: false,
        }
    }

    fn spawn_fetch(&self, start: &StartFrom, size: BatchSize, long_poll: bool) -> PendingFetch {
        let wait = if long_poll {
            self.interval
        } else {
            Duration::ZERO
        };
        let (api, start) = (self.api.clone(), start.clone());
        let task = FetchTask(tokio::spawn(
            async move { api.fetch(&start, size, wait).await },
        ));
        PendingFetch {
            answer: task,
            long_poll,
            asked: size,
        }
    }
}

/// A batch of no events that leaves the reader at `at`.
fn empty_at(at: &StartFrom) -> Result<BatchView, FetchError> {
    let StartFrom::Cursor(cursor) = at else {
        unreachable!("a stream stands at a cursor once it has sent a batch");
    };
    shared::wire::encode(std::iter::empty::<&shared::Record>(), &cursor.encode(), &[])
        .and_then(|body| BatchView::parse(body.into()))
        .map_err(|e| FetchError::Transient {
            message: e.to_string(),
            retry_after: None,
        })
}

/// A fetch under way on its own task, so it runs while the loop writes a batch.
#[derive(Debug)]
struct PendingFetch {
    answer: FetchTask,
    /// Whether the server may hold it for the poll interval (else it answers at once).
    long_poll: bool,
    /// What it asked for.
    asked: BatchSize,
}

/// A spawned fetch, aborted when dropped unfinished: nothing fetched after a failed write
/// is used.
#[derive(Debug)]
struct FetchTask(tokio::task::JoinHandle<Result<BatchView, FetchError>>);

impl Drop for FetchTask {
    fn drop(&mut self) {
        self.0.abort();
    }
}

impl Future for FetchTask {
    type Output = Result<BatchView, FetchError>;

    fn poll(
        mut self: Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Self::Output> {
        Pin::new(&mut self.0).poll(cx).map(|joined| {
            joined.unwrap_or_else(|err| {
                Err(FetchError::Transient {
                    message: format!("the fetch stopped: {err}"),
                    retry_after: None,
                })
            })
        })
    }
}

/// One `GET /events/stream` answer, read frame by frame.
#[derive(Debug)]
pub struct EventStream {
    response: reqwest::Response,
    frames: FrameReader,
    /// What each of its batches holds at most.
    pub asked: BatchSize,
}

impl EventStream {
    pub fn new(response: reqwest::Response, asked: BatchSize) -> Self {
        Self {
            response,
            frames: FrameReader::new(),
            asked,
        }
    }

    /// Whether the next batch is here already: what has arrived is taken in without
    /// waiting.
    pub async fn ready(&mut self) -> bool {
        loop {
            if self.frames.has_batch() {
                return true;
            }
            // A zero timeout still polls once: a chunk already received is taken.
            match tokio::time::timeout(Duration::ZERO, self.response.chunk()).await {
                Ok(Ok(Some(chunk))) => self.frames.push(&chunk),
                _ => return false,
            }
        }
    }

    /// The next batch; `None` once the answer ended cleanly.
    pub async fn next(&mut self) -> Result<Option<BatchView>, FetchError> {
        let broken = |why: String| FetchError::Transient {
            message: format!("the stream broke off: {why}"),
            retry_after: None,
        };
        loop {
            match self
                .frames
                .next_frame()
                .map_err(|e| broken(e.to_string()))?
            {
                Some(Frame::KeepAlive) => continue,
                Some(Frame::Batch(body)) => {
                    return BatchView::parse(body)
                        .map(Some)
                        .map_err(|e| broken(e.to_string()));
                }
                None => {}
            }
            match tokio::time::timeout(STREAM_SILENCE, self.response.chunk()).await {
                Err(_) => {
                    return Err(broken(format!(
                        "nothing, not even a keep-alive, for {} s",
                        STREAM_SILENCE.as_secs()
                    )));
                }
                Ok(Ok(Some(chunk))) => self.frames.push(&chunk),
                Ok(Ok(None)) if self.frames.at_boundary() => return Ok(None),
                Ok(Ok(None)) => return Err(broken("cut off inside a frame".into())),
                Ok(Err(err)) => return Err(broken(shared::error::error_chain(&err))),
            }
        }
    }
}
