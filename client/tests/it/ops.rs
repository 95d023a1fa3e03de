//! `client status` and `client doctor` as a monitoring agent or a user runs them: what they
//! print and the exit codes, when nothing can be reached. (Against real brokers and each
//! broken set-up: the emulator's `client_ops` tests.)

use crate::common::client;

/// A port on loopback nothing listens on.
fn closed_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("free port")
        .port()
}

fn unreachable() -> Vec<(&'static str, String)> {
    vec![
        ("SERVER_URL", format!("http://127.0.0.1:{}", closed_port())),
        ("API_KEY", "some-key-0123456789".into()),
        ("KAFKA_BROKERS", format!("127.0.0.1:{}", closed_port())),
    ]
}

#[test]
fn status_exits_2_saying_what_cannot_be_reached() {
    let (code, stdout, stderr) = client(&unreachable(), &["status"]);
    assert_eq!(code, Some(2), "{stdout}{stderr}");
    assert!(stdout.is_empty(), "{stdout}");
    let last = stderr.lines().last().unwrap_or_default();
    assert!(
        last.starts_with("error: cannot read the committed position"),
        "{stderr}"
    );
    assert!(
        last.contains("KAFKA_BROKERS") && last.contains("client doctor"),
        "{last}"
    );

    let (code, stdout, _) = client(&unreachable(), &["status", "--json", "--max-lag", "5"]);
    assert_eq!(code, Some(2));
    let json: serde_json::Value = serde_json::from_str(stdout.trim()).expect("JSON on stdout");
    assert!(
        json["error"]
            .as_str()
            .is_some_and(|e| e.contains("local Kafka")),
        "{json}"
    );
}

#[test]
fn status_needs_the_clients_settings() {
    let (code, _, stderr) = client::<&str>(&[], &["status"]);
    assert_eq!(code, Some(2));
    assert!(stderr.contains("SERVER_URL is not set"), "{stderr}");
}

#[test]
fn doctor_prints_one_line_per_check_and_exits_1_when_one_fails() {
    // Nothing configured: the first check fails; nothing is contacted.
    let (code, stdout, _) = client::<&str>(&[], &["doctor"]);
    assert_eq!(code, Some(1), "{stdout}");
    let lines: Vec<&str> = stdout.lines().collect();
    assert_eq!(lines.len(), 7, "{stdout}");
    assert!(
        lines[0].starts_with("FAIL  config: SERVER_URL is not set"),
        "{stdout}"
    );
    assert!(
        lines[1..].iter().all(|l| l.starts_with("--    ")),
        "{stdout}"
    );

    // Configured, with nothing there: the server's and Kafka's first hops fail, with fixes.
    let (code, stdout, _) = client(&unreachable(), &["doctor"]);
    assert_eq!(code, Some(1), "{stdout}");
    let lines: Vec<&str> = stdout.lines().collect();
    assert_eq!(lines.len(), 7, "{stdout}");
    assert!(lines[0].starts_with("ok    config"), "{stdout}");
    assert!(
        lines[1].starts_with("FAIL  server address: cannot connect"),
        "{stdout}"
    );
    assert!(lines[1].contains("; fix: "), "{stdout}");
    assert!(
        lines[4].starts_with("FAIL  local Kafka: no broker at KAFKA_BROKERS="),
        "{stdout}"
    );
    assert!(!stdout.contains("all checks passed"), "{stdout}");
}
