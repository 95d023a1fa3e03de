//! `emulator soak --minutes M`: the whole pipeline at a steady rate for a long time, the
//! pod and the client in processes of their own. Every minute each process's resident
//! memory is sampled; at the end: the memory slope per hour of each, latency percentiles
//! per 10-minute slice, and every event counted once (a `read_committed` reader).

use std::time::{Duration, Instant};

use hdrhistogram::Histogram;
use rdkafka::Message;
use serde::Serialize;
use tokio_util::sync::CancellationToken;

use crate::bench::{BenchConfig, BenchError, Watcher, percentile, seq_of};
use crate::bench_client::ClientProcess;
use crate::demo::now_ms;
use crate::stack::Stack;

/// Length of one latency slice.
const SLICE: Duration = Duration::from_secs(600);
/// How often memory is sampled.
const SAMPLE_EVERY: Duration = Duration::from_secs(60);
/// Longest the last events may take to arrive once the producer is done.
const DRAIN_WITHIN: Duration = Duration::from_secs(120);

/// What a soak found.
#[derive(Debug, Clone, Serialize)]
pub struct SoakResult {
    pub minutes: u64,
    pub rate: u64,
    pub events: u64,
    pub lost: u64,
    pub duplicated: u64,
    /// Latency from the source timestamp to visible in local Kafka, per 10 minutes.
    pub slices: Vec<Slice>,
    pub memory: Vec<ProcessMemory>,
}

/// The latency of the events read in one slice of the run.
#[derive(Debug, Clone, Serialize)]
pub struct Slice {
    pub from_minute: u64,
    pub events: u64,
    pub p50_ms: f64,
    pub p99_ms: f64,
    pub p999_ms: f64,
}

/// One process's resident memory over the run.
#[derive(Debug, Clone, Serialize)]
pub struct ProcessMemory {
    pub process: String,
    /// One sample a minute, in MiB.
    pub rss_mb: Vec<f64>,
    /// The least-squares slope of the samples after the first quarter of the run (warm-up
    /// and buffers filling), in MiB per hour.
    pub slope_mb_per_hour: f64,
}

/// What the reader of the copies found.
struct Copies {
    seen: Vec<u64>,
    distinct: u64,
    duplicated: u64,
    slices: Vec<Histogram<u64>>,
}

impl Copies {
    fn new(events: u64) -> Self {
        Self {
            seen: vec![0; usize::try_from(events.div_ceil(64)).unwrap_or(0)],
            distinct: 0,
            duplicated: 0,
            slices: Vec::new(),
        }
    }

    /// Counts the copy of `seq`, read `since` the run began, `latency_ms` after its source
    /// timestamp.
    fn count(&mut self, seq: u64, since: Duration, latency_ms: Option<u64>) {
        let (word, bit) = ((seq / 64) as usize, seq % 64);
        let Some(slot) = self.seen.get_mut(word) else {
            return;
        };
        if *slot & (1 << bit) != 0 {
            self.duplicated += 1;
        } else {
            *slot |= 1 << bit;
            self.distinct += 1;
        }
        let slice = (since.as_secs() / SLICE.as_secs()) as usize;
        while self.slices.len() <= slice {
            self.slices
                .push(Histogram::new(3).expect("3 significant digits are supported"));
        }
        if let Some(ms) = latency_ms {
            self.slices[slice].saturating_record(ms);
        }
    }
}

/// Runs the soak on `config`'s brokers: `config.latency_rate` events/s for `minutes`.
pub async fn run(config: &BenchConfig, minutes: u64) -> Result<SoakResult, BenchError> {
    let topic = format!("soak-{:08x}", rand::random::<u32>());
    let stack = Stack::start(crate::bench::stack_config(config, &topic)).await?;
    let result = soak(&stack, config, minutes).await;
    stack.stop().await;
    result
}

async fn soak(stack: &Stack, config: &BenchConfig, minutes: u64) -> Result<SoakResult, BenchError> {
    let events = config.latency_rate * minutes * 60;
    stack
        .local
        .create_topic(&stack.info.topic, config.partitions)
        .await?;
    let settings = crate::bench::client_settings(stack, config);
    let client = ClientProcess::start(&settings, Duration::from_secs(60)).await?;
    let (local, local_topic, partitions) = (
        stack.local.cluster(),
        stack.info.topic.clone(),
        config.partitions,
    );
    let watcher =
        tokio::task::spawn_blocking(move || Watcher::new(&local, &local_topic, partitions, false))
            .await
            .map_err(|e| BenchError::Incomplete(e.to_string()))??;
    let producer = crate::bench::warm_demo_producer(stack, config, events).await?;
    let started = Instant::now();
    let stop = CancellationToken::new();
    let reading = {
        let stop = stop.clone();
        tokio::task::spawn_blocking(move || read_copies(&watcher, events, started, &stop))
    };
    let producing = tokio::spawn(producer.run(CancellationToken::new()));
    let processes: Vec<(String, Option<u32>)> = vec![
        ("consumer pod".into(), stack.pod_pid()),
        ("client".into(), client.pid()),
        (
            "emulator (handlers, producer, reader)".into(),
            Some(std::process::id()),
        ),
    ];
    let mut samples: Vec<Vec<f64>> = vec![Vec::new(); processes.len()];
    let mut next_sample = Instant::now();
    while !producing.is_finished() {
        if Instant::now() >= next_sample {
            for ((_, pid), series) in processes.iter().zip(&mut samples) {
                series.push(pid.map_or(0.0, rss_mb));
            }
            let minute = started.elapsed().as_secs() / 60;
            eprintln!(
                "soak: minute {minute}/{minutes}: RSS {}",
                processes
                    .iter()
                    .zip(&samples)
                    .map(|((name, _), s)| format!(
                        "{name} {:.1} MB",
                        s.last().copied().unwrap_or(0.0)
                    ))
                    .collect::<Vec<_>>()
                    .join(", ")
            );
            next_sample += SAMPLE_EVERY;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let drain = tokio::time::timeout(DRAIN_WITHIN, async {
        while !reading.is_finished() {
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    })
    .await;
    if drain.is_err() {
        stop.cancel();
    }
    let copies = reading
        .await
        .map_err(|e| BenchError::Incomplete(e.to_string()))?;
    client.stop().await;
    let slices = copies
        .slices
        .iter()
        .enumerate()
        .map(|(i, h)| Slice {
            from_minute: i as u64 * SLICE.as_secs() / 60,
            events: h.len(),
            p50_ms: percentile(h, 50.0),
            p99_ms: percentile(h, 99.0),
            p999_ms: percentile(h, 99.9),
        })
        .collect();
    let memory = processes
        .into_iter()
        .zip(samples)
        .map(|((process, _), rss_mb)| ProcessMemory {
            slope_mb_per_hour: slope_per_hour(&rss_mb),
            process,
            rss_mb,
        })
        .collect();
    Ok(SoakResult {
        minutes,
        rate: config.latency_rate,
        events,
        lost: events.saturating_sub(copies.distinct),
        duplicated: copies.duplicated,
        slices,
        memory,
    })
}

/// Reads the copies until all `events` arrived or `stop`.
fn read_copies(
    watcher: &Watcher,
    events: u64,
    started: Instant,
    stop: &CancellationToken,
) -> Copies {
    let mut copies = Copies::new(events);
    while copies.distinct < events && !stop.is_cancelled() {
        let Some(Ok(message)) = watcher.consumer.poll(Duration::from_millis(100)) else {
            continue;
        };
        let Some(seq) = message.payload().and_then(seq_of) else {
            continue;
        };
        let latency_ms = message
            .timestamp()
            .to_millis()
            .map(|ts| (now_ms() - ts).max(0).unsigned_abs());
        copies.count(seq, started.elapsed(), latency_ms);
    }
    copies
}

/// Resident memory of `pid` now, in MiB (Linux; 0 elsewhere).
fn rss_mb(pid: u32) -> f64 {
    crate::bench::status_mb(&pid.to_string(), "VmRSS:")
}

/// Least-squares slope of one-a-minute samples, in units per hour, after the first
/// quarter (warm-up); 0 with fewer than two samples left.
fn slope_per_hour(samples: &[f64]) -> f64 {
    let settled = &samples[samples.len() / 4..];
    let n = settled.len() as f64;
    if settled.len() < 2 {
        return 0.0;
    }
    let mean_x = (n - 1.0) / 2.0;
    let mean_y = settled.iter().sum::<f64>() / n;
    let (mut num, mut den) = (0.0, 0.0);
    for (i, y) in settled.iter().enumerate() {
        let dx = i as f64 - mean_x;
        num += dx * (y - mean_y);
        den += dx * dx;
    }
    num / den * 60.0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_slope_is_per_hour_and_skips_the_warm_up() {
        // Flat after a warm-up climb.
        let flat = [10.0, 50.0, 80.0, 80.0, 80.0, 80.0, 80.0, 80.0];
        assert!(slope_per_hour(&flat).abs() < 1e-9);
        // One MiB a minute is 60 an hour.
        let growing: Vec<f64> = (0..20).map(f64::from).collect();
        assert!((slope_per_hour(&growing) - 60.0).abs() < 1e-9);
        assert_eq!(slope_per_hour(&[5.0]), 0.0);
    }

    #[test]
    fn copies_are_counted_once_per_seq_and_by_slice() {
        let mut copies = Copies::new(130);
        copies.count(0, Duration::from_secs(1), Some(10));
        copies.count(129, Duration::from_secs(601), Some(20));
        copies.count(0, Duration::from_secs(2), Some(30));
        copies.count(500, Duration::from_secs(2), Some(30));
        assert_eq!((copies.distinct, copies.duplicated), (2, 1));
        assert_eq!(copies.slices.len(), 2);
        assert_eq!(copies.slices[0].len(), 2);
        assert_eq!(copies.slices[1].len(), 1);
    }
}
