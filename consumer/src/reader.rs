//! [`EventReader`] answers a fetch: it resolves where the read starts (cursor, `earliest`,
//! `latest` or the newest buffered), takes records from the buffer where it holds them and
//! from Kafka where it does not, shares `limit` fairly over partitions, and long-polls.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::time::Duration;

use shared::api::{EventsResponse, FetchRequest, Gap};
use shared::{ApiError, Cursor, ErrorCode, Event, Record, StartFrom};
use tokio::time::Instant;

use crate::buffer::{PartitionRead, RecordBuffer, TopicPartition};
use crate::kafka::KafkaReader;
use crate::metrics::ConsumerMetrics;

/// Seconds a client is told to wait when the source cannot answer.
const RETRY_AFTER_SECS: u64 = 5;

/// The answer to one fetch, before it is encoded for the wire.
#[derive(Debug, Clone)]
pub struct Fetched {
    pub records: Vec<Arc<Record>>,
    pub next_cursor: String,
    pub gaps: Vec<Gap>,
}

impl Fetched {
    /// The public JSON answer.
    pub fn into_events(self) -> EventsResponse {
        EventsResponse {
            events: self
                .records
                .iter()
                .map(|r| Event::from(r.as_ref()))
                .collect(),
            next_cursor: self.next_cursor,
            gaps: self.gaps,
        }
    }

    /// The binary answer ([`shared::wire`]).
    pub fn encode_batch(&self) -> Result<Vec<u8>, shared::wire::WireError> {
        shared::wire::encode(
            self.records.iter().map(AsRef::as_ref),
            &self.next_cursor,
            &self.gaps,
        )
    }
}

/// Serves fetches from the buffer and, for what it no longer holds, from Kafka.
#[derive(Debug)]
pub struct EventReader {
    buffer: Arc<RecordBuffer>,
    kafka: Arc<KafkaReader>,
    topics: Vec<String>,
    metrics: ConsumerMetrics,
}

fn unavailable(err: impl std::fmt::Display) -> ApiError {
    tracing::warn!(error = %err, "source Kafka read failed");
    ApiError::unavailable(
        "the source Kafka is not reachable now; retry later",
        RETRY_AFTER_SECS,
    )
}

impl EventReader {
    pub fn new(
        buffer: Arc<RecordBuffer>,
        kafka: Arc<KafkaReader>,
        topics: Vec<String>,
        metrics: ConsumerMetrics,
    ) -> Self {
        Self {
            buffer,
            kafka,
            topics,
            metrics,
        }
    }

    /// The topics this pod carries.
    pub fn topics(&self) -> &[String] {
        &self.topics
    }

    /// Answers one fetch.
    #[tracing::instrument(skip_all, fields(limit = req.limit, wait_ms = req.wait_ms))]
    pub async fn fetch(&self, req: &FetchRequest) -> Result<Fetched, ApiError> {
        let start = req.start()?;
        let topics = self.selected_topics(&req.topics)?;
        let mut partitions = self.kafka.partitions(&topics);
        if partitions.is_empty() {
            // Metadata not known yet (start-up) or stale: ask once before giving up.
            self.kafka
                .refresh(&self.topics)
                .await
                .map_err(unavailable)?;
            partitions = self.kafka.partitions(&topics);
            if partitions.is_empty() {
                return Err(ApiError::unavailable(
                    "the source topics are not available yet",
                    RETRY_AFTER_SECS,
                ));
            }
        }
        let cluster = self.kafka.cluster_id();
        if let StartFrom::Cursor(c) = &start {
            self.check_identity(c, cluster.as_deref())?;
        }
        let limit = req.limit as usize;
        let mut positions = self.resolve(&start, &partitions, limit).await?;
        if let StartFrom::Cursor(c) = &start {
            self.check_not_ahead(c, &partitions).await?;
        }
        let mut cursor = match start {
            StartFrom::Cursor(c) => c,
            _ => Cursor::new(),
        };
        cursor.set_cluster(cluster);
        let deadline = Instant::now() + Duration::from_millis(u64::from(req.wait_ms));
        let mut changes = self.buffer.subscribe();
        let (events, gaps) = loop {
            changes.mark_unchanged();
            let (events, gaps) = self.collect(&mut positions, limit).await?;
            if !events.is_empty() || !gaps.is_empty() || Instant::now() >= deadline {
                break (events, gaps);
            }
            // Sleep until new records arrive, with a short cap so partitions the buffer
            // does not cover (served from Kafka) are looked at again too.
            let nap = deadline.min(Instant::now() + Duration::from_millis(250));
            let _ = tokio::time::timeout_at(nap, changes.changed()).await;
        };
        for (tp, next) in &positions {
            cursor.set(&tp.topic, tp.partition, *next);
        }
        Ok(Fetched {
            records: events,
            next_cursor: cursor.encode(),
            gaps,
        })
    }

    /// Refuses a cursor of another source cluster or of topics not carried here.
    fn check_identity(&self, cursor: &Cursor, cluster: Option<&str>) -> Result<(), ApiError> {
        if let (Some(theirs), Some(ours)) = (cursor.cluster(), cluster)
            && theirs != ours
        {
            return Err(ApiError::new(
                ErrorCode::CursorClusterMismatch,
                format!(
                    "the cursor belongs to source cluster {theirs:?}, this service reads {ours:?}; start again with cursor=earliest"
                ),
            ));
        }
        if let Some(unknown) = cursor
            .topics()
            .find(|t| !self.topics.iter().any(|c| c == t))
        {
            return Err(ApiError::new(
                ErrorCode::CursorTopicMismatch,
                format!(
                    "the cursor has positions for topic {unknown:?}, which is not carried; carried: {}",
                    self.topics.join(",")
                ),
            ));
        }
        Ok(())
    }

    /// Refuses a cursor past the end of the log, which no read from this source made. Only
    /// positions beyond what the buffer has seen are checked against Kafka.
    async fn check_not_ahead(
        &self,
        cursor: &Cursor,
        partitions: &[TopicPartition],
    ) -> Result<(), ApiError> {
        let suspects: Vec<TopicPartition> = partitions
            .iter()
            .filter(|tp| {
                cursor
                    .get(&tp.topic, tp.partition)
                    .is_some_and(|pos| self.buffer.end(tp).is_none_or(|end| pos > end))
            })
            .cloned()
            .collect();
        if suspects.is_empty() {
            return Ok(());
        }
        for (tp, _, high) in self.kafka.watermarks(suspects).await.map_err(unavailable)? {
            let pos = cursor.get(&tp.topic, tp.partition).unwrap_or_default();
            if pos > high {
                return Err(ApiError::new(
                    ErrorCode::CursorAhead,
                    format!(
                        "the cursor is at offset {pos} of {}/{}, past the end of the log ({high}); it was not made by this source",
                        tp.topic, tp.partition
                    ),
                ));
            }
        }
        Ok(())
    }

    fn selected_topics(&self, wanted: &[String]) -> Result<Vec<String>, ApiError> {
        if wanted.is_empty() {
            return Ok(self.topics.clone());
        }
        match wanted.iter().find(|t| !self.topics.contains(t)) {
            Some(unknown) => Err(ApiError::new(
                ErrorCode::UnknownTopic,
                format!(
                    "topic {unknown:?} is not carried; carried: {}",
                    self.topics.join(",")
                ),
            )),
            None => Ok(wanted.to_vec()),
        }
    }

    /// The offset each partition's read starts at.
    async fn resolve(
        &self,
        start: &StartFrom,
        partitions: &[TopicPartition],
        limit: usize,
    ) -> Result<BTreeMap<TopicPartition, i64>, ApiError> {
        // One snapshot of the buffer: a partition it lacks must get its watermarks.
        let newest =
            matches!(start, StartFrom::Buffered).then(|| self.buffer.newest_positions(limit));
        let needs_watermarks: Vec<TopicPartition> = match start {
            StartFrom::Cursor(c) => partitions
                .iter()
                .filter(|tp| c.get(&tp.topic, tp.partition).is_none())
                .cloned()
                .collect(),
            StartFrom::Buffered => partitions
                .iter()
                .filter(|tp| newest.as_ref().is_none_or(|n| !n.contains_key(tp)))
                .cloned()
                .collect(),
            StartFrom::Earliest | StartFrom::Latest => partitions.to_vec(),
        };
        let marks: HashMap<TopicPartition, (i64, i64)> = if needs_watermarks.is_empty() {
            HashMap::new()
        } else {
            self.kafka
                .watermarks(needs_watermarks)
                .await
                .map_err(unavailable)?
                .into_iter()
                .map(|(tp, low, high)| (tp, (low, high)))
                .collect()
        };
        let mut positions = BTreeMap::new();
        for tp in partitions {
            let (low, high) = marks.get(tp).copied().unwrap_or((0, 0));
            let at = match start {
                // A partition the cursor does not know (new since): from its start, so
                // nothing is missed.
                StartFrom::Cursor(c) => c.get(&tp.topic, tp.partition).unwrap_or(low),
                StartFrom::Earliest => low,
                StartFrom::Latest => high,
                StartFrom::Buffered => newest
                    .as_ref()
                    .and_then(|n| n.get(tp).copied())
                    .unwrap_or(high),
            };
            positions.insert(tp.clone(), at);
        }
        Ok(positions)
    }

    /// Reads from every partition, `limit` shared fairly, advancing `positions`.
    async fn collect(
        &self,
        positions: &mut BTreeMap<TopicPartition, i64>,
        limit: usize,
    ) -> Result<(Vec<Arc<Record>>, Vec<Gap>), ApiError> {
        let mut events = Vec::new();
        let mut gaps = Vec::new();
        let share = (limit / positions.len().max(1)).max(1);
        let mut has_more = Vec::new();
        for (tp, pos) in positions.iter_mut() {
            let room = share.min(limit - events.len());
            if room == 0 {
                break;
            }
            let got = self
                .read_partition(tp, pos, room, &mut events, &mut gaps)
                .await?;
            if got == room {
                has_more.push(tp.clone());
            }
        }
        for tp in has_more {
            let room = limit - events.len();
            if room == 0 {
                break;
            }
            if let Some(pos) = positions.get_mut(&tp) {
                self.read_partition(&tp, pos, room, &mut events, &mut gaps)
                    .await?;
            }
        }
        Ok((events, gaps))
    }

    /// Reads up to `max` records of one partition into `events`; returns how many.
    async fn read_partition(
        &self,
        tp: &TopicPartition,
        pos: &mut i64,
        max: usize,
        events: &mut Vec<Arc<Record>>,
        gaps: &mut Vec<Gap>,
    ) -> Result<usize, ApiError> {
        let mut got = 0;
        // Kafka fills what the buffer cannot vouch for; once a Kafka read reaches the part
        // the buffer holds, the buffer goes on. Two rounds each at most.
        for _ in 0..2 {
            let stop = match self.buffer.read(tp, *pos, max - got) {
                PartitionRead::Records { records, next } => {
                    events.extend(records.iter().cloned());
                    *pos = next;
                    got += records.len();
                    if got == max || records.is_empty() {
                        break;
                    }
                    continue;
                }
                PartitionRead::Missing { stop } => Some(stop),
                PartitionRead::Unknown => None,
            };
            self.metrics.catchup_reads.inc();
            let read = self
                .kafka
                .read_range(tp.clone(), *pos, max - got, stop)
                .await
                .map_err(unavailable)?;
            if let Some(missing) = read.missing {
                self.metrics.gaps.inc();
                tracing::warn!(topic = %tp.topic, partition = tp.partition, from = missing.from, to = missing.to,
                    "offsets no longer in the source (retention); reported as a gap");
                gaps.push(Gap {
                    topic: tp.topic.clone(),
                    partition: tp.partition,
                    from: missing.from,
                    to: missing.to,
                });
            }
            got += read.records.len();
            events.extend(read.records.into_iter().map(Arc::new));
            *pos = read.next;
            if got == max || stop.is_none_or(|s| read.next < s) {
                break;
            }
        }
        Ok(got)
    }
}
