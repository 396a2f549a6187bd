//! Records to and from Parquet: the archive file format (docs/archive-format.md).
//!
//! One file holds a contiguous offset range of one partition. Columns: `partition` int32,
//! `offset` int64, `timestamp` timestamp(ms, UTC), `key` binary (nullable), `value` binary,
//! `headers` list<struct<key utf8, value binary>>. zstd, row groups of at most 128 Ki rows or
//! 4 MiB of data (encoded on several threads at once), page statistics on `offset` and
//! `timestamp` (so readers skip pages by range), and file metadata naming the topic,
//! partition, offset range, format version and, for plugin output, the plugin versions that
//! produced it.

use std::borrow::Cow;
use std::collections::{BTreeMap, BTreeSet};
use std::fs::File;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use arrow_array::builder::{ArrayBuilder, BinaryBuilder, StringBuilder};
use arrow_array::cast::AsArray;
use arrow_array::types::{Int64Type, TimestampMillisecondType};
use arrow_array::{
    Array, ArrayRef, Int32Array, Int64Array, ListArray, RecordBatch, StructArray,
    TimestampMillisecondArray,
};
use arrow_buffer::{OffsetBuffer, ScalarBuffer};
use arrow_schema::{Field, Schema, SchemaRef};
use bytes::Bytes;
use parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;
use parquet::arrow::arrow_writer::{ArrowColumnChunk, ArrowRowGroupWriterFactory, compute_leaves};
use parquet::arrow::{ArrowWriter, ProjectionMask};
use parquet::basic::Type as PhysicalType;
use parquet::basic::{Compression, Encoding, ZstdLevel};
use parquet::column::reader::ColumnReader;
use parquet::data_type::ByteArray;
use parquet::file::metadata::KeyValue;
use parquet::file::properties::{EnabledStatistics, WriterProperties};
use parquet::file::reader::{FileReader, SerializedFileReader};
use parquet::file::writer::SerializedFileWriter;
use parquet::schema::types::ColumnPath;

use super::columns::{header_fields, header_item, schema};
use crate::log::batch::{BatchError, RecordView};
use crate::log::headers::PRODUCED_BY;
use crate::log::{Header, Record};

/// Version of the file layout, in the file metadata (`sluice.format`).
pub const FORMAT_VERSION: u32 = 1;
/// Rows per row group at most: large enough for scans, small enough to skip by statistics.
const ROW_GROUP_ROWS: usize = 128 * 1024;
/// A row group also ends at this many bytes of keys, values and headers: a reader decoding a
/// group holds about this much. Small enough that the last groups of a file keep every encoding
/// thread busy (larger groups left one core compressing a file's tail alone while the others
/// waited; docs/archive-format.md has the figures).
const ROW_GROUP_BYTES: usize = 4 << 20;

/// Rows per Arrow batch when a file is read.
const READ_BATCH_ROWS: usize = 8 * 1024;

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

    /// Adds a row read from a file, which must follow the previous one.
    fn add_read(&mut self, offset: i64, timestamp: i64, value: &[u8]) -> Result<(), String> {
        let offset = u64::try_from(offset).map_err(|_| format!("negative offset {offset}"))?;
        if self.rows > 0 && offset != self.last_offset + 1 {
            return Err(format!(
                "offset {offset} follows {}: a file holds consecutive offsets",
                self.last_offset
            ));
        }
        self.add(offset, timestamp, value);
        Ok(())
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

fn properties(origin: &Origin<'_>) -> WriterProperties {
    let metadata = vec![
        KeyValue::new("sluice.format".into(), FORMAT_VERSION.to_string()),
        KeyValue::new("sluice.topic".into(), origin.topic.to_string()),
        KeyValue::new("sluice.partition".into(), origin.partition.to_string()),
    ];
    WriterProperties::builder()
        .set_compression(Compression::ZSTD(
            // Level 1, as pyarrow's default: higher levels made files hardly smaller and
            // archival much slower (docs/archive-format.md has the figures).
            ZstdLevel::try_new(1).expect("1 is a valid zstd level"),
        ))
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

/// The rows of one row group, column by column, as they are read from the log.
struct RowGroup {
    offsets: Vec<i64>,
    timestamps: Vec<i64>,
    keys: BinaryBuilder,
    values: BinaryBuilder,
    header_names: StringBuilder,
    header_values: BinaryBuilder,
    /// Where each row's headers end in `header_names` and `header_values` (the list offsets).
    header_ends: Vec<i32>,
    /// Bytes of keys, values and headers so far.
    bytes: usize,
}

impl RowGroup {
    fn new() -> RowGroup {
        RowGroup {
            offsets: Vec::new(),
            timestamps: Vec::new(),
            keys: BinaryBuilder::new(),
            // Sized for a full group up front: growing by doubling copies the values again.
            values: BinaryBuilder::with_capacity(1024, ROW_GROUP_BYTES),
            header_names: StringBuilder::new(),
            header_values: BinaryBuilder::new(),
            header_ends: vec![0],
            bytes: 0,
        }
    }

    fn rows(&self) -> usize {
        self.offsets.len()
    }

    fn is_full(&self) -> bool {
        self.rows() >= ROW_GROUP_ROWS || self.bytes >= ROW_GROUP_BYTES
    }

    fn push(&mut self, offset: u64, record: &RecordView<'_>) -> Result<(), String> {
        self.offsets
            .push(i64::try_from(offset).map_err(|_| format!("offset {offset} is beyond i64"))?);
        self.timestamps.push(record.timestamp);
        self.keys.append_option(record.key);
        self.values.append_value(record.value);
        self.bytes += record.key.map_or(0, <[u8]>::len) + record.value.len();
        for (name, value) in record.headers {
            self.header_names.append_value(name);
            self.header_values.append_value(value);
            self.bytes += name.len() + value.len();
        }
        let headers_end = i32::try_from(self.header_values.len())
            .map_err(|_| "more than 2^31 headers in a row group".to_string())?;
        self.header_ends.push(headers_end);
        Ok(())
    }

    /// The rows as an Arrow batch of the file's columns (typed columns decoded here, on the
    /// encoding thread).
    fn into_batch(
        mut self,
        partition: i32,
        schema: &SchemaRef,
        value_schema: Option<&SchemaRef>,
    ) -> Result<RecordBatch, String> {
        let rows = self.rows();
        let values = self.values.finish();
        let entries = StructArray::try_new(
            header_fields(),
            vec![
                Arc::new(self.header_names.finish()) as ArrayRef,
                Arc::new(self.header_values.finish()),
            ],
            None,
        )
        .map_err(|e| e.to_string())?;
        let headers = ListArray::try_new(
            header_item(),
            OffsetBuffer::new(ScalarBuffer::from(self.header_ends)),
            Arc::new(entries),
            None,
        )
        .map_err(|e| e.to_string())?;
        let mut columns: Vec<ArrayRef> = vec![
            Arc::new(Int32Array::from(vec![partition; rows])),
            Arc::new(Int64Array::from(self.offsets)),
            Arc::new(TimestampMillisecondArray::from(self.timestamps).with_timezone("UTC")),
            Arc::new(self.keys.finish()),
            Arc::new(values.clone()),
            Arc::new(headers),
        ];
        if let Some(typed) = value_schema {
            columns.extend(super::typed::columns(
                typed,
                (0..values.len()).map(|row| values.value(row)),
            )?);
        }
        RecordBatch::try_new(schema.clone(), columns).map_err(|e| e.to_string())
    }
}

/// Threads that encode and compress row groups, each a whole group at a time: compression
/// is nearly all of archival's work, and one group does not wait for another.
fn encoder_threads() -> usize {
    std::thread::available_parallelism().map_or(1, |n| n.get().min(4))
}

/// Encodes one row group into column chunks, ready to append to the file in order.
fn encode_row_group(
    factory: &ArrowRowGroupWriterFactory,
    index: usize,
    batch: &RecordBatch,
) -> Result<Vec<ArrowColumnChunk>, String> {
    let mut writers = factory
        .create_column_writers(index)
        .map_err(|e| e.to_string())?;
    let mut leaf_writers = writers.iter_mut();
    for (field, column) in batch.schema().fields().iter().zip(batch.columns()) {
        for leaf in compute_leaves(field, column).map_err(|e| e.to_string())? {
            leaf_writers
                .next()
                .ok_or("the file has fewer column writers than columns")?
                .write(&leaf)
                .map_err(|e| e.to_string())?;
        }
    }
    writers
        .into_iter()
        .map(|writer| writer.close().map_err(|e| e.to_string()))
        .collect()
}

/// What [`write_file`]'s `fill` pushes rows into, in offset order. A full row group goes to
/// the encoding threads while the next is being filled.
pub struct Rows {
    group: RowGroup,
    groups: usize,
    summary: Summary,
    /// The values of the [`PRODUCED_BY`] header seen (the plugin versions that produced the
    /// records), recorded in the file metadata as `sluice.produced_by`.
    produced_by: BTreeSet<String>,
    to_encode: std::sync::mpsc::SyncSender<(usize, RowGroup)>,
}

impl Rows {
    /// Rows pushed so far.
    pub fn rows(&self) -> u64 {
        self.summary.rows
    }

    pub fn push(&mut self, offset: u64, record: &RecordView<'_>) -> Result<(), RowsError> {
        self.summary.add(offset, record.timestamp, record.value);
        for (name, value) in record.headers {
            if *name == PRODUCED_BY
                && let Ok(value) = std::str::from_utf8(value)
                && !self.produced_by.contains(value)
            {
                self.produced_by.insert(value.to_string());
            }
        }
        self.group.push(offset, record).map_err(RowsError::Row)?;
        if self.group.is_full() {
            self.send()?;
        }
        Ok(())
    }

    /// Pushes owned records (tests, and archives written from memory).
    #[cfg(test)]
    pub fn push_records(&mut self, rows: &[(u64, Record)]) -> Result<(), RowsError> {
        for (offset, record) in rows {
            let headers: Vec<(&str, &[u8])> = record
                .headers
                .iter()
                .map(|h| (&h.key[..], &h.value[..]))
                .collect();
            let view = RecordView {
                timestamp: record.timestamp,
                key: record.key.as_deref(),
                value: &record.value,
                headers: &headers,
            };
            self.push(*offset, &view)?;
        }
        Ok(())
    }

    fn send(&mut self) -> Result<(), RowsError> {
        let group = std::mem::replace(&mut self.group, RowGroup::new());
        self.to_encode
            .send((self.groups, group))
            .map_err(|_| RowsError::Stopped)?;
        self.groups += 1;
        Ok(())
    }
}

/// Why a row could not be pushed.
#[derive(Debug)]
pub enum RowsError {
    /// The row itself (an offset beyond what Parquet's int64 holds, too many headers).
    Row(String),
    /// The encoding or writing threads stopped; their error is the one reported.
    Stopped,
    /// Reading the rows failed (the log).
    Source(String),
}

impl From<BatchError> for RowsError {
    fn from(error: BatchError) -> RowsError {
        RowsError::Source(error.to_string())
    }
}

/// Writes the rows `fill` pushes (offset order, one partition) to a new file at `path`, with
/// the offset range, row count and checksum in its footer, and fsyncs it. Row groups are
/// encoded on [`encoder_threads`] threads as they fill up and written in order by another.
pub fn write_file(
    path: &Path,
    origin: &Origin<'_>,
    fill: impl FnOnce(&mut Rows) -> Result<(), RowsError>,
) -> Result<Summary, ParquetFileError> {
    let display = path.display().to_string();
    let fail = |message: String| ParquetFileError::Io {
        path: display.clone(),
        message,
    };
    let partition = i32::try_from(origin.partition).map_err(|e| fail(e.to_string()))?;
    let file = File::create(path).map_err(|e| fail(e.to_string()))?;
    let schema = file_schema(origin.value_schema.as_ref());
    let (mut file_writer, factory) =
        ArrowWriter::try_new(file, schema.clone(), Some(properties(origin)))
            .and_then(ArrowWriter::into_serialized_writer)
            .map_err(|e| fail(e.to_string()))?;
    let encoders = encoder_threads();
    let value_schema = origin.value_schema.as_ref();
    let (filled, rows, written) = std::thread::scope(|scope| {
        let (to_encode, queue) = std::sync::mpsc::sync_channel::<(usize, RowGroup)>(1);
        // Shared by the encoders; gone with the last of them, so a send to stopped
        // encoders fails instead of waiting.
        let queue = Arc::new(Mutex::new(queue));
        let (encoded, to_write) = std::sync::mpsc::sync_channel::<(
            usize,
            Result<Vec<ArrowColumnChunk>, String>,
        )>(encoders);
        for _ in 0..encoders {
            let (queue, encoded, factory, schema) =
                (queue.clone(), encoded.clone(), &factory, &schema);
            scope.spawn(move || {
                loop {
                    let next = queue
                        .lock()
                        .map_err(|_| ())
                        .and_then(|q| q.recv().map_err(|_| ()));
                    let Ok((index, group)) = next else { return };
                    let chunks = group
                        .into_batch(partition, schema, value_schema)
                        .and_then(|batch| encode_row_group(factory, index, &batch));
                    if encoded.send((index, chunks)).is_err() {
                        return;
                    }
                }
            });
        }
        drop((queue, encoded));
        let writer = scope.spawn(move || -> Result<SerializedFileWriter<File>, String> {
            let mut waiting = BTreeMap::new();
            let mut next = 0;
            for (index, chunks) in to_write {
                waiting.insert(index, chunks?);
                while let Some(chunks) = waiting.remove(&next) {
                    let mut group = file_writer.next_row_group().map_err(|e| e.to_string())?;
                    for chunk in chunks {
                        chunk
                            .append_to_row_group(&mut group)
                            .map_err(|e| e.to_string())?;
                    }
                    group.close().map_err(|e| e.to_string())?;
                    next += 1;
                }
            }
            Ok(file_writer)
        });
        let mut rows = Rows {
            group: RowGroup::new(),
            groups: 0,
            summary: Summary::new(),
            produced_by: BTreeSet::new(),
            to_encode,
        };
        let mut filled = fill(&mut rows);
        if filled.is_ok() && rows.group.rows() > 0 {
            filled = rows.send();
        }
        let Rows {
            summary,
            produced_by,
            to_encode,
            ..
        } = rows;
        // The encoders stop when the queue closes, and the writer when they have.
        drop(to_encode);
        let written = writer
            .join()
            .unwrap_or_else(|_| Err("the file writing thread panicked".into()));
        (filled, (summary, produced_by), written)
    });
    // The writer's own error explains a stop better than the one it caused.
    let mut file_writer = match (filled, written) {
        (Err(RowsError::Row(message) | RowsError::Source(message)), _) => {
            return Err(fail(message));
        }
        (_, Err(message)) => return Err(fail(message)),
        (Err(RowsError::Stopped), Ok(_)) => {
            return Err(fail("the encoding threads stopped".into()));
        }
        (Ok(()), Ok(file_writer)) => file_writer,
    };
    let (summary, produced_by) = rows;
    let mut metadata = vec![
        ("sluice.first_offset", summary.first_offset.to_string()),
        ("sluice.last_offset", summary.last_offset.to_string()),
        ("sluice.rows", summary.rows.to_string()),
        ("sluice.checksum", summary.checksum.to_string()),
    ];
    if !produced_by.is_empty() {
        let producers: Vec<&str> = produced_by.iter().map(String::as_str).collect();
        metadata.push(("sluice.produced_by", producers.join(",")));
    }
    for (key, value) in metadata {
        file_writer.append_key_value_metadata(KeyValue::new(key.into(), value));
    }
    file_writer.finish().map_err(|e| fail(e.to_string()))?;
    file_writer
        .inner()
        .sync_all()
        .map_err(|e| fail(format!("fsync: {e}")))?;
    Ok(summary)
}

/// Writes `rows` (offset order, one partition) to a new file at `path` and makes it durable.
#[cfg(test)]
pub fn write(
    path: &Path,
    origin: &Origin<'_>,
    rows: &[(u64, Record)],
) -> Result<Summary, ParquetFileError> {
    write_file(path, origin, |sink| sink.push_records(rows))
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
    /// Reads a whole file (its fixed columns) and checks that its offsets are consecutive.
    pub fn read(source: Source) -> Result<FileContents, ParquetFileError> {
        let name = source.name();
        FileContents::read_from(&name, bytes_of(source)?)
    }

    fn read_from(name: &str, bytes: Bytes) -> Result<FileContents, ParquetFileError> {
        let unreadable = |message: String| ParquetFileError::Unreadable {
            path: name.to_string(),
            message,
        };
        let mut builder = ParquetRecordBatchReaderBuilder::try_new(bytes)
            .map_err(|e| unreadable(e.to_string()))?;
        // Only the fixed columns (a schema-aware topic's typed ones are derived from `value`).
        const FIXED: [usize; 6] = [0, 1, 2, 3, 4, 5];
        if builder.schema().fields().len() < FIXED.len() {
            return Err(unreadable(format!(
                "it has {} columns, fewer than the {} of every archive file",
                builder.schema().fields().len(),
                FIXED.len()
            )));
        }
        let mask = ProjectionMask::roots(builder.parquet_schema(), FIXED);
        // Batches larger than the default 1,024 rows: a file is read through in one go.
        builder = builder
            .with_projection(mask)
            .with_batch_size(READ_BATCH_ROWS);
        let expected = Arc::new(schema().project(&FIXED).expect("columns exist"));
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
            let timestamps = column("timestamp").as_primitive::<TimestampMillisecondType>();
            for row in 0..batch.num_rows() {
                summary
                    .add_read(offsets.value(row), timestamps.value(row), values.value(row))
                    .map_err(unreadable)?;
            }
            batches.push(batch);
        }
        Ok(FileContents { batches, summary })
    }

    /// The first offset whose timestamp is at or after `timestamp`, as the log's time index
    /// answers; None when every row is older.
    pub fn offset_for_timestamp(&self, timestamp: i64) -> Option<u64> {
        self.batches.iter().find_map(|batch| {
            let offsets = batch.column(1).as_primitive::<Int64Type>();
            let timestamps = batch.column(2).as_primitive::<TimestampMillisecondType>();
            (0..batch.num_rows())
                .find(|&row| timestamps.value(row) >= timestamp)
                .and_then(|row| u64::try_from(offsets.value(row)).ok())
        })
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

/// The source's bytes, whole: reading a file means reading nearly all of it anyway.
fn bytes_of(source: Source) -> Result<Bytes, ParquetFileError> {
    match source {
        Source::File(path) => {
            std::fs::read(&path)
                .map(Bytes::from)
                .map_err(|e| ParquetFileError::Io {
                    path: path.display().to_string(),
                    message: e.to_string(),
                })
        }
        Source::Fetched { bytes, .. } => Ok(bytes),
    }
}

/// Re-reads a file and checks it against what was written (or what the manifest says).
///
/// Only the `offset` and `value` columns are read, page by page through Parquet's column
/// readers: values come out as slices of the decompressed pages, so checking a file costs
/// its decompression and a CRC, no copy into Arrow arrays.
pub fn verify(source: Source, expected: &Summary) -> Result<(), ParquetFileError> {
    let name = source.name();
    let found = checked_summary(&name, bytes_of(source)?)?;
    FileContents {
        batches: Vec::new(),
        summary: found,
    }
    .check(&name, expected)
}

/// Leaf columns of every archive file that verification reads.
const OFFSET_LEAF: usize = 1;
const VALUE_LEAF: usize = 4;

fn checked_summary(name: &str, bytes: Bytes) -> Result<Summary, ParquetFileError> {
    let unreadable = |message: String| ParquetFileError::Unreadable {
        path: name.to_string(),
        message,
    };
    let file = SerializedFileReader::new(bytes).map_err(|e| unreadable(e.to_string()))?;
    let schema = file.metadata().file_metadata().schema_descr();
    let leaf_is = |leaf: usize, expected: &str, physical: PhysicalType| {
        leaf < schema.num_columns()
            && schema.column(leaf).path().string() == expected
            && schema.column(leaf).physical_type() == physical
    };
    if !leaf_is(OFFSET_LEAF, "offset", PhysicalType::INT64)
        || !leaf_is(VALUE_LEAF, "value", PhysicalType::BYTE_ARRAY)
    {
        return Err(unreadable(format!(
            "its columns are not an archive file's (offset int64 and value binary expected as leaves {OFFSET_LEAF} and {VALUE_LEAF}): {:?}",
            schema
                .columns()
                .iter()
                .map(|c| c.path().string())
                .collect::<Vec<_>>()
        )));
    }
    let mut summary = Summary::new();
    let mut offsets: Vec<i64> = Vec::new();
    let mut values: Vec<ByteArray> = Vec::new();
    for index in 0..file.num_row_groups() {
        let group = file
            .get_row_group(index)
            .map_err(|e| unreadable(e.to_string()))?;
        let rows = usize::try_from(group.metadata().num_rows())
            .map_err(|_| unreadable(format!("row group {index} has a negative row count")))?;
        offsets.clear();
        values.clear();
        let read = |leaf: usize| {
            group
                .get_column_reader(leaf)
                .map_err(|e| unreadable(e.to_string()))
        };
        let (
            ColumnReader::Int64ColumnReader(mut offset_reader),
            ColumnReader::ByteArrayColumnReader(mut value_reader),
        ) = (read(OFFSET_LEAF)?, read(VALUE_LEAF)?)
        else {
            return Err(unreadable(
                "offset or value column of an unexpected type".into(),
            ));
        };
        let (offsets_read, _, _) = offset_reader
            .read_records(rows, None, None, &mut offsets)
            .map_err(|e| unreadable(e.to_string()))?;
        let (values_read, _, _) = value_reader
            .read_records(rows, None, None, &mut values)
            .map_err(|e| unreadable(e.to_string()))?;
        if offsets_read != rows
            || values_read != rows
            || offsets.len() != rows
            || values.len() != rows
        {
            return Err(unreadable(format!(
                "row group {index} says {rows} rows and holds {offsets_read} offsets and {values_read} values"
            )));
        }
        for (offset, value) in offsets.iter().zip(&values) {
            summary
                .add_read(*offset, summary.min_timestamp, value.data())
                .map_err(unreadable)?;
        }
    }
    Ok(summary)
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
