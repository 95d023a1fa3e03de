//! `client`: replicates events from the Kafka Replicator API into a local Kafka. Reads
//! `.env` (or the env-file given by `--config`), flags and environment; runs until Ctrl-C,
//! resuming from its saved position. `client status` and `client doctor` tell where it
//! stands and what is wrong; `client service …` is the Windows service's control.

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
    #[arg(
        long = "log-file",
        env = "LOG_FILE",
        value_name = "PATH",
        global = true
    )]
    log_file: Option<PathBuf>,
    #[command(flatten)]
    config: Config,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Replicate until stopped (what the client does with no subcommand).
    Run,
    /// Show the committed position, the server's log end and the lag per partition, and
    /// the last commit. Exit 0; 3 when the lag is over --max-lag; 2 when something cannot
    /// be reached.
    Status {
        /// Print JSON instead of a table.
        #[arg(long)]
        json: bool,
        /// Exit 3 when the total lag is over this many events (0: report only).
        #[arg(long = "max-lag", value_name = "EVENTS", default_value_t = 0)]
        max_lag: u64,
    },
    /// Check every hop (config, server, key, readiness, local Kafka, transactions, state
    /// topic), one line each. Exit 0 only when all pass.
    Doctor,
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
    /// What the service control manager starts (not for a console).
    #[command(hide = true)]
    Run,
}

impl Validate for Cli {
    fn validate(&self) -> Result<(), ConfigError> {
        match self.command {
            // Controlling a service needs none of the client's settings; the doctor
            // checks them itself, as its first check.
            Some(
                Command::Service {
                    action:
                        ServiceAction::Install
                        | ServiceAction::Uninstall
                        | ServiceAction::Start
                        | ServiceAction::Stop,
                }
                | Command::Doctor,
            ) => Ok(()),
            Some(Command::Service {
                action: ServiceAction::Run,
            }) if cfg!(windows) => self.config.validate(),
            Some(Command::Service { .. }) => Ok(()),
            Some(Command::Status { .. }) => self.config.validate(),
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
        .or_else(service_config)
}

/// The service reads `%ProgramData%\KafkaReplicator\client.env` unless given one.
#[cfg(windows)]
fn service_config() -> Option<(PathBuf, &'static str)> {
    let args: Vec<_> = std::env::args_os().skip(1).take(2).collect();
    (args.len() == 2 && args[0] == "service" && args[1] == "run").then(|| {
        (
            client::service::default_config(std::env::var_os("ProgramData")),
            "the service's default (%ProgramData%\\KafkaReplicator\\client.env)",
        )
    })
}

#[cfg(not(windows))]
fn service_config() -> Option<(PathBuf, &'static str)> {
    None
}

fn main() -> std::process::ExitCode {
    client::memory::tune_malloc();
    let file = env_file();
    let cli: Cli = config::load_from(file.as_ref().map(|(p, by)| (p.as_path(), *by)));
    match cli.command {
        Some(Command::Service {
            action: ServiceAction::Run,
        }) => return service_run(&cli),
        Some(Command::Service { action }) => return service(action, &cli),
        Some(Command::Status { json, max_lag }) => return status(&cli.config, json, max_lag),
        Some(Command::Doctor) => return doctor(&cli.config),
        Some(Command::Run) | None => {}
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
    replicate(config, shared::shutdown::token()).await
}

/// Replicates until `shutdown`, serving metrics at METRICS_ADDR meanwhile.
async fn replicate(
    config: &Config,
    shutdown: tokio_util::sync::CancellationToken,
) -> anyhow::Result<()> {
    let replicator = client::Replicator::new(config).context("client could not start")?;
    if let Some(addr) = config.metrics_addr {
        replicator
            .metrics()
            .serve(addr, shutdown.child_token())
            .await
            .with_context(|| {
                format!("METRICS_ADDR: cannot serve metrics at {addr}; pick a free port")
            })?;
    }
    replicator
        .run(shutdown)
        .await
        .context("client stopped on an error")?;
    Ok(())
}

/// `client status`: prints where the client stands; exit 0, 3 (lagging) or 2.
fn status(config: &Config, json: bool, max_lag: u64) -> std::process::ExitCode {
    // Progress and errors of the Kafka clients go to stderr, away from the answer.
    shared::telemetry::init_with(std::io::stderr, false);
    let gathered = tokio::runtime::Runtime::new()
        .map_err(|e| e.to_string())
        .and_then(|rt| {
            rt.block_on(client::status::Status::gather(config))
                .map_err(|e| e.to_string())
        });
    match gathered {
        Ok(status) => {
            if json {
                println!("{}", status.to_json());
            } else {
                print!("{}", status.to_text(std::time::SystemTime::now()));
            }
            std::process::ExitCode::from(status.exit_code(max_lag))
        }
        Err(err) => {
            if json {
                println!("{}", serde_json::json!({ "error": err }));
            }
            eprintln!("error: {err}");
            std::process::ExitCode::from(client::status::UNREACHABLE)
        }
    }
}

/// `client doctor`: one line per check; exit 0 only when all pass.
fn doctor(config: &Config) -> std::process::ExitCode {
    let Ok(runtime) = tokio::runtime::Runtime::new() else {
        eprintln!("error: cannot start the async runtime");
        return std::process::ExitCode::from(2);
    };
    let passed = runtime.block_on(client::doctor::run(config, |check| println!("{check}")));
    if passed {
        println!("all checks passed");
        std::process::ExitCode::SUCCESS
    } else {
        std::process::ExitCode::from(1)
    }
}

/// `client service …` outside Windows: what runs the client all day there instead.
#[cfg(not(windows))]
fn service(action: ServiceAction, cli: &Cli) -> std::process::ExitCode {
    let _ = (action, cli);
    let instead = if cfg!(target_os = "macos") {
        "on macOS run it as a launchd agent (launchctl) with --config"
    } else {
        "on Linux run it under systemd with the unit infra/systemd/kafka-replicator-client.service (README \"The client all day\")"
    };
    eprintln!("error: `client service` controls a Windows service; {instead}");
    std::process::ExitCode::from(2)
}

#[cfg(not(windows))]
fn service_run(cli: &Cli) -> std::process::ExitCode {
    service(ServiceAction::Run, cli)
}

/// `client service install|uninstall|start|stop` on Windows.
#[cfg(windows)]
fn service(action: ServiceAction, cli: &Cli) -> std::process::ExitCode {
    use client::service::{self, windows};
    let program_data = std::env::var_os("ProgramData");
    let done = match action {
        ServiceAction::Install => {
            let config = cli
                .config_file
                .clone()
                .unwrap_or_else(|| service::default_config(program_data.clone()));
            let log_file = cli
                .log_file
                .clone()
                .unwrap_or_else(|| service::default_log_file(program_data));
            if !config.is_file() {
                eprintln!(
                    "error: {} does not exist; copy client.env there (or name another with --config) and edit it, then install again",
                    config.display()
                );
                return std::process::ExitCode::from(2);
            }
            std::env::current_exe()
                .map_err(|e| format!("cannot tell where client.exe is: {e}"))
                .and_then(|exe| {
                    windows::install(&exe, &config, &log_file).map_err(|e| e.to_string())
                })
                .map(|()| {
                    format!(
                        "installed {} (starts at boot); it reads {} and logs to {}; `client service start` starts it now",
                        service::SERVICE_NAME,
                        config.display(),
                        log_file.display()
                    )
                })
        }
        ServiceAction::Uninstall => windows::uninstall()
            .map(|()| format!("removed {}", service::SERVICE_NAME))
            .map_err(|e| e.to_string()),
        ServiceAction::Start => windows::start()
            .map(|()| format!("started {}", service::SERVICE_NAME))
            .map_err(|e| e.to_string()),
        ServiceAction::Stop => windows::stop()
            .map(|()| format!("stopped {}", service::SERVICE_NAME))
            .map_err(|e| e.to_string()),
        ServiceAction::Run => return service_run(cli),
    };
    match done {
        Ok(said) => {
            println!("{said}");
            std::process::ExitCode::SUCCESS
        }
        Err(err) => {
            eprintln!("error: {err}");
            std::process::ExitCode::from(2)
        }
    }
}

/// The service itself, started by the service control manager: logs to the file (a
/// service has no console) and replicates until the manager stops it.
#[cfg(windows)]
fn service_run(cli: &Cli) -> std::process::ExitCode {
    let log_file = cli
        .log_file
        .clone()
        .unwrap_or_else(|| client::service::default_log_file(std::env::var_os("ProgramData")));
    let _log = match logging(Some(&log_file)) {
        Ok(guard) => guard,
        Err(err) => {
            eprintln!("error: {err:#}");
            return std::process::ExitCode::from(2);
        }
    };
    let config = cli.config.clone();
    let body: client::service::windows::Body = Box::new(move |stop| {
        let outcome = tokio::runtime::Runtime::new()
            .context("cannot start the async runtime")
            .and_then(|runtime| runtime.block_on(replicate(&config, stop)));
        match outcome {
            Ok(()) => 0,
            Err(err) => {
                tracing::error!("{err:#}");
                1
            }
        }
    });
    match client::service::windows::run(body) {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(err) => {
            tracing::error!("{err}");
            eprintln!("error: {err}");
            std::process::ExitCode::from(2)
        }
    }
}
