//! Named snapshots of a group's committed state and offsets, to roll back to: taken on
//! request and before every upgrade, restored by `plugin rollback --to-snapshot`. A snapshot
//! is a copy inside plugins.redb, taken and restored in one transaction each, so it always
//! pairs a state with the offsets it was committed with.

use std::sync::Arc;

use redb::{ReadableTable, TableDefinition, WriteTransaction};
use serde::{Deserialize, Serialize};

use super::{DLQ_REPLAY, OFFSETS, STATE, StoreError, TxnStore};

/// (group, snapshot) -> the snapshot's description (JSON).
const SNAPSHOTS: TableDefinition<(&str, &str), &[u8]> = TableDefinition::new("plugin_snapshots");
/// (space, snapshot, key) -> value: the state of the group's snapshots, under the space of the
/// state they copy (see `space`), so they go with it when the group lets go of its state.
pub(super) const SNAPSHOT_STATE: TableDefinition<(&str, &str, &[u8]), &[u8]> =
    TableDefinition::new("plugin_snapshot_state");

/// What a snapshot holds, besides the state itself.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SnapshotInfo {
    pub name: String,
    /// The plugin version active when it was taken.
    pub version: u32,
    pub created_ms: i64,
    /// The committed next offset of each input partition: the state is the effect of the
    /// records before them.
    pub offsets: Vec<SnapshotOffset>,
    pub dlq_replay: Option<(u64, u64)>,
    pub state_entries: u64,
    pub state_bytes: u64,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SnapshotOffset {
    pub topic: String,
    pub partition: u32,
    pub next_offset: u64,
}

#[derive(Debug, thiserror::Error)]
pub enum SnapshotError {
    #[error(
        "group {group} has no snapshot named `{name}`; `sluice plugin snapshots --group {group}` lists them"
    )]
    Unknown { group: String, name: String },
    #[error("group {group} already has a snapshot named `{name}`; choose another name")]
    Exists { group: String, name: String },
    #[error(transparent)]
    Store(#[from] StoreError),
}

impl TxnStore {
    /// Copies the group's committed state, offsets and replay cursor into snapshot `name`.
    pub fn take_snapshot(
        &self,
        group: &str,
        name: &str,
        version: u32,
        created_ms: i64,
    ) -> Result<SnapshotInfo, SnapshotError> {
        let txn = self.db.begin_write().map_err(|e| self.error(e))?;
        let info = {
            let mut snapshots = txn.open_table(SNAPSHOTS).map_err(|e| self.error(e))?;
            if snapshots
                .get((group, name))
                .map_err(|e| self.error(e))?
                .is_some()
            {
                return Err(SnapshotError::Exists {
                    group: group.to_string(),
                    name: name.to_string(),
                });
            }
            let space = self.space_in(&txn, group)?;
            let state = txn.open_table(STATE).map_err(|e| self.error(e))?;
            let mut copy = txn.open_table(SNAPSHOT_STATE).map_err(|e| self.error(e))?;
            let (state_entries, state_bytes) = self.visit_state(&state, &space, |key, value| {
                copy.insert((space.as_str(), name, key), value)
                    .map(drop)
                    .map_err(|e| self.error(e))
            })?;
            let info = SnapshotInfo {
                name: name.to_string(),
                version,
                created_ms,
                offsets: self.offsets_in(&txn, group)?,
                dlq_replay: self.replay_in(&txn, group)?,
                state_entries,
                state_bytes,
            };
            let json = serde_json::to_vec(&info).expect("a snapshot description serializes");
            snapshots
                .insert((group, name), json.as_slice())
                .map_err(|e| self.error(e))?;
            info
        };
        txn.commit().map_err(|e| self.error(e))?;
        Ok(info)
    }

    /// The group's snapshots, by name.
    pub fn snapshots(&self, group: &str) -> Result<Vec<SnapshotInfo>, StoreError> {
        let txn = self.db.begin_read().map_err(|e| self.error(e))?;
        let table = txn.open_table(SNAPSHOTS).map_err(|e| self.error(e))?;
        let mut out = Vec::new();
        for entry in table
            .range((group, "")..=(group, "\u{10FFFF}"))
            .map_err(|e| self.error(e))?
        {
            let (_, value) = entry.map_err(|e| self.error(e))?;
            out.push(serde_json::from_slice(value.value()).map_err(|e| {
                StoreError::SnapshotDescription {
                    path: self.path.clone(),
                    source: Arc::new(e),
                }
            })?);
        }
        Ok(out)
    }

    /// Snapshot `name` of the group.
    pub fn snapshot(&self, group: &str, name: &str) -> Result<SnapshotInfo, SnapshotError> {
        self.snapshots(group)?
            .into_iter()
            .find(|s| s.name == name)
            .ok_or_else(|| SnapshotError::Unknown {
                group: group.to_string(),
                name: name.to_string(),
            })
    }

    /// Replaces the group's state, offsets and replay cursor by those of snapshot `name`.
    /// Outbox entries stay: they are effects that already committed.
    pub fn restore_snapshot(&self, group: &str, name: &str) -> Result<SnapshotInfo, SnapshotError> {
        let info = self.snapshot(group, name)?;
        let txn = self.db.begin_write().map_err(|e| self.error(e))?;
        {
            self.clear_offsets(&txn, group)?;
            let space = self.space_in(&txn, group)?;
            let none: &[u8] = &[];
            let end = super::space::space_end(&space);
            let mut state = txn.open_table(STATE).map_err(|e| self.error(e))?;
            state
                .retain_in((space.as_str(), none)..(end.as_str(), none), |_, _| false)
                .map_err(|e| self.error(e))?;
            let copy = txn.open_table(SNAPSHOT_STATE).map_err(|e| self.error(e))?;
            for entry in copy
                .range((space.as_str(), name, none)..)
                .map_err(|e| self.error(e))?
            {
                let (key, value) = entry.map_err(|e| self.error(e))?;
                let (s, n, k) = key.value();
                if s != space || n != name {
                    break;
                }
                state
                    .insert((space.as_str(), k), value.value())
                    .map_err(|e| self.error(e))?;
            }
            drop(state);
            self.set_size(&txn, &space, (info.state_entries, info.state_bytes))?;
            let mut offsets = txn.open_table(OFFSETS).map_err(|e| self.error(e))?;
            for o in &info.offsets {
                offsets
                    .insert((group, o.topic.as_str(), o.partition), o.next_offset)
                    .map_err(|e| self.error(e))?;
            }
            let mut replay = txn.open_table(DLQ_REPLAY).map_err(|e| self.error(e))?;
            match info.dlq_replay {
                Some(cursor) => replay.insert(group, cursor).map(drop),
                None => replay.remove(group).map(drop),
            }
            .map_err(|e| self.error(e))?;
        }
        txn.commit().map_err(|e| self.error(e))?;
        Ok(info)
    }

    pub(super) fn create_snapshot_tables(&self, txn: &WriteTransaction) -> Result<(), StoreError> {
        txn.open_table(SNAPSHOTS).map_err(|e| self.error(e))?;
        txn.open_table(SNAPSHOT_STATE).map_err(|e| self.error(e))?;
        Ok(())
    }

    /// Drops the descriptions of every snapshot of the group (part of `forget`); their
    /// state goes with the group's state space.
    pub(super) fn drop_snapshots(
        &self,
        txn: &WriteTransaction,
        group: &str,
    ) -> Result<(), StoreError> {
        let mut snapshots = txn.open_table(SNAPSHOTS).map_err(|e| self.error(e))?;
        snapshots
            .retain_in((group, "")..=(group, "\u{10FFFF}"), |_, _| false)
            .map_err(|e| self.error(e))?;
        Ok(())
    }

    fn replay_in(
        &self,
        txn: &WriteTransaction,
        group: &str,
    ) -> Result<Option<(u64, u64)>, StoreError> {
        let table = txn.open_table(DLQ_REPLAY).map_err(|e| self.error(e))?;
        let cursor = table.get(group).map_err(|e| self.error(e))?;
        Ok(cursor.map(|v| v.value()))
    }

    fn offsets_in(
        &self,
        txn: &WriteTransaction,
        group: &str,
    ) -> Result<Vec<SnapshotOffset>, StoreError> {
        let table = txn.open_table(OFFSETS).map_err(|e| self.error(e))?;
        let offsets = self.read_offsets(&table, group)?;
        Ok(offsets
            .into_iter()
            .map(|(topic, partition, next_offset)| SnapshotOffset {
                topic,
                partition,
                next_offset,
            })
            .collect())
    }
}
