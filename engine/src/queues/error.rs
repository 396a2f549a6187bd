//! What can go wrong in a share group, as the doors (HTTP, Kafka, CLI) report it.

use std::path::{Path, PathBuf};

use crate::log::LogError;

#[derive(Debug, thiserror::Error)]
pub enum ShareError {
    #[error("share group `{0}` does not exist")]
    UnknownGroup(String),
    #[error("`{0}` is not a valid share group name: {1}")]
    InvalidName(String, #[source] LogError),
    #[error("share group setting {field}: {why}")]
    BadSetting { field: &'static str, why: String },
    #[error("the engine holds {max} share groups (the limit); delete one first")]
    TooManyGroups { max: usize },
    #[error(
        "share group `{group}` has {max} members (the limit); members that stop calling leave after session_timeout_ms"
    )]
    TooManyMembers { group: String, max: usize },
    #[error("member_id must be 1 to {max} characters")]
    BadMember { max: usize },
    #[error(transparent)]
    Log(#[from] LogError),
    #[error("a record batch read from the log does not decode: {0}")]
    Decode(#[source] crate::log::BatchError),
    #[error("share-group journal: cannot {action} {path}: {source}")]
    Io {
        action: &'static str,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{0} is not a share-group journal (wrong magic bytes)")]
    NotAJournal(PathBuf),
    #[error(
        "{path} is share-group journal version {version}; this sluice reads versions 1 and 2 (a newer sluice wrote it?)"
    )]
    JournalVersion { path: PathBuf, version: u32 },
    #[error(
        "a share-group journal entry for `{group}` puts offset {offset} of {topic} partition {partition} {ahead} records past its window's start, more than any window holds ({cap}): the journal is damaged"
    )]
    BadJournalOffset {
        group: String,
        topic: String,
        partition: u32,
        offset: u64,
        ahead: u64,
        cap: u64,
    },
    #[error(
        "the share-group journal {0} failed to write or sync earlier; restart the engine to recover from what is on disk"
    )]
    JournalFailed(PathBuf),
    #[error("a share-group journal entry for `{group}` holds bad settings: {source}")]
    BadJournalSettings {
        group: String,
        #[source]
        source: serde_json::Error,
    },
    #[error("a share-group task failed: {0}")]
    Task(String),
}

impl ShareError {
    pub(super) fn io(action: &'static str, path: &Path, source: std::io::Error) -> ShareError {
        ShareError::Io {
            action,
            path: path.to_path_buf(),
            source,
        }
    }
}
