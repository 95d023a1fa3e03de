//! [`Config`]: the client's configuration (the `client` binary): the server and its key,
//! local Kafka, where copies go, and how the client polls.

use clap::Parser;
use shared::config::{ConfigError, Validate, is_loopback_host, parse_prefix, required, url_host};
use shared::kafka::{Guard, KafkaProperties, KafkaPropertyArgs};

/// Where a client with no saved position starts.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum StartPosition {
    /// The oldest events the source retains: nothing retained is missed.
    Earliest,
    /// Only events produced from now on.
    Latest,
}

/// Whether the client streams (`GET /events/stream`) or long-polls (`GET /events`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum StreamMode {
    /// Stream; long-poll instead where the server or a gateway cannot stream.
    Auto,
    /// Stream only: a server that cannot is an error.
    On,
    /// Long-poll only.
    Off,
}

/// The polling client (`client` binary).
#[derive(Debug, Clone, Parser)]
#[command(
    name = "client",
    version,
    about = "Replicates events from the Kafka Replicator API into a local Kafka"
)]
pub struct Config {
    /// The API's scheme://host:port; the client adds API_PREFIX.
    #[arg(long, env = "SERVER_URL")]
    pub server_url: Option<String>,
    /// The API key.
    #[arg(long = "api-key", env = "API_KEY", hide_env_values = true)]
    pub api_key: Option<String>,
    /// Path prefix of the API's routes.
    #[arg(long, env = "API_PREFIX", default_value = "/api/v1", value_parser = parse_prefix)]
    pub api_prefix: String,
    /// Bootstrap servers of the local Kafka.
    #[arg(long = "kafka-brokers", env = "KAFKA_BROKERS")]
    pub kafka_brokers: Option<String>,
    /// Destination topic for every source topic; default: the source topic's name.
    #[arg(long = "kafka-topic", env = "KAFKA_TOPIC")]
    pub kafka_topic: Option<String>,
    /// Destination = this prefix + the source topic's name (instead of KAFKA_TOPIC).
    #[arg(long = "topic-prefix", env = "TOPIC_PREFIX")]
    pub topic_prefix: Option<String>,
    /// Milliseconds between polls when there is nothing new (also the long-poll wait).
    #[arg(long = "interval", env = "POLL_INTERVAL_MS", default_value_t = 1000, value_parser = clap::value_parser!(u64).range(1..=30_000))]
    pub interval_ms: u64,
    /// Where a client with no saved position starts.
    #[arg(long = "from", env = "START_FROM", value_enum, default_value_t = StartPosition::Earliest)]
    pub from: StartPosition,
    /// Stream the events as they come (one request carries many batches): `auto` falls
    /// back to long-polling where the server or a gateway cannot stream; `on` only
    /// streams; `off` only long-polls.
    #[arg(long = "stream", env = "STREAM", value_enum, default_value_t = StreamMode::Auto)]
    pub stream: StreamMode,
    /// Most events asked for per poll.
    #[arg(long = "batch-limit", env = "BATCH_LIMIT", default_value_t = 1000, value_parser = clap::value_parser!(u32).range(1..=10_000))]
    pub batch_limit: u32,
    /// Ask for compressed answers (zstd or gzip, negotiated): far fewer bytes over a slow
    /// link for some CPU at both ends. `false` only pays on a fast local network.
    #[arg(long, env = "COMPRESSION", default_value_t = true, action = clap::ArgAction::Set)]
    pub compression: bool,
    /// Compacted topic in local Kafka where the client commits its position together with
    /// each batch.
    #[arg(
        long = "state-topic",
        env = "STATE_TOPIC",
        default_value = "kafka-replicator-client-state"
    )]
    pub state_topic: String,
    /// Allow a plain http:// SERVER_URL on a host that is not this machine. The key then
    /// crosses the network in clear: only for a network you trust end to end.
    #[arg(long = "insecure-http", env = "INSECURE_HTTP", default_value_t = false, action = clap::ArgAction::Set, num_args = 0..=1, default_missing_value = "true")]
    pub insecure_http: bool,
    /// This client's identity (its Kafka transactional ids are this and this + `.lane2`):
    /// one per client writing to the same local Kafka. A second client with the same id
    /// takes over from the first.
    #[arg(
        long = "client-id",
        env = "CLIENT_ID",
        default_value = "kafka-replicator-client"
    )]
    pub client_id: String,
    /// Serve Prometheus metrics at http://ADDR/metrics (events, lag per partition, last
    /// commit, state); off unless set. Keep it on loopback unless a scraper elsewhere
    /// needs it.
    #[arg(long = "metrics-addr", env = "METRICS_ADDR", value_name = "ADDR")]
    pub metrics_addr: Option<std::net::SocketAddr>,
    /// librdkafka properties for the local Kafka (TLS, SASL, …).
    #[command(flatten)]
    pub properties: KafkaPropertyArgs,
}

/// What the client sets on its local Kafka clients itself: a user property may not change
/// it.
pub const LOCAL_GUARDS: &[Guard] = &[
    Guard::SetBy {
        key: "transactional.id",
        variable: "CLIENT_ID",
    },
    Guard::Fixed {
        key: "enable.idempotence",
        values: &["true"],
        why: "each batch and its cursor are written in one transaction, which needs it",
    },
    Guard::Fixed {
        key: "acks",
        values: &["all", "-1"],
        why: "a batch counts as written only once every in-sync replica has it",
    },
    Guard::Fixed {
        key: "isolation.level",
        values: &["read_committed"],
        why: "the saved position is read only from committed transactions",
    },
    Guard::Fixed {
        key: "enable.partition.eof",
        values: &["true"],
        why: "the client reads its saved position to the end of the state topic",
    },
    Guard::Unsupported {
        key: "sasl.mechanism",
        value: shared::kafka::oauth::AWS_MSK_IAM,
        why: "MSK IAM (AWS_MSK_IAM) is for the source Kafka in AWS, which the consumer pod reaches; reach local Kafka with TLS, mTLS or SASL/SCRAM",
    },
];

impl Config {
    /// The user's librdkafka properties for local Kafka, checked against [`LOCAL_GUARDS`].
    pub fn kafka_properties(&self) -> Result<KafkaProperties, ConfigError> {
        let properties = self.properties.load()?;
        properties.check(LOCAL_GUARDS)?;
        Ok(properties)
    }

    /// Local Kafka, with the user's properties for it.
    pub fn local_kafka(&self) -> Result<shared::kafka::Cluster, ConfigError> {
        Ok(shared::kafka::Cluster::new(
            self.kafka_brokers.as_deref().unwrap_or_default(),
            self.kafka_properties()?,
        ))
    }

    /// The public API at `SERVER_URL`, with the key.
    pub fn events_api(&self) -> Result<crate::api::EventsApi, reqwest::Error> {
        crate::api::EventsApi::new(
            self.server_url.as_deref().unwrap_or_default(),
            &self.api_prefix,
            self.api_key.as_deref().unwrap_or_default(),
            self.compression,
        )
    }
}

impl Validate for Config {
    fn validate(&self) -> Result<(), ConfigError> {
        required(
            &self.server_url,
            "SERVER_URL",
            "server-url",
            "https://replicator.example.com",
        )?;
        let url = self.server_url.as_deref().unwrap_or_default().trim();
        let Some(rest) = url
            .strip_prefix("https://")
            .or_else(|| url.strip_prefix("http://"))
        else {
            return Err(ConfigError::Invalid {
                var: "SERVER_URL",
                reason: "must start with http:// or https://".into(),
                example: "https://replicator.example.com",
            });
        };
        let host = url_host(rest);
        if host.is_empty() {
            return Err(ConfigError::Invalid {
                var: "SERVER_URL",
                reason: "names no host".into(),
                example: "https://replicator.example.com",
            });
        }
        if url.starts_with("http://") && !is_loopback_host(host) && !self.insecure_http {
            return Err(ConfigError::Invalid {
                var: "SERVER_URL",
                reason: format!(
                    "http:// would send the API key to {host} in clear; use https://, or set INSECURE_HTTP=true (--insecure-http) on a network you trust"
                ),
                example: "https://replicator.example.com",
            });
        }
        required(
            &self.api_key,
            "API_KEY",
            "api-key",
            "<a key from the server's API_KEY>",
        )?;
        required(
            &self.kafka_brokers,
            "KAFKA_BROKERS",
            "kafka-brokers",
            "localhost:9092",
        )?;
        self.kafka_properties()?;
        if self
            .kafka_topic
            .as_deref()
            .is_some_and(|t| t.trim().is_empty())
        {
            return Err(ConfigError::Invalid {
                var: "KAFKA_TOPIC",
                reason: "must not be empty".into(),
                example: "orders",
            });
        }
        if let Some(prefix) = &self.topic_prefix {
            if self.kafka_topic.is_some() {
                return Err(ConfigError::Invalid {
                    var: "TOPIC_PREFIX",
                    reason: "cannot be combined with KAFKA_TOPIC; set one of them".into(),
                    example: "aws.",
                });
            }
            if prefix.is_empty() || !prefix.chars().all(valid_topic_char) {
                return Err(ConfigError::Invalid {
                    var: "TOPIC_PREFIX",
                    reason: "must be non-empty and use only letters, digits, '.', '_' and '-'"
                        .into(),
                    example: "aws.",
                });
            }
        }
        Ok(())
    }
}

/// Characters Kafka allows in a topic name.
fn valid_topic_char(c: char) -> bool {
    c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-')
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
    fn the_default_is_what_the_flags_declare() {
        let config = Config::default();
        assert_eq!(config.server_url, None);
        assert_eq!(config.api_prefix, "/api/v1");
        assert_eq!(config.batch_limit, 1000);
        assert_eq!(config.interval_ms, 1000);
        assert_eq!(config.from, StartPosition::Earliest);
        assert!(config.compression && !config.insecure_http);
        assert_eq!(config.state_topic, "kafka-replicator-client-state");
    }

    #[test]
    fn client_checks_its_url() {
        let config = Config::try_parse_from([
            "client",
            "--server-url",
            "ftp://x",
            "--api-key",
            "k",
            "--kafka-brokers",
            "localhost:9092",
        ])
        .expect("parse");
        assert!(matches!(
            config.validate(),
            Err(ConfigError::Invalid {
                var: "SERVER_URL",
                ..
            })
        ));
    }

    #[test]
    fn client_sends_its_key_in_clear_only_to_this_machine_unless_told() {
        let check = |url: &str, extra: &[&str]| {
            Config::try_parse_from(
                [
                    "client",
                    "--server-url",
                    url,
                    "--api-key",
                    "k",
                    "--kafka-brokers",
                    "localhost:9092",
                ]
                .iter()
                .chain(extra),
            )
            .expect("parse")
            .validate()
        };
        for local in [
            "http://127.0.0.1:3000",
            "http://localhost:3000/",
            "http://[::1]:3000",
            "http://127.5.6.7",
            "https://replicator.example.com",
            "https://10.0.0.7:8443/base",
        ] {
            assert_eq!(check(local, &[]), Ok(()), "{local}");
        }
        for remote in [
            "http://replicator.example.com",
            "http://10.0.0.7:3000",
            "http://[2001:db8::1]:3000",
            "http://localhost@evil.example.com/",
            "http://127.0.0.1.evil.example.com",
        ] {
            let err = check(remote, &[]).expect_err(remote);
            assert!(
                err.to_string()
                    .starts_with("SERVER_URL is invalid: http:// would send the API key"),
                "{remote}: {err}"
            );
            assert_eq!(check(remote, &["--insecure-http"]), Ok(()), "{remote}");
            assert_eq!(
                check(remote, &["--insecure-http", "true"]),
                Ok(()),
                "{remote}"
            );
        }
        assert!(check("http://", &[]).is_err(), "no host");
    }

    #[test]
    fn msk_iam_for_local_kafka_is_refused_with_what_to_use() {
        let config = Config::try_parse_from([
            "client",
            "--kafka-property",
            "security.protocol=SASL_SSL",
            "--kafka-property",
            "sasl.mechanism=AWS_MSK_IAM",
        ])
        .expect("parse");
        let err = config.kafka_properties().expect_err("refused").to_string();
        assert!(err.starts_with("--kafka-property is invalid"), "{err}");
        assert!(
            err.contains("MSK IAM (AWS_MSK_IAM) is for the source Kafka"),
            "{err}"
        );
        assert!(err.contains("TLS, mTLS or SASL/SCRAM"), "{err}");
    }

    fn client_with(extra: &[&str]) -> Result<(), ConfigError> {
        let base = [
            "client",
            "--server-url",
            "http://localhost",
            "--api-key",
            "k",
            "--kafka-brokers",
            "localhost:9092",
        ];
        Config::try_parse_from(base.iter().chain(extra))
            .expect("parse")
            .validate()
    }

    #[test]
    fn client_destination_is_a_topic_or_a_prefix() {
        assert!(client_with(&["--kafka-topic", "copy"]).is_ok());
        assert!(client_with(&["--topic-prefix", "aws."]).is_ok());
        let invalid = |r: Result<(), ConfigError>| match r {
            Err(ConfigError::Invalid { var, .. }) => var,
            other => panic!("expected a refusal, got {other:?}"),
        };
        assert_eq!(
            invalid(client_with(&[
                "--kafka-topic",
                "copy",
                "--topic-prefix",
                "aws."
            ])),
            "TOPIC_PREFIX"
        );
        assert_eq!(
            invalid(client_with(&["--topic-prefix", "a/b"])),
            "TOPIC_PREFIX"
        );
        assert_eq!(
            invalid(client_with(&["--topic-prefix", ""])),
            "TOPIC_PREFIX"
        );
        assert_eq!(invalid(client_with(&["--kafka-topic", " "])), "KAFKA_TOPIC");
    }
}
