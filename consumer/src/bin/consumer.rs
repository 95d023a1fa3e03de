//! `consumer`: the consumer pod. Reads `.env`, flags and environment, then consumes the
//! source topics into its buffer and serves the handlers until Ctrl-C or SIGTERM.

use anyhow::Context;
use shared::config::{self, ConsumerConfig};

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let config: ConsumerConfig = config::load();
    shared::telemetry::init();
    let pod = consumer::ConsumerPod::bind(config)
        .await
        .context("consumer pod could not start")?;
    pod.run(shared::shutdown::token())
        .await
        .context("consumer pod failed")
}
