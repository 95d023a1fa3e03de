//! The client as a Windows service: its name, where it reads its configuration and writes
//! its logs, and (on Windows) its installation and its life under the service control
//! manager. Elsewhere `client service` names the platform's own way (a systemd unit).

use std::path::PathBuf;
use std::time::Duration;

// The dispatcher's entry point that `windows_service::define_windows_service!` writes is an
// `extern "system"` function with an `unsafe` block inside.
#[cfg(windows)]
#[allow(unsafe_code)]
pub mod windows;

/// The service's name in the service control manager (`sc query KafkaReplicatorClient`).
pub const SERVICE_NAME: &str = "KafkaReplicatorClient";
/// What the Services console shows.
pub const DISPLAY_NAME: &str = "Kafka Replicator client";
/// The Services console's description of it.
pub const DESCRIPTION: &str =
    "Copies events from the Kafka Replicator API into the local Kafka, exactly once.";

/// How long a stop may take, told to the service control manager: the open transaction is
/// committed or aborted well within it (each transaction call is bounded by 30 s).
pub const STOP_WAIT_HINT: Duration = Duration::from_secs(45);

/// The folder, under `%ProgramData%`, that holds the service's configuration and logs.
pub const DATA_FOLDER: &str = "KafkaReplicator";

/// Where the service keeps its files: `%ProgramData%\KafkaReplicator`, given the value of
/// `ProgramData` (`C:\ProgramData` when it is unset).
pub fn data_dir(program_data: Option<std::ffi::OsString>) -> PathBuf {
    let base = program_data
        .filter(|p| !p.is_empty())
        .map_or_else(|| PathBuf::from(r"C:\ProgramData"), PathBuf::from);
    base.join(DATA_FOLDER)
}

/// The env-file the service reads unless given `--config`.
pub fn default_config(program_data: Option<std::ffi::OsString>) -> PathBuf {
    data_dir(program_data).join("client.env")
}

/// The log file the service writes unless given `--log-file` (rolled daily).
pub fn default_log_file(program_data: Option<std::ffi::OsString>) -> PathBuf {
    data_dir(program_data).join("logs").join("client.log")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_service_keeps_its_files_under_program_data() {
        let dir = Some(std::ffi::OsString::from("D:/Data"));
        assert_eq!(
            default_config(dir.clone()),
            PathBuf::from("D:/Data")
                .join("KafkaReplicator")
                .join("client.env")
        );
        assert_eq!(
            default_log_file(dir),
            PathBuf::from("D:/Data")
                .join("KafkaReplicator")
                .join("logs")
                .join("client.log")
        );
        assert_eq!(
            default_config(Some("".into())),
            PathBuf::from(r"C:\ProgramData")
                .join("KafkaReplicator")
                .join("client.env")
        );
    }
}
