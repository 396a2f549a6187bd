//! The columns of a topic's Iceberg table: the fixed columns of every archive file (with the
//! field ids their Parquet schema carries, `columns.rs`), the side columns of its encodings,
//! and every typed column the topic's schema has ever had. A typed column whose type was
//! widened keeps its old field id under the name `<name>__<old type>`, so the files written
//! before hold its values there: Iceberg cannot widen int64 to float64 or to string in place.
//! A name mapping (`schema.name-mapping.default`) names the fixed columns for files written
//! without field ids (format 1).

use serde_json::{Value, json};

use crate::archive::columns::{
    ColumnEncoding, Encodings, FIELD_IDS, HEADER_ELEMENT_ID, HEADER_KEY_ID, HEADER_VALUE_ID,
    KEY_RAW, UNDECODED, VALUE_RAW,
};
use crate::archive::topic::{FIRST_TYPED_FIELD_ID, TypedField};
use crate::archive::typed::MALFORMED;

/// The table's columns: Iceberg schema fields, the highest field id, and the name mapping.
pub struct Columns {
    pub fields: Vec<Value>,
    pub last_column_id: u32,
    pub name_mapping: Value,
}

fn id_of(name: &str) -> u32 {
    FIELD_IDS
        .iter()
        .find(|(n, _)| *n == name)
        .map_or(0, |(_, id)| *id)
}

fn field(name: &str, required: bool, kind: Value) -> Value {
    json!({"id": id_of(name), "name": name, "required": required, "type": kind})
}

fn encoded(encoding: ColumnEncoding) -> &'static str {
    match encoding {
        ColumnEncoding::Bytes => "binary",
        ColumnEncoding::String | ColumnEncoding::Json => "string",
    }
}

/// The Iceberg type of a typed column's type (as `archive_schema` names it).
fn iceberg_type(kind: &str) -> &'static str {
    match kind {
        "int32" => "int",
        "int64" => "long",
        "float32" => "float",
        "float64" => "double",
        "bool" | "boolean" => "boolean",
        "timestamp_ms" => "timestamptz",
        _ => "string",
    }
}

/// The table's columns for files of `encodings`, and the typed columns `current` (the newest
/// schema version) and `retired` (columns of older versions whose type has changed since).
pub fn columns(encodings: Encodings, current: &[TypedField], retired: &[TypedField]) -> Columns {
    let headers = json!({
        "type": "list", "element-id": HEADER_ELEMENT_ID, "element-required": true,
        "element": {"type": "struct", "fields": [
            {"id": HEADER_KEY_ID, "name": "key", "required": true, "type": "string"},
            {"id": HEADER_VALUE_ID, "name": "value", "required": true, "type": "binary"},
        ]},
    });
    let mut fields = vec![
        field("partition", true, "int".into()),
        field("offset", true, "long".into()),
        field("timestamp", true, "timestamptz".into()),
        field("key", false, encoded(encodings.key).into()),
        field("value", false, encoded(encodings.value).into()),
        field("headers", true, headers),
    ];
    if encodings.key != ColumnEncoding::Bytes {
        fields.push(field(KEY_RAW, false, "binary".into()));
    }
    if encodings.value != ColumnEncoding::Bytes {
        fields.push(field(VALUE_RAW, false, "binary".into()));
    }
    if encodings.has_side_columns() {
        fields.push(field(UNDECODED, false, "string".into()));
    }
    let typed = |f: &TypedField, name: String| json!({"id": f.id, "name": name, "required": false, "type": iceberg_type(&f.kind)});
    fields.extend(current.iter().map(|f| typed(f, f.name.clone())));
    fields.extend(
        retired
            .iter()
            .map(|f| typed(f, format!("{}__{}", f.name, f.kind))),
    );
    if !current.is_empty() || !retired.is_empty() {
        fields.push(field(MALFORMED, false, "string".into()));
    }
    let last_column_id = fields
        .iter()
        .filter_map(|f| f["id"].as_u64())
        .chain([u64::from(HEADER_VALUE_ID)])
        .max()
        .and_then(|id| u32::try_from(id).ok())
        .unwrap_or(0);
    Columns {
        name_mapping: name_mapping(&fields),
        fields,
        last_column_id,
    }
}

/// Names every fixed column by its id, and the parts of `headers`, for files without field
/// ids (format 1, whose typed columns were inferred per partition and are not mapped).
fn name_mapping(fields: &[Value]) -> Value {
    let mapped: Vec<Value> = fields
        .iter()
        .filter(|f| {
            f["id"]
                .as_u64()
                .is_some_and(|id| id < FIRST_TYPED_FIELD_ID.into())
        })
        .map(|f| {
            let name = f["name"].as_str().unwrap_or_default();
            if name != "headers" {
                return json!({"field-id": f["id"], "names": [name]});
            }
            json!({"field-id": f["id"], "names": [name], "fields": [
                {"field-id": HEADER_ELEMENT_ID, "names": ["element"], "fields": [
                    {"field-id": HEADER_KEY_ID, "names": ["key"]},
                    {"field-id": HEADER_VALUE_ID, "names": ["value"]},
                ]},
            ]})
        })
        .collect();
    Value::Array(mapped)
}
