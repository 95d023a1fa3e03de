//! The consumer pod in a process of its own, so the benchmark measures its memory apart from
//! the handlers, the embedded clusters and its own readers: `emulator pod-process` (hidden)
//! runs the pod from its usual environment variables, prints the address it listens on, and
//! stops when its standard input closes.

use std::process::Stdio;
use std::time::Duration;

use shared::config::{ConsumerAddr, ConsumerConfig};
use tokio::io::{AsyncBufReadExt, AsyncReadExt, BufReader};
use tokio_util::sync::CancellationToken;

use crate::stack::StackError;

/// What the child prints before the address it listens on.
const LISTENING: &str = "listening ";

/// Runs the pod as the child process (the `pod-process` subcommand).
pub async fn run_child() -> Result<(), StackError> {
    use clap::Parser;
    use shared::config::Validate;
    let config = ConsumerConfig::try_parse_from(["consumer"])
        .map_err(|e| StackError::PodProcess(e.to_string()))?;
    config
        .validate()
        .map_err(|e| StackError::PodProcess(e.to_string()))?;
    let pod = consumer::ConsumerPod::bind(config).await?;
    println!("{LISTENING}{}", pod.local_addr());
    let stop = CancellationToken::new();
    let run = tokio::spawn(pod.run(stop.clone()));
    // The parent closes our standard input to stop us.
    let mut sink = Vec::new();
    let _ = tokio::io::stdin().read_to_end(&mut sink).await;
    stop.cancel();
    match run.await {
        Ok(Ok(())) => Ok(()),
        Ok(Err(err)) => Err(StackError::PodProcess(err.to_string())),
        Err(err) => Err(StackError::PodProcess(err.to_string())),
    }
}

/// The pod child, seen from the stack.
#[derive(Debug)]
pub struct PodProcess {
    child: tokio::process::Child,
    /// Where its internal server answers.
    pub addr: ConsumerAddr,
}

impl PodProcess {
    /// Starts the child with `config` (its address a free TCP port) and waits until it
    /// listens.
    pub async fn start(config: &ConsumerConfig) -> Result<Self, StackError> {
        let failed = |why: String| StackError::PodProcess(why);
        let exe = std::env::current_exe().map_err(|e| failed(e.to_string()))?;
        let mut child = tokio::process::Command::new(exe)
            .arg("pod-process")
            .env("KAFKA_BROKERS", config.source.brokers())
            .env("KAFKA_TOPIC", config.source.topics.join(","))
            .env("KAFKA_GROUP_ID", &config.source.group_id)
            .env(
                "KAFKA_FETCH_WAIT_MS",
                config.source.fetch_wait_ms.to_string(),
            )
            .env(
                "BUFFER_MAX_EVENTS",
                config.buffer.buffer_max_events.to_string(),
            )
            .env(
                "BUFFER_MAX_BYTES",
                config.buffer.buffer_max_bytes.to_string(),
            )
            .env("CONSUMER_ADDR", "127.0.0.1:0")
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .map_err(|e| failed(format!("cannot start the consumer pod: {e}")))?;
        let stdout = child
            .stdout
            .take()
            .ok_or_else(|| failed("the consumer pod has no output".into()))?;
        let mut lines = BufReader::new(stdout).lines();
        let listening = tokio::time::timeout(Duration::from_secs(30), async {
            while let Ok(Some(line)) = lines.next_line().await {
                if let Some(addr) = line.trim().strip_prefix(LISTENING) {
                    return addr.parse::<ConsumerAddr>().ok();
                }
            }
            None
        })
        .await;
        let Ok(Some(addr)) = listening else {
            return Err(failed(
                "the consumer pod did not start listening (its log is above)".into(),
            ));
        };
        Ok(Self { child, addr })
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
