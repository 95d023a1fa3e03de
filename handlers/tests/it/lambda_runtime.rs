//! The real `handlers-lambda` binary against a Lambda Runtime API served by the test (the
//! next-invocation, response and error endpoints, as AWS's runtime interface emulator
//! serves them), with a real consumer pod behind it: exactly what AWS runs. API Gateway
//! v1, v2 and ALB events, events that are not HTTP, oversized and base64 bodies, and an
//! unreachable pod; the start-up and first-answer times are printed as measurements.

use std::collections::HashMap;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::Router;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, HeaderValue};
use axum::routing::{get, post};
use serde_json::{Value, json};
use tokio::sync::{mpsc, oneshot};

const FIXTURE_KEY: &str = "fixture-key-0123456789abcdef";

fn fixture(name: &str) -> Value {
    let path = format!(
        "{}/../infra/lambda/events/{name}",
        env!("CARGO_MANIFEST_DIR")
    );
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{path}: {e}"));
    serde_json::from_str(&text).expect("fixture JSON")
}

/// How the function ended an invocation.
#[derive(Debug)]
enum Outcome {
    Response(Value),
    Error(Value),
}

/// The Runtime API: hands out queued invocations, collects their outcomes.
#[derive(Clone)]
struct RuntimeApi {
    queue: Arc<tokio::sync::Mutex<mpsc::Receiver<(String, Value)>>>,
    waiting: Arc<Mutex<HashMap<String, oneshot::Sender<Outcome>>>>,
    first_poll: Arc<Mutex<Option<Instant>>>,
    init_error: Arc<Mutex<Option<Value>>>,
}

async fn next_invocation(State(api): State<RuntimeApi>) -> (HeaderMap, String) {
    api.first_poll
        .lock()
        .expect("lock")
        .get_or_insert_with(Instant::now);
    let (id, event) = api
        .queue
        .lock()
        .await
        .recv()
        .await
        .expect("the test keeps the queue open");
    let deadline = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("clock")
        + Duration::from_secs(60);
    let mut headers = HeaderMap::new();
    let mut set = |name: &'static str, value: String| {
        headers.insert(name, HeaderValue::from_str(&value).expect("header"));
    };
    set("lambda-runtime-aws-request-id", id);
    set(
        "lambda-runtime-deadline-ms",
        deadline.as_millis().to_string(),
    );
    set(
        "lambda-runtime-invoked-function-arn",
        "arn:aws:lambda:eu-west-1:123456789012:function:kafka-replicator-api".into(),
    );
    set(
        "lambda-runtime-trace-id",
        "Root=1-5759e988-bd862e3fe1be46a994272793;Sampled=1".into(),
    );
    (headers, event.to_string())
}

fn finish(api: &RuntimeApi, id: &str, outcome: Outcome) {
    if let Some(waiter) = api.waiting.lock().expect("lock").remove(id) {
        let _ = waiter.send(outcome);
    }
}

/// `POST …/invocation/{id}/response` or `…/error`: the outcome, by the last path segment.
async fn invocation_outcome(
    State(api): State<RuntimeApi>,
    Path((id, kind)): Path<(String, String)>,
    body: String,
) -> &'static str {
    let value = serde_json::from_str(&body).unwrap_or(Value::String(body));
    let outcome = if kind == "response" {
        Outcome::Response(value)
    } else {
        Outcome::Error(value)
    };
    finish(&api, &id, outcome);
    "{}"
}

async fn init_error(State(api): State<RuntimeApi>, body: String) -> &'static str {
    *api.init_error.lock().expect("lock") = Some(Value::String(body));
    "{}"
}

/// A Runtime API on a free port and the handle to invoke through it.
struct Harness {
    addr: String,
    api: RuntimeApi,
    queue: mpsc::Sender<(String, Value)>,
    next_id: u64,
}

impl Harness {
    async fn start() -> Self {
        let (queue, receiver) = mpsc::channel(16);
        let api = RuntimeApi {
            queue: Arc::new(tokio::sync::Mutex::new(receiver)),
            waiting: Arc::default(),
            first_poll: Arc::default(),
            init_error: Arc::default(),
        };
        let app = Router::new()
            .route("/2018-06-01/runtime/invocation/next", get(next_invocation))
            .route(
                "/2018-06-01/runtime/invocation/{id}/{kind}",
                post(invocation_outcome),
            )
            .route("/2018-06-01/runtime/init/error", post(init_error))
            .with_state(api.clone());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let addr = listener.local_addr().expect("addr").to_string();
        tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        Self {
            addr,
            api,
            queue,
            next_id: 0,
        }
    }

    /// Sends one event to the function and waits for its outcome.
    async fn invoke(&mut self, event: Value) -> Outcome {
        self.next_id += 1;
        let id = format!("invocation-{}", self.next_id);
        let (tx, rx) = oneshot::channel();
        self.api
            .waiting
            .lock()
            .expect("lock")
            .insert(id.clone(), tx);
        self.queue.send((id, event)).await.expect("queue");
        tokio::time::timeout(Duration::from_secs(60), rx)
            .await
            .expect("the function answered within 60 s")
            .expect("outcome")
    }

    /// The HTTP answer (status, headers, JSON body) of an invocation that must succeed.
    async fn http(&mut self, event: Value) -> (u16, Value, Value) {
        match self.invoke(event).await {
            Outcome::Response(r) => {
                let status = r["statusCode"].as_u64().expect("statusCode") as u16;
                let body_text = r["body"].as_str().unwrap_or_default();
                let body = serde_json::from_str(body_text).unwrap_or(Value::Null);
                // v2 answers in `headers`; v1 and ALB in `multiValueHeaders`.
                let mut headers = r["headers"].as_object().cloned().unwrap_or_default();
                for (name, values) in r["multiValueHeaders"].as_object().into_iter().flatten() {
                    headers.insert(name.clone(), values[0].clone());
                }
                (status, Value::Object(headers), body)
            }
            Outcome::Error(e) => panic!("invocation error instead of an HTTP answer: {e}"),
        }
    }
}

/// `handlers-lambda` with its Lambda environment, logs collected; killed on drop.
struct Function {
    child: Child,
    logs: Arc<Mutex<Vec<String>>>,
}

impl Function {
    fn start(runtime_api: &str, consumer_addr: &str, internal_token: Option<&str>) -> Self {
        // HANDLERS_LAMBDA_BIN measures another build (e.g. the release binary).
        let binary = std::env::var("HANDLERS_LAMBDA_BIN")
            .unwrap_or_else(|_| env!("CARGO_BIN_EXE_handlers-lambda").to_owned());
        let mut command = Command::new(binary);
        command.env_clear();
        if let Some(token) = internal_token {
            command.env("INTERNAL_TOKEN", token);
        }
        let mut child = command
            .current_dir(std::env::temp_dir())
            .env("AWS_LAMBDA_RUNTIME_API", runtime_api)
            .env("AWS_LAMBDA_FUNCTION_NAME", "kafka-replicator-api")
            .env("AWS_LAMBDA_FUNCTION_MEMORY_SIZE", "256")
            .env("AWS_LAMBDA_FUNCTION_VERSION", "$LATEST")
            .env("AWS_LAMBDA_LOG_STREAM_NAME", "test-stream")
            .env(
                "AWS_LAMBDA_LOG_GROUP_NAME",
                "/aws/lambda/kafka-replicator-api",
            )
            .env("API_KEY", FIXTURE_KEY)
            .env("CONSUMER_ADDR", consumer_addr)
            .env("RUST_LOG", "info")
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("handlers-lambda starts");
        let logs = Arc::new(Mutex::new(Vec::new()));
        let stderr = child.stderr.take().expect("stderr");
        let sink = Arc::clone(&logs);
        std::thread::spawn(move || {
            use std::io::BufRead;
            for line in std::io::BufReader::new(stderr)
                .lines()
                .map_while(Result::ok)
            {
                sink.lock().expect("logs").push(line);
            }
        });
        Self { child, logs }
    }

    fn log_lines(&self, containing: &str) -> usize {
        self.logs
            .lock()
            .expect("logs")
            .iter()
            .filter(|l| l.contains(containing))
            .count()
    }
}

impl Drop for Function {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn handlers_lambda_answers_gateway_and_alb_events_through_the_runtime_api() {
    let mut config = emulator::StackConfig {
        events: Some(20),
        rate: 0,
        run_client: false,
        topic: format!("lambda-{}", std::process::id()),
        ..emulator::StackConfig::default()
    };
    config.pod.source.group_id = format!("{}-group", config.topic);
    config.handlers.keys.api_key = Some(FIXTURE_KEY.into());
    let stack = emulator::Stack::start(config).await.expect("stack");
    let mut harness = Harness::start().await;
    let spawned = Instant::now();
    let function = Function::start(
        &harness.addr,
        &stack.pod_addr.to_string(),
        stack.internal_token(),
    );

    // The demo events reach the pod; then five come back through API Gateway v2.
    let deadline = Instant::now() + Duration::from_secs(30);
    let mut first_answer = None;
    loop {
        let (status, _, body) = harness.http(fixture("apigw_v2_events.json")).await;
        first_answer.get_or_insert_with(|| spawned.elapsed());
        if status == 200 && body["events"].as_array().is_some_and(|e| e.len() == 5) {
            break;
        }
        assert!(Instant::now() < deadline, "no events: {status} {body}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let init = harness
        .api
        .first_poll
        .lock()
        .expect("lock")
        .map(|t| t.duration_since(spawned));
    eprintln!(
        "handlers-lambda: init {init:?} until the first /next, first answer {first_answer:?} after start"
    );

    let (status, headers, body) = harness.http(fixture("apigw_v1_events.json")).await;
    assert_eq!(status, 200, "REST API with stage 'prod': {body}");
    assert_eq!(body["events"].as_array().map(Vec::len), Some(5));
    assert_eq!(
        headers["x-frame-options"], "DENY",
        "security headers: {headers}"
    );

    let (status, _, body) = harness.http(fixture("apigw_v2_no_key.json")).await;
    assert_eq!(
        (status, &body["error"]["code"]),
        (401, &json!("unauthorized"))
    );
    let (status, _, _) = harness.http(fixture("alb_health.json")).await;
    assert_eq!(status, 200, "ALB");
    let (status, _, body) = harness.http(fixture("alb_events_bad_limit.json")).await;
    assert_eq!(
        (status, &body["error"]["code"]),
        (400, &json!("invalid_limit"))
    );

    // Not an HTTP event: a 400 in gateway shape, not an invocation error.
    let (status, _, body) = harness.http(json!({"hello": "world"})).await;
    assert_eq!(
        (status, &body["error"]["code"]),
        (400, &json!("bad_request"))
    );

    // A base64 body: decoded and taken; too large: 413.
    let mut small = fixture("apigw_v2_events.json");
    small["body"] = json!("aGVsbG8=");
    small["isBase64Encoded"] = json!(true);
    assert_eq!(harness.http(small).await.0, 200);
    let mut big = fixture("apigw_v2_events.json");
    big["body"] = json!(base64_of(&vec![b'x'; 64 * 1024]));
    big["isBase64Encoded"] = json!(true);
    let (status, _, body) = harness.http(big).await;
    assert_eq!(
        (status, &body["error"]["code"]),
        (413, &json!("payload_too_large"))
    );

    assert!(
        harness.api.init_error.lock().expect("lock").is_none(),
        "no init error"
    );
    drop(function);
    stack.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unreachable_pod_is_a_quick_503_logged_once_per_outage() {
    let mut harness = Harness::start().await;
    let function = Function::start(&harness.addr, "127.0.0.1:9", None);
    for _ in 0..3 {
        let started = Instant::now();
        let (status, headers, body) = harness.http(fixture("apigw_v2_events.json")).await;
        assert_eq!(
            (status, &body["error"]["code"]),
            (503, &json!("unavailable"))
        );
        assert!(headers["retry-after"].is_string(), "{headers}");
        assert!(
            started.elapsed() < Duration::from_secs(10),
            "answered long before the invocation's deadline"
        );
    }
    assert_eq!(
        function.log_lines("consumer pod unreachable"),
        1,
        "one log line for the outage"
    );
}

fn base64_of(bytes: &[u8]) -> String {
    use base64::Engine;
    base64::engine::general_purpose::STANDARD.encode(bytes)
}
