//! The `client` binary as a user starts it.

mod common;
mod config;
mod logfile;
mod ops;
mod systemd;
