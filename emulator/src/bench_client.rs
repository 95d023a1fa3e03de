//! The benchmark's client in a process of its own, so its memory is measured apart from the
//! pod, the handlers and the embedded clusters: `emulator bench-client` (hidden) runs the
//! client library from its usual environment variables, prints `connected` once it has read
//! its position, and stops when its standard input closes.

use std::time::Duration;

use tokio_util::sync::CancellationToken;

use crate::bench::BenchError;
use crate::child::{ChildProcess, config_from_env, stop_asked};

/// The line the child prints once connected.
const CONNECTED: &str = "connected";

/// Runs the client as the child process (the `bench-client` subcommand).
pub async fn run_child(args: &[String]) -> Result<(), BenchError> {
    let config: client::Config = config_from_env("client", args).map_err(BenchError::Incomplete)?;
    let client =
        client::Replicator::new(&config).map_err(|e| BenchError::Incomplete(e.to_string()))?;
    let mut progress = client.watch();
    let stop = CancellationToken::new();
    let run = tokio::spawn(client.run(stop.clone()));
    if progress.wait_for(|p| p.connected).await.is_ok() {
        println!("{CONNECTED}");
    }
    stop_asked().await;
    stop.cancel();
    match run.await {
        Ok(Ok(_)) => Ok(()),
        Ok(Err(err)) => Err(BenchError::Incomplete(err.to_string())),
        Err(err) => Err(BenchError::Incomplete(err.to_string())),
    }
}

/// The client child, seen from the benchmark.
#[derive(Debug)]
pub struct ClientProcess(ChildProcess);

/// How the child reaches the stack.
#[derive(Debug, Clone)]
pub struct ClientSettings {
    pub server_url: String,
    pub api_key: String,
    pub local_brokers: String,
    /// The user's librdkafka properties for local Kafka.
    pub local_properties: shared::kafka::KafkaPropertyArgs,
    pub client_id: String,
    pub batch_limit: u32,
    pub compression: bool,
    /// `TOPIC_PREFIX`: where the copies go, when not to the source's topic names.
    pub topic_prefix: Option<String>,
    /// Where its log goes (none: the parent's standard error).
    pub log: Option<std::path::PathBuf>,
}

impl ClientProcess {
    /// Starts the child and waits until it is connected (up to `timeout`).
    pub async fn start(settings: &ClientSettings, timeout: Duration) -> Result<Self, BenchError> {
        let (child, ()) = ChildProcess::start(
            None,
            "client",
            "bench-client",
            &settings.local_properties,
            |command| configure(command, settings),
            timeout,
            |line| (line == CONNECTED).then_some(()),
        )
        .await
        .map_err(BenchError::Incomplete)?;
        Ok(Self(child))
    }

    /// Starts the child without waiting for it to connect (the API may be out of reach).
    pub fn start_unwaited(settings: &ClientSettings) -> Result<Self, BenchError> {
        ChildProcess::start_unwaited(
            None,
            "client",
            "bench-client",
            &settings.local_properties,
            |command| configure(command, settings),
        )
        .map(Self)
        .map_err(BenchError::Incomplete)
    }

    /// Kills it at once (SIGKILL), as a crash would.
    pub async fn kill(self) {
        self.0.kill().await;
    }

    /// Puts it to sleep (SIGSTOP) or wakes it (SIGCONT).
    #[cfg(unix)]
    pub async fn freeze(&self, asleep: bool) -> std::io::Result<()> {
        self.0.freeze(asleep).await
    }

    /// Its process id, while it runs.
    pub fn pid(&self) -> Option<u32> {
        self.0.pid()
    }

    /// Peak resident memory so far, in MiB (Linux; 0 elsewhere).
    pub fn peak_rss_mb(&self) -> f64 {
        self.0.peak_rss_mb()
    }

    /// Stops it gracefully (killed if it takes too long).
    pub async fn stop(self) {
        self.0.stop().await;
    }
}

/// The child's environment: the client's own variables, from `settings`.
fn configure(command: &mut tokio::process::Command, settings: &ClientSettings) {
    command
        .env_remove("KAFKA_TOPIC")
        .env_remove("TOPIC_PREFIX")
        .env("SERVER_URL", &settings.server_url)
        .env("API_KEY", &settings.api_key)
        .env("KAFKA_BROKERS", &settings.local_brokers)
        .env("CLIENT_ID", &settings.client_id)
        .env("BATCH_LIMIT", settings.batch_limit.to_string())
        .env("COMPRESSION", settings.compression.to_string())
        .env("START_FROM", "earliest")
        .env("POLL_INTERVAL_MS", "200");
    if let Some(prefix) = &settings.topic_prefix {
        command.env("TOPIC_PREFIX", prefix);
    }
    crate::child::log_to(command, settings.log.as_deref());
}
