//! A three-broker source cluster (replication factor 3, `min.insync.replicas` 2) loses the
//! leader of a carried partition mid-stream, and gets it back later: the pod carries on, a
//! late client's catch-up reads follow the new leader, and nothing is lost or duplicated.

use std::time::Duration;

use emulator::chaos::brokers::leader_of;
use emulator::chaos::check::compare;
use emulator::verify::read_topic;

use crate::common;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_source_leader_killed_and_brought_back_loses_and_duplicates_nothing_on_apache_kafka() {
    const TEST: &str =
        "the_source_leader_killed_and_brought_back_loses_and_duplicates_nothing_on_apache_kafka";
    const N: u64 = 9_000;
    const RATE: u64 = 300;
    const PARTITION: i32 = 0;
    let _alone = crate::ONE_AT_A_TIME.lock().await;
    let Some((_, local)) = common::apache_kafka_only(TEST) else {
        return;
    };
    let kafka = crate::kafka_local();
    let cluster = common::unique("failover");
    let source = kafka
        .start_cluster(&cluster, 3)
        .await
        .expect("three brokers");
    eprintln!("{TEST}: source cluster {source}");

    let mut config = common::config();
    // Replicated on all three before the stack creates it (it keeps an existing topic).
    emulator::KafkaCluster::mock_or(Some(source.as_str()))
        .expect("source")
        .create_replicated_topic(&config.topic, 3, 3)
        .await
        .expect("topic");
    config.source_brokers = Some(source.clone());
    config.local_brokers = Some(local.clone());
    config.events = Some(N);
    config.rate = RATE;
    config.run_client = true;
    // A buffer far smaller than the stream: a late client reads most of it from Kafka.
    config.pod.buffer.buffer_max_events = 500;
    config.pod_process = true;
    config.emulator_exe = Some(env!("CARGO_BIN_EXE_emulator").into());
    let mut stack = common::start(config).await;
    let topic = stack.info.topic.clone();
    common::wait_for_copies(&local, &topic, 300).await;

    let leader = leader_of(&source, &topic, PARTITION)
        .await
        .expect("a leader");
    let node = format!("{cluster}-{leader}");
    kafka.kill(&node).await.expect("kill -9 the leader");
    eprintln!("{TEST}: killed {node}, leader of partition {PARTITION}");
    let survivors: String = source
        .split(',')
        .enumerate()
        .filter(|(i, _)| i + 1 != leader as usize)
        .map(|(_, b)| b)
        .collect::<Vec<_>>()
        .join(",");
    common::wait_for("a new leader", Duration::from_secs(60), || {
        let (survivors, topic) = (survivors.clone(), topic.clone());
        async move {
            leader_of(&survivors, &topic, PARTITION)
                .await
                .is_some_and(|l| l != leader)
        }
    })
    .await;
    // The pod carries on: copies keep growing while the old leader is down.
    let copied = |brokers: String, topic: String| async move {
        read_topic(&brokers, &topic, 1, Duration::from_secs(10))
            .await
            .expect("read local")
            .values()
            .map(Vec::len)
            .sum::<usize>()
    };
    let before = copied(local.clone(), topic.clone()).await;
    common::wait_for(
        "copies while the leader is down",
        Duration::from_secs(60),
        || {
            let (local, topic) = (local.clone(), topic.clone());
            async move { copied(local, topic).await > before + 1_000 }
        },
    )
    .await;

    // A late client from the earliest, its copies apart: the buffer holds only the last
    // 500 events, so it reads the rest from Kafka, where the new leader serves them.
    let catchup_before = pod_counter(&stack, "consumer_catchup_events_total").await;
    let mut late = common::client_config_for(&stack.info, &common::unique("late"));
    late.topic_prefix = Some("late.".into());
    late.batch_limit = 500;
    let mut late_client = common::RunningClient::start(&late);
    late_client
        .wait("a backlog copied through catch-up reads", |p| {
            p.events >= 2_000
        })
        .await;
    let catchup = pod_counter(&stack, "consumer_catchup_events_total").await - catchup_before;
    eprintln!("{TEST}: {catchup} events read back from Kafka with the leader down");

    kafka.restart(&node).await.expect("the old leader back");
    eprintln!("{TEST}: {node} back");
    // The pod restarted too, with an empty buffer, after the broker came back.
    stack.kill_pod(0).await.expect("kill the pod");
    stack.start_pod(0).await.expect("start the pod");

    let originals = read_topic(&source, &topic, N as usize, Duration::from_secs(120))
        .await
        .expect("read source");
    let records: usize = originals.values().map(Vec::len).sum();
    let copies = read_topic(&local, &topic, records, Duration::from_secs(180))
        .await
        .expect("read local");
    let late_copies = read_topic(
        &local,
        &format!("late.{topic}"),
        records,
        Duration::from_secs(180),
    )
    .await
    .expect("read the late copies");
    late_client.stop().await;
    stack.stop().await;
    kafka.remove_all().await;

    assert!(
        catchup >= 1_000,
        "the late client read from Kafka: {catchup}"
    );
    assert!(records as u64 >= N, "the stream went on: {records} of {N}");
    for (who, copies) in [("stack client", &copies), ("late client", &late_copies)] {
        let verdict = compare(&originals, copies);
        eprintln!("{TEST}: {who}: {verdict:?}");
        assert!(verdict.passed(), "{who}: {verdict:?}");
        assert_eq!(verdict.copies, records as u64, "{who}");
    }
}

/// A counter of the pod, read through the API's `/metrics`.
async fn pod_counter(stack: &emulator::Stack, name: &str) -> u64 {
    common::metric_sum(&common::api_metrics(&stack.info).await, name)
}
