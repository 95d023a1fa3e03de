//! The `client` binary refuses bad configuration at start-up with one line naming the
//! variable and an example value.

use std::process::Command;

fn run(env: &[(&str, &str)], args: &[&str]) -> (Option<i32>, String) {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_client"));
    cmd.env_clear().current_dir(std::env::temp_dir()).args(args);
    for (k, v) in env {
        cmd.env(k, v);
    }
    let out = cmd.output().expect("client runs");
    (
        out.status.code(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn each_missing_variable_is_named() {
    let full = [
        ("SERVER_URL", "https://replicator.example.com"),
        ("API_KEY", "k"),
        ("KAFKA_BROKERS", "localhost:9092"),
    ];
    for missing in ["SERVER_URL", "API_KEY", "KAFKA_BROKERS"] {
        let env: Vec<(&str, &str)> = full
            .iter()
            .copied()
            .filter(|(k, _)| *k != missing)
            .collect();
        let (code, stderr) = run(&env, &[]);
        assert_eq!(code, Some(2), "{missing}: {stderr}");
        assert_eq!(stderr.lines().count(), 1, "{stderr}");
        assert!(
            stderr.contains(&format!("{missing} is not set")) && stderr.contains("for example"),
            "{stderr}"
        );
    }
}

#[test]
fn bad_values_are_refused() {
    let env = [
        ("SERVER_URL", "replicator.example.com"),
        ("API_KEY", "k"),
        ("KAFKA_BROKERS", "localhost:9092"),
    ];
    let (code, stderr) = run(&env, &[]);
    assert_eq!(code, Some(2));
    assert!(stderr.contains("SERVER_URL is invalid"), "{stderr}");
    let env = [
        ("SERVER_URL", "https://r.example.com"),
        ("API_KEY", "k"),
        ("KAFKA_BROKERS", "localhost:9092"),
    ];
    let (code, stderr) = run(&env, &["--from", "yesterday"]);
    assert_eq!(code, Some(2));
    assert!(stderr.contains("yesterday"), "{stderr}");
    let (code, stderr) = run(&env, &["--interval", "0"]);
    assert_eq!(code, Some(2));
    assert!(stderr.contains("interval"), "{stderr}");
}

#[test]
fn a_property_that_would_break_exactly_once_is_refused_with_why() {
    let env = [
        ("SERVER_URL", "https://replicator.example.com"),
        ("API_KEY", "k"),
        ("KAFKA_BROKERS", "localhost:9092"),
    ];
    for (flag, says) in [
        (
            "enable.idempotence=false",
            "enable.idempotence must be true",
        ),
        ("acks=1", "acks must be all or -1"),
        ("transactional.id=mine", "set from CLIENT_ID"),
        ("no.such.property=1", "no.such.property"),
    ] {
        let (code, stderr) = run(&env, &["--kafka-property", flag]);
        assert_eq!(code, Some(2), "{flag}: {stderr}");
        assert_eq!(stderr.lines().count(), 1, "{stderr}");
        assert!(
            stderr.starts_with("error: --kafka-property is invalid") && stderr.contains(says),
            "{flag}: {stderr}"
        );
    }
    let (code, stderr) = run(&env, &["--kafka-property", "sasl.password"]);
    assert_eq!(code, Some(2), "{stderr}");
    assert!(stderr.contains("is not KEY=VALUE"), "{stderr}");
}
