//! [`RateLimiter`]: fixed-window request counts per bucket (a client IP, or an API key's
//! fingerprint). The consumer pod holds the one instance every handler replica asks; a
//! handler keeps its own only for when the pod cannot be asked.

use std::collections::HashMap;
use std::sync::{Mutex, PoisonError};
use std::time::{Duration, Instant};

use crate::internal::{RateCheck, RateDecision};

/// Most buckets tracked at once; beyond it, expired windows are dropped first and a new
/// bucket that still does not fit is let through uncounted rather than growing memory.
pub const MAX_BUCKETS: usize = 100_000;

/// One bucket's current window.
#[derive(Debug, Clone, Copy)]
struct Window {
    started: Instant,
    length: Duration,
    count: u32,
}

/// Request counts per bucket, each in its own fixed window starting at its first request.
#[derive(Debug, Default)]
pub struct RateLimiter {
    windows: Mutex<HashMap<String, Window>>,
}

impl RateLimiter {
    pub fn new() -> Self {
        Self::default()
    }

    /// Counts one request against `check.bucket` and says whether it is within the limit.
    pub fn check(&self, check: &RateCheck) -> RateDecision {
        self.check_at(check, Instant::now())
    }

    fn check_at(&self, check: &RateCheck, now: Instant) -> RateDecision {
        let length = Duration::from_secs(check.window_secs.max(1));
        let mut windows = self.windows.lock().unwrap_or_else(PoisonError::into_inner);
        if !windows.contains_key(&check.bucket) && windows.len() >= MAX_BUCKETS {
            windows.retain(|_, w| now.duration_since(w.started) < w.length);
            if windows.len() >= MAX_BUCKETS {
                return RateDecision {
                    allowed: true,
                    limit: check.limit,
                    remaining: check.limit,
                    reset_secs: check.window_secs,
                };
            }
        }
        let window = windows.entry(check.bucket.clone()).or_insert(Window {
            started: now,
            length,
            count: 0,
        });
        if now.duration_since(window.started) >= window.length || window.length != length {
            *window = Window {
                started: now,
                length,
                count: 0,
            };
        }
        let allowed = window.count < check.limit;
        if allowed {
            window.count += 1;
        }
        let left = window
            .length
            .saturating_sub(now.duration_since(window.started));
        RateDecision {
            allowed,
            limit: check.limit,
            remaining: check.limit - window.count.min(check.limit),
            reset_secs: left.as_secs() + u64::from(left.subsec_nanos() > 0),
        }
    }

    /// Buckets tracked now.
    pub fn len(&self) -> usize {
        self.windows
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check(bucket: &str, limit: u32) -> RateCheck {
        RateCheck {
            bucket: bucket.into(),
            limit,
            window_secs: 60,
        }
    }

    #[test]
    fn counts_up_to_the_limit_then_refuses_until_the_window_ends() {
        let limiter = RateLimiter::new();
        let start = Instant::now();
        for i in 0..3 {
            let d = limiter.check_at(&check("ip:1", 3), start);
            assert!(d.allowed);
            assert_eq!(d.remaining, 2 - i);
        }
        let refused = limiter.check_at(&check("ip:1", 3), start + Duration::from_secs(10));
        assert!(!refused.allowed);
        assert_eq!(refused.remaining, 0);
        assert_eq!(refused.reset_secs, 50);
        assert!(
            limiter
                .check_at(&check("ip:2", 3), start + Duration::from_secs(10))
                .allowed,
            "other buckets have their own count"
        );
        let later = limiter.check_at(&check("ip:1", 3), start + Duration::from_secs(60));
        assert!(later.allowed, "a new window starts");
        assert_eq!(later.remaining, 2);
    }

    #[test]
    fn memory_stays_bounded() {
        let limiter = RateLimiter::new();
        let start = Instant::now();
        for i in 0..MAX_BUCKETS {
            limiter.check_at(&check(&format!("ip:{i}"), 1), start);
        }
        let extra = limiter.check_at(&check("ip:new", 1), start);
        assert!(extra.allowed);
        assert_eq!(limiter.len(), MAX_BUCKETS);
        let later = start + Duration::from_secs(61);
        limiter.check_at(&check("ip:new", 1), later);
        assert_eq!(limiter.len(), 1, "expired windows made room");
    }
}
