//! [`EventReader`] answers a fetch: it resolves where the read starts (cursor, `earliest`,
//! `latest` or the newest buffered), takes records from the buffer where it holds them and
//! from Kafka where it does not, shares `limit` fairly over partitions, keeps the answer
//! within `max_bytes` ([`Room`]), and long-polls. Its work is bounded: reads from Kafka run a
//! few at a time, and a fetch answers with what it has once its time budget is spent, or at
//! once when the pod begins to stop.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::time::Duration;

use shared::api::{EventsResponse, FetchRequest, Gap};
use shared::{ApiError, Cursor, ErrorCode, Event, Record, StartFrom};
use tokio::sync::Semaphore;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use crate::buffer::{PartitionRead, RecordBuffer, TopicPartition};
use crate::kafka::KafkaReader;
use crate::metrics::ConsumerMetrics;

/// Seconds a client is told to wait when the source cannot answer.
const RETRY_AFTER_SECS: u64 = 5;
/// Seconds a client is told to wait when the pod is at a bound of its own.
pub const BUSY_RETRY_AFTER_SECS: u64 = 1;

/// What an answer may still take: its events are bounded by `max_bytes`, each counted as it
/// is written in the answer (the binary layout, or JSON with its escaping or base64), so
/// the bound holds for the body too; the first event is always taken, whatever its size.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Room {
    bytes: usize,
    empty: bool,
    json: bool,
    full: bool,
}

impl Room {
    /// Room for `max_bytes` of events written as JSON (`json`) or in the binary layout.
    pub fn new(max_bytes: usize, json: bool) -> Self {
        Self {
            bytes: max_bytes,
            empty: true,
            json,
            full: false,
        }
    }

    /// Takes `record` if it fits; once one does not, the answer is full.
    pub fn take(&mut self, record: &Record) -> bool {
        if self.full {
            return false;
        }
        let size = if self.json {
            record.json_len()
        } else {
            shared::wire::record_len(record)
        };
        if size > self.bytes && !self.empty {
            self.full = true;
            return false;
        }
        self.bytes = self.bytes.saturating_sub(size);
        self.empty = false;
        true
    }

    /// A record did not fit.
    pub fn is_full(&self) -> bool {
        self.full
    }
}

/// Where a read from `positions` starts among them: a hash of the positions, the same in
/// every pod, and different once any position moved.
fn first_visited(positions: &BTreeMap<TopicPartition, i64>) -> usize {
    use std::hash::{Hash, Hasher};
    let mut hasher = std::collections::hash_map::DefaultHasher::new();
    positions.hash(&mut hasher);
    (hasher.finish() % positions.len().max(1) as u64) as usize
}

/// What visiting one partition did to the answer.
enum Visit {
    /// Read as many as it was given room for: it may have more.
    Filled,
    Read,
    /// The answer is complete: out of room, time or reads.
    Stop,
}

/// The bounds on the pod's own work (`MAX_CATCHUP_READS`, `FETCH_READ_BUDGET_MS`).
#[derive(Debug, Clone, Copy)]
pub struct ReadBounds {
    /// Reads from Kafka under way or waiting at once, over all fetches.
    pub catchup_reads: usize,
    /// How long one fetch reads before it answers with what it has.
    pub read_budget: Duration,
}

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

    /// The binary answer ([`shared::wire`]). Each record read from Kafka for it is freed as
    /// soon as it is written, not after the whole batch.
    pub fn into_batch(self) -> Result<Vec<u8>, shared::wire::WireError> {
        shared::wire::encode(self.records.into_iter(), &self.next_cursor, &self.gaps)
    }
}

/// Serves fetches from the buffer and, for what it no longer holds, from Kafka.
#[derive(Debug)]
pub struct EventReader {
    buffer: Arc<RecordBuffer>,
    kafka: Arc<KafkaReader>,
    topics: Vec<String>,
    metrics: ConsumerMetrics,
    /// One permit per Kafka read under way or waiting.
    catchup_slots: Semaphore,
    read_budget: Duration,
    /// Cancelled when the pod begins to stop: no new records come then, so a long-poll
    /// waiting for them answers with what it has instead of holding the stop up.
    stopping: CancellationToken,
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
        bounds: ReadBounds,
        stopping: CancellationToken,
    ) -> Self {
        Self {
            buffer,
            kafka,
            topics,
            metrics,
            catchup_slots: Semaphore::new(bounds.catchup_reads.max(1)),
            read_budget: bounds.read_budget,
            stopping,
        }
    }

    /// The topics this pod carries.
    pub fn topics(&self) -> &[String] {
        &self.topics
    }

    /// Answers one fetch.
    #[tracing::instrument(skip_all, fields(limit = req.limit, max_bytes = req.max_bytes, wait_ms = req.wait_ms))]
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
            let room = Room::new(req.max_bytes as usize, !req.binary);
            let until = Instant::now() + self.read_budget;
            let (events, gaps) = self.collect(&mut positions, limit, room, until).await?;
            if !events.is_empty()
                || !gaps.is_empty()
                || Instant::now() >= deadline
                || self.stopping.is_cancelled()
            {
                break (events, gaps);
            }
            // Sleep until new records arrive, with a short cap so partitions the buffer
            // does not cover (served from Kafka) are looked at again too.
            let nap = deadline.min(Instant::now() + Duration::from_millis(250));
            tokio::select! {
                _ = tokio::time::timeout_at(nap, changes.changed()) => {}
                () = self.stopping.cancelled() => {}
            }
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

    /// Reads from every partition, `limit` shared fairly and `room` first come, advancing
    /// `positions`. The partitions are visited from one the positions pick ([`first_visited`]),
    /// so that when the time budget (`until`) or `max_bytes` ends a fetch early, the next one
    /// (from the cursor it returned) starts elsewhere, while the same cursor always gets the
    /// same answer. Once it has events, a read that cannot be done now (the source fails, or
    /// too many reads are under way) ends the fetch with what it has.
    async fn collect(
        &self,
        positions: &mut BTreeMap<TopicPartition, i64>,
        limit: usize,
        room: Room,
        until: Instant,
    ) -> Result<(Vec<Arc<Record>>, Vec<Gap>), ApiError> {
        let mut answer = Answer {
            events: Vec::new(),
            gaps: Vec::new(),
            limit,
            room,
            until,
        };
        let mut order: Vec<TopicPartition> = positions.keys().cloned().collect();
        if order.len() > 1 {
            order.rotate_left(first_visited(positions));
        }
        let share = (limit / order.len().max(1)).max(1);
        let mut has_more = Vec::new();
        for tp in order {
            match self.visit(&tp, share, positions, &mut answer).await? {
                Visit::Filled => has_more.push(tp),
                Visit::Read => {}
                Visit::Stop => return Ok((answer.events, answer.gaps)),
            }
        }
        for tp in has_more {
            if let Visit::Stop = self.visit(&tp, limit, positions, &mut answer).await? {
                break;
            }
        }
        Ok((answer.events, answer.gaps))
    }

    /// Reads up to `wanted` records of `tp` into the answer, unless it is complete.
    async fn visit(
        &self,
        tp: &TopicPartition,
        wanted: usize,
        positions: &mut BTreeMap<TopicPartition, i64>,
        answer: &mut Answer,
    ) -> Result<Visit, ApiError> {
        let max = wanted.min(answer.limit - answer.events.len());
        if max == 0 || answer.room.is_full() {
            return Ok(Visit::Stop);
        }
        if !answer.events.is_empty() && Instant::now() >= answer.until {
            self.metrics.fetches_cut_short.inc();
            tracing::debug!(
                events = answer.events.len(),
                "read budget spent; answering with what was read"
            );
            return Ok(Visit::Stop);
        }
        let Some(pos) = positions.get_mut(tp) else {
            return Ok(Visit::Read);
        };
        match self.read_partition(tp, pos, max, answer).await {
            Ok(got) if got == max => Ok(Visit::Filled),
            Ok(_) => Ok(Visit::Read),
            Err(err) if answer.events.is_empty() => Err(err),
            Err(err) => {
                tracing::debug!(error = %err, "answering with what was read");
                Ok(Visit::Stop)
            }
        }
    }

    /// Reads up to `max` records of one partition into the answer; returns how many.
    async fn read_partition(
        &self,
        tp: &TopicPartition,
        pos: &mut i64,
        max: usize,
        answer: &mut Answer,
    ) -> Result<usize, ApiError> {
        let mut got = 0;
        // Kafka fills what the buffer cannot vouch for; once a Kafka read reaches the part
        // the buffer holds, the buffer goes on. Two rounds each at most.
        for _ in 0..2 {
            let room = &mut answer.room;
            let stop = match self.buffer.read(tp, *pos, max - got, |r| room.take(r)) {
                PartitionRead::Records { records, next } => {
                    answer.events.extend(records.iter().cloned());
                    *pos = next;
                    got += records.len();
                    if got == max || records.is_empty() || answer.room.is_full() {
                        break;
                    }
                    continue;
                }
                PartitionRead::Missing { stop } => Some(stop),
                PartitionRead::Unknown => None,
            };
            let Ok(_slot) = self.catchup_slots.try_acquire() else {
                self.metrics
                    .fetches_refused
                    .with_label_values(&["catchup_reads"])
                    .inc();
                return Err(ApiError::unavailable(
                    "the service is reading many old offsets from Kafka for other clients now; retry shortly",
                    BUSY_RETRY_AFTER_SECS,
                ));
            };
            self.metrics.catchup_reads.inc();
            // The first read of an answer gets the whole Kafka timeout, so every fetch moves
            // on; later ones end with the fetch's budget.
            let deadline = if answer.events.is_empty() {
                None
            } else {
                Some(answer.until.into_std())
            };
            let read = self
                .kafka
                .read_range(tp.clone(), *pos, max - got, stop, answer.room, deadline)
                .await
                .map_err(unavailable)?;
            answer.room = read.room;
            if read.resumed {
                self.metrics.catchup_reads_resumed.inc();
            }
            if let Some(missing) = read.missing {
                self.metrics.gaps.inc();
                tracing::warn!(topic = %tp.topic, partition = tp.partition, from = missing.from, to = missing.to,
                    "offsets no longer in the source (retention); reported as a gap");
                answer.gaps.push(Gap {
                    topic: tp.topic.clone(),
                    partition: tp.partition,
                    from: missing.from,
                    to: missing.to,
                });
            }
            got += read.records.len();
            self.metrics
                .catchup_events
                .inc_by(read.records.len() as u64);
            answer.events.extend(read.records.into_iter().map(Arc::new));
            *pos = read.next;
            if got == max || answer.room.is_full() || stop.is_none_or(|s| read.next < s) {
                break;
            }
        }
        Ok(got)
    }
}

/// An answer being filled: its events and gaps, and what it may still take.
struct Answer {
    events: Vec<Arc<Record>>,
    gaps: Vec<Gap>,
    /// Most events.
    limit: usize,
    room: Room,
    /// When it stops reading more partitions (the fetch's read budget).
    until: Instant,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(value_len: usize) -> Record {
        Record {
            topic: "t".into(),
            partition: 0,
            offset: 0,
            timestamp: None,
            key: None,
            value: Some(vec![b'a'; value_len]),
            headers: Vec::new(),
        }
    }

    #[test]
    fn room_takes_the_first_record_whatever_its_size_then_what_fits() {
        let big = record(10_000);
        let mut room = Room::new(1024, false);
        assert!(room.take(&big), "the first always fits");
        assert!(!room.take(&record(1)), "then nothing more");
        assert!(room.is_full());

        let small = record(100);
        let each = shared::wire::record_len(&small);
        let mut room = Room::new(each * 3, false);
        assert!((0..3).all(|_| room.take(&small)));
        assert!(!room.take(&small));
    }

    #[test]
    fn the_first_partition_visited_follows_the_positions() {
        let positions = |offsets: &[i64]| -> BTreeMap<TopicPartition, i64> {
            offsets
                .iter()
                .enumerate()
                .map(|(p, o)| (TopicPartition::new("t", p as i32), *o))
                .collect()
        };
        let same = positions(&[5, 9, 0, 3]);
        assert_eq!(
            first_visited(&same),
            first_visited(&same.clone()),
            "same cursor, same start"
        );
        let starts: std::collections::HashSet<usize> = (0..64)
            .map(|moved| first_visited(&positions(&[5 + moved, 9, 0, 3])))
            .collect();
        assert!(starts.len() > 1, "moving on moves the start: {starts:?}");
        assert!(starts.iter().all(|s| *s < 4));
    }

    #[test]
    fn room_counts_json_as_written() {
        let r = record(300);
        let mut json = Room::new(r.json_len() * 2, true);
        assert!(json.take(&r) && json.take(&r) && !json.take(&r));
    }
}
