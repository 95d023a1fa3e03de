//! `emulator chaos --seed S --minutes M`: the whole pipeline as separate processes on real
//! Apache Kafka (a three-broker source cluster and a local broker), a steady stream through
//! it, and faults drawn from the seed injected as it flows. At the end every source record
//! must be in local Kafka exactly once, unchanged and in order per partition.

pub mod brokers;
pub mod check;
pub mod schedule;

use std::path::PathBuf;
use std::time::{Duration, Instant};

use serde::Serialize;
use shared::internal::ConsumerAddr;
use tokio_util::sync::CancellationToken;

use crate::bench_client::{ClientProcess, ClientSettings};
use crate::demo::DemoProducer;
use crate::handlers_process::{HandlersProcess, HandlersSettings};
use crate::link::{Link, LinkShape};
use crate::pod_process::PodProcess;
use brokers::KafkaLocal;
use check::Verdict;
use schedule::{Fault, Part, Schedule, Step};

/// The client's `transaction.timeout.ms` (and `message.timeout.ms`): short, so a freeze
/// outlasts it within a short schedule.
pub const TRANSACTION_TIMEOUT: Duration = Duration::from_secs(10);
/// Source brokers: a leader killed leaves two in sync, `min.insync.replicas`.
const SOURCE_NODES: u32 = 3;
/// Longest the last copies may take once the stream and the faults are over.
const DRAIN_WITHIN: Duration = Duration::from_secs(180);
/// Longest the API may take to say ready at the start.
const READY_WITHIN: Duration = Duration::from_secs(90);
/// Longest the handlers may take to take up or drop a key from their file.
const KEY_SEEN_WITHIN: Duration = Duration::from_secs(15);
const TOPIC: &str = "chaos-events";
const PROXY: &str = "api";
const SLOW_TAG: &str = "slow_";

/// One schedule to run.
#[derive(Debug, Clone)]
pub struct ChaosConfig {
    pub seed: u64,
    pub minutes: u64,
    /// Events per second of the stream.
    pub rate: u64,
    pub partitions: i32,
    /// `infra/kafka-local/kafka-local.sh`.
    pub kafka_local: PathBuf,
    /// The toxiproxy-server binary.
    pub toxiproxy: PathBuf,
}

/// Why a schedule could not be run to its end (a finding is a [`Verdict`], not this).
#[derive(Debug, thiserror::Error)]
pub enum ChaosError {
    #[error(transparent)]
    Brokers(#[from] brokers::BrokerError),
    #[error(transparent)]
    Kafka(#[from] rdkafka::error::KafkaError),
    #[error(transparent)]
    Link(#[from] crate::bench::BenchError),
    #[error(transparent)]
    Stack(#[from] crate::stack::StackError),
    #[error(transparent)]
    Handlers(#[from] crate::handlers_process::HandlersProcessError),
    #[error("I/O: {0}")]
    Io(#[from] std::io::Error),
    #[error("{0}")]
    Stuck(String),
}

/// What one schedule did and found.
#[derive(Debug, Clone, Serialize)]
pub struct ChaosReport {
    pub seed: u64,
    pub minutes: u64,
    pub rate: u64,
    pub partitions: i32,
    pub schedule: Vec<Step>,
    /// Each action as it happened, seconds from the start of the stream.
    pub ran: Vec<String>,
    /// Events the producer had acknowledged.
    pub produced: u64,
    pub verdict: Verdict,
    pub passed: bool,
}

/// Runs one schedule: starts everything, streams and injects the faults, checks, and
/// stops and removes everything again, whatever happened.
pub async fn run(config: &ChaosConfig) -> Result<ChaosReport, ChaosError> {
    let length = Duration::from_secs(config.minutes * 60);
    let schedule = Schedule::draw(config.seed, length, config.partitions, TRANSACTION_TIMEOUT);
    eprintln!(
        "chaos: {} min at {} events/s over {} partitions; replay with --seed {}\nchaos: {schedule}",
        config.minutes, config.rate, config.partitions, config.seed
    );
    let kafka = KafkaLocal::new(&config.kafka_local)?;
    let logs = tempfile::Builder::new()
        .prefix(&format!("kafka-replicator-chaos-{}-", config.seed))
        .tempdir()?;
    let result = run_on(config, &schedule, &kafka, logs.path()).await;
    kafka.remove_all().await;
    match &result {
        Ok(report) if report.passed => {}
        _ => show_logs(logs.path()),
    }
    result
}

/// The tail of each process's log, for a failed run.
fn show_logs(dir: &std::path::Path) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    for entry in entries.flatten() {
        let text = std::fs::read_to_string(entry.path()).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        eprintln!(
            "chaos: last lines of the {} log:",
            entry.file_name().to_string_lossy()
        );
        for line in &lines[lines.len().saturating_sub(40)..] {
            eprintln!("  {line}");
        }
    }
}

/// The running parts and how to bring each back.
struct Parts<'a> {
    kafka: &'a KafkaLocal,
    source_brokers: String,
    source_name: String,
    local_name: String,
    link: Link,
    pod_config: consumer::Config,
    pod_log: PathBuf,
    pod: Option<PodProcess>,
    handlers_settings: HandlersSettings,
    handlers_url: String,
    handlers: Option<HandlersProcess>,
    client_settings: ClientSettings,
    client: Option<ClientProcess>,
    /// The source node a fault killed, until it is back.
    killed_source: Option<String>,
    /// Brokers being started again in the background (a start takes seconds, and the
    /// schedule goes on meanwhile); a fault on the same part waits for its start first.
    starting: Vec<(
        Part,
        tokio::task::JoinHandle<Result<(), brokers::BrokerError>>,
    )>,
    http: reqwest::Client,
}

async fn run_on(
    config: &ChaosConfig,
    schedule: &Schedule,
    kafka: &KafkaLocal,
    logs: &std::path::Path,
) -> Result<ChaosReport, ChaosError> {
    let names = format!("chaos{}", std::process::id());
    let (source_name, local_name) = (format!("{names}-source"), format!("{names}-local"));
    eprintln!("chaos: starting {SOURCE_NODES} source brokers and a local broker");
    let (source_brokers, local_brokers) = tokio::join!(
        kafka.start_cluster(&source_name, SOURCE_NODES),
        kafka.start(&local_name, ""),
    );
    let (source_brokers, local_brokers) = (source_brokers?, local_brokers?);
    let source = crate::KafkaCluster::mock_or(Some(source_brokers.as_str()))?;
    let local = crate::KafkaCluster::mock_or(Some(local_brokers.as_str()))?;
    source
        .create_replicated_topic(TOPIC, config.partitions, SOURCE_NODES as i32)
        .await?;
    local.create_topic(TOPIC, config.partitions).await?;

    let token = handlers::api_keys::generate_key();
    let mut pod_config = consumer::Config::default();
    pod_config.source.brokers = Some(source_brokers.clone());
    pod_config.source.topics = vec![TOPIC.into()];
    pod_config.source.group_id = format!("{names}-pod");
    pod_config.consumer_addr = ConsumerAddr::Tcp(format!("127.0.0.1:{}", free_port()?));
    pod_config.internal_token = Some(token.clone());
    let pod_log = logs.join("pod");
    let pod = PodProcess::start_logged(None, &pod_config, Some(&pod_log)).await?;

    let key = handlers::api_keys::generate_key();
    let keys_file = logs.join("api-keys.json");
    write_keys(&keys_file, &[&key])?;
    let handlers_port = free_port()?;
    let handlers_settings = HandlersSettings {
        port: handlers_port,
        consumer_addr: pod.addr.to_string(),
        internal_token: token,
        api_keys_file: keys_file,
        log: Some(logs.join("handlers")),
    };
    let handlers = HandlersProcess::start(&handlers_settings).await?;
    let handlers_url = format!("http://127.0.0.1:{handlers_port}");
    let http = reqwest::Client::new();
    wait_until("the API is ready", READY_WITHIN, || {
        let request = http.get(format!("{handlers_url}/api/v1/ready")).send();
        async move { request.await.is_ok_and(|r| r.status().is_success()) }
    })
    .await?;

    let link = Link::start_server(
        &config.toxiproxy,
        LinkShape {
            delay_ms: 0,
            mbit: 0.0,
        },
    )
    .await?;
    let upstream = std::net::SocketAddr::from(([127, 0, 0, 1], handlers_port));
    let listen = link
        .plain_proxy(PROXY, "127.0.0.1:0".parse().expect("an address"), upstream)
        .await?;
    let client_settings = ClientSettings {
        server_url: format!("http://{listen}"),
        api_key: key,
        local_brokers: local_brokers.clone(),
        local_properties: shared::kafka::KafkaPropertyArgs {
            kafka_properties: Some(format!(
                "transaction.timeout.ms={0},message.timeout.ms={0}",
                TRANSACTION_TIMEOUT.as_millis()
            )),
            ..Default::default()
        },
        client_id: format!("{names}-client"),
        batch_limit: 500,
        compression: true,
        topic_prefix: None,
        log: Some(logs.join("client")),
    };
    let client = ClientProcess::start_unwaited(&client_settings)?;
    let mut parts = Parts {
        kafka,
        source_brokers: source_brokers.clone(),
        source_name,
        local_name,
        link,
        pod_config,
        pod_log,
        pod: Some(pod),
        handlers_settings,
        handlers_url,
        handlers: Some(handlers),
        client_settings,
        client: Some(client),
        killed_source: None,
        starting: Vec::new(),
        http,
    };

    let length = Duration::from_secs(config.minutes * 60);
    let events = config.rate * length.as_secs();
    let producer = DemoProducer::to_cluster(&source.cluster(), TOPIC, config.rate, Some(events))?;
    producer.warm_up().await?;
    let started = Instant::now();
    let producing = tokio::spawn(producer.run(CancellationToken::new()));
    eprintln!(
        "chaos: streaming {events} events; the faults begin in {:.0} s",
        schedule.steps.first().map_or(0.0, |s| s.at.as_secs_f64())
    );
    let mut ran = Vec::new();
    let faults = run_schedule(&mut parts, schedule, started, &mut ran).await;
    let produced = producing
        .await
        .map_err(|e| ChaosError::Stuck(format!("the producer: {e}")))?;
    let result = match faults {
        Ok(()) => {
            eprintln!(
                "chaos: {produced} events produced; waiting for the last copies (up to {} s)",
                DRAIN_WITHIN.as_secs()
            );
            let source_records = crate::verify::read_cluster_topic(
                &source.cluster(),
                TOPIC,
                produced as usize,
                Duration::from_secs(120),
            )
            .await?;
            let expected = source_records.values().map(Vec::len).sum();
            let copies =
                crate::verify::read_cluster_topic(&local.cluster(), TOPIC, expected, DRAIN_WITHIN)
                    .await?;
            let verdict = check::compare(&source_records, &copies);
            Ok(ChaosReport {
                seed: schedule.seed,
                minutes: config.minutes,
                rate: config.rate,
                partitions: config.partitions,
                schedule: schedule.steps.clone(),
                ran,
                produced,
                passed: verdict.passed(),
                verdict,
            })
        }
        Err(err) => Err(err),
    };
    parts.stop().await;
    result
}

/// Begins and ends each fault at its time; a late action (a broker takes seconds to
/// start) delays the ones after it, and the log says when each really happened.
async fn run_schedule(
    parts: &mut Parts<'_>,
    schedule: &Schedule,
    started: Instant,
    ran: &mut Vec<String>,
) -> Result<(), ChaosError> {
    let mut actions: Vec<(Duration, bool, &Step)> = schedule
        .steps
        .iter()
        .flat_map(|s| [(s.at, true, s), (s.at + s.lasting, false, s)])
        .collect();
    // Ends before beginnings at one instant; a fault of no length begins, then ends.
    actions.sort_by_key(|(at, begins, step)| (*at, *begins && step.lasting > Duration::ZERO));
    for (at, begins, step) in actions {
        tokio::time::sleep_until((started + at).into()).await;
        let from = started.elapsed();
        let what = if begins {
            parts.begin(step.fault).await?
        } else {
            parts.end(step.fault).await?
        };
        let line = format!(
            "{:>6.1} s (+{:.1} s): {} {what}",
            from.as_secs_f64(),
            started.elapsed().saturating_sub(from).as_secs_f64(),
            if begins { "begin" } else { "end" },
        );
        eprintln!("chaos: {line}");
        ran.push(line);
    }
    parts.started(None).await
}

impl Parts<'_> {
    /// Waits for the brokers of `parts` (all: `None`) being started again.
    async fn started(&mut self, parts: Option<&[Part]>) -> Result<(), ChaosError> {
        let (waited, going): (Vec<_>, Vec<_>) = std::mem::take(&mut self.starting)
            .into_iter()
            .partition(|(part, _)| parts.is_none_or(|parts| parts.contains(part)));
        self.starting = going;
        for (_, start) in waited {
            start
                .await
                .map_err(|e| ChaosError::Stuck(format!("a broker start: {e}")))??;
        }
        Ok(())
    }

    /// Starts broker `name` again in the background.
    fn start_broker(&mut self, part: Part, name: String) {
        let kafka = self.kafka.clone();
        self.starting.push((
            part,
            tokio::spawn(async move { kafka.restart(&name).await }),
        ));
    }

    async fn begin(&mut self, fault: Fault) -> Result<String, ChaosError> {
        self.started(Some(fault.parts())).await?;
        Ok(match fault {
            Fault::Client { hard } => {
                stop(
                    self.client.take(),
                    hard,
                    ClientProcess::kill,
                    ClientProcess::stop,
                )
                .await;
                fault.to_string()
            }
            Fault::FreezeClient => {
                if let Some(client) = &self.client {
                    client.freeze(true).await?;
                }
                fault.to_string()
            }
            Fault::Pod { hard } => {
                stop(self.pod.take(), hard, PodProcess::kill, PodProcess::stop).await;
                fault.to_string()
            }
            Fault::Handlers { hard } => {
                stop(
                    self.handlers.take(),
                    hard,
                    HandlersProcess::kill,
                    HandlersProcess::stop,
                )
                .await;
                fault.to_string()
            }
            Fault::LocalBroker { hard } => {
                if hard {
                    self.kafka.kill(&self.local_name).await?;
                } else {
                    self.kafka.stop(&self.local_name).await?;
                }
                fault.to_string()
            }
            Fault::SourceLeader { partition } => {
                let leader = brokers::leader_of(&self.source_brokers, TOPIC, partition)
                    .await
                    .ok_or_else(|| {
                        ChaosError::Stuck(format!("no leader of partition {partition} known"))
                    })?;
                let node = format!("{}-{leader}", self.source_name);
                self.kafka.kill(&node).await?;
                self.killed_source = Some(node);
                format!("{fault} (node {leader})")
            }
            Fault::CutLink => {
                self.link.set_enabled(PROXY, false).await?;
                fault.to_string()
            }
            Fault::SlowLink { delay_ms, kbit } => {
                let shape = LinkShape {
                    delay_ms,
                    mbit: kbit as f64 / 1000.0,
                };
                self.link.shape_proxy(PROXY, SLOW_TAG, shape).await?;
                fault.to_string()
            }
            Fault::RotateKey => self.rotate_key().await?,
        })
    }

    async fn end(&mut self, fault: Fault) -> Result<String, ChaosError> {
        match fault {
            Fault::Client { .. } => {
                self.client = Some(ClientProcess::start_unwaited(&self.client_settings)?);
                Ok("client started".into())
            }
            Fault::FreezeClient => {
                if let Some(client) = &self.client {
                    client.freeze(false).await?;
                }
                Ok("client woken".into())
            }
            Fault::Pod { .. } => {
                self.pod = Some(
                    PodProcess::start_logged(None, &self.pod_config, Some(&self.pod_log)).await?,
                );
                Ok("consumer pod started".into())
            }
            Fault::Handlers { .. } => {
                self.handlers = Some(HandlersProcess::start(&self.handlers_settings).await?);
                Ok("handlers started".into())
            }
            Fault::LocalBroker { .. } => {
                self.start_broker(Part::LocalBroker, self.local_name.clone());
                Ok("local broker starting".into())
            }
            Fault::SourceLeader { .. } => match self.killed_source.take() {
                Some(node) => {
                    self.start_broker(Part::SourceCluster, node.clone());
                    Ok(format!("source broker {node} starting"))
                }
                None => Ok("no source broker to start".into()),
            },
            Fault::CutLink => {
                self.link.set_enabled(PROXY, true).await?;
                Ok("link mended".into())
            }
            Fault::SlowLink { .. } => {
                self.link.unshape_proxy(PROXY, SLOW_TAG).await?;
                Ok("link at full speed".into())
            }
            Fault::RotateKey => Ok("key rotated".into()),
        }
    }

    /// The server takes the new key beside the old; the client restarts with the new one;
    /// the old one is withdrawn. Each change is seen by the handlers before the next.
    async fn rotate_key(&mut self) -> Result<String, ChaosError> {
        let old = self.client_settings.api_key.clone();
        let new = handlers::api_keys::generate_key();
        let file = self.handlers_settings.api_keys_file.clone();
        write_keys(&file, &[&old, &new])?;
        self.wait_key(&new, true).await?;
        if let Some(client) = self.client.take() {
            client.stop().await;
        }
        self.client_settings.api_key = new.clone();
        self.client = Some(ClientProcess::start_unwaited(&self.client_settings)?);
        write_keys(&file, &[&new])?;
        self.wait_key(&old, false).await?;
        Ok("API key rotated: both taken, the client restarted on the new one, the old one withdrawn".into())
    }

    /// Waits until the handlers take `key` (or refuse it, `taken` false).
    async fn wait_key(&self, key: &str, taken: bool) -> Result<(), ChaosError> {
        let url = format!("{}/api/v1/metrics", self.handlers_url);
        let what = if taken {
            "the handlers take the new key"
        } else {
            "the handlers refuse the old key"
        };
        wait_until(what, KEY_SEEN_WITHIN, || {
            let request = self.http.get(&url).header("x-api-key", key).send();
            async move {
                match request.await {
                    Ok(answer) if taken => answer.status().is_success(),
                    Ok(answer) => answer.status() == reqwest::StatusCode::UNAUTHORIZED,
                    Err(_) => false,
                }
            }
        })
        .await
    }

    /// Stops every process gracefully (a frozen client is woken first).
    async fn stop(self) {
        if let Some(client) = self.client {
            let _ = client.freeze(false).await;
            client.stop().await;
        }
        if let Some(handlers) = self.handlers {
            handlers.stop().await;
        }
        if let Some(pod) = self.pod {
            pod.stop().await;
        }
        self.link.stop().await;
    }
}

/// Stops `process` hard or gracefully.
async fn stop<P, K, G>(
    process: Option<P>,
    hard: bool,
    kill: impl FnOnce(P) -> K,
    graceful: impl FnOnce(P) -> G,
) where
    K: std::future::Future<Output = ()>,
    G: std::future::Future<Output = ()>,
{
    match process {
        Some(process) if hard => kill(process).await,
        Some(process) => graceful(process).await,
        None => {}
    }
}

/// Writes the handlers' `API_KEYS_FILE` whole, in one rename, so it is never read half
/// written.
fn write_keys(file: &std::path::Path, keys: &[&str]) -> std::io::Result<()> {
    let json = serde_json::json!({ "api_keys": keys }).to_string();
    let partial = file.with_extension("partial");
    std::fs::write(&partial, json)?;
    std::fs::rename(&partial, file)
}

/// A free loopback port for a process the schedule kills and starts again on it. It is
/// drawn from below the kernel's ephemeral range (as `kafka-local.sh` draws its brokers'):
/// a port from that range can be handed to an outgoing connection while its process is
/// down, and the restart then fails with "Address already in use".
fn free_port() -> std::io::Result<u16> {
    let low = std::fs::read_to_string("/proc/sys/net/ipv4/ip_local_port_range")
        .ok()
        .and_then(|range| range.split_whitespace().next()?.parse::<u16>().ok())
        .filter(|&low| low > 11_024)
        .unwrap_or(32_768);
    use rand::Rng;
    let mut rng = rand::rng();
    (0..50)
        .map(|_| rng.random_range(10_000..low))
        .find(|&port| std::net::TcpListener::bind(("127.0.0.1", port)).is_ok())
        .ok_or_else(|| {
            std::io::Error::new(
                std::io::ErrorKind::AddrInUse,
                format!("no free loopback port below {low} after 50 tries"),
            )
        })
}

/// Waits until `condition` holds, up to `within`.
async fn wait_until<F, Fut>(
    what: &str,
    within: Duration,
    mut condition: F,
) -> Result<(), ChaosError>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = Instant::now() + within;
    while !condition().await {
        if Instant::now() >= deadline {
            return Err(ChaosError::Stuck(format!(
                "{what}: not within {} s",
                within.as_secs()
            )));
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    Ok(())
}
