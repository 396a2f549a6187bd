//! An Apache Iceberg table per archived topic ([`Table`]), so that Spark, Trino, Flink, DuckDB
//! and pyiceberg query the archive as a table: each archived file, once verified and recorded
//! in its partition's manifest, is appended to the table as a snapshot. Written by the
//! specification (format version 2, <https://iceberg.apache.org/spec/>), without a catalog:
//! the table's metadata sits beside the files, in `<topic>/metadata/`, with
//! `version-hint.text` naming the newest `v<N>.metadata.json` (the file-system catalog's
//! layout, which pyiceberg's `StaticTable` and Spark's Hadoop catalog read).
//!
//! A commit (`Table::append`), and why a crash at any point is harmless:
//! 1. write the manifest listing the new files, and the snapshot's manifest list (the
//!    previous snapshot's manifests and the new one), fsynced: a crash leaves Avro files no
//!    metadata names, which readers never see;
//! 2. write `v<N+1>.metadata.json` under a temporary name, fsync, and link it into place,
//!    which fails if it exists (no commit overwrites another), then fsync the directory: the
//!    commit is the link. It also records, per partition, the last offset the table holds
//!    (`sluice.partition.<p>.last-offset`);
//! 3. replace `version-hint.text`: a crash before leaves it one version behind, and opening
//!    the table takes the highest `v<N>` there is.
//!
//! A file recorded in the partition's manifest but not yet in the table (a crash between the
//! two, or a failed commit) is appended by the next commit of its partition, found by its
//! offsets beyond the table's last offset for the partition: never lost, never twice.

mod avro;
mod schema;

use std::path::{Path, PathBuf};

use serde_json::{Value, json};

use self::avro::ManifestListEntry;
pub use self::schema::{Columns, columns};
use super::remote::{RemoteDir, StoreError};
use crate::log::now_ms;

/// The table's metadata folder, in the topic's archive directory.
const METADATA_DIR: &str = "metadata";
/// The file naming the newest metadata version.
const VERSION_HINT: &str = "version-hint.text";
/// Snapshots the metadata keeps at most; older ones expire (their files stay in the table:
/// every snapshot only appends).
const SNAPSHOTS_KEPT_MAX: usize = 100;
/// Manifests a snapshot lists at most: past this, the earlier ones are merged into one, so
/// that readers open a few manifests, not one per snapshot since the table began.
const MANIFESTS_MAX: usize = 16;
/// Earlier metadata files the metadata log names at most; older ones are deleted.
const METADATA_LOG_MAX: usize = 20;

/// One archive file to append to the table.
#[derive(Debug, Clone)]
pub struct DataFile {
    /// Where readers find it (a `file://` URL, or the object store's).
    pub path: String,
    pub partition: u32,
    pub bytes: u64,
    pub rows: u64,
    pub first_offset: u64,
    pub last_offset: u64,
    pub min_timestamp: i64,
    pub max_timestamp: i64,
}

/// Why the table could not be read or appended to.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum IcebergError {
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("Iceberg metadata: {0}")]
    Avro(#[source] Box<apache_avro::Error>),
    #[error("{path}: not Iceberg table metadata: {source}")]
    Metadata {
        path: PathBuf,
        #[source]
        source: serde_json::Error,
    },
    #[error("{path}: {source}")]
    Hint {
        path: PathBuf,
        #[source]
        source: Box<crate::log::LogError>,
    },
    /// The object store refused a metadata file.
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("{path}: another writer committed version {version} of the table")]
    Conflict { path: PathBuf, version: u64 },
    /// The metadata is not what this writer writes: a sentence says how.
    #[error("Iceberg metadata: {0}")]
    Layout(String),
}

fn io(path: &Path, source: std::io::Error) -> IcebergError {
    IcebergError::Io {
        path: path.to_path_buf(),
        source,
    }
}

/// The table's newest metadata, and the manifests of its current snapshot.
struct Current {
    version: u64,
    metadata: Value,
    manifests: Vec<ManifestListEntry>,
}

/// One topic's Iceberg table.
pub struct Table {
    /// `<topic>/metadata`.
    dir: PathBuf,
    /// The table's location: the topic's archive directory or its folder in the object
    /// store, as a URL.
    location: String,
    /// The topic's folder in the object store, where the metadata goes too (under
    /// `metadata/`), beside the files.
    store: Option<RemoteDir>,
    /// None until the first commit.
    current: Option<Current>,
    /// Manifests a snapshot lists at most before they are merged into one.
    manifests_max: usize,
}

/// The property holding the last offset of `partition` the table holds.
fn last_offset_property(partition: u32) -> String {
    format!("sluice.partition.{partition}.last-offset")
}

/// A `file://` URL of a local path.
pub fn file_url(path: &Path) -> String {
    format!("file://{}", path.display())
}

fn metadata_name(version: u64) -> String {
    format!("v{version}.metadata.json")
}

/// Writes `bytes` to a new file at `path` and fsyncs it.
fn write_durably(path: &Path, bytes: &[u8]) -> Result<(), IcebergError> {
    use std::io::Write;
    let mut file = std::fs::File::create(path).map_err(|e| io(path, e))?;
    file.write_all(bytes).map_err(|e| io(path, e))?;
    file.sync_all().map_err(|e| io(path, e))
}

fn sync_dir(dir: &Path) -> Result<(), IcebergError> {
    std::fs::File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(|e| io(dir, e))
}

/// A new snapshot id: positive, random (ids need only be unique within a table).
fn new_snapshot_id() -> i64 {
    let id = uuid::Uuid::new_v4().as_u64_pair().0 & (i64::MAX as u64);
    i64::try_from(id).unwrap_or(1).max(1)
}

impl Table {
    /// The table of the topic archived in `topic_dir` (and in `store`, if given), as its
    /// newest metadata version says (none yet if there is no metadata).
    pub fn open(topic_dir: &Path, store: Option<RemoteDir>) -> Result<Table, IcebergError> {
        let dir = topic_dir.join(METADATA_DIR);
        let mut table = Table {
            location: store
                .as_ref()
                .map_or_else(|| file_url(topic_dir), RemoteDir::url),
            store,
            dir,
            current: None,
            manifests_max: MANIFESTS_MAX,
        };
        let Some(version) = table.newest_version()? else {
            return Ok(table);
        };
        let path = table.metadata_path(version);
        let bytes = std::fs::read(&path).map_err(|e| io(&path, e))?;
        let metadata: Value = serde_json::from_slice(&bytes)
            .map_err(|source| IcebergError::Metadata { path, source })?;
        let manifests = match current_manifest_list(&metadata) {
            Some(list) => {
                let list = table.local_copy(list);
                let bytes = std::fs::read(&list).map_err(|e| io(&list, e))?;
                avro::read_manifest_list(&bytes)?
            }
            None => Vec::new(),
        };
        table.current = Some(Current {
            version,
            metadata,
            manifests,
        });
        Ok(table)
    }

    /// Where readers find the metadata file `name`.
    fn url_of(&self, name: &str) -> String {
        format!("{}/{METADATA_DIR}/{name}", self.location)
    }

    /// The local copy of the metadata file at `url`.
    fn local_copy(&self, url: &str) -> PathBuf {
        self.dir.join(url.rsplit('/').next().unwrap_or(url))
    }

    /// Writes the metadata file `name` here, durably, and to the store if there is one.
    fn write_file(&self, name: &str, bytes: &[u8]) -> Result<(), IcebergError> {
        write_durably(&self.dir.join(name), bytes)?;
        self.upload(name, bytes)
    }

    fn upload(&self, name: &str, bytes: &[u8]) -> Result<(), IcebergError> {
        match &self.store {
            Some(store) => Ok(store.put(&format!("{METADATA_DIR}/{name}"), bytes.to_vec())?),
            None => Ok(()),
        }
    }

    fn metadata_path(&self, version: u64) -> PathBuf {
        self.dir.join(metadata_name(version))
    }

    /// The highest `v<N>.metadata.json` in the metadata folder.
    fn newest_version(&self) -> Result<Option<u64>, IcebergError> {
        let entries = match std::fs::read_dir(&self.dir) {
            Ok(entries) => entries,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(io(&self.dir, e)),
        };
        let mut newest = None;
        for entry in entries {
            let name = entry.map_err(|e| io(&self.dir, e))?.file_name();
            let version = name
                .to_str()
                .and_then(|n| n.strip_prefix('v')?.strip_suffix(".metadata.json"))
                .and_then(|n| n.parse::<u64>().ok());
            newest = newest.max(version);
        }
        Ok(newest)
    }

    /// Where the newest metadata is, if the table has any.
    pub fn metadata_location(&self) -> Option<PathBuf> {
        self.current.as_ref().map(|c| self.metadata_path(c.version))
    }

    /// The last offset of `partition` the table holds; None if it holds none.
    pub fn last_offset(&self, partition: u32) -> Option<u64> {
        let current = self.current.as_ref()?;
        current.metadata["properties"][last_offset_property(partition)]
            .as_str()?
            .parse()
            .ok()
    }

    /// Appends `files` (of one partition, in offset order, after the table's last offset for
    /// it) as one snapshot, with the table's columns now `columns`.
    pub fn append(
        &mut self,
        partition: u32,
        files: &[DataFile],
        columns: &Columns,
    ) -> Result<(), IcebergError> {
        let Some(last) = files.last() else {
            return Ok(());
        };
        std::fs::create_dir_all(&self.dir).map_err(|e| io(&self.dir, e))?;
        let now = now_ms();
        let (version, mut metadata, mut manifests) = match self.current.take() {
            Some(c) => (c.version, c.metadata, c.manifests),
            None => (0, self.new_metadata(now), Vec::new()),
        };
        let snapshot_id = new_snapshot_id();
        let parent = metadata["current-snapshot-id"].as_i64();
        let sequence = metadata["last-sequence-number"].as_i64().unwrap_or(0) + 1;
        let schema_id = use_columns(&mut metadata, columns);
        let table_schema = metadata["schemas"]
            .as_array()
            .and_then(|s| s.iter().find(|s| s["schema-id"] == schema_id))
            .cloned()
            .unwrap_or_default();

        // Step 1: the manifest and the manifest list.
        let id = uuid::Uuid::new_v4();
        let manifest = avro::manifest(files, snapshot_id, &table_schema)?;
        let manifest_name = format!("{id}-m0.avro");
        self.write_file(&manifest_name, &manifest)?;
        if manifests.len() >= self.manifests_max {
            manifests = vec![self.merge(&manifests, snapshot_id, sequence, &table_schema)?];
        }
        manifests.insert(
            0,
            ManifestListEntry {
                path: self.url_of(&manifest_name),
                length: i64::try_from(manifest.len()).unwrap_or(i64::MAX),
                sequence_number: sequence,
                min_sequence_number: sequence,
                added_snapshot_id: snapshot_id,
                added_files: i32::try_from(files.len()).unwrap_or(i32::MAX),
                added_rows: files.iter().map(|f| f.rows as i64).sum(),
                existing_files: 0,
                existing_rows: 0,
            },
        );
        let list = avro::manifest_list(&manifests, snapshot_id, parent, sequence)?;
        let list_name = format!("snap-{snapshot_id}-1-{id}.avro");
        self.write_file(&list_name, &list)?;

        // Step 2: the new metadata, linked into place.
        let summary = snapshot_summary(&metadata, parent, files);
        let snapshot = json!({
            "snapshot-id": snapshot_id,
            "sequence-number": sequence,
            "timestamp-ms": now,
            "manifest-list": self.url_of(&list_name),
            "summary": summary,
            "schema-id": schema_id,
        });
        let mut snapshot = snapshot;
        if let Some(parent) = parent {
            snapshot["parent-snapshot-id"] = parent.into();
        }
        metadata["last-sequence-number"] = sequence.into();
        metadata["last-updated-ms"] = now.into();
        metadata["current-snapshot-id"] = snapshot_id.into();
        metadata["refs"] = json!({"main": {"snapshot-id": snapshot_id, "type": "branch"}});
        metadata["properties"][last_offset_property(partition)] =
            last.last_offset.to_string().into();
        let expired = push_capped(&mut metadata["snapshots"], snapshot, SNAPSHOTS_KEPT_MAX);
        push_capped(
            &mut metadata["snapshot-log"],
            json!({"timestamp-ms": now, "snapshot-id": snapshot_id}),
            SNAPSHOTS_KEPT_MAX,
        );
        if version > 0 {
            let previous = json!({
                "timestamp-ms": now,
                "metadata-file": self.url_of(&metadata_name(version)),
            });
            push_capped(&mut metadata["metadata-log"], previous, METADATA_LOG_MAX);
        }
        let next = version + 1;
        self.link_metadata(next, &metadata)?;
        crate::crash_point::reached(crate::crash_point::ARCHIVE_TABLE_COMMITTED);

        // Step 3: the hint, and the files of expired versions.
        self.upload(VERSION_HINT, next.to_string().as_bytes())?;
        let hint = self.dir.join(VERSION_HINT);
        crate::log::write_atomically(&hint, next.to_string().as_bytes()).map_err(|source| {
            IcebergError::Hint {
                path: hint.clone(),
                source: Box::new(source),
            }
        })?;
        self.forget_expired(next, &expired);
        self.current = Some(Current {
            version: next,
            metadata,
            manifests,
        });
        Ok(())
    }

    /// One manifest listing every file of `manifests` (as existing files), written by
    /// snapshot `snapshot_id` of sequence number `sequence`: readers open one manifest
    /// instead of one per earlier snapshot.
    fn merge(
        &self,
        manifests: &[ManifestListEntry],
        snapshot_id: i64,
        sequence: i64,
        table_schema: &Value,
    ) -> Result<ManifestListEntry, IcebergError> {
        let mut entries = Vec::new();
        let mut rows = 0;
        for listed in manifests {
            let path = self.local_copy(&listed.path);
            let bytes = std::fs::read(&path).map_err(|e| io(&path, e))?;
            let (existing, existing_rows) = avro::existing_entries(&bytes, listed)?;
            entries.extend(existing);
            rows += existing_rows;
        }
        let files = i32::try_from(entries.len()).unwrap_or(i32::MAX);
        let merged = avro::merged_manifest(entries, table_schema)?;
        let name = format!("{}-m1.avro", uuid::Uuid::new_v4());
        self.write_file(&name, &merged)?;
        Ok(ManifestListEntry {
            path: self.url_of(&name),
            length: i64::try_from(merged.len()).unwrap_or(i64::MAX),
            sequence_number: sequence,
            min_sequence_number: manifests
                .iter()
                .map(|m| m.min_sequence_number)
                .min()
                .unwrap_or(sequence),
            added_snapshot_id: snapshot_id,
            added_files: 0,
            added_rows: 0,
            existing_files: files,
            existing_rows: rows,
        })
    }

    /// The metadata of a table that has none yet.
    fn new_metadata(&self, now: i64) -> Value {
        json!({
            "format-version": 2,
            "table-uuid": uuid::Uuid::new_v4().to_string(),
            "location": self.location,
            "last-sequence-number": 0,
            "last-updated-ms": now,
            "last-column-id": 0,
            "current-schema-id": -1,
            "schemas": [],
            "default-spec-id": 0,
            "partition-specs": [{"spec-id": 0, "fields": []}],
            "last-partition-id": 999,
            "default-sort-order-id": 0,
            "sort-orders": [{"order-id": 0, "fields": []}],
            "properties": {"write.format.default": "parquet"},
            "snapshots": [],
            "snapshot-log": [],
            "metadata-log": [],
        })
    }

    /// Writes version `version` of the metadata: to the store first, if there is one (the
    /// store's `version-hint.text` names it only after the commit), then here, a temporary
    /// file, fsynced, linked to its name (refused if the name exists), then the directory
    /// fsynced.
    fn link_metadata(&self, version: u64, metadata: &Value) -> Result<(), IcebergError> {
        let path = self.metadata_path(version);
        let tmp = self.dir.join(format!(
            "{}.{}.tmp",
            metadata_name(version),
            uuid::Uuid::new_v4()
        ));
        let text = serde_json::to_vec_pretty(metadata).expect("metadata serialises");
        self.upload(&metadata_name(version), &text)?;
        write_durably(&tmp, &text)?;
        let linked = std::fs::hard_link(&tmp, &path);
        let _ = std::fs::remove_file(&tmp);
        match linked {
            Ok(()) => sync_dir(&self.dir),
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {
                Err(IcebergError::Conflict { path, version })
            }
            Err(e) => Err(io(&path, e)),
        }
    }

    /// Deletes the metadata files older than those the metadata log names, and the manifest
    /// lists of expired snapshots. Failing to delete one leaves a file no reader needs.
    fn forget_expired(&self, newest: u64, expired: &[Value]) {
        let kept_versions = METADATA_LOG_MAX as u64 + 1;
        if newest > kept_versions {
            let _ = std::fs::remove_file(self.metadata_path(newest - kept_versions));
        }
        for snapshot in expired {
            if let Some(list) = snapshot["manifest-list"].as_str() {
                let _ = std::fs::remove_file(self.local_copy(list));
            }
        }
    }

    /// Deletes the table (its topic is deleted), here and in `store`.
    pub fn delete(topic_dir: &Path, store: Option<&RemoteDir>) -> Result<(), IcebergError> {
        if let Some(store) = store {
            store.delete_under(METADATA_DIR)?;
        }
        let dir = topic_dir.join(METADATA_DIR);
        match std::fs::remove_dir_all(&dir) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(io(&dir, e)),
            _ => Ok(()),
        }
    }
}

/// The manifest list of the metadata's current snapshot.
fn current_manifest_list(metadata: &Value) -> Option<&str> {
    let current = metadata["current-snapshot-id"].as_i64()?;
    metadata["snapshots"]
        .as_array()?
        .iter()
        .find(|s| s["snapshot-id"].as_i64() == Some(current))?["manifest-list"]
        .as_str()
}

/// Makes `columns` the table's current schema (a new schema if they differ from the current
/// one's), with its name mapping; returns the schema's id.
fn use_columns(metadata: &mut Value, columns: &Columns) -> i64 {
    let fields = Value::Array(columns.fields.clone());
    let current = metadata["current-schema-id"].as_i64().unwrap_or(-1);
    let schemas = metadata["schemas"].as_array().cloned().unwrap_or_default();
    if let Some(same) = schemas
        .iter()
        .find(|s| s["schema-id"].as_i64() == Some(current) && s["fields"] == fields)
    {
        return same["schema-id"].as_i64().unwrap_or(current);
    }
    let id = schemas
        .iter()
        .filter_map(|s| s["schema-id"].as_i64())
        .max()
        .map_or(0, |max| max + 1);
    let schema = json!({"type": "struct", "schema-id": id, "fields": fields});
    if let Some(schemas) = metadata["schemas"].as_array_mut() {
        schemas.push(schema);
    }
    metadata["current-schema-id"] = id.into();
    let last = metadata["last-column-id"].as_u64().unwrap_or(0);
    metadata["last-column-id"] = last.max(columns.last_column_id.into()).into();
    metadata["properties"]["schema.name-mapping.default"] = columns.name_mapping.to_string().into();
    id
}

/// The summary of a snapshot appending `files`: what it added, and the table's totals.
fn snapshot_summary(metadata: &Value, parent: Option<i64>, files: &[DataFile]) -> Value {
    let parent_summary = parent.and_then(|parent| {
        metadata["snapshots"]
            .as_array()?
            .iter()
            .find(|s| s["snapshot-id"].as_i64() == Some(parent))
            .map(|s| s["summary"].clone())
    });
    let total = |name: &str| -> u64 {
        parent_summary
            .as_ref()
            .and_then(|s| s[name].as_str()?.parse().ok())
            .unwrap_or(0)
    };
    let rows: u64 = files.iter().map(|f| f.rows).sum();
    let bytes: u64 = files.iter().map(|f| f.bytes).sum();
    json!({
        "operation": "append",
        "added-data-files": files.len().to_string(),
        "added-records": rows.to_string(),
        "added-files-size": bytes.to_string(),
        "total-data-files": (total("total-data-files") + files.len() as u64).to_string(),
        "total-records": (total("total-records") + rows).to_string(),
        "total-files-size": (total("total-files-size") + bytes).to_string(),
        "total-delete-files": "0",
        "total-position-deletes": "0",
        "total-equality-deletes": "0",
    })
}

/// Appends `item` to the array `list`, dropping the oldest items beyond `max`; returns
/// those dropped.
fn push_capped(list: &mut Value, item: Value, max: usize) -> Vec<Value> {
    if !list.is_array() {
        *list = Value::Array(Vec::new());
    }
    let Some(items) = list.as_array_mut() else {
        return Vec::new();
    };
    items.push(item);
    let excess = items.len().saturating_sub(max);
    items.drain(..excess).collect()
}

#[cfg(test)]
mod tests {
    use apache_avro::types::Value as Avro;

    use super::*;
    use crate::archive::columns::Encodings;

    fn file(partition: u32, first: u64) -> DataFile {
        DataFile {
            path: format!("file:///nowhere/{partition}/{first}.parquet"),
            partition,
            bytes: 100,
            rows: 10,
            first_offset: first,
            last_offset: first + 9,
            min_timestamp: 0,
            max_timestamp: 9,
        }
    }

    /// Every data file the current snapshot's manifests list: (path, status, data sequence
    /// number), the sequence number inherited by an added file made explicit.
    fn listed_files(table: &Table) -> Vec<(String, i32, i64)> {
        let current = table.current.as_ref().unwrap();
        let mut files = Vec::new();
        for manifest in &current.manifests {
            let bytes = std::fs::read(table.local_copy(&manifest.path)).unwrap();
            let reader = apache_avro::Reader::new(&bytes[..]).unwrap();
            for entry in reader {
                let Avro::Record(fields) = entry.unwrap() else {
                    panic!("not a record")
                };
                let field = |name: &str| fields.iter().find(|(n, _)| n == name).unwrap().1.clone();
                let Avro::Int(status) = field("status") else {
                    panic!("status")
                };
                let sequence = match field("sequence_number") {
                    Avro::Union(1, n) => match *n {
                        Avro::Long(n) => n,
                        _ => panic!("sequence number"),
                    },
                    _ => manifest.sequence_number,
                };
                let Avro::Record(data_file) = field("data_file") else {
                    panic!("data_file")
                };
                let Some((_, Avro::String(path))) =
                    data_file.iter().find(|(n, _)| n == "file_path")
                else {
                    panic!("file_path")
                };
                files.push((path.clone(), status, sequence));
            }
        }
        files.sort();
        files
    }

    #[test]
    fn manifests_past_the_limit_are_merged_and_every_file_stays_listed_once() {
        let dir = tempfile::tempdir().unwrap();
        let columns = columns(Encodings::BYTES, &[], &[]);
        let mut table = Table::open(dir.path(), None).unwrap();
        table.manifests_max = 3;
        for commit in 0..10u64 {
            table.append(0, &[file(0, commit * 10)], &columns).unwrap();
            let listed = table.current.as_ref().unwrap().manifests.len();
            assert!(listed <= 3, "{listed} manifests after commit {commit}");
        }
        assert_eq!(table.last_offset(0), Some(99));
        // Read again from the disk: the same files, each once, each with the sequence number
        // of the commit that added it; only the newest is listed as added.
        let reopened = Table::open(dir.path(), None).unwrap();
        let files = listed_files(&reopened);
        let mut expected: Vec<(String, i32, i64)> = (0..10u64)
            .map(|commit| {
                let status = if commit == 9 { ADDED_STATUS } else { 0 };
                (file(0, commit * 10).path, status, commit as i64 + 1)
            })
            .collect();
        expected.sort();
        assert_eq!(files, expected);
    }

    const ADDED_STATUS: i32 = 1;
}
