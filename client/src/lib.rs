//! The polling client for the Windows laptop: polls the public API with a cursor, produces
//! the events into local Kafka, and saves the cursor only after local Kafka acknowledged
//! them, so a crash or restart resumes without loss.

pub mod api;
pub mod backoff;
pub mod replicator;
pub mod sink;
pub mod store;

pub use replicator::{Progress, Replicator};

/// Why the client stopped.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    #[error("cannot build the HTTP client: {0}")]
    Http(reqwest::Error),
    #[error(transparent)]
    Sink(#[from] sink::SinkError),
    #[error(transparent)]
    Store(#[from] store::StoreError),
    #[error("the server sent an event that cannot be decoded: {0}")]
    BadEvent(#[from] shared::event::DecodeError),
    #[error("the server sent a cursor that cannot be decoded: {0}")]
    BadCursor(shared::CursorError),
}
