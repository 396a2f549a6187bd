//! The cold tier of the power-loss test: archived batches in memory, standing for an archive
//! whose own durability is tested elsewhere (`archive/`, and the kill -9 tests of archival);
//! they survive the power cut. Storing a segment is one operation of the simulated disk, so
//! the power can go out between the archive taking a segment and retention deleting it, and
//! nothing is stored once it is out.

use std::collections::BTreeMap;
use std::ops::Range;
use std::sync::Arc;

use parking_lot::Mutex;

use super::super::batch::{self, BatchError, BatchHeader};
use super::super::fs::sim::SimDisk;
use super::super::{ColdTier, ColdTierOpener, LogError, Partition};

/// Bytes asked of each read of a partition while archiving it.
const READ_BYTES: usize = 4_096;

/// One archived batch.
pub struct Archived {
    offsets: Range<u64>,
    bytes: Vec<u8>,
}

/// The archives of every partition, by topic and partition.
pub type ColdStore = Arc<Mutex<BTreeMap<(String, u32), Vec<Archived>>>>;

struct TestArchive {
    disk: Arc<SimDisk>,
    archives: ColdStore,
    key: (String, u32),
}

/// Opens the partitions' archives in `archives`, storing through `disk`.
pub fn cold_store_opener(disk: &Arc<SimDisk>, archives: &ColdStore) -> ColdTierOpener {
    let (disk, archives) = (disk.clone(), archives.clone());
    Arc::new(move |topic: &str, partition: u32| {
        Arc::new(TestArchive {
            disk: disk.clone(),
            archives: archives.clone(),
            key: (topic.to_string(), partition),
        }) as Arc<dyn ColdTier>
    })
}

/// Splits consecutive raw batches, checking each one's CRC.
fn split_batches(mut data: &[u8]) -> Result<Vec<(BatchHeader, &[u8])>, BatchError> {
    let mut batches = Vec::new();
    while !data.is_empty() {
        let header = batch::verify(data)?;
        let (raw, rest) = data.split_at(header.total_len);
        batches.push((header, raw));
        data = rest;
    }
    Ok(batches)
}

impl TestArchive {
    fn end(&self) -> u64 {
        self.archives
            .lock()
            .get(&self.key)
            .and_then(|held| held.last())
            .map_or(0, |last| last.offsets.end)
    }
}

impl ColdTier for TestArchive {
    fn range(&self) -> Result<Option<(u64, u64)>, LogError> {
        let archives = self.archives.lock();
        let held = archives.get(&self.key).map(Vec::as_slice).unwrap_or(&[]);
        Ok(held
            .first()
            .zip(held.last())
            .map(|(first, last)| (first.offsets.start, last.offsets.end)))
    }

    fn store(
        &self,
        partition: &Partition,
        ranges: &[Range<u64>],
        stored: &(dyn Fn(Range<u64>) + Sync),
    ) -> Result<(), LogError> {
        for range in ranges {
            let mut offset = range.start.max(self.end());
            if offset >= range.end {
                stored(range.clone());
                continue;
            }
            let mut batches = Vec::new();
            while offset < range.end {
                let fetched = partition.read(offset, READ_BYTES)?;
                for (header, raw) in split_batches(&fetched.data).map_err(LogError::archive)? {
                    if header.next_offset() > offset && header.base_offset < range.end {
                        batches.push(Archived {
                            offsets: header.base_offset..header.next_offset(),
                            bytes: raw.to_vec(),
                        });
                    }
                }
                if fetched.next_offset <= offset {
                    return Err(LogError::archive(format!("no progress at offset {offset}")));
                }
                offset = fetched.next_offset;
            }
            self.disk.external_operation().map_err(LogError::archive)?;
            self.archives
                .lock()
                .entry(self.key.clone())
                .or_default()
                .extend(batches);
            stored(range.clone());
        }
        Ok(())
    }

    fn read(&self, offset: u64, max_bytes: usize) -> Result<Option<(Vec<u8>, u64)>, LogError> {
        let archives = self.archives.lock();
        let held = archives.get(&self.key).map(Vec::as_slice).unwrap_or(&[]);
        let Some(first) = held.iter().position(|b| b.offsets.contains(&offset)) else {
            return Ok(None);
        };
        let (mut data, mut next) = (Vec::new(), offset);
        for archived in &held[first..] {
            if !data.is_empty() && data.len() + archived.bytes.len() > max_bytes {
                break;
            }
            data.extend_from_slice(&archived.bytes);
            next = archived.offsets.end;
        }
        Ok(Some((data, next)))
    }

    fn offset_for_timestamp(&self, _timestamp: i64) -> Result<Option<u64>, LogError> {
        // The test reads by offset only.
        Ok(None)
    }

    fn delete(&self) -> Result<(), LogError> {
        self.archives.lock().remove(&self.key);
        Ok(())
    }
}
