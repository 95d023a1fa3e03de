//! [`RateLimiter`]: fixed-window request counts per bucket (a client IP, or an API key's
//! fingerprint). The consumer pod holds the one instance every handler replica asks; a
//! handler keeps its own only for when the pod cannot be asked.

use std::net::IpAddr;
use std::num::NonZeroUsize;
use std::sync::{Mutex, PoisonError};
use std::time::{Duration, Instant};

use crate::internal::{RateCheck, RateDecision};

/// Most buckets tracked at once; a new bucket beyond it takes the place of the one used
/// longest ago, so every caller is always counted and memory stays bounded.
pub const MAX_BUCKETS: usize = 100_000;

/// The bucket name of a caller without a valid key: its IPv4 address, or the /64 network of
/// its IPv6 address (one host often holds a whole /64, so each address alone would give
/// it endless budgets).
pub fn ip_bucket(ip: IpAddr) -> String {
    match ip {
        IpAddr::V4(v4) => format!("ip:{v4}"),
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => format!("ip:{v4}"),
            None => {
                let network = u128::from(v6) & !((1u128 << 64) - 1);
                format!("ip:{}/64", std::net::Ipv6Addr::from(network))
            }
        },
    }
}

/// One bucket's current window.
#[derive(Debug, Clone, Copy)]
struct Window {
    started: Instant,
    length: Duration,
    count: u32,
}

/// Request counts per bucket, each in its own fixed window starting at its first request.
#[derive(Debug)]
pub struct RateLimiter {
    /// Grows with the buckets in use: a cache made with its bound up front would hold
    /// room for all of them (some 2 MB) in every process from the start.
    windows: Mutex<lru::LruCache<String, Window>>,
    max_buckets: NonZeroUsize,
}

impl Default for RateLimiter {
    fn default() -> Self {
        Self::with_capacity(MAX_BUCKETS)
    }
}

impl RateLimiter {
    pub fn new() -> Self {
        Self::default()
    }

    /// A limiter tracking at most `buckets` buckets.
    pub fn with_capacity(buckets: usize) -> Self {
        Self {
            windows: Mutex::new(lru::LruCache::unbounded()),
            max_buckets: NonZeroUsize::new(buckets).unwrap_or(NonZeroUsize::MIN),
        }
    }

    /// Counts one request against `check.bucket` and says whether it is within the limit.
    pub fn check(&self, check: &RateCheck) -> RateDecision {
        self.check_at(check, Instant::now())
    }

    fn check_at(&self, check: &RateCheck, now: Instant) -> RateDecision {
        let length = Duration::from_secs(check.window_secs.max(1));
        let mut windows = self.windows.lock().unwrap_or_else(PoisonError::into_inner);
        // Full: the bucket used longest ago makes room (an expired one, if any is that old).
        if windows.len() >= self.max_buckets.get() && !windows.contains(&check.bucket) {
            windows.pop_lru();
        }
        let window = windows.get_or_insert_mut(check.bucket.clone(), || Window {
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
    fn a_full_table_makes_room_by_the_bucket_used_longest_ago_and_counts_every_caller() {
        let limiter = RateLimiter::with_capacity(1000);
        let start = Instant::now();
        let old = limiter.check_at(&check("ip:old", 1), start);
        assert!(old.allowed);
        for i in 0..999 {
            limiter.check_at(&check(&format!("ip:{i}"), 1), start);
        }
        // A busy caller stays counted: its use keeps its bucket the newest.
        assert!(!limiter.check_at(&check("ip:old", 1), start).allowed);
        let flood = limiter.check_at(&check("ip:new", 1), start);
        assert!(flood.allowed, "the first request of a new caller");
        assert!(
            !limiter.check_at(&check("ip:new", 1), start).allowed,
            "a new caller is counted, not let through"
        );
        assert_eq!(limiter.len(), 1000);
        assert!(
            !limiter.check_at(&check("ip:old", 1), start).allowed,
            "the recently used bucket was kept"
        );
    }

    #[test]
    fn ipv6_callers_share_a_bucket_per_64() {
        let ip = |s: &str| s.parse::<IpAddr>().expect("ip");
        assert_eq!(ip_bucket(ip("203.0.113.9")), "ip:203.0.113.9");
        assert_eq!(ip_bucket(ip("::ffff:203.0.113.9")), "ip:203.0.113.9");
        assert_eq!(
            ip_bucket(ip("2001:db8:1:2:aaaa::1")),
            ip_bucket(ip("2001:db8:1:2:ffff:ffff:ffff:ffff"))
        );
        assert_eq!(ip_bucket(ip("2001:db8:1:2::1")), "ip:2001:db8:1:2::/64");
        assert_ne!(
            ip_bucket(ip("2001:db8:1:2::1")),
            ip_bucket(ip("2001:db8:1:3::1"))
        );
    }
}
