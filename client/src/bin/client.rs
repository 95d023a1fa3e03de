//! `client`: replicates events from the Kafka Replicator API into a local Kafka. Reads
//! `.env` (or the env-file given by `--config`), flags and environment; runs until Ctrl-C,
//! resuming from its saved position. `client service …` is the Windows service's control.

use std::path::PathBuf;

use anyhow::Context;
use clap::{Parser, Subcommand};
use client::Config;
use shared::config::{self, ConfigError, Validate};

#[derive(Debug, Parser)]
#[command(
    name = "client",
    version,
    about = "Replicates events from the Kafka Replicator API into a local Kafka"
)]
struct Cli {
    #[command(subcommand)]
    command: Option<Command>,
    /// An env-file to read instead of ./.env (KEY=VALUE lines, as .env.example).
    #[arg(
        long = "config",
        env = "CLIENT_CONFIG",
        value_name = "PATH",
        global = true
    )]
    config_file: Option<PathBuf>,
    /// Log to this file instead of stderr, a new one each day (client.log becomes
    /// client.2026-12-01.log, …; the last 14 kept). A service has no console.
    #[arg(long = "log-file", env = "LOG_FILE", value_name = "PATH")]
    log_file: Option<PathBuf>,
    #[command(flatten)]
    config: Config,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Replicate until stopped (what the client does with no subcommand).
    Run,
    /// Install, remove, start or stop the client as a Windows service.
    Service {
        #[command(subcommand)]
        action: ServiceAction,
    },
}

#[derive(Debug, Clone, Copy, Subcommand)]
enum ServiceAction {
    /// Install the service, started at boot.
    Install,
    /// Remove the service.
    Uninstall,
    /// Start the installed service.
    Start,
    /// Stop the service gracefully.
    Stop,
}

impl Validate for Cli {
    fn validate(&self) -> Result<(), ConfigError> {
        match self.command {
            // Controlling a service needs none of the client's settings.
            Some(Command::Service { .. }) => Ok(()),
            Some(Command::Run) | None => self.config.validate(),
        }
    }
}

/// The env-file named by `--config PATH` (or `--config=PATH`), else by `CLIENT_CONFIG`,
/// with what named it: it is read before the flags are parsed.
fn env_file() -> Option<(PathBuf, &'static str)> {
    let mut args = std::env::args_os().skip(1);
    while let Some(arg) = args.next() {
        if arg == "--" {
            break;
        }
        if arg == "--config" {
            return args.next().map(|p| (PathBuf::from(p), "--config"));
        }
        if let Some(path) = arg.to_str().and_then(|a| a.strip_prefix("--config=")) {
            return Some((PathBuf::from(path), "--config"));
        }
    }
    std::env::var_os("CLIENT_CONFIG")
        .filter(|p| !p.is_empty())
        .map(|p| (PathBuf::from(p), "CLIENT_CONFIG"))
}

fn main() -> std::process::ExitCode {
    client::memory::tune_malloc();
    let file = env_file();
    let cli: Cli = config::load_from(file.as_ref().map(|(p, by)| (p.as_path(), *by)));
    if let Some(Command::Service { action }) = cli.command {
        return service(action);
    }
    // Kept to the end: dropping it flushes the last lines to the file.
    let _log = match logging(cli.log_file.as_deref()) {
        Ok(guard) => guard,
        Err(err) => {
            eprintln!("error: {err:#}");
            return std::process::ExitCode::from(2);
        }
    };
    let runtime = tokio::runtime::Runtime::new().context("cannot start the async runtime");
    config::exit_code(runtime.and_then(|runtime| runtime.block_on(run(&cli.config))))
}

/// Logs to stderr, or to a daily-rolled `log_file` through a background writer.
fn logging(
    log_file: Option<&std::path::Path>,
) -> anyhow::Result<Option<tracing_appender::non_blocking::WorkerGuard>> {
    let Some(path) = log_file else {
        shared::telemetry::init();
        return Ok(None);
    };
    let dir = path
        .parent()
        .filter(|d| !d.as_os_str().is_empty())
        .unwrap_or(std::path::Path::new("."));
    let stem = path
        .file_stem()
        .and_then(|s| s.to_str())
        .unwrap_or("client");
    let mut builder = tracing_appender::rolling::Builder::new()
        .rotation(tracing_appender::rolling::Rotation::DAILY)
        .filename_prefix(stem)
        .max_log_files(14);
    if let Some(extension) = path.extension().and_then(|e| e.to_str()) {
        builder = builder.filename_suffix(extension);
    }
    let appender = builder
        .build(dir)
        .with_context(|| format!("LOG_FILE: cannot write logs in {}", dir.display()))?;
    let (writer, guard) = tracing_appender::non_blocking(appender);
    shared::telemetry::init_with(writer, false);
    Ok(Some(guard))
}

async fn run(config: &Config) -> anyhow::Result<()> {
    let replicator = client::Replicator::new(config).context("client could not start")?;
    replicator
        .run(shared::shutdown::token())
        .await
        .context("client stopped on an error")?;
    Ok(())
}

/// `client service …` outside Windows: what runs the client all day there instead.
#[cfg(not(windows))]
fn service(action: ServiceAction) -> std::process::ExitCode {
    let _ = action;
    let instead = if cfg!(target_os = "macos") {
        "on macOS run it as a launchd agent (launchctl) with --config"
    } else {
        "on Linux run it under systemd with the unit infra/systemd/kafka-replicator-client.service (README \"The client all day\")"
    };
    eprintln!("error: `client service` controls a Windows service; {instead}");
    std::process::ExitCode::from(2)
}

/// The Windows service is not in this version yet.
#[cfg(windows)]
fn service(action: ServiceAction) -> std::process::ExitCode {
    eprintln!(
        "error: `client service {action:?}` is not in this version yet; run client.exe in a console"
    );
    std::process::ExitCode::from(2)
}
