//! `LOG_FILE`: the client's log goes to a daily-rolled file, not to stderr, as a service
//! without a console needs.

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// The log files in `dir` and what they hold.
fn logs(dir: &std::path::Path) -> Vec<(String, String)> {
    std::fs::read_dir(dir)
        .into_iter()
        .flatten()
        .filter_map(Result::ok)
        .map(|e| {
            let name = e.file_name().to_string_lossy().into_owned();
            (name, std::fs::read_to_string(e.path()).unwrap_or_default())
        })
        .collect()
}

#[cfg(unix)]
#[test]
fn the_log_goes_to_a_daily_file_named_after_log_file() {
    let dir = tempfile::tempdir().expect("dir");
    let log_file = dir.path().join("client.log");
    // Nothing answers on port 9: the client starts, logs that it cannot reach local Kafka,
    // and keeps trying.
    let child = Command::new(env!("CARGO_BIN_EXE_client"))
        .env_clear()
        .current_dir(dir.path())
        .env("SERVER_URL", "http://127.0.0.1:9")
        .env("API_KEY", "unused-key-0123456789")
        .env("KAFKA_BROKERS", "127.0.0.1:9")
        .env("LOG_FILE", &log_file)
        .stderr(Stdio::piped())
        .spawn()
        .expect("client");
    let deadline = Instant::now() + Duration::from_secs(30);
    let written = loop {
        let found = logs(dir.path());
        if found.iter().any(|(_, text)| !text.is_empty()) || Instant::now() >= deadline {
            break found;
        }
        std::thread::sleep(Duration::from_millis(100));
    };
    let _ = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status();
    let output = child.wait_with_output().expect("client exits");
    let stderr = String::from_utf8_lossy(&output.stderr);
    let (name, text) = written
        .iter()
        .find(|(_, text)| !text.is_empty())
        .unwrap_or_else(|| panic!("a log file with lines in {:?}", dir.path()));
    let today = std::process::Command::new("date")
        .args(["-u", "+%Y-%m-%d"])
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_owned())
        .expect("date");
    assert_eq!(name, &format!("client.{today}.log"), "rolled daily");
    assert!(
        !text.contains('\u{1b}'),
        "no colour codes in a file: {text}"
    );
    assert!(
        ["INFO", "WARN", "ERROR"]
            .iter()
            .all(|level| !stderr.contains(level)),
        "the log went to the file, not to stderr: {stderr}"
    );
    assert!(
        ["WARN", "ERROR"].iter().any(|level| text.contains(level)),
        "the file holds the log: {}",
        text.lines().next().unwrap_or_default()
    );
}
