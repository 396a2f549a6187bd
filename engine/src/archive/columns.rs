//! The fixed columns of every archive file, in order: `partition` int32, `offset` int64,
//! `timestamp` timestamp(ms, UTC), `key` (nullable), `value` (nullable), `headers`
//! list<struct<key utf8, value binary>>; then, for a key or value held as text, its side
//! column (`key_raw`, `value_raw`: the bytes that were not text or not JSON) and the
//! `_undecoded` flag saying why (docs/archive-format.md, Columns). A schema-aware topic's
//! typed columns follow them (see [`super::typed`]).
//!
//! How a key or value is held is the topic's [`ColumnEncoding`]: bytes (binary), string
//! (utf8) or json (utf8 annotated as JSON, so SQL engines see JSON).
//!
//! Both the Parquet writer and the typed columns (whose field names must not clash with
//! these) depend on this file; it depends on neither.

use std::sync::Arc;

use arrow_schema::extension::Json;
use arrow_schema::{DataType, Field, Fields, Schema, SchemaRef, TimeUnit};

pub use crate::log::ColumnEncoding;

/// Where each fixed column is, in every file.
pub const OFFSET_COLUMN: usize = 1;
pub const TIMESTAMP_COLUMN: usize = 2;
pub const KEY_COLUMN: usize = 3;
pub const VALUE_COLUMN: usize = 4;
pub const HEADERS_COLUMN: usize = 5;
/// The side column of keys that did not fit the key's encoding (null for those that did).
pub const KEY_RAW: &str = "key_raw";
/// The side column of values that did not fit the value's encoding.
pub const VALUE_RAW: &str = "value_raw";
/// Why a row's key or value is in its side column; null when neither is.
pub const UNDECODED: &str = "_undecoded";

/// The Arrow field metadata key of a column's field id, written into the Parquet schema.
pub const FIELD_ID_KEY: &str = parquet::arrow::PARQUET_FIELD_ID_META_KEY;

/// The field id of each column every file may have (a schema-aware topic's typed columns
/// number from 100, see `topic.rs`), and of the parts of `headers`.
pub const FIELD_IDS: [(&str, u32); 10] = [
    ("partition", 1),
    ("offset", 2),
    ("timestamp", 3),
    ("key", 4),
    ("value", 5),
    ("headers", 6),
    (KEY_RAW, 10),
    (VALUE_RAW, 11),
    (UNDECODED, 12),
    ("_malformed", 13),
];
/// The ids of `headers`' list element, and of its `key` and `value`.
pub const HEADER_ELEMENT_ID: u32 = 7;
pub const HEADER_KEY_ID: u32 = 8;
pub const HEADER_VALUE_ID: u32 = 9;

/// How a file holds keys and values.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Encodings {
    pub key: ColumnEncoding,
    pub value: ColumnEncoding,
}

impl Encodings {
    /// Format 1's: both as bytes, no side columns.
    pub const BYTES: Encodings = Encodings {
        key: ColumnEncoding::Bytes,
        value: ColumnEncoding::Bytes,
    };

    /// Whether files have the `_undecoded` column (a key or value is held as text).
    pub fn has_side_columns(self) -> bool {
        self != Encodings::BYTES
    }
}

/// The fields of one header: the struct inside the `headers` list.
pub fn header_fields() -> Fields {
    Fields::from(vec![
        with_id(Field::new("key", DataType::Utf8, false), HEADER_KEY_ID),
        with_id(
            Field::new("value", DataType::Binary, false),
            HEADER_VALUE_ID,
        ),
    ])
}

/// The item of the `headers` list, named `element` as the Parquet spec names it.
pub fn header_item() -> Arc<Field> {
    let element = Field::new("element", DataType::Struct(header_fields()), false);
    Arc::new(with_id(element, HEADER_ELEMENT_ID))
}

/// The column of keys or values under `name`, held as `encoding` says.
pub fn encoded_field(name: &str, encoding: ColumnEncoding) -> Field {
    match encoding {
        ColumnEncoding::Bytes => Field::new(name, DataType::Binary, true),
        ColumnEncoding::String => Field::new(name, DataType::Utf8, true),
        ColumnEncoding::Json => {
            Field::new(name, DataType::Utf8, true).with_extension_type(Json::default())
        }
    }
}

/// The fixed columns of every file, and the side columns of its encodings.
pub fn schema(encodings: Encodings) -> SchemaRef {
    let mut fields = vec![
        Field::new("partition", DataType::Int32, false),
        Field::new("offset", DataType::Int64, false),
        Field::new(
            "timestamp",
            DataType::Timestamp(TimeUnit::Millisecond, Some("UTC".into())),
            false,
        ),
        encoded_field("key", encodings.key),
        encoded_field("value", encodings.value),
        Field::new("headers", DataType::List(header_item()), false),
    ];
    if encodings.key != ColumnEncoding::Bytes {
        fields.push(Field::new(KEY_RAW, DataType::Binary, true));
    }
    if encodings.value != ColumnEncoding::Bytes {
        fields.push(Field::new(VALUE_RAW, DataType::Binary, true));
    }
    if encodings.has_side_columns() {
        fields.push(Field::new(UNDECODED, DataType::Utf8, true));
    }
    Arc::new(Schema::new(fields))
}

fn with_id(field: Field, id: u32) -> Field {
    let mut metadata = field.metadata().clone();
    metadata.insert(FIELD_ID_KEY.to_string(), id.to_string());
    field.with_metadata(metadata)
}

/// `schema` with the field id of each fixed column in its field's metadata, so that the
/// Parquet schema carries them (the parts of `headers` have theirs already; typed columns
/// keep theirs).
pub fn with_field_ids(schema: &Schema) -> SchemaRef {
    let numbered = schema.fields().iter().map(|field| {
        let field = field.as_ref().clone();
        match FIELD_IDS.iter().find(|(name, _)| name == field.name()) {
            Some((_, id)) => with_id(field, *id),
            None => field,
        }
    });
    Arc::new(Schema::new(numbered.collect::<Vec<_>>()))
}

/// Whether a typed column may not be named `name`: every archive file may have a column of
/// that name.
pub fn reserved(name: &str) -> bool {
    let all = Encodings {
        key: ColumnEncoding::Json,
        value: ColumnEncoding::Json,
    };
    schema(all).field_with_name(name).is_ok()
}
