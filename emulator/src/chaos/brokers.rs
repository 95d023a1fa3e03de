//! The Apache Kafka brokers of a fault schedule, run by `infra/kafka-local/kafka-local.sh`: a
//! source cluster of three (replication factor 3, `min.insync.replicas` 2) and one local
//! broker, each of which can be killed, restarted and removed.

use std::path::{Path, PathBuf};
use std::time::Duration;

use rdkafka::consumer::{BaseConsumer, Consumer};

/// Why a broker could not be run.
#[derive(Debug, thiserror::Error)]
pub enum BrokerError {
    #[error("{0} is not a file: point --kafka-local at infra/kafka-local/kafka-local.sh")]
    NoScript(String),
    #[error("kafka-local.sh {command}: {reason}")]
    Failed { command: String, reason: String },
}

/// The launcher script, and the broker names it was asked to start (shared by clones).
#[derive(Debug, Clone)]
pub struct KafkaLocal {
    script: PathBuf,
    started: std::sync::Arc<std::sync::Mutex<Vec<String>>>,
}

impl KafkaLocal {
    /// The launcher at `script`, checked to be there.
    pub fn new(script: &Path) -> Result<Self, BrokerError> {
        if !script.is_file() {
            return Err(BrokerError::NoScript(script.display().to_string()));
        }
        Ok(Self {
            script: script.to_owned(),
            started: std::sync::Arc::default(),
        })
    }

    /// The launcher next to the sources this binary was built from.
    pub fn default_script() -> PathBuf {
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../infra/kafka-local/kafka-local.sh")
    }

    /// Runs the launcher with `args`; returns its standard output, trimmed. Its progress
    /// (standard error) is shown only when it fails.
    async fn run(&self, args: &[&str], extra_props: Option<&str>) -> Result<String, BrokerError> {
        let mut command = tokio::process::Command::new("bash");
        command.arg(&self.script).args(args);
        match extra_props {
            Some(props) => command.env("KAFKA_LOCAL_EXTRA_PROPS", props),
            None => command.env_remove("KAFKA_LOCAL_EXTRA_PROPS"),
        };
        for var in [
            "KAFKA_LOCAL_PORT",
            "KAFKA_LOCAL_CONTROLLER_PORT",
            "KAFKA_LOCAL_LINK_PORT",
        ] {
            command.env_remove(var);
        }
        let failed = |reason: String| BrokerError::Failed {
            command: args.join(" "),
            reason,
        };
        let output = command
            .stdin(std::process::Stdio::null())
            .output()
            .await
            .map_err(|e| failed(e.to_string()))?;
        if !output.status.success() {
            return Err(failed(format!(
                "{}; it said:\n{}",
                output.status,
                what_it_said(&String::from_utf8_lossy(&output.stderr))
            )));
        }
        Ok(String::from_utf8_lossy(&output.stdout).trim().to_owned())
    }

    /// A fresh cluster of `nodes` brokers `name-1`…; returns its bootstrap list.
    pub async fn start_cluster(&self, name: &str, nodes: u32) -> Result<String, BrokerError> {
        self.note((1..=nodes).map(|i| format!("{name}-{i}")));
        self.run(&["start-cluster", name, &nodes.to_string()], None)
            .await
    }

    /// A fresh single broker `name` with these extra properties; returns its address.
    pub async fn start(&self, name: &str, extra_props: &str) -> Result<String, BrokerError> {
        self.note([name.to_owned()]);
        self.run(&["start", name], Some(extra_props)).await
    }

    fn note(&self, names: impl IntoIterator<Item = String>) {
        self.started
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .extend(names);
    }

    /// Kills broker `name` at once (SIGKILL).
    pub async fn kill(&self, name: &str) -> Result<(), BrokerError> {
        self.run(&["kill", name], None).await.map(drop)
    }

    /// Stops broker `name` gracefully (SIGTERM).
    pub async fn stop(&self, name: &str) -> Result<(), BrokerError> {
        self.run(&["stop", name], None).await.map(drop)
    }

    /// Stops broker `name` gracefully if it runs, and starts it again on its data.
    pub async fn restart(&self, name: &str) -> Result<(), BrokerError> {
        self.run(&["restart", name], None).await.map(drop)
    }

    /// Stops and deletes every broker started here.
    pub async fn remove_all(&self) {
        let names = std::mem::take(
            &mut *self
                .started
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner),
        );
        for name in names {
            if let Err(err) = self.run(&["remove", &name], None).await {
                eprintln!("chaos: {err}");
            }
        }
    }
}

/// The node id leading `partition` of `topic`, as `brokers` say now.
pub async fn leader_of(brokers: &str, topic: &str, partition: i32) -> Option<i32> {
    let (brokers, topic) = (brokers.to_owned(), topic.to_owned());
    tokio::task::spawn_blocking(move || {
        let consumer: BaseConsumer = shared::kafka::client_config(&brokers).create().ok()?;
        let metadata = consumer
            .fetch_metadata(Some(&topic), Duration::from_secs(10))
            .ok()?;
        metadata
            .topics()
            .iter()
            .find(|t| t.name() == topic)?
            .partitions()
            .iter()
            .find(|p| p.id() == partition)
            .map(|p| p.leader())
            .filter(|leader| *leader >= 0)
    })
    .await
    .ok()
    .flatten()
}

/// The launcher's failure as shown: its own lines and the brokers' errors, wherever they
/// are (a broker's shutdown can push its cause out of the tail), then the last lines.
fn what_it_said(stderr: &str) -> String {
    const TAIL: usize = 15;
    let lines: Vec<&str> = stderr.lines().collect();
    let tail_from = lines.len().saturating_sub(TAIL);
    let cause = lines[..tail_from].iter().filter(|l| {
        l.starts_with("kafka-local:") || l.contains("] ERROR ") || l.contains("] FATAL ")
    });
    cause
        .chain(&lines[tail_from..])
        .copied()
        .collect::<Vec<_>>()
        .join("\n")
}

#[cfg(test)]
mod tests {
    use super::what_it_said;

    #[test]
    fn the_cause_before_a_long_shutdown_is_kept_with_the_last_lines() {
        let mut said = vec![
            "kafka-local: waiting for 'c-source-2' on 127.0.0.1:20001 (timeout 90s) ...".to_owned(),
            "[2026-12-03 07:56:20,100] INFO starting (kafka.server.KafkaRaftServer)".to_owned(),
            "[2026-12-03 07:56:21,200] ERROR Exiting Kafka due to fatal exception (kafka.Kafka$)"
                .to_owned(),
        ];
        said.extend(
            (0..40).map(|i| format!("[2026-12-03 07:56:22,{i:03}] INFO shutting down {i}")),
        );
        said.push("kafka-local: error: cluster 'c-source' did not start".to_owned());
        let shown = what_it_said(&said.join("\n"));
        let lines: Vec<&str> = shown.lines().collect();
        assert_eq!(lines.len(), 2 + 15, "{shown}");
        assert!(lines[0].starts_with("kafka-local: waiting"), "{shown}");
        assert!(lines[1].contains("ERROR Exiting Kafka"), "{shown}");
        assert!(!shown.contains("INFO starting"), "{shown}");
        assert!(shown.ends_with("did not start"), "{shown}");
    }
}
