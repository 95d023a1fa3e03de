//! The cursor: per-partition next offsets and the source cluster they belong to, opaque to
//! clients. Encoded as a versioned, checksummed binary string in base64url, so garbage or a
//! truncated copy is refused with a typed [`CursorError`] instead of being misread, and a
//! cursor of another cluster can be told apart.

use std::collections::BTreeMap;
use std::fmt;
use std::str::FromStr;

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;

/// Version 2 carries the source cluster id; version 1 (positions only) is still read.
const VERSION: u8 = 2;
const VERSION_1: u8 = 1;
const CHECKSUM_LEN: usize = 4;
/// Longest cursor string accepted, so a hostile query cannot make us decode megabytes.
pub const MAX_ENCODED_LEN: usize = 64 * 1024;

/// Where a reader stands: for each topic and partition, the next offset to read.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Cursor {
    /// The id of the source Kafka cluster the offsets are of, when known.
    cluster: Option<String>,
    positions: BTreeMap<String, BTreeMap<i32, i64>>,
}

/// Why a cursor string was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CursorError {
    #[error("cursor is empty")]
    Empty,
    #[error("cursor is longer than {MAX_ENCODED_LEN} characters")]
    TooLong,
    #[error("cursor is not base64url")]
    NotBase64,
    #[error("cursor version {0} is not supported (expected {VERSION})")]
    UnsupportedVersion(u8),
    #[error("cursor is truncated")]
    Truncated,
    #[error("cursor checksum does not match: it was altered or cut")]
    Corrupt,
    #[error("cursor is malformed: {0}")]
    Malformed(&'static str),
}

impl Cursor {
    /// An empty cursor: no position known for any partition.
    pub fn new() -> Self {
        Self::default()
    }

    /// The next offset to read for a partition, if this cursor knows it.
    pub fn get(&self, topic: &str, partition: i32) -> Option<i64> {
        self.positions.get(topic)?.get(&partition).copied()
    }

    /// Records the next offset to read for a partition.
    pub fn set(&mut self, topic: &str, partition: i32, next_offset: i64) {
        self.positions
            .entry(topic.to_owned())
            .or_default()
            .insert(partition, next_offset);
    }

    /// Every `(topic, partition, next_offset)`, in topic then partition order.
    pub fn iter(&self) -> impl Iterator<Item = (&str, i32, i64)> {
        self.positions
            .iter()
            .flat_map(|(t, parts)| parts.iter().map(move |(p, o)| (t.as_str(), *p, *o)))
    }

    /// Whether no partition has a position.
    pub fn is_empty(&self) -> bool {
        self.positions.values().all(BTreeMap::is_empty)
    }

    /// The source cluster these offsets belong to, if recorded.
    pub fn cluster(&self) -> Option<&str> {
        self.cluster.as_deref()
    }

    /// Records the source cluster these offsets belong to.
    pub fn set_cluster(&mut self, cluster: Option<String>) {
        self.cluster = cluster.filter(|c| !c.is_empty());
    }

    /// The topics this cursor has positions for.
    pub fn topics(&self) -> impl Iterator<Item = &str> {
        self.positions.keys().map(String::as_str)
    }

    /// The opaque string form given to clients.
    pub fn encode(&self) -> String {
        let mut buf = vec![VERSION];
        let cluster = self.cluster.as_deref().unwrap_or_default();
        put_varint(&mut buf, cluster.len() as u64);
        buf.extend_from_slice(cluster.as_bytes());
        put_varint(&mut buf, self.positions.len() as u64);
        for (topic, parts) in &self.positions {
            put_varint(&mut buf, topic.len() as u64);
            buf.extend_from_slice(topic.as_bytes());
            put_varint(&mut buf, parts.len() as u64);
            for (partition, offset) in parts {
                put_varint(&mut buf, u64::from(partition.unsigned_abs()));
                put_varint(&mut buf, offset.unsigned_abs());
            }
        }
        let sum = fnv1a(&buf);
        buf.extend_from_slice(&sum.to_be_bytes());
        URL_SAFE_NO_PAD.encode(buf)
    }

    /// Parses a string made by [`Cursor::encode`].
    pub fn decode(text: &str) -> Result<Self, CursorError> {
        if text.is_empty() {
            return Err(CursorError::Empty);
        }
        if text.len() > MAX_ENCODED_LEN {
            return Err(CursorError::TooLong);
        }
        let bytes = URL_SAFE_NO_PAD.decode(text).map_err(|e| match e {
            base64::DecodeError::InvalidLength(_) | base64::DecodeError::InvalidLastSymbol(..) => {
                CursorError::Truncated
            }
            _ => CursorError::NotBase64,
        })?;
        let (&version, _) = bytes.split_first().ok_or(CursorError::Truncated)?;
        if version != VERSION && version != VERSION_1 {
            return Err(CursorError::UnsupportedVersion(version));
        }
        if bytes.len() < 1 + CHECKSUM_LEN {
            return Err(CursorError::Truncated);
        }
        let (body, sum) = bytes.split_at(bytes.len() - CHECKSUM_LEN);
        if fnv1a(body).to_be_bytes() != sum {
            return Err(CursorError::Corrupt);
        }
        let mut reader = Reader { bytes: &body[1..] };
        let mut cursor = Cursor::new();
        if version == VERSION {
            let len = usize::try_from(reader.varint()?)
                .map_err(|_| CursorError::Malformed("cluster length"))?;
            let cluster = std::str::from_utf8(reader.take(len)?)
                .map_err(|_| CursorError::Malformed("cluster is not UTF-8"))?;
            cursor.set_cluster(Some(cluster.to_owned()));
        }
        for _ in 0..reader.varint()? {
            let len = usize::try_from(reader.varint()?)
                .map_err(|_| CursorError::Malformed("topic length"))?;
            let topic = std::str::from_utf8(reader.take(len)?)
                .map_err(|_| CursorError::Malformed("topic is not UTF-8"))?;
            if topic.is_empty() {
                return Err(CursorError::Malformed("empty topic name"));
            }
            for _ in 0..reader.varint()? {
                let partition = i32::try_from(reader.varint()?)
                    .map_err(|_| CursorError::Malformed("partition out of range"))?;
                let offset = i64::try_from(reader.varint()?)
                    .map_err(|_| CursorError::Malformed("offset out of range"))?;
                cursor.set(topic, partition, offset);
            }
        }
        if !reader.bytes.is_empty() {
            return Err(CursorError::Malformed("trailing bytes"));
        }
        Ok(cursor)
    }
}

impl fmt::Display for Cursor {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.encode())
    }
}

impl FromStr for Cursor {
    type Err = CursorError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::decode(s)
    }
}

/// Where a read starts, as the `cursor` query parameter says it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StartFrom {
    /// No cursor: the newest events the consumer pod holds, as the prototype served.
    Buffered,
    /// `earliest`: the oldest offsets the source still retains.
    Earliest,
    /// `latest`: the end of the log; only events produced from now on.
    Latest,
    /// A cursor from a previous answer.
    Cursor(Cursor),
}

impl StartFrom {
    /// Reads the `cursor` query parameter (absent, `earliest`, `latest` or a cursor).
    pub fn parse(param: Option<&str>) -> Result<Self, CursorError> {
        match param {
            None => Ok(Self::Buffered),
            Some("earliest") => Ok(Self::Earliest),
            Some("latest") => Ok(Self::Latest),
            Some(text) => Cursor::decode(text).map(Self::Cursor),
        }
    }

    /// The query-parameter form; `None` for [`StartFrom::Buffered`].
    pub fn to_param(&self) -> Option<String> {
        match self {
            Self::Buffered => None,
            Self::Earliest => Some("earliest".into()),
            Self::Latest => Some("latest".into()),
            Self::Cursor(c) => Some(c.encode()),
        }
    }
}

struct Reader<'a> {
    bytes: &'a [u8],
}

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> Result<&'a [u8], CursorError> {
        if self.bytes.len() < n {
            return Err(CursorError::Truncated);
        }
        let (head, tail) = self.bytes.split_at(n);
        self.bytes = tail;
        Ok(head)
    }

    fn varint(&mut self) -> Result<u64, CursorError> {
        let mut value = 0u64;
        for shift in (0..64).step_by(7) {
            let [byte] = self.take(1)? else {
                unreachable!("take(1) yields one byte")
            };
            value |= u64::from(byte & 0x7f) << shift;
            if byte & 0x80 == 0 {
                return Ok(value);
            }
        }
        Err(CursorError::Malformed("varint too long"))
    }
}

fn put_varint(buf: &mut Vec<u8>, mut value: u64) {
    while value >= 0x80 {
        buf.push((value as u8) | 0x80);
        value >>= 7;
    }
    buf.push(value as u8);
}

fn fnv1a(bytes: &[u8]) -> u32 {
    bytes.iter().fold(0x811c_9dc5, |h, b| {
        (h ^ u32::from(*b)).wrapping_mul(0x0100_0193)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> Cursor {
        let mut c = Cursor::new();
        c.set_cluster(Some("MkU3OEVBNTcwNTJENDM2Qk".into()));
        c.set("orders", 0, 0);
        c.set("orders", 5, 1_234_567_890_123);
        c.set("payments", 2, 300);
        c
    }

    #[test]
    fn round_trips() {
        let c = sample();
        let text = c.encode();
        assert!(
            text.bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
        );
        assert_eq!(Cursor::decode(&text), Ok(c));
        assert_eq!(Cursor::decode(&Cursor::new().encode()), Ok(Cursor::new()));
    }

    #[test]
    fn rejects_garbage_with_typed_errors() {
        let text = sample().encode();
        assert_eq!(Cursor::decode(""), Err(CursorError::Empty));
        assert_eq!(Cursor::decode("not a cursor!"), Err(CursorError::NotBase64));
        for cut in 1..=8 {
            let got = Cursor::decode(&text[..text.len() - cut]);
            assert!(
                matches!(got, Err(CursorError::Corrupt | CursorError::Truncated)),
                "cut {cut}: {got:?}"
            );
        }
        assert_eq!(Cursor::decode("AQ"), Err(CursorError::Truncated));
        assert_eq!(
            Cursor::decode(&URL_SAFE_NO_PAD.encode([9u8, 0, 0, 0, 0])),
            Err(CursorError::UnsupportedVersion(9))
        );
        let mut flipped = URL_SAFE_NO_PAD.decode(&text).expect("valid");
        flipped[3] ^= 0x01;
        assert_eq!(
            Cursor::decode(&URL_SAFE_NO_PAD.encode(flipped)),
            Err(CursorError::Corrupt)
        );
        assert_eq!(
            Cursor::decode(&"A".repeat(MAX_ENCODED_LEN + 1)),
            Err(CursorError::TooLong)
        );
    }

    #[test]
    fn well_checksummed_nonsense_is_malformed() {
        let mut body = vec![VERSION, 0, 1, 0];
        let sum = fnv1a(&body);
        body.extend_from_slice(&sum.to_be_bytes());
        assert_eq!(
            Cursor::decode(&URL_SAFE_NO_PAD.encode(body)),
            Err(CursorError::Malformed("empty topic name"))
        );
    }

    #[test]
    fn keeps_the_cluster_and_still_reads_version_1() {
        let c = sample();
        assert_eq!(
            Cursor::decode(&c.encode()).expect("v2").cluster(),
            Some("MkU3OEVBNTcwNTJENDM2Qk")
        );
        // A version-1 cursor: positions only.
        let mut v1 = vec![VERSION_1, 1, 1, b't', 1, 3, 42];
        let sum = fnv1a(&v1);
        v1.extend_from_slice(&sum.to_be_bytes());
        let old = Cursor::decode(&URL_SAFE_NO_PAD.encode(v1)).expect("v1");
        assert_eq!((old.cluster(), old.get("t", 3)), (None, Some(42)));
    }

    #[test]
    fn start_from_words() {
        assert_eq!(StartFrom::parse(None), Ok(StartFrom::Buffered));
        assert_eq!(StartFrom::parse(Some("earliest")), Ok(StartFrom::Earliest));
        assert_eq!(StartFrom::parse(Some("latest")), Ok(StartFrom::Latest));
        let c = sample();
        assert_eq!(
            StartFrom::parse(Some(&c.encode())),
            Ok(StartFrom::Cursor(c))
        );
        assert!(StartFrom::parse(Some("oldest")).is_err());
    }
}
