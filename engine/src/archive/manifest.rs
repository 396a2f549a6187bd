//! The manifest of a partition's archive, `manifest.json` in its directory: the files
//! archived, in offset order and not overlapping, each with the summary written into it
//! (docs/archive-format.md, Manifest). A range is archived once the manifest names its file.
//!
//! The format is versioned ([`MANIFEST_VERSION`]) and written atomically. With an object
//! store configured a copy goes there too, naming only files the store holds: when the local
//! manifest is lost with its data directory, [`Manifest::load`] takes that copy.

use std::path::Path;

use serde::{Deserialize, Serialize};

use super::error::{ArchiveError, io};
use super::parquet::Summary;
use super::remote::RemoteDir;
use crate::log::write_atomically;

/// Version of the manifest layout.
const MANIFEST_VERSION: u32 = 1;
/// The manifest's name, in the partition's directory and beside its files in the store.
pub const MANIFEST_FILE: &str = "manifest.json";

/// One archived file, as the manifest lists it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ArchivedFile {
    pub file: String,
    pub bytes: u64,
    pub created_ms: i64,
    /// In the object store (`[storage] archive_url`) rather than the local directory.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub remote: bool,
    /// The version of the topic's schema the file's typed columns are (`schema.json`);
    /// absent for a topic without typed columns.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub schema_version: Option<u32>,
    /// CRC-32C of the whole file as written; absent in manifests of format 1 files.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub file_checksum: Option<u32>,
    #[serde(flatten)]
    pub summary: Summary,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Manifest {
    version: u32,
    /// In offset order, not overlapping.
    files: Vec<ArchivedFile>,
}

impl Manifest {
    fn empty() -> Manifest {
        Manifest {
            version: MANIFEST_VERSION,
            files: Vec::new(),
        }
    }

    /// The manifest in `dir`; with none there, the copy in the object store (if any); else
    /// an empty one.
    pub fn load(dir: &Path, remote: Option<&RemoteDir>) -> Result<Manifest, ArchiveError> {
        let path = dir.join(MANIFEST_FILE);
        match std::fs::read(&path) {
            Ok(bytes) => parse(&bytes, || path.display().to_string()),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                let stored = match remote {
                    Some(remote) => remote
                        .get(MANIFEST_FILE)?
                        .map(|bytes| parse(&bytes, || remote.describe(MANIFEST_FILE)))
                        .transpose()?,
                    None => None,
                };
                Ok(stored.unwrap_or_else(Manifest::empty))
            }
            Err(e) => Err(io(&path, e)),
        }
    }

    /// Writes the manifest into `dir` (atomically); returns what it wrote.
    pub fn save(&self, dir: &Path) -> Result<Vec<u8>, ArchiveError> {
        std::fs::create_dir_all(dir).map_err(|e| io(dir, e))?;
        let path = dir.join(MANIFEST_FILE);
        let json = serde_json::to_vec_pretty(self).expect("a manifest serializes");
        write_atomically(&path, &json).map_err(|source| ArchiveError::Replace { path, source })?;
        Ok(json)
    }

    pub fn files(&self) -> &[ArchivedFile] {
        &self.files
    }

    /// The file called `name`.
    pub fn named(&self, name: &str) -> Option<&ArchivedFile> {
        self.files.iter().find(|f| f.file == name)
    }

    /// One past the newest archived offset; 0 when empty.
    pub fn end(&self) -> u64 {
        self.files.last().map_or(0, |f| f.summary.last_offset + 1)
    }

    /// The file holding `offset`.
    pub fn file_holding(&self, offset: u64) -> Option<&ArchivedFile> {
        let index = self
            .files
            .partition_point(|f| f.summary.last_offset < offset);
        self.files
            .get(index)
            .filter(|f| f.summary.first_offset <= offset)
    }

    /// A file holding any of the offsets `first..=last`.
    pub fn overlapping(&self, first: u64, last: u64) -> Option<&ArchivedFile> {
        self.files
            .iter()
            .find(|f| f.summary.first_offset <= last && first <= f.summary.last_offset)
    }

    /// Refuses a range overlapping one already archived.
    pub fn check_free(&self, first: u64, last: u64) -> Result<(), ArchiveError> {
        match self.overlapping(first, last) {
            Some(existing) => Err(ArchiveError::Overlap {
                first,
                last,
                file: existing.file.clone(),
            }),
            None => Ok(()),
        }
    }

    /// Lists `file`, keeping the offset order.
    pub fn add(&mut self, file: ArchivedFile) {
        self.files.push(file);
        self.sort();
    }

    /// Puts the files in offset order.
    pub fn sort(&mut self) {
        self.files.sort_by_key(|f| f.summary.first_offset);
    }

    /// Marks the file called `name` as moved to the object store.
    pub fn mark_remote(&mut self, name: &str) {
        if let Some(file) = self.files.iter_mut().find(|f| f.file == name) {
            file.remote = true;
        }
    }
}

/// The manifest in `bytes`, read from `path` (for the message if it is unreadable).
fn parse(bytes: &[u8], path: impl FnOnce() -> String) -> Result<Manifest, ArchiveError> {
    serde_json::from_slice(bytes).map_err(|source| ArchiveError::Manifest {
        path: path(),
        source,
    })
}
