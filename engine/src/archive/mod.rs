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
//!
//! With an object store configured (`[storage] archive_url`), a fifth step follows: the file
//! is uploaded and its stored size checked, the manifest marks it remote (and a copy of the
//! manifest goes to the store), then the local copy is deleted. A crash before the manifest
//! says remote uploads the file again (an upload replaces the object whole); a crash after it
//! leaves a local copy that `open` deletes. Until a file is uploaded it stays local and
//! readable, so a store that is down delays the upload, never the archive.

mod columns;
mod pace;
pub mod parquet;
mod priority;
pub mod remote;
pub mod typed;

use std::collections::HashMap;
use std::ops::Range;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use serde::{Deserialize, Serialize};

use crate::log::batch::{self, decode_all, encode_batch};
use crate::log::{
    ColdTier, ColdTierOpener, Compression, LogError, Partition, Record, now_ms, write_atomically,
};
use pace::Pace;
use parquet::{FileContents, Origin, ParquetFileError, Rows, RowsError, Source, Summary};
pub use priority::spawn_low_priority;
pub use remote::RemoteStore;

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
    /// In the object store (`[storage] archive_url`) rather than the local directory.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub remote: bool,
    #[serde(flatten)]
    pub summary: Summary,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
struct Manifest {
    version: u32,
    /// In offset order, not overlapping.
    files: Vec<ArchivedFile>,
}

/// Where a partition's files go once archived, when an object store is configured.
#[derive(Clone)]
pub struct Remote {
    store: Arc<RemoteStore>,
    /// `<topic>/<partition>`: the partition's objects are `<prefix>/<file>`.
    prefix: String,
}

impl Remote {
    fn key(&self, file: &str) -> String {
        format!("{}/{file}", self.prefix)
    }
}

/// The archive of one partition: a directory of Parquet files and their manifest, and the
/// object store files move to once archived, if there is one.
pub struct Archive {
    dir: PathBuf,
    remote: Option<Remote>,
    manifest: Manifest,
}

fn file_name(first: u64, last: u64) -> String {
    format!("{first:020}-{last:020}.parquet")
}

impl Archive {
    /// Opens the archive in `dir` (empty if there is none yet), finishing what a crash
    /// interrupted: temporary files are removed; a complete file the manifest does not name
    /// yet is verified and added; the local copy of a file already uploaded is deleted. With
    /// no local manifest, the copy in the object store (if any) is taken: the archive of a
    /// lost data directory is found again.
    pub fn open(dir: &Path, remote: Option<Remote>) -> Result<Archive, ArchiveError> {
        let path = dir.join(MANIFEST);
        let unreadable = |path: String, e: serde_json::Error| ArchiveError::Manifest {
            path,
            message: e.to_string(),
        };
        let mut manifest = match std::fs::read(&path) {
            Ok(bytes) => serde_json::from_slice(&bytes)
                .map_err(|e| unreadable(path.display().to_string(), e))?,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                let stored = match &remote {
                    Some(remote) => remote
                        .store
                        .get(&remote.key(MANIFEST))?
                        .map(|bytes| {
                            serde_json::from_slice(&bytes).map_err(|e| {
                                unreadable(remote.store.describe(&remote.key(MANIFEST)), e)
                            })
                        })
                        .transpose()?,
                    None => None,
                };
                stored.unwrap_or(Manifest {
                    version: MANIFEST_VERSION,
                    files: Vec::new(),
                })
            }
            Err(e) => return Err(io(&path, e)),
        };
        let entries = match std::fs::read_dir(dir) {
            Ok(entries) => entries
                .collect::<Result<Vec<_>, _>>()
                .map_err(|e| io(dir, e))?,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Vec::new(),
            Err(e) => return Err(io(dir, e)),
        };
        let mut changed = false;
        for entry in entries {
            let name = entry.file_name().to_string_lossy().into_owned();
            let listed = manifest.files.iter().find(|f| f.file == name);
            if name.ends_with(".parquet.tmp") || listed.is_some_and(|f| f.remote) {
                std::fs::remove_file(entry.path()).map_err(|e| io(&entry.path(), e))?;
            } else if name.ends_with(".parquet") && listed.is_none() {
                let summary = FileContents::read(Source::File(entry.path()))?.summary;
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
                    remote: false,
                    summary,
                });
                changed = true;
            }
        }
        manifest.files.sort_by_key(|f| f.summary.first_offset);
        let archive = Archive {
            dir: dir.to_path_buf(),
            remote,
            manifest,
        };
        if changed {
            archive.save()?;
        }
        Ok(archive)
    }

    /// Writes the manifest (atomically); returns what it wrote.
    fn save(&self) -> Result<Vec<u8>, ArchiveError> {
        std::fs::create_dir_all(&self.dir).map_err(|e| io(&self.dir, e))?;
        let path = self.dir.join(MANIFEST);
        let json = serde_json::to_vec_pretty(&self.manifest).expect("a manifest serializes");
        write_atomically(&path, &json).map_err(|e| io(&path, e))?;
        Ok(json)
    }

    /// Moves every local file to the object store (if one is configured): uploaded, size
    /// checked, marked remote in the manifest (whose copy in the store then lists it: the
    /// copy only ever names files the store holds), then deleted here.
    pub fn offload(&mut self) -> Result<(), ArchiveError> {
        let Some(remote) = self.remote.clone() else {
            return Ok(());
        };
        for index in 0..self.manifest.files.len() {
            let file = &self.manifest.files[index];
            if file.remote {
                continue;
            }
            let path = self.dir.join(&file.file);
            remote.store.upload(&remote.key(&file.file), &path)?;
            crate::crash_point::reached(crate::crash_point::ARCHIVE_FILE_UPLOADED);
            self.manifest.files[index].remote = true;
            let manifest = self.save()?;
            remote.store.put(&remote.key(MANIFEST), manifest)?;
            std::fs::remove_file(&path).map_err(|e| io(&path, e))?;
        }
        Ok(())
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
        self.check_free(*first, *last)?;
        let written = write_file(&self.dir, origin, *first, *last, |sink| {
            sink.push_records(rows)
        })?;
        self.commit(written)
    }

    /// Refuses a range overlapping one already archived.
    fn check_free(&self, first: u64, last: u64) -> Result<(), ArchiveError> {
        match self
            .manifest
            .files
            .iter()
            .find(|f| f.summary.first_offset <= last && first <= f.summary.last_offset)
        {
            Some(existing) => Err(ArchiveError::Overlap {
                first,
                last,
                file: existing.file.clone(),
            }),
            None => Ok(()),
        }
    }

    /// Steps 2 to 4 for a file [`write_file`] wrote: verified, renamed into place, recorded.
    fn commit(&mut self, written: Written) -> Result<ArchivedFile, ArchiveError> {
        let Written { name, tmp, summary } = written;
        if let Err(error) = parquet::verify(Source::File(tmp.clone()), &summary) {
            let _ = std::fs::remove_file(&tmp);
            return Err(error.into());
        }
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
            remote: false,
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
        verify_files(&self.dir, self.remote.as_ref(), &self.manifest.files)
    }
}

/// A file written and fsynced under its temporary name, not verified yet.
struct Written {
    name: String,
    tmp: PathBuf,
    summary: Summary,
}

/// Step 1: writes offsets `first..=last` (what `fill` appends) to `<name>.tmp` in `dir` and
/// fsyncs it; checks that exactly that range was written.
fn write_file(
    dir: &Path,
    origin: &Origin<'_>,
    first: u64,
    last: u64,
    fill: impl FnOnce(&mut Rows) -> Result<(), RowsError>,
) -> Result<Written, ArchiveError> {
    std::fs::create_dir_all(dir).map_err(|e| io(dir, e))?;
    let name = file_name(first, last);
    let tmp = dir.join(format!("{name}.tmp"));
    let summary = match parquet::write_file(&tmp, origin, fill) {
        Ok(summary) => summary,
        Err(error) => {
            let _ = std::fs::remove_file(&tmp);
            return Err(error.into());
        }
    };
    crate::crash_point::reached(crate::crash_point::ARCHIVE_FILE_WRITTEN);
    if (summary.first_offset, summary.last_offset, summary.rows) != (first, last, last - first + 1)
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
    Ok(Written { name, tmp, summary })
}

/// Re-reads `files` (in `dir` or the object store) against their manifest entries; returns
/// the problems found.
fn verify_files(dir: &Path, remote: Option<&Remote>, files: &[ArchivedFile]) -> Vec<ArchiveError> {
    files
        .iter()
        .filter_map(|f| {
            let checked = source_of(dir, remote, f)
                .and_then(|source| Ok(parquet::verify(source, &f.summary)?));
            checked.err()
        })
        .collect()
}

/// Where an archived file's bytes are: the local file, or the bytes fetched from the
/// object store.
fn source_of(
    dir: &Path,
    remote: Option<&Remote>,
    file: &ArchivedFile,
) -> Result<Source, ArchiveError> {
    if !file.remote {
        return Ok(Source::File(dir.join(&file.file)));
    }
    let Some(remote) = remote else {
        return Err(ArchiveError::Io {
            path: file.file.clone(),
            message: "the manifest says this file is in the object store, and no \
                      [storage] archive_url is set: set it to the store the files went to"
                .into(),
        });
    };
    let key = remote.key(&file.file);
    let name = remote.store.describe(&key);
    match remote.store.get(&key)? {
        Some(bytes) => Ok(Source::Fetched { name, bytes }),
        None => Err(ArchiveError::Io {
            path: name,
            message: "missing from the object store, though the manifest lists it".into(),
        }),
    }
}

/// Records per batch when archived records are served to readers in the log's format.
const REPLAY_BATCH_RECORDS: usize = 1_000;
/// Bytes read from the log at a time while archiving a segment.
const ARCHIVE_READ_BYTES: usize = 8 << 20;

impl From<ArchiveError> for LogError {
    fn from(error: ArchiveError) -> LogError {
        LogError::archive(error)
    }
}

/// The archive of one partition, as the log's cold tier.
pub struct PartitionArchive {
    topic: String,
    partition: u32,
    dir: PathBuf,
    remote: Option<Remote>,
    /// Opened on first use: most partitions of most topics never archive.
    archive: Mutex<Option<Archive>>,
    /// The file replay read last, checked against the manifest: a sequential replay reads
    /// and checks each file once.
    replaying: Mutex<Option<(String, Arc<FileContents>)>>,
    /// The engine-wide archival rate limit.
    pace: Arc<Pace>,
}

impl PartitionArchive {
    fn with_archive<T>(
        &self,
        f: impl FnOnce(&mut Archive) -> Result<T, ArchiveError>,
    ) -> Result<T, ArchiveError> {
        let mut slot = self.archive.lock().expect("archive lock");
        let archive = match &mut *slot {
            Some(archive) => archive,
            None => slot.insert(Archive::open(&self.dir, self.remote.clone())?),
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
            Ok(files) => verify_files(&self.dir, self.remote.as_ref(), &files),
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
        let source = source_of(&self.dir, self.remote.as_ref(), file)?;
        let name = source.name();
        let contents = Arc::new(FileContents::read(source)?);
        contents.check(&name, &file.summary)?;
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

    fn store(
        &self,
        partition: &Partition,
        ranges: &[Range<u64>],
        stored: &(dyn Fn(Range<u64>) + Sync),
    ) -> Result<(), LogError> {
        let Some(first) = ranges.first() else {
            return Ok(());
        };
        let origin = Origin {
            topic: &self.topic,
            partition: self.partition,
            value_schema: self.value_schema(partition, first.start, first.end)?,
        };
        self.with_archive(|archive| {
            // Files a failed upload left local go first, in offset order.
            archive.offload()?;
            let end = archive.end();
            let todo: Vec<Range<u64>> = ranges
                .iter()
                .map(|r| r.start.max(end)..r.end)
                .filter(|r| !r.is_empty())
                .collect();
            for range in &todo {
                archive.check_free(range.start, range.end - 1)?;
            }
            let dir = archive.dir.clone();
            // Files are pipelined: while this thread encodes one (and a second reads the log
            // for it), a third verifies, renames, records and uploads the one before.
            std::thread::scope(|scope| {
                let (written, to_commit) =
                    std::sync::mpsc::sync_channel::<(Range<u64>, Written)>(1);
                let committer = scope.spawn(move || {
                    for (range, file) in to_commit {
                        archive.commit(file)?;
                        archive.offload()?;
                        stored(range);
                    }
                    Ok::<(), ArchiveError>(())
                });
                let mut writing = Ok(());
                for range in todo {
                    let (from, to) = (range.start, range.end);
                    match write_file(&dir, &origin, from, to - 1, |rows| {
                        fill_from_log(rows, partition, &self.pace, from, to)
                    }) {
                        Ok(file) => {
                            if let Err(refused) = written.send((range, file)) {
                                // The committer stopped on an error, returned below.
                                let _ = std::fs::remove_file(&(refused.0).1.tmp);
                                break;
                            }
                        }
                        Err(error) => {
                            writing = Err(error);
                            break;
                        }
                    }
                }
                drop(written);
                let committed = committer.join().expect("archive committer thread");
                committed.and(writing)
            })
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

    fn offset_for_timestamp(&self, timestamp: i64) -> Result<Option<u64>, LogError> {
        let file = self.with_archive(|a| {
            Ok(a.files()
                .iter()
                .find(|f| f.summary.rows > 0 && f.summary.max_timestamp >= timestamp)
                .cloned())
        })?;
        let Some(file) = file else { return Ok(None) };
        if file.summary.min_timestamp >= timestamp {
            return Ok(Some(file.summary.first_offset));
        }
        Ok(self.contents(&file)?.offset_for_timestamp(timestamp))
    }

    fn delete(&self) -> Result<(), LogError> {
        let mut slot = self.archive.lock().expect("archive lock");
        *slot = None;
        *self.replaying.lock().expect("replay lock") = None;
        if let Some(remote) = &self.remote {
            remote.store.delete_all(&remote.prefix)?;
        }
        match std::fs::remove_dir_all(&self.dir) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(LogError::io(&self.dir, e)),
            _ => Ok(()),
        }
    }
}

/// Pushes records `from..to` of the log into `rows`, decoded straight from the log's batches
/// into the row group's columns, a read buffer reused for every read, at `pace`.
fn fill_from_log(
    rows: &mut Rows,
    partition: &Partition,
    pace: &Pace,
    from: u64,
    to: u64,
) -> Result<(), RowsError> {
    let mut buffer = Vec::new();
    let mut offset = from;
    while offset < to {
        let next = partition
            .read_into(offset, ARCHIVE_READ_BYTES, &mut buffer)
            .map_err(|e| RowsError::Source(e.to_string()))?;
        if next <= offset {
            return Err(RowsError::Source(format!(
                "reading offset {offset} of the log returned nothing"
            )));
        }
        pace.take(buffer.len());
        batch::visit_all(&buffer, offset, |at, record| {
            if at < to {
                rows.push(at, record)
            } else {
                Ok(())
            }
        })?;
        offset = next;
    }
    Ok(())
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
    remote: Option<Arc<RemoteStore>>,
    pace: Arc<Pace>,
    partitions: Mutex<HashMap<(String, u32), Arc<PartitionArchive>>>,
}

impl Archives {
    /// Archives under `root`, moving files to `remote` once archived if given, reading
    /// segments for archiving at most `max_bytes_per_second` (None or 0: no limit).
    pub fn new(
        root: PathBuf,
        remote: Option<RemoteStore>,
        max_bytes_per_second: Option<u64>,
    ) -> Arc<Archives> {
        Arc::new(Archives {
            root,
            remote: remote.map(Arc::new),
            pace: Arc::new(Pace::new(max_bytes_per_second)),
            partitions: Mutex::new(HashMap::new()),
        })
    }

    /// Where a topic's files are, for people: the object store's URL or the local directory.
    pub fn location(&self, topic: &str) -> String {
        match &self.remote {
            Some(remote) => remote.describe(topic),
            None => self.root.join(topic).display().to_string(),
        }
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
                    remote: self.remote.as_ref().map(|store| Remote {
                        store: store.clone(),
                        prefix: format!("{topic}/{partition}"),
                    }),
                    archive: Mutex::new(None),
                    replaying: Mutex::new(None),
                    pace: self.pace.clone(),
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
        let mut archive = Archive::open(dir.path(), None).unwrap();
        archive.add(&ORIGIN, &rows(0..100)).unwrap();
        archive.add(&ORIGIN, &rows(100..250)).unwrap();
        let overlap = archive.add(&ORIGIN, &rows(200..300)).unwrap_err();
        assert!(
            matches!(overlap, ArchiveError::Overlap { first: 200, .. }),
            "{overlap}"
        );
        let reopened = Archive::open(dir.path(), None).unwrap();
        assert_eq!(reopened.files(), archive.files());
        assert!(reopened.verify().is_empty());
    }

    #[test]
    fn after_a_crash_temporary_files_go_and_renamed_files_join_the_manifest() {
        let dir = tempfile::tempdir().unwrap();
        let mut archive = Archive::open(dir.path(), None).unwrap();
        archive.add(&ORIGIN, &rows(0..10)).unwrap();
        // A crash after the rename, before the manifest: the file is complete and verified.
        let renamed = dir.path().join(file_name(10, 19));
        parquet::write(&renamed, &ORIGIN, &rows(10..20)).unwrap();
        // A crash while writing: a temporary file.
        std::fs::write(dir.path().join("x.parquet.tmp"), b"half").unwrap();
        let reopened = Archive::open(dir.path(), None).unwrap();
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
        let mut archive = Archive::open(dir.path(), None).unwrap();
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

    #[test]
    fn with_an_object_store_files_move_there_once_verified_and_recovery_finds_them() {
        let dir = tempfile::tempdir().unwrap();
        let store = tempfile::tempdir().unwrap();
        let url = format!("file://{}", store.path().display());
        let remote = Remote {
            store: Arc::new(RemoteStore::open(&url).unwrap()),
            prefix: "t/0".into(),
        };
        let local = dir.path().join("t/0");
        let stored = store.path().join("t/0");
        let mut archive = Archive::open(&local, Some(remote.clone())).unwrap();
        let file = archive.add(&ORIGIN, &rows(0..100)).unwrap();
        assert!(local.join(&file.file).exists());
        archive.offload().unwrap();
        assert!(archive.files()[0].remote);
        assert!(!local.join(&file.file).exists());
        assert!(stored.join(&file.file).exists() && stored.join(MANIFEST).exists());
        assert!(archive.verify().is_empty());

        // A crash after the manifest said remote, before the local copy was deleted; and the
        // local manifest lost: open takes the store's copy and deletes the leftover.
        std::fs::copy(stored.join(&file.file), local.join(&file.file)).unwrap();
        std::fs::remove_file(local.join(MANIFEST)).unwrap();
        let reopened = Archive::open(&local, Some(remote.clone())).unwrap();
        assert_eq!(reopened.files(), archive.files());
        assert!(!local.join(&file.file).exists());

        std::fs::remove_file(stored.join(&file.file)).unwrap();
        let problems = reopened.verify();
        assert_eq!(problems.len(), 1);
        let problem = problems[0].to_string();
        assert!(
            problem.contains(&file.file) && problem.contains("missing"),
            "{problem}"
        );
    }
}
