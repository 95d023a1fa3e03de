//! Schemathesis against a live stack: it reads `/openapi.json` and sends generated and
//! mutated requests to every operation, failing on any 5xx, any answer that breaks the
//! documented schema, status or headers, and any method the API should refuse but takes.

use crate::common;

use std::time::Duration;

use handlers::config::RateLimitArgs;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn schemathesis_finds_no_server_error_and_no_schema_break() {
    const TEST: &str = "schemathesis_finds_no_server_error_and_no_schema_break";
    let Some(schemathesis) = common::tool(TEST, "SCHEMATHESIS", "schemathesis") else {
        return;
    };
    let mut config = common::config();
    config.events = Some(200);
    // Thousands of requests from one address: budgets are tested elsewhere.
    config.handlers.limits = RateLimitArgs {
        rate_limit_max: 0,
        rate_limit_key_max: 0,
        ..RateLimitArgs::default()
    };
    // Schemathesis reads each stream to its end, checking every event against the schema.
    config.handlers.stream_max_secs = 1;
    let stack = common::start(config).await;
    let base = stack.info.api_base.clone();
    let workdir = tempfile::tempdir().expect("work dir");
    let run = tokio::process::Command::new(&schemathesis)
        .current_dir(workdir.path())
        .args(["run", &format!("{base}/openapi.json")])
        .args(["--header", &format!("x-api-key: {}", stack.info.api_key)])
        .args(["--url", &base])
        // All checks but one: a well-formed `cursor` or `topic` can still name nothing
        // this source has, which the API rightly refuses with 400; no schema can say so.
        .args([
            "--checks",
            "all",
            "--exclude-checks",
            "positive_data_acceptance",
        ])
        .args(["--max-examples", "150", "--generation-database", "none"])
        // Streams take their second each: several at once.
        .args(["--workers", "4"])
        .args(["--no-color"])
        .kill_on_drop(true)
        .output();
    let output = tokio::time::timeout(Duration::from_secs(600), run).await;
    stack.stop().await;

    let output = output
        .expect("schemathesis finished within 10 min")
        .expect("schemathesis ran");
    let text = String::from_utf8_lossy(&output.stdout);
    let summary: Vec<&str> = text
        .lines()
        .filter(|l| l.contains("generated") || l.contains("Operations:") || l.contains("Tested:"))
        .collect();
    eprintln!("{TEST}: {}", summary.join(" | "));
    assert!(
        output.status.success(),
        "schemathesis found problems:\n{text}\n{}",
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(
        !text.contains("Authentication failed"),
        "the key was refused, so only 401s were tested:\n{text}"
    );
    assert!(
        text.contains("Tested: 5"),
        "every operation tested:\n{text}"
    );
}
