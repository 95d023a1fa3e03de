//! The end-of-run check: every record of the source topic present exactly once in local
//! Kafka, unchanged, and in the source's order within its partition, as a `read_committed`
//! reader sees both.

use std::collections::{BTreeMap, HashMap};

use serde::Serialize;
use shared::Record;

/// Most positions each finding lists.
const SHOWN: usize = 10;

/// What the comparison found.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct Verdict {
    pub source_records: u64,
    pub copies: u64,
    pub lost: u64,
    pub duplicated: u64,
    /// Copies that came after a copy of a later record of their source partition.
    pub out_of_order: u64,
    /// Copies whose key, value or headers differ from their source record's.
    pub altered: u64,
    /// Copies that name no source record of the topic.
    pub foreign: u64,
    /// The first few (partition, offset) of each finding.
    pub examples: Vec<String>,
}

impl Verdict {
    /// Nothing lost, duplicated, reordered, altered or made up.
    pub fn passed(&self) -> bool {
        self.lost + self.duplicated + self.out_of_order + self.altered + self.foreign == 0
    }
}

/// Compares `source` (per partition, in offset order) with `local`'s copies of it (per
/// local partition, in offset order; each copy names its source partition and offset in
/// the provenance headers the client writes).
pub fn compare(source: &BTreeMap<i32, Vec<Record>>, local: &BTreeMap<i32, Vec<Record>>) -> Verdict {
    let mut verdict = Verdict::default();
    let originals: HashMap<(i32, i64), &Record> = source
        .values()
        .flatten()
        .map(|r| ((r.partition, r.offset), r))
        .collect();
    verdict.source_records = originals.len() as u64;
    let mut seen: HashMap<(i32, i64), u32> = HashMap::with_capacity(originals.len());
    // The highest source offset copied so far, per source partition.
    let mut highest: HashMap<i32, i64> = HashMap::new();
    for copy in local.values().flatten() {
        verdict.copies += 1;
        let Some(at) = provenance(copy) else {
            verdict.foreign += 1;
            note(&mut verdict.examples, || {
                format!("foreign copy at local {}/{}", copy.partition, copy.offset)
            });
            continue;
        };
        let Some(original) = originals.get(&at) else {
            verdict.foreign += 1;
            note(&mut verdict.examples, || {
                format!("copy of unknown {}/{}", at.0, at.1)
            });
            continue;
        };
        let times = seen.entry(at).or_default();
        *times += 1;
        if *times > 1 {
            verdict.duplicated += 1;
            note(&mut verdict.examples, || {
                format!("duplicate of {}/{}", at.0, at.1)
            });
            continue;
        }
        let top = highest.entry(at.0).or_insert(i64::MIN);
        if at.1 < *top {
            verdict.out_of_order += 1;
            note(&mut verdict.examples, || {
                format!("{}/{} copied after {}/{}", at.0, at.1, at.0, *top)
            });
        }
        *top = (*top).max(at.1);
        if !same_content(original, copy) {
            verdict.altered += 1;
            note(&mut verdict.examples, || {
                format!("altered copy of {}/{}", at.0, at.1)
            });
        }
    }
    let mut lost: Vec<_> = originals
        .keys()
        .filter(|at| !seen.contains_key(at))
        .collect();
    verdict.lost = lost.len() as u64;
    lost.sort();
    for at in lost.into_iter().take(SHOWN) {
        verdict.examples.push(format!("lost {}/{}", at.0, at.1));
    }
    verdict
}

fn note(examples: &mut Vec<String>, example: impl FnOnce() -> String) {
    if examples.len() < SHOWN * 4 {
        examples.push(example());
    }
}

/// The source (partition, offset) a copy names.
fn provenance(copy: &Record) -> Option<(i32, i64)> {
    Some((
        header(copy, client::sink::SOURCE_PARTITION_HEADER)?,
        header(copy, client::sink::SOURCE_OFFSET_HEADER)?,
    ))
}

/// The value of header `name`, parsed.
fn header<T: std::str::FromStr>(record: &Record, name: &str) -> Option<T> {
    let header = record.headers.iter().find(|h| h.key == name.as_bytes())?;
    std::str::from_utf8(header.value.as_deref()?)
        .ok()?
        .parse()
        .ok()
}

/// Key, value and the source's own headers are the same (the copy adds provenance).
fn same_content(original: &Record, copy: &Record) -> bool {
    let own = |r: &Record| {
        r.headers
            .iter()
            .filter(|h| !h.key.starts_with(b"kafka-replicator."))
            .cloned()
            .collect::<Vec<_>>()
    };
    original.key == copy.key && original.value == copy.value && own(original) == own(copy)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(partition: i32, offset: i64, value: &str) -> Record {
        Record {
            topic: "t".into(),
            partition,
            offset,
            timestamp: None,
            key: None,
            value: Some(value.as_bytes().to_vec()),
            headers: Vec::new(),
        }
    }

    fn copy_of(source: &Record, local_offset: i64) -> Record {
        let mut copy = source.clone();
        copy.offset = local_offset;
        for (name, value) in [
            (
                client::sink::SOURCE_PARTITION_HEADER,
                source.partition.to_string(),
            ),
            (
                client::sink::SOURCE_OFFSET_HEADER,
                source.offset.to_string(),
            ),
        ] {
            copy.headers.push(shared::event::RecordHeader::new(
                name,
                Some(value.as_bytes()),
            ));
        }
        copy
    }

    fn topic(records: Vec<Record>) -> BTreeMap<i32, Vec<Record>> {
        let mut by_partition: BTreeMap<i32, Vec<Record>> = BTreeMap::new();
        for r in records {
            by_partition.entry(r.partition).or_default().push(r);
        }
        by_partition
    }

    #[test]
    fn exact_copies_in_order_pass() {
        let source: Vec<Record> = (0..5).map(|o| record(o as i32 % 2, o, "v")).collect();
        let copies = source
            .iter()
            .enumerate()
            .map(|(i, r)| copy_of(r, i as i64))
            .collect();
        let verdict = compare(&topic(source), &topic(copies));
        assert!(verdict.passed(), "{verdict:?}");
        assert_eq!((verdict.source_records, verdict.copies), (5, 5));
    }

    #[test]
    fn loss_duplicates_reordering_and_changes_are_each_counted() {
        let source: Vec<Record> = (0..6).map(|o| record(0, o, "v")).collect();
        let mut altered = copy_of(&source[4], 4);
        altered.value = Some(b"changed".to_vec());
        let foreign = record(0, 9, "x");
        let copies = vec![
            copy_of(&source[0], 0),
            copy_of(&source[2], 1),
            copy_of(&source[1], 2),
            copy_of(&source[2], 3),
            altered,
            foreign,
        ];
        let verdict = compare(&topic(source), &topic(copies));
        assert_eq!(verdict.lost, 2, "offsets 3 and 5: {verdict:?}");
        assert_eq!(verdict.duplicated, 1);
        assert_eq!(verdict.out_of_order, 1, "1 after 2");
        assert_eq!(verdict.altered, 1);
        assert_eq!(verdict.foreign, 1);
        assert!(!verdict.passed());
        assert!(
            verdict.examples.contains(&"lost 0/3".to_owned()),
            "{verdict:?}"
        );
    }
}
