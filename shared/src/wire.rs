//! The compact binary form of a `GET /events` answer, for clients that ask for it with
//! `Accept: application/vnd.kafka-replicator.batch; v=2`: records as raw bytes with length
//! prefixes, no JSON escaping or base64. JSON stays the default. [`BatchView`] reads a body
//! in place (the client); [`decode`] makes owned records of it; [`record_len`] is what one
//! record adds to a body, for answers bounded by `max_bytes`.
//!
//! Layout `KRB2`, integers big-endian: `KRB2`, record count (u32), then per record topic
//! (str16), partition (i32), offset (i64), timestamp flag (u8) + i64, key (bytes32), value
//! (bytes32), header count (u32) and per header key (bytes32, never null) + value (bytes32);
//! then the next cursor (str32) and the gaps: count (u32), each topic (str16), partition
//! (i32), from and to (i64). `str16`/`str32` are UTF-8 with a u16/u32 length; `bytes32` has
//! an i32 length, -1 = null. Every byte sequence Kafka holds fits: header keys are bytes and
//! a record may have any number of headers.
//!
//! `KRB1`, written by earlier servers and still read: the same, but a u16 header count and
//! header keys as str16 (UTF-8 only).

use std::borrow::Borrow;

use crate::api::Gap;
use crate::event::{Record, RecordHeader};

pub mod stream;

/// Media type of the binary form.
pub const BATCH_CONTENT_TYPE: &str = "application/vnd.kafka-replicator.batch";

/// The media type parameter of the version this build writes: a client that sends it reads
/// `KRB2`; one that asks for the media type without it (an earlier client) gets JSON.
pub const BATCH_VERSION_PARAM: &str = "v=2";

/// The `Content-Type` of a `KRB2` answer.
pub const BATCH_CONTENT_TYPE_V2: &str = "application/vnd.kafka-replicator.batch; v=2";

const MAGIC_V1: &[u8; 4] = b"KRB1";
const MAGIC: &[u8; 4] = b"KRB2";

/// Bytes a record takes in a `KRB2` body.
pub fn record_len(r: &Record) -> usize {
    let bytes = |b: Option<&Vec<u8>>| 4 + b.map_or(0, Vec::len);
    2 + r.topic.len()
        + 4
        + 8
        + 1
        + 8
        + bytes(r.key.as_ref())
        + bytes(r.value.as_ref())
        + 4
        + r.headers
            .iter()
            .map(|h| 4 + h.key.len() + bytes(h.value.as_ref()))
            .sum::<usize>()
}

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
pub fn encode<R: Borrow<Record>>(
    records: impl ExactSizeIterator<Item = R>,
    next_cursor: &str,
    gaps: &[Gap],
) -> Result<Vec<u8>, WireError> {
    let mut out = Writer(Vec::with_capacity(64 + records.len() * 64));
    out.0.extend_from_slice(MAGIC);
    out.u32(records.len())?;
    // Records given by value are dropped as soon as they are written, so a batch and the
    // records it was made of are not both held whole.
    for record in records {
        let r: &Record = record.borrow();
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
        out.u32(r.headers.len())?;
        for h in &r.headers {
            out.bytes32(Some(&h.key))?;
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

/// Decodes a body made by [`encode`] into owned records.
pub fn decode(body: &[u8]) -> Result<Batch, WireError> {
    let view = BatchView::parse(bytes::Bytes::copy_from_slice(body))?;
    Ok(Batch {
        records: view.records().map(|r| r.to_record()).collect(),
        next_cursor: view.next_cursor,
        gaps: view.gaps,
    })
}

/// An answer read in place: the body as it came and where each record lies in it, so its
/// records are handed on without an allocation or a copy each. Checked whole when parsed.
#[derive(Debug, Clone)]
pub struct BatchView {
    body: bytes::Bytes,
    records: Vec<RecordSpan>,
    headers: Vec<HeaderSpan>,
    next_cursor: String,
    gaps: Vec<Gap>,
}

/// Where one field lies in the body.
#[derive(Debug, Clone, Copy)]
struct Span {
    start: u32,
    len: u32,
}

impl Span {
    fn of(self, body: &[u8]) -> &[u8] {
        let start = self.start as usize;
        &body[start..start + self.len as usize]
    }
}

#[derive(Debug, Clone, Copy)]
struct RecordSpan {
    topic: Span,
    partition: i32,
    offset: i64,
    timestamp: Option<i64>,
    key: Option<Span>,
    value: Option<Span>,
    /// Its headers: `headers[first..first + count]` of the view.
    first_header: u32,
    header_count: u32,
}

#[derive(Debug, Clone, Copy)]
struct HeaderSpan {
    key: Span,
    value: Option<Span>,
}

impl BatchView {
    /// Checks `body` whole and notes where each record lies; nothing is copied.
    pub fn parse(body: bytes::Bytes) -> Result<Self, WireError> {
        if u32::try_from(body.len()).is_err() {
            return Err(WireError::TooLong(body.len()));
        }
        let mut r = Reader { body: &body, at: 0 };
        let v2 = match r.take(4)? {
            m if m == MAGIC => true,
            m if m == MAGIC_V1 => false,
            _ => return Err(WireError::Magic),
        };
        let count = r.u32()?;
        // Every record takes at least 33 bytes: no allocation beyond what the body can hold.
        let mut records = Vec::with_capacity(count.min(body.len() / 33));
        let mut headers = Vec::new();
        for _ in 0..count {
            let topic = r.str16()?;
            let partition = r.i32()?;
            let offset = r.i64()?;
            let has_timestamp = r.take(1)?[0] != 0;
            let timestamp = r.i64()?;
            let key = r.bytes32()?;
            let value = r.bytes32()?;
            let header_count = if v2 { r.u32()? } else { r.u16()? };
            let first_header =
                u32::try_from(headers.len()).map_err(|_| WireError::TooLong(headers.len()))?;
            for _ in 0..header_count {
                let key = if v2 {
                    r.bytes32()?.ok_or(WireError::Truncated(r.at))?
                } else {
                    r.str16()?
                };
                headers.push(HeaderSpan {
                    key,
                    value: r.bytes32()?,
                });
            }
            records.push(RecordSpan {
                topic,
                partition,
                offset,
                timestamp: has_timestamp.then_some(timestamp),
                key,
                value,
                first_header,
                header_count: u32::try_from(header_count)
                    .map_err(|_| WireError::TooLong(header_count))?,
            });
        }
        let len = r.u32()?;
        let next_cursor = r.string(len)?;
        let gap_count = r.u32()?;
        let mut gaps = Vec::with_capacity(gap_count.min(body.len() / 22));
        for _ in 0..gap_count {
            let len = r.u16()?;
            gaps.push(Gap {
                topic: r.string(len)?,
                partition: r.i32()?,
                from: r.i64()?,
                to: r.i64()?,
            });
        }
        if r.at != body.len() {
            return Err(WireError::Trailing(body.len() - r.at));
        }
        Ok(Self {
            body,
            records,
            headers,
            next_cursor,
            gaps,
        })
    }

    /// Bytes of the body as it came.
    pub fn body_len(&self) -> usize {
        self.body.len()
    }

    /// Number of records.
    pub fn len(&self) -> usize {
        self.records.len()
    }

    pub fn is_empty(&self) -> bool {
        self.records.is_empty()
    }

    /// The records, in order, borrowed from the body.
    pub fn records(&self) -> impl ExactSizeIterator<Item = RecordRef<'_>> + Clone + '_ {
        self.records.iter().map(|span| RecordRef {
            topic: text(span.topic.of(&self.body)),
            partition: span.partition,
            offset: span.offset,
            timestamp: span.timestamp,
            key: span.key.map(|k| k.of(&self.body)),
            value: span.value.map(|v| v.of(&self.body)),
            headers: &self.headers[span.first_header as usize
                ..span.first_header as usize + span.header_count as usize],
            body: &self.body,
        })
    }

    /// The cursor after these records.
    pub fn next_cursor(&self) -> &str {
        &self.next_cursor
    }

    /// Offsets the source no longer held, skipped.
    pub fn gaps(&self) -> &[Gap] {
        &self.gaps
    }
}

/// Text [`BatchView::parse`] found to be UTF-8.
fn text(bytes: &[u8]) -> &str {
    std::str::from_utf8(bytes).unwrap_or_default()
}

/// One record of a [`BatchView`], borrowed from its body.
#[derive(Debug, Clone, Copy)]
pub struct RecordRef<'a> {
    pub topic: &'a str,
    pub partition: i32,
    pub offset: i64,
    pub timestamp: Option<i64>,
    pub key: Option<&'a [u8]>,
    pub value: Option<&'a [u8]>,
    headers: &'a [HeaderSpan],
    body: &'a [u8],
}

impl<'a> RecordRef<'a> {
    /// Number of headers.
    pub fn header_count(&self) -> usize {
        self.headers.len()
    }

    /// Its headers in order: key and value (`None`: a header without one).
    pub fn headers(&self) -> impl ExactSizeIterator<Item = (&'a [u8], Option<&'a [u8]>)> + 'a {
        let body = self.body;
        self.headers
            .iter()
            .map(move |h| (h.key.of(body), h.value.map(|v| v.of(body))))
    }

    /// An owned copy.
    pub fn to_record(&self) -> Record {
        Record {
            topic: self.topic.to_owned(),
            partition: self.partition,
            offset: self.offset,
            timestamp: self.timestamp,
            key: self.key.map(<[u8]>::to_vec),
            value: self.value.map(<[u8]>::to_vec),
            headers: self
                .headers()
                .map(|(key, value)| RecordHeader {
                    key: key.to_vec(),
                    value: value.map(<[u8]>::to_vec),
                })
                .collect(),
        }
    }
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

    /// Where the next `len` bytes lie.
    fn span(&mut self, len: usize) -> Result<Span, WireError> {
        let start = self.at;
        self.take(len)?;
        // `parse` refuses bodies of 4 GiB and more.
        Ok(Span {
            start: start as u32,
            len: len as u32,
        })
    }

    /// UTF-8 text of `len` bytes, copied.
    fn string(&mut self, len: usize) -> Result<String, WireError> {
        let at = self.at;
        let bytes = self.take(len)?;
        std::str::from_utf8(bytes)
            .map(str::to_owned)
            .map_err(|_| WireError::NotUtf8(at))
    }

    /// UTF-8 text with a u16 length, in place.
    fn str16(&mut self) -> Result<Span, WireError> {
        let len = self.u16()?;
        let at = self.at;
        let span = self.span(len)?;
        std::str::from_utf8(span.of(self.body)).map_err(|_| WireError::NotUtf8(at))?;
        Ok(span)
    }

    /// Bytes with an i32 length (-1: null), in place.
    fn bytes32(&mut self) -> Result<Option<Span>, WireError> {
        let len = self.i32()?;
        if len < 0 {
            return Ok(None);
        }
        let len = usize::try_from(len).map_err(|_| WireError::Truncated(self.at))?;
        self.span(len).map(Some)
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
                    RecordHeader::new("source", Some(b"pos")),
                    RecordHeader::new("empty", None),
                    RecordHeader {
                        key: vec![0xff, 0x00, 0xfe],
                        value: Some(vec![0x00]),
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
    fn the_view_lends_fields_from_the_body_itself() {
        let records = sample();
        let body = bytes::Bytes::from(encode(records.iter(), "c", &[]).unwrap());
        let range = body.as_ptr_range();
        let view = BatchView::parse(body.clone()).unwrap();
        assert_eq!(view.len(), records.len());
        for (r, expected) in view.records().zip(&records) {
            assert_eq!(r.to_record(), *expected);
            assert_eq!(r.header_count(), expected.headers.len());
            for field in [r.key, r.value].into_iter().flatten() {
                assert!(range.contains(&field.as_ptr()) || field.is_empty());
            }
            assert!(range.contains(&r.topic.as_ptr()));
        }
    }

    #[test]
    fn an_empty_answer_round_trips() {
        let body = encode(std::iter::empty::<&Record>(), "c", &[]).unwrap();
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
    fn record_len_is_what_each_record_adds() {
        let records = sample();
        let empty = encode(std::iter::empty::<&Record>(), "c", &[])
            .unwrap()
            .len();
        for r in &records {
            let one = encode(std::iter::once(r), "c", &[]).unwrap().len();
            assert_eq!(one - empty, record_len(r), "{r:?}");
        }
    }

    #[test]
    fn more_headers_than_a_u16_counts_round_trip() {
        let mut record = sample().remove(1);
        record.headers = (0..70_000u32)
            .map(|i| RecordHeader {
                key: i.to_be_bytes().to_vec(),
                value: (i % 2 == 0).then(Vec::new),
            })
            .collect();
        let body = encode(std::iter::once(&record), "c", &[]).unwrap();
        assert_eq!(decode(&body).unwrap().records, vec![record]);
    }

    /// A body as servers before `KRB2` wrote it.
    fn v1_body(records: &[Record], cursor: &str) -> Vec<u8> {
        let mut out = Writer(MAGIC_V1.to_vec());
        out.u32(records.len()).unwrap();
        for r in records {
            out.str16(&r.topic).unwrap();
            out.0.extend_from_slice(&r.partition.to_be_bytes());
            out.0.extend_from_slice(&r.offset.to_be_bytes());
            out.0.push(u8::from(r.timestamp.is_some()));
            out.0
                .extend_from_slice(&r.timestamp.unwrap_or_default().to_be_bytes());
            out.bytes32(r.key.as_deref()).unwrap();
            out.bytes32(r.value.as_deref()).unwrap();
            out.u16(r.headers.len()).unwrap();
            for h in &r.headers {
                out.str16(std::str::from_utf8(&h.key).unwrap()).unwrap();
                out.bytes32(h.value.as_deref()).unwrap();
            }
        }
        out.u32(cursor.len()).unwrap();
        out.0.extend_from_slice(cursor.as_bytes());
        out.u32(0).unwrap();
        out.0
    }

    #[test]
    fn bodies_of_earlier_servers_are_still_read() {
        let mut records = sample();
        records[0].headers.pop(); // KRB1 had text keys only
        let batch = decode(&v1_body(&records, "c1")).unwrap();
        assert_eq!(batch.records, records);
        assert_eq!(batch.next_cursor, "c1");
    }

    #[test]
    fn a_huge_count_in_a_small_body_fails_without_allocating_it() {
        let mut body = MAGIC.to_vec();
        body.extend_from_slice(&u32::MAX.to_be_bytes());
        assert!(matches!(decode(&body), Err(WireError::Truncated(_))));
    }
}
