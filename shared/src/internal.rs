//! The internal protocol between the handlers and the consumer pod: HTTP/1.1 with JSON
//! bodies on `CONSUMER_ADDR` (TCP or a Unix socket), never exposed publicly.

use serde::{Deserialize, Serialize};

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
