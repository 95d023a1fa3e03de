//! Public API shapes: the `/events` query and its validation, the `/events` answer with its
//! [`Gap`]s, and the health and readiness bodies.

use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::cursor::StartFrom;
use crate::error::{ApiError, ErrorCode};
use crate::event::Event;

/// `limit` when the query gives none.
pub const DEFAULT_LIMIT: u32 = 500;
/// Largest `limit` accepted.
pub const MAX_LIMIT: u32 = 10_000;
/// Largest `wait_ms` accepted.
pub const MAX_WAIT_MS: u32 = 30_000;
/// `max_bytes` when the query gives none: 4 MiB.
pub const DEFAULT_MAX_BYTES: u32 = 4 * 1024 * 1024;
/// Smallest `max_bytes` accepted.
pub const MIN_MAX_BYTES: u32 = 1024;
/// Largest `max_bytes` accepted: 16 MiB.
pub const MAX_MAX_BYTES: u32 = 16 * 1024 * 1024;

/// `GET /events` answer.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct EventsResponse {
    pub events: Vec<Event>,
    /// Pass back as `cursor` to continue right after the last event returned.
    pub next_cursor: String,
    /// Offsets that no longer exist in the source (retention, compaction).
    pub gaps: Vec<Gap>,
}

/// A run of offsets `from..=to` of one partition that the source no longer holds.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct Gap {
    pub topic: String,
    pub partition: i32,
    pub from: i64,
    pub to: i64,
}

/// `GET /health` answer.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct HealthResponse {
    pub status: String,
    pub service: String,
    pub version: String,
}

/// `GET /ready` answer.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct ReadyResponse {
    /// `ready` or `not_ready`.
    pub status: String,
    /// Why not, when not ready.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
}

/// The `/events` query string as sent, every value still text so that bad values get
/// this service's own errors rather than a framework's.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct EventsQuery {
    pub cursor: Option<String>,
    pub limit: Option<String>,
    pub max_bytes: Option<String>,
    pub wait_ms: Option<String>,
    pub topic: Option<String>,
}

/// A validated read request: where to start, how many, how long to wait, which topics.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FetchRequest {
    /// The `cursor` parameter as given (absent, `earliest`, `latest` or a cursor).
    pub cursor: Option<String>,
    pub limit: u32,
    /// Most bytes the answer's events take, as they are written in it (JSON escaping or
    /// base64, or the binary layout), and so at most this many of keys, values and headers;
    /// always at least one event.
    #[serde(default = "default_max_bytes")]
    pub max_bytes: u32,
    pub wait_ms: u32,
    /// Only these topics; empty means every topic carried.
    #[serde(default)]
    pub topics: Vec<String>,
    /// Answer in the binary form of [`crate::wire`] instead of JSON.
    #[serde(default)]
    pub binary: bool,
    /// The name of the API key that asked (the handlers set it), which labels the pod's
    /// per-key metrics; never the key itself.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub key_name: Option<String>,
}

fn default_max_bytes() -> u32 {
    DEFAULT_MAX_BYTES
}

impl FetchRequest {
    /// Where the read starts; the cursor was checked when the request was made.
    pub fn start(&self) -> Result<StartFrom, ApiError> {
        StartFrom::parse(self.cursor.as_deref()).map_err(ApiError::from)
    }
}

impl EventsQuery {
    /// Checks every parameter, answering the first bad one with its own error code.
    pub fn validate(self) -> Result<FetchRequest, ApiError> {
        StartFrom::parse(self.cursor.as_deref())?;
        let limit =
            parse_in_range(self.limit.as_deref(), DEFAULT_LIMIT, 1, MAX_LIMIT).map_err(|got| {
                ApiError::new(
                    ErrorCode::InvalidLimit,
                    format!("limit must be 1 to {MAX_LIMIT}, got {got:?}"),
                )
            })?;
        let max_bytes = parse_in_range(
            self.max_bytes.as_deref(),
            DEFAULT_MAX_BYTES,
            MIN_MAX_BYTES,
            MAX_MAX_BYTES,
        )
        .map_err(|got| {
            ApiError::new(
                ErrorCode::InvalidMaxBytes,
                format!("max_bytes must be {MIN_MAX_BYTES} to {MAX_MAX_BYTES}, got {got:?}"),
            )
        })?;
        let wait_ms =
            parse_in_range(self.wait_ms.as_deref(), 0, 0, MAX_WAIT_MS).map_err(|got| {
                ApiError::new(
                    ErrorCode::InvalidWait,
                    format!("wait_ms must be 0 to {MAX_WAIT_MS}, got {got:?}"),
                )
            })?;
        let topics: Vec<String> = match self.topic.as_deref() {
            None => Vec::new(),
            Some(list) => {
                let topics: Vec<String> =
                    list.split(',').map(str::trim).map(str::to_owned).collect();
                if topics.iter().any(String::is_empty) {
                    return Err(ApiError::new(
                        ErrorCode::UnknownTopic,
                        "topic must be a topic name or a comma-separated list",
                    ));
                }
                topics
            }
        };
        Ok(FetchRequest {
            cursor: self.cursor,
            limit,
            max_bytes,
            wait_ms,
            topics,
            binary: false,
            key_name: None,
        })
    }
}

fn parse_in_range(text: Option<&str>, default: u32, min: u32, max: u32) -> Result<u32, String> {
    match text {
        None => Ok(default),
        Some(t) => match t.trim().parse::<u32>() {
            Ok(v) if (min..=max).contains(&v) => Ok(v),
            _ => Err(t.chars().take(40).collect()),
        },
    }
}

/// The seconds a `Retry-After` header asks a caller to wait (the delta-seconds form, the
/// one the API and the pod send); `None` when absent or not a number.
pub fn retry_after(headers: &http::HeaderMap) -> Option<Duration> {
    let value = headers.get(http::header::RETRY_AFTER)?.to_str().ok()?;
    value.trim().parse::<u64>().ok().map(Duration::from_secs)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn retry_after_reads_delta_seconds_only() {
        let mut headers = http::HeaderMap::new();
        assert_eq!(retry_after(&headers), None);
        headers.insert(http::header::RETRY_AFTER, " 7".parse().unwrap());
        assert_eq!(retry_after(&headers), Some(Duration::from_secs(7)));
        headers.insert(
            http::header::RETRY_AFTER,
            "Wed, 21 Oct 2015 07:28:00 GMT".parse().unwrap(),
        );
        assert_eq!(retry_after(&headers), None);
    }

    fn query(limit: Option<&str>, wait: Option<&str>, cursor: Option<&str>) -> EventsQuery {
        EventsQuery {
            cursor: cursor.map(Into::into),
            limit: limit.map(Into::into),
            max_bytes: None,
            wait_ms: wait.map(Into::into),
            topic: None,
        }
    }

    #[test]
    fn defaults_and_bounds() {
        let req = query(None, None, None).validate().expect("valid");
        assert_eq!((req.limit, req.wait_ms), (DEFAULT_LIMIT, 0));
        assert_eq!(req.max_bytes, 4_194_304);
        let req = query(Some("10000"), Some("30000"), Some("earliest"))
            .validate()
            .expect("valid");
        assert_eq!((req.limit, req.wait_ms), (10_000, 30_000));
    }

    #[test]
    fn bad_values_get_their_own_codes() {
        for bad in ["0", "10001", "-1", "ten", ""] {
            assert_eq!(
                query(Some(bad), None, None).validate().expect_err(bad).code,
                ErrorCode::InvalidLimit
            );
        }
        assert_eq!(
            query(None, Some("30001"), None)
                .validate()
                .expect_err("wait")
                .code,
            ErrorCode::InvalidWait
        );
        assert_eq!(
            query(None, None, Some("%%%"))
                .validate()
                .expect_err("cursor")
                .code,
            ErrorCode::InvalidCursor
        );
        for bad in ["1023", "16777217", "-1", "4MiB", ""] {
            let q = EventsQuery {
                max_bytes: Some(bad.into()),
                ..Default::default()
            };
            assert_eq!(
                q.validate().expect_err(bad).code,
                ErrorCode::InvalidMaxBytes,
                "{bad}"
            );
        }
        for good in ["1024", "16777216"] {
            let q = EventsQuery {
                max_bytes: Some(good.into()),
                ..Default::default()
            };
            assert_eq!(q.validate().expect(good).max_bytes.to_string(), good);
        }
        let q = EventsQuery {
            topic: Some("a,,b".into()),
            ..Default::default()
        };
        assert_eq!(
            q.validate().expect_err("topic").code,
            ErrorCode::UnknownTopic
        );
    }
}
