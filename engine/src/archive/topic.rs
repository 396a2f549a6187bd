//! What the partitions of one topic's archive share ([`TopicArchive`]): the schema of its
//! typed columns, one per topic and versioned, in `schema.json` in the topic's archive
//! directory (docs/archive-format.md, One schema per topic).
//!
//! Every file of a schema-aware topic is written under the topic's newest schema version,
//! whichever partition it comes from, and names that version (the manifest's
//! `schema_version`, the file's `sluice.schema_version`). With `archive_schema = infer`, each
//! file's first values are sampled before it is written: a field not seen before adds a
//! column, a field whose values no longer fit its type widens it (int64 to float64, anything
//! to utf8); either makes a new version. A version only ever adds or widens, so the files of
//! older versions read together with the newer ones by name (DuckDB's `union_by_name`).
//!
//! Each typed column has a field id, kept from version to version and new when its type
//! changes, written into the Parquet schema: table formats (Iceberg) tell columns apart by it.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use arrow_schema::{DataType, Field, Schema, SchemaRef};
use serde::{Deserialize, Serialize};

use super::columns::{Encodings, FIELD_ID_KEY};
use super::error::{ArchiveError, io};
use super::iceberg::{self, DataFile, Table};
use super::manifest::ArchivedFile;
use super::remote::RemoteDir;
use super::typed::{self, SchemaSetting};
use crate::log::{now_ms, write_atomically};

/// The topic's schema history, in its archive directory.
const SCHEMA_FILE: &str = "schema.json";
/// Version of the history's layout.
const SCHEMA_FILE_FORMAT: u32 = 1;
/// The first field id of a typed column: ids below are the fixed columns'.
pub const FIRST_TYPED_FIELD_ID: u32 = 100;
/// Versions kept in the history at most; an older file names a version no longer listed
/// only after this many changes of the schema (its columns are in the file itself).
const SCHEMA_VERSIONS_MAX: usize = 1_000;

/// One typed column of a version.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TypedField {
    pub name: String,
    /// As `archive_schema` names types (`int64`, `float64`, `utf8`, ...).
    #[serde(rename = "type")]
    pub kind: String,
    pub id: u32,
}

/// One version of the topic's schema.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SchemaVersion {
    pub version: u32,
    pub created_ms: i64,
    pub fields: Vec<TypedField>,
    /// What changed from the version before, for people: `added x int64`, `widened x int64
    /// to float64`, `set by archive_schema`.
    pub changes: Vec<String>,
}

/// `schema.json`.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
struct SchemaHistory {
    format: u32,
    last_field_id: u32,
    versions: Vec<SchemaVersion>,
}

impl SchemaHistory {
    fn load(path: &Path) -> Result<SchemaHistory, ArchiveError> {
        match std::fs::read(path) {
            Ok(bytes) => {
                serde_json::from_slice(&bytes).map_err(|source| ArchiveError::SchemaHistory {
                    path: path.to_path_buf(),
                    source,
                })
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(SchemaHistory {
                format: SCHEMA_FILE_FORMAT,
                last_field_id: FIRST_TYPED_FIELD_ID - 1,
                versions: Vec::new(),
            }),
            Err(e) => Err(io(path, e)),
        }
    }

    /// The fields of the newest version, as (name, type).
    fn current(&self) -> Vec<(String, DataType)> {
        self.versions.last().map_or_else(Vec::new, |v| {
            v.fields
                .iter()
                .filter_map(|f| Some((f.name.clone(), typed::type_of(&f.kind)?)))
                .collect()
        })
    }

    /// Records `fields` as a new version if they differ from the newest: a field keeps its
    /// id while its type stays, and gets a new one when it changes.
    fn record(&mut self, fields: Vec<(String, DataType)>, changes: Vec<String>) -> bool {
        if !self.versions.is_empty() && fields == self.current() {
            return false;
        }
        let previous = self.versions.last().map(|v| v.fields.clone());
        let mut typed = Vec::with_capacity(fields.len());
        for (name, data_type) in fields {
            let kind = typed::type_name(&data_type).unwrap_or("utf8").to_string();
            let kept = previous
                .iter()
                .flatten()
                .find(|f| f.name == name && f.kind == kind)
                .map(|f| f.id);
            let id = kept.unwrap_or_else(|| {
                self.last_field_id += 1;
                self.last_field_id
            });
            typed.push(TypedField { name, kind, id });
        }
        let version = self.versions.last().map_or(1, |v| v.version + 1);
        self.versions.push(SchemaVersion {
            version,
            created_ms: now_ms(),
            fields: typed,
            changes,
        });
        if self.versions.len() > SCHEMA_VERSIONS_MAX {
            self.versions.remove(0);
        }
        true
    }

    /// The newest version as the Arrow schema of the typed columns (field ids in each
    /// field's metadata), and its number.
    fn newest(&self) -> Option<(SchemaRef, u32)> {
        let version = self.versions.last()?;
        let fields: Vec<Field> = version
            .fields
            .iter()
            .filter_map(|f| {
                let field = Field::new(&f.name, typed::type_of(&f.kind)?, true);
                let id = HashMap::from([(FIELD_ID_KEY.to_string(), f.id.to_string())]);
                Some(field.with_metadata(id))
            })
            .collect();
        Some((Arc::new(Schema::new(fields)), version.version))
    }
}

/// The typed columns a file is written with, and the version of the topic's schema they are.
#[derive(Debug, Clone)]
pub struct ValueSchema {
    pub schema: SchemaRef,
    pub version: u32,
}

/// The archive of one topic: what its partitions share.
pub struct TopicArchive {
    topic: String,
    dir: PathBuf,
    /// Loaded on first use; one partition's file at a time changes it.
    schemas: Mutex<Option<SchemaHistory>>,
    /// The topic's Iceberg table, opened on first use; one partition's commit at a time.
    table: Mutex<Option<Table>>,
    /// The topic's folder in the object store, if one is configured: the table's metadata
    /// goes there too, beside the files.
    store: Option<RemoteDir>,
}

impl TopicArchive {
    pub(super) fn new(topic: &str, dir: PathBuf, store: Option<RemoteDir>) -> TopicArchive {
        TopicArchive {
            topic: topic.to_string(),
            dir,
            schemas: Mutex::new(None),
            table: Mutex::new(None),
            store,
        }
    }

    fn open_table(&self) -> Result<Table, ArchiveError> {
        Ok(Table::open(&self.dir, self.store.clone())?)
    }

    /// The schema a file is written with, under `setting` (the topic's `archive_schema`):
    /// the newest version once the setting, or the fields `sample` (the file's first values)
    /// shows, are recorded in it.
    pub fn value_schema<'a>(
        &self,
        setting: &SchemaSetting,
        sample: impl Iterator<Item = &'a [u8]>,
    ) -> Result<ValueSchema, ArchiveError> {
        let mut slot = self.schemas.lock().expect("schema lock");
        let path = self.dir.join(SCHEMA_FILE);
        let history = match &mut *slot {
            Some(history) => history,
            None => slot.insert(SchemaHistory::load(&path)?),
        };
        let current = history.current();
        let (fields, changes) = match setting {
            SchemaSetting::Fixed(schema) => {
                let fields = schema
                    .fields()
                    .iter()
                    .map(|f| (f.name().clone(), f.data_type().clone()))
                    .collect();
                (fields, vec!["set by archive_schema".to_string()])
            }
            SchemaSetting::Infer => {
                let seen = typed::infer(sample).map_err(|source| ArchiveError::Schema {
                    topic: self.topic.clone(),
                    source,
                })?;
                typed::evolve(&current, &seen)
            }
        };
        if history.record(fields, changes) {
            let mut saved = history.clone();
            saved.format = SCHEMA_FILE_FORMAT;
            let text = serde_json::to_vec_pretty(&saved).expect("a schema history serialises");
            std::fs::create_dir_all(&self.dir).map_err(|e| io(&self.dir, e))?;
            write_atomically(&path, &text).map_err(|source| ArchiveError::Replace {
                path: path.clone(),
                source,
            })?;
        }
        let (schema, version) = history.newest().expect("a version was just recorded");
        Ok(ValueSchema { schema, version })
    }

    /// Every version of the schema, oldest first.
    pub fn schema_versions(&self) -> Result<Vec<SchemaVersion>, ArchiveError> {
        let mut slot = self.schemas.lock().expect("schema lock");
        let history = match &mut *slot {
            Some(history) => history,
            None => slot.insert(SchemaHistory::load(&self.dir.join(SCHEMA_FILE))?),
        };
        Ok(history.versions.clone())
    }

    /// Appends to the topic's Iceberg table the files of `partition` its manifest lists
    /// (`files`, in offset order) beyond the table's last offset for the partition, in one
    /// snapshot; `location` gives where readers find each file, None for a file not ready yet
    /// (not in the object store yet, where one is configured), which stops the list there.
    pub fn commit_to_table(
        &self,
        partition: u32,
        files: &[ArchivedFile],
        location: impl Fn(&ArchivedFile) -> Option<String>,
        encodings: Encodings,
    ) -> Result<(), ArchiveError> {
        let mut slot = self.table.lock().expect("table lock");
        let table = match &mut *slot {
            Some(table) => table,
            None => slot.insert(self.open_table()?),
        };
        let after = table.last_offset(partition);
        let mut todo = Vec::new();
        for file in files
            .iter()
            .filter(|f| after.is_none_or(|after| f.summary.first_offset > after))
        {
            let Some(path) = location(file) else { break };
            todo.push(DataFile {
                path,
                partition,
                bytes: file.bytes,
                rows: file.summary.rows,
                first_offset: file.summary.first_offset,
                last_offset: file.summary.last_offset,
                min_timestamp: file.summary.min_timestamp,
                max_timestamp: file.summary.max_timestamp,
            });
        }
        if todo.is_empty() {
            return Ok(());
        }
        let columns = self.table_columns(encodings)?;
        if let Err(error) = table.append(partition, &todo, &columns) {
            // Read again from the disk by the next commit: this one may have left it anywhere.
            *slot = None;
            return Err(error.into());
        }
        Ok(())
    }

    /// Where the newest metadata of the topic's Iceberg table is, if it has one.
    pub fn table_metadata(&self) -> Result<Option<PathBuf>, ArchiveError> {
        let mut slot = self.table.lock().expect("table lock");
        let table = match &mut *slot {
            Some(table) => table,
            None => slot.insert(self.open_table()?),
        };
        Ok(table.metadata_location())
    }

    /// The table's columns: the fixed ones of `encodings`, the newest version's typed
    /// columns, and the typed columns of older versions whose type changed since.
    fn table_columns(&self, encodings: Encodings) -> Result<iceberg::Columns, ArchiveError> {
        let versions = self.schema_versions()?;
        let current = versions
            .last()
            .map(|v| v.fields.clone())
            .unwrap_or_default();
        let mut retired: Vec<TypedField> = Vec::new();
        for field in versions.iter().flat_map(|v| &v.fields) {
            let live = current.iter().any(|f| f.id == field.id);
            if !live && !retired.iter().any(|f| f.id == field.id) {
                retired.push(field.clone());
            }
        }
        Ok(iceberg::columns(encodings, &current, &retired))
    }

    /// Forgets what the topic's partitions shared (the topic is deleted).
    pub fn delete(&self) -> Result<(), ArchiveError> {
        *self.table.lock().expect("table lock") = None;
        Table::delete(&self.dir, self.store.as_ref())?;
        let mut slot = self.schemas.lock().expect("schema lock");
        *slot = None;
        let path = self.dir.join(SCHEMA_FILE);
        match std::fs::remove_file(&path) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(io(&path, e)),
            _ => Ok(()),
        }
    }
}
