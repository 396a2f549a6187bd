//! State spaces: where in `plugin_state` a group's state lives, how large it is, and the
//! dropping of a space the group let go of.
//!
//! A group's state is the entries `(space, key)` of `plugin_state`, where the space is the
//! group's name for its first state (so data directories of earlier versions read unchanged)
//! and `<group>/<epoch>` after it dropped its state `epoch` times: a group name holds no `/`,
//! so no two spaces collide. Dropping a group's state (undeploy, a new deployment under an
//! old name) moves the group to a new, empty space in one small transaction and queues the old
//! space; a background thread deletes queued spaces (their state and snapshot copies) in
//! chunks of [`DROP_CHUNK_ENTRIES`], each its own transaction, so dropping a million keys
//! blocks neither the API nor other groups' commits for longer than one chunk.
//!
//! The size of each space (entries, and bytes of keys and values) is kept up to date by every
//! commit, so `plugin describe` and the `max_state_bytes` limit need no scan.

use std::sync::{Arc, Weak};
use std::time::Duration;

use parking_lot::{Condvar, Mutex};
use redb::{ReadableTable, ReadableTableMetadata, TableDefinition, TableHandle, WriteTransaction};

use super::snapshot::SNAPSHOT_STATE;
use super::{STATE, StoreError, TxnStore};

/// group -> how many times it dropped its state (absent: never).
pub(super) const STATE_EPOCHS: TableDefinition<&str, u64> =
    TableDefinition::new("plugin_state_epochs");
/// space -> (entries, bytes of keys and values).
const STATE_SIZES: TableDefinition<&str, (u64, u64)> = TableDefinition::new("plugin_state_sizes");
/// Spaces let go of and not yet deleted.
const STATE_DROPS: TableDefinition<&str, ()> = TableDefinition::new("plugin_state_drops");

/// Entries one transaction of the background drop deletes.
pub const DROP_CHUNK_ENTRIES: usize = 4_096;
/// How long the dropping thread sleeps when nothing is queued (it is woken by a drop).
const DROP_IDLE_WAIT: Duration = Duration::from_secs(10);
/// How long it waits after a failed chunk before trying again.
const DROP_RETRY_WAIT: Duration = Duration::from_secs(1);

/// The space of a group's state after `epoch` drops.
pub(super) fn space_name(group: &str, epoch: u64) -> String {
    if epoch == 0 {
        group.to_string()
    } else {
        format!("{group}/{epoch}")
    }
}

/// Keys of `space` in a table keyed by (space, ...): every key whose first part is `space`,
/// as the smallest string after `space` is `space` followed by a NUL.
pub(super) fn space_end(space: &str) -> String {
    format!("{space}\0")
}

/// Wakes the dropping thread when a space is queued.
#[derive(Default)]
pub(super) struct DropSignal {
    queued: Mutex<bool>,
    wake: Condvar,
}

impl DropSignal {
    fn notify(&self) {
        *self.queued.lock() = true;
        self.wake.notify_one();
    }

    fn wait(&self, timeout: Duration) {
        let mut queued = self.queued.lock();
        if !*queued {
            self.wake.wait_for(&mut queued, timeout);
        }
        *queued = false;
    }
}

impl TxnStore {
    pub(super) fn create_space_tables(&self, txn: &WriteTransaction) -> Result<(), StoreError> {
        let had_sizes = txn
            .list_tables()
            .map_err(|e| self.error(e))?
            .any(|t| t.name() == STATE_SIZES.name());
        txn.open_table(STATE_EPOCHS).map_err(|e| self.error(e))?;
        txn.open_table(STATE_DROPS).map_err(|e| self.error(e))?;
        txn.open_table(STATE_SIZES).map_err(|e| self.error(e))?;
        if !had_sizes {
            self.measure_spaces(txn)?;
        }
        Ok(())
    }

    /// Fills `STATE_SIZES` from the state itself: once, for a store written before sizes
    /// were kept.
    fn measure_spaces(&self, txn: &WriteTransaction) -> Result<(), StoreError> {
        let state = txn.open_table(STATE).map_err(|e| self.error(e))?;
        let mut sizes = txn.open_table(STATE_SIZES).map_err(|e| self.error(e))?;
        let mut current: Option<(String, u64, u64)> = None;
        for entry in state.iter().map_err(|e| self.error(e))? {
            let (key, value) = entry.map_err(|e| self.error(e))?;
            let (space, k) = key.value();
            let bytes = (k.len() + value.value().len()) as u64;
            match &mut current {
                Some((name, entries, total)) if name == space => {
                    *entries += 1;
                    *total += bytes;
                }
                _ => {
                    if let Some((name, entries, total)) = current.take() {
                        sizes
                            .insert(name.as_str(), (entries, total))
                            .map_err(|e| self.error(e))?;
                    }
                    current = Some((space.to_string(), 1, bytes));
                }
            }
        }
        if let Some((name, entries, total)) = current {
            sizes
                .insert(name.as_str(), (entries, total))
                .map_err(|e| self.error(e))?;
        }
        Ok(())
    }

    /// The space holding `group`'s state now.
    pub(super) fn space_of(
        &self,
        epochs: &impl ReadableTable<&'static str, u64>,
        group: &str,
    ) -> Result<String, StoreError> {
        let epoch = epochs.get(group).map_err(|e| self.error(e))?;
        Ok(space_name(group, epoch.map_or(0, |e| e.value())))
    }

    /// The space holding `group`'s state, within a write transaction.
    pub(super) fn space_in(
        &self,
        txn: &WriteTransaction,
        group: &str,
    ) -> Result<String, StoreError> {
        let epochs = txn.open_table(STATE_EPOCHS).map_err(|e| self.error(e))?;
        self.space_of(&epochs, group)
    }

    /// The space holding `group`'s state, in a read transaction of its own.
    pub(super) fn space(
        &self,
        txn: &redb::ReadTransaction,
        group: &str,
    ) -> Result<String, StoreError> {
        let epochs = txn.open_table(STATE_EPOCHS).map_err(|e| self.error(e))?;
        self.space_of(&epochs, group)
    }

    /// Entries and bytes of `group`'s state, as of the last commit.
    pub fn state_size(&self, group: &str) -> Result<(u64, u64), StoreError> {
        let txn = self.db.begin_read().map_err(|e| self.error(e))?;
        let space = self.space(&txn, group)?;
        let sizes = txn.open_table(STATE_SIZES).map_err(|e| self.error(e))?;
        let size = sizes.get(space.as_str()).map_err(|e| self.error(e))?;
        Ok(size.map_or((0, 0), |s| s.value()))
    }

    /// Adds `change` (entries, bytes; either may be negative) to the size of `space`.
    pub(super) fn resize(
        &self,
        txn: &WriteTransaction,
        space: &str,
        change: (i64, i64),
    ) -> Result<(), StoreError> {
        if change == (0, 0) {
            return Ok(());
        }
        let mut sizes = txn.open_table(STATE_SIZES).map_err(|e| self.error(e))?;
        let (entries, bytes) = sizes
            .get(space)
            .map_err(|e| self.error(e))?
            .map_or((0, 0), |s| s.value());
        let size = (
            entries.saturating_add_signed(change.0),
            bytes.saturating_add_signed(change.1),
        );
        sizes.insert(space, size).map_err(|e| self.error(e))?;
        Ok(())
    }

    /// Sets the size of `space` (after its state was replaced).
    pub(super) fn set_size(
        &self,
        txn: &WriteTransaction,
        space: &str,
        size: (u64, u64),
    ) -> Result<(), StoreError> {
        let mut sizes = txn.open_table(STATE_SIZES).map_err(|e| self.error(e))?;
        sizes.insert(space, size).map_err(|e| self.error(e))?;
        Ok(())
    }

    /// Moves `group` to a new, empty space and queues its old one for the background drop
    /// (within `txn`). The snapshots' descriptions go at once; their state with the space.
    pub(super) fn let_go_of_state(
        &self,
        txn: &WriteTransaction,
        group: &str,
    ) -> Result<(), StoreError> {
        let mut epochs = txn.open_table(STATE_EPOCHS).map_err(|e| self.error(e))?;
        let epoch = epochs
            .get(group)
            .map_err(|e| self.error(e))?
            .map_or(0, |e| e.value());
        epochs.insert(group, epoch + 1).map_err(|e| self.error(e))?;
        let mut drops = txn.open_table(STATE_DROPS).map_err(|e| self.error(e))?;
        drops
            .insert(space_name(group, epoch).as_str(), ())
            .map_err(|e| self.error(e))?;
        self.drops.notify();
        Ok(())
    }

    /// Spaces queued for dropping and not yet gone.
    pub fn state_drops_pending(&self) -> Result<u64, StoreError> {
        let txn = self.db.begin_read().map_err(|e| self.error(e))?;
        let drops = txn.open_table(STATE_DROPS).map_err(|e| self.error(e))?;
        drops.len().map_err(|e| self.error(e))
    }

    /// Deletes up to `limit` entries of the first queued space, in one transaction; the
    /// space leaves the queue once nothing of it remains. Returns the entries deleted.
    pub fn drop_state_chunk(&self, limit: usize) -> Result<usize, StoreError> {
        let txn = self.db.begin_write().map_err(|e| self.error(e))?;
        let deleted = {
            let mut drops = txn.open_table(STATE_DROPS).map_err(|e| self.error(e))?;
            let Some(space) = drops
                .first()
                .map_err(|e| self.error(e))?
                .map(|(k, _)| k.value().to_string())
            else {
                return Ok(0);
            };
            let end = space_end(&space);
            let none: &[u8] = &[];
            let mut state = txn.open_table(STATE).map_err(|e| self.error(e))?;
            let mut deleted = 0;
            let mut keys = Vec::new();
            for entry in state
                .range((space.as_str(), none)..(end.as_str(), none))
                .map_err(|e| self.error(e))?
                .take(limit)
            {
                keys.push(entry.map_err(|e| self.error(e))?.0.value().1.to_vec());
            }
            for key in &keys {
                state
                    .remove((space.as_str(), key.as_slice()))
                    .map_err(|e| self.error(e))?;
            }
            deleted += keys.len();
            let mut copies = txn.open_table(SNAPSHOT_STATE).map_err(|e| self.error(e))?;
            let mut copied = Vec::new();
            for entry in copies
                .range((space.as_str(), "", none)..(end.as_str(), "", none))
                .map_err(|e| self.error(e))?
                .take(limit - deleted)
            {
                let key = entry.map_err(|e| self.error(e))?.0;
                let (_, name, k) = key.value();
                copied.push((name.to_string(), k.to_vec()));
            }
            for (name, key) in &copied {
                copies
                    .remove((space.as_str(), name.as_str(), key.as_slice()))
                    .map_err(|e| self.error(e))?;
            }
            deleted += copied.len();
            if deleted < limit {
                drops.remove(space.as_str()).map_err(|e| self.error(e))?;
                let mut sizes = txn.open_table(STATE_SIZES).map_err(|e| self.error(e))?;
                sizes.remove(space.as_str()).map_err(|e| self.error(e))?;
            } else {
                self.resize(&txn, &space, (-(keys.len() as i64), 0))?;
            }
            deleted
        };
        txn.commit().map_err(|e| self.error(e))?;
        Ok(deleted)
    }

    /// Starts the thread that drops queued spaces, chunk by chunk; it ends with the store.
    pub(super) fn start_dropping(self: &Arc<Self>) {
        let store = Arc::downgrade(self);
        let started = std::thread::Builder::new()
            .name("sluice-state-drop".into())
            .spawn(move || drop_queued_spaces(store));
        if let Err(error) = started {
            tracing::error!(%error, "cannot start the thread that drops let-go state; it stays on disk until the next start");
        }
    }
}

fn drop_queued_spaces(store: Weak<TxnStore>) {
    loop {
        let Some(strong) = store.upgrade() else {
            return;
        };
        let wait = match strong.drop_state_chunk(DROP_CHUNK_ENTRIES) {
            Ok(0) => Some(DROP_IDLE_WAIT),
            Ok(_) => None,
            Err(error) => {
                tracing::error!(%error, "dropping let-go state failed; trying again");
                Some(DROP_RETRY_WAIT)
            }
        };
        let signal = strong.drops.clone();
        drop(strong);
        if let Some(wait) = wait {
            signal.wait(wait);
        }
    }
}
