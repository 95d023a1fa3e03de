//! The event model: [`Record`] is a Kafka record as bytes, the way the consumer pod holds
//! it and the client produces it; [`Event`] is its JSON form on the public API, with
//! UTF-8 payloads as strings and anything else base64.

use base64::Engine;
use base64::engine::general_purpose::STANDARD as BASE64;
use serde::{Deserialize, Serialize};

/// One Kafka record, bytes as they were in the source topic.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Record {
    pub topic: String,
    pub partition: i32,
    pub offset: i64,
    /// Milliseconds since the Unix epoch, when the broker gave one.
    pub timestamp: Option<i64>,
    pub key: Option<Vec<u8>>,
    pub value: Option<Vec<u8>>,
    pub headers: Vec<RecordHeader>,
}

/// A record header. Kafka holds its key as bytes (clients in most languages write UTF-8,
/// but nothing enforces it) and allows a header without a value.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RecordHeader {
    pub key: Vec<u8>,
    pub value: Option<Vec<u8>>,
}

impl RecordHeader {
    /// A header with a text key.
    pub fn new(key: &str, value: Option<&[u8]>) -> Self {
        Self {
            key: key.as_bytes().to_vec(),
            value: value.map(<[u8]>::to_vec),
        }
    }
}

/// What the allocator adds to each heap block of a record, on average: its header and the
/// rounding up of the size.
const ALLOCATION_OVERHEAD: usize = 32;

impl Record {
    /// Bytes this record occupies in memory, for buffer accounting: its fields, their heap
    /// blocks and what the allocator adds to each.
    pub fn size_bytes(&self) -> usize {
        let block = |len: usize| {
            if len == 0 {
                0
            } else {
                len + ALLOCATION_OVERHEAD
            }
        };
        let payload = self.key.as_ref().map_or(0, |k| block(k.len()))
            + self.value.as_ref().map_or(0, |v| block(v.len()));
        let headers: usize = self
            .headers
            .iter()
            .map(|h| block(h.key.len()) + h.value.as_ref().map_or(0, |v| block(v.len())))
            .sum::<usize>()
            + block(self.headers.len() * std::mem::size_of::<RecordHeader>());
        std::mem::size_of::<Self>() + block(self.topic.len()) + payload + headers
    }
}

impl Record {
    /// Whether key, value, header keys and header values are all UTF-8: its [`Event`] then
    /// gives them as strings, else all base64.
    pub fn is_utf8(&self) -> bool {
        [self.key.as_deref(), self.value.as_deref()]
            .into_iter()
            .chain(
                self.headers
                    .iter()
                    .flat_map(|h| [Some(h.key.as_slice()), h.value.as_deref()]),
            )
            .flatten()
            .all(|bytes| std::str::from_utf8(bytes).is_ok())
    }

    /// At least as many bytes as its [`Event`] takes in a JSON answer, so an answer sized by
    /// it never exceeds its bound (the fields' own escaping or base64 included).
    pub fn json_len(&self) -> usize {
        /// Everything but the payloads: field names, numbers at their longest, `encoding`.
        const FIXED: usize = 160;
        /// A header's braces, names and separators.
        const PER_HEADER: usize = 24;
        let utf8 = self.is_utf8();
        let text = |bytes: Option<&[u8]>| match bytes {
            None => 4,
            Some(b) if utf8 => 2 + b.iter().map(|&c| escaped_len(c)).sum::<usize>(),
            Some(b) => 2 + b.len().div_ceil(3) * 4,
        };
        FIXED
            + self.topic.len()
            + text(self.key.as_deref())
            + text(self.value.as_deref())
            + self
                .headers
                .iter()
                .map(|h| PER_HEADER + text(Some(&h.key)) + text(h.value.as_deref()))
                .sum::<usize>()
    }
}

/// Bytes one byte of UTF-8 text takes in a JSON string.
fn escaped_len(byte: u8) -> usize {
    match byte {
        b'"' | b'\\' | b'\n' | b'\r' | b'\t' | 0x08 | 0x0c => 2,
        0..0x20 => 6,
        _ => 1,
    }
}

/// How the payloads of an [`Event`] are written.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "lowercase")]
pub enum Encoding {
    /// Key, value, header keys and header values are UTF-8 text, given as JSON strings.
    Utf8,
    /// Key, value, header keys and header values are given base64 (standard alphabet,
    /// padded): at least one of them is not UTF-8.
    Base64,
}

/// A header of an [`Event`], its key and value written per the event's [`Encoding`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct Header {
    pub key: String,
    pub value: Option<String>,
}

/// One event as the public API shows it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct Event {
    pub topic: String,
    pub partition: i32,
    pub offset: i64,
    pub timestamp: Option<i64>,
    pub key: Option<String>,
    pub value: Option<String>,
    pub headers: Vec<Header>,
    pub encoding: Encoding,
}

/// An [`Event`] whose payload is not valid for its declared encoding.
#[derive(Debug, thiserror::Error)]
#[error("event {topic}/{partition}@{offset} has a {field} that is not valid base64")]
pub struct DecodeError {
    pub topic: String,
    pub partition: i32,
    pub offset: i64,
    pub field: &'static str,
}

impl From<&Record> for Event {
    fn from(record: &Record) -> Self {
        let all_utf8 = record.is_utf8();
        let (encoding, text): (Encoding, fn(&[u8]) -> String) = if all_utf8 {
            (Encoding::Utf8, |b| String::from_utf8_lossy(b).into_owned())
        } else {
            (Encoding::Base64, |b| BASE64.encode(b))
        };
        Event {
            topic: record.topic.clone(),
            partition: record.partition,
            offset: record.offset,
            timestamp: record.timestamp,
            key: record.key.as_deref().map(text),
            value: record.value.as_deref().map(text),
            headers: record
                .headers
                .iter()
                .map(|h| Header {
                    key: text(&h.key),
                    value: h.value.as_deref().map(text),
                })
                .collect(),
            encoding,
        }
    }
}

impl Event {
    /// The record this event stands for, payloads back as bytes.
    pub fn into_record(self) -> Result<Record, DecodeError> {
        let (topic, partition, offset) = (self.topic, self.partition, self.offset);
        let decode =
            |field: &'static str, text: Option<String>| -> Result<Option<Vec<u8>>, DecodeError> {
                match (self.encoding, text) {
                    (_, None) => Ok(None),
                    (Encoding::Utf8, Some(s)) => Ok(Some(s.into_bytes())),
                    (Encoding::Base64, Some(s)) => {
                        BASE64.decode(s).map(Some).map_err(|_| DecodeError {
                            topic: topic.clone(),
                            partition,
                            offset,
                            field,
                        })
                    }
                }
            };
        let key = decode("key", self.key)?;
        let value = decode("value", self.value)?;
        let headers = self
            .headers
            .into_iter()
            .map(|h| {
                Ok(RecordHeader {
                    key: decode("header key", Some(h.key))?.unwrap_or_default(),
                    value: decode("header value", h.value)?,
                })
            })
            .collect::<Result<Vec<_>, DecodeError>>()?;
        Ok(Record {
            topic,
            partition,
            offset,
            timestamp: self.timestamp,
            key,
            value,
            headers,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(key: Option<&[u8]>, value: Option<&[u8]>, header: Option<&[u8]>) -> Record {
        Record {
            topic: "orders".into(),
            partition: 2,
            offset: 41,
            timestamp: Some(1_700_000_000_000),
            key: key.map(<[u8]>::to_vec),
            value: value.map(<[u8]>::to_vec),
            headers: vec![RecordHeader::new("trace", header)],
        }
    }

    #[test]
    fn utf8_payloads_are_strings() {
        let event = Event::from(&record(
            Some(b"k1"),
            Some("{\"a\":\"é\"}".as_bytes()),
            Some(b"t"),
        ));
        assert_eq!(event.encoding, Encoding::Utf8);
        assert_eq!(event.value.as_deref(), Some("{\"a\":\"é\"}"));
        let json = serde_json::to_value(&event).expect("serialize");
        assert_eq!(json["encoding"], "utf8");
        assert_eq!(json["headers"][0]["key"], "trace");
    }

    #[test]
    fn any_binary_part_makes_everything_base64() {
        let event = Event::from(&record(Some(b"k1"), Some(b"ok"), Some(&[0xff, 0x00])));
        assert_eq!(event.encoding, Encoding::Base64);
        assert_eq!(event.key.as_deref(), Some("azE="));
        assert_eq!(event.headers[0].value.as_deref(), Some("/wA="));
    }

    #[test]
    fn round_trips_through_json_in_both_encodings() {
        for original in [
            record(Some(b"k"), Some(b"v"), None),
            record(None, Some(&[0x80, 0x81]), Some(b"x")),
            record(None, None, None),
        ] {
            let json = serde_json::to_string(&Event::from(&original)).expect("serialize");
            let back: Event = serde_json::from_str(&json).expect("deserialize");
            assert_eq!(back.into_record().expect("decode"), original);
        }
    }

    #[test]
    fn a_header_key_that_is_not_utf8_makes_everything_base64() {
        let mut original = record(Some(b"k"), Some(b"v"), Some(b"t"));
        original.headers.push(RecordHeader {
            key: vec![0xff, 0x00, b'k'],
            value: None,
        });
        let event = Event::from(&original);
        assert_eq!(event.encoding, Encoding::Base64);
        assert_eq!(event.headers[0].key, "dHJhY2U=", "every key is base64 then");
        assert_eq!(event.headers[1].key, "/wBr");
        let json = serde_json::to_string(&event).expect("serialize");
        let back: Event = serde_json::from_str(&json).expect("deserialize");
        assert_eq!(back.into_record().expect("decode"), original);
    }

    #[test]
    fn json_len_is_never_below_the_json() {
        let mut worst = record(
            Some(b"\"\\\n\x01\x1f"),
            Some("é\u{7f}\x00".as_bytes()),
            Some(b"\t"),
        );
        worst.timestamp = Some(i64::MIN);
        worst.partition = i32::MIN;
        worst.offset = i64::MIN;
        let mut binary = worst.clone();
        binary.value = Some(vec![0xff; 7]);
        for r in [
            worst,
            binary,
            record(None, None, None),
            record(Some(b""), Some(&[0u8; 1000]), Some(&[0x80])),
        ] {
            let json = serde_json::to_vec(&Event::from(&r)).expect("serialize");
            assert!(
                json.len() <= r.json_len(),
                "{} > {}: {r:?}",
                json.len(),
                r.json_len()
            );
        }
    }

    #[test]
    fn bad_base64_is_a_typed_error() {
        let mut event = Event::from(&record(None, Some(&[0xff]), None));
        event.value = Some("***".into());
        let err = event.into_record().expect_err("must fail");
        assert_eq!(err.field, "value");
    }
}
