//! `GET /events/stream`: Server-Sent Events a browser or curl can follow (ids, resume with
//! `Last-Event-ID`, keep-alives, the end after `STREAM_MAX_SECS`), binary frames through a
//! zstd stream flushed frame by frame, the client streaming exactly once, and its fall back
//! to long-polling where the Lambda deployment cannot stream.

use std::collections::BTreeSet;
use std::time::Duration;

use client::config::StreamMode;
use emulator::HandlersMode;
use shared::{Cursor, StartFrom};
use tokio::time::Instant;

use crate::common;

/// One SSE message: its `event`, `id` and `data` fields, or a comment.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Sse {
    Message {
        event: String,
        id: String,
        data: String,
    },
    Comment(String),
}

/// Reads an SSE answer message by message.
struct SseReader {
    response: reqwest::Response,
    pending: String,
}

impl SseReader {
    fn new(response: reqwest::Response) -> Self {
        Self {
            response,
            pending: String::new(),
        }
    }

    /// The next message; `None` when the answer ended.
    async fn next(&mut self) -> Option<Sse> {
        loop {
            if let Some(end) = self.pending.find("\n\n") {
                let block: String = self.pending.drain(..end + 2).collect();
                let lines: Vec<&str> = block.trim_end().lines().collect();
                if let Some(comment) = lines.first().and_then(|l| l.strip_prefix(": ")) {
                    return Some(Sse::Comment(comment.to_owned()));
                }
                let field = |name: &str| {
                    lines
                        .iter()
                        .filter_map(|l| l.strip_prefix(name))
                        .collect::<Vec<_>>()
                        .join("\n")
                };
                return Some(Sse::Message {
                    event: field("event: "),
                    id: field("id: "),
                    data: field("data: "),
                });
            }
            let chunk = self.response.chunk().await.expect("stream chunk")?;
            self.pending
                .push_str(std::str::from_utf8(&chunk).expect("SSE is UTF-8"));
        }
    }
}

/// `seq`s of the demo events in one `/events` JSON answer, and its `next_cursor`.
fn seqs_of(data: &str) -> (Vec<u64>, String) {
    let answer: serde_json::Value = serde_json::from_str(data).expect("data is /events JSON");
    let seqs = answer["events"]
        .as_array()
        .expect("events")
        .iter()
        .map(|e| common::seq_of(e["value"].as_str().expect("utf8 value").as_bytes()))
        .collect();
    (
        seqs,
        answer["next_cursor"].as_str().expect("cursor").to_owned(),
    )
}

fn stream_request(stack: &emulator::Stack, query: &str) -> reqwest::RequestBuilder {
    reqwest::Client::new()
        .get(format!("{}/events/stream?{query}", stack.info.api_base))
        .header("x-api-key", &stack.info.api_key)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_browser_follows_the_sse_stream_resumes_with_last_event_id_and_sees_keep_alives() {
    const N: u64 = 60;
    const STREAM_SECS: u64 = 20;
    let mut config = common::config();
    config.events = Some(N);
    config.handlers.stream_max_secs = STREAM_SECS;
    let stack = common::start(config).await;

    let opened = Instant::now();
    let response = stream_request(&stack, "cursor=earliest&limit=7")
        .send()
        .await
        .expect("answer");
    assert_eq!(response.status(), 200);
    assert_eq!(
        response.headers()["content-type"].to_str().ok(),
        Some("text/event-stream")
    );
    let mut sse = SseReader::new(response);
    let mut batches: Vec<(String, Vec<u64>)> = Vec::new();
    while batches.iter().map(|(_, s)| s.len() as u64).sum::<u64>() < N {
        match tokio::time::timeout(Duration::from_secs(10), sse.next()).await {
            Ok(Some(Sse::Message { event, id, data })) => {
                assert_eq!(event, "batch");
                let (seqs, next) = seqs_of(&data);
                assert_eq!(id, next, "the id is the cursor after the batch");
                assert!(seqs.len() <= 7, "limit holds per batch");
                batches.push((id, seqs));
            }
            Ok(Some(Sse::Comment(_))) => {}
            other => panic!("the stream ended or stalled before every event came: {other:?}"),
        }
    }
    let all: Vec<u64> = batches.iter().flat_map(|(_, s)| s.clone()).collect();
    let unique: BTreeSet<u64> = all.iter().copied().collect();
    assert_eq!(
        (all.len(), unique.len()),
        (N as usize, N as usize),
        "each once"
    );

    // Quiet now: a keep-alive within 15 s, then the end at STREAM_MAX_SECS.
    let quiet = Instant::now();
    let kept_alive = tokio::time::timeout(Duration::from_secs(17), sse.next())
        .await
        .expect("something within the keep-alive interval");
    assert_eq!(kept_alive, Some(Sse::Comment("keep-alive".into())));
    assert!(
        quiet.elapsed() <= Duration::from_secs(16),
        "{:?}",
        quiet.elapsed()
    );
    let end = tokio::time::timeout(Duration::from_secs(STREAM_SECS), async {
        loop {
            match sse.next().await {
                None => break,
                Some(Sse::Comment(_)) => {}
                Some(message) => panic!("nothing new was produced: {message:?}"),
            }
        }
    })
    .await;
    assert!(end.is_ok(), "the stream ends after STREAM_MAX_SECS");
    let lasted = opened.elapsed();
    assert!(
        lasted >= Duration::from_secs(STREAM_SECS - 1)
            && lasted <= Duration::from_secs(STREAM_SECS + 5),
        "lasted {lasted:?}"
    );

    // Resuming after the third batch gives exactly what followed it.
    let (third, _) = &batches[2];
    let after: BTreeSet<u64> = batches[3..].iter().flat_map(|(_, s)| s.clone()).collect();
    let response = stream_request(&stack, "cursor=latest")
        .header("last-event-id", third)
        .send()
        .await
        .expect("answer");
    let mut sse = SseReader::new(response);
    let mut resumed = Vec::new();
    while (resumed.len() as u64) < after.len() as u64 {
        match tokio::time::timeout(Duration::from_secs(10), sse.next()).await {
            Ok(Some(Sse::Message { data, .. })) => resumed.extend(seqs_of(&data).0),
            Ok(Some(Sse::Comment(_))) => {}
            other => panic!("the resumed stream ended early: {other:?}"),
        }
    }
    assert_eq!(resumed.iter().copied().collect::<BTreeSet<_>>(), after);
    assert_eq!(resumed.len(), after.len(), "nothing twice");

    // A Last-Event-ID that is not a cursor is refused like a bad cursor.
    let bad = stream_request(&stack, "")
        .header("last-event-id", "not-a-cursor")
        .send()
        .await
        .expect("answer");
    assert_eq!(bad.status(), 400);
    let body: serde_json::Value = bad.json().await.expect("error JSON");
    assert_eq!(body["error"]["code"], "invalid_cursor");
    stack.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn binary_frames_come_zstd_compressed_one_by_one_not_held_back_to_the_end() {
    const N: u64 = 300;
    let mut config = common::config();
    config.events = Some(N);
    // Long, so frames that only came at the end would miss the deadline below.
    config.handlers.stream_max_secs = 60;
    let stack = common::start(config).await;
    // A client that leaves the encoding to the caller, to see it.
    let raw = reqwest::Client::builder()
        .no_zstd()
        .no_gzip()
        .build()
        .expect("client")
        .get(format!(
            "{}/events/stream?cursor=earliest&limit=50",
            stack.info.api_base
        ))
        .header("x-api-key", &stack.info.api_key)
        .header("accept", shared::wire::stream::STREAM_CONTENT_TYPE)
        .header("accept-encoding", "zstd")
        .send()
        .await
        .expect("answer");
    assert_eq!(raw.headers()["content-encoding"], "zstd");
    assert_eq!(
        raw.headers()["content-type"],
        shared::wire::stream::STREAM_CONTENT_TYPE
    );
    drop(raw);

    // The client's own reader: reqwest undoes the zstd as frames arrive.
    let api = client::api::EventsApi::new(
        stack.server_url.as_str(),
        "/api/v1",
        &stack.info.api_key,
        true,
    )
    .expect("api");
    let mut stream = api
        .open_stream(&StartFrom::Earliest, client::api::BatchSize::new(50))
        .await
        .expect("answer")
        .expect("the server streams");
    let mut seqs = BTreeSet::new();
    let mut batches = 0;
    tokio::time::timeout(Duration::from_secs(20), async {
        while (seqs.len() as u64) < N {
            let batch = stream.next().await.expect("frame").expect("not ended");
            assert!(batch.len() <= 50);
            Cursor::decode(batch.next_cursor()).expect("each frame ends at a cursor");
            for record in batch.records() {
                assert!(seqs.insert(common::seq_of(record.value.expect("value"))));
            }
            batches += 1;
        }
    })
    .await
    .expect("every frame well before the 60 s stream ends");
    assert!(batches >= 6, "{batches} frames of at most 50");
    stack.stop().await;
}

/// Requests the handlers answered on `route` with `status`.
fn requests(stack: &emulator::Stack, route: &str, status: u16) -> u64 {
    let series = format!(
        "api_requests_total{{method=\"GET\",route=\"/api/v1{route}\",status=\"{status}\"}} "
    );
    stack
        .handler_metrics()
        .lines()
        .filter_map(|l| l.strip_prefix(series.as_str())?.parse::<u64>().ok())
        .sum()
}

/// Runs a client with `stream` against `stack` until it has committed `n` events.
async fn copy(stack: &emulator::Stack, stream: StreamMode, n: u64) {
    let mut config = common::client_config(stack, 50);
    config.stream = stream;
    common::replicate_until(&config, n).await;
}

/// Local Kafka holds each of the `n` events of `stack` once.
async fn assert_copied_once(stack: &emulator::Stack, test: &str, n: u64) {
    let copied = emulator::verify::read_topic(
        &stack.info.local_brokers,
        &stack.info.topic,
        n as usize,
        Duration::from_secs(30),
    )
    .await
    .expect("read local");
    common::assert_exactly_once(test, &copied, n);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_client_streams_exactly_once_on_one_request() {
    const TEST: &str = "the_client_streams_exactly_once_on_one_request";
    const N: u64 = 2000;
    let (source, local) = common::apache_or_mock(TEST);
    let mut config = common::config();
    config.source_brokers = source;
    config.local_brokers = local;
    config.events = Some(N);
    config.rate = 400;
    let stack = common::start(config).await;
    copy(&stack, StreamMode::On, N).await;
    assert_copied_once(&stack, TEST, N).await;
    // The whole stream of 5 s on one request (and one for the log end).
    assert_eq!(requests(&stack, "/events/stream", 200), 1);
    assert!(requests(&stack, "/events", 200) <= 2);
    stack.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn across_a_slow_narrow_link_the_client_streams_exactly_once() {
    const TEST: &str = "across_a_slow_narrow_link_the_client_streams_exactly_once";
    const N: u64 = 2000;
    let Some(toxiproxy) = common::tool(TEST, "TOXIPROXY_SERVER", "toxiproxy-server") else {
        return;
    };
    let (source, local) = common::apache_or_mock(TEST);
    let mut config = common::config();
    config.source_brokers = source;
    config.local_brokers = local;
    config.events = Some(N);
    let stack = common::start(config).await;
    let shape = emulator::link::LinkShape {
        delay_ms: 25,
        mbit: 20.0,
    };
    let link = emulator::link::Link::start_server(&toxiproxy, shape)
        .await
        .expect("toxiproxy starts");
    let api = stack
        .server_url
        .trim_start_matches("http://")
        .parse()
        .expect("the API's address");
    let listen = link
        .proxy("api", ([127, 0, 0, 1], 0).into(), api)
        .await
        .expect("a proxy in front of the API");
    let mut client = common::client_config(&stack, 500);
    client.server_url = Some(format!("http://{listen}"));
    client.stream = StreamMode::On;
    client.compression = true;
    common::replicate_until(&client, N).await;
    assert_copied_once(&stack, TEST, N).await;
    assert_eq!(
        requests(&stack, "/events/stream", 200),
        1,
        "one stream carried the backlog"
    );
    // The answers crossed the proxy. Each demo value carries 64 hex digits drawn from a
    // sequence, 32 bytes no codec can shrink, so N events cannot cross in fewer than N × 32
    // bytes. toxiproxy counts a connection's bytes once it has closed, a moment after the
    // client stops: the count is awaited, with a deadline.
    let floor = N * 32;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    let crossed = loop {
        let crossed = link.bytes("api").await.expect("link bytes");
        if crossed >= floor || tokio::time::Instant::now() >= deadline {
            break crossed;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert!(
        crossed >= floor,
        "{crossed} bytes crossed the link for {N} events"
    );
    link.stop().await;
    stack.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn behind_the_lambda_adapter_the_client_falls_back_to_long_polling() {
    const TEST: &str = "behind_the_lambda_adapter_the_client_falls_back_to_long_polling";
    const N: u64 = 300;
    let mut config = common::config();
    config.events = Some(N);
    config.handlers_mode = HandlersMode::Lambda;
    let stack = common::start(config).await;

    let refused = stream_request(&stack, "cursor=earliest")
        .send()
        .await
        .expect("answer");
    assert_eq!(refused.status(), 501);
    let body: serde_json::Value = refused.json().await.expect("error JSON");
    assert_eq!(body["error"]["code"], "streaming_unsupported");

    // STREAM=on says what is wrong instead of falling back.
    let api = client::api::EventsApi::new(&stack.server_url, "/api/v1", &stack.info.api_key, true)
        .expect("api");
    let mut feed = client::feed::Feed::new(api, StreamMode::On, Duration::from_millis(100));
    match feed
        .next(&StartFrom::Earliest, client::api::BatchSize::new(10), false)
        .await
        .answer
    {
        Err(client::api::FetchError::Rejected { status, code, .. }) => {
            assert_eq!((status, code.as_str()), (501, "streaming_unsupported"))
        }
        other => panic!("STREAM=on must refuse to poll: {other:?}"),
    }

    copy(&stack, StreamMode::Auto, N).await;
    assert_copied_once(&stack, TEST, N).await;
    assert_eq!(
        requests(&stack, "/events/stream", 501),
        3,
        "refused: ours twice, the client's once (it then long-polls)"
    );
    assert!(requests(&stack, "/events", 200) > 1, "it long-polled");
    stack.stop().await;
}

/// `handlers-server` told to stop (SIGTERM) with a stream open: the stream ends cleanly at
/// once, as it does after `STREAM_MAX_SECS`, and the server stops, rather than waiting up to
/// five minutes for the stream to run out.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stopping_server_ends_its_open_streams_cleanly_and_stops() {
    let mut config = common::config();
    config.events = Some(20);
    let stack = common::start(config).await;
    let mut handlers = common::stack_handlers_config(&stack, &stack.info.api_key);
    handlers.port = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("free port")
        .port();
    assert_eq!(
        handlers.stream_max_secs,
        handlers::config::DEFAULT_STREAM_MAX_SECS
    );
    let state = common::handlers_state(&handlers);
    let stop = tokio_util::sync::CancellationToken::new();
    let port = handlers.port;
    let serving = tokio::spawn({
        let stop = stop.clone();
        async move { handlers::server::serve(&handlers, state, stop.cancelled_owned()).await }
    });
    common::wait_listening("the handlers to listen", port).await;
    let response = reqwest::Client::new()
        .get(format!(
            "http://127.0.0.1:{port}/api/v1/events/stream?cursor=earliest"
        ))
        .header("x-api-key", &stack.info.api_key)
        .send()
        .await
        .expect("answer");
    assert_eq!(response.status(), 200);
    let mut sse = SseReader::new(response);
    match tokio::time::timeout(Duration::from_secs(10), sse.next()).await {
        Ok(Some(Sse::Message { event, .. })) => assert_eq!(event, "batch"),
        other => panic!("the first batch: {other:?}"),
    }
    let stopped_at = Instant::now();
    stop.cancel();
    // The answer ends: no error, no batch cut in half.
    let ended = tokio::time::timeout(Duration::from_secs(10), async {
        while let Some(message) = sse.next().await {
            assert!(
                !matches!(&message, Sse::Message { event, .. } if event != "batch"),
                "{message:?}"
            );
        }
    })
    .await;
    assert!(ended.is_ok(), "the stream ended once the server stopped");
    let served = tokio::time::timeout(Duration::from_secs(10), serving)
        .await
        .expect("the server stopped soon after")
        .expect("joined");
    assert!(served.is_ok(), "{served:?}");
    eprintln!(
        "stream ended and server stopped {:?} after the stop",
        stopped_at.elapsed()
    );
    stack.stop().await;
}
