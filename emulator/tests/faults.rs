//! Faults the client must survive without loss or duplicates: killed hard (`kill -9`) at
//! random points, five times, while events stream in. Local Kafka must be Apache Kafka:
//! librdkafka's mock cluster shows aborted transactions even to `read_committed` readers.

mod common;

use std::collections::HashSet;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use emulator::verify::read_topic;
use rand::Rng;
use serde::{Deserialize, Serialize};
use shared::config::{ClientConfig, StartPosition};

/// What the parent test hands a child process that runs the client.
#[derive(Debug, Serialize, Deserialize)]
struct ChildClient {
    server_url: String,
    api_key: String,
    local_brokers: String,
    client_id: String,
}

const CHILD_ENV: &str = "KAFKA_REPLICATOR_TEST_CHILD_CLIENT";

/// Not a test of its own: the body of the child process the fault tests kill.
#[test]
#[ignore = "run by the fault tests as a child process"]
fn child_client_process() {
    let Ok(spec) = std::env::var(CHILD_ENV) else {
        return;
    };
    let spec: ChildClient = serde_json::from_str(&spec).expect("child spec");
    let config = ClientConfig {
        server_url: Some(spec.server_url),
        api_key: Some(spec.api_key),
        api_prefix: "/api/v1".into(),
        kafka_brokers: Some(spec.local_brokers),
        kafka_topic: None,
        interval_ms: 50,
        from: StartPosition::Earliest,
        batch_limit: 50,
        state_topic: "kafka-replicator-client-state".into(),
        client_id: spec.client_id,
    };
    let runtime = tokio::runtime::Runtime::new().expect("runtime");
    runtime.block_on(async {
        let replicator = client::Replicator::new(&config).expect("client");
        // Runs until killed.
        replicator
            .run(tokio_util::sync::CancellationToken::new())
            .await
            .expect("client run");
    });
}

fn spawn_child(spec: &ChildClient) -> Child {
    Command::new(std::env::current_exe().expect("test binary"))
        .args([
            "--exact",
            "child_client_process",
            "--ignored",
            "--nocapture",
            "--test-threads=1",
        ])
        .env(CHILD_ENV, serde_json::to_string(spec).expect("spec"))
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("child client")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn client_killed_hard_five_times_loses_and_duplicates_nothing_on_apache_kafka() {
    let test = "client_killed_hard_five_times_loses_and_duplicates_nothing_on_apache_kafka";
    let Some((_, local)) = common::apache_kafka() else {
        assert!(
            std::env::var_os("CI").is_none(),
            "{test}: CI must run this on Apache Kafka (TEST_KAFKA_LOCAL_BROKERS)"
        );
        eprintln!(
            "{test}: needs Apache Kafka as the local cluster (set TEST_KAFKA_LOCAL_BROKERS); not run"
        );
        return;
    };
    eprintln!("{test}: local Kafka is Apache Kafka at {local}");
    const N: u64 = 4000;
    let mut config = common::config();
    config.local_brokers = Some(local.clone());
    config.partitions = 3;
    config.events = Some(N);
    config.rate = 800;
    let stack = common::start(config).await;
    let spec = ChildClient {
        server_url: stack.info.api_base.trim_end_matches("/api/v1").to_owned(),
        api_key: stack.info.api_key.clone(),
        local_brokers: local.clone(),
        client_id: common::unique("killed-client"),
    };
    for round in 0..5 {
        let mut child = spawn_child(&spec);
        let wait = rand::rng().random_range(300..1500);
        tokio::time::sleep(Duration::from_millis(wait)).await;
        child.kill().expect("SIGKILL");
        child.wait().expect("reaped");
        eprintln!("{test}: round {round}: client killed after {wait} ms");
    }
    let before_last = read_topic(&local, &stack.info.topic, 1, Duration::from_secs(10))
        .await
        .expect("read local");
    let committed: usize = before_last.values().map(Vec::len).sum();
    eprintln!("{test}: {committed} events committed by the killed clients");
    assert!(
        committed > 0,
        "the killed clients made progress between kills"
    );
    // A last client finishes the job.
    let mut last = spawn_child(&spec);
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

    let seqs: Vec<u64> = copied
        .values()
        .flatten()
        .map(|r| common::seq_of(r.value.as_deref().expect("value")))
        .collect();
    let unique: HashSet<u64> = seqs.iter().copied().collect();
    eprintln!(
        "{test}: {} copies of {} distinct events (of {N})",
        seqs.len(),
        unique.len()
    );
    assert_eq!(unique.len() as u64, N, "no event lost");
    assert_eq!(seqs.len() as u64, N, "no event duplicated");
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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_starting_after_the_buffer_overflowed_many_times_gets_everything() {
    let test = "a_client_starting_after_the_buffer_overflowed_many_times_gets_everything";
    let (source, local) = common::apache_or_mock(test);
    const N: u64 = 3000;
    const BUFFER: usize = 40;
    let mut config = common::config();
    config.source_brokers = source;
    config.local_brokers = local;
    config.events = Some(N);
    config.buffer_max_events = BUFFER;
    let stack = common::start(config).await;
    // All produced and consumed by the pod (which kept only the last 40) before the client
    // starts.
    read_topic(
        &stack.info.source_brokers,
        &stack.info.topic,
        N as usize,
        Duration::from_secs(60),
    )
    .await
    .expect("read source");
    let metrics_url = format!("{}/metrics", stack.info.api_base);
    let http = reqwest::Client::new();
    common::wait_for(
        "the pod to consume everything",
        Duration::from_secs(60),
        || {
            let request = http
                .get(&metrics_url)
                .header("x-api-key", &stack.info.api_key);
            async move {
                let text = request
                    .send()
                    .await
                    .expect("metrics")
                    .text()
                    .await
                    .expect("text");
                text.lines()
                    .filter(|l| l.starts_with("kafka_events_consumed_total"))
                    .filter_map(|l| l.rsplit(' ').next()?.parse::<u64>().ok())
                    .sum::<u64>()
                    >= N
            }
        },
    )
    .await;

    let spec = ChildClient {
        server_url: stack.info.api_base.trim_end_matches("/api/v1").to_owned(),
        api_key: stack.info.api_key.clone(),
        local_brokers: stack.info.local_brokers.clone(),
        client_id: common::unique("late-client"),
    };
    let mut child = spawn_child(&spec);
    let copied = read_topic(
        &stack.info.local_brokers,
        &stack.info.topic,
        N as usize,
        Duration::from_secs(90),
    )
    .await
    .expect("read local");
    child.kill().expect("SIGKILL");
    child.wait().expect("reaped");
    stack.stop().await;
    let seqs: Vec<u64> = copied
        .values()
        .flatten()
        .map(|r| common::seq_of(r.value.as_deref().expect("value")))
        .collect();
    let unique: HashSet<u64> = seqs.iter().copied().collect();
    eprintln!(
        "{test}: buffer of {BUFFER} overflowed {}x; {} copies of {} distinct events",
        N as usize / BUFFER,
        seqs.len(),
        unique.len()
    );
    assert_eq!(
        (unique.len() as u64, seqs.len() as u64),
        (N, N),
        "every event exactly once"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_consumer_pod_restarted_mid_stream_costs_the_client_only_retries() {
    let test = "a_consumer_pod_restarted_mid_stream_costs_the_client_only_retries";
    let (source, local) = common::apache_or_mock(test);
    const N: u64 = 4000;
    let mut config = common::config();
    config.source_brokers = source;
    config.local_brokers = local;
    config.events = Some(N);
    config.rate = 1000;
    config.client = true;
    config.client_id = common::unique("client");
    let mut stack = common::start(config).await;
    // Mid-stream: some events replicated, more still coming.
    let local_brokers = stack.info.local_brokers.clone();
    let topic = stack.info.topic.clone();
    common::wait_for(
        "the first events in local Kafka",
        Duration::from_secs(30),
        || {
            let (brokers, topic) = (local_brokers.clone(), topic.clone());
            async move {
                let copied = read_topic(&brokers, &topic, 1, Duration::from_secs(5))
                    .await
                    .expect("read");
                copied.values().map(Vec::len).sum::<usize>() > 500
            }
        },
    )
    .await;
    stack.restart_pod().await.expect("pod restarts");
    eprintln!("{test}: consumer pod restarted");
    let copied = read_topic(&local_brokers, &topic, N as usize, Duration::from_secs(90))
        .await
        .expect("read local");
    stack.stop().await;
    let seqs: Vec<u64> = copied
        .values()
        .flatten()
        .map(|r| common::seq_of(r.value.as_deref().expect("value")))
        .collect();
    let unique: HashSet<u64> = seqs.iter().copied().collect();
    eprintln!(
        "{test}: {} copies of {} distinct events (of {N})",
        seqs.len(),
        unique.len()
    );
    assert_eq!(
        (unique.len() as u64, seqs.len() as u64),
        (N, N),
        "every event exactly once"
    );
}
