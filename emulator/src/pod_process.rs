//! The consumer pod in a process of its own, so the benchmark measures its memory apart from
//! the handlers, the embedded clusters and its own readers: `emulator pod-process` (hidden)
//! runs the pod from its usual environment variables, prints the address it listens on, and
//! stops when its standard input closes.

use std::time::Duration;

use shared::internal::ConsumerAddr;
use tokio_util::sync::CancellationToken;

use crate::child::{ChildProcess, config_from_env, stop_asked};
use crate::stack::StackError;

/// What the child prints before the address it listens on.
const LISTENING: &str = "listening ";

/// Runs the pod as the child process (the `pod-process` subcommand).
pub async fn run_child(args: &[String]) -> Result<(), StackError> {
    let config: consumer::Config =
        config_from_env("consumer", args).map_err(StackError::PodProcess)?;
    let pod = consumer::ConsumerPod::bind(config).await?;
    println!("{LISTENING}{}", pod.local_addr());
    let stop = CancellationToken::new();
    let run = tokio::spawn(pod.run(stop.clone()));
    stop_asked().await;
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
    child: ChildProcess,
    /// Where its internal server answers.
    pub addr: ConsumerAddr,
}

impl PodProcess {
    /// Starts the child (`exe`, or this binary) with `config` and waits until it listens:
    /// on `config.consumer_addr`, a TCP address (port 0: a free one).
    pub async fn start(
        exe: Option<&std::path::Path>,
        config: &consumer::Config,
    ) -> Result<Self, StackError> {
        Self::start_logged(exe, config, None).await
    }

    /// The same, its log going to the end of file `log` (none: the parent's standard
    /// error).
    pub async fn start_logged(
        exe: Option<&std::path::Path>,
        config: &consumer::Config,
        log: Option<&std::path::Path>,
    ) -> Result<Self, StackError> {
        let (child, addr) = ChildProcess::start(
            exe,
            "consumer pod",
            "pod-process",
            &config.source.properties,
            |command| {
                let bounds = &config.bounds;
                command.envs([
                    ("KAFKA_BROKERS", config.source.brokers().to_owned()),
                    ("KAFKA_TOPIC", config.source.topics.join(",")),
                    ("KAFKA_GROUP_ID", config.source.group_id.clone()),
                    (
                        "KAFKA_FETCH_WAIT_MS",
                        config.source.fetch_wait_ms.to_string(),
                    ),
                    (
                        "BUFFER_MAX_EVENTS",
                        config.buffer.buffer_max_events.to_string(),
                    ),
                    (
                        "BUFFER_MAX_BYTES",
                        config.buffer.buffer_max_bytes.to_string(),
                    ),
                    ("CONSUMER_ADDR", config.consumer_addr.to_string()),
                    (
                        "MAX_CONCURRENT_FETCHES",
                        bounds.max_concurrent_fetches.to_string(),
                    ),
                    ("MAX_CATCHUP_READS", bounds.max_catchup_reads.to_string()),
                    (
                        "FETCH_READ_BUDGET_MS",
                        bounds.fetch_read_budget_ms.to_string(),
                    ),
                ]);
                match &config.internal_token {
                    Some(token) => command.env("INTERNAL_TOKEN", token),
                    None => command.env_remove("INTERNAL_TOKEN"),
                };
                crate::child::log_to(command, log);
            },
            Duration::from_secs(30),
            |line| line.strip_prefix(LISTENING)?.parse::<ConsumerAddr>().ok(),
        )
        .await
        .map_err(StackError::PodProcess)?;
        Ok(Self { child, addr })
    }

    /// Peak resident memory so far, in MiB (Linux; 0 elsewhere).
    pub fn peak_rss_mb(&self) -> f64 {
        self.child.peak_rss_mb()
    }

    /// Its process id, while it runs.
    pub fn pid(&self) -> Option<u32> {
        self.child.pid()
    }

    /// Kills it at once, as a crash would.
    pub async fn kill(self) {
        self.child.kill().await;
    }

    /// Stops it gracefully (killed if it takes too long).
    pub async fn stop(self) {
        self.child.stop().await;
    }
}
