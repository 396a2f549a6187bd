//! Topic and cluster administration through the Kafka protocol: CreateTopics, DeleteTopics,
//! CreatePartitions, DescribeConfigs and DescribeCluster, on the log's topics (the same as
//! `sluice topic create`, `alter` and `delete`). Kafka's topic settings are named with dots (`retention.ms`); the log's with underscores (`retention_ms`), and
//! `max.message.bytes` is `max_record_bytes`. Replication is the single copy a single engine
//! has: a replication factor other than 1 (or -1, the default) is refused.

use kafka_protocol::ResponseError;
use kafka_protocol::messages::create_partitions_response::CreatePartitionsTopicResult;
use kafka_protocol::messages::create_topics_response::CreatableTopicResult;
use kafka_protocol::messages::delete_topics_response::DeletableTopicResult;
use kafka_protocol::messages::describe_cluster_response::DescribeClusterBroker;
use kafka_protocol::messages::describe_configs_response::{
    DescribeConfigsResourceResult, DescribeConfigsResult,
};
use kafka_protocol::messages::{
    BrokerId, CreatePartitionsRequest, CreatePartitionsResponse, CreateTopicsRequest,
    CreateTopicsResponse, DeleteTopicsRequest, DeleteTopicsResponse, DescribeClusterResponse,
    DescribeConfigsRequest, DescribeConfigsResponse, TopicName,
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
pub(super) fn setting_name(kafka: &str) -> String {
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

/// DescribeCluster: this engine, the one broker and controller.
pub(super) fn describe_cluster(context: &KafkaContext) -> DescribeClusterResponse {
    let (host, port) = &context.advertised;
    let broker = DescribeClusterBroker::default()
        .with_broker_id(BrokerId(super::NODE_ID))
        .with_host(StrBytes::from_string(host.clone()))
        .with_port(*port);
    DescribeClusterResponse::default()
        .with_cluster_id(StrBytes::from_string(context.cluster_id.clone()))
        .with_controller_id(BrokerId(super::NODE_ID))
        .with_brokers(vec![broker])
}

/// CreatePartitions: more partitions for topics (never fewer).
pub(super) fn create_partitions(
    request: CreatePartitionsRequest,
    context: &KafkaContext,
) -> CreatePartitionsResponse {
    let results = request
        .topics
        .into_iter()
        .map(|topic| {
            let result = CreatePartitionsTopicResult::default().with_name(topic.name.clone());
            let name = topic.name.0.as_str();
            let current = match context.log.topic(name) {
                Ok(found) => found.partition_count(),
                Err(error) => {
                    return result
                        .with_error_code(error_code(&error))
                        .with_error_message(Some(StrBytes::from_string(error.to_string())));
                }
            };
            let wanted = u32::try_from(topic.count).unwrap_or(0);
            if wanted <= current {
                let message = format!("{name} has {current} partitions; it can only grow");
                return result
                    .with_error_code(ResponseError::InvalidPartitions.code())
                    .with_error_message(Some(StrBytes::from_string(message)));
            }
            if request.validate_only {
                return result;
            }
            match context.log.alter_topic(name, &[], Some(wanted)) {
                Ok(_) => result,
                Err(error) => result
                    .with_error_code(error_code(&error))
                    .with_error_message(Some(StrBytes::from_string(error.to_string()))),
            }
        })
        .collect();
    CreatePartitionsResponse::default().with_results(results)
}

/// Kafka's resource types in DescribeConfigs.
const RESOURCE_TOPIC: i8 = 2;
/// Where a setting's value comes from, as DescribeConfigs says it.
const SOURCE_TOPIC: i8 = 1;
const SOURCE_DEFAULT: i8 = 5;

/// DescribeConfigs: a topic's settings by Kafka's names (the log's other settings under their
/// own); brokers have none to describe.
pub(super) fn describe_configs(
    request: DescribeConfigsRequest,
    context: &KafkaContext,
) -> DescribeConfigsResponse {
    let results = request
        .resources
        .into_iter()
        .map(|resource| {
            let result = DescribeConfigsResult::default()
                .with_resource_type(resource.resource_type)
                .with_resource_name(resource.resource_name.clone());
            if resource.resource_type != RESOURCE_TOPIC {
                return result;
            }
            match context.log.topic(resource.resource_name.as_str()) {
                Ok(topic) => {
                    let configs = topic_settings(&topic.config(), context.log.topic_defaults())
                        .into_iter()
                        .filter(|(name, ..)| {
                            resource
                                .configuration_keys
                                .as_ref()
                                .is_none_or(|keys| keys.iter().any(|k| k.as_str() == name))
                        })
                        .map(|(name, value, source)| {
                            DescribeConfigsResourceResult::default()
                                .with_name(StrBytes::from_string(name))
                                .with_value(value.map(StrBytes::from_string))
                                .with_config_source(source)
                        })
                        .collect();
                    result.with_configs(configs)
                }
                Err(error) => result
                    .with_error_code(error_code(&error))
                    .with_error_message(Some(StrBytes::from_string(error.to_string()))),
            }
        })
        .collect();
    DescribeConfigsResponse::default().with_results(results)
}

/// Kafka's name for a log setting: the inverse of [`setting_name`].
fn kafka_name(setting: &str) -> String {
    match setting {
        "max_record_bytes" => "max.message.bytes".to_string(),
        "compression" => "compression.type".to_string(),
        other => other.replace('_', "."),
    }
}

/// A setting's value as Kafka spells it: no limit is `-1`, no compression `uncompressed`.
fn kafka_value(setting: &str, value: &serde_json::Value) -> Option<String> {
    match (setting, value) {
        ("retention_ms" | "retention_bytes", serde_json::Value::Null) => Some("-1".to_string()),
        ("compression", serde_json::Value::String(none)) if none == "none" => {
            Some("uncompressed".to_string())
        }
        (_, serde_json::Value::Null) => None,
        (_, serde_json::Value::String(s)) => Some(s.clone()),
        (_, other) => Some(other.to_string()),
    }
}

/// (Kafka name, value, source) of every setting of a topic.
fn topic_settings(
    config: &crate::log::TopicConfig,
    defaults: &crate::log::TopicConfig,
) -> Vec<(String, Option<String>, i8)> {
    let as_map = |config: &crate::log::TopicConfig| match serde_json::to_value(config) {
        Ok(serde_json::Value::Object(map)) => map,
        _ => serde_json::Map::new(),
    };
    let (values, default_values) = (as_map(config), as_map(defaults));
    let mut settings: Vec<(String, Option<String>, i8)> = values
        .iter()
        .map(|(name, value)| {
            let text = kafka_value(name, value);
            let source = match default_values.get(name) == Some(value) {
                true => SOURCE_DEFAULT,
                false => SOURCE_TOPIC,
            };
            (kafka_name(name), text, source)
        })
        .collect();
    // What Kafka clients look for and the log has one way of: deleting old segments, and
    // keeping the producer's timestamps.
    for (name, value) in [
        ("cleanup.policy", "delete"),
        ("message.timestamp.type", "CreateTime"),
    ] {
        settings.push((name.to_string(), Some(value.to_string()), SOURCE_DEFAULT));
    }
    settings.sort();
    settings
}
