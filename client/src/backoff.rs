//! [`Backoff`]: capped exponential delays with jitter (backon's), so many clients that lost
//! the server at once do not come back at once.

use std::time::Duration;

use backon::{BackoffBuilder, ExponentialBackoff, ExponentialBuilder};

/// Delays for successive retries: random in `base * 2^attempt / 2 .. base * 2^attempt`,
/// at most `cap`, and never zero, so a retry loop always yields.
#[derive(Debug)]
pub struct Backoff {
    policy: ExponentialBuilder,
    delays: ExponentialBackoff,
    cap: Duration,
}

impl Backoff {
    pub fn new(base: Duration, cap: Duration) -> Self {
        // backon adds a jitter of up to the delay itself: half the bounds give delays
        // between half and all of each step.
        let policy = ExponentialBuilder::default()
            .with_min_delay((base / 2).max(Duration::from_millis(1)))
            .with_max_delay(cap / 2)
            .with_jitter()
            .without_max_times();
        Self {
            delays: policy.build(),
            policy,
            cap,
        }
    }

    /// The delay before the next retry.
    pub fn next_delay(&mut self) -> Duration {
        self.delays.next().unwrap_or(self.cap).min(self.cap)
    }

    /// Back to the shortest delay, after a success.
    pub fn reset(&mut self) {
        self.delays = self.policy.build();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn grows_to_the_cap_and_resets() {
        let ms = Duration::from_millis;
        let mut b = Backoff::new(ms(100), Duration::from_secs(2));
        let delays: Vec<Duration> = (0..10).map(|_| b.next_delay()).collect();
        assert!(delays[0] >= ms(50) && delays[0] <= ms(100), "{delays:?}");
        assert!(delays[3] >= ms(400) && delays[3] <= ms(800), "{delays:?}");
        assert!(delays[9] >= Duration::from_secs(1), "{delays:?}");
        assert!(delays.iter().all(|d| *d <= Duration::from_secs(2)));
        b.reset();
        assert!(b.next_delay() <= ms(100));
    }
}
