//! A fault schedule drawn from a seed: which faults, on which part, when, and for how long.
//! The same seed draws the same schedule, so a failing run can be replayed; every kind of
//! fault comes once in each round of the deck, and faults on different parts overlap.

use std::fmt;
use std::time::Duration;

use rand::seq::SliceRandom;
use rand::{Rng, SeedableRng};
use serde::Serialize;

/// One fault, with what the seed drew for it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Fault {
    /// The client stopped (`hard`: kill -9; else a graceful stop) and started again.
    Client { hard: bool },
    /// The consumer pod stopped and started again, with an empty buffer.
    Pod { hard: bool },
    /// The handlers stopped and started again.
    Handlers { hard: bool },
    /// The client frozen (SIGSTOP) past its transaction timeout: a laptop asleep.
    FreezeClient,
    /// The local broker restarted (`hard`: killed, then started).
    LocalBroker { hard: bool },
    /// The source broker leading a carried partition killed, brought back later.
    SourceLeader { partition: i32 },
    /// The link between client and API cut: every connection closed, new ones refused.
    CutLink,
    /// The link slowed to `delay_ms` each way and `kbit` kbit/s.
    SlowLink { delay_ms: u64, kbit: u64 },
    /// A new API key: the server takes both, the client restarts with the new one, the
    /// old one is withdrawn.
    RotateKey,
}

/// The parts a fault takes; two faults on one part never overlap.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Part {
    Client,
    Pod,
    Handlers,
    LocalBroker,
    SourceCluster,
    Link,
}

impl Fault {
    /// What the fault holds while it lasts.
    pub fn parts(&self) -> &'static [Part] {
        match self {
            Self::Client { .. } | Self::FreezeClient => &[Part::Client],
            Self::Pod { .. } => &[Part::Pod],
            Self::Handlers { .. } => &[Part::Handlers],
            Self::LocalBroker { .. } => &[Part::LocalBroker],
            Self::SourceLeader { .. } => &[Part::SourceCluster],
            Self::CutLink | Self::SlowLink { .. } => &[Part::Link],
            // The new key is checked against the handlers directly, and the client restarts.
            Self::RotateKey => &[Part::Client, Part::Handlers],
        }
    }

    /// How long its part takes to start again once the fault ends (a broker, seconds).
    fn settling(&self) -> Duration {
        match self {
            Self::LocalBroker { .. } | Self::SourceLeader { .. } => Duration::from_secs(20),
            _ => Duration::from_secs(8),
        }
    }

    /// How long the fault lasts, drawn: the part's time down (or asleep, cut, slow).
    fn draw_lasting(&self, rng: &mut impl Rng, frozen_past: Duration) -> Duration {
        let ms = match self {
            Self::Client { .. } | Self::Pod { .. } | Self::Handlers { .. } => {
                rng.random_range(0..=5_000)
            }
            // Past the transaction timeout and the broker's next abort check after it.
            Self::FreezeClient => {
                frozen_past.as_millis() as u64 + rng.random_range(12_000..=18_000)
            }
            Self::LocalBroker { .. } => rng.random_range(0..=3_000),
            Self::SourceLeader { .. } => rng.random_range(10_000..=30_000),
            Self::CutLink => rng.random_range(2_000..=15_000),
            Self::SlowLink { .. } => rng.random_range(10_000..=25_000),
            Self::RotateKey => 0,
        };
        Duration::from_millis(ms)
    }
}

impl fmt::Display for Fault {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let how = |hard: &bool| if *hard { "kill -9" } else { "graceful stop" };
        match self {
            Self::Client { hard } => write!(f, "client {}", how(hard)),
            Self::Pod { hard } => write!(f, "consumer pod {}", how(hard)),
            Self::Handlers { hard } => write!(f, "handlers {}", how(hard)),
            Self::FreezeClient => write!(f, "client frozen past its transaction timeout"),
            Self::LocalBroker { hard } => write!(
                f,
                "local broker {}",
                if *hard { "kill -9" } else { "restart" }
            ),
            Self::SourceLeader { partition } => {
                write!(f, "source broker leading partition {partition} kill -9")
            }
            Self::CutLink => write!(f, "link cut"),
            Self::SlowLink { delay_ms, kbit } => {
                write!(f, "link slowed to {delay_ms} ms each way, {kbit} kbit/s")
            }
            Self::RotateKey => write!(f, "API key rotated"),
        }
    }
}

/// One fault of the schedule: when it begins (from the start of the stream) and how long
/// it lasts before its part is brought back.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct Step {
    #[serde(serialize_with = "as_secs")]
    pub at: Duration,
    #[serde(serialize_with = "as_secs")]
    pub lasting: Duration,
    pub fault: Fault,
}

fn as_secs<S: serde::Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_f64((d.as_millis() as f64 / 1000.0 * 10.0).round() / 10.0)
}

/// The faults of one run, in the order they begin.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Schedule {
    pub seed: u64,
    pub steps: Vec<Step>,
}

/// The kinds of fault, one card each in the deck.
const KINDS: usize = 9;
/// Quiet time before the first fault: the stream is flowing by then.
const FIRST_AT: Duration = Duration::from_secs(15);
/// Quiet time at the end: the last faults are over before the stream stops.
const TAIL: Duration = Duration::from_secs(20);

impl Schedule {
    /// Draws the faults of a `length`-long stream over `partitions` partitions from `seed`;
    /// a freeze outlasts `frozen_past` (the client's transaction timeout).
    pub fn draw(seed: u64, length: Duration, partitions: i32, frozen_past: Duration) -> Self {
        let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
        let mut steps = Vec::new();
        // Each part is busy until then.
        let mut busy: Vec<(Part, Duration)> = Vec::new();
        let mut deck: Vec<usize> = Vec::new();
        let mut at = FIRST_AT;
        let end = length.saturating_sub(TAIL);
        while at < end {
            if deck.is_empty() {
                deck = (0..KINDS).collect();
                deck.shuffle(&mut rng);
            }
            let fault = match deck.pop().expect("refilled above") {
                0 => Fault::Client { hard: rng.random() },
                1 => Fault::Pod { hard: rng.random() },
                2 => Fault::Handlers { hard: rng.random() },
                3 => Fault::FreezeClient,
                4 => Fault::LocalBroker { hard: rng.random() },
                5 => Fault::SourceLeader {
                    partition: rng.random_range(0..partitions.max(1)),
                },
                6 => Fault::CutLink,
                7 => Fault::SlowLink {
                    delay_ms: rng.random_range(100..=800),
                    kbit: rng.random_range(128..=2_048),
                },
                _ => Fault::RotateKey,
            };
            // It begins once its parts are free again.
            let free_at = busy
                .iter()
                .filter(|(part, _)| fault.parts().contains(part))
                .map(|(_, until)| *until)
                .max()
                .unwrap_or_default();
            let begins = at.max(free_at);
            let lasting = fault.draw_lasting(&mut rng, frozen_past);
            if begins + lasting >= end {
                break;
            }
            // Margin after the part is back, for it to start.
            let settled = begins + lasting + fault.settling();
            busy.retain(|(part, _)| !fault.parts().contains(part));
            busy.extend(fault.parts().iter().map(|part| (*part, settled)));
            steps.push(Step {
                at: begins,
                lasting,
                fault,
            });
            // The next fault comes soon, often while this one lasts.
            at = begins + Duration::from_millis(rng.random_range(2_000..=12_000));
        }
        steps.sort_by_key(|s| s.at);
        Self { seed, steps }
    }
}

impl fmt::Display for Schedule {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(f, "seed {}: {} faults", self.seed, self.steps.len())?;
        for step in &self.steps {
            writeln!(
                f,
                "  at {:>6.1} s for {:>5.1} s: {}",
                step.at.as_secs_f64(),
                step.lasting.as_secs_f64(),
                step.fault
            )?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const TIMEOUT: Duration = Duration::from_secs(10);

    #[test]
    fn a_seed_draws_the_same_schedule_and_another_seed_another() {
        let length = Duration::from_secs(240);
        let one = Schedule::draw(7, length, 3, TIMEOUT);
        assert_eq!(one, Schedule::draw(7, length, 3, TIMEOUT));
        assert_ne!(one.steps, Schedule::draw(8, length, 3, TIMEOUT).steps);
    }

    #[test]
    fn faults_fit_the_stream_and_never_overlap_on_one_part() {
        for seed in 0..200 {
            let length = Duration::from_secs(180);
            let schedule = Schedule::draw(seed, length, 3, TIMEOUT);
            assert!(!schedule.steps.is_empty(), "seed {seed}");
            for (i, a) in schedule.steps.iter().enumerate() {
                assert!(
                    a.at >= FIRST_AT && a.at + a.lasting < length - TAIL,
                    "{a:?}"
                );
                if let Fault::SourceLeader { partition } = a.fault {
                    assert!((0..3).contains(&partition));
                }
                if a.fault == Fault::FreezeClient {
                    assert!(a.lasting > TIMEOUT + Duration::from_secs(10), "{a:?}");
                }
                for b in &schedule.steps[i + 1..] {
                    let shared = a.fault.parts().iter().any(|p| b.fault.parts().contains(p));
                    if shared {
                        assert!(
                            b.at >= a.at + a.lasting,
                            "seed {seed}: {b:?} begins while {a:?} lasts"
                        );
                    }
                }
            }
        }
    }

    #[test]
    fn every_kind_comes_once_a_round_and_faults_overlap() {
        let schedule = Schedule::draw(1, Duration::from_secs(1_800), 3, TIMEOUT);
        let mut counts = std::collections::HashMap::new();
        for step in &schedule.steps {
            *counts
                .entry(std::mem::discriminant(&step.fault))
                .or_insert(0) += 1;
        }
        assert_eq!(counts.len(), KINDS, "{schedule}");
        let (least, most) = (counts.values().min(), counts.values().max());
        assert!(
            most.zip(least).is_some_and(|(m, l)| m - l <= 1),
            "{counts:?}"
        );
        let overlapping = schedule
            .steps
            .windows(2)
            .filter(|w| w[1].at < w[0].at + w[0].lasting)
            .count();
        assert!(overlapping > 0, "{schedule}");
    }
}
