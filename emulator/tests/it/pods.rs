//! Several consumer pods behind the handlers: each pod consumes every partition, any pod
//! serves any cursor, and a pod killed mid-stream is passed over without the client
//! noticing or anything being lost or copied twice.

use crate::common;

use std::time::Duration;

use client::config::StreamMode;
use emulator::Stack;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_pods_each_killed_mid_stream_unseen_by_a_streaming_client() {
    two_pods_each_killed("two_pods_each_killed_streaming", StreamMode::Auto).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_pods_each_killed_mid_stream_unseen_by_a_long_polling_client() {
    two_pods_each_killed("two_pods_each_killed_long_polling", StreamMode::Off).await;
}

/// Two pods; each is killed once while events stream in (with long-polls waiting on it)
/// and started again. Every event arrives once, the client never sees the server
/// unavailable, and no request in flight on a killed pod fails.
async fn two_pods_each_killed(test: &str, stream: StreamMode) {
    const N: u64 = 3000;
    let (source, local) = common::apache_or_mock(test);
    let mut config = common::config();
    config.source_brokers = source;
    config.local_brokers = local;
    config.pods = 2;
    config.emulator_exe = Some(env!("CARGO_BIN_EXE_emulator").into());
    // A carried topic nothing is written to, where long-polls wait.
    let idle = common::unique("idle");
    config.extra_topics = vec![idle.clone()];
    // 15 s of events, so both kills land while the client copies at the head.
    config.events = Some(N);
    config.rate = 200;
    let partitions = config.partitions;
    let mut stack = common::start(config).await;
    assert_eq!(stack.pod_addrs.len(), 2);
    // Each pod holds every partition of both topics: none shares them out with the other.
    for pod in 0..2 {
        common::wait_for(
            &format!("pod {pod} holding all {} partitions", partitions * 2),
            Duration::from_secs(30),
            || async {
                pod_status(&stack, pod).await.assigned_partitions == (partitions * 2) as usize
            },
        )
        .await;
    }
    let mut client_config = common::client_config_for(&stack.info, &common::unique("client"));
    client_config.stream = stream;
    let mut client = common::RunningClient::start(&client_config);
    for (pod, from) in [(0, 300), (1, 1500)] {
        client
            .wait(&format!("{from} events"), |p| p.events >= from)
            .await;
        let waiting = long_polls_waiting_on(&stack, pod, &idle).await;
        stack.kill_pod(pod).await.expect("kill");
        for answer in waiting {
            let status = answer.await.expect("long-poll task");
            assert_eq!(
                status, 200,
                "{test}: a long-poll in flight on killed pod {pod} was answered {status}"
            );
        }
        // The other pod serves meanwhile: the copy goes on with this one dead.
        client
            .wait(&format!("{} events with pod {pod} dead", from + 400), |p| {
                p.events >= from + 400
            })
            .await;
        stack.start_pod(pod).await.expect("start again");
    }
    client
        .wait(&format!("all {N} events"), |p| p.events >= N)
        .await;
    let progress = client.stop().await;
    let copied = common::read_copies(&stack, N).await;
    let served = stack.handler_metrics();
    stack.stop().await;
    common::assert_exactly_once(test, &copied, N);
    assert_eq!(progress.events, N, "each event committed once");
    assert_eq!(
        progress.unavailable, 0,
        "{test}: the client never saw the server unavailable ({progress:?})"
    );
    // (`/ready` said 503 while the stack started, before any pod consumed.)
    let refused: Vec<&str> = served
        .lines()
        .filter(|l| l.contains(r#"route="/api/v1/events"#) && l.contains(r#"status="503""#))
        .collect();
    assert!(
        refused.is_empty(),
        "{test}: event requests answered 503: {refused:?}"
    );
}

/// What pod `pod` says of itself on its internal socket.
async fn pod_status(stack: &Stack, pod: usize) -> shared::internal::PodStatus {
    let url = format!(
        "http://{}{}",
        stack.pod_addrs[pod],
        shared::internal::STATUS_PATH
    );
    reqwest::Client::new()
        .get(url)
        .bearer_auth(stack.internal_token().expect("the stack sets a token"))
        .send()
        .await
        .expect("the pod answers")
        .json()
        .await
        .expect("a pod status")
}

/// Six long-polls of the `idle` topic, started once pod `pod` serves at least one of them
/// (the handlers spread them over the pods); each task gives its answer's status.
async fn long_polls_waiting_on(
    stack: &Stack,
    pod: usize,
    idle: &str,
) -> Vec<tokio::task::JoinHandle<u16>> {
    let http = reqwest::Client::new();
    let url = format!(
        "{}/events?topic={idle}&cursor=latest&wait_ms=4000",
        stack.info.api_base
    );
    let polls: Vec<_> = (0..6)
        .map(|_| {
            let request = http.get(&url).header("x-api-key", &stack.info.api_key);
            tokio::spawn(async move {
                request
                    .send()
                    .await
                    .map_or(0, |answer| answer.status().as_u16())
            })
        })
        .collect();
    let gauge = format!(
        r#"consumer_fetches_in_flight{{pod="{}"}}"#,
        stack.pod_addrs[pod]
    );
    let metrics = format!("{}/metrics", stack.info.api_base);
    common::wait_for(
        &format!("a long-poll waiting on pod {pod}"),
        Duration::from_secs(3),
        || async {
            let text = match http
                .get(&metrics)
                .header("x-api-key", &stack.info.api_key)
                .send()
                .await
            {
                Ok(answer) => answer.text().await.unwrap_or_default(),
                Err(_) => return false,
            };
            text.lines()
                .filter_map(|l| l.strip_prefix(gauge.as_str()))
                .any(|v| v.trim().parse::<f64>().is_ok_and(|n| n >= 1.0))
        },
    )
    .await;
    polls
}
