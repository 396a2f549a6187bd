//! Reading an archive file back: its rows as Arrow batches ([`FileContents`], for replay and
//! recovery), and verification against the summary written (only `offset` and `value` read,
//! in place in the decompressed pages).

use std::borrow::Cow;
use std::path::PathBuf;
use std::sync::Arc;

use arrow_array::cast::AsArray;
use arrow_array::types::{Int64Type, TimestampMillisecondType};
use arrow_array::{Array, RecordBatch};
use bytes::Bytes;
use parquet::arrow::ProjectionMask;
use parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;
use parquet::basic::Type as PhysicalType;
use parquet::column::reader::ColumnReader;
use parquet::data_type::ByteArray;
use parquet::file::reader::{FileReader, RowGroupReader, SerializedFileReader};
use parquet::schema::types::SchemaDescriptor;

use super::{ParquetFileError, READ_BATCH_ROWS, ReadError, Summary};
use crate::archive::columns::{
    FIXED_COLUMNS, HEADERS_COLUMN, KEY_COLUMN, OFFSET_COLUMN, TIMESTAMP_COLUMN, VALUE_COLUMN,
    schema,
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
        FileContents::read_from(&name, bytes_of(source)?)
    }

    fn read_from(name: &str, bytes: Bytes) -> Result<FileContents, ParquetFileError> {
        let unreadable = |source: ReadError| ParquetFileError::Unreadable {
            path: name.to_string(),
            source,
        };
        let mut builder =
            ParquetRecordBatchReaderBuilder::try_new(bytes).map_err(|e| unreadable(e.into()))?;
        // Only the fixed columns (a schema-aware topic's typed ones are derived from `value`).
        if builder.schema().fields().len() < FIXED_COLUMNS.len() {
            return Err(unreadable(
                format!(
                    "it has {} columns, fewer than the {} of every archive file",
                    builder.schema().fields().len(),
                    FIXED_COLUMNS.len()
                )
                .into(),
            ));
        }
        let mask = ProjectionMask::roots(builder.parquet_schema(), FIXED_COLUMNS);
        // Batches larger than the default 1,024 rows: a file is read through in one go.
        builder = builder
            .with_projection(mask)
            .with_batch_size(READ_BATCH_ROWS);
        let expected = Arc::new(schema().project(&FIXED_COLUMNS).expect("columns exist"));
        let reader = builder.build().map_err(|e| unreadable(e.into()))?;
        let mut batches = Vec::new();
        let mut summary = Summary::new();
        for batch in reader {
            let batch = batch.map_err(|e| unreadable(e.into()))?;
            if batch.schema().fields() != expected.fields() {
                return Err(unreadable(
                    format!("unexpected columns {:?}", batch.schema().fields()).into(),
                ));
            }
            let column = |name: &str| batch.column_by_name(name).expect("checked above");
            let offsets = column("offset").as_primitive::<Int64Type>();
            let values = column("value").as_binary::<i32>();
            let timestamps = column("timestamp").as_primitive::<TimestampMillisecondType>();
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
                    value: Some(Bytes::copy_from_slice(values.value(row))),
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

/// Reads a file back: its rows in order, checked to be one partition's contiguous range.
#[cfg(test)]
pub fn read(path: &std::path::Path) -> Result<(Vec<(u64, Record)>, Summary), ParquetFileError> {
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
    let unreadable = |source: ReadError| ParquetFileError::Unreadable {
        path: name.to_string(),
        source,
    };
    let file = SerializedFileReader::new(bytes).map_err(|e| unreadable(e.into()))?;
    check_leaves(file.metadata().file_metadata().schema_descr())
        .map_err(|e| unreadable(e.into()))?;
    let mut summary = Summary::new();
    let mut offsets: Vec<i64> = Vec::new();
    let mut values: Vec<ByteArray> = Vec::new();
    for index in 0..file.num_row_groups() {
        let group = file
            .get_row_group(index)
            .map_err(|e| unreadable(e.into()))?;
        add_row_group(&mut summary, index, &*group, &mut offsets, &mut values)
            .map_err(unreadable)?;
    }
    Ok(summary)
}

/// Checks that the leaves verification reads are where every archive file has them.
fn check_leaves(schema: &SchemaDescriptor) -> Result<(), String> {
    let leaf_is = |leaf: usize, expected: &str, physical: PhysicalType| {
        leaf < schema.num_columns()
            && schema.column(leaf).path().string() == expected
            && schema.column(leaf).physical_type() == physical
    };
    if leaf_is(OFFSET_LEAF, "offset", PhysicalType::INT64)
        && leaf_is(VALUE_LEAF, "value", PhysicalType::BYTE_ARRAY)
    {
        return Ok(());
    }
    Err(format!(
        "its columns are not an archive file's (offset int64 and value binary expected as leaves {OFFSET_LEAF} and {VALUE_LEAF}): {:?}",
        schema
            .columns()
            .iter()
            .map(|c| c.path().string())
            .collect::<Vec<_>>()
    ))
}

/// Adds the rows of row group `index` to `summary`: their offsets and values read into
/// `offsets` and `values` (buffers reused from group to group).
fn add_row_group(
    summary: &mut Summary,
    index: usize,
    group: &dyn RowGroupReader,
    offsets: &mut Vec<i64>,
    values: &mut Vec<ByteArray>,
) -> Result<(), ReadError> {
    let rows = usize::try_from(group.metadata().num_rows())
        .map_err(|_| format!("row group {index} has a negative row count"))?;
    offsets.clear();
    values.clear();
    let (
        ColumnReader::Int64ColumnReader(mut offset_reader),
        ColumnReader::ByteArrayColumnReader(mut value_reader),
    ) = (
        group.get_column_reader(OFFSET_LEAF)?,
        group.get_column_reader(VALUE_LEAF)?,
    )
    else {
        return Err("offset or value column of an unexpected type"
            .to_string()
            .into());
    };
    let (offsets_read, _, _) = offset_reader.read_records(rows, None, None, offsets)?;
    let (values_read, _, _) = value_reader.read_records(rows, None, None, values)?;
    if offsets_read != rows || values_read != rows || offsets.len() != rows || values.len() != rows
    {
        return Err(format!(
            "row group {index} says {rows} rows and holds {offsets_read} offsets and {values_read} values"
        )
        .into());
    }
    for (offset, value) in offsets.iter().zip(values.iter()) {
        summary.add_read(*offset, summary.min_timestamp, value.data())?;
    }
    Ok(())
}
