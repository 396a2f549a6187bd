//! Kafka record batches (magic 2) to and from the log's records. A produced batch, in any of
//! Kafka's compressions, becomes the log's records (timestamps, keys, values and headers kept);
//! a fetched stretch of the log becomes one Kafka batch per stored batch, with the records'
//! own offsets, uncompressed.
//!
//! Two things a Kafka record has that the log's does not, refused rather than changed: a null
//! value (a tombstone; the log's values are bytes, possibly empty) and a header whose value is
//! null. Two headers of the same name keep only the last: the codec keeps headers in a map.

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
    #[error("a record has a null value (a tombstone), which the log does not keep")]
    NullValue,
    #[error("a header of a record has a null value, which the log does not keep")]
    NullHeader,
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
            records.push(to_log(record)?);
        }
        batches.push(ProducedBatch { producer, records });
    }
    Ok(batches)
}

fn to_log(record: KafkaRecord) -> Result<Record, RecordsError> {
    let value = record.value.ok_or(RecordsError::NullValue)?;
    let mut headers = Vec::with_capacity(record.headers.len());
    for (name, value) in record.headers {
        headers.push(Header {
            key: name.as_str().to_string().into(),
            value: value.ok_or(RecordsError::NullHeader)?,
        });
    }
    Ok(Record {
        timestamp: record.timestamp,
        key: record.key,
        value,
        headers,
    })
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
            .map(|(offset, record)| to_kafka(offset, record))
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

fn to_kafka(offset: u64, record: Record) -> KafkaRecord {
    let mut headers = IndexMap::with_capacity(record.headers.len());
    for header in record.headers {
        headers.insert(
            StrBytes::from_string(header.key.into_owned()),
            Some(header.value),
        );
    }
    KafkaRecord {
        transactional: false,
        control: false,
        delete_horizon: false,
        partition_leader_epoch: 0,
        producer_id: -1,
        producer_epoch: -1,
        timestamp_type: TimestampType::Creation,
        offset: offset as i64,
        sequence: -1,
        timestamp: record.timestamp,
        key: record.key,
        value: Some(record.value),
        headers,
    }
}
