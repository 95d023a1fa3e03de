//! The integration tests of the whole stack, one binary: each module starts the real
//! components through the emulator harness (`common`), on embedded or Apache Kafka.

mod api;
mod client_kill;
mod client_ops;
mod common;
mod docs;
mod end_to_end;
mod faults;
mod fuzz;
mod infra;
mod lambda;
mod pods;
mod postman;
mod processes;
mod secured;
mod security;
mod shared_limits;
mod stream;
mod topics;
