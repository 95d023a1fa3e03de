//! The `client` binary refuses bad configuration at start-up with one line naming the
//! variable and an example value.

use std::process::Command;

fn run(env: &[(&str, &str)], args: &[&str]) -> (Option<i32>, String) {
    let (code, _, stderr) = crate::common::client(env, args);
    (code, stderr)
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

#[test]
fn an_env_file_named_by_config_is_read_instead_of_dot_env() {
    let dir = tempfile::tempdir().expect("dir");
    // A ./.env that would pass, and the named file with a bad SERVER_URL: the named one wins.
    std::fs::write(
        dir.path().join(".env"),
        "SERVER_URL=https://replicator.example.com\nAPI_KEY=k\nKAFKA_BROKERS=localhost:9092\n",
    )
    .expect(".env");
    let named = dir.path().join("client.env");
    std::fs::write(
        &named,
        "SERVER_URL=ftp://replicator.example.com\nAPI_KEY=k\nKAFKA_BROKERS=localhost:9092\n",
    )
    .expect("client.env");
    let run_in = |env: &[(&str, &str)], args: &[&str]| {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_client"));
        cmd.env_clear().current_dir(dir.path()).args(args);
        for (k, v) in env {
            cmd.env(k, v);
        }
        let out = cmd.output().expect("client runs");
        (
            out.status.code(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    };
    let path = named.to_str().expect("path");
    for (how, env, args) in [
        ("--config PATH", vec![], vec!["--config", path]),
        ("--config=PATH", vec![], vec![&*format!("--config={path}")]),
        ("CLIENT_CONFIG", vec![("CLIENT_CONFIG", path)], vec![]),
    ] {
        let args: Vec<&str> = args.iter().map(|a| &**a).collect();
        let (code, stderr) = run_in(&env, &args);
        assert_eq!(code, Some(2), "{how}: {stderr}");
        assert!(
            stderr.starts_with("error: SERVER_URL is invalid"),
            "{how} reads the named file, not ./.env: {stderr}"
        );
    }
    let (code, stderr) = run_in(&[], &["--config", "/nonexistent/client.env"]);
    assert_eq!(code, Some(2), "{stderr}");
    assert_eq!(stderr.lines().count(), 1, "{stderr}");
    assert!(
        stderr.starts_with("error: --config: cannot read /nonexistent/client.env"),
        "{stderr}"
    );
}

#[cfg(not(windows))]
#[test]
fn client_service_outside_windows_names_what_to_use_instead() {
    for action in ["install", "uninstall", "start", "stop"] {
        let (code, stderr) = run(&[], &["service", action]);
        assert_eq!(code, Some(2), "{action}: {stderr}");
        assert_eq!(stderr.lines().count(), 1, "{stderr}");
        assert!(
            stderr.contains("controls a Windows service"),
            "{action}: {stderr}"
        );
        if cfg!(target_os = "linux") {
            assert!(
                stderr.contains("infra/systemd/kafka-replicator-client.service"),
                "{stderr}"
            );
        }
    }
}
