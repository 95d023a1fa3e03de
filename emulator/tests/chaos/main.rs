//! The fault tests that run a Kafka cluster of their own: a source leader killed under the
//! stream, a broker restarted on a port still held, and fault schedules drawn from seeds.
//! A test binary of its own (cargo runs one at a time), so these heavy runs never share the
//! two cores with the timing-bound tests; within it they run one at a time.

#[path = "../it/common.rs"]
mod common;
mod failover;
mod held_open;
mod launcher;
mod schedules;

/// Held by each test for its whole run.
static ONE_AT_A_TIME: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// The launcher of the suite's Apache Kafka brokers.
fn kafka_local() -> emulator::chaos::brokers::KafkaLocal {
    emulator::chaos::brokers::KafkaLocal::new(
        &emulator::chaos::brokers::KafkaLocal::default_script(),
    )
    .expect("infra/kafka-local/kafka-local.sh")
}
