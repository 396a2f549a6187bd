//! ListOffsets: a partition's earliest offset (-2: the log start, as Kafka's earliest; records
//! archived before it are reached over HTTP), its latest (-1: the high watermark; -3, the
//! offset of the largest timestamp, is answered the same, the log's timestamps being those of
//! appends), or the first offset whose timestamp is at or after a time.

use kafka_protocol::ResponseError;
use kafka_protocol::messages::list_offsets_response::{
    ListOffsetsPartitionResponse, ListOffsetsTopicResponse,
};
use kafka_protocol::messages::{ListOffsetsRequest, ListOffsetsResponse};

use super::{KafkaContext, error_code};
use crate::log::{LogError, Partition, batch};

const LATEST: i64 = -1;
const EARLIEST: i64 = -2;
const MAX_TIMESTAMP: i64 = -3;

pub(super) fn answer(request: ListOffsetsRequest, context: &KafkaContext) -> ListOffsetsResponse {
    let topics = request
        .topics
        .into_iter()
        .map(|topic| {
            let found = context.log.topic(topic.name.0.as_str());
            let partitions = topic
                .partitions
                .iter()
                .map(|wanted| {
                    let answer = ListOffsetsPartitionResponse::default()
                        .with_partition_index(wanted.partition_index);
                    let partition = found.as_ref().map_err(error_code).and_then(|t| {
                        u32::try_from(wanted.partition_index)
                            .ok()
                            .and_then(|id| t.partition(id).ok())
                            .ok_or(ResponseError::UnknownTopicOrPartition.code())
                    });
                    match partition.map(|p| offset_for(&p, wanted.timestamp)) {
                        Ok(Ok((offset, timestamp))) => {
                            answer.with_offset(offset).with_timestamp(timestamp)
                        }
                        Ok(Err(error)) => answer
                            .with_error_code(error_code(&error))
                            .with_offset(-1)
                            .with_timestamp(-1),
                        Err(code) => answer
                            .with_error_code(code)
                            .with_offset(-1)
                            .with_timestamp(-1),
                    }
                })
                .collect();
            ListOffsetsTopicResponse::default()
                .with_name(topic.name)
                .with_partitions(partitions)
        })
        .collect();
    ListOffsetsResponse::default().with_topics(topics)
}

/// The offset asked for and the timestamp Kafka answers with it (-1 for earliest and
/// latest, and when no record is that recent).
fn offset_for(partition: &Partition, timestamp: i64) -> Result<(i64, i64), LogError> {
    let end = partition.high_watermark();
    match timestamp {
        EARLIEST => Ok((partition.log_start_offset() as i64, -1)),
        LATEST | MAX_TIMESTAMP => Ok((end as i64, -1)),
        time => {
            let offset = partition.offset_for_timestamp(time)?;
            if offset >= end {
                return Ok((-1, -1));
            }
            Ok((
                offset as i64,
                timestamp_at(partition, offset)?.unwrap_or(time),
            ))
        }
    }
}

/// The timestamp of the record at `offset`.
fn timestamp_at(partition: &Partition, offset: u64) -> Result<Option<i64>, LogError> {
    let fetched = partition.read(offset, 1)?;
    let records =
        batch::decode_all(&bytes::Bytes::from(fetched.data), offset).map_err(|source| {
            LogError::Corrupt {
                path: partition.dir().to_path_buf(),
                position: 0,
                offset,
                source,
            }
        })?;
    Ok(records.first().map(|(_, record)| record.timestamp))
}
