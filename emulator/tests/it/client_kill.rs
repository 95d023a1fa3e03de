//! A client killed hard (`kill -9`) at random points, five times, while events stream in,
//! loses and duplicates nothing. Alone in its own test binary, so no other test competes
//! for the two cores while it times its kills. Local Kafka must be Apache Kafka:
//! librdkafka's mock cluster shows aborted transactions even to `read_committed` readers.

use crate::common;

use std::time::Duration;

use emulator::verify::read_topic;
use rand::Rng;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn client_killed_hard_five_times_loses_and_duplicates_nothing_on_apache_kafka() {
    let test = "client_killed_hard_five_times_loses_and_duplicates_nothing_on_apache_kafka";
    let Some((_, local)) = common::apache_kafka_only(test) else {
        return;
    };
    eprintln!("{test}: local Kafka is Apache Kafka at {local}");
    const N: u64 = 3000;
    let mut config = common::config();
    config.local_brokers = Some(local.clone());
    config.partitions = 3;
    config.events = Some(N);
    // Slow enough that the stream outlasts the five kills.
    config.rate = 300;
    let stack = common::start(config).await;
    let spec = common::ChildClient {
        server_url: stack.info.api_base.trim_end_matches("/api/v1").to_owned(),
        api_key: stack.info.api_key.clone(),
        local_brokers: local.clone(),
        client_id: common::unique("killed-client"),
    };
    // A fresh broker creates its transaction log on first use, which takes seconds; do it
    // now so the clients' kills land in their work, not in that one-off wait.
    tokio::task::spawn_blocking({
        let local = local.clone();
        move || {
            use rdkafka::producer::{BaseProducer, Producer};
            let warm: BaseProducer = shared::kafka::client_config(&local)
                .set("transactional.id", common::unique("warm-up"))
                .create()
                .expect("producer");
            warm.init_transactions(Duration::from_secs(60))
                .expect("transaction coordinator ready");
        }
    })
    .await
    .expect("warm-up");
    // How far local Kafka's log has grown (records written, committed or not, and markers):
    // a cheap sign that a client is at work.
    let written = |brokers: String, topic: String| async move {
        tokio::task::spawn_blocking(move || {
            use rdkafka::consumer::{BaseConsumer, Consumer};
            let probe: BaseConsumer = shared::kafka::client_config(&brokers)
                .create()
                .expect("probe");
            (0..3)
                .map(|p| {
                    probe
                        .fetch_watermarks(&topic, p, Duration::from_secs(10))
                        .map_or(0, |(_, high)| high)
                })
                .sum::<i64>()
        })
        .await
        .expect("probe task")
    };
    let mut grown_to = written(local.clone(), stack.info.topic.clone()).await;
    for round in 0..5 {
        let mut child = common::spawn_child(&spec);
        // Kill only once this client is writing, then at a random later point: inside a
        // transaction or between two.
        let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
        while written(local.clone(), stack.info.topic.clone()).await <= grown_to
            && tokio::time::Instant::now() < deadline
        {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        let extra = rand::rng().random_range(0..300);
        tokio::time::sleep(Duration::from_millis(extra)).await;
        child.kill().expect("SIGKILL");
        child.wait().expect("reaped");
        grown_to = written(local.clone(), stack.info.topic.clone()).await;
        eprintln!(
            "{test}: round {round}: client killed {extra} ms after it started writing; log end now {grown_to}"
        );
    }
    let before_last = read_topic(&local, &stack.info.topic, 1, Duration::from_secs(10))
        .await
        .expect("read local");
    let committed: usize = before_last.values().map(Vec::len).sum();
    eprintln!("{test}: {committed} events committed by the killed clients");
    // A last client finishes the job.
    let mut last = common::spawn_child(&spec);
    let copied = read_topic(
        &local,
        &stack.info.topic,
        N as usize,
        Duration::from_secs(90),
    )
    .await
    .expect("read local");
    last.kill().expect("SIGKILL");
    last.wait().expect("reaped");
    let source = read_topic(
        &stack.info.source_brokers,
        &stack.info.topic,
        N as usize,
        Duration::from_secs(30),
    )
    .await
    .expect("read source");
    stack.stop().await;

    assert!(
        committed > 0 && committed < N as usize,
        "the killed clients made progress, and were killed mid-stream: {committed}"
    );
    common::assert_exactly_once(test, &copied, N);
    for (partition, records) in &source {
        let want: Vec<_> = records.iter().map(|r| r.value.clone()).collect();
        let got: Vec<_> = copied
            .get(partition)
            .map(|rs| rs.iter().map(|r| r.value.clone()).collect())
            .unwrap_or_default();
        assert!(
            want == got,
            "partition {partition}: order differs from the source"
        );
    }
}
