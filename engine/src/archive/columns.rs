//! The fixed columns of every archive file, in order: `partition` int32, `offset` int64,
//! `timestamp` timestamp(ms, UTC), `key` binary (nullable), `value` binary, `headers`
//! list<struct<key utf8, value binary>> (docs/archive-format.md, Columns). A schema-aware
//! topic's typed columns follow them (see [`super::typed`]).
//!
//! Both the Parquet writer and the typed columns (whose field names must not clash with
//! these) depend on this file; it depends on neither.

use std::sync::Arc;

use arrow_schema::{DataType, Field, Fields, Schema, SchemaRef, TimeUnit};

/// Where each fixed column is, in every file.
pub const PARTITION_COLUMN: usize = 0;
pub const OFFSET_COLUMN: usize = 1;
pub const TIMESTAMP_COLUMN: usize = 2;
pub const KEY_COLUMN: usize = 3;
pub const VALUE_COLUMN: usize = 4;
pub const HEADERS_COLUMN: usize = 5;
/// All the fixed columns, in order.
pub const FIXED_COLUMNS: [usize; 6] = [
    PARTITION_COLUMN,
    OFFSET_COLUMN,
    TIMESTAMP_COLUMN,
    KEY_COLUMN,
    VALUE_COLUMN,
    HEADERS_COLUMN,
];

/// The fields of one header: the struct inside the `headers` list.
pub fn header_fields() -> Fields {
    Fields::from(vec![
        Field::new("key", DataType::Utf8, false),
        Field::new("value", DataType::Binary, false),
    ])
}

/// The item of the `headers` list, named `element` as the Parquet spec names it.
pub fn header_item() -> Arc<Field> {
    Arc::new(Field::new(
        "element",
        DataType::Struct(header_fields()),
        false,
    ))
}

/// The fixed columns of every file.
pub fn schema() -> SchemaRef {
    Arc::new(Schema::new(vec![
        Field::new("partition", DataType::Int32, false),
        Field::new("offset", DataType::Int64, false),
        Field::new(
            "timestamp",
            DataType::Timestamp(TimeUnit::Millisecond, Some("UTC".into())),
            false,
        ),
        Field::new("key", DataType::Binary, true),
        Field::new("value", DataType::Binary, false),
        Field::new("headers", DataType::List(header_item()), false),
    ]))
}
