//! Records to and from librdkafka as the bytes Kafka holds. rust-rdkafka reads a header key
//! as `&str` and panics on one that is not UTF-8 (any non-Java producer can write one), and
//! it writes only `&str` keys; [`record_of`] and [`add_header`] go to the librdkafka calls
//! underneath instead, so no record content can stop the pod or be changed on its way.

#![allow(unsafe_code)]

use std::ffi::{CStr, c_char, c_void};

use rdkafka::bindings as rdsys;
use rdkafka::message::{BorrowedHeaders, BorrowedMessage, Headers, Message, OwnedHeaders};

use crate::event::{Record, RecordHeader};

/// Copies a Kafka message into a [`Record`], every field as bytes.
pub fn record_of(message: &BorrowedMessage<'_>) -> Record {
    Record {
        topic: message.topic().to_owned(),
        partition: message.partition(),
        offset: message.offset(),
        timestamp: message.timestamp().to_millis(),
        key: message.key().map(<[u8]>::to_vec),
        value: message.payload().map(<[u8]>::to_vec),
        headers: message.headers().map(headers_of).unwrap_or_default(),
    }
}

/// Every header, keys as bytes (a key holding a NUL byte included).
pub fn headers_of(headers: &BorrowedHeaders) -> Vec<RecordHeader> {
    let native = std::ptr::from_ref(headers).cast::<rdsys::rd_kafka_headers_t>();
    (0..headers.count())
        .filter_map(|idx| {
            let mut name: *const c_char = std::ptr::null();
            let mut value: *const c_void = std::ptr::null();
            let mut size = 0usize;
            // SAFETY: `native` is the librdkafka header list `headers` stands for (that is how
            // rust-rdkafka's own `BorrowedHeaders` methods reach it), alive while `headers` is
            // borrowed; `idx` is below its count and the out-pointers are valid.
            let err = unsafe {
                rdsys::rd_kafka_header_get_all(native, idx, &mut name, &mut value, &mut size)
            };
            if err != rdsys::rd_kafka_resp_err_t::RD_KAFKA_RESP_ERR_NO_ERROR || name.is_null() {
                return None;
            }
            // SAFETY: librdkafka gave `name`, NUL-terminated, and a value of `size` bytes (or
            // null); both live as long as the header list.
            let (key, value) = unsafe {
                let len = name_len(name, value, size);
                (
                    std::slice::from_raw_parts(name.cast::<u8>(), len).to_vec(),
                    (!value.is_null())
                        .then(|| std::slice::from_raw_parts(value.cast::<u8>(), size).to_vec()),
                )
            };
            Some(RecordHeader { key, value })
        })
        .collect()
}

/// librdkafka's `rd_kafka_header_t` (rdkafka_header.h), whose `name` field
/// `rd_kafka_header_get_all` points into. Its public API gives a header name only as a C
/// string, which ends at the first NUL byte a key may hold; the header keeps the length.
#[repr(C)]
struct NativeHeader {
    ser_size: usize,
    value_size: usize,
    name_size: usize,
    value: *const c_char,
    name: [c_char; 1],
}

/// The length of the key at `name`: the length librdkafka stored, once the header around it
/// is proven to be laid out as [`NativeHeader`] says (its value pointer, value size and
/// serialized size all agree with what librdkafka returned); else the C string's length.
///
/// # Safety
/// `name`, `value` and `size` are what `rd_kafka_header_get_all` returned for one header.
unsafe fn name_len(name: *const c_char, value: *const c_void, size: usize) -> usize {
    // SAFETY: `name` is NUL-terminated.
    let c_len = unsafe { CStr::from_ptr(name) }.to_bytes().len();
    let offset = std::mem::offset_of!(NativeHeader, name);
    let base = name
        .cast::<u8>()
        .wrapping_sub(offset)
        .cast::<NativeHeader>();
    // SAFETY: `name` is the `name` field of a heap-allocated `rd_kafka_header_t`, so the
    // struct's leading fields lie right before it, in the same allocation.
    let header = unsafe { std::ptr::read_unaligned(base) };
    let laid_out_as_expected = header.value.cast::<c_void>() == value
        && header.value_size == size
        && header.name_size >= c_len
        && header.ser_size
            == header.name_size
                + header.value_size
                + varint_len(header.name_size)
                + varint_len(header.value_size);
    if laid_out_as_expected {
        header.name_size
    } else {
        c_len
    }
}

/// Bytes of the zigzag varint Kafka writes for a header length.
fn varint_len(n: usize) -> usize {
    let mut zigzag = (n as u64) << 1;
    let mut bytes = 1;
    while zigzag >= 0x80 {
        zigzag >>= 7;
        bytes += 1;
    }
    bytes
}

/// `headers` with one more header, its key any bytes.
pub fn add_header(headers: OwnedHeaders, key: &[u8], value: Option<&[u8]>) -> OwnedHeaders {
    let native = std::ptr::from_ref(headers.as_borrowed())
        .cast::<rdsys::rd_kafka_headers_t>()
        .cast_mut();
    let (value_ptr, value_len) = match value {
        Some(v) => (v.as_ptr().cast::<c_void>(), v.len() as isize),
        None => (std::ptr::null(), 0),
    };
    // SAFETY: `native` is the header list `headers` owns (`as_borrowed` is a view of that
    // pointer); librdkafka copies `key` and `value` with the lengths given, NULs included.
    let err = unsafe {
        rdsys::rd_kafka_header_add(
            native,
            key.as_ptr().cast::<c_char>(),
            key.len() as isize,
            value_ptr,
            value_len,
        )
    };
    // librdkafka refuses only read-only header lists; an `OwnedHeaders` is never one.
    debug_assert_eq!(err, rdsys::rd_kafka_resp_err_t::RD_KAFKA_RESP_ERR_NO_ERROR);
    headers
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn varints_are_as_long_as_kafka_writes_them() {
        // Zigzag doubles n: 0..=63 take one byte, 64..=8191 two, then seven bits more a byte.
        for (n, len) in [(0, 1), (63, 1), (64, 2), (8191, 2), (8192, 3), (1 << 20, 4)] {
            assert_eq!(varint_len(n), len, "{n}");
        }
    }

    #[test]
    fn any_key_bytes_round_trip_through_librdkafka_headers() {
        let keys: Vec<Vec<u8>> = vec![
            b"plain".to_vec(),
            vec![0xff, 0xfe],
            vec![b'a', 0, b'b'],
            vec![0],
            Vec::new(),
            vec![0xc3; 300],
        ];
        let mut headers = OwnedHeaders::new();
        let mut expected = Vec::new();
        for (i, key) in keys.iter().enumerate() {
            let value: Option<Vec<u8>> = match i % 3 {
                0 => None,
                1 => Some(Vec::new()),
                _ => Some(vec![0, 1, 2]),
            };
            headers = add_header(headers, key, value.as_deref());
            expected.push(RecordHeader {
                key: key.clone(),
                value,
            });
        }
        assert_eq!(headers_of(headers.as_borrowed()), expected);
    }
}
