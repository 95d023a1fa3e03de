//! Reading a whole topic back, as a `read_committed` consumer sees it, to count loss and
//! duplicates and compare copies record by record (tests and benchmarks).

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::error::KafkaError;
use rdkafka::{Offset, TopicPartitionList};
use shared::Record;
use shared::kafka::{Cluster, EofQuietContext, topic_partitions};

/// Every record of `topic` at `brokers`, per partition in offset order, once at least
/// `expected` records are visible (or `timeout` passed) and every partition was read to
/// its end.
pub async fn read_topic(
    brokers: &str,
    topic: &str,
    expected: usize,
    timeout: Duration,
) -> Result<BTreeMap<i32, Vec<Record>>, KafkaError> {
    read_cluster_topic(
        &Cluster::new(brokers, Default::default()),
        topic,
        expected,
        timeout,
    )
    .await
}

/// The same from a cluster reached with properties of its own (TLS, SASL, …).
pub async fn read_cluster_topic(
    cluster: &Cluster,
    topic: &str,
    expected: usize,
    timeout: Duration,
) -> Result<BTreeMap<i32, Vec<Record>>, KafkaError> {
    let cluster = cluster.clone();
    let topic = topic.to_owned();
    tokio::task::spawn_blocking(move || read_topic_blocking(&cluster, &topic, expected, timeout))
        .await
        .map_err(|_| KafkaError::Canceled)?
}

fn read_topic_blocking(
    cluster: &Cluster,
    topic: &str,
    expected: usize,
    timeout: Duration,
) -> Result<BTreeMap<i32, Vec<Record>>, KafkaError> {
    let consumer: BaseConsumer<EofQuietContext> = cluster.consumer(
        |c| {
            c.set("group.id", "kafka-replicator-verify")
                .set("enable.auto.commit", "false")
                .set("isolation.level", "read_committed")
                .set("enable.partition.eof", "true");
        },
        EofQuietContext::of("copy verifier", cluster),
    )?;
    let deadline = Instant::now() + timeout;
    // A topic created moments ago may not be in the metadata yet: ask until it is.
    let partitions: Vec<i32> = loop {
        let metadata = consumer.fetch_metadata(Some(topic), Duration::from_secs(10))?;
        let found = topic_partitions(&metadata, topic);
        if !found.is_empty() || Instant::now() >= deadline {
            break found;
        }
        std::thread::sleep(Duration::from_millis(100));
    };
    let mut tpl = TopicPartitionList::new();
    for p in &partitions {
        tpl.add_partition_offset(topic, *p, Offset::Beginning)?;
    }
    consumer.assign(&tpl)?;
    let mut records: BTreeMap<i32, Vec<Record>> =
        partitions.iter().map(|p| (*p, Vec::new())).collect();
    let mut total = 0usize;
    let mut at_end: BTreeMap<i32, bool> = partitions.iter().map(|p| (*p, false)).collect();
    while Instant::now() < deadline {
        match consumer.poll(Duration::from_millis(100)) {
            Some(Ok(m)) => {
                let record = shared::kafka::record_of(&m);
                at_end.insert(record.partition, false);
                records.entry(record.partition).or_default().push(record);
                total += 1;
            }
            Some(Err(KafkaError::PartitionEOF(p))) => {
                at_end.insert(p, true);
            }
            Some(Err(err)) => tracing::debug!(error = %err, "verify read error"),
            None => {}
        }
        if total >= expected && at_end.values().all(|e| *e) {
            break;
        }
    }
    Ok(records)
}
