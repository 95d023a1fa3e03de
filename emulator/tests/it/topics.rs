//! Where copies land and who serves them: several source topics copied under a prefix or
//! merged into one renamed topic, a missing destination created with the source's
//! partition count, and several handler replicas answering in turn with no sticky routing.

use crate::common;

use std::collections::{BTreeMap, HashSet};
use std::time::Duration;

use emulator::demo::DemoProducer;
use emulator::verify::read_topic;
use shared::Record;
use tokio_util::sync::CancellationToken;

const PER_TOPIC: u64 = 1000;

/// Produces demo events `0..PER_TOPIC` into each topic.
async fn produce_into(brokers: &str, topics: &[String]) {
    for topic in topics {
        let demo = DemoProducer::new(brokers, topic, 0, Some(PER_TOPIC)).expect("producer");
        let acked = demo.run(CancellationToken::new()).await;
        assert_eq!(acked, PER_TOPIC, "the source took every event of {topic}");
    }
}

/// `(source topic, seq)` of every copy, checking on the way that each copy sits on its
/// source partition and follows the source order within it.
fn audit(copied: &BTreeMap<i32, Vec<Record>>) -> Vec<(String, u64)> {
    let mut seen = Vec::new();
    for (partition, records) in copied {
        let mut last: BTreeMap<String, i64> = BTreeMap::new();
        for copy in records {
            let (topic, source_partition, offset) = common::provenance(copy);
            assert_eq!(
                source_partition, *partition,
                "a copy of {topic}/{source_partition} sits on partition {partition}"
            );
            let previous = last.insert(topic.clone(), offset);
            assert!(
                previous.is_none_or(|p| p < offset),
                "{topic}/{partition}: offset {offset} copied after {previous:?}"
            );
            seen.push((topic, common::seq_of(copy.value.as_deref().expect("value"))));
        }
    }
    seen
}

fn assert_each_once(test: &str, seen: &[(String, u64)], topics: &[String]) {
    let distinct: HashSet<&(String, u64)> = seen.iter().collect();
    eprintln!(
        "{test}: {} copies, {} distinct, of {} produced",
        seen.len(),
        distinct.len(),
        PER_TOPIC * topics.len() as u64
    );
    for topic in topics {
        for seq in 0..PER_TOPIC {
            assert!(
                distinct.contains(&(topic.clone(), seq)),
                "{topic} event {seq} lost"
            );
        }
    }
    assert_eq!(seen.len(), distinct.len(), "no event duplicated");
    assert_eq!(seen.len() as u64, PER_TOPIC * topics.len() as u64);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn several_topics_copy_under_a_prefix_into_topics_created_like_the_source() {
    const TEST: &str = "several_topics_copy_under_a_prefix_into_topics_created_like_the_source";
    const PARTITIONS: i32 = 4;
    let (source, local) = common::apache_or_mock(TEST);
    let on_apache = source.is_some();
    let mut config = common::config();
    config.source_brokers = source;
    config.local_brokers = local;
    config.extra_topics = vec![common::unique("payments")];
    config.partitions = PARTITIONS;
    config.create_local_topic = false;
    config.client.topic_prefix = Some("copy.".into());
    config.run_client = true;
    config.client.batch_limit = 300;
    let stack = common::start(config.clone()).await;
    let topics: Vec<String> = std::iter::once(config.topic.clone())
        .chain(config.extra_topics.clone())
        .collect();
    let destinations: Vec<String> = topics.iter().map(|t| format!("copy.{t}")).collect();
    if !on_apache {
        // The mock cluster cannot create topics through the admin API (the client then
        // leaves them to auto-creation): set them up as an operator would.
        for topic in &destinations {
            stack
                .local
                .create_topic(topic, PARTITIONS)
                .await
                .expect("create");
        }
    }
    produce_into(&stack.info.source_brokers, &topics).await;

    let mut seen = Vec::new();
    for topic in &destinations {
        let copied = read_topic(
            &stack.info.local_brokers,
            topic,
            PER_TOPIC as usize,
            Duration::from_secs(90),
        )
        .await
        .expect("read local");
        assert_eq!(
            copied.len(),
            PARTITIONS as usize,
            "{topic} has the source's partition count"
        );
        let audited = audit(&copied);
        assert!(
            audited
                .iter()
                .all(|(source, _)| format!("copy.{source}") == *topic),
            "{topic} holds only copies of its own source"
        );
        seen.extend(audited);
    }
    stack.stop().await;
    assert_each_once(TEST, &seen, &topics);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn several_topics_merge_into_one_renamed_topic() {
    const TEST: &str = "several_topics_merge_into_one_renamed_topic";
    let mut config = common::config();
    config.extra_topics = vec![common::unique("payments")];
    let merged = common::unique("merged");
    config.client.kafka_topic = Some(merged.clone());
    config.create_local_topic = false;
    config.run_client = true;
    let stack = common::start(config.clone()).await;
    stack
        .local
        .create_topic(&merged, config.partitions)
        .await
        .expect("create");
    let topics: Vec<String> = std::iter::once(config.topic.clone())
        .chain(config.extra_topics.clone())
        .collect();
    produce_into(&stack.info.source_brokers, &topics).await;
    let copied = read_topic(
        &stack.info.local_brokers,
        &merged,
        2 * PER_TOPIC as usize,
        Duration::from_secs(60),
    )
    .await
    .expect("read local");
    stack.stop().await;
    assert_each_once(TEST, &audit(&copied), &topics);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn handler_replicas_answer_in_turn_without_sticky_routing() {
    const TEST: &str = "handler_replicas_answer_in_turn_without_sticky_routing";
    const N: u64 = 2000;
    const REPLICAS: usize = 3;
    let mut config = common::config();
    config.handler_replicas = REPLICAS;
    config.events = Some(N);
    config.run_client = true;
    config.client.batch_limit = 50;
    // Polls, many requests to spread (a stream is one request on one replica).
    config.client.stream = client::config::StreamMode::Off;
    let stack = common::start(config).await;
    let copied = common::read_copies(&stack, N).await;
    let served = stack.requests_per_replica();
    stack.stop().await;
    eprintln!("{TEST}: requests per replica {served:?}");
    common::assert_exactly_once(TEST, &copied, N);
    assert_eq!(served.len(), REPLICAS);
    assert!(
        served.iter().all(|n| *n >= 10),
        "every replica served part of the stream: {served:?}"
    );
}
