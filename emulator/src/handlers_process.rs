//! The handlers in a process of their own, so a fault schedule can kill them: `emulator
//! handlers-process` (hidden) serves the API from its usual environment variables, as
//! `handlers-server` does, prints `serving` once its state is built, and drains and stops
//! when its standard input closes.

use std::time::Duration;

use crate::child::{ChildProcess, config_from_env, stop_asked};

/// What the child prints once it is about to listen.
const SERVING: &str = "serving";

/// Why the handlers child could not run.
#[derive(Debug, thiserror::Error)]
pub enum HandlersProcessError {
    #[error("{0}")]
    Config(String),
    #[error(transparent)]
    Handlers(#[from] handlers::HandlersError),
    #[error(transparent)]
    Serve(#[from] handlers::server::ServeError),
    #[error("the handlers process: {0}")]
    Start(String),
}

/// Runs the handlers as the child process (the `handlers-process` subcommand).
pub async fn run_child(args: &[String]) -> Result<(), HandlersProcessError> {
    let config: handlers::Config =
        config_from_env("handlers", args).map_err(HandlersProcessError::Config)?;
    let state = handlers::AppState::from_config(&config).await?;
    println!("{SERVING}");
    handlers::server::serve(&config, state, stop_asked()).await?;
    Ok(())
}

/// Where the handlers child serves and what it needs.
#[derive(Debug, Clone)]
pub struct HandlersSettings {
    /// Its port on 127.0.0.1 (fixed, so that it comes back where the client looks).
    pub port: u16,
    /// `CONSUMER_ADDR`: the pods, comma-separated.
    pub consumer_addr: String,
    pub internal_token: String,
    /// `API_KEYS_FILE`, re-read every second.
    pub api_keys_file: std::path::PathBuf,
    /// Where its log goes (none: the parent's standard error).
    pub log: Option<std::path::PathBuf>,
}

/// The handlers child, seen from the harness.
#[derive(Debug)]
pub struct HandlersProcess(ChildProcess);

impl HandlersProcess {
    /// Starts the child and waits until it has read its keys and is about to listen.
    pub async fn start(settings: &HandlersSettings) -> Result<Self, HandlersProcessError> {
        let (child, ()) = ChildProcess::start(
            None,
            "handlers",
            "handlers-process",
            &shared::kafka::KafkaPropertyArgs::default(),
            |command| {
                for var in [
                    "API_KEY",
                    "API_KEY_SECRET_ID",
                    "API_PREFIX",
                    "TLS_CERT",
                    "TLS_KEY",
                ] {
                    command.env_remove(var);
                }
                command.envs([
                    ("HOST", "127.0.0.1".to_owned()),
                    ("PORT", settings.port.to_string()),
                    ("CONSUMER_ADDR", settings.consumer_addr.clone()),
                    ("INTERNAL_TOKEN", settings.internal_token.clone()),
                    (
                        "API_KEYS_FILE",
                        settings.api_keys_file.display().to_string(),
                    ),
                    ("API_KEY_REFRESH_SECS", "1".to_owned()),
                ]);
                crate::child::log_to(command, settings.log.as_deref());
            },
            Duration::from_secs(30),
            |line| (line == SERVING).then_some(()),
        )
        .await
        .map_err(HandlersProcessError::Start)?;
        Ok(Self(child))
    }

    /// Kills it at once, as a crash would.
    pub async fn kill(self) {
        self.0.kill().await;
    }

    /// Stops it gracefully: in-flight requests are answered first.
    pub async fn stop(self) {
        self.0.stop().await;
    }
}
