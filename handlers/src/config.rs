//! [`Config`]: the public API's configuration (`handlers-server` and `handlers-lambda`):
//! keys, prefix, the consumer pod's socket, CORS, rate limits and TLS.

use std::path::PathBuf;

use crate::api_keys::{ApiKeys, ApiKeysError};
use clap::{Args, Parser};
pub use ipnet::IpNet;
use shared::config::{ConfigError, Validate, parse_prefix};
use shared::internal::{ConsumerAddrs, validate_internal_token};

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

/// The public API (`handlers-server` and `handlers-lambda`).
#[derive(Debug, Clone, Parser)]
#[command(
    name = "handlers",
    version,
    about = "The public Kafka Replicator API",
    after_help = "Run `handlers-server generate-api-key` to print a new random 256-bit API key."
)]
pub struct Config {
    #[command(flatten)]
    pub keys: KeyArgs,
    /// Path prefix of every route.
    #[arg(long, env = "API_PREFIX", default_value = "/api/v1", value_parser = parse_prefix)]
    pub api_prefix: String,
    /// Where the consumer pods' internal servers answer: host:port or a Unix-socket path,
    /// or several comma-separated. A host name with several addresses (a headless
    /// Service) stands for a pod at each.
    #[arg(long, env = "CONSUMER_ADDR", default_value = "127.0.0.1:7070")]
    pub consumer_addr: ConsumerAddrs,
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
    /// Seconds a `GET /events/stream` answer lasts before it ends cleanly (the client
    /// reconnects where it stands), so connections recycle through load balancers.
    #[arg(long = "stream-max-secs", env = "STREAM_MAX_SECS", default_value_t = DEFAULT_STREAM_MAX_SECS, value_parser = clap::value_parser!(u64).range(1..=3600))]
    pub stream_max_secs: u64,
    /// How the AWS Lambda runtime returns answers: BUFFERED (API Gateway, an ALB: whole
    /// answers, so `/events/stream` is refused and clients long-poll) or RESPONSE_STREAM (a
    /// function URL in response-streaming mode). Only `handlers-lambda` reads it.
    #[arg(long = "lambda-invoke-mode", env = "LAMBDA_INVOKE_MODE", value_enum, default_value_t = LambdaInvokeMode::Buffered)]
    pub lambda_invoke_mode: LambdaInvokeMode,
}

/// How `handlers-lambda` answers (the Lambda function URL's `InvokeMode`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
#[value(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum LambdaInvokeMode {
    /// Whole answers: API Gateway, an ALB, a buffered function URL.
    Buffered,
    /// Answers streamed as they are written: a function URL with `InvokeMode:
    /// RESPONSE_STREAM`.
    ResponseStream,
}

impl Validate for Config {
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
    /// A file holding the keys (instead of API_KEY), in any form a secret takes, such as
    /// {"api_keys":[{"name":"laptop-7","key":"…","topics":["orders"]}]}: a named key
    /// labels its metrics, and one with topics reads only those. Re-read as a secret is.
    #[arg(long = "api-keys-file", env = "API_KEYS_FILE")]
    pub api_keys_file: Option<PathBuf>,
    /// Seconds between re-reads of the secret or the file, so a rotated key works without
    /// a restart.
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
        let given: Vec<&'static str> = [
            self.api_key.as_ref().map(|_| "API_KEY"),
            self.api_key_secret_id.as_ref().map(|_| "API_KEY_SECRET_ID"),
            self.api_keys_file.as_ref().map(|_| "API_KEYS_FILE"),
        ]
        .into_iter()
        .flatten()
        .collect();
        if let [first, second, ..] = given.as_slice() {
            return Err(ConfigError::Invalid {
                var: second,
                reason: format!("cannot be combined with {first}; set one of them"),
                example: "kafka-replicator/api-keys",
            });
        }
        match (&self.api_key, &self.api_key_secret_id, &self.api_keys_file) {
            (None, Some(id), None) if id.trim().is_empty() => Err(ConfigError::Invalid {
                var: "API_KEY_SECRET_ID",
                reason: "must not be empty".into(),
                example: "kafka-replicator/api-keys",
            }),
            (None, None, Some(path)) if path.as_os_str().is_empty() => Err(ConfigError::Invalid {
                var: "API_KEYS_FILE",
                reason: "must not be empty".into(),
                example: "/etc/kafka-replicator/api-keys.json",
            }),
            (None, Some(_), None) | (None, None, Some(_)) => Ok(()),
            (key, _, _) => api_keys("API_KEY", key.as_deref()).map(drop),
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

/// How long a `/events/stream` answer lasts by default (`STREAM_MAX_SECS`).
pub const DEFAULT_STREAM_MAX_SECS: u64 = 300;

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
    /// Redis holding the counts for every handler replica (`redis://host:6379`, or
    /// `rediss://` for TLS); unset: the consumer pod holds them. Redis not answering: each
    /// replica counts on its own meanwhile.
    #[arg(
        long = "rate-limit-redis-url",
        env = "RATE_LIMIT_REDIS_URL",
        hide_env_values = true
    )]
    pub rate_limit_redis_url: Option<String>,
}

impl Default for RateLimitArgs {
    fn default() -> Self {
        Self {
            rate_limit_max: DEFAULT_RATE_LIMIT_MAX,
            rate_limit_key_max: DEFAULT_RATE_LIMIT_KEY_MAX,
            rate_limit_window_secs: DEFAULT_RATE_LIMIT_WINDOW_SECS,
            trusted_proxies: Vec::new(),
            rate_limit_redis_url: None,
        }
    }
}

impl RateLimitArgs {
    /// `RATE_LIMIT_REDIS_URL`, when set to something (empty, as a `.env` line without a
    /// value gives it, is unset).
    pub fn redis_url(&self) -> Option<&str> {
        self.rate_limit_redis_url
            .as_deref()
            .map(str::trim)
            .filter(|url| !url.is_empty())
    }
}

impl Validate for RateLimitArgs {
    fn validate(&self) -> Result<(), ConfigError> {
        match self.redis_url() {
            Some(url) => crate::redis_limits::RedisLimits::new(url)
                .map(drop)
                .map_err(|err| ConfigError::Invalid {
                    var: "RATE_LIMIT_REDIS_URL",
                    reason: err.reason().to_owned(),
                    example: "redis://redis.kafka-replicator:6379",
                }),
            None => Ok(()),
        }
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
    fn handler_keys_are_checked() {
        let config = Config::try_parse_from(["handlers", "--api-key", "short"]).expect("parse");
        assert!(matches!(
            config.validate(),
            Err(ConfigError::Invalid { var: "API_KEY", .. })
        ));
        let both = Config::try_parse_from([
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
        let secret =
            Config::try_parse_from(["handlers", "--api-key-secret-id", "keys"]).expect("parse");
        assert_eq!(secret.validate(), Ok(()));
        let file_and_secret = Config::try_parse_from([
            "handlers",
            "--api-key-secret-id",
            "keys",
            "--api-keys-file",
            "/etc/keys.json",
        ])
        .expect("parse");
        assert!(matches!(
            file_and_secret.validate(),
            Err(ConfigError::Invalid {
                var: "API_KEYS_FILE",
                ..
            })
        ));
        let file = Config::try_parse_from(["handlers", "--api-keys-file", "/etc/keys.json"])
            .expect("parse");
        assert_eq!(file.validate(), Ok(()));
    }

    #[test]
    fn a_redis_url_is_checked_and_an_empty_one_is_unset() {
        let parse = |url: &str| {
            Config::try_parse_from([
                "handlers",
                "--api-key",
                "0123456789abcdef0123",
                "--rate-limit-redis-url",
                url,
            ])
            .expect("parse")
        };
        assert_eq!(parse("redis://cache:6379").validate(), Ok(()));
        assert_eq!(
            parse("redis://cache:6379").limits.redis_url(),
            Some("redis://cache:6379")
        );
        assert_eq!(parse(" ").validate(), Ok(()));
        assert_eq!(parse(" ").limits.redis_url(), None);
        let bad = parse("https://user:hunter2@cache:6379")
            .validate()
            .unwrap_err();
        assert!(matches!(
            bad,
            ConfigError::Invalid {
                var: "RATE_LIMIT_REDIS_URL",
                ..
            }
        ));
        assert!(!bad.to_string().contains("hunter2"), "{bad}");
    }

    #[test]
    fn handler_origins_proxies_and_tls_are_checked() {
        let parse = |extra: &[&str]| {
            Config::try_parse_from(
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
