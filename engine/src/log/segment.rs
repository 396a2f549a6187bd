//! One segment: a `.log` file of consecutive batches plus its in-memory index.
//!
//! The segment owns reading batches back (with CRC checks and read-ahead), scanning a file
//! to rebuild its index or find a torn tail, and sealing (writing the index files). Appends
//! are driven by the partition, which serialises writers.

use parking_lot::RwLock;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

use super::LogError;
use super::batch::{self, BatchError, BatchHeader, ProducerStamp};
use super::fs::{Fs, FsFile};
use super::index::SegmentIndex;

/// Read-ahead size when walking batches.
const READ_CHUNK: usize = 256 * 1024;

pub struct Segment {
    pub base_offset: u64,
    log_path: PathBuf,
    fs: Fs,
    file: FsFile,
    index: RwLock<SegmentIndex>,
    /// Bytes of whole, valid batches in the file.
    len: AtomicU64,
    /// Bytes of the file known to be durable (the last fsync covered them): a sync with
    /// nothing new is skipped, so stopping an engine with many idle partitions is quick.
    synced_len: AtomicU64,
    /// The file length the index files on disk describe (`u64::MAX`: unknown): the index is
    /// written again only when it describes more.
    index_written_len: AtomicU64,
    sealed: AtomicBool,
    /// Offset after the last record, or for a sealed segment whose tail could not be indexed,
    /// the offset where readable data ends.
    next_offset: AtomicU64,
    /// File position of a batch that failed its CRC while the index was rebuilt.
    corrupt_at: Option<(u64, BatchError)>,
    /// Tests set this to make the next fsync fail: a fault that cannot be caused for real.
    #[cfg(test)]
    pub(super) fail_next_sync: AtomicBool,
}

impl Drop for Segment {
    fn drop(&mut self) {
        super::open_files::segment_closed();
    }
}

/// What a scan of a segment file found.
pub struct ScanOutcome {
    pub index: SegmentIndex,
    pub next_offset: u64,
    /// Where valid data ends, and why, if the file holds more bytes after it.
    pub stopped: Option<(u64, BatchError)>,
}

pub fn file_name(base_offset: u64, extension: &str) -> String {
    format!("{base_offset:020}.{extension}")
}

impl Segment {
    /// Creates an empty segment file (failing if it exists).
    pub fn create(fs: Fs, dir: &Path, base_offset: u64) -> Result<Segment, LogError> {
        let log_path = dir.join(file_name(base_offset, "log"));
        let file = fs
            .create_new(&log_path)
            .map_err(|e| LogError::io(&log_path, e))?;
        Ok(Segment::assemble(fs, log_path, file, base_offset, false))
    }

    fn assemble(
        fs: Fs,
        log_path: PathBuf,
        file: FsFile,
        base_offset: u64,
        sealed: bool,
    ) -> Segment {
        super::open_files::segment_opened();
        Segment {
            base_offset,
            log_path,
            fs,
            file,
            index: RwLock::new(SegmentIndex::new(base_offset)),
            len: AtomicU64::new(0),
            synced_len: AtomicU64::new(0),
            index_written_len: AtomicU64::new(u64::MAX),
            sealed: AtomicBool::new(sealed),
            next_offset: AtomicU64::new(base_offset),
            corrupt_at: None,
            #[cfg(test)]
            fail_next_sync: AtomicBool::new(false),
        }
    }

    /// Opens an existing segment. A sealed segment trusts its index files when they match the
    /// file, and is scanned otherwise; the active (last) segment is always checked to its end
    /// and a torn or corrupt tail is cut off.
    pub fn open(
        fs: Fs,
        dir: &Path,
        base_offset: u64,
        sealed: bool,
        index_interval: u64,
    ) -> Result<Segment, LogError> {
        let log_path = dir.join(file_name(base_offset, "log"));
        let file = fs.open(&log_path).map_err(|e| LogError::io(&log_path, e))?;
        let file_len = file.size().map_err(|e| LogError::io(&log_path, e))?;
        let (offset_path, time_path) = index_paths(dir, base_offset);
        let trusted = SegmentIndex::read_files(&fs, &offset_path, &time_path, file_len);
        let trusted_len = trusted.as_ref().map(|index| index.log_len);
        let mut segment = Segment::assemble(fs, log_path, file, base_offset, sealed);
        let rebuilt = trusted.is_none();
        let outcome = match trusted {
            Some(index) if sealed => ScanOutcome {
                next_offset: index.next_offset,
                index,
                stopped: None,
            },
            Some(index) => {
                // A clean shutdown left a matching index: check only from the last entry on.
                let (offset, position) = index.offsets.last().copied().unwrap_or((base_offset, 0));
                segment.scan(position, offset, index, index_interval, file_len)
            }
            None => {
                if file_len > 0 {
                    tracing::info!(file = %segment.log_path.display(), "rebuilding segment index");
                }
                segment.scan(
                    0,
                    base_offset,
                    SegmentIndex::new(base_offset),
                    index_interval,
                    file_len,
                )
            }
        };
        let mut valid_len = outcome.index.log_len;
        if let Some((position, reason)) = outcome.stopped {
            if sealed {
                tracing::error!(file = %segment.log_path.display(), position, %reason,
                    "sealed segment is damaged; reads reaching this position will fail");
                segment.corrupt_at = Some((position, reason));
                valid_len = file_len;
            } else {
                tracing::warn!(file = %segment.log_path.display(), position, cut_bytes = file_len - position,
                    first_lost_offset = outcome.next_offset, %reason,
                    "truncating torn or corrupt tail of the active segment");
                segment
                    .file
                    .set_len(position)
                    .map_err(|e| LogError::io(&segment.log_path, e))?;
                segment
                    .file
                    .sync_all()
                    .map_err(|e| LogError::io(&segment.log_path, e))?;
            }
        } else if sealed && rebuilt {
            outcome
                .index
                .write_files(&segment.fs, &offset_path, &time_path)
                .map_err(|e| LogError::io(&offset_path, e))?;
            segment
                .index_written_len
                .store(outcome.index.log_len, Ordering::Release);
        } else if trusted_len == Some(outcome.index.log_len) {
            segment
                .index_written_len
                .store(outcome.index.log_len, Ordering::Release);
        }
        segment.len.store(valid_len, Ordering::Release);
        // Recovery starts with a syncfs of the data directory (Log::open): what is in the
        // file now is durable.
        segment.synced_len.store(valid_len, Ordering::Release);
        segment
            .next_offset
            .store(outcome.next_offset, Ordering::Release);
        *segment.index.get_mut() = outcome.index;
        Ok(segment)
    }

    /// Walks batches from `position` (holding `offset`), extending `index`, until the end of
    /// the file or the first batch that is torn, corrupt or out of sequence.
    fn scan(
        &self,
        position: u64,
        offset: u64,
        mut index: SegmentIndex,
        interval: u64,
        file_len: u64,
    ) -> ScanOutcome {
        // Entries from `position` on are re-derived by the walk.
        index.max_timestamp = index
            .times
            .iter()
            .find(|&&(_, o)| o == offset)
            .map_or(i64::MIN, |&(t, _)| t);
        index.offsets.retain(|&(_, p)| p < position);
        index.times.retain(|&(_, o)| o < offset);
        index.log_len = position;
        index.next_offset = offset;
        let mut reader = BatchReader::new(&self.file, position, file_len);
        let mut next = offset;
        let stopped = loop {
            match reader.next_batch() {
                Ok(None) => break None,
                Ok(Some((pos, header, _))) if header.base_offset != next => {
                    break Some((
                        pos,
                        BatchError::Malformed("batch base offset is out of sequence"),
                    ));
                }
                Ok(Some((pos, header, _))) => {
                    index_batch(&mut index, pos, &header, interval);
                    next = header.next_offset();
                }
                Err(stop) => break Some(stop),
            }
        };
        ScanOutcome {
            index,
            next_offset: next,
            stopped,
        }
    }

    fn corrupt(&self, position: u64, offset: u64, source: BatchError) -> LogError {
        LogError::Corrupt {
            path: self.log_path.clone(),
            position,
            offset,
            source,
        }
    }

    pub fn path(&self) -> &Path {
        &self.log_path
    }

    pub fn size(&self) -> u64 {
        self.len.load(Ordering::Acquire)
    }

    pub fn next_offset(&self) -> u64 {
        self.next_offset.load(Ordering::Acquire)
    }

    pub fn max_timestamp(&self) -> i64 {
        self.index.read().max_timestamp
    }

    pub fn is_sealed(&self) -> bool {
        self.sealed.load(Ordering::Acquire)
    }

    /// Writes a sealed batch at the current end. On failure the file is cut back so no partial
    /// batch stays behind.
    pub fn append(&self, bytes: &[u8], header: &BatchHeader, interval: u64) -> std::io::Result<()> {
        let position = self.size();
        if let Err(error) = self.file.write_all_at(bytes, position) {
            let _ = self.file.set_len(position);
            return Err(error);
        }
        index_batch(&mut self.index.write(), position, header, interval);
        self.len
            .store(position + bytes.len() as u64, Ordering::Release);
        self.next_offset
            .store(header.next_offset(), Ordering::Release);
        Ok(())
    }

    /// Fsyncs the data and writes the index files; the segment takes no more appends.
    pub fn seal(&self) -> Result<(), LogError> {
        self.sync()?;
        self.write_index()?;
        self.sealed.store(true, Ordering::Release);
        Ok(())
    }

    /// Writes the index files, unless those on disk already describe the whole file (or the
    /// file is empty: recovery indexes nothing in no time).
    pub fn write_index(&self) -> Result<(), LogError> {
        let dir = self
            .log_path
            .parent()
            .expect("segment files live in a directory");
        let (offset_path, time_path) = index_paths(dir, self.base_offset);
        let index = self.index.read();
        let described = index.log_len;
        if described == 0 || described == self.index_written_len.load(Ordering::Acquire) {
            return Ok(());
        }
        index
            .write_files(&self.fs, &offset_path, &time_path)
            .map_err(|e| LogError::io(&offset_path, e))?;
        self.index_written_len.store(described, Ordering::Release);
        Ok(())
    }

    pub fn sync(&self) -> Result<(), LogError> {
        #[cfg(test)]
        if self.fail_next_sync.swap(false, Ordering::SeqCst) {
            return Err(LogError::io(
                &self.log_path,
                std::io::Error::from_raw_os_error(libc::EIO),
            ));
        }
        let len = self.len.load(Ordering::Acquire);
        if len == self.synced_len.load(Ordering::Acquire) {
            return Ok(());
        }
        self.file
            .sync_data()
            .map_err(|e| LogError::io(&self.log_path, e))?;
        self.synced_len.fetch_max(len, Ordering::AcqRel);
        Ok(())
    }

    /// Appends to `out` the raw batches holding offsets from `offset` up to (not including)
    /// `until`, stopping once `out` reaches `max_bytes` (at least one batch is returned).
    /// Returns the offset after the last record appended.
    pub fn read(
        &self,
        offset: u64,
        until: u64,
        max_bytes: usize,
        out: &mut Vec<u8>,
    ) -> Result<u64, LogError> {
        let start = self.index.read().position_for(offset);
        let end = self.size();
        let mut reader = BatchReader::new(&self.file, start, end);
        let mut next = offset;
        loop {
            if let Some((position, reason)) = &self.corrupt_at
                && reader.position() >= *position
            {
                return Err(self.corrupt(*position, next, reason.clone()));
            }
            let Some((_, header, bytes)) = reader
                .next_batch()
                .map_err(|(p, e)| self.corrupt(p, next, e))?
            else {
                break;
            };
            if header.base_offset >= until {
                break;
            }
            if header.next_offset() <= offset {
                continue;
            }
            if !out.is_empty() && out.len() + bytes.len() > max_bytes {
                break;
            }
            out.extend_from_slice(bytes);
            next = header.next_offset();
            if out.len() >= max_bytes {
                break;
            }
        }
        Ok(next)
    }

    /// The batches written by idempotent producers in about the last `tail_bytes` of the
    /// segment (from the first indexed batch in that stretch), oldest first: the stamp, base
    /// offset and record count of each. Returns the bytes it scanned.
    pub fn stamped_batches(
        &self,
        tail_bytes: u64,
        out: &mut Vec<(ProducerStamp, u64, u32)>,
    ) -> Result<u64, LogError> {
        let end = self.size();
        let from = end.saturating_sub(tail_bytes);
        let start = match from {
            0 => 0,
            _ => {
                let index = self.index.read();
                let at = index
                    .offsets
                    .partition_point(|&(_, position)| position < from);
                index.offsets.get(at).map_or(end, |&(_, position)| position)
            }
        };
        let mut reader = BatchReader::new(&self.file, start, end);
        while let Some((_, header, _)) = reader
            .next_batch()
            .map_err(|(p, e)| self.corrupt(p, self.base_offset, e))?
        {
            if let Some(stamp) = header.producer {
                out.push((stamp, header.base_offset, header.record_count));
            }
        }
        Ok(end - start)
    }

    /// The first offset at or after `offset` whose record timestamp is >= `timestamp`, if this
    /// segment holds one.
    pub fn find_timestamp(&self, timestamp: i64) -> Result<Option<u64>, LogError> {
        let (start, end) = {
            let index = self.index.read();
            if index.max_timestamp < timestamp {
                return Ok(None);
            }
            let offset = index.offset_for_time(timestamp, self.base_offset);
            (index.position_for(offset), self.size())
        };
        let mut reader = BatchReader::new(&self.file, start, end);
        while let Some((_, header, bytes)) = reader
            .next_batch()
            .map_err(|(p, e)| self.corrupt(p, start, e))?
        {
            if header.max_timestamp < timestamp {
                continue;
            }
            let owned = bytes::Bytes::copy_from_slice(bytes);
            let (_, records) = batch::decode(&owned)
                .map_err(|e| self.corrupt(reader.position(), header.base_offset, e))?;
            if let Some(i) = records.iter().position(|r| r.timestamp >= timestamp) {
                return Ok(Some(header.base_offset + i as u64));
            }
        }
        Ok(None)
    }

    /// Deletes the segment's files.
    pub fn remove_files(&self) -> std::io::Result<()> {
        let dir = self
            .log_path
            .parent()
            .expect("segment files live in a directory");
        let (offset_path, time_path) = index_paths(dir, self.base_offset);
        for path in [&offset_path, &time_path] {
            match self.fs.remove_file(path) {
                Err(e) if e.kind() != std::io::ErrorKind::NotFound => return Err(e),
                _ => {}
            }
        }
        self.fs.remove_file(&self.log_path)
    }
}

fn index_paths(dir: &Path, base_offset: u64) -> (PathBuf, PathBuf) {
    (
        dir.join(file_name(base_offset, "index")),
        dir.join(file_name(base_offset, "timeindex")),
    )
}

/// Adds a batch to the sparse index when it starts at least `interval` bytes after the last
/// entry (the first batch is always indexed).
fn index_batch(index: &mut SegmentIndex, position: u64, header: &BatchHeader, interval: u64) {
    let due = index
        .offsets
        .last()
        .is_none_or(|&(_, last)| position - last >= interval);
    if due {
        index.offsets.push((header.base_offset, position));
        index.times.push((index.max_timestamp, header.base_offset));
    }
    index.max_timestamp = index.max_timestamp.max(header.max_timestamp);
    index.log_len = position + header.total_len as u64;
    index.next_offset = header.next_offset();
}

/// Walks CRC-checked batches of a file from a position, reading ahead in chunks.
pub struct BatchReader<'a> {
    file: &'a FsFile,
    position: u64,
    end: u64,
    buffer: Vec<u8>,
    buffer_start: u64,
}

impl<'a> BatchReader<'a> {
    pub fn new(file: &'a FsFile, position: u64, end: u64) -> Self {
        BatchReader {
            file,
            position,
            end,
            buffer: Vec::new(),
            buffer_start: position,
        }
    }

    pub fn position(&self) -> u64 {
        self.position
    }

    /// Makes `[position, position + need)` available in the buffer.
    fn fill(&mut self, need: usize) -> Result<&[u8], (u64, BatchError)> {
        let have_from = self.position.saturating_sub(self.buffer_start) as usize;
        let buffered_end = self.buffer_start + self.buffer.len() as u64;
        if self.position < self.buffer_start || self.position + need as u64 > buffered_end {
            let available = (self.end - self.position) as usize;
            let want = need.max(READ_CHUNK).min(available);
            self.buffer.resize(want, 0);
            let read = read_fully(self.file, &mut self.buffer, self.position).map_err(|e| {
                (
                    self.position,
                    BatchError::Decompress(format!("read failed: {e}")),
                )
            })?;
            self.buffer.truncate(read);
            self.buffer_start = self.position;
            if read < need {
                return Err((
                    self.position,
                    BatchError::Truncated {
                        needed: need,
                        available: read,
                    },
                ));
            }
            return Ok(&self.buffer[..need]);
        }
        Ok(&self.buffer[have_from..have_from + need])
    }

    /// The next batch (its file position, header and bytes), `None` at the end, or the position
    /// and reason of the first bad batch.
    #[allow(clippy::type_complexity)]
    pub fn next_batch(&mut self) -> Result<Option<(u64, BatchHeader, &[u8])>, (u64, BatchError)> {
        if self.position >= self.end {
            return Ok(None);
        }
        let position = self.position;
        let (_, total) =
            batch::read_prefix(self.fill(batch::PREFIX_LEN)?).map_err(|e| (position, e))?;
        let bytes = self.fill(total)?;
        let header = batch::verify(bytes).map_err(|e| (position, e))?;
        self.position += total as u64;
        let from = (position - self.buffer_start) as usize;
        Ok(Some((position, header, &self.buffer[from..from + total])))
    }
}

fn read_fully(file: &FsFile, buffer: &mut [u8], position: u64) -> std::io::Result<usize> {
    let mut read = 0;
    while read < buffer.len() {
        match file.read_at(&mut buffer[read..], position + read as u64) {
            Ok(0) => break,
            Ok(n) => read += n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(read)
}
