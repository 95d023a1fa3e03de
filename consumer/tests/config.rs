//! The `consumer` binary refuses bad configuration at start-up with one line naming the
//! variable and an example value.

use std::process::Command;

fn run(env: &[(&str, &str)]) -> (Option<i32>, String) {
    let dir = std::env::temp_dir();
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_consumer"));
    cmd.env_clear().current_dir(dir);
    for (k, v) in env {
        cmd.env(k, v);
    }
    let out = cmd.output().expect("consumer runs");
    (
        out.status.code(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn missing_brokers_is_one_clear_line() {
    let (code, stderr) = run(&[("KAFKA_TOPIC", "orders")]);
    assert_eq!(code, Some(2));
    assert_eq!(stderr.lines().count(), 1, "{stderr}");
    assert!(
        stderr.contains("KAFKA_BROKERS") && stderr.contains("for example KAFKA_BROKERS="),
        "{stderr}"
    );
}

#[test]
fn missing_topic_is_one_clear_line() {
    let (code, stderr) = run(&[("KAFKA_BROKERS", "127.0.0.1:9092")]);
    assert_eq!(code, Some(2));
    assert!(stderr.contains("KAFKA_TOPIC"), "{stderr}");
}

#[test]
fn invalid_numbers_name_the_variable() {
    let (code, stderr) = run(&[
        ("KAFKA_BROKERS", "b:9092"),
        ("KAFKA_TOPIC", "t"),
        ("BUFFER_MAX_EVENTS", "lots"),
    ]);
    assert_eq!(code, Some(2));
    assert_eq!(stderr.lines().count(), 1, "{stderr}");
    assert!(
        stderr.contains("BUFFER_MAX_EVENTS") && stderr.contains("lots"),
        "{stderr}"
    );
    let (code, stderr) = run(&[
        ("KAFKA_BROKERS", "b:9092"),
        ("KAFKA_TOPIC", "t"),
        ("CONSUMER_ADDR", "nowhere"),
    ]);
    assert_eq!(code, Some(2));
    assert!(stderr.contains("CONSUMER_ADDR"), "{stderr}");
}
