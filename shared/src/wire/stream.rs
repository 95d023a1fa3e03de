//! The binary form of `GET /events/stream` (`Accept: application/vnd.kafka-replicator.stream`):
//! one frame per batch, a `u32` big-endian length and then that many bytes of a `KRB2`
//! batch (the binary `/events` answer, with the cursor after it). A length of 0 is a
//! keep-alive. The stream ends cleanly between two frames; a frame cut off is an error
//! (the reader resumes from the last whole one). [`FrameReader`] splits the bytes as they
//! arrive.

use bytes::{Buf, Bytes, BytesMut};

use super::WireError;

/// Media type of the binary stream.
pub const STREAM_CONTENT_TYPE: &str = "application/vnd.kafka-replicator.stream";

/// Largest frame a reader takes: far above any batch (`max_bytes` is at most 16 MiB of
/// events), so only garbage is refused.
pub const MAX_FRAME: usize = 64 * 1024 * 1024;

/// The keep-alive frame.
pub const KEEP_ALIVE: [u8; 4] = [0; 4];

/// The length prefix of a frame holding `body`.
pub fn frame_header(body: &[u8]) -> Result<[u8; 4], WireError> {
    u32::try_from(body.len())
        .ok()
        .filter(|&len| len as usize <= MAX_FRAME)
        .map(u32::to_be_bytes)
        .ok_or(WireError::TooLong(body.len()))
}

/// One frame of the stream.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Frame {
    KeepAlive,
    /// A `KRB2` batch, for [`super::BatchView::parse`].
    Batch(Bytes),
}

/// Cuts a byte stream into frames as its chunks arrive.
#[derive(Debug, Default)]
pub struct FrameReader {
    pending: BytesMut,
}

impl FrameReader {
    pub fn new() -> Self {
        Self::default()
    }

    /// Takes in the next chunk of the stream.
    pub fn push(&mut self, chunk: &[u8]) {
        self.pending.extend_from_slice(chunk);
    }

    /// The next whole frame, if one has arrived.
    pub fn next_frame(&mut self) -> Result<Option<Frame>, WireError> {
        let Some(header) = self.pending.get(..4) else {
            return Ok(None);
        };
        let len = u32::from_be_bytes([header[0], header[1], header[2], header[3]]) as usize;
        if len > MAX_FRAME {
            return Err(WireError::TooLong(len));
        }
        if self.pending.len() < 4 + len {
            // Room for the whole frame at once, not one chunk's growth at a time.
            self.pending.reserve(4 + len - self.pending.len());
            return Ok(None);
        }
        self.pending.advance(4);
        if len == 0 {
            return Ok(Some(Frame::KeepAlive));
        }
        Ok(Some(Frame::Batch(self.pending.split_to(len).freeze())))
    }

    /// Whether a whole batch frame is here, to be taken by [`Self::next_frame`] at once
    /// (keep-alives before it are dropped).
    pub fn has_batch(&mut self) -> bool {
        while self.has_frame() {
            if self.pending[..4] != KEEP_ALIVE {
                return true;
            }
            self.pending.advance(4);
        }
        false
    }

    /// Whether a whole frame is here, to be taken by [`Self::next_frame`] at once.
    pub fn has_frame(&self) -> bool {
        self.pending.get(..4).is_some_and(|header| {
            let len = u32::from_be_bytes([header[0], header[1], header[2], header[3]]) as usize;
            len > MAX_FRAME || self.pending.len() >= 4 + len
        })
    }

    /// Whether the stream may end here: no frame is cut off.
    pub fn at_boundary(&self) -> bool {
        self.pending.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frames_come_out_whole_however_the_bytes_are_cut() {
        let body = crate::wire::encode(std::iter::empty::<&crate::Record>(), "cursor-1", &[])
            .expect("batch");
        let mut stream = Vec::new();
        stream.extend_from_slice(&frame_header(&body).expect("header"));
        stream.extend_from_slice(&body);
        stream.extend_from_slice(&KEEP_ALIVE);
        stream.extend_from_slice(&frame_header(&body).expect("header"));
        stream.extend_from_slice(&body);
        for cut in [1, 3, 7, stream.len()] {
            let mut reader = FrameReader::new();
            let mut frames = Vec::new();
            for chunk in stream.chunks(cut) {
                reader.push(chunk);
                while reader.has_frame() {
                    frames.push(reader.next_frame().expect("valid").expect("a frame"));
                }
                assert_eq!(reader.next_frame(), Ok(None));
            }
            assert!(reader.at_boundary(), "cut {cut}");
            let batch = Frame::Batch(Bytes::from(body.clone()));
            assert_eq!(
                frames,
                [batch.clone(), Frame::KeepAlive, batch],
                "cut {cut}"
            );
            let Frame::Batch(first) = &frames[0] else {
                unreachable!()
            };
            let view = crate::wire::BatchView::parse(first.clone()).expect("a batch");
            assert_eq!(view.next_cursor(), "cursor-1");
        }
    }

    #[test]
    fn a_cut_frame_is_not_a_boundary_and_garbage_is_refused() {
        let mut reader = FrameReader::new();
        reader.push(&[0, 0, 0, 9, 1, 2]);
        assert!(!reader.has_frame());
        assert_eq!(reader.next_frame(), Ok(None));
        assert!(!reader.at_boundary());
        // Keep-alives are no batch.
        let mut reader = FrameReader::new();
        reader.push(&[KEEP_ALIVE, KEEP_ALIVE].concat());
        assert!(reader.has_frame());
        assert!(!reader.has_batch());
        assert!(reader.at_boundary(), "dropped");
        let mut reader = FrameReader::new();
        reader.push(&u32::MAX.to_be_bytes());
        assert!(matches!(reader.next_frame(), Err(WireError::TooLong(_))));
    }
}
