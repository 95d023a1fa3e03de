//! The router as AWS Lambda runs it: API Gateway HTTP API (v2), REST API (v1, with a named
//! stage in the path) and ALB event JSON turned into requests by `lambda_http` and answered
//! by the same service `handlers-lambda` runs, against a real consumer pod.

use crate::common;

use std::time::Duration;

use http::StatusCode;
use http_body_util::BodyExt;
use serde_json::Value;
use tower::ServiceExt;

const FIXTURE_KEY: &str = "fixture-key-0123456789abcdef";

fn fixture(name: &str) -> String {
    let path = format!(
        "{}/../infra/lambda/events/{name}",
        env!("CARGO_MANIFEST_DIR")
    );
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{path}: {e}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn api_gateway_and_alb_events_are_answered_by_the_router() {
    let mut config = common::config();
    config.handlers.keys.api_key = Some(FIXTURE_KEY.into());
    config.events = Some(20);
    let stack = common::start(config).await;
    let state = common::handlers_state(&common::stack_handlers_config(&stack, FIXTURE_KEY));
    let service = handlers::lambda::service::<lambda_http::Body>(state);
    let invoke = |file: &'static str| {
        let service = service.clone();
        async move {
            let request = lambda_http::request::from_str(&fixture(file))
                .unwrap_or_else(|e| panic!("{file}: {e}"));
            let response = service.oneshot(request).await.expect("answer");
            let status = response.status();
            let body = response
                .into_body()
                .collect()
                .await
                .expect("body")
                .to_bytes();
            let body: Value = serde_json::from_slice(&body).expect("JSON");
            (status, body)
        }
    };
    // Wait until the demo events are there, through the Lambda path itself.
    common::wait_for(
        "five events through API Gateway v2",
        Duration::from_secs(20),
        || async {
            let (status, body) = invoke("apigw_v2_events.json").await;
            status == StatusCode::OK && body["events"].as_array().is_some_and(|e| e.len() == 5)
        },
    )
    .await;

    for (file, want, code) in [
        ("apigw_v1_events.json", StatusCode::OK, None),
        (
            "apigw_v2_no_key.json",
            StatusCode::UNAUTHORIZED,
            Some("unauthorized"),
        ),
        ("alb_health.json", StatusCode::OK, None),
        (
            "alb_events_bad_limit.json",
            StatusCode::BAD_REQUEST,
            Some("invalid_limit"),
        ),
    ] {
        let (status, body) = invoke(file).await;
        assert_eq!(status, want, "{file}: {body}");
        if let Some(code) = code {
            assert_eq!(body["error"]["code"], code, "{file}");
        }
        if file == "apigw_v1_events.json" {
            assert_eq!(
                body["events"].as_array().map(Vec::len),
                Some(5),
                "REST API with stage 'prod' reaches /events"
            );
        }
    }
    stack.stop().await;
}
