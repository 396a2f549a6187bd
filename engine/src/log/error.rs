//! The log's errors: each names what failed and, where a user can act, what to do.

use std::path::{Path, PathBuf};

use super::batch::BatchError;

#[derive(Debug, thiserror::Error)]
pub enum LogError {
    #[error("I/O error on {path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error(
        "corrupt data in {path} at byte {position} (reading offset {offset}): {source}. The records \
         stored there cannot be served; restore the file from a backup, or delete the segment to \
         give them up"
    )]
    Corrupt {
        path: PathBuf,
        position: u64,
        offset: u64,
        source: BatchError,
    },
    #[error(
        "records {from}..{to} of {topic}/{partition} are missing from disk (a segment file was lost or cut short)"
    )]
    Missing {
        topic: String,
        partition: u32,
        from: u64,
        to: u64,
    },
    #[error("topic `{0}` does not exist; create it with `sluice topic create {0}`")]
    UnknownTopic(String),
    #[error("topic `{0}` already exists")]
    TopicExists(String),
    #[error(
        "invalid topic name `{0}`: use 1 to {max} characters from a-z, A-Z, 0-9, `.`, `_` and `-`, \
         not starting with `.` or `_`",
        max = super::NAME_LEN_MAX
    )]
    InvalidTopicName(String),
    #[error("partition {partition} does not exist: topic `{topic}` has {count} partitions (0 to {})", count.saturating_sub(1))]
    UnknownPartition {
        topic: String,
        partition: u32,
        count: u32,
    },
    #[error(
        "offset {requested} is out of range for {topic}/{partition}: it holds offsets {start} to {end} (exclusive)"
    )]
    OffsetOutOfRange {
        topic: String,
        partition: u32,
        requested: u64,
        start: u64,
        end: u64,
    },
    #[error(
        "a record of {size} bytes exceeds max_record_bytes = {limit} of topic `{topic}`; raise it with `sluice topic alter {topic} --config max_record_bytes=N`"
    )]
    RecordTooLarge {
        topic: String,
        size: usize,
        limit: u64,
    },
    #[error(
        "partition {topic}/{partition} stopped accepting writes after a failed write or fsync ({reason}); check the disk and restart the engine"
    )]
    PartitionFailed {
        topic: String,
        partition: u32,
        reason: String,
    },
    #[error(transparent)]
    DiskFull(#[from] DiskFull),
    /// The cold tier (the archive) failed; the log cannot name its error type (it sits above).
    #[error("archive: {0}")]
    Archive(#[source] Box<dyn std::error::Error + Send + Sync>),
    #[error(
        "{more} more partitions would keep {} segment files open, past this engine's budget of \
         {budget} (its open-file limit less {} kept for connections and stores); raise the \
         limit (ulimit -n) or use fewer partitions",
        open + more,
        super::open_files::OPEN_FILES_RESERVED
    )]
    OpenFileBudget { open: u64, more: u64, budget: u64 },
    #[error(
        "partition {topic}/{partition} needs a new segment file, but the engine keeps {open}          segment files open, its budget (its open-file limit less {} kept for connections and          stores); raise the limit (ulimit -n), or keep fewer segments: shorter retention, larger          segment_bytes, fewer partitions",
        super::open_files::OPEN_FILES_RESERVED
    )]
    SegmentFilesFull {
        topic: String,
        partition: u32,
        open: u64,
        budget: u64,
    },
    #[error("invalid configuration: {0}")]
    InvalidConfig(String),
    #[error(
        "data directory {0} is in use by another sluice process (its LOCK file is held); stop that process or choose another --data-dir"
    )]
    Locked(PathBuf),
}

impl LogError {
    pub fn io(path: &Path, source: std::io::Error) -> LogError {
        LogError::Io {
            path: path.to_path_buf(),
            source,
        }
    }

    /// An error of the cold tier, kept whole as the source.
    pub fn archive(error: impl Into<Box<dyn std::error::Error + Send + Sync>>) -> LogError {
        LogError::Archive(error.into())
    }
}

/// Why the log refuses appends for want of disk space.
#[derive(Debug, thiserror::Error)]
pub enum DiskFull {
    #[error(
        "the log holds {used_bytes} bytes, at its limit max_disk_bytes = {max_bytes}: produce is \
         refused until retention frees space; lower retention, delete topics or raise max_disk_bytes"
    )]
    AtLimit { used_bytes: u64, max_bytes: u64 },
    #[error(
        "free space on the disk of {} is below min_free_bytes = {min_free_bytes}: produce is \
         refused until space is freed; lower retention, delete topics or free disk space",
        dir.display()
    )]
    LowFreeSpace { dir: PathBuf, min_free_bytes: u64 },
    /// A write failed with ENOSPC.
    #[error(transparent)]
    OutOfSpace(Box<LogError>),
}
