//! The archive of one partition ([`PartitionArchive`]): a directory of Parquet files and
//! their manifest, and the object store files move to once archived, if there is one. It is
//! the partition's cold tier: the log stores sealed segments in it and replays old offsets
//! from it.
//!
//! The steps of archiving a range, and why a crash at any point is harmless:
//! 1. write `<first>-<last>.parquet.tmp`, fsync it: a crash leaves a temporary file, removed
//!    by [`PartitionArchive::recover`];
//! 2. read it back and compare rows, offset range and checksum with what was written;
//! 3. rename it to `<first>-<last>.parquet`, fsync the directory: a crash leaves a complete,
//!    verified file the manifest does not name yet; `recover` verifies it and adds it;
//! 4. write the manifest (atomically): from here on the range is archived, and the segment
//!    holding it may be deleted.
//!
//! A range is never in two files: a range overlapping the manifest is refused.
//!
//! With an object store configured (`[storage] archive_url`), a fifth step follows: the file
//! is uploaded and its stored size checked, the manifest marks it remote (and a copy of the
//! manifest goes to the store), then the local copy is deleted. A crash before the manifest
//! says remote uploads the file again (an upload replaces the object whole); a crash after it
//! leaves a local copy that `recover` deletes. Until a file is uploaded it stays local and
//! readable, so a store that is down delays the upload, never the archive.

use std::fs::DirEntry;
use std::ops::Range;
use std::path::{Path, PathBuf};
use std::sync::mpsc::{SyncSender, sync_channel};
use std::sync::{Arc, Mutex};

use bytes::Bytes;

use super::columns::Encodings;
use super::error::{ArchiveError, LogReadError, io};
use super::iceberg;
use super::manifest::{ArchivedFile, MANIFEST_FILE, Manifest};
use super::pace::Pace;
use super::parquet::{
    self, FileContents, Origin, ParquetFileError, Rows, RowsError, Source, Summary,
};
use super::remote::RemoteDir;
use super::topic::{TopicArchive, ValueSchema};
use super::typed;
use crate::log::batch::{self, decode_all, encode_batch};
use crate::log::{ColdTier, Compression, LogError, Partition, Record, now_ms};

/// Bytes of a range's first records read to infer its fields (`archive_schema = infer`).
const SAMPLE_READ_BYTES: usize = 1 << 20;
/// Records per batch when archived records are served to readers in the log's format.
const REPLAY_BATCH_RECORDS: usize = 1_000;
/// Bytes read from the log at a time while archiving a segment.
const ARCHIVE_READ_BYTES: usize = 8 << 20;
/// Files written and waiting to be committed, at most: writing runs at most one file ahead of
/// verifying, recording and uploading.
const COMMIT_QUEUE_FILES: usize = 1;
/// Digits of each offset in a file's name: enough for any u64, so that names sort as offsets.
const FILE_NAME_OFFSET_DIGITS: usize = 20;

fn file_name(first: u64, last: u64) -> String {
    format!(
        "{first:0digits$}-{last:0digits$}.parquet",
        digits = FILE_NAME_OFFSET_DIGITS
    )
}

/// The archive of one partition, as the log's cold tier.
pub struct PartitionArchive {
    topic: String,
    partition: u32,
    dir: PathBuf,
    remote: Option<RemoteDir>,
    /// Recovered on first use: most partitions of most topics never archive.
    manifest: Mutex<Option<Manifest>>,
    /// The file replay read last, checked against the manifest: a sequential replay reads
    /// and checks each file once.
    replaying: Mutex<Option<(String, Arc<FileContents>)>>,
    /// The engine-wide archival rate limit.
    pace: Arc<Pace>,
    /// What the topic's partitions share: the schema of typed columns.
    shared: Arc<TopicArchive>,
}

impl PartitionArchive {
    /// The archive of `topic`'s `partition` in `dir`, its files moving to `remote` once
    /// archived if given, the log read for archiving at `pace`. Nothing is read before it is
    /// used.
    pub(super) fn new(
        topic: &str,
        partition: u32,
        dir: PathBuf,
        remote: Option<RemoteDir>,
        pace: Arc<Pace>,
        shared: Arc<TopicArchive>,
    ) -> PartitionArchive {
        PartitionArchive {
            topic: topic.to_string(),
            partition,
            dir,
            remote,
            manifest: Mutex::new(None),
            replaying: Mutex::new(None),
            pace,
            shared,
        }
    }

    fn with_manifest<T>(
        &self,
        f: impl FnOnce(&mut Manifest) -> Result<T, ArchiveError>,
    ) -> Result<T, ArchiveError> {
        let mut slot = self.manifest.lock().expect("archive lock");
        let manifest = match &mut *slot {
            Some(manifest) => manifest,
            None => slot.insert(self.recover()?),
        };
        f(manifest)
    }

    /// Opens the archive (empty if there is none yet), finishing what a crash interrupted:
    /// temporary files are removed; a complete file the manifest does not name yet is
    /// verified and added; the local copy of a file already uploaded is deleted. With no
    /// local manifest, the copy in the object store (if any) is taken: the archive of a lost
    /// data directory is found again.
    fn recover(&self) -> Result<Manifest, ArchiveError> {
        let mut manifest = Manifest::load(&self.dir, self.remote.as_ref())?;
        let mut changed = false;
        for entry in entries(&self.dir)? {
            let name = entry.file_name().to_string_lossy().into_owned();
            let listed = manifest.named(&name);
            if name.ends_with(".parquet.tmp") || listed.is_some_and(|f| f.remote) {
                std::fs::remove_file(entry.path()).map_err(|e| io(&entry.path(), e))?;
            } else if name.ends_with(".parquet") && listed.is_none() {
                let found = unlisted_file(&manifest, &entry, name)?;
                manifest.add(found);
                changed = true;
            }
        }
        manifest.sort();
        if changed {
            manifest.save(&self.dir)?;
        }
        Ok(manifest)
    }

    /// Moves every local file to the object store (if one is configured): uploaded, size
    /// checked, marked remote in the manifest (whose copy in the store then lists it: the
    /// copy only ever names files the store holds), then deleted here.
    fn offload(&self, manifest: &mut Manifest) -> Result<(), ArchiveError> {
        let Some(remote) = &self.remote else {
            return Ok(());
        };
        let local: Vec<String> = manifest
            .files()
            .iter()
            .filter(|f| !f.remote)
            .map(|f| f.file.clone())
            .collect();
        for name in local {
            let path = self.dir.join(&name);
            remote.upload(&name, &path)?;
            crate::crash_point::reached(crate::crash_point::ARCHIVE_FILE_UPLOADED);
            manifest.mark_remote(&name);
            let saved = manifest.save(&self.dir)?;
            remote.put(MANIFEST_FILE, saved)?;
            std::fs::remove_file(&path).map_err(|e| io(&path, e))?;
        }
        Ok(())
    }

    /// Step 6: appends the files the manifest lists and the topic's Iceberg table does not
    /// hold yet (after upload, where an object store is configured: the table names each file
    /// where it stays).
    fn update_table(&self, manifest: &Manifest, encodings: Encodings) -> Result<(), ArchiveError> {
        let location = |file: &ArchivedFile| match (&self.remote, file.remote) {
            (None, _) => Some(iceberg::file_url(&self.dir.join(&file.file))),
            (Some(remote), true) => Some(remote.describe(&file.file)),
            (Some(_), false) => None,
        };
        self.shared
            .commit_to_table(self.partition, manifest.files(), location, encodings)
    }

    /// Steps 2 to 4 for a file [`write_temporary`] wrote: verified, renamed into place,
    /// recorded.
    fn commit(
        &self,
        manifest: &mut Manifest,
        written: Written,
    ) -> Result<ArchivedFile, ArchiveError> {
        let Written {
            schema_version,
            name,
            tmp,
            summary,
        } = written;
        let read_back = Source::File(tmp.clone()).into_bytes().and_then(|bytes| {
            let name = tmp.display().to_string();
            let checksum = crc32c::crc32c(&bytes);
            parquet::verify(Source::Fetched { name, bytes }, &summary).map(|()| checksum)
        });
        let file_checksum = match read_back {
            Ok(checksum) => checksum,
            Err(error) => {
                let _ = std::fs::remove_file(&tmp);
                return Err(error.into());
            }
        };
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
            schema_version,
            file_checksum: Some(file_checksum),
            summary,
        };
        manifest.add(archived.clone());
        manifest.save(&self.dir)?;
        Ok(archived)
    }

    /// Writes each range of `todo` to a file and commits it (steps 1 to 5). Files are
    /// pipelined: while this thread encodes one (and a second reads the log for it), a third
    /// verifies, renames, records and uploads the one before.
    fn write_and_commit(
        &self,
        manifest: &mut Manifest,
        partition: &Partition,
        encodings: Encodings,
        todo: Vec<Range<u64>>,
        stored: &(dyn Fn(Range<u64>) + Sync),
    ) -> Result<(), ArchiveError> {
        std::thread::scope(|scope| {
            let (written, to_commit) = sync_channel::<(Range<u64>, Written)>(COMMIT_QUEUE_FILES);
            let committer = scope.spawn(move || {
                for (range, file) in to_commit {
                    self.commit(manifest, file)?;
                    self.offload(manifest)?;
                    self.update_table(manifest, encodings)?;
                    stored(range);
                }
                Ok::<(), ArchiveError>(())
            });
            let writing = self.write_each(partition, encodings, todo, written);
            let committed = committer.join().expect("archive committer thread");
            committed.and(writing)
        })
    }

    /// Step 1 for each range of `todo`, each file sent to `written` to be committed; stops
    /// at the first error, or when the committer stopped on one.
    fn write_each(
        &self,
        partition: &Partition,
        encodings: Encodings,
        todo: Vec<Range<u64>>,
        written: SyncSender<(Range<u64>, Written)>,
    ) -> Result<(), ArchiveError> {
        for range in todo {
            let (from, to) = (range.start, range.end);
            let value_schema = self.value_schema(partition, from, to)?;
            let origin = Origin {
                topic: &self.topic,
                partition: self.partition,
                schema_version: value_schema.as_ref().map(|v| v.version),
                value_schema: value_schema.map(|v| v.schema),
                encodings,
            };
            let file = write_temporary(&self.dir, &origin, from, to - 1, |rows| {
                fill_from_log(rows, partition, &self.pace, from, to)
            })?;
            if let Err(refused) = written.send((range, file)) {
                // The committer stopped on an error, returned by the caller.
                let _ = std::fs::remove_file(&(refused.0).1.tmp);
                break;
            }
        }
        Ok(())
    }

    /// Archives `rows` (one partition, offset order, contiguous) as one file.
    #[cfg(test)]
    pub fn add(
        &self,
        origin: &Origin<'_>,
        rows: &[(u64, Record)],
    ) -> Result<ArchivedFile, ArchiveError> {
        let (Some((first, _)), Some((last, _))) = (rows.first(), rows.last()) else {
            let nothing =
                std::io::Error::new(std::io::ErrorKind::InvalidInput, "nothing to archive");
            return Err(io(&self.dir, nothing));
        };
        self.with_manifest(|manifest| {
            manifest.check_free(*first, *last)?;
            let written = write_temporary(&self.dir, origin, *first, *last, |sink| {
                sink.push_records(rows)
            })?;
            self.commit(manifest, written)
        })
    }

    #[cfg(test)]
    pub fn path_of(&self, file: &ArchivedFile) -> PathBuf {
        self.dir.join(&file.file)
    }

    pub fn files(&self) -> Result<Vec<ArchivedFile>, ArchiveError> {
        self.with_manifest(|m| Ok(m.files().to_vec()))
    }

    /// Re-reads every file against the manifest; returns the problems found. The archive
    /// stays free meanwhile: only the list of files is taken under its lock.
    pub fn verify(&self) -> Vec<ArchiveError> {
        match self.files() {
            Ok(files) => files
                .iter()
                .filter_map(|f| {
                    let checked = self
                        .source_of(f)
                        .and_then(|source| Ok(parquet::verify(source, &f.summary)?));
                    checked.err()
                })
                .collect(),
            Err(error) => vec![error],
        }
    }

    /// An archived file's bytes (from the local file, or fetched from the object store),
    /// checked against the checksum of the whole file the manifest records: a change
    /// anywhere in it, in a column or in its metadata, is found.
    fn source_of(&self, file: &ArchivedFile) -> Result<Source, ArchiveError> {
        let source = self.unchecked_source_of(file)?;
        let Some(expected) = file.file_checksum else {
            return Ok(source);
        };
        let name = source.name();
        let bytes = source.into_bytes()?;
        let found = crc32c::crc32c(&bytes);
        if found != expected {
            let message = format!(
                "its checksum is {found:08x}, the manifest's {expected:08x}: it changed after it was written"
            );
            return Err(ParquetFileError::Mismatch {
                path: name,
                message,
            }
            .into());
        }
        Ok(Source::Fetched { name, bytes })
    }

    fn unchecked_source_of(&self, file: &ArchivedFile) -> Result<Source, ArchiveError> {
        if !file.remote {
            return Ok(Source::File(self.dir.join(&file.file)));
        }
        let Some(remote) = &self.remote else {
            return Err(ArchiveError::NoStore {
                file: file.file.clone(),
            });
        };
        let name = remote.describe(&file.file);
        match remote.get(&file.file)? {
            Some(bytes) => Ok(Source::Fetched { name, bytes }),
            None => Err(ArchiveError::Missing { location: name }),
        }
    }

    /// The typed columns a schema-aware topic's file of offsets `from..to` gets: the topic's
    /// newest schema version once its `archive_schema` (or, with `infer`, the fields of the
    /// range's first values) is taken in (see [`TopicArchive`]).
    fn value_schema(
        &self,
        partition: &Partition,
        from: u64,
        to: u64,
    ) -> Result<Option<ValueSchema>, ArchiveError> {
        let Some(setting) = partition.config().archive_schema else {
            return Ok(None);
        };
        let setting = typed::parse_setting(&setting).map_err(|source| ArchiveError::Schema {
            topic: self.topic.clone(),
            source,
        })?;
        let sample = match setting {
            typed::SchemaSetting::Infer => read_rows(partition, from, to, SAMPLE_READ_BYTES)
                .map_err(|source| ArchiveError::Log { source })?,
            typed::SchemaSetting::Fixed(_) => Vec::new(),
        };
        let values = sample.iter().map(|(_, record)| record.value_bytes());
        Ok(Some(self.shared.value_schema(&setting, values)?))
    }

    fn contents(&self, file: &ArchivedFile) -> Result<Arc<FileContents>, ArchiveError> {
        let mut replaying = self.replaying.lock().expect("replay lock");
        if let Some((name, contents)) = &*replaying
            && *name == file.file
        {
            return Ok(contents.clone());
        }
        let source = self.source_of(file)?;
        let name = source.name();
        let contents = Arc::new(FileContents::read(source)?);
        contents.check(&name, &file.summary)?;
        *replaying = Some((file.file.clone(), contents.clone()));
        Ok(contents)
    }
}

impl ColdTier for PartitionArchive {
    fn range(&self) -> Result<Option<(u64, u64)>, LogError> {
        Ok(self.with_manifest(|m| {
            Ok(m.files()
                .first()
                .map(|first| (first.summary.first_offset, m.end())))
        })?)
    }

    fn store(
        &self,
        partition: &Partition,
        ranges: &[Range<u64>],
        stored: &(dyn Fn(Range<u64>) + Sync),
    ) -> Result<(), LogError> {
        let config = partition.config();
        let encodings = Encodings {
            key: config.archive_key,
            value: config.archive_value,
        };
        self.with_manifest(|manifest| {
            // Files a failed upload left local go first, in offset order, and files not yet
            // in the topic's table (a crash, a failed commit) join it.
            self.offload(manifest)?;
            self.update_table(manifest, encodings)?;
            let end = manifest.end();
            let todo: Vec<Range<u64>> = ranges
                .iter()
                .map(|r| r.start.max(end)..r.end)
                .filter(|r| !r.is_empty())
                .collect();
            for range in &todo {
                manifest.check_free(range.start, range.end - 1)?;
            }
            self.write_and_commit(manifest, partition, encodings, todo, stored)
        })?;
        Ok(())
    }

    fn read(&self, offset: u64, max_bytes: usize) -> Result<Option<(Vec<u8>, u64)>, LogError> {
        let Some(file) = self.with_manifest(|m| Ok(m.file_holding(offset).cloned()))? else {
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
        let file = self.with_manifest(|m| {
            Ok(m.files()
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
        let mut slot = self.manifest.lock().expect("archive lock");
        *slot = None;
        *self.replaying.lock().expect("replay lock") = None;
        if let Some(remote) = &self.remote {
            remote.delete_all().map_err(ArchiveError::from)?;
        }
        self.shared.delete()?;
        match std::fs::remove_dir_all(&self.dir) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(LogError::io(&self.dir, e)),
            _ => Ok(()),
        }
    }
}

/// The entries of `dir`; none when it does not exist yet.
fn entries(dir: &Path) -> Result<Vec<DirEntry>, ArchiveError> {
    match std::fs::read_dir(dir) {
        Ok(entries) => entries
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| io(dir, e)),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(Vec::new()),
        Err(e) => Err(io(dir, e)),
    }
}

/// A complete file `entry` (called `name`) the manifest does not name yet, left by a crash
/// after step 3: read whole (which checks it), and refused if it overlaps the manifest.
fn unlisted_file(
    manifest: &Manifest,
    entry: &DirEntry,
    name: String,
) -> Result<ArchivedFile, ArchiveError> {
    let summary = FileContents::read(Source::File(entry.path()))?.summary;
    if let Some(listed) = manifest.overlapping(summary.first_offset, summary.last_offset) {
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
    Ok(ArchivedFile {
        file: name,
        bytes,
        created_ms: now_ms(),
        remote: false,
        schema_version: None,
        file_checksum: None,
        summary,
    })
}

/// A file written and fsynced under its temporary name, not verified yet.
struct Written {
    /// The version of the topic's schema its typed columns are, if it has any.
    schema_version: Option<u32>,
    name: String,
    tmp: PathBuf,
    summary: Summary,
}

/// Step 1: writes offsets `first..=last` (what `fill` appends) to `<name>.tmp` in `dir` and
/// fsyncs it; checks that exactly that range was written.
fn write_temporary(
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
        return Err(ArchiveError::WrongRange {
            path: tmp,
            first,
            last,
            rows: summary.rows,
            found_first: summary.first_offset,
            found_last: summary.last_offset,
        });
    }
    Ok(Written {
        schema_version: origin.schema_version,
        name,
        tmp,
        summary,
    })
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
            .map_err(|e| RowsError::Source(Box::new(LogReadError::Read(e))))?;
        if next <= offset {
            return Err(RowsError::Source(Box::new(LogReadError::Nothing {
                offset,
            })));
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
    max_bytes: usize,
) -> Result<Vec<(u64, Record)>, LogReadError> {
    let fetched = partition.read(offset, max_bytes)?;
    let mut rows = decode_all(&Bytes::from(fetched.data), offset)?;
    rows.retain(|(o, _)| *o < to);
    if rows.is_empty() {
        return Err(LogReadError::Nothing { offset });
    }
    Ok(rows)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::archive::remote::RemoteStore;

    fn rows(range: Range<u64>) -> Vec<(u64, Record)> {
        range
            .map(|i| {
                let record = Record {
                    timestamp: i as i64,
                    key: None,
                    value: Some(Bytes::from(format!("value-{i}"))),
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
        schema_version: None,
        encodings: Encodings::BYTES,
    };

    /// The archive in `dir`, recovered when first used, as after a start.
    fn open(dir: &Path, remote: Option<RemoteDir>) -> PartitionArchive {
        PartitionArchive::new(
            "t",
            0,
            dir.to_path_buf(),
            remote,
            Arc::new(Pace::new(None)),
            Arc::new(TopicArchive::new("t", dir.to_path_buf(), None)),
        )
    }

    #[test]
    fn ranges_are_archived_once_and_survive_reopening() {
        let dir = tempfile::tempdir().unwrap();
        let archive = open(dir.path(), None);
        archive.add(&ORIGIN, &rows(0..100)).unwrap();
        archive.add(&ORIGIN, &rows(100..250)).unwrap();
        let overlap = archive.add(&ORIGIN, &rows(200..300)).unwrap_err();
        assert!(
            matches!(overlap, ArchiveError::Overlap { first: 200, .. }),
            "{overlap}"
        );
        let reopened = open(dir.path(), None);
        assert_eq!(reopened.files().unwrap(), archive.files().unwrap());
        assert!(reopened.verify().is_empty());
    }

    #[test]
    fn after_a_crash_temporary_files_go_and_renamed_files_join_the_manifest() {
        let dir = tempfile::tempdir().unwrap();
        let archive = open(dir.path(), None);
        archive.add(&ORIGIN, &rows(0..10)).unwrap();
        // A crash after the rename, before the manifest: the file is complete and verified.
        let renamed = dir.path().join(file_name(10, 19));
        parquet::write(&renamed, &ORIGIN, &rows(10..20)).unwrap();
        // A crash while writing: a temporary file.
        std::fs::write(dir.path().join("x.parquet.tmp"), b"half").unwrap();
        let reopened = open(dir.path(), None);
        let ranges: Vec<(u64, u64)> = reopened
            .files()
            .unwrap()
            .iter()
            .map(|f| (f.summary.first_offset, f.summary.last_offset))
            .collect();
        assert_eq!(ranges, vec![(0, 9), (10, 19)]);
        assert!(!dir.path().join("x.parquet.tmp").exists());
    }

    #[test]
    fn verify_names_a_damaged_file() {
        let dir = tempfile::tempdir().unwrap();
        let archive = open(dir.path(), None);
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
        let remote = RemoteDir::new(Arc::new(RemoteStore::open(&url).unwrap()), "t", 0);
        let local = dir.path().join("t/0");
        let stored = store.path().join("t/0");
        let archive = open(&local, Some(remote.clone()));
        let file = archive.add(&ORIGIN, &rows(0..100)).unwrap();
        assert!(local.join(&file.file).exists());
        archive.with_manifest(|m| archive.offload(m)).unwrap();
        assert!(archive.files().unwrap()[0].remote);
        assert!(!local.join(&file.file).exists());
        assert!(stored.join(&file.file).exists() && stored.join(MANIFEST_FILE).exists());
        assert!(archive.verify().is_empty());

        // A crash after the manifest said remote, before the local copy was deleted; and the
        // local manifest lost: recovery takes the store's copy and deletes the leftover.
        std::fs::copy(stored.join(&file.file), local.join(&file.file)).unwrap();
        std::fs::remove_file(local.join(MANIFEST_FILE)).unwrap();
        let reopened = open(&local, Some(remote.clone()));
        assert_eq!(reopened.files().unwrap(), archive.files().unwrap());
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

    #[test]
    fn errors_keep_their_cause_as_source() {
        use std::error::Error;
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join(MANIFEST_FILE), b"{garbage").unwrap();
        let error = LogError::from(open(dir.path(), None).files().unwrap_err());
        let archive = error.source().unwrap().downcast_ref::<ArchiveError>();
        assert!(
            matches!(archive, Some(ArchiveError::Manifest { .. })),
            "{error}"
        );
        let cause = archive.unwrap().source().unwrap();
        assert!(
            cause.downcast_ref::<serde_json::Error>().is_some(),
            "{cause}"
        );

        let summary = parquet::write(&dir.path().join("a.parquet"), &ORIGIN, &rows(0..10)).unwrap();
        let missing = dir.path().join("missing.parquet");
        let error = parquet::verify(Source::File(missing), &summary).unwrap_err();
        let cause = error.source().unwrap().downcast_ref::<std::io::Error>();
        assert_eq!(
            cause.map(|e| e.kind()),
            Some(std::io::ErrorKind::NotFound),
            "{error}"
        );
    }
}
