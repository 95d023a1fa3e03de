//! Faults the system must ride out without loss or duplicates: a client that starts after
//! the buffer overflowed many times, the consumer pod restarted mid-stream (and never held
//! up by the long-polls it serves), the local broker restarted mid-stream (Apache Kafka),
//! HTTP answers broken off mid-body. The client killed hard is in `client_kill.rs`.

use crate::common;

use std::time::Duration;

use emulator::verify::read_topic;

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
    config.pod.buffer.buffer_max_events = BUFFER;
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
    common::wait_for_metric(&stack.info, "kafka_events_consumed_total", N).await;

    let spec = common::ChildClient {
        server_url: stack.info.api_base.trim_end_matches("/api/v1").to_owned(),
        api_key: stack.info.api_key.clone(),
        local_brokers: stack.info.local_brokers.clone(),
        client_id: common::unique("late-client"),
        kafka_properties: None,
        log: None,
        state_topic: None,
        topic_prefix: None,
    };
    let mut child = common::spawn_child(&spec);
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
    eprintln!(
        "{test}: the {BUFFER}-event buffer overflowed about {}x before the client started",
        N as usize / BUFFER
    );
    common::assert_exactly_once(test, &copied, N);
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
    config.run_client = true;
    config.client.client_id = common::unique("client");
    let mut stack = common::start(config).await;
    // Mid-stream: some events replicated, more still coming.
    let local_brokers = stack.info.local_brokers.clone();
    let topic = stack.info.topic.clone();
    common::wait_for_copies(&local_brokers, &topic, 500).await;
    stack.restart_pod().await.expect("pod restarts");
    eprintln!("{test}: consumer pod restarted");
    let copied = read_topic(&local_brokers, &topic, N as usize, Duration::from_secs(90))
        .await
        .expect("read local");
    stack.stop().await;
    common::assert_exactly_once(test, &copied, N);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_consumer_pod_stopping_answers_the_long_poll_it_holds_at_once() {
    // A stopping pod consumes no more, so a long-poll at the log end would wait its whole
    // `wait_ms` and hold the pod's graceful stop that long (the chaos schedules saw 14 s
    // stops, a stream's long-poll to the pod).
    let test = "a_consumer_pod_stopping_answers_the_long_poll_it_holds_at_once";
    let (source, local) = common::apache_or_mock(test);
    const N: u64 = 10;
    let mut config = common::config();
    config.source_brokers = source;
    config.local_brokers = local;
    config.events = Some(N);
    config.run_client = false;
    let mut stack = common::start(config).await;
    let info = stack.info.clone();
    common::wait_for_metric(&info, "kafka_events_consumed_total", N).await;
    // At the log end, where nothing more comes, for up to 30 s.
    let poll = tokio::spawn({
        let info = info.clone();
        async move {
            reqwest::Client::new()
                .get(format!("{}/events", info.api_base))
                .query(&[("cursor", "latest"), ("wait_ms", "30000")])
                .header("x-api-key", &info.api_key)
                .send()
                .await
        }
    });
    // The long-poll is held by the pod.
    common::wait_for_metric(&info, "consumer_fetches_in_flight", 1).await;
    tokio::time::timeout(Duration::from_secs(10), stack.restart_pod())
        .await
        .expect("the pod stops without waiting out the long-poll's 30 s")
        .expect("pod restarts");
    let answer = tokio::time::timeout(Duration::from_secs(5), poll)
        .await
        .expect("the long-poll answered when the pod stopped")
        .expect("joined")
        .expect("an answer");
    assert_eq!(answer.status(), reqwest::StatusCode::OK);
    let body: serde_json::Value = answer.json().await.expect("JSON");
    assert_eq!(body["events"], serde_json::json!([]), "{body}");
    assert!(body["next_cursor"].is_string(), "{body}");
    stack.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_local_broker_restarted_mid_stream_loses_and_duplicates_nothing_on_apache_kafka() {
    let test = "the_local_broker_restarted_mid_stream_loses_and_duplicates_nothing_on_apache_kafka";
    let Some((source, _)) = common::apache_kafka_only(test) else {
        return;
    };
    // A broker of its own, so restarting it disturbs no other test.
    let name = common::unique("restart");
    let local = tokio::task::spawn_blocking({
        let name = name.clone();
        move || common::kafka_local(&["start", &name])
    })
    .await
    .expect("start task");
    eprintln!("{test}: local Kafka is Apache Kafka '{name}' at {local}");
    const N: u64 = 4000;
    let mut config = common::config();
    config.source_brokers = Some(source);
    config.local_brokers = Some(local.clone());
    config.events = Some(N);
    config.rate = 500;
    config.run_client = true;
    config.client.client_id = common::unique("client");
    let stack = common::start(config).await;
    let topic = stack.info.topic.clone();
    common::wait_for_copies(&local, &topic, 300).await;
    let restarted = tokio::task::spawn_blocking({
        let name = name.clone();
        move || common::kafka_local(&["restart", &name])
    })
    .await
    .expect("restart task");
    eprintln!("{test}: local broker restarted, back at {restarted}");
    let copied = read_topic(&local, &topic, N as usize, Duration::from_secs(120))
        .await
        .expect("read local");
    stack.stop().await;
    let _ = tokio::task::spawn_blocking(move || common::kafka_local(&["remove", &name])).await;
    common::assert_exactly_once(test, &copied, N);
}

/// A TCP proxy to `upstream` that cuts each of its first `cuts` connections after the
/// upstream sent `after` bytes: an HTTP answer broken off mid-body.
async fn cutting_proxy(
    upstream: std::net::SocketAddr,
    cuts: usize,
    after: usize,
) -> (
    std::net::SocketAddr,
    std::sync::Arc<std::sync::atomic::AtomicUsize>,
) {
    use std::sync::atomic::{AtomicUsize, Ordering};
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind proxy");
    let addr = listener.local_addr().expect("addr");
    let cut = std::sync::Arc::new(AtomicUsize::new(0));
    let counter = cut.clone();
    tokio::spawn(async move {
        let mut index = 0usize;
        while let Ok((mut inbound, _)) = listener.accept().await {
            let Ok(mut outbound) = tokio::net::TcpStream::connect(upstream).await else {
                continue;
            };
            let cutting = index < cuts;
            index += 1;
            let counter = counter.clone();
            tokio::spawn(async move {
                if !cutting {
                    let _ = tokio::io::copy_bidirectional(&mut inbound, &mut outbound).await;
                    return;
                }
                let (mut in_read, mut in_write) = inbound.split();
                let (mut out_read, mut out_write) = outbound.split();
                let upstream_bound = tokio::io::copy(&mut in_read, &mut out_write);
                let downstream = async {
                    let mut sent = 0;
                    let mut buf = vec![0u8; 1024];
                    while sent < after {
                        let n = out_read
                            .read(&mut buf[..(after - sent).min(1024)])
                            .await
                            .unwrap_or(0);
                        if n == 0 || in_write.write_all(&buf[..n]).await.is_err() {
                            return;
                        }
                        sent += n;
                    }
                    counter.fetch_add(1, Ordering::SeqCst);
                };
                tokio::select! {
                    _ = upstream_bound => {}
                    () = downstream => {}
                }
                // Dropping both streams here breaks the answer off mid-body.
            });
        }
    });
    (addr, cut)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http_answers_cut_off_mid_body_cost_only_retries() {
    let test = "http_answers_cut_off_mid_body_cost_only_retries";
    let (source, local) = common::apache_or_mock(test);
    const N: u64 = 1500;
    let mut config = common::config();
    config.source_brokers = source;
    config.local_brokers = local;
    config.events = Some(N);
    let stack = common::start(config).await;
    let api: std::net::SocketAddr = stack
        .info
        .api_base
        .trim_start_matches("http://")
        .trim_end_matches("/api/v1")
        .parse()
        .expect("api addr");
    let (proxy, cut) = cutting_proxy(api, 3, 3000).await;
    let client_config = client::Config {
        server_url: Some(format!("http://{proxy}")),
        ..common::client_config(&stack, 100)
    };
    let stop = tokio_util::sync::CancellationToken::new();
    let replicator = client::Replicator::new(&client_config).expect("client");
    let running = tokio::spawn(replicator.run(stop.clone()));
    let copied = common::read_copies(&stack, N).await;
    stop.cancel();
    let _ = running.await;
    stack.stop().await;
    let cuts = cut.load(std::sync::atomic::Ordering::SeqCst);
    eprintln!("{test}: {cuts} answers cut off mid-body");
    assert_eq!(cuts, 3, "the proxy broke three answers off");
    common::assert_exactly_once(test, &copied, N);
}
