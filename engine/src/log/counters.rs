//! What a partition counts for `/metrics`: records and bytes produced into it and fetched
//! from it, fsyncs, and how its archival went. Plain atomics, read without a lock; the log
//! only counts, the server's metrics module names and exposes them.

use std::sync::atomic::{AtomicU64, Ordering};

#[derive(Debug, Default)]
pub struct PartitionCounters {
    /// Records appended (by producers on either door and by plugin outputs).
    pub produced_records: AtomicU64,
    /// Stored bytes of the batches appended.
    pub produced_bytes: AtomicU64,
    /// Records handed to consumers by a fetch (counted by the doors).
    pub fetched_records: AtomicU64,
    /// Stored bytes of the batches fetched.
    pub fetched_bytes: AtomicU64,
    /// fsyncs issued for the partition: records per fsync shows group commit at work.
    pub fsyncs: AtomicU64,
    /// Archivals of this partition that failed (retried at the next retention check).
    pub archive_failures: AtomicU64,
    /// When a segment of this partition was last archived, in Unix milliseconds; 0 if none
    /// was since the engine started.
    pub archived_at_ms: AtomicU64,
}

impl PartitionCounters {
    pub fn add(counter: &AtomicU64, amount: u64) {
        counter.fetch_add(amount, Ordering::Relaxed);
    }

    pub fn get(counter: &AtomicU64) -> u64 {
        counter.load(Ordering::Relaxed)
    }

    /// A fetch handed `records` records in `bytes` stored bytes to a consumer.
    pub fn fetched(&self, records: u64, bytes: u64) {
        Self::add(&self.fetched_records, records);
        Self::add(&self.fetched_bytes, bytes);
    }
}
