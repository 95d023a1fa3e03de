//! The protocol both ends of Kafka Replicator speak: the event model, the cursor codec, the
//! binary wire format, the public and internal API shapes and errors, and the probes. Each
//! component owns its own configuration; behind features sit what only the server side
//! shares (`server`), OpenAPI schemas (`openapi`) and records to and from librdkafka (`kafka`).

pub mod api;
pub mod config;
pub mod cursor;
pub mod error;
pub mod event;
pub mod internal;
#[cfg(feature = "kafka")]
pub mod kafka;
#[cfg(feature = "server")]
pub mod listen;
pub mod memory;
#[cfg(feature = "metrics")]
pub mod metrics;
pub mod probe;
#[cfg(feature = "server")]
pub mod ratelimit;
pub mod shutdown;
pub mod telemetry;
pub mod wire;

pub use cursor::{Cursor, CursorError, StartFrom};
pub use error::{ApiError, ErrorCode};
pub use event::{Encoding, Event, Header, Record};
