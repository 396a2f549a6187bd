//! Topic administration through the Kafka protocol: CreateTopics and DeleteTopics, on the
//! log's topics (the same as `sluice topic create` and `delete`). Kafka's topic settings are
//! named with dots (`retention.ms`); the log's with underscores (`retention_ms`), and
//! `max.message.bytes` is `max_record_bytes`. Replication is the single copy a single engine
//! has: a replication factor other than 1 (or -1, the default) is refused.

use kafka_protocol::ResponseError;
use kafka_protocol::messages::create_topics_response::CreatableTopicResult;
use kafka_protocol::messages::delete_topics_response::DeletableTopicResult;
use kafka_protocol::messages::{
    CreateTopicsRequest, CreateTopicsResponse, DeleteTopicsRequest, DeleteTopicsResponse, TopicName,
};
use kafka_protocol::protocol::StrBytes;

use super::{KafkaContext, error_code};

/// Partitions of a topic created without a count (-1): Kafka's `num.partitions` default.
const PARTITIONS_DEFAULT: u32 = 1;

pub(super) fn create_topics(
    request: CreateTopicsRequest,
    context: &KafkaContext,
) -> CreateTopicsResponse {
    let topics = request
        .topics
        .into_iter()
        .map(|topic| {
            let result = CreatableTopicResult::default().with_name(topic.name.clone());
            let name = topic.name.0.as_str();
            if !matches!(topic.replication_factor, -1 | 1) {
                return failed(
                    result,
                    ResponseError::InvalidReplicationFactor.code(),
                    format!(
                        "replication factor {}: a single engine keeps one copy",
                        topic.replication_factor
                    ),
                );
            }
            let partitions = match topic.num_partitions {
                -1 => PARTITIONS_DEFAULT,
                n if n >= 1 => n as u32,
                n => {
                    return failed(
                        result,
                        ResponseError::InvalidPartitions.code(),
                        format!("{n} partitions"),
                    );
                }
            };
            let overrides: Vec<(String, String)> = topic
                .configs
                .iter()
                .filter_map(|c| {
                    let value = c.value.as_ref()?.as_str().to_string();
                    Some((setting_name(c.name.as_str()), value))
                })
                .collect();
            let outcome = if request.validate_only {
                context
                    .log
                    .topic_defaults()
                    .with_overrides(&overrides)
                    .map(drop)
            } else {
                context
                    .log
                    .create_topic(name, partitions, &overrides)
                    .map(drop)
            };
            match outcome {
                Ok(()) => result
                    .with_num_partitions(partitions as i32)
                    .with_replication_factor(1),
                Err(error) => failed(result, error_code(&error), error.to_string()),
            }
        })
        .collect();
    CreateTopicsResponse::default().with_topics(topics)
}

/// The log's name for a Kafka topic setting.
fn setting_name(kafka: &str) -> String {
    match kafka {
        "max.message.bytes" => "max_record_bytes".to_string(),
        other => other.replace('.', "_"),
    }
}

fn failed(result: CreatableTopicResult, code: i16, message: String) -> CreatableTopicResult {
    result
        .with_error_code(code)
        .with_error_message(Some(StrBytes::from_string(message)))
        .with_num_partitions(-1)
        .with_replication_factor(-1)
}

pub(super) fn delete_topics(
    request: DeleteTopicsRequest,
    context: &KafkaContext,
) -> DeleteTopicsResponse {
    // Versions up to 5 name the topics in `topic_names`; 6 and later in `topics`.
    let names: Vec<TopicName> = request
        .topic_names
        .into_iter()
        .chain(request.topics.into_iter().filter_map(|t| t.name))
        .collect();
    let responses = names
        .into_iter()
        .map(|name| {
            let result = DeletableTopicResult::default().with_name(Some(name.clone()));
            match context.log.delete_topic(name.0.as_str()) {
                Ok(()) => result,
                Err(error) => result
                    .with_error_code(error_code(&error))
                    .with_error_message(Some(StrBytes::from_string(error.to_string()))),
            }
        })
        .collect();
    DeleteTopicsResponse::default().with_responses(responses)
}
