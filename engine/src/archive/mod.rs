//! Parquet archival: a partition's records, a contiguous offset range at a time, written to a
//! Parquet file that DuckDB, pyarrow or Spark can read, and recorded in the partition's
//! archive manifest only once the file is complete, durable and verified.
//!
//! The steps of archiving a range, and why a crash at any point is harmless:
//! 1. write `<first>-<last>.parquet.tmp`, fsync it: a crash leaves a temporary file, removed
//!    by [`Archive::open`];
//! 2. read it back and compare rows, offset range and checksum with what was written;
//! 3. rename it to `<first>-<last>.parquet`, fsync the directory: a crash leaves a complete,
//!    verified file the manifest does not name yet; `open` verifies it and adds it;
//! 4. write the manifest (atomically): from here on the range is archived, and the segment
//!    holding it may be deleted.
//!
//! A range is never in two files: a range overlapping the manifest is refused.

pub mod parquet;

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::log::{Record, now_ms, write_atomically};
use parquet::{Origin, ParquetFileError, Summary};

/// Version of the manifest layout.
const MANIFEST_VERSION: u32 = 1;
const MANIFEST: &str = "manifest.json";

#[derive(Debug, thiserror::Error)]
pub enum ArchiveError {
    #[error(transparent)]
    File(#[from] ParquetFileError),
    #[error("{path}: {message}")]
    Io { path: String, message: String },
    #[error("offsets {first}..={last} overlap {file}, already archived; archive each range once")]
    Overlap { first: u64, last: u64, file: String },
    #[error(
        "{path}: the manifest is unreadable ({message}); move it away to rebuild it from the files"
    )]
    Manifest { path: String, message: String },
}

fn io(path: &Path, error: impl std::fmt::Display) -> ArchiveError {
    ArchiveError::Io {
        path: path.display().to_string(),
        message: error.to_string(),
    }
}

/// One archived file, as the manifest lists it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ArchivedFile {
    pub file: String,
    pub bytes: u64,
    pub created_ms: i64,
    #[serde(flatten)]
    pub summary: Summary,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
struct Manifest {
    version: u32,
    /// In offset order, not overlapping.
    files: Vec<ArchivedFile>,
}

/// The archive of one partition: a directory of Parquet files and their manifest.
pub struct Archive {
    dir: PathBuf,
    manifest: Manifest,
}

fn file_name(first: u64, last: u64) -> String {
    format!("{first:020}-{last:020}.parquet")
}

impl Archive {
    /// Opens (or creates) the archive in `dir`, finishing what a crash interrupted: temporary
    /// files are removed; a complete file the manifest does not name yet is verified and
    /// added.
    pub fn open(dir: &Path) -> Result<Archive, ArchiveError> {
        std::fs::create_dir_all(dir).map_err(|e| io(dir, e))?;
        let path = dir.join(MANIFEST);
        let mut manifest = match std::fs::read(&path) {
            Ok(bytes) => serde_json::from_slice(&bytes).map_err(|e| ArchiveError::Manifest {
                path: path.display().to_string(),
                message: e.to_string(),
            })?,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Manifest {
                version: MANIFEST_VERSION,
                files: Vec::new(),
            },
            Err(e) => return Err(io(&path, e)),
        };
        let mut changed = false;
        for entry in std::fs::read_dir(dir).map_err(|e| io(dir, e))? {
            let entry = entry.map_err(|e| io(dir, e))?;
            let name = entry.file_name().to_string_lossy().into_owned();
            if name.ends_with(".parquet.tmp") {
                std::fs::remove_file(entry.path()).map_err(|e| io(&entry.path(), e))?;
            } else if name.ends_with(".parquet") && !manifest.files.iter().any(|f| f.file == name) {
                let (_, summary) = parquet::read(&entry.path())?;
                let bytes = entry.metadata().map_err(|e| io(&entry.path(), e))?.len();
                manifest.files.push(ArchivedFile {
                    file: name,
                    bytes,
                    created_ms: now_ms(),
                    summary,
                });
                changed = true;
            }
        }
        manifest.files.sort_by_key(|f| f.summary.first_offset);
        let archive = Archive {
            dir: dir.to_path_buf(),
            manifest,
        };
        if changed {
            archive.save()?;
        }
        Ok(archive)
    }

    fn save(&self) -> Result<(), ArchiveError> {
        let path = self.dir.join(MANIFEST);
        let json = serde_json::to_vec_pretty(&self.manifest).expect("a manifest serializes");
        write_atomically(&path, &json).map_err(|e| io(&path, e))
    }

    pub fn files(&self) -> &[ArchivedFile] {
        &self.manifest.files
    }

    pub fn path_of(&self, file: &ArchivedFile) -> PathBuf {
        self.dir.join(&file.file)
    }

    /// Archives `rows` (one partition, offset order, contiguous) as one file: written,
    /// verified, renamed into place, then recorded in the manifest.
    pub fn add(
        &mut self,
        origin: &Origin<'_>,
        rows: &[(u64, Record)],
    ) -> Result<ArchivedFile, ArchiveError> {
        let (Some((first, _)), Some((last, _))) = (rows.first(), rows.last()) else {
            return Err(ArchiveError::Io {
                path: self.dir.display().to_string(),
                message: "nothing to archive".into(),
            });
        };
        let (first, last) = (*first, *last);
        if let Some(existing) = self
            .manifest
            .files
            .iter()
            .find(|f| f.summary.first_offset <= last && first <= f.summary.last_offset)
        {
            return Err(ArchiveError::Overlap {
                first,
                last,
                file: existing.file.clone(),
            });
        }
        let name = file_name(first, last);
        let tmp = self.dir.join(format!("{name}.tmp"));
        let summary = parquet::write(&tmp, origin, rows)?;
        parquet::verify(&tmp, &summary)?;
        let path = self.dir.join(&name);
        std::fs::rename(&tmp, &path).map_err(|e| io(&path, e))?;
        std::fs::File::open(&self.dir)
            .and_then(|d| d.sync_all())
            .map_err(|e| io(&self.dir, e))?;
        let bytes = std::fs::metadata(&path).map_err(|e| io(&path, e))?.len();
        let archived = ArchivedFile {
            file: name,
            bytes,
            created_ms: now_ms(),
            summary,
        };
        self.manifest.files.push(archived.clone());
        self.manifest.files.sort_by_key(|f| f.summary.first_offset);
        self.save()?;
        Ok(archived)
    }

    /// Re-reads every file and compares it with the manifest; returns the problems found.
    pub fn verify(&self) -> Vec<ArchiveError> {
        self.manifest
            .files
            .iter()
            .filter_map(|f| parquet::verify(&self.path_of(f), &f.summary).err())
            .map(ArchiveError::from)
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::Bytes;

    fn rows(range: std::ops::Range<u64>) -> Vec<(u64, Record)> {
        range
            .map(|i| {
                let record = Record {
                    timestamp: i as i64,
                    key: None,
                    value: Bytes::from(format!("value-{i}")),
                    headers: Vec::new(),
                };
                (i, record)
            })
            .collect()
    }

    const ORIGIN: Origin<'static> = Origin {
        topic: "t",
        partition: 0,
        produced_by: Vec::new(),
    };

    #[test]
    fn ranges_are_archived_once_and_survive_reopening() {
        let dir = tempfile::tempdir().unwrap();
        let mut archive = Archive::open(dir.path()).unwrap();
        archive.add(&ORIGIN, &rows(0..100)).unwrap();
        archive.add(&ORIGIN, &rows(100..250)).unwrap();
        let overlap = archive.add(&ORIGIN, &rows(200..300)).unwrap_err();
        assert!(
            matches!(overlap, ArchiveError::Overlap { first: 200, .. }),
            "{overlap}"
        );
        let reopened = Archive::open(dir.path()).unwrap();
        assert_eq!(reopened.files(), archive.files());
        assert!(reopened.verify().is_empty());
    }

    #[test]
    fn after_a_crash_temporary_files_go_and_renamed_files_join_the_manifest() {
        let dir = tempfile::tempdir().unwrap();
        let mut archive = Archive::open(dir.path()).unwrap();
        archive.add(&ORIGIN, &rows(0..10)).unwrap();
        // A crash after the rename, before the manifest: the file is complete and verified.
        let renamed = dir.path().join(file_name(10, 19));
        parquet::write(&renamed, &ORIGIN, &rows(10..20)).unwrap();
        // A crash while writing: a temporary file.
        std::fs::write(dir.path().join("x.parquet.tmp"), b"half").unwrap();
        let reopened = Archive::open(dir.path()).unwrap();
        let ranges: Vec<(u64, u64)> = reopened
            .files()
            .iter()
            .map(|f| (f.summary.first_offset, f.summary.last_offset))
            .collect();
        assert_eq!(ranges, vec![(0, 9), (10, 19)]);
        assert!(!dir.path().join("x.parquet.tmp").exists());
    }

    #[test]
    fn verify_names_a_damaged_file() {
        let dir = tempfile::tempdir().unwrap();
        let mut archive = Archive::open(dir.path()).unwrap();
        let file = archive.add(&ORIGIN, &rows(0..500)).unwrap();
        let path = archive.path_of(&file);
        let mut bytes = std::fs::read(&path).unwrap();
        bytes.truncate(bytes.len() - 10);
        std::fs::write(&path, bytes).unwrap();
        let problems = archive.verify();
        assert_eq!(problems.len(), 1);
        assert!(
            problems[0].to_string().contains(&file.file),
            "{}",
            problems[0]
        );
    }
}
