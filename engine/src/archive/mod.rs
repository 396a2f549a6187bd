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
pub mod typed;

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use serde::{Deserialize, Serialize};

use crate::log::batch::{decode_all, encode_batch};
use crate::log::{
    ColdTier, ColdTierOpener, Compression, LogError, Partition, Record, now_ms, write_atomically,
};
use parquet::{FileContents, FileWriter, Origin, ParquetFileError, Summary};

/// Version of the manifest layout.
const MANIFEST_VERSION: u32 = 1;
const MANIFEST: &str = "manifest.json";
/// The schema `archive_schema = infer` found, kept beside the files.
const INFERRED_SCHEMA: &str = "schema.json";

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
    /// Opens the archive in `dir` (empty if there is none yet), finishing what a crash
    /// interrupted: temporary files are removed; a complete file the manifest does not name
    /// yet is verified and added.
    pub fn open(dir: &Path) -> Result<Archive, ArchiveError> {
        if !dir.exists() {
            return Ok(Archive {
                dir: dir.to_path_buf(),
                manifest: Manifest {
                    version: MANIFEST_VERSION,
                    files: Vec::new(),
                },
            });
        }
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
                let summary = FileContents::read(&entry.path())?.summary;
                if let Some(listed) = manifest.files.iter().find(|f| {
                    f.summary.first_offset <= summary.last_offset
                        && summary.first_offset <= f.summary.last_offset
                }) {
                    return Err(ArchiveError::Overlap {
                        first: summary.first_offset,
                        last: summary.last_offset,
                        file: format!(
                            "{} (found {name} beside it, not in the manifest: move one of them away)",
                            listed.file
                        ),
                    });
                }
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

    #[cfg(test)]
    pub fn path_of(&self, file: &ArchivedFile) -> PathBuf {
        self.dir.join(&file.file)
    }

    /// One past the newest archived offset; 0 when empty.
    pub fn end(&self) -> u64 {
        self.manifest
            .files
            .last()
            .map_or(0, |f| f.summary.last_offset + 1)
    }

    /// The file holding `offset`.
    pub fn file_holding(&self, offset: u64) -> Option<&ArchivedFile> {
        let files = &self.manifest.files;
        let index = files.partition_point(|f| f.summary.last_offset < offset);
        files
            .get(index)
            .filter(|f| f.summary.first_offset <= offset)
    }

    /// Archives `rows` (one partition, offset order, contiguous) as one file.
    #[cfg(test)]
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
        self.add_with(origin, *first, *last, |writer| writer.append(rows))
    }

    /// Archives offsets `first..=last` as one file that `fill` writes: written, verified,
    /// renamed into place, then recorded in the manifest.
    pub fn add_with(
        &mut self,
        origin: &Origin<'_>,
        first: u64,
        last: u64,
        fill: impl FnOnce(&mut FileWriter) -> Result<(), ParquetFileError>,
    ) -> Result<ArchivedFile, ArchiveError> {
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
        std::fs::create_dir_all(&self.dir).map_err(|e| io(&self.dir, e))?;
        let name = file_name(first, last);
        let tmp = self.dir.join(format!("{name}.tmp"));
        let mut writer = FileWriter::create(&tmp, origin)?;
        fill(&mut writer)?;
        let summary = writer.finish()?;
        crate::crash_point::reached(crate::crash_point::ARCHIVE_FILE_WRITTEN);
        if (summary.first_offset, summary.last_offset, summary.rows)
            != (first, last, last - first + 1)
        {
            let _ = std::fs::remove_file(&tmp);
            return Err(ArchiveError::Io {
                path: tmp.display().to_string(),
                message: format!(
                    "expected offsets {first}..={last}, got {} rows at {}..={}",
                    summary.rows, summary.first_offset, summary.last_offset
                ),
            });
        }
        parquet::verify(&tmp, &summary)?;
        let path = self.dir.join(&name);
        std::fs::rename(&tmp, &path).map_err(|e| io(&path, e))?;
        std::fs::File::open(&self.dir)
            .and_then(|d| d.sync_all())
            .map_err(|e| io(&self.dir, e))?;
        crate::crash_point::reached(crate::crash_point::ARCHIVE_FILE_RENAMED);
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
    #[cfg(test)]
    pub fn verify(&self) -> Vec<ArchiveError> {
        verify_files(&self.dir, &self.manifest.files)
    }
}

/// Re-reads `files` in `dir` against their manifest entries; returns the problems found.
fn verify_files(dir: &Path, files: &[ArchivedFile]) -> Vec<ArchiveError> {
    files
        .iter()
        .filter_map(|f| parquet::verify(&dir.join(&f.file), &f.summary).err())
        .map(ArchiveError::from)
        .collect()
}

/// Records per batch when archived records are served to readers in the log's format.
const REPLAY_BATCH_RECORDS: usize = 1_000;
/// Bytes read from the log at a time while archiving a segment.
const ARCHIVE_READ_BYTES: usize = 8 << 20;

impl From<ArchiveError> for LogError {
    fn from(error: ArchiveError) -> LogError {
        LogError::Archive(error.to_string())
    }
}

/// The archive of one partition, as the log's cold tier.
pub struct PartitionArchive {
    topic: String,
    partition: u32,
    dir: PathBuf,
    /// Opened on first use: most partitions of most topics never archive.
    archive: Mutex<Option<Archive>>,
    /// The file replay read last, checked against the manifest: a sequential replay reads
    /// and checks each file once.
    replaying: Mutex<Option<(String, Arc<FileContents>)>>,
}

impl PartitionArchive {
    fn with_archive<T>(
        &self,
        f: impl FnOnce(&mut Archive) -> Result<T, ArchiveError>,
    ) -> Result<T, ArchiveError> {
        let mut slot = self.archive.lock().expect("archive lock");
        let archive = match &mut *slot {
            Some(archive) => archive,
            None => slot.insert(Archive::open(&self.dir)?),
        };
        f(archive)
    }

    pub fn files(&self) -> Result<Vec<ArchivedFile>, ArchiveError> {
        self.with_archive(|a| Ok(a.files().to_vec()))
    }

    /// Re-reads every file against the manifest; returns the problems found. The archive
    /// stays free meanwhile: only the list of files is taken under its lock.
    pub fn verify(&self) -> Vec<ArchiveError> {
        match self.files() {
            Ok(files) => verify_files(&self.dir, &files),
            Err(error) => vec![error],
        }
    }

    /// The typed columns a schema-aware topic's files get: from its `archive_schema`, or
    /// inferred from the first file's values and kept (`schema.json`) so every later file of
    /// the partition has the same columns.
    fn value_schema(
        &self,
        partition: &Partition,
        from: u64,
        to: u64,
    ) -> Result<Option<arrow_schema::SchemaRef>, ArchiveError> {
        let Some(setting) = partition.config().archive_schema else {
            return Ok(None);
        };
        let schema_error = |message: String| ArchiveError::Schema {
            topic: self.topic.clone(),
            message,
        };
        match typed::parse_setting(&setting).map_err(schema_error)? {
            typed::SchemaSetting::Fixed(schema) => Ok(Some(schema)),
            typed::SchemaSetting::Infer => {
                let kept = self.dir.join(INFERRED_SCHEMA);
                if let Ok(text) = std::fs::read_to_string(&kept) {
                    return match typed::parse_setting(&text) {
                        Ok(typed::SchemaSetting::Fixed(schema)) => Ok(Some(schema)),
                        _ => Err(io(&kept, "not a schema: move it away to infer again")),
                    };
                }
                let rows = read_rows(partition, from, to)?;
                let schema =
                    typed::infer(rows.iter().map(|(_, r)| &r.value[..])).map_err(schema_error)?;
                std::fs::create_dir_all(&self.dir).map_err(|e| io(&self.dir, e))?;
                write_atomically(&kept, typed::describe(&schema).as_bytes())
                    .map_err(|e| io(&kept, e))?;
                Ok(Some(schema))
            }
        }
    }

    fn contents(&self, file: &ArchivedFile) -> Result<Arc<FileContents>, ArchiveError> {
        let mut replaying = self.replaying.lock().expect("replay lock");
        if let Some((name, contents)) = &*replaying
            && *name == file.file
        {
            return Ok(contents.clone());
        }
        let path = self.dir.join(&file.file);
        let contents = Arc::new(FileContents::read(&path)?);
        contents.check(&path, &file.summary)?;
        *replaying = Some((file.file.clone(), contents.clone()));
        Ok(contents)
    }
}

impl ColdTier for PartitionArchive {
    fn range(&self) -> Result<Option<(u64, u64)>, LogError> {
        Ok(self.with_archive(|a| {
            Ok(a.files()
                .first()
                .map(|first| (first.summary.first_offset, a.end())))
        })?)
    }

    fn store(&self, partition: &Partition, from: u64, to: u64) -> Result<(), LogError> {
        let origin = Origin {
            topic: &self.topic,
            partition: self.partition,
            value_schema: self.value_schema(partition, from, to)?,
        };
        self.with_archive(|archive| {
            let from = from.max(archive.end());
            if from >= to {
                return Ok(());
            }
            archive.add_with(&origin, from, to - 1, |writer| {
                // The log is read and decoded on a second thread while this one encodes and
                // compresses: archival takes about the time of the slower of the two.
                std::thread::scope(|scope| {
                    let (chunks, received) = std::sync::mpsc::sync_channel(2);
                    scope.spawn(move || {
                        let mut offset = from;
                        while offset < to {
                            let rows = read_rows(partition, offset, to);
                            let next = rows
                                .as_ref()
                                .ok()
                                .and_then(|r| r.last())
                                .map(|(o, _)| o + 1);
                            let failed = rows.is_err();
                            if chunks.send(rows).is_err() || failed {
                                return;
                            }
                            offset = next.unwrap_or(to);
                        }
                    });
                    for rows in received {
                        writer.append(&rows?)?;
                    }
                    Ok(())
                })
            })?;
            Ok(())
        })?;
        Ok(())
    }

    fn read(&self, offset: u64, max_bytes: usize) -> Result<Option<(Vec<u8>, u64)>, LogError> {
        let Some(file) = self.with_archive(|a| Ok(a.file_holding(offset).cloned()))? else {
            return Ok(None);
        };
        let contents = self.contents(&file)?;
        let mut data = Vec::new();
        let mut next = offset;
        while next <= file.summary.last_offset && data.len() < max_bytes {
            let rows = contents.rows_from(next, REPLAY_BATCH_RECORDS);
            let Some((last, _)) = rows.last() else { break };
            let last = *last;
            let records: Vec<Record> = rows.into_iter().map(|(_, r)| r).collect();
            data.extend(encode_batch(next, &records, Compression::None));
            next = last + 1;
        }
        if next > file.summary.last_offset {
            *self.replaying.lock().expect("replay lock") = None;
        }
        Ok(Some((data, next)))
    }

    fn delete(&self) -> Result<(), LogError> {
        let mut slot = self.archive.lock().expect("archive lock");
        *slot = None;
        *self.replaying.lock().expect("replay lock") = None;
        match std::fs::remove_dir_all(&self.dir) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(LogError::io(&self.dir, e)),
            _ => Ok(()),
        }
    }
}

/// Records `offset..` of the log, about [`ARCHIVE_READ_BYTES`] of them, none at `to` or after.
fn read_rows(
    partition: &Partition,
    offset: u64,
    to: u64,
) -> Result<Vec<(u64, Record)>, ParquetFileError> {
    let fetched = partition
        .read(offset, ARCHIVE_READ_BYTES)
        .map_err(|e| writer_error(&e))?;
    let mut rows = decode_all(&Bytes::from(fetched.data), offset).map_err(|e| writer_error(&e))?;
    rows.retain(|(o, _)| *o < to);
    if rows.is_empty() {
        return Err(writer_error(&format!(
            "reading offset {offset} of the log returned nothing"
        )));
    }
    Ok(rows)
}

fn writer_error(error: &dyn std::fmt::Display) -> ParquetFileError {
    ParquetFileError::Io {
        path: "log".into(),
        message: error.to_string(),
    }
}

/// Every partition's archive, under one root: `<root>/<topic>/<partition>/`.
pub struct Archives {
    root: PathBuf,
    partitions: Mutex<HashMap<(String, u32), Arc<PartitionArchive>>>,
}

impl Archives {
    pub fn new(root: PathBuf) -> Arc<Archives> {
        Arc::new(Archives {
            root,
            partitions: Mutex::new(HashMap::new()),
        })
    }

    pub fn root(&self) -> &Path {
        &self.root
    }

    /// The opener the log calls as each partition opens.
    pub fn opener(self: &Arc<Self>) -> ColdTierOpener {
        let archives = self.clone();
        Arc::new(move |topic: &str, partition: u32| {
            archives.partition(topic, partition) as Arc<dyn ColdTier>
        })
    }

    /// The archive of a partition (the same one the log uses).
    pub fn partition(&self, topic: &str, partition: u32) -> Arc<PartitionArchive> {
        let mut partitions = self.partitions.lock().expect("archives lock");
        partitions
            .entry((topic.to_string(), partition))
            .or_insert_with(|| {
                Arc::new(PartitionArchive {
                    topic: topic.to_string(),
                    partition,
                    dir: self.root.join(topic).join(partition.to_string()),
                    archive: Mutex::new(None),
                    replaying: Mutex::new(None),
                })
            })
            .clone()
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
        value_schema: None,
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
