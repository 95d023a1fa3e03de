//! The handlers' metrics, in their own registry: `api_requests_total` by route, method and
//! status, and request latency. `/metrics` appends the consumer pod's metrics to these.

use prometheus::{HistogramVec, IntCounterVec, Registry};

/// Every metric the handlers emit.
#[derive(Debug, Clone)]
pub struct HandlerMetrics {
    pub registry: Registry,
    /// `api_requests_total{route,method,status}`.
    pub requests: IntCounterVec,
    /// `api_request_duration_seconds{route}`.
    pub duration: HistogramVec,
    /// `api_auth_failures_total{reason}`.
    pub auth_failures: IntCounterVec,
    /// `api_rate_limited_total{kind}`: requests refused with 429, by budget (`ip`, `key`).
    pub rate_limited: IntCounterVec,
}

/// Every metric name is fixed here, once per registry: a clash is a bug.
const UNIQUE: &str = "metric names are unique within a component";

impl HandlerMetrics {
    pub fn new() -> Self {
        let registry = Registry::new();
        let metrics = Self {
            requests: prometheus::register_int_counter_vec_with_registry!(
                "api_requests_total",
                "Public API requests answered",
                &["route", "method", "status"],
                registry
            )
            .expect(UNIQUE),
            duration: prometheus::register_histogram_vec_with_registry!(
                "api_request_duration_seconds",
                "Public API request latency",
                &["route"],
                vec![
                    0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0,
                ],
                registry
            )
            .expect(UNIQUE),
            auth_failures: prometheus::register_int_counter_vec_with_registry!(
                "api_auth_failures_total",
                "Requests refused for a missing or wrong API key",
                &["reason"],
                registry
            )
            .expect(UNIQUE),
            rate_limited: prometheus::register_int_counter_vec_with_registry!(
                "api_rate_limited_total",
                "Requests refused with 429 for exceeding a rate-limit budget",
                &["kind"],
                registry
            )
            .expect(UNIQUE),
            registry,
        };
        // Exported at zero from the start, so dashboards and alerts see the series.
        for reason in ["missing", "invalid"] {
            metrics.auth_failures.with_label_values(&[reason]);
        }
        for kind in ["ip", "key"] {
            metrics.rate_limited.with_label_values(&[kind]);
        }
        metrics
    }
}

impl Default for HandlerMetrics {
    fn default() -> Self {
        Self::new()
    }
}
