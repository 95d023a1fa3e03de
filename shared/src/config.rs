//! Typed configuration of each component: clap derive with `env = "…"` on every flag, so
//! flags, environment and `.env` agree. [`load`] reads `.env`, parses, validates, and on a
//! bad value exits with one line naming the variable and an example.

use std::fmt;
use std::path::PathBuf;
use std::str::FromStr;

use clap::{Args, Parser};
pub use ipnet::IpNet;

use crate::auth::{ApiKeys, ApiKeysError};

/// A configuration value that is missing or wrong, said the way an operator fixes it.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ConfigError {
    #[error("{var} is not set (flag --{flag}); for example {var}={example}")]
    Missing {
        var: &'static str,
        flag: &'static str,
        example: &'static str,
    },
    #[error("{var} is invalid: {reason}; for example {var}={example}")]
    Invalid {
        var: &'static str,
        reason: String,
        example: &'static str,
    },
}

/// A configuration struct that can check itself after parsing.
pub trait Validate {
    fn validate(&self) -> Result<(), ConfigError>;
}

/// Reads `.env` (if any), parses flags and environment, validates; on failure prints one
/// line and exits with status 2.
pub fn load<T: Parser + Validate>() -> T {
    let _ = dotenvy::dotenv();
    let config = match T::try_parse() {
        Ok(config) => config,
        Err(err) if !err.use_stderr() => err.exit(),
        Err(err) => {
            let text = err.render().to_string();
            let line = text
                .lines()
                .next()
                .unwrap_or("invalid configuration")
                .trim_start_matches("error: ");
            eprintln!("error: {line}");
            std::process::exit(2);
        }
    };
    if let Err(err) = config.validate() {
        eprintln!("error: {err}");
        std::process::exit(2);
    }
    config
}

/// Where the consumer pod's internal server listens, and where handlers reach it: a TCP
/// `host:port`, or a Unix-socket path (anything with a `/`, or prefixed `unix:`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ConsumerAddr {
    Tcp(String),
    Unix(PathBuf),
}

impl FromStr for ConsumerAddr {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let s = s.trim();
        if let Some(path) = s.strip_prefix("unix:") {
            return Ok(Self::Unix(PathBuf::from(path)));
        }
        if s.contains('/') {
            return Ok(Self::Unix(PathBuf::from(s)));
        }
        match s.rsplit_once(':') {
            Some((host, port)) if !host.is_empty() && port.parse::<u16>().is_ok() => {
                Ok(Self::Tcp(s.to_owned()))
            }
            _ => Err(format!(
                "expected host:port or a Unix-socket path, got {s:?}"
            )),
        }
    }
}

impl ConsumerAddr {
    /// Whether only this host can reach it: a Unix socket, or a loopback address.
    pub fn is_local(&self) -> bool {
        match self {
            Self::Unix(_) => true,
            Self::Tcp(host_port) => is_loopback_host(url_host(host_port)),
        }
    }
}

/// `localhost`, or an address in 127.0.0.0/8 or `::1` (brackets allowed).
pub fn is_loopback_host(host: &str) -> bool {
    let host = host.trim_start_matches('[').trim_end_matches(']');
    host.eq_ignore_ascii_case("localhost")
        || host
            .parse::<std::net::IpAddr>()
            .is_ok_and(|ip| ip.is_loopback())
}

impl fmt::Display for ConsumerAddr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Tcp(addr) => f.write_str(addr),
            Self::Unix(path) => write!(f, "unix:{}", path.display()),
        }
    }
}

/// `API_PREFIX`: a path starting with `/`, no trailing `/` (empty for none).
fn parse_prefix(s: &str) -> Result<String, String> {
    let trimmed = s.trim().trim_end_matches('/');
    if trimmed.is_empty() {
        return Ok(String::new());
    }
    if !trimmed.starts_with('/') || trimmed.contains(['?', '#', ' ']) {
        return Err(format!("expected a path such as /api/v1, got {s:?}"));
    }
    Ok(trimmed.to_owned())
}

fn api_keys(var: &'static str, value: Option<&str>) -> Result<ApiKeys, ConfigError> {
    const EXAMPLE: &str = "$(handlers-server generate-api-key)";
    let value = value.ok_or(ConfigError::Missing {
        var,
        flag: "api-key",
        example: EXAMPLE,
    })?;
    ApiKeys::parse(value).map_err(|err: ApiKeysError| ConfigError::Invalid {
        var,
        reason: err.to_string(),
        example: EXAMPLE,
    })
}

fn required(
    value: &Option<String>,
    var: &'static str,
    flag: &'static str,
    example: &'static str,
) -> Result<(), ConfigError> {
    match value.as_deref().map(str::trim) {
        Some(v) if !v.is_empty() => Ok(()),
        _ => Err(ConfigError::Missing { var, flag, example }),
    }
}

/// The source Kafka the consumer pod reads.
#[derive(Debug, Clone, Args)]
pub struct SourceArgs {
    /// Bootstrap servers of the source Kafka (comma-separated host:port).
    #[arg(long = "kafka-brokers", env = "KAFKA_BROKERS")]
    pub brokers: Option<String>,
    /// Source topics (comma-separated).
    #[arg(long = "kafka-topic", env = "KAFKA_TOPIC", value_delimiter = ',')]
    pub topics: Vec<String>,
    /// Consumer group of the pod.
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
}

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
pub struct ConsumerConfig {
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

impl Validate for ConsumerConfig {
    fn validate(&self) -> Result<(), ConfigError> {
        self.source.validate()?;
        self.buffer.validate()?;
        validate_internal_token(self.internal_token.as_deref())
    }
}

/// Fewest characters an `INTERNAL_TOKEN` may have (a generated key has 43).
pub const MIN_INTERNAL_TOKEN_LEN: usize = 16;

fn validate_internal_token(token: Option<&str>) -> Result<(), ConfigError> {
    match token {
        Some(t) if t.trim().len() < MIN_INTERNAL_TOKEN_LEN || t.trim() != t => {
            Err(ConfigError::Invalid {
                var: "INTERNAL_TOKEN",
                reason: format!(
                    "must be at least {MIN_INTERNAL_TOKEN_LEN} characters without surrounding spaces"
                ),
                example: "$(handlers-server generate-api-key)",
            })
        }
        _ => Ok(()),
    }
}

/// The public API (`handlers-server` and `handlers-lambda`).
#[derive(Debug, Clone, Parser)]
#[command(
    name = "handlers",
    version,
    about = "The public Kafka Replicator API",
    after_help = "Run `handlers-server generate-api-key` to print a new random 256-bit API key."
)]
pub struct HandlersConfig {
    #[command(flatten)]
    pub keys: KeyArgs,
    /// Path prefix of every route.
    #[arg(long, env = "API_PREFIX", default_value = "/api/v1", value_parser = parse_prefix)]
    pub api_prefix: String,
    /// Where the consumer pod's internal server answers: host:port or a Unix-socket path.
    #[arg(long, env = "CONSUMER_ADDR", default_value = "127.0.0.1:7070")]
    pub consumer_addr: ConsumerAddr,
    /// The consumer pod's INTERNAL_TOKEN, sent with every request to it.
    #[arg(long, env = "INTERNAL_TOKEN", hide_env_values = true)]
    pub internal_token: Option<String>,
    /// Port of the container server.
    #[arg(long, env = "PORT", default_value_t = 3000)]
    pub port: u16,
    /// Address the container server binds.
    #[arg(long, env = "HOST", default_value = "0.0.0.0")]
    pub host: String,
    #[command(flatten)]
    pub cors: CorsArgs,
    #[command(flatten)]
    pub limits: RateLimitArgs,
    #[command(flatten)]
    pub tls: TlsArgs,
}

impl Validate for HandlersConfig {
    fn validate(&self) -> Result<(), ConfigError> {
        self.keys.validate()?;
        self.cors.validate()?;
        self.limits.validate()?;
        self.tls.validate()?;
        validate_internal_token(self.internal_token.as_deref())
    }
}

/// Where the accepted API keys come from: `API_KEY`, or an AWS Secrets Manager secret.
#[derive(Debug, Clone, Default, Args)]
pub struct KeyArgs {
    /// Accepted API keys (comma-separated, several during a rotation).
    #[arg(long = "api-key", env = "API_KEY", hide_env_values = true)]
    pub api_key: Option<String>,
    /// AWS Secrets Manager secret holding the keys (instead of API_KEY): a bare key, or
    /// JSON {"api_key":"…"} or {"api_keys":["…","…"]}.
    #[arg(long = "api-key-secret-id", env = "API_KEY_SECRET_ID")]
    pub api_key_secret_id: Option<String>,
    /// Seconds between re-reads of the secret, so a rotated key works without a restart.
    #[arg(long = "api-key-refresh-secs", env = "API_KEY_REFRESH_SECS", default_value_t = DEFAULT_KEY_REFRESH_SECS, value_parser = clap::value_parser!(u64).range(1..=86_400))]
    pub api_key_refresh_secs: u64,
}

/// Default of `API_KEY_REFRESH_SECS`.
pub const DEFAULT_KEY_REFRESH_SECS: u64 = 300;

impl KeyArgs {
    /// Keys given directly in `API_KEY`, if that is where they come from.
    pub fn static_keys(&self) -> Option<Result<ApiKeys, ConfigError>> {
        self.api_key
            .as_deref()
            .map(|value| api_keys("API_KEY", Some(value)))
    }
}

impl Validate for KeyArgs {
    fn validate(&self) -> Result<(), ConfigError> {
        match (&self.api_key, &self.api_key_secret_id) {
            (Some(_), Some(_)) => Err(ConfigError::Invalid {
                var: "API_KEY_SECRET_ID",
                reason: "cannot be combined with API_KEY; set one of them".into(),
                example: "kafka-replicator/api-keys",
            }),
            (None, Some(id)) if id.trim().is_empty() => Err(ConfigError::Invalid {
                var: "API_KEY_SECRET_ID",
                reason: "must not be empty".into(),
                example: "kafka-replicator/api-keys",
            }),
            (None, Some(_)) => Ok(()),
            (key, None) => api_keys("API_KEY", key.as_deref()).map(drop),
        }
    }
}

/// Which browser origins may call the API (CORS).
#[derive(Debug, Clone, Default, Args)]
pub struct CorsArgs {
    /// Origins allowed to call the API from a browser, comma-separated
    /// (scheme://host[:port]); `*` allows any. Unset: no cross-origin access.
    #[arg(
        long = "allowed-origins",
        env = "ALLOWED_ORIGINS",
        value_delimiter = ','
    )]
    pub allowed_origins: Vec<String>,
}

impl Validate for CorsArgs {
    fn validate(&self) -> Result<(), ConfigError> {
        for origin in &self.allowed_origins {
            let origin = origin.trim();
            if origin == "*" {
                continue;
            }
            let valid = origin.split_once("://").is_some_and(|(scheme, host)| {
                matches!(scheme, "http" | "https")
                    && !host.is_empty()
                    && !host.contains(['/', '?', '#', ' ', '*'])
            });
            if !valid {
                return Err(ConfigError::Invalid {
                    var: "ALLOWED_ORIGINS",
                    reason: format!("{origin:?} is not an origin (scheme://host[:port], no path)"),
                    example: "https://app.example.com,http://localhost:8080",
                });
            }
        }
        Ok(())
    }
}

/// Default of `RATE_LIMIT_MAX`: requests per window per client IP without a valid key.
pub const DEFAULT_RATE_LIMIT_MAX: u32 = 100;
/// Default of `RATE_LIMIT_KEY_MAX`: requests per window per API key (20 per second on
/// average over the default window).
pub const DEFAULT_RATE_LIMIT_KEY_MAX: u32 = 18_000;
/// Default of `RATE_LIMIT_WINDOW_SECS`.
pub const DEFAULT_RATE_LIMIT_WINDOW_SECS: u64 = 900;

/// The two request budgets, held in the consumer pod for every handler replica.
#[derive(Debug, Clone, Args)]
pub struct RateLimitArgs {
    /// Requests per window per client IP without a valid key (0: no limit).
    #[arg(long = "rate-limit-max", env = "RATE_LIMIT_MAX", default_value_t = DEFAULT_RATE_LIMIT_MAX)]
    pub rate_limit_max: u32,
    /// Requests per window per API key (0: no limit).
    #[arg(long = "rate-limit-key-max", env = "RATE_LIMIT_KEY_MAX", default_value_t = DEFAULT_RATE_LIMIT_KEY_MAX)]
    pub rate_limit_key_max: u32,
    /// Length of the rate-limit window in seconds.
    #[arg(long = "rate-limit-window-secs", env = "RATE_LIMIT_WINDOW_SECS", default_value_t = DEFAULT_RATE_LIMIT_WINDOW_SECS, value_parser = clap::value_parser!(u64).range(1..=86_400))]
    pub rate_limit_window_secs: u64,
    /// Proxies (IP addresses or CIDR ranges, comma-separated) whose X-Forwarded-For is
    /// believed when finding the client IP; unset: the peer address is the client.
    #[arg(long = "trusted-proxies", env = "TRUSTED_PROXIES", value_delimiter = ',', value_parser = parse_ip_net)]
    pub trusted_proxies: Vec<IpNet>,
}

impl Default for RateLimitArgs {
    fn default() -> Self {
        Self {
            rate_limit_max: DEFAULT_RATE_LIMIT_MAX,
            rate_limit_key_max: DEFAULT_RATE_LIMIT_KEY_MAX,
            rate_limit_window_secs: DEFAULT_RATE_LIMIT_WINDOW_SECS,
            trusted_proxies: Vec::new(),
        }
    }
}

impl Validate for RateLimitArgs {
    fn validate(&self) -> Result<(), ConfigError> {
        Ok(())
    }
}

/// `TRUSTED_PROXIES` entries: a CIDR range, or a single address.
fn parse_ip_net(s: &str) -> Result<IpNet, String> {
    let s = s.trim();
    s.parse::<IpNet>()
        .or_else(|_| s.parse::<std::net::IpAddr>().map(IpNet::from))
        .map_err(|_| format!("expected an IP address or CIDR range such as 10.0.0.0/8, got {s:?}"))
}

/// HTTPS for the container server (Istio terminates TLS in the mesh; a standalone
/// container needs it itself).
#[derive(Debug, Clone, Default, Args)]
pub struct TlsArgs {
    /// PEM certificate chain; with TLS_KEY the server speaks HTTPS only.
    #[arg(long = "tls-cert", env = "TLS_CERT")]
    pub tls_cert: Option<PathBuf>,
    /// PEM private key for TLS_CERT.
    #[arg(long = "tls-key", env = "TLS_KEY")]
    pub tls_key: Option<PathBuf>,
}

impl TlsArgs {
    /// Certificate and key paths, when HTTPS is on.
    pub fn paths(&self) -> Option<(&std::path::Path, &std::path::Path)> {
        Some((self.tls_cert.as_deref()?, self.tls_key.as_deref()?))
    }
}

impl Validate for TlsArgs {
    fn validate(&self) -> Result<(), ConfigError> {
        let (var, path) = match (&self.tls_cert, &self.tls_key) {
            (None, None) => return Ok(()),
            (Some(_), None) => {
                return Err(ConfigError::Missing {
                    var: "TLS_KEY",
                    flag: "tls-key",
                    example: "/etc/tls/tls.key",
                });
            }
            (None, Some(_)) => {
                return Err(ConfigError::Missing {
                    var: "TLS_CERT",
                    flag: "tls-cert",
                    example: "/etc/tls/tls.crt",
                });
            }
            (Some(cert), Some(key)) => {
                if !cert.is_file() {
                    ("TLS_CERT", cert)
                } else if !key.is_file() {
                    ("TLS_KEY", key)
                } else {
                    return Ok(());
                }
            }
        };
        Err(ConfigError::Invalid {
            var,
            reason: format!("{} is not a readable file", path.display()),
            example: "/etc/tls/tls.crt",
        })
    }
}

/// Where a client with no saved position starts.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum StartPosition {
    /// The oldest events the source retains: nothing retained is missed.
    Earliest,
    /// Only events produced from now on.
    Latest,
}

/// The polling client (`client` binary).
#[derive(Debug, Clone, Parser)]
#[command(
    name = "client",
    version,
    about = "Replicates events from the Kafka Replicator API into a local Kafka"
)]
pub struct ClientConfig {
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
}

impl Validate for ClientConfig {
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

/// The host of a URL after its `scheme://`: without user info, port, path, query or
/// fragment (an IPv6 address keeps its brackets).
fn url_host(rest: &str) -> &str {
    let authority = rest.split(['/', '?', '#']).next().unwrap_or_default();
    let host_port = authority.rsplit_once('@').map_or(authority, |(_, h)| h);
    if host_port.starts_with('[') {
        return host_port
            .find(']')
            .map_or(host_port, |end| &host_port[..=end]);
    }
    host_port
        .rsplit_once(':')
        .map_or(host_port, |(host, _)| host)
}

/// Characters Kafka allows in a topic name.
fn valid_topic_char(c: char) -> bool {
    c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-')
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn consumer_addr_forms() {
        assert_eq!(
            "consumer:7070".parse(),
            Ok(ConsumerAddr::Tcp("consumer:7070".into()))
        );
        assert_eq!(
            "/run/pod.sock".parse(),
            Ok(ConsumerAddr::Unix("/run/pod.sock".into()))
        );
        assert_eq!(
            "unix:pod.sock".parse(),
            Ok(ConsumerAddr::Unix("pod.sock".into()))
        );
        assert!("consumer".parse::<ConsumerAddr>().is_err());
        assert!("consumer:http".parse::<ConsumerAddr>().is_err());
    }

    #[test]
    fn prefixes() {
        assert_eq!(parse_prefix("/api/v1/"), Ok("/api/v1".into()));
        assert_eq!(parse_prefix(""), Ok(String::new()));
        assert!(parse_prefix("api").is_err());
    }

    #[test]
    fn missing_source_names_the_variable() {
        let config =
            ConsumerConfig::try_parse_from(["consumer", "--kafka-topic", "orders"]).expect("parse");
        let err = config.validate().expect_err("no brokers");
        let text = err.to_string();
        assert!(text.starts_with("KAFKA_BROKERS is not set"), "{text}");
        assert!(text.contains("for example KAFKA_BROKERS="), "{text}");
    }

    #[test]
    fn client_checks_its_url() {
        let config = ClientConfig::try_parse_from([
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
            ClientConfig::try_parse_from(
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
        ClientConfig::try_parse_from(base.iter().chain(extra))
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

    #[test]
    fn handler_keys_are_checked() {
        let config =
            HandlersConfig::try_parse_from(["handlers", "--api-key", "short"]).expect("parse");
        assert!(matches!(
            config.validate(),
            Err(ConfigError::Invalid { var: "API_KEY", .. })
        ));
        let both = HandlersConfig::try_parse_from([
            "handlers",
            "--api-key",
            "0123456789abcdef0123",
            "--api-key-secret-id",
            "keys",
        ])
        .expect("parse");
        assert!(matches!(
            both.validate(),
            Err(ConfigError::Invalid {
                var: "API_KEY_SECRET_ID",
                ..
            })
        ));
        let secret = HandlersConfig::try_parse_from(["handlers", "--api-key-secret-id", "keys"])
            .expect("parse");
        assert_eq!(secret.validate(), Ok(()));
    }

    #[test]
    fn handler_origins_proxies_and_tls_are_checked() {
        let parse = |extra: &[&str]| {
            HandlersConfig::try_parse_from(
                ["handlers", "--api-key", "0123456789abcdef0123"]
                    .iter()
                    .chain(extra),
            )
        };
        let ok = parse(&[
            "--allowed-origins",
            "https://app.example.com,http://localhost:8080",
            "--trusted-proxies",
            "10.0.0.0/8,192.168.1.7",
        ])
        .expect("parse");
        assert_eq!(ok.validate(), Ok(()));
        assert_eq!(ok.limits.trusted_proxies.len(), 2);
        assert!(parse(&["--trusted-proxies", "not-an-ip"]).is_err());
        let bad_origin =
            parse(&["--allowed-origins", "https://app.example.com/path"]).expect("parse");
        assert!(matches!(
            bad_origin.validate(),
            Err(ConfigError::Invalid {
                var: "ALLOWED_ORIGINS",
                ..
            })
        ));
        let half_tls = parse(&["--tls-cert", "/nonexistent.crt"]).expect("parse");
        assert!(matches!(
            half_tls.validate(),
            Err(ConfigError::Missing { var: "TLS_KEY", .. })
        ));
    }
}
