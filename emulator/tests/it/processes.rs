//! The system as separate processes: the `emulator` binary's mock clusters reached from
//! another process, its ready line and ready file, a client that is stopped and restarted
//! mid-stream without loss or duplicates, and clean exits on SIGTERM.

use crate::common;

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::time::Duration;

use emulator::ReadyInfo;
use emulator::verify::read_topic;

/// Runs a client until it has committed `events`, then stops it gracefully.
async fn run_client_for(config: &client::Config, events: u64) -> client::Progress {
    let mut client = common::RunningClient::start(config);
    client
        .wait(&format!("{events} events"), |p| p.events >= events)
        .await;
    client.stop().await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restarted_client_resumes_without_loss_or_duplicates() {
    const N: u64 = 1500;
    let mut config = common::config();
    config.events = Some(N);
    config.rate = 1000;
    let stack = common::start(config).await;
    let client = common::client_config_for(&stack.info, &common::unique("client"));
    // Stopped four times while events stream in, each once it has written some more.
    let mut delivered = 0;
    for run in 0..4 {
        let progress = run_client_for(&client, (100 + 50 * run).min(N - delivered)).await;
        delivered += progress.events;
    }
    // Then left to finish.
    let progress = run_client_for(&client, N - delivered).await;
    delivered += progress.events;
    let copied = common::read_copies(&stack, N).await;
    stack.stop().await;
    common::assert_exactly_once(
        "a_restarted_client_resumes_without_loss_or_duplicates",
        &copied,
        N,
    );
    assert_eq!(delivered, N, "the runs together delivered each event once");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_started_before_the_server_waits_then_delivers_everything() {
    const N: u64 = 300;
    // A port that nothing listens on yet.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .expect("bind")
        .local_addr()
        .expect("addr")
        .port();
    let mut config = common::config();
    config.handlers.port = port;
    config.events = Some(N);
    config.handlers.keys.api_key = Some("early-client-key-0123456789".into());
    // Local Kafka is up; the API is not, yet.
    let local = emulator::KafkaCluster::mock_or(None).expect("local mock");
    local
        .create_topic(&config.topic, config.partitions)
        .await
        .expect("topic");
    let planned = ReadyInfo {
        api_base: format!("http://127.0.0.1:{port}/api/v1"),
        api_key: "early-client-key-0123456789".into(),
        source_brokers: String::new(),
        local_brokers: local.bootstrap().to_owned(),
        topic: config.topic.clone(),
    };
    let client = common::client_config_for(&planned, &common::unique("client"));
    let mut replicate = common::RunningClient::start(&client);
    // The client is already retrying against a closed port when the server comes up.
    replicate
        .wait("two refused polls", |p| p.polls >= 2 && p.events == 0)
        .await;
    let stack = common::start(config).await;
    let copied = read_topic(
        local.bootstrap(),
        &stack.info.topic,
        N as usize,
        Duration::from_secs(30),
    )
    .await
    .expect("read");
    common::assert_exactly_once(
        "a_client_started_before_the_server_waits_then_delivers_everything",
        &copied,
        N,
    );
    replicate.wait("every event", |p| p.events >= N).await;
    let progress = replicate.stop().await;
    assert_eq!(progress.events, N);
    stack.stop().await;
}

#[cfg(unix)]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn handlers_reach_the_pod_over_a_unix_socket() {
    const N: u64 = 100;
    let dir = tempfile::tempdir().expect("tempdir");
    let mut config = common::config();
    config.events = Some(N);
    config.run_client = true;
    config.pod.consumer_addr = shared::internal::ConsumerAddr::Unix(dir.path().join("pod.sock"));
    let stack = common::start(config).await;
    assert!(matches!(
        stack.pod_addr,
        shared::internal::ConsumerAddr::Unix(_)
    ));
    let copied = common::read_copies(&stack, N).await;
    common::assert_exactly_once("handlers_reach_the_pod_over_a_unix_socket", &copied, N);
    stack.stop().await;
}

#[cfg(unix)]
fn terminate(child: &std::process::Child) {
    let status = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .expect("kill");
    assert!(status.success());
}

#[cfg(unix)]
fn wait_exit(child: &mut std::process::Child, timeout: Duration) -> std::process::ExitStatus {
    let deadline = std::time::Instant::now() + timeout;
    loop {
        if let Some(status) = child.try_wait().expect("wait") {
            return status;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "process did not exit within {timeout:?}"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[cfg(unix)]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_emulator_binary_serves_other_processes_and_stops_on_sigterm() {
    const N: u64 = 200;
    let dir = tempfile::tempdir().expect("tempdir");
    let ready_file = dir.path().join("ready.json");
    let mut emulator = Command::new(env!("CARGO_BIN_EXE_emulator"))
        .args([
            "--port",
            "0",
            "--no-client",
            "--rate",
            "0",
            "--events",
            &N.to_string(),
            "--partitions",
            "2",
        ])
        .arg("--ready-file")
        .arg(&ready_file)
        .current_dir(dir.path())
        .env_remove("KAFKA_BROKERS")
        .env_remove("LOCAL_KAFKA_BROKERS")
        .env_remove("API_KEY")
        .env_remove("PORT")
        .env("RUST_LOG", "warn")
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("emulator starts");
    let stdout = emulator.stdout.take().expect("stdout");
    // Read the ready line, then keep draining stdout as a terminal would.
    let (tx, rx) = tokio::sync::oneshot::channel();
    std::thread::spawn(move || {
        let mut lines = BufReader::new(stdout).lines();
        let first = lines.next().and_then(Result::ok).unwrap_or_default();
        let _ = tx.send(first);
        lines.for_each(drop);
    });
    let ready_line = rx.await.expect("ready line");
    let info: ReadyInfo =
        serde_json::from_str(&std::fs::read_to_string(&ready_file).expect("ready file"))
            .expect("ready JSON");
    for part in [
        &info.api_base,
        &info.api_key,
        &info.source_brokers,
        &info.local_brokers,
    ] {
        assert!(
            ready_line.contains(part.as_str()),
            "ready line {ready_line:?} lacks {part}"
        );
    }

    // This process is not the one that owns the mock clusters.
    let client = common::client_config_for(&info, &common::unique("client"));
    let replicate = tokio::spawn(async move { run_client_for(&client, N).await });
    let copied = read_topic(
        &info.local_brokers,
        &info.topic,
        N as usize,
        Duration::from_secs(30),
    )
    .await
    .expect("read local");
    let progress = replicate.await.expect("client task");
    eprintln!("partitions read: {}, client: {progress:?}", copied.len());
    common::assert_exactly_once(
        "the_emulator_binary_serves_other_processes_and_stops_on_sigterm",
        &copied,
        N,
    );

    terminate(&emulator);
    let status = wait_exit(&mut emulator, Duration::from_secs(20));
    assert!(
        status.success(),
        "emulator exits cleanly on SIGTERM: {status}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_benchmark_counts_every_copy_and_ends_with_its_json_line() {
    // The real binary on the embedded clusters, its client in a child process: three rounds,
    // so the client stops and resumes twice and the direct copy takes three ranges.
    let output = tokio::process::Command::new(env!("CARGO_BIN_EXE_emulator"))
        .args([
            "bench",
            "--events",
            "600",
            "--round-events",
            "250",
            "--latency-secs",
            "1",
            "--latency-rate",
            "300",
            "--json",
        ])
        .env_remove("KAFKA_BROKERS")
        .env_remove("LOCAL_KAFKA_BROKERS")
        .env_remove("API_KEY")
        .output();
    let output = tokio::time::timeout(Duration::from_secs(180), output)
        .await
        .expect("the bench ends")
        .expect("the bench runs");
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success(),
        "{stdout}\n{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains("round 3/3: 200 events"),
        "600 events in three rounds of 200: {stderr}"
    );
    let last = stdout.lines().last().expect("a last line");
    let report: serde_json::Value = serde_json::from_str(last).expect("the last line is JSON");
    assert_eq!(report["events"], 600);
    let pipeline = &report["pipeline"];
    assert_eq!(pipeline["lost"], 0, "{last}");
    assert_eq!(pipeline["duplicated"], 0, "{last}");
    for field in [
        "events_per_sec",
        "p50_ms",
        "p99_ms",
        "peak_rss_mb",
        "pod_peak_rss_mb",
        "client_peak_rss_mb",
    ] {
        let value = pipeline[field].as_f64().unwrap_or(f64::NAN);
        assert!(value.is_finite() && value > 0.0, "{field}: {last}");
    }
    assert!(pipeline["p50_ms"].as_f64() <= pipeline["p99_ms"].as_f64());
    let direct = report["direct_copy"]["events_per_sec"]
        .as_f64()
        .unwrap_or(0.0);
    assert!(direct > 0.0, "{last}");
    // The same backlog through an API with the shipped limits on.
    let limited = &report["pipeline_limits_on"];
    assert_eq!(limited["lost"], 0, "{last}");
    assert_eq!(limited["duplicated"], 0, "{last}");
    assert_eq!(
        limited["refused"], 0,
        "no 429 of the client's own making: {last}"
    );
    assert_eq!(limited["key_limit"], 18_000, "{last}");
    assert!(limited["requests"].as_u64().unwrap_or(0) >= 3, "{last}");
    assert!(
        limited["vs_limits_off"].as_f64().unwrap_or(0.0) > 0.0,
        "{last}"
    );
    assert!(
        report.get("mirror_maker_2").is_none(),
        "no peer unless asked"
    );
}
