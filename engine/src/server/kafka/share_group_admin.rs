//! Share groups as Kafka's admin tools see them (`kafka-share-groups.sh`, the Admin client's
//! `describeShareGroups`, `listShareGroupOffsets` and `listGroups`): ShareGroupDescribe (the
//! group's state and its Kafka members with their assignments), DescribeShareGroupOffsets
//! (each partition's start offset: every record before it is done) and the share groups that
//! ListGroups lists beside the classic ones.
//!
//! A share group exists when the engine has it ([`crate::queues`]: made by a fetch or a
//! configuration through either door) or when a Kafka member heartbeats into it. Members of the
//! HTTP door are not Kafka members and are not listed.

use std::collections::{BTreeMap, BTreeSet};

use kafka_protocol::ResponseError;
use kafka_protocol::messages::describe_share_group_offsets_request::{
    DescribeShareGroupOffsetsRequestGroup, DescribeShareGroupOffsetsRequestTopic,
};
use kafka_protocol::messages::describe_share_group_offsets_response::{
    DescribeShareGroupOffsetsResponseGroup, DescribeShareGroupOffsetsResponsePartition,
    DescribeShareGroupOffsetsResponseTopic,
};
use kafka_protocol::messages::share_group_describe_response::{
    Assignment, DescribedGroup, Member, TopicPartitions,
};
use kafka_protocol::messages::{
    DescribeShareGroupOffsetsRequest, DescribeShareGroupOffsetsResponse, ShareGroupDescribeRequest,
    ShareGroupDescribeResponse, TopicName,
};
use kafka_protocol::protocol::StrBytes;

use super::KafkaContext;
use super::share_groups::{MemberView, idle_limit};
use super::topic_ids::topic_id;

/// The assignor Kafka names for share groups (every member gets every partition here).
const ASSIGNOR: &str = "simple";
/// What `authorized_operations` says when the request did not ask for them.
const OPERATIONS_NOT_ASKED: i32 = i32::MIN;

fn text(s: &str) -> StrBytes {
    StrBytes::from_string(s.to_string())
}

/// A share group's state as Kafka names it.
fn state(members: &[MemberView]) -> &'static str {
    if members.is_empty() {
        "Empty"
    } else {
        "Stable"
    }
}

/// Whether `group` is a share group: the engine has it, or Kafka members are in it.
fn exists(group: &str, members: &[MemberView], context: &KafkaContext) -> bool {
    !members.is_empty() || context.shares.describe(group).is_ok()
}

pub(super) fn describe(
    request: ShareGroupDescribeRequest,
    context: &KafkaContext,
) -> ShareGroupDescribeResponse {
    let idle = idle_limit(context);
    let groups = request
        .group_ids
        .into_iter()
        .map(|id| {
            let name = id.0.as_str().to_string();
            let members = context.share_groups.members_of(&name, idle);
            let described = DescribedGroup::default()
                .with_group_id(id)
                .with_authorized_operations(OPERATIONS_NOT_ASKED);
            if !exists(&name, &members, context) {
                return described
                    .with_error_code(ResponseError::GroupIdNotFound.code())
                    .with_error_message(Some(text(&format!("Group {name} not found."))))
                    .with_group_state(text("Dead"));
            }
            let epoch = members.iter().map(|m| m.epoch).max().unwrap_or(0);
            described
                .with_group_state(text(state(&members)))
                .with_group_epoch(epoch)
                .with_assignment_epoch(epoch)
                .with_assignor_name(text(ASSIGNOR))
                .with_members(members.iter().map(|m| member(m, context)).collect())
        })
        .collect();
    ShareGroupDescribeResponse::default().with_groups(groups)
}

fn member(view: &MemberView, context: &KafkaContext) -> Member {
    let mut by_topic: Vec<(String, Vec<i32>)> = Vec::new();
    for (topic, partition) in &view.assigned {
        match by_topic.last_mut() {
            Some((last, partitions)) if last == topic => partitions.push(*partition as i32),
            _ => by_topic.push((topic.clone(), vec![*partition as i32])),
        }
    }
    let topic_partitions = by_topic
        .into_iter()
        .map(|(topic, partitions)| {
            TopicPartitions::default()
                .with_topic_id(topic_id(&context.cluster_id, &topic))
                .with_topic_name(TopicName(text(&topic)))
                .with_partitions(partitions)
        })
        .collect();
    Member::default()
        .with_member_id(text(&view.member_id))
        .with_member_epoch(view.epoch)
        .with_client_id(text(&view.client_id))
        .with_client_host(text(&view.client_host))
        .with_subscribed_topic_names(view.topics.iter().map(|t| TopicName(text(t))).collect())
        .with_assignment(Assignment::default().with_topic_partitions(topic_partitions))
}

pub(super) fn offsets(
    request: DescribeShareGroupOffsetsRequest,
    context: &KafkaContext,
) -> DescribeShareGroupOffsetsResponse {
    let groups = request
        .groups
        .into_iter()
        .map(|asked| group_offsets(asked, context))
        .collect();
    DescribeShareGroupOffsetsResponse::default().with_groups(groups)
}

/// Start offsets per (topic, partition) of the partitions a group has a window on.
type Starts = BTreeMap<(String, u32), u64>;

fn group_offsets(
    asked: DescribeShareGroupOffsetsRequestGroup,
    context: &KafkaContext,
) -> DescribeShareGroupOffsetsResponseGroup {
    let group = asked.group_id.0.as_str().to_string();
    let response = DescribeShareGroupOffsetsResponseGroup::default().with_group_id(asked.group_id);
    let Ok(described) = context.shares.describe(&group) else {
        return response
            .with_error_code(ResponseError::GroupIdNotFound.code())
            .with_error_message(Some(text(&format!("Group {group} not found."))));
    };
    let starts: Starts = described
        .partitions
        .iter()
        .map(|p| ((p.topic.clone(), p.partition), p.start_offset))
        .collect();
    let topics = wanted(asked.topics, &starts)
        .into_iter()
        .map(|(topic, partitions)| {
            let partitions = partitions
                .into_iter()
                .map(|partition| {
                    let start = starts.get(&(topic.clone(), partition));
                    DescribeShareGroupOffsetsResponsePartition::default()
                        .with_partition_index(partition as i32)
                        .with_start_offset(start.map_or(-1, |s| *s as i64))
                })
                .collect();
            DescribeShareGroupOffsetsResponseTopic::default()
                .with_topic_id(topic_id(&context.cluster_id, &topic))
                .with_topic_name(TopicName(text(&topic)))
                .with_partitions(partitions)
        })
        .collect();
    response.with_topics(topics)
}

/// The partitions asked for by topic, or, when none are named, every partition with a window.
fn wanted(
    topics: Option<Vec<DescribeShareGroupOffsetsRequestTopic>>,
    starts: &Starts,
) -> BTreeMap<String, Vec<u32>> {
    let mut wanted: BTreeMap<String, Vec<u32>> = BTreeMap::new();
    match topics {
        Some(topics) => {
            for topic in topics {
                let partitions = topic.partitions.iter().map(|p| *p as u32);
                wanted
                    .entry(topic.topic_name.0.as_str().to_string())
                    .or_default()
                    .extend(partitions);
            }
        }
        None => {
            for (topic, partition) in starts.keys() {
                wanted.entry(topic.clone()).or_default().push(*partition);
            }
        }
    }
    wanted
}

/// Every share group as ListGroups lists it: (name, state).
pub(super) fn listed(context: &KafkaContext) -> Vec<(String, &'static str)> {
    let idle = idle_limit(context);
    let mut names: BTreeSet<String> = context.shares.list().into_iter().collect();
    names.extend(context.share_groups.groups_with_members(idle));
    names
        .into_iter()
        .map(|name| {
            let members = context.share_groups.members_of(&name, idle);
            (name, state(&members))
        })
        .collect()
}
