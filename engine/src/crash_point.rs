//! Crash points: places where a test can make the engine die on purpose, because a crash
//! there is too narrow a window to hit by killing the process from outside.
//!
//! `SLUICE_CRASH_AT=<point>[:<n>]` aborts the process the n-th time (default: the first) it
//! passes `<point>`, like `kill -9` would: no buffer is flushed, no destructor runs.
//! `SLUICE_STOP_AT=<point>[:<n>]` stops it there instead (SIGSTOP to itself), for a test to
//! resume with SIGCONT: a process that stalls at the worst moment (a zombie). Unset, a crash
//! point costs one atomic load.

use std::sync::OnceLock;
use std::sync::atomic::{AtomicU64, Ordering};

/// After the transaction holding an outbox entry committed, before any of it is appended.
pub const OUTBOX_COMMITTED: &str = "outbox-committed";
/// After one batch of an outbox entry was appended (and is durable), before the next.
pub const OUTBOX_PART_APPENDED: &str = "outbox-part-appended";
/// Inside a group commit, before the transaction commits.
pub const BEFORE_GROUP_COMMIT: &str = "before-group-commit";
/// After an archive file was written and fsynced under its temporary name.
pub const ARCHIVE_FILE_WRITTEN: &str = "archive-file-written";
/// After an archive file was renamed into place, before the manifest names it.
pub const ARCHIVE_FILE_RENAMED: &str = "archive-file-renamed";
/// After an archive file was uploaded to the object store, before the manifest says so.
pub const ARCHIVE_FILE_UPLOADED: &str = "archive-file-uploaded";
/// After the manifest names a segment's file, before retention deletes the segment.
pub const ARCHIVE_BEFORE_DELETE: &str = "archive-before-delete";
/// After a new version of a topic's Iceberg table was linked into place, before
/// `version-hint.text` names it.
pub const ARCHIVE_TABLE_COMMITTED: &str = "archive-table-committed";
/// In cluster mode, after a batch's records were produced in its open Kafka transaction,
/// before its offsets join it.
pub const CLUSTER_RECORDS_SENT: &str = "cluster-records-sent";
/// In cluster mode, after a batch's offsets joined its Kafka transaction, before the commit.
pub const CLUSTER_OFFSETS_SENT: &str = "cluster-offsets-sent";
/// In cluster mode, right after a batch's Kafka transaction committed.
pub const CLUSTER_COMMITTED: &str = "cluster-committed";

struct Armed {
    point: String,
    at_pass: u64,
    passes: AtomicU64,
}

/// What a variable arms: `<point>[:<n>]`.
fn parse(variable: &str) -> Option<Armed> {
    let spec = std::env::var(variable).ok()?;
    let (point, at_pass) = match spec.split_once(':') {
        Some((point, n)) => (point.to_string(), n.parse().ok()?),
        None => (spec, 1),
    };
    Some(Armed {
        point,
        at_pass,
        passes: AtomicU64::new(0),
    })
}

impl Armed {
    /// Counts a pass of `point`; true on the armed pass.
    fn due(&self, point: &str) -> bool {
        self.point == point && self.passes.fetch_add(1, Ordering::Relaxed) + 1 == self.at_pass
    }
}

fn armed() -> (Option<&'static Armed>, Option<&'static Armed>) {
    static CRASH: OnceLock<Option<Armed>> = OnceLock::new();
    static STOP: OnceLock<Option<Armed>> = OnceLock::new();
    (
        CRASH.get_or_init(|| parse("SLUICE_CRASH_AT")).as_ref(),
        STOP.get_or_init(|| parse("SLUICE_STOP_AT")).as_ref(),
    )
}

/// Aborts the process here if `SLUICE_CRASH_AT` names this point and pass; stops it if
/// `SLUICE_STOP_AT` does.
pub fn reached(point: &str) {
    let (crash, stop) = armed();
    if crash.is_some_and(|armed| armed.due(point)) {
        eprintln!("crash point {point} reached (SLUICE_CRASH_AT): aborting");
        std::process::abort();
    }
    if stop.is_some_and(|armed| armed.due(point)) {
        eprintln!("crash point {point} reached (SLUICE_STOP_AT): stopping until SIGCONT");
        // SAFETY: raise only sends a signal to this process.
        unsafe {
            libc::raise(libc::SIGSTOP);
        }
    }
}
