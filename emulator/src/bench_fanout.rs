//! The fan-out section (`bench --clients K`): K clients streaming the same events at once,
//! served by one consumer pod and then by two. Each client here is the product's own feed
//! (`client::feed`, binary stream frames) without the local Kafka behind it, so what is
//! timed is the server side: the pods, the handlers and the HTTP streams.

use std::collections::HashSet;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use client::api::{BatchSize, EventsApi};
use client::config::StreamMode;
use client::feed::Feed;
use hdrhistogram::Histogram;
use serde::Serialize;
use shared::{Cursor, StartFrom};
use tokio_util::sync::CancellationToken;

use crate::bench::{BenchConfig, BenchError, percentile};
use crate::demo::now_ms;
use crate::stack::Stack;

/// Longest the clients may take to open their streams.
const CONNECT_WITHIN: Duration = Duration::from_secs(60);
/// Longest the clients may take beyond the producing itself to see every event.
const DRAIN_WITHIN: Duration = Duration::from_secs(120);
/// Most events a stream batch holds.
const BATCH_EVENTS: u32 = 1000;

/// The section's figures: the same clients and events on one pod, then on two.
#[derive(Debug, Clone, Serialize)]
pub struct FanoutResult {
    pub clients: usize,
    /// Events per second the source received, which every client reads.
    pub rate: u64,
    pub secs: u64,
    pub one_pod: FanoutPass,
    pub two_pods: FanoutPass,
}

/// One pass: every client reading every event.
#[derive(Debug, Clone, Serialize)]
pub struct FanoutPass {
    pub pods: usize,
    /// Events delivered over all clients per second, from the first event produced to the
    /// last client having all.
    pub events_per_sec: f64,
    /// Source timestamp to a client holding the event, over every client's copies.
    pub p50_ms: f64,
    pub p99_ms: f64,
    pub p999_ms: f64,
    /// CPU the pods used over the pass, per client, in % of one core.
    pub pod_cpu_per_client_pct: f64,
    /// The pods' CPU over the pass, in % of one core (all pods together).
    pub pod_cpu_pct: f64,
    /// Events some client never saw, and copies a client saw twice, summed over clients.
    pub lost: u64,
    pub duplicated: u64,
}

/// Runs both passes.
pub async fn run(config: &BenchConfig, clients: usize) -> Result<FanoutResult, BenchError> {
    let one_pod = pass(config, clients, 1).await?;
    let two_pods = pass(config, clients, 2).await?;
    Ok(FanoutResult {
        clients,
        rate: config.latency_rate,
        secs: config.latency_secs,
        one_pod,
        two_pods,
    })
}

/// What one client saw.
struct Seen {
    latency_ms: Histogram<u64>,
    copies: u64,
    distinct: u64,
}

async fn pass(config: &BenchConfig, clients: usize, pods: usize) -> Result<FanoutPass, BenchError> {
    let topic = format!("bench-fanout-{:08x}", rand::random::<u32>());
    let mut stack_config = crate::bench::stack_config(config, &topic);
    stack_config.pods = pods;
    let stack = Stack::start(stack_config).await?;
    let result = clients_through(&stack, config, clients, pods).await;
    stack.stop().await;
    result
}

async fn clients_through(
    stack: &Stack,
    config: &BenchConfig,
    clients: usize,
    pods: usize,
) -> Result<FanoutPass, BenchError> {
    let expected = config.latency_rate * config.latency_secs;
    eprintln!(
        "bench: fan-out: {clients} clients streaming {} events/s for {} s from {pods} pod(s)",
        config.latency_rate, config.latency_secs
    );
    let connected = Arc::new(AtomicUsize::new(0));
    let stop = CancellationToken::new();
    let deadline =
        Instant::now() + CONNECT_WITHIN + Duration::from_secs(config.latency_secs) + DRAIN_WITHIN;
    let prefix = stack
        .info
        .api_base
        .strip_prefix(stack.server_url.as_str())
        .unwrap_or_default();
    let mut readers = tokio::task::JoinSet::new();
    for _ in 0..clients {
        let api = EventsApi::new(&stack.server_url, prefix, &stack.info.api_key, false)
            .map_err(|e| BenchError::Incomplete(e.to_string()))?;
        let (connected, stop) = (Arc::clone(&connected), stop.clone());
        readers.spawn(read_all(api, expected, connected, stop, deadline));
    }
    let all_connected = tokio::time::timeout(CONNECT_WITHIN, async {
        while connected.load(Ordering::Relaxed) < clients {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await;
    if all_connected.is_err() {
        stop.cancel();
        return Err(BenchError::Incomplete(format!(
            "only {} of {clients} clients opened their stream within {CONNECT_WITHIN:?}",
            connected.load(Ordering::Relaxed)
        )));
    }
    let producer = crate::bench::warm_demo_producer(stack, config, expected).await?;
    let pids = stack.pod_pids();
    let ticks_before: u64 = pids
        .iter()
        .map(|&pid| crate::bench_catchup::cpu_ticks(pid))
        .sum();
    let started = Instant::now();
    producer.run(CancellationToken::new()).await;
    let mut latency_ms = Histogram::<u64>::new(3).expect("3 significant digits are supported");
    let (mut copies, mut distinct) = (0, 0);
    while let Some(seen) = readers.join_next().await {
        let seen = seen.map_err(|e| BenchError::Incomplete(e.to_string()))?;
        latency_ms
            .add(&seen.latency_ms)
            .map_err(|e| BenchError::Incomplete(e.to_string()))?;
        copies += seen.copies;
        distinct += seen.distinct;
    }
    let elapsed = started.elapsed().as_secs_f64();
    let ticks: u64 = pids
        .iter()
        .map(|&pid| crate::bench_catchup::cpu_ticks(pid))
        .sum::<u64>()
        .saturating_sub(ticks_before);
    let cpu_secs = ticks as f64 / crate::bench_catchup::TICKS_PER_SEC;
    let pod_cpu_pct = 100.0 * cpu_secs / elapsed;
    let want = expected * clients as u64;
    Ok(FanoutPass {
        pods,
        events_per_sec: copies as f64 / elapsed,
        p50_ms: percentile(&latency_ms, 50.0),
        p99_ms: percentile(&latency_ms, 99.0),
        p999_ms: percentile(&latency_ms, 99.9),
        pod_cpu_per_client_pct: pod_cpu_pct / clients as f64,
        pod_cpu_pct,
        lost: want.saturating_sub(distinct),
        duplicated: copies - distinct,
    })
}

/// One client: streams from the log end until it has seen `expected` events (or
/// `deadline`), timing each from its source timestamp.
async fn read_all(
    api: EventsApi,
    expected: u64,
    connected: Arc<AtomicUsize>,
    stop: CancellationToken,
    deadline: Instant,
) -> Seen {
    let mut feed = Feed::new(api, StreamMode::On, Duration::from_millis(200));
    let mut seen = Seen {
        latency_ms: Histogram::new(3).expect("3 significant digits are supported"),
        copies: 0,
        distinct: 0,
    };
    let mut offsets: HashSet<(i32, i64)> = HashSet::new();
    let mut from = StartFrom::Latest;
    let mut opened = false;
    while seen.distinct < expected && Instant::now() < deadline && !stop.is_cancelled() {
        let fetched = tokio::select! {
            () = stop.cancelled() => break,
            () = tokio::time::sleep_until(deadline.into()) => break,
            fetched = feed.next(&from, BatchSize::new(BATCH_EVENTS), false) => fetched,
        };
        let Ok(batch) = fetched.answer else {
            tokio::time::sleep(Duration::from_millis(100)).await;
            continue;
        };
        if !opened {
            opened = true;
            connected.fetch_add(1, Ordering::Relaxed);
        }
        let now = now_ms();
        for record in batch.records() {
            seen.copies += 1;
            if offsets.insert((record.partition, record.offset)) {
                seen.distinct += 1;
            }
            if let Some(ts) = record.timestamp {
                seen.latency_ms
                    .saturating_record((now - ts).max(0).unsigned_abs());
            }
        }
        match Cursor::decode(batch.next_cursor()) {
            Ok(next) => from = StartFrom::Cursor(next),
            Err(_) => break,
        }
    }
    seen
}
