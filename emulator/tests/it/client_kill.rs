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
    // Slow enough that the stream outlasts the five kills.
    let stack = streaming(&local, N, 300).await;
    let spec = common::ChildClient {
        server_url: stack.info.api_base.trim_end_matches("/api/v1").to_owned(),
        api_key: stack.info.api_key.clone(),
        local_brokers: local.clone(),
        client_id: common::unique("killed-client"),
        kafka_properties: None,
        log: None,
        state_topic: None,
        topic_prefix: None,
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
    // How far local Kafka's log has grown to its last stable offset (committed records and
    // markers; librdkafka's default isolation): a cheap sign that a client is at work.
    let written = |brokers: String, topic: String| async move {
        log_ends(&brokers, &topic, 3, "read_committed")
            .await
            .iter()
            .sum::<i64>()
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

/// A laptop that sleeps with a transaction open: the client frozen (SIGSTOP) for longer than
/// its transaction timeout mid-backlog, then woken. By then the broker has aborted the
/// transaction and bumped the producer's epoch; the client must carry on by itself.
#[cfg(unix)]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_frozen_past_its_transaction_timeout_carries_on_exactly_once_on_apache_kafka() {
    const TEST: &str =
        "a_client_frozen_past_its_transaction_timeout_carries_on_exactly_once_on_apache_kafka";
    const N: u64 = 4000;
    // Short, so the freeze outlasts it in a test: the broker aborts a timed-out transaction
    // at its next check (every 10 s by default), so 25 s asleep is well past both.
    const TIMEOUT_MS: u32 = 5000;
    const ASLEEP: Duration = Duration::from_secs(25);
    let Some((_, local)) = common::apache_kafka_only(TEST) else {
        return;
    };
    // A stream of 20 s: the client falls asleep early in it and wakes to a backlog.
    let stack = streaming(&local, N, 200).await;
    let log = tempfile::NamedTempFile::new().expect("log file");
    let spec = common::ChildClient {
        server_url: stack.info.api_base.trim_end_matches("/api/v1").to_owned(),
        api_key: stack.info.api_key.clone(),
        local_brokers: local.clone(),
        client_id: common::unique("sleeping-client"),
        kafka_properties: Some(format!(
            "transaction.timeout.ms={TIMEOUT_MS},message.timeout.ms={TIMEOUT_MS}"
        )),
        log: Some(log.path().to_owned()),
        // Its own state topic: its open transaction would hold every other client's
        // restart in this binary back for its whole timeout.
        state_topic: Some(common::unique("sleeping-client-state")),
        topic_prefix: None,
    };
    let mut child = common::spawn_child(&spec);
    // Asleep once it has committed some of the backlog, with more to go, and at a moment its
    // transaction is open: a partition holds records not yet committed.
    common::wait_for_copies(&local, &stack.info.topic, 0).await;
    if !freeze(&child, &local, &stack.info.topic, 3).await {
        let _ = child.kill();
        panic!("never froze the client with a transaction open");
    }
    let before = read_topic(&local, &stack.info.topic, 1, Duration::from_secs(10))
        .await
        .expect("read local");
    let committed: usize = before.values().map(Vec::len).sum();
    eprintln!("{TEST}: asleep with {committed} of {N} committed");
    tokio::time::sleep(ASLEEP).await;
    signal(&child, "-CONT");
    let copied = read_topic(
        &local,
        &stack.info.topic,
        N as usize,
        Duration::from_secs(120),
    )
    .await
    .expect("read local");
    let exited = child.try_wait().expect("child status");
    let _ = child.kill();
    let _ = child.wait();
    stack.stop().await;
    assert!(
        committed < N as usize,
        "frozen mid-backlog, not after it: {committed}"
    );
    assert!(
        exited.is_none(),
        "the client carried on by itself, it did not exit: {exited:?}"
    );
    common::assert_exactly_once(TEST, &copied, N);
    let said = std::fs::read_to_string(log.path()).unwrap_or_default();
    assert!(
        said.contains("past transaction.timeout.ms"),
        "the client saw its transaction aborted and said why: {}",
        said.lines()
            .filter(|l| l.contains("WARN") || l.contains("ERROR"))
            .collect::<Vec<_>>()
            .join("\n")
    );
}

/// Two clients keep their positions in one state topic. One is frozen with a transaction
/// open there while the other restarts: the restarted one must read its own newest
/// position, which lies past the frozen transaction, not the older one before it (a
/// `read_committed` reader stops at the open transaction), or it copies again.
#[cfg(unix)]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_restarting_beside_a_frozen_one_on_a_shared_state_topic_copies_nothing_twice_on_apache_kafka()
 {
    const TEST: &str = "a_client_restarting_beside_a_frozen_one_on_a_shared_state_topic_copies_nothing_twice_on_apache_kafka";
    const N: u64 = 3000;
    let Some((_, local)) = common::apache_kafka_only(TEST) else {
        return;
    };
    let stack = streaming(&local, N, 200).await;
    let state_topic = common::unique("shared-state");
    let spec = |name: &str| common::ChildClient {
        server_url: stack.info.api_base.trim_end_matches("/api/v1").to_owned(),
        api_key: stack.info.api_key.clone(),
        local_brokers: local.clone(),
        client_id: common::unique(name),
        kafka_properties: None,
        log: None,
        state_topic: Some(state_topic.clone()),
        topic_prefix: Some(format!("{name}.")),
    };
    let (frozen_spec, restarted_spec) = (spec("frozen"), spec("restarted"));
    let frozen_copies = format!("frozen.{}", stack.info.topic);
    let restarted_copies = format!("restarted.{}", stack.info.topic);
    let mut frozen = common::spawn_child(&frozen_spec);
    let mut restarted = common::spawn_child(&restarted_spec);
    common::wait_for_copies(&local, &frozen_copies, 0).await;
    common::wait_for_copies(&local, &restarted_copies, 0).await;

    // Frozen at a moment its transaction is open on the shared state topic.
    if !freeze(&frozen, &local, &state_topic, 1).await {
        let _ = frozen.kill();
        let _ = restarted.kill();
        panic!("never froze the client with a transaction open on the state topic");
    }
    // The other one commits past the frozen transaction for a while, then is killed and
    // started again.
    let committed_then = log_ends(&local, &state_topic, 1, "read_uncommitted").await[0];
    common::wait_for(
        "the other client to commit past the frozen transaction",
        Duration::from_secs(30),
        || async {
            log_ends(&local, &state_topic, 1, "read_uncommitted").await[0] > committed_then + 10
        },
    )
    .await;
    restarted.kill().expect("SIGKILL");
    restarted.wait().expect("reaped");
    let mut restarted = common::spawn_child(&restarted_spec);
    // Kept frozen into the restart, so the restarted client reads its position while the
    // transaction is still open (it waits for it to end); then woken.
    tokio::time::sleep(Duration::from_secs(2)).await;
    signal(&frozen, "-CONT");

    let frozen_copied = read_topic(&local, &frozen_copies, N as usize, Duration::from_secs(120))
        .await
        .expect("read local");
    let restarted_copied = read_topic(
        &local,
        &restarted_copies,
        N as usize,
        Duration::from_secs(120),
    )
    .await
    .expect("read local");
    for child in [&mut frozen, &mut restarted] {
        let _ = child.kill();
        let _ = child.wait();
    }
    stack.stop().await;
    common::assert_exactly_once(TEST, &restarted_copied, N);
    common::assert_exactly_once(TEST, &frozen_copied, N);
}

/// A stack streaming `n` demo events at `rate` a second over three partitions, copied into
/// Apache Kafka at `local` by the clients a test starts.
async fn streaming(local: &str, n: u64, rate: u64) -> emulator::Stack {
    let mut config = common::config();
    config.local_brokers = Some(local.to_owned());
    config.partitions = 3;
    config.events = Some(n);
    config.rate = rate;
    common::start(config).await
}

/// Sends `sig` (`-STOP`, `-CONT`) to `child`.
#[cfg(unix)]
fn signal(child: &std::process::Child, sig: &str) {
    signal_pid(child.id(), sig);
}

/// Sends `sig` to process `pid`.
#[cfg(unix)]
fn signal_pid(pid: u32, sig: &str) {
    let pid = pid.to_string();
    let status = std::process::Command::new("kill")
        .args([sig, &pid])
        .status()
        .expect("kill");
    assert!(status.success(), "kill {sig} {pid}");
}

/// Freezes `child` (SIGSTOP) at a moment a transaction of its is open on `topic` (a
/// partition holds records not yet committed); false if that never happened within a
/// minute. The probes are made once, so each try is two quick offset lookups: the window
/// between a client's last write and its commit is short.
#[cfg(unix)]
async fn freeze(child: &std::process::Child, local: &str, topic: &str, partitions: i32) -> bool {
    let (pid, local, topic) = (child.id(), local.to_owned(), topic.to_owned());
    tokio::task::spawn_blocking(move || {
        let (uncommitted, committed) = (
            probe(&local, "read_uncommitted"),
            probe(&local, "read_committed"),
        );
        let deadline = std::time::Instant::now() + Duration::from_secs(60);
        while std::time::Instant::now() < deadline {
            signal_pid(pid, "-STOP");
            let (open, done) = (
                ends(&uncommitted, &topic, partitions),
                ends(&committed, &topic, partitions),
            );
            if open.iter().zip(&done).any(|(u, c)| u > c) {
                return true;
            }
            signal_pid(pid, "-CONT");
            std::thread::sleep(Duration::from_millis(rand::rng().random_range(1..40)));
        }
        false
    })
    .await
    .expect("freeze task")
}

/// The end of each partition of `topic` as a reader with `isolation` sees it (0 where it
/// cannot be read): the high watermark, or for `read_committed` the last stable offset.
async fn log_ends(brokers: &str, topic: &str, partitions: i32, isolation: &str) -> Vec<i64> {
    let (brokers, topic, isolation) = (brokers.to_owned(), topic.to_owned(), isolation.to_owned());
    tokio::task::spawn_blocking(move || ends(&probe(&brokers, &isolation), &topic, partitions))
        .await
        .expect("probe task")
}

/// A reader of log ends with `isolation`.
fn probe(brokers: &str, isolation: &str) -> rdkafka::consumer::BaseConsumer {
    shared::kafka::client_config(brokers)
        .set("isolation.level", isolation)
        .create()
        .expect("probe")
}

/// The end of each partition of `topic` as `probe` sees it (blocking).
fn ends(probe: &rdkafka::consumer::BaseConsumer, topic: &str, partitions: i32) -> Vec<i64> {
    use rdkafka::consumer::Consumer;
    (0..partitions)
        .map(|p| {
            probe
                .fetch_watermarks(topic, p, Duration::from_secs(10))
                .map_or(0, |(_, high)| high)
        })
        .collect()
}
