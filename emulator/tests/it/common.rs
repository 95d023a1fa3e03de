//! Shared set-up of the emulator's integration tests: which Kafka to run on, unique names,
//! a stack with sensible test settings, and helpers to call the API.

#![allow(dead_code, unreachable_pub)]

use std::time::Duration;

use client::config::StartPosition;
use emulator::{ReadyInfo, Stack, StackConfig};
use rand::Rng;
use tokio_util::sync::CancellationToken;

/// Source and local bootstrap servers of real Kafka brokers, when the run has them.
pub fn apache_kafka() -> Option<(String, String)> {
    let source = std::env::var("TEST_KAFKA_SOURCE_BROKERS")
        .ok()
        .filter(|s| !s.is_empty());
    let local = std::env::var("TEST_KAFKA_LOCAL_BROKERS")
        .ok()
        .filter(|s| !s.is_empty());
    match (source, local) {
        (Some(s), Some(l)) => Some((s, l)),
        _ => None,
    }
}

/// The real-Kafka backend for a test that must run on it: in CI a missing broker fails the
/// test (never a silent skip); locally the test says so and runs on the mock cluster.
pub fn apache_or_mock(test: &str) -> (Option<String>, Option<String>) {
    match apache_kafka() {
        Some((source, local)) => {
            eprintln!("{test}: running on Apache Kafka (source {source}, local {local})");
            (Some(source), Some(local))
        }
        None if std::env::var_os("CI").is_some() => {
            panic!(
                "{test}: CI must run this on Apache Kafka: set TEST_KAFKA_SOURCE_BROKERS and TEST_KAFKA_LOCAL_BROKERS (see .ci/run)"
            )
        }
        None => {
            eprintln!(
                "{test}: TEST_KAFKA_*_BROKERS not set; running on the librdkafka mock cluster instead"
            );
            (None, None)
        }
    }
}

/// The Apache Kafka brokers for a test that cannot run on the mock cluster at all (it
/// restarts a broker, or needs a real transaction coordinator): in CI a missing broker
/// fails the test; locally the test says in one line that it did not run.
pub fn apache_kafka_only(test: &str) -> Option<(String, String)> {
    let brokers = apache_kafka();
    if brokers.is_none() {
        assert!(
            std::env::var_os("CI").is_none(),
            "{test}: CI must run this on Apache Kafka: set TEST_KAFKA_SOURCE_BROKERS and TEST_KAFKA_LOCAL_BROKERS (see .ci/run)"
        );
        eprintln!(
            "{test}: needs Apache Kafka (set TEST_KAFKA_SOURCE_BROKERS and TEST_KAFKA_LOCAL_BROKERS); skipped here, CI runs it"
        );
    }
    brokers
}

/// A name no other test or run uses.
pub fn unique(prefix: &str) -> String {
    format!("{prefix}-{:08x}", rand::rng().random::<u32>())
}

/// Test defaults: unique topic, group and client id, quick client polls, no demo traffic.
pub fn config() -> StackConfig {
    let mut config = StackConfig {
        topic: unique("topic"),
        events: Some(0),
        rate: 0,
        run_client: false,
        ..StackConfig::default()
    };
    config.pod.source.group_id = unique("group");
    config.client.client_id = unique("client");
    config.client.interval_ms = 100;
    config
}

/// Starts a stack, failing the test clearly if it cannot. With `RUST_LOG` set, the
/// stack's logs go to stderr.
pub async fn start(config: StackConfig) -> Stack {
    if std::env::var_os("RUST_LOG").is_some() {
        shared::telemetry::init();
    }
    match Stack::start(config).await {
        Ok(stack) => stack,
        Err(err) => panic!("stack did not start: {err}"),
    }
}

/// Polls `condition` every 50 ms until it holds or `timeout` passes.
pub async fn wait_for<F, Fut>(what: &str, timeout: Duration, mut condition: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = tokio::time::Instant::now() + timeout;
    while tokio::time::Instant::now() < deadline {
        if condition().await {
            return;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("timed out after {timeout:?} waiting for {what}");
}

/// Waits (up to 10 s) until something listens on `port` of 127.0.0.1.
pub async fn wait_listening(what: &str, port: u16) {
    wait_for(what, Duration::from_secs(10), || async {
        tokio::net::TcpStream::connect(("127.0.0.1", port))
            .await
            .is_ok()
    })
    .await;
}

/// `seq` of a demo event value.
pub fn seq_of(value: &[u8]) -> u64 {
    let json: serde_json::Value = serde_json::from_slice(value).expect("demo values are JSON");
    json["seq"]
        .as_u64()
        .expect("demo values have an integer seq")
}

/// What a fault test hands a child process that runs the client.
#[derive(Debug, serde::Serialize, serde::Deserialize)]
pub struct ChildClient {
    pub server_url: String,
    pub api_key: String,
    pub local_brokers: String,
    pub client_id: String,
    /// `KAFKA_PROPERTIES` for local Kafka.
    #[serde(default)]
    pub kafka_properties: Option<String>,
    /// Where the child's log goes (none: discarded).
    #[serde(default)]
    pub log: Option<std::path::PathBuf>,
    /// `STATE_TOPIC`, when not the default one every client shares.
    #[serde(default)]
    pub state_topic: Option<String>,
    /// `TOPIC_PREFIX`: copies go to this prefix + the source topic's name.
    #[serde(default)]
    pub topic_prefix: Option<String>,
}

const CHILD_ENV: &str = "KAFKA_REPLICATOR_TEST_CHILD_CLIENT";

/// The body of a child-process client: runs the client until killed, if this process was
/// started by [`spawn_child`]; otherwise returns at once.
pub fn run_child_client_if_asked() {
    let Ok(spec) = std::env::var(CHILD_ENV) else {
        return;
    };
    let spec: ChildClient = serde_json::from_str(&spec).expect("child spec");
    // Its log goes to stderr, which the parent keeps when it asked for it.
    shared::telemetry::init();
    let config = client::Config {
        server_url: Some(spec.server_url),
        api_key: Some(spec.api_key),
        api_prefix: "/api/v1".into(),
        kafka_brokers: Some(spec.local_brokers),
        kafka_topic: None,
        topic_prefix: spec.topic_prefix,
        interval_ms: 50,
        from: client::config::StartPosition::Earliest,
        batch_limit: 50,
        compression: true,
        state_topic: spec
            .state_topic
            .unwrap_or_else(|| "kafka-replicator-client-state".into()),
        insecure_http: false,
        client_id: spec.client_id,
        metrics_addr: None,
        stream: client::config::StreamMode::Auto,
        properties: shared::kafka::KafkaPropertyArgs {
            kafka_properties: spec.kafka_properties,
            ..Default::default()
        },
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

/// The client's configuration for a running stack: its API and local Kafka, quick polls,
/// batches of `batch_limit`, a fresh identity.
pub fn client_config(stack: &Stack, batch_limit: u32) -> client::Config {
    client::Config {
        server_url: Some(stack.server_url.clone()),
        batch_limit,
        ..client_config_for(&stack.info, &unique("client"))
    }
}

/// Runs a client with `config` until it has committed `n` events (within 60 s), then stops
/// it cleanly.
pub async fn replicate_until(config: &client::Config, n: u64) {
    let replicator = client::Replicator::new(config).expect("client");
    let mut progress = replicator.watch();
    let stop = tokio_util::sync::CancellationToken::new();
    let run = tokio::spawn(replicator.run(stop.clone()));
    tokio::time::timeout(
        Duration::from_secs(60),
        progress.wait_for(|p| p.events >= n),
    )
    .await
    .expect("copied in time")
    .expect("client running");
    stop.cancel();
    run.await.expect("joined").expect("client stopped cleanly");
}

/// Not a test of its own: the body of the child process the fault tests kill.
#[test]
#[ignore = "run by the fault tests as a child process"]
fn child_client_process() {
    run_child_client_if_asked();
}

/// Starts this test binary again as a client process (its `child_client_process` test).
pub fn spawn_child(spec: &ChildClient) -> std::process::Child {
    std::process::Command::new(std::env::current_exe().expect("test binary"))
        .args([
            "--exact",
            "common::child_client_process",
            "--ignored",
            "--nocapture",
            "--test-threads=1",
        ])
        .env(CHILD_ENV, serde_json::to_string(spec).expect("spec"))
        .stdout(std::process::Stdio::null())
        .stderr(match &spec.log {
            Some(path) => std::process::Stdio::from(std::fs::File::create(path).expect("log")),
            None => std::process::Stdio::null(),
        })
        .spawn()
        .expect("child client")
}

/// Waits until local Kafka shows more than `more_than` committed events of `topic`.
pub async fn wait_for_copies(brokers: &str, topic: &str, more_than: usize) {
    wait_for(
        "the first events in local Kafka",
        Duration::from_secs(30),
        || async move {
            let copied = emulator::verify::read_topic(brokers, topic, 1, Duration::from_secs(5))
                .await
                .expect("read local");
            copied.values().map(Vec::len).sum::<usize>() > more_than
        },
    )
    .await;
}

/// Asserts that the demo events `0..n` are each present exactly once in `copied`.
pub fn assert_exactly_once(
    test: &str,
    copied: &std::collections::BTreeMap<i32, Vec<shared::Record>>,
    n: u64,
) {
    let seqs: Vec<u64> = copied
        .values()
        .flatten()
        .map(|r| seq_of(r.value.as_deref().expect("value")))
        .collect();
    let unique: std::collections::HashSet<u64> = seqs.iter().copied().collect();
    eprintln!(
        "{test}: {} copies of {} distinct events (of {n})",
        seqs.len(),
        unique.len()
    );
    assert_eq!(unique.len() as u64, n, "no event lost");
    assert_eq!(seqs.len() as u64, n, "no event duplicated");
}

/// The source position a copy says it came from.
pub fn provenance(r: &shared::Record) -> (String, i32, i64) {
    let header = |name: &str| -> String {
        let h = r
            .headers
            .iter()
            .find(|h| h.key == name.as_bytes())
            .unwrap_or_else(|| panic!("copy lacks {name}"));
        String::from_utf8(h.value.clone().expect("value")).expect("utf8")
    };
    (
        header(client::sink::SOURCE_TOPIC_HEADER),
        header(client::sink::SOURCE_PARTITION_HEADER)
            .parse()
            .expect("partition"),
        header(client::sink::SOURCE_OFFSET_HEADER)
            .parse()
            .expect("offset"),
    )
}

/// Handler configuration for a pod (with its internal token) and key, with the contract's
/// defaults otherwise.
pub fn handlers_config(
    pod: shared::internal::ConsumerAddrs,
    internal_token: Option<&str>,
    key: &str,
) -> handlers::Config {
    handlers::Config {
        keys: handlers::config::KeyArgs {
            api_key: Some(key.to_owned()),
            ..Default::default()
        },
        api_prefix: "/api/v1".into(),
        consumer_addr: pod,
        internal_token: internal_token.map(str::to_owned),
        port: 0,
        host: "127.0.0.1".into(),
        ..Default::default()
    }
}

/// Handlers in front of a running stack's pod, built apart from the stack's own.
pub fn stack_handlers_config(stack: &Stack, key: &str) -> handlers::Config {
    handlers_config(stack.pod_addr.clone().into(), stack.internal_token(), key)
}

/// Handler state for a pod and key.
pub fn handlers_state(config: &handlers::Config) -> handlers::AppState {
    let keys = handlers::ApiKeys::parse(config.keys.api_key.as_deref().expect("key")).expect("key");
    handlers::AppState::with_keys(config, handlers::KeyStore::fixed(keys)).expect("state")
}

/// An outside tool a test drives (a browser, a fuzzer, a local AWS endpoint): the path in
/// `env_var` (set by `.ci/tools.sh`), else `command` on `PATH`. Missing: CI fails the test,
/// a local run says so and the caller skips.
pub fn tool(test: &str, env_var: &str, command: &str) -> Option<std::path::PathBuf> {
    let found = std::env::var_os(env_var)
        .map(std::path::PathBuf::from)
        .filter(|p| p.is_file())
        .or_else(|| {
            std::env::split_paths(&std::env::var_os("PATH")?)
                .map(|dir| dir.join(command))
                .find(|p| p.is_file())
        });
    if found.is_none() {
        if std::env::var_os("CI").is_some() {
            panic!(
                "{test}: CI must run this with {command}: `eval \"$(bash .ci/tools.sh)\"` sets {env_var}"
            );
        }
        eprintln!(
            "{test}: {command} not found (set {env_var}, or run .ci/tools.sh); skipped here, CI runs it"
        );
    }
    found
}

/// Every committed copy of the stack's demo topic in local Kafka, once `n` are there (or a
/// minute passed), per partition in offset order.
pub async fn read_copies(
    stack: &Stack,
    n: u64,
) -> std::collections::BTreeMap<i32, Vec<shared::Record>> {
    emulator::verify::read_topic(
        &stack.info.local_brokers,
        &stack.info.topic,
        usize::try_from(n).expect("count"),
        Duration::from_secs(60),
    )
    .await
    .expect("read local Kafka")
}

/// Produces `records` (their topic, partition, key, value, headers and timestamp) to
/// `topic`, every byte as given: header keys that are not UTF-8 too.
pub async fn produce_records(brokers: &str, topic: &str, records: &[shared::Record]) {
    produce_compressed(brokers, topic, records, "none").await;
}

/// [`produce_records`] in batches compressed with `codec` (librdkafka's
/// `compression.type`).
pub async fn produce_compressed(
    brokers: &str,
    topic: &str,
    records: &[shared::Record],
    codec: &str,
) {
    use rdkafka::producer::{FutureProducer, FutureRecord};
    let producer: FutureProducer = shared::kafka::client_config(brokers)
        .set("enable.idempotence", "true")
        .set("message.max.bytes", "10000000")
        .set("compression.type", codec)
        .set("linger.ms", "20")
        .create()
        .expect("producer");
    for r in records {
        let mut headers = rdkafka::message::OwnedHeaders::new_with_capacity(r.headers.len());
        for h in &r.headers {
            headers = shared::kafka::add_header(headers, &h.key, h.value.as_deref());
        }
        let mut out: FutureRecord<'_, [u8], [u8]> = FutureRecord::to(topic)
            .partition(r.partition)
            .headers(headers);
        if let Some(key) = &r.key {
            out = out.key(key);
        }
        if let Some(value) = &r.value {
            out = out.payload(value);
        }
        if let Some(ts) = r.timestamp {
            out = out.timestamp(ts);
        }
        producer
            .send(out, Duration::from_secs(30))
            .await
            .unwrap_or_else(|(err, _)| panic!("produce: {err}"));
    }
}

/// Random bytes of a random length below `max`: NULs, invalid UTF-8 and valid UTF-8 alike.
pub fn random_bytes(rng: &mut impl rand::Rng, max: usize) -> Vec<u8> {
    let len = rng.random_range(0..max);
    match rng.random_range(0..3) {
        // Any bytes at all.
        0 => (0..len).map(|_| rng.random()).collect(),
        // UTF-8 text with control characters and quotes, which JSON must escape.
        1 => (0..len)
            .map(|_| {
                *[b'"', b'\\', b'\n', 0, 0x1f, b'a', b'{']
                    .get(rng.random_range(0..7))
                    .unwrap_or(&b'a')
            })
            .collect(),
        // Multi-byte UTF-8, sometimes cut in the middle of a character.
        _ => {
            let text: String = (0..len)
                .map(|_| ['é', '€', '😀', 'x'][rng.random_range(0..4)])
                .collect();
            let mut bytes = text.into_bytes();
            if rng.random_bool(0.3) && !bytes.is_empty() {
                bytes.truncate(bytes.len() - 1);
            }
            bytes.truncate(max);
            bytes
        }
    }
}

/// `n` records of random content in every field, spread over `partitions`: keys and values
/// absent, empty or random bytes; up to 8 headers with random keys and values; timestamps
/// anywhere since 1970.
pub fn random_records(seed: u64, n: usize, partitions: i32) -> Vec<shared::Record> {
    use rand::{Rng, SeedableRng};
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
    let maybe = |rng: &mut rand::rngs::StdRng, max: usize| match rng.random_range(0..5) {
        0 => None,
        1 => Some(Vec::new()),
        _ => Some(random_bytes(rng, max)),
    };
    (0..n)
        .map(|i| shared::Record {
            topic: String::new(),
            partition: (i as i32) % partitions,
            offset: 0,
            timestamp: Some(rng.random_range(0..1_790_000_000_000)),
            key: maybe(&mut rng, 64),
            value: maybe(&mut rng, 4096),
            headers: (0..rng.random_range(0..9))
                .map(|_| shared::event::RecordHeader {
                    key: random_bytes(&mut rng, 40),
                    value: maybe(&mut rng, 200),
                })
                .collect(),
        })
        .collect()
}

/// Runs the Apache Kafka launcher of `infra/kafka-local` with `env` set; its stdout,
/// trimmed.
pub fn kafka_local_with(args: &[&str], env: &[(&str, &str)]) -> String {
    let out = std::process::Command::new("bash")
        .arg(kafka_local_script())
        .args(args)
        .envs(env.iter().copied())
        .output()
        .expect("launcher runs");
    assert!(
        out.status.success(),
        "kafka-local.sh {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).trim().to_owned()
}

/// The Apache Kafka launcher of `infra/kafka-local`, in this checkout.
pub fn kafka_local_script() -> String {
    format!(
        "{}/../infra/kafka-local/kafka-local.sh",
        env!("CARGO_MANIFEST_DIR")
    )
}

/// [`kafka_local_with`] and nothing more in the environment.
pub fn kafka_local(args: &[&str]) -> String {
    kafka_local_with(args, &[])
}

/// The sum of a metric's samples (over its labels) in Prometheus text; `name` may end in a
/// label selector (`name{kind="key"}`).
pub fn metric_sum(text: &str, name: &str) -> u64 {
    text.lines()
        .filter(|l| {
            l.strip_prefix(name)
                .is_some_and(|rest| rest.starts_with([' ', '{']))
        })
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum::<f64>() as u64
}

/// The API's `/metrics` (the pods' series among them), as Prometheus text.
pub async fn api_metrics(info: &ReadyInfo) -> String {
    reqwest::Client::new()
        .get(format!("{}/metrics", info.api_base))
        .header("x-api-key", &info.api_key)
        .send()
        .await
        .expect("metrics")
        .text()
        .await
        .expect("metrics text")
}

/// Waits (up to 60 s) until metric `name` on the API's `/metrics` sums to `at_least`.
pub async fn wait_for_metric(info: &ReadyInfo, name: &str, at_least: u64) {
    wait_for(
        &format!("{name} to reach {at_least}"),
        Duration::from_secs(60),
        || async { metric_sum(&api_metrics(info).await, name) >= at_least },
    )
    .await;
}

/// A client of `info`'s API (streaming, quick polls, batches of 40) called `client_id`,
/// from the earliest.
pub fn client_config_for(info: &ReadyInfo, client_id: &str) -> client::Config {
    client::Config {
        server_url: Some(info.api_base.trim_end_matches("/api/v1").to_owned()),
        api_key: Some(info.api_key.clone()),
        api_prefix: "/api/v1".into(),
        kafka_brokers: Some(info.local_brokers.clone()),
        kafka_topic: None,
        topic_prefix: None,
        interval_ms: 100,
        from: StartPosition::Earliest,
        batch_limit: 40,
        compression: true,
        state_topic: "kafka-replicator-client-state".into(),
        insecure_http: false,
        metrics_addr: None,
        stream: client::config::StreamMode::Auto,
        client_id: client_id.to_owned(),
        properties: Default::default(),
    }
}

/// A client running on its own task, watched through its [`client::Progress`].
pub struct RunningClient {
    progress: tokio::sync::watch::Receiver<client::Progress>,
    stop: CancellationToken,
    task: tokio::task::JoinHandle<client::Progress>,
}

impl RunningClient {
    pub fn start(config: &client::Config) -> Self {
        let replicator = client::Replicator::new(config).expect("client");
        let progress = replicator.watch();
        let stop = CancellationToken::new();
        let run = stop.clone();
        let task = tokio::spawn(async move { replicator.run(run).await.expect("client run") });
        Self {
            progress,
            stop,
            task,
        }
    }

    /// Waits until the client's progress satisfies `done` (at most a minute).
    pub async fn wait(&mut self, what: &str, done: impl Fn(&client::Progress) -> bool) {
        tokio::time::timeout(Duration::from_secs(60), self.progress.wait_for(|p| done(p)))
            .await
            .unwrap_or_else(|_| panic!("the client did not get to {what} within a minute"))
            .expect("the client is running");
    }

    /// Stops it gracefully; its totals.
    pub async fn stop(self) -> client::Progress {
        self.stop.cancel();
        self.task.await.expect("client task")
    }
}
