//! The state-store contract: what a plugin's `state` calls read, and the writes a call returns.
//!
//! A group's committed state lives in the plugin store ([`GroupState`](super::GroupState));
//! a sandbox reads it through [`StateStore`], and the writes of the batches processed since the
//! last commit are laid over it by [`Uncommitted`], so a failed call or a failed commit leaves
//! no trace. [`MemoryState`] keeps state in memory for `sluice plugin test` and benchmarks.

use std::collections::{BTreeMap, HashMap};
use std::ops::Bound;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};

use bytes::Bytes;
use parking_lot::Mutex;

use crate::log::batch::{self, BatchError};

use super::GroupState;

/// State writes of one call: `None` deletes the key.
pub type StateWrites = BTreeMap<Vec<u8>, Option<Vec<u8>>>;

/// One state write: the key, and its new value (`None` deletes it).
pub type StateWrite = (Vec<u8>, Option<Vec<u8>>);

/// Decodes a plugin's `state.write-many` frame: for each write, a varint key length, the key,
/// a varint of the value length plus one (0 deletes the key) and the value. The writes in
/// frame order; an error for a frame that is cut short or has a varint of more than 10 bytes.
/// No length is trusted beyond the bytes the frame holds.
pub fn decode_write_many(mut frame: Bytes) -> Result<Vec<StateWrite>, BatchError> {
    fn field(cursor: &mut Bytes, len: u64) -> Result<Vec<u8>, BatchError> {
        if len > cursor.len() as u64 {
            return Err(BatchError::Malformed(
                "a write runs past the end of the frame",
            ));
        }
        Ok(cursor.split_to(len as usize).to_vec())
    }
    let mut writes = Vec::new();
    while !frame.is_empty() {
        let key_len = batch::get_varint(&mut frame)?;
        let key = field(&mut frame, key_len)?;
        let value = match batch::get_varint(&mut frame)? {
            0 => None,
            len => Some(field(&mut frame, len - 1)?),
        };
        writes.push((key, value));
    }
    Ok(writes)
}

/// Entries of one prefix scan.
pub type Scanned = Vec<(Vec<u8>, Vec<u8>)>;

/// Why a group's committed state could not be read.
#[derive(Debug, thiserror::Error)]
#[error("reading the state of group {group:?} from the plugin store: {source}")]
pub struct StateError {
    pub group: String,
    /// Boxed: redb's error is large, and this one travels in every state read's result.
    pub source: Box<redb::Error>,
}

/// The committed state of one group, as the sandbox reads it.
pub trait StateStore: Send + Sync {
    fn get(&self, key: &[u8]) -> Result<Option<Vec<u8>>, StateError>;
    /// Up to `limit` entries whose key starts with `prefix` and is greater than `start_after`,
    /// in key order.
    fn scan(
        &self,
        prefix: &[u8],
        start_after: Option<&[u8]>,
        limit: usize,
    ) -> Result<Scanned, StateError>;
    /// Changes whenever values change other than by the writes of the sandbox reading them
    /// (see `state.generation` in the WIT).
    fn generation(&self) -> u64 {
        0
    }
}

/// Where a prefix scan starts: after `start_after` if it lies within or past the prefix.
pub fn scan_start<'a>(
    prefix: &'a [u8],
    start_after: Option<&'a [u8]>,
) -> (Bound<&'a [u8]>, Bound<&'a [u8]>) {
    let start = match start_after {
        Some(after) if after >= prefix => Bound::Excluded(after),
        _ => Bound::Included(prefix),
    };
    (start, Bound::Unbounded)
}

/// A prefix scan of committed state (`committed(n)` reads n entries) seen through pending
/// writes.
pub fn merged_scan(
    pending: &StateWrites,
    prefix: &[u8],
    start_after: Option<&[u8]>,
    limit: usize,
    committed: impl FnOnce(usize) -> Result<Scanned, StateError>,
) -> Result<Scanned, StateError> {
    let pending: Vec<(&Vec<u8>, &Option<Vec<u8>>)> = pending
        .range::<[u8], _>(scan_start(prefix, start_after))
        .take_while(|(k, _)| k.starts_with(prefix))
        .collect();
    // Each pending delete can hide one committed entry: read that many more.
    let deletes = pending.iter().filter(|(_, v)| v.is_none()).count();
    let mut merged: BTreeMap<Vec<u8>, Vec<u8>> = committed(limit + deletes)?.into_iter().collect();
    for (key, value) in pending {
        match value {
            Some(value) => merged.insert(key.clone(), value.clone()),
            None => merged.remove(key),
        };
    }
    Ok(merged.into_iter().take(limit).collect())
}

/// A prefix scan of state held in a map.
pub fn scan_map(
    map: &BTreeMap<Vec<u8>, Vec<u8>>,
    prefix: &[u8],
    start_after: Option<&[u8]>,
    limit: usize,
) -> Scanned {
    map.range::<[u8], _>(scan_start(prefix, start_after))
        .take_while(|(k, _)| k.starts_with(prefix))
        .take(limit)
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect()
}

/// State held in memory, for benchmarks, tests and `sluice plugin test`.
#[derive(Default)]
pub struct MemoryState(Mutex<BTreeMap<Vec<u8>, Vec<u8>>>);

impl MemoryState {
    pub fn apply(&self, writes: StateWrites) {
        let mut map = self.0.lock();
        for (key, value) in writes {
            match value {
                Some(value) => map.insert(key, value),
                None => map.remove(&key),
            };
        }
    }

    pub fn entries(&self) -> BTreeMap<Vec<u8>, Vec<u8>> {
        self.0.lock().clone()
    }
}

impl StateStore for MemoryState {
    fn get(&self, key: &[u8]) -> Result<Option<Vec<u8>>, StateError> {
        Ok(self.0.lock().get(key).cloned())
    }

    fn scan(
        &self,
        prefix: &[u8],
        start_after: Option<&[u8]>,
        limit: usize,
    ) -> Result<Scanned, StateError> {
        Ok(scan_map(&self.0.lock(), prefix, start_after, limit))
    }
}

/// Committed values kept in memory per group, at most.
const CACHE_ENTRIES_MAX: usize = 100_000;

/// The group's committed state seen through the writes of batches processed since the last
/// commit: what the plugin reads. Committed values read or written are cached (the worker is
/// the group's only writer), so hot keys do not cost a store read each time.
pub struct Uncommitted {
    committed: GroupState,
    writes: Mutex<StateWrites>,
    /// How many bytes the staged writes add to the committed state (negative: remove).
    growth_bytes: AtomicI64,
    cache: Mutex<HashMap<Vec<u8>, Option<Vec<u8>>>>,
    /// Bumped when uncommitted writes are dropped: the plugin's own copies are stale then.
    generation: AtomicU64,
}

impl Uncommitted {
    pub fn new(committed: GroupState) -> Uncommitted {
        Uncommitted {
            committed,
            writes: Mutex::new(StateWrites::new()),
            growth_bytes: AtomicI64::new(0),
            cache: Mutex::new(HashMap::new()),
            generation: AtomicU64::new(0),
        }
    }

    /// How many bytes `writes` would add to the state as the plugin sees it now (committed
    /// and staged); negative when they remove more than they add.
    pub fn growth(&self, writes: &StateWrites) -> Result<i64, StateError> {
        let mut growth = 0i64;
        for (key, value) in writes {
            if let Some(old) = self.get(key)? {
                growth -= (key.len() + old.len()) as i64;
            }
            if let Some(value) = value {
                growth += (key.len() + value.len()) as i64;
            }
        }
        Ok(growth)
    }

    /// Bytes the staged writes add to the committed state.
    pub fn staged_growth(&self) -> i64 {
        self.growth_bytes.load(Ordering::Relaxed)
    }

    /// Lays the writes of a processed batch over the committed state; `growth` is what they
    /// add to it (see [`Uncommitted::growth`]).
    pub fn stage(&self, writes: StateWrites, growth: i64) {
        self.writes.lock().extend(writes);
        self.growth_bytes.fetch_add(growth, Ordering::Relaxed);
    }

    /// The writes staged since the last commit, taken for committing.
    pub fn take_writes(&self) -> StateWrites {
        self.growth_bytes.store(0, Ordering::Relaxed);
        std::mem::take(&mut *self.writes.lock())
    }

    /// The writes just committed become the cached committed values.
    pub fn committed(&self, writes: StateWrites) {
        let mut cache = self.cache.lock();
        if cache.len() + writes.len() > CACHE_ENTRIES_MAX {
            cache.clear();
        }
        cache.extend(writes);
    }

    /// Forgets everything not read from the store (after a failed commit).
    pub fn reset(&self) {
        self.writes.lock().clear();
        self.growth_bytes.store(0, Ordering::Relaxed);
        self.cache.lock().clear();
        self.generation.fetch_add(1, Ordering::Relaxed);
    }
}

impl StateStore for Uncommitted {
    fn get(&self, key: &[u8]) -> Result<Option<Vec<u8>>, StateError> {
        if let Some(written) = self.writes.lock().get(key) {
            return Ok(written.clone());
        }
        if let Some(cached) = self.cache.lock().get(key) {
            return Ok(cached.clone());
        }
        let value = self.committed.get(key)?;
        let mut cache = self.cache.lock();
        if cache.len() >= CACHE_ENTRIES_MAX {
            cache.clear();
        }
        cache.insert(key.to_vec(), value.clone());
        Ok(value)
    }

    fn scan(
        &self,
        prefix: &[u8],
        start_after: Option<&[u8]>,
        limit: usize,
    ) -> Result<Scanned, StateError> {
        let writes = self.writes.lock();
        merged_scan(&writes, prefix, start_after, limit, |n| {
            self.committed.scan(prefix, start_after, n)
        })
    }

    fn generation(&self) -> u64 {
        self.generation.load(Ordering::Relaxed)
    }
}
