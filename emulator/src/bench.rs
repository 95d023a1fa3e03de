//! `emulator bench`: N realistic events (1 KiB JSON values, keys, two headers, over six
//! partitions) copied from source to local Kafka through the whole pipeline (pod → API over
//! HTTP → client, transactions and all) and, on the same clusters in the same run, by a
//! direct rdkafka consumer → producer copy as the yardstick, in rounds that take turns (the
//! mock cluster holds a few MiB per partition); then end-to-end latency at a steady 1,000
//! events/s. Every copy is counted, so loss and duplicates show.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use futures::StreamExt;
use futures::stream::FuturesUnordered;
use hdrhistogram::Histogram;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::message::Message;
use rdkafka::producer::{FutureProducer, FutureRecord};
use rdkafka::{Offset, TopicPartitionList};
use serde::Serialize;
use shared::kafka::{Cluster, KafkaPropertyArgs, TokenContext, send_when_room};
use tokio_util::sync::CancellationToken;

use crate::bench_client::{ClientProcess, ClientSettings};
use crate::demo::{DemoProducer, now_ms};
use crate::stack::{Stack, StackConfig, StackError};

/// Size of a benchmark event's value.
pub const VALUE_BYTES: usize = 1024;
/// Longest a copy of the backlog may take.
const COPY_TIMEOUT: Duration = Duration::from_secs(600);
/// Longest a first connection may take.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// Default rate of the latency phase.
pub const LATENCY_RATE: u64 = 1000;

/// What to run.
#[derive(Debug, Clone)]
pub struct BenchConfig {
    pub events: u64,
    pub partitions: i32,
    /// Seconds of the steady-rate latency phase.
    pub latency_secs: u64,
    pub source_brokers: Option<String>,
    pub local_brokers: Option<String>,
    /// librdkafka properties for the source and the local Kafka (TLS, SASL, …), as the
    /// emulator takes them.
    pub source_properties: KafkaPropertyArgs,
    pub local_properties: KafkaPropertyArgs,
    pub batch_limit: u32,
    /// Events per second of the latency phase.
    pub latency_rate: u64,
    /// Also time MirrorMaker 2 on the same (real) brokers.
    pub peer_mm2: bool,
    /// Whether the client asks for compressed answers (on one machine there is no network
    /// to save, so the benchmark leaves it off unless asked).
    pub compression: bool,
    /// Most events per round (default: [`MOCK_ROUND_EVENTS`] on the mock cluster, all in one
    /// round on real Kafka).
    pub round_events: Option<u64>,
    /// Delays every answer of the embedded local Kafka by this long, as a busy or distant
    /// local Kafka would (the embedded cluster only).
    pub local_delay: Option<Duration>,
    /// The rate limits of the second API the backlog is copied through once more, to time
    /// catch-up with limits on (the shipped defaults unless told).
    pub limits_on: handlers::config::RateLimitArgs,
    /// The client reaches the API over a link shaped like this (toxiproxy).
    pub link: Option<crate::link::LinkShape>,
    /// With `link` and `peer_mm2`: the source broker's listener MirrorMaker 2 reaches
    /// through the link, and the address it advertises (where the link's proxy listens).
    pub source_link: Option<(SocketAddr, SocketAddr)>,
}

/// The shipped per-key budget (`RATE_LIMIT_KEY_MAX` per `RATE_LIMIT_WINDOW_SECS`, 20
/// requests a second) over a window of `window_secs`: the same rate, a shorter window.
pub fn shipped_key_budget(window_secs: u64) -> handlers::config::RateLimitArgs {
    let key_max = u64::from(handlers::config::DEFAULT_RATE_LIMIT_KEY_MAX) * window_secs
        / handlers::config::DEFAULT_RATE_LIMIT_WINDOW_SECS;
    handlers::config::RateLimitArgs {
        rate_limit_key_max: u32::try_from(key_max.max(1)).unwrap_or(u32::MAX),
        rate_limit_window_secs: window_secs,
        ..handlers::config::RateLimitArgs::default()
    }
}

/// The backlog copied through an API with rate limits on.
#[derive(Debug, Clone, Serialize)]
pub struct LimitedResult {
    pub events_per_sec: f64,
    /// Of the pipeline's own events/s with limits off, on the same rounds.
    pub vs_limits_off: f64,
    pub key_limit: u32,
    pub window_secs: u64,
    /// Requests the client made, and how many the server refused (429).
    pub requests: u64,
    pub refused: u64,
    pub lost: u64,
    pub duplicated: u64,
    pub client_peak_rss_mb: f64,
}

/// The pipeline's figures.
#[derive(Debug, Clone, Serialize)]
pub struct PipelineResult {
    pub events_per_sec: f64,
    pub mb_per_sec: f64,
    /// End-to-end latency at [`LATENCY_RATE`]: source timestamp to visible in local Kafka
    /// to a `read_committed` reader.
    pub p50_ms: f64,
    pub p99_ms: f64,
    pub p999_ms: f64,
    pub lost: u64,
    pub duplicated: u64,
    /// Peak resident memory of the emulator process: handlers, the embedded clusters (on
    /// the mock) and the benchmark's own readers and direct copy.
    pub peak_rss_mb: f64,
    /// Peak resident memory of the consumer pod, which runs in a process of its own.
    pub pod_peak_rss_mb: f64,
    /// Peak resident memory of the client, which runs in a process of its own.
    pub client_peak_rss_mb: f64,
    /// From the client's start to connected with its position read (not in `events_per_sec`).
    pub client_start_ms: f64,
    /// Requests the client made in the latency phase, its start included (one stream
    /// request lasts up to `STREAM_MAX_SECS`), and per minute.
    pub latency_requests: u64,
    pub latency_requests_per_minute: f64,
    /// Answers 429 in the latency phase.
    pub latency_refused: u64,
}

impl LinkResult {
    /// `crossed` bytes in `secs` for a backlog of `raw_mb`.
    fn of(link: &crate::link::Link, crossed: u64, secs: f64, raw_mb: f64) -> Self {
        Self {
            delay_ms: link.shape.delay_ms,
            mbit: link.shape.mbit,
            backlog_mb: crossed as f64 / 1_000_000.0,
            utilisation: link.utilisation(crossed, secs),
            raw_mb_per_sec: raw_mb / secs,
            events_per_sec: raw_mb * 1_000_000.0 / VALUE_BYTES as f64 / secs,
        }
    }
}

/// The link the client crossed (`--link-delay-ms`, `--link-mbit`).
#[derive(Debug, Clone, Serialize)]
pub struct LinkResult {
    pub delay_ms: u64,
    pub mbit: f64,
    /// Bytes that crossed the link (both ways) while the client copied the backlog.
    pub backlog_mb: f64,
    /// Those bytes against what the link carries one way in the same time.
    pub utilisation: f64,
    /// The events' own bytes per second (values, keys, headers, as produced), which the
    /// link carried compressed when the client asked for compression.
    pub raw_mb_per_sec: f64,
    /// Events per second from when the backlog began to cross the link to its last copy.
    pub events_per_sec: f64,
}

/// The direct copy's figures.
#[derive(Debug, Clone, Serialize)]
pub struct DirectResult {
    pub events_per_sec: f64,
    pub mb_per_sec: f64,
}

/// MirrorMaker 2's figures (`--peer mm2`).
#[derive(Debug, Clone, Serialize)]
pub struct PeerResult {
    /// From its first copy visible to its last: its JVM and connector start are left out.
    pub events_per_sec: f64,
    pub mb_per_sec: f64,
    /// From its start to its first copy visible.
    pub start_secs: f64,
    pub p50_ms: f64,
    pub p99_ms: f64,
    pub p999_ms: f64,
    pub lost: u64,
    pub duplicated: u64,
    /// The link its consumer crossed to the source, when there was one.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub link: Option<LinkResult>,
}

/// The report; serialized, it is the `--json` line of the contract.
#[derive(Debug, Clone, Serialize)]
pub struct BenchReport {
    pub events: u64,
    /// Events per second of the latency phase.
    pub latency_rate: u64,
    pub pipeline: PipelineResult,
    pub direct_copy: DirectResult,
    /// The same backlog through an API with rate limits on (the shipped defaults unless
    /// told), the client pacing itself by them.
    pub pipeline_limits_on: LimitedResult,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub mirror_maker_2: Option<PeerResult>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub link: Option<LinkResult>,
    /// A new client reading a backlog older than the pod's buffer (real brokers only).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub catch_up: Option<crate::bench_catchup::CatchUpResult>,
}

/// Why the benchmark could not run.
#[derive(Debug, thiserror::Error)]
pub enum BenchError {
    #[error(transparent)]
    Stack(#[from] StackError),
    #[error("Kafka: {0}")]
    Kafka(#[from] rdkafka::error::KafkaError),
    #[error("{0}")]
    Incomplete(String),
}

/// Copies seen by a `read_committed` reader of a local topic.
#[derive(Debug)]
struct Seen {
    /// Copies per `seq`.
    counts: HashMap<u64, u32>,
    /// Milliseconds from each event's source timestamp to its copy being read.
    latency_ms: Histogram<u64>,
    first: Option<Instant>,
    last: Option<Instant>,
    /// The slowest latency of each second from the first copy, in ms.
    slowest_by_second: Vec<u64>,
}

/// A `read_committed` reader of a local topic, connected and positioned before any clock
/// starts, so its own start-up is never timed.
pub(crate) struct Watcher {
    pub(crate) consumer: BaseConsumer<TokenContext>,
}

impl Watcher {
    /// Assigns every partition of `topic` at its current end (`from_end`) or start.
    pub(crate) fn new(
        cluster: &Cluster,
        topic: &str,
        partitions: i32,
        from_end: bool,
    ) -> Result<Self, rdkafka::error::KafkaError> {
        let consumer: BaseConsumer<TokenContext> = cluster.consumer(
            |c| {
                c.set("group.id", "kafka-replicator-bench")
                    .set("enable.auto.commit", "false")
                    .set("isolation.level", "read_committed")
                    .set("fetch.wait.max.ms", "5");
            },
            TokenContext::of(cluster),
        )?;
        let mut tpl = TopicPartitionList::new();
        for p in 0..partitions {
            // Explicit offsets: the first fetch needs no offset lookup.
            let (low, high) = consumer.fetch_watermarks(topic, p, Duration::from_secs(10))?;
            tpl.add_partition_offset(topic, p, Offset::Offset(if from_end { high } else { low }))?;
        }
        consumer.assign(&tpl)?;
        Ok(Self { consumer })
    }

    /// Reads until `expected` distinct `seq`s arrived or `timeout`.
    fn watch(&self, expected: usize, timeout: Duration, progress: &str, stop: &AtomicBool) -> Seen {
        let deadline = Instant::now() + timeout;
        let mut seen = Seen::default();
        let mut reported = Instant::now();
        while seen.counts.len() < expected
            && Instant::now() < deadline
            && !stop.load(Ordering::Relaxed)
        {
            let Some(Ok(message)) = self.consumer.poll(Duration::from_millis(100)) else {
                continue;
            };
            let now = Instant::now();
            let Some(seq) = message.payload().and_then(seq_of) else {
                continue;
            };
            *seen.counts.entry(seq).or_default() += 1;
            let first = *seen.first.get_or_insert(now);
            if let Some(ts) = message.timestamp().to_millis() {
                let ms = (now_ms() - ts).max(0).unsigned_abs();
                seen.latency_ms.saturating_record(ms);
                let second = now.duration_since(first).as_secs() as usize;
                if seen.slowest_by_second.len() <= second {
                    seen.slowest_by_second.resize(second + 1, 0);
                }
                seen.slowest_by_second[second] = seen.slowest_by_second[second].max(ms);
            }
            seen.last = Some(now);
            if reported.elapsed() >= Duration::from_secs(2) {
                eprintln!("bench: {progress}: {}/{expected}", seen.counts.len());
                reported = Instant::now();
            }
        }
        seen
    }
}

/// A [`Watcher`] at work on the blocking pool. Dropped unfinished (a run failing
/// elsewhere), it stops within its 100 ms poll, so it never holds the process open.
struct WatchTask {
    handle: tokio::task::JoinHandle<Seen>,
    stop: Arc<AtomicBool>,
}

impl Drop for WatchTask {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
    }
}

/// Starts a [`Watcher`] on the blocking pool once it is positioned; [`seen`] gives what it
/// saw.
async fn spawn_watcher(
    cluster: &Cluster,
    topic: &str,
    partitions: i32,
    from_end: bool,
    expected: usize,
    timeout: Duration,
    progress: &'static str,
) -> Result<WatchTask, BenchError> {
    let (cluster, topic) = (cluster.clone(), topic.to_owned());
    let watcher =
        tokio::task::spawn_blocking(move || Watcher::new(&cluster, &topic, partitions, from_end))
            .await
            .map_err(|e| BenchError::Incomplete(e.to_string()))??;
    let stop = Arc::new(AtomicBool::new(false));
    let stopped = Arc::clone(&stop);
    let handle =
        tokio::task::spawn_blocking(move || watcher.watch(expected, timeout, progress, &stopped));
    Ok(WatchTask { handle, stop })
}

async fn seen(mut watcher: WatchTask) -> Result<Seen, BenchError> {
    (&mut watcher.handle)
        .await
        .map_err(|e| BenchError::Incomplete(e.to_string()))
}

impl Default for Seen {
    fn default() -> Self {
        Self {
            counts: HashMap::new(),
            // Three significant digits: 1 ms apart below 1 s, and grows as needed.
            latency_ms: Histogram::new(3).expect("3 significant digits are supported"),
            first: None,
            last: None,
            slowest_by_second: Vec::new(),
        }
    }
}

impl Seen {
    /// Where the tail came from: the seconds whose slowest copy took over twice the
    /// typical second's slowest, as `+second: ms`.
    fn spikes(&self) -> String {
        let mut sorted = self.slowest_by_second.clone();
        sorted.sort_unstable();
        let typical = sorted.get(sorted.len() / 2).copied().unwrap_or(0);
        let spikes: Vec<String> = self
            .slowest_by_second
            .iter()
            .enumerate()
            .filter(|(_, ms)| **ms > typical * 2)
            .map(|(s, ms)| format!("+{s}s: {ms} ms"))
            .collect();
        format!(
            "slowest copy of a typical second {typical} ms; seconds over twice that: {}",
            if spikes.is_empty() {
                "none".to_owned()
            } else {
                spikes.join(", ")
            }
        )
    }

    fn duplicated(&self) -> u64 {
        self.counts
            .values()
            .map(|c| u64::from(c.saturating_sub(1)))
            .sum()
    }
}

/// Produces `steady` events into `topics.0` at `rate` per second, numbered from `first_seq`,
/// and times each as it becomes visible in `topics.1` of local Kafka.
async fn steady_latency(
    source: &Cluster,
    local: &Cluster,
    topics: (&str, &str),
    partitions: i32,
    first_seq: u64,
    rate: u64,
    steady: u64,
) -> Result<Seen, BenchError> {
    // Watched from the current ends: only the steady events.
    let watcher = spawn_watcher(
        local,
        topics.1,
        partitions,
        true,
        usize::try_from(steady).unwrap_or(usize::MAX),
        Duration::from_secs(120) + Duration::from_secs(steady / rate.max(1)),
        "latency",
    )
    .await?;
    // A producer's first records wait for its id and metadata, which is the source's
    // start-up, not replication: it is ready before the clock starts.
    let producer = DemoProducer::to_cluster(source, topics.0, rate, Some(steady))?
        .value_bytes(VALUE_BYTES)
        .spread_over(partitions)
        .first_seq(first_seq);
    producer.warm_up().await?;
    let (_, latency) = tokio::join!(producer.run(CancellationToken::new()), seen(watcher));
    if let Ok(seen) = &latency {
        eprintln!("bench: latency of {}: {}", topics.1, seen.spikes());
    }
    latency
}

/// Times MirrorMaker 2 as the pipeline was timed, on a topic of its own (so the pipeline
/// does not copy it too): a backlog of the same size, then the same steady rate.
async fn mirror_maker_2(
    stack: &Stack,
    config: &BenchConfig,
    steady: u64,
    link: Option<&crate::link::Link>,
) -> Result<PeerResult, BenchError> {
    let local = &stack.info.local_brokers;
    // Over the link, MirrorMaker 2 (on the laptop's side) reads the source through it.
    let source = match (link, config.source_link) {
        (Some(link), Some((listener, advertised))) => {
            link.proxy(SOURCE_PROXY, advertised, listener).await?;
            advertised.to_string()
        }
        _ => stack.info.source_brokers.clone(),
    };
    let source = &source;
    let (source_cluster, local_cluster) = (stack.source.cluster(), stack.local.cluster());
    let n = config.events;
    let topic = format!("{}-mm2", stack.info.topic);
    let target = crate::mm2::target_topic(&topic);
    stack.source.create_topic(&topic, config.partitions).await?;
    stack.local.create_topic(&target, config.partitions).await?;
    eprintln!("bench: MirrorMaker 2: producing {n} events into {topic}");
    produce(&source_cluster, &topic, config.partitions, n, 0).await?;
    let watcher = spawn_watcher(
        &local_cluster,
        &target,
        config.partitions,
        false,
        usize::try_from(n).unwrap_or(usize::MAX),
        COPY_TIMEOUT,
        "MirrorMaker 2",
    )
    .await?;
    let link_before = match link {
        Some(l) => l.bytes(SOURCE_PROXY).await?,
        None => 0,
    };
    let started = Instant::now();
    // toxiproxy shapes each connection apart: over the link one task (one fetching
    // connection, as the client's one stream) gets the link's capacity, two would get twice.
    let tasks = if link.is_some() { 1 } else { 2 };
    let mut mm2 = crate::mm2::MirrorMaker2::start(source, local, &topic, tasks)
        .map_err(|e| BenchError::Incomplete(e.to_string()))?;
    eprintln!(
        "bench: MirrorMaker 2 started (log: {}), copying the backlog",
        mm2.log.display()
    );
    // One that dies (no Java, no jars, a bad setting) fails the run now, not at the timeout.
    // Over a link, what has crossed it is sampled: its copy is timed from when the backlog
    // began to cross, since it fetches ahead of its first copy becoming visible.
    let watching = seen(watcher);
    tokio::pin!(watching);
    let mut samples: Vec<(Instant, u64)> = Vec::new();
    let mut sampling = tokio::time::interval(Duration::from_millis(250));
    let watched = loop {
        tokio::select! {
            watched = &mut watching => break watched?,
            status = mm2.exited() => {
                return Err(BenchError::Incomplete(format!(
                    "MirrorMaker 2 exited ({}); its log: {}",
                    status.map_or_else(|e| e.to_string(), |s| s.to_string()),
                    mm2.log.display()
                )));
            }
            _ = sampling.tick(), if link.is_some() => {
                if let Some(l) = link {
                    samples.push((Instant::now(), l.bytes(SOURCE_PROXY).await?));
                }
            }
        }
    };
    let (start_secs, copy_secs) = match (watched.first, watched.last) {
        (Some(first), Some(last)) => (
            first.duration_since(started).as_secs_f64(),
            last.duration_since(first).as_secs_f64(),
        ),
        _ => (f64::NAN, f64::NAN),
    };
    let copied = watched.counts.len() as u64;
    let link_result = match link {
        Some(l) => {
            let crossed = l.bytes(SOURCE_PROXY).await?.saturating_sub(link_before);
            // From the first sample by which a twentieth of its backlog bytes had crossed.
            let busy_from = samples
                .iter()
                .find(|(_, b)| b.saturating_sub(link_before) * 20 >= crossed)
                .map_or(started, |(t, _)| *t);
            let secs = watched
                .last
                .map_or(f64::NAN, |t| t.duration_since(busy_from).as_secs_f64());
            Some(LinkResult::of(
                l,
                crossed,
                secs,
                n as f64 * VALUE_BYTES as f64 / 1_000_000.0,
            ))
        }
        None => None,
    };
    eprintln!(
        "bench: MirrorMaker 2 latency at {} events/s for {} s",
        config.latency_rate, config.latency_secs
    );
    let latency = steady_latency(
        &source_cluster,
        &local_cluster,
        (&topic, &target),
        config.partitions,
        n,
        config.latency_rate,
        steady,
    )
    .await;
    mm2.stop().await;
    let latency = latency?;
    let rate = copied.saturating_sub(1) as f64 / copy_secs;
    Ok(PeerResult {
        events_per_sec: rate,
        mb_per_sec: rate * VALUE_BYTES as f64 / 1_000_000.0,
        start_secs,
        p50_ms: percentile(&latency.latency_ms, 50.0),
        p99_ms: percentile(&latency.latency_ms, 99.0),
        p999_ms: percentile(&latency.latency_ms, 99.9),
        lost: n.saturating_sub(copied) + steady.saturating_sub(latency.counts.len() as u64),
        duplicated: watched.duplicated() + latency.duplicated(),
        link: link_result,
    })
}

/// The end offset of each partition of `topic`.
fn log_ends(
    cluster: &Cluster,
    topic: &str,
    partitions: i32,
) -> Result<Vec<i64>, rdkafka::error::KafkaError> {
    let consumer: BaseConsumer<TokenContext> =
        cluster.consumer(|_| {}, TokenContext::of(cluster))?;
    (0..partitions)
        .map(|p| {
            consumer
                .fetch_watermarks(topic, p, CONNECT_TIMEOUT)
                .map(|(_, high)| high)
        })
        .collect()
}

/// The `seq` field of a demo value, without a full JSON parse.
pub(crate) fn seq_of(value: &[u8]) -> Option<u64> {
    let text = std::str::from_utf8(value.get(..40.min(value.len()))?).ok()?;
    let rest = text.strip_prefix("{\"seq\":")?;
    let end = rest.find(',')?;
    rest[..end].parse().ok()
}

/// The `p`th percentile of `histogram`; NaN when it holds nothing.
pub(crate) fn percentile(histogram: &Histogram<u64>, p: f64) -> f64 {
    if histogram.is_empty() {
        return f64::NAN;
    }
    histogram.value_at_quantile(p / 100.0) as f64
}

/// Peak resident set of this process, in MiB (Linux; 0 elsewhere).
fn peak_rss_mb() -> f64 {
    peak_rss_mb_of("self")
}

/// Peak resident set of process `pid` (`self` for this one), in MiB (Linux; 0 elsewhere).
pub(crate) fn peak_rss_mb_of(pid: &str) -> f64 {
    status_mb(pid, "VmHWM:")
}

/// A memory field of `/proc/<pid>/status` (`VmHWM:`, `VmRSS:`), in MiB (Linux; 0
/// elsewhere).
pub(crate) fn status_mb(pid: &str, field: &str) -> f64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with(field))
                .and_then(|l| l.split_whitespace().nth(1)?.parse::<f64>().ok())
        })
        .map_or(0.0, |kb| kb / 1024.0)
}

/// Produces `events` demo events numbered from `first_seq`; an error unless the source took
/// them all.
pub(crate) async fn produce(
    cluster: &Cluster,
    topic: &str,
    partitions: i32,
    events: u64,
    first_seq: u64,
) -> Result<(), BenchError> {
    let demo = DemoProducer::to_cluster(cluster, topic, 0, Some(events))?
        .value_bytes(VALUE_BYTES)
        .spread_over(partitions)
        .first_seq(first_seq);
    let produced = demo.run(CancellationToken::new()).await;
    if produced < events {
        return Err(BenchError::Incomplete(format!(
            "the source took {produced} of {events}"
        )));
    }
    Ok(())
}

/// [`log_ends`], off the runtime.
async fn log_ends_of(
    cluster: &Cluster,
    topic: &str,
    partitions: i32,
) -> Result<Vec<i64>, BenchError> {
    let (cluster, topic) = (cluster.clone(), topic.to_owned());
    tokio::task::spawn_blocking(move || log_ends(&cluster, &topic, partitions))
        .await
        .map_err(|e| BenchError::Incomplete(e.to_string()))?
        .map_err(BenchError::from)
}

/// The yardstick: a plain rdkafka consumer → producer copy, partition for partition, no
/// HTTP and no transactions. Both clients are connected and the producer has its id before
/// the clock starts, so what is timed is copying.
struct DirectCopy {
    consumer: BaseConsumer<TokenContext>,
    producer: FutureProducer<TokenContext>,
}

impl DirectCopy {
    /// Connects to both clusters; `fetch_wait_ms` as the consumer pod fetches.
    async fn connect(
        source: &Cluster,
        local: &Cluster,
        from: &str,
        to: &str,
        fetch_wait_ms: u32,
    ) -> Result<Self, BenchError> {
        let consumer: BaseConsumer<TokenContext> = source.consumer(
            |c| {
                c.set("group.id", "kafka-replicator-bench-direct")
                    .set("enable.auto.commit", "false")
                    .set("fetch.wait.max.ms", fetch_wait_ms.to_string());
            },
            TokenContext::of(source),
        )?;
        let producer: FutureProducer<TokenContext> = local
            .config(|c| {
                c.set("enable.idempotence", "true")
                    .set("acks", "all")
                    .set("linger.ms", "5")
                    .set("compression.type", "lz4");
            })
            .create_with_context(TokenContext::of(local))?;
        let (c, from_topic) = (consumer, from.to_owned());
        let consumer = tokio::task::spawn_blocking(move || {
            c.fetch_metadata(Some(&from_topic), CONNECT_TIMEOUT)
                .map(|_| c)
        })
        .await
        .map_err(|e| BenchError::Incomplete(e.to_string()))??;
        crate::demo::warm_up(&producer, to).await?;
        Ok(Self { consumer, producer })
    }

    /// Copies the records of `from` from `starts` to below `ends` (one offset per partition,
    /// `events` records in all) into `to` and waits until local Kafka acknowledged them all.
    async fn run(
        self,
        from: &str,
        to: &str,
        starts: Vec<i64>,
        ends: Vec<i64>,
        events: u64,
    ) -> Result<(), BenchError> {
        let Self { consumer, producer } = self;
        let mut tpl = TopicPartitionList::new();
        for (p, start) in (0..).zip(&starts) {
            tpl.add_partition_offset(from, p, Offset::Offset(*start))?;
        }
        consumer.assign(&tpl)?;
        let (tx, mut rx) = tokio::sync::mpsc::channel::<Vec<rdkafka::message::OwnedMessage>>(8);
        let deadline = Instant::now() + COPY_TIMEOUT;
        let reader = tokio::task::spawn_blocking(move || {
            let mut read = 0u64;
            while read < events && Instant::now() < deadline {
                let mut batch = Vec::with_capacity(1000);
                while batch.len() < 1000 && read < events && Instant::now() < deadline {
                    match consumer.poll(Duration::from_millis(50)) {
                        Some(Ok(m))
                            if usize::try_from(m.partition())
                                .ok()
                                .and_then(|p| ends.get(p))
                                .is_some_and(|end| m.offset() < *end) =>
                        {
                            batch.push(m.detach());
                            read += 1;
                        }
                        _ if !batch.is_empty() => break,
                        _ => {}
                    }
                }
                if tx.blocking_send(batch).is_err() {
                    break;
                }
            }
        });
        let mut acked = 0u64;
        let mut in_flight = FuturesUnordered::new();
        while let Some(batch) = rx.recv().await {
            for m in batch {
                let mut record: FutureRecord<'_, [u8], [u8]> =
                    FutureRecord::to(to).partition(m.partition());
                if let Some(k) = m.key() {
                    record = record.key(k);
                }
                if let Some(v) = m.payload() {
                    record = record.payload(v);
                }
                if let Some(h) = m.headers() {
                    record = record.headers(h.clone());
                }
                if let Some(ts) = m.timestamp().to_millis() {
                    record = record.timestamp(ts);
                }
                // rdkafka hands a refused record back in the error, as it is.
                #[allow(clippy::result_large_err)]
                let send = |r| producer.send_result(r);
                let delivery = send_when_room(record, send)
                    .await
                    .map_err(|(err, _)| BenchError::Kafka(err))?;
                in_flight.push(delivery);
                while in_flight.len() >= 10_000 {
                    if let Some(Ok(Ok(_))) = in_flight.next().await {
                        acked += 1;
                    }
                }
            }
        }
        while let Some(result) = in_flight.next().await {
            if let Ok(Ok(_)) = result {
                acked += 1;
            }
        }
        let _ = reader.await;
        if acked < events {
            return Err(BenchError::Incomplete(format!(
                "direct copy: {acked} of {events} acknowledged"
            )));
        }
        Ok(())
    }
}

/// Most bytes per partition a round may put on librdkafka's mock cluster, which drops the
/// oldest records of a partition beyond a few MiB.
const MOCK_PARTITION_BYTES: u64 = 3 * 1024 * 1024;
/// Events per round on the mock cluster, unless told.
pub const MOCK_ROUND_EVENTS: u64 = 12_000;

/// The sum of the samples of `name` whose labels contain `label` in Prometheus text.
pub(crate) fn metric_total(text: &str, name: &str, label: &str) -> u64 {
    text.lines()
        .filter(|l| {
            l.strip_prefix(name)
                .is_some_and(|rest| rest.starts_with(['{', ' ']))
                && l.contains(label)
        })
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum::<f64>() as u64
}

/// Splits `events` into rounds of at most `cap` each, as even as they come.
fn rounds(events: u64, cap: u64) -> Vec<u64> {
    let count = events.div_ceil(cap.max(1)).max(1);
    (0..count)
        .map(|i| events / count + u64::from(i < events % count))
        .collect()
}

/// What one round of the backlog copy measured.
struct RoundResult {
    pipeline_secs: f64,
    direct_secs: f64,
    limited_secs: f64,
    /// Pipeline copies per `seq`.
    counts: HashMap<u64, u32>,
    /// Copies per `seq` through the API with limits on.
    limited_counts: HashMap<u64, u32>,
    client_start_ms: f64,
    client_peak_rss_mb: f64,
    limited_peak_rss_mb: f64,
}

/// Where the copy with limits on goes: a prefix on the local cluster.
const LIMITED_PREFIX: &str = "limits-on.";

/// A pipeline copy of one round: its client started afresh (resuming from its committed
/// position) and stopped once every event is seen. Returns its seconds from connected to
/// the last copy, the copies per `seq`, its start time and its peak memory.
pub(crate) async fn pipeline_pass(
    local: &Cluster,
    topic: &str,
    partitions: i32,
    settings: &ClientSettings,
    events: u64,
    progress: &'static str,
) -> Result<(f64, HashMap<u64, u32>, f64, f64), BenchError> {
    let expected = usize::try_from(events).unwrap_or(usize::MAX);
    let watcher = spawn_watcher(
        local,
        topic,
        partitions,
        true,
        expected,
        COPY_TIMEOUT,
        progress,
    )
    .await?;
    let starting = Instant::now();
    let client = ClientProcess::start(settings, COPY_TIMEOUT).await?;
    let started = Instant::now();
    let start_ms = started.duration_since(starting).as_secs_f64() * 1000.0;
    let watched = seen(watcher).await;
    let peak = client.peak_rss_mb();
    client.stop().await;
    let watched = watched?;
    let secs = watched
        .last
        .map_or(f64::NAN, |t| t.duration_since(started).as_secs_f64());
    Ok((secs, watched.counts, start_ms, peak))
}

/// One round: `events` new events (numbered from `first_seq`) into the source, then copied
/// by the pipeline, by the direct copy, and by the pipeline again through the API with
/// limits on (`limited`): after the direct copy, or with `limited_first` before the
/// pipeline, so that brokers warming up favour neither pipeline copy.
async fn round(
    stack: &Stack,
    config: &BenchConfig,
    (settings, limited): (&ClientSettings, &ClientSettings),
    limited_first: bool,
    events: u64,
    first_seq: u64,
) -> Result<RoundResult, BenchError> {
    let (source, local) = (&stack.source.cluster(), &stack.local.cluster());
    let topic = &stack.info.topic;
    let starts = log_ends_of(source, topic, config.partitions).await?;
    produce(source, topic, config.partitions, events, first_seq).await?;
    // Where this round's backlog ends in each partition: the direct copy takes exactly it.
    let ends = log_ends_of(source, topic, config.partitions).await?;

    let limited_topic = format!("{LIMITED_PREFIX}{topic}");
    let limited_pass = || {
        pipeline_pass(
            local,
            &limited_topic,
            config.partitions,
            limited,
            events,
            "pipeline, limits on",
        )
    };
    let early = if limited_first {
        Some(limited_pass().await?)
    } else {
        None
    };
    // Timed from the client being connected (as the direct copy is before its clock
    // starts) to the last copy seen.
    let expected = usize::try_from(events).unwrap_or(usize::MAX);
    let (pipeline_secs, counts, client_start_ms, client_peak_rss_mb) = pipeline_pass(
        local,
        topic,
        config.partitions,
        settings,
        events,
        "pipeline",
    )
    .await?;

    let direct_topic = format!("{topic}-direct");
    let watcher = spawn_watcher(
        local,
        &direct_topic,
        config.partitions,
        true,
        expected,
        COPY_TIMEOUT,
        "direct copy",
    )
    .await?;
    let fetch_wait_ms = stack.source.fetch_wait_ms();
    let copy = DirectCopy::connect(source, local, topic, &direct_topic, fetch_wait_ms).await?;
    let started = Instant::now();
    copy.run(topic, &direct_topic, starts, ends, events).await?;
    let direct_seen = seen(watcher).await?;
    let direct_secs = direct_seen
        .last
        .map_or(f64::NAN, |t| t.duration_since(started).as_secs_f64());

    let (limited_secs, limited_counts, _, limited_peak_rss_mb) = match early {
        Some(done) => done,
        None => limited_pass().await?,
    };
    Ok(RoundResult {
        pipeline_secs,
        direct_secs,
        limited_secs,
        counts,
        limited_counts,
        client_start_ms,
        client_peak_rss_mb,
        limited_peak_rss_mb,
    })
}

/// A stack for the benchmark on `config`'s clusters: no client of its own (each pass starts
/// one), the pod in a process of its own, the API's rate limits off.
pub(crate) fn stack_config(config: &BenchConfig, topic: &str) -> StackConfig {
    let mut stack_config = StackConfig {
        source_brokers: config.source_brokers.clone(),
        local_brokers: config.local_brokers.clone(),
        topic: topic.to_owned(),
        partitions: config.partitions,
        events: Some(0),
        rate: 0,
        run_client: false,
        pod_process: true,
        ..StackConfig::default()
    };
    stack_config.pod.source.group_id = format!("{topic}-group");
    stack_config.pod.source.properties = config.source_properties.clone();
    stack_config.client.properties = config.local_properties.clone();
    stack_config.handlers.limits = handlers::config::RateLimitArgs {
        rate_limit_max: 0,
        rate_limit_key_max: 0,
        ..Default::default()
    };
    stack_config
}

/// `total` demo events of [`VALUE_BYTES`] into `stack`'s topic at `config`'s latency rate,
/// over its partitions, connected before any clock starts.
pub(crate) async fn warm_demo_producer(
    stack: &Stack,
    config: &BenchConfig,
    total: u64,
) -> Result<DemoProducer, BenchError> {
    let producer = DemoProducer::to_cluster(
        &stack.source.cluster(),
        &stack.info.topic,
        config.latency_rate,
        Some(total),
    )?
    .value_bytes(VALUE_BYTES)
    .spread_over(config.partitions);
    producer.warm_up().await?;
    Ok(producer)
}

/// How a benchmark client reaches `stack`: its API, key and local Kafka, `config`'s batch
/// limit and compression, its id after the stack's topic.
pub(crate) fn client_settings(stack: &Stack, config: &BenchConfig) -> ClientSettings {
    ClientSettings {
        server_url: stack.server_url.clone(),
        api_key: stack.info.api_key.clone(),
        local_brokers: stack.info.local_brokers.clone(),
        local_properties: config.local_properties.clone(),
        client_id: format!("{}-client", stack.info.topic),
        batch_limit: config.batch_limit,
        compression: config.compression,
        topic_prefix: None,
        log: None,
    }
}

/// Runs the benchmark.
pub async fn run(config: BenchConfig) -> Result<BenchReport, BenchError> {
    let partitions = u64::try_from(config.partitions.max(1)).unwrap_or(1);
    let on_mock = config.source_brokers.is_none() || config.local_brokers.is_none();
    let steady = config.latency_rate * config.latency_secs;
    if config.peer_mm2 && on_mock {
        return Err(BenchError::Incomplete(
            "--peer mm2 runs MirrorMaker 2 against real brokers: give --source-brokers and --local-brokers (infra/kafka-local starts Apache Kafka)".into(),
        ));
    }
    let secured = [&config.source_properties, &config.local_properties]
        .iter()
        .any(|p| p.load().is_ok_and(|p| !p.is_empty()));
    if config.peer_mm2 && secured {
        return Err(BenchError::Incomplete(
            "--peer mm2 runs MirrorMaker 2 on plaintext listeners: time it without Kafka properties, on the same brokers' PLAINTEXT listener".into(),
        ));
    }
    if config.link.is_some() {
        crate::link::server(
            std::env::var_os("TOXIPROXY_SERVER"),
            "--link-delay-ms/--link-mbit",
        )?;
    }
    if config.link.is_some() && config.peer_mm2 && config.source_link.is_none() {
        return Err(BenchError::Incomplete(
            "--peer mm2 over the link needs the source broker's LINK listener: start it with KAFKA_LOCAL_LINK_PORT=<free port> infra/kafka-local/kafka-local.sh start source, then pass --source-link \"$(infra/kafka-local/kafka-local.sh link source)\"".into(),
        ));
    }
    if config.local_delay.is_some() && config.local_brokers.is_some() {
        return Err(BenchError::Incomplete(
            "--local-delay-ms slows the embedded local Kafka down; a real one (--local-brokers) is timed as it is".into(),
        ));
    }
    // The mock keeps a few MiB per partition: the backlog is copied in rounds that fit, each
    // copied by both before the next is produced. Real Kafka takes it in one.
    let most = MOCK_PARTITION_BYTES * partitions / VALUE_BYTES as u64;
    let cap = if on_mock {
        let round = config.round_events.unwrap_or(MOCK_ROUND_EVENTS);
        if steady >= most {
            return Err(BenchError::Incomplete(format!(
                "the embedded (mock) clusters keep only a few MiB per partition: with {} partitions the latency phase may have at most {} events, not {steady}; use --source-brokers and --local-brokers with real Kafka for more",
                config.partitions,
                most.saturating_sub(1)
            )));
        }
        (most - steady).min(round)
    } else {
        config.round_events.unwrap_or(config.events)
    };
    let plan = rounds(config.events, cap);
    let topic = format!("bench-{:08x}", rand::random::<u32>());
    let mut stack_config = stack_config(&config, &topic);
    stack_config.client.interval_ms = 200;
    stack_config.client.batch_limit = config.batch_limit;
    stack_config.client.compression = config.compression;
    stack_config.client.client_id = format!("{topic}-client");
    let mut stack = Stack::start(stack_config).await?;
    let limited = match stack.serve_api(config.limits_on.clone()).await {
        Ok(served) => served,
        Err(err) => {
            stack.stop().await;
            return Err(err.into());
        }
    };
    let result = measure(&stack, &limited, &config, &plan, steady).await;
    // Stopped whatever happened: a stack dropped unstopped holds the process.
    stack.stop().await;
    let mut report = result?;
    if !on_mock {
        report.catch_up = Some(crate::bench_catchup::run(&config).await?);
    }
    Ok(report)
}

/// The rounds, the latency phase and the peer, on a started stack (its local Kafka slowed
/// down first when asked, the client behind the shaped link when asked).
async fn measure(
    stack: &Stack,
    limited: &(String, handlers::HandlerMetrics),
    config: &BenchConfig,
    plan: &[u64],
    steady: u64,
) -> Result<BenchReport, BenchError> {
    if let Some(delay) = config.local_delay {
        stack.local.slow_down(delay)?;
    }
    let Some(shape) = config.link else {
        return measure_with(stack, limited, config, plan, steady, None).await;
    };
    let link = crate::link::Link::start(shape).await?;
    let result = async {
        let api: SocketAddr = stack
            .server_url
            .trim_start_matches("http://")
            .parse()
            .map_err(|e| BenchError::Incomplete(format!("the API's address: {e}")))?;
        let listen = link
            .proxy(API_PROXY, ([127, 0, 0, 1], 0).into(), api)
            .await?;
        measure_with(stack, limited, config, plan, steady, Some((&link, listen))).await
    }
    .await;
    link.stop().await;
    result
}

/// The link's proxy in front of the API.
const API_PROXY: &str = "api";
/// The link's proxy in front of the source broker, for MirrorMaker 2.
const SOURCE_PROXY: &str = "source";

/// [`measure`], the client crossing `link` when there is one.
async fn measure_with(
    stack: &Stack,
    (limited_url, limited_metrics): &(String, handlers::HandlerMetrics),
    config: &BenchConfig,
    plan: &[u64],
    steady: u64,
    link: Option<(&crate::link::Link, SocketAddr)>,
) -> Result<BenchReport, BenchError> {
    let (source, local) = (&stack.source.cluster(), &stack.local.cluster());
    let topic = &stack.info.topic;
    let n = config.events;
    let mut settings = client_settings(stack, config);
    if let Some((_, listen)) = link {
        settings.server_url = format!("http://{listen}");
    }
    let limited = ClientSettings {
        server_url: limited_url.clone(),
        client_id: format!("{topic}-client-limits-on"),
        topic_prefix: Some(LIMITED_PREFIX.into()),
        ..settings.clone()
    };
    stack
        .local
        .create_topic(&format!("{topic}-direct"), config.partitions)
        .await?;
    stack
        .local
        .create_topic(&format!("{LIMITED_PREFIX}{topic}"), config.partitions)
        .await?;
    eprintln!(
        "bench: {n} events of {VALUE_BYTES} B over {} partitions, in {} round(s); each copied by the pipeline (pod → HTTP → client → local Kafka), then by the direct copy (rdkafka consumer → producer, no HTTP)",
        config.partitions,
        plan.len()
    );
    let (mut pipeline_secs, mut direct_secs, mut limited_secs) = (0.0, 0.0, 0.0);
    let mut counts: HashMap<u64, u32> = HashMap::new();
    let mut limited_counts: HashMap<u64, u32> = HashMap::new();
    let mut limited_peak = 0.0f64;
    let mut client_start_ms = None;
    let mut client_peak = 0.0f64;
    let mut first_seq = 0;
    let link_before = match link {
        Some((l, _)) => l.bytes(API_PROXY).await?,
        None => 0,
    };
    for (i, &events) in plan.iter().enumerate() {
        let r = round(
            stack,
            config,
            (&settings, &limited),
            i % 2 == 1,
            events,
            first_seq,
        )
        .await?;
        eprintln!(
            "bench: round {}/{}: {events} events: pipeline {:.0} events/s, direct copy {:.0} events/s, pipeline with limits on {:.0} events/s",
            i + 1,
            plan.len(),
            events as f64 / r.pipeline_secs,
            events as f64 / r.direct_secs,
            events as f64 / r.limited_secs
        );
        pipeline_secs += r.pipeline_secs;
        direct_secs += r.direct_secs;
        limited_secs += r.limited_secs;
        for (seq, c) in r.counts {
            *counts.entry(seq).or_default() += c;
        }
        for (seq, c) in r.limited_counts {
            *limited_counts.entry(seq).or_default() += c;
        }
        limited_peak = limited_peak.max(r.limited_peak_rss_mb);
        client_start_ms.get_or_insert(r.client_start_ms);
        client_peak = client_peak.max(r.client_peak_rss_mb);
        first_seq += events;
    }
    let lost = n.saturating_sub(counts.len() as u64);
    let mb = n as f64 * VALUE_BYTES as f64 / 1_000_000.0;
    let link_result = match link {
        Some((l, _)) => {
            let crossed = l.bytes(API_PROXY).await?.saturating_sub(link_before);
            Some(LinkResult::of(l, crossed, pipeline_secs, mb))
        }
        None => None,
    };

    // Latency: a steady rate while the client keeps up.
    eprintln!(
        "bench: latency at {} events/s for {} s",
        config.latency_rate, config.latency_secs
    );
    let requests_before = stack.handler_metrics();
    let client = ClientProcess::start(&settings, COPY_TIMEOUT).await?;
    let latency_started = Instant::now();
    let latency = steady_latency(
        source,
        local,
        (topic, topic),
        config.partitions,
        n,
        config.latency_rate,
        steady,
    )
    .await;
    client_peak = client_peak.max(client.peak_rss_mb());
    let latency_minutes = latency_started.elapsed().as_secs_f64() / 60.0;
    let requests_after = stack.handler_metrics();
    client.stop().await;
    let latency = latency?;
    let during = |name: &str, label: &str| {
        metric_total(&requests_after, name, label).saturating_sub(metric_total(
            &requests_before,
            name,
            label,
        ))
    };
    let latency_requests = during("api_requests_total", "/events");
    let latency_refused = during("api_rate_limited_total", "kind=");
    let duplicated: u64 = counts
        .values()
        .chain(latency.counts.values())
        .map(|c| u64::from(c.saturating_sub(1)))
        .sum();
    let lost_steady = steady.saturating_sub(latency.counts.len() as u64);
    let peak = peak_rss_mb();
    let pod_peak = stack.pod_peak_rss_mb().unwrap_or(f64::NAN);
    let mirror_maker_2 = if config.peer_mm2 {
        Some(mirror_maker_2(stack, config, steady, link.map(|(l, _)| l)).await?)
    } else {
        None
    };
    let limited_requests = shared::metrics::render(&limited_metrics.registry);
    let pipeline_limits_on = LimitedResult {
        events_per_sec: n as f64 / limited_secs,
        vs_limits_off: pipeline_secs / limited_secs,
        key_limit: config.limits_on.rate_limit_key_max,
        window_secs: config.limits_on.rate_limit_window_secs,
        requests: metric_total(&limited_requests, "api_requests_total", "/events"),
        refused: metric_total(&limited_requests, "api_rate_limited_total", "kind=\"key\""),
        lost: n.saturating_sub(limited_counts.len() as u64),
        duplicated: limited_counts
            .values()
            .map(|c| u64::from(c.saturating_sub(1)))
            .sum(),
        client_peak_rss_mb: limited_peak,
    };
    Ok(BenchReport {
        events: n,
        latency_rate: config.latency_rate,
        pipeline: PipelineResult {
            events_per_sec: n as f64 / pipeline_secs,
            mb_per_sec: mb / pipeline_secs,
            p50_ms: percentile(&latency.latency_ms, 50.0),
            p99_ms: percentile(&latency.latency_ms, 99.0),
            p999_ms: percentile(&latency.latency_ms, 99.9),
            lost: lost + lost_steady,
            duplicated,
            peak_rss_mb: peak,
            pod_peak_rss_mb: pod_peak,
            client_peak_rss_mb: client_peak,
            client_start_ms: client_start_ms.unwrap_or(f64::NAN),
            latency_requests,
            latency_requests_per_minute: latency_requests as f64 / latency_minutes,
            latency_refused,
        },
        direct_copy: DirectResult {
            events_per_sec: n as f64 / direct_secs,
            mb_per_sec: mb / direct_secs,
        },
        pipeline_limits_on,
        mirror_maker_2,
        link: link_result,
        catch_up: None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rounds_split_evenly_within_the_cap() {
        assert_eq!(rounds(600, 250), vec![200, 200, 200]);
        assert_eq!(rounds(60_000, 12_000), vec![12_000; 5]);
        assert_eq!(rounds(10, 3), vec![3, 3, 2, 2]);
        assert_eq!(rounds(5, 100), vec![5]);
        assert_eq!(
            rounds(7, 0),
            vec![1; 7],
            "a zero cap means one event per round"
        );
        assert_eq!(rounds(10, 3).iter().sum::<u64>(), 10);
    }

    #[test]
    fn reads_the_seq_of_demo_values() {
        let value = crate::demo::demo_value_sized(123_456, 1, 900);
        assert_eq!(seq_of(value.as_bytes()), Some(123_456));
        assert_eq!(seq_of(b"{\"other\":1}"), None);
    }

    #[test]
    fn spikes_name_the_seconds_far_over_the_typical() {
        let mut seen = Seen {
            slowest_by_second: vec![20, 22, 21, 90, 19],
            ..Seen::default()
        };
        assert_eq!(
            seen.spikes(),
            "slowest copy of a typical second 21 ms; seconds over twice that: +3s: 90 ms"
        );
        seen.slowest_by_second = vec![20, 21];
        assert!(seen.spikes().ends_with("none"));
    }

    #[test]
    fn percentiles_pick_ranks() {
        let mut latency = Seen::default().latency_ms;
        assert!(percentile(&latency, 50.0).is_nan());
        for ms in 1..=1000 {
            latency.record(ms).unwrap();
        }
        assert_eq!(percentile(&latency, 50.0), 500.0);
        assert_eq!(percentile(&latency, 99.0), 990.0);
        assert_eq!(percentile(&latency, 100.0), 1000.0);
    }
}
