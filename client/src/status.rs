//! `client status`: the committed position per partition (from the state topic), the
//! server's log end, the lag, the last commit and the pace of a catch-up, as text or JSON,
//! with an exit code a monitoring agent can act on.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use shared::Cursor;

use crate::config::Config;
use crate::lag::{self, Catchup, PartitionLag};
use crate::sink;

/// How long local Kafka may take to answer a lookup.
const LOOKUP_TIMEOUT: Duration = Duration::from_secs(10);

/// Exit code: something the status needs cannot be reached.
pub const UNREACHABLE: u8 = 2;
/// Exit code: the lag is over `--max-lag`.
pub const LAGGING: u8 = 3;

/// Why no status could be made.
#[derive(Debug, thiserror::Error)]
pub enum StatusError {
    #[error(transparent)]
    Config(#[from] shared::config::ConfigError),
    #[error("cannot build the HTTP client: {0}")]
    Http(reqwest::Error),
    #[error(
        "cannot read the committed position from {topic} on local Kafka ({brokers}): {reason}; is local Kafka up (KAFKA_BROKERS)? `client doctor` checks each step"
    )]
    LocalKafka {
        topic: String,
        brokers: String,
        reason: String,
    },
    #[error(
        "the saved position in {topic} is not a valid cursor; was STATE_TOPIC written by something else?"
    )]
    BadState { topic: String },
    #[error("cannot learn the server's log end: {0}; `client doctor` checks each step")]
    Server(String),
}

/// Where the client stands.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct Status {
    pub client_id: String,
    pub state_topic: String,
    pub partitions: Vec<PartitionLag>,
    /// All partitions' lag together.
    pub lag: u64,
    /// When the newest position was committed (Unix ms); `None`: never.
    pub last_commit_ms: Option<i64>,
    /// The pace of the last minute of commits, events a second.
    pub events_per_sec: Option<f64>,
    /// When the lag will be made up at that pace, seconds.
    pub eta_secs: Option<u64>,
}

impl Status {
    /// Reads the state topic and asks the server for where its logs start and end.
    pub async fn gather(config: &Config) -> Result<Self, StatusError> {
        let local = config.local_kafka()?;
        let api = config.events_api().map_err(StatusError::Http)?;
        let (topic, key) = (config.state_topic.clone(), config.client_id.clone());
        let reader = local.clone();
        // The log end is asked for after the position is read, so it is never behind it.
        let saved = tokio::task::spawn_blocking(move || {
            sink::read_saved(&reader, &topic, &key, LOOKUP_TIMEOUT)
        })
        .await;
        let unreachable = |reason: String| StatusError::LocalKafka {
            topic: config.state_topic.clone(),
            brokers: local.brokers().to_owned(),
            reason,
        };
        let saved = saved
            .map_err(|e| unreachable(e.to_string()))?
            .map_err(|e| unreachable(e.to_string()))?;
        let ends = api
            .log_end()
            .await
            .map_err(|e| StatusError::Server(e.to_string()))?;
        let decode = |text: &str| {
            Cursor::decode(text).map_err(|_| StatusError::BadState {
                topic: config.state_topic.clone(),
            })
        };
        let committed = saved.as_ref().map(|s| decode(&s.cursor)).transpose()?;
        // Partitions with no saved position are copied from the oldest retained offset.
        let needs_start = committed
            .as_ref()
            .is_none_or(|c| ends.iter().any(|(t, p, _)| c.get(t, p).is_none()));
        let start = if needs_start {
            Some(
                api.log_start()
                    .await
                    .map_err(|e| StatusError::Server(e.to_string()))?,
            )
        } else {
            None
        };
        let partitions = lag::lag(committed.as_ref(), &ends, start.as_ref());
        let lag = lag::total(&partitions);
        let pace = saved.as_ref().and_then(|s| {
            let (earlier, then) = s.earlier.as_ref()?;
            let copied =
                lag::events_in(committed.as_ref()?) - lag::events_in(&decode(earlier).ok()?);
            let over = Duration::from_millis(u64::try_from(s.at_ms? - then).ok()?);
            Catchup::measured(u64::try_from(copied).ok()?, over)
        });
        Ok(Self {
            client_id: config.client_id.clone(),
            state_topic: config.state_topic.clone(),
            partitions,
            lag,
            last_commit_ms: saved.and_then(|s| s.at_ms),
            events_per_sec: pace.map(|p| p.events_per_sec),
            eta_secs: pace.and_then(|p| p.eta(lag)).map(|eta| eta.as_secs()),
        })
    }

    /// The exit code: [`LAGGING`] when the lag is over `max_lag` (0: report only), else 0.
    pub fn exit_code(&self, max_lag: u64) -> u8 {
        if max_lag > 0 && self.lag > max_lag {
            LAGGING
        } else {
            0
        }
    }

    /// The status as JSON, with the last commit also in RFC 3339.
    pub fn to_json(&self) -> serde_json::Value {
        let mut value = serde_json::to_value(self).unwrap_or_default();
        value["last_commit"] = self
            .last_commit_ms
            .map_or(serde_json::Value::Null, |ms| rfc3339(ms).into());
        value
    }

    /// The status as a table for a person, `now` being the time it is read.
    pub fn to_text(&self, now: SystemTime) -> String {
        let mut out = format!(
            "client {} (state topic {})\n",
            self.client_id, self.state_topic
        );
        let width = self
            .partitions
            .iter()
            .map(|p| p.topic.len())
            .max()
            .unwrap_or(0)
            .max("TOPIC".len());
        out.push_str(&format!(
            "{:<width$}  {:>9}  {:>12}  {:>12}  {:>10}\n",
            "TOPIC", "PARTITION", "COMMITTED", "LOG END", "LAG"
        ));
        for p in &self.partitions {
            let committed = p
                .committed
                .map_or_else(|| "-".to_owned(), |c| c.to_string());
            out.push_str(&format!(
                "{:<width$}  {:>9}  {:>12}  {:>12}  {:>10}\n",
                p.topic, p.partition, committed, p.log_end, p.lag
            ));
        }
        out.push_str(&format!("lag: {} events\n", self.lag));
        match self.last_commit_ms {
            Some(ms) => {
                let now_ms = now
                    .duration_since(UNIX_EPOCH)
                    .map_or(0, |d| d.as_millis() as i64);
                let ago = Duration::from_millis(u64::try_from(now_ms - ms).unwrap_or(0));
                out.push_str(&format!(
                    "last commit: {} ({} ago)\n",
                    rfc3339(ms),
                    lag::human(ago)
                ));
            }
            None => out.push_str("last commit: never (no position saved yet)\n"),
        }
        if let Some(pace) = self.events_per_sec {
            let eta = self.eta_secs.map_or_else(
                || "unknown (no progress)".to_owned(),
                |s| lag::human(Duration::from_secs(s)),
            );
            out.push_str(&format!(
                "pace: {pace:.0} events/s over the last minute of commits; caught up in {eta}\n"
            ));
        }
        out
    }
}

/// `ms` since the epoch in RFC 3339 (UTC, to the second).
fn rfc3339(ms: i64) -> String {
    time::OffsetDateTime::from_unix_timestamp(ms.div_euclid(1000))
        .ok()
        .and_then(|t| {
            t.format(&time::format_description::well_known::Rfc3339)
                .ok()
        })
        .unwrap_or_else(|| ms.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn status() -> Status {
        Status {
            client_id: "laptop".into(),
            state_topic: "state".into(),
            partitions: vec![PartitionLag {
                topic: "orders".into(),
                partition: 0,
                committed: Some(90),
                log_end: 100,
                lag: 10,
            }],
            lag: 10,
            last_commit_ms: Some(1_764_607_800_000),
            events_per_sec: Some(5.0),
            eta_secs: Some(2),
        }
    }

    #[test]
    fn the_exit_code_says_whether_the_lag_is_over_the_limit() {
        let s = status();
        assert_eq!(s.exit_code(0), 0, "0 reports only");
        assert_eq!(s.exit_code(10), 0);
        assert_eq!(s.exit_code(9), LAGGING);
    }

    #[test]
    fn text_and_json_say_the_same() {
        let s = status();
        let now = UNIX_EPOCH + Duration::from_millis(1_764_607_812_000);
        let text = s.to_text(now);
        assert!(
            text.contains("orders          0            90           100          10"),
            "{text}"
        );
        assert!(text.contains("lag: 10 events"), "{text}");
        assert!(
            text.contains("last commit: 2025-12-01T16:50:00Z (12 s ago)"),
            "{text}"
        );
        assert!(text.contains("pace: 5 events/s"), "{text}");
        assert!(text.contains("caught up in 2 s"), "{text}");
        let json = s.to_json();
        assert_eq!(json["lag"], 10);
        assert_eq!(json["partitions"][0]["log_end"], 100);
        assert_eq!(json["partitions"][0]["committed"], 90);
        assert_eq!(json["last_commit"], "2025-12-01T16:50:00Z");
        assert_eq!(json["eta_secs"], 2);
    }
}
