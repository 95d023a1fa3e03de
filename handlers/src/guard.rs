//! The request guard: names who is calling (a valid API key's fingerprint, else the client
//! IP, found through trusted proxies only) and counts the request against that caller's
//! budget in Redis (`RATE_LIMIT_REDIS_URL`) or else in the consumer pod, shared by every
//! replica. Over budget: `429` with
//! `Retry-After` and `RateLimit-*` headers.

use std::net::{IpAddr, SocketAddr};

use crate::config::IpNet;
use axum::extract::{ConnectInfo, Request, State};
use axum::http::header::{AUTHORIZATION, HeaderMap, HeaderName, HeaderValue};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use shared::internal::{RateCheck, RateDecision};
use shared::{ApiError, ErrorCode};

use crate::AppState;

/// The peer address when there is no socket to ask (Lambda: the gateway's `sourceIp`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PeerIp(pub IpAddr);

/// Set on a request that presented a valid key: who the key is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Authenticated(pub crate::api_keys::Caller);

/// Set on a request that presented a key that is not valid.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct WrongKey;

const RATELIMIT_LIMIT: HeaderName = HeaderName::from_static("ratelimit-limit");
const RATELIMIT_REMAINING: HeaderName = HeaderName::from_static("ratelimit-remaining");
const RATELIMIT_RESET: HeaderName = HeaderName::from_static("ratelimit-reset");
/// The budget and its window (`18000;w=900`, as the IETF RateLimit header fields draft
/// writes a policy): a client that starts mid-window learns how long windows are.
const RATELIMIT_POLICY: HeaderName = HeaderName::from_static("ratelimit-policy");
const FORWARDED_FOR: HeaderName = HeaderName::from_static("x-forwarded-for");

/// The key a request presents, if any: `x-api-key`, else `Authorization: Bearer`.
pub fn presented_key(headers: &HeaderMap) -> Option<&str> {
    if let Some(key) = headers.get("x-api-key") {
        return key.to_str().ok();
    }
    let auth = headers.get(AUTHORIZATION)?.to_str().ok()?;
    let (scheme, token) = auth.split_once(' ')?;
    scheme.eq_ignore_ascii_case("bearer").then(|| token.trim())
}

/// The client's address: the peer, unless the peer is a trusted proxy, in which case the
/// `X-Forwarded-For` chain is walked from the right past every trusted proxy.
pub fn client_ip(request: &Request, trusted: &[IpNet]) -> Option<IpAddr> {
    let peer = request
        .extensions()
        .get::<ConnectInfo<SocketAddr>>()
        .map(|c| c.0.ip())
        .or_else(|| request.extensions().get::<PeerIp>().map(|p| p.0))?;
    let is_trusted = |ip: &IpAddr| trusted.iter().any(|net| net.contains(ip));
    if !is_trusted(&peer) {
        return Some(peer);
    }
    let chain: Vec<&str> = request
        .headers()
        .get_all(FORWARDED_FOR)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .map(str::trim)
        .collect();
    let mut client = peer;
    for hop in chain.iter().rev() {
        let Ok(ip) = hop.parse::<IpAddr>() else { break };
        client = ip;
        if !is_trusted(&ip) {
            break;
        }
    }
    Some(client)
}

/// Middleware on every route: identify the caller, count the request, refuse when over.
pub async fn guard(State(state): State<AppState>, mut request: Request, next: Next) -> Response {
    let keys = state.keys.current().await;
    let identity = match presented_key(request.headers()) {
        Some(key) => match keys.identify(key) {
            Some(id) => Some(id),
            None => {
                request.extensions_mut().insert(WrongKey);
                None
            }
        },
        None => None,
    };
    let limits = &state.limits;
    let (bucket, limit, kind) = match &identity {
        Some(caller) => (
            format!("key:{}", caller.fingerprint),
            limits.rate_limit_key_max,
            "key",
        ),
        None => {
            let bucket = client_ip(&request, &limits.trusted_proxies)
                .map_or_else(|| "ip:unknown".to_owned(), shared::ratelimit::ip_bucket);
            (bucket, limits.rate_limit_max, "ip")
        }
    };
    if let Some(id) = identity {
        request.extensions_mut().insert(Authenticated(id));
    }
    // Orchestrator probes call these every few seconds; they carry no data.
    if limit == 0 || is_probe(request.uri().path(), &state.api_prefix) {
        return next.run(request).await;
    }
    let check = RateCheck {
        bucket,
        limit,
        window_secs: limits.rate_limit_window_secs,
    };
    let shared = match &state.redis_limits {
        Some(redis) => redis.check(&check).await,
        None => state.pod.rate(&check).await,
    };
    let decision = shared.unwrap_or_else(|| state.local_limiter.check(&check));
    let mut response = if decision.allowed {
        next.run(request).await
    } else {
        state.metrics.rate_limited.with_label_values(&[kind]).inc();
        ApiError {
            retry_after_secs: Some(decision.reset_secs.max(1)),
            ..ApiError::new(
                ErrorCode::RateLimited,
                format!(
                    "too many requests: {} per {} s allowed; retry after the window resets",
                    decision.limit, limits.rate_limit_window_secs
                ),
            )
        }
        .into_response()
    };
    set_rate_headers(
        response.headers_mut(),
        &decision,
        limits.rate_limit_window_secs,
    );
    response
}

fn is_probe(path: &str, prefix: &str) -> bool {
    path.strip_prefix(prefix)
        .is_some_and(|rest| rest == "/health" || rest == "/ready")
}

fn set_rate_headers(headers: &mut HeaderMap, decision: &RateDecision, window_secs: u64) {
    if let Ok(policy) = HeaderValue::from_str(&format!("{};w={window_secs}", decision.limit)) {
        headers.insert(RATELIMIT_POLICY, policy);
    }
    headers.insert(RATELIMIT_LIMIT, HeaderValue::from(decision.limit));
    headers.insert(RATELIMIT_REMAINING, HeaderValue::from(decision.remaining));
    headers.insert(RATELIMIT_RESET, HeaderValue::from(decision.reset_secs));
}

/// Middleware on keyed routes: only requests the guard found a valid key on pass.
pub async fn require_api_key(
    State(state): State<AppState>,
    request: Request,
    next: Next,
) -> Result<Response, ApiError> {
    if request.extensions().get::<Authenticated>().is_some() {
        return Ok(next.run(request).await);
    }
    let reason = if request.extensions().get::<WrongKey>().is_some() {
        "invalid"
    } else {
        "missing"
    };
    state
        .metrics
        .auth_failures
        .with_label_values(&[reason])
        .inc();
    Err(ApiError::new(
        ErrorCode::Unauthorized,
        "a valid API key is required (header x-api-key, or Authorization: Bearer)",
    ))
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::body::Body;

    #[test]
    fn finds_the_key_in_either_header() {
        let mut h = HeaderMap::new();
        assert_eq!(presented_key(&h), None);
        h.insert(AUTHORIZATION, "Bearer abc".parse().expect("header"));
        assert_eq!(presented_key(&h), Some("abc"));
        h.insert(AUTHORIZATION, "Basic abc".parse().expect("header"));
        assert_eq!(presented_key(&h), None);
        h.insert("x-api-key", "xyz".parse().expect("header"));
        assert_eq!(presented_key(&h), Some("xyz"));
    }

    fn request(peer: &str, forwarded: Option<&str>) -> Request {
        let mut builder = Request::builder().uri("/");
        if let Some(f) = forwarded {
            builder = builder.header("x-forwarded-for", f);
        }
        let mut request = builder.body(Body::empty()).expect("request");
        let addr: SocketAddr = format!("{peer}:1234").parse().expect("addr");
        request.extensions_mut().insert(ConnectInfo(addr));
        request
    }

    fn ip(s: &str) -> Option<IpAddr> {
        Some(s.parse().expect("ip"))
    }

    #[test]
    fn forwarded_for_is_believed_only_from_trusted_proxies() {
        let trusted: Vec<IpNet> = vec!["10.0.0.0/8".parse().expect("net")];
        // No trusted proxy: the peer, whatever the header claims.
        assert_eq!(
            client_ip(&request("203.0.113.9", Some("1.2.3.4")), &[]),
            ip("203.0.113.9")
        );
        assert_eq!(
            client_ip(&request("203.0.113.9", Some("1.2.3.4")), &trusted),
            ip("203.0.113.9")
        );
        // Through two trusted hops: the first untrusted address from the right.
        assert_eq!(
            client_ip(
                &request("10.0.0.5", Some("6.6.6.6, 198.51.100.7, 10.1.1.1")),
                &trusted
            ),
            ip("198.51.100.7")
        );
        // A trusted proxy without the header: the proxy itself.
        assert_eq!(
            client_ip(&request("10.0.0.5", None), &trusted),
            ip("10.0.0.5")
        );
        // Garbage in the chain stops the walk at the last good hop.
        assert_eq!(
            client_ip(&request("10.0.0.5", Some("nonsense, 10.2.2.2")), &trusted),
            ip("10.2.2.2")
        );
    }

    #[tokio::test]
    async fn ipv6_callers_of_one_64_share_a_budget() {
        use clap::Parser;
        use tower::ServiceExt;
        // No pod to ask: the replica counts on its own, as it does during an outage.
        let config = crate::Config::try_parse_from([
            "handlers",
            "--api-key",
            "0123456789abcdef0123",
            "--consumer-addr",
            "127.0.0.1:9",
            "--rate-limit-max",
            "2",
        ])
        .expect("config");
        let keys = crate::ApiKeys::parse("0123456789abcdef0123").expect("key");
        let app = crate::router(
            crate::AppState::with_keys(&config, crate::KeyStore::fixed(keys)).expect("state"),
        );
        let status = |peer: &str| {
            let mut request = Request::builder()
                .uri("/api/v1/openapi.json")
                .body(Body::empty())
                .expect("request");
            let addr: SocketAddr = format!("[{peer}]:443").parse().expect("addr");
            request.extensions_mut().insert(ConnectInfo(addr));
            let app = app.clone();
            async move {
                app.oneshot(request)
                    .await
                    .expect("answer")
                    .status()
                    .as_u16()
            }
        };
        assert_eq!(status("2001:db8:1:2::1").await, 200);
        assert_eq!(status("2001:db8:1:2:ffff::9").await, 200);
        assert_eq!(
            status("2001:db8:1:2:abcd::3").await,
            429,
            "a third address of the same /64 shares its budget"
        );
        assert_eq!(
            status("2001:db8:1:3::1").await,
            200,
            "another /64 has its own"
        );
    }

    #[test]
    fn probes_are_only_health_and_ready() {
        assert!(is_probe("/api/v1/health", "/api/v1"));
        assert!(is_probe("/ready", ""));
        assert!(!is_probe("/api/v1/events", "/api/v1"));
        assert!(!is_probe("/api/v1/health/x", "/api/v1"));
    }
}
