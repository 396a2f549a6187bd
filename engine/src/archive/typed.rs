//! Schema-aware topics: JSON values also decoded into typed columns beside the raw ones.
//!
//! A topic's `archive_schema` is `infer` or a JSON object naming each field's Arrow type, like
//! `{"customer": "utf8", "amount": "float64", "items": "int64"}`. Each file then has one
//! nullable column per field after the six fixed ones, and a `_malformed` column: null for a
//! value that decoded, else why it did not (its typed columns are null; `value` still holds
//! it). A value that does not fit never fails the archive.

use std::sync::Arc;

use arrow_array::builder::StringBuilder;
use arrow_array::{ArrayRef, RecordBatch, new_null_array};
use arrow_json::ReaderBuilder;
use arrow_schema::{ArrowError, DataType, Field, Schema, SchemaRef, TimeUnit};

/// The column saying why a value did not fit the schema.
pub const MALFORMED: &str = "_malformed";
/// Values sampled to infer a schema: the first this many JSON objects of the first file.
const INFER_SAMPLE_VALUES: usize = 1_000;
/// How `archive_schema` is written, for messages.
const USAGE: &str = "archive_schema is `infer` or a JSON object of field names to types, like \
                     {\"customer\": \"utf8\", \"amount\": \"float64\"}";

/// Why a topic's `archive_schema` cannot be used.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum SchemaError {
    #[error("{}: {source}", USAGE)]
    NotJson {
        #[source]
        source: serde_json::Error,
    },
    #[error("field `{name}` of archive_schema clashes with a column every archive file has")]
    Reserved { name: String },
    #[error(
        "field `{name}` of archive_schema: unknown type `{kind}`; known: {}",
        known_types()
    )]
    UnknownType { name: String, kind: String },
}

/// What a topic's `archive_schema` asks for.
pub enum SchemaSetting {
    Infer,
    Fixed(SchemaRef),
}

/// Makes the Arrow type a type name stands for.
type MakeType = fn() -> DataType;

const TYPES: [(&str, MakeType); 9] = [
    ("utf8", || DataType::Utf8),
    ("string", || DataType::Utf8),
    ("int32", || DataType::Int32),
    ("int64", || DataType::Int64),
    ("float32", || DataType::Float32),
    ("float64", || DataType::Float64),
    ("bool", || DataType::Boolean),
    ("boolean", || DataType::Boolean),
    ("timestamp_ms", || {
        DataType::Timestamp(TimeUnit::Millisecond, Some("UTC".into()))
    }),
];

fn known_types() -> String {
    let known: Vec<&str> = TYPES.iter().map(|(n, _)| *n).collect();
    known.join(", ")
}

/// The Arrow type a type name stands for.
pub fn type_of(name: &str) -> Option<DataType> {
    TYPES
        .iter()
        .find(|(n, _)| *n == name)
        .map(|(_, make)| make())
}

/// The name of an Arrow type, as `archive_schema` writes it.
pub fn type_name(data_type: &DataType) -> Option<&'static str> {
    TYPES
        .iter()
        .find(|(_, make)| make() == *data_type)
        .map(|(name, _)| *name)
}

fn reserved(name: &str) -> bool {
    name == MALFORMED || super::columns::reserved(name)
}

/// Parses `archive_schema`.
pub fn parse_setting(text: &str) -> Result<SchemaSetting, SchemaError> {
    if text.trim() == "infer" {
        return Ok(SchemaSetting::Infer);
    }
    let map: serde_json::Map<String, serde_json::Value> =
        serde_json::from_str(text).map_err(|source| SchemaError::NotJson { source })?;
    let mut fields = Vec::with_capacity(map.len());
    for (name, kind) in &map {
        if reserved(name) {
            return Err(SchemaError::Reserved { name: name.clone() });
        }
        let kind = kind.as_str().unwrap_or_default();
        let Some((_, make)) = TYPES.iter().find(|(n, _)| *n == kind) else {
            return Err(SchemaError::UnknownType {
                name: name.clone(),
                kind: kind.to_string(),
            });
        };
        fields.push(Field::new(name, make(), true));
    }
    Ok(SchemaSetting::Fixed(Arc::new(Schema::new(fields))))
}

/// The schema as `archive_schema` text (how an inferred schema is kept).
pub fn describe(schema: &Schema) -> String {
    let map: serde_json::Map<String, serde_json::Value> = schema
        .fields()
        .iter()
        .filter_map(|f| Some((f.name().clone(), type_name(f.data_type())?.into())))
        .collect();
    serde_json::Value::Object(map).to_string()
}

/// The fields the first JSON objects among `values` show, in name order: a field whose
/// sampled values are all booleans, all integers or all strings gets that type (bool, int64,
/// utf8); numbers of both kinds give float64, and other mixes of scalars utf8. Fields with
/// nested objects or lists, only nulls, or a name that clashes get none: they stay in `value`
/// only. No JSON object among them gives no fields.
pub fn infer<'a>(values: impl Iterator<Item = &'a [u8]>) -> Result<SchemaRef, SchemaError> {
    let mut kinds: std::collections::BTreeMap<String, Option<DataType>> = Default::default();
    let mut sampled = 0;
    for value in values {
        let Ok(serde_json::Value::Object(object)) = serde_json::from_slice(value) else {
            continue;
        };
        for (name, field) in object {
            let kind = match field {
                serde_json::Value::Null => continue,
                serde_json::Value::Bool(_) => Some(DataType::Boolean),
                serde_json::Value::Number(n) if n.is_i64() => Some(DataType::Int64),
                serde_json::Value::Number(_) => Some(DataType::Float64),
                serde_json::Value::String(_) => Some(DataType::Utf8),
                _ => None,
            };
            let merged = match (kinds.get(&name), kind) {
                (None, kind) => kind,
                (Some(Some(seen)), Some(kind)) => Some(widen(seen, &kind)),
                _ => None,
            };
            kinds.insert(name, merged);
        }
        sampled += 1;
        if sampled == INFER_SAMPLE_VALUES {
            break;
        }
    }
    let fields: Vec<Field> = kinds
        .into_iter()
        .filter(|(name, _)| !reserved(name))
        .filter_map(|(name, kind)| Some(Field::new(name, kind?, true)))
        .collect();
    Ok(Arc::new(Schema::new(fields)))
}

/// The type that holds values of both types: the same, float64 for two kinds of numbers,
/// else utf8 (arrow-json writes numbers and booleans into a utf8 column as their text).
fn widen(old: &DataType, new: &DataType) -> DataType {
    match (old, new) {
        (old, new) if old == new => old.clone(),
        (DataType::Int64 | DataType::Float64, DataType::Int64 | DataType::Float64) => {
            DataType::Float64
        }
        _ => DataType::Utf8,
    }
}

/// The fields of `current` (name, type) once the fields `seen` in newer values are taken in:
/// a field not there before is added (after the others, in name order), a field whose values
/// no longer fit its type is widened; with what changed, for people.
pub fn evolve(
    current: &[(String, DataType)],
    seen: &Schema,
) -> (Vec<(String, DataType)>, Vec<String>) {
    let name = |t: &DataType| type_name(t).unwrap_or("utf8");
    let mut fields = current.to_vec();
    let mut changes = Vec::new();
    for (field_name, data_type) in &mut fields {
        if let Ok(seen) = seen.field_with_name(field_name) {
            let widened = widen(data_type, seen.data_type());
            if widened != *data_type {
                changes.push(format!(
                    "widened {field_name} {} to {}",
                    name(data_type),
                    name(&widened)
                ));
                *data_type = widened;
            }
        }
    }
    for field in seen.fields() {
        if !current.iter().any(|(n, _)| n == field.name()) {
            changes.push(format!(
                "added {} {}",
                field.name(),
                name(field.data_type())
            ));
            fields.push((field.name().clone(), field.data_type().clone()));
        }
    }
    (fields, changes)
}

/// The typed columns of `values` under `schema`, then the `_malformed` column.
pub fn columns<'a>(
    schema: &SchemaRef,
    values: impl ExactSizeIterator<Item = &'a [u8]>,
) -> Result<Vec<ArrayRef>, ArrowError> {
    let null_row = RecordBatch::try_new(
        schema.clone(),
        schema
            .fields()
            .iter()
            .map(|f| new_null_array(f.data_type(), 1))
            .collect(),
    )?;
    let mut rows = Vec::with_capacity(values.len());
    let mut malformed = StringBuilder::new();
    for value in values {
        // One value at a time: a value that does not fit must not take its neighbours along.
        match decode_one(schema, value) {
            Ok(row) => {
                rows.push(row);
                malformed.append_null();
            }
            Err(reason) => {
                rows.push(null_row.clone());
                malformed.append_value(reason);
            }
        }
    }
    let typed = arrow_select::concat::concat_batches(schema, &rows)?;
    let mut columns = typed.columns().to_vec();
    columns.push(Arc::new(malformed.finish()));
    Ok(columns)
}

/// One value as a row of the typed columns, or why it does not fit them (the reason goes in
/// the `_malformed` column).
fn decode_one(schema: &SchemaRef, value: &[u8]) -> Result<RecordBatch, String> {
    if !value.trim_ascii_start().starts_with(b"{") {
        return Err("not a JSON object".into());
    }
    let mut decoder = ReaderBuilder::new(schema.clone())
        .with_coerce_primitive(true)
        .build_decoder()
        .map_err(|e| e.to_string())?;
    let consumed = decoder.decode(value).map_err(|e| e.to_string())?;
    if consumed < value.len() && !value[consumed..].trim_ascii().is_empty() {
        return Err("more than one JSON value".into());
    }
    match decoder.flush().map_err(|e| e.to_string())? {
        Some(batch) if batch.num_rows() == 1 => Ok(batch),
        _ => Err("not one JSON object".into()),
    }
}

/// The fields every file of a schema-aware topic has after the fixed ones.
pub fn extra_fields(schema: &SchemaRef) -> Vec<Field> {
    let mut fields: Vec<Field> = schema.fields().iter().map(|f| f.as_ref().clone()).collect();
    fields.push(Field::new(MALFORMED, DataType::Utf8, true));
    fields
}
