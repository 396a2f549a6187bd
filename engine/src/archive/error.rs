//! The archive's error, and how the log sees it.

use std::path::Path;

use super::parquet::ParquetFileError;
use crate::log::LogError;

#[derive(Debug, thiserror::Error)]
pub enum ArchiveError {
    #[error(transparent)]
    File(#[from] ParquetFileError),
    #[error("{path}: {message}")]
    Io { path: String, message: String },
    #[error("offsets {first}..={last} overlap {file}, already archived; archive each range once")]
    Overlap { first: u64, last: u64, file: String },
    #[error(
        "topic `{topic}`: {message}; change it with `sluice topic alter {topic} --config archive_schema=...`"
    )]
    Schema { topic: String, message: String },
    #[error(
        "{path}: the manifest is unreadable ({message}); move it away to rebuild it from the files"
    )]
    Manifest { path: String, message: String },
}

pub(super) fn io(path: &Path, error: impl std::fmt::Display) -> ArchiveError {
    ArchiveError::Io {
        path: path.display().to_string(),
        message: error.to_string(),
    }
}

impl From<ArchiveError> for LogError {
    fn from(error: ArchiveError) -> LogError {
        LogError::archive(error)
    }
}
