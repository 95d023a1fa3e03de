//! The compact binary form of a `GET /events` answer, for clients that ask for it with
//! `Accept: application/vnd.kafka-replicator.batch`: records as raw bytes with length
//! prefixes, no JSON escaping or base64. JSON stays the default.
//!
//! Layout, integers big-endian: `KRB1`, record count (u32), then per record topic (str16),
//! partition (i32), offset (i64), timestamp flag (u8) + i64, key (bytes32), value (bytes32),
//! header count (u16) and per header key (str16) + value (bytes32); then the next cursor
//! (str32) and the gaps: count (u32), each topic (str16), partition (i32), from and to (i64).
//! `str16`/`str32` are UTF-8 with a u16/u32 length; `bytes32` has an i32 length, -1 = null.

use crate::api::Gap;
use crate::event::{Record, RecordHeader};

/// Media type of the binary form.
pub const BATCH_CONTENT_TYPE: &str = "application/vnd.kafka-replicator.batch";

const MAGIC: &[u8; 4] = b"KRB1";

/// A decoded answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Batch {
    pub records: Vec<Record>,
    pub next_cursor: String,
    pub gaps: Vec<Gap>,
}

/// Why a body is not a valid batch.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum WireError {
    #[error("not a Kafka Replicator batch (bad magic)")]
    Magic,
    #[error("batch cut off at byte {0}")]
    Truncated(usize),
    #[error("batch has text that is not UTF-8 at byte {0}")]
    NotUtf8(usize),
    #[error("batch has {0} trailing bytes")]
    Trailing(usize),
    #[error("batch field too long to encode: {0} bytes")]
    TooLong(usize),
}

/// Encodes records, the cursor after them and any gaps.
pub fn encode<'a>(
    records: impl ExactSizeIterator<Item = &'a Record>,
    next_cursor: &str,
    gaps: &[Gap],
) -> Result<Vec<u8>, WireError> {
    let mut out = Writer(Vec::with_capacity(64 + records.len() * 64));
    out.0.extend_from_slice(MAGIC);
    out.u32(records.len())?;
    for r in records {
        let size = r.value.as_ref().map_or(0, Vec::len) + r.key.as_ref().map_or(0, Vec::len);
        out.0.reserve(size + r.topic.len() + 40);
        out.str16(&r.topic)?;
        out.0.extend_from_slice(&r.partition.to_be_bytes());
        out.0.extend_from_slice(&r.offset.to_be_bytes());
        out.0.push(u8::from(r.timestamp.is_some()));
        out.0
            .extend_from_slice(&r.timestamp.unwrap_or_default().to_be_bytes());
        out.bytes32(r.key.as_deref())?;
        out.bytes32(r.value.as_deref())?;
        out.u16(r.headers.len())?;
        for h in &r.headers {
            out.str16(&h.key)?;
            out.bytes32(h.value.as_deref())?;
        }
    }
    out.u32(next_cursor.len())?;
    out.0.extend_from_slice(next_cursor.as_bytes());
    out.u32(gaps.len())?;
    for g in gaps {
        out.str16(&g.topic)?;
        out.0.extend_from_slice(&g.partition.to_be_bytes());
        out.0.extend_from_slice(&g.from.to_be_bytes());
        out.0.extend_from_slice(&g.to.to_be_bytes());
    }
    Ok(out.0)
}

/// Decodes a body made by [`encode`].
pub fn decode(body: &[u8]) -> Result<Batch, WireError> {
    let mut r = Reader { body, at: 0 };
    if r.take(4)? != MAGIC {
        return Err(WireError::Magic);
    }
    let count = r.u32()?;
    // Every record takes at least 33 bytes: no allocation beyond what the body can hold.
    let mut records = Vec::with_capacity(count.min(body.len() / 33));
    for _ in 0..count {
        let topic = r.str16()?;
        let partition = r.i32()?;
        let offset = r.i64()?;
        let has_timestamp = r.take(1)?[0] != 0;
        let timestamp = r.i64()?;
        let key = r.bytes32()?;
        let value = r.bytes32()?;
        let header_count = r.u16()?;
        let mut headers = Vec::with_capacity(header_count);
        for _ in 0..header_count {
            headers.push(RecordHeader {
                key: r.str16()?,
                value: r.bytes32()?,
            });
        }
        records.push(Record {
            topic,
            partition,
            offset,
            timestamp: has_timestamp.then_some(timestamp),
            key,
            value,
            headers,
        });
    }
    let len = r.u32()?;
    let next_cursor = r.utf8(len)?;
    let gap_count = r.u32()?;
    let mut gaps = Vec::with_capacity(gap_count.min(body.len() / 22));
    for _ in 0..gap_count {
        gaps.push(Gap {
            topic: r.str16()?,
            partition: r.i32()?,
            from: r.i64()?,
            to: r.i64()?,
        });
    }
    if r.at != body.len() {
        return Err(WireError::Trailing(body.len() - r.at));
    }
    Ok(Batch {
        records,
        next_cursor,
        gaps,
    })
}

struct Writer(Vec<u8>);

impl Writer {
    fn u16(&mut self, n: usize) -> Result<(), WireError> {
        let n = u16::try_from(n).map_err(|_| WireError::TooLong(n))?;
        self.0.extend_from_slice(&n.to_be_bytes());
        Ok(())
    }

    fn u32(&mut self, n: usize) -> Result<(), WireError> {
        let n = u32::try_from(n).map_err(|_| WireError::TooLong(n))?;
        self.0.extend_from_slice(&n.to_be_bytes());
        Ok(())
    }

    fn str16(&mut self, s: &str) -> Result<(), WireError> {
        self.u16(s.len())?;
        self.0.extend_from_slice(s.as_bytes());
        Ok(())
    }

    fn bytes32(&mut self, b: Option<&[u8]>) -> Result<(), WireError> {
        match b {
            None => self.0.extend_from_slice(&(-1i32).to_be_bytes()),
            Some(b) => {
                let n = i32::try_from(b.len()).map_err(|_| WireError::TooLong(b.len()))?;
                self.0.extend_from_slice(&n.to_be_bytes());
                self.0.extend_from_slice(b);
            }
        }
        Ok(())
    }
}

struct Reader<'a> {
    body: &'a [u8],
    at: usize,
}

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> Result<&'a [u8], WireError> {
        let end = self
            .at
            .checked_add(n)
            .filter(|end| *end <= self.body.len())
            .ok_or(WireError::Truncated(self.at))?;
        let bytes = &self.body[self.at..end];
        self.at = end;
        Ok(bytes)
    }

    fn array<const N: usize>(&mut self) -> Result<[u8; N], WireError> {
        let at = self.at;
        self.take(N)?
            .try_into()
            .map_err(|_| WireError::Truncated(at))
    }

    fn u16(&mut self) -> Result<usize, WireError> {
        Ok(usize::from(u16::from_be_bytes(self.array()?)))
    }

    fn u32(&mut self) -> Result<usize, WireError> {
        let n = u32::from_be_bytes(self.array()?);
        usize::try_from(n).map_err(|_| WireError::TooLong(usize::MAX))
    }

    fn i32(&mut self) -> Result<i32, WireError> {
        Ok(i32::from_be_bytes(self.array()?))
    }

    fn i64(&mut self) -> Result<i64, WireError> {
        Ok(i64::from_be_bytes(self.array()?))
    }

    fn utf8(&mut self, len: usize) -> Result<String, WireError> {
        let at = self.at;
        let bytes = self.take(len)?;
        String::from_utf8(bytes.to_vec()).map_err(|_| WireError::NotUtf8(at))
    }

    fn str16(&mut self) -> Result<String, WireError> {
        let len = self.u16()?;
        self.utf8(len)
    }

    fn bytes32(&mut self) -> Result<Option<Vec<u8>>, WireError> {
        let len = self.i32()?;
        if len < 0 {
            return Ok(None);
        }
        let len = usize::try_from(len).map_err(|_| WireError::Truncated(self.at))?;
        Ok(Some(self.take(len)?.to_vec()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> Vec<Record> {
        vec![
            Record {
                topic: "orders".into(),
                partition: 3,
                offset: 42,
                timestamp: Some(1_764_033_600_000),
                key: Some(b"device-7".to_vec()),
                value: Some(b"{\"seq\":42}".to_vec()),
                headers: vec![
                    RecordHeader {
                        key: "source".into(),
                        value: Some(b"pos".to_vec()),
                    },
                    RecordHeader {
                        key: "empty".into(),
                        value: None,
                    },
                ],
            },
            Record {
                topic: "payments".into(),
                partition: 0,
                offset: 0,
                timestamp: None,
                key: None,
                value: Some(vec![0, 159, 146, 150, 255]),
                headers: vec![],
            },
            Record {
                topic: "orders".into(),
                partition: 1,
                offset: i64::MAX - 1,
                timestamp: Some(-1),
                key: Some(Vec::new()),
                value: None,
                headers: vec![],
            },
        ]
    }

    #[test]
    fn round_trips_records_cursor_and_gaps() {
        let records = sample();
        let gaps = vec![Gap {
            topic: "orders".into(),
            partition: 2,
            from: 10,
            to: 19,
        }];
        let body = encode(records.iter(), "AgAAAA-cursor", &gaps).unwrap();
        let batch = decode(&body).unwrap();
        assert_eq!(batch.records, records);
        assert_eq!(batch.next_cursor, "AgAAAA-cursor");
        assert_eq!(batch.gaps, gaps);
    }

    #[test]
    fn an_empty_answer_round_trips() {
        let body = encode(std::iter::empty(), "c", &[]).unwrap();
        assert_eq!(
            decode(&body).unwrap(),
            Batch {
                records: vec![],
                next_cursor: "c".into(),
                gaps: vec![]
            }
        );
    }

    #[test]
    fn every_cut_off_body_is_an_error_not_a_panic() {
        let body = encode(sample().iter(), "cursor", &[]).unwrap();
        for end in 0..body.len() {
            assert!(decode(&body[..end]).is_err(), "cut at {end} decoded");
        }
        let mut longer = body.clone();
        longer.push(0);
        assert_eq!(decode(&longer), Err(WireError::Trailing(1)));
        assert_eq!(decode(b"JSON{...}"), Err(WireError::Magic));
    }

    #[test]
    fn a_huge_count_in_a_small_body_fails_without_allocating_it() {
        let mut body = MAGIC.to_vec();
        body.extend_from_slice(&u32::MAX.to_be_bytes());
        assert!(matches!(decode(&body), Err(WireError::Truncated(_))));
    }
}
