//! The API's documentation, checked as a user meets it: headless Chromium loads Swagger UI
//! from a running stack, with the real security headers and CSP, and the rendered page
//! must list every operation and offer "Authorize"; `/openapi.json` is the document.

use crate::common;

use std::time::Duration;

use serde_json::Value;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn swagger_ui_renders_every_operation_in_a_real_browser() {
    const TEST: &str = "swagger_ui_renders_every_operation_in_a_real_browser";
    let Some(chromium) = common::tool(TEST, "CHROMIUM", "chromium") else {
        return;
    };
    let stack = common::start(common::config()).await;
    let base = stack.info.api_base.clone();
    let profile = tempfile::tempdir().expect("profile dir");
    let run = tokio::process::Command::new(&chromium)
        .args([
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--log-level=3",
            "--dump-dom",
            "--virtual-time-budget=15000",
        ])
        .arg(format!("--user-data-dir={}", profile.path().display()))
        .arg(format!("{base}/docs/"))
        .kill_on_drop(true)
        .output();
    let output = tokio::time::timeout(Duration::from_secs(90), run).await;
    let document: Value = reqwest::get(format!("{base}/openapi.json"))
        .await
        .expect("openapi.json")
        .json()
        .await
        .expect("JSON");
    stack.stop().await;

    let output = output
        .expect("chromium finished within 90 s")
        .expect("chromium ran");
    assert!(output.status.success(), "chromium failed: {output:?}");
    let dom = String::from_utf8_lossy(&output.stdout);
    for path in ["/events", "/health", "/ready", "/metrics"] {
        assert!(
            dom.contains(&format!("data-path=\"{path}\"")),
            "the rendered page lists GET {path}"
        );
    }
    assert!(
        dom.contains("Kafka Replicator API"),
        "the title came from the document"
    );
    assert!(
        dom.contains("btn authorize"),
        "the page offers Authorize for the key"
    );
    assert_eq!(document["servers"][0]["url"], "/api/v1");
    assert!(document["paths"]["/events"]["get"]["security"].is_array());
}
