//! The store of plugin consumer groups (`plugins.redb`): each group's keyed state, its
//! committed input offsets, its dead-letter replay cursor and its outbox of emitted records.
//! A commit applies state writes, new offsets and the emitted records (as an outbox entry) in
//! one redb transaction, so after a crash state, offsets and output always agree; the outbox
//! entry is appended to the log after the commit and deleted once it is there.

mod group_commit;
pub mod outbox;
#[cfg(test)]
mod power_loss;
mod snapshot;
mod space;
pub mod state;

use std::path::Path;
use std::sync::Arc;

use redb::{Database, ReadableTable, TableDefinition, WriteTransaction};

use state::{Scanned, StateError, StateStore, StateWrites, scan_start};

use group_commit::{Commit, GroupCommit};
pub use snapshot::{SnapshotError, SnapshotInfo, SnapshotOffset};

/// (group, topic, partition) -> next offset to process.
const OFFSETS: TableDefinition<(&str, &str, u32), u64> = TableDefinition::new("plugin_offsets");
/// (space, key) -> value: the space is the group's name, or another name after the group let
/// go of its state (see `space`).
const STATE: TableDefinition<(&str, &[u8]), &[u8]> = TableDefinition::new("plugin_state");
/// group -> (next dead-letter offset to replay, replay end).
const DLQ_REPLAY: TableDefinition<&str, (u64, u64)> = TableDefinition::new("plugin_dlq_replay");
/// (group, sequence) -> outbox entry (see `outbox`), committed but maybe not yet in the log.
const OUTBOX: TableDefinition<(&str, u64), &[u8]> = TableDefinition::new("plugin_outbox");
/// group -> the next outbox sequence number.
const OUTBOX_SEQ: TableDefinition<&str, u64> = TableDefinition::new("plugin_outbox_seq");

/// The keys of `group`'s offsets in `OFFSETS`.
fn offsets_of(group: &str) -> std::ops::RangeInclusive<(&str, &str, u32)> {
    (group, "", 0u32)..=(group, "\u{10FFFF}", u32::MAX)
}

/// What one commit changes besides state and offsets.
#[derive(Debug, Default)]
pub struct CommitExtras<'a> {
    /// The dead-letter replay cursor and end.
    pub replay: Option<(u64, u64)>,
    /// A new outbox entry (encoded by `outbox::encode`); it gets the next sequence number.
    pub outbox: Option<Vec<u8>>,
    /// Outbox entries now in the log.
    pub delivered: &'a [u64],
}

/// Why the plugin store failed. Cloned to every commit of a failed group commit, so the
/// causes are shared.
#[derive(Debug, Clone, thiserror::Error)]
#[non_exhaustive]
pub enum StoreError {
    #[error("plugin store ({path}): {source}")]
    Database {
        path: String,
        source: Arc<redb::Error>,
    },
    #[error("plugin store ({path}): a snapshot description is unreadable: {source}")]
    SnapshotDescription {
        path: String,
        source: Arc<serde_json::Error>,
    },
}

impl StoreError {
    fn database(path: impl Into<String>, source: impl Into<redb::Error>) -> StoreError {
        StoreError::Database {
            path: path.into(),
            source: Arc::new(source.into()),
        }
    }
}

/// A position to commit: the next offset to process in one input partition.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Position<'a> {
    pub topic: &'a str,
    pub partition: u32,
    pub next_offset: u64,
}

pub struct TxnStore {
    db: Database,
    path: String,
    group_commit: GroupCommit,
    /// Wakes the thread that drops state let go of (see `space`).
    drops: Arc<space::DropSignal>,
}

impl TxnStore {
    pub fn open(path: &Path) -> Result<Arc<TxnStore>, StoreError> {
        let display = path.display().to_string();
        if !path.exists() {
            // A file torn while redb wrote its first header could not be opened again: build
            // the new store under another name and rename it into place once it is durable.
            let fresh = path.with_extension("redb.new");
            let io = |e: std::io::Error| StoreError::database(fresh.display().to_string(), e);
            match std::fs::remove_file(&fresh) {
                Err(e) if e.kind() != std::io::ErrorKind::NotFound => return Err(io(e)),
                _ => {}
            }
            drop(TxnStore::with_database(
                Database::create(&fresh),
                fresh.display().to_string(),
            )?);
            std::fs::rename(&fresh, path).map_err(io)?;
            let dir = path.parent().unwrap_or(Path::new("."));
            std::fs::File::open(dir)
                .and_then(|d| d.sync_all())
                .map_err(io)?;
        }
        let store = TxnStore::with_database(Database::create(path), display)?;
        store.start_dropping();
        Ok(store)
    }

    /// A store on any storage (the power-loss tests use one that can lose unsynced writes).
    pub fn open_on(
        backend: impl redb::StorageBackend,
        name: &str,
    ) -> Result<Arc<TxnStore>, StoreError> {
        let db = Database::builder().create_with_backend(backend);
        TxnStore::with_database(db, name.to_string())
    }

    fn with_database(
        db: Result<Database, redb::DatabaseError>,
        path: String,
    ) -> Result<Arc<TxnStore>, StoreError> {
        let db = db.map_err(|e| StoreError::database(path.clone(), e))?;
        let store = TxnStore {
            db,
            path,
            group_commit: GroupCommit::default(),
            drops: Arc::default(),
        };
        let txn = store.db.begin_write().map_err(|e| store.error(e))?;
        txn.open_table(OFFSETS).map_err(|e| store.error(e))?;
        txn.open_table(STATE).map_err(|e| store.error(e))?;
        txn.open_table(DLQ_REPLAY).map_err(|e| store.error(e))?;
        txn.open_table(OUTBOX).map_err(|e| store.error(e))?;
        txn.open_table(OUTBOX_SEQ).map_err(|e| store.error(e))?;
        store.create_snapshot_tables(&txn)?;
        store.create_space_tables(&txn)?;
        txn.commit().map_err(|e| store.error(e))?;
        Ok(Arc::new(store))
    }

    fn error(&self, error: impl Into<redb::Error>) -> StoreError {
        StoreError::database(self.path.clone(), error)
    }

    /// The committed next offset of every input partition of `group`.
    pub fn offsets(&self, group: &str) -> Result<Vec<(String, u32, u64)>, StoreError> {
        let txn = self.db.begin_read().map_err(|e| self.error(e))?;
        let table = txn.open_table(OFFSETS).map_err(|e| self.error(e))?;
        self.read_offsets(&table, group)
    }

    fn read_offsets(
        &self,
        table: &impl ReadableTable<(&'static str, &'static str, u32), u64>,
        group: &str,
    ) -> Result<Vec<(String, u32, u64)>, StoreError> {
        let mut out = Vec::new();
        for entry in table.range(offsets_of(group)).map_err(|e| self.error(e))? {
            let (key, value) = entry.map_err(|e| self.error(e))?;
            let (_, topic, partition) = key.value();
            out.push((topic.to_string(), partition, value.value()));
        }
        Ok(out)
    }

    /// Removes every offset of `group` (within `txn`).
    fn clear_offsets(&self, txn: &WriteTransaction, group: &str) -> Result<(), StoreError> {
        let mut offsets = txn.open_table(OFFSETS).map_err(|e| self.error(e))?;
        offsets
            .retain_in(offsets_of(group), |_, _| false)
            .map_err(|e| self.error(e))?;
        Ok(())
    }

    /// Applies state writes, moves the group's positions, and applies `extras`, atomically and
    /// durably. Returns the sequence number given to the new outbox entry. Commits of other
    /// groups made meanwhile share the transaction (see `group_commit`).
    pub fn commit(
        &self,
        group: &str,
        positions: &[Position<'_>],
        writes: &StateWrites,
        extras: CommitExtras<'_>,
    ) -> Result<Option<u64>, StoreError> {
        let commit = Commit {
            group: group.to_string(),
            positions: positions
                .iter()
                .map(|p| (p.topic.to_string(), p.partition, p.next_offset))
                .collect(),
            writes: writes.clone(),
            replay: extras.replay,
            outbox: extras.outbox,
            delivered: extras.delivered.to_vec(),
        };
        self.group_commit
            .commit(commit, |batch| self.commit_together(batch))
    }

    /// (commits asked for, transactions made) since the store opened: how much group commit
    /// shares.
    pub fn commit_counts(&self) -> (u64, u64) {
        self.group_commit.counts()
    }

    /// One transaction for all of `batch`; the outbox sequence numbers given, in order.
    fn commit_together(&self, batch: &[(u64, Commit)]) -> Result<Vec<Option<u64>>, StoreError> {
        let txn = self.db.begin_write().map_err(|e| self.error(e))?;
        let mut sequences = Vec::with_capacity(batch.len());
        for (_, commit) in batch {
            sequences.push(self.apply(&txn, commit)?);
        }
        crate::crash_point::reached(crate::crash_point::BEFORE_GROUP_COMMIT);
        txn.commit().map_err(|e| self.error(e))?;
        Ok(sequences)
    }

    fn apply(&self, txn: &WriteTransaction, commit: &Commit) -> Result<Option<u64>, StoreError> {
        let group = commit.group.as_str();
        let mut offsets = txn.open_table(OFFSETS).map_err(|e| self.error(e))?;
        for (topic, partition, next_offset) in &commit.positions {
            offsets
                .insert((group, topic.as_str(), *partition), *next_offset)
                .map_err(|e| self.error(e))?;
        }
        if let Some(replay) = commit.replay {
            let mut table = txn.open_table(DLQ_REPLAY).map_err(|e| self.error(e))?;
            table.insert(group, replay).map_err(|e| self.error(e))?;
        }
        let mut outbox = txn.open_table(OUTBOX).map_err(|e| self.error(e))?;
        for seq in &commit.delivered {
            outbox.remove((group, *seq)).map_err(|e| self.error(e))?;
        }
        let mut sequence = None;
        if let Some(entry) = &commit.outbox {
            let mut sequences = txn.open_table(OUTBOX_SEQ).map_err(|e| self.error(e))?;
            let next = sequences
                .get(group)
                .map_err(|e| self.error(e))?
                .map_or(0, |v| v.value());
            sequences
                .insert(group, next + 1)
                .map_err(|e| self.error(e))?;
            outbox
                .insert((group, next), entry.as_slice())
                .map_err(|e| self.error(e))?;
            sequence = Some(next);
        }
        drop((offsets, outbox));
        self.apply_writes(txn, group, &commit.writes)?;
        Ok(sequence)
    }

    /// How many outbox entries of `group` are committed but not yet known to be in the log.
    pub fn outbox_len(&self, group: &str) -> Result<u64, StoreError> {
        let txn = self.db.begin_read().map_err(|e| self.error(e))?;
        let table = txn.open_table(OUTBOX).map_err(|e| self.error(e))?;
        let range = table
            .range((group, 0u64)..=(group, u64::MAX))
            .map_err(|e| self.error(e))?;
        Ok(range.count() as u64)
    }

    /// Outbox entries of `group` committed but not yet known to be in the log, oldest first.
    pub fn outbox(&self, group: &str) -> Result<Vec<(u64, Vec<u8>)>, StoreError> {
        let txn = self.db.begin_read().map_err(|e| self.error(e))?;
        let table = txn.open_table(OUTBOX).map_err(|e| self.error(e))?;
        let range = table
            .range((group, 0u64)..=(group, u64::MAX))
            .map_err(|e| self.error(e))?;
        let mut out = Vec::new();
        for entry in range {
            let (key, value) = entry.map_err(|e| self.error(e))?;
            out.push((key.value().1, value.value().to_vec()));
        }
        Ok(out)
    }

    fn apply_writes(
        &self,
        txn: &WriteTransaction,
        group: &str,
        writes: &StateWrites,
    ) -> Result<(), StoreError> {
        if writes.is_empty() {
            return Ok(());
        }
        let space = self.space_in(txn, group)?;
        let mut state = txn.open_table(STATE).map_err(|e| self.error(e))?;
        let (mut entries, mut bytes) = (0i64, 0i64);
        for (key, value) in writes {
            let old = match value {
                Some(value) => state.insert((space.as_str(), key.as_slice()), value.as_slice()),
                None => state.remove((space.as_str(), key.as_slice())),
            }
            .map_err(|e| self.error(e))?;
            if let Some(old) = old {
                entries -= 1;
                bytes -= (key.len() + old.value().len()) as i64;
            }
            if let Some(value) = value {
                entries += 1;
                bytes += (key.len() + value.len()) as i64;
            }
        }
        drop(state);
        self.resize(txn, &space, (entries, bytes))
    }

    /// The dead-letter replay cursor and end of `group`, if a replay was ever asked for.
    pub fn dlq_replay(&self, group: &str) -> Result<Option<(u64, u64)>, StoreError> {
        let txn = self.db.begin_read().map_err(|e| self.error(e))?;
        let table = txn.open_table(DLQ_REPLAY).map_err(|e| self.error(e))?;
        Ok(table
            .get(group)
            .map_err(|e| self.error(e))?
            .map(|v| v.value()))
    }

    /// Removes the group's offsets and replay cursor, and its state and snapshots unless
    /// `keep_state`: at once for the group, which starts again with none, and in the
    /// background for the disk (see `space`).
    pub fn forget(&self, group: &str, keep_state: bool) -> Result<(), StoreError> {
        let txn = self.db.begin_write().map_err(|e| self.error(e))?;
        {
            self.clear_offsets(&txn, group)?;
            let mut replay = txn.open_table(DLQ_REPLAY).map_err(|e| self.error(e))?;
            replay.remove(group).map_err(|e| self.error(e))?;
            let mut outbox = txn.open_table(OUTBOX).map_err(|e| self.error(e))?;
            outbox
                .retain_in((group, 0u64)..=(group, u64::MAX), |_, _| false)
                .map_err(|e| self.error(e))?;
            if !keep_state {
                self.drop_snapshots(&txn, group)?;
                self.let_go_of_state(&txn, group)?;
            }
        }
        txn.commit().map_err(|e| self.error(e))
    }

    /// Visits the entries of a state space in key order; returns their number and their bytes
    /// (keys and values).
    fn visit_state(
        &self,
        table: &impl ReadableTable<(&'static str, &'static [u8]), &'static [u8]>,
        space: &str,
        mut visit: impl FnMut(&[u8], &[u8]) -> Result<(), StoreError>,
    ) -> Result<(u64, u64), StoreError> {
        let none: &[u8] = &[];
        let end = space::space_end(space);
        let (mut count, mut bytes) = (0, 0);
        let range = table
            .range((space, none)..(end.as_str(), none))
            .map_err(|e| self.error(e))?;
        for entry in range {
            let (key, value) = entry.map_err(|e| self.error(e))?;
            let (_, k) = key.value();
            count += 1;
            bytes += (k.len() + value.value().len()) as u64;
            visit(k, value.value())?;
        }
        Ok((count, bytes))
    }

    /// The group's state as a plugin reads it.
    pub fn state_of(self: &Arc<Self>, group: &str) -> GroupState {
        GroupState {
            store: self.clone(),
            group: group.to_string(),
        }
    }
}

/// One group's committed state.
pub struct GroupState {
    store: Arc<TxnStore>,
    group: String,
}

impl GroupState {
    fn error(&self, source: impl Into<redb::Error>) -> StateError {
        StateError {
            group: self.group.clone(),
            source: Box::new(source.into()),
        }
    }

    /// A read transaction and the space of the group's state in it.
    fn read(&self) -> Result<(redb::ReadTransaction, String), StateError> {
        let txn = self.store.db.begin_read().map_err(|e| self.error(e))?;
        let epochs = txn
            .open_table(space::STATE_EPOCHS)
            .map_err(|e| self.error(e))?;
        let epoch = epochs
            .get(self.group.as_str())
            .map_err(|e| self.error(e))?
            .map_or(0, |e| e.value());
        drop(epochs);
        Ok((txn, space::space_name(&self.group, epoch)))
    }
}

impl StateStore for GroupState {
    fn get(&self, key: &[u8]) -> Result<Option<Vec<u8>>, StateError> {
        let (txn, space) = self.read()?;
        let table = txn.open_table(STATE).map_err(|e| self.error(e))?;
        Ok(table
            .get((space.as_str(), key))
            .map_err(|e| self.error(e))?
            .map(|v| v.value().to_vec()))
    }

    fn scan(
        &self,
        prefix: &[u8],
        start_after: Option<&[u8]>,
        limit: usize,
    ) -> Result<Scanned, StateError> {
        use std::ops::Bound;
        let (txn, space) = self.read()?;
        let table = txn.open_table(STATE).map_err(|e| self.error(e))?;
        let group = space.as_str();
        let start = match scan_start(prefix, start_after).0 {
            Bound::Excluded(k) => Bound::Excluded((group, k)),
            Bound::Included(k) => Bound::Included((group, k)),
            Bound::Unbounded => Bound::Unbounded,
        };
        let mut out = Vec::new();
        let range = table.range::<(&str, &[u8])>((start, Bound::Unbounded));
        for entry in range.map_err(|e| self.error(e))? {
            let (key, value) = entry.map_err(|e| self.error(e))?;
            let (g, k) = key.value();
            if g != group || !k.starts_with(prefix) || out.len() == limit {
                break;
            }
            out.push((k.to_vec(), value.value().to_vec()));
        }
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use redb::ReadableTableMetadata;

    fn writes(pairs: &[(&str, Option<&str>)]) -> StateWrites {
        pairs
            .iter()
            .map(|(k, v)| (k.as_bytes().to_vec(), v.map(|v| v.as_bytes().to_vec())))
            .collect()
    }

    #[test]
    fn state_and_offsets_commit_together_and_groups_are_separate() {
        let dir = tempfile::tempdir().unwrap();
        let store = TxnStore::open(&dir.path().join("plugins.redb")).unwrap();
        let position = Position {
            topic: "in",
            partition: 1,
            next_offset: 10,
        };
        store
            .commit(
                "a",
                &[position],
                &writes(&[("k1", Some("1")), ("k2", Some("2")), ("x", Some("3"))]),
                CommitExtras {
                    replay: Some((3, 5)),
                    outbox: Some(b"first".to_vec()),
                    delivered: &[],
                },
            )
            .unwrap();
        store
            .commit(
                "b",
                &[],
                &writes(&[("k1", Some("other"))]),
                CommitExtras::default(),
            )
            .unwrap();
        let extras = CommitExtras {
            outbox: Some(b"second".to_vec()),
            delivered: &[0],
            ..CommitExtras::default()
        };
        assert_eq!(
            store
                .commit("a", &[], &writes(&[("k2", None)]), extras)
                .unwrap(),
            Some(1)
        );
        assert_eq!(store.outbox("a").unwrap(), vec![(1, b"second".to_vec())]);
        let a = store.state_of("a");
        assert_eq!(a.get(b"k1").unwrap(), Some(b"1".to_vec()));
        assert_eq!(a.get(b"k2").unwrap(), None);
        let scanned = a.scan(b"k", None, 10).unwrap();
        assert_eq!(scanned, vec![(b"k1".to_vec(), b"1".to_vec())]);
        assert_eq!(
            store.state_of("b").scan(b"", None, 10).unwrap(),
            vec![(b"k1".to_vec(), b"other".to_vec())]
        );
        assert_eq!(store.offsets("a").unwrap(), vec![("in".to_string(), 1, 10)]);
        assert_eq!(store.dlq_replay("a").unwrap(), Some((3, 5)));
        assert_eq!(store.dlq_replay("b").unwrap(), None);
        assert_eq!(store.state_size("a").unwrap(), (2, 5));
        drop(a);
        store.forget("a", false).unwrap();
        assert!(store.offsets("a").unwrap().is_empty());
        assert_eq!(store.dlq_replay("a").unwrap(), None);
        assert!(store.outbox("a").unwrap().is_empty());
        assert_eq!(store.state_size("a").unwrap(), (0, 0));
        assert_eq!(store.state_size("b").unwrap(), (1, 7));
    }

    /// Forgetting a group's state empties it at once; the entries (and snapshot copies) leave
    /// the disk chunk by chunk, and a group deployed again under the name keeps its new state.
    #[test]
    fn forgotten_state_is_gone_at_once_and_dropped_in_chunks() {
        const KEYS: usize = space::DROP_CHUNK_ENTRIES * 2 + 10;
        let dir = tempfile::tempdir().unwrap();
        let store = TxnStore::open(&dir.path().join("plugins.redb")).unwrap();
        let many: StateWrites = (0..KEYS)
            .map(|i| (format!("key-{i:06}").into_bytes(), Some(b"v".to_vec())))
            .collect();
        store
            .commit("g", &[], &many, CommitExtras::default())
            .unwrap();
        store.take_snapshot("g", "before", 1, 0).unwrap();
        assert_eq!(
            store.state_size("g").unwrap(),
            (KEYS as u64, KEYS as u64 * 11)
        );

        store.forget("g", false).unwrap();
        assert_eq!(store.state_size("g").unwrap(), (0, 0));
        assert!(store.state_of("g").scan(b"", None, 10).unwrap().is_empty());
        assert!(store.snapshots("g").unwrap().is_empty());
        // Deployed again meanwhile: its state is its own.
        store
            .commit(
                "g",
                &[],
                &writes(&[("key-000001", Some("new"))]),
                CommitExtras::default(),
            )
            .unwrap();
        assert_eq!(store.state_size("g").unwrap(), (1, 13));

        // The store's own dropping thread takes chunks too.
        let mut chunks = 0;
        while store.state_drops_pending().unwrap() > 0 {
            let deleted = store.drop_state_chunk(space::DROP_CHUNK_ENTRIES).unwrap();
            assert!(deleted <= space::DROP_CHUNK_ENTRIES);
            chunks += 1;
            assert!(chunks < 100, "the drop does not end");
        }
        let txn = store.db.begin_read().unwrap();
        let state = txn.open_table(STATE).unwrap();
        assert_eq!(state.len().unwrap(), 1, "only the new state is left");
        let copies = txn.open_table(snapshot::SNAPSHOT_STATE).unwrap();
        assert_eq!(copies.len().unwrap(), 0, "the snapshot's copy is gone");
        assert_eq!(
            store.state_of("g").get(b"key-000001").unwrap(),
            Some(b"new".to_vec())
        );
    }

    /// Groups committing at the same time share transactions, and each still gets its own
    /// outbox sequence and its own state.
    #[test]
    fn concurrent_commits_of_several_groups_share_transactions() {
        const GROUPS: u64 = 8;
        const COMMITS: u64 = 25;
        let dir = tempfile::tempdir().unwrap();
        let store = TxnStore::open(&dir.path().join("plugins.redb")).unwrap();
        std::thread::scope(|scope| {
            for g in 0..GROUPS {
                let store = &store;
                scope.spawn(move || {
                    let group = format!("group-{g}");
                    for n in 0..COMMITS {
                        let position = Position {
                            topic: "in",
                            partition: 0,
                            next_offset: n + 1,
                        };
                        let extras = CommitExtras {
                            outbox: Some(b"entry".to_vec()),
                            ..CommitExtras::default()
                        };
                        let total = (n + 1).to_string();
                        let sequence = store
                            .commit(
                                &group,
                                &[position],
                                &writes(&[("total", Some(&total))]),
                                extras,
                            )
                            .unwrap();
                        assert_eq!(sequence, Some(n), "{group}: outbox sequences count up");
                    }
                });
            }
        });
        for g in 0..GROUPS {
            let group = format!("group-{g}");
            assert_eq!(
                store.offsets(&group).unwrap(),
                vec![("in".to_string(), 0, COMMITS)]
            );
            let total = store.state_of(&group).get(b"total").unwrap();
            assert_eq!(total, Some(COMMITS.to_string().into_bytes()));
            assert_eq!(store.outbox_len(&group).unwrap(), COMMITS);
        }
        let (commits, transactions) = store.commit_counts();
        assert_eq!(commits, GROUPS * COMMITS);
        assert!(
            transactions < commits,
            "{commits} commits took {transactions} transactions: none shared"
        );
    }
}
