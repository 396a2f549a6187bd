//! The Avro files of an Iceberg table (format version 2): a manifest, listing data files with
//! their row counts and column bounds, and a manifest list, listing a snapshot's manifests.
//! Records are encoded by the Apache Avro crate with the schemas the Iceberg specification
//! gives (<https://iceberg.apache.org/spec/#manifests>). The object container around them is
//! written here, so that its header carries those schemas exactly as given: readers such as
//! pyiceberg resolve fields by their `field-id` and read an array of key-value records as a
//! map by its `logicalType`, attributes the crate's own writer does not keep.

use std::collections::BTreeMap;
use std::sync::OnceLock;

use apache_avro::types::Value;
use apache_avro::writer::datum::GenericDatumWriter;
use apache_avro::{Reader, Schema};

use super::{DataFile, IcebergError};

/// A manifest's entries: one per data file (`manifest_entry`, v2, unpartitioned).
const MANIFEST_ENTRY_SCHEMA: &str = r#"{
  "type": "record", "name": "manifest_entry", "fields": [
    {"name": "status", "type": "int", "field-id": 0},
    {"name": "snapshot_id", "type": ["null", "long"], "default": null, "field-id": 1},
    {"name": "sequence_number", "type": ["null", "long"], "default": null, "field-id": 3},
    {"name": "file_sequence_number", "type": ["null", "long"], "default": null, "field-id": 4},
    {"name": "data_file", "field-id": 2, "type": {"type": "record", "name": "r2", "fields": [
      {"name": "content", "type": "int", "field-id": 134},
      {"name": "file_path", "type": "string", "field-id": 100},
      {"name": "file_format", "type": "string", "field-id": 101},
      {"name": "partition", "field-id": 102,
       "type": {"type": "record", "name": "r102", "fields": []}},
      {"name": "record_count", "type": "long", "field-id": 103},
      {"name": "file_size_in_bytes", "type": "long", "field-id": 104},
      {"name": "value_counts", "default": null, "field-id": 109, "type": ["null",
        {"type": "array", "logicalType": "map", "items": {"type": "record", "name": "k119_v120",
          "fields": [{"name": "key", "type": "int", "field-id": 119},
                     {"name": "value", "type": "long", "field-id": 120}]}}]},
      {"name": "null_value_counts", "default": null, "field-id": 110, "type": ["null",
        {"type": "array", "logicalType": "map", "items": {"type": "record", "name": "k121_v122",
          "fields": [{"name": "key", "type": "int", "field-id": 121},
                     {"name": "value", "type": "long", "field-id": 122}]}}]},
      {"name": "lower_bounds", "default": null, "field-id": 125, "type": ["null",
        {"type": "array", "logicalType": "map", "items": {"type": "record", "name": "k126_v127",
          "fields": [{"name": "key", "type": "int", "field-id": 126},
                     {"name": "value", "type": "bytes", "field-id": 127}]}}]},
      {"name": "upper_bounds", "default": null, "field-id": 128, "type": ["null",
        {"type": "array", "logicalType": "map", "items": {"type": "record", "name": "k129_v130",
          "fields": [{"name": "key", "type": "int", "field-id": 129},
                     {"name": "value", "type": "bytes", "field-id": 130}]}}]}
    ]}}
  ]
}"#;

/// A manifest list's entries: one per manifest (`manifest_file`, v2).
const MANIFEST_FILE_SCHEMA: &str = r#"{
  "type": "record", "name": "manifest_file", "fields": [
    {"name": "manifest_path", "type": "string", "field-id": 500},
    {"name": "manifest_length", "type": "long", "field-id": 501},
    {"name": "partition_spec_id", "type": "int", "field-id": 502},
    {"name": "content", "type": "int", "field-id": 517},
    {"name": "sequence_number", "type": "long", "field-id": 515},
    {"name": "min_sequence_number", "type": "long", "field-id": 516},
    {"name": "added_snapshot_id", "type": "long", "field-id": 503},
    {"name": "added_files_count", "type": "int", "field-id": 504},
    {"name": "existing_files_count", "type": "int", "field-id": 505},
    {"name": "deleted_files_count", "type": "int", "field-id": 506},
    {"name": "added_rows_count", "type": "long", "field-id": 512},
    {"name": "existing_rows_count", "type": "long", "field-id": 513},
    {"name": "deleted_rows_count", "type": "long", "field-id": 514}
  ]
}"#;

/// Status of a manifest entry for a file added by the manifest's snapshot.
const ADDED: i32 = 1;
/// Status of a manifest entry for a file an earlier snapshot added (a merged manifest).
const EXISTING: i32 = 0;
/// The field ids of the columns whose bounds a data file's entry gives.
const PARTITION_FIELD_ID: i32 = 1;
const OFFSET_FIELD_ID: i32 = 2;
const TIMESTAMP_FIELD_ID: i32 = 3;

/// An Avro schema: as the specification writes it (for the file's header), and parsed (to
/// encode records).
struct AvroSchema {
    text: String,
    parsed: Schema,
}

fn schema(slot: &'static OnceLock<AvroSchema>, text: &str) -> &'static AvroSchema {
    slot.get_or_init(|| {
        let json: serde_json::Value = serde_json::from_str(text).expect("the schemas are JSON");
        AvroSchema {
            text: json.to_string(),
            parsed: Schema::parse_str(text).expect("the Iceberg Avro schemas parse"),
        }
    })
}

fn manifest_entry_schema() -> &'static AvroSchema {
    static SCHEMA: OnceLock<AvroSchema> = OnceLock::new();
    schema(&SCHEMA, MANIFEST_ENTRY_SCHEMA)
}

fn manifest_file_schema() -> &'static AvroSchema {
    static SCHEMA: OnceLock<AvroSchema> = OnceLock::new();
    schema(&SCHEMA, MANIFEST_FILE_SCHEMA)
}

/// One manifest of a snapshot, as the manifest list names it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ManifestListEntry {
    pub path: String,
    pub length: i64,
    /// The sequence number of the snapshot that wrote the manifest.
    pub sequence_number: i64,
    /// The lowest data sequence number of its files.
    pub min_sequence_number: i64,
    /// The snapshot that wrote the manifest.
    pub added_snapshot_id: i64,
    pub added_files: i32,
    pub added_rows: i64,
    /// Files of earlier snapshots it lists (a merged manifest).
    pub existing_files: i32,
    pub existing_rows: i64,
}

fn optional(value: Value) -> Value {
    Value::Union(1, Box::new(value))
}

/// An Iceberg map from field id to `value`, as Avro writes it (an array of key-value records).
fn id_map(entries: Vec<(i32, Value)>) -> Value {
    optional(Value::Array(
        entries
            .into_iter()
            .map(|(key, value)| {
                Value::Record(vec![
                    ("key".into(), Value::Int(key)),
                    ("value".into(), value),
                ])
            })
            .collect(),
    ))
}

fn to_long(n: u64) -> i64 {
    i64::try_from(n).unwrap_or(i64::MAX)
}

/// A data file's manifest entry: its path, size, row count, and the bounds of `partition`,
/// `offset` and `timestamp` (Iceberg's single-value serialisation: little endian; timestamps
/// in microseconds), so that readers skip files by partition, offset and time.
fn manifest_entry(file: &DataFile, snapshot_id: i64) -> Value {
    let rows = to_long(file.rows);
    let partition = i32::try_from(file.partition).unwrap_or(i32::MAX);
    let bound = |partition: i32, offset: u64, timestamp_ms: i64| {
        id_map(vec![
            (
                PARTITION_FIELD_ID,
                Value::Bytes(partition.to_le_bytes().to_vec()),
            ),
            (
                OFFSET_FIELD_ID,
                Value::Bytes(to_long(offset).to_le_bytes().to_vec()),
            ),
            (
                TIMESTAMP_FIELD_ID,
                Value::Bytes(timestamp_ms.saturating_mul(1000).to_le_bytes().to_vec()),
            ),
        ])
    };
    let counts = |count: i64| {
        id_map(
            [PARTITION_FIELD_ID, OFFSET_FIELD_ID, TIMESTAMP_FIELD_ID]
                .into_iter()
                .map(|id| (id, Value::Long(count)))
                .collect(),
        )
    };
    let data_file = Value::Record(vec![
        ("content".into(), Value::Int(0)),
        ("file_path".into(), Value::String(file.path.clone())),
        ("file_format".into(), Value::String("PARQUET".into())),
        ("partition".into(), Value::Record(Vec::new())),
        ("record_count".into(), Value::Long(rows)),
        (
            "file_size_in_bytes".into(),
            Value::Long(to_long(file.bytes)),
        ),
        ("value_counts".into(), counts(rows)),
        ("null_value_counts".into(), counts(0)),
        (
            "lower_bounds".into(),
            bound(partition, file.first_offset, file.min_timestamp),
        ),
        (
            "upper_bounds".into(),
            bound(partition, file.last_offset, file.max_timestamp),
        ),
    ]);
    Value::Record(vec![
        ("status".into(), Value::Int(ADDED)),
        ("snapshot_id".into(), optional(Value::Long(snapshot_id))),
        // Null: inherited from the manifest list entry, as for every file a snapshot adds.
        (
            "sequence_number".into(),
            Value::Union(0, Box::new(Value::Null)),
        ),
        (
            "file_sequence_number".into(),
            Value::Union(0, Box::new(Value::Null)),
        ),
        ("data_file".into(), data_file),
    ])
}

fn avro_error(source: apache_avro::Error) -> IcebergError {
    IcebergError::Avro(Box::new(source))
}

/// Appends an Avro `long` (zig-zag, variable length).
fn put_long(out: &mut Vec<u8>, n: i64) {
    let mut zigzag = ((n << 1) ^ (n >> 63)) as u64;
    while zigzag >= 0x80 {
        out.push((zigzag as u8) | 0x80);
        zigzag >>= 7;
    }
    out.push(zigzag as u8);
}

/// Appends Avro `bytes` (or a `string`): the length, then the bytes.
fn put_bytes(out: &mut Vec<u8>, bytes: &[u8]) {
    put_long(out, bytes.len() as i64);
    out.extend_from_slice(bytes);
}

/// An Avro object container file of `values` under `schema`, uncompressed, in one block:
/// the magic, the header (a map of `metadata`, the schema and the codec), a sync marker, the
/// block (count, size, records) and the marker again.
fn avro_file(
    schema: &AvroSchema,
    metadata: &BTreeMap<&str, String>,
    values: Vec<Value>,
) -> Result<Vec<u8>, IcebergError> {
    let mut records = Vec::new();
    let count = values.len();
    let encoder = GenericDatumWriter::builder(&schema.parsed)
        .build()
        .map_err(avro_error)?;
    for value in values {
        encoder
            .write_value(&mut records, value)
            .map_err(avro_error)?;
    }
    let sync = *uuid::Uuid::new_v4().as_bytes();
    let mut out = b"Obj\x01".to_vec();
    put_long(&mut out, metadata.len() as i64 + 2);
    put_bytes(&mut out, b"avro.schema");
    put_bytes(&mut out, schema.text.as_bytes());
    put_bytes(&mut out, b"avro.codec");
    put_bytes(&mut out, b"null");
    for (key, value) in metadata {
        put_bytes(&mut out, key.as_bytes());
        put_bytes(&mut out, value.as_bytes());
    }
    put_long(&mut out, 0);
    out.extend_from_slice(&sync);
    if count > 0 {
        put_long(&mut out, count as i64);
        put_long(&mut out, records.len() as i64);
        out.extend_from_slice(&records);
        out.extend_from_slice(&sync);
    }
    Ok(out)
}

/// A manifest of `files`, added by snapshot `snapshot_id`, for a table of `table_schema`
/// (its JSON, with its id).
pub fn manifest(
    files: &[DataFile],
    snapshot_id: i64,
    table_schema: &serde_json::Value,
) -> Result<Vec<u8>, IcebergError> {
    let entries = files
        .iter()
        .map(|file| manifest_entry(file, snapshot_id))
        .collect();
    avro_file(
        manifest_entry_schema(),
        &manifest_metadata(table_schema),
        entries,
    )
}

/// The header metadata of a manifest for a table of `table_schema`.
fn manifest_metadata(table_schema: &serde_json::Value) -> BTreeMap<&'static str, String> {
    BTreeMap::from([
        ("schema", table_schema.to_string()),
        ("schema-id", table_schema["schema-id"].to_string()),
        ("partition-spec", "[]".to_string()),
        ("partition-spec-id", "0".to_string()),
        ("format-version", "2".to_string()),
        ("content", "data".to_string()),
    ])
}

/// The manifest list of snapshot `snapshot_id`: `manifests`, newest first.
pub fn manifest_list(
    manifests: &[ManifestListEntry],
    snapshot_id: i64,
    parent_snapshot_id: Option<i64>,
    sequence_number: i64,
) -> Result<Vec<u8>, IcebergError> {
    let mut metadata = BTreeMap::from([
        ("snapshot-id", snapshot_id.to_string()),
        ("sequence-number", sequence_number.to_string()),
        ("format-version", "2".to_string()),
    ]);
    if let Some(parent) = parent_snapshot_id {
        metadata.insert("parent-snapshot-id", parent.to_string());
    }
    let entries = manifests
        .iter()
        .map(|m| {
            Value::Record(vec![
                ("manifest_path".into(), Value::String(m.path.clone())),
                ("manifest_length".into(), Value::Long(m.length)),
                ("partition_spec_id".into(), Value::Int(0)),
                ("content".into(), Value::Int(0)),
                ("sequence_number".into(), Value::Long(m.sequence_number)),
                (
                    "min_sequence_number".into(),
                    Value::Long(m.min_sequence_number),
                ),
                ("added_snapshot_id".into(), Value::Long(m.added_snapshot_id)),
                ("added_files_count".into(), Value::Int(m.added_files)),
                ("existing_files_count".into(), Value::Int(m.existing_files)),
                ("deleted_files_count".into(), Value::Int(0)),
                ("added_rows_count".into(), Value::Long(m.added_rows)),
                ("existing_rows_count".into(), Value::Long(m.existing_rows)),
                ("deleted_rows_count".into(), Value::Long(0)),
            ])
        })
        .collect();
    avro_file(manifest_file_schema(), &metadata, entries)
}

/// The manifests a manifest list names (written by [`manifest_list`]).
pub fn read_manifest_list(bytes: &[u8]) -> Result<Vec<ManifestListEntry>, IcebergError> {
    let reader = Reader::new(bytes).map_err(avro_error)?;
    let mut manifests = Vec::new();
    for value in reader {
        let Value::Record(fields) = value.map_err(avro_error)? else {
            return Err(IcebergError::Layout(
                "a manifest list entry is not a record".into(),
            ));
        };
        let field = |name: &str| fields.iter().find(|(n, _)| n == name).map(|(_, v)| v);
        let long = |name: &str| match field(name) {
            Some(Value::Long(n)) => Ok(*n),
            Some(Value::Int(n)) => Ok(i64::from(*n)),
            _ => Err(IcebergError::Layout(format!("manifest list: no `{name}`"))),
        };
        let Some(Value::String(path)) = field("manifest_path") else {
            return Err(IcebergError::Layout(
                "manifest list: no `manifest_path`".into(),
            ));
        };
        let count = |name: &str| long(name).map(|n| i32::try_from(n).unwrap_or(i32::MAX));
        manifests.push(ManifestListEntry {
            path: path.clone(),
            length: long("manifest_length")?,
            sequence_number: long("sequence_number")?,
            min_sequence_number: long("min_sequence_number")?,
            added_snapshot_id: long("added_snapshot_id")?,
            added_files: count("added_files_count")?,
            added_rows: long("added_rows_count")?,
            existing_files: count("existing_files_count")?,
            existing_rows: long("existing_rows_count")?,
        });
    }
    Ok(manifests)
}

/// The entries of the manifest `bytes` (written by [`manifest`] or [`merged_manifest`]) that
/// `listed` names, as entries of a merged manifest: status EXISTING, with the snapshot and
/// sequence numbers they inherited made explicit; and their row count.
pub fn existing_entries(
    bytes: &[u8],
    listed: &ManifestListEntry,
) -> Result<(Vec<Value>, i64), IcebergError> {
    let reader = Reader::new(bytes).map_err(avro_error)?;
    let mut entries = Vec::new();
    let mut rows = 0;
    for value in reader {
        let Value::Record(fields) = value.map_err(avro_error)? else {
            return Err(IcebergError::Layout(
                "a manifest entry is not a record".into(),
            ));
        };
        let field = |name: &str| fields.iter().find(|(n, _)| n == name).map(|(_, v)| v);
        let inherited = |name: &str, default: i64| match field(name) {
            Some(Value::Union(_, inner)) => match inner.as_ref() {
                Value::Long(n) => *n,
                _ => default,
            },
            _ => default,
        };
        let Some(data_file @ Value::Record(file_fields)) = field("data_file") else {
            return Err(IcebergError::Layout(
                "a manifest entry has no data_file".into(),
            ));
        };
        if let Some((_, Value::Long(count))) = file_fields.iter().find(|(n, _)| n == "record_count")
        {
            rows += count;
        }
        let sequence = inherited("sequence_number", listed.sequence_number);
        entries.push(Value::Record(vec![
            ("status".into(), Value::Int(EXISTING)),
            (
                "snapshot_id".into(),
                optional(Value::Long(inherited(
                    "snapshot_id",
                    listed.added_snapshot_id,
                ))),
            ),
            ("sequence_number".into(), optional(Value::Long(sequence))),
            (
                "file_sequence_number".into(),
                optional(Value::Long(inherited("file_sequence_number", sequence))),
            ),
            ("data_file".into(), data_file.clone()),
        ]));
    }
    Ok((entries, rows))
}

/// A manifest of `entries` (from [`existing_entries`]) for a table of `table_schema`.
pub fn merged_manifest(
    entries: Vec<Value>,
    table_schema: &serde_json::Value,
) -> Result<Vec<u8>, IcebergError> {
    avro_file(
        manifest_entry_schema(),
        &manifest_metadata(table_schema),
        entries,
    )
}
