//! The whole pipeline, source Kafka → consumer pod → API → client → local Kafka: every event
//! arrives exactly once, key, value, headers and timestamp intact, per-partition order kept;
//! on the librdkafka mock cluster and on Apache Kafka, with the handlers as a server and
//! through the Lambda adapter.

use crate::common;

use std::collections::{BTreeMap, HashSet};
use std::time::Duration;

use emulator::verify::read_topic;
use rdkafka::message::{Header, OwnedHeaders};
use rdkafka::producer::{FutureProducer, FutureRecord};
use rdkafka::util::Timeout;
use shared::Record;

/// Records that the demo producer never makes: binary payloads, a null key, a tombstone,
/// a header without value, an old timestamp. Returns how many were produced.
async fn produce_unusual_records(brokers: &str, topic: &str) -> usize {
    let producer: FutureProducer = shared::kafka::client_config(brokers)
        .create()
        .expect("producer");
    let binary = [0u8, 159, 146, 150, 0xff];
    let headers = OwnedHeaders::new()
        .insert(Header {
            key: "bin",
            value: Some(&[0xffu8, 0xfe][..]),
        })
        .insert(Header {
            key: "empty",
            value: None::<&[u8]>,
        });
    let records: Vec<FutureRecord<'_, [u8], [u8]>> = vec![
        FutureRecord::to(topic)
            .payload(&binary[..])
            .headers(headers)
            .partition(0),
        FutureRecord::to(topic).key(&b"tombstone"[..]).partition(1),
        FutureRecord::to(topic)
            .key(&b"old"[..])
            .payload(&b"{\"note\":\"from 2020\"}"[..])
            .timestamp(1_600_000_000_000)
            .partition(2),
    ];
    let count = records.len();
    for record in records {
        producer
            .send(record, Timeout::After(Duration::from_secs(30)))
            .await
            .expect("produced");
    }
    count
}

/// The source topic and its copy in local Kafka, once each holds `expected` records,
/// per partition in offset order.
async fn source_and_copies(
    info: &emulator::ReadyInfo,
    expected: usize,
) -> (BTreeMap<i32, Vec<Record>>, BTreeMap<i32, Vec<Record>>) {
    let source = read_topic(
        &info.source_brokers,
        &info.topic,
        expected,
        Duration::from_secs(60),
    )
    .await
    .expect("read source");
    let copied = read_topic(
        &info.local_brokers,
        &info.topic,
        expected,
        Duration::from_secs(120),
    )
    .await
    .expect("read local");
    (source, copied)
}

/// Asserts that the source holds `expected` records and local Kafka as many copies.
fn assert_totals(
    source: &BTreeMap<i32, Vec<Record>>,
    copied: &BTreeMap<i32, Vec<Record>>,
    expected: usize,
) {
    let total = |m: &BTreeMap<i32, Vec<Record>>| m.values().map(Vec::len).sum::<usize>();
    assert_eq!(
        total(source),
        expected,
        "the source holds what was produced"
    );
    assert_eq!(
        total(copied),
        expected,
        "local Kafka holds every record exactly once"
    );
}

/// What must survive the copy: everything but the offset and the provenance headers.
fn content(r: &Record) -> Record {
    let headers = r
        .headers
        .iter()
        .filter(|h| !h.key.starts_with(b"kafka-replicator.source."))
        .cloned()
        .collect();
    Record {
        offset: 0,
        headers,
        ..r.clone()
    }
}

async fn replicates_exactly_once(
    test: &str,
    source: Option<String>,
    local: Option<String>,
    mode: emulator::HandlersMode,
) {
    const N: u64 = 3000;
    let mut config = common::config();
    config.handlers_mode = mode;
    config.source_brokers = source;
    config.local_brokers = local;
    config.partitions = 3;
    config.events = Some(N);
    config.run_client = true;
    config.client.batch_limit = 500;
    let stack = common::start(config).await;
    let info = stack.info.clone();
    eprintln!(
        "{test}: source {} ({}), local {} ({})",
        info.source_brokers,
        stack.source.kind(),
        info.local_brokers,
        stack.local.kind()
    );
    let expected = N as usize + produce_unusual_records(&info.source_brokers, &info.topic).await;

    let (source, copied) = source_and_copies(&info, expected).await;
    stack.stop().await;

    assert_totals(&source, &copied, expected);
    for (partition, records) in &source {
        let want: Vec<_> = records.iter().map(content).collect();
        let got: Vec<_> = copied
            .get(partition)
            .map(|rs| rs.iter().map(content).collect())
            .unwrap_or_default();
        assert!(
            want == got,
            "partition {partition}: the copy differs from the source (order, key, value, headers or timestamp)"
        );
    }
    for (partition, records) in &copied {
        for (copy, original) in records.iter().zip(&source[partition]) {
            assert_eq!(
                common::provenance(copy),
                (original.topic.clone(), original.partition, original.offset),
                "provenance headers name the source record"
            );
        }
    }
    let seqs: HashSet<u64> = copied
        .values()
        .flatten()
        .filter(|r| r.headers.iter().any(|h| h.key == b"seq"))
        .map(|r| common::seq_of(r.value.as_deref().expect("demo events have values")))
        .collect();
    assert_eq!(seqs.len() as u64, N, "every demo seq present once");
    assert!(seqs.iter().all(|s| *s < N));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replicates_exactly_once_on_mock_cluster() {
    replicates_exactly_once(
        "replicates_exactly_once_on_mock_cluster",
        None,
        None,
        emulator::HandlersMode::Server,
    )
    .await;
}

/// The same run with every request answered as `handlers-lambda` answers an API Gateway
/// v2 invocation.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replicates_exactly_once_through_the_lambda_adapter() {
    replicates_exactly_once(
        "replicates_exactly_once_through_the_lambda_adapter",
        None,
        None,
        emulator::HandlersMode::Lambda,
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replicates_exactly_once_on_apache_kafka() {
    let (source, local) = common::apache_or_mock("replicates_exactly_once_on_apache_kafka");
    replicates_exactly_once(
        "replicates_exactly_once_on_apache_kafka",
        source,
        local,
        emulator::HandlersMode::Server,
    )
    .await;
}

/// A backlog that ends exactly on a full batch is committed at once, not a poll interval
/// later: the fetch that continues an open transaction answers without long-polling.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_backlog_ending_on_a_full_batch_is_committed_without_waiting_a_poll() {
    const N: u64 = 400;
    const LIMIT: u32 = 100;
    const POLL: Duration = Duration::from_secs(30);
    let mut config = common::config();
    config.events = Some(N);
    let stack = common::start(config).await;
    let info = stack.info.clone();
    // The whole backlog is in the pod first, so every batch comes back full.
    let http = reqwest::Client::new();
    common::wait_for("the backlog in the pod", Duration::from_secs(30), || {
        let request = http
            .get(format!("{}/events", info.api_base))
            .header("x-api-key", &info.api_key)
            .query(&[("cursor", "earliest"), ("limit", "1000")]);
        async move {
            let Ok(response) = request.send().await else {
                return false;
            };
            let answer: serde_json::Value = response.json().await.unwrap_or_default();
            answer["events"].as_array().map_or(0, Vec::len) as u64 == N
        }
    })
    .await;

    let replicator = client::Replicator::new(&client::Config {
        server_url: Some(stack.server_url.clone()),
        api_key: Some(info.api_key.clone()),
        api_prefix: "/api/v1".into(),
        kafka_brokers: Some(info.local_brokers.clone()),
        kafka_topic: None,
        topic_prefix: None,
        interval_ms: POLL.as_millis() as u64,
        from: client::config::StartPosition::Earliest,
        batch_limit: LIMIT,
        compression: false,
        state_topic: "kafka-replicator-client-state".into(),
        insecure_http: false,
        metrics_addr: None,
        stream: client::config::StreamMode::Auto,
        client_id: common::unique("client"),
        properties: Default::default(),
    })
    .expect("client");
    let mut progress = replicator.watch();
    let stop = tokio_util::sync::CancellationToken::new();
    let run = tokio::spawn(replicator.run(stop.clone()));
    // The guard `wait_for` returns is dropped at once: it holds the client's next update.
    let committed = tokio::time::timeout(POLL / 3, progress.wait_for(|p| p.events >= N))
        .await
        .is_ok_and(|seen| seen.is_ok());
    stop.cancel();
    let _ = run.await;
    stack.stop().await;
    assert!(
        committed,
        "{N} events in {} full batches committed well before one poll interval ({POLL:?})",
        N / u64::from(LIMIT)
    );
}

/// Every byte sequence Kafka can hold, in every field, through the whole pipeline: random
/// keys, values, header keys and header values (NULs, invalid UTF-8, JSON's special
/// characters), null and empty ones, a header key that is not UTF-8 (which once panicked
/// the pod's consumer), and a record with more headers than a u16 counts. Each copy must
/// equal its source byte for byte, in order, once; and the pod must still be ready.
async fn every_byte_sequence_is_copied_exactly(
    test: &str,
    source: Option<String>,
    local: Option<String>,
) {
    const N: usize = 400;
    let seed: u64 = rand::random();
    eprintln!("{test}: seed {seed} (KAFKA_REPLICATOR_TEST_SEED replays it)");
    let seed = std::env::var("KAFKA_REPLICATOR_TEST_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(seed);
    let mut config = common::config();
    config.source_brokers = source;
    config.local_brokers = local;
    config.partitions = 3;
    config.run_client = true;
    let stack = common::start(config).await;
    let info = stack.info.clone();
    let mut records = common::random_records(seed, N, 3);
    records.push(Record {
        topic: String::new(),
        partition: 0,
        offset: 0,
        timestamp: Some(1_700_000_000_000),
        key: Some(b"not-utf8-header-key".to_vec()),
        value: Some(b"{}".to_vec()),
        headers: vec![shared::event::RecordHeader {
            key: vec![0xff, 0xfe, 0x00, b'k'],
            value: Some(vec![0xc3, 0x28]),
        }],
    });
    records.push(Record {
        topic: String::new(),
        partition: 1,
        offset: 0,
        timestamp: Some(1_700_000_000_001),
        key: None,
        value: None,
        headers: (0..70_000u32)
            .map(|i| shared::event::RecordHeader {
                key: format!("h{}", i % 7).into_bytes(),
                value: (i % 3 != 0).then(|| vec![(i % 251) as u8]),
            })
            .collect(),
    });
    common::produce_records(&info.source_brokers, &info.topic, &records).await;
    let expected = records.len();

    let (source, copied) = source_and_copies(&info, expected).await;
    let ready = reqwest::get(format!("{}/ready", info.api_base))
        .await
        .expect("ready")
        .status();
    stack.stop().await;

    eprintln!("{test}: checked with seed {seed}");
    assert_totals(&source, &copied, expected);
    for (partition, originals) in &source {
        let got = &copied[partition];
        for (i, (copy, original)) in got.iter().zip(originals).enumerate() {
            assert!(
                content(copy) == content(original),
                "partition {partition}, record {i}: the copy differs from the source (seed {seed})"
            );
        }
    }
    assert_eq!(ready, 200, "the pod is still ready after every record");
}

/// A source whose producers compress with zstd, lz4, snappy or gzip is read and copied
/// byte for byte.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_codec_is_read_and_copied_on_apache_kafka() {
    const TEST: &str = "every_codec_is_read_and_copied_on_apache_kafka";
    const CODECS: [&str; 4] = ["zstd", "lz4", "snappy", "gzip"];
    let (source, local) = common::apache_or_mock(TEST);
    let mut config = common::config();
    config.source_brokers = source;
    config.local_brokers = local;
    config.run_client = true;
    let stack = common::start(config).await;
    let info = stack.info.clone();
    let records = common::random_records(rand::random(), 100 * CODECS.len(), 3);
    for (codec, part) in CODECS.iter().zip(records.chunks(100)) {
        common::produce_compressed(&info.source_brokers, &info.topic, part, codec).await;
    }
    let (source, copied) = source_and_copies(&info, records.len()).await;
    stack.stop().await;
    assert_totals(&source, &copied, records.len());
    for (partition, originals) in &source {
        for (copy, original) in copied[partition].iter().zip(originals) {
            assert!(content(copy) == content(original), "partition {partition}");
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_byte_sequence_is_copied_exactly_on_mock_cluster() {
    every_byte_sequence_is_copied_exactly(
        "every_byte_sequence_is_copied_exactly_on_mock_cluster",
        None,
        None,
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_byte_sequence_is_copied_exactly_on_apache_kafka() {
    const TEST: &str = "every_byte_sequence_is_copied_exactly_on_apache_kafka";
    let (source, local) = common::apache_or_mock(TEST);
    every_byte_sequence_is_copied_exactly(TEST, source, local).await;
}
