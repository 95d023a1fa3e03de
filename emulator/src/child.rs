//! A part of the system in a process of its own, so the benchmark measures its memory
//! apart: the `emulator` binary run with a hidden subcommand, configured by its usual
//! environment variables. The child prints one line once it is ready and stops when its
//! standard input closes.

use std::process::Stdio;
use std::time::Duration;

use tokio::io::{AsyncBufReadExt, AsyncReadExt, BufReader, Lines};
use tokio::process::{Child, ChildStdout, Command};

/// How long a stopping child may take before it is killed.
const STOP_TIMEOUT: Duration = Duration::from_secs(15);

/// A child process, seen from the parent.
#[derive(Debug)]
pub struct ChildProcess {
    child: Child,
}

impl ChildProcess {
    /// Runs `emulator <subcommand>` (this binary, or `exe`) with the environment `configure`
    /// sets, and waits up to
    /// `timeout` for a line of its output that `ready` accepts; returns the child and what
    /// `ready` made of that line. `what` names the child in errors.
    pub async fn start<T>(
        exe: Option<&std::path::Path>,
        what: &str,
        subcommand: &str,
        properties: &shared::kafka::KafkaPropertyArgs,
        configure: impl FnOnce(&mut Command),
        timeout: Duration,
        mut ready: impl FnMut(&str) -> Option<T>,
    ) -> Result<(Self, T), String> {
        let (child, mut lines) = Self::spawn(exe, what, subcommand, properties, configure)?;
        let answer = tokio::time::timeout(timeout, async {
            while let Ok(Some(line)) = lines.next_line().await {
                if let Some(answer) = ready(line.trim()) {
                    return Some(answer);
                }
            }
            None
        })
        .await;
        match answer {
            Ok(Some(answer)) => Ok((child, answer)),
            _ => Err(format!("the {what} did not get ready (its log is above)")),
        }
    }

    /// Runs `emulator <subcommand>` as [`ChildProcess::start`] does, without waiting: its
    /// output goes on being read in the background, so it never blocks on a full pipe.
    pub fn start_unwaited(
        exe: Option<&std::path::Path>,
        what: &str,
        subcommand: &str,
        properties: &shared::kafka::KafkaPropertyArgs,
        configure: impl FnOnce(&mut Command),
    ) -> Result<Self, String> {
        let (child, mut lines) = Self::spawn(exe, what, subcommand, properties, configure)?;
        tokio::spawn(async move { while let Ok(Some(_)) = lines.next_line().await {} });
        Ok(child)
    }

    fn spawn(
        exe: Option<&std::path::Path>,
        what: &str,
        subcommand: &str,
        properties: &shared::kafka::KafkaPropertyArgs,
        configure: impl FnOnce(&mut Command),
    ) -> Result<(Self, Lines<BufReader<ChildStdout>>), String> {
        let exe = match exe {
            Some(exe) => exe.to_owned(),
            None => std::env::current_exe().map_err(|e| format!("cannot start the {what}: {e}"))?,
        };
        let mut command = Command::new(exe);
        command.arg(subcommand);
        // The child's Kafka properties are exactly these, never the parent's own.
        let (vars, flags) = properties.for_child();
        for (var, value) in vars {
            match value {
                Some(value) => command.env(var, value),
                None => command.env_remove(var),
            };
        }
        command.args(flags);
        configure(&mut command);
        let mut child = command
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .map_err(|e| format!("cannot start the {what}: {e}"))?;
        let stdout = child
            .stdout
            .take()
            .ok_or_else(|| format!("the {what} has no output"))?;
        Ok((Self { child }, BufReader::new(stdout).lines()))
    }

    /// Its process id, while it runs.
    pub fn pid(&self) -> Option<u32> {
        self.child.id()
    }

    /// Peak resident memory so far, in MiB (Linux; 0 elsewhere).
    pub fn peak_rss_mb(&self) -> f64 {
        self.child
            .id()
            .map_or(0.0, |pid| crate::bench::peak_rss_mb_of(&pid.to_string()))
    }

    /// Kills it at once (SIGKILL on Unix), as a crash or an OOM kill would, and waits.
    pub async fn kill(mut self) {
        let _ = self.child.kill().await;
    }

    /// Stops it (SIGSTOP) where it stands, as a laptop falling asleep does, or wakes it
    /// (SIGCONT).
    #[cfg(unix)]
    pub async fn freeze(&self, asleep: bool) -> std::io::Result<()> {
        let Some(pid) = self.child.id() else {
            return Ok(());
        };
        let signal = if asleep { "-STOP" } else { "-CONT" };
        let status = Command::new("kill")
            .args([signal, &pid.to_string()])
            .status()
            .await?;
        if status.success() {
            Ok(())
        } else {
            Err(std::io::Error::other(format!(
                "kill {signal} {pid}: {status}"
            )))
        }
    }

    /// Closes its input so it stops gracefully; kills it if it does not in time.
    pub async fn stop(mut self) {
        drop(self.child.stdin.take());
        if tokio::time::timeout(STOP_TIMEOUT, self.child.wait())
            .await
            .is_err()
        {
            let _ = self.child.kill().await;
        }
    }
}

/// Sends the child's log (its standard error) to the end of file `log`, when one is given;
/// without one it shares the parent's.
pub fn log_to(command: &mut Command, log: Option<&std::path::Path>) {
    let Some(log) = log else {
        return;
    };
    match std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(log)
    {
        Ok(file) => {
            command.stderr(file);
        }
        Err(err) => eprintln!("cannot write {}: {err}; the child logs here", log.display()),
    }
}

/// The child's side: its configuration, from the environment as its own binary reads it.
pub fn config_from_env<T: clap::Parser + shared::config::Validate>(
    name: &str,
    args: &[String],
) -> Result<T, String> {
    let config = T::try_parse_from(std::iter::once(name).chain(args.iter().map(String::as_str)))
        .map_err(|e| e.to_string())?;
    config.validate().map_err(|e| e.to_string())?;
    Ok(config)
}

/// The child's side: returns once the parent closes our standard input, its way of asking
/// us to stop.
pub async fn stop_asked() {
    let mut rest = Vec::new();
    let _ = tokio::io::stdin().read_to_end(&mut rest).await;
}
