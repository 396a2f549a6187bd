//! The cold tier of a partition: where its records go before retention deletes their
//! segment, and where reads of offsets older than the log start are served from.
//!
//! The log knows only this interface; the Parquet archive (`crate::archive`) implements it.
//! Keeping the log unaware of Parquet keeps its recovery and its tests independent of it, and
//! lets another store (an object store) stand behind the same calls.

use std::ops::Range;
use std::sync::Arc;

use super::{LogError, Partition};

pub trait ColdTier: Send + Sync {
    /// The offsets held, as `(first, end)` with `end` one past the newest; None when empty.
    /// Offsets between two archived ranges may be missing (archival was off meanwhile).
    fn range(&self) -> Result<Option<(u64, u64)>, LogError>;

    /// Stores the records of `partition` in `ranges` (read from it; in offset order, each the
    /// records of one sealed segment), each durably, before the caller may delete them from
    /// the log; calls `stored` with each range once it is. Offsets already held are not
    /// stored again. On an error, the ranges reported before it are stored.
    fn store(
        &self,
        partition: &Partition,
        ranges: &[Range<u64>],
        stored: &(dyn Fn(Range<u64>) + Sync),
    ) -> Result<(), LogError>;

    /// Encoded batches (the log's storage format) holding `offset` and about `max_bytes` after
    /// it, with the offset to read next; None when `offset` is not held.
    fn read(&self, offset: u64, max_bytes: usize) -> Result<Option<(Vec<u8>, u64)>, LogError>;

    /// The first offset held whose record timestamp is at or after `timestamp`; None when
    /// every record held is older (or nothing is held).
    fn offset_for_timestamp(&self, timestamp: i64) -> Result<Option<u64>, LogError>;

    /// Deletes everything held (the topic is being deleted).
    fn delete(&self) -> Result<(), LogError>;
}

/// Makes the cold tier of a topic's partition; called once per partition when it opens.
pub type ColdTierOpener = Arc<dyn Fn(&str, u32) -> Arc<dyn ColdTier> + Send + Sync>;
