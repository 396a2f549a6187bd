//! A share group's settings (each group's own, kept in the journal) and the engine-wide
//! limits around them (`[share_groups]` in sluice.toml).

use serde::{Deserialize, Serialize};

use super::error::ShareError;

/// What happens to a record older than `message_ttl_ms` when it is due for delivery.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum OnExpiry {
    /// To the dead-letter topic, with why.
    #[default]
    DeadLetter,
    /// Dropped (acknowledged without a delivery).
    Drop,
}

/// Where a new share group starts on a partition.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum StartAt {
    /// The log start: a queue made over a topic takes its backlog (Sluice's default).
    #[default]
    Earliest,
    /// The high watermark: only records produced from then on (Kafka's default).
    Latest,
}

/// One share group's settings; `PUT /v1/share-groups/{group}` sets them.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct GroupSettings {
    /// How long a delivered record stays locked to its member unless acknowledged or renewed
    /// (a fetch may ask for another, within the engine's limits).
    pub record_lock_ms: u64,
    /// Deliveries after which a record that is still not acknowledged is dead-lettered.
    pub max_deliveries: u16,
    /// Records older than this when due for delivery are expired (0: never).
    pub message_ttl_ms: u64,
    pub on_expiry: OnExpiry,
    /// Where rejected, expired and undeliverable records go (default: `<group>.dlq`).
    pub dead_letter_topic: Option<String>,
    pub start_at: StartAt,
}

impl Default for GroupSettings {
    fn default() -> Self {
        GroupSettings {
            record_lock_ms: 30_000,
            max_deliveries: 5,
            message_ttl_ms: 0,
            on_expiry: OnExpiry::DeadLetter,
            dead_letter_topic: None,
            start_at: StartAt::Earliest,
        }
    }
}

impl GroupSettings {
    pub fn dead_letter_topic(&self, group: &str) -> String {
        self.dead_letter_topic
            .clone()
            .unwrap_or_else(|| format!("{group}.dlq"))
    }

    pub fn check(&self, limits: &Limits) -> Result<(), ShareError> {
        limits.check_lock(self.record_lock_ms)?;
        if !(1..=MAX_DELIVERIES).contains(&self.max_deliveries) {
            return Err(ShareError::BadSetting {
                field: "max_deliveries",
                why: format!("must be between 1 and {MAX_DELIVERIES}"),
            });
        }
        Ok(())
    }
}

/// The largest `max_deliveries` (Kafka's group.share.delivery.count.limit allows 2 to 10).
pub const MAX_DELIVERIES: u16 = 1000;

/// The most records a window may be configured to hold (`max_window_records`): it bounds the
/// memory of a window, and a journal entry further ahead than this is damage.
pub const MAX_WINDOW_RECORDS_CAP: u64 = 1_000_000;

/// Engine-wide limits (`[share_groups]`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Limits {
    /// Records one partition's in-flight window holds at most: from the first record not
    /// done to the last delivered (Kafka's group.share.partition.max.record.locks).
    pub max_window_records: u64,
    pub min_record_lock_ms: u64,
    pub max_record_lock_ms: u64,
    /// A member that makes no call for this long leaves, and its locks are released.
    pub session_timeout_ms: u64,
    /// Share groups the engine holds at most.
    pub max_groups: usize,
    /// Members of one share group at most.
    pub max_members: usize,
    /// The journal is rewritten as a snapshot when it grows past this.
    pub journal_compact_bytes: u64,
    /// What a group starts with until `PUT /v1/share-groups/{group}` says otherwise.
    pub defaults: GroupSettings,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_window_records: 10_000,
            min_record_lock_ms: 100,
            max_record_lock_ms: 3_600_000,
            session_timeout_ms: 45_000,
            max_groups: 10_000,
            max_members: 10_000,
            journal_compact_bytes: 64 * 1024 * 1024,
            defaults: GroupSettings::default(),
        }
    }
}

impl Limits {
    pub fn check_lock(&self, lock_ms: u64) -> Result<(), ShareError> {
        if !(self.min_record_lock_ms..=self.max_record_lock_ms).contains(&lock_ms) {
            return Err(ShareError::BadSetting {
                field: "record_lock_ms",
                why: format!(
                    "{lock_ms} is outside [share_groups] min_record_lock_ms..max_record_lock_ms ({}..{})",
                    self.min_record_lock_ms, self.max_record_lock_ms
                ),
            });
        }
        Ok(())
    }
}
