//! The API's guard rails, seen from outside over real HTTP: rate limits shared by every
//! handler replica (per IP without a key, per key with one), `429` with `Retry-After` and
//! `RateLimit-*`, a client that keeps going through them, security headers on every
//! answer, CORS for the configured origins only, and size limits answered with JSON.

use crate::common;

use std::time::Duration;

use handlers::config::RateLimitArgs;
use reqwest::StatusCode;
use reqwest::header::HeaderMap;
use serde_json::Value;

async fn get(
    http: &reqwest::Client,
    url: &str,
    key: Option<&str>,
) -> (StatusCode, HeaderMap, Value) {
    let mut request = http.get(url);
    if let Some(key) = key {
        request = request.header("x-api-key", key);
    }
    let response = request.send().await.expect("answer");
    let status = response.status();
    let headers = response.headers().clone();
    let body = response.json().await.unwrap_or(Value::Null);
    (status, headers, body)
}

fn header<'a>(headers: &'a HeaderMap, name: &str) -> &'a str {
    headers
        .get(name)
        .unwrap_or_else(|| panic!("no {name} header"))
        .to_str()
        .expect("text")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn budgets_are_per_ip_and_per_key_and_shared_by_every_replica() {
    let mut config = common::config();
    config.handler_replicas = 3;
    config.handlers.limits = RateLimitArgs {
        rate_limit_max: 5,
        rate_limit_key_max: 8,
        rate_limit_window_secs: 600,
        ..RateLimitArgs::default()
    };
    let stack = common::start(config).await;
    let base = stack.info.api_base.clone();
    let key = stack.info.api_key.clone();
    let http = reqwest::Client::new();

    // Without a key: 5 per IP, whatever the route and whichever replica answers.
    let mut statuses = Vec::new();
    for i in 0..7 {
        let url = if i % 2 == 0 {
            format!("{base}/events")
        } else {
            format!("{base}/openapi.json")
        };
        statuses.push(get(&http, &url, Some("wrong-key-0123456789")).await.0);
    }
    let refused = get(&http, &format!("{base}/events"), None).await;
    // Probes are never counted.
    let health = get(&http, &format!("{base}/health"), None).await.0;
    // With a key: its own budget of 8.
    let mut keyed = Vec::new();
    for _ in 0..9 {
        keyed.push(get(&http, &format!("{base}/events?limit=1"), Some(&key)).await);
    }
    let served = stack.requests_per_replica();
    stack.stop().await;

    assert_eq!(
        statuses
            .iter()
            .filter(|s| **s != StatusCode::TOO_MANY_REQUESTS)
            .count(),
        5,
        "five unkeyed requests pass, over three replicas: {statuses:?}"
    );
    assert_eq!(refused.0, StatusCode::TOO_MANY_REQUESTS);
    assert_eq!(refused.2["error"]["code"], "rate_limited");
    let retry: u64 = header(&refused.1, "retry-after").parse().expect("seconds");
    assert!((1..=600).contains(&retry), "Retry-After {retry}");
    assert_eq!(header(&refused.1, "ratelimit-limit"), "5");
    assert_eq!(header(&refused.1, "ratelimit-remaining"), "0");
    assert_eq!(health, StatusCode::OK, "probes are not limited");

    let keyed_statuses: Vec<StatusCode> = keyed.iter().map(|k| k.0).collect();
    assert_eq!(
        keyed_statuses[..8],
        [StatusCode::OK; 8],
        "a valid key has its own budget: {keyed_statuses:?}"
    );
    assert_eq!(keyed_statuses[8], StatusCode::TOO_MANY_REQUESTS);
    assert_eq!(header(&keyed[0].1, "ratelimit-remaining"), "7");
    assert_eq!(header(&keyed[0].1, "ratelimit-policy"), "8;w=600");
    assert_eq!(header(&refused.1, "ratelimit-policy"), "5;w=600");
    assert!(
        served.iter().all(|n| *n >= 5),
        "every replica took part: {served:?}"
    );
}

/// 429s answered to requests with a key, from the handlers' own metrics.
fn key_refusals(metrics: &str) -> u64 {
    common::metric_sum(metrics, "api_rate_limited_total{kind=\"key\"}")
}

/// The shipped budget (18,000 requests per 900 s, 20 a second) scaled to a 5 s window:
/// the same ratio, with several windows passing within the test.
fn shipped_ratio() -> RateLimitArgs {
    let window = 5;
    RateLimitArgs {
        rate_limit_key_max: u32::try_from(
            u64::from(handlers::config::DEFAULT_RATE_LIMIT_KEY_MAX) * window
                / handlers::config::DEFAULT_RATE_LIMIT_WINDOW_SECS,
        )
        .expect("budget"),
        rate_limit_window_secs: window,
        ..RateLimitArgs::default()
    }
}

/// The client with its default settings (1 s polls, batches of 1000) against the shipped
/// budget ratio while the source produces `rate` events/s for `secs`: it paces itself by
/// the `RateLimit-*` headers, so the server refuses none of its requests, and every event
/// arrives once.
async fn client_within_the_budget(test: &str, rate: u64, secs: u64) {
    let n = rate * secs;
    let mut config = common::config();
    config.events = Some(n);
    config.rate = rate;
    config.run_client = true;
    config.client.interval_ms = 1000;
    config.client.batch_limit = 1000;
    config.handlers.limits = shipped_ratio();
    let stack = common::start(config).await;
    let copied = common::read_copies(&stack, n).await;
    let text = stack.handler_metrics();
    stack.stop().await;
    let requests: f64 = text
        .lines()
        .filter(|l| l.starts_with("api_requests_total{") && l.contains("/events"))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum();
    common::assert_exactly_once(test, &copied, n);
    let refused = key_refusals(&text);
    eprintln!("{test}: {n} events at {rate}/s in {requests} requests, {refused} refused");
    assert_eq!(refused, 0, "the client drew no 429 of its own making");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_client_draws_no_429_at_10_events_per_second() {
    client_within_the_budget("the_client_draws_no_429_at_10_events_per_second", 10, 12).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_client_draws_no_429_at_200_events_per_second() {
    client_within_the_budget("the_client_draws_no_429_at_200_events_per_second", 200, 12).await;
}

/// Another process spends the key's budget (a script polling `/metrics` with the same
/// key, just before the client starts): the client's first request draws a 429, which it
/// waits out as `Retry-After` says, and then delivers everything once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_429_drawn_by_another_user_of_the_key_is_waited_out() {
    const TEST: &str = "a_429_drawn_by_another_user_of_the_key_is_waited_out";
    const N: u64 = 300;
    const BUDGET: u32 = 20;
    let mut config = common::config();
    config.events = Some(N);
    config.handlers.limits = RateLimitArgs {
        rate_limit_key_max: BUDGET,
        rate_limit_window_secs: 8,
        ..RateLimitArgs::default()
    };
    let stack = common::start(config).await;
    let (base, key) = (stack.info.api_base.clone(), stack.info.api_key.clone());
    let http = reqwest::Client::new();
    let mut spent = 0;
    while get(&http, &format!("{base}/metrics"), Some(&key)).await.0
        != StatusCode::TOO_MANY_REQUESTS
    {
        spent += 1;
        assert!(spent <= BUDGET, "the budget holds");
    }
    let started = std::time::Instant::now();
    let replicator = client::Replicator::new(&common::client_config(&stack, 50)).expect("client");
    let mut progress = replicator.watch();
    let stop = tokio_util::sync::CancellationToken::new();
    let run = tokio::spawn(replicator.run(stop.clone()));
    let done = tokio::time::timeout(
        Duration::from_secs(60),
        progress.wait_for(|p| p.events >= N),
    )
    .await
    .is_ok_and(|seen| seen.is_ok());
    let limited = progress.borrow().rate_limited;
    let took = started.elapsed();
    stop.cancel();
    let _ = run.await;
    let copied = common::read_copies(&stack, N).await;
    stack.stop().await;
    assert!(
        done,
        "every event committed after the other process spent the budget"
    );
    common::assert_exactly_once(TEST, &copied, N);
    eprintln!("{TEST}: refused {limited} time(s), everything copied after {took:?}");
    assert!(limited >= 1, "the other process made the client draw a 429");
    assert!(
        took >= Duration::from_secs(4),
        "the client waited for the window to end ({took:?})"
    );
}

const SECURITY_HEADERS: [(&str, &str); 6] = [
    ("x-content-type-options", "nosniff"),
    ("x-frame-options", "DENY"),
    ("referrer-policy", "no-referrer"),
    (
        "strict-transport-security",
        "max-age=31536000; includeSubDomains",
    ),
    ("cross-origin-opener-policy", "same-origin"),
    ("cross-origin-resource-policy", "same-origin"),
];

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_answer_has_the_security_headers_and_json_errors() {
    let mut config = common::config();
    config.handlers.limits = RateLimitArgs {
        rate_limit_max: 6,
        ..RateLimitArgs::default()
    };
    let stack = common::start(config).await;
    let base = stack.info.api_base.clone();
    let key = stack.info.api_key.clone();
    let http = reqwest::Client::new();
    let mut answers = vec![
        get(&http, &format!("{base}/health"), None).await,
        get(&http, &format!("{base}/events?limit=1"), Some(&key)).await,
        get(&http, &format!("{base}/events"), None).await,
        get(&http, &format!("{base}/nowhere"), Some(&key)).await,
        get(&http, &format!("{base}/events?limit=0"), Some(&key)).await,
    ];
    let posted = http
        .post(format!("{base}/events"))
        .header("x-api-key", &key)
        .send()
        .await
        .expect("answer");
    answers.push((
        posted.status(),
        posted.headers().clone(),
        posted.json().await.unwrap_or(Value::Null),
    ));
    let big_body = http
        .get(format!("{base}/health"))
        .body(vec![b'x'; 64 * 1024])
        .send()
        .await
        .expect("answer");
    answers.push((
        big_body.status(),
        big_body.headers().clone(),
        big_body.json().await.unwrap_or(Value::Null),
    ));
    let big_headers = http
        .get(format!("{base}/events"))
        .header("x-api-key", &key)
        .header("x-filler", "a".repeat(20 * 1024))
        .send()
        .await
        .expect("answer");
    answers.push((
        big_headers.status(),
        big_headers.headers().clone(),
        big_headers.json().await.unwrap_or(Value::Null),
    ));
    for _ in 0..6 {
        answers.push(get(&http, &format!("{base}/openapi.json"), None).await);
    }
    stack.stop().await;

    let expected = [
        (StatusCode::OK, None),
        (StatusCode::OK, None),
        (StatusCode::UNAUTHORIZED, Some("unauthorized")),
        (StatusCode::NOT_FOUND, Some("not_found")),
        (StatusCode::BAD_REQUEST, Some("invalid_limit")),
        (StatusCode::METHOD_NOT_ALLOWED, Some("method_not_allowed")),
        (StatusCode::PAYLOAD_TOO_LARGE, Some("payload_too_large")),
        (
            StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE,
            Some("headers_too_large"),
        ),
    ];
    for (i, (status, code)) in expected.iter().enumerate() {
        assert_eq!(answers[i].0, *status, "answer {i}: {:?}", answers[i].2);
        if let Some(code) = code {
            assert_eq!(answers[i].2["error"]["code"], *code, "answer {i}");
        }
    }
    let last = answers.last().expect("answers");
    assert_eq!(last.0, StatusCode::TOO_MANY_REQUESTS, "{:?}", last.2);
    for (i, (status, headers, _)) in answers.iter().enumerate() {
        for (name, value) in SECURITY_HEADERS {
            assert_eq!(
                headers.get(name).and_then(|v| v.to_str().ok()),
                Some(value),
                "answer {i} ({status}) lacks {name}"
            );
        }
        let csp = header(headers, "content-security-policy");
        assert!(csp.contains("frame-ancestors 'none'"), "{csp}");
        assert!(headers.get("server").is_none(), "answer {i} names a server");
        assert!(headers.get("x-powered-by").is_none());
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cors_answers_only_the_configured_origins() {
    let mut config = common::config();
    config.handlers.cors.allowed_origins = vec!["https://app.example.com".into()];
    let stack = common::start(config).await;
    let base = stack.info.api_base.clone();
    let http = reqwest::Client::new();
    let preflight = |origin: &'static str| {
        http.request(reqwest::Method::OPTIONS, format!("{base}/events"))
            .header("origin", origin)
            .header("access-control-request-method", "GET")
            .header("access-control-request-headers", "x-api-key")
            .send()
    };
    let allowed = preflight("https://app.example.com").await.expect("answer");
    let other = preflight("https://evil.example.net").await.expect("answer");
    let simple = http
        .get(format!("{base}/events?limit=1"))
        .header("origin", "https://app.example.com")
        .header("x-api-key", &stack.info.api_key)
        .send()
        .await
        .expect("answer");
    stack.stop().await;

    assert!(allowed.status().is_success(), "{}", allowed.status());
    let h = allowed.headers();
    assert_eq!(
        header(h, "access-control-allow-origin"),
        "https://app.example.com"
    );
    assert!(header(h, "access-control-allow-headers").contains("x-api-key"));
    assert!(header(h, "access-control-allow-methods").contains("GET"));
    assert!(
        other.headers().get("access-control-allow-origin").is_none(),
        "another origin is not allowed"
    );
    assert_eq!(simple.status(), StatusCode::OK);
    assert_eq!(
        header(simple.headers(), "access-control-allow-origin"),
        "https://app.example.com"
    );
    assert!(header(simple.headers(), "access-control-expose-headers").contains("retry-after"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_allowed_origins_there_is_no_cross_origin_access() {
    let stack = common::start(common::config()).await;
    let answer = reqwest::Client::new()
        .get(format!("{}/health", stack.info.api_base))
        .header("origin", "https://app.example.com")
        .send()
        .await
        .expect("answer");
    stack.stop().await;
    assert!(
        answer
            .headers()
            .get("access-control-allow-origin")
            .is_none()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn forwarded_addresses_count_only_behind_trusted_proxies() {
    // Behind a trusted proxy (here: loopback), each forwarded client has its own budget.
    let budgets = |trusted: bool| async move {
        let mut config = common::config();
        config.handlers.limits = RateLimitArgs {
            rate_limit_max: 2,
            trusted_proxies: if trusted {
                vec!["127.0.0.0/8".parse().expect("net")]
            } else {
                Vec::new()
            },
            ..RateLimitArgs::default()
        };
        let stack = common::start(config).await;
        let http = reqwest::Client::new();
        let mut statuses = Vec::new();
        for client in ["198.51.100.1", "198.51.100.2", "198.51.100.3"] {
            for _ in 0..2 {
                let answer = http
                    .get(format!("{}/openapi.json", stack.info.api_base))
                    .header("x-forwarded-for", format!("203.0.113.99, {client}"))
                    .send()
                    .await
                    .expect("answer");
                statuses.push(answer.status().as_u16());
            }
        }
        stack.stop().await;
        statuses
    };
    assert_eq!(
        budgets(true).await,
        [200; 6],
        "three forwarded clients, two requests each"
    );
    assert_eq!(
        budgets(false).await,
        [200, 200, 429, 429, 429, 429],
        "an untrusted peer's X-Forwarded-For is ignored"
    );
}
