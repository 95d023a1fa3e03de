//! [`Config`]: the consumer pod's configuration (the `consumer` binary): the source Kafka,
//! the buffer's bounds, the bounds on its own work and its internal socket.

use clap::{Args, Parser};
use shared::config::{ConfigError, Validate, required};
use shared::internal::{ConsumerAddr, validate_internal_token};
use shared::kafka::{Guard, KafkaProperties, KafkaPropertyArgs};

/// The source Kafka the consumer pod reads.
#[derive(Debug, Clone, Args)]
pub struct SourceArgs {
    /// Bootstrap servers of the source Kafka (comma-separated host:port).
    #[arg(long = "kafka-brokers", env = "KAFKA_BROKERS")]
    pub brokers: Option<String>,
    /// Source topics (comma-separated).
    #[arg(long = "kafka-topic", env = "KAFKA_TOPIC", value_delimiter = ',')]
    pub topics: Vec<String>,
    /// Consumer group that keeps the pods' committed offsets (where a restarted pod goes
    /// on from); each pod takes every partition by assignment, never sharing them out.
    #[arg(
        long = "kafka-group-id",
        env = "KAFKA_GROUP_ID",
        default_value = "kafka-replicator"
    )]
    pub group_id: String,
    /// Longest a fetch that finds no new data waits at the broker (librdkafka
    /// `fetch.wait.max.ms`). Real brokers answer as soon as data arrives, so this only paces
    /// idle polling; librdkafka's mock cluster waits it out in full, so the emulator lowers it.
    #[arg(
        long = "kafka-fetch-wait-ms",
        env = "KAFKA_FETCH_WAIT_MS",
        default_value_t = DEFAULT_FETCH_WAIT_MS,
        value_parser = clap::value_parser!(u32).range(1..=10_000)
    )]
    pub fetch_wait_ms: u32,
    /// librdkafka properties for the source Kafka (TLS, SASL, …).
    #[command(flatten)]
    pub properties: KafkaPropertyArgs,
}

/// What the pod sets on its source clients itself: a user property may not change it.
pub const SOURCE_GUARDS: &[Guard] = &[
    Guard::SetBy {
        key: "group.id",
        variable: "KAFKA_GROUP_ID",
    },
    Guard::Fixed {
        key: "isolation.level",
        values: &["read_committed"],
        why: "the pod serves only committed events; read_uncommitted would hand out events their producer may still abort",
    },
    Guard::Fixed {
        key: "enable.auto.offset.store",
        values: &["false"],
        why: "the pod stores an offset only once its record is in the buffer",
    },
    Guard::Fixed {
        key: "enable.partition.eof",
        values: &["false", "true"],
        why: "set per client by the pod; catch-up reads need it on, the group consumer off",
    },
];

/// librdkafka's own default for `fetch.wait.max.ms`.
pub const DEFAULT_FETCH_WAIT_MS: u32 = 500;

impl Validate for SourceArgs {
    fn validate(&self) -> Result<(), ConfigError> {
        required(
            &self.brokers,
            "KAFKA_BROKERS",
            "kafka-brokers",
            "b-1.msk.example.com:9092",
        )?;
        if self.topics.is_empty() || self.topics.iter().any(|t| t.trim().is_empty()) {
            return Err(ConfigError::Missing {
                var: "KAFKA_TOPIC",
                flag: "kafka-topic",
                example: "orders,payments",
            });
        }
        self.kafka_properties()?;
        if self.group_id.trim().is_empty() {
            return Err(ConfigError::Missing {
                var: "KAFKA_GROUP_ID",
                flag: "kafka-group-id",
                example: "kafka-replicator",
            });
        }
        Ok(())
    }
}

impl SourceArgs {
    /// The bootstrap servers; call after [`Validate::validate`].
    pub fn brokers(&self) -> &str {
        self.brokers.as_deref().unwrap_or_default().trim()
    }

    /// The user's librdkafka properties for the source, checked against [`SOURCE_GUARDS`].
    pub fn kafka_properties(&self) -> Result<KafkaProperties, ConfigError> {
        let properties = self.properties.load()?;
        properties.check(SOURCE_GUARDS)?;
        Ok(properties)
    }

    /// The topic names, trimmed.
    pub fn topics(&self) -> Vec<String> {
        self.topics.iter().map(|t| t.trim().to_owned()).collect()
    }
}

/// Bounds of the consumer pod's in-memory buffer.
#[derive(Debug, Clone, Args)]
pub struct BufferArgs {
    /// Most events held in memory, over all partitions.
    #[arg(long, env = "BUFFER_MAX_EVENTS", default_value_t = 100_000)]
    pub buffer_max_events: usize,
    /// Most bytes of events held in memory, over all partitions.
    #[arg(long, env = "BUFFER_MAX_BYTES", default_value_t = 256 * 1024 * 1024)]
    pub buffer_max_bytes: usize,
}

impl Validate for BufferArgs {
    fn validate(&self) -> Result<(), ConfigError> {
        if self.buffer_max_events == 0 {
            return Err(ConfigError::Invalid {
                var: "BUFFER_MAX_EVENTS",
                reason: "must be at least 1".into(),
                example: "100000",
            });
        }
        if self.buffer_max_bytes < 64 * 1024 {
            return Err(ConfigError::Invalid {
                var: "BUFFER_MAX_BYTES",
                reason: "must be at least 65536".into(),
                example: "268435456",
            });
        }
        Ok(())
    }
}

/// Bounds on the consumer pod's own work, so that no number of callers or partitions can
/// make its answers late or unbounded.
#[derive(Debug, Clone, Args)]
pub struct FetchBoundsArgs {
    /// Most fetches (long-polls included) served at once; one more is answered 503 with
    /// Retry-After.
    #[arg(long, env = "MAX_CONCURRENT_FETCHES", default_value_t = DEFAULT_MAX_CONCURRENT_FETCHES, value_parser = clap::value_parser!(u32).range(1..=1_000_000))]
    pub max_concurrent_fetches: u32,
    /// Most reads from the source Kafka (offsets the buffer no longer holds) under way or
    /// waiting at once, over all fetches; a fetch that needs one more answers with what it
    /// has, or 503 with Retry-After when it has nothing.
    #[arg(long, env = "MAX_CATCHUP_READS", default_value_t = DEFAULT_MAX_CATCHUP_READS, value_parser = clap::value_parser!(u32).range(1..=10_000))]
    pub max_catchup_reads: u32,
    /// Milliseconds one fetch spends reading before it answers with what it has, so that a
    /// client far behind on many partitions gets answers, not timeouts, and moves on.
    #[arg(long, env = "FETCH_READ_BUDGET_MS", default_value_t = DEFAULT_FETCH_READ_BUDGET_MS, value_parser = clap::value_parser!(u64).range(100..=20_000))]
    pub fetch_read_budget_ms: u64,
}

/// Default of `MAX_CONCURRENT_FETCHES`.
pub const DEFAULT_MAX_CONCURRENT_FETCHES: u32 = 1024;
/// Default of `MAX_CATCHUP_READS`.
pub const DEFAULT_MAX_CATCHUP_READS: u32 = 32;
/// Default of `FETCH_READ_BUDGET_MS`.
pub const DEFAULT_FETCH_READ_BUDGET_MS: u64 = 5000;

impl Default for FetchBoundsArgs {
    fn default() -> Self {
        Self {
            max_concurrent_fetches: DEFAULT_MAX_CONCURRENT_FETCHES,
            max_catchup_reads: DEFAULT_MAX_CATCHUP_READS,
            fetch_read_budget_ms: DEFAULT_FETCH_READ_BUDGET_MS,
        }
    }
}

/// The consumer pod (`consumer` binary).
#[derive(Debug, Clone, Parser)]
#[command(
    name = "consumer",
    version,
    about = "Consumes the source Kafka into a bounded buffer and serves it to the handlers"
)]
pub struct Config {
    #[command(flatten)]
    pub source: SourceArgs,
    #[command(flatten)]
    pub buffer: BufferArgs,
    #[command(flatten)]
    pub bounds: FetchBoundsArgs,
    /// Where the internal server listens: host:port, or a Unix-socket path. Loopback by
    /// default; a container that the handlers reach over the network sets 0.0.0.0:7070
    /// (the image does) and INTERNAL_TOKEN.
    #[arg(long, env = "CONSUMER_ADDR", default_value = "127.0.0.1:7070")]
    pub consumer_addr: ConsumerAddr,
    /// Shared secret of the internal socket: requests without `Authorization: Bearer` and
    /// it are refused. Set the same on the handlers.
    #[arg(long, env = "INTERNAL_TOKEN", hide_env_values = true)]
    pub internal_token: Option<String>,
}

impl Validate for Config {
    fn validate(&self) -> Result<(), ConfigError> {
        self.source.validate()?;
        self.buffer.validate()?;
        validate_internal_token(self.internal_token.as_deref())
    }
}

impl Default for Config {
    /// What the flags default to, whatever the environment holds.
    fn default() -> Self {
        shared::config::defaults()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn missing_source_names_the_variable() {
        let config =
            Config::try_parse_from(["consumer", "--kafka-topic", "orders"]).expect("parse");
        let err = config.validate().expect_err("no brokers");
        let text = err.to_string();
        assert!(text.starts_with("KAFKA_BROKERS is not set"), "{text}");
        assert!(text.contains("for example KAFKA_BROKERS="), "{text}");
    }
}
