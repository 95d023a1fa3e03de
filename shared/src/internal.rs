//! The internal protocol between the handlers and the consumer pod: HTTP/1.1 with JSON
//! bodies on `CONSUMER_ADDR` (TCP or a Unix socket), never exposed publicly.

use serde::{Deserialize, Serialize};

/// `POST` a [`crate::api::FetchRequest`], get an [`crate::api::EventsResponse`].
pub const FETCH_PATH: &str = "/internal/v1/fetch";
/// `GET` the pod's [`PodStatus`].
pub const STATUS_PATH: &str = "/internal/v1/status";
/// `GET` the pod's metrics in Prometheus text.
pub const METRICS_PATH: &str = "/internal/v1/metrics";

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
