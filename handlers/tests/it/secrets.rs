//! API keys from AWS Secrets Manager, against a real local AWS endpoint (moto's server):
//! `handlers-server` reads the secret at start through the SDK's standard variables,
//! picks up a rotation without a restart while the old key keeps working until it is
//! removed, never logs a key, and refuses to start on a secret it cannot read.

use std::io::{BufRead, BufReader};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use aws_sdk_secretsmanager::config::{Credentials, Region};

const SECRET: &str = "kafka-replicator/api-keys";
const OLD_KEY: &str = "old-key-0123456789abcdefABCDEF";
const NEW_KEY: &str = "new-key-0123456789abcdefABCDEF";

/// moto's server, or `None` (CI fails instead) when it is not installed.
fn moto_server() -> Option<PathBuf> {
    let found = std::env::var_os("MOTO_SERVER")
        .map(PathBuf::from)
        .filter(|p| p.is_file());
    if found.is_none() {
        assert!(
            std::env::var_os("CI").is_none(),
            "CI must run this with moto: `eval \"$(bash .ci/tools.sh)\"` sets MOTO_SERVER"
        );
        eprintln!("MOTO_SERVER not set (run .ci/tools.sh); skipped here, CI runs it");
    }
    found
}

/// A running process whose output lines are collected; killed on drop.
struct Process {
    child: Child,
    lines: Arc<Mutex<Vec<String>>>,
}

impl Process {
    fn spawn(mut command: Command) -> Self {
        let mut child = command
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn");
        let lines = Arc::new(Mutex::new(Vec::new()));
        for stream in [
            Box::new(child.stdout.take().expect("stdout")) as Box<dyn std::io::Read + Send>,
            Box::new(child.stderr.take().expect("stderr")),
        ] {
            let lines = Arc::clone(&lines);
            std::thread::spawn(move || {
                for line in BufReader::new(stream).lines().map_while(Result::ok) {
                    lines.lock().expect("lines").push(line);
                }
            });
        }
        Self { child, lines }
    }

    /// Waits for an output line for which `find` gives a value.
    fn wait_line<T>(&self, what: &str, find: impl Fn(&str) -> Option<T>) -> T {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if let Some(found) = self.output().iter().find_map(|l| find(l)) {
                return found;
            }
            assert!(
                Instant::now() < deadline,
                "no {what} within 30 s:\n{}",
                self.output().join("\n")
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    fn output(&self) -> Vec<String> {
        self.lines.lock().expect("lines").clone()
    }
}

impl Drop for Process {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn start_moto(path: &PathBuf) -> (Process, String) {
    let mut command = Command::new(path);
    command.args(["-H", "127.0.0.1", "-p", "0"]);
    let moto = Process::spawn(command);
    let url = moto.wait_line("moto address", |line| {
        let at = line.find("Running on http://")?;
        Some(line[at + "Running on ".len()..].trim().to_owned())
    });
    (moto, url)
}

async fn secrets_client(endpoint: &str) -> aws_sdk_secretsmanager::Client {
    let config = aws_config::defaults(aws_config::BehaviorVersion::latest())
        .endpoint_url(endpoint)
        .region(Region::new("us-east-1"))
        .credentials_provider(Credentials::new("test", "test", None, None, "test"))
        .load()
        .await;
    aws_sdk_secretsmanager::Client::new(&config)
}

/// moto's server holding one secret; its endpoint and a Secrets Manager client for it.
async fn moto_with_secret(
    path: &PathBuf,
    name: &str,
    value: &str,
) -> (Process, String, aws_sdk_secretsmanager::Client) {
    let (moto, endpoint) = start_moto(path);
    let secrets = secrets_client(&endpoint).await;
    secrets
        .create_secret()
        .name(name)
        .secret_string(value)
        .send()
        .await
        .expect("create the secret");
    (moto, endpoint, secrets)
}

fn handlers_server(endpoint: &str, secret_id: &str) -> Command {
    let mut command = Command::new(env!("CARGO_BIN_EXE_handlers-server"));
    command
        .env_clear()
        .current_dir(std::env::temp_dir())
        .env("API_KEY_SECRET_ID", secret_id)
        .env("API_KEY_REFRESH_SECS", "1")
        .env("AWS_ENDPOINT_URL", endpoint)
        .env("AWS_REGION", "us-east-1")
        .env("AWS_ACCESS_KEY_ID", "test")
        .env("AWS_SECRET_ACCESS_KEY", "test")
        .env("PORT", "0")
        .env("HOST", "127.0.0.1")
        .env("CONSUMER_ADDR", "127.0.0.1:9")
        .env("LOG_FORMAT", "json")
        .env(
            "RUST_LOG",
            "debug,hyper=info,h2=info,aws_smithy_runtime=info",
        );
    command
}

/// The status `/metrics` answers with `key` (200 for a valid key, 401 otherwise).
async fn status_with(http: &reqwest::Client, base: &str, key: &str) -> u16 {
    http.get(format!("{base}/api/v1/metrics"))
        .header("x-api-key", key)
        .send()
        .await
        .expect("answer")
        .status()
        .as_u16()
}

async fn wait_status(http: &reqwest::Client, base: &str, key: &str, want: u16, what: &str) {
    let deadline = Instant::now() + Duration::from_secs(30);
    while status_with(http, base, key).await != want {
        assert!(Instant::now() < deadline, "{what}: not within 30 s");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn keys_come_from_secrets_manager_and_rotate_without_a_restart() {
    let Some(moto_path) = moto_server() else {
        return;
    };
    let (_moto, endpoint, secrets) = moto_with_secret(
        &moto_path,
        SECRET,
        &format!(r#"{{"api_keys":["{OLD_KEY}"]}}"#),
    )
    .await;

    let server = Process::spawn(handlers_server(&endpoint, SECRET));
    let addr = server.wait_line("server address", |line| {
        let v: serde_json::Value = serde_json::from_str(line).ok()?;
        v["fields"]["addr"].as_str().map(str::to_owned)
    });
    let base = format!("http://{addr}");
    let http = reqwest::Client::new();
    assert_eq!(status_with(&http, &base, OLD_KEY).await, 200);
    assert_eq!(status_with(&http, &base, NEW_KEY).await, 401);

    // Rotation, step 1: both keys valid.
    secrets
        .put_secret_value()
        .secret_id(SECRET)
        .secret_string(format!(r#"{{"api_keys":["{OLD_KEY}","{NEW_KEY}"]}}"#))
        .send()
        .await
        .expect("add the new key");
    wait_status(&http, &base, NEW_KEY, 200, "the new key is accepted").await;
    assert_eq!(
        status_with(&http, &base, OLD_KEY).await,
        200,
        "the old key still works during the rotation"
    );

    // Step 2: the old key removed (this time as a bare-key secret).
    secrets
        .put_secret_value()
        .secret_id(SECRET)
        .secret_string(NEW_KEY)
        .send()
        .await
        .expect("remove the old key");
    wait_status(&http, &base, OLD_KEY, 401, "the old key is refused").await;
    assert_eq!(status_with(&http, &base, NEW_KEY).await, 200);

    let output = server.output().join("\n");
    assert!(
        output.contains("API keys read") && output.contains(&format!("secret {SECRET}")),
        "{output}"
    );
    for key in [OLD_KEY, NEW_KEY] {
        assert!(!output.contains(key), "a key was logged:\n{output}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unreadable_secret_stops_the_start_with_a_clear_error() {
    let Some(moto_path) = moto_server() else {
        return;
    };
    let (_moto, endpoint, _) = moto_with_secret(
        &moto_path,
        "kafka-replicator/not-keys",
        r#"{"password":"hunter2-hunter2-hunter2"}"#,
    )
    .await;

    for (secret_id, expected) in [
        ("kafka-replicator/missing", "cannot read secret"),
        ("kafka-replicator/not-keys", "holds no usable API keys"),
    ] {
        let output = tokio::task::spawn_blocking({
            let mut command = handlers_server(&endpoint, secret_id);
            move || command.output().expect("runs")
        })
        .await
        .expect("join");
        let text = String::from_utf8_lossy(&output.stderr);
        assert!(!output.status.success(), "{secret_id}: started anyway");
        assert!(
            text.contains(expected) && text.contains(secret_id),
            "{secret_id}: {text}"
        );
        assert!(!text.contains("hunter2"), "secret content printed: {text}");
    }
}
