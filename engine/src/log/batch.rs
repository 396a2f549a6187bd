//! The record batch: the unit that is written to, checked in and read from a segment.
//!
//! The byte layout (format version 2; version 1 is still read) is specified in `docs/storage-format.md`; this module is
//! the only code that knows it. A batch is encoded in two steps so that the expensive part
//! (record encoding, compression, CRC of the body) happens outside the partition's write lock:
//! [`PendingBatch::build`] encodes and [`PendingBatch::seal`] stamps the base offset and
//! finishes the CRC with twelve more bytes.

use std::borrow::Cow;

use bytes::{Buf, Bytes};

/// Bytes before the records section in format version 2: base offset, length, CRC, version,
/// compression, record count, first and max timestamp, uncompressed records length, producer
/// id, producer epoch, base sequence.
pub const HEADER_LEN: usize = 56;
/// Bytes before the records section in format version 1 (no producer fields): the smallest
/// header a batch can have.
pub const HEADER_LEN_V1: usize = 42;
/// The prefix every reader needs to find the next batch: base offset and length.
pub const PREFIX_LEN: usize = 12;
/// The on-disk batch format version written; version 1 is read too.
pub const FORMAT_VERSION: u8 = 2;
/// Largest batch (header included) the codec accepts; guards allocations driven by a corrupt
/// length field.
pub const MAX_BATCH_LEN: usize = 256 * 1024 * 1024;

const OFF_CRC: usize = 12;
const OFF_VERSION: usize = 16;
const OFF_COMPRESSION: usize = 17;
const OFF_COUNT: usize = 18;
const OFF_FIRST_TS: usize = 22;
const OFF_MAX_TS: usize = 30;
const OFF_RAW_LEN: usize = 38;
const OFF_PRODUCER_ID: usize = 42;
const OFF_PRODUCER_EPOCH: usize = 50;
const OFF_BASE_SEQUENCE: usize = 52;

/// Who wrote a batch, for an idempotent Kafka producer: its id and epoch, and the sequence
/// number of the batch's first record (the records follow on). Stored in the batch, so the
/// log itself tells, after any restart, which batches a producer already wrote.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ProducerStamp {
    pub id: i64,
    pub epoch: i16,
    pub base_sequence: i32,
}

/// How the records section of a batch is compressed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Compression {
    #[default]
    None,
    Zstd,
    Lz4,
}

impl Compression {
    fn code(self) -> u8 {
        match self {
            Compression::None => 0,
            Compression::Zstd => 1,
            Compression::Lz4 => 2,
        }
    }

    fn from_code(code: u8) -> Option<Self> {
        match code {
            0 => Some(Compression::None),
            1 => Some(Compression::Zstd),
            2 => Some(Compression::Lz4),
            _ => None,
        }
    }
}

impl std::str::FromStr for Compression {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "none" => Ok(Compression::None),
            "zstd" => Ok(Compression::Zstd),
            "lz4" => Ok(Compression::Lz4),
            other => Err(format!(
                "unknown compression `{other}`: use none, zstd or lz4"
            )),
        }
    }
}

/// One header of a record: a UTF-8 name and an opaque value, which may be null (Kafka
/// headers may be). The engine's own header names are static: adding one to every record a
/// plugin emits allocates nothing.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Header {
    pub key: Cow<'static, str>,
    pub value: Option<Bytes>,
}

impl Header {
    /// A header with a (non-null) value.
    pub fn new(key: impl Into<Cow<'static, str>>, value: impl Into<Bytes>) -> Header {
        Header {
            key: key.into(),
            value: Some(value.into()),
        }
    }

    /// The value's bytes, empty for a null value.
    pub fn value_bytes(&self) -> &[u8] {
        self.value.as_deref().unwrap_or_default()
    }
}

/// A record as producers give it and consumers get it back. `timestamp` is milliseconds since
/// the Unix epoch. A null value is a tombstone in Kafka's terms; the key may be null too.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Record {
    pub timestamp: i64,
    pub key: Option<Bytes>,
    pub value: Option<Bytes>,
    pub headers: Vec<Header>,
}

impl Record {
    /// Bytes of its key, value and headers: what `max_record_bytes` and the plugin output
    /// quotas count.
    pub fn size_bytes(&self) -> usize {
        let headers: usize = self
            .headers
            .iter()
            .map(|h| h.key.len() + h.value_bytes().len())
            .sum();
        self.key.as_ref().map_or(0, |k| k.len()) + self.value_bytes().len() + headers
    }

    /// The value's bytes, empty for a null value.
    pub fn value_bytes(&self) -> &[u8] {
        self.value.as_deref().unwrap_or_default()
    }
}

/// Why bytes could not be decoded as a batch. Positions are relative to the batch start; the
/// segment layer adds the file and the file position.
#[derive(Debug, Clone, thiserror::Error, PartialEq, Eq)]
pub enum BatchError {
    #[error("batch is truncated: need {needed} bytes, have {available}")]
    Truncated { needed: usize, available: usize },
    #[error("batch length {0} is out of range")]
    BadLength(usize),
    #[error("batch CRC mismatch: stored {stored:#010x}, computed {computed:#010x}")]
    Crc { stored: u32, computed: u32 },
    #[error(
        "unsupported batch format version {0} (this build reads versions 1 to {FORMAT_VERSION})"
    )]
    Version(u8),
    #[error("unknown compression code {0}")]
    UnknownCompression(u8),
    #[error("records section is malformed: {0}")]
    Malformed(&'static str),
    #[error("records section does not decompress: {0}")]
    Decompress(String),
}

/// A fully encoded batch whose base offset is not yet known.
pub struct PendingBatch {
    bytes: Vec<u8>,
    body_crc: u32,
    record_count: u32,
    max_timestamp: i64,
}

impl PendingBatch {
    /// Stamps the base offset and completes the CRC; the bytes are then ready to append.
    pub fn seal(&mut self, base_offset: u64) -> &[u8] {
        self.bytes[0..8].copy_from_slice(&base_offset.to_le_bytes());
        let crc = crc32c::crc32c_append(self.body_crc, &self.bytes[0..PREFIX_LEN]);
        self.bytes[OFF_CRC..OFF_CRC + 4].copy_from_slice(&crc.to_le_bytes());
        &self.bytes
    }

    pub fn len(&self) -> usize {
        self.bytes.len()
    }

    pub fn is_empty(&self) -> bool {
        self.bytes.is_empty()
    }

    pub fn record_count(&self) -> u32 {
        self.record_count
    }

    pub fn max_timestamp(&self) -> i64 {
        self.max_timestamp
    }
}

impl PendingBatch {
    /// Encodes `records` (at least one) into a batch whose base offset is still to be set,
    /// stamped with the idempotent producer that sent them, if one did.
    pub fn build(
        records: &[Record],
        compression: Compression,
        producer: Option<ProducerStamp>,
    ) -> PendingBatch {
        assert!(!records.is_empty(), "a batch holds at least one record");
        let first_ts = records[0].timestamp;
        let max_ts = records
            .iter()
            .map(|r| r.timestamp)
            .max()
            .unwrap_or(first_ts);
        let estimate: usize = records.iter().map(|r| r.value_bytes().len() + 8).sum();
        let mut bytes = Vec::with_capacity(HEADER_LEN + estimate);
        bytes.resize(HEADER_LEN, 0);
        for record in records {
            encode_record(&mut bytes, record, first_ts, Nulls::Kept);
        }
        let raw_len = bytes.len() - HEADER_LEN;
        let compressed = match compression {
            Compression::None => None,
            // Level 1: the log is written on the hot path; archives use stronger levels.
            Compression::Zstd => Some(
                zstd::bulk::compress(&bytes[HEADER_LEN..], 1)
                    .expect("zstd encoding into memory cannot fail"),
            ),
            Compression::Lz4 => Some(lz4_flex::block::compress(&bytes[HEADER_LEN..])),
        };
        if let Some(body) = compressed {
            bytes.truncate(HEADER_LEN);
            bytes.extend_from_slice(&body);
        }
        let length = (bytes.len() - PREFIX_LEN) as u32;
        bytes[8..12].copy_from_slice(&length.to_le_bytes());
        bytes[OFF_VERSION] = FORMAT_VERSION;
        bytes[OFF_COMPRESSION] = compression.code();
        bytes[OFF_COUNT..OFF_COUNT + 4].copy_from_slice(&(records.len() as u32).to_le_bytes());
        bytes[OFF_FIRST_TS..OFF_FIRST_TS + 8].copy_from_slice(&first_ts.to_le_bytes());
        bytes[OFF_MAX_TS..OFF_MAX_TS + 8].copy_from_slice(&max_ts.to_le_bytes());
        bytes[OFF_RAW_LEN..OFF_RAW_LEN + 4].copy_from_slice(&(raw_len as u32).to_le_bytes());
        let stamp = producer.unwrap_or(ProducerStamp {
            id: -1,
            epoch: -1,
            base_sequence: -1,
        });
        bytes[OFF_PRODUCER_ID..OFF_PRODUCER_ID + 8].copy_from_slice(&stamp.id.to_le_bytes());
        bytes[OFF_PRODUCER_EPOCH..OFF_PRODUCER_EPOCH + 2]
            .copy_from_slice(&stamp.epoch.to_le_bytes());
        bytes[OFF_BASE_SEQUENCE..OFF_BASE_SEQUENCE + 4]
            .copy_from_slice(&stamp.base_sequence.to_le_bytes());
        let body_crc = crc32c::crc32c(&bytes[OFF_VERSION..]);
        PendingBatch {
            bytes,
            body_crc,
            record_count: records.len() as u32,
            max_timestamp: max_ts,
        }
    }
}

/// Encodes one batch in a single call (tests, tools); appends use [`PendingBatch::build`].
///
/// ```
/// use bytes::Bytes;
/// use sluice::log::batch::{decode, encode_batch, Compression, Record};
///
/// let record = Record { timestamp: 1_700_000_000_000, key: Some(Bytes::from("k")), value: Some(Bytes::from("v")), headers: vec![] };
/// let bytes = Bytes::from(encode_batch(42, &[record.clone()], Compression::Zstd));
/// let (header, records) = decode(&bytes).unwrap();
/// assert_eq!((header.base_offset, records), (42, vec![record]));
/// ```
pub fn encode_batch(base_offset: u64, records: &[Record], compression: Compression) -> Vec<u8> {
    let mut pending = PendingBatch::build(records, compression, None);
    pending.seal(base_offset);
    pending.bytes
}

/// Encodes records as a records frame: the body of a binary produce request. It is the
/// records section of a format-1 batch with absolute timestamps (see `docs/http-api.md`),
/// which has no null values: a null value or header value is written empty.
pub fn encode_records_frame(records: &[Record]) -> Vec<u8> {
    let mut out = Vec::with_capacity(records.iter().map(|r| r.value_bytes().len() + 16).sum());
    for record in records {
        encode_record(&mut out, record, 0, Nulls::Empty);
    }
    out
}

/// Decodes a records frame; keys and values are zero-copy slices of `frame`.
pub fn decode_records_frame(frame: &Bytes) -> Result<Vec<Record>, BatchError> {
    let mut records = Vec::new();
    parse_records(
        frame,
        0,
        None,
        Nulls::Empty,
        |record| -> Result<(), BatchError> {
            records.push(record.to_record(frame));
            Ok(())
        },
    )?;
    Ok(records)
}

/// How a records encoding writes a value or header value: format 2 keeps nulls (its lengths
/// are zigzag varints, -1 for null); format 1 and records frames have unsigned lengths, and
/// no null.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Nulls {
    Kept,
    Empty,
}

fn encode_record(out: &mut Vec<u8>, record: &Record, first_ts: i64, nulls: Nulls) {
    put_varint(out, zigzag(record.timestamp.wrapping_sub(first_ts)));
    match &record.key {
        None => put_varint(out, zigzag(-1)),
        Some(key) => {
            put_varint(out, zigzag(key.len() as i64));
            out.extend_from_slice(key);
        }
    }
    put_nullable(out, record.value.as_deref(), nulls);
    put_varint(out, record.headers.len() as u64);
    for header in &record.headers {
        put_varint(out, header.key.len() as u64);
        out.extend_from_slice(header.key.as_bytes());
        put_nullable(out, header.value.as_deref(), nulls);
    }
}

fn put_nullable(out: &mut Vec<u8>, bytes: Option<&[u8]>, nulls: Nulls) {
    match (bytes, nulls) {
        (None, Nulls::Kept) => put_varint(out, zigzag(-1)),
        (Some(bytes), Nulls::Kept) => {
            put_varint(out, zigzag(bytes.len() as i64));
            out.extend_from_slice(bytes);
        }
        (bytes, Nulls::Empty) => {
            let bytes = bytes.unwrap_or_default();
            put_varint(out, bytes.len() as u64);
            out.extend_from_slice(bytes);
        }
    }
}

fn get_nullable<'a>(cursor: &mut &'a [u8], nulls: Nulls) -> Result<Option<&'a [u8]>, BatchError> {
    let len = get_varint(cursor)?;
    match nulls {
        Nulls::Empty => Ok(Some(take(cursor, len)?)),
        Nulls::Kept => match unzigzag(len) {
            -1 => Ok(None),
            len if len >= 0 => Ok(Some(take(cursor, len as u64)?)),
            _ => Err(BatchError::Malformed("negative value length")),
        },
    }
}

/// The fixed fields of a batch, readable without touching the records.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BatchHeader {
    pub base_offset: u64,
    /// Total bytes of the batch, header included.
    pub total_len: usize,
    pub record_count: u32,
    pub first_timestamp: i64,
    pub max_timestamp: i64,
    pub compression: Compression,
    /// 1 or 2: how the rest of the header and the records are laid out.
    pub format_version: u8,
    /// The idempotent producer that wrote it (format 2 only).
    pub producer: Option<ProducerStamp>,
}

impl BatchHeader {
    /// The offset after this batch's last record.
    pub fn next_offset(&self) -> u64 {
        self.base_offset + u64::from(self.record_count)
    }

    fn header_len(&self) -> usize {
        match self.format_version {
            1 => HEADER_LEN_V1,
            _ => HEADER_LEN,
        }
    }

    fn nulls(&self) -> Nulls {
        match self.format_version {
            1 => Nulls::Empty,
            _ => Nulls::Kept,
        }
    }
}

/// Reads base offset and total length from the first [`PREFIX_LEN`] bytes.
pub fn read_prefix(bytes: &[u8]) -> Result<(u64, usize), BatchError> {
    if bytes.len() < PREFIX_LEN {
        return Err(BatchError::Truncated {
            needed: PREFIX_LEN,
            available: bytes.len(),
        });
    }
    let base = u64::from_le_bytes(bytes[0..8].try_into().expect("8 bytes"));
    let length = u32::from_le_bytes(bytes[8..12].try_into().expect("4 bytes")) as usize;
    let total = PREFIX_LEN + length;
    if !(HEADER_LEN_V1..=MAX_BATCH_LEN).contains(&total) {
        return Err(BatchError::BadLength(total));
    }
    Ok((base, total))
}

/// Records at or after `from` in whole batches (as a fetch returns them), from their headers
/// alone: no CRC check and no decoding, for counting what a fetch handed out. A truncated
/// or malformed tail ends the count.
pub fn count_records_from(data: &[u8], from: u64) -> u64 {
    let mut rest = data;
    let mut count = 0u64;
    while let Ok((base, total)) = read_prefix(rest) {
        if rest.len() < total || total < OFF_COUNT + 4 {
            break;
        }
        let records =
            u32::from_le_bytes(rest[OFF_COUNT..OFF_COUNT + 4].try_into().expect("4 bytes"));
        let next = base + u64::from(records);
        count += next.saturating_sub(base.max(from));
        rest = &rest[total..];
    }
    count
}

/// Checks the CRC and header of the batch at the start of `bytes` (which may continue with
/// more batches) and returns its header.
pub fn verify(bytes: &[u8]) -> Result<BatchHeader, BatchError> {
    let (base_offset, total_len) = read_prefix(bytes)?;
    if bytes.len() < total_len {
        return Err(BatchError::Truncated {
            needed: total_len,
            available: bytes.len(),
        });
    }
    let batch = &bytes[..total_len];
    let stored = u32::from_le_bytes(batch[OFF_CRC..OFF_CRC + 4].try_into().expect("4 bytes"));
    let computed =
        crc32c::crc32c_append(crc32c::crc32c(&batch[OFF_VERSION..]), &batch[..PREFIX_LEN]);
    if stored != computed {
        return Err(BatchError::Crc { stored, computed });
    }
    let format_version = batch[OFF_VERSION];
    let header_len = match format_version {
        1 => HEADER_LEN_V1,
        2 => HEADER_LEN,
        other => return Err(BatchError::Version(other)),
    };
    if total_len < header_len {
        return Err(BatchError::BadLength(total_len));
    }
    let compression = Compression::from_code(batch[OFF_COMPRESSION])
        .ok_or(BatchError::UnknownCompression(batch[OFF_COMPRESSION]))?;
    let le_u32 = |at: usize| u32::from_le_bytes(batch[at..at + 4].try_into().expect("4 bytes"));
    let le_i64 = |at: usize| i64::from_le_bytes(batch[at..at + 8].try_into().expect("8 bytes"));
    let record_count = le_u32(OFF_COUNT);
    if record_count == 0 {
        return Err(BatchError::Malformed("batch holds no records"));
    }
    let producer_id = match format_version {
        1 => -1,
        _ => le_i64(OFF_PRODUCER_ID),
    };
    let producer = (producer_id >= 0).then(|| ProducerStamp {
        id: producer_id,
        epoch: i16::from_le_bytes([batch[OFF_PRODUCER_EPOCH], batch[OFF_PRODUCER_EPOCH + 1]]),
        base_sequence: le_u32(OFF_BASE_SEQUENCE) as i32,
    });
    Ok(BatchHeader {
        base_offset,
        total_len,
        record_count,
        first_timestamp: le_i64(OFF_FIRST_TS),
        max_timestamp: le_i64(OFF_MAX_TS),
        compression,
        format_version,
        producer,
    })
}

/// Verifies and decodes the batch at the start of `bytes` into its records; keys, values and
/// header values are zero-copy slices of `bytes` (or of the decompressed records section).
pub fn decode(bytes: &Bytes) -> Result<(BatchHeader, Vec<Record>), BatchError> {
    let header = verify(bytes)?;
    let raw = match records_section(bytes, &header)? {
        Cow::Borrowed(section) => bytes.slice_ref(section),
        Cow::Owned(section) => Bytes::from(section),
    };
    let mut records = Vec::with_capacity(header.record_count as usize);
    parse_records(
        &raw,
        header.first_timestamp,
        Some(header.record_count),
        header.nulls(),
        |record| -> Result<(), BatchError> {
            records.push(record.to_record(&raw));
            Ok(())
        },
    )?;
    Ok((header, records))
}

/// The records section of a verified batch, decompressed if it is compressed.
fn records_section<'a>(bytes: &'a [u8], header: &BatchHeader) -> Result<Cow<'a, [u8]>, BatchError> {
    let raw_len =
        u32::from_le_bytes(bytes[OFF_RAW_LEN..OFF_RAW_LEN + 4].try_into().expect("4")) as usize;
    if raw_len > MAX_BATCH_LEN {
        return Err(BatchError::Malformed("uncompressed length out of range"));
    }
    let body = &bytes[header.header_len()..header.total_len];
    let raw = match header.compression {
        Compression::None => Cow::Borrowed(body),
        Compression::Zstd => Cow::Owned(
            zstd::bulk::decompress(body, raw_len)
                .map_err(|e| BatchError::Decompress(e.to_string()))?,
        ),
        Compression::Lz4 => Cow::Owned(
            lz4_flex::block::decompress(body, raw_len)
                .map_err(|e| BatchError::Decompress(e.to_string()))?,
        ),
    };
    if raw.len() != raw_len {
        return Err(BatchError::Malformed(
            "records section length differs from the header",
        ));
    }
    Ok(raw)
}

/// A record borrowed from a batch, as [`visit_all`] hands it over: a reader that copies
/// records elsewhere (the Parquet archive) allocates nothing per record.
#[derive(Debug, Clone, Copy)]
pub struct RecordView<'a> {
    pub timestamp: i64,
    pub key: Option<&'a [u8]>,
    pub value: Option<&'a [u8]>,
    /// Name (checked to be UTF-8) and value of each header, in order.
    pub headers: &'a [(&'a str, Option<&'a [u8]>)],
}

impl RecordView<'_> {
    /// The record as an owned [`Record`] whose fields are zero-copy slices of `whole`, the
    /// buffer this view borrows from.
    fn to_record(self, whole: &Bytes) -> Record {
        Record {
            timestamp: self.timestamp,
            key: self.key.map(|key| whole.slice_ref(key)),
            value: self.value.map(|value| whole.slice_ref(value)),
            headers: self
                .headers
                .iter()
                .map(|(name, value)| Header {
                    key: Cow::Owned((*name).to_string()),
                    value: value.map(|value| whole.slice_ref(value)),
                })
                .collect(),
        }
    }
}

/// Parses records from `raw` (a records section, or a records frame when `count` is None:
/// records up to its end), handing each to `visit`; `raw` must end with the last record.
fn parse_records<E: From<BatchError>>(
    raw: &[u8],
    first_ts: i64,
    count: Option<u32>,
    nulls: Nulls,
    mut visit: impl FnMut(&RecordView<'_>) -> Result<(), E>,
) -> Result<(), E> {
    let mut cursor = raw;
    // One list reused for every record's headers.
    let mut headers: Vec<(&str, Option<&[u8]>)> = Vec::new();
    let mut parsed = 0;
    while count.map_or(!cursor.is_empty(), |count| parsed < count) {
        parsed += 1;
        let timestamp = first_ts.wrapping_add(unzigzag(get_varint(&mut cursor)?));
        let key = match unzigzag(get_varint(&mut cursor)?) {
            -1 => None,
            len if len >= 0 => Some(take(&mut cursor, len as u64)?),
            _ => return Err(BatchError::Malformed("negative key length").into()),
        };
        let value = get_nullable(&mut cursor, nulls)?;
        let header_count = get_varint(&mut cursor)?;
        if header_count > cursor.len() as u64 {
            return Err(BatchError::Malformed("header count exceeds the batch").into());
        }
        headers.clear();
        for _ in 0..header_count {
            let name_len = get_varint(&mut cursor)?;
            let name = std::str::from_utf8(take(&mut cursor, name_len)?)
                .map_err(|_| BatchError::Malformed("header name is not UTF-8"))?;
            headers.push((name, get_nullable(&mut cursor, nulls)?));
        }
        visit(&RecordView {
            timestamp,
            key,
            value,
            headers: &headers,
        })?;
    }
    if !cursor.is_empty() {
        return Err(BatchError::Malformed("bytes left after the last record").into());
    }
    Ok(())
}

/// Iterates over consecutive batches (as a fetch returns them), decoding each.
pub struct Batches {
    rest: Bytes,
}

impl Batches {
    pub fn new(data: Bytes) -> Batches {
        Batches { rest: data }
    }
}

impl Iterator for Batches {
    type Item = Result<(BatchHeader, Vec<Record>), BatchError>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.rest.is_empty() {
            return None;
        }
        let decoded = decode(&self.rest);
        match &decoded {
            Ok((header, _)) => self.rest = self.rest.slice(header.total_len..),
            Err(_) => self.rest = Bytes::new(),
        }
        Some(decoded)
    }
}

/// Decodes consecutive batches into `(offset, record)` pairs, skipping records before `from`.
pub fn decode_all(data: &Bytes, from: u64) -> Result<Vec<(u64, Record)>, BatchError> {
    let mut out = Vec::new();
    for batch in Batches::new(data.clone()) {
        let (header, records) = batch?;
        let offsets = header.base_offset..header.next_offset();
        out.extend(offsets.zip(records).filter(|(offset, _)| *offset >= from));
    }
    Ok(out)
}

/// Verifies consecutive batches and hands each record at `from` or after to `visit` with its
/// offset, borrowed: nothing is allocated per record.
pub fn visit_all<E: From<BatchError>>(
    data: &[u8],
    from: u64,
    mut visit: impl FnMut(u64, &RecordView<'_>) -> Result<(), E>,
) -> Result<(), E> {
    visit_batches(data, |event| match event {
        Visit::Record(offset, record) if offset >= from => visit(offset, record),
        _ => Ok(()),
    })
}

/// What [`visit_batches`] hands over: a batch's header, then each of its records.
pub enum Visit<'a, 'b> {
    Batch(&'a BatchHeader),
    Record(u64, &'a RecordView<'b>),
}

/// Verifies consecutive batches and hands `visit` each one's header and then each of its
/// records with its offset, borrowed: nothing is allocated per record. The Kafka door writes
/// Kafka batches straight from these.
pub fn visit_batches<E: From<BatchError>>(
    data: &[u8],
    mut visit: impl FnMut(Visit<'_, '_>) -> Result<(), E>,
) -> Result<(), E> {
    let mut rest = data;
    while !rest.is_empty() {
        let header = verify(rest)?;
        visit(Visit::Batch(&header))?;
        let raw = records_section(rest, &header)?;
        let mut offset = header.base_offset;
        parse_records(
            &raw,
            header.first_timestamp,
            Some(header.record_count),
            header.nulls(),
            |record| {
                offset += 1;
                visit(Visit::Record(offset - 1, record))
            },
        )?;
        rest = &rest[header.total_len..];
    }
    Ok(())
}

/// Splits `len` bytes off the front of `cursor`.
fn take<'a>(cursor: &mut &'a [u8], len: u64) -> Result<&'a [u8], BatchError> {
    if len > cursor.len() as u64 {
        return Err(BatchError::Malformed("field length exceeds the batch"));
    }
    let (field, rest) = cursor.split_at(len as usize);
    *cursor = rest;
    Ok(field)
}

pub(crate) fn put_varint(out: &mut Vec<u8>, mut value: u64) {
    while value >= 0x80 {
        out.push((value as u8) | 0x80);
        value >>= 7;
    }
    out.push(value as u8);
}

pub(crate) fn get_varint(cursor: &mut impl Buf) -> Result<u64, BatchError> {
    let mut value = 0u64;
    for shift in (0..64).step_by(7) {
        if !cursor.has_remaining() {
            return Err(BatchError::Malformed("varint runs past the end"));
        }
        let byte = cursor.get_u8();
        value |= u64::from(byte & 0x7f) << shift;
        if byte & 0x80 == 0 {
            return Ok(value);
        }
    }
    Err(BatchError::Malformed("varint longer than 10 bytes"))
}

pub(crate) fn zigzag(value: i64) -> u64 {
    ((value << 1) ^ (value >> 63)) as u64
}

pub(crate) fn unzigzag(value: u64) -> i64 {
    ((value >> 1) as i64) ^ -((value & 1) as i64)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// Any record, null values and null header values included.
    fn arb_record() -> impl Strategy<Value = Record> {
        let bytes = |max| proptest::collection::vec(any::<u8>(), 0..max);
        (
            any::<i64>(),
            proptest::option::of(bytes(40)),
            proptest::option::of(bytes(200)),
            proptest::collection::vec(("[a-z]{0,8}", proptest::option::of(bytes(16))), 0..3),
        )
            .prop_map(|(timestamp, key, value, headers)| Record {
                timestamp,
                key: key.map(Bytes::from),
                value: value.map(Bytes::from),
                headers: headers
                    .into_iter()
                    .map(|(key, value)| Header {
                        key: key.into(),
                        value: value.map(Bytes::from),
                    })
                    .collect(),
            })
    }

    /// What a records frame keeps of a record: nulls become empty.
    fn without_nulls(mut record: Record) -> Record {
        record.value.get_or_insert_with(Bytes::new);
        for header in &mut record.headers {
            header.value.get_or_insert_with(Bytes::new);
        }
        record
    }

    fn arb_compression() -> impl Strategy<Value = Compression> {
        prop_oneof![
            Just(Compression::None),
            Just(Compression::Zstd),
            Just(Compression::Lz4)
        ]
    }

    proptest! {
        #[test]
        fn round_trip(base in 0u64..u64::MAX / 2, records in proptest::collection::vec(arb_record(), 1..20), compression in arb_compression(), producer in proptest::option::of((0i64..i64::MAX, any::<i16>(), any::<i32>()))) {
            let producer = producer.map(|(id, epoch, base_sequence)| ProducerStamp { id, epoch, base_sequence });
            let mut pending = PendingBatch::build(&records, compression, producer);
            let bytes = Bytes::copy_from_slice(pending.seal(base));
            let (header, decoded) = decode(&bytes).unwrap();
            prop_assert_eq!(header.producer, producer);
            prop_assert_eq!(header.format_version, FORMAT_VERSION);
            prop_assert_eq!(header.base_offset, base);
            prop_assert_eq!(header.total_len, bytes.len());
            prop_assert_eq!(header.record_count as usize, records.len());
            prop_assert_eq!(header.max_timestamp, records.iter().map(|r| r.timestamp).max().unwrap());
            prop_assert_eq!(decoded, records);
        }

        #[test]
        fn any_flipped_bit_is_detected(records in proptest::collection::vec(arb_record(), 1..5), compression in arb_compression(), bit in any::<proptest::sample::Index>()) {
            let mut bytes = encode_batch(7, &records, compression);
            let bit = bit.index(bytes.len() * 8);
            bytes[bit / 8] ^= 1 << (bit % 8);
            prop_assert!(decode(&Bytes::from(bytes)).is_err());
        }

        /// Counting from the headers agrees with decoding, from any offset, including a
        /// truncated last batch (not counted, as a fetch would not hand it out).
        #[test]
        fn counting_from_headers_agrees_with_decoding(batches in proptest::collection::vec(proptest::collection::vec(arb_record(), 1..6), 1..5), from in 0u64..40, cut in 1usize..HEADER_LEN) {
            let mut data = Vec::new();
            let mut base = 0u64;
            for records in &batches {
                data.extend_from_slice(&encode_batch(base, records, Compression::None));
                base += records.len() as u64;
            }
            let whole = Bytes::from(data.clone());
            prop_assert_eq!(count_records_from(&whole, from) as usize, decode_all(&whole, from).unwrap().len());
            let last = batches.last().unwrap().len() as u64;
            // Less than a header: only the last batch is cut.
            data.truncate(data.len() - cut);
            let fewer = base - last;
            prop_assert_eq!(count_records_from(&data, from), fewer.saturating_sub(from));
        }

        #[test]
        fn records_frames_round_trip(records in proptest::collection::vec(arb_record(), 0..20)) {
            let frame = Bytes::from(encode_records_frame(&records));
            let expected: Vec<Record> = records.into_iter().map(without_nulls).collect();
            prop_assert_eq!(decode_records_frame(&frame).unwrap(), expected);
        }

        /// Untrusted input (a produce body, a plugin's `send-frame`, a fetched or stored
        /// batch) of any bytes is an error or records, never a panic or a huge allocation.
        #[test]
        fn arbitrary_bytes_never_panic_a_decoder(bytes in proptest::collection::vec(any::<u8>(), 0..2048)) {
            let bytes = Bytes::from(bytes);
            let _ = decode_records_frame(&bytes);
            let _ = decode(&bytes);
            let _ = verify(&bytes);
            let _ = decode_all(&bytes, 0);
            for decoded in Batches::new(bytes.clone()) {
                if decoded.is_err() {
                    break;
                }
            }
        }

        /// A valid batch with bytes flipped or cut anywhere after its header is an error,
        /// never a panic.
        #[test]
        fn damaged_frames_never_panic(records in proptest::collection::vec(arb_record(), 1..5), cut in any::<proptest::sample::Index>(), noise in proptest::collection::vec(any::<u8>(), 0..64)) {
            let frame = encode_records_frame(&records);
            let at = cut.index(frame.len() + 1);
            let mut damaged = frame[..at].to_vec();
            damaged.extend_from_slice(&noise);
            let _ = decode_records_frame(&Bytes::from(damaged));
        }

        #[test]
        fn varint_round_trip(value in any::<i64>()) {
            let mut out = Vec::new();
            put_varint(&mut out, zigzag(value));
            let mut cursor = Bytes::from(out);
            prop_assert_eq!(unzigzag(get_varint(&mut cursor).unwrap()), value);
        }
    }

    #[test]
    fn truncated_batches_are_reported_not_panicked() {
        let record = Record {
            timestamp: 5,
            key: None,
            value: Some(Bytes::from_static(b"hello")),
            headers: vec![],
        };
        let bytes = encode_batch(0, &[record], Compression::None);
        for cut in 0..bytes.len() {
            assert!(
                decode(&Bytes::copy_from_slice(&bytes[..cut])).is_err(),
                "cut at {cut}"
            );
        }
    }

    /// A batch written by format 1 (no producer fields, unsigned value lengths), byte for
    /// byte as that version wrote it, still reads.
    #[test]
    fn format_1_batches_still_read() {
        let mut body = Vec::new();
        put_varint(&mut body, zigzag(3)); // timestamp delta
        put_varint(&mut body, zigzag(1)); // key length
        body.push(b'k');
        put_varint(&mut body, 2); // value length
        body.extend_from_slice(b"vv");
        put_varint(&mut body, 1); // header count
        put_varint(&mut body, 1);
        body.push(b'h');
        put_varint(&mut body, 1);
        body.push(b'x');
        let mut bytes = vec![0u8; HEADER_LEN_V1];
        bytes[0..8].copy_from_slice(&9u64.to_le_bytes());
        let length = (HEADER_LEN_V1 + body.len() - PREFIX_LEN) as u32;
        bytes[8..12].copy_from_slice(&length.to_le_bytes());
        bytes[OFF_VERSION] = 1;
        bytes[OFF_COUNT..OFF_COUNT + 4].copy_from_slice(&1u32.to_le_bytes());
        bytes[OFF_FIRST_TS..OFF_FIRST_TS + 8].copy_from_slice(&100i64.to_le_bytes());
        bytes[OFF_MAX_TS..OFF_MAX_TS + 8].copy_from_slice(&103i64.to_le_bytes());
        bytes[OFF_RAW_LEN..OFF_RAW_LEN + 4].copy_from_slice(&(body.len() as u32).to_le_bytes());
        bytes.extend_from_slice(&body);
        let crc =
            crc32c::crc32c_append(crc32c::crc32c(&bytes[OFF_VERSION..]), &bytes[..PREFIX_LEN]);
        bytes[OFF_CRC..OFF_CRC + 4].copy_from_slice(&crc.to_le_bytes());
        let (header, records) = decode(&Bytes::from(bytes)).unwrap();
        assert_eq!(
            (header.base_offset, header.format_version, header.producer),
            (9, 1, None)
        );
        assert_eq!(
            records,
            vec![Record {
                timestamp: 103,
                key: Some(Bytes::from_static(b"k")),
                value: Some(Bytes::from_static(b"vv")),
                headers: vec![Header::new("h", Bytes::from_static(b"x"))],
            }]
        );
    }
}
