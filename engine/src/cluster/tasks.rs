//! State per input partition (a task, as in Kafka Streams): each partition a worker owns has
//! its own key-value state, restored from the group's changelog when the partition is
//! assigned. [`Tasks`] is the [`StateStore`] the group's sandbox reads: it shows the task of
//! the partition being processed, with the writes of the open transaction laid over it; they
//! become committed state only once the transaction commits.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};

use parking_lot::Mutex;

use crate::txn::state::{Scanned, StateError, StateStore, StateWrites, merged_scan, scan_map};

/// One input partition's state.
#[derive(Debug, Default)]
pub(crate) struct Task {
    committed: BTreeMap<Vec<u8>, Vec<u8>>,
    /// Bytes of keys and values in `committed`.
    committed_bytes: u64,
    /// Writes of the open transaction.
    pending: StateWrites,
}

impl Task {
    /// Applies one write of committed state (a restore from the changelog, or a commit).
    pub(crate) fn apply(&mut self, key: Vec<u8>, value: Option<Vec<u8>>) {
        let added = value.as_ref().map_or(0, |v| (key.len() + v.len()) as u64);
        let removed = match value {
            Some(value) => self.committed.insert(key.clone(), value),
            None => self.committed.remove(&key),
        };
        let removed = removed.map_or(0, |old| (key.len() + old.len()) as u64);
        self.committed_bytes = self.committed_bytes + added - removed;
    }

    fn get(&self, key: &[u8]) -> Option<Vec<u8>> {
        match self.pending.get(key) {
            Some(value) => value.clone(),
            None => self.committed.get(key).cloned(),
        }
    }

    pub(crate) fn entries(&self) -> &BTreeMap<Vec<u8>, Vec<u8>> {
        &self.committed
    }
}

#[derive(Default)]
struct Inner {
    tasks: BTreeMap<i32, Task>,
    /// The partition whose state the sandbox sees.
    current: Option<i32>,
}

/// The tasks of one group on this worker.
#[derive(Default)]
pub(crate) struct Tasks {
    inner: Mutex<Inner>,
    /// Bumped whenever the values the sandbox sees change other than by its own writes: another
    /// task selected, a task dropped, an open transaction's writes discarded.
    generation: AtomicU64,
}

impl Tasks {
    pub(crate) fn contains(&self, partition: i32) -> bool {
        self.inner.lock().tasks.contains_key(&partition)
    }

    pub(crate) fn insert(&self, partition: i32, task: Task) {
        self.inner.lock().tasks.insert(partition, task);
        self.bump();
    }

    pub(crate) fn remove(&self, partition: i32) {
        let mut inner = self.inner.lock();
        inner.tasks.remove(&partition);
        if inner.current == Some(partition) {
            inner.current = None;
        }
        drop(inner);
        self.bump();
    }

    /// The sandbox sees `partition`'s state from now on.
    pub(crate) fn select(&self, partition: i32) {
        let mut inner = self.inner.lock();
        if inner.current != Some(partition) {
            inner.current = Some(partition);
            drop(inner);
            self.bump();
        }
    }

    /// How many bytes `writes` would add to the selected task's state (committed and
    /// pending); negative when they remove more than they add.
    pub(crate) fn growth(&self, writes: &StateWrites) -> i64 {
        let inner = self.inner.lock();
        let Some(task) = inner.current.and_then(|p| inner.tasks.get(&p)) else {
            return 0;
        };
        let mut growth = 0i64;
        for (key, value) in writes {
            if let Some(old) = task.get(key) {
                growth -= (key.len() + old.len()) as i64;
            }
            if let Some(value) = value {
                growth += (key.len() + value.len()) as i64;
            }
        }
        growth
    }

    /// Bytes of the selected task's state with its pending writes.
    pub(crate) fn size_bytes(&self) -> u64 {
        let inner = self.inner.lock();
        let Some(task) = inner.current.and_then(|p| inner.tasks.get(&p)) else {
            return 0;
        };
        let mut size = task.committed_bytes as i64;
        for (key, value) in &task.pending {
            if let Some(old) = task.committed.get(key) {
                size -= (key.len() + old.len()) as i64;
            }
            if let Some(value) = value {
                size += (key.len() + value.len()) as i64;
            }
        }
        size.max(0) as u64
    }

    /// Lays a call's writes over the selected task's state, for the open transaction.
    pub(crate) fn stage(&self, writes: StateWrites) {
        let mut inner = self.inner.lock();
        let current = inner.current;
        if let Some(task) = current.and_then(|p| inner.tasks.get_mut(&p)) {
            task.pending.extend(writes);
        }
    }

    /// The open transaction's writes, per partition (without taking them).
    pub(crate) fn pending(&self) -> BTreeMap<i32, StateWrites> {
        let inner = self.inner.lock();
        inner
            .tasks
            .iter()
            .filter(|(_, task)| !task.pending.is_empty())
            .map(|(&p, task)| (p, task.pending.clone()))
            .collect()
    }

    /// The transaction committed: its writes become committed state.
    pub(crate) fn commit(&self) {
        let mut inner = self.inner.lock();
        for task in inner.tasks.values_mut() {
            for (key, value) in std::mem::take(&mut task.pending) {
                task.apply(key, value);
            }
        }
    }

    /// The transaction aborted: its writes are dropped.
    pub(crate) fn discard(&self) {
        let mut inner = self.inner.lock();
        for task in inner.tasks.values_mut() {
            task.pending.clear();
        }
        drop(inner);
        self.bump();
    }

    /// Entries and bytes of every task's committed state.
    pub(crate) fn sizes(&self) -> (u64, u64) {
        let inner = self.inner.lock();
        inner.tasks.values().fold((0, 0), |(entries, bytes), task| {
            (
                entries + task.committed.len() as u64,
                bytes + task.committed_bytes,
            )
        })
    }

    fn bump(&self) {
        self.generation.fetch_add(1, Ordering::Relaxed);
    }
}

impl StateStore for Tasks {
    fn get(&self, key: &[u8]) -> Result<Option<Vec<u8>>, StateError> {
        let inner = self.inner.lock();
        Ok(inner
            .current
            .and_then(|p| inner.tasks.get(&p))
            .and_then(|task| task.get(key)))
    }

    fn scan(
        &self,
        prefix: &[u8],
        start_after: Option<&[u8]>,
        limit: usize,
    ) -> Result<Scanned, StateError> {
        let inner = self.inner.lock();
        let Some(task) = inner.current.and_then(|p| inner.tasks.get(&p)) else {
            return Ok(Vec::new());
        };
        merged_scan(&task.pending, prefix, start_after, limit, |n| {
            Ok(scan_map(&task.committed, prefix, start_after, n))
        })
    }

    fn generation(&self) -> u64 {
        self.generation.load(Ordering::Relaxed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_partition_sees_its_own_state_and_pending_writes_only_after_commit_count_as_committed() {
        let tasks = Tasks::default();
        tasks.insert(0, Task::default());
        tasks.insert(1, Task::default());
        tasks.select(0);
        let generation = tasks.generation();
        tasks.stage(StateWrites::from([(b"k".to_vec(), Some(b"zero".to_vec()))]));
        assert_eq!(tasks.get(b"k").unwrap(), Some(b"zero".to_vec()));
        assert_eq!(
            tasks.generation(),
            generation,
            "own writes keep the generation"
        );
        tasks.select(1);
        assert_ne!(tasks.generation(), generation);
        assert_eq!(tasks.get(b"k").unwrap(), None);
        tasks.stage(StateWrites::from([(b"k".to_vec(), Some(b"one".to_vec()))]));
        assert_eq!(tasks.pending().len(), 2);
        tasks.discard();
        assert_eq!(tasks.get(b"k").unwrap(), None);
        tasks.stage(StateWrites::from([(b"k".to_vec(), Some(b"one".to_vec()))]));
        tasks.commit();
        assert_eq!(tasks.get(b"k").unwrap(), Some(b"one".to_vec()));
        assert_eq!(tasks.sizes(), (1, 4));
        tasks.select(0);
        assert_eq!(tasks.get(b"k").unwrap(), None);
    }

    #[test]
    fn growth_and_size_count_keys_and_values_through_pending_writes() {
        let tasks = Tasks::default();
        tasks.insert(3, Task::default());
        tasks.select(3);
        let write = StateWrites::from([(b"ab".to_vec(), Some(b"xyz".to_vec()))]);
        assert_eq!(tasks.growth(&write), 5);
        tasks.stage(write);
        assert_eq!(tasks.size_bytes(), 5);
        let delete = StateWrites::from([(b"ab".to_vec(), None)]);
        assert_eq!(tasks.growth(&delete), -5);
        tasks.commit();
        tasks.stage(delete);
        assert_eq!(tasks.size_bytes(), 0);
    }
}
