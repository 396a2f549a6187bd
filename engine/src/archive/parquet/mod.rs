//! Records to and from Parquet: the archive file format (docs/archive-format.md).
//!
//! One file holds a contiguous offset range of one partition. Columns: `partition` int32,
//! `offset` int64, `timestamp` timestamp(ms, UTC), `key` binary (nullable), `value` binary,
//! `headers` list<struct<key utf8, value binary>>. zstd, row groups of at most 128 Ki rows or
//! 4 MiB of data (encoded on several threads at once), page statistics on `offset` and
//! `timestamp` (so readers skip pages by range), and file metadata naming the topic,
//! partition, offset range, format version and, for plugin output, the plugin versions that
//! produced it.
//!
//! This file holds what writing and reading share: the format version, its limits, the
//! [`Summary`] of a file's rows, the [`Origin`] of its records and the errors. `write.rs`
//! writes a file; `read.rs` reads one back and verifies it.

mod read;
mod text;
mod write;

use std::num::TryFromIntError;

use arrow_schema::{ArrowError, SchemaRef};

use super::columns::Encodings;
use parquet::errors::ParquetError;

#[cfg(test)]
pub use read::read;
pub use read::{FileContents, Source, verify};
#[cfg(test)]
pub use write::write;
pub use write::{Rows, RowsError, write_file};

/// Version of the file layout, in the file metadata (`sluice.format`).
/// 2: keys and values held as their topic's encoding says (bytes, string or json), nullable,
/// with side columns; 1: both binary, values never null.
pub const FORMAT_VERSION: u32 = 2;
/// Rows per row group at most: large enough for scans, small enough to skip by statistics.
const ROW_GROUP_ROWS: usize = 128 * 1024;
/// A row group also ends at this many bytes of keys, values and headers: a reader decoding a
/// group holds about this much. Small enough that the last groups of a file keep every encoding
/// thread busy (larger groups left one core compressing a file's tail alone while the others
/// waited; docs/archive-format.md has the figures).
const ROW_GROUP_BYTES: usize = 4 << 20;

/// Row groups filled and waiting for an encoding thread, at most: the log is read no further
/// ahead of encoding than that.
const ENCODE_QUEUE_ROW_GROUPS: usize = 1;
/// Threads that encode and compress row groups at most (fewer on fewer cores).
const ENCODER_THREADS_MAX: usize = 4;
/// Rows a row group's value column is sized for up front (its bytes: [`ROW_GROUP_BYTES`]).
const ROW_GROUP_RESERVED_ROWS: usize = 1024;
/// The zstd level of every column: pyarrow's default. Higher levels made files hardly smaller
/// and archival much slower (docs/archive-format.md has the figures).
const ZSTD_LEVEL: i32 = 1;

/// Rows per Arrow batch when a file is read.
const READ_BATCH_ROWS: usize = 8 * 1024;

/// Why a file could not be written, read or verified; each names the file (a path, or where
/// in the object store it was fetched from).
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ParquetFileError {
    /// Creating or reading the file failed.
    #[error("{path}: {source}")]
    Io {
        path: String,
        #[source]
        source: std::io::Error,
    },
    /// Making the written file durable failed.
    #[error("{path}: fsync: {source}")]
    Sync {
        path: String,
        #[source]
        source: std::io::Error,
    },
    /// Encoding the rows or writing them to the file failed.
    #[error("{path}: {source}")]
    Write {
        path: String,
        #[source]
        source: WriteError,
    },
    /// A row could not be written, or reading the rows failed.
    #[error("{path}: {source}")]
    Rows {
        path: String,
        #[source]
        source: RowsError,
    },
    #[error("{path}: not a readable Sluice archive file: {source}")]
    Unreadable {
        path: String,
        #[source]
        source: ReadError,
    },
    /// The file holds other rows than expected: `message` compares them.
    #[error("{path}: {message}")]
    Mismatch { path: String, message: String },
}

/// Why the Parquet writer failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum WriteError {
    #[error(transparent)]
    Parquet(#[from] ParquetError),
    /// Building the Arrow batch of a row group (typed columns included) failed.
    #[error(transparent)]
    Arrow(#[from] ArrowError),
    /// The partition number does not fit the file's int32 `partition` column.
    #[error(transparent)]
    Partition(#[from] TryFromIntError),
    #[error("the file has fewer column writers than columns")]
    ColumnWriters,
    #[error("the file writing thread panicked")]
    Panicked,
}

/// Why a file is not a readable archive file.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ReadError {
    #[error(transparent)]
    Parquet(#[from] ParquetError),
    #[error(transparent)]
    Arrow(#[from] ArrowError),
    /// Its columns, row groups or offsets are not an archive file's: a sentence says how.
    #[error("{0}")]
    Layout(String),
}

impl From<String> for ReadError {
    fn from(layout: String) -> ReadError {
        ReadError::Layout(layout)
    }
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
    /// The version of the topic's schema `value_schema` is.
    pub schema_version: Option<u32>,
    /// How keys and values are held.
    pub encodings: Encodings,
}

#[cfg(test)]
mod tests {
    use std::borrow::Cow;

    use bytes::Bytes;

    use super::*;
    use crate::log::{Header, Record};

    fn records(count: u64) -> Vec<(u64, Record)> {
        (0..count)
            .map(|i| {
                let record = Record {
                    timestamp: 1_700_000_000_000 + i as i64,
                    key: (i % 3 != 0).then(|| Bytes::from(format!("key-{i}"))),
                    value: Some(Bytes::from(vec![i as u8; (i % 50) as usize])),
                    headers: (0..i % 3)
                        .map(|h| Header {
                            key: Cow::Owned(format!("h{h}")),
                            value: Some(Bytes::from(vec![h as u8; 3])),
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
            schema_version: None,
            encodings: Encodings::BYTES,
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

    /// Keys and values of every kind: JSON, text that is not JSON, bytes that are not UTF-8,
    /// no key, a tombstone.
    fn mixed_records() -> Vec<(u64, Record)> {
        let values: [Option<&[u8]>; 6] = [
            Some(br#"{"kind": "click", "n": 1}"#),
            Some(b"plain text"),
            Some(&[0xff, 0xfe, b'{']),
            None,
            Some(br#"[1, 2, "three"]"#),
            Some(b""),
        ];
        let keys: [Option<&[u8]>; 3] = [Some(b"user-1"), None, Some(&[0xc3, 0x28])];
        (0..600u64)
            .map(|i| {
                let record = Record {
                    timestamp: 1_700_000_000_000 + i as i64,
                    key: keys[i as usize % 3].map(Bytes::copy_from_slice),
                    value: values[i as usize % 6].map(Bytes::copy_from_slice),
                    headers: Vec::new(),
                };
                (i, record)
            })
            .collect()
    }

    #[test]
    fn text_and_json_columns_give_back_every_key_and_value_as_produced() {
        use arrow_array::Array;
        use arrow_array::cast::AsArray;
        use parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;

        use crate::archive::columns::ColumnEncoding;

        let dir = tempfile::tempdir().unwrap();
        let rows = mixed_records();
        for (key, value) in [
            (ColumnEncoding::String, ColumnEncoding::Json),
            (ColumnEncoding::Json, ColumnEncoding::String),
            (ColumnEncoding::Bytes, ColumnEncoding::Json),
        ] {
            let path = dir.path().join(format!("{key:?}-{value:?}.parquet"));
            let origin = Origin {
                topic: "t",
                partition: 0,
                value_schema: None,
                schema_version: None,
                encodings: Encodings { key, value },
            };
            let summary = write(&path, &origin, &rows).unwrap();
            let (back, found) = read(&path).unwrap();
            assert_eq!(back, rows, "{key:?} {value:?}");
            assert_eq!(found, summary);
            verify(Source::File(path.clone()), &summary).unwrap();

            let file = std::fs::File::open(&path).unwrap();
            let builder = ParquetRecordBatchReaderBuilder::try_new(file).unwrap();
            let value_leaf = builder.parquet_schema().column(4);
            assert_eq!(
                value_leaf.logical_type_ref().cloned(),
                match value {
                    ColumnEncoding::Json => Some(parquet::basic::LogicalType::Json),
                    _ => Some(parquet::basic::LogicalType::String),
                }
            );
            let batch = builder.build().unwrap().next().unwrap().unwrap();
            let values = batch.column_by_name("value").unwrap().as_string::<i32>();
            let raw = batch
                .column_by_name("value_raw")
                .unwrap()
                .as_binary::<i32>();
            let undecoded = batch
                .column_by_name("_undecoded")
                .unwrap()
                .as_string::<i32>();
            // The JSON object is text; the bytes that are not UTF-8 are in the side column,
            // flagged; the tombstone is null in both, and not flagged.
            assert_eq!(values.value(0), r#"{"kind": "click", "n": 1}"#);
            assert!(values.is_null(2) && raw.value(2) == [0xff, 0xfe, b'{']);
            assert!(
                undecoded.value(2).contains("value: not"),
                "{}",
                undecoded.value(2)
            );
            assert!(values.is_null(3) && raw.is_null(3));
            match value {
                ColumnEncoding::Json => {
                    assert!(values.is_null(1) && raw.value(1) == b"plain text");
                    assert!(values.is_null(5), "an empty value is not JSON");
                }
                _ => assert!(values.value(1) == "plain text" && raw.is_null(1)),
            }
        }
    }

    /// Found by the `archive_file` fuzz target: a footer whose column chunk has a negative
    /// offset made the parquet crate panic; it is refused as unreadable.
    #[test]
    fn a_footer_with_a_chunk_outside_the_file_is_refused_not_a_panic() {
        let bytes = include_bytes!(
            "../../../../tests/fixtures/fuzz/archive-file-negative-column-offset.parquet"
        );
        let source = || Source::Fetched {
            name: "damaged.parquet".into(),
            bytes: Bytes::from_static(bytes),
        };
        let error = FileContents::read(source()).err().unwrap().to_string();
        assert!(
            error.contains("damaged.parquet") && error.contains("not a readable"),
            "{error}"
        );
        let summary = Summary::new();
        let error = verify(source(), &summary).unwrap_err().to_string();
        assert!(error.contains("damaged.parquet"), "{error}");
    }

    /// Found by the `archive_file` fuzz target: a delta-encoded page whose decoding
    /// overflows made the parquet crate panic (where overflow checks are on); the file is
    /// refused as unreadable, named.
    #[test]
    fn a_page_that_made_the_decoder_panic_is_refused_by_name() {
        let bytes =
            include_bytes!("../../../../tests/fixtures/fuzz/archive-file-delta-overflow.parquet");
        let source = Source::Fetched {
            name: "damaged.parquet".into(),
            bytes: Bytes::from_static(bytes),
        };
        let error = FileContents::read(source).err().unwrap().to_string();
        assert!(
            error.contains("damaged.parquet") && error.contains("not a readable"),
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
            schema_version: None,
            encodings: Encodings::BYTES,
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
