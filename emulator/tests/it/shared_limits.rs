//! Rate limits in Redis (`RATE_LIMIT_REDIS_URL`), on a real `redis-server` started here:
//! two deployments, each with its own pod and handlers, answering one caller in turn share
//! one budget; with Redis gone they keep answering, each counting on its own.

use crate::common;

/// A `redis-server` on a free port, saving nothing; killed when dropped.
struct RedisServer {
    process: tokio::process::Child,
    url: String,
}

impl RedisServer {
    /// Starts it, or `None` where it is not installed outside CI (CI fails instead).
    async fn start(test: &str) -> Option<Self> {
        let binary = common::tool(test, "REDIS_SERVER", "redis-server")?;
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .expect("free port")
            .port();
        let process = tokio::process::Command::new(&binary)
            .args(["--port", &port.to_string(), "--bind", "127.0.0.1"])
            .args(["--save", "", "--appendonly", "no"])
            .stdout(std::process::Stdio::null())
            .kill_on_drop(true)
            .spawn()
            .unwrap_or_else(|err| panic!("{test}: {} did not start: {err}", binary.display()));
        common::wait_listening("redis-server listening", port).await;
        Some(Self {
            process,
            url: format!("redis://127.0.0.1:{port}"),
        })
    }
}

/// A stack whose handlers count in `redis` (when given): 4 requests per minute without a
/// key.
async fn stack_counting_in(redis: Option<&str>) -> emulator::Stack {
    let mut config = common::config();
    config.handlers.limits.rate_limit_max = 4;
    config.handlers.limits.rate_limit_window_secs = 60;
    config.handlers.limits.rate_limit_redis_url = redis.map(str::to_owned);
    common::start(config).await
}

async fn status_of(http: &reqwest::Client, stack: &emulator::Stack) -> u16 {
    http.get(format!("{}/openapi.json", stack.info.api_base))
        .send()
        .await
        .map_or(0, |answer| answer.status().as_u16())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_deployments_share_one_budget_in_redis_and_answer_without_it() {
    const TEST: &str = "two_deployments_share_one_budget_in_redis";
    let Some(mut redis) = RedisServer::start(TEST).await else {
        return;
    };
    // Each with its own consumer pod: without Redis each would count apart.
    let a = stack_counting_in(Some(&redis.url)).await;
    let b = stack_counting_in(Some(&redis.url)).await;
    let http = reqwest::Client::new();
    let turns: Vec<u16> = {
        let mut turns = Vec::new();
        for i in 0..6 {
            turns.push(status_of(&http, if i % 2 == 0 { &a } else { &b }).await);
        }
        turns
    };
    assert_eq!(
        turns,
        [200, 200, 200, 200, 429, 429],
        "{TEST}: one budget of 4 over both deployments"
    );

    // Redis gone: both keep answering, each counting on its own from zero.
    redis.process.kill().await.expect("kill redis-server");
    for stack in [&a, &b] {
        assert_eq!(
            status_of(&http, stack).await,
            200,
            "{TEST}: answered while Redis is down"
        );
    }
    a.stop().await;
    b.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_redis_each_deployment_counts_in_its_own_pod() {
    // The same calls as above, without Redis: each pod holds its own counts, so the
    // test above shows Redis at work, not the pods.
    let a = stack_counting_in(None).await;
    let b = stack_counting_in(None).await;
    let http = reqwest::Client::new();
    let mut turns = Vec::new();
    for i in 0..6 {
        turns.push(status_of(&http, if i % 2 == 0 { &a } else { &b }).await);
    }
    assert_eq!(turns, [200; 6]);
    a.stop().await;
    b.stop().await;
}
