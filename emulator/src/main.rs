//! `emulator`: runs the whole Kafka Replicator locally with no set-up — two embedded Kafka
//! clusters, a demo producer, the consumer pod, the API and the client — and prints one
//! ready line with the API URL, the API key and both bootstrap addresses.

use std::io::Write;
use std::path::PathBuf;
use std::time::Duration;

use anyhow::Context;
use clap::Parser;
use emulator::{Stack, StackConfig};
use shared::config::Validate;

/// Runs the whole Kafka Replicator locally on embedded Kafka.
#[derive(Debug, Parser)]
#[command(name = "emulator", version)]
struct Args {
    /// Port of the API on 127.0.0.1.
    #[arg(long, env = "PORT", default_value_t = 3000)]
    port: u16,
    /// API key to accept (default: a new random key, printed).
    #[arg(long = "api-key", env = "API_KEY", hide_env_values = true)]
    api_key: Option<String>,
    /// Path prefix of the API.
    #[arg(long, env = "API_PREFIX", default_value = "/api/v1")]
    api_prefix: String,
    /// Source topic (created on both clusters).
    #[arg(long, env = "KAFKA_TOPIC", default_value = "demo-events")]
    topic: String,
    /// Partitions of the topic.
    #[arg(long, default_value_t = 3, value_parser = clap::value_parser!(i32).range(1..=1000))]
    partitions: i32,
    /// Demo events per second (0: as fast as possible).
    #[arg(long, default_value_t = 10)]
    rate: u64,
    /// Produce exactly N demo events, then stop producing (0: none).
    #[arg(long)]
    events: Option<u64>,
    /// Do not run the client.
    #[arg(long)]
    no_client: bool,
    /// Client poll interval in milliseconds.
    #[arg(long, default_value_t = 1000)]
    interval: u64,
    /// Use this real Kafka as the source instead of an embedded one.
    #[arg(long, env = "KAFKA_BROKERS", global = true)]
    source_brokers: Option<String>,
    /// Use this real Kafka as the local cluster instead of an embedded one.
    #[arg(long, env = "LOCAL_KAFKA_BROKERS", global = true)]
    local_brokers: Option<String>,
    /// Consumer group of the consumer pod.
    #[arg(
        long,
        env = "KAFKA_GROUP_ID",
        default_value = "kafka-replicator-emulator"
    )]
    group_id: String,
    #[command(flatten)]
    buffer: consumer::config::BufferArgs,
    /// Write {"api_base","api_key","source_brokers","local_brokers","topic"} here once ready.
    #[arg(long)]
    ready_file: Option<PathBuf>,
    /// The client's identity in local Kafka (transactional id and state-topic key).
    #[arg(
        long,
        env = "CLIENT_ID",
        default_value = "kafka-replicator-emulator-client"
    )]
    client_id: String,
    /// How the API runs the handlers: `server` (as handlers-server) or `lambda` (each
    /// request as an API Gateway v2 event through the Lambda adapter).
    #[arg(long, value_enum, default_value_t = emulator::HandlersMode::Server)]
    handlers: emulator::HandlersMode,
    #[command(flatten)]
    cors: handlers::config::CorsArgs,
    #[command(flatten)]
    limits: handlers::config::RateLimitArgs,
    /// Seconds a GET /events/stream answer lasts before it ends cleanly (the client
    /// reconnects where it stands).
    #[arg(long = "stream-max-secs", env = "STREAM_MAX_SECS", default_value_t = handlers::config::DEFAULT_STREAM_MAX_SECS, value_parser = clap::value_parser!(u64).range(1..=3600))]
    stream_max_secs: u64,
    /// librdkafka properties for the source Kafka (with KAFKA_BROKERS).
    #[command(flatten)]
    source_properties: shared::kafka::KafkaPropertyArgs,
    /// librdkafka properties for the local Kafka (with LOCAL_KAFKA_BROKERS).
    #[command(flatten)]
    local_properties: shared::kafka::LocalKafkaPropertyArgs,
    #[command(subcommand)]
    command: Option<Command>,
}

/// A child process's own flags (its Kafka properties), parsed by the component it runs.
#[derive(Debug, clap::Args)]
struct ChildArgs {
    #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
    args: Vec<String>,
}

#[derive(Debug, clap::Subcommand)]
enum Command {
    /// Times N events through the whole pipeline and through a direct Kafka-to-Kafka copy
    /// on the same clusters, then latency at 1,000 events/s.
    Bench(BenchArgs),
    /// The whole pipeline at a steady rate for a long time: every process's memory each
    /// minute, latency per 10 minutes, every event counted once.
    Soak(SoakArgs),
    /// Faults drawn from a seed (kills, graceful stops, a frozen client, broker restarts, a
    /// source leader killed, a cut or slow link, a key rotation) while a stream flows
    /// through the pipeline as separate processes on Apache Kafka; then every event is
    /// checked to be copied exactly once and in order.
    #[cfg(unix)]
    Chaos(ChaosArgs),
    /// The benchmark's client, run by `bench` as a child process.
    #[command(hide = true)]
    BenchClient(ChildArgs),
    /// The handlers in a process of their own, run by `chaos`.
    #[command(hide = true)]
    HandlersProcess(ChildArgs),
    /// The consumer pod in a process of its own, run by `bench`.
    #[command(hide = true)]
    PodProcess(ChildArgs),
}

/// Sections of the benchmark that run alone.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
enum Section {
    /// The catch-up section only (real brokers): a new client reading a backlog past the
    /// pod's buffer, then one the buffer holds whole.
    CatchUp,
}

/// Tools the benchmark can time beside the pipeline.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
enum Peer {
    /// Apache Kafka's MirrorMaker 2.
    Mm2,
}

#[derive(Debug, clap::Args)]
struct ChaosArgs {
    /// The seed the schedule is drawn from (default: a random one, printed first); the
    /// same seed replays the same schedule.
    #[arg(long)]
    seed: Option<u64>,
    /// How long the stream flows.
    #[arg(long, default_value_t = 4, value_parser = clap::value_parser!(u64).range(1..=1_440))]
    minutes: u64,
    /// Events per second.
    #[arg(long = "rate", default_value_t = 200, value_parser = clap::value_parser!(u64).range(1..=10_000))]
    chaos_rate: u64,
    /// Partitions of the topic.
    #[arg(long = "partitions", default_value_t = 3, value_parser = clap::value_parser!(i32).range(1..=100))]
    chaos_partitions: i32,
    /// The Apache Kafka launcher (default: infra/kafka-local/kafka-local.sh of these sources).
    #[arg(long, env = "KAFKA_LOCAL_SCRIPT")]
    kafka_local: Option<PathBuf>,
    /// The toxiproxy-server that carries the client's link (`.ci/tools.sh` installs it).
    #[arg(long, env = "TOXIPROXY_SERVER")]
    toxiproxy: Option<std::ffi::OsString>,
    /// Print the report as one JSON line last.
    #[arg(long)]
    json: bool,
}

#[derive(Debug, clap::Args)]
struct SoakArgs {
    /// How long to run.
    #[arg(long, value_parser = clap::value_parser!(u64).range(1..=10_080))]
    minutes: u64,
    /// Events per second.
    #[arg(long = "rate", default_value_t = emulator::bench::LATENCY_RATE, value_parser = clap::value_parser!(u64).range(1..=100_000))]
    soak_rate: u64,
    /// Partitions of the soak topic.
    #[arg(long = "partitions", default_value_t = 6, value_parser = clap::value_parser!(i32).range(1..=1000))]
    soak_partitions: i32,
    /// Print the report as one JSON line last.
    #[arg(long)]
    json: bool,
}

#[derive(Debug, clap::Args)]
struct BenchArgs {
    /// Events to copy (1 KiB JSON values, keys, two headers).
    #[arg(long = "events", default_value_t = 60_000, value_parser = clap::value_parser!(u64).range(1..))]
    bench_events: u64,
    /// Most events per round: each round is produced, then copied by the pipeline and by
    /// the direct copy before the next (default: 12,000 on the embedded clusters, which keep
    /// only a few MiB per partition; all in one round on real Kafka).
    #[arg(long, value_parser = clap::value_parser!(u64).range(1..))]
    round_events: Option<u64>,
    /// Delay every answer of the embedded local Kafka by this many milliseconds, as a busy
    /// or distant local Kafka would (embedded clusters only).
    #[arg(long, value_parser = clap::value_parser!(u64).range(1..=10_000))]
    local_delay_ms: Option<u64>,
    /// Partitions of the benchmark topic.
    #[arg(long = "partitions", default_value_t = 6, value_parser = clap::value_parser!(i32).range(1..=1000))]
    bench_partitions: i32,
    /// Seconds of the 1,000 events/s latency phase.
    #[arg(long, default_value_t = 5, value_parser = clap::value_parser!(u64).range(1..=600))]
    latency_secs: u64,
    /// The client's batch limit.
    #[arg(long, default_value_t = 1000, value_parser = clap::value_parser!(u32).range(1..=10_000))]
    batch_limit: u32,
    /// Events per second of the latency phase.
    #[arg(long, default_value_t = emulator::bench::LATENCY_RATE, value_parser = clap::value_parser!(u64).range(1..=100_000))]
    latency_rate: u64,
    /// Also time a peer on the same brokers: `mm2` runs Apache Kafka's MirrorMaker 2
    /// (dedicated mode; needs --source-brokers and --local-brokers).
    #[arg(long, value_enum)]
    peer: Option<Peer>,
    /// Let the client ask for compressed answers, as it does by default over a real
    /// network (off here: on one machine compression only costs CPU).
    #[arg(long)]
    compression: bool,
    /// The window of the rate limits the backlog is copied through once more, to time
    /// catch-up with limits on: the shipped per-key budget (18,000 per 900 s, 20 requests
    /// a second) kept at its rate over this window (e.g. 10: 200 per 10 s, where a longer
    /// catch-up meets the budget sooner).
    #[arg(long, default_value_t = handlers::config::DEFAULT_RATE_LIMIT_WINDOW_SECS, value_parser = clap::value_parser!(u64).range(1..=86_400))]
    limits_window_secs: u64,
    /// The client reaches the API through toxiproxy (`TOXIPROXY_SERVER`, installed by
    /// `.ci/tools.sh`) with this delay each way; needs --link-mbit.
    #[arg(long, requires = "link_mbit", value_parser = clap::value_parser!(u64).range(0..=10_000))]
    link_delay_ms: Option<u64>,
    /// The capacity of that link each way, in Mbit/s; needs --link-delay-ms.
    #[arg(long, requires = "link_delay_ms")]
    link_mbit: Option<f64>,
    /// With --link-* and --peer mm2: LISTENER=ADVERTISED of the source broker's listener
    /// that MirrorMaker 2 reaches through the link (`infra/kafka-local/kafka-local.sh link
    /// source` prints it for a broker started with KAFKA_LOCAL_LINK_PORT).
    #[arg(long, value_parser = parse_source_link)]
    source_link: Option<(std::net::SocketAddr, std::net::SocketAddr)>,
    /// Run the whole benchmark this many times on the same brokers and report the median
    /// and range of every figure.
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u32).range(1..=20))]
    runs: u32,
    /// Run only this section.
    #[arg(long, value_enum)]
    only: Option<Section>,
    /// Run the fan-out section alone: this many clients streaming the same events
    /// (--latency-rate events/s for --latency-secs) from one consumer pod, then from two.
    #[arg(long, conflicts_with = "only", value_parser = clap::value_parser!(u64).range(1..=1000))]
    clients: Option<u64>,
    /// Print the report as one JSON line last.
    #[arg(long)]
    json: bool,
}

#[cfg(unix)]
async fn chaos(chaos: &ChaosArgs) -> anyhow::Result<()> {
    let toxiproxy = emulator::link::server(
        chaos.toxiproxy.clone(),
        "emulator chaos (the client's link)",
    )?;
    let config = emulator::chaos::ChaosConfig {
        seed: chaos.seed.unwrap_or_else(rand::random),
        minutes: chaos.minutes,
        rate: chaos.chaos_rate,
        partitions: chaos.chaos_partitions,
        kafka_local: chaos
            .kafka_local
            .clone()
            .unwrap_or_else(emulator::chaos::brokers::KafkaLocal::default_script),
        toxiproxy,
    };
    let report = emulator::chaos::run(&config)
        .await
        .with_context(|| format!("the schedule of seed {} could not run", config.seed))?;
    let verdict = &report.verdict;
    println!(
        "chaos: seed {}: {} faults in {} min; {} source records, {} copies: lost {}, duplicated {}, out of order {}, altered {}, foreign {}: {}",
        report.seed,
        report.schedule.len(),
        report.minutes,
        verdict.source_records,
        verdict.copies,
        verdict.lost,
        verdict.duplicated,
        verdict.out_of_order,
        verdict.altered,
        verdict.foreign,
        if report.passed { "passed" } else { "FAILED" }
    );
    for example in &verdict.examples {
        println!("  {example}");
    }
    if chaos.json {
        println!("{}", serde_json::to_string(&report)?);
    }
    if !report.passed {
        anyhow::bail!(
            "the schedule of seed {} broke exactly-once; replay it with `emulator chaos --seed {} --minutes {}`",
            report.seed,
            report.seed,
            report.minutes
        );
    }
    Ok(())
}

async fn soak(args: &Args, soak: &SoakArgs) -> anyhow::Result<()> {
    if args.source_brokers.is_none() || args.local_brokers.is_none() {
        anyhow::bail!(
            "soak runs for a long time on real Kafka (the embedded clusters keep only a few MiB per partition): give --source-brokers and --local-brokers (infra/kafka-local starts Apache Kafka)"
        );
    }
    let config = emulator::bench::BenchConfig {
        events: 0,
        partitions: soak.soak_partitions,
        latency_secs: soak.minutes * 60,
        source_brokers: args.source_brokers.clone(),
        local_brokers: args.local_brokers.clone(),
        source_properties: args.source_properties.clone(),
        local_properties: args.local_properties.clone().into(),
        batch_limit: 1000,
        latency_rate: soak.soak_rate,
        peer_mm2: false,
        compression: false,
        round_events: None,
        local_delay: None,
        limits_on: handlers::config::RateLimitArgs::default(),
        link: None,
        source_link: None,
    };
    let report = emulator::soak::run(&config, soak.minutes)
        .await
        .context("the soak could not run")?;
    println!(
        "soak: {} events at {} events/s for {} min: lost {}, duplicated {}",
        report.events, report.rate, report.minutes, report.lost, report.duplicated
    );
    for slice in &report.slices {
        println!(
            "  from minute {:>4}: {} events, p50 {:.0} ms, p99 {:.0} ms, p999 {:.0} ms",
            slice.from_minute, slice.events, slice.p50_ms, slice.p99_ms, slice.p999_ms
        );
    }
    for process in &report.memory {
        let first = process.rss_mb.first().copied().unwrap_or(0.0);
        let last = process.rss_mb.last().copied().unwrap_or(0.0);
        let peak = process.rss_mb.iter().copied().fold(0.0, f64::max);
        println!(
            "  {}: RSS {first:.1} → {last:.1} MB (peak {peak:.1}), {:+.2} MB/hour after the first quarter",
            process.process, process.slope_mb_per_hour
        );
    }
    if soak.json {
        println!("{}", serde_json::to_string(&report)?);
    }
    if report.lost > 0 || report.duplicated > 0 {
        anyhow::bail!(
            "the soak lost {} and duplicated {} events",
            report.lost,
            report.duplicated
        );
    }
    Ok(())
}

async fn bench(args: &Args, bench: &BenchArgs) -> anyhow::Result<()> {
    let link = match (bench.link_delay_ms, bench.link_mbit) {
        (Some(delay_ms), Some(mbit)) if mbit > 0.0 && mbit.is_finite() => {
            Some(emulator::link::LinkShape { delay_ms, mbit })
        }
        (Some(_), Some(mbit)) => {
            anyhow::bail!("--link-mbit {mbit} is not a capacity: give Mbit/s above 0, e.g. 20")
        }
        _ => None,
    };
    let config = emulator::bench::BenchConfig {
        events: bench.bench_events,
        partitions: bench.bench_partitions,
        latency_secs: bench.latency_secs,
        source_brokers: args.source_brokers.clone(),
        local_brokers: args.local_brokers.clone(),
        source_properties: args.source_properties.clone(),
        local_properties: args.local_properties.clone().into(),
        batch_limit: bench.batch_limit,
        latency_rate: bench.latency_rate,
        peer_mm2: bench.peer == Some(Peer::Mm2),
        compression: bench.compression,
        round_events: bench.round_events,
        local_delay: bench.local_delay_ms.map(Duration::from_millis),
        limits_on: emulator::bench::shipped_key_budget(bench.limits_window_secs),
        link,
        source_link: bench.source_link,
    };
    let mut reports = Vec::new();
    for run in 1..=bench.runs {
        if bench.runs > 1 {
            eprintln!("bench: run {run}/{}", bench.runs);
        }
        if bench.runs > 1 {
            println!("run {run}/{}:", bench.runs);
        }
        if let Some(clients) = bench.clients {
            let fan_out = emulator::bench_fanout::run(&config, clients as usize)
                .await
                .context("the fan-out benchmark could not run")?;
            print_fan_out(&fan_out);
            reports.push(serde_json::json!({ "fan_out": fan_out }));
            continue;
        }
        if bench.only == Some(Section::CatchUp) {
            if args.source_brokers.is_none() || args.local_brokers.is_none() {
                anyhow::bail!(
                    "--only catch-up reads a backlog past the pod's buffer from real Kafka: give --source-brokers and --local-brokers (infra/kafka-local starts Apache Kafka)"
                );
            }
            let catch_up = emulator::bench_catchup::run(&config)
                .await
                .context("the catch-up benchmark could not run")?;
            print_catch_up(&catch_up);
            reports.push(serde_json::json!({ "catch_up": catch_up }));
            continue;
        }
        let report = emulator::bench::run(config.clone())
            .await
            .context("the benchmark could not run")?;
        print_report(&report);
        reports.push(serde_json::to_value(&report)?);
    }
    if bench.runs == 1 {
        if bench.json {
            println!("{}", serde_json::to_string(&reports[0])?);
        }
        return Ok(());
    }
    let summary = emulator::bench_runs::Summary::of(&reports);
    println!(
        "median (min–max) of {} runs on the same brokers:",
        bench.runs
    );
    for line in summary.lines() {
        println!("  {line}");
    }
    if bench.json {
        println!("{}", serde_json::to_string(&summary.to_json(reports))?);
    }
    Ok(())
}

/// `--source-link LISTENER=ADVERTISED`, two `host:port` addresses.
fn parse_source_link(text: &str) -> Result<(std::net::SocketAddr, std::net::SocketAddr), String> {
    let (listener, advertised) = text
        .split_once('=')
        .ok_or("give LISTENER=ADVERTISED, e.g. 127.0.0.1:40123=127.0.0.1:19092")?;
    let addr = |a: &str| {
        a.trim()
            .parse::<std::net::SocketAddr>()
            .map_err(|e| format!("{a:?} is not host:port ({e})"))
    };
    Ok((addr(listener)?, addr(advertised)?))
}

fn print_report(report: &emulator::bench::BenchReport) {
    let p = &report.pipeline;
    let d = &report.direct_copy;
    println!("events       {}", report.events);
    println!(
        "pipeline     {:>9.0} events/s {:>7.1} MB/s   lost {}, duplicated {}",
        p.events_per_sec, p.mb_per_sec, p.lost, p.duplicated
    );
    println!(
        "direct copy  {:>9.0} events/s {:>7.1} MB/s   pipeline / direct copy: {:.2}",
        d.events_per_sec,
        d.mb_per_sec,
        p.events_per_sec / d.events_per_sec
    );
    let l = &report.pipeline_limits_on;
    println!(
        "limits on    {:>9.0} events/s   of limits off: {:.2}   ({} per {} s per key; {} requests, {} refused; lost {}, duplicated {}; client peak {:.0} MB)",
        l.events_per_sec,
        l.vs_limits_off,
        l.key_limit,
        l.window_secs,
        l.requests,
        l.refused,
        l.lost,
        l.duplicated,
        l.client_peak_rss_mb
    );
    println!(
        "latency at {} events/s: p50 {:.1} ms, p99 {:.1} ms, p999 {:.1} ms",
        report.latency_rate, p.p50_ms, p.p99_ms, p.p999_ms
    );
    println!(
        "client start {:>9.0} ms (connect to local Kafka, read the committed position; not in events/s)",
        p.client_start_ms
    );
    println!(
        "peak RSS     client {:.0} MB; consumer pod {:.0} MB; handlers, embedded clusters and bench readers {:.0} MB",
        p.client_peak_rss_mb, p.pod_peak_rss_mb, p.peak_rss_mb
    );
    if let Some(m) = &report.mirror_maker_2 {
        println!(
            "MirrorMaker 2 {:>8.0} events/s {:>7.1} MB/s   pipeline / MirrorMaker 2: {:.2}   (first to last copy; it took {:.1} s to start)",
            m.events_per_sec,
            m.mb_per_sec,
            p.events_per_sec / m.events_per_sec,
            m.start_secs
        );
        println!(
            "MirrorMaker 2 latency: p50 {:.1} ms, p99 {:.1} ms, p999 {:.1} ms; lost {}, duplicated {}",
            m.p50_ms, m.p99_ms, m.p999_ms, m.lost, m.duplicated
        );
        if let Some(k) = &m.link {
            println!(
                "MirrorMaker 2 link: {:.1} MB crossed for the backlog; from its start crossing to its last copy {:.0} events/s, {:.1} MB/s raw, {:.0}% of the link; pipeline / MirrorMaker 2 over the link: {:.2}",
                k.backlog_mb,
                k.events_per_sec,
                k.raw_mb_per_sec,
                k.utilisation * 100.0,
                p.events_per_sec / k.events_per_sec
            );
        }
    }
    if let Some(k) = &report.link {
        println!(
            "link         {} ms each way, {} Mbit/s: {:.2} MB crossed for the backlog, {:.0}% of the link; events {:.1} MB/s raw; {} requests ({:.1}/min) while steady, {} refused",
            k.delay_ms,
            k.mbit,
            k.backlog_mb,
            k.utilisation * 100.0,
            k.raw_mb_per_sec,
            p.latency_requests,
            p.latency_requests_per_minute,
            p.latency_refused
        );
    }
    if let Some(c) = &report.catch_up {
        print_catch_up(c);
    }
}

fn print_fan_out(f: &emulator::bench_fanout::FanoutResult) {
    println!(
        "fan-out: {} clients, each streaming {} events/s for {} s",
        f.clients, f.rate, f.secs
    );
    for pass in [&f.one_pod, &f.two_pods] {
        println!(
            "  {} pod(s): {:.0} events/s delivered in all, p50 {:.1} ms, p99 {:.1} ms, p999 {:.1} ms; pod CPU {:.1}% of a core, {:.2}% per client; lost {}, duplicated {}",
            pass.pods,
            pass.events_per_sec,
            pass.p50_ms,
            pass.p99_ms,
            pass.p999_ms,
            pass.pod_cpu_pct,
            pass.pod_cpu_per_client_pct,
            pass.lost,
            pass.duplicated
        );
    }
}

fn print_catch_up(c: &emulator::bench_catchup::CatchUpResult) {
    for (name, pass) in [
        ("catch-up past the buffer", &c.past_the_buffer),
        ("catch-up all buffered   ", &c.all_buffered),
    ] {
        println!(
            "{name} {:>7.0} events/s ({} events, {} from Kafka in {} reads, {} going on from the last): pod fetched {:.1} MB from Kafka, served {:.1} MB, amplification {:.2}; broker CPU {:.1} s; lost {}, duplicated {}",
            pass.events_per_sec,
            pass.events,
            pass.from_kafka_events,
            pass.kafka_reads,
            pass.kafka_reads_resumed,
            pass.pod_fetched_mb,
            pass.pod_served_mb,
            pass.amplification,
            pass.broker_cpu_secs,
            pass.lost,
            pass.duplicated
        );
    }
    println!(
        "catch-up past the buffer / all buffered: {:.2}; pod peak {:.0} MB with BUFFER_MAX_BYTES {:.0} MB",
        c.vs_all_buffered, c.pod_peak_rss_mb, c.buffer_max_mb
    );
}

impl Validate for Args {
    fn validate(&self) -> Result<(), shared::config::ConfigError> {
        self.buffer.validate()?;
        self.cors.validate()?;
        self.source_properties
            .load()?
            .check(consumer::config::SOURCE_GUARDS)?;
        self.local_properties
            .load()?
            .check(client::config::LOCAL_GUARDS)?;
        self.limits.validate()
    }
}

fn main() -> std::process::ExitCode {
    let args: Args = shared::config::load();
    match args.command {
        // The benchmark's client process, as the client binary runs.
        Some(Command::BenchClient(_)) => client::memory::tune_malloc(),
        // The pod's process, as the consumer binary runs.
        Some(Command::PodProcess(_)) => consumer::memory::tune_malloc(),
        _ => {}
    }
    // One line on failure, causes included, as every binary of the product says it.
    shared::config::exit_code(
        tokio::runtime::Runtime::new()
            .context("cannot start the async runtime")
            .and_then(|runtime| runtime.block_on(run(args))),
    )
}

async fn run(args: Args) -> anyhow::Result<()> {
    shared::telemetry::init();
    match &args.command {
        Some(Command::Bench(bench_args)) => return bench(&args, bench_args).await,
        Some(Command::Soak(soak_args)) => return soak(&args, soak_args).await,
        #[cfg(unix)]
        Some(Command::Chaos(chaos_args)) => return chaos(chaos_args).await,
        Some(Command::HandlersProcess(child)) => {
            return emulator::handlers_process::run_child(&child.args)
                .await
                .context("the handlers process failed");
        }
        Some(Command::PodProcess(child)) => {
            return emulator::pod_process::run_child(&child.args)
                .await
                .context("the consumer pod process failed");
        }
        Some(Command::BenchClient(child)) => {
            return emulator::bench_client::run_child(&child.args)
                .await
                .context("the benchmark's client failed");
        }
        None => {}
    }
    let shutdown = shared::shutdown::token();
    let mut config = StackConfig {
        source_brokers: args.source_brokers,
        local_brokers: args.local_brokers,
        topic: args.topic,
        partitions: args.partitions,
        rate: args.rate,
        events: args.events,
        run_client: !args.no_client,
        handlers_mode: args.handlers,
        ..StackConfig::default()
    };
    config.pod.source.group_id = args.group_id;
    config.pod.buffer = args.buffer;
    config.pod.source.properties = args.source_properties;
    config.client.properties = args.local_properties.into();
    config.handlers.keys.api_key = args.api_key;
    config.handlers.api_prefix = args.api_prefix;
    config.handlers.port = args.port;
    config.handlers.cors = args.cors;
    config.handlers.limits = args.limits;
    config.handlers.stream_max_secs = args.stream_max_secs;
    config.client.interval_ms = args.interval;
    config.client.client_id = args.client_id;
    let stack = tokio::select! {
        stack = Stack::start(config) => stack.context("the emulator could not start")?,
        () = shutdown.cancelled() => return Ok(()),
    };
    let info = &stack.info;
    if let Some(path) = &args.ready_file {
        let json = serde_json::to_string_pretty(info)?;
        std::fs::write(path, json).with_context(|| format!("cannot write {}", path.display()))?;
    }
    // One write, errors ignored: whoever reads the ready line may close the pipe after it,
    // and that must not stop the emulator.
    let ready = format!(
        "kafka-replicator emulator ready: api={} api_key={} source_brokers={} local_brokers={} topic={}\n\
         try: curl -H \"x-api-key: {}\" \"{}/events?cursor=earliest&limit=5\"\n\
         docs: {}/docs\n",
        info.api_base,
        info.api_key,
        info.source_brokers,
        info.local_brokers,
        info.topic,
        info.api_key,
        info.api_base,
        info.api_base
    );
    let mut stdout = std::io::stdout().lock();
    let _ = stdout
        .write_all(ready.as_bytes())
        .and_then(|()| stdout.flush());
    drop(stdout);
    shutdown.cancelled().await;
    stack.stop().await;
    Ok(())
}
