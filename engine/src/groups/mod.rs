//! Consumer groups for external consumers: membership with session timeouts, balanced
//! partition assignment, rebalancing, and committed offsets.
//!
//! Membership lives in memory (members re-join after an engine restart, as with Kafka);
//! committed offsets are durable in `groups.redb`. A commit is accepted only from a member of
//! the current generation that owns the partition, so a member that lost a partition in a
//! rebalance cannot move its offset: consumption is at-least-once.

use parking_lot::Mutex;
use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use redb::{Database, ReadableTable, TableDefinition};
use serde::{Deserialize, Serialize};

use crate::log::{Log, LogError};

/// (group, topic, partition) -> next offset to consume.
const OFFSETS: TableDefinition<(&str, &str, u32), u64> = TableDefinition::new("committed_offsets");

#[derive(Debug, thiserror::Error)]
pub enum GroupError {
    #[error(
        "member `{member}` is not in group `{group}` (its session expired or it left); join again"
    )]
    UnknownMember { group: String, member: String },
    #[error(
        "group `{group}` has rebalanced (generation {current}, yours {given}); heartbeat or join to get the new assignment"
    )]
    StaleGeneration {
        group: String,
        current: u64,
        given: u64,
    },
    #[error(
        "{topic}/{partition} is not assigned to member `{member}` of group `{group}`; it may commit only its own partitions"
    )]
    NotAssigned {
        group: String,
        member: String,
        topic: String,
        partition: u32,
    },
    #[error("group `{0}` has active members: commit as a member (with member_id and generation)")]
    MemberRequired(String),
    #[error("group `{0}` does not exist")]
    UnknownGroup(String),
    #[error("session_timeout_ms must be between {min} and {max}")]
    BadSessionTimeout { min: u64, max: u64 },
    #[error("group `{0}`: subscribe to at least one topic")]
    NoTopics(String),
    #[error(transparent)]
    Log(#[from] LogError),
    #[error("offset store error: {0}")]
    Store(#[source] Box<redb::Error>),
}

fn store_error(error: impl Into<redb::Error>) -> GroupError {
    GroupError::Store(Box::new(error.into()))
}

#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
pub struct TopicPartition {
    pub topic: String,
    pub partition: u32,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Membership {
    pub member_id: String,
    pub generation: u64,
    pub assignment: Vec<TopicPartition>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct CommittedOffset {
    pub topic: String,
    pub partition: u32,
    pub offset: u64,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct MemberInfo {
    pub member_id: String,
    pub client: String,
    pub topics: Vec<String>,
    pub assignment: Vec<TopicPartition>,
    pub last_heartbeat_ms_ago: u64,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct PartitionLag {
    pub topic: String,
    pub partition: u32,
    pub committed: Option<u64>,
    pub high_watermark: u64,
    pub lag: u64,
    pub owner: Option<String>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct GroupDescription {
    pub group: String,
    pub generation: u64,
    pub members: Vec<MemberInfo>,
    pub partitions: Vec<PartitionLag>,
    pub total_lag: u64,
}

struct Member {
    client: String,
    topics: BTreeSet<String>,
    session_timeout: Duration,
    last_seen: Instant,
}

#[derive(Default)]
struct Group {
    generation: u64,
    members: BTreeMap<String, Member>,
    assignment: BTreeMap<String, Vec<TopicPartition>>,
}

/// Session timeouts a member may ask for.
#[derive(Debug, Clone, Copy)]
pub struct SessionLimits {
    pub min: Duration,
    pub max: Duration,
}

pub struct Coordinator {
    log: Arc<Log>,
    groups: Mutex<BTreeMap<String, Group>>,
    offsets: Database,
    limits: SessionLimits,
}

impl Coordinator {
    pub fn open(
        path: &Path,
        log: Arc<Log>,
        limits: SessionLimits,
    ) -> Result<Coordinator, GroupError> {
        let offsets = Database::create(path).map_err(store_error)?;
        let txn = offsets.begin_write().map_err(store_error)?;
        txn.open_table(OFFSETS).map_err(store_error)?;
        txn.commit().map_err(store_error)?;
        Ok(Coordinator {
            log,
            groups: Mutex::new(BTreeMap::new()),
            offsets,
            limits,
        })
    }

    /// Adds a member (or refreshes one re-joining with its id) and rebalances if membership
    /// or subscriptions changed.
    pub fn join(
        &self,
        group_id: &str,
        member_id: Option<&str>,
        client: &str,
        topics: &[String],
        session_timeout_ms: u64,
    ) -> Result<Membership, GroupError> {
        let timeout = Duration::from_millis(session_timeout_ms);
        if timeout < self.limits.min || timeout > self.limits.max {
            return Err(GroupError::BadSessionTimeout {
                min: self.limits.min.as_millis() as u64,
                max: self.limits.max.as_millis() as u64,
            });
        }
        if topics.is_empty() {
            return Err(GroupError::NoTopics(group_id.to_string()));
        }
        for topic in topics {
            self.log.topic(topic)?;
        }
        let mut groups = self.groups.lock();
        let group = groups.entry(group_id.to_string()).or_default();
        let member_id = match member_id {
            Some(id) if group.members.contains_key(id) => id.to_string(),
            _ => format!("{}-{:016x}", sanitize(client), rand::random::<u64>()),
        };
        let topics: BTreeSet<String> = topics.iter().cloned().collect();
        let changed = group
            .members
            .get(&member_id)
            .is_none_or(|m| m.topics != topics);
        group.members.insert(
            member_id.clone(),
            Member {
                client: client.to_string(),
                topics,
                session_timeout: timeout,
                last_seen: Instant::now(),
            },
        );
        if changed {
            self.rebalance(group_id, group, "member joined");
        }
        Ok(membership(group, &member_id))
    }

    /// Keeps a member alive and tells it its current assignment.
    pub fn heartbeat(&self, group_id: &str, member_id: &str) -> Result<Membership, GroupError> {
        let mut groups = self.groups.lock();
        let group = groups
            .get_mut(group_id)
            .ok_or_else(|| unknown_member(group_id, member_id))?;
        let member = group
            .members
            .get_mut(member_id)
            .ok_or_else(|| unknown_member(group_id, member_id))?;
        member.last_seen = Instant::now();
        Ok(membership(group, member_id))
    }

    pub fn leave(&self, group_id: &str, member_id: &str) -> Result<(), GroupError> {
        let mut groups = self.groups.lock();
        let group = groups
            .get_mut(group_id)
            .ok_or_else(|| unknown_member(group_id, member_id))?;
        group
            .members
            .remove(member_id)
            .ok_or_else(|| unknown_member(group_id, member_id))?;
        self.rebalance(group_id, group, "member left");
        Ok(())
    }

    /// Removes members whose session timed out; called periodically by the server.
    pub fn expire_members(&self) {
        let mut groups = self.groups.lock();
        let now = Instant::now();
        for (group_id, group) in groups.iter_mut() {
            let before = group.members.len();
            group.members.retain(|id, m| {
                let alive = now.duration_since(m.last_seen) < m.session_timeout;
                if !alive {
                    tracing::info!(group = %group_id, member = %id, "member session expired");
                }
                alive
            });
            if group.members.len() != before {
                self.rebalance(group_id, group, "member session expired");
            }
        }
    }

    /// Recomputes the assignment after topics grew partitions; called periodically.
    pub fn refresh_assignments(&self) {
        let mut groups = self.groups.lock();
        for (group_id, group) in groups.iter_mut() {
            if assign(&self.log, &group.members) != group.assignment {
                self.rebalance(group_id, group, "partition count changed");
            }
        }
    }

    fn rebalance(&self, group_id: &str, group: &mut Group, reason: &str) {
        group.generation += 1;
        group.assignment = assign(&self.log, &group.members);
        tracing::info!(
            group = group_id,
            generation = group.generation,
            members = group.members.len(),
            reason,
            "rebalanced"
        );
    }

    /// Durably records offsets. With a member id, the member must be of the current
    /// generation and own every partition; without one, the group must have no members.
    pub fn commit(
        &self,
        group_id: &str,
        member: Option<(&str, u64)>,
        offsets: &[CommittedOffset],
    ) -> Result<(), GroupError> {
        {
            let groups = self.groups.lock();
            let group = groups.get(group_id);
            match (member, group) {
                (Some((member_id, generation)), Some(group)) => {
                    if !group.members.contains_key(member_id) {
                        return Err(unknown_member(group_id, member_id));
                    }
                    if generation != group.generation {
                        return Err(GroupError::StaleGeneration {
                            group: group_id.to_string(),
                            current: group.generation,
                            given: generation,
                        });
                    }
                    let owned = group
                        .assignment
                        .get(member_id)
                        .map(Vec::as_slice)
                        .unwrap_or_default();
                    if let Some(o) = offsets.iter().find(|o| {
                        !owned
                            .iter()
                            .any(|tp| tp.topic == o.topic && tp.partition == o.partition)
                    }) {
                        return Err(GroupError::NotAssigned {
                            group: group_id.to_string(),
                            member: member_id.to_string(),
                            topic: o.topic.clone(),
                            partition: o.partition,
                        });
                    }
                }
                (Some((member_id, _)), None) => return Err(unknown_member(group_id, member_id)),
                (None, Some(group)) if !group.members.is_empty() => {
                    return Err(GroupError::MemberRequired(group_id.to_string()));
                }
                (None, _) => {}
            }
        }
        self.store_offsets(group_id, offsets)
    }

    /// Durably records offsets committed through the Kafka protocol, whose door checks the
    /// committing member's generation itself (its groups assign partitions on the client).
    pub fn commit_from_kafka(
        &self,
        group_id: &str,
        offsets: &[CommittedOffset],
    ) -> Result<(), GroupError> {
        self.store_offsets(group_id, offsets)
    }

    /// Records offsets, each at most its partition's high watermark.
    fn store_offsets(&self, group_id: &str, offsets: &[CommittedOffset]) -> Result<(), GroupError> {
        for o in offsets {
            let partition = self.log.topic(&o.topic)?.partition(o.partition)?;
            let high_watermark = partition.high_watermark();
            if o.offset > high_watermark {
                return Err(LogError::OffsetOutOfRange {
                    topic: o.topic.clone(),
                    partition: o.partition,
                    requested: o.offset,
                    start: partition.log_start_offset(),
                    end: high_watermark,
                }
                .into());
            }
        }
        let txn = self.offsets.begin_write().map_err(store_error)?;
        {
            let mut table = txn.open_table(OFFSETS).map_err(store_error)?;
            for o in offsets {
                table
                    .insert((group_id, o.topic.as_str(), o.partition), o.offset)
                    .map_err(store_error)?;
            }
        }
        txn.commit().map_err(store_error)
    }

    /// Forgets a group's committed offsets: those of `partitions`, or all of them.
    pub fn delete_offsets(
        &self,
        group_id: &str,
        partitions: Option<&[TopicPartition]>,
    ) -> Result<(), GroupError> {
        let doomed: Vec<TopicPartition> = match partitions {
            Some(partitions) => partitions.to_vec(),
            None => self
                .committed(group_id)?
                .into_iter()
                .map(|c| TopicPartition {
                    topic: c.topic,
                    partition: c.partition,
                })
                .collect(),
        };
        let txn = self.offsets.begin_write().map_err(store_error)?;
        {
            let mut table = txn.open_table(OFFSETS).map_err(store_error)?;
            for tp in &doomed {
                table
                    .remove((group_id, tp.topic.as_str(), tp.partition))
                    .map_err(store_error)?;
            }
        }
        txn.commit().map_err(store_error)
    }

    /// The committed offsets of a group.
    pub fn committed(&self, group_id: &str) -> Result<Vec<CommittedOffset>, GroupError> {
        let txn = self.offsets.begin_read().map_err(store_error)?;
        let table = txn.open_table(OFFSETS).map_err(store_error)?;
        let range = table
            .range((group_id, "", 0u32)..=(group_id, "\u{10FFFF}", u32::MAX))
            .map_err(store_error)?;
        let mut out = Vec::new();
        for entry in range {
            let (key, value) = entry.map_err(store_error)?;
            let (_, topic, partition) = key.value();
            out.push(CommittedOffset {
                topic: topic.to_string(),
                partition,
                offset: value.value(),
            });
        }
        Ok(out)
    }

    /// Every group with members or committed offsets.
    pub fn list(&self) -> Result<Vec<String>, GroupError> {
        let mut names: BTreeSet<String> = self.groups.lock().keys().cloned().collect();
        let txn = self.offsets.begin_read().map_err(store_error)?;
        let table = txn.open_table(OFFSETS).map_err(store_error)?;
        for entry in table.iter().map_err(store_error)? {
            let (key, _) = entry.map_err(store_error)?;
            names.insert(key.value().0.to_string());
        }
        Ok(names.into_iter().collect())
    }

    /// Members, assignment, committed offsets and lag per partition.
    pub fn describe(&self, group_id: &str) -> Result<GroupDescription, GroupError> {
        let committed = self.committed(group_id)?;
        let groups = self.groups.lock();
        let group = groups.get(group_id);
        if group.is_none_or(|g| g.members.is_empty()) && committed.is_empty() {
            return Err(GroupError::UnknownGroup(group_id.to_string()));
        }
        let now = Instant::now();
        let members: Vec<MemberInfo> = group
            .map(|g| {
                g.members
                    .iter()
                    .map(|(id, m)| MemberInfo {
                        member_id: id.clone(),
                        client: m.client.clone(),
                        topics: m.topics.iter().cloned().collect(),
                        assignment: g.assignment.get(id).cloned().unwrap_or_default(),
                        last_heartbeat_ms_ago: now.duration_since(m.last_seen).as_millis() as u64,
                    })
                    .collect()
            })
            .unwrap_or_default();
        let mut keys: BTreeSet<TopicPartition> = committed
            .iter()
            .map(|o| TopicPartition {
                topic: o.topic.clone(),
                partition: o.partition,
            })
            .collect();
        keys.extend(members.iter().flat_map(|m| m.assignment.iter().cloned()));
        // Every partition of a topic the group reads, committed to or not: one it has not
        // reached yet lags from the log start.
        let topics: BTreeSet<String> = keys
            .iter()
            .map(|tp| tp.topic.clone())
            .chain(members.iter().flat_map(|m| m.topics.iter().cloned()))
            .collect();
        for topic in topics {
            if let Ok(found) = self.log.topic(&topic) {
                keys.extend(
                    (0..found.partition_count()).map(|partition| TopicPartition {
                        topic: topic.clone(),
                        partition,
                    }),
                );
            }
        }
        let mut partitions = Vec::new();
        for tp in keys {
            let Ok(partition) = self
                .log
                .topic(&tp.topic)
                .and_then(|t| t.partition(tp.partition))
            else {
                continue;
            };
            let committed = committed
                .iter()
                .find(|o| o.topic == tp.topic && o.partition == tp.partition)
                .map(|o| o.offset);
            let high_watermark = partition.high_watermark();
            let from = committed.unwrap_or(partition.log_start_offset());
            let owner = members
                .iter()
                .find(|m| m.assignment.contains(&tp))
                .map(|m| m.member_id.clone());
            partitions.push(PartitionLag {
                topic: tp.topic,
                partition: tp.partition,
                committed,
                high_watermark,
                lag: high_watermark.saturating_sub(from),
                owner,
            });
        }
        Ok(GroupDescription {
            group: group_id.to_string(),
            generation: group.map_or(0, |g| g.generation),
            total_lag: partitions.iter().map(|p| p.lag).sum(),
            members,
            partitions,
        })
    }
}

fn unknown_member(group: &str, member: &str) -> GroupError {
    GroupError::UnknownMember {
        group: group.to_string(),
        member: member.to_string(),
    }
}

fn membership(group: &Group, member_id: &str) -> Membership {
    Membership {
        member_id: member_id.to_string(),
        generation: group.generation,
        assignment: group.assignment.get(member_id).cloned().unwrap_or_default(),
    }
}

fn sanitize(client: &str) -> String {
    let cleaned: String = client
        .chars()
        .filter(|c| c.is_ascii_alphanumeric() || *c == '-')
        .take(32)
        .collect();
    if cleaned.is_empty() {
        "member".to_string()
    } else {
        cleaned
    }
}

/// Spreads every partition of the subscribed topics over the members subscribed to its
/// topic, each to the member holding the fewest so far (ties to the smallest id), so counts
/// differ by at most one among members with the same subscriptions.
fn assign(log: &Log, members: &BTreeMap<String, Member>) -> BTreeMap<String, Vec<TopicPartition>> {
    let mut assignment: BTreeMap<String, Vec<TopicPartition>> =
        members.keys().map(|id| (id.clone(), Vec::new())).collect();
    let topics: BTreeSet<&String> = members.values().flat_map(|m| m.topics.iter()).collect();
    for topic in topics {
        let Ok(partitions) = log.topic(topic).map(|t| t.partition_count()) else {
            continue;
        };
        let subscribers: Vec<&String> = members
            .iter()
            .filter(|(_, m)| m.topics.contains(topic))
            .map(|(id, _)| id)
            .collect();
        for partition in 0..partitions {
            let chosen = subscribers
                .iter()
                .min_by_key(|id| (assignment[id.as_str()].len(), id.as_str()))
                .expect("a subscribed topic has a subscriber");
            assignment
                .get_mut(chosen.as_str())
                .expect("every member has an entry")
                .push(TopicPartition {
                    topic: topic.clone(),
                    partition,
                });
        }
    }
    assignment
}
