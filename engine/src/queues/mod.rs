//! Share groups: queue semantics on the log (Kafka's KIP-932). Any number of members share
//! every partition of a topic; each fetch locks the records it hands out to its member, who
//! acknowledges, releases, rejects or renews each one. A record whose lock ends is delivered
//! again with its delivery count; past `max_deliveries`, or when rejected, it goes to the
//! group's dead-letter topic.
//!
//! # Layout
//! - `window.rs`: one partition's in-flight window, the rules of a record's states (pure).
//! - `journal.rs`: the durable journal of every window and group setting, its format and its
//!   crash analysis.
//! - `settings.rs`: a group's settings and the engine-wide limits.
//! - `error.rs`: [`ShareError`].
//! - here: [`ShareGroups`], which the doors (HTTP, Kafka, CLI) call: fetch, acknowledge,
//!   leave, configure, describe, and the dead letters.
//!
//! Memory stays bounded whatever members do: a window holds at most `max_window_records`
//! records, a group at most `max_members` members, the engine at most `max_groups` groups.
//! Each group is behind its own lock; the journal's fsync is shared by callers (group commit)
//! and taken outside any group's lock.

mod error;
mod journal;
mod settings;
mod window;

pub use error::ShareError;
pub use settings::{GroupSettings, Limits, MAX_WINDOW_RECORDS_CAP, OnExpiry, StartAt};
pub use window::{AckKind, AckRefusal, Tally, WindowCounters};

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use parking_lot::Mutex;
use serde::{Deserialize, Serialize};
use tokio::sync::Notify;

use crate::log::headers::{
    DLQ_ATTEMPTS, DLQ_ERROR, DLQ_GROUP, DLQ_OFFSET, DLQ_PARTITION, DLQ_TOPIC,
};
use crate::log::{Header, Log, LogError, Partition, Record, batch};
use journal::{Entry, Journal};
use window::{Change, DeadLetterReason, Lock, Rules, Window};

/// Bytes read from the log per read while collecting acquired records.
const READ_BYTES: usize = 1024 * 1024;
/// The longest member id accepted.
const MAX_MEMBER_ID_CHARS: usize = 255;

/// A fetch: up to `max_records` records of `topic` (of `partitions`, else all) for `member`.
#[derive(Debug, Clone)]
pub struct FetchRequest {
    pub member: String,
    pub topic: String,
    pub partitions: Option<Vec<u32>>,
    /// The prefetch: records this fetch may lock at most.
    pub max_records: usize,
    /// The lock's length; the group's `record_lock_ms` if none.
    pub lock: Option<Duration>,
    /// How long to wait for a record when none is available.
    pub wait: Duration,
    /// Decode each delivered record ([`Delivery::record`]); a door that sends the stored
    /// batches as they are ([`read_batches`]) does without.
    pub decode: bool,
}

/// A record handed to a member, locked to it.
#[derive(Debug, Clone)]
pub struct Delivery {
    pub topic: String,
    pub partition: u32,
    pub offset: u64,
    /// 1 on the first delivery.
    pub deliveries: u16,
    /// The record, when the fetch asked for it decoded.
    pub record: Option<Record>,
}

/// What a member says of a run of records of one partition: `first..=last` (one record when
/// they are equal). A run is applied record by record; the doors send runs because a member
/// usually says the same of everything it fetched.
#[derive(Debug, Clone)]
pub struct Acknowledgement {
    pub topic: String,
    pub partition: u32,
    pub first: u64,
    pub last: u64,
    pub kind: AckKind,
}

/// An acknowledgement that was not applied.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Refused {
    pub topic: String,
    pub partition: u32,
    pub offset: u64,
    pub reason: AckRefusal,
}

/// One partition of a share group, as `describe` shows it.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct PartitionDescription {
    pub topic: String,
    pub partition: u32,
    /// Every record before it is acknowledged or dead-lettered.
    pub start_offset: u64,
    /// The first record never delivered.
    pub end_offset: u64,
    pub high_watermark: u64,
    /// Records not done yet: in the window and not done, plus those after it.
    pub queue_depth: u64,
    #[serde(flatten)]
    pub tally: Tally,
    /// Since the engine started.
    pub counters: WindowCounters,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct MemberDescription {
    pub member_id: String,
    pub last_seen_ms_ago: u64,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ShareGroupDescription {
    pub group: String,
    pub settings: GroupSettings,
    pub dead_letter_topic: String,
    pub members: Vec<MemberDescription>,
    pub partitions: Vec<PartitionDescription>,
    pub queue_depth: u64,
    pub in_flight: u64,
    pub counters: WindowCounters,
}

struct Group {
    name: String,
    state: Mutex<GroupState>,
    /// Woken when records may have become available (a release, a leave, a dead letter).
    changed: Notify,
}

struct GroupState {
    settings: GroupSettings,
    members: BTreeMap<Arc<str>, Instant>,
    windows: BTreeMap<(String, u32), Window>,
    /// Where the next fetch starts among the partitions, so each gets its turn.
    next_partition: usize,
}

impl GroupState {
    fn new(settings: GroupSettings) -> GroupState {
        GroupState {
            settings,
            members: BTreeMap::new(),
            windows: BTreeMap::new(),
            next_partition: 0,
        }
    }
}

/// A record on its way to the dead-letter topic.
struct DeadLetter {
    topic: String,
    partition: u32,
    offset: u64,
    deliveries: u16,
    reason: DeadLetterReason,
    record: Option<Record>,
}

/// How much one pass of a fetch takes, and how.
struct Take {
    max: usize,
    lock: Option<Duration>,
    decode: bool,
}

/// What one pass of a fetch found.
#[derive(Default)]
struct Attempt {
    deliveries: Vec<Delivery>,
    dead_letters: Vec<DeadLetter>,
    position: u64,
    /// The next lock end or delayed release among the group's windows.
    next_deadline: Option<Instant>,
    /// Partitions with room in their window, and the offset a new record would have.
    waiting_on: Vec<(Arc<Partition>, u64)>,
}

/// Every share group of the engine.
pub struct ShareGroups {
    log: Arc<Log>,
    journal: Journal,
    limits: Limits,
    groups: Mutex<BTreeMap<String, Arc<Group>>>,
    compacting: Mutex<()>,
}

impl ShareGroups {
    /// Opens the journal in `dir` and rebuilds every group from it.
    pub fn open(dir: &Path, log: Arc<Log>, limits: Limits) -> Result<ShareGroups, ShareError> {
        limits.defaults.check(&limits)?;
        let (journal, entries) = Journal::open(dir)?;
        let mut states: BTreeMap<String, GroupState> = BTreeMap::new();
        for entry in entries {
            replay(&mut states, entry, &limits)?;
        }
        let groups = states
            .into_iter()
            .map(|(name, state)| {
                let group = Arc::new(Group {
                    name: name.clone(),
                    state: Mutex::new(state),
                    changed: Notify::new(),
                });
                (name, group)
            })
            .collect();
        let share_groups = ShareGroups {
            log,
            journal,
            limits,
            groups: Mutex::new(groups),
            compacting: Mutex::new(()),
        };
        share_groups.compact_if_large()?;
        Ok(share_groups)
    }

    pub fn limits(&self) -> &Limits {
        &self.limits
    }

    fn group(&self, name: &str) -> Result<Arc<Group>, ShareError> {
        self.groups
            .lock()
            .get(name)
            .cloned()
            .ok_or_else(|| ShareError::UnknownGroup(name.to_string()))
    }

    /// The group, made with the default settings if it does not exist (as a Kafka share
    /// group is made by its first member).
    fn group_or_create(&self, name: &str) -> Result<Arc<Group>, ShareError> {
        if let Ok(group) = self.group(name) {
            return Ok(group);
        }
        self.configure_sync(name, None)
    }

    /// Sets a group's settings, making the group if it does not exist.
    pub async fn configure(
        self: &Arc<Self>,
        name: &str,
        settings: GroupSettings,
    ) -> Result<(), ShareError> {
        let this = self.clone();
        let name = name.to_string();
        blocking(move || this.configure_sync(&name, Some(settings)).map(|_| ())).await
    }

    fn configure_sync(
        &self,
        name: &str,
        settings: Option<GroupSettings>,
    ) -> Result<Arc<Group>, ShareError> {
        crate::log::validate_name(name)
            .map_err(|e| ShareError::InvalidName(name.to_string(), e))?;
        if let Some(settings) = &settings {
            settings.check(&self.limits)?;
        }
        let mut groups = self.groups.lock();
        let existing = groups.get(name).cloned();
        if let (Some(group), None) = (&existing, &settings) {
            return Ok(group.clone());
        }
        if existing.is_none() && groups.len() >= self.limits.max_groups {
            return Err(ShareError::TooManyGroups {
                max: self.limits.max_groups,
            });
        }
        let settings = settings.unwrap_or_else(|| self.limits.defaults.clone());
        let json = serde_json::to_vec(&settings).expect("settings serialize");
        let position = self.journal.append(&[Entry::Settings {
            group: name.to_string(),
            json,
        }])?;
        let group = match existing {
            Some(group) => {
                group.state.lock().settings = settings;
                group
            }
            None => {
                let group = Arc::new(Group {
                    name: name.to_string(),
                    state: Mutex::new(GroupState::new(settings)),
                    changed: Notify::new(),
                });
                groups.insert(name.to_string(), group.clone());
                group
            }
        };
        drop(groups);
        self.journal.sync_to(position)?;
        Ok(group)
    }

    /// Deletes a group and its windows.
    pub async fn delete(self: &Arc<Self>, name: &str) -> Result<(), ShareError> {
        let this = self.clone();
        let name = name.to_string();
        blocking(move || {
            let mut groups = this.groups.lock();
            if !groups.contains_key(&name) {
                return Err(ShareError::UnknownGroup(name));
            }
            let position = this.journal.append(&[Entry::Forget {
                group: name.clone(),
            }])?;
            groups.remove(&name);
            drop(groups);
            this.journal.sync_to(position)
        })
        .await
    }

    /// Locks and returns up to `max_records` records for the member, waiting up to
    /// `request.wait` for one.
    pub async fn fetch(
        self: &Arc<Self>,
        group: &str,
        request: FetchRequest,
    ) -> Result<Vec<Delivery>, ShareError> {
        self.fetch_after(group, request, 0).await
    }

    /// [`ShareGroups::fetch`] that first makes the journal durable up to `position` (entries
    /// of the caller's, such as acknowledgements): with the fetch's own entries when it takes
    /// records, and before any wait when it does not, so they are not held up by a long poll.
    async fn fetch_after(
        self: &Arc<Self>,
        group: &str,
        request: FetchRequest,
        position: u64,
    ) -> Result<Vec<Delivery>, ShareError> {
        let member = check_member(&request.member)?;
        let lock_ms = request.lock.map(|l| l.as_millis() as u64);
        if let Some(lock_ms) = lock_ms {
            self.limits.check_lock(lock_ms)?;
        }
        // Found without a blocking thread; made (and journaled) on one.
        let group = match self.group(group) {
            Ok(found) => found,
            Err(_) => {
                let (this, name) = (self.clone(), group.to_string());
                blocking(move || this.group_or_create(&name)).await?
            }
        };
        let topic = self.log.topic(&request.topic)?;
        let partitions = match &request.partitions {
            None => topic.partitions(),
            Some(ids) => ids
                .iter()
                .map(|id| topic.partition(*id))
                .collect::<Result<Vec<_>, LogError>>()?,
        };
        let deadline = Instant::now() + request.wait;
        loop {
            let notified = group.changed.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            let (this, group_ref, member_ref) = (self.clone(), group.clone(), member.clone());
            let (topic_name, parts) = (request.topic.clone(), partitions.clone());
            let take = Take {
                max: request.max_records.max(1),
                lock: request.lock,
                decode: request.decode,
            };
            let attempt =
                blocking(move || this.acquire(&group_ref, &member_ref, &topic_name, &parts, take))
                    .await?;
            self.sync(attempt.position.max(position)).await?;
            let had_dead_letters = !attempt.dead_letters.is_empty();
            if had_dead_letters {
                self.send_dead_letters(&group, attempt.dead_letters).await?;
            }
            if !attempt.deliveries.is_empty() {
                return Ok(attempt.deliveries);
            }
            let now = Instant::now();
            if now >= deadline {
                return Ok(Vec::new());
            }
            if had_dead_letters {
                continue;
            }
            let wake = attempt.next_deadline.map_or(deadline, |d| d.min(deadline));
            let timeout = wake.saturating_duration_since(now);
            tokio::select! {
                _ = notified => {}
                _ = tokio::time::sleep(timeout) => {}
                _ = any_new_record(&attempt.waiting_on, timeout) => {}
            }
        }
    }

    /// One pass of a fetch, under the group's lock: expire locks, acquire, read the records,
    /// expire those past their time-to-live, and journal it all (not yet synced).
    fn acquire(
        &self,
        group: &Group,
        member: &Arc<str>,
        topic: &str,
        partitions: &[Arc<Partition>],
        take: Take,
    ) -> Result<Attempt, ShareError> {
        let Take { max, lock, decode } = take;
        let mut guard = group.state.lock();
        let state = &mut *guard;
        let now = Instant::now();
        let mut entries = Vec::new();
        self.touch_member(&group.name, state, member, now, &mut entries)?;
        let settings = state.settings.clone();
        let lock = lock.unwrap_or(Duration::from_millis(settings.record_lock_ms));
        let rules = Rules {
            max_window_records: self.limits.max_window_records,
            max_deliveries: settings.max_deliveries,
        };
        let mut attempt = Attempt::default();
        let first = state.next_partition;
        state.next_partition = state.next_partition.wrapping_add(1);
        for turn in 0..partitions.len() {
            let partition = &partitions[(first + turn) % partitions.len()];
            let key = (topic.to_string(), partition.id);
            let created = !state.windows.contains_key(&key);
            let window = state.windows.entry(key).or_insert_with(|| {
                Window::new(match settings.start_at {
                    StartAt::Earliest => partition.log_start_offset(),
                    StartAt::Latest => partition.high_watermark(),
                })
            });
            let start_before = window.start();
            let skipped = window.advance_to(partition.log_start_offset());
            window.counters.skipped += skipped;
            window.expire_locks(now);
            let remaining = max - attempt.deliveries.len();
            let mut reasons = Vec::new();
            let acquired = if remaining == 0 {
                Vec::new()
            } else {
                let taker = Lock {
                    member,
                    until: now + lock,
                };
                window.acquire(
                    now,
                    &taker,
                    remaining,
                    partition.high_watermark(),
                    rules,
                    &mut reasons,
                )
            };
            // Records are read for the caller, for their time-to-live, or to dead-letter them.
            let ttl = settings.message_ttl_ms;
            let read_all = decode || ttl > 0;
            let mut wanted: Vec<u64> = if read_all {
                acquired.iter().map(|a| a.offset).collect()
            } else {
                Vec::new()
            };
            wanted.extend(reasons.iter().map(|(offset, _)| *offset));
            wanted.sort_unstable();
            let mut records = read_offsets(partition, &wanted)?;
            let mut changes = Vec::new();
            let now_ms = crate::log::now_ms();
            for taken in acquired {
                let record = records.remove(&taken.offset);
                if read_all && record.is_none() {
                    // Deleted by retention meanwhile: the next pass moves the start past it.
                    continue;
                }
                if let Some(record) = record
                    .as_ref()
                    .filter(|r| ttl > 0 && now_ms.saturating_sub(r.timestamp) > ttl as i64)
                {
                    let dead_letter = settings.on_expiry == OnExpiry::DeadLetter;
                    match window.unacquire_expired(taken.offset, dead_letter) {
                        Some(drop) => changes.push(drop),
                        None => reasons.push((taken.offset, DeadLetterReason::Expired)),
                    }
                    records.insert(taken.offset, record.clone());
                    continue;
                }
                changes.extend(window.durable(taken.offset));
                attempt.deliveries.push(Delivery {
                    topic: topic.to_string(),
                    partition: partition.id,
                    offset: taken.offset,
                    deliveries: taken.deliveries,
                    record: record.filter(|_| decode),
                });
            }
            for (offset, reason) in reasons {
                attempt.dead_letters.push(DeadLetter {
                    topic: topic.to_string(),
                    partition: partition.id,
                    offset,
                    deliveries: window.deliveries(offset).unwrap_or(0),
                    reason,
                    record: records.remove(&offset),
                });
            }
            window.compact();
            if created || !changes.is_empty() || window.start() != start_before {
                entries.push(Entry::Window {
                    group: group.name.clone(),
                    topic: topic.to_string(),
                    partition: partition.id,
                    start: window.start(),
                    changes,
                });
            }
            if window.end() < window.start() + self.limits.max_window_records {
                attempt.waiting_on.push((partition.clone(), window.end()));
            }
            attempt.next_deadline = earliest(attempt.next_deadline, window.next_deadline());
        }
        if !entries.is_empty() {
            attempt.position = self.journal.append(&entries)?;
        }
        Ok(attempt)
    }

    /// Registers `member` as seen now, and ends the sessions of members unseen for
    /// `session_timeout_ms`, releasing their locks.
    fn touch_member(
        &self,
        group: &str,
        state: &mut GroupState,
        member: &Arc<str>,
        now: Instant,
        entries: &mut Vec<Entry>,
    ) -> Result<(), ShareError> {
        let timeout = Duration::from_millis(self.limits.session_timeout_ms);
        let gone: Vec<Arc<str>> = state
            .members
            .iter()
            .filter(|(_, seen)| now.duration_since(**seen) > timeout)
            .map(|(id, _)| id.clone())
            .collect();
        for id in gone {
            state.members.remove(&id);
            release_member(group, state, &id, entries);
        }
        if !state.members.contains_key(member) && state.members.len() >= self.limits.max_members {
            return Err(ShareError::TooManyMembers {
                group: group.to_string(),
                max: self.limits.max_members,
            });
        }
        state.members.insert(member.clone(), now);
        Ok(())
    }

    /// Applies a batch of acknowledgements; returns those refused (the rest took effect).
    pub async fn acknowledge(
        self: &Arc<Self>,
        group: &str,
        member: &str,
        acknowledgements: Vec<Acknowledgement>,
    ) -> Result<Vec<Refused>, ShareError> {
        let group = self.group(group)?;
        let (refused, dead_letters, position) =
            self.apply(&group, member, acknowledgements).await?;
        self.sync(position).await?;
        if !dead_letters.is_empty() {
            self.send_dead_letters(&group, dead_letters).await?;
        }
        Ok(refused)
    }

    /// Applies a member's acknowledgements, then fetches for it: its usual loop in one call
    /// (as Kafka's share consumer sends acknowledgements with its next ShareFetch), with one
    /// wait for the disk for both when the fetch takes records.
    pub async fn acknowledge_and_fetch(
        self: &Arc<Self>,
        group: &str,
        acknowledgements: Vec<Acknowledgement>,
        request: FetchRequest,
    ) -> Result<(Vec<Refused>, Vec<Delivery>), ShareError> {
        if acknowledgements.is_empty() {
            return Ok((Vec::new(), self.fetch(group, request).await?));
        }
        let group_ref = self.group(group)?;
        let (refused, dead_letters, position) = self
            .apply(&group_ref, &request.member, acknowledgements)
            .await?;
        if !dead_letters.is_empty() {
            self.send_dead_letters(&group_ref, dead_letters).await?;
        }
        let fetched = self.fetch_after(group, request, position).await;
        // On disk already unless the fetch failed before its first sync.
        self.sync(position).await?;
        Ok((refused, fetched?))
    }

    /// Applies acknowledgements and journals them (not yet synced); wakes the group's
    /// fetches when records became available.
    async fn apply(
        self: &Arc<Self>,
        group: &Arc<Group>,
        member: &str,
        acknowledgements: Vec<Acknowledgement>,
    ) -> Result<(Vec<Refused>, Vec<DeadLetter>, u64), ShareError> {
        let member = check_member(member)?;
        let (this, group_ref) = (self.clone(), group.clone());
        let (refused, dead_letters, position, wake) =
            blocking(move || this.apply_acknowledgements(&group_ref, &member, acknowledgements))
                .await?;
        if wake {
            group.changed.notify_waiters();
        }
        Ok((refused, dead_letters, position))
    }

    fn apply_acknowledgements(
        &self,
        group: &Group,
        member: &Arc<str>,
        acknowledgements: Vec<Acknowledgement>,
    ) -> Result<(Vec<Refused>, Vec<DeadLetter>, u64, bool), ShareError> {
        let mut guard = group.state.lock();
        let state = &mut *guard;
        let now = Instant::now();
        let mut entries = Vec::new();
        self.touch_member(&group.name, state, member, now, &mut entries)?;
        let lock = Duration::from_millis(state.settings.record_lock_ms);
        let mut refused = Vec::new();
        let mut rejected = Vec::new();
        let mut touched: BTreeMap<(String, u32), Vec<Change>> = BTreeMap::new();
        let mut wake = false;
        // Whether a release asked for a delay, which the journal keeps too.
        let mut delayed = false;
        for ack in acknowledgements {
            delayed |= matches!(ack.kind, AckKind::Release { delay } if !delay.is_zero());
            let key = (ack.topic, ack.partition);
            let mut window = state.windows.get_mut(&key);
            let changes = touched.entry(key.clone()).or_default();
            for offset in ack.first..=ack.last {
                let outcome = match window.as_deref_mut() {
                    None => Err(AckRefusal::OutOfWindow),
                    Some(window) => window.acknowledge(now, member, offset, &ack.kind, lock),
                };
                match (outcome, &ack.kind) {
                    (Err(reason), _) => refused.push(Refused {
                        topic: key.0.clone(),
                        partition: key.1,
                        offset,
                        reason,
                    }),
                    (Ok(Some(change)), kind) => {
                        wake |= matches!(kind, AckKind::Release { .. });
                        changes.push(change);
                    }
                    (Ok(None), AckKind::Reject { reason }) => {
                        rejected.push((key.clone(), offset, reason.clone()))
                    }
                    (Ok(None), _) => {}
                }
            }
        }
        for ((topic, partition), changes) in touched {
            if changes.is_empty() {
                continue;
            }
            let window = state
                .windows
                .get_mut(&(topic.clone(), partition))
                .expect("touched windows exist");
            wake |= window.compact();
            let delays = if delayed {
                let changed: BTreeSet<u64> = changes.iter().map(|c| c.offset).collect();
                delays_of(window, now, |offset| changed.contains(&offset))
            } else {
                Vec::new()
            };
            entries.push(Entry::Window {
                group: group.name.clone(),
                topic: topic.clone(),
                partition,
                start: window.start(),
                changes,
            });
            if !delays.is_empty() {
                entries.push(Entry::Delay {
                    group: group.name.clone(),
                    topic,
                    partition,
                    delays,
                });
            }
        }
        let dead_letters = self.read_rejected(state, rejected)?;
        let position = if entries.is_empty() {
            0
        } else {
            self.journal.append(&entries)?
        };
        Ok((refused, dead_letters, position, wake))
    }

    /// The records of rejected acknowledgements, read for the dead-letter topic.
    fn read_rejected(
        &self,
        state: &GroupState,
        rejected: Vec<((String, u32), u64, String)>,
    ) -> Result<Vec<DeadLetter>, ShareError> {
        let mut dead_letters = Vec::new();
        for ((topic, partition), offset, reason) in rejected {
            let log_partition = self.log.topic(&topic)?.partition(partition)?;
            let record = read_offsets(&log_partition, &[offset])?.remove(&offset);
            let deliveries = state
                .windows
                .get(&(topic.clone(), partition))
                .and_then(|w| w.deliveries(offset))
                .unwrap_or(0);
            dead_letters.push(DeadLetter {
                topic,
                partition,
                offset,
                deliveries,
                reason: DeadLetterReason::Rejected(reason),
                record,
            });
        }
        Ok(dead_letters)
    }

    /// Ends a member's session: its locks are released at once.
    pub async fn leave(self: &Arc<Self>, group: &str, member: &str) -> Result<(), ShareError> {
        let group = self.group(group)?;
        let member = member.to_string();
        self.change(&group, move |name, state| {
            state.members.remove(member.as_str());
            let mut entries = Vec::new();
            release_member(name, state, &member, &mut entries);
            entries
        })
        .await
    }

    /// Makes a change to a group under its lock, journals the entries it returns, waits until
    /// they are durable, and wakes the group's waiting fetches.
    async fn change(
        self: &Arc<Self>,
        group: &Arc<Group>,
        work: impl FnOnce(&str, &mut GroupState) -> Vec<Entry> + Send + 'static,
    ) -> Result<(), ShareError> {
        let (this, group_ref) = (self.clone(), group.clone());
        let position = blocking(move || {
            let mut state = group_ref.state.lock();
            let entries = work(&group_ref.name, &mut state);
            if entries.is_empty() {
                return Ok(0);
            }
            this.journal.append(&entries)
        })
        .await?;
        self.sync(position).await?;
        group.changed.notify_waiters();
        Ok(())
    }

    /// Sends records to the group's dead-letter topic, then archives them in their windows.
    /// A record that cannot be sent is made available again.
    async fn send_dead_letters(
        self: &Arc<Self>,
        group: &Arc<Group>,
        dead_letters: Vec<DeadLetter>,
    ) -> Result<(), ShareError> {
        let topic_name = group.state.lock().settings.dead_letter_topic(&group.name);
        let letters: Vec<Record> = dead_letters
            .iter()
            .filter_map(|d| d.record.as_ref().map(|r| letter(r, d, &group.name)))
            .collect();
        let sent = match self.dead_letter_topic(&topic_name) {
            Ok(_) if letters.is_empty() => Ok(()),
            Ok(topic) => topic.produce(None, letters).await.map(|_| ()),
            Err(e) => Err(e),
        };
        if let Err(e) = &sent {
            tracing::warn!(group = %group.name, topic = %topic_name, error = %e,
                "share group: dead letters not sent; the records are available again");
        }
        let ok = sent.is_ok();
        self.change(group, move |name, state| {
            let mut touched: BTreeMap<(String, u32), Vec<Change>> = BTreeMap::new();
            for letter in &dead_letters {
                let key = (letter.topic.clone(), letter.partition);
                let Some(window) = state.windows.get_mut(&key) else {
                    continue;
                };
                if ok && letter.record.is_some() {
                    touched
                        .entry(key)
                        .or_default()
                        .extend(window.dead_lettered(letter.offset));
                } else {
                    window.dead_letter_failed(letter.offset);
                }
            }
            let mut entries = Vec::new();
            for ((topic, partition), changes) in touched {
                let window = state
                    .windows
                    .get_mut(&(topic.clone(), partition))
                    .expect("touched windows exist");
                window.compact();
                entries.push(Entry::Window {
                    group: name.to_string(),
                    topic,
                    partition,
                    start: window.start(),
                    changes,
                });
            }
            entries
        })
        .await
    }

    fn dead_letter_topic(&self, name: &str) -> Result<Arc<crate::log::Topic>, LogError> {
        match self.log.topic(name) {
            Err(LogError::UnknownTopic(_)) => match self.log.create_topic(name, 1, &[]) {
                Err(LogError::TopicExists(_)) => self.log.topic(name),
                made => made,
            },
            found => found,
        }
    }

    /// Waits until the journal holds everything up to `position`, then rewrites it if it
    /// grew too large.
    async fn sync(self: &Arc<Self>, position: u64) -> Result<(), ShareError> {
        if position == 0 || self.journal.is_synced(position) {
            return Ok(());
        }
        let this = self.clone();
        blocking(move || {
            this.journal.sync_to(position)?;
            this.compact_if_large()
        })
        .await
    }

    /// Rewrites the journal as a snapshot of every group when it passed
    /// `journal_compact_bytes`. Holds every group still meanwhile.
    fn compact_if_large(&self) -> Result<(), ShareError> {
        if self.journal.file_bytes() <= self.limits.journal_compact_bytes {
            return Ok(());
        }
        let Some(_compacting) = self.compacting.try_lock() else {
            return Ok(());
        };
        let groups = self.groups.lock();
        let guards: Vec<_> = groups.values().map(|g| (g, g.state.lock())).collect();
        let now = Instant::now();
        let mut entries = Vec::new();
        for (group, state) in &guards {
            entries.push(Entry::Settings {
                group: group.name.clone(),
                json: serde_json::to_vec(&state.settings).expect("settings serialize"),
            });
            for ((topic, partition), window) in &state.windows {
                entries.push(Entry::Window {
                    group: group.name.clone(),
                    topic: topic.clone(),
                    partition: *partition,
                    start: window.start(),
                    changes: window.snapshot(),
                });
                let delays = delays_of(window, now, |_| true);
                if !delays.is_empty() {
                    entries.push(Entry::Delay {
                        group: group.name.clone(),
                        topic: topic.clone(),
                        partition: *partition,
                        delays,
                    });
                }
            }
        }
        self.journal.rewrite(&entries)
    }

    /// The names of every share group.
    pub fn list(&self) -> Vec<String> {
        self.groups.lock().keys().cloned().collect()
    }

    pub fn describe(&self, name: &str) -> Result<ShareGroupDescription, ShareError> {
        let group = self.group(name)?;
        let state = group.state.lock();
        let now = Instant::now();
        let members = state
            .members
            .iter()
            .map(|(id, seen)| MemberDescription {
                member_id: id.to_string(),
                last_seen_ms_ago: now.duration_since(*seen).as_millis() as u64,
            })
            .collect();
        let mut description = ShareGroupDescription {
            group: name.to_string(),
            dead_letter_topic: state.settings.dead_letter_topic(name),
            settings: state.settings.clone(),
            members,
            partitions: Vec::new(),
            queue_depth: 0,
            in_flight: 0,
            counters: WindowCounters::default(),
        };
        for ((topic, partition), window) in &state.windows {
            let high_watermark = self
                .log
                .topic(topic)
                .and_then(|t| t.partition(*partition))
                .map_or(window.end(), |p| p.high_watermark());
            let tally = window.tally();
            let queue_depth = high_watermark
                .saturating_sub(window.start())
                .saturating_sub(tally.done);
            description.queue_depth += queue_depth;
            description.in_flight += tally.in_flight;
            add_counters(&mut description.counters, &window.counters);
            description.partitions.push(PartitionDescription {
                topic: topic.clone(),
                partition: *partition,
                start_offset: window.start(),
                end_offset: window.end(),
                high_watermark,
                queue_depth,
                tally,
                counters: window.counters,
            });
        }
        Ok(description)
    }
}

/// The groups the journal entries in `bytes` (a journal after its header) rebuild, or why
/// they cannot be: what a restart does with a journal, without a log. The fuzz target
/// `share_journal` drives it with arbitrary bytes.
#[doc(hidden)]
pub fn replay_journal_entries(bytes: &[u8]) -> Result<Vec<String>, ShareError> {
    let limits = Limits::default();
    let mut states: BTreeMap<String, GroupState> = BTreeMap::new();
    for entry in journal::decode_entries(bytes).0 {
        replay(&mut states, entry, &limits)?;
    }
    Ok(states.into_keys().collect())
}

fn replay(
    states: &mut BTreeMap<String, GroupState>,
    entry: Entry,
    limits: &Limits,
) -> Result<(), ShareError> {
    match entry {
        Entry::Settings { group, json } => {
            let settings =
                serde_json::from_slice(&json).map_err(|source| ShareError::BadJournalSettings {
                    group: group.clone(),
                    source,
                })?;
            states
                .entry(group)
                .or_insert_with(|| GroupState::new(limits.defaults.clone()))
                .settings = settings;
        }
        Entry::Window {
            group,
            topic,
            partition,
            start,
            changes,
        } => {
            let state = states
                .entry(group.clone())
                .or_insert_with(|| GroupState::new(limits.defaults.clone()));
            let window = state
                .windows
                .entry((topic.clone(), partition))
                .or_insert_with(|| Window::new(start));
            // The start first: changes before it are forgotten anyway, and a start that
            // retention moved far ahead must not fill the window up to it.
            window.advance_to(start);
            for change in changes {
                let ahead = change.offset.saturating_sub(window.start());
                if ahead >= MAX_WINDOW_RECORDS_CAP {
                    return Err(ShareError::BadJournalOffset {
                        group,
                        topic,
                        partition,
                        offset: change.offset,
                        ahead,
                        cap: MAX_WINDOW_RECORDS_CAP,
                    });
                }
                window.restore(change);
            }
        }
        Entry::Forget { group } => {
            states.remove(&group);
        }
        Entry::Delay {
            group,
            topic,
            partition,
            delays,
        } => {
            let Some(window) = states
                .get_mut(&group)
                .and_then(|state| state.windows.get_mut(&(topic, partition)))
            else {
                return Ok(());
            };
            let (now, now_ms) = (Instant::now(), crate::log::now_ms().max(0) as u64);
            for (offset, not_before_ms) in delays.into_iter().filter(|(_, ms)| *ms > now_ms) {
                let left = Duration::from_millis(not_before_ms - now_ms);
                window.restore_delay(offset, now + left);
            }
        }
    }
    Ok(())
}

/// The delays of `window`'s records for which `wanted` holds, as the journal keeps them:
/// (offset, not before in wall-clock milliseconds).
fn delays_of(window: &Window, now: Instant, wanted: impl Fn(u64) -> bool) -> Vec<(u64, u64)> {
    let now_ms = crate::log::now_ms().max(0) as u64;
    window
        .delays(now)
        .into_iter()
        .filter(|(offset, _)| wanted(*offset))
        .map(|(offset, until)| {
            let left_ms = until.saturating_duration_since(now).as_millis() as u64;
            (offset, now_ms.saturating_add(left_ms))
        })
        .collect()
}

fn release_member(group: &str, state: &mut GroupState, member: &str, entries: &mut Vec<Entry>) {
    for ((topic, partition), window) in state.windows.iter_mut() {
        let changes = window.release_member(member);
        if !changes.is_empty() {
            entries.push(Entry::Window {
                group: group.to_string(),
                topic: topic.clone(),
                partition: *partition,
                start: window.start(),
                changes,
            });
        }
    }
}

fn check_member(member: &str) -> Result<Arc<str>, ShareError> {
    if member.is_empty() || member.chars().count() > MAX_MEMBER_ID_CHARS {
        return Err(ShareError::BadMember {
            max: MAX_MEMBER_ID_CHARS,
        });
    }
    Ok(Arc::from(member))
}

fn earliest(a: Option<Instant>, b: Option<Instant>) -> Option<Instant> {
    match (a, b) {
        (Some(a), Some(b)) => Some(a.min(b)),
        (a, b) => a.or(b),
    }
}

fn add_counters(total: &mut WindowCounters, more: &WindowCounters) {
    total.delivered += more.delivered;
    total.redelivered += more.redelivered;
    total.acked += more.acked;
    total.released += more.released;
    total.dead_lettered += more.dead_lettered;
    total.dropped += more.dropped;
    total.lock_expiries += more.lock_expiries;
    total.skipped += more.skipped;
}

/// Reads the records at `offsets` (sorted) from the log, skipping the spans between them.
fn read_offsets(
    partition: &Partition,
    offsets: &[u64],
) -> Result<BTreeMap<u64, Record>, ShareError> {
    let mut found = BTreeMap::new();
    let Some(&last) = offsets.last() else {
        return Ok(found);
    };
    let mut next = offsets[0];
    loop {
        let fetched = match partition.read_through(next, last, READ_BYTES) {
            Err(LogError::OffsetOutOfRange { .. }) => return Ok(found),
            read => read?,
        };
        if fetched.data.is_empty() {
            return Ok(found);
        }
        let decoded =
            batch::decode_all(&Bytes::from(fetched.data), next).map_err(ShareError::Decode)?;
        for (offset, record) in decoded {
            if offsets.binary_search(&offset).is_ok() {
                found.insert(offset, record);
            }
        }
        // On to the next wanted offset at or after what this read reached.
        let index = offsets.partition_point(|o| *o < fetched.next_offset);
        match offsets.get(index) {
            Some(&wanted) if fetched.next_offset > next && wanted <= last => next = wanted,
            _ => return Ok(found),
        }
    }
}

/// Runs of consecutive offsets with the same delivery count, as (first, last, count), from
/// (offset, count) pairs in offset order: how both doors describe what a fetch acquired.
pub fn acquired_ranges(taken: impl IntoIterator<Item = (u64, u16)>) -> Vec<(u64, u64, u16)> {
    let mut ranges: Vec<(u64, u64, u16)> = Vec::new();
    for (offset, count) in taken {
        match ranges.last_mut() {
            Some((_, last, c)) if *last + 1 == offset && *c == count => *last = offset,
            _ => ranges.push((offset, offset, count)),
        }
    }
    ranges
}

/// The stored batches (the log's format, whole) holding every offset from `first` to `last`:
/// what a door sends when the client decodes batches itself and keeps the acquired records.
pub fn read_batches(partition: &Partition, first: u64, last: u64) -> Result<Vec<u8>, LogError> {
    let mut data = Vec::new();
    let mut next = first;
    while next <= last {
        let fetched = partition.read_through(next, last, READ_BYTES)?;
        if fetched.data.is_empty() || fetched.next_offset <= next {
            break;
        }
        data.extend_from_slice(&fetched.data);
        next = fetched.next_offset;
    }
    Ok(data)
}

/// The dead letter of a record: the record with why, how many deliveries, and where it was
/// read from in `sluice.dlq.*` headers (as a plugin group's dead letters carry).
fn letter(record: &Record, dead: &DeadLetter, group: &str) -> Record {
    let text = |s: String| Some(Bytes::from(s));
    let mut headers = record.headers.clone();
    for (key, value) in [
        (DLQ_ERROR, dead.reason.to_string()),
        (DLQ_ATTEMPTS, dead.deliveries.to_string()),
        (DLQ_GROUP, group.to_string()),
        (DLQ_TOPIC, dead.topic.clone()),
        (DLQ_PARTITION, dead.partition.to_string()),
        (DLQ_OFFSET, dead.offset.to_string()),
    ] {
        headers.push(Header {
            key: key.into(),
            value: text(value),
        });
    }
    Record {
        timestamp: record.timestamp,
        key: record.key.clone(),
        value: record.value.clone(),
        headers,
    }
}

/// Waits until any of `partitions` has a record at or after its offset, or `timeout`.
async fn any_new_record(partitions: &[(Arc<Partition>, u64)], timeout: Duration) {
    if partitions.is_empty() {
        return std::future::pending().await;
    }
    let waits = partitions
        .iter()
        .map(|(partition, offset)| Box::pin(partition.wait_for_records(*offset, timeout)));
    futures::future::select_all(waits).await;
}

async fn blocking<T: Send + 'static>(
    work: impl FnOnce() -> Result<T, ShareError> + Send + 'static,
) -> Result<T, ShareError> {
    tokio::task::spawn_blocking(work)
        .await
        .map_err(|e| ShareError::Task(e.to_string()))?
}
