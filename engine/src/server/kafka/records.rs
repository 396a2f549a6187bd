//! Kafka record batches (magic 2) to and from the log's records. A produced batch, in any of
//! Kafka's compressions, becomes the log's records (timestamps, keys, values and headers kept);
//! a fetched stretch of the log becomes one Kafka batch per stored batch, with the records'
//! own offsets, uncompressed.
//!
//! Null values (tombstones) and null header values are kept: the log's format 2 stores them.
//! A batch of an idempotent producer keeps its producer id, epoch and sequence numbers, in the
//! log and back out in a fetch. Two headers of the same name keep only the last: the codec
//! keeps headers in a map.

use bytes::{Bytes, BytesMut};
use kafka_protocol::indexmap::IndexMap;
use kafka_protocol::protocol::StrBytes;
use kafka_protocol::records::{
    Compression, Record as KafkaRecord, RecordBatchDecoder, RecordBatchEncoder,
    RecordEncodeOptions, TimestampType,
};

use super::decompress;
use super::producers::BatchProducer;
use crate::log::batch::{self, Header, Record};

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
/// leaving out records before `from`.
pub(super) fn encode_fetched(data: Bytes, from: u64) -> Result<Bytes, batch::BatchError> {
    let mut out = BytesMut::new();
    let options = RecordEncodeOptions {
        version: 2,
        compression: Compression::None,
    };
    for stored in batch::Batches::new(data) {
        let (header, records) = stored?;
        let converted: Vec<KafkaRecord> = (header.base_offset..)
            .zip(records)
            .filter(|(offset, _)| *offset >= from)
            .map(|(offset, record)| {
                let index = (offset - header.base_offset) as i32;
                to_kafka(offset, record, header.producer, index)
            })
            .collect();
        if converted.is_empty() {
            continue;
        }
        // Encoding a record set of our own making cannot fail but for sizes past i32.
        if let Err(error) = RecordBatchEncoder::encode(&mut out, &converted, &options) {
            tracing::error!(%error, "kafka: cannot encode a fetched batch");
            break;
        }
    }
    Ok(out.freeze())
}

/// The Kafka record at `offset`, the `index`th of its stored batch, written by `producer`.
fn to_kafka(
    offset: u64,
    record: Record,
    producer: Option<batch::ProducerStamp>,
    index: i32,
) -> KafkaRecord {
    let mut headers = IndexMap::with_capacity(record.headers.len());
    for header in record.headers {
        headers.insert(StrBytes::from_string(header.key.into_owned()), header.value);
    }
    let (producer_id, producer_epoch, sequence) = match producer {
        Some(p) => (p.id, p.epoch, p.base_sequence.wrapping_add(index)),
        None => (-1, -1, -1),
    };
    KafkaRecord {
        transactional: false,
        control: false,
        delete_horizon: false,
        partition_leader_epoch: 0,
        producer_id,
        producer_epoch,
        timestamp_type: TimestampType::Creation,
        offset: offset as i64,
        sequence,
        timestamp: record.timestamp,
        key: record.key,
        value: record.value,
        headers,
    }
}
