//! [`RecordBuffer`]: the bounded, per-partition in-memory copy of what the pod consumed.
//! Each partition holds the records of offsets `start..end` as the consumer received them;
//! where the consumed stream jumped (transaction markers, or the consumer reset past
//! offsets the source deleted) the jump is remembered, and reads that land in it, or before
//! `start` after eviction, are served from Kafka, which alone can tell a gap from a marker.

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex, MutexGuard};

use shared::Record;
use tokio::sync::watch;

use crate::metrics::ConsumerMetrics;

/// A topic and partition.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct TopicPartition {
    pub topic: String,
    pub partition: i32,
}

impl TopicPartition {
    pub fn new(topic: impl Into<String>, partition: i32) -> Self {
        Self {
            topic: topic.into(),
            partition,
        }
    }
}

/// How much the buffer may hold.
#[derive(Debug, Clone, Copy)]
pub struct BufferLimits {
    pub max_events: usize,
    pub max_bytes: usize,
}

/// What a read of one partition found.
#[derive(Debug, PartialEq, Eq)]
pub enum PartitionRead {
    /// Records from the requested offset on (possibly none), and the offset to read next.
    Records {
        records: Vec<Arc<Record>>,
        next: i64,
    },
    /// The buffer cannot vouch for offsets from the requested one up to `stop` (evicted, or
    /// a jump in the consumed stream): read them from Kafka.
    Missing { stop: i64 },
    /// The buffer holds nothing of this partition yet.
    Unknown,
}

#[derive(Debug)]
struct Entry {
    seq: u64,
    size: usize,
    /// The consumed stream jumped to this record from this offset (the previous end).
    jumped_from: Option<i64>,
    record: Arc<Record>,
}

/// What holding one record costs the buffer beyond the record itself: its entry, and the
/// shared block (counts and allocator header) the record lives in.
const ENTRY_BYTES: usize = std::mem::size_of::<Entry>() + 32;

/// Bytes `record` takes in the buffer, as counted against `BUFFER_MAX_BYTES`.
fn cost(record: &Record) -> usize {
    record.size_bytes() + ENTRY_BYTES
}

#[derive(Debug, Default)]
struct PartitionBuffer {
    records: VecDeque<Entry>,
    /// The buffer holds every record at offsets `start..end` (once the first record came).
    range: Option<(i64, i64)>,
}

#[derive(Debug, Default)]
struct State {
    partitions: HashMap<TopicPartition, PartitionBuffer>,
    events: usize,
    bytes: usize,
    seq: u64,
}

/// The pod's bounded buffer; shared by the Kafka source (writer) and the reader.
#[derive(Debug)]
pub struct RecordBuffer {
    limits: BufferLimits,
    state: Mutex<State>,
    changed: watch::Sender<u64>,
    metrics: ConsumerMetrics,
}

impl RecordBuffer {
    pub fn new(limits: BufferLimits, metrics: ConsumerMetrics) -> Self {
        Self {
            limits,
            state: Mutex::default(),
            changed: watch::Sender::new(0),
            metrics,
        }
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        // A panic while holding the lock leaves counts that are still consistent enough to
        // serve; poisoning must not take the whole pod down.
        self.state
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// The pod now consumes the partition: start an empty run for it.
    pub fn assign(&self, tp: TopicPartition) {
        self.lock().partitions.entry(tp).or_default();
    }

    /// Appends records consumed in order from Kafka, evicting the oldest if over limits.
    pub fn push_batch(&self, records: impl IntoIterator<Item = Record>) {
        let mut state = self.lock();
        let mut added = false;
        for record in records {
            added |= self.push_locked(&mut state, record);
        }
        let mut evicted = 0u64;
        while state.events > 1
            && (state.events > self.limits.max_events || state.bytes > self.limits.max_bytes)
        {
            if !evict_oldest(&mut state) {
                break;
            }
            evicted += 1;
        }
        self.metrics.buffer_evicted.inc_by(evicted);
        self.publish_gauges(&state);
        drop(state);
        if added {
            self.changed.send_modify(|v| *v = v.wrapping_add(1));
        }
    }

    fn push_locked(&self, state: &mut State, record: Record) -> bool {
        let tp = TopicPartition::new(record.topic.as_str(), record.partition);
        let offset = record.offset;
        let size = cost(&record);
        state.seq += 1;
        let seq = state.seq;
        let part = state.partitions.entry(tp).or_default();
        let jumped_from = match &mut part.range {
            Some((_, end)) if offset < *end => return false, // redelivered; already held
            Some((_, end)) => {
                let previous = std::mem::replace(end, offset + 1);
                (offset > previous).then_some(previous)
            }
            None => {
                part.range = Some((offset, offset + 1));
                None
            }
        };
        part.records.push_back(Entry {
            seq,
            size,
            jumped_from,
            record: Arc::new(record),
        });
        state.events += 1;
        state.bytes += size;
        true
    }

    /// Up to `max` records of a partition from offset `from` on, as long as `take` accepts
    /// them (it stops at the first it refuses).
    pub fn read(
        &self,
        tp: &TopicPartition,
        from: i64,
        max: usize,
        mut take: impl FnMut(&Record) -> bool,
    ) -> PartitionRead {
        let state = self.lock();
        let Some(part) = state.partitions.get(tp) else {
            return PartitionRead::Unknown;
        };
        let Some((start, end)) = part.range else {
            return PartitionRead::Unknown;
        };
        if from < start {
            return PartitionRead::Missing { stop: start };
        }
        if from >= end {
            return PartitionRead::Records {
                records: Vec::new(),
                next: from,
            };
        }
        let first = part.records.partition_point(|e| e.record.offset < from);
        let mut entries = part.records.range(first..);
        if let Some(entry) = entries.clone().next()
            && entry.record.offset > from
        {
            // `from` falls in a jump of the consumed stream (or just after eviction).
            return PartitionRead::Missing {
                stop: entry.record.offset,
            };
        }
        let mut records = Vec::new();
        let mut next = end;
        for (i, entry) in entries.by_ref().enumerate() {
            if let Some(jumped_from) = entry.jumped_from.filter(|_| i > 0) {
                next = jumped_from;
                break;
            }
            if records.len() == max || !take(&entry.record) {
                next = entry.record.offset;
                break;
            }
            records.push(Arc::clone(&entry.record));
        }
        PartitionRead::Records { records, next }
    }

    /// The offset after the last record held of a partition, if any came yet.
    pub fn end(&self, tp: &TopicPartition) -> Option<i64> {
        self.lock().partitions.get(tp)?.range.map(|(_, end)| end)
    }

    /// For the prototype's "no cursor" read: a start offset per buffered partition such
    /// that reading from there gives the newest `limit` records held (by timestamp, then
    /// arrival), over all partitions.
    pub fn newest_positions(&self, limit: usize) -> HashMap<TopicPartition, i64> {
        let state = self.lock();
        let mut tails: Vec<((i64, u64), &TopicPartition, i64)> = state
            .partitions
            .iter()
            .flat_map(|(tp, part)| {
                part.records.iter().rev().take(limit).map(move |e| {
                    (
                        (e.record.timestamp.unwrap_or(i64::MIN), e.seq),
                        tp,
                        e.record.offset,
                    )
                })
            })
            .collect();
        tails.sort_unstable_by_key(|t| std::cmp::Reverse(t.0));
        let mut positions: HashMap<TopicPartition, i64> = state
            .partitions
            .iter()
            .filter_map(|(tp, part)| part.range.map(|(_, end)| (tp.clone(), end)))
            .collect();
        for (_, tp, offset) in tails.into_iter().take(limit) {
            if let Some(pos) = positions.get_mut(tp) {
                *pos = (*pos).min(offset);
            }
        }
        positions
    }

    /// A receiver that changes whenever records are added, for long-polls.
    pub fn subscribe(&self) -> watch::Receiver<u64> {
        self.changed.subscribe()
    }

    /// `(events, bytes, partitions)` held now.
    pub fn stats(&self) -> (usize, usize, usize) {
        let state = self.lock();
        (state.events, state.bytes, state.partitions.len())
    }

    fn publish_gauges(&self, state: &State) {
        self.metrics.buffer_events.set(state.events as i64);
        self.metrics.buffer_bytes.set(state.bytes as i64);
    }
}

/// Drops the record that arrived first, over all partitions; false if nothing is held.
fn evict_oldest(state: &mut State) -> bool {
    let Some(tp) = state
        .partitions
        .iter()
        .filter_map(|(tp, part)| part.records.front().map(|e| (e.seq, tp)))
        .min_by_key(|(seq, _)| *seq)
        .map(|(_, tp)| tp.clone())
    else {
        return false;
    };
    let Some(part) = state.partitions.get_mut(&tp) else {
        return false;
    };
    let Some(entry) = part.records.pop_front() else {
        return false;
    };
    if let Some((start, _)) = &mut part.range {
        *start = entry.record.offset + 1;
    }
    state.events -= 1;
    state.bytes -= entry.size;
    true
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(partition: i32, offset: i64, size: usize) -> Record {
        Record {
            topic: "t".into(),
            partition,
            offset,
            timestamp: Some(offset),
            key: None,
            value: Some(vec![b'x'; size]),
            headers: Vec::new(),
        }
    }

    fn buffer(max_events: usize, max_bytes: usize) -> RecordBuffer {
        RecordBuffer::new(
            BufferLimits {
                max_events,
                max_bytes,
            },
            ConsumerMetrics::new(),
        )
    }

    fn offsets(read: PartitionRead) -> (Vec<i64>, i64) {
        match read {
            PartitionRead::Records { records, next } => {
                (records.iter().map(|r| r.offset).collect(), next)
            }
            other => panic!("expected records, got {other:?}"),
        }
    }

    #[test]
    fn reads_from_an_offset_with_limit_and_next() {
        let buf = buffer(100, 1 << 20);
        let tp = TopicPartition::new("t", 0);
        assert_eq!(buf.read(&tp, 0, 10, |_| true), PartitionRead::Unknown);
        buf.push_batch([record(0, 5, 1), record(0, 6, 1), record(0, 9, 1)]);
        assert_eq!(offsets(buf.read(&tp, 5, 1, |_| true)), (vec![5], 6));
        assert_eq!(
            offsets(buf.read(&tp, 6, 10, |_| true)),
            (vec![6], 7),
            "stops before the jump"
        );
        assert_eq!(offsets(buf.read(&tp, 9, 10, |_| true)), (vec![9], 10));
        assert_eq!(offsets(buf.read(&tp, 10, 10, |_| true)), (vec![], 10));
        assert_eq!(
            buf.read(&tp, 4, 10, |_| true),
            PartitionRead::Missing { stop: 5 }
        );
        // Offsets 7 and 8 were never consumed: only Kafka knows whether they are markers
        // or deleted records.
        assert_eq!(
            buf.read(&tp, 7, 10, |_| true),
            PartitionRead::Missing { stop: 9 }
        );
        assert_eq!(
            buf.read(&tp, 8, 10, |_| true),
            PartitionRead::Missing { stop: 9 }
        );
    }

    #[test]
    fn skips_redelivered_records() {
        let buf = buffer(100, 1 << 20);
        buf.push_batch([
            record(0, 0, 1),
            record(0, 1, 1),
            record(0, 1, 1),
            record(0, 0, 1),
        ]);
        assert_eq!(buf.stats().0, 2);
    }

    #[test]
    fn evicts_oldest_arrival_first_by_count_and_bytes() {
        let buf = buffer(3, 1 << 20);
        buf.push_batch([
            record(0, 0, 1),
            record(1, 0, 1),
            record(0, 1, 1),
            record(1, 1, 1),
        ]);
        assert_eq!(buf.stats().0, 3);
        assert_eq!(
            buf.read(&TopicPartition::new("t", 0), 0, 10, |_| true),
            PartitionRead::Missing { stop: 1 }
        );
        assert_eq!(
            offsets(buf.read(&TopicPartition::new("t", 1), 0, 10, |_| true)),
            (vec![0, 1], 2)
        );

        let buf = buffer(1000, 3 * cost(&record(0, 0, 1000)));
        buf.push_batch((0..10).map(|o| record(0, o, 1000)));
        let (events, bytes, _) = buf.stats();
        assert_eq!(events, 3);
        assert!(bytes <= 3 * cost(&record(0, 0, 1000)));
        assert_eq!(
            offsets(buf.read(&TopicPartition::new("t", 0), 7, 10, |_| true)),
            (vec![7, 8, 9], 10)
        );
    }

    #[test]
    fn newest_positions_cover_the_last_records_over_partitions() {
        let buf = buffer(100, 1 << 20);
        buf.push_batch([
            record(0, 0, 1),
            record(1, 0, 1),
            record(0, 1, 1),
            record(1, 1, 1),
            record(0, 2, 1),
        ]);
        let pos = buf.newest_positions(3);
        assert_eq!(pos[&TopicPartition::new("t", 0)], 1);
        assert_eq!(pos[&TopicPartition::new("t", 1)], 1);
        let pos = buf.newest_positions(0);
        assert_eq!(pos[&TopicPartition::new("t", 0)], 3);
    }

    #[tokio::test]
    async fn subscribers_see_new_records() {
        let buf = buffer(100, 1 << 20);
        let mut rx = buf.subscribe();
        buf.push_batch([record(0, 0, 1)]);
        tokio::time::timeout(std::time::Duration::from_secs(5), rx.changed())
            .await
            .expect("in time")
            .expect("open");
    }
}
