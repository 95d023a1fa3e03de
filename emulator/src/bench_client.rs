//! The benchmark's client in a process of its own, so its memory is measured apart from the
//! pod, the handlers and the embedded clusters: `emulator bench-client` (hidden) runs the
//! client library from its usual environment variables, prints `connected` once it has read
//! its position, and stops when its standard input closes.

use std::process::Stdio;
use std::time::Duration;

use tokio::io::{AsyncBufReadExt, AsyncReadExt, BufReader};
use tokio_util::sync::CancellationToken;

use crate::bench::BenchError;

/// The line the child prints once connected.
const CONNECTED: &str = "connected";

/// Runs the client as the child process (the `bench-client` subcommand).
pub async fn run_child() -> Result<(), BenchError> {
    use clap::Parser;
    use shared::config::Validate;
    let config = shared::config::ClientConfig::try_parse_from(["client"])
        .map_err(|e| BenchError::Incomplete(e.to_string()))?;
    config
        .validate()
        .map_err(|e| BenchError::Incomplete(e.to_string()))?;
    let client =
        client::Replicator::new(&config).map_err(|e| BenchError::Incomplete(e.to_string()))?;
    let mut progress = client.watch();
    let stop = CancellationToken::new();
    let run = tokio::spawn(client.run(stop.clone()));
    if progress.wait_for(|p| p.connected).await.is_ok() {
        println!("{CONNECTED}");
    }
    // The parent closes our standard input to stop us.
    let mut sink = Vec::new();
    let _ = tokio::io::stdin().read_to_end(&mut sink).await;
    stop.cancel();
    match run.await {
        Ok(Ok(_)) => Ok(()),
        Ok(Err(err)) => Err(BenchError::Incomplete(err.to_string())),
        Err(err) => Err(BenchError::Incomplete(err.to_string())),
    }
}

/// The client child, seen from the benchmark.
#[derive(Debug)]
pub struct ClientProcess {
    child: tokio::process::Child,
}

/// How the child reaches the stack.
#[derive(Debug, Clone)]
pub struct ClientSettings {
    pub server_url: String,
    pub api_key: String,
    pub local_brokers: String,
    pub client_id: String,
    pub batch_limit: u32,
    pub compression: bool,
}

impl ClientProcess {
    /// Starts the child and waits until it is connected (up to `timeout`).
    pub async fn start(settings: &ClientSettings, timeout: Duration) -> Result<Self, BenchError> {
        let exe = std::env::current_exe().map_err(|e| BenchError::Incomplete(e.to_string()))?;
        let mut child = tokio::process::Command::new(exe)
            .arg("bench-client")
            .env_remove("KAFKA_TOPIC")
            .env_remove("TOPIC_PREFIX")
            .env("SERVER_URL", &settings.server_url)
            .env("API_KEY", &settings.api_key)
            .env("KAFKA_BROKERS", &settings.local_brokers)
            .env("CLIENT_ID", &settings.client_id)
            .env("BATCH_LIMIT", settings.batch_limit.to_string())
            .env("COMPRESSION", settings.compression.to_string())
            .env("START_FROM", "earliest")
            .env("POLL_INTERVAL_MS", "200")
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .map_err(|e| BenchError::Incomplete(format!("cannot start the client: {e}")))?;
        let stdout = child
            .stdout
            .take()
            .ok_or_else(|| BenchError::Incomplete("the client has no output".into()))?;
        let mut lines = BufReader::new(stdout).lines();
        let connected = tokio::time::timeout(timeout, async {
            while let Ok(Some(line)) = lines.next_line().await {
                if line.trim() == CONNECTED {
                    return true;
                }
            }
            false
        })
        .await;
        if connected != Ok(true) {
            return Err(BenchError::Incomplete(
                "the client did not connect (its log is above)".into(),
            ));
        }
        Ok(Self { child })
    }

    /// Peak resident memory so far, in MiB (Linux; 0 elsewhere).
    pub fn peak_rss_mb(&self) -> f64 {
        self.child
            .id()
            .map_or(0.0, |pid| crate::bench::peak_rss_mb_of(&pid.to_string()))
    }

    /// Closes its input so it stops gracefully; kills it if it does not within 15 s.
    pub async fn stop(mut self) {
        drop(self.child.stdin.take());
        if tokio::time::timeout(Duration::from_secs(15), self.child.wait())
            .await
            .is_err()
        {
            let _ = self.child.kill().await;
        }
    }
}
