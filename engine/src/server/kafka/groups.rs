//! Consumer groups of the Kafka protocol (the classic protocol: JoinGroup, SyncGroup,
//! Heartbeat, LeaveGroup), in memory as Kafka's are between restarts, with their committed
//! offsets in the engine's offset store: the same offsets `sluice group describe` shows and
//! HTTP consumers of the group resume from.
//!
//! A rebalance: a join (of a new member, or a known one) opens a round; the round completes
//! when every member has joined it, or when the longest rebalance timeout passes (members
//! that did not join are dropped). The first member becomes the leader, which the round's
//! answer gives every member's subscription; it assigns the partitions and hands the
//! assignment over in SyncGroup, which answers each member with its own. Heartbeats tell
//! members of a new round (REBALANCE_IN_PROGRESS). A member whose session times out is
//! dropped when the group is next looked at, which opens a round.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use kafka_protocol::ResponseError;
use parking_lot::Mutex;
use tokio::sync::Notify;

/// Groups kept at most (each is small; a client making up group ids cannot grow this
/// without bound).
const GROUPS_MAX: usize = 100_000;
/// Longest a JoinGroup or SyncGroup waits for the round, whatever the client asks.
const REBALANCE_WAIT_MAX: Duration = Duration::from_secs(300);

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    Empty,
    /// A round is open: members are (re)joining.
    PreparingRebalance,
    /// The round completed; the leader's assignment is awaited.
    CompletingRebalance,
    Stable,
}

struct Member {
    client_id: String,
    client_host: String,
    group_instance_id: Option<String>,
    session_timeout: Duration,
    rebalance_timeout: Duration,
    protocols: Vec<(String, Bytes)>,
    last_seen: Instant,
    /// Joined the open round.
    joined: bool,
    assignment: Bytes,
}

struct Group {
    state: State,
    generation: i32,
    protocol_type: Option<String>,
    protocol: Option<String>,
    leader: Option<String>,
    members: BTreeMap<String, Member>,
    round_deadline: Option<Instant>,
    changed: Arc<Notify>,
}

impl Group {
    fn new() -> Group {
        Group {
            state: State::Empty,
            generation: 0,
            protocol_type: None,
            protocol: None,
            leader: None,
            members: BTreeMap::new(),
            round_deadline: None,
            changed: Arc::new(Notify::new()),
        }
    }

    /// Opens a round (if none is open): every member must join again.
    fn open_round(&mut self) {
        if self.state == State::PreparingRebalance {
            return;
        }
        self.state = State::PreparingRebalance;
        for member in self.members.values_mut() {
            member.joined = false;
        }
        let longest = self
            .members
            .values()
            .map(|m| m.rebalance_timeout)
            .max()
            .unwrap_or_default()
            .min(REBALANCE_WAIT_MAX);
        self.round_deadline = Some(Instant::now() + longest);
        self.changed.notify_waiters();
    }

    /// Drops members whose session timed out (not those waiting in a round: their join
    /// or sync is their heartbeat); opens a round when any was dropped.
    fn expire(&mut self, now: Instant) {
        let before = self.members.len();
        self.members
            .retain(|_, m| m.joined || now.duration_since(m.last_seen) <= m.session_timeout);
        if self.members.len() < before {
            self.after_departure();
        }
    }

    fn after_departure(&mut self) {
        if self.members.is_empty() {
            self.state = State::Empty;
            self.generation += 1;
            self.leader = None;
            self.protocol = None;
            self.changed.notify_waiters();
        } else {
            self.open_round();
        }
    }

    /// Completes the open round when every member joined or its time is up.
    fn complete_round_if_due(&mut self, now: Instant) {
        if self.state != State::PreparingRebalance {
            return;
        }
        let all_joined = self.members.values().all(|m| m.joined);
        let timed_out = self.round_deadline.is_some_and(|d| now >= d);
        if !all_joined && !timed_out {
            return;
        }
        self.members.retain(|_, m| m.joined);
        self.generation += 1;
        if self.members.is_empty() {
            self.state = State::Empty;
            self.leader = None;
            self.protocol = None;
        } else {
            self.state = State::CompletingRebalance;
            if self
                .leader
                .as_ref()
                .is_none_or(|l| !self.members.contains_key(l))
            {
                self.leader = self.members.keys().next().cloned();
            }
            self.protocol = self.common_protocol();
            for member in self.members.values_mut() {
                member.assignment = Bytes::new();
            }
        }
        self.round_deadline = None;
        self.changed.notify_waiters();
    }

    /// The leader's first protocol that every member supports.
    fn common_protocol(&self) -> Option<String> {
        let leader = self.members.get(self.leader.as_ref()?)?;
        leader
            .protocols
            .iter()
            .map(|(name, _)| name)
            .find(|name| {
                self.members
                    .values()
                    .all(|m| m.protocols.iter().any(|(n, _)| n == *name))
            })
            .cloned()
    }
}

/// A member's view of a completed round: what JoinGroup answers.
pub(super) struct Joined {
    pub generation: i32,
    pub protocol_type: Option<String>,
    pub protocol: Option<String>,
    pub leader: String,
    pub member_id: String,
    /// For the leader: every member with its subscription (the chosen protocol's metadata).
    pub members: Vec<(String, Option<String>, Bytes)>,
}

/// What a join asks.
pub(super) struct JoinRequest {
    pub group_id: String,
    pub member_id: String,
    pub group_instance_id: Option<String>,
    pub client_id: String,
    pub client_host: String,
    pub session_timeout: Duration,
    pub rebalance_timeout: Duration,
    pub protocol_type: String,
    pub protocols: Vec<(String, Bytes)>,
}

/// A group and member as a member sees them in a listing.
pub(super) struct MemberView {
    pub member_id: String,
    pub group_instance_id: Option<String>,
    pub client_id: String,
    pub client_host: String,
    pub metadata: Bytes,
    pub assignment: Bytes,
}

pub(super) struct GroupView {
    pub state: &'static str,
    pub protocol_type: String,
    pub protocol: String,
    pub members: Vec<MemberView>,
}

#[derive(Default)]
pub(crate) struct KafkaGroups {
    groups: Mutex<BTreeMap<String, Group>>,
}

type Code = i16;

impl KafkaGroups {
    /// JoinGroup: joins (or rejoins) and waits for the round to complete.
    pub(super) async fn join(&self, request: JoinRequest) -> Result<Joined, Code> {
        let (group_id, member_id) = self.add_member(request.group_id.clone(), request)?;
        loop {
            let (changed, wait) = {
                let mut groups = self.groups.lock();
                let group = groups
                    .get_mut(&group_id)
                    .ok_or(ResponseError::UnknownMemberId.code())?;
                let now = Instant::now();
                group.complete_round_if_due(now);
                let Some(member) = group.members.get_mut(&member_id) else {
                    return Err(ResponseError::UnknownMemberId.code());
                };
                member.last_seen = now;
                if group.state != State::PreparingRebalance {
                    return Ok(joined(group, &member_id));
                }
                let wait = group
                    .round_deadline
                    .map_or(REBALANCE_WAIT_MAX, |d| d.saturating_duration_since(now));
                (group.changed.clone(), wait)
            };
            let notified = changed.notified();
            let _ = tokio::time::timeout(wait.max(Duration::from_millis(1)), notified).await;
        }
    }

    /// Adds or refreshes the member and opens a round; the group and member ids.
    fn add_member(&self, group_id: String, request: JoinRequest) -> Result<(String, String), Code> {
        let mut groups = self.groups.lock();
        if !groups.contains_key(&group_id) && groups.len() >= GROUPS_MAX {
            return Err(ResponseError::CoordinatorNotAvailable.code());
        }
        let group = groups.entry(group_id.clone()).or_insert_with(Group::new);
        let now = Instant::now();
        group.expire(now);
        if group
            .protocol_type
            .as_ref()
            .is_some_and(|t| !group.members.is_empty() && *t != request.protocol_type)
        {
            return Err(ResponseError::InconsistentGroupProtocol.code());
        }
        let member_id = if request.member_id.is_empty() {
            format!("{}-{:016x}", request.client_id, rand::random::<u64>())
        } else if group.members.contains_key(&request.member_id) {
            request.member_id.clone()
        } else {
            return Err(ResponseError::UnknownMemberId.code());
        };
        group.protocol_type = Some(request.protocol_type);
        group.open_round();
        group.members.insert(
            member_id.clone(),
            Member {
                client_id: request.client_id,
                client_host: request.client_host,
                group_instance_id: request.group_instance_id,
                session_timeout: request.session_timeout,
                rebalance_timeout: request.rebalance_timeout,
                protocols: request.protocols,
                last_seen: now,
                joined: true,
                assignment: Bytes::new(),
            },
        );
        group.changed.notify_waiters();
        Ok((group_id, member_id))
    }

    /// SyncGroup: the leader hands over the assignment; every member waits for its own.
    pub(super) async fn sync(
        &self,
        group_id: &str,
        member_id: &str,
        generation: i32,
        assignments: Vec<(String, Bytes)>,
    ) -> Result<(Option<String>, Option<String>, Bytes), Code> {
        let deadline = Instant::now() + REBALANCE_WAIT_MAX;
        let mut assignments = Some(assignments);
        loop {
            let changed = {
                let mut groups = self.groups.lock();
                let group = groups
                    .get_mut(group_id)
                    .ok_or(ResponseError::UnknownMemberId.code())?;
                let now = Instant::now();
                let Some(member) = group.members.get_mut(member_id) else {
                    return Err(ResponseError::UnknownMemberId.code());
                };
                member.last_seen = now;
                if generation != group.generation {
                    return Err(ResponseError::IllegalGeneration.code());
                }
                match group.state {
                    State::PreparingRebalance => {
                        return Err(ResponseError::RebalanceInProgress.code());
                    }
                    State::Stable => {
                        let assignment = group.members[member_id].assignment.clone();
                        return Ok((
                            group.protocol_type.clone(),
                            group.protocol.clone(),
                            assignment,
                        ));
                    }
                    State::Empty => return Err(ResponseError::UnknownMemberId.code()),
                    State::CompletingRebalance => {}
                }
                if group.leader.as_deref() == Some(member_id)
                    && let Some(given) = assignments.take()
                {
                    for (id, assignment) in given {
                        if let Some(member) = group.members.get_mut(&id) {
                            member.assignment = assignment;
                        }
                    }
                    group.state = State::Stable;
                    group.changed.notify_waiters();
                    continue;
                }
                group.changed.clone()
            };
            let wait = deadline.saturating_duration_since(Instant::now());
            if wait.is_zero() {
                return Err(ResponseError::RebalanceInProgress.code());
            }
            let _ = tokio::time::timeout(wait, changed.notified()).await;
        }
    }

    /// Heartbeat: the member's session goes on; a new round is REBALANCE_IN_PROGRESS.
    pub(super) fn heartbeat(&self, group_id: &str, member_id: &str, generation: i32) -> Code {
        let mut groups = self.groups.lock();
        let Some(group) = groups.get_mut(group_id) else {
            return ResponseError::UnknownMemberId.code();
        };
        let now = Instant::now();
        group.expire(now);
        group.complete_round_if_due(now);
        let Some(member) = group.members.get_mut(member_id) else {
            return ResponseError::UnknownMemberId.code();
        };
        member.last_seen = now;
        if group.state == State::PreparingRebalance {
            return ResponseError::RebalanceInProgress.code();
        }
        if generation != group.generation {
            return ResponseError::IllegalGeneration.code();
        }
        0
    }

    /// LeaveGroup: the member goes; the others rebalance.
    pub(super) fn leave(&self, group_id: &str, member_id: &str) -> Code {
        let mut groups = self.groups.lock();
        let Some(group) = groups.get_mut(group_id) else {
            return ResponseError::UnknownMemberId.code();
        };
        if group.members.remove(member_id).is_none() {
            return ResponseError::UnknownMemberId.code();
        }
        group.after_departure();
        0
    }

    /// Whether `member_id` of `generation` may commit: 0, or the error. A commit with no
    /// member (generation -1) is taken when the group has no members, as Kafka takes it.
    pub(super) fn may_commit(&self, group_id: &str, member_id: &str, generation: i32) -> Code {
        let mut groups = self.groups.lock();
        if !groups.contains_key(group_id) {
            // A commit from outside any membership (a consumer that assigns itself) makes the
            // group, empty, as Kafka does: it can then be listed and deleted.
            if !member_id.is_empty() {
                return ResponseError::UnknownMemberId.code();
            }
            if groups.len() >= GROUPS_MAX {
                return ResponseError::CoordinatorNotAvailable.code();
            }
            groups.insert(group_id.to_string(), Group::new());
        }
        let Some(group) = groups.get_mut(group_id) else {
            return ResponseError::UnknownMemberId.code();
        };
        group.expire(Instant::now());
        if member_id.is_empty() && generation < 0 {
            return if group.members.is_empty() {
                0
            } else {
                ResponseError::UnknownMemberId.code()
            };
        }
        let Some(member) = group.members.get_mut(member_id) else {
            return ResponseError::UnknownMemberId.code();
        };
        member.last_seen = Instant::now();
        if generation != group.generation {
            return ResponseError::IllegalGeneration.code();
        }
        // As Kafka: while a round gathers members, those of the current generation go on
        // consuming and committing (cooperative rebalancing depends on it); between the join
        // and the assignment the member does not know what it owns yet.
        if group.state == State::CompletingRebalance {
            return ResponseError::RebalanceInProgress.code();
        }
        0
    }

    /// The groups with members, and their protocol type.
    pub(super) fn list(&self) -> Vec<(String, String, &'static str)> {
        let mut groups = self.groups.lock();
        let now = Instant::now();
        groups
            .iter_mut()
            .map(|(id, group)| {
                group.expire(now);
                let kind = group.protocol_type.clone().unwrap_or_default();
                (id.clone(), kind, state_name(group.state))
            })
            .collect()
    }

    pub(super) fn describe(&self, group_id: &str) -> Option<GroupView> {
        let mut groups = self.groups.lock();
        let group = groups.get_mut(group_id)?;
        group.expire(Instant::now());
        let protocol = group.protocol.clone().unwrap_or_default();
        let members = group
            .members
            .iter()
            .map(|(id, m)| MemberView {
                member_id: id.clone(),
                group_instance_id: m.group_instance_id.clone(),
                client_id: m.client_id.clone(),
                client_host: m.client_host.clone(),
                metadata: m
                    .protocols
                    .iter()
                    .find(|(name, _)| *name == protocol)
                    .map(|(_, metadata)| metadata.clone())
                    .unwrap_or_default(),
                assignment: m.assignment.clone(),
            })
            .collect();
        Some(GroupView {
            state: state_name(group.state),
            protocol_type: group.protocol_type.clone().unwrap_or_default(),
            protocol,
            members,
        })
    }
}

impl KafkaGroups {
    /// Whether the group has members now.
    pub(super) fn has_members(&self, group_id: &str) -> bool {
        let mut groups = self.groups.lock();
        groups.get_mut(group_id).is_some_and(|group| {
            group.expire(Instant::now());
            !group.members.is_empty()
        })
    }

    /// Forgets an empty group: whether it was known, or NON_EMPTY_GROUP while it has members.
    pub(super) fn delete(&self, group_id: &str) -> Result<bool, Code> {
        let mut groups = self.groups.lock();
        let Some(group) = groups.get_mut(group_id) else {
            return Ok(false);
        };
        group.expire(Instant::now());
        if !group.members.is_empty() {
            return Err(ResponseError::NonEmptyGroup.code());
        }
        groups.remove(group_id);
        Ok(true)
    }
}

fn state_name(state: State) -> &'static str {
    match state {
        State::Empty => "Empty",
        State::PreparingRebalance => "PreparingRebalance",
        State::CompletingRebalance => "CompletingRebalance",
        State::Stable => "Stable",
    }
}

/// The answer to a member's join once its round completed.
fn joined(group: &Group, member_id: &str) -> Joined {
    let leader = group.leader.clone().unwrap_or_default();
    let protocol = group.protocol.clone();
    let members = if leader == member_id {
        group
            .members
            .iter()
            .map(|(id, m)| {
                let metadata = m
                    .protocols
                    .iter()
                    .find(|(name, _)| Some(name) == protocol.as_ref())
                    .map(|(_, metadata)| metadata.clone())
                    .unwrap_or_default();
                (id.clone(), m.group_instance_id.clone(), metadata)
            })
            .collect()
    } else {
        Vec::new()
    };
    Joined {
        generation: group.generation,
        protocol_type: group.protocol_type.clone(),
        protocol,
        leader,
        member_id: member_id.to_string(),
        members,
    }
}
