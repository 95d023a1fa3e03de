//! A transaction of this client that local Kafka holds open for good (a broker restarted in
//! the middle of a commit can finish it without writing its markers, see
//! [`HeldOpen`]): whether aborting it is safe, and the abort itself, through
//! this client's own transactional ids, so the client resumes without an operator.

use std::collections::HashSet;
use std::sync::Arc;
use std::time::{Duration, Instant};

use rdkafka::consumer::Consumer;
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::message::{Headers, Message};
use rdkafka::{Offset, TopicPartitionList};
use shared::Cursor;
use shared::kafka::{Cluster, topic_partitions};

use crate::sink::{
    HeldOpen, LocalKafka, SOURCE_OFFSET_HEADER, SOURCE_PARTITION_HEADER, SOURCE_TOPIC_HEADER,
    SinkError, partition_reader,
};

/// The readers' name in the log.
const READER: &str = "local Kafka open-transaction reader";
/// Longest the records of the open ranges may take to read.
const READ_WITHIN: Duration = Duration::from_secs(60);
/// Most records read from one open range: a transaction of one batch is far smaller.
const RANGE_AT_MOST: i64 = 1_000_000;

/// A record of the state topic's open range, as far as the check needs it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StateRecord {
    pub offset: i64,
    pub key: Option<Vec<u8>>,
}

/// Where a record of a destination's open range says it was copied from (none when it
/// carries no provenance headers: another producer's).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OpenCopy {
    pub topic: String,
    pub partition: i32,
    pub offset: i64,
    pub source: Option<(String, i32, i64)>,
}

/// Why the open transaction is left to an operator.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Refusal {
    #[error(
        "the transaction open at offset {stable} of the state topic is not this client's (its first record is not under this client's id)"
    )]
    NotOurs { stable: i64 },
    #[error(
        "this client saved {later} more position(s) after offset {stable} of the state topic; one may be committed, and aborting the transaction under it would lose its batch"
    )]
    LaterPositions { stable: i64, later: usize },
    #[error(
        "{topic}[{partition}] offset {offset} is a copy of {source_topic}[{source_partition}] offset {source_offset}, which the committed position has passed; aborting would lose it"
    )]
    Covered {
        topic: String,
        partition: i32,
        offset: i64,
        source_topic: String,
        source_partition: i32,
        source_offset: i64,
    },
    #[error("the open range of {topic}[{partition}] holds more than {RANGE_AT_MOST} records")]
    TooLong { topic: String, partition: i32 },
}

/// Whether aborting what this client's transactional ids hold open is safe: the open range
/// of the state topic must start with this client's position and hold no later one of it
/// (else a later, committed position could rest on the open batch), and no copy held open
/// may be one the committed position has passed (a commit marker lost on one partition
/// only). Then the abort takes the batch and its position back together, and the client
/// copies that batch again, once.
pub fn check(
    client_id: &str,
    state: &[StateRecord],
    committed: Option<&Cursor>,
    copies: &[OpenCopy],
) -> Result<(), Refusal> {
    let ours = |r: &StateRecord| r.key.as_deref() == Some(client_id.as_bytes());
    if let Some(first) = state.first() {
        if !ours(first) {
            return Err(Refusal::NotOurs {
                stable: first.offset,
            });
        }
        let later = state.iter().skip(1).filter(|r| ours(r)).count();
        if later > 0 {
            return Err(Refusal::LaterPositions {
                stable: first.offset,
                later,
            });
        }
    }
    for copy in copies {
        let Some((source_topic, source_partition, source_offset)) = &copy.source else {
            continue;
        };
        let passed = committed
            .and_then(|c| c.get(source_topic, *source_partition))
            .is_some_and(|next| *source_offset < next);
        if passed {
            return Err(Refusal::Covered {
                topic: copy.topic.clone(),
                partition: copy.partition,
                offset: copy.offset,
                source_topic: source_topic.clone(),
                source_partition: *source_partition,
                source_offset: *source_offset,
            });
        }
    }
    Ok(())
}

/// Why the open transaction was not ended.
#[derive(Debug, thiserror::Error)]
pub enum HangingError {
    #[error(transparent)]
    Refused(#[from] Refusal),
    #[error("cannot read what local Kafka holds open: {0}")]
    Read(#[from] KafkaError),
    #[error("cannot abort it: {0}")]
    Abort(#[from] SinkError),
}

/// What was aborted.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Ended {
    /// Partitions whose open range the abort closed (the state topic's first).
    pub partitions: Vec<(String, i32)>,
}

/// Ends the transaction `held` names, if [`check`] finds it this client's and aborting it
/// safe: both lanes (this client's two transactional ids, so whichever holds it) write one
/// record to every partition held open and abort, which closes the range their producer
/// left open there. `lanes` must be freshly initialised: nothing of theirs is in flight.
pub async fn end(lanes: &[Arc<LocalKafka>; 2], held: &HeldOpen) -> Result<Ended, HangingError> {
    let HeldOpen {
        topic,
        stable,
        written,
        committed,
    } = held;
    let lane = &lanes[0];
    let (local, destination, client_id) = (
        lane.cluster().clone(),
        lane.destination().clone(),
        lane.client_id().to_owned(),
    );
    let (state_topic, stable, written) = (topic.clone(), *stable, *written);
    let committed = committed.as_deref().and_then(|c| Cursor::decode(c).ok());
    let found = tokio::task::spawn_blocking(move || {
        let deadline = Instant::now() + READ_WITHIN;
        let state = read_range(&local, &state_topic, 0, stable, written, deadline)?;
        let state_records: Vec<StateRecord> = state
            .iter()
            .map(|r| StateRecord {
                offset: r.offset,
                key: r.key.clone(),
            })
            .collect();
        // The source topics named by the committed position and by the open one.
        let mut sources: Vec<String> = committed
            .iter()
            .flat_map(|c| c.topics().map(str::to_owned).collect::<Vec<_>>())
            .collect();
        if let Some(open) = state
            .iter()
            .find(|r| r.key.as_deref() == Some(client_id.as_bytes()))
            .and_then(|r| r.payload.as_deref())
            .and_then(|p| std::str::from_utf8(p).ok())
            .and_then(|p| Cursor::decode(p).ok())
        {
            sources.extend(open.topics().map(str::to_owned));
        }
        let topics: HashSet<String> = sources.iter().map(|s| destination.topic_for(s)).collect();
        let mut held = vec![(state_topic.clone(), 0)];
        let mut copies = Vec::new();
        for topic in topics {
            for (partition, stable, end) in open_ranges(&local, &topic)? {
                for record in read_range(&local, &topic, partition, stable, end, deadline)? {
                    copies.push(OpenCopy {
                        topic: topic.clone(),
                        partition,
                        offset: record.offset,
                        source: record.source,
                    });
                }
                held.push((topic.clone(), partition));
            }
        }
        check(&client_id, &state_records, committed.as_ref(), &copies)?;
        Ok::<_, HangingError>(held)
    })
    .await
    .map_err(|_| KafkaError::Canceled)??;
    // Each lane tries, whatever the other's outcome: the range may be either's, and one
    // lane's failure must not keep the other from ending its own.
    let mut failed = None;
    for lane in lanes {
        if let Err(err) = lane.abort_over(&found).await {
            tracing::warn!(error = %err, "one lane could not write its abort over the open range");
            failed.get_or_insert(err);
        }
    }
    match failed {
        Some(err) => Err(err.into()),
        None => Ok(Ended { partitions: found }),
    }
}

/// A record of an open range.
struct RangeRecord {
    offset: i64,
    key: Option<Vec<u8>>,
    payload: Option<Vec<u8>>,
    source: Option<(String, i32, i64)>,
}

/// Partitions of `topic` whose last stable offset is short of their end: `(partition,
/// stable, end)`.
fn open_ranges(local: &Cluster, topic: &str) -> Result<Vec<(i32, i64, i64)>, KafkaError> {
    let committed = partition_reader(local, "read_committed", READER)?;
    let uncommitted = partition_reader(local, "read_uncommitted", READER)?;
    let timeout = Duration::from_secs(30);
    let metadata = committed.fetch_metadata(Some(topic), timeout)?;
    let mut open = Vec::new();
    for partition in topic_partitions(&metadata, topic) {
        let (_, stable) = committed.fetch_watermarks(topic, partition, timeout)?;
        let (_, end) = uncommitted.fetch_watermarks(topic, partition, timeout)?;
        if stable < end {
            open.push((partition, stable, end));
        }
    }
    Ok(open)
}

/// The records of `topic[partition]` from `from` up to `to`, read uncommitted.
fn read_range(
    local: &Cluster,
    topic: &str,
    partition: i32,
    from: i64,
    to: i64,
    deadline: Instant,
) -> Result<Vec<RangeRecord>, HangingError> {
    if to - from > RANGE_AT_MOST {
        return Err(Refusal::TooLong {
            topic: topic.to_owned(),
            partition,
        }
        .into());
    }
    let consumer = partition_reader(local, "read_uncommitted", READER)?;
    let mut tpl = TopicPartitionList::new();
    tpl.add_partition_offset(topic, partition, Offset::Offset(from))?;
    consumer.assign(&tpl)?;
    let mut records = Vec::new();
    loop {
        let Some(left) = deadline.checked_duration_since(Instant::now()) else {
            return Err(KafkaError::MessageConsumption(RDKafkaErrorCode::RequestTimedOut).into());
        };
        match consumer.poll(left.min(Duration::from_millis(200))) {
            Some(Ok(m)) => {
                if m.offset() >= to {
                    return Ok(records);
                }
                records.push(RangeRecord {
                    offset: m.offset(),
                    key: m.key().map(<[u8]>::to_vec),
                    payload: m.payload().map(<[u8]>::to_vec),
                    source: provenance(&m),
                });
                if m.offset() + 1 >= to {
                    return Ok(records);
                }
            }
            Some(Err(KafkaError::PartitionEOF(_))) | None => {
                let at = consumer
                    .position()?
                    .find_partition(topic, partition)
                    .map(|p| p.offset());
                if matches!(at, Some(Offset::Offset(at)) if at >= to) {
                    return Ok(records);
                }
            }
            Some(Err(err)) => return Err(err.into()),
        }
    }
}

/// The source topic, partition and offset a copy's headers name.
fn provenance(m: &impl Message) -> Option<(String, i32, i64)> {
    let headers = m.headers()?;
    let value = |name: &str| {
        headers
            .iter()
            .find(|h| h.key == name)
            .and_then(|h| h.value)
            .and_then(|v| std::str::from_utf8(v).ok())
    };
    Some((
        value(SOURCE_TOPIC_HEADER)?.to_owned(),
        value(SOURCE_PARTITION_HEADER)?.parse().ok()?,
        value(SOURCE_OFFSET_HEADER)?.parse().ok()?,
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    const ME: &str = "laptop-1";

    fn state(records: &[(i64, &str)]) -> Vec<StateRecord> {
        records
            .iter()
            .map(|(offset, key)| StateRecord {
                offset: *offset,
                key: Some(key.as_bytes().to_vec()),
            })
            .collect()
    }

    fn copy(offset: i64, source_offset: i64) -> OpenCopy {
        OpenCopy {
            topic: "orders".into(),
            partition: 0,
            offset,
            source: Some(("orders".into(), 0, source_offset)),
        }
    }

    fn committed_at(next: i64) -> Cursor {
        let mut cursor = Cursor::new();
        cursor.set("orders", 0, next);
        cursor
    }

    #[test]
    fn this_clients_last_position_held_open_with_copies_past_the_committed_one_is_aborted() {
        let held = state(&[(40, ME), (41, "other-client")]);
        let copies = [copy(900, 500), copy(901, 501), copy(902, 502)];
        assert_eq!(check(ME, &held, Some(&committed_at(500)), &copies), Ok(()));
        // Another producer's records carry no provenance and are not this client's to end.
        let foreign = OpenCopy {
            source: None,
            ..copy(903, 0)
        };
        assert_eq!(
            check(ME, &held, Some(&committed_at(500)), &[foreign]),
            Ok(())
        );
        // A new client, nothing committed yet.
        assert_eq!(check(ME, &held, None, &copies), Ok(()));
    }

    #[test]
    fn a_range_opened_by_another_client_is_left_to_it() {
        let held = state(&[(40, "other-client"), (41, ME)]);
        assert_eq!(
            check(ME, &held, None, &[]),
            Err(Refusal::NotOurs { stable: 40 })
        );
        let unkeyed = [StateRecord {
            offset: 7,
            key: None,
        }];
        assert_eq!(
            check(ME, &unkeyed, None, &[]),
            Err(Refusal::NotOurs { stable: 7 })
        );
    }

    #[test]
    fn a_later_position_of_this_client_forbids_the_abort_it_could_rest_on() {
        // The other lane saved a position after the open one: if that committed, the open
        // batch was committed too, as far as the client knew, and aborting it loses it.
        let held = state(&[(40, ME), (41, "other-client"), (42, ME)]);
        assert_eq!(
            check(ME, &held, None, &[]),
            Err(Refusal::LaterPositions {
                stable: 40,
                later: 1
            })
        );
    }

    #[test]
    fn a_copy_the_committed_position_passed_forbids_the_abort() {
        let held = state(&[(40, ME)]);
        let copies = [copy(900, 499), copy(901, 500)];
        let refused = check(ME, &held, Some(&committed_at(500)), &copies);
        assert_eq!(
            refused,
            Err(Refusal::Covered {
                topic: "orders".into(),
                partition: 0,
                offset: 900,
                source_topic: "orders".into(),
                source_partition: 0,
                source_offset: 499,
            })
        );
        let text = refused.unwrap_err().to_string();
        assert!(text.contains("orders[0] offset 900"), "{text}");
    }
}
