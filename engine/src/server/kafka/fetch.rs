//! Fetch: records from each requested partition, within the request's `max_bytes` and each
//! partition's `partition_max_bytes` (always at least the first stored batch, as Kafka does,
//! so that a record larger than the limits is not stuck), waiting up to `max_wait_ms` for
//! `min_bytes` when there are not that many yet. The log has no transactions, so
//! `read_committed` and `read_uncommitted` read the same and the last stable offset is the
//! high watermark.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use futures::future::select_all;
use kafka_protocol::messages::fetch_response::{FetchableTopicResponse, PartitionData};
use kafka_protocol::messages::{FetchRequest, FetchResponse, TopicName};

use super::records::encode_fetched;
use super::{KafkaContext, error_code};
use crate::log::{Log, LogError, Partition};

/// One partition asked for.
struct Wanted {
    topic: TopicName,
    partition: i32,
    offset: i64,
    max_bytes: usize,
}

pub(super) async fn answer(request: FetchRequest, context: &KafkaContext) -> FetchResponse {
    let wanted: Vec<Wanted> = request
        .topics
        .into_iter()
        .flat_map(|topic| {
            let name = topic.topic;
            topic.partitions.into_iter().map(move |p| Wanted {
                topic: name.clone(),
                partition: p.partition,
                offset: p.fetch_offset,
                max_bytes: p.partition_max_bytes.max(0) as usize,
            })
        })
        .collect();
    let max_bytes = (request.max_bytes.max(0) as u64).min(context.max_fetch_bytes) as usize;
    let min_bytes = request.min_bytes.max(0) as usize;
    let wait_ms = (request.max_wait_ms.max(0) as u64).min(context.max_wait_ms);
    let wanted = Arc::new(wanted);
    let mut answered = read_all(&context.log, &wanted, max_bytes).await;
    if min_bytes > 0 && bytes_of(&answered) < min_bytes && wait_ms > 0 {
        wait_for_any(
            &context.log,
            &wanted,
            Duration::from_millis(wait_ms),
            context,
        )
        .await;
        answered = read_all(&context.log, &wanted, max_bytes).await;
    }
    let mut responses: Vec<FetchableTopicResponse> = Vec::new();
    for (wanted, data) in wanted.iter().zip(answered) {
        let data = data.with_partition_index(wanted.partition);
        match responses.iter_mut().find(|t| t.topic == wanted.topic) {
            Some(topic) => topic.partitions.push(data),
            None => responses.push(
                FetchableTopicResponse::default()
                    .with_topic(wanted.topic.clone())
                    .with_partitions(vec![data]),
            ),
        }
    }
    FetchResponse::default().with_responses(responses)
}

fn bytes_of(answered: &[PartitionData]) -> usize {
    answered
        .iter()
        .map(|p| p.records.as_ref().map_or(0, Bytes::len))
        .sum()
}

/// Reads every wanted partition, off the async workers (a read may go to the disk).
async fn read_all(
    log: &Arc<Log>,
    wanted: &Arc<Vec<Wanted>>,
    max_bytes: usize,
) -> Vec<PartitionData> {
    let (log, wanted) = (log.clone(), wanted.clone());
    let read = tokio::task::spawn_blocking(move || {
        let mut left = max_bytes;
        wanted
            .iter()
            .map(|w| {
                let data = read_one(&log, w, left);
                let used = data.records.as_ref().map_or(0, Bytes::len);
                left = left.saturating_sub(used);
                data
            })
            .collect::<Vec<_>>()
    })
    .await;
    read.unwrap_or_else(|error| {
        tracing::error!(%error, "kafka: a fetch's read failed");
        Vec::new()
    })
}

fn read_one(log: &Log, wanted: &Wanted, left: usize) -> PartitionData {
    let failed = |error: LogError| {
        PartitionData::default()
            .with_error_code(error_code(&error))
            .with_high_watermark(-1)
            .with_last_stable_offset(-1)
            .with_log_start_offset(-1)
            .with_records(Some(Bytes::new()))
    };
    let partition = match find(log, wanted) {
        Ok(partition) => partition,
        Err(error) => return failed(error),
    };
    let offset = wanted.offset.max(0) as u64;
    // Nothing was left for this partition: none of its records, but where it stands.
    let limit = wanted.max_bytes.min(left);
    let fetched = if limit == 0 {
        None
    } else {
        match partition.read(offset, limit) {
            Ok(fetched) => Some(fetched),
            Err(error) => return failed(error),
        }
    };
    let high_watermark = partition.high_watermark();
    let records = match fetched {
        Some(fetched) => match encode_fetched(&fetched.data, offset) {
            Ok(records) => {
                let count = crate::log::batch::count_records_from(&fetched.data, offset);
                partition
                    .counters()
                    .fetched(count, fetched.data.len() as u64);
                records
            }
            Err(error) => {
                tracing::error!(%error, topic = %wanted.topic.0.as_str(), "kafka: a stored batch does not decode");
                Bytes::new()
            }
        },
        None => Bytes::new(),
    };
    PartitionData::default()
        .with_high_watermark(high_watermark as i64)
        .with_last_stable_offset(high_watermark as i64)
        .with_log_start_offset(partition.log_start_offset() as i64)
        .with_aborted_transactions(Some(Vec::new()))
        .with_preferred_read_replica(kafka_protocol::messages::BrokerId(-1))
        .with_records(Some(records))
}

fn find(log: &Log, wanted: &Wanted) -> Result<Arc<Partition>, LogError> {
    let topic = log.topic(wanted.topic.0.as_str())?;
    let id = u32::try_from(wanted.partition).map_err(|_| LogError::UnknownPartition {
        topic: topic.name.to_string(),
        partition: 0,
        count: topic.partition_count(),
    })?;
    topic.partition(id)
}

/// Waits until a wanted partition has records past its fetch offset, the time is up, or the
/// engine shuts down.
async fn wait_for_any(log: &Log, wanted: &[Wanted], timeout: Duration, context: &KafkaContext) {
    let waits: Vec<_> = wanted
        .iter()
        .filter_map(|w| {
            let partition = find(log, w).ok()?;
            let offset = w.offset.max(0) as u64;
            Some(Box::pin(async move {
                partition.wait_for_records(offset, timeout).await
            }))
        })
        .collect();
    let mut shutdown = context.shutdown.clone();
    if waits.is_empty() {
        tokio::select! {
            _ = tokio::time::sleep(timeout) => {}
            _ = shutdown.wait_for(|stop| *stop) => {}
        }
        return;
    }
    tokio::select! {
        _ = select_all(waits) => {}
        _ = shutdown.wait_for(|stop| *stop) => {}
    }
}
