//! The open-file budget: every segment keeps its file open, so the number of segment files
//! the log may hold open is bounded by the process's open-file limit, less what the rest of
//! the engine needs (connections, stores, archive files, compiled code). Topic creation and
//! growth, and segment rolls, are refused past it, before any file is opened, so that no
//! request can take the engine to EMFILE.
//!
//! The count and the budget are the process's, as the open-file limit is: every segment
//! counts itself while its file is open (from opening to drop), whichever log it belongs to.

use std::sync::atomic::{AtomicU64, Ordering};

use super::LogError;

/// Segment files open in this process.
static OPEN_SEGMENTS: AtomicU64 = AtomicU64::new(0);
/// Segment files this process may keep open (no limit until the server sets one).
static SEGMENT_BUDGET: AtomicU64 = AtomicU64::new(u64::MAX);

/// A segment opened its file.
pub(super) fn segment_opened() {
    OPEN_SEGMENTS.fetch_add(1, Ordering::Relaxed);
}

/// A segment closed its file (it was dropped).
pub(super) fn segment_closed() {
    OPEN_SEGMENTS.fetch_sub(1, Ordering::Relaxed);
}

/// Sets how many segment files the process may keep open.
pub fn set_segment_budget(segments: u64) {
    SEGMENT_BUDGET.store(segments, Ordering::Relaxed);
}

/// Segment files open now, and the budget.
pub fn open_segments() -> (u64, u64) {
    (
        OPEN_SEGMENTS.load(Ordering::Relaxed),
        SEGMENT_BUDGET.load(Ordering::Relaxed),
    )
}

/// Refuses `more` partitions (each opens a segment file) past the budget.
pub(super) fn check_partitions(more: u64) -> Result<(), LogError> {
    let (open, budget) = open_segments();
    if open.saturating_add(more) > budget {
        return Err(LogError::OpenFileBudget { open, more, budget });
    }
    Ok(())
}

/// Refuses a segment roll (a new segment file) past the budget.
pub(super) fn check_roll(topic: &str, partition: u32) -> Result<(), LogError> {
    let (open, budget) = open_segments();
    if open >= budget {
        return Err(LogError::SegmentFilesFull {
            topic: topic.to_string(),
            partition,
            open,
            budget,
        });
    }
    Ok(())
}

/// File descriptors kept for everything but segments.
pub const OPEN_FILES_RESERVED: u64 = 256;

/// Raises the soft open-file limit to the hard one (as most servers do at start) and returns
/// the soft limit then in force; None if it cannot be read.
pub fn raise_open_file_limit() -> Option<u64> {
    let mut limit = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit writes one rlimit struct through a valid pointer.
    if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) } != 0 {
        return None;
    }
    if limit.rlim_cur < limit.rlim_max {
        let raised = libc::rlimit {
            rlim_cur: limit.rlim_max,
            rlim_max: limit.rlim_max,
        };
        // SAFETY: setrlimit reads one rlimit struct through a valid pointer.
        if unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &raised) } == 0 {
            limit.rlim_cur = limit.rlim_max;
        }
    }
    Some(limit.rlim_cur)
}

/// Segment files the log may keep open under an open-file limit of `limit`.
pub fn segment_budget(limit: u64) -> u64 {
    limit.saturating_sub(OPEN_FILES_RESERVED)
}
