//! The `client` binary as a user starts it.

mod config;
mod logfile;
mod ops;
mod systemd;
