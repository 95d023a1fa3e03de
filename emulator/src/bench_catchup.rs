//! The benchmark's `catch_up` section (real brokers): a new client reads a backlog whose
//! older half the pod's buffer no longer holds, then a backlog the buffer holds whole, on a
//! pod of its own. For each pass: events/s, the bytes the pod fetched from Kafka against the
//! bytes it served ([`crate::sockets`]), and the source broker's CPU.

use std::time::{Duration, Instant};

use serde::Serialize;

use crate::bench::{BenchConfig, BenchError, VALUE_BYTES, metric_total, pipeline_pass, produce};
use crate::bench_client::ClientSettings;
use crate::stack::Stack;

/// Longest the pod may take to consume a backlog into its buffer.
const CONSUME_TIMEOUT: Duration = Duration::from_secs(300);

/// One pass of a client over a backlog.
#[derive(Debug, Clone, Serialize)]
pub struct CatchUpPass {
    pub events: u64,
    pub events_per_sec: f64,
    /// Bytes the pod received from the source broker while the client read (its fetch
    /// answers, the group consumer's included), as the kernel counts them on its connections.
    pub pod_fetched_mb: f64,
    /// Bytes the pod sent to the handlers: the answers.
    pub pod_served_mb: f64,
    /// Events the pod read from Kafka, not its buffer, into answers
    /// (`consumer_catchup_events_total`), and the reads that took them
    /// (`consumer_catchup_reads_total`), of which went on where the last one ended
    /// (`consumer_catchup_reads_resumed_total`).
    pub from_kafka_events: u64,
    pub kafka_reads: u64,
    pub kafka_reads_resumed: u64,
    /// What the pod fetched from Kafka against what its answers carried from Kafka
    /// (`pod_served_mb`, its share of events from Kafka); none when all came from the buffer.
    pub amplification: f64,
    /// CPU seconds of the source broker's process while the client read.
    pub broker_cpu_secs: f64,
    pub lost: u64,
    pub duplicated: u64,
}

/// The `catch_up` section of the report.
#[derive(Debug, Clone, Serialize)]
pub struct CatchUpResult {
    /// What the pod's buffer holds (`BUFFER_MAX_BYTES`): about half of the first backlog.
    pub buffer_max_mb: f64,
    /// A backlog of `events`, its older half beyond the buffer.
    pub past_the_buffer: CatchUpPass,
    /// A backlog the buffer holds whole: three quarters of what it held after the first.
    pub all_buffered: CatchUpPass,
    /// `past_the_buffer.events_per_sec / all_buffered.events_per_sec`.
    pub vs_all_buffered: f64,
    /// Peak resident memory of the pod over both passes.
    pub pod_peak_rss_mb: f64,
}

/// What the pod has received from the source broker over its open connections (the
/// kernel's count), what it has written (its answers to the handlers: `wchar` of
/// `/proc/<pid>/io`, which counts writes to sockets, as `rchar` does not count `recv`), and
/// the broker's CPU ticks, at one moment.
#[derive(Debug, Clone, Copy, Default)]
struct Counters {
    fetched: u64,
    served: u64,
    broker_ticks: u64,
}

impl Counters {
    async fn now(pod: u32, broker_port: u16, broker: Option<u32>) -> Result<Self, BenchError> {
        let connections = crate::sockets::established()
            .await
            .map_err(BenchError::Incomplete)?;
        let fetched = connections
            .iter()
            .filter(|c| c.pids.contains(&pod) && c.peer_port == broker_port)
            .map(|c| c.bytes_received)
            .sum();
        let io = std::fs::read_to_string(format!("/proc/{pod}/io")).unwrap_or_default();
        let served = io
            .lines()
            .find_map(|l| l.strip_prefix("wchar:")?.trim().parse().ok())
            .unwrap_or(0);
        Ok(Self {
            fetched,
            served,
            broker_ticks: broker.map_or(0, cpu_ticks),
        })
    }
}

/// User + system CPU ticks of `pid` so far (Linux; 0 elsewhere).
pub(crate) fn cpu_ticks(pid: u32) -> u64 {
    let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
        return 0;
    };
    // Fields after the command (which may hold spaces), from field 3 on.
    let Some(rest) = stat.rsplit_once(") ").map(|(_, r)| r) else {
        return 0;
    };
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let at = |i: usize| {
        fields
            .get(i)
            .and_then(|f| f.parse::<u64>().ok())
            .unwrap_or(0)
    };
    // utime and stime are fields 14 and 15, so 11 and 12 from field 3.
    at(11) + at(12)
}

/// Clock ticks per second of `/proc/<pid>/stat` (USER_HZ: 100 on Linux).
pub(crate) const TICKS_PER_SEC: f64 = 100.0;

/// The first broker's port of a bootstrap list.
fn first_port(brokers: &str) -> Option<u16> {
    brokers.split(',').next()?.rsplit(':').next()?.parse().ok()
}

/// Runs the section on a stack of its own on `config`'s brokers.
pub async fn run(config: &BenchConfig) -> Result<CatchUpResult, BenchError> {
    let events = config.events;
    let half = events / 2;
    // What the buffer holds of a record: its value, key, headers and bookkeeping.
    let per_record = VALUE_BYTES as u64 + 160;
    let buffer_max_bytes = half * per_record;
    let topic = format!("bench-catchup-{:08x}", rand::random::<u32>());
    let mut stack_config = crate::bench::stack_config(config, &topic);
    stack_config.pod.buffer.buffer_max_bytes =
        usize::try_from(buffer_max_bytes).unwrap_or(usize::MAX);
    stack_config.pod.buffer.buffer_max_events = usize::try_from(events * 2).unwrap_or(usize::MAX);
    let stack = Stack::start(stack_config).await?;
    let result = passes(&stack, config, buffer_max_bytes).await;
    stack.stop().await;
    result
}

async fn passes(
    stack: &Stack,
    config: &BenchConfig,
    buffer_max_bytes: u64,
) -> Result<CatchUpResult, BenchError> {
    let topic = &stack.info.topic;
    stack.local.create_topic(topic, config.partitions).await?;
    let settings = crate::bench::client_settings(stack, config);
    let broker_port = first_port(&stack.info.source_brokers).ok_or_else(|| {
        BenchError::Incomplete(format!(
            "no port in the source brokers {:?}",
            stack.info.source_brokers
        ))
    })?;
    let broker = (
        broker_port,
        crate::sockets::listener(broker_port)
            .await
            .map_err(BenchError::Incomplete)?,
    );
    let past = pass(stack, config, &settings, broker, config.events, 0).await?;
    // Three quarters of what the buffer holds now (full), so that none is read from Kafka.
    let held = metric_total(&pod_metrics(stack).await, "consumer_buffer_events", "");
    let all = pass(
        stack,
        config,
        &settings,
        broker,
        (held * 3 / 4).max(1),
        config.events,
    )
    .await?;
    Ok(CatchUpResult {
        buffer_max_mb: buffer_max_bytes as f64 / 1_000_000.0,
        vs_all_buffered: past.events_per_sec / all.events_per_sec,
        past_the_buffer: past,
        all_buffered: all,
        pod_peak_rss_mb: stack.pod_peak_rss_mb().unwrap_or(f64::NAN),
    })
}

/// Produces `events` (numbered from `first_seq`), waits until the pod has consumed them,
/// then times the client (resuming from its last commit) copying them.
async fn pass(
    stack: &Stack,
    config: &BenchConfig,
    settings: &ClientSettings,
    (broker_port, broker): (u16, Option<u32>),
    events: u64,
    first_seq: u64,
) -> Result<CatchUpPass, BenchError> {
    let topic = &stack.info.topic;
    let source = stack.source.cluster();
    eprintln!("bench: catch-up: producing {events} events into {topic}");
    produce(&source, topic, config.partitions, events, first_seq).await?;
    consumed(stack, first_seq + events).await?;
    let pod = stack
        .pod_pid()
        .ok_or_else(|| BenchError::Incomplete("the pod runs in no process of its own".into()))?;
    let before = Counters::now(pod, broker_port, broker).await?;
    let metrics_before = pod_metrics(stack).await;
    let (secs, counts, _, _) = pipeline_pass(
        &stack.local.cluster(),
        topic,
        config.partitions,
        settings,
        events,
        "catch-up",
    )
    .await?;
    let after = Counters::now(pod, broker_port, broker).await?;
    let metrics_after = pod_metrics(stack).await;
    let grew = |name: &str| {
        metric_total(&metrics_after, name, "").saturating_sub(metric_total(
            &metrics_before,
            name,
            "",
        ))
    };
    let from_kafka_events = grew("consumer_catchup_events_total");
    let fetched = after.fetched.saturating_sub(before.fetched) as f64 / 1_000_000.0;
    let served = after.served.saturating_sub(before.served) as f64 / 1_000_000.0;
    Ok(CatchUpPass {
        events,
        events_per_sec: events as f64 / secs,
        pod_fetched_mb: fetched,
        pod_served_mb: served,
        from_kafka_events,
        kafka_reads: grew("consumer_catchup_reads_total"),
        kafka_reads_resumed: grew("consumer_catchup_reads_resumed_total"),
        amplification: if from_kafka_events == 0 {
            f64::NAN
        } else {
            fetched / (served * from_kafka_events as f64 / events as f64)
        },
        broker_cpu_secs: after.broker_ticks.saturating_sub(before.broker_ticks) as f64
            / TICKS_PER_SEC,
        lost: events.saturating_sub(counts.len() as u64),
        duplicated: counts
            .values()
            .map(|c| u64::from(c.saturating_sub(1)))
            .sum(),
    })
}

/// The whole system's metrics (`GET /metrics`: the pod's included); empty when it does not
/// answer.
async fn pod_metrics(stack: &Stack) -> String {
    let url = format!("{}/metrics", stack.info.api_base);
    match reqwest::Client::new()
        .get(&url)
        .bearer_auth(&stack.info.api_key)
        .send()
        .await
    {
        Ok(answer) => answer.text().await.unwrap_or_default(),
        Err(_) => String::new(),
    }
}

/// Waits until the pod has consumed `total` records of the topic into its buffer.
async fn consumed(stack: &Stack, total: u64) -> Result<(), BenchError> {
    let deadline = Instant::now() + CONSUME_TIMEOUT;
    loop {
        let text = pod_metrics(stack).await;
        let got = metric_total(&text, "kafka_events_consumed_total", &stack.info.topic);
        if got >= total {
            return Ok(());
        }
        if Instant::now() >= deadline {
            return Err(BenchError::Incomplete(format!(
                "the pod consumed {got} of {total} records within {} s",
                CONSUME_TIMEOUT.as_secs()
            )));
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_cpu_of_a_process() {
        let before = cpu_ticks(std::process::id());
        let spin = Instant::now();
        let mut x = 0u64;
        while spin.elapsed() < Duration::from_millis(300) {
            x = x.wrapping_add(std::hint::black_box(1));
        }
        assert!(x > 0);
        assert!(cpu_ticks(std::process::id()) > before);
    }

    #[test]
    fn reads_the_first_port() {
        assert_eq!(first_port("127.0.0.1:9092,other:9093"), Some(9092));
        assert_eq!(first_port("nothing"), None);
    }
}
