//! The public API through `tower::ServiceExt::oneshot` on the real router, backed by a real
//! consumer pod on a librdkafka mock cluster: auth, validation, cursors, long-poll,
//! catch-up reads past the buffer, metrics, errors, and an unreachable source or pod.

use crate::common;

use std::collections::{BTreeMap, HashSet};
use std::time::Duration;

use axum::Router;
use axum::body::Body;
use base64::Engine;
use base64::engine::general_purpose::STANDARD as BASE64;
use http::{Request, StatusCode};
use http_body_util::BodyExt;
use rdkafka::producer::{FutureProducer, FutureRecord};
use rdkafka::util::Timeout;
use serde_json::Value;
use shared::internal::ConsumerAddr;
use tower::ServiceExt;

/// Handlers of its own in front of the stack's pod.
fn stack_router(stack: &emulator::Stack) -> Router {
    handlers::router(common::handlers_state(&common::stack_handlers_config(
        stack,
        &stack.info.api_key,
    )))
}

fn router_for(pod: ConsumerAddr, key: &str) -> Router {
    handlers::router(common::handlers_state(&common::handlers_config(
        pod.into(),
        None,
        key,
    )))
}

async fn call(
    app: &Router,
    method: &str,
    uri: &str,
    key: Option<&str>,
) -> (StatusCode, http::HeaderMap, Vec<u8>) {
    call_with(app, method, uri, key, &[]).await
}

/// [`call`] with more request headers.
async fn call_with(
    app: &Router,
    method: &str,
    uri: &str,
    key: Option<&str>,
    headers: &[(&str, &str)],
) -> (StatusCode, http::HeaderMap, Vec<u8>) {
    let mut request = Request::builder().method(method).uri(uri);
    if let Some(key) = key {
        request = request.header("x-api-key", key);
    }
    for (name, value) in headers {
        request = request.header(*name, *value);
    }
    let response = app
        .clone()
        .oneshot(request.body(Body::empty()).expect("request"))
        .await
        .expect("answer");
    let status = response.status();
    let headers = response.headers().clone();
    let body = response
        .into_body()
        .collect()
        .await
        .expect("body")
        .to_bytes()
        .to_vec();
    (status, headers, body)
}

async fn json(app: &Router, uri: &str, key: &str) -> Value {
    let (status, _, body) = call(app, "GET", uri, Some(key)).await;
    assert_eq!(
        status,
        StatusCode::OK,
        "{uri}: {}",
        String::from_utf8_lossy(&body)
    );
    serde_json::from_slice(&body).expect("JSON")
}

fn error_code(body: &[u8]) -> String {
    let v: Value = serde_json::from_slice(body).expect("error body is JSON");
    v["error"]["code"].as_str().expect("error.code").to_owned()
}

fn seqs(page: &Value) -> Vec<u64> {
    page["events"]
        .as_array()
        .expect("events")
        .iter()
        .map(|e| common::seq_of(e["value"].as_str().expect("utf8 value").as_bytes()))
        .collect()
}

/// A stack with `n` demo events already in the consumer pod's view, and its router.
async fn stack_with_events(n: u64, buffer_max_events: usize) -> (emulator::Stack, Router) {
    let mut config = common::config();
    config.events = Some(n);
    config.pod.buffer.buffer_max_events = buffer_max_events;
    let stack = common::start(config).await;
    let app = stack_router(&stack);
    consumed(&app, &stack.info.api_key, n).await;
    (stack, app)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn open_routes_and_keyed_routes() {
    let (stack, app) = stack_with_events(0, 1000).await;
    let key = stack.info.api_key.clone();

    let (status, _, body) = call(&app, "GET", "/api/v1/health", None).await;
    assert_eq!(status, StatusCode::OK);
    let health: Value = serde_json::from_slice(&body).expect("JSON");
    assert_eq!(health["status"], "ok");
    assert!(
        !String::from_utf8_lossy(&body).contains(&key),
        "health never shows the key"
    );
    let (status, _, _) = call(&app, "GET", "/api/v1/ready", None).await;
    assert_eq!(status, StatusCode::OK);

    for uri in ["/api/v1/events", "/api/v1/metrics"] {
        let (status, _, body) = call(&app, "GET", uri, None).await;
        assert_eq!(status, StatusCode::UNAUTHORIZED, "{uri} without key");
        assert_eq!(error_code(&body), "unauthorized");
        let (status, _, body) = call(&app, "GET", uri, Some("not-the-key-0123456789")).await;
        assert_eq!(status, StatusCode::UNAUTHORIZED, "{uri} with a wrong key");
        assert!(
            !String::from_utf8_lossy(&body).contains("not-the-key"),
            "error bodies never echo keys"
        );
        let (status, _, _) = call(&app, "GET", uri, Some(&key)).await;
        assert_eq!(status, StatusCode::OK, "{uri} with the key");
    }
    let bearer = Request::builder()
        .uri("/api/v1/events")
        .header("authorization", format!("Bearer {key}"))
        .body(Body::empty())
        .expect("request");
    assert_eq!(
        app.clone().oneshot(bearer).await.expect("answer").status(),
        StatusCode::OK
    );

    let (status, _, body) = call(&app, "GET", "/api/v2/events", Some(&key)).await;
    assert_eq!(
        (status, error_code(&body)),
        (StatusCode::NOT_FOUND, "not_found".into())
    );
    let (status, _, body) = call(&app, "DELETE", "/api/v1/events", Some(&key)).await;
    assert_eq!(
        (status, error_code(&body)),
        (StatusCode::METHOD_NOT_ALLOWED, "method_not_allowed".into())
    );
    stack.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_query_values_are_400_with_their_codes() {
    let (stack, app) = stack_with_events(0, 1000).await;
    let key = stack.info.api_key.clone();
    for (query, code) in [
        ("limit=0", "invalid_limit"),
        ("limit=10001", "invalid_limit"),
        ("limit=many", "invalid_limit"),
        ("wait_ms=30001", "invalid_wait"),
        ("wait_ms=-5", "invalid_wait"),
        ("cursor=garbage!", "invalid_cursor"),
        ("cursor=AQELZGVtby1ldmVudHMDAAEBAQIAFJKOm", "invalid_cursor"),
        ("topic=not-carried", "unknown_topic"),
    ] {
        let (status, _, body) =
            call(&app, "GET", &format!("/api/v1/events?{query}"), Some(&key)).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{query}");
        assert_eq!(error_code(&body), code, "{query}");
    }
    stack.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cursors_page_through_every_event_once_in_order() {
    const N: u64 = 120;
    let (stack, app) = stack_with_events(N, 100_000).await;
    let key = stack.info.api_key.clone();
    let mut cursor = "earliest".to_owned();
    let mut seen = Vec::new();
    let mut last_offset: BTreeMap<i64, i64> = BTreeMap::new();
    for _ in 0..100 {
        let page = json(
            &app,
            &format!("/api/v1/events?cursor={cursor}&limit=7"),
            &key,
        )
        .await;
        assert!(page["events"].as_array().expect("events").len() <= 7);
        for event in page["events"].as_array().expect("events") {
            assert_eq!(event["encoding"], "utf8");
            let (p, o) = (
                event["partition"].as_i64().expect("p"),
                event["offset"].as_i64().expect("o"),
            );
            assert!(
                last_offset.get(&p).is_none_or(|last| o > *last),
                "offsets rise within partition {p}"
            );
            last_offset.insert(p, o);
        }
        seen.extend(seqs(&page));
        cursor = page["next_cursor"]
            .as_str()
            .expect("next_cursor")
            .to_owned();
        if seen.len() as u64 >= N {
            break;
        }
    }
    let unique: HashSet<u64> = seen.iter().copied().collect();
    assert_eq!(
        (seen.len() as u64, unique.len() as u64),
        (N, N),
        "each event once"
    );
    let page = json(&app, &format!("/api/v1/events?cursor={cursor}"), &key).await;
    assert_eq!(seqs(&page), Vec::<u64>::new(), "nothing after the end");
    assert_eq!(
        page["next_cursor"].as_str(),
        Some(cursor.as_str()),
        "an empty page keeps the cursor"
    );

    // No cursor: the newest events held (by timestamp), as the prototype answered.
    let all = json(&app, "/api/v1/events?cursor=earliest&limit=1000", &key).await;
    let mut stamps: Vec<i64> = all["events"]
        .as_array()
        .expect("events")
        .iter()
        .map(|e| e["timestamp"].as_i64().expect("ts"))
        .collect();
    stamps.sort_unstable();
    let tenth_newest = stamps[stamps.len() - 10];
    let newest = json(&app, "/api/v1/events?limit=10", &key).await;
    let newest = newest["events"].as_array().expect("events");
    assert_eq!(newest.len(), 10);
    assert!(
        newest
            .iter()
            .all(|e| e["timestamp"].as_i64().expect("ts") >= tenth_newest),
        "the newest ten: {newest:?}"
    );
    stack.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn latest_long_polls_until_a_new_event() {
    let (stack, app) = stack_with_events(5, 1000).await;
    let key = stack.info.api_key.clone();
    let page = json(&app, "/api/v1/events?cursor=latest", &key).await;
    assert!(seqs(&page).is_empty(), "latest starts after what exists");
    let cursor = page["next_cursor"].as_str().expect("cursor").to_owned();

    let (brokers, topic) = (stack.info.source_brokers.clone(), stack.info.topic.clone());
    let (waiting, waiting_key) = (app.clone(), key.clone());
    let producing = tokio::spawn(async move {
        // Produced only once the long-poll below is waiting at the pod.
        wait_for_metric(
            &waiting,
            &waiting_key,
            "the long-poll waiting at the pod",
            Duration::from_secs(20),
            "consumer_fetches_in_flight",
            |n| n >= 1,
        )
        .await;
        let producer: FutureProducer = shared::kafka::client_config(&brokers)
            .create()
            .expect("producer");
        let value = emulator::demo::demo_value(999, 0);
        producer
            .send(
                FutureRecord::<str, str>::to(&topic)
                    .key("late")
                    .payload(&value),
                Timeout::After(Duration::from_secs(10)),
            )
            .await
            .expect("produced");
    });
    let page = json(
        &app,
        &format!("/api/v1/events?cursor={cursor}&wait_ms=20000"),
        &key,
    )
    .await;
    assert_eq!(
        seqs(&page),
        vec![999],
        "the long-poll returns the event produced while it waited"
    );
    producing.await.expect("producer task");
    stack.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reads_older_than_the_buffer_come_from_kafka() {
    const N: u64 = 300;
    // The pod keeps only 20 events in memory; the rest must be read back from Kafka.
    let (stack, app) = stack_with_events(N, 20).await;
    let key = stack.info.api_key.clone();
    let mut cursor = "earliest".to_owned();
    let mut seen = HashSet::new();
    for _ in 0..50 {
        let page = json(
            &app,
            &format!("/api/v1/events?cursor={cursor}&limit=100"),
            &key,
        )
        .await;
        assert_eq!(
            page["gaps"],
            serde_json::json!([]),
            "nothing was lost to retention"
        );
        for s in seqs(&page) {
            assert!(seen.insert(s), "seq {s} twice");
        }
        cursor = page["next_cursor"].as_str().expect("cursor").to_owned();
        if seen.len() as u64 == N {
            break;
        }
    }
    assert_eq!(seen.len() as u64, N);
    let (_, _, body) = call(&app, "GET", "/api/v1/metrics", Some(&key)).await;
    let text = String::from_utf8_lossy(&body);
    let catchups = common::metric_sum(&text, "consumer_catchup_reads_total");
    assert!(catchups > 0, "the buffer could not have served this alone");
    // Each page reads a third of each partition: the readers stay where a page ended and go
    // on from what they fetched ahead, rather than seeking and fetching again.
    let resumed = common::metric_sum(&text, "consumer_catchup_reads_resumed_total");
    assert!(
        resumed * 2 >= catchups,
        "most reads from Kafka go on where the last one ended: {resumed} of {catchups}"
    );
    let held = common::metric_sum(&text, "consumer_buffer_events");
    assert!(
        held <= 20,
        "the buffer stays within BUFFER_MAX_EVENTS: {held}"
    );
    stack.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn binary_batches_carry_what_the_json_carries_and_compression_is_negotiated() {
    const N: u64 = 150;
    // A small buffer: the pages come from memory and from Kafka.
    let (stack, app) = stack_with_events(N, 40).await;
    let key = stack.info.api_key.clone();
    let mut cursor = "earliest".to_owned();
    let mut total = 0;
    for _ in 0..20 {
        let uri = format!("/api/v1/events?cursor={cursor}&limit=60");
        let page = json(&app, &uri, &key).await;
        let (status, headers, body) = call_with(
            &app,
            "GET",
            &uri,
            Some(&key),
            &[("accept", "application/vnd.kafka-replicator.batch; v=2")],
        )
        .await;
        assert_eq!(status, StatusCode::OK);
        assert_eq!(
            headers["content-type"],
            "application/vnd.kafka-replicator.batch; v=2"
        );
        assert_eq!(headers["vary"], "accept");
        let batch = shared::wire::decode(&body).expect("a valid batch");
        let from_json: Vec<shared::Record> =
            serde_json::from_value::<Vec<shared::Event>>(page["events"].clone())
                .expect("events")
                .into_iter()
                .map(|e| e.into_record().expect("record"))
                .collect();
        assert_eq!(batch.records, from_json, "same records at {cursor}");
        assert_eq!(
            batch.next_cursor,
            page["next_cursor"].as_str().expect("cursor")
        );
        assert!(batch.gaps.is_empty());
        total += batch.records.len() as u64;
        cursor = batch.next_cursor;
        if total == N {
            break;
        }
    }
    assert_eq!(total, N, "every event, once, in either form");

    // An earlier client names the media type without the version: it reads only the first
    // layout, so it gets JSON, which it reads too.
    let (status, headers, body) = call_with(
        &app,
        "GET",
        "/api/v1/events?cursor=earliest&limit=5",
        Some(&key),
        &[(
            "accept",
            "application/vnd.kafka-replicator.batch, application/json;q=0.5",
        )],
    )
    .await;
    assert_eq!(status, StatusCode::OK);
    assert!(
        headers["content-type"]
            .to_str()
            .expect("text")
            .starts_with("application/json"),
        "{headers:?}"
    );
    assert!(serde_json::from_slice::<serde_json::Value>(&body).is_ok());

    // Compression is negotiated: asked for, the same page comes smaller and says how.
    let uri = "/api/v1/events?cursor=earliest&limit=100";
    let (_, _, plain) = call(&app, "GET", uri, Some(&key)).await;
    for encoding in ["gzip", "zstd"] {
        let (status, headers, body) = call_with(
            &app,
            "GET",
            uri,
            Some(&key),
            &[("accept-encoding", encoding)],
        )
        .await;
        assert_eq!(status, StatusCode::OK);
        assert_eq!(headers["content-encoding"], encoding);
        assert!(
            body.len() * 2 < plain.len(),
            "{encoding}: {} bytes against {} plain",
            body.len(),
            plain.len()
        );
    }
    stack.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_show_the_whole_system() {
    let (stack, app) = stack_with_events(10, 1000).await;
    let key = stack.info.api_key.clone();
    json(&app, "/api/v1/events?cursor=earliest", &key).await;
    // Lag comes from librdkafka's statistics, every 5 s: scrape until it is there, with
    // the key as a bearer token, as Prometheus sends it.
    let lag = format!(
        "kafka_consumer_lag{{partition=\"0\",topic=\"{}\"}} 0",
        stack.info.topic
    );
    common::wait_for("consumer lag in /metrics", Duration::from_secs(20), || {
        let (app, key, lag) = (app.clone(), key.clone(), lag.clone());
        async move {
            let (_, _, body) = call(&app, "GET", "/api/v1/metrics", Some(&key)).await;
            String::from_utf8_lossy(&body).contains(&lag)
        }
    })
    .await;
    let request = Request::builder()
        .uri("/api/v1/metrics")
        .header("authorization", format!("Bearer {key}"))
        .body(Body::empty())
        .expect("request");
    let response = app.clone().oneshot(request).await.expect("answer");
    let (status, headers) = (response.status(), response.headers().clone());
    let body = response
        .into_body()
        .collect()
        .await
        .expect("body")
        .to_bytes();
    assert_eq!(status, StatusCode::OK);
    assert!(
        headers[http::header::CONTENT_TYPE]
            .to_str()
            .expect("type")
            .starts_with("text/plain")
    );
    let text = String::from_utf8_lossy(&body);
    for name in [
        "kafka_events_consumed_total",
        "api_requests_total",
        "kafka_errors_total",
        "consumer_buffer_events",
        "consumer_buffer_max_events",
        "kafka_consumer_lag",
        "api_request_duration_seconds",
        "api_auth_failures_total",
        "api_rate_limited_total",
        "rate_limit_buckets",
    ] {
        assert!(
            text.contains(&format!("# TYPE {name}")),
            "{name} missing from:\n{text}"
        );
    }
    assert!(text.contains(&format!(
        "kafka_events_consumed_total{{topic=\"{}\"}} 10",
        stack.info.topic
    )));
    assert!(!text.contains(&key), "metrics never show the key");
    stack.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unreachable_source_or_pod_is_503_with_retry_after() {
    // A consumer pod whose source Kafka does not exist.
    let pod = consumer::ConsumerPod::bind(consumer::Config {
        source: consumer::config::SourceArgs {
            brokers: Some("127.0.0.1:1".into()),
            topics: vec!["orders".into()],
            group_id: common::unique("group"),
            fetch_wait_ms: consumer::config::DEFAULT_FETCH_WAIT_MS,
            properties: Default::default(),
        },
        buffer: consumer::config::BufferArgs {
            buffer_max_events: 100,
            buffer_max_bytes: 1 << 20,
        },
        bounds: Default::default(),
        consumer_addr: ConsumerAddr::Tcp("127.0.0.1:0".into()),
        internal_token: None,
    })
    .await
    .expect("bind");
    let key = "test-key-0123456789abcdef";
    let app = router_for(pod.local_addr().clone(), key);
    let stop = tokio_util::sync::CancellationToken::new();
    let running = tokio::spawn(pod.run(stop.clone()));

    let (status, _, body) = call(&app, "GET", "/api/v1/ready", None).await;
    assert_eq!(
        status,
        StatusCode::SERVICE_UNAVAILABLE,
        "{}",
        String::from_utf8_lossy(&body)
    );
    let (status, headers, body) =
        call(&app, "GET", "/api/v1/events?cursor=earliest", Some(key)).await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(error_code(&body), "unavailable");
    assert!(headers.contains_key(http::header::RETRY_AFTER));
    let (status, _, _) = call(&app, "GET", "/api/v1/health", None).await;
    assert_eq!(status, StatusCode::OK, "liveness does not depend on Kafka");
    stop.cancel();
    running.await.expect("pod task").expect("pod stops cleanly");

    // No consumer pod at all.
    let app = router_for(ConsumerAddr::Tcp("127.0.0.1:9".into()), key);
    let (status, _, _) = call(&app, "GET", "/api/v1/ready", None).await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
    let (status, headers, body) = call(&app, "GET", "/api/v1/events", Some(key)).await;
    assert_eq!(
        (status, error_code(&body)),
        (StatusCode::SERVICE_UNAVAILABLE, "unavailable".into())
    );
    assert!(headers.contains_key(http::header::RETRY_AFTER));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn offsets_the_source_deleted_come_back_as_gaps() {
    // The mock cluster keeps at most 5 MiB or 100,000 records per partition and deletes
    // the oldest beyond that, as retention would; the pod keeps only 1,000 in memory.
    let mut config = common::config();
    config.partitions = 1;
    config.pod.buffer.buffer_max_events = 1000;
    config.events = Some(60_000);
    let stack = common::start(config).await;
    let app = stack_router(&stack);
    let key = stack.info.api_key.clone();
    let start = json(&app, "/api/v1/events?cursor=earliest&limit=1", &key).await;
    assert_eq!(start["gaps"], serde_json::json!([]));
    let mut cursor =
        shared::Cursor::decode(start["next_cursor"].as_str().expect("cursor")).expect("cursor");
    cursor.set(&stack.info.topic, 0, 0);
    let old = cursor.encode();

    let page = std::sync::Arc::new(std::sync::Mutex::new(Value::Null));
    common::wait_for(
        "the source to delete its oldest records",
        Duration::from_secs(60),
        || {
            let (app, key, old, page) = (app.clone(), key.clone(), old.clone(), page.clone());
            async move {
                let got = json(&app, &format!("/api/v1/events?cursor={old}&limit=5"), &key).await;
                let has_gap = got["gaps"].as_array().is_some_and(|g| !g.is_empty());
                *page.lock().expect("lock") = got;
                has_gap
            }
        },
    )
    .await;
    let page = page.lock().expect("lock").clone();
    // From offset 0 on, every offset is either in a gap or delivered: nothing is skipped
    // silently. Follow the cursor until the first retained event arrives.
    let mut expected = 0i64;
    let mut page = page;
    for _ in 0..20 {
        for gap in page["gaps"].as_array().expect("gaps") {
            assert_eq!(
                gap["from"].as_i64(),
                Some(expected),
                "gaps start where the cursor stood: {page}"
            );
            expected = gap["to"].as_i64().expect("to") + 1;
        }
        let events = page["events"].as_array().expect("events");
        if let Some(first) = events.first() {
            assert_eq!(
                first["offset"].as_i64(),
                Some(expected),
                "reading resumes right after the gap: {page}"
            );
            break;
        }
        let cursor = page["next_cursor"].as_str().expect("cursor").to_owned();
        page = json(
            &app,
            &format!("/api/v1/events?cursor={cursor}&limit=5&wait_ms=2000"),
            &key,
        )
        .await;
    }
    assert!(expected > 0, "a gap was reported");
    assert!(
        !page["events"].as_array().expect("events").is_empty(),
        "events after the gap arrived: {page}"
    );
    stack.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cursors_of_another_cluster_topic_or_beyond_the_log_are_refused() {
    let (stack, app) = stack_with_events(30, 1000).await;
    let key = stack.info.api_key.clone();
    let page = json(&app, "/api/v1/events?cursor=earliest&limit=5", &key).await;
    let ours =
        shared::Cursor::decode(page["next_cursor"].as_str().expect("cursor")).expect("decodes");
    assert!(ours.cluster().is_some(), "cursors name the source cluster");

    let mut other_cluster = ours.clone();
    other_cluster.set_cluster(Some("another-cluster-id".into()));
    let mut other_topic = ours.clone();
    other_topic.set("payments", 0, 0);
    let mut ahead = ours.clone();
    ahead.set(&stack.info.topic, 0, 1_000_000);
    for (cursor, code) in [
        (other_cluster, "cursor_cluster_mismatch"),
        (other_topic, "cursor_topic_mismatch"),
        (ahead, "cursor_ahead"),
    ] {
        let (status, _, body) = call(
            &app,
            "GET",
            &format!("/api/v1/events?cursor={cursor}"),
            Some(&key),
        )
        .await;
        assert_eq!(
            status,
            StatusCode::BAD_REQUEST,
            "{code}: {}",
            String::from_utf8_lossy(&body)
        );
        assert_eq!(error_code(&body), code);
    }
    // Our own cursor still works.
    let (status, _, _) = call(
        &app,
        "GET",
        &format!("/api/v1/events?cursor={ours}"),
        Some(&key),
    )
    .await;
    assert_eq!(status, StatusCode::OK);
    stack.stop().await;
}

/// Records of `value_bytes` random bytes each, spread over `partitions`.
fn big_records(n: usize, value_bytes: usize, partitions: i32) -> Vec<shared::Record> {
    (0..n)
        .map(|i| shared::Record {
            topic: String::new(),
            partition: i as i32 % partitions,
            offset: 0,
            timestamp: None,
            key: Some(format!("k{i}").into_bytes()),
            value: Some((0..value_bytes).map(|_| rand::random::<u8>()).collect()),
            headers: Vec::new(),
        })
        .collect()
}

/// Waits, up to `timeout`, until the sum of metric `name` on `/metrics` satisfies `holds`.
async fn wait_for_metric(
    app: &Router,
    key: &str,
    what: &str,
    timeout: Duration,
    name: &str,
    holds: impl Fn(u64) -> bool,
) {
    let holds = &holds;
    common::wait_for(what, timeout, || {
        let (app, key) = (app.clone(), key.to_owned());
        async move {
            let (_, _, body) = call(&app, "GET", "/api/v1/metrics", Some(&key)).await;
            holds(common::metric_sum(&String::from_utf8_lossy(&body), name))
        }
    })
    .await;
}

/// Waits until the stack's pod has consumed `n` events.
async fn consumed(app: &Router, key: &str, n: u64) {
    let what = "the pod to consume every event";
    let timeout = Duration::from_secs(60);
    wait_for_metric(
        app,
        key,
        what,
        timeout,
        "kafka_events_consumed_total",
        |v| v >= n,
    )
    .await;
}

const BATCH: &str = "application/vnd.kafka-replicator.batch; v=2";
/// Room for the cursor and the JSON around the events.
const SLACK: usize = 64 * 1024;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn answers_hold_to_max_bytes_and_the_lambda_path_stays_under_its_limit() {
    const N: usize = 200;
    const VALUE: usize = 32 * 1024;
    let stack = common::start(common::config()).await;
    let key = stack.info.api_key.clone();
    common::produce_records(
        &stack.info.source_brokers,
        &stack.info.topic,
        &big_records(N, VALUE, 3),
    )
    .await;
    let app = stack_router(&stack);
    consumed(&app, &key, N as u64).await;
    let count = |body: &[u8], binary: bool| -> usize {
        if binary {
            shared::wire::decode(body).expect("batch").records.len()
        } else {
            serde_json::from_slice::<Value>(body).expect("JSON")["events"]
                .as_array()
                .expect("events")
                .len()
        }
    };
    let all = "/api/v1/events?cursor=earliest&limit=10000";
    for binary in [false, true] {
        let accept: &[(&str, &str)] = if binary { &[("accept", BATCH)] } else { &[] };
        // The default: 4 MiB of events, where 200 of 32 KiB (in base64 in JSON) are more.
        let (status, _, body) = call_with(&app, "GET", all, Some(&key), accept).await;
        assert_eq!(status, StatusCode::OK);
        let n = count(&body, binary);
        assert!(
            body.len() <= 4 * 1024 * 1024 + SLACK,
            "binary {binary}: {} bytes",
            body.len()
        );
        assert!((90..N).contains(&n), "binary {binary}: {n} events in 4 MiB");
        // Always at least one event, however small the bound.
        let uri = format!("{all}&max_bytes=1024");
        let (status, _, body) = call_with(&app, "GET", &uri, Some(&key), accept).await;
        assert_eq!((status, count(&body, binary)), (StatusCode::OK, 1));
        // 16 MiB holds them all.
        let uri = format!("{all}&max_bytes=16777216");
        let (_, _, body) = call_with(&app, "GET", &uri, Some(&key), accept).await;
        assert_eq!(count(&body, binary), N);
    }
    for bad in ["1023", "16777217", "4MiB", "-1"] {
        let uri = format!("{all}&max_bytes={bad}");
        let (status, _, body) = call(&app, "GET", &uri, Some(&key)).await;
        assert_eq!(
            (status, error_code(&body).as_str()),
            (StatusCode::BAD_REQUEST, "invalid_max_bytes"),
            "{bad}"
        );
    }

    // Through the Lambda path, asking for everything: Lambda's 6 MB response limit would
    // fail this request on every retry; capped at 4 MiB it is answered.
    let lambda = emulator::lambda_bridge::LambdaBridge::new(common::handlers_state(
        &common::stack_handlers_config(&stack, &key),
    ))
    .router();
    let uri = format!("{all}&max_bytes=16777216");
    for binary in [false, true] {
        let accept: &[(&str, &str)] = if binary { &[("accept", BATCH)] } else { &[] };
        let (status, _, body) = call_with(&lambda, "GET", &uri, Some(&key), accept).await;
        assert_eq!(
            status,
            StatusCode::OK,
            "binary {binary}: {}",
            String::from_utf8_lossy(&body[..body.len().min(200)])
        );
        assert!(
            body.len() <= 4 * 1024 * 1024 + SLACK,
            "binary {binary}: {} bytes",
            body.len()
        );
        assert!(count(&body, binary) < N);
    }
    stack.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_record_with_more_headers_than_a_u16_counts_is_served_in_both_forms() {
    let stack = common::start(common::config()).await;
    let key = stack.info.api_key.clone();
    let record = shared::Record {
        topic: String::new(),
        partition: 0,
        offset: 0,
        timestamp: Some(1_700_000_000_000),
        key: Some(vec![0xff]),
        value: Some(b"many headers".to_vec()),
        headers: (0..70_000u32)
            .map(|i| shared::event::RecordHeader {
                key: format!("h{}", i % 10).into_bytes(),
                value: Some(i.to_be_bytes().to_vec()),
            })
            .collect(),
    };
    common::produce_records(
        &stack.info.source_brokers,
        &stack.info.topic,
        std::slice::from_ref(&record),
    )
    .await;
    let app = stack_router(&stack);
    consumed(&app, &key, 1).await;
    let uri = "/api/v1/events?cursor=earliest&max_bytes=16777216";
    let (status, _, body) = call_with(&app, "GET", uri, Some(&key), &[("accept", BATCH)]).await;
    assert_eq!(
        status,
        StatusCode::OK,
        "{}",
        String::from_utf8_lossy(&body[..body.len().min(300)])
    );
    let batch = shared::wire::decode(&body).expect("batch");
    let (status, _, body) = call(&app, "GET", uri, Some(&key)).await;
    assert_eq!(status, StatusCode::OK);
    let page: shared::api::EventsResponse = serde_json::from_slice(&body).expect("JSON");
    stack.stop().await;
    let strip = |mut r: shared::Record| {
        r.topic.clear();
        r.offset = 0;
        r
    };
    assert_eq!(
        batch.records.into_iter().map(strip).collect::<Vec<_>>(),
        vec![record.clone()]
    );
    let from_json: Vec<shared::Record> = page
        .events
        .into_iter()
        .map(|e| strip(e.into_record().expect("record")))
        .collect();
    assert_eq!(from_json, vec![record]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_pod_answers_503_with_retry_after_past_its_bounds() {
    let mut config = common::config();
    config.events = Some(60);
    config.pod.buffer.buffer_max_events = 5;
    config.pod.bounds = consumer::config::FetchBoundsArgs {
        max_concurrent_fetches: 2,
        max_catchup_reads: 1,
        ..Default::default()
    };
    let stack = common::start(config).await;
    let key = stack.info.api_key.clone();
    let app = stack_router(&stack);
    consumed(&app, &key, 60).await;

    // Two long-polls hold the pod's two fetch slots; a third fetch is told to come back.
    let long_poll = |app: Router, key: String| {
        tokio::spawn(async move {
            call(
                &app,
                "GET",
                "/api/v1/events?cursor=latest&wait_ms=4000",
                Some(&key),
            )
            .await
            .0
        })
    };
    let first = long_poll(app.clone(), key.clone());
    let in_flight = |what: &'static str, n: u64| {
        let timeout = Duration::from_secs(3);
        wait_for_metric(
            &app,
            &key,
            what,
            timeout,
            "consumer_fetches_in_flight",
            move |v| v == n,
        )
    };
    in_flight("one long-poll in the pod", 1).await;
    let second = long_poll(app.clone(), key.clone());
    in_flight("two long-polls in the pod", 2).await;
    let polls = [first, second];
    let (status, headers, body) =
        call(&app, "GET", "/api/v1/events?cursor=latest", Some(&key)).await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(error_code(&body), "unavailable");
    assert_eq!(headers[http::header::RETRY_AFTER], "1");
    for poll in polls {
        assert_eq!(
            poll.await.expect("poll"),
            StatusCode::OK,
            "the long-polls were served"
        );
    }
    let (status, _, _) = call(&app, "GET", "/api/v1/events?cursor=latest", Some(&key)).await;
    assert_eq!(status, StatusCode::OK, "free slots serve again");

    // One catch-up read at a time: of two fetches that both need Kafka at once (the
    // buffer holds 5 of 60 events, the source answers slowly), one waits for nothing and
    // is told to come back, the other is served.
    stack
        .source
        .slow_down(Duration::from_millis(300))
        .expect("slow source");
    let from_start = |app: Router, key: String| {
        tokio::spawn(async move {
            call(
                &app,
                "GET",
                "/api/v1/events?cursor=earliest&limit=60",
                Some(&key),
            )
            .await
        })
    };
    let pair = [
        from_start(app.clone(), key.clone()),
        from_start(app.clone(), key.clone()),
    ];
    let mut statuses = Vec::new();
    for fetch in pair {
        let (status, headers, body) = fetch.await.expect("fetch");
        if status == StatusCode::SERVICE_UNAVAILABLE {
            assert_eq!(error_code(&body), "unavailable");
            assert_eq!(headers[http::header::RETRY_AFTER], "1");
        }
        statuses.push(status);
    }
    let (_, _, metrics) = call(&app, "GET", "/api/v1/metrics", Some(&key)).await;
    stack.stop().await;
    statuses.sort();
    assert_eq!(
        statuses,
        [StatusCode::OK, StatusCode::SERVICE_UNAVAILABLE],
        "one served, one told to wait"
    );
    let text = String::from_utf8_lossy(&metrics);
    assert!(
        common::metric_sum(&text, "consumer_fetches_refused_total") >= 2,
        "{text}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_fetch_far_behind_on_many_partitions_answers_within_its_read_budget() {
    const PARTITIONS: i32 = 60;
    const N: usize = 300;
    let mut config = common::config();
    config.partitions = PARTITIONS;
    config.pod.buffer.buffer_max_events = 1;
    config.pod.bounds.fetch_read_budget_ms = 1000;
    let stack = common::start(config).await;
    let key = stack.info.api_key.clone();
    common::produce_records(
        &stack.info.source_brokers,
        &stack.info.topic,
        &big_records(N, 10, PARTITIONS),
    )
    .await;
    let app = stack_router(&stack);
    consumed(&app, &key, N as u64).await;
    // A cursor at the start of every partition, then a source that answers in 100 ms: each
    // partition now costs a few round trips, and all of them more than the handlers wait.
    let first = json(&app, "/api/v1/events?cursor=earliest&limit=1", &key).await;
    let mut seen: Vec<String> = vec![first["events"][0]["key"].as_str().expect("key").to_owned()];
    let mut cursor = first["next_cursor"].as_str().expect("cursor").to_owned();
    stack
        .source
        .slow_down(Duration::from_millis(100))
        .expect("slow source");
    let mut answers = 0;
    while seen.len() < N && answers < 200 {
        let started = std::time::Instant::now();
        let page = json(
            &app,
            &format!("/api/v1/events?cursor={cursor}&limit=10000"),
            &key,
        )
        .await;
        let took = started.elapsed();
        assert!(
            took < Duration::from_secs(5),
            "answer {answers} took {took:?}"
        );
        answers += 1;
        for event in page["events"].as_array().expect("events") {
            seen.push(event["key"].as_str().expect("key").to_owned());
        }
        cursor = page["next_cursor"].as_str().expect("cursor").to_owned();
    }
    let (_, _, metrics) = call(&app, "GET", "/api/v1/metrics", Some(&key)).await;
    stack.stop().await;
    let unique: HashSet<&String> = seen.iter().collect();
    eprintln!("{N} events over {PARTITIONS} partitions in {answers} answers");
    assert_eq!((seen.len(), unique.len()), (N, N), "every event once");
    assert!(answers > 1, "the budget cut answers short");
    assert!(
        common::metric_sum(
            &String::from_utf8_lossy(&metrics),
            "consumer_fetches_cut_short_total"
        ) >= 1
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn records_larger_than_a_readers_fetch_are_read_from_kafka_whole_and_in_order() {
    // Above the catch-up readers' 512 KiB fetch and below the producer's 1 MB limit.
    const VALUE: usize = 700 * 1024;
    const N: usize = 6;
    let mut config = common::config();
    config.partitions = 1;
    config.pod.buffer.buffer_max_events = 1;
    let stack = common::start(config).await;
    let key = stack.info.api_key.clone();
    let records = big_records(N, VALUE, 1);
    common::produce_records(&stack.info.source_brokers, &stack.info.topic, &records).await;
    let app = stack_router(&stack);
    consumed(&app, &key, N as u64).await;
    // The buffer holds the last record only: the first five come from Kafka, a step at a
    // time, each answer going on where the last ended.
    let mut cursor = "earliest".to_owned();
    let mut seen = Vec::new();
    for _ in 0..(2 * N) {
        if seen.len() >= N {
            break;
        }
        let page = json(
            &app,
            &format!("/api/v1/events?cursor={cursor}&limit=2&max_bytes=16777216"),
            &key,
        )
        .await;
        for event in page["events"].as_array().expect("events") {
            // Random values are not UTF-8, so the event gives key and value in base64.
            let bytes = |field: &str| {
                BASE64
                    .decode(event[field].as_str().expect(field))
                    .expect("base64")
            };
            seen.push((bytes("key"), bytes("value")));
        }
        cursor = page["next_cursor"].as_str().expect("cursor").to_owned();
    }
    let (_, _, metrics) = call(&app, "GET", "/api/v1/metrics", Some(&key)).await;
    stack.stop().await;
    let want: Vec<(Vec<u8>, Vec<u8>)> = records
        .into_iter()
        .map(|r| (r.key.expect("key"), r.value.expect("value")))
        .collect();
    assert_eq!(seen.len(), N, "every record once");
    assert!(seen == want, "the records, whole and in order");
    assert!(
        common::metric_sum(
            &String::from_utf8_lossy(&metrics),
            "consumer_catchup_events_total"
        ) >= N as u64 - 1,
        "read from Kafka"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_internal_socket_answers_only_with_its_token() {
    let (stack, _) = stack_with_events(5, 1000).await;
    let key = stack.info.api_key.clone();
    let ConsumerAddr::Tcp(pod) = &stack.pod_addr else {
        panic!("a TCP pod");
    };
    let token = stack
        .internal_token()
        .expect("the emulator makes a token")
        .to_owned();
    let http = reqwest::Client::new();
    let status = |auth: Option<String>, path: &'static str| {
        let mut request = http.get(format!("http://{pod}{path}"));
        if let Some(auth) = auth {
            request = request.header("authorization", auth);
        }
        async move { request.send().await.expect("pod answers").status() }
    };
    assert_eq!(status(None, "/internal/v1/status").await, 401);
    assert_eq!(
        status(
            Some("Bearer wrong-token-0123456789".into()),
            "/internal/v1/status"
        )
        .await,
        401
    );
    assert_eq!(
        status(Some(format!("Basic {token}")), "/internal/v1/status").await,
        401
    );
    assert_eq!(status(None, "/internal/v1/metrics").await, 401);
    assert_eq!(
        status(Some(format!("Bearer {token}")), "/internal/v1/status").await,
        200
    );
    let fetch = http
        .post(format!("http://{pod}/internal/v1/fetch"))
        .json(&serde_json::json!({"cursor": "earliest", "limit": 5, "wait_ms": 0}))
        .send()
        .await
        .expect("pod answers");
    assert_eq!(fetch.status(), 401, "no events without the token");

    // Handlers without the token: the pod refuses them, and the caller, whose key is
    // fine, is told the service is unavailable, not that its key is wrong.
    let lost = handlers::router(common::handlers_state(&common::handlers_config(
        stack.pod_addr.clone().into(),
        None,
        &key,
    )));
    let (status, headers, body) =
        call(&lost, "GET", "/api/v1/events?cursor=earliest", Some(&key)).await;
    assert_eq!(
        (status, error_code(&body).as_str()),
        (StatusCode::SERVICE_UNAVAILABLE, "unavailable")
    );
    assert!(headers.contains_key(http::header::RETRY_AFTER));
    assert_eq!(
        call(&lost, "GET", "/api/v1/ready", None).await.0,
        StatusCode::SERVICE_UNAVAILABLE
    );
    // With it, all is well.
    let page = json(
        &stack_router(&stack),
        "/api/v1/events?cursor=earliest",
        &key,
    )
    .await;
    assert_eq!(page["events"].as_array().expect("events").len(), 5);
    stack.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ready_answers_from_a_status_cached_a_second_with_a_generic_reason() {
    use std::sync::atomic::{AtomicU64, Ordering};
    // A pod that counts how often it is asked, and whose error names an internal host.
    let asked = std::sync::Arc::new(AtomicU64::new(0));
    let counter = asked.clone();
    let fake_pod = axum::Router::new().route(
        "/internal/v1/status",
        axum::routing::get(move || {
            counter.fetch_add(1, Ordering::SeqCst);
            async {
                axum::Json(shared::internal::PodStatus {
                    consuming: false,
                    topics: vec!["orders".into()],
                    assigned_partitions: 0,
                    buffered_events: 0,
                    buffered_bytes: 0,
                    last_error: Some(
                        "b-1.secret-msk.internal:9096: SASL authentication failed".into(),
                    ),
                })
            }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = listener.local_addr().expect("addr");
    let server = tokio::spawn(async move { axum::serve(listener, fake_pod).await });
    let app = router_for(
        ConsumerAddr::Tcp(addr.to_string()),
        "test-key-0123456789abcdef",
    );

    let burst = (0..20).map(|_| {
        let app = app.clone();
        tokio::spawn(async move { call(&app, "GET", "/api/v1/ready", None).await })
    });
    let started = std::time::Instant::now();
    for answer in burst {
        let (status, _, body) = answer.await.expect("ready");
        assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
        let body: Value = serde_json::from_slice(&body).expect("JSON");
        assert_eq!(body["reason"], "the event source is not consuming yet");
    }
    let after_burst = asked.load(Ordering::SeqCst);
    let within_a_second = started.elapsed() < handlers::routes::READY_CACHE_FOR;
    // Once the cached answer is older than its second, the pod is asked again.
    tokio::time::sleep(handlers::routes::READY_CACHE_FOR).await;
    let (status, _, _) = call(&app, "GET", "/api/v1/ready", None).await;
    server.abort();
    assert!(
        within_a_second,
        "the burst took longer than the cache lasts"
    );
    assert_eq!(
        after_burst, 1,
        "twenty calls within a second asked the pod once"
    );
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(asked.load(Ordering::SeqCst), 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_scoped_key_from_api_keys_file_reads_only_its_topics() {
    let other = common::unique("payments");
    let mut config = common::config();
    config.events = Some(10);
    config.extra_topics = vec![other.clone()];
    let stack = common::start(config).await;
    let producer: FutureProducer = shared::kafka::client_config(&stack.info.source_brokers)
        .create()
        .expect("producer");
    for seq in 0..3 {
        producer
            .send(
                FutureRecord::<str, str>::to(&other).payload(&emulator::demo::demo_value(seq, 0)),
                Timeout::After(Duration::from_secs(10)),
            )
            .await
            .expect("produced");
    }
    let scoped = "laptop-7-key-0123456789abcdef";
    let everything = "ops-key-0123456789abcdef";
    let file = tempfile::NamedTempFile::new().expect("temp file");
    std::fs::write(
        file.path(),
        format!(
            r#"{{"api_keys":[{{"name":"laptop-7","key":"{scoped}","topics":["{}"]}},{{"name":"ops","key":"{everything}"}}]}}"#,
            stack.info.topic
        ),
    )
    .expect("keys file");
    let mut handlers = common::stack_handlers_config(&stack, &stack.info.api_key);
    handlers.keys = handlers::config::KeyArgs {
        api_keys_file: Some(file.path().to_owned()),
        ..Default::default()
    };
    let app = handlers::router(
        handlers::AppState::from_config(&handlers)
            .await
            .expect("keys from the file"),
    );
    consumed(&app, everything, 13).await;

    // Without a filter the scoped key reads its topic only, and its cursor names only it.
    let page = json(&app, "/api/v1/events?cursor=earliest", scoped).await;
    let events = page["events"].as_array().expect("events");
    assert_eq!(events.len(), 10, "{page}");
    assert!(
        events
            .iter()
            .all(|e| e["topic"] == stack.info.topic.as_str())
    );
    let own =
        shared::Cursor::decode(page["next_cursor"].as_str().expect("cursor")).expect("cursor");
    assert!(own.topics().all(|t| t == stack.info.topic));
    // The unscoped key reads both.
    let page = json(&app, "/api/v1/events?cursor=earliest", everything).await;
    assert_eq!(
        page["events"].as_array().expect("events").len(),
        13,
        "{page}"
    );
    let both = page["next_cursor"].as_str().expect("cursor").to_owned();
    // Another topic, in the filter or in a cursor, is 403 forbidden_topic, for a poll and
    // a stream alike.
    for uri in [
        format!("/api/v1/events?topic={other}"),
        format!("/api/v1/events?cursor={both}"),
        format!("/api/v1/events/stream?topic={other}"),
    ] {
        let (status, _, body) = call(&app, "GET", &uri, Some(scoped)).await;
        assert_eq!(
            status,
            StatusCode::FORBIDDEN,
            "{uri}: {}",
            String::from_utf8_lossy(&body)
        );
        assert_eq!(error_code(&body), "forbidden_topic", "{uri}");
    }
    // The server's /metrics says when each key last asked and how far behind it is, by
    // name: 4 of the 10 events read, so 6 behind once it presents that cursor.
    let page = json(&app, "/api/v1/events?cursor=earliest&limit=4", scoped).await;
    let after_four = page["next_cursor"].as_str().expect("cursor").to_owned();
    json(
        &app,
        &format!("/api/v1/events?cursor={after_four}&limit=1"),
        scoped,
    )
    .await;
    let (_, _, metrics) = call(&app, "GET", "/api/v1/metrics", Some(everything)).await;
    let metrics = String::from_utf8(metrics).expect("text");
    assert!(
        metrics.contains(r#"replicator_client_last_poll_seconds{key="laptop-7"}"#)
            && metrics.contains(r#"replicator_client_last_poll_seconds{key="ops"}"#),
        "{metrics}"
    );
    let lag: i64 = metrics
        .lines()
        .filter(|l| l.starts_with(r#"replicator_client_lag_events{key="laptop-7""#))
        .filter_map(|l| l.rsplit_once(' ')?.1.parse::<i64>().ok())
        .sum();
    assert_eq!(lag, 6, "{metrics}");
    assert!(
        !metrics.contains(scoped) && !metrics.contains(everything),
        "no key in /metrics"
    );
    stack.stop().await;
}
