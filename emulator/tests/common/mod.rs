//! Shared set-up of the emulator's integration tests: which Kafka to run on, unique names,
//! a stack with sensible test settings, and helpers to call the API.

#![allow(dead_code, unreachable_pub)]

use std::time::Duration;

use emulator::{Stack, StackConfig};
use rand::Rng;

/// Source and local bootstrap servers of real Kafka brokers, when the run has them.
pub fn apache_kafka() -> Option<(String, String)> {
    let source = std::env::var("TEST_KAFKA_SOURCE_BROKERS")
        .ok()
        .filter(|s| !s.is_empty());
    let local = std::env::var("TEST_KAFKA_LOCAL_BROKERS")
        .ok()
        .filter(|s| !s.is_empty());
    match (source, local) {
        (Some(s), Some(l)) => Some((s, l)),
        _ => None,
    }
}

/// The real-Kafka backend for a test that must run on it: in CI a missing broker fails the
/// test (never a silent skip); locally the test says so and runs on the mock cluster.
pub fn apache_or_mock(test: &str) -> (Option<String>, Option<String>) {
    match apache_kafka() {
        Some((source, local)) => {
            eprintln!("{test}: running on Apache Kafka (source {source}, local {local})");
            (Some(source), Some(local))
        }
        None if std::env::var_os("CI").is_some() => {
            panic!(
                "{test}: CI must run this on Apache Kafka: set TEST_KAFKA_SOURCE_BROKERS and TEST_KAFKA_LOCAL_BROKERS (see .ci/run)"
            )
        }
        None => {
            eprintln!(
                "{test}: TEST_KAFKA_*_BROKERS not set; running on the librdkafka mock cluster instead"
            );
            (None, None)
        }
    }
}

/// A name no other test or run uses.
pub fn unique(prefix: &str) -> String {
    format!("{prefix}-{:08x}", rand::rng().random::<u32>())
}

/// Test defaults: unique topic and group, quick client polls, no demo traffic.
pub fn config() -> StackConfig {
    StackConfig {
        topic: unique("topic"),
        group_id: unique("group"),
        events: Some(0),
        rate: 0,
        client: false,
        client_interval: Duration::from_millis(100),
        ..StackConfig::default()
    }
}

/// Starts a stack, failing the test clearly if it cannot.
pub async fn start(config: StackConfig) -> Stack {
    match Stack::start(config).await {
        Ok(stack) => stack,
        Err(err) => panic!("stack did not start: {err}"),
    }
}

/// Polls `condition` every 50 ms until it holds or `timeout` passes.
pub async fn wait_for<F, Fut>(what: &str, timeout: Duration, mut condition: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = tokio::time::Instant::now() + timeout;
    while tokio::time::Instant::now() < deadline {
        if condition().await {
            return;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("timed out after {timeout:?} waiting for {what}");
}

/// `seq` of a demo event value.
pub fn seq_of(value: &[u8]) -> u64 {
    let json: serde_json::Value = serde_json::from_slice(value).expect("demo values are JSON");
    json["seq"]
        .as_u64()
        .expect("demo values have an integer seq")
}
