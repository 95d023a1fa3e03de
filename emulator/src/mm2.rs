//! [`MirrorMaker2`]: Apache Kafka's MirrorMaker 2 in dedicated mode
//! (`org.apache.kafka.connect.mirror.MirrorMaker`, from the jars `infra/kafka-local` fetches
//! from Maven Central), copying one topic from the source cluster to the local one, as the
//! benchmark's peer. Default settings otherwise, as a user would run it.

use std::path::PathBuf;
use std::process::Stdio;

/// The launcher that runs Kafka's main classes with the fetched jars.
pub fn launcher() -> PathBuf {
    std::env::var_os("KAFKA_LOCAL_SCRIPT").map_or_else(
        || PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../infra/kafka-local/kafka-local.sh"),
        PathBuf::from,
    )
}

/// Why MirrorMaker 2 could not run.
#[derive(Debug, thiserror::Error)]
pub enum Mm2Error {
    #[error("cannot write {path}: {source}")]
    Write {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("cannot start MirrorMaker 2 with {launcher}: {source}")]
    Spawn {
        launcher: PathBuf,
        source: std::io::Error,
    },
}

/// A running MirrorMaker 2; killed when dropped.
#[derive(Debug)]
pub struct MirrorMaker2 {
    child: tokio::process::Child,
    /// Its log, for when it misbehaves.
    pub log: PathBuf,
}

/// The topic MirrorMaker 2's default replication policy writes `topic` to.
pub fn target_topic(topic: &str) -> String {
    format!("source.{topic}")
}

impl MirrorMaker2 {
    /// Starts copying `topic` from `source` to `local` (as `source.<topic>`) with `tasks`
    /// tasks.
    pub fn start(source: &str, local: &str, topic: &str, tasks: u32) -> Result<Self, Mm2Error> {
        let dir = std::env::temp_dir();
        let properties = dir.join(format!("{topic}-mm2.properties"));
        let log = dir.join(format!("{topic}-mm2.log"));
        let text = format!(
            "clusters = source, local\n\
             source.bootstrap.servers = {source}\n\
             local.bootstrap.servers = {local}\n\
             source->local.enabled = true\n\
             local->source.enabled = false\n\
             source->local.topics = {topic}\n\
             tasks.max = {tasks}\n\
             refresh.topics.interval.seconds = 5\n\
             sync.topic.configs.enabled = false\n\
             sync.topic.acls.enabled = false\n\
             emit.heartbeats.enabled = false\n\
             replication.factor = 1\n\
             checkpoints.topic.replication.factor = 1\n\
             heartbeats.topic.replication.factor = 1\n\
             offset-syncs.topic.replication.factor = 1\n\
             offset.storage.replication.factor = 1\n\
             status.storage.replication.factor = 1\n\
             config.storage.replication.factor = 1\n"
        );
        std::fs::write(&properties, text).map_err(|source| Mm2Error::Write {
            path: properties.clone(),
            source,
        })?;
        let out = std::fs::File::create(&log).map_err(|source| Mm2Error::Write {
            path: log.clone(),
            source,
        })?;
        let err = out.try_clone().map_err(|source| Mm2Error::Write {
            path: log.clone(),
            source,
        })?;
        let launcher = launcher();
        let child = tokio::process::Command::new("bash")
            .arg(&launcher)
            .arg("run")
            .arg("org.apache.kafka.connect.mirror.MirrorMaker")
            .arg(&properties)
            .stdin(Stdio::null())
            .stdout(out)
            .stderr(err)
            .kill_on_drop(true)
            .spawn()
            .map_err(|source| Mm2Error::Spawn { launcher, source })?;
        Ok(Self { child, log })
    }

    /// Waits until it exits on its own (it should not), with its status.
    pub async fn exited(&mut self) -> std::io::Result<std::process::ExitStatus> {
        self.child.wait().await
    }

    /// Stops it.
    pub async fn stop(mut self) {
        let _ = self.child.kill().await;
    }
}
