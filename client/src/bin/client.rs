//! `client`: replicates events from the Kafka Replicator API into a local Kafka. Reads
//! `.env`, flags and environment; runs until Ctrl-C, resuming from its saved position.

use anyhow::Context;
use client::Config;
use shared::config;

fn main() -> std::process::ExitCode {
    client::memory::tune_malloc();
    let runtime = tokio::runtime::Runtime::new().context("cannot start the async runtime");
    shared::config::exit_code(runtime.and_then(|runtime| runtime.block_on(run())))
}

async fn run() -> anyhow::Result<()> {
    let config: Config = config::load();
    shared::telemetry::init();
    let replicator = client::Replicator::new(&config).context("client could not start")?;
    replicator
        .run(shared::shutdown::token())
        .await
        .context("client stopped on an error")?;
    Ok(())
}
