//! The group APIs of the Kafka protocol: FindCoordinator (this engine), JoinGroup, SyncGroup,
//! Heartbeat and LeaveGroup on [`super::groups::KafkaGroups`], OffsetCommit, OffsetFetch and
//! OffsetDelete on the engine's offset store, ListGroups, DescribeGroups and DeleteGroups.

use std::time::Duration;

use bytes::Bytes;
use kafka_protocol::ResponseError;
use kafka_protocol::messages::delete_groups_response::DeletableGroupResult;
use kafka_protocol::messages::describe_groups_response::{DescribedGroup, DescribedGroupMember};
use kafka_protocol::messages::find_coordinator_response::Coordinator as FoundCoordinator;
use kafka_protocol::messages::join_group_response::JoinGroupResponseMember;
use kafka_protocol::messages::leave_group_response::MemberResponse;
use kafka_protocol::messages::list_groups_response::ListedGroup;
use kafka_protocol::messages::offset_commit_response::{
    OffsetCommitResponsePartition, OffsetCommitResponseTopic,
};
use kafka_protocol::messages::offset_delete_response::{
    OffsetDeleteResponsePartition, OffsetDeleteResponseTopic,
};
use kafka_protocol::messages::offset_fetch_response::{
    OffsetFetchResponseGroup, OffsetFetchResponsePartition, OffsetFetchResponsePartitions,
    OffsetFetchResponseTopic, OffsetFetchResponseTopics,
};
use kafka_protocol::messages::*;
use kafka_protocol::protocol::StrBytes;

use super::groups::JoinRequest;
use super::{KafkaContext, NODE_ID};
use crate::groups::CommittedOffset;

/// Who sent a request.
pub(super) struct Caller {
    pub client_id: String,
    pub host: String,
}

fn text(value: &StrBytes) -> String {
    value.as_str().to_string()
}

fn bytes_text(value: String) -> StrBytes {
    StrBytes::from_string(value)
}

pub(super) fn find_coordinator(
    request: FindCoordinatorRequest,
    version: i16,
    context: &KafkaContext,
) -> FindCoordinatorResponse {
    let (host, port) = &context.advertised;
    // Version 4 and later ask for many keys at once and are answered per key; earlier ones
    // ask for one.
    if version < 4 {
        return FindCoordinatorResponse::default()
            .with_node_id(BrokerId(NODE_ID))
            .with_host(bytes_text(host.clone()))
            .with_port(*port);
    }
    let coordinators = request
        .coordinator_keys
        .iter()
        .map(|key| {
            FoundCoordinator::default()
                .with_key(key.clone())
                .with_node_id(BrokerId(NODE_ID))
                .with_host(bytes_text(host.clone()))
                .with_port(*port)
        })
        .collect();
    FindCoordinatorResponse::default().with_coordinators(coordinators)
}

pub(super) async fn join_group(
    request: JoinGroupRequest,
    caller: &Caller,
    context: &KafkaContext,
) -> JoinGroupResponse {
    let session = request.session_timeout_ms.max(0) as u64;
    // Version 0 has no rebalance timeout: it is the session timeout.
    let rebalance = match request.rebalance_timeout_ms {
        t if t > 0 => t as u64,
        _ => session,
    };
    let join = JoinRequest {
        group_id: text(&request.group_id.0),
        member_id: text(&request.member_id),
        group_instance_id: request.group_instance_id.as_ref().map(text),
        client_id: caller.client_id.clone(),
        client_host: caller.host.clone(),
        session_timeout: Duration::from_millis(session),
        rebalance_timeout: Duration::from_millis(rebalance),
        protocol_type: text(&request.protocol_type),
        protocols: request
            .protocols
            .iter()
            .map(|p| (text(&p.name), p.metadata.clone()))
            .collect(),
    };
    match context.kafka_groups.join(join).await {
        Ok(joined) => JoinGroupResponse::default()
            .with_generation_id(joined.generation)
            .with_protocol_type(joined.protocol_type.map(bytes_text))
            .with_protocol_name(joined.protocol.map(bytes_text))
            .with_leader(bytes_text(joined.leader))
            .with_member_id(bytes_text(joined.member_id))
            .with_members(
                joined
                    .members
                    .into_iter()
                    .map(|(id, instance, metadata)| {
                        JoinGroupResponseMember::default()
                            .with_member_id(bytes_text(id))
                            .with_group_instance_id(instance.map(bytes_text))
                            .with_metadata(metadata)
                    })
                    .collect(),
            ),
        Err(code) => JoinGroupResponse::default()
            .with_error_code(code)
            .with_generation_id(-1)
            .with_member_id(request.member_id),
    }
}

pub(super) async fn sync_group(
    request: SyncGroupRequest,
    context: &KafkaContext,
) -> SyncGroupResponse {
    let assignments: Vec<(String, Bytes)> = request
        .assignments
        .iter()
        .map(|a| (text(&a.member_id), a.assignment.clone()))
        .collect();
    let synced = context
        .kafka_groups
        .sync(
            request.group_id.0.as_str(),
            request.member_id.as_str(),
            request.generation_id,
            assignments,
        )
        .await;
    match synced {
        Ok((protocol_type, protocol, assignment)) => SyncGroupResponse::default()
            .with_protocol_type(protocol_type.map(bytes_text))
            .with_protocol_name(protocol.map(bytes_text))
            .with_assignment(assignment),
        Err(code) => SyncGroupResponse::default().with_error_code(code),
    }
}

pub(super) fn heartbeat(request: HeartbeatRequest, context: &KafkaContext) -> HeartbeatResponse {
    let code = context.kafka_groups.heartbeat(
        request.group_id.0.as_str(),
        request.member_id.as_str(),
        request.generation_id,
    );
    HeartbeatResponse::default().with_error_code(code)
}

pub(super) fn leave_group(
    request: LeaveGroupRequest,
    context: &KafkaContext,
) -> LeaveGroupResponse {
    let group = request.group_id.0.as_str();
    // Versions up to 2 name one member; 3 and later a list.
    if request.members.is_empty() {
        let code = context
            .kafka_groups
            .leave(group, request.member_id.as_str());
        return LeaveGroupResponse::default().with_error_code(code);
    }
    let members = request
        .members
        .iter()
        .map(|m| {
            let code = context.kafka_groups.leave(group, m.member_id.as_str());
            MemberResponse::default()
                .with_member_id(m.member_id.clone())
                .with_group_instance_id(m.group_instance_id.clone())
                .with_error_code(code)
        })
        .collect();
    LeaveGroupResponse::default().with_members(members)
}

pub(super) fn offset_commit(
    request: OffsetCommitRequest,
    context: &KafkaContext,
) -> OffsetCommitResponse {
    let group = request.group_id.0.as_str().to_string();
    let allowed = context.kafka_groups.may_commit(
        &group,
        request.member_id.as_str(),
        request.generation_id_or_member_epoch,
    );
    let topics = request
        .topics
        .into_iter()
        .map(|topic| {
            let partitions = topic
                .partitions
                .iter()
                .map(|p| {
                    let code = if allowed != 0 {
                        allowed
                    } else {
                        commit_one(
                            context,
                            &group,
                            &topic.name,
                            p.partition_index,
                            p.committed_offset,
                        )
                    };
                    OffsetCommitResponsePartition::default()
                        .with_partition_index(p.partition_index)
                        .with_error_code(code)
                })
                .collect();
            OffsetCommitResponseTopic::default()
                .with_name(topic.name)
                .with_partitions(partitions)
        })
        .collect();
    OffsetCommitResponse::default().with_topics(topics)
}

fn commit_one(
    context: &KafkaContext,
    group: &str,
    topic: &TopicName,
    partition: i32,
    offset: i64,
) -> i16 {
    let (Ok(partition), Ok(offset)) = (u32::try_from(partition), u64::try_from(offset)) else {
        return ResponseError::InvalidCommitOffsetSize.code();
    };
    let committed = CommittedOffset {
        topic: topic.0.as_str().to_string(),
        partition,
        offset,
    };
    match context.offsets.commit_from_kafka(group, &[committed]) {
        Ok(()) => 0,
        Err(crate::groups::GroupError::Log(error)) => super::error_code(&error),
        Err(error) => {
            tracing::error!(%error, group, "kafka: cannot commit offsets");
            ResponseError::UnknownServerError.code()
        }
    }
}

pub(super) fn offset_fetch(
    request: OffsetFetchRequest,
    version: i16,
    context: &KafkaContext,
) -> OffsetFetchResponse {
    if version < 8 {
        let wanted = request.topics.map(|topics| {
            topics
                .into_iter()
                .map(|t| (t.name, t.partition_indexes))
                .collect::<Vec<_>>()
        });
        let (topics, code) = fetch_offsets(request.group_id.0.as_str(), wanted, context);
        let topics = topics
            .into_iter()
            .map(|(name, partitions)| {
                OffsetFetchResponseTopic::default()
                    .with_name(name)
                    .with_partitions(
                        partitions
                            .into_iter()
                            .map(|(index, offset)| {
                                OffsetFetchResponsePartition::default()
                                    .with_partition_index(index)
                                    .with_committed_offset(offset)
                                    .with_committed_leader_epoch(-1)
                                    .with_metadata(Some(StrBytes::default()))
                            })
                            .collect(),
                    )
            })
            .collect();
        return OffsetFetchResponse::default()
            .with_topics(topics)
            .with_error_code(code);
    }
    let groups = request
        .groups
        .into_iter()
        .map(|group| {
            let wanted = group.topics.map(|topics| {
                topics
                    .into_iter()
                    .map(|t| (t.name, t.partition_indexes))
                    .collect::<Vec<_>>()
            });
            let (topics, code) = fetch_offsets(group.group_id.0.as_str(), wanted, context);
            let topics = topics
                .into_iter()
                .map(|(name, partitions)| {
                    OffsetFetchResponseTopics::default()
                        .with_name(name)
                        .with_partitions(
                            partitions
                                .into_iter()
                                .map(|(index, offset)| {
                                    OffsetFetchResponsePartitions::default()
                                        .with_partition_index(index)
                                        .with_committed_offset(offset)
                                        .with_committed_leader_epoch(-1)
                                        .with_metadata(Some(StrBytes::default()))
                                })
                                .collect(),
                        )
                })
                .collect();
            OffsetFetchResponseGroup::default()
                .with_group_id(group.group_id)
                .with_topics(topics)
                .with_error_code(code)
        })
        .collect();
    OffsetFetchResponse::default().with_groups(groups)
}

type FetchedOffsets = Vec<(TopicName, Vec<(i32, i64)>)>;

/// The committed offsets of the partitions asked for (all committed ones when None); -1 for
/// a partition with none.
fn fetch_offsets(
    group: &str,
    wanted: Option<Vec<(TopicName, Vec<i32>)>>,
    context: &KafkaContext,
) -> (FetchedOffsets, i16) {
    let committed = match context.offsets.committed(group) {
        Ok(committed) => committed,
        Err(error) => {
            tracing::error!(%error, group, "kafka: cannot read committed offsets");
            return (Vec::new(), ResponseError::UnknownServerError.code());
        }
    };
    let offset_of = |topic: &str, partition: i32| {
        committed
            .iter()
            .find(|c| c.topic == topic && i64::from(c.partition) == i64::from(partition))
            .map_or(-1, |c| c.offset as i64)
    };
    let wanted = wanted.unwrap_or_else(|| {
        let mut all: Vec<(TopicName, Vec<i32>)> = Vec::new();
        for c in &committed {
            let name = TopicName(bytes_text(c.topic.clone()));
            match all.iter_mut().find(|(n, _)| *n == name) {
                Some((_, partitions)) => partitions.push(c.partition as i32),
                None => all.push((name, vec![c.partition as i32])),
            }
        }
        all
    });
    let topics = wanted
        .into_iter()
        .map(|(name, partitions)| {
            let offsets = partitions
                .into_iter()
                .map(|p| (p, offset_of(name.0.as_str(), p)))
                .collect();
            (name, offsets)
        })
        .collect();
    (topics, 0)
}

/// ListGroups: every group is a classic one; the state (v4) and type (v5) filters apply.
pub(super) fn list_groups(
    request: ListGroupsRequest,
    context: &KafkaContext,
) -> ListGroupsResponse {
    let states = &request.states_filter;
    let types = &request.types_filter;
    let of_type =
        |kind: &str| types.is_empty() || types.iter().any(|t| t.eq_ignore_ascii_case(kind));
    let groups = context
        .kafka_groups
        .list()
        .into_iter()
        .filter(|(_, _, state)| {
            states.is_empty()
                || states
                    .iter()
                    .any(|s| s.as_str().eq_ignore_ascii_case(state.as_ref()))
        })
        .filter(|_| of_type("classic"))
        .map(|(id, protocol_type, state)| {
            ListedGroup::default()
                .with_group_id(GroupId(bytes_text(id)))
                .with_protocol_type(bytes_text(protocol_type))
                .with_group_state(bytes_text(state.to_string()))
                .with_group_type(bytes_text("classic".to_string()))
        });
    let share_groups = super::share_group_admin::listed(context)
        .into_iter()
        .filter(|(_, state)| {
            states.is_empty()
                || states
                    .iter()
                    .any(|s| s.as_str().eq_ignore_ascii_case(state))
        })
        .filter(|_| of_type("share"))
        .map(|(id, state)| {
            ListedGroup::default()
                .with_group_id(GroupId(bytes_text(id)))
                .with_protocol_type(bytes_text("share".to_string()))
                .with_group_state(bytes_text(state.to_string()))
                .with_group_type(bytes_text("share".to_string()))
        });
    ListGroupsResponse::default().with_groups(groups.chain(share_groups).collect())
}

pub(super) fn describe_groups(
    request: DescribeGroupsRequest,
    context: &KafkaContext,
) -> DescribeGroupsResponse {
    let groups = request
        .groups
        .into_iter()
        .map(|id| {
            let described = DescribedGroup::default().with_group_id(id.clone());
            let Some(view) = context.kafka_groups.describe(id.0.as_str()) else {
                return described.with_group_state(bytes_text("Dead".to_string()));
            };
            let members = view
                .members
                .into_iter()
                .map(|m| {
                    DescribedGroupMember::default()
                        .with_member_id(bytes_text(m.member_id))
                        .with_group_instance_id(m.group_instance_id.map(bytes_text))
                        .with_client_id(bytes_text(m.client_id))
                        .with_client_host(bytes_text(m.client_host))
                        .with_member_metadata(m.metadata)
                        .with_member_assignment(m.assignment)
                })
                .collect();
            described
                .with_group_state(bytes_text(view.state.to_string()))
                .with_protocol_type(bytes_text(view.protocol_type))
                .with_protocol_data(bytes_text(view.protocol))
                .with_members(members)
        })
        .collect();
    DescribeGroupsResponse::default().with_groups(groups)
}

/// DeleteGroups: an empty group and its committed offsets go.
pub(super) fn delete_groups(
    request: DeleteGroupsRequest,
    context: &KafkaContext,
) -> DeleteGroupsResponse {
    let results = request
        .groups_names
        .into_iter()
        .map(|id| {
            let name = id.0.as_str().to_string();
            let code = match context.kafka_groups.delete(&name) {
                Err(code) => code,
                Ok(known) => match context.offsets.committed(&name) {
                    Ok(committed) if committed.is_empty() && !known => {
                        ResponseError::GroupIdNotFound.code()
                    }
                    Ok(_) => offsets_deleted(context.offsets.delete_offsets(&name, None), &name),
                    Err(error) => offsets_deleted(Err(error), &name),
                },
            };
            DeletableGroupResult::default()
                .with_group_id(id)
                .with_error_code(code)
        })
        .collect();
    DeleteGroupsResponse::default().with_results(results)
}

/// OffsetDelete: committed offsets of partitions no member of the group consumes.
pub(super) fn offset_delete(
    request: OffsetDeleteRequest,
    context: &KafkaContext,
) -> OffsetDeleteResponse {
    let group = request.group_id.0.as_str().to_string();
    if context.kafka_groups.has_members(&group) {
        return OffsetDeleteResponse::default()
            .with_error_code(ResponseError::GroupSubscribedToTopic.code());
    }
    let doomed: Vec<crate::groups::TopicPartition> = request
        .topics
        .iter()
        .flat_map(|t| {
            t.partitions.iter().filter_map(|p| {
                Some(crate::groups::TopicPartition {
                    topic: t.name.0.as_str().to_string(),
                    partition: u32::try_from(p.partition_index).ok()?,
                })
            })
        })
        .collect();
    let code = offsets_deleted(
        context.offsets.delete_offsets(&group, Some(&doomed)),
        &group,
    );
    let topics = request
        .topics
        .into_iter()
        .map(|t| {
            let partitions = t
                .partitions
                .iter()
                .map(|p| {
                    OffsetDeleteResponsePartition::default()
                        .with_partition_index(p.partition_index)
                        .with_error_code(code)
                })
                .collect();
            OffsetDeleteResponseTopic::default()
                .with_name(t.name)
                .with_partitions(partitions)
        })
        .collect();
    OffsetDeleteResponse::default().with_topics(topics)
}

fn offsets_deleted(outcome: Result<(), crate::groups::GroupError>, group: &str) -> i16 {
    match outcome {
        Ok(()) => 0,
        Err(error) => {
            tracing::error!(%error, group, "kafka: cannot delete committed offsets");
            ResponseError::UnknownServerError.code()
        }
    }
}
