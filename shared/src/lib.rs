//! Types every Kafka Replicator component agrees on: the event model, the cursor codec,
//! the public and internal DTOs, typed configuration, API-key verification, metrics
//! helpers and the error type that maps to the contract's JSON error.

pub mod api;
pub mod auth;
pub mod config;
pub mod cursor;
pub mod error;
pub mod event;
pub mod internal;
#[cfg(feature = "kafka")]
pub mod kafka;
#[cfg(feature = "axum")]
pub mod listen;
pub mod metrics;
pub mod probe;
pub mod ratelimit;
pub mod shutdown;
pub mod telemetry;
pub mod wire;

pub use auth::ApiKeys;
pub use cursor::{Cursor, CursorError, StartFrom};
pub use error::{ApiError, ErrorCode};
pub use event::{Encoding, Event, Header, Record};
