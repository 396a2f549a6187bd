//! An outbox entry: the records one commit of a plugin group emitted, grouped by target
//! partition, stored in the commit's transaction and appended to the log after it.
//!
//! Layout (little-endian): u32 part count, then per part: u32 topic length, the topic (UTF-8),
//! u32 partition, u64 start hint (the partition's high watermark when the entry was committed:
//! the part's records land at or after it), u32 record count, u32 frame length, the records as
//! a records frame (docs/storage-format.md).

use bytes::Bytes;

use crate::log::{Record, batch};

/// The records for one partition.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Part {
    pub topic: String,
    pub partition: u32,
    pub start_hint: u64,
    pub records: Vec<Record>,
}

pub fn encode(parts: &[Part]) -> Vec<u8> {
    let mut out = Vec::new();
    out.extend_from_slice(&(parts.len() as u32).to_le_bytes());
    for part in parts {
        out.extend_from_slice(&(part.topic.len() as u32).to_le_bytes());
        out.extend_from_slice(part.topic.as_bytes());
        out.extend_from_slice(&part.partition.to_le_bytes());
        out.extend_from_slice(&part.start_hint.to_le_bytes());
        out.extend_from_slice(&(part.records.len() as u32).to_le_bytes());
        let frame = batch::encode_records_frame(&part.records);
        out.extend_from_slice(&(frame.len() as u32).to_le_bytes());
        out.extend_from_slice(&frame);
    }
    out
}

/// Why an outbox entry cannot be decoded.
#[derive(Debug, thiserror::Error)]
pub enum OutboxError {
    #[error("outbox entry is truncated")]
    Truncated,
    #[error("topic name is not UTF-8")]
    TopicNotUtf8(#[source] std::string::FromUtf8Error),
    #[error(transparent)]
    Records(#[from] batch::BatchError),
    #[error("part holds {held} records, not {announced}")]
    CountMismatch { held: usize, announced: usize },
    #[error("{0} bytes after the last part")]
    TrailingBytes(usize),
}

pub fn decode(bytes: &[u8]) -> Result<Vec<Part>, OutboxError> {
    let mut cursor = Cursor { bytes };
    let count = cursor.u32()?;
    let mut parts = Vec::new();
    for _ in 0..count {
        let topic_len = cursor.u32()? as usize;
        let topic = String::from_utf8(cursor.take(topic_len)?.to_vec())
            .map_err(OutboxError::TopicNotUtf8)?;
        let partition = cursor.u32()?;
        let start_hint = cursor.u64()?;
        let record_count = cursor.u32()? as usize;
        let frame_len = cursor.u32()? as usize;
        let frame = Bytes::copy_from_slice(cursor.take(frame_len)?);
        let records = batch::decode_records_frame(&frame)?;
        if records.len() != record_count {
            return Err(OutboxError::CountMismatch {
                held: records.len(),
                announced: record_count,
            });
        }
        parts.push(Part {
            topic,
            partition,
            start_hint,
            records,
        });
    }
    if !cursor.bytes.is_empty() {
        return Err(OutboxError::TrailingBytes(cursor.bytes.len()));
    }
    Ok(parts)
}

struct Cursor<'a> {
    bytes: &'a [u8],
}

impl<'a> Cursor<'a> {
    fn take(&mut self, len: usize) -> Result<&'a [u8], OutboxError> {
        if self.bytes.len() < len {
            return Err(OutboxError::Truncated);
        }
        let (head, rest) = self.bytes.split_at(len);
        self.bytes = rest;
        Ok(head)
    }

    fn array<const N: usize>(&mut self) -> Result<[u8; N], OutboxError> {
        let mut array = [0; N];
        array.copy_from_slice(self.take(N)?);
        Ok(array)
    }

    fn u32(&mut self) -> Result<u32, OutboxError> {
        self.array().map(u32::from_le_bytes)
    }

    fn u64(&mut self) -> Result<u64, OutboxError> {
        self.array().map(u64::from_le_bytes)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::log::Header;

    proptest::proptest! {
        /// An entry read back from the store, damaged in any way, is an error, never a panic.
        #[test]
        fn arbitrary_bytes_never_panic_the_decoder(bytes in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..2048)) {
            let _ = decode(&bytes);
        }
    }

    #[test]
    fn entries_round_trip_and_truncation_is_an_error() {
        let record = Record {
            timestamp: 7,
            key: Some(Bytes::from_static(b"k")),
            value: Some(Bytes::from_static(b"v")),
            headers: vec![Header {
                key: "h".into(),
                value: Some(Bytes::from_static(b"x")),
            }],
        };
        let parts = vec![
            Part {
                topic: "out".into(),
                partition: 3,
                start_hint: 42,
                records: vec![record.clone(), record],
            },
            Part {
                topic: "g.dlq".into(),
                partition: 0,
                start_hint: 0,
                records: Vec::new(),
            },
        ];
        let bytes = encode(&parts);
        assert_eq!(decode(&bytes).unwrap(), parts);
        for cut in 0..bytes.len() {
            assert!(decode(&bytes[..cut]).is_err(), "cut at {cut}");
        }
    }
}
