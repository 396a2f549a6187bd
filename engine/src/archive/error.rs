//! The archive's errors, each keeping its cause as its `source()`, and how the log sees them
//! (as the source of `LogError::Archive`).

use std::path::{Path, PathBuf};

use super::parquet::ParquetFileError;
use super::remote::StoreError;
use super::typed::SchemaError;
use crate::log::{BatchError, LogError};

#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ArchiveError {
    /// Writing, reading or verifying an archive file failed.
    #[error(transparent)]
    File(#[from] ParquetFileError),
    /// The object store failed.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// A file or directory of the archive could not be read, written, renamed or synced.
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// A file of the archive (the manifest, the inferred schema) could not be replaced
    /// atomically.
    #[error("{path}: {source}")]
    Replace {
        path: PathBuf,
        #[source]
        source: LogError,
    },
    #[error("offsets {first}..={last} overlap {file}, already archived; archive each range once")]
    Overlap { first: u64, last: u64, file: String },
    /// A file just written holds other offsets than the range it was written for.
    #[error(
        "{path}: expected offsets {first}..={last}, got {rows} rows at {found_first}..={found_last}"
    )]
    WrongRange {
        path: PathBuf,
        first: u64,
        last: u64,
        rows: u64,
        found_first: u64,
        found_last: u64,
    },
    #[error(
        "topic `{topic}`: {source}; change it with `sluice topic alter {topic} --config archive_schema=...`"
    )]
    Schema {
        topic: String,
        #[source]
        source: SchemaError,
    },
    /// The topic's Iceberg table could not be read or appended to.
    #[error("Iceberg table: {0}")]
    Table(#[from] super::iceberg::IcebergError),
    /// The topic's schema history (`schema.json`) is unreadable.
    #[error("{path}: not a schema history ({source}); move it away to start a new one")]
    SchemaHistory {
        path: PathBuf,
        #[source]
        source: serde_json::Error,
    },
    #[error(
        "{path}: the manifest is unreadable ({source}); move it away to rebuild it from the files"
    )]
    Manifest {
        path: String,
        #[source]
        source: serde_json::Error,
    },
    #[error(
        "{file}: the manifest says this file is in the object store, and no [storage] archive_url is set: set it to the store the files went to"
    )]
    NoStore { file: String },
    #[error("{location}: missing from the object store, though the manifest lists it")]
    Missing { location: String },
    /// Reading the log for archiving failed.
    #[error("log: {source}")]
    Log {
        #[source]
        source: LogReadError,
    },
}

/// Why the log could not be read for archiving.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum LogReadError {
    #[error(transparent)]
    Read(#[from] LogError),
    #[error(transparent)]
    Decode(#[from] BatchError),
    #[error("reading offset {offset} of the log returned nothing")]
    Nothing { offset: u64 },
}

pub(super) fn io(path: &Path, source: std::io::Error) -> ArchiveError {
    ArchiveError::Io {
        path: path.to_path_buf(),
        source,
    }
}

impl From<ArchiveError> for LogError {
    fn from(error: ArchiveError) -> LogError {
        LogError::archive(error)
    }
}
