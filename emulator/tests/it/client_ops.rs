//! What the client tells its user, on Apache Kafka: `client doctor` against a working set-up
//! and each broken one, `client status` before and after a catch-up, and the metrics at
//! `METRICS_ADDR`.

use std::path::PathBuf;
use std::time::Duration;

use client::doctor::{self, Check, Outcome};
use client::status::{LAGGING, Status};
use emulator::Stack;
use tokio_util::sync::CancellationToken;

use crate::common;

/// The doctor's lines for `config`, by check name.
async fn doctor(config: &client::Config) -> (bool, Vec<Check>) {
    let mut lines = Vec::new();
    let passed = doctor::run(config, |check| lines.push(check.clone())).await;
    assert_eq!(
        lines.len(),
        doctor::CHECKS.len(),
        "one line per check: {lines:?}"
    );
    (passed, lines)
}

fn outcome<'a>(lines: &'a [Check], name: &str) -> &'a Outcome {
    &lines
        .iter()
        .find(|c| c.name == name)
        .unwrap_or_else(|| panic!("no {name} check in {lines:?}"))
        .outcome
}

/// The problem and fix of check `name`, which must have failed.
fn failure<'a>(lines: &'a [Check], name: &str) -> (&'a str, &'a str) {
    match outcome(lines, name) {
        Outcome::Failed { problem, fix } => (problem, fix),
        other => panic!("{name} should have failed, got {other:?}; all: {lines:?}"),
    }
}

/// Every check but `failed` (which failed) and `skipped` (not checked) passed.
fn only_failed(lines: &[Check], failed: &str, skipped: &[&str]) {
    for check in lines {
        let expected_ok = check.name != failed && !skipped.contains(&check.name);
        match &check.outcome {
            Outcome::Ok(_) => assert!(expected_ok, "{} passed: {lines:?}", check.name),
            Outcome::Failed { .. } => assert_eq!(check.name, failed, "{lines:?}"),
            Outcome::NotChecked => {
                assert!(
                    skipped.contains(&check.name),
                    "{} skipped: {lines:?}",
                    check.name
                )
            }
        }
    }
}

/// A stack on the CI brokers, with `events` demo events and no client.
async fn stack(test: &str, events: u64) -> Option<Stack> {
    let (source, local) = common::apache_kafka_only(test)?;
    let mut config = common::config();
    config.source_brokers = Some(source);
    config.local_brokers = Some(local);
    config.events = Some(events);
    config.partitions = 3;
    Some(common::start(config).await)
}

/// A client of `stack` with a state topic of its own.
fn client_of(stack: &Stack) -> client::Config {
    let mut config = common::client_config(stack, 50);
    config.state_topic = common::unique("state");
    config
}

/// The handlers in front of `consumer_addr`, served by the container server (with TLS when
/// given a certificate and key); returns their `SERVER_URL`.
async fn handlers(
    stack: &Stack,
    consumer_addr: &str,
    tls: Option<(PathBuf, PathBuf)>,
    stop: &CancellationToken,
) -> String {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("free port")
        .port();
    let mut config = common::handlers_config(
        consumer_addr.parse().expect("consumer address"),
        stack.internal_token(),
        &stack.info.api_key,
    );
    config.port = port;
    let scheme = if tls.is_some() { "https" } else { "http" };
    if let Some((cert, key)) = tls {
        config.tls.tls_cert = Some(cert);
        config.tls.tls_key = Some(key);
    }
    let state = common::handlers_state(&config);
    let stop = stop.clone();
    tokio::spawn(async move {
        handlers::server::serve(&config, state, stop.cancelled_owned())
            .await
            .expect("handlers served");
    });
    let url = format!("{scheme}://127.0.0.1:{port}");
    common::wait_listening("the handlers to listen", port).await;
    url
}

/// A closed port on loopback.
fn closed_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("free port")
        .port()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn doctor_passes_on_a_working_set_up_and_names_each_broken_hop_on_apache_kafka() {
    const TEST: &str =
        "doctor_passes_on_a_working_set_up_and_names_each_broken_hop_on_apache_kafka";
    let Some(stack) = stack(TEST, 10).await else {
        return;
    };
    let good = client_of(&stack);

    let (passed, lines) = doctor(&good).await;
    assert!(passed, "{lines:?}");
    assert!(
        matches!(outcome(&lines, "state topic"), Outcome::Ok(seen) if seen.contains("does not exist yet")),
        "{lines:?}"
    );

    // A key the server does not know.
    let mut wrong_key = good.clone();
    wrong_key.api_key = Some("not-the-key-0123456789abcdef".into());
    let (passed, lines) = doctor(&wrong_key).await;
    assert!(!passed);
    only_failed(&lines, "API key", &[]);
    let (problem, fix) = failure(&lines, "API key");
    assert!(problem.contains("401"), "{problem}");
    assert!(fix.contains("API_KEY"), "{fix}");

    // A name that does not resolve: the server's checks after it are not run.
    let mut unknown_host = good.clone();
    unknown_host.server_url = Some("http://kafka-replicator.invalid:3000".into());
    unknown_host.insecure_http = true;
    let (_, lines) = doctor(&unknown_host).await;
    only_failed(&lines, "server address", &["API key", "server ready"]);
    let (problem, _) = failure(&lines, "server address");
    assert!(problem.contains("does not resolve"), "{problem}");

    // Nothing listening.
    let mut nothing_there = good.clone();
    nothing_there.server_url = Some(format!("http://127.0.0.1:{}", closed_port()));
    let (_, lines) = doctor(&nothing_there).await;
    only_failed(&lines, "server address", &["API key", "server ready"]);
    assert!(
        failure(&lines, "server address")
            .0
            .contains("cannot connect"),
        "{lines:?}"
    );

    let stop = CancellationToken::new();
    // HTTPS with a certificate no CA this machine trusts signed.
    let dir = tempfile::tempdir().expect("dir");
    let certified = rcgen::generate_simple_self_signed(vec!["127.0.0.1".into()]).expect("cert");
    let (cert, key) = (dir.path().join("tls.crt"), dir.path().join("tls.key"));
    std::fs::write(&cert, certified.cert.pem()).expect("cert");
    std::fs::write(&key, certified.key_pair.serialize_pem()).expect("key");
    let pod = stack.pod_addr.to_string();
    let untrusted = handlers(&stack, &pod, Some((cert, key)), &stop).await;
    let mut tls = good.clone();
    tls.server_url = Some(untrusted);
    let (_, lines) = doctor(&tls).await;
    only_failed(&lines, "server address", &["API key", "server ready"]);
    let (problem, fix) = failure(&lines, "server address");
    assert!(problem.contains("does not verify"), "{problem}");
    assert!(fix.contains("CA"), "{fix}");

    // Handlers up, their consumer pod unreachable: the key still counts as accepted.
    let podless = handlers(&stack, &format!("127.0.0.1:{}", closed_port()), None, &stop).await;
    let mut not_ready = good.clone();
    not_ready.server_url = Some(podless);
    let (_, lines) = doctor(&not_ready).await;
    only_failed(&lines, "server ready", &[]);
    assert!(
        failure(&lines, "server ready").0.contains("not ready"),
        "{lines:?}"
    );
    stop.cancel();

    // No local Kafka: the Kafka checks after it are not run.
    let mut no_kafka = good.clone();
    no_kafka.kafka_brokers = Some(format!("127.0.0.1:{}", closed_port()));
    let (_, lines) = doctor(&no_kafka).await;
    only_failed(&lines, "local Kafka", &["transactions", "state topic"]);
    assert!(
        failure(&lines, "local Kafka").1.contains("KAFKA_BROKERS"),
        "{lines:?}"
    );

    // A state topic that retention would empty, and one of several partitions.
    let deleting = common::unique("state-deleting");
    stack.local.create_topic(&deleting, 1).await.expect("topic");
    let mut config = good.clone();
    config.state_topic = deleting.clone();
    let (_, lines) = doctor(&config).await;
    only_failed(&lines, "state topic", &[]);
    let (problem, fix) = failure(&lines, "state topic");
    assert!(problem.contains("cleanup.policy=delete"), "{problem}");
    assert!(
        fix.contains("cleanup.policy=compact") && fix.contains(&deleting),
        "{fix}"
    );

    let split = common::unique("state-split");
    stack.local.create_topic(&split, 3).await.expect("topic");
    config.state_topic = split;
    let (_, lines) = doctor(&config).await;
    only_failed(&lines, "state topic", &[]);
    assert!(
        failure(&lines, "state topic").0.contains("3 partitions"),
        "{lines:?}"
    );

    // Once the client has run, its own state topic passes as it is.
    common::replicate_until(&good, 10).await;
    let (passed, lines) = doctor(&good).await;
    assert!(passed, "{lines:?}");
    assert!(
        matches!(outcome(&lines, "state topic"), Outcome::Ok(seen) if seen.contains("cleanup.policy=compact")),
        "{lines:?}"
    );
    stack.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn doctor_tells_a_one_broker_kafka_that_cannot_make_its_transaction_log_on_apache_kafka() {
    const TEST: &str =
        "doctor_tells_a_one_broker_kafka_that_cannot_make_its_transaction_log_on_apache_kafka";
    let Some(stack) = stack(TEST, 0).await else {
        return;
    };
    // The classic first run: Kafka's default of 3 replicas on a single broker.
    let name = common::unique("rf3");
    let brokers = tokio::task::spawn_blocking({
        let name = name.clone();
        move || {
            common::kafka_local_with(
                &["start", &name],
                &[(
                    "KAFKA_LOCAL_EXTRA_PROPS",
                    "transaction.state.log.replication.factor=3\ntransaction.state.log.min.isr=2",
                )],
            )
        }
    })
    .await
    .expect("broker");
    let mut config = client_of(&stack);
    config.kafka_brokers = Some(brokers.clone());
    let (passed, lines) = doctor(&config).await;
    common::kafka_local(&["remove", &name]);
    assert!(!passed);
    only_failed(&lines, "transactions", &[]);
    let (problem, fix) = failure(&lines, "transactions");
    assert!(
        problem.contains("transaction.state.log.replication.factor=3"),
        "{problem}"
    );
    assert!(problem.contains("1 broker"), "{problem}");
    assert!(
        fix.contains("transaction.state.log.replication.factor=1"),
        "{fix}"
    );
    stack.stop().await;
}

/// The client's metrics as `name{labels} value` lines.
async fn scrape(addr: std::net::SocketAddr) -> String {
    reqwest::get(format!("http://{addr}/metrics"))
        .await
        .expect("metrics answer")
        .text()
        .await
        .expect("metrics text")
}

fn value(metrics: &str, series: &str) -> Option<f64> {
    metrics
        .lines()
        .find_map(|l| l.strip_prefix(series)?.strip_prefix(' ')?.parse().ok())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn status_and_metrics_show_the_lag_made_up_and_the_last_commit_on_apache_kafka() {
    const TEST: &str =
        "status_and_metrics_show_the_lag_made_up_and_the_last_commit_on_apache_kafka";
    const N: u64 = 600;
    let Some(stack) = stack(TEST, N).await else {
        return;
    };
    let config = client_of(&stack);

    // Before the client ever ran: all of it is lag, nothing committed.
    common::wait_for(
        "the source to hold every event",
        Duration::from_secs(30),
        || {
            let config = config.clone();
            async move { Status::gather(&config).await.is_ok_and(|s| s.lag == N) }
        },
    )
    .await;
    let before = Status::gather(&config).await.expect("status");
    assert_eq!(before.partitions.len(), 3, "{before:?}");
    assert!(
        before.partitions.iter().all(|p| p.committed.is_none()),
        "{before:?}"
    );
    assert_eq!(before.last_commit_ms, None);
    assert_eq!(before.exit_code(0), 0, "0 reports only");
    assert_eq!(before.exit_code(N - 1), LAGGING);
    assert_eq!(before.exit_code(N), 0);
    assert!(
        before
            .to_text(std::time::SystemTime::now())
            .contains("last commit: never")
    );

    let replicator = client::Replicator::new(&config).expect("client");
    let stop = CancellationToken::new();
    let (addr, _served) = replicator
        .metrics()
        .serve("127.0.0.1:0".parse().expect("addr"), stop.clone())
        .await
        .expect("metrics bound");
    let mut progress = replicator.watch();
    let run = tokio::spawn(replicator.run(stop.clone()));
    tokio::time::timeout(
        Duration::from_secs(60),
        progress.wait_for(|p| p.events >= N),
    )
    .await
    .expect("copied in time")
    .expect("client running");

    // The lag gauges reach 0 once the client knows it is at the end.
    common::wait_for(
        "the lag metrics to reach 0",
        Duration::from_secs(15),
        || async {
            let text = scrape(addr).await;
            (0..3).all(|p| {
                let series = format!(
                    "replicator_client_lag_events{{partition=\"{p}\",topic=\"{}\"}}",
                    stack.info.topic
                );
                value(&text, &series) == Some(0.0)
            })
        },
    )
    .await;
    let text = scrape(addr).await;
    assert_eq!(
        value(&text, "replicator_client_events_total"),
        Some(N as f64),
        "{text}"
    );
    assert_eq!(
        value(&text, "replicator_client_state{state=\"replicating\"}"),
        Some(1.0),
        "{text}"
    );
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("clock")
        .as_secs_f64();
    let last =
        value(&text, "replicator_client_last_commit_timestamp_seconds").expect("last commit");
    assert!((now - last).abs() < 60.0, "last commit {last}, now {now}");

    // The state topic says the same: nothing left, the last commit a moment ago.
    let after = Status::gather(&config).await.expect("status");
    assert_eq!(after.lag, 0, "{after:?}");
    assert!(
        after
            .partitions
            .iter()
            .all(|p| p.committed == Some(p.log_end)),
        "{after:?}"
    );
    let committed_at = after.last_commit_ms.expect("a commit") as f64 / 1000.0;
    assert!((now - committed_at).abs() < 60.0, "{after:?}");
    assert_eq!(after.exit_code(1), 0);
    let json = after.to_json();
    assert_eq!(json["lag"], 0);
    assert_eq!(json["partitions"].as_array().map(Vec::len), Some(3));
    assert!(
        json["last_commit"]
            .as_str()
            .is_some_and(|t| t.ends_with('Z')),
        "{json}"
    );

    stop.cancel();
    run.await.expect("joined").expect("client stopped cleanly");
    // The listener stops with the client.
    assert!(
        reqwest::get(format!("http://{addr}/metrics"))
            .await
            .is_err()
    );
    stack.stop().await;
}
