//! The Postman collection shipped in `infra/postman`, run by newman against a live stack:
//! every route with its status and body checks, as an API consumer would run it.

use crate::common;

use std::time::Duration;

use handlers::config::RateLimitArgs;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_postman_collection_passes_against_the_emulator() {
    const TEST: &str = "the_postman_collection_passes_against_the_emulator";
    let Some(newman) = common::tool(TEST, "NEWMAN", "newman") else {
        return;
    };
    let mut config = common::config();
    config.events = Some(30);
    config.handlers.limits = RateLimitArgs {
        rate_limit_max: 0,
        ..RateLimitArgs::default()
    };
    let stack = common::start(config).await;
    let collection = format!(
        "{}/../infra/postman/kafka-replicator.postman_collection.json",
        env!("CARGO_MANIFEST_DIR")
    );
    // The collection pages through events: wait until the demo events are in the pod.
    let (base, key) = (stack.info.api_base.clone(), stack.info.api_key.clone());
    common::wait_for("the demo events", Duration::from_secs(20), || {
        let (base, key) = (base.clone(), key.clone());
        async move {
            let page: serde_json::Value = reqwest::Client::new()
                .get(format!("{base}/events?cursor=earliest&limit=30"))
                .header("x-api-key", key)
                .send()
                .await
                .expect("answer")
                .json()
                .await
                .expect("JSON");
            page["events"].as_array().is_some_and(|e| e.len() == 30)
        }
    })
    .await;
    let run = |api_key: String| {
        tokio::process::Command::new(&newman)
            .args(["run", &collection, "--color", "off", "--disable-unicode"])
            .args(["--env-var", &format!("base_url={base}")])
            .args(["--env-var", &format!("api_key={api_key}")])
            .kill_on_drop(true)
            .output()
    };
    let passing = tokio::time::timeout(Duration::from_secs(120), run(key.clone())).await;
    let failing =
        tokio::time::timeout(Duration::from_secs(120), run("wrong-key-0123456789".into())).await;
    stack.stop().await;

    let passing = passing.expect("newman finished").expect("newman ran");
    let report = String::from_utf8_lossy(&passing.stdout);
    assert!(passing.status.success(), "newman failed:\n{report}");
    let summary: Vec<&str> = report
        .lines()
        .filter(|l| l.contains("requests") || l.contains("assertions"))
        .collect();
    eprintln!("{TEST}: {}", summary.join(" | "));
    let failing = failing.expect("newman finished").expect("newman ran");
    assert!(
        !failing.status.success(),
        "with a wrong key the keyed checks must fail:\n{}",
        String::from_utf8_lossy(&failing.stdout)
    );
}
