//! Records to and from Parquet: the archive file format (docs/archive-format.md).
//!
//! One file holds a contiguous offset range of one partition. Columns: `partition` int32,
//! `offset` int64, `timestamp` timestamp(ms, UTC), `key` binary (nullable), `value` binary,
//! `headers` list<struct<key utf8, value binary>>. zstd, row groups of 128 Ki rows, page
//! statistics on `offset` and `timestamp` (so readers skip pages by range), and file metadata
//! naming the topic, partition, offset range, format version and, for plugin output, the
//! plugin versions that produced it.

use std::borrow::Cow;
use std::collections::BTreeSet;
use std::fs::File;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use arrow_array::builder::{
    ArrayBuilder, BinaryBuilder, Int32Builder, Int64Builder, ListBuilder, StringBuilder,
    StructBuilder, TimestampMillisecondBuilder,
};
use arrow_array::cast::AsArray;
use arrow_array::types::{Int64Type, TimestampMillisecondType};
use arrow_array::{Array, RecordBatch};
use arrow_schema::{DataType, Field, Fields, Schema, SchemaRef, TimeUnit};
use bytes::Bytes;
use parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;
use parquet::arrow::{ArrowWriter, ProjectionMask};
use parquet::basic::{Compression, Encoding, ZstdLevel};
use parquet::file::metadata::KeyValue;
use parquet::file::properties::{EnabledStatistics, WriterProperties};
use parquet::file::reader::ChunkReader;
use parquet::schema::types::ColumnPath;

use crate::log::{Header, Record};

/// Version of the file layout, in the file metadata (`sluice.format`).
pub const FORMAT_VERSION: u32 = 1;
/// Rows per row group: large enough for scans, small enough to skip by statistics.
const ROW_GROUP_ROWS: usize = 128 * 1024;
/// Most rows per Arrow batch handed to the writer.
const WRITE_BATCH_ROWS: usize = 16 * 1024;
/// Most value bytes per Arrow batch: the builders' buffers then stay small enough for the
/// allocator to reuse them, instead of mapping (and zeroing) fresh pages for every batch.
const WRITE_BATCH_BYTES: usize = 1 << 20;

#[derive(Debug, thiserror::Error)]
pub enum ParquetFileError {
    #[error("{path}: {message}")]
    Io { path: String, message: String },
    #[error("{path}: not a readable Sluice archive file: {message}")]
    Unreadable { path: String, message: String },
    #[error("{path}: {message}")]
    Mismatch { path: String, message: String },
}

/// What was written, as the manifest records it and verification checks it.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Summary {
    pub rows: u64,
    pub first_offset: u64,
    pub last_offset: u64,
    pub min_timestamp: i64,
    pub max_timestamp: i64,
    /// CRC-32C over each row's offset (little endian) and value, in order.
    pub checksum: u32,
}

impl Summary {
    fn new() -> Summary {
        Summary {
            rows: 0,
            first_offset: 0,
            last_offset: 0,
            min_timestamp: i64::MAX,
            max_timestamp: i64::MIN,
            checksum: 0,
        }
    }

    fn add(&mut self, offset: u64, timestamp: i64, value: &[u8]) {
        if self.rows == 0 {
            self.first_offset = offset;
        }
        self.rows += 1;
        self.last_offset = offset;
        self.min_timestamp = self.min_timestamp.min(timestamp);
        self.max_timestamp = self.max_timestamp.max(timestamp);
        self.checksum = crc32c::crc32c_append(self.checksum, &offset.to_le_bytes());
        self.checksum = crc32c::crc32c_append(self.checksum, value);
    }
}

/// Where the records come from (for the file metadata), and the topic's value schema if it
/// has one (for typed columns, see [`super::typed`]).
pub struct Origin<'a> {
    pub topic: &'a str,
    pub partition: u32,
    pub value_schema: Option<SchemaRef>,
}

/// The header the plugin host puts on every record a plugin emits (`group/version`); the
/// values seen are recorded in the file metadata as `sluice.produced_by`.
const PRODUCED_BY_HEADER: &str = "sluice.plugin";
/// A row group is closed at this many bytes of buffered data, or at [`ROW_GROUP_ROWS`]:
/// readers then hold at most this much of a file in memory to decode a group.
const ROW_GROUP_BYTES: usize = 64 << 20;

fn header_fields() -> Fields {
    Fields::from(vec![
        Field::new("key", DataType::Utf8, false),
        Field::new("value", DataType::Binary, false),
    ])
}

fn header_item() -> Arc<Field> {
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

fn properties(origin: &Origin<'_>) -> WriterProperties {
    let metadata = vec![
        KeyValue::new("sluice.format".into(), FORMAT_VERSION.to_string()),
        KeyValue::new("sluice.topic".into(), origin.topic.to_string()),
        KeyValue::new("sluice.partition".into(), origin.partition.to_string()),
    ];
    WriterProperties::builder()
        .set_compression(Compression::ZSTD(
            // Level 1, as pyarrow's default: level 3 made files ~3% smaller and archival ~30% slower.
            ZstdLevel::try_new(1).expect("1 is a valid zstd level"),
        ))
        .set_max_row_group_row_count(Some(ROW_GROUP_ROWS))
        .set_statistics_enabled(EnabledStatistics::Chunk)
        .set_column_statistics_enabled(ColumnPath::from("offset"), EnabledStatistics::Page)
        .set_column_statistics_enabled(ColumnPath::from("timestamp"), EnabledStatistics::Page)
        .set_column_statistics_enabled(ColumnPath::from("value"), EnabledStatistics::None)
        .set_column_statistics_enabled(ColumnPath::from("key"), EnabledStatistics::None)
        .set_column_statistics_enabled(
            ColumnPath::from(vec![
                "headers".into(),
                "list".into(),
                "element".into(),
                "key".into(),
            ]),
            EnabledStatistics::None,
        )
        .set_column_statistics_enabled(
            ColumnPath::from(vec![
                "headers".into(),
                "list".into(),
                "element".into(),
                "value".into(),
            ]),
            EnabledStatistics::None,
        )
        .set_column_dictionary_enabled(ColumnPath::from("value"), false)
        // Offsets and timestamps rise: delta encoding stores them in a few bits each, where a
        // dictionary would be built and then abandoned (almost every value is distinct).
        .set_column_dictionary_enabled(ColumnPath::from("offset"), false)
        .set_column_dictionary_enabled(ColumnPath::from("timestamp"), false)
        .set_column_encoding(ColumnPath::from("offset"), Encoding::DELTA_BINARY_PACKED)
        .set_column_encoding(ColumnPath::from("timestamp"), Encoding::DELTA_BINARY_PACKED)
        .set_key_value_metadata(Some(metadata))
        .build()
}

/// The columns of a file: the fixed ones, then those of the value schema if any.
fn file_schema(value_schema: Option<&SchemaRef>) -> SchemaRef {
    match value_schema {
        None => schema(),
        Some(typed) => {
            let mut fields: Vec<Field> = schema()
                .fields()
                .iter()
                .map(|f| f.as_ref().clone())
                .collect();
            fields.extend(super::typed::extra_fields(typed));
            Arc::new(Schema::new(fields))
        }
    }
}

fn to_batch(
    partition: i32,
    rows: &[(u64, Record)],
    value_schema: Option<&SchemaRef>,
) -> Result<RecordBatch, String> {
    let n = rows.len();
    let mut partitions = Int32Builder::with_capacity(n);
    let mut offsets = Int64Builder::with_capacity(n);
    let mut timestamps = TimestampMillisecondBuilder::with_capacity(n).with_timezone("UTC");
    let mut keys = BinaryBuilder::with_capacity(
        n,
        rows.iter()
            .map(|(_, r)| r.key.as_ref().map_or(0, |k| k.len()))
            .sum(),
    );
    let mut values = BinaryBuilder::with_capacity(n, rows.iter().map(|(_, r)| r.value.len()).sum());
    let mut headers = ListBuilder::new(StructBuilder::new(
        header_fields(),
        vec![
            Box::new(StringBuilder::new()) as Box<dyn ArrayBuilder>,
            Box::new(BinaryBuilder::new()),
        ],
    ))
    .with_field(header_item());
    for (offset, record) in rows {
        partitions.append_value(partition);
        offsets.append_value(i64::try_from(*offset).map_err(|_| "offset beyond i64")?);
        timestamps.append_value(record.timestamp);
        keys.append_option(record.key.as_deref());
        values.append_value(&record.value);
        let entries = headers.values();
        for header in &record.headers {
            entries
                .field_builder::<StringBuilder>(0)
                .ok_or("header key builder")?
                .append_value(&header.key);
            entries
                .field_builder::<BinaryBuilder>(1)
                .ok_or("header value builder")?
                .append_value(&header.value);
            entries.append(true);
        }
        headers.append(true);
    }
    let mut columns: Vec<arrow_array::ArrayRef> = vec![
        Arc::new(partitions.finish()),
        Arc::new(offsets.finish()),
        Arc::new(timestamps.finish()),
        Arc::new(keys.finish()),
        Arc::new(values.finish()),
        Arc::new(headers.finish()),
    ];
    if let Some(typed) = value_schema {
        columns.extend(super::typed::columns(
            typed,
            rows.iter().map(|(_, r)| &r.value[..]),
        )?);
    }
    RecordBatch::try_new(file_schema(value_schema), columns).map_err(|e| e.to_string())
}

/// Writes one file, rows appended in offset order, and makes it durable on [`finish`].
///
/// [`finish`]: FileWriter::finish
pub struct FileWriter {
    path: String,
    partition: i32,
    writer: ArrowWriter<File>,
    summary: Summary,
    produced_by: BTreeSet<String>,
    value_schema: Option<SchemaRef>,
}

impl FileWriter {
    pub fn create(path: &Path, origin: &Origin<'_>) -> Result<FileWriter, ParquetFileError> {
        let display = path.display().to_string();
        let fail = |message: String| ParquetFileError::Io {
            path: display.clone(),
            message,
        };
        let partition = i32::try_from(origin.partition).map_err(|e| fail(e.to_string()))?;
        let file = File::create(path).map_err(|e| fail(e.to_string()))?;
        let schema = file_schema(origin.value_schema.as_ref());
        let writer = ArrowWriter::try_new(file, schema, Some(properties(origin)))
            .map_err(|e| fail(e.to_string()))?;
        Ok(FileWriter {
            path: display,
            partition,
            writer,
            summary: Summary::new(),
            produced_by: BTreeSet::new(),
            value_schema: origin.value_schema.clone(),
        })
    }

    fn fail(&self, message: impl std::fmt::Display) -> ParquetFileError {
        ParquetFileError::Io {
            path: self.path.clone(),
            message: message.to_string(),
        }
    }

    /// Rows written so far.
    pub fn rows(&self) -> u64 {
        self.summary.rows
    }

    pub fn append(&mut self, rows: &[(u64, Record)]) -> Result<(), ParquetFileError> {
        for (offset, record) in rows {
            self.summary.add(*offset, record.timestamp, &record.value);
            for header in &record.headers {
                if header.key == PRODUCED_BY_HEADER
                    && let Ok(value) = std::str::from_utf8(&header.value)
                    && !self.produced_by.contains(value)
                {
                    self.produced_by.insert(value.to_string());
                }
            }
        }
        let mut rest = rows;
        while !rest.is_empty() {
            let mut bytes = 0;
            let count = rest
                .iter()
                .take(WRITE_BATCH_ROWS)
                .take_while(|(_, r)| {
                    bytes += r.value.len();
                    bytes <= WRITE_BATCH_BYTES
                })
                .count()
                .max(1);
            let (chunk, after) = rest.split_at(count);
            rest = after;
            let batch = to_batch(self.partition, chunk, self.value_schema.as_ref())
                .map_err(|e| self.fail(e))?;
            self.writer.write(&batch).map_err(|e| self.fail(e))?;
            if self.writer.in_progress_size() >= ROW_GROUP_BYTES {
                self.writer.flush().map_err(|e| self.fail(e))?;
            }
        }
        Ok(())
    }

    /// Completes the file (footer with the offset range, row count and checksum) and fsyncs it.
    pub fn finish(mut self) -> Result<Summary, ParquetFileError> {
        let summary = self.summary.clone();
        let mut metadata = vec![
            ("sluice.first_offset", summary.first_offset.to_string()),
            ("sluice.last_offset", summary.last_offset.to_string()),
            ("sluice.rows", summary.rows.to_string()),
            ("sluice.checksum", summary.checksum.to_string()),
        ];
        if !self.produced_by.is_empty() {
            let producers: Vec<&str> = self.produced_by.iter().map(String::as_str).collect();
            metadata.push(("sluice.produced_by", producers.join(",")));
        }
        for (key, value) in metadata {
            self.writer
                .append_key_value_metadata(KeyValue::new(key.into(), value));
        }
        self.writer.finish().map_err(|e| self.fail(e))?;
        self.writer
            .inner()
            .sync_all()
            .map_err(|e| self.fail(format!("fsync: {e}")))?;
        Ok(summary)
    }
}

/// Writes `rows` (offset order, one partition) to a new file at `path` and makes it durable.
pub fn write(
    path: &Path,
    origin: &Origin<'_>,
    rows: &[(u64, Record)],
) -> Result<Summary, ParquetFileError> {
    let mut writer = FileWriter::create(path, origin)?;
    writer.append(rows)?;
    writer.finish()
}

/// A file's rows as Arrow batches, checked to be a contiguous offset range, with the summary
/// of what they hold.
pub struct FileContents {
    pub batches: Vec<RecordBatch>,
    pub summary: Summary,
}

/// Where an archive file's bytes are read from.
pub enum Source {
    File(PathBuf),
    /// Fetched whole (from the object store); `name` says from where, for messages.
    Fetched {
        name: String,
        bytes: Bytes,
    },
}

impl Source {
    pub fn name(&self) -> String {
        match self {
            Source::File(path) => path.display().to_string(),
            Source::Fetched { name, .. } => name.clone(),
        }
    }
}

impl FileContents {
    /// Reads and checks a whole file.
    pub fn read(source: Source) -> Result<FileContents, ParquetFileError> {
        FileContents::read_columns(source, false)
    }

    /// Reads a file, all columns or only those verification needs (`offset` and `value`),
    /// and checks that its offsets are consecutive.
    fn read_columns(source: Source, only_checked: bool) -> Result<FileContents, ParquetFileError> {
        let name = source.name();
        match source {
            Source::File(path) => {
                let file = File::open(&path).map_err(|e| ParquetFileError::Io {
                    path: name.clone(),
                    message: e.to_string(),
                })?;
                FileContents::read_from(&name, file, only_checked)
            }
            Source::Fetched { bytes, .. } => FileContents::read_from(&name, bytes, only_checked),
        }
    }

    fn read_from(
        name: &str,
        reader: impl ChunkReader + 'static,
        only_checked: bool,
    ) -> Result<FileContents, ParquetFileError> {
        let unreadable = |message: String| ParquetFileError::Unreadable {
            path: name.to_string(),
            message,
        };
        let mut builder = ParquetRecordBatchReaderBuilder::try_new(reader)
            .map_err(|e| unreadable(e.to_string()))?;
        // Only the fixed columns (a schema-aware topic's typed ones are derived from `value`).
        const FIXED: [usize; 6] = [0, 1, 2, 3, 4, 5];
        const CHECKED: [usize; 2] = [1, 4];
        let columns: &[usize] = if only_checked { &CHECKED } else { &FIXED };
        if builder.schema().fields().len() < FIXED.len() {
            return Err(unreadable(format!(
                "it has {} columns, fewer than the {} of every archive file",
                builder.schema().fields().len(),
                FIXED.len()
            )));
        }
        let mask = ProjectionMask::roots(builder.parquet_schema(), columns.iter().copied());
        builder = builder.with_projection(mask);
        let expected = Arc::new(schema().project(columns).expect("columns exist"));
        let reader = builder.build().map_err(|e| unreadable(e.to_string()))?;
        let mut batches = Vec::new();
        let mut summary = Summary::new();
        for batch in reader {
            let batch = batch.map_err(|e| unreadable(e.to_string()))?;
            if batch.schema().fields() != expected.fields() {
                return Err(unreadable(format!(
                    "unexpected columns {:?}",
                    batch.schema().fields()
                )));
            }
            let column = |name: &str| batch.column_by_name(name).expect("checked above");
            let offsets = column("offset").as_primitive::<Int64Type>();
            let values = column("value").as_binary::<i32>();
            let timestamps = batch
                .column_by_name("timestamp")
                .map(|c| c.as_primitive::<TimestampMillisecondType>());
            for row in 0..batch.num_rows() {
                let offset = u64::try_from(offsets.value(row))
                    .map_err(|_| unreadable("negative offset".into()))?;
                if summary.rows > 0 && offset != summary.last_offset + 1 {
                    return Err(unreadable(format!(
                        "offset {offset} follows {}: a file holds consecutive offsets",
                        summary.last_offset
                    )));
                }
                let timestamp = timestamps.map_or(summary.min_timestamp, |t| t.value(row));
                summary.add(offset, timestamp, values.value(row));
            }
            batches.push(batch);
        }
        Ok(FileContents { batches, summary })
    }

    /// The records at `offset` and after, up to `max_rows`, in order.
    pub fn rows_from(&self, offset: u64, max_rows: usize) -> Vec<(u64, Record)> {
        let mut out = Vec::new();
        if self.summary.rows == 0 || offset < self.summary.first_offset {
            return out;
        }
        let mut skip = (offset - self.summary.first_offset) as usize;
        for batch in &self.batches {
            if skip >= batch.num_rows() {
                skip -= batch.num_rows();
                continue;
            }
            let offsets = batch.column(1).as_primitive::<Int64Type>();
            let timestamps = batch.column(2).as_primitive::<TimestampMillisecondType>();
            let keys = batch.column(3).as_binary::<i32>();
            let values = batch.column(4).as_binary::<i32>();
            let headers = batch.column(5).as_list::<i32>();
            for row in skip..batch.num_rows() {
                if out.len() >= max_rows {
                    return out;
                }
                let entries = headers.value(row);
                let entries = entries.as_struct();
                let names = entries.column(0).as_string::<i32>();
                let contents = entries.column(1).as_binary::<i32>();
                let record = Record {
                    timestamp: timestamps.value(row),
                    key: (!keys.is_null(row)).then(|| Bytes::copy_from_slice(keys.value(row))),
                    value: Bytes::copy_from_slice(values.value(row)),
                    headers: (0..entries.len())
                        .map(|i| Header {
                            key: Cow::Owned(names.value(i).to_string()),
                            value: Bytes::copy_from_slice(contents.value(i)),
                        })
                        .collect(),
                };
                out.push((offsets.value(row) as u64, record));
            }
            skip = 0;
        }
        out
    }

    /// Checks the contents against what was written (or what the manifest says): row count,
    /// offset range and the checksum of offsets and values.
    pub fn check(&self, name: &str, expected: &Summary) -> Result<(), ParquetFileError> {
        let found = &self.summary;
        let checked = |s: &Summary| (s.rows, s.first_offset, s.last_offset, s.checksum);
        if checked(found) == checked(expected) {
            return Ok(());
        }
        Err(ParquetFileError::Mismatch {
            path: name.to_string(),
            message: format!(
                "holds {} rows, offsets {}..={}, checksum {:08x}; expected {} rows, offsets {}..={}, checksum {:08x}",
                found.rows,
                found.first_offset,
                found.last_offset,
                found.checksum,
                expected.rows,
                expected.first_offset,
                expected.last_offset,
                expected.checksum
            ),
        })
    }
}

/// Reads a file back: its rows in order, checked to be one partition's contiguous range.
#[cfg(test)]
pub fn read(path: &Path) -> Result<(Vec<(u64, Record)>, Summary), ParquetFileError> {
    let contents = FileContents::read(Source::File(path.to_path_buf()))?;
    let rows = contents.rows_from(contents.summary.first_offset, usize::MAX);
    Ok((rows, contents.summary))
}

/// Re-reads a file and checks it against what was written (or what the manifest says).
pub fn verify(source: Source, expected: &Summary) -> Result<(), ParquetFileError> {
    let name = source.name();
    FileContents::read_columns(source, true)?.check(&name, expected)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn records(count: u64) -> Vec<(u64, Record)> {
        (0..count)
            .map(|i| {
                let record = Record {
                    timestamp: 1_700_000_000_000 + i as i64,
                    key: (i % 3 != 0).then(|| Bytes::from(format!("key-{i}"))),
                    value: Bytes::from(vec![i as u8; (i % 50) as usize]),
                    headers: (0..i % 3)
                        .map(|h| Header {
                            key: Cow::Owned(format!("h{h}")),
                            value: Bytes::from(vec![h as u8; 3]),
                        })
                        .collect(),
                };
                (1_000 + i, record)
            })
            .collect()
    }

    #[test]
    fn records_round_trip_and_verify_against_their_summary() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("a.parquet");
        let rows = records(40_000);
        let origin = Origin {
            topic: "t",
            partition: 2,
            value_schema: None,
        };
        let summary = write(&path, &origin, &rows).unwrap();
        assert_eq!(
            (summary.rows, summary.first_offset, summary.last_offset),
            (40_000, 1_000, 40_999)
        );
        let (back, found) = read(&path).unwrap();
        assert_eq!(back, rows);
        assert_eq!(found, summary);
        verify(Source::File(path.clone()), &summary).unwrap();
        let wrong = Summary {
            checksum: summary.checksum ^ 1,
            ..summary
        };
        let error = verify(Source::File(path.clone()), &wrong)
            .unwrap_err()
            .to_string();
        assert!(
            error.contains("a.parquet") && error.contains("checksum"),
            "{error}"
        );
    }

    #[test]
    fn a_truncated_file_is_reported_with_its_name() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("cut.parquet");
        let origin = Origin {
            topic: "t",
            partition: 0,
            value_schema: None,
        };
        let summary = write(&path, &origin, &records(1_000)).unwrap();
        let bytes = std::fs::read(&path).unwrap();
        std::fs::write(&path, &bytes[..bytes.len() / 2]).unwrap();
        let error = verify(Source::File(path.clone()), &summary)
            .unwrap_err()
            .to_string();
        assert!(
            error.contains("cut.parquet") && error.contains("not a readable"),
            "{error}"
        );
    }
}
