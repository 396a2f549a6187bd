//! Produce: each partition's record batches are appended to that partition of the log and
//! answered once durable (the log's flush policy: fsync before acknowledgement by default),
//! whatever `acks` asks for beyond 0. The client's partitioner chose the partition.

use kafka_protocol::ResponseError;
use kafka_protocol::messages::produce_response::{PartitionProduceResponse, TopicProduceResponse};
use kafka_protocol::messages::{ProduceRequest, ProduceResponse};
use kafka_protocol::protocol::StrBytes;

use super::producers::Verdict;
use super::records::decode_produced;
use super::{KafkaContext, error_code};
use crate::log::partition::{Appended, Partition};

pub(super) async fn answer(request: ProduceRequest, context: &KafkaContext) -> ProduceResponse {
    if request.transactional_id.is_some() {
        return refuse_all(
            request,
            ResponseError::TransactionalIdAuthorizationFailed.code(),
            "transactions are not served",
        );
    }
    // Appended first, all of them, then waited for together: one fsync covers many.
    let mut pending = Vec::new();
    for topic in request.topic_data {
        let name = topic.name.0.as_str().to_string();
        for partition in topic.partition_data {
            let outcome = append(&name, partition.index, partition.records, context);
            pending.push((topic.name.clone(), partition.index, outcome));
        }
    }
    let mut responses: Vec<TopicProduceResponse> = Vec::new();
    for (name, index, outcome) in pending {
        let answered = match outcome {
            Ok((partition, appended)) => match partition.wait_visible(appended.next_offset).await {
                Ok(()) => PartitionProduceResponse::default()
                    .with_base_offset(appended.base_offset as i64)
                    .with_log_append_time_ms(-1)
                    .with_log_start_offset(partition.log_start_offset() as i64),
                Err(error) => refused(error_code(&error), error.to_string()),
            },
            Err((code, message)) => refused(code, message),
        };
        let answered = answered.with_index(index);
        match responses.iter_mut().find(|t| t.name == name) {
            Some(topic) => topic.partition_responses.push(answered),
            None => responses.push(
                TopicProduceResponse::default()
                    .with_name(name)
                    .with_partition_responses(vec![answered]),
            ),
        }
    }
    ProduceResponse::default().with_responses(responses)
}

type Appending = Result<(std::sync::Arc<Partition>, Appended), (i16, String)>;

/// Appends one partition's batches (not yet durable). Batches of idempotent producers are
/// checked against what the partition remembers of them, under the partition's producer
/// lock, held until the append: a retried batch is answered with its first offset.
fn append(
    topic: &str,
    index: i32,
    records: Option<bytes::Bytes>,
    context: &KafkaContext,
) -> Appending {
    let log_error = |error: crate::log::LogError| (error_code(&error), error.to_string());
    let found = context.log.topic(topic).map_err(log_error)?;
    let id = u32::try_from(index).map_err(|_| {
        (
            ResponseError::UnknownTopicOrPartition.code(),
            format!("partition {index}"),
        )
    })?;
    let partition = found.partition(id).map_err(log_error)?;
    let batches = match records {
        Some(data) => decode_produced(&data)
            .map_err(|error| (ResponseError::CorruptMessage.code(), error.to_string()))?,
        None => Vec::new(),
    };
    for batch in &batches {
        found
            .check_record_sizes(&batch.records)
            .map_err(log_error)?;
    }
    let mut producers = context.producers.lock(&partition).map_err(log_error)?;
    // Plain batches are appended together, in one stored batch; an idempotent producer's
    // batch alone, stamped with its producer, so the log tells after a restart what it wrote.
    let mut plain: Vec<crate::log::Record> = Vec::new();
    let mut first: Option<Appended> = None;
    let mut last: Option<Appended> = None;
    let mut first_duplicate = None;
    for batch in batches {
        let verdict = match &batch.producer {
            Some(producer) => producers.check(producer).map_err(|code| {
                (
                    code,
                    format!(
                        "sequence {} of producer {}",
                        producer.base_sequence, producer.id
                    ),
                )
            })?,
            None => Verdict::Append,
        };
        let appended = match (verdict, &batch.producer) {
            (Verdict::Duplicate(offset), _) => {
                first_duplicate.get_or_insert(offset);
                continue;
            }
            (Verdict::Append, _) if batch.records.is_empty() => continue,
            (Verdict::Append, None) => {
                plain.extend(batch.records);
                continue;
            }
            (Verdict::Append, Some(producer)) => {
                let stamp = crate::log::batch::ProducerStamp {
                    id: producer.id,
                    epoch: producer.epoch,
                    base_sequence: producer.base_sequence,
                };
                let appended = partition
                    .append_stamped(&batch.records, Some(stamp))
                    .map_err(log_error)?;
                producers.written(producer, appended.base_offset);
                appended
            }
        };
        first.get_or_insert(appended);
        last = Some(appended);
    }
    if !plain.is_empty() {
        let appended = partition.append(&plain).map_err(log_error)?;
        first.get_or_insert(appended);
        last = Some(appended);
    }
    let appended = match (first, last) {
        (Some(first), Some(last)) => Appended {
            base_offset: first.base_offset,
            next_offset: last.next_offset,
        },
        _ => {
            let at = first_duplicate.unwrap_or_else(|| partition.high_watermark());
            Appended {
                base_offset: at,
                next_offset: at,
            }
        }
    };
    Ok((partition, appended))
}

fn refused(code: i16, message: String) -> PartitionProduceResponse {
    PartitionProduceResponse::default()
        .with_error_code(code)
        .with_error_message(Some(StrBytes::from_string(message)))
        .with_base_offset(-1)
        .with_log_append_time_ms(-1)
        .with_log_start_offset(-1)
}

fn refuse_all(request: ProduceRequest, code: i16, message: &str) -> ProduceResponse {
    let responses = request
        .topic_data
        .into_iter()
        .map(|topic| {
            let partitions = topic
                .partition_data
                .iter()
                .map(|p| refused(code, message.to_string()).with_index(p.index))
                .collect();
            TopicProduceResponse::default()
                .with_name(topic.name)
                .with_partition_responses(partitions)
        })
        .collect();
    ProduceResponse::default().with_responses(responses)
}
