//! [`Pacer`]: spends the API key's request budget the way the server's `RateLimit-Limit`,
//! `RateLimit-Remaining` and `RateLimit-Reset` headers describe it, so that the client never
//! draws a `429` of its own making, at any source rate and during any catch-up.
//!
//! A short burst goes out at once; past it, what is left of the window's budget is spread
//! evenly over what is left of the window, and a reserve stays for others using the same
//! key (a `curl`, a Prometheus scrape). A `429` that still comes (another process spent the
//! budget) is waited out as its `Retry-After` says.

use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use reqwest::header::HeaderMap;
use tokio::time::Instant;

/// The last budget the server announced.
#[derive(Debug, Clone, Copy, PartialEq)]
struct Budget {
    limit: u32,
    remaining: u32,
    resets_at: Instant,
}

#[derive(Debug, Default)]
struct State {
    budget: Option<Budget>,
    /// The window's length: from `RateLimit-Policy` (`18000;w=900`), else the longest
    /// `RateLimit-Reset` seen, as near as the client can tell.
    window: Duration,
    /// Requests admitted whose answer has not been observed yet.
    in_flight: u32,
    /// A `429`'s `Retry-After`.
    blocked_until: Option<Instant>,
    /// Whether the last request had to wait for the budget.
    pacing: bool,
}

/// Shared by every request of one client (the fetch in flight and the one asked ahead).
#[derive(Debug, Clone, Default)]
pub struct Pacer {
    state: Arc<Mutex<State>>,
}

/// A request let through; dropped once its answer was observed (or it failed).
#[derive(Debug)]
pub struct Admission {
    pacer: Pacer,
}

impl Drop for Admission {
    fn drop(&mut self) {
        let mut state = self.pacer.lock();
        state.in_flight = state.in_flight.saturating_sub(1);
    }
}

impl Pacer {
    pub fn new() -> Self {
        Self::default()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Waits until the budget allows one more request, then counts it in flight.
    pub async fn admit(&self) -> Admission {
        let mut waited = false;
        loop {
            let delay = {
                let mut state = self.lock();
                let delay = delay(&state, Instant::now());
                if delay.is_zero() {
                    state.in_flight += 1;
                    state.pacing = waited;
                    return Admission {
                        pacer: self.clone(),
                    };
                }
                delay
            };
            waited = true;
            // Woken at the latest when the budget allows; another request's answer may
            // allow it sooner, so look again at least every second.
            tokio::time::sleep(delay.min(Duration::from_secs(1))).await;
        }
    }

    /// Takes in the `RateLimit-*` headers of an answer (any status); without them the
    /// server has no budget for this key.
    pub fn observe(&self, headers: &HeaderMap) {
        let number =
            |name: &str| -> Option<u64> { headers.get(name)?.to_str().ok()?.trim().parse().ok() };
        let announced = match (
            number("ratelimit-limit"),
            number("ratelimit-remaining"),
            number("ratelimit-reset"),
        ) {
            (Some(limit), Some(remaining), Some(reset)) => Some((limit, remaining, reset)),
            _ => None,
        };
        let policy_window = headers
            .get("ratelimit-policy")
            .and_then(|v| v.to_str().ok())
            .and_then(|v| {
                v.split(';')
                    .find_map(|p| p.trim().strip_prefix("w="))?
                    .trim()
                    .parse::<u64>()
                    .ok()
            })
            .map(Duration::from_secs);
        let mut state = self.lock();
        match announced {
            Some((limit, remaining, reset)) => {
                let reset = Duration::from_secs(reset);
                state.window = policy_window.unwrap_or_else(|| state.window.max(reset));
                state.budget = Some(Budget {
                    limit: u32::try_from(limit).unwrap_or(u32::MAX),
                    remaining: u32::try_from(remaining).unwrap_or(u32::MAX),
                    resets_at: Instant::now() + reset,
                });
            }
            None => state.budget = None,
        }
    }

    /// The server refused a request over the budget: nothing goes out before `retry_after`.
    pub fn refused(&self, retry_after: Duration) {
        let until = Instant::now() + retry_after;
        let mut state = self.lock();
        state.blocked_until = Some(state.blocked_until.map_or(until, |b| b.max(until)));
    }

    /// Whether requests are being held back for the budget now: the client is
    /// request-bound and should ask for more per request.
    pub fn is_pacing(&self) -> bool {
        let state = self.lock();
        state.pacing || !delay(&state, Instant::now()).is_zero()
    }
}

/// What stays of each window's budget for others using the same key: a twentieth.
fn reserve(limit: u32) -> u32 {
    (limit / 20).max(1).min(limit.saturating_sub(1))
}

/// How long the next request must wait. It may go now while it leaves the reserve and keeps
/// the requests left at or above an even spread of the window's budget over the time left,
/// less a burst of a tenth of that budget; else it waits until the spread line comes down
/// to it. A client that starts with the full budget sends its first burst at once and then
/// one request per `window / (limit - reserve)`; it never sends more than the budget.
fn delay(state: &State, now: Instant) -> Duration {
    if let Some(until) = state.blocked_until
        && until > now
    {
        return until - now;
    }
    let Some(budget) = state.budget else {
        return Duration::ZERO;
    };
    if now >= budget.resets_at {
        return Duration::ZERO;
    }
    let left = budget.resets_at - now;
    let reserve = reserve(budget.limit);
    let spendable = i64::from(budget.remaining) - i64::from(state.in_flight) - i64::from(reserve);
    if spendable <= 0 {
        return left;
    }
    let usable = f64::from(budget.limit - reserve).max(1.0);
    let window = state.window.max(left).as_secs_f64();
    let burst = usable / 10.0;
    // The time left at which `spendable - 1` meets the spread line less the burst.
    let allowed_at_left = (spendable as f64 - 1.0 + burst) * window / usable;
    let left_secs = left.as_secs_f64();
    if left_secs <= allowed_at_left {
        Duration::ZERO
    } else {
        Duration::from_secs_f64(left_secs - allowed_at_left)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn state(limit: u32, remaining: u32, left: Duration, window: Duration) -> (State, Instant) {
        let now = Instant::now();
        (
            State {
                budget: Some(Budget {
                    limit,
                    remaining,
                    resets_at: now + left,
                }),
                window,
                ..State::default()
            },
            now,
        )
    }

    /// Plays a client that sends as fast as the pacer lets it against a server counting
    /// a fixed window, and returns how many requests went out in each window.
    fn simulate(limit: u32, window: Duration, windows: u32, others_per_window: u32) -> Vec<u32> {
        let start = Instant::now();
        let mut now = start;
        let mut state = State::default();
        let mut per_window = vec![0u32; windows as usize];
        let end = start + window * windows;
        while now < end {
            let index = ((now - start).as_secs_f64() / window.as_secs_f64()) as usize;
            let window_start = start + window * index as u32;
            let used = per_window[index] + others_per_window;
            let wait = delay(&state, now);
            if !wait.is_zero() {
                now += wait;
                continue;
            }
            // The server counts it and answers at once with its headers.
            assert!(
                used < limit,
                "a request beyond the budget in window {index}"
            );
            per_window[index] += 1;
            let reset = window_start + window - now;
            state.window = state
                .window
                .max(Duration::from_secs(reset.as_secs().max(1)));
            state.budget = Some(Budget {
                limit,
                remaining: limit - used - 1,
                resets_at: now + reset,
            });
            now += Duration::from_millis(1);
        }
        per_window
    }

    #[test]
    fn never_spends_more_than_the_budget_and_uses_most_of_it() {
        for (limit, window) in [
            (18_000, Duration::from_secs(900)),
            (200, Duration::from_secs(10)),
            (30, Duration::from_secs(3)),
        ] {
            let sent = simulate(limit, window, 3, 0);
            for (i, n) in sent.iter().enumerate() {
                assert!(*n < limit, "{limit}/{window:?}: window {i} sent {n}");
                assert!(
                    *n >= limit - reserve(limit) - 2,
                    "{limit}/{window:?}: window {i} sent only {n}"
                );
            }
        }
    }

    #[test]
    fn leaves_room_for_others_on_the_same_key() {
        let sent = simulate(200, Duration::from_secs(10), 2, 8);
        assert!(sent.iter().all(|n| n + 8 < 200), "{sent:?}");
    }

    #[test]
    fn a_burst_goes_at_once_then_requests_are_spread_evenly() {
        let window = Duration::from_secs(900);
        let (mut s, now) = state(18_000, 17_999, window, window);
        assert_eq!(delay(&s, now), Duration::ZERO, "a fresh window: go");
        // Past the burst: one request per window / (limit - reserve), about 53 ms.
        s.budget = Some(Budget {
            limit: 18_000,
            remaining: 15_000,
            resets_at: now + window,
        });
        let first = delay(&s, now);
        assert!(first > Duration::from_secs(1), "{first:?}");
        s.budget = Some(Budget {
            remaining: 14_999,
            ..s.budget.expect("budget")
        });
        let step = delay(&s, now) - first;
        assert!(
            (step.as_secs_f64() - 900.0 / 17_100.0).abs() < 0.001,
            "{step:?}"
        );
    }

    #[test]
    fn an_empty_budget_waits_for_the_window_and_a_429_for_retry_after() {
        let (mut s, now) = state(100, 5, Duration::from_secs(30), Duration::from_secs(60));
        assert_eq!(
            delay(&s, now),
            Duration::from_secs(30),
            "only the reserve is left"
        );
        s.budget = None;
        s.blocked_until = Some(now + Duration::from_secs(7));
        assert_eq!(delay(&s, now), Duration::from_secs(7));
        assert_eq!(delay(&s, now + Duration::from_secs(8)), Duration::ZERO);
    }

    #[test]
    fn requests_in_flight_count_against_the_budget() {
        let (mut s, now) = state(100, 10, Duration::from_secs(1), Duration::from_secs(60));
        assert_eq!(delay(&s, now), Duration::ZERO);
        s.in_flight = 5;
        assert_eq!(
            delay(&s, now),
            Duration::from_secs(1),
            "5 left is the reserve"
        );
    }

    #[test]
    fn headers_are_read_and_their_absence_lifts_the_budget() {
        let pacer = Pacer::new();
        let mut headers = HeaderMap::new();
        headers.insert("ratelimit-limit", "100".parse().expect("value"));
        headers.insert("ratelimit-remaining", "4".parse().expect("value"));
        headers.insert("ratelimit-reset", "30".parse().expect("value"));
        pacer.observe(&headers);
        assert!(pacer.is_pacing(), "4 left of 100 is the reserve");
        pacer.observe(&HeaderMap::new());
        assert!(!pacer.is_pacing());
    }

    #[test]
    fn a_client_starting_mid_window_learns_its_length_from_the_policy() {
        // 120 of 200 left with 3 s to go in a 10 s window: well within the spread.
        let mut headers = HeaderMap::new();
        headers.insert("ratelimit-limit", "200".parse().expect("value"));
        headers.insert("ratelimit-remaining", "120".parse().expect("value"));
        headers.insert("ratelimit-reset", "3".parse().expect("value"));
        let guessing = Pacer::new();
        guessing.observe(&headers);
        assert!(guessing.is_pacing(), "a 3 s window for all it knows");
        headers.insert("ratelimit-policy", "200;w=10".parse().expect("value"));
        let told = Pacer::new();
        told.observe(&headers);
        assert!(!told.is_pacing());
    }
}
