//! Metrics rendering: each component registers its metrics (with prometheus's
//! `register_*_with_registry!` macros) in a [`prometheus::Registry`] of its own, so one
//! process can run several components without clashes, and renders it as Prometheus text.

use prometheus::{Encoder, Registry, TextEncoder};

/// The registry's metrics in the Prometheus text format.
pub fn render(registry: &Registry) -> String {
    let mut buf = Vec::new();
    // Encoding into a Vec cannot fail on I/O; a family with a bad name would have been
    // refused when it was registered.
    if let Err(err) = TextEncoder::new().encode(&registry.gather(), &mut buf) {
        tracing::error!(error = %err, "could not encode metrics");
    }
    String::from_utf8(buf).unwrap_or_default()
}
