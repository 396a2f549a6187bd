//! Kafka record batches (magic 2) to and from the log's records. A produced batch, in any of
//! Kafka's compressions, becomes the log's records (timestamps, keys, values and headers kept);
//! a fetched stretch of the log becomes one Kafka batch per stored batch, with the records'
//! own offsets, uncompressed.
//!
//! Null values (tombstones) and null header values are kept: the log's format 2 stores them.
//! A batch of an idempotent producer keeps its producer id, epoch and sequence numbers, in the
//! log and back out in a fetch. Two headers of the same name keep only the last: the codec
//! keeps headers in a map.

use bytes::{BufMut, Bytes};
use kafka_protocol::records::{Record as KafkaRecord, RecordBatchDecoder};

use super::decompress;
use super::producers::BatchProducer;
use crate::log::batch::{self, Header, Record, put_varint, zigzag};

/// Why produced records cannot be taken.
#[derive(Debug, thiserror::Error)]
pub(super) enum RecordsError {
    #[error("the record batch is corrupt: {0}")]
    Corrupt(String),
}

/// One produced batch: its records, and its producer when it comes from an idempotent one.
pub(super) struct ProducedBatch {
    pub producer: Option<BatchProducer>,
    pub records: Vec<Record>,
}

/// The batches of a Produce request's partition (one or more).
pub(super) fn decode_produced(data: &Bytes) -> Result<Vec<ProducedBatch>, RecordsError> {
    let mut buf = data.clone();
    let mut batches = Vec::new();
    while bytes::Buf::has_remaining(&buf) {
        let set =
            RecordBatchDecoder::decode_with_custom_compression(&mut buf, Some(decompress::bounded))
                .map_err(|error| RecordsError::Corrupt(format!("{error:#}")))?;
        let producer = set.records.first().and_then(|first| {
            (first.producer_id >= 0).then_some(BatchProducer {
                id: first.producer_id,
                epoch: first.producer_epoch,
                base_sequence: first.sequence,
                count: set.records.len() as i32,
            })
        });
        let mut records = Vec::with_capacity(set.records.len());
        for record in set.records {
            if record.control {
                continue;
            }
            records.push(to_log(record));
        }
        batches.push(ProducedBatch { producer, records });
    }
    Ok(batches)
}

fn to_log(record: KafkaRecord) -> Record {
    let headers = record
        .headers
        .into_iter()
        .map(|(name, value)| Header {
            key: name.as_str().to_string().into(),
            value,
        })
        .collect();
    Record {
        timestamp: record.timestamp,
        key: record.key,
        value: record.value,
        headers,
    }
}

/// Kafka batches of the log's stored batches in `data` (as a partition read returns them),
/// leaving out records before `from`: one Kafka batch (magic 2, uncompressed) per stored
/// batch, written straight from the stored records, with nothing allocated per record. (The
/// codec's encoder wants each record as an owned struct, with a map for its headers: that
/// copy was the fetch path's largest cost.) The tests check these batches with the codec's
/// decoder.
pub(super) fn encode_fetched(data: &[u8], from: u64) -> Result<Bytes, batch::BatchError> {
    let mut out = Vec::with_capacity(data.len() + data.len() / 4);
    let mut stored: Option<batch::BatchHeader> = None;
    let mut open: Option<KafkaBatch> = None;
    batch::visit_batches(data, |event| -> Result<(), batch::BatchError> {
        match event {
            batch::Visit::Batch(header) => {
                if let Some(done) = open.take() {
                    done.finish(&mut out);
                }
                stored = Some(*header);
            }
            batch::Visit::Record(offset, record) if offset >= from => {
                let batch = open.get_or_insert_with(|| {
                    KafkaBatch::start(&mut out, offset, record.timestamp, stored.as_ref())
                });
                batch.push(&mut out, offset, record);
            }
            batch::Visit::Record(..) => {}
        }
        Ok(())
    })?;
    if let Some(done) = open.take() {
        done.finish(&mut out);
    }
    Ok(Bytes::from(out))
}

/// Bytes of a Kafka record batch before its records.
const KAFKA_BATCH_HEADER_LEN: usize = 61;
/// Where the fields written last are: the batch length, the CRC (of everything from the
/// attributes on), the last offset delta, the max timestamp and the record count.
const KAFKA_OFF_LENGTH: usize = 8;
const KAFKA_OFF_CRC: usize = 17;
const KAFKA_OFF_ATTRIBUTES: usize = 21;
const KAFKA_OFF_LAST_OFFSET_DELTA: usize = 23;
const KAFKA_OFF_MAX_TIMESTAMP: usize = 35;
const KAFKA_OFF_RECORD_COUNT: usize = 57;

/// A Kafka record batch being written at `start` of the output.
struct KafkaBatch {
    start: usize,
    base_offset: u64,
    base_timestamp: i64,
    max_timestamp: i64,
    last_offset: u64,
    count: i32,
}

impl KafkaBatch {
    /// Writes the header of a batch whose first record is at `offset`; the fields only known
    /// at the end are written by [`KafkaBatch::finish`].
    fn start(
        out: &mut Vec<u8>,
        offset: u64,
        timestamp: i64,
        stored: Option<&batch::BatchHeader>,
    ) -> KafkaBatch {
        let start = out.len();
        // The producer fields of an idempotent producer's batch; a batch cut at `offset`
        // starts at a later sequence number.
        let (producer_id, epoch, sequence) = match stored.and_then(|h| h.producer.map(|p| (h, p))) {
            Some((header, p)) => {
                let skipped = (offset - header.base_offset) as i32;
                (p.id, p.epoch, p.base_sequence.wrapping_add(skipped))
            }
            None => (-1, -1, -1),
        };
        out.put_i64(offset as i64);
        out.put_i32(0); // length
        out.put_i32(0); // partition leader epoch
        out.put_i8(2); // magic
        out.put_u32(0); // crc
        out.put_i16(0); // attributes: uncompressed, CreateTime, not transactional
        out.put_i32(0); // last offset delta
        out.put_i64(timestamp);
        out.put_i64(timestamp); // max timestamp
        out.put_i64(producer_id);
        out.put_i16(epoch);
        out.put_i32(sequence);
        out.put_i32(0); // record count
        debug_assert_eq!(out.len() - start, KAFKA_BATCH_HEADER_LEN);
        KafkaBatch {
            start,
            base_offset: offset,
            base_timestamp: timestamp,
            max_timestamp: timestamp,
            last_offset: offset,
            count: 0,
        }
    }

    /// Appends one record in Kafka's record format: its length, then attributes, timestamp
    /// and offset deltas, key, value and headers, lengths as zigzag varints (-1 for null).
    fn push(&mut self, out: &mut Vec<u8>, offset: u64, record: &batch::RecordView<'_>) {
        let timestamp_delta = zigzag(record.timestamp.wrapping_sub(self.base_timestamp));
        let offset_delta = zigzag((offset - self.base_offset) as i64);
        let mut body = 1 + varint_len(timestamp_delta) + varint_len(offset_delta);
        body += nullable_len(record.key) + nullable_len(record.value);
        body += varint_len(zigzag(record.headers.len() as i64));
        for (name, value) in record.headers {
            body += nullable_len(Some(name.as_bytes())) + nullable_len(*value);
        }
        put_varint(out, zigzag(body as i64));
        out.put_i8(0);
        put_varint(out, timestamp_delta);
        put_varint(out, offset_delta);
        put_nullable(out, record.key);
        put_nullable(out, record.value);
        put_varint(out, zigzag(record.headers.len() as i64));
        for (name, value) in record.headers {
            put_nullable(out, Some(name.as_bytes()));
            put_nullable(out, *value);
        }
        self.max_timestamp = self.max_timestamp.max(record.timestamp);
        self.last_offset = offset;
        self.count += 1;
    }

    /// Writes the length, the last offset delta, the max timestamp, the count and the CRC.
    fn finish(self, out: &mut [u8]) {
        let batch = &mut out[self.start..];
        let length = (batch.len() - KAFKA_OFF_LENGTH - 4) as i32;
        batch[KAFKA_OFF_LENGTH..KAFKA_OFF_LENGTH + 4].copy_from_slice(&length.to_be_bytes());
        let last_delta = (self.last_offset - self.base_offset) as i32;
        batch[KAFKA_OFF_LAST_OFFSET_DELTA..KAFKA_OFF_LAST_OFFSET_DELTA + 4]
            .copy_from_slice(&last_delta.to_be_bytes());
        batch[KAFKA_OFF_MAX_TIMESTAMP..KAFKA_OFF_MAX_TIMESTAMP + 8]
            .copy_from_slice(&self.max_timestamp.to_be_bytes());
        batch[KAFKA_OFF_RECORD_COUNT..KAFKA_OFF_RECORD_COUNT + 4]
            .copy_from_slice(&self.count.to_be_bytes());
        let crc = crc32c::crc32c(&batch[KAFKA_OFF_ATTRIBUTES..]);
        batch[KAFKA_OFF_CRC..KAFKA_OFF_CRC + 4].copy_from_slice(&crc.to_be_bytes());
    }
}

fn varint_len(mut value: u64) -> usize {
    let mut len = 1;
    while value >= 0x80 {
        value >>= 7;
        len += 1;
    }
    len
}

/// Bytes of a length-prefixed field: the zigzag varint of its length (-1 for null) and it.
fn nullable_len(bytes: Option<&[u8]>) -> usize {
    match bytes {
        None => varint_len(zigzag(-1)),
        Some(bytes) => varint_len(zigzag(bytes.len() as i64)) + bytes.len(),
    }
}

fn put_nullable(out: &mut Vec<u8>, bytes: Option<&[u8]>) {
    match bytes {
        None => put_varint(out, zigzag(-1)),
        Some(bytes) => {
            put_varint(out, zigzag(bytes.len() as i64));
            out.put_slice(bytes);
        }
    }
}
