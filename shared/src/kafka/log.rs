//! librdkafka's complaints, said without flooding the log: a cluster that is down makes
//! every client report the same failure at each reconnect, several times a second. The
//! first report of each kind is logged at once, then that kind at most once a minute, with
//! how many were held back.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use rdkafka::config::RDKafkaLogLevel;
use rdkafka::error::KafkaError;

/// How often a kind of report that keeps coming is logged again.
pub const REPEAT_EVERY: Duration = Duration::from_secs(60);

/// The reports of one client (or of clients sharing it), by kind.
#[derive(Debug, Clone, Default)]
pub struct KafkaLog {
    seen: Arc<Mutex<HashMap<String, Seen>>>,
}

#[derive(Debug)]
struct Seen {
    logged: Instant,
    held: u64,
}

impl KafkaLog {
    /// Whether a report of `kind` is logged at `now`, and if so how many of its kind were
    /// held back since the last one logged.
    fn admit(&self, kind: &str, now: Instant) -> Option<u64> {
        let mut seen = self.seen.lock().unwrap_or_else(PoisonError::into_inner);
        match seen.get_mut(kind) {
            Some(s) if now.duration_since(s.logged) < REPEAT_EVERY => {
                s.held += 1;
                None
            }
            Some(s) => {
                let held = std::mem::take(&mut s.held);
                s.logged = now;
                Some(held)
            }
            None => {
                seen.insert(
                    kind.to_owned(),
                    Seen {
                        logged: now,
                        held: 0,
                    },
                );
                Some(0)
            }
        }
    }

    /// A client error (rust-rdkafka's `ClientContext::error`), as a warning naming `role`.
    pub fn error(&self, role: &str, error: &KafkaError, reason: &str) {
        if let Some(held_back) = self.admit(&kind_of(error), Instant::now()) {
            tracing::warn!(error = %error, reason, role, held_back, "Kafka client error");
        }
    }

    /// A line of librdkafka's own log (`ClientContext::log`): errors and warnings by kind
    /// as above, the rest at their level.
    pub fn log(&self, role: &str, level: RDKafkaLogLevel, facility: &str, message: &str) {
        match level {
            RDKafkaLogLevel::Emerg
            | RDKafkaLogLevel::Alert
            | RDKafkaLogLevel::Critical
            | RDKafkaLogLevel::Error
            | RDKafkaLogLevel::Warning => {
                if let Some(held_back) = self.admit(facility, Instant::now()) {
                    tracing::warn!(target: "librdkafka", role, facility, held_back, "{message}");
                }
            }
            RDKafkaLogLevel::Notice | RDKafkaLogLevel::Info => {
                tracing::info!(target: "librdkafka", role, facility, "{message}");
            }
            RDKafkaLogLevel::Debug => {
                tracing::debug!(target: "librdkafka", role, facility, "{message}");
            }
        }
    }
}

/// What kind of error `error` is, in few words (librdkafka's code, e.g. `AllBrokersDown`):
/// a metric label, and what the log holds back repeats of.
pub fn kind_of(error: &KafkaError) -> String {
    error
        .rdkafka_error_code()
        .map_or_else(|| "client".to_owned(), |c| format!("{c:?}"))
}

/// The librdkafka log callback of a context holding a [`KafkaLog`] in `$log` and its role
/// in `$role`.
#[macro_export]
macro_rules! quiet_librdkafka_log {
    ($log:ident, $role:expr) => {
        fn log(&self, level: rdkafka::config::RDKafkaLogLevel, facility: &str, message: &str) {
            self.$log.log($role, level, facility, message);
        }
    };
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_repeated_kind_is_logged_once_a_minute_with_the_count_held_back() {
        let log = KafkaLog::default();
        let start = Instant::now();
        assert_eq!(log.admit("AllBrokersDown", start), Some(0));
        for i in 1..=80 {
            let at = start + Duration::from_millis(50 * i);
            assert_eq!(log.admit("AllBrokersDown", at), None, "held back at {i}");
        }
        // Another kind is not held back by the first.
        assert_eq!(log.admit("FAIL", start + Duration::from_secs(1)), Some(0));
        assert_eq!(
            log.admit("AllBrokersDown", start + REPEAT_EVERY),
            Some(80),
            "a minute on: logged, with the 80 held back"
        );
        assert_eq!(log.admit("AllBrokersDown", start + REPEAT_EVERY), None);
        // Clones share what was seen: the contexts of one cluster's clients.
        assert_eq!(
            log.clone().admit("FAIL", start + Duration::from_secs(2)),
            None
        );
    }
}
