//! How far the client is behind the source: per partition the server's log end minus the
//! committed position ([`lag`]), and the rate and ETA of a catch-up ([`Catchup`]). Used by
//! the progress lines, `client status` and the client's metrics alike.

use std::time::Duration;

use shared::Cursor;

/// One partition's standing.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct PartitionLag {
    pub topic: String,
    pub partition: i32,
    /// The next offset the client would copy (`None`: it has no position there yet).
    pub committed: Option<i64>,
    /// The server's log end: the offset after the newest event.
    pub log_end: i64,
    /// Events not yet copied.
    pub lag: u64,
}

/// Each partition the server has, against `committed`. A partition the committed cursor
/// does not know is copied from `log_start` (the oldest retained offset; when not known,
/// the whole log end counts).
pub fn lag(
    committed: Option<&Cursor>,
    log_end: &Cursor,
    log_start: Option<&Cursor>,
) -> Vec<PartitionLag> {
    log_end
        .iter()
        .map(|(topic, partition, end)| {
            let at = committed.and_then(|c| c.get(topic, partition));
            let from = at
                .or_else(|| log_start.and_then(|s| s.get(topic, partition)))
                .unwrap_or(0);
            PartitionLag {
                topic: topic.to_owned(),
                partition,
                committed: at,
                log_end: end,
                lag: u64::try_from(end.saturating_sub(from)).unwrap_or(0),
            }
        })
        .collect()
}

/// The lag of all partitions together.
pub fn total(partitions: &[PartitionLag]) -> u64 {
    partitions.iter().map(|p| p.lag).sum()
}

/// Events a cursor is past, all partitions together: the difference of two is what was
/// copied between them.
pub fn events_in(cursor: &Cursor) -> i64 {
    cursor.iter().map(|(_, _, at)| at).sum()
}

/// The pace of a catch-up: events copied over a span of time.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Catchup {
    pub events_per_sec: f64,
}

impl Catchup {
    /// `events` copied in `over`; none for a span too short to tell.
    pub fn measured(events: u64, over: Duration) -> Option<Self> {
        (over >= Duration::from_secs(1)).then(|| Self {
            events_per_sec: events as f64 / over.as_secs_f64(),
        })
    }

    /// How long `lag` more events take at this pace; none when nothing moves.
    pub fn eta(self, lag: u64) -> Option<Duration> {
        if lag == 0 {
            return Some(Duration::ZERO);
        }
        (self.events_per_sec >= 0.01)
            .then(|| Duration::from_secs_f64(lag as f64 / self.events_per_sec))
    }
}

/// The server's log end as far as the running client knows it: from a probe
/// (`cursor=latest`) now and then while it catches up, and from every answer that did
/// not fill its request (the client was at the end then).
#[derive(Debug, Clone, Default)]
pub struct LogEnds {
    ends: Option<Cursor>,
}

impl LogEnds {
    /// Whether any log end is known.
    pub fn is_known(&self) -> bool {
        self.ends.is_some()
    }

    /// Learns the log ends in `seen`: ends only move forward.
    pub fn learn(&mut self, seen: &Cursor) {
        let ends = self.ends.get_or_insert_with(Cursor::new);
        for (topic, partition, end) in seen.iter() {
            if ends.get(topic, partition).is_none_or(|known| known < end) {
                ends.set(topic, partition, end);
            }
        }
    }

    /// Each known partition against `committed`; empty while no end is known.
    pub fn lag(&self, committed: &Cursor) -> Vec<PartitionLag> {
        self.ends
            .as_ref()
            .map(|ends| lag(Some(committed), ends, Some(committed)))
            .unwrap_or_default()
    }
}

/// `duration` for a person: `45 s`, `12 min 5 s`, `3 h 20 min`.
pub fn human(duration: Duration) -> String {
    let secs = duration.as_secs();
    match secs {
        0..60 => format!("{secs} s"),
        60..3600 => format!("{} min {} s", secs / 60, secs % 60),
        _ => format!("{} h {} min", secs / 3600, secs % 3600 / 60),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cursor(positions: &[(&str, i32, i64)]) -> Cursor {
        let mut c = Cursor::new();
        for (t, p, at) in positions {
            c.set(t, *p, *at);
        }
        c
    }

    #[test]
    fn lag_is_the_log_end_minus_the_position_from_the_start_where_none_is_saved() {
        let end = cursor(&[("orders", 0, 100), ("orders", 1, 50), ("pay", 0, 7)]);
        let committed = cursor(&[("orders", 0, 90), ("orders", 1, 50)]);
        let start = cursor(&[("orders", 0, 0), ("orders", 1, 0), ("pay", 0, 3)]);
        let parts = lag(Some(&committed), &end, Some(&start));
        let lags: Vec<(&str, i32, Option<i64>, u64)> = parts
            .iter()
            .map(|p| (p.topic.as_str(), p.partition, p.committed, p.lag))
            .collect();
        assert_eq!(
            lags,
            [
                ("orders", 0, Some(90), 10),
                ("orders", 1, Some(50), 0),
                ("pay", 0, None, 4)
            ]
        );
        assert_eq!(total(&parts), 14);
        // With no saved position and no known start, the whole log counts.
        assert_eq!(total(&lag(None, &end, None)), 157);
        // A position past the log end (the log was truncated and rebuilt) is no lag.
        assert_eq!(
            total(&lag(
                Some(&cursor(&[("pay", 0, 9)])),
                &cursor(&[("pay", 0, 7)]),
                None
            )),
            0
        );
    }

    #[test]
    fn the_eta_is_the_lag_at_the_measured_pace() {
        assert_eq!(Catchup::measured(10, Duration::from_millis(500)), None);
        let pace = Catchup::measured(3000, Duration::from_secs(30)).expect("measured");
        assert!((pace.events_per_sec - 100.0).abs() < 1e-9);
        assert_eq!(pace.eta(1000), Some(Duration::from_secs(10)));
        assert_eq!(pace.eta(0), Some(Duration::ZERO));
        let stalled = Catchup::measured(0, Duration::from_secs(30)).expect("measured");
        assert_eq!(stalled.eta(5), None);
        assert_eq!(stalled.eta(0), Some(Duration::ZERO));
        assert_eq!(events_in(&cursor(&[("a", 0, 5), ("a", 1, 7)])), 12);
        assert_eq!(human(Duration::from_secs(45)), "45 s");
        assert_eq!(human(Duration::from_secs(725)), "12 min 5 s");
        assert_eq!(human(Duration::from_secs(12_000)), "3 h 20 min");
    }

    #[test]
    fn known_log_ends_only_move_forward() {
        let mut ends = LogEnds::default();
        assert!(
            ends.lag(&cursor(&[("a", 0, 1)])).is_empty(),
            "nothing known yet"
        );
        ends.learn(&cursor(&[("a", 0, 100), ("a", 1, 10)]));
        // An older answer (a position the client reached) does not move an end back.
        ends.learn(&cursor(&[("a", 0, 60), ("a", 1, 12)]));
        let lags: Vec<u64> = ends
            .lag(&cursor(&[("a", 0, 60), ("a", 1, 12)]))
            .iter()
            .map(|p| p.lag)
            .collect();
        assert_eq!(lags, [40, 0]);
    }
}
