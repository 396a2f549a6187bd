//! Sparse per-segment indexes: offset -> file position, and timestamp -> offset.
//!
//! Both live in memory while the engine runs and are written as files (`.index`, `.timeindex`)
//! when a segment is sealed or the engine shuts down cleanly. An index file carries the length
//! of the log file it describes and a CRC; one that is missing, damaged or describes a
//! different length is rebuilt by scanning the segment. The format is in
//! `docs/storage-format.md`.

use std::path::Path;

use super::fs::Fs;

const MAGIC: &[u8; 8] = b"SLCIDX01";
const HEADER_LEN: usize = 16;
const ENTRY_LEN: usize = 16;
const FOOTER_LEN: usize = 36;

/// Which of the two index files a file holds; stored in its header so they cannot be swapped.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum IndexKind {
    Offset = 1,
    Time = 2,
}

/// The in-memory index of one segment.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SegmentIndex {
    /// (offset of a batch's first record, file position of the batch), ascending.
    pub offsets: Vec<(u64, u64)>,
    /// (largest timestamp of every record before the batch, offset of the batch's first
    /// record), ascending in both. A reader looking for timestamp T may start at the last
    /// entry whose timestamp is below T: nothing before it can be at or after T.
    pub times: Vec<(i64, u64)>,
    /// Largest record timestamp in the segment, `i64::MIN` when empty.
    pub max_timestamp: i64,
    /// Log bytes these entries describe.
    pub log_len: u64,
    /// The offset after the last record in those bytes.
    pub next_offset: u64,
}

impl SegmentIndex {
    pub fn new(base_offset: u64) -> Self {
        SegmentIndex {
            max_timestamp: i64::MIN,
            next_offset: base_offset,
            ..Default::default()
        }
    }

    /// File position of the batch holding `offset` or the last indexed batch before it.
    pub fn position_for(&self, offset: u64) -> u64 {
        match self.offsets.partition_point(|&(o, _)| o <= offset) {
            0 => 0,
            n => self.offsets[n - 1].1,
        }
    }

    /// An offset from which a scan finds the first record with timestamp >= `timestamp`.
    pub fn offset_for_time(&self, timestamp: i64, segment_base: u64) -> u64 {
        match self.times.partition_point(|&(t, _)| t < timestamp) {
            0 => segment_base,
            n => self.times[n - 1].1,
        }
    }

    /// Writes both index files for a segment and fsyncs them.
    pub fn write_files(
        &self,
        fs: &Fs,
        offset_path: &Path,
        time_path: &Path,
    ) -> std::io::Result<()> {
        let offsets: Vec<(u64, u64)> = self.offsets.clone();
        write_file(fs, offset_path, IndexKind::Offset, &offsets, self)?;
        let times: Vec<(u64, u64)> = self.times.iter().map(|&(t, o)| (t as u64, o)).collect();
        write_file(fs, time_path, IndexKind::Time, &times, self)
    }

    /// Loads both index files; `None` when either is missing, damaged, or describes a log of
    /// another length than `log_len`.
    pub fn read_files(fs: &Fs, offset_path: &Path, time_path: &Path, log_len: u64) -> Option<Self> {
        let (offsets, footer) = read_file(fs, offset_path, IndexKind::Offset)?;
        let (times, time_footer) = read_file(fs, time_path, IndexKind::Time)?;
        if footer != time_footer || footer.log_len != log_len {
            return None;
        }
        Some(SegmentIndex {
            offsets,
            times: times.into_iter().map(|(t, o)| (t as i64, o)).collect(),
            max_timestamp: footer.max_timestamp,
            log_len,
            next_offset: footer.next_offset,
        })
    }
}

fn write_file(
    fs: &Fs,
    path: &Path,
    kind: IndexKind,
    entries: &[(u64, u64)],
    index: &SegmentIndex,
) -> std::io::Result<()> {
    let mut bytes = Vec::with_capacity(HEADER_LEN + entries.len() * ENTRY_LEN + FOOTER_LEN);
    bytes.extend_from_slice(MAGIC);
    bytes.extend_from_slice(&(kind as u32).to_le_bytes());
    bytes.extend_from_slice(&(ENTRY_LEN as u32).to_le_bytes());
    for &(a, b) in entries {
        bytes.extend_from_slice(&a.to_le_bytes());
        bytes.extend_from_slice(&b.to_le_bytes());
    }
    bytes.extend_from_slice(&(entries.len() as u64).to_le_bytes());
    bytes.extend_from_slice(&index.log_len.to_le_bytes());
    bytes.extend_from_slice(&index.max_timestamp.to_le_bytes());
    bytes.extend_from_slice(&index.next_offset.to_le_bytes());
    let crc = crc32c::crc32c(&bytes);
    bytes.extend_from_slice(&crc.to_le_bytes());
    let tmp = path.with_extension("tmp");
    let file = fs.create(&tmp)?;
    file.write_all_at(&bytes, 0)?;
    file.sync_data()?;
    fs.rename(&tmp, path)
}

#[derive(PartialEq, Eq)]
struct Footer {
    log_len: u64,
    max_timestamp: i64,
    next_offset: u64,
}

fn read_file(fs: &Fs, path: &Path, kind: IndexKind) -> Option<(Vec<(u64, u64)>, Footer)> {
    let bytes = fs.read(path).ok()?;
    if bytes.len() < HEADER_LEN + FOOTER_LEN || &bytes[0..8] != MAGIC {
        return None;
    }
    let (body, crc) = bytes.split_at(bytes.len() - 4);
    if crc32c::crc32c(body) != u32::from_le_bytes(crc.try_into().ok()?) {
        return None;
    }
    let u64_at = |at: usize| u64::from_le_bytes(body[at..at + 8].try_into().expect("8 bytes"));
    if u32::from_le_bytes(body[8..12].try_into().ok()?) != kind as u32 {
        return None;
    }
    let footer = body.len() - (FOOTER_LEN - 4);
    let count = u64_at(footer) as usize;
    if HEADER_LEN + count.checked_mul(ENTRY_LEN)? != footer {
        return None;
    }
    let entries = (0..count)
        .map(|i| {
            let at = HEADER_LEN + i * ENTRY_LEN;
            (u64_at(at), u64_at(at + 8))
        })
        .collect();
    let footer = Footer {
        log_len: u64_at(footer + 8),
        max_timestamp: u64_at(footer + 16) as i64,
        next_offset: u64_at(footer + 24),
    };
    Some((entries, footer))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> SegmentIndex {
        SegmentIndex {
            offsets: vec![(0, 0), (100, 4096), (250, 9000)],
            times: vec![(i64::MIN, 0), (1_000, 100), (2_000, 250)],
            max_timestamp: 2_500,
            log_len: 12_000,
            next_offset: 300,
        }
    }

    #[test]
    fn files_round_trip_and_reject_damage() {
        let dir = tempfile::tempdir().unwrap();
        let (a, b) = (dir.path().join("0.index"), dir.path().join("0.timeindex"));
        let index = sample();
        let fs = Fs::Os;
        index.write_files(&fs, &a, &b).unwrap();
        assert_eq!(SegmentIndex::read_files(&fs, &a, &b, 12_000), Some(index));
        assert_eq!(
            SegmentIndex::read_files(&fs, &a, &b, 12_001),
            None,
            "other log length"
        );
        assert_eq!(
            SegmentIndex::read_files(&fs, &b, &a, 12_000),
            None,
            "swapped kinds"
        );
        let mut bytes = std::fs::read(&a).unwrap();
        bytes[20] ^= 1;
        std::fs::write(&a, bytes).unwrap();
        assert_eq!(
            SegmentIndex::read_files(&fs, &a, &b, 12_000),
            None,
            "flipped bit"
        );
    }

    #[test]
    fn lookups_find_the_floor_entry() {
        let index = sample();
        assert_eq!(index.position_for(0), 0);
        assert_eq!(index.position_for(99), 0);
        assert_eq!(index.position_for(100), 4096);
        assert_eq!(index.position_for(10_000), 9000);
        assert_eq!(index.offset_for_time(500, 0), 0);
        assert_eq!(index.offset_for_time(1_500, 0), 100);
        assert_eq!(index.offset_for_time(2_000, 0), 100);
        assert_eq!(index.offset_for_time(9_999, 0), 250);
    }
}
