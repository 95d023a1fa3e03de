//! `handlers-server`: the public API as a container server. Reads `.env`, flags and
//! environment, serves on `HOST:PORT` (HTTPS when `TLS_CERT`/`TLS_KEY` are set), and
//! drains in-flight requests on Ctrl-C or SIGTERM. `handlers-server generate-api-key`
//! prints a new random 256-bit key and exits; `handlers-server healthcheck` asks the
//! running server's `/health` on `PORT` and exits 0 if it answers 200 (plain HTTP only).

use anyhow::Context;
use clap::{Parser, Subcommand};
use handlers::Config;
use shared::config::{self, ConfigError, Validate};
use shared::internal::ConsumerAddr;

#[derive(Debug, Parser)]
#[command(
    name = "handlers-server",
    version,
    about = "The public Kafka Replicator API, as a container server"
)]
struct Cli {
    #[command(subcommand)]
    command: Option<Command>,
    #[command(flatten)]
    config: Config,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Print a new random 256-bit API key (base64url) and exit.
    GenerateApiKey,
    /// Ask the running server's /health on 127.0.0.1:PORT (plain HTTP); exit 0 if it
    /// answers 200.
    Healthcheck,
}

impl Validate for Cli {
    fn validate(&self) -> Result<(), ConfigError> {
        match self.command {
            // Neither needs the server's keys or the pod.
            Some(_) => Ok(()),
            None => self.config.validate(),
        }
    }
}

#[tokio::main]
async fn main() -> std::process::ExitCode {
    let Cli { command, config } = config::load();
    match command {
        Some(Command::GenerateApiKey) => {
            println!("{}", handlers::api_keys::generate_key());
            return std::process::ExitCode::SUCCESS;
        }
        Some(Command::Healthcheck) => {
            let addr = ConsumerAddr::Tcp(format!("127.0.0.1:{}", config.port));
            let path = format!("{}/health", config.api_prefix);
            std::process::exit(shared::probe::exit_code(&addr, &path, None));
        }
        None => {}
    }
    shared::telemetry::init();
    shared::config::exit_code(serve(&config).await)
}

async fn serve(config: &Config) -> anyhow::Result<()> {
    let state = handlers::AppState::from_config(config).await?;
    handlers::server::serve(config, state, shared::shutdown::signal())
        .await
        .context("handlers-server")
}
