//! The internal protocol between the handlers and the consumer pod: HTTP/1.1 with JSON
//! bodies on `CONSUMER_ADDR` (TCP or a Unix socket), never exposed publicly.

use std::fmt;
use std::path::PathBuf;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

use crate::config::{ConfigError, is_loopback_host, url_host};

/// `POST` a [`crate::api::FetchRequest`], get an [`crate::api::EventsResponse`].
pub const FETCH_PATH: &str = "/internal/v1/fetch";
/// `GET` the pod's [`PodStatus`].
pub const STATUS_PATH: &str = "/internal/v1/status";
/// `GET` the pod's metrics in Prometheus text.
pub const METRICS_PATH: &str = "/internal/v1/metrics";

/// `POST` a [`RateCheck`], get a [`RateDecision`]: the request counts every handler
/// replica shares.
pub const RATE_PATH: &str = "/internal/v1/rate";

/// One request to count against a rate-limit bucket.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RateCheck {
    /// `ip:<address>` or `key:<fingerprint>`; never a key itself.
    pub bucket: String,
    pub limit: u32,
    pub window_secs: u64,
}

/// Whether the request is within its budget, and what the `RateLimit-*` headers say.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct RateDecision {
    pub allowed: bool,
    pub limit: u32,
    pub remaining: u32,
    /// Seconds until the window ends.
    pub reset_secs: u64,
}

/// What the consumer pod says of itself.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PodStatus {
    /// The source answers and partitions are assigned: `/ready` may say yes.
    pub consuming: bool,
    /// Topics the pod carries.
    pub topics: Vec<String>,
    pub assigned_partitions: usize,
    pub buffered_events: usize,
    pub buffered_bytes: usize,
    /// The last Kafka error, if the pod is not consuming.
    pub last_error: Option<String>,
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

impl fmt::Display for ConsumerAddr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Tcp(addr) => f.write_str(addr),
            Self::Unix(path) => write!(f, "unix:{}", path.display()),
        }
    }
}

/// The handlers' `CONSUMER_ADDR`: one or more consumer pods, comma-separated. Any pod
/// serves any cursor. A host name that resolves to several addresses (a Kubernetes
/// headless Service) stands for a pod at each.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConsumerAddrs(Vec<ConsumerAddr>);

impl ConsumerAddrs {
    /// These pods, in this order; `None` when there are none.
    pub fn several(addrs: Vec<ConsumerAddr>) -> Option<Self> {
        (!addrs.is_empty()).then_some(Self(addrs))
    }

    /// The pods in the order listed; never empty.
    pub fn iter(&self) -> impl Iterator<Item = &ConsumerAddr> {
        self.0.iter()
    }

    /// Whether only this host can reach every one of them.
    pub fn is_local(&self) -> bool {
        self.0.iter().all(ConsumerAddr::is_local)
    }
}

impl From<ConsumerAddr> for ConsumerAddrs {
    fn from(addr: ConsumerAddr) -> Self {
        Self(vec![addr])
    }
}

impl FromStr for ConsumerAddrs {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let addrs = s
            .split(',')
            .filter(|part| !part.trim().is_empty())
            .map(str::parse)
            .collect::<Result<Vec<ConsumerAddr>, _>>()?;
        if addrs.is_empty() {
            return Err(format!(
                "expected host:port, a Unix-socket path, or several comma-separated, got {s:?}"
            ));
        }
        Ok(Self(addrs))
    }
}

impl fmt::Display for ConsumerAddrs {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, addr) in self.0.iter().enumerate() {
            if i > 0 {
                f.write_str(",")?;
            }
            write!(f, "{addr}")?;
        }
        Ok(())
    }
}

/// Fewest characters an `INTERNAL_TOKEN` may have (a generated key has 43).
pub const MIN_INTERNAL_TOKEN_LEN: usize = 16;

pub fn validate_internal_token(token: Option<&str>) -> Result<(), ConfigError> {
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
    fn consumer_addrs_list_one_or_several_pods() {
        let one: ConsumerAddrs = "consumer:7070".parse().unwrap();
        assert_eq!(
            one,
            ConsumerAddrs::from(ConsumerAddr::Tcp("consumer:7070".into()))
        );
        let two: ConsumerAddrs = " pod-a:7070, unix:/run/pod.sock ,".parse().unwrap();
        assert_eq!(
            two.iter().cloned().collect::<Vec<_>>(),
            vec![
                ConsumerAddr::Tcp("pod-a:7070".into()),
                ConsumerAddr::Unix("/run/pod.sock".into())
            ]
        );
        assert_eq!(two.to_string(), "pod-a:7070,unix:/run/pod.sock");
        assert!(!two.is_local());
        assert!(" , ".parse::<ConsumerAddrs>().is_err());
        assert!("pod-a:7070,pod-b".parse::<ConsumerAddrs>().is_err());
    }
}
