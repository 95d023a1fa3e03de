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

#[test]
fn a_short_internal_token_is_refused_without_being_printed() {
    let (code, stderr) = run(&[
        ("KAFKA_BROKERS", "b:9092"),
        ("KAFKA_TOPIC", "t"),
        ("INTERNAL_TOKEN", "tiny-s3cret"),
    ]);
    assert_eq!(code, Some(2));
    assert_eq!(stderr.lines().count(), 1, "{stderr}");
    assert!(stderr.contains("INTERNAL_TOKEN"), "{stderr}");
    assert!(!stderr.contains("tiny-s3cret"), "{stderr}");
}

/// `consumer healthcheck` is what the container probes run: it must send the pod's
/// INTERNAL_TOKEN, which the pod asks of every request.
#[test]
fn the_healthcheck_passes_with_the_pods_token_only() {
    const TOKEN: &str = "healthcheck-token-0123456789";
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("a free port")
        .port();
    let addr = format!("127.0.0.1:{port}");
    let mut pod = Command::new(env!("CARGO_BIN_EXE_consumer"))
        .env_clear()
        .current_dir(std::env::temp_dir())
        // No source Kafka: the internal socket answers anyway.
        .env("KAFKA_BROKERS", "127.0.0.1:1")
        .env("KAFKA_TOPIC", "orders")
        .env("CONSUMER_ADDR", &addr)
        .env("INTERNAL_TOKEN", TOKEN)
        .stderr(std::process::Stdio::null())
        .spawn()
        .expect("pod starts");
    let check = |token: Option<&str>| {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_consumer"));
        cmd.arg("healthcheck")
            .env_clear()
            .env("CONSUMER_ADDR", &addr)
            .stderr(std::process::Stdio::null());
        if let Some(token) = token {
            cmd.env("INTERNAL_TOKEN", token);
        }
        cmd.status().expect("healthcheck runs").code()
    };
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    let mut healthy = check(Some(TOKEN));
    while healthy != Some(0) && std::time::Instant::now() < deadline {
        std::thread::sleep(std::time::Duration::from_millis(100));
        healthy = check(Some(TOKEN));
    }
    let without = check(None);
    let wrong = check(Some("another-token-0123456789"));
    let _ = pod.kill();
    let _ = pod.wait();
    assert_eq!(healthy, Some(0), "healthy with the token");
    assert_eq!(without, Some(1), "refused without it");
    assert_eq!(wrong, Some(1), "refused with another");
}

#[test]
fn kafka_properties_are_checked_at_start_without_showing_secrets() {
    let source = [("KAFKA_BROKERS", "127.0.0.1:9"), ("KAFKA_TOPIC", "orders")];
    let with = |properties: &str| {
        let mut env = source.to_vec();
        env.push(("KAFKA_PROPERTIES", properties));
        run(&env)
    };
    for (properties, says) in [
        ("no.such.property=1", "no.such.property"),
        (
            "isolation.level=read_uncommitted",
            "isolation.level must be read_committed",
        ),
        ("group.id=mine", "set from KAFKA_GROUP_ID"),
        ("bootstrap.servers=elsewhere:9092", "set from KAFKA_BROKERS"),
    ] {
        let (code, stderr) = with(properties);
        assert_eq!(code, Some(2), "{properties}: {stderr}");
        assert_eq!(stderr.lines().count(), 1, "{stderr}");
        assert!(
            stderr.starts_with("error: KAFKA_PROPERTIES is invalid") && stderr.contains(says),
            "{properties}: {stderr}"
        );
    }
    let (code, stderr) = with("sasl.password=hunter2,2");
    assert_eq!(code, Some(2));
    assert!(!stderr.contains("hunter2"), "{stderr}");
    let dir = tempfile::tempdir().expect("dir");
    let file = dir.path().join("kafka.properties");
    std::fs::write(&file, "# SCRAM\nsasl.mechanism=SCRAM-SHA-512\nno.such=1\n").expect("file");
    let mut env = source.to_vec();
    let path = file.display().to_string();
    env.push(("KAFKA_PROPERTIES_FILE", &path));
    let (code, stderr) = run(&env);
    assert_eq!(code, Some(2));
    assert!(
        stderr.contains("KAFKA_PROPERTIES_FILE is invalid") && stderr.contains("no.such"),
        "{stderr}"
    );
}
