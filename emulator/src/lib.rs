//! The emulator: the whole Kafka Replicator in one process on embedded Kafka (librdkafka's
//! mock cluster) or on real brokers. The binary runs it for people; the library's [`Stack`]
//! is the integration-test harness.

pub mod bench;
pub mod bench_catchup;
pub mod bench_client;
pub mod bench_fanout;
pub mod bench_runs;
#[cfg(unix)]
pub mod chaos;
pub mod child;
pub mod demo;
pub mod handlers_process;
pub mod kafka;
pub mod lambda_bridge;
pub mod link;
pub mod mm2;
pub mod pod_process;
pub mod soak;
pub mod sockets;
pub mod stack;
pub mod verify;

pub use kafka::KafkaCluster;
pub use stack::{HandlersMode, ReadyInfo, Stack, StackConfig, StackError};
