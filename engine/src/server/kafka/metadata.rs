//! Metadata: this engine is the only broker of its cluster, its controller, and the leader
//! (and only replica) of every partition. Topics are not created by asking for them: an
//! unknown topic is UNKNOWN_TOPIC_OR_PARTITION, whatever `allow_auto_topic_creation` says.

use kafka_protocol::ResponseError;
use kafka_protocol::messages::metadata_response::{
    MetadataResponseBroker, MetadataResponsePartition, MetadataResponseTopic,
};
use kafka_protocol::messages::{BrokerId, MetadataRequest, MetadataResponse, TopicName};
use kafka_protocol::protocol::StrBytes;

use super::topic_ids::{topic_id, topic_named};
use super::{KafkaContext, NODE_ID};

pub(super) fn answer(
    request: MetadataRequest,
    version: i16,
    context: &KafkaContext,
) -> MetadataResponse {
    let (host, port) = &context.advertised;
    let broker = MetadataResponseBroker::default()
        .with_node_id(BrokerId(NODE_ID))
        .with_host(StrBytes::from_string(host.clone()))
        .with_port(*port);
    // Version 0 asks for every topic with an empty list; later versions with null.
    let requested: Option<Vec<String>> = match request.topics {
        None => None,
        Some(topics) if topics.is_empty() && version == 0 => None,
        // From v10 a topic may be asked for by its id instead of its name.
        Some(topics) => Some(
            topics
                .into_iter()
                .filter_map(|t| match t.name {
                    Some(name) => Some(name.0.as_str().to_string()),
                    None => topic_named(&context.log, &context.cluster_id, t.topic_id),
                })
                .collect(),
        ),
    };
    let names = requested.unwrap_or_else(|| {
        context
            .log
            .topics()
            .iter()
            .map(|t| t.name.to_string())
            .collect()
    });
    let topics = names
        .into_iter()
        .map(|name| describe(&name, context))
        .collect();
    MetadataResponse::default()
        .with_brokers(vec![broker])
        .with_cluster_id(Some(StrBytes::from_string(context.cluster_id.clone())))
        .with_controller_id(BrokerId(NODE_ID))
        .with_topics(topics)
}

fn describe(name: &str, context: &KafkaContext) -> MetadataResponseTopic {
    let topic = MetadataResponseTopic::default()
        .with_name(Some(TopicName(StrBytes::from_string(name.to_string()))))
        .with_topic_id(topic_id(&context.cluster_id, name));
    let Ok(found) = context.log.topic(name) else {
        return topic.with_error_code(ResponseError::UnknownTopicOrPartition.code());
    };
    let partitions = (0..found.partition_count())
        .map(|id| {
            MetadataResponsePartition::default()
                .with_partition_index(id as i32)
                .with_leader_id(BrokerId(NODE_ID))
                .with_leader_epoch(0)
                .with_replica_nodes(vec![BrokerId(NODE_ID)])
                .with_isr_nodes(vec![BrokerId(NODE_ID)])
        })
        .collect();
    topic.with_partitions(partitions)
}
