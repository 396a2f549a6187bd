//! Reading an archive file back: its rows as Arrow batches ([`FileContents`], for replay and
//! recovery), and verification against the summary written (only `offset` and `value` read,
//! in place in the decompressed pages).

use std::borrow::Cow;
use std::path::PathBuf;
use std::sync::Arc;

use arrow_array::builder::BinaryBuilder;
use arrow_array::cast::AsArray;
use arrow_array::types::{Int64Type, TimestampMillisecondType};
use arrow_array::{Array, ArrayRef, RecordBatch};
use arrow_schema::{DataType, Field, Schema};
use bytes::Bytes;
use parquet::arrow::ProjectionMask;
use parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;
use parquet::basic::Type as PhysicalType;
use parquet::column::reader::ColumnReader;
use parquet::data_type::ByteArray;
use parquet::file::metadata::ParquetMetaData;
use parquet::file::reader::{FileReader, RowGroupReader, SerializedFileReader};
use parquet::schema::types::SchemaDescriptor;

use super::text;
use super::{ParquetFileError, READ_BATCH_ROWS, ReadError, Summary};
use crate::archive::columns::{
    Encodings, HEADERS_COLUMN, KEY_COLUMN, KEY_RAW, OFFSET_COLUMN, TIMESTAMP_COLUMN, VALUE_COLUMN,
    VALUE_RAW, schema,
};
use crate::log::{Header, Record};

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
        let bytes = bytes_of(source)?;
        decoding(&name, || FileContents::read_from(&name, bytes))
    }

    fn read_from(name: &str, bytes: Bytes) -> Result<FileContents, ParquetFileError> {
        let unreadable = |source: ReadError| ParquetFileError::Unreadable {
            path: name.to_string(),
            source,
        };
        let length = bytes.len();
        let mut builder =
            ParquetRecordBatchReaderBuilder::try_new(bytes).map_err(|e| unreadable(e.into()))?;
        check_chunks(builder.metadata(), length).map_err(|e| unreadable(e.into()))?;
        // The fixed columns and the side columns (a schema-aware topic's typed ones are
        // derived from the value).
        let file_schema = builder.schema().clone();
        let roots: Vec<usize> = READ_COLUMNS
            .iter()
            .filter_map(|name| file_schema.index_of(name).ok())
            .collect();
        let mask = ProjectionMask::roots(builder.parquet_schema(), roots);
        // Batches larger than the default 1,024 rows: a file is read through in one go.
        builder = builder
            .with_projection(mask)
            .with_batch_size(READ_BATCH_ROWS);
        let reader = builder.build().map_err(|e| unreadable(e.into()))?;
        let mut batches = Vec::new();
        let mut summary = Summary::new();
        for batch in reader {
            let batch = batch.map_err(|e| unreadable(e.into()))?;
            let batch = as_bytes(&batch).map_err(unreadable)?;
            let offsets = batch.column(OFFSET_COLUMN).as_primitive::<Int64Type>();
            let values = batch.column(VALUE_COLUMN).as_binary::<i32>();
            let timestamps = batch
                .column(TIMESTAMP_COLUMN)
                .as_primitive::<TimestampMillisecondType>();
            for row in 0..batch.num_rows() {
                summary
                    .add_read(offsets.value(row), timestamps.value(row), values.value(row))
                    .map_err(|e| unreadable(e.into()))?;
            }
            batches.push(batch);
        }
        Ok(FileContents { batches, summary })
    }

    /// The first offset whose timestamp is at or after `timestamp`, as the log's time index
    /// answers; None when every row is older.
    pub fn offset_for_timestamp(&self, timestamp: i64) -> Option<u64> {
        self.batches.iter().find_map(|batch| {
            let offsets = batch.column(OFFSET_COLUMN).as_primitive::<Int64Type>();
            let timestamps = batch
                .column(TIMESTAMP_COLUMN)
                .as_primitive::<TimestampMillisecondType>();
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
            let offsets = batch.column(OFFSET_COLUMN).as_primitive::<Int64Type>();
            let timestamps = batch
                .column(TIMESTAMP_COLUMN)
                .as_primitive::<TimestampMillisecondType>();
            let keys = batch.column(KEY_COLUMN).as_binary::<i32>();
            let values = batch.column(VALUE_COLUMN).as_binary::<i32>();
            let headers = batch.column(HEADERS_COLUMN).as_list::<i32>();
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
                    value: values
                        .is_valid(row)
                        .then(|| Bytes::copy_from_slice(values.value(row))),
                    headers: (0..entries.len())
                        .map(|i| Header {
                            key: Cow::Owned(names.value(i).to_string()),
                            value: Some(Bytes::copy_from_slice(contents.value(i))),
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

/// The columns replay and recovery read: the fixed ones, and the side columns if the file has
/// them.
const READ_COLUMNS: [&str; 8] = [
    "partition",
    "offset",
    "timestamp",
    "key",
    "value",
    "headers",
    KEY_RAW,
    VALUE_RAW,
];

/// A batch read from a file as format 1 had it: the six fixed columns, keys and values as
/// bytes (joined with their side columns), whatever the file's encodings.
fn as_bytes(batch: &RecordBatch) -> Result<RecordBatch, ReadError> {
    let need = |name: &str| {
        batch
            .column_by_name(name)
            .cloned()
            .ok_or_else(|| ReadError::Layout(format!("it has no `{name}` column")))
    };
    let joined = |name: &str, raw_name: &str| -> Result<ArrayRef, ReadError> {
        let column = need(name)?;
        let raw = match batch.column_by_name(raw_name) {
            None => None,
            Some(raw) => Some(raw.as_binary_opt::<i32>().ok_or_else(|| {
                ReadError::Layout(format!("its `{raw_name}` column is not binary"))
            })?),
        };
        match column.data_type() {
            DataType::Binary if raw.is_none() => Ok(column),
            DataType::Binary | DataType::Utf8 => {
                let mut bytes = BinaryBuilder::new();
                for row in 0..column.len() {
                    bytes.append_option(text::joined(column.as_ref(), raw, row));
                }
                Ok(Arc::new(bytes.finish()))
            }
            other => Err(ReadError::Layout(format!(
                "its `{name}` column is {other}, not binary or text"
            ))),
        }
    };
    let columns = vec![
        need("partition")?,
        need("offset")?,
        need("timestamp")?,
        joined("key", KEY_RAW)?,
        joined("value", VALUE_RAW)?,
        need("headers")?,
    ];
    // The file's own `headers` field: files of format 1 have no field ids in it.
    let mut fields: Vec<Field> = schema(Encodings::BYTES)
        .fields()
        .iter()
        .map(|f| f.as_ref().clone())
        .collect();
    fields[HEADERS_COLUMN] = batch.schema().field_with_name("headers")?.clone();
    Ok(RecordBatch::try_new(
        Arc::new(Schema::new(fields)),
        columns,
    )?)
}

/// Reads a file back: its rows in order, checked to be one partition's contiguous range.
#[cfg(test)]
pub fn read(path: &std::path::Path) -> Result<(Vec<(u64, Record)>, Summary), ParquetFileError> {
    let contents = FileContents::read(Source::File(path.to_path_buf()))?;
    let rows = contents.rows_from(contents.summary.first_offset, usize::MAX);
    Ok((rows, contents.summary))
}

impl Source {
    /// The bytes, whole.
    pub fn into_bytes(self) -> Result<Bytes, ParquetFileError> {
        bytes_of(self)
    }
}

/// The source's bytes, whole: reading a file means reading nearly all of it anyway.
fn bytes_of(source: Source) -> Result<Bytes, ParquetFileError> {
    match source {
        Source::File(path) => {
            std::fs::read(&path)
                .map(Bytes::from)
                .map_err(|source| ParquetFileError::Io {
                    path: path.display().to_string(),
                    source,
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
    let bytes = bytes_of(source)?;
    let found = decoding(&name, || checked_summary(&name, bytes))?;
    FileContents {
        batches: Vec::new(),
        summary: found,
    }
    .check(&name, expected)
}

/// Where the leaves verification reads are in a file: `offset`, `value`, and `value_raw` if
/// the file has it.
struct Leaves {
    offset: usize,
    value: usize,
    value_raw: Option<usize>,
}

/// Values and definition levels read from one leaf of a row group (buffers reused from group
/// to group).
#[derive(Default)]
struct LeafValues {
    values: Vec<ByteArray>,
    levels: Vec<i16>,
    /// The level of a present value; 0 for a required column, whose values are all there.
    present: i16,
    next: usize,
}

impl LeafValues {
    fn read(
        &mut self,
        group: &dyn RowGroupReader,
        leaf: usize,
        rows: usize,
    ) -> Result<(), ReadError> {
        self.values.clear();
        self.levels.clear();
        self.next = 0;
        self.present = group.metadata().column(leaf).column_descr().max_def_level();
        let ColumnReader::ByteArrayColumnReader(mut reader) = group.get_column_reader(leaf)? else {
            return Err("a value column of an unexpected type".to_string().into());
        };
        let levels = (self.present > 0).then_some(&mut self.levels);
        let (records, _, _) = reader.read_records(rows, levels, None, &mut self.values)?;
        if records != rows {
            return Err(format!("a value column holds {records} of {rows} rows").into());
        }
        Ok(())
    }

    /// The value of row `row` (rows taken in order), None when null.
    fn take(&mut self, row: usize) -> Option<&[u8]> {
        if self.present > 0 && self.levels.get(row) != Some(&self.present) {
            return None;
        }
        let value = self.values.get(self.next)?;
        self.next += 1;
        Some(value.data())
    }
}

fn checked_summary(name: &str, bytes: Bytes) -> Result<Summary, ParquetFileError> {
    let unreadable = |source: ReadError| ParquetFileError::Unreadable {
        path: name.to_string(),
        source,
    };
    let length = bytes.len();
    let file = SerializedFileReader::new(bytes).map_err(|e| unreadable(e.into()))?;
    check_chunks(file.metadata(), length).map_err(|e| unreadable(e.into()))?;
    let leaves = find_leaves(file.metadata().file_metadata().schema_descr())
        .map_err(|e| unreadable(e.into()))?;
    let mut summary = Summary::new();
    let mut buffers = (Vec::new(), LeafValues::default(), LeafValues::default());
    for index in 0..file.num_row_groups() {
        let group = file
            .get_row_group(index)
            .map_err(|e| unreadable(e.into()))?;
        add_row_group(&mut summary, index, &*group, &leaves, &mut buffers).map_err(unreadable)?;
    }
    Ok(summary)
}

/// Runs `decode` (the parquet crate decoding the file `name`), a panic of the decoder on
/// damaged bytes turned into an unreadable file: the `archive_file` fuzz target found inputs
/// that make it panic (an overflowing shift in its delta decoder, where overflow checks are
/// on), and a damaged archive file must be named, not take its reader down.
fn decoding<T>(
    name: &str,
    decode: impl FnOnce() -> Result<T, ParquetFileError>,
) -> Result<T, ParquetFileError> {
    std::panic::catch_unwind(std::panic::AssertUnwindSafe(decode)).unwrap_or_else(|panic| {
        let why = panic
            .downcast_ref::<&str>()
            .map(|s| s.to_string())
            .or_else(|| panic.downcast_ref::<String>().cloned())
            .unwrap_or_else(|| "a panic".into());
        Err(ParquetFileError::Unreadable {
            path: name.to_string(),
            source: ReadError::Layout(format!("the Parquet decoder failed on it: {why}")),
        })
    })
}

/// Checks that every column chunk the footer describes lies inside the file's `length` bytes:
/// the parquet crate panics on a chunk with a negative offset or size, which a damaged footer
/// can hold (found by the `archive_file` fuzz target).
fn check_chunks(metadata: &ParquetMetaData, length: usize) -> Result<(), String> {
    for (index, group) in metadata.row_groups().iter().enumerate() {
        for chunk in group.columns() {
            let start = chunk
                .dictionary_page_offset()
                .unwrap_or_else(|| chunk.data_page_offset());
            let size = chunk.compressed_size();
            let inside = u64::try_from(start)
                .ok()
                .zip(u64::try_from(size).ok())
                .and_then(|(start, size)| start.checked_add(size))
                .is_some_and(|end| end <= length as u64);
            if !inside {
                return Err(format!(
                    "row group {index}: column {} at {start} of {size} bytes is outside the file's {length} bytes",
                    chunk.column_path()
                ));
            }
        }
    }
    Ok(())
}

/// Finds the leaves verification reads, by name and type.
fn find_leaves(schema: &SchemaDescriptor) -> Result<Leaves, String> {
    let find = |name: &str, physical: PhysicalType| {
        (0..schema.num_columns()).find(|&leaf| {
            schema.column(leaf).path().string() == name
                && schema.column(leaf).physical_type() == physical
        })
    };
    if let (Some(offset), Some(value)) = (
        find("offset", PhysicalType::INT64),
        find("value", PhysicalType::BYTE_ARRAY),
    ) {
        let value_raw = find(VALUE_RAW, PhysicalType::BYTE_ARRAY);
        return Ok(Leaves {
            offset,
            value,
            value_raw,
        });
    }
    Err(format!(
        "its columns are not an archive file's (offset int64 and value binary or text expected): {:?}",
        schema
            .columns()
            .iter()
            .map(|c| c.path().string())
            .collect::<Vec<_>>()
    ))
}

/// Adds the rows of row group `index` to `summary`: their offsets and values (joined with
/// the side column) read into `buffers`.
fn add_row_group(
    summary: &mut Summary,
    index: usize,
    group: &dyn RowGroupReader,
    leaves: &Leaves,
    (offsets, values, raws): &mut (Vec<i64>, LeafValues, LeafValues),
) -> Result<(), ReadError> {
    let rows = usize::try_from(group.metadata().num_rows())
        .map_err(|_| format!("row group {index} has a negative row count"))?;
    offsets.clear();
    let ColumnReader::Int64ColumnReader(mut offset_reader) =
        group.get_column_reader(leaves.offset)?
    else {
        return Err("offset column of an unexpected type".to_string().into());
    };
    let (offsets_read, _, _) = offset_reader.read_records(rows, None, None, offsets)?;
    if offsets_read != rows || offsets.len() != rows {
        return Err(
            format!("row group {index} says {rows} rows and holds {offsets_read} offsets").into(),
        );
    }
    values.read(group, leaves.value, rows)?;
    if let Some(leaf) = leaves.value_raw {
        raws.read(group, leaf, rows)?;
    }
    for (row, offset) in offsets.iter().enumerate() {
        let value = match values.take(row) {
            Some(value) => value,
            None if leaves.value_raw.is_some() => raws.take(row).unwrap_or_default(),
            None => &[],
        };
        summary.add_read(*offset, summary.min_timestamp, value)?;
    }
    Ok(())
}
