//! Share groups through the Kafka protocol (KIP-932), for `KafkaShareConsumer` of the Java
//! client 4.x: ShareGroupHeartbeat (membership; every member is assigned every partition of
//! the topics it subscribes to), ShareFetch (acknowledgements, then records with their
//! acquired ranges) and ShareAcknowledge, over the same share groups as the HTTP door
//! ([`crate::queues`]).
//!
//! A share session per (group, member) carries the partitions a member fetches and an epoch
//! that ShareFetch and ShareAcknowledge share: 0 opens it, each request then names the next
//! epoch, -1 closes it and releases the member's locks. A session is carried by the
//! connection that last used it, and closed the same way when that connection ends
//! ([`ConnectionShares`]). Sessions and members are bounded ([`MAX_SESSIONS`],
//! [`MAX_MEMBERS`]) and forgotten after the session timeout.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use bytes::Bytes;
use kafka_protocol::ResponseError;
use kafka_protocol::messages::share_acknowledge_response::{
    self as ack_response, ShareAcknowledgeTopicResponse,
};
use kafka_protocol::messages::share_fetch_response::{
    AcquiredRecords, PartitionData, ShareFetchableTopicResponse,
};
use kafka_protocol::messages::share_group_heartbeat_response::{Assignment, TopicPartitions};
use kafka_protocol::messages::{
    ShareAcknowledgeRequest, ShareAcknowledgeResponse, ShareFetchRequest, ShareFetchResponse,
    ShareGroupHeartbeatRequest, ShareGroupHeartbeatResponse,
};
use kafka_protocol::protocol::StrBytes;
use parking_lot::Mutex;
use uuid::Uuid;

use super::KafkaContext;
use super::group_apis::Caller;
use super::records::encode_fetched;
use super::topic_ids::{topic_id, topic_named};
use crate::queues::{AckKind, Acknowledgement, Delivery, FetchRequest};

/// Sessions held at once (Kafka's group.share.max.share.sessions is 2000).
const MAX_SESSIONS: usize = 2_000;
/// Members known at once, over every share group.
const MAX_MEMBERS: usize = 10_000;
/// Kafka's member ids are 22 characters; it refuses more than 36.
const MAX_MEMBER_ID_CHARS: usize = 36;
/// What a member is told: heartbeat this often (Kafka's default).
const HEARTBEAT_INTERVAL_MS: i32 = 5_000;
/// Records one fetch acquires when the request names no limit.
const DEFAULT_MAX_RECORDS: usize = 500;
/// Offsets one acknowledgement batch may span.
const MAX_BATCH_OFFSETS: i64 = 100_000;

struct Member {
    epoch: i32,
    topics: Vec<String>,
    assigned: BTreeSet<(String, u32)>,
    last_seen: Instant,
    /// Who it is, as its last heartbeat said (ShareGroupDescribe tells it).
    client_id: String,
    client_host: String,
}

/// A member as ShareGroupDescribe tells of it.
pub(super) struct MemberView {
    pub member_id: String,
    pub epoch: i32,
    pub client_id: String,
    pub client_host: String,
    pub topics: Vec<String>,
    pub assigned: BTreeSet<(String, u32)>,
}

struct Session {
    /// The epoch the next request must carry.
    epoch: i32,
    partitions: BTreeSet<(String, u32)>,
    last_seen: Instant,
    /// The connection that carried its last request ([`ConnectionShares::id`]).
    connection: u64,
}

/// The members and sessions of share groups at the Kafka door.
#[derive(Default)]
pub(crate) struct KafkaShareGroups {
    members: Mutex<BTreeMap<(String, String), Member>>,
    sessions: Mutex<BTreeMap<(String, String), Session>>,
    /// Connections served so far: the last id given.
    connections: AtomicU64,
}

impl KafkaShareGroups {
    /// The members of `group` heard from within `idle`, by member id.
    pub(super) fn members_of(&self, group: &str, idle: Duration) -> Vec<MemberView> {
        let now = Instant::now();
        self.members
            .lock()
            .iter()
            .filter(|((g, _), m)| g == group && now.duration_since(m.last_seen) <= idle)
            .map(|((_, id), m)| MemberView {
                member_id: id.clone(),
                epoch: m.epoch,
                client_id: m.client_id.clone(),
                client_host: m.client_host.clone(),
                topics: m.topics.clone(),
                assigned: m.assigned.clone(),
            })
            .collect()
    }

    /// The groups with a member heard from within `idle`.
    pub(super) fn groups_with_members(&self, idle: Duration) -> BTreeSet<String> {
        let now = Instant::now();
        self.members
            .lock()
            .iter()
            .filter(|(_, m)| now.duration_since(m.last_seen) <= idle)
            .map(|((group, _), _)| group.clone())
            .collect()
    }

    /// What a new connection will carry.
    pub(super) fn connection(&self) -> ConnectionShares {
        ConnectionShares {
            id: self.connections.fetch_add(1, Ordering::Relaxed) + 1,
            carried: BTreeSet::new(),
        }
    }
}

/// The share sessions one connection carried. When it ends, each one no other connection has
/// carried since is closed and its member's locks are released, as Kafka does since 4.1
/// (KAFKA-19015): a consumer that crashed gives its records back at once instead of when
/// their locks run out. Bounded by [`MAX_SESSIONS`]; past it a session just times out.
#[derive(Default)]
pub(super) struct ConnectionShares {
    id: u64,
    carried: BTreeSet<(String, String)>,
}

impl ConnectionShares {
    fn carry(&mut self, key: &(String, String)) {
        if self.carried.len() < MAX_SESSIONS {
            self.carried.insert(key.clone());
        }
    }
}

/// Closes the sessions `shares` still carries and releases their members' locks.
pub(super) async fn connection_closed(shares: ConnectionShares, context: &KafkaContext) {
    for key in shares.carried {
        let ours = {
            let mut sessions = context.share_groups.sessions.lock();
            let ours = sessions
                .get(&key)
                .is_some_and(|s| s.connection == shares.id);
            if ours {
                sessions.remove(&key);
            }
            ours
        };
        if ours && let Err(error) = context.shares.leave(&key.0, &key.1).await {
            tracing::warn!(%error, group = %key.0, "kafka: releasing a closed connection's locks failed");
        }
    }
}

fn text(s: &str) -> StrBytes {
    StrBytes::from_string(s.to_string())
}

pub(super) fn idle_limit(context: &KafkaContext) -> Duration {
    Duration::from_millis(context.shares.limits().session_timeout_ms)
}

/// The partitions of `topics` that exist, as (topic, partition).
fn partitions_of(topics: &[String], context: &KafkaContext) -> BTreeSet<(String, u32)> {
    topics
        .iter()
        .filter_map(|name| context.log.topic(name).ok())
        .flat_map(|topic| {
            let name = topic.name.to_string();
            (0..topic.partition_count()).map(move |p| (name.clone(), p))
        })
        .collect()
}

fn assignment(assigned: &BTreeSet<(String, u32)>, context: &KafkaContext) -> Assignment {
    let mut by_topic: BTreeMap<&str, Vec<i32>> = BTreeMap::new();
    for (topic, partition) in assigned {
        by_topic.entry(topic).or_default().push(*partition as i32);
    }
    let topic_partitions = by_topic
        .into_iter()
        .map(|(topic, partitions)| {
            TopicPartitions::default()
                .with_topic_id(topic_id(&context.cluster_id, topic))
                .with_partitions(partitions)
        })
        .collect();
    Assignment::default().with_topic_partitions(topic_partitions)
}

pub(super) async fn heartbeat(
    request: ShareGroupHeartbeatRequest,
    caller: &Caller,
    context: &KafkaContext,
) -> ShareGroupHeartbeatResponse {
    let group = request.group_id.0.as_str().to_string();
    let member = request.member_id.as_str().to_string();
    let refuse = |error: ResponseError, message: &str| {
        ShareGroupHeartbeatResponse::default()
            .with_error_code(error.code())
            .with_error_message(Some(text(message)))
            .with_member_id(Some(text(&member)))
    };
    if member.is_empty() || member.chars().count() > MAX_MEMBER_ID_CHARS {
        return refuse(
            ResponseError::InvalidRequest,
            "member id of 1 to 36 characters",
        );
    }
    if request.member_epoch == -1 {
        context
            .share_groups
            .members
            .lock()
            .remove(&(group.clone(), member.clone()));
        // Leaving releases what it holds at once, for the other members.
        if let Err(error) = context.shares.leave(&group, &member).await {
            tracing::debug!(%error, %group, "kafka: a share-group member left an unknown group");
        }
        return ShareGroupHeartbeatResponse::default()
            .with_member_id(Some(text(&member)))
            .with_member_epoch(-1);
    }
    let subscribed: Option<Vec<String>> = request.subscribed_topic_names.map(|names| {
        names
            .into_iter()
            .map(|n| n.0.as_str().to_string())
            .collect()
    });
    let now = Instant::now();
    let mut members = context.share_groups.members.lock();
    let limit = idle_limit(context);
    members.retain(|_, m| now.duration_since(m.last_seen) <= limit);
    let key = (group.clone(), member.clone());
    if !members.contains_key(&key) {
        if request.member_epoch != 0 {
            return refuse(ResponseError::UnknownMemberId, "join again with epoch 0");
        }
        let Some(topics) = subscribed.clone().filter(|t| !t.is_empty()) else {
            return refuse(ResponseError::InvalidRequest, "a join names its topics");
        };
        if members.len() >= MAX_MEMBERS {
            return refuse(
                ResponseError::GroupMaxSizeReached,
                "too many share-group members",
            );
        }
        members.insert(
            key.clone(),
            Member {
                epoch: 1,
                topics,
                assigned: BTreeSet::new(),
                last_seen: now,
                client_id: String::new(),
                client_host: String::new(),
            },
        );
    }
    let member_state = members.get_mut(&key).expect("inserted above");
    if request.member_epoch != 0 && request.member_epoch != member_state.epoch {
        return refuse(ResponseError::FencedMemberEpoch, "join again with epoch 0");
    }
    member_state.last_seen = now;
    member_state.client_id.clone_from(&caller.client_id);
    member_state.client_host.clone_from(&caller.host);
    let full = request.member_epoch == 0 || subscribed.is_some();
    if let Some(topics) = subscribed.filter(|t| !t.is_empty()) {
        member_state.topics = topics;
    }
    let assigned = partitions_of(&member_state.topics, context);
    let changed = assigned != member_state.assigned;
    if changed && request.member_epoch != 0 {
        member_state.epoch += 1;
    }
    member_state.assigned = assigned;
    let response = ShareGroupHeartbeatResponse::default()
        .with_member_id(Some(text(&member)))
        .with_member_epoch(member_state.epoch)
        .with_heartbeat_interval_ms(HEARTBEAT_INTERVAL_MS);
    if full || changed {
        return response.with_assignment(Some(assignment(&member_state.assigned, context)));
    }
    response
}

/// Where a session stands after a request's epoch was checked.
enum Opened {
    /// Answer with this top-level error.
    Refused(ResponseError),
    /// The session goes on; fetch from these partitions.
    Open(BTreeSet<(String, u32)>),
    /// The session was closed: apply acknowledgements, release the rest, fetch nothing.
    Closed,
}

/// Checks `epoch` against the session of (group, member) and moves it on.
fn advance_session(
    context: &KafkaContext,
    shares: &mut ConnectionShares,
    key: &(String, String),
    epoch: i32,
    added: &[(String, u32)],
    forgotten: &[(String, u32)],
    opens: bool,
) -> Opened {
    let now = Instant::now();
    let mut sessions = context.share_groups.sessions.lock();
    let limit = idle_limit(context);
    sessions.retain(|_, s| now.duration_since(s.last_seen) <= limit);
    if epoch == 0 {
        if !opens {
            return Opened::Refused(ResponseError::InvalidShareSessionEpoch);
        }
        if !sessions.contains_key(key) && sessions.len() >= MAX_SESSIONS {
            return Opened::Refused(ResponseError::ShareSessionLimitReached);
        }
        let partitions: BTreeSet<(String, u32)> = added.iter().cloned().collect();
        sessions.insert(
            key.clone(),
            Session {
                epoch: 1,
                partitions: partitions.clone(),
                last_seen: now,
                connection: shares.id,
            },
        );
        shares.carry(key);
        return Opened::Open(partitions);
    }
    let Some(session) = sessions.get_mut(key) else {
        return Opened::Refused(ResponseError::ShareSessionNotFound);
    };
    if epoch == -1 {
        sessions.remove(key);
        return Opened::Closed;
    }
    if epoch != session.epoch {
        return Opened::Refused(ResponseError::InvalidShareSessionEpoch);
    }
    session.epoch = if epoch == i32::MAX { 1 } else { epoch + 1 };
    session.last_seen = now;
    session.connection = shares.id;
    shares.carry(key);
    session.partitions.extend(added.iter().cloned());
    for gone in forgotten {
        session.partitions.remove(gone);
    }
    Opened::Open(session.partitions.clone())
}

/// One partition's acknowledgement batches, as (first, last, types).
type Batches = Vec<(i64, i64, Vec<i8>)>;

/// Turns acknowledgement batches into acknowledgements; None if a batch is malformed.
fn acknowledgements(
    topic: &str,
    partition: u32,
    batches: &Batches,
) -> Option<Vec<Acknowledgement>> {
    let mut out: Vec<Acknowledgement> = Vec::new();
    let mut previous_last = -1i64;
    for (first, last, types) in batches {
        let span = last.checked_sub(*first)?.checked_add(1)?;
        let ordered = *first > previous_last;
        let sized = types.len() == 1 || types.len() as i64 == span;
        if *first < 0 || !(1..=MAX_BATCH_OFFSETS).contains(&span) || !ordered || !sized {
            return None;
        }
        previous_last = *last;
        for (i, offset) in (*first..=*last).enumerate() {
            let offset = offset as u64;
            let kind = match types[if types.len() == 1 { 0 } else { i }] {
                // A gap: no record at that offset (a log of Sluice has none): done with it.
                0 | 1 => AckKind::Accept,
                2 => AckKind::Release {
                    delay: Duration::ZERO,
                },
                3 => AckKind::Reject {
                    reason: "rejected by a Kafka share consumer".into(),
                },
                _ => return None,
            };
            match out.last_mut() {
                Some(run) if run.last + 1 == offset && run.kind == kind => run.last = offset,
                _ => out.push(Acknowledgement {
                    topic: topic.to_string(),
                    partition,
                    first: offset,
                    last: offset,
                    kind,
                }),
            }
        }
    }
    Some(out)
}

/// Applies each partition's acknowledgements; returns each partition's error code.
async fn acknowledge(
    context: &KafkaContext,
    group: &str,
    member: &str,
    acks: BTreeMap<(String, u32), Batches>,
) -> BTreeMap<(String, u32), i16> {
    let mut codes = BTreeMap::new();
    let mut all = Vec::new();
    for ((topic, partition), batches) in &acks {
        match acknowledgements(topic, *partition, batches) {
            Some(list) => all.extend(list),
            None => {
                codes.insert(
                    (topic.clone(), *partition),
                    ResponseError::InvalidRequest.code(),
                );
            }
        }
    }
    for key in acks.keys() {
        codes.entry(key.clone()).or_insert(0);
    }
    if all.is_empty() {
        return codes;
    }
    match context.shares.acknowledge(group, member, all).await {
        Ok(refused) => {
            for r in refused {
                codes.insert(
                    (r.topic, r.partition),
                    ResponseError::InvalidRecordState.code(),
                );
            }
        }
        Err(error) => {
            tracing::warn!(%error, %group, "kafka: share acknowledgements failed");
            for code in codes.values_mut() {
                *code = ResponseError::InvalidRecordState.code();
            }
        }
    }
    codes
}

/// Partitions named by topic: those of known topics, and those of unknown topic ids.
type Named = (Vec<(String, u32)>, Vec<(Uuid, i32)>);

/// The (topic, partition)s a request names by topic id; unknown ids are listed apart.
fn named<'a>(context: &KafkaContext, ids: impl Iterator<Item = (Uuid, &'a [i32])>) -> Named {
    let (mut known, mut unknown) = (Vec::new(), Vec::new());
    for (id, partitions) in ids {
        match topic_named(&context.log, &context.cluster_id, id) {
            Some(name) => known.extend(partitions.iter().map(|p| (name.clone(), *p as u32))),
            None => unknown.extend(partitions.iter().map(|p| (id, *p))),
        }
    }
    (known, unknown)
}

/// The (group, member) a share request comes from; None if either is missing or empty.
fn caller(
    group: Option<kafka_protocol::messages::GroupId>,
    member: Option<StrBytes>,
) -> Option<(String, String)> {
    let group = group.map(|g| g.0.as_str().to_string())?;
    let member = member.map(|m| m.as_str().to_string())?;
    (!group.is_empty() && !member.is_empty()).then_some((group, member))
}

pub(super) async fn fetch(
    request: ShareFetchRequest,
    shares: &mut ConnectionShares,
    context: &KafkaContext,
) -> ShareFetchResponse {
    let refuse = |error: ResponseError| ShareFetchResponse::default().with_error_code(error.code());
    let Some((group, member)) = caller(request.group_id, request.member_id) else {
        return refuse(ResponseError::InvalidRequest);
    };
    let mut acks: BTreeMap<(String, u32), Batches> = BTreeMap::new();
    let mut unknown = Vec::new();
    let mut added = Vec::new();
    for topic in &request.topics {
        let partitions: Vec<i32> = topic.partitions.iter().map(|p| p.partition_index).collect();
        let (known, missing) = named(context, std::iter::once((topic.topic_id, &partitions[..])));
        unknown.extend(missing);
        for (key, partition) in known.into_iter().zip(&topic.partitions) {
            let batches: Batches = partition
                .acknowledgement_batches
                .iter()
                .map(|b| (b.first_offset, b.last_offset, b.acknowledge_types.clone()))
                .collect();
            if !batches.is_empty() {
                acks.insert(key.clone(), batches);
            }
            added.push(key);
        }
    }
    let forgotten_ids = request
        .forgotten_topics_data
        .iter()
        .map(|t| (t.topic_id, &t.partitions[..]));
    let (forgotten, _) = named(context, forgotten_ids);
    if request.share_session_epoch == 0 && !acks.is_empty() {
        return refuse(ResponseError::InvalidRequest);
    }
    let key = (group.clone(), member.clone());
    let opened = advance_session(
        context,
        shares,
        &key,
        request.share_session_epoch,
        &added,
        &forgotten,
        true,
    );
    let closed = matches!(opened, Opened::Closed);
    let partitions = match opened {
        Opened::Refused(error) => return refuse(error),
        Opened::Open(partitions) => partitions,
        Opened::Closed => BTreeSet::new(),
    };
    let ack_codes = acknowledge(context, &group, &member, acks).await;
    if closed {
        let _ = context.shares.leave(&group, &member).await;
    }
    let wait = Duration::from_millis((request.max_wait_ms.max(0) as u64).min(context.max_wait_ms));
    let max_records = match request.max_records {
        n if n > 0 => n as usize,
        _ => DEFAULT_MAX_RECORDS,
    };
    let deliveries = if closed {
        Vec::new()
    } else {
        fetch_records(context, &group, &member, &partitions, max_records, wait).await
    };
    let lock_ms = context
        .shares
        .describe(&group)
        .map_or(0, |d| d.settings.record_lock_ms.min(i32::MAX as u64) as i32);
    let mut by_partition: BTreeMap<(String, u32), PartitionData> = BTreeMap::new();
    for ((topic, partition), code) in ack_codes {
        by_partition.insert(
            (topic, partition),
            PartitionData::default()
                .with_partition_index(partition as i32)
                .with_acknowledge_error_code(code)
                .with_records(Some(Bytes::new())),
        );
    }
    for ((topic, partition), delivered) in group_by_partition(deliveries) {
        let data = by_partition
            .entry((topic.clone(), partition))
            .or_insert_with(|| PartitionData::default().with_partition_index(partition as i32));
        *data = std::mem::take(data)
            .with_records(Some(records_of(context, &topic, partition, &delivered)))
            .with_acquired_records(acquired_ranges(&delivered));
    }
    let mut responses: Vec<ShareFetchableTopicResponse> = Vec::new();
    for ((topic, _), data) in by_partition {
        let id = topic_id(&context.cluster_id, &topic);
        match responses.iter_mut().find(|t| t.topic_id == id) {
            Some(t) => t.partitions.push(data),
            None => responses.push(
                ShareFetchableTopicResponse::default()
                    .with_topic_id(id)
                    .with_partitions(vec![data]),
            ),
        }
    }
    for (id, partition) in unknown {
        responses.push(
            ShareFetchableTopicResponse::default()
                .with_topic_id(id)
                .with_partitions(vec![
                    PartitionData::default()
                        .with_partition_index(partition)
                        .with_error_code(ResponseError::UnknownTopicId.code())
                        .with_records(Some(Bytes::new())),
                ]),
        );
    }
    ShareFetchResponse::default()
        .with_acquisition_lock_timeout_ms(lock_ms)
        .with_responses(responses)
}

/// Acquires records from the session's partitions: each topic without waiting, then, if
/// none had any, waiting on the first topic up to `wait`.
async fn fetch_records(
    context: &KafkaContext,
    group: &str,
    member: &str,
    partitions: &BTreeSet<(String, u32)>,
    max_records: usize,
    wait: Duration,
) -> Vec<Delivery> {
    let mut by_topic: BTreeMap<&str, Vec<u32>> = BTreeMap::new();
    for (topic, partition) in partitions {
        by_topic.entry(topic).or_default().push(*partition);
    }
    let mut delivered = Vec::new();
    for pass_wait in [Duration::ZERO, wait] {
        for (topic, ids) in &by_topic {
            let left = max_records.saturating_sub(delivered.len());
            if left == 0 {
                return delivered;
            }
            let request = FetchRequest {
                member: member.to_string(),
                topic: topic.to_string(),
                partitions: Some(ids.clone()),
                max_records: left,
                lock: None,
                wait: pass_wait,
                decode: false,
            };
            match context.shares.fetch(group, request).await {
                Ok(records) => delivered.extend(records),
                Err(error) => tracing::warn!(%error, %group, %topic, "kafka: a share fetch failed"),
            }
            if !pass_wait.is_zero() {
                break;
            }
        }
        if !delivered.is_empty() || wait.is_zero() {
            break;
        }
    }
    delivered
}

fn group_by_partition(deliveries: Vec<Delivery>) -> BTreeMap<(String, u32), Vec<Delivery>> {
    let mut grouped: BTreeMap<(String, u32), Vec<Delivery>> = BTreeMap::new();
    for delivery in deliveries {
        grouped
            .entry((delivery.topic.clone(), delivery.partition))
            .or_default()
            .push(delivery);
    }
    for list in grouped.values_mut() {
        list.sort_by_key(|d| d.offset);
    }
    grouped
}

/// Runs of consecutive offsets with the same delivery count, as Kafka's AcquiredRecords.
fn acquired_ranges(delivered: &[Delivery]) -> Vec<AcquiredRecords> {
    crate::queues::acquired_ranges(delivered.iter().map(|d| (d.offset, d.deliveries)))
        .into_iter()
        .map(|(first, last, count)| {
            AcquiredRecords::default()
                .with_first_offset(first as i64)
                .with_last_offset(last as i64)
                .with_delivery_count(count.min(i16::MAX as u16) as i16)
        })
        .collect()
}

/// The stored batches from the first acquired record to the last, as Kafka batches: the
/// client keeps the acquired records and skips the others, as with Kafka's own broker.
fn records_of(
    context: &KafkaContext,
    topic: &str,
    partition: u32,
    delivered: &[Delivery],
) -> Bytes {
    let (Some(first), Some(last)) = (delivered.first(), delivered.last()) else {
        return Bytes::new();
    };
    let Ok(log_partition) = context
        .log
        .topic(topic)
        .and_then(|t| t.partition(partition))
    else {
        return Bytes::new();
    };
    let data = match crate::queues::read_batches(&log_partition, first.offset, last.offset) {
        Ok(data) => data,
        Err(error) => {
            tracing::warn!(%error, %topic, "kafka: a share fetch's batches were not read");
            return Bytes::new();
        }
    };
    encode_fetched(&data, first.offset).unwrap_or_else(|error| {
        tracing::error!(%error, %topic, "kafka: a stored batch does not decode");
        Bytes::new()
    })
}

pub(super) async fn acknowledge_request(
    request: ShareAcknowledgeRequest,
    shares: &mut ConnectionShares,
    context: &KafkaContext,
) -> ShareAcknowledgeResponse {
    let refuse =
        |error: ResponseError| ShareAcknowledgeResponse::default().with_error_code(error.code());
    let Some((group, member)) = caller(request.group_id, request.member_id) else {
        return refuse(ResponseError::InvalidRequest);
    };
    let mut acks: BTreeMap<(String, u32), Batches> = BTreeMap::new();
    let mut unknown = Vec::new();
    for topic in &request.topics {
        let partitions: Vec<i32> = topic.partitions.iter().map(|p| p.partition_index).collect();
        let (known, missing) = named(context, std::iter::once((topic.topic_id, &partitions[..])));
        unknown.extend(missing);
        for (key, partition) in known.into_iter().zip(&topic.partitions) {
            let batches = partition
                .acknowledgement_batches
                .iter()
                .map(|b| (b.first_offset, b.last_offset, b.acknowledge_types.clone()))
                .collect();
            acks.insert(key, batches);
        }
    }
    let key = (group.clone(), member.clone());
    let epoch = request.share_session_epoch;
    let opened = advance_session(context, shares, &key, epoch, &[], &[], false);
    if let Opened::Refused(error) = opened {
        return refuse(error);
    }
    let codes = acknowledge(context, &group, &member, acks).await;
    if matches!(opened, Opened::Closed) {
        let _ = context.shares.leave(&group, &member).await;
    }
    let mut responses: Vec<ShareAcknowledgeTopicResponse> = Vec::new();
    let unknown_codes = unknown
        .into_iter()
        .map(|(id, p)| (id, p, ResponseError::UnknownTopicId.code()));
    let known_codes = codes.into_iter().map(|((topic, partition), code)| {
        (
            topic_id(&context.cluster_id, &topic),
            partition as i32,
            code,
        )
    });
    for (id, partition, code) in known_codes.chain(unknown_codes) {
        let data = ack_response::PartitionData::default()
            .with_partition_index(partition)
            .with_error_code(code);
        match responses.iter_mut().find(|t| t.topic_id == id) {
            Some(t) => t.partitions.push(data),
            None => responses.push(
                ShareAcknowledgeTopicResponse::default()
                    .with_topic_id(id)
                    .with_partitions(vec![data]),
            ),
        }
    }
    ShareAcknowledgeResponse::default().with_responses(responses)
}
