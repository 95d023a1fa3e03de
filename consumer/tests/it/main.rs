//! The `consumer` binary as an operator starts it.

mod config;
