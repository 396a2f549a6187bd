//! Writing an archive file: the writer's properties (compression, encodings, statistics,
//! metadata), the rows pushed in offset order into row groups, and the [`RowGroupPipeline`]
//! that encodes full groups on several threads at once and appends them to the file in order.

use std::collections::{BTreeMap, BTreeSet};
use std::fs::File;
use std::path::Path;
use std::sync::mpsc::{Receiver, SyncSender, sync_channel};
use std::sync::{Arc, Mutex};
use std::thread::{Scope, ScopedJoinHandle};

use arrow_array::builder::{ArrayBuilder, BinaryBuilder, StringBuilder};
use arrow_array::{
    Array, ArrayRef, Int32Array, Int64Array, ListArray, RecordBatch, StructArray,
    TimestampMillisecondArray,
};
use arrow_buffer::{OffsetBuffer, ScalarBuffer};
use arrow_schema::{ArrowError, Field, Schema, SchemaRef};
use parquet::arrow::ArrowWriter;
use parquet::arrow::arrow_writer::ArrowWriterOptions;
use parquet::arrow::arrow_writer::{ArrowColumnChunk, ArrowRowGroupWriterFactory, compute_leaves};
use parquet::basic::{Compression, Encoding, ZstdLevel};
use parquet::file::metadata::KeyValue;
use parquet::file::properties::{EnabledStatistics, WriterProperties};
use parquet::file::writer::SerializedFileWriter;
use parquet::schema::types::ColumnPath;

use super::text::{self, Undecoded};
use super::{
    ENCODE_QUEUE_ROW_GROUPS, ENCODER_THREADS_MAX, FORMAT_VERSION, Origin, ParquetFileError,
    ROW_GROUP_BYTES, ROW_GROUP_RESERVED_ROWS, ROW_GROUP_ROWS, Summary, WriteError, ZSTD_LEVEL,
};
use crate::archive::columns::{
    ColumnEncoding, Encodings, KEY_RAW, VALUE_RAW, header_fields, header_item, schema,
    with_field_ids,
};
use crate::archive::typed;
#[cfg(test)]
use crate::log::Record;
use crate::log::batch::{BatchError, RecordView};
use crate::log::headers::PRODUCED_BY;

/// The writer's settings: zstd, delta encoding of offsets and timestamps, statistics where
/// readers use them, and the file metadata known before the rows.
fn properties(origin: &Origin<'_>) -> WriterProperties {
    let mut metadata = vec![
        KeyValue::new("sluice.format".into(), FORMAT_VERSION.to_string()),
        KeyValue::new("sluice.topic".into(), origin.topic.to_string()),
        KeyValue::new("sluice.partition".into(), origin.partition.to_string()),
        KeyValue::new("sluice.key".into(), encoding_name(origin.encodings.key)),
        KeyValue::new("sluice.value".into(), encoding_name(origin.encodings.value)),
    ];
    if let Some(version) = origin.schema_version {
        metadata.push(KeyValue::new(
            "sluice.schema_version".into(),
            version.to_string(),
        ));
    }
    WriterProperties::builder()
        .set_compression(Compression::ZSTD(
            ZstdLevel::try_new(ZSTD_LEVEL).expect("a valid zstd level"),
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
        .set_column_statistics_enabled(ColumnPath::from(KEY_RAW), EnabledStatistics::None)
        .set_column_statistics_enabled(ColumnPath::from(VALUE_RAW), EnabledStatistics::None)
        .set_column_dictionary_enabled(ColumnPath::from("value"), false)
        .set_column_dictionary_enabled(ColumnPath::from(VALUE_RAW), false)
        // Offsets and timestamps rise: delta encoding stores them in a few bits each, where a
        // dictionary would be built and then abandoned (almost every value is distinct).
        .set_column_dictionary_enabled(ColumnPath::from("offset"), false)
        .set_column_dictionary_enabled(ColumnPath::from("timestamp"), false)
        .set_column_encoding(ColumnPath::from("offset"), Encoding::DELTA_BINARY_PACKED)
        .set_column_encoding(ColumnPath::from("timestamp"), Encoding::DELTA_BINARY_PACKED)
        .set_key_value_metadata(Some(metadata))
        .build()
}

/// How `sluice.key` and `sluice.value` name an encoding.
fn encoding_name(encoding: ColumnEncoding) -> String {
    match encoding {
        ColumnEncoding::Bytes => "bytes",
        ColumnEncoding::String => "string",
        ColumnEncoding::Json => "json",
    }
    .to_string()
}

/// The columns of a file: the fixed ones and their side columns, then those of the value
/// schema if any.
fn file_schema(encodings: Encodings, value_schema: Option<&SchemaRef>) -> SchemaRef {
    let plain = match value_schema {
        None => schema(encodings),
        Some(typed) => {
            let mut fields: Vec<Field> = schema(encodings)
                .fields()
                .iter()
                .map(|f| f.as_ref().clone())
                .collect();
            fields.extend(typed::extra_fields(typed));
            Arc::new(Schema::new(fields))
        }
    };
    with_field_ids(&plain)
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
            values: BinaryBuilder::with_capacity(ROW_GROUP_RESERVED_ROWS, ROW_GROUP_BYTES),
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

    fn push(&mut self, offset: u64, record: &RecordView<'_>) -> Result<(), RowsError> {
        self.offsets
            .push(i64::try_from(offset).map_err(|_| RowsError::OffsetBeyondI64 { offset })?);
        self.timestamps.push(record.timestamp);
        self.keys.append_option(record.key);
        self.values.append_option(record.value);
        self.bytes += record.key.map_or(0, <[u8]>::len) + record.value.map_or(0, <[u8]>::len);
        for (name, value) in record.headers {
            let value = value.unwrap_or_default();
            self.header_names.append_value(name);
            self.header_values.append_value(value);
            self.bytes += name.len() + value.len();
        }
        let headers_end =
            i32::try_from(self.header_values.len()).map_err(|_| RowsError::TooManyHeaders)?;
        self.header_ends.push(headers_end);
        Ok(())
    }

    /// The rows as an Arrow batch of the file's columns (typed columns decoded here, on the
    /// encoding thread).
    fn into_batch(mut self, file: &FileColumns<'_>) -> Result<RecordBatch, ArrowError> {
        let rows = self.rows();
        let values = self.values.finish();
        let entries = StructArray::try_new(
            header_fields(),
            vec![
                Arc::new(self.header_names.finish()) as ArrayRef,
                Arc::new(self.header_values.finish()),
            ],
            None,
        )?;
        let headers = ListArray::try_new(
            header_item(),
            OffsetBuffer::new(ScalarBuffer::from(self.header_ends)),
            Arc::new(entries),
            None,
        )?;
        let mut undecoded = Undecoded::default();
        let (key, key_raw) = text::encode(
            self.keys.finish(),
            file.encodings.key,
            "key",
            &mut undecoded,
        )?;
        let (value, value_raw) = text::encode(
            values.clone(),
            file.encodings.value,
            "value",
            &mut undecoded,
        )?;
        let mut columns: Vec<ArrayRef> = vec![
            Arc::new(Int32Array::from(vec![file.partition; rows])),
            Arc::new(Int64Array::from(self.offsets)),
            Arc::new(TimestampMillisecondArray::from(self.timestamps).with_timezone("UTC")),
            key,
            value,
            Arc::new(headers),
        ];
        columns.extend(key_raw);
        columns.extend(value_raw);
        if file.encodings.has_side_columns() {
            columns.push(undecoded.finish(rows));
        }
        if let Some(typed) = file.value_schema {
            columns.extend(typed::columns(
                typed,
                (0..values.len()).map(|row| values.value(row)),
            )?);
        }
        RecordBatch::try_new(file.schema.clone(), columns)
    }
}

/// Threads that encode and compress row groups, each a whole group at a time: compression
/// is nearly all of archival's work, and one group does not wait for another.
fn encoder_threads() -> usize {
    std::thread::available_parallelism().map_or(1, |n| n.get().min(ENCODER_THREADS_MAX))
}

/// Encodes one row group into column chunks, ready to append to the file in order.
fn encode_row_group(
    factory: &ArrowRowGroupWriterFactory,
    index: usize,
    batch: &RecordBatch,
) -> Result<Vec<ArrowColumnChunk>, WriteError> {
    let mut writers = factory.create_column_writers(index)?;
    let mut leaf_writers = writers.iter_mut();
    for (field, column) in batch.schema().fields().iter().zip(batch.columns()) {
        for leaf in compute_leaves(field, column)? {
            leaf_writers
                .next()
                .ok_or(WriteError::ColumnWriters)?
                .write(&leaf)?;
        }
    }
    Ok(writers
        .into_iter()
        .map(|writer| writer.close())
        .collect::<Result<_, _>>()?)
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
    to_encode: SyncSender<Numbered<RowGroup>>,
}

impl Rows {
    fn new(to_encode: SyncSender<Numbered<RowGroup>>) -> Rows {
        Rows {
            group: RowGroup::new(),
            groups: 0,
            summary: Summary::new(),
            produced_by: BTreeSet::new(),
            to_encode,
        }
    }

    /// Rows pushed so far.
    pub fn rows(&self) -> u64 {
        self.summary.rows
    }

    pub fn push(&mut self, offset: u64, record: &RecordView<'_>) -> Result<(), RowsError> {
        self.summary
            .add(offset, record.timestamp, record.value.unwrap_or_default());
        for (name, value) in record.headers {
            if *name == PRODUCED_BY
                && let Some(value) = value
                && let Ok(value) = std::str::from_utf8(value)
                && !self.produced_by.contains(value)
            {
                self.produced_by.insert(value.to_string());
            }
        }
        self.group.push(offset, record)?;
        if self.group.is_full() {
            self.send()?;
        }
        Ok(())
    }

    /// Pushes owned records (tests, and archives written from memory).
    #[cfg(test)]
    pub fn push_records(&mut self, rows: &[(u64, Record)]) -> Result<(), RowsError> {
        for (offset, record) in rows {
            let headers: Vec<(&str, Option<&[u8]>)> = record
                .headers
                .iter()
                .map(|h| (&h.key[..], h.value.as_deref()))
                .collect();
            let view = RecordView {
                timestamp: record.timestamp,
                key: record.key.as_deref(),
                value: record.value.as_deref(),
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

    /// Sends the last row group, if it holds rows.
    fn send_last(&mut self) -> Result<(), RowsError> {
        if self.group.rows() > 0 {
            self.send()?;
        }
        Ok(())
    }

    /// What was pushed; drops the sender, which closes the encoders' queue.
    fn finish(self) -> (Summary, BTreeSet<String>) {
        (self.summary, self.produced_by)
    }
}

/// Why a row could not be pushed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum RowsError {
    /// The row's offset is beyond what Parquet's int64 holds.
    #[error("offset {offset} is beyond i64")]
    OffsetBeyondI64 { offset: u64 },
    /// The row group's headers are more than its list offsets (int32) count.
    #[error("more than 2^31 headers in a row group")]
    TooManyHeaders,
    /// The encoding or writing threads stopped; their error is the one reported.
    #[error("the encoding threads stopped")]
    Stopped,
    /// Reading the rows failed (the log).
    #[error(transparent)]
    Source(Box<dyn std::error::Error + Send + Sync>),
}

impl From<BatchError> for RowsError {
    fn from(error: BatchError) -> RowsError {
        RowsError::Source(Box::new(error))
    }
}

/// Writes the rows `fill` pushes (offset order, one partition) to a new file at `path`, with
/// the offset range, row count and checksum in its footer, and fsyncs it. Row groups are
/// encoded on [`encoder_threads`] threads as they fill up and written in order by another
/// (a [`RowGroupPipeline`]).
pub fn write_file(
    path: &Path,
    origin: &Origin<'_>,
    fill: impl FnOnce(&mut Rows) -> Result<(), RowsError>,
) -> Result<Summary, ParquetFileError> {
    let display = || path.display().to_string();
    let write_error = |source: WriteError| ParquetFileError::Write {
        path: display(),
        source,
    };
    let partition = i32::try_from(origin.partition).map_err(|e| write_error(e.into()))?;
    let file = File::create(path).map_err(|source| ParquetFileError::Io {
        path: display(),
        source,
    })?;
    let columns = FileColumns {
        partition,
        schema: file_schema(origin.encodings, origin.value_schema.as_ref()),
        value_schema: origin.value_schema.as_ref(),
        encodings: origin.encodings,
    };
    // No `ARROW:schema` entry: readers take the columns from the Parquet schema, where a
    // json column is text annotated as JSON (with the entry, pyarrow reads it as an
    // `arrow.json` extension column, which pyiceberg cannot read).
    let options = ArrowWriterOptions::new()
        .with_properties(properties(origin))
        .with_skip_arrow_metadata(true);
    let (file_writer, factory) =
        ArrowWriter::try_new_with_options(file, columns.schema.clone(), options)
            .and_then(ArrowWriter::into_serialized_writer)
            .map_err(|e| write_error(e.into()))?;
    let (filled, (summary, produced_by), written) = std::thread::scope(|scope| {
        let (pipeline, to_encode) = RowGroupPipeline::start(scope, file_writer, &factory, &columns);
        let mut rows = Rows::new(to_encode);
        let filled = fill(&mut rows).and_then(|()| rows.send_last());
        // Closes the queue: the encoders stop when it closes, and the writer when they have.
        let pushed = rows.finish();
        (filled, pushed, pipeline.finish())
    });
    let file_writer = first_error(&display(), filled, written)?;
    finish_file(&display(), file_writer, &summary, &produced_by)?;
    Ok(summary)
}

/// The file writer with every row group appended, or the error that stopped the writing of
/// the file at `path`.
fn first_error(
    path: &str,
    filled: Result<(), RowsError>,
    written: Result<SerializedFileWriter<File>, WriteError>,
) -> Result<SerializedFileWriter<File>, ParquetFileError> {
    let path = path.to_string();
    match (filled, written) {
        (Ok(()), Ok(file_writer)) => Ok(file_writer),
        // The writer's own error explains a stop better than the one it caused.
        (Ok(()) | Err(RowsError::Stopped), Err(source)) => {
            Err(ParquetFileError::Write { path, source })
        }
        (Err(source), _) => Err(ParquetFileError::Rows { path, source }),
    }
}

/// Ends the file: the offset range, row count, checksum and producers in its footer, then
/// fsync.
fn finish_file(
    path: &str,
    mut file_writer: SerializedFileWriter<File>,
    summary: &Summary,
    produced_by: &BTreeSet<String>,
) -> Result<(), ParquetFileError> {
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
    file_writer.finish().map_err(|e| ParquetFileError::Write {
        path: path.to_string(),
        source: e.into(),
    })?;
    file_writer
        .inner()
        .sync_all()
        .map_err(|source| ParquetFileError::Sync {
            path: path.to_string(),
            source,
        })
}

/// What an encoder turns a row group into: the file's columns.
struct FileColumns<'a> {
    partition: i32,
    schema: SchemaRef,
    value_schema: Option<&'a SchemaRef>,
    encodings: Encodings,
}

/// A row group to encode, numbered from 0 in file order.
type Numbered<T> = (usize, T);

/// Row groups encoded on [`encoder_threads`] threads at once, as they fill up, and appended to
/// the file in order by a writer thread: compression is nearly all of archival's work, and
/// one group does not wait for another. Row groups go in through the sender
/// [`RowGroupPipeline::start`] returns; dropping it ends the pipeline.
struct RowGroupPipeline<'scope> {
    writer: ScopedJoinHandle<'scope, Result<SerializedFileWriter<File>, WriteError>>,
}

impl<'scope> RowGroupPipeline<'scope> {
    /// Starts the encoders and the writer in `scope`.
    fn start<'env>(
        scope: &'scope Scope<'scope, 'env>,
        file_writer: SerializedFileWriter<File>,
        factory: &'scope ArrowRowGroupWriterFactory,
        columns: &'scope FileColumns<'scope>,
    ) -> (RowGroupPipeline<'scope>, SyncSender<Numbered<RowGroup>>) {
        let encoders = encoder_threads();
        let (to_encode, queue) = sync_channel::<Numbered<RowGroup>>(ENCODE_QUEUE_ROW_GROUPS);
        // Shared by the encoders; gone with the last of them, so a send to stopped
        // encoders fails instead of waiting.
        let queue = Arc::new(Mutex::new(queue));
        let (encoded, to_write) = sync_channel(encoders);
        for _ in 0..encoders {
            let (queue, encoded) = (queue.clone(), encoded.clone());
            scope.spawn(move || encode_row_groups(queue, encoded, factory, columns));
        }
        let writer = scope.spawn(move || write_in_order(file_writer, to_write));
        (RowGroupPipeline { writer }, to_encode)
    }

    /// Waits for the writer (once the sender is dropped): the file writer with every row
    /// group appended, or the first error of an encoder or the writer.
    fn finish(self) -> Result<SerializedFileWriter<File>, WriteError> {
        self.writer.join().unwrap_or(Err(WriteError::Panicked))
    }
}

/// An encoding thread: encodes the row groups it takes off the queue until the queue closes
/// or the writer stops.
fn encode_row_groups(
    queue: Arc<Mutex<Receiver<Numbered<RowGroup>>>>,
    encoded: SyncSender<Numbered<Result<Vec<ArrowColumnChunk>, WriteError>>>,
    factory: &ArrowRowGroupWriterFactory,
    columns: &FileColumns<'_>,
) {
    loop {
        let next = queue
            .lock()
            .map_err(|_| ())
            .and_then(|q| q.recv().map_err(|_| ()));
        let Ok((index, group)) = next else { return };
        let chunks = group
            .into_batch(columns)
            .map_err(WriteError::from)
            .and_then(|batch| encode_row_group(factory, index, &batch));
        if encoded.send((index, chunks)).is_err() {
            return;
        }
    }
}

/// The writing thread: appends encoded row groups to the file in their order, whatever the
/// order they were encoded in.
fn write_in_order(
    mut file_writer: SerializedFileWriter<File>,
    to_write: Receiver<Numbered<Result<Vec<ArrowColumnChunk>, WriteError>>>,
) -> Result<SerializedFileWriter<File>, WriteError> {
    let mut waiting = BTreeMap::new();
    let mut next = 0;
    for (index, chunks) in to_write {
        waiting.insert(index, chunks?);
        while let Some(chunks) = waiting.remove(&next) {
            let mut group = file_writer.next_row_group()?;
            for chunk in chunks {
                chunk.append_to_row_group(&mut group)?;
            }
            group.close()?;
            next += 1;
        }
    }
    Ok(file_writer)
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
