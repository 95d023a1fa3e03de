//! `consumer`: the consumer pod. Reads `.env`, flags and environment, then consumes the
//! source topics into its buffer and serves the handlers until Ctrl-C or SIGTERM.
//! `consumer healthcheck` asks the running pod's internal socket (with its INTERNAL_TOKEN)
//! and exits 0 if it answers.

use anyhow::Context;
use clap::{Parser, Subcommand};
use consumer::Config;
use shared::config::{self, ConfigError, Validate};
use shared::internal::STATUS_PATH;

#[derive(Debug, Parser)]
#[command(
    name = "consumer",
    version,
    about = "Consumes the source Kafka into a bounded buffer and serves it to the handlers"
)]
struct Cli {
    #[command(subcommand)]
    command: Option<Command>,
    #[command(flatten)]
    config: Config,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Ask the running pod's internal socket (CONSUMER_ADDR, with INTERNAL_TOKEN) for its
    /// status; exit 0 if it answers.
    Healthcheck,
}

impl Validate for Cli {
    fn validate(&self) -> Result<(), ConfigError> {
        match self.command {
            // A probe needs only where the pod answers.
            Some(Command::Healthcheck) => Ok(()),
            None => self.config.validate(),
        }
    }
}

fn main() -> std::process::ExitCode {
    consumer::memory::tune_malloc();
    let Cli { command, config } = config::load();
    if let Some(Command::Healthcheck) = command {
        std::process::exit(shared::probe::exit_code(
            &config.consumer_addr,
            STATUS_PATH,
            config.internal_token.as_deref(),
        ));
    }
    shared::telemetry::init();
    shared::config::exit_code(
        tokio::runtime::Runtime::new()
            .context("cannot start the async runtime")
            .and_then(|runtime| runtime.block_on(run(config))),
    )
}

async fn run(config: Config) -> anyhow::Result<()> {
    let pod = consumer::ConsumerPod::bind(config)
        .await
        .context("consumer pod could not start")?;
    pod.run(shared::shutdown::token())
        .await
        .context("consumer pod failed")
}
