//! The polling client for the Windows laptop: polls the public API with a cursor, produces
//! the events into local Kafka in one transaction with the cursor that follows them, so a
//! crash or restart at any point resumes without loss or duplicates.

pub mod api;
pub mod backoff;
pub mod config;
pub mod destination;
pub mod doctor;
pub mod feed;
pub mod hanging;
pub mod lag;
pub mod memory;
pub mod metrics;
pub mod pace;
pub mod pipeline;
pub mod replicator;
pub mod service;
pub mod sink;
pub mod status;
pub mod topics;

pub use config::Config;
pub use destination::Destination;
pub use replicator::{Progress, Replicator};

/// Why the client stopped.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    #[error("cannot build the HTTP client: {0}")]
    Http(reqwest::Error),
    #[error(transparent)]
    Sink(#[from] sink::SinkError),
    #[error(transparent)]
    Config(#[from] shared::config::ConfigError),
    #[error(
        "local Kafka refused the client: {0}; check the credentials and certificates in KAFKA_PROPERTIES, KAFKA_PROPERTIES_FILE or --kafka-property"
    )]
    AccessRefused(shared::kafka::AccessRefused),
    #[error("the server sent an event that cannot be decoded: {0}")]
    BadEvent(#[from] shared::event::DecodeError),
    #[error("the server sent a cursor that cannot be decoded: {0}")]
    BadCursor(shared::CursorError),
}
