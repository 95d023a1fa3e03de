//! The `handlers-server` binary: refuses a missing or weak API key at start-up, serves the
//! API, and drains and exits cleanly on SIGTERM.

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// `handlers-server` on a free port with a test key and `extra` variables, JSON logs on a
/// pipe (kept open by the returned reader); also the fields of its "serving" log line.
fn start_server(
    extra: &[(&str, &std::ffi::OsStr)],
) -> (
    std::process::Child,
    std::io::Lines<BufReader<std::process::ChildStderr>>,
    serde_json::Value,
) {
    let mut command = Command::new(env!("CARGO_BIN_EXE_handlers-server"));
    command
        .env_clear()
        .current_dir(std::env::temp_dir())
        .env("API_KEY", "server-test-key-0123456789")
        .env("PORT", "0")
        .env("HOST", "127.0.0.1")
        .env("CONSUMER_ADDR", "127.0.0.1:9")
        .env("LOG_FORMAT", "json")
        .stderr(Stdio::piped());
    for (name, value) in extra {
        command.env(name, value);
    }
    let mut server = command.spawn().expect("starts");
    let mut lines = BufReader::new(server.stderr.take().expect("stderr")).lines();
    let fields = lines
        .by_ref()
        .map_while(Result::ok)
        .find_map(|line| {
            let v: serde_json::Value = serde_json::from_str(&line).ok()?;
            v["fields"]["addr"].is_string().then(|| v["fields"].clone())
        })
        .expect("the server logs its address");
    (server, lines, fields)
}

#[test]
fn missing_or_short_key_is_one_clear_line() {
    for env in [vec![], vec![("API_KEY", "k3y-tiny")]] {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_handlers-server"));
        cmd.env_clear().current_dir(std::env::temp_dir());
        for (k, v) in &env {
            cmd.env(k, v);
        }
        let out = cmd.output().expect("runs");
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{stderr}");
        assert_eq!(stderr.lines().count(), 1, "{stderr}");
        assert!(
            stderr.contains("API_KEY") && stderr.contains("for example"),
            "{stderr}"
        );
        assert!(
            !stderr.contains("k3y-tiny"),
            "the key value is never printed: {stderr}"
        );
    }
}

#[test]
fn generates_distinct_256_bit_keys() {
    let key = || {
        let out = Command::new(env!("CARGO_BIN_EXE_handlers-server"))
            .arg("generate-api-key")
            .env_clear()
            .output()
            .expect("runs");
        assert!(out.status.success());
        String::from_utf8(out.stdout)
            .expect("utf8")
            .trim()
            .to_owned()
    };
    let (a, b) = (key(), key());
    assert_eq!(a.len(), 43, "{a}");
    assert!(
        a.bytes()
            .all(|c| c.is_ascii_alphanumeric() || c == b'-' || c == b'_')
    );
    assert_ne!(a, b);
}

#[cfg(unix)]
#[test]
fn serves_and_stops_on_sigterm() {
    let (mut server, _log, started) = start_server(&[]);
    let addr = started["addr"].as_str().expect("addr").to_owned();

    let mut stream = std::net::TcpStream::connect(&addr).expect("connect");
    use std::io::{Read, Write};
    stream
        .write_all(b"GET /api/v1/health HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        .expect("send");
    let mut answer = String::new();
    stream.read_to_string(&mut answer).expect("read");
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    let port = addr.rsplit(':').next().expect("port").to_owned();
    let healthcheck = || {
        Command::new(env!("CARGO_BIN_EXE_handlers-server"))
            .arg("healthcheck")
            .env_clear()
            .env("PORT", &port)
            .output()
            .expect("healthcheck runs")
            .status
    };
    assert!(healthcheck().success(), "healthcheck passes while serving");

    let status = Command::new("kill")
        .args(["-TERM", &server.id().to_string()])
        .status()
        .expect("kill");
    assert!(status.success());
    let deadline = Instant::now() + Duration::from_secs(10);
    let exit = loop {
        if let Some(exit) = server.try_wait().expect("wait") {
            break exit;
        }
        assert!(Instant::now() < deadline, "server did not stop on SIGTERM");
        std::thread::sleep(Duration::from_millis(50));
    };
    assert!(exit.success(), "clean exit: {exit}");
    assert_eq!(
        healthcheck().code(),
        Some(1),
        "healthcheck fails once stopped"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn serves_https_with_the_configured_certificate() {
    let dir = tempfile::tempdir().expect("dir");
    let generated =
        rcgen::generate_simple_self_signed(vec!["localhost".into()]).expect("certificate");
    let (cert, key) = (dir.path().join("tls.crt"), dir.path().join("tls.key"));
    std::fs::write(&cert, generated.cert.pem()).expect("write cert");
    std::fs::write(&key, generated.key_pair.serialize_pem()).expect("write key");

    let (mut server, _log, started) =
        start_server(&[("TLS_CERT", cert.as_os_str()), ("TLS_KEY", key.as_os_str())]);
    let addr = started["addr"].as_str().expect("addr").to_owned();
    let tls = started["tls"].as_bool().expect("tls");
    assert!(tls, "the server says it speaks TLS");
    let port = addr.rsplit(':').next().expect("port");

    let trusting = reqwest::Client::builder()
        .add_root_certificate(
            reqwest::Certificate::from_pem(generated.cert.pem().as_bytes()).expect("pem"),
        )
        .build()
        .expect("client");
    let health = trusting
        .get(format!("https://localhost:{port}/api/v1/health"))
        .send()
        .await
        .expect("HTTPS answer");
    assert_eq!(health.status(), 200);
    assert!(health.headers().get("strict-transport-security").is_some());
    let plain = reqwest::get(format!("http://127.0.0.1:{port}/api/v1/health")).await;
    assert!(
        plain.is_err(),
        "plain HTTP is not served on the TLS port: {plain:?}"
    );
    let untrusting = reqwest::get(format!("https://localhost:{port}/api/v1/health")).await;
    assert!(
        untrusting.is_err(),
        "an unknown certificate is refused by default"
    );
    let _ = server.kill();
    let _ = server.wait();
}
