//! [`RedisLimits`]: the rate-limit counts in Redis (`RATE_LIMIT_REDIS_URL`), shared by every
//! handler replica and pod: one atomic counter per bucket and window, as express-rate-limit's
//! Redis store keeps them. Redis not answering is never an outage: the caller counts in
//! this replica meanwhile, and one warning says so.

use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use redis::aio::ConnectionManager;
use shared::internal::{RateCheck, RateDecision};

/// Longest a count may take before this replica counts on its own.
const ANSWER_WITHIN: Duration = Duration::from_millis(500);
/// Least time between two attempts to connect while Redis is down.
const RECONNECT_EVERY: Duration = Duration::from_secs(1);
/// Where the counts live: `kafka-replicator:rate:<bucket>` (the bucket is an IP or a key's
/// fingerprint, never a key).
const KEY_PREFIX: &str = "kafka-replicator:rate:";

/// Counts one request and returns `{count, milliseconds left}`. The first request of a
/// window starts its expiry; a counter found without one (it cannot happen, but a key
/// written by hand could) gets one, so no bucket is ever counted forever.
const COUNT: &str = r"
local count = redis.call('INCR', KEYS[1])
if count == 1 then
  redis.call('PEXPIRE', KEYS[1], ARGV[1])
end
local left = redis.call('PTTL', KEYS[1])
if left < 0 then
  redis.call('PEXPIRE', KEYS[1], ARGV[1])
  left = tonumber(ARGV[1])
end
return {count, left}
";

/// Counts in Redis.
pub struct RedisLimits {
    client: redis::Client,
    script: redis::Script,
    connection: tokio::sync::Mutex<Connection>,
    /// Whether the last count got through: an outage is logged once, not per request.
    reachable: AtomicBool,
}

#[derive(Default)]
struct Connection {
    manager: Option<ConnectionManager>,
    last_attempt: Option<Instant>,
}

impl std::fmt::Debug for RedisLimits {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // The URL may hold a password: never printed.
        f.debug_struct("RedisLimits").finish_non_exhaustive()
    }
}

/// Why `RATE_LIMIT_REDIS_URL` cannot be used.
#[derive(Debug, thiserror::Error)]
#[error(
    "RATE_LIMIT_REDIS_URL is not a Redis URL ({reason}); give redis://host:6379 or rediss://user:password@host:6380"
)]
pub struct RedisUrlError {
    reason: String,
}

impl RedisUrlError {
    /// What is wrong with the URL, without the URL.
    pub fn reason(&self) -> &str {
        &self.reason
    }
}

impl RedisLimits {
    /// Counts in the Redis at `url` (`redis://` or `rediss://`). Nothing connects yet: the
    /// first request does, so a Redis that is down at start delays nothing.
    pub fn new(url: &str) -> Result<Self, RedisUrlError> {
        let scheme = url.split_once("://").map(|(s, _)| s);
        if !matches!(scheme, Some("redis" | "rediss")) {
            return Err(RedisUrlError {
                reason: "it must start with redis:// or rediss://".into(),
            });
        }
        // The reason names what is wrong, never the URL (it may hold a password).
        let client = redis::Client::open(url).map_err(|e| RedisUrlError {
            reason: e.category().to_owned(),
        })?;
        Ok(Self {
            client,
            script: redis::Script::new(COUNT),
            connection: tokio::sync::Mutex::new(Connection::default()),
            reachable: AtomicBool::new(true),
        })
    }

    /// Counts one request against `check.bucket`; `None` when Redis does not answer in
    /// time (the caller then counts locally).
    pub async fn check(&self, check: &RateCheck) -> Option<RateDecision> {
        let window_ms = check.window_secs.max(1).saturating_mul(1000);
        let counted = tokio::time::timeout(ANSWER_WITHIN, async {
            let mut manager = self.manager().await?;
            self.script
                .key(format!("{KEY_PREFIX}{}", check.bucket))
                .arg(window_ms)
                .invoke_async::<(u64, u64)>(&mut manager)
                .await
                .map_err(|e| e.to_string())
        })
        .await
        .unwrap_or_else(|_| Err(format!("no answer within {ANSWER_WITHIN:?}")));
        match counted {
            Ok((count, left_ms)) => {
                if !self.reachable.swap(true, Ordering::Relaxed) {
                    tracing::info!("Redis answers again; rate limits are shared once more");
                }
                Some(decision(check.limit, count, left_ms))
            }
            Err(reason) => {
                if self.reachable.swap(false, Ordering::Relaxed) {
                    tracing::warn!(%reason, "Redis (RATE_LIMIT_REDIS_URL) does not answer; this replica counts requests on its own until it does");
                } else {
                    tracing::debug!(%reason, "Redis still does not answer");
                }
                None
            }
        }
    }

    /// The connection, made on first use and again (at most once a [`RECONNECT_EVERY`])
    /// after it could not be.
    async fn manager(&self) -> Result<ConnectionManager, String> {
        let mut connection = self.connection.lock().await;
        if let Some(manager) = &connection.manager {
            return Ok(manager.clone());
        }
        if connection
            .last_attempt
            .is_some_and(|at| at.elapsed() < RECONNECT_EVERY)
        {
            return Err("not connected".into());
        }
        connection.last_attempt = Some(Instant::now());
        let manager = self
            .client
            .get_connection_manager()
            .await
            .map_err(|e| e.to_string())?;
        connection.manager = Some(manager.clone());
        Ok(manager)
    }
}

/// What `count` requests so far in a window with `left_ms` to run allow, as the pod's own
/// limiter says it: within `limit` is allowed.
fn decision(limit: u32, count: u64, left_ms: u64) -> RateDecision {
    let count = u32::try_from(count).unwrap_or(u32::MAX);
    RateDecision {
        allowed: count <= limit,
        limit,
        remaining: limit.saturating_sub(count),
        reset_secs: left_ms.div_ceil(1000),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_within_the_limit_are_allowed_and_the_reset_rounds_up() {
        assert_eq!(
            decision(3, 1, 899_001),
            RateDecision {
                allowed: true,
                limit: 3,
                remaining: 2,
                reset_secs: 900
            }
        );
        assert!(decision(3, 3, 10).allowed);
        let over = decision(3, 4, 1000);
        assert!(!over.allowed);
        assert_eq!((over.remaining, over.reset_secs), (0, 1));
    }

    #[test]
    fn only_redis_urls_are_taken_and_a_password_is_never_repeated() {
        assert!(RedisLimits::new("redis://127.0.0.1:6379").is_ok());
        assert!(RedisLimits::new("rediss://user:pw@cache.example.com:6380").is_ok());
        for bad in ["http://secret@host:6379", "127.0.0.1:6379", ""] {
            let err = RedisLimits::new(bad).unwrap_err().to_string();
            assert!(err.contains("RATE_LIMIT_REDIS_URL"), "{err}");
            assert!(!err.contains("secret"), "{err}");
        }
    }

    #[tokio::test]
    async fn redis_down_is_no_answer_within_the_deadline() {
        // Nothing listens here.
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .unwrap()
            .port();
        let limits = RedisLimits::new(&format!("redis://127.0.0.1:{port}")).unwrap();
        let check = RateCheck {
            bucket: "ip:192.0.2.1".into(),
            limit: 5,
            window_secs: 60,
        };
        let started = Instant::now();
        assert_eq!(limits.check(&check).await, None);
        assert!(started.elapsed() < ANSWER_WITHIN * 2);
    }
}
