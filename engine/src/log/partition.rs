//! A partition: an ordered list of segments, the single writer that appends to the last one,
//! the high watermark readers may see up to, and retention.
//!
//! Appends are serialised by a mutex; batch encoding and CRC happen before it is taken. In
//! `fsync` mode an append is made visible (and may be acknowledged) only after the
//! [`Flusher`](super::flusher::Flusher) has fsynced it, which lets concurrent appenders share
//! one fsync. A failed fsync poisons the partition: it refuses further appends and never
//! advances the high watermark past data that may not be on disk.

use parking_lot::{Mutex, RwLock};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU8, Ordering};
use std::time::{Duration, Instant};

use tokio::sync::watch;

use super::batch::{PendingBatch, ProducerStamp, Record};
use super::cold::ColdTier;
use super::counters::PartitionCounters;
use super::flusher::Flusher;
use super::fs::Fs;
use super::segment::Segment;
use super::topic_config::{FlushPolicy, TopicConfig};
use super::{DiskFull, DiskUsage, LogError};

/// Most bytes a read reserves before it knows how much it will find.
const MAX_READ_RESERVE: usize = 4 << 20;

/// What readers may see of a partition.
#[derive(Debug, Clone)]
pub struct Visibility {
    /// The offset after the last record readers may see.
    pub high_watermark: u64,
    /// Set once an fsync or write failed; the partition then takes no appends.
    pub failed: Option<Arc<str>>,
}

/// The offsets an append was given.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Appended {
    pub base_offset: u64,
    /// The offset after the last appended record.
    pub next_offset: u64,
}

/// Raw batches read from a partition, plus where the reader stands.
#[derive(Debug, Default)]
pub struct Fetched {
    /// Whole batches in the storage format; the first may start before the requested offset.
    pub data: Vec<u8>,
    /// Where the next read should start.
    pub next_offset: u64,
    pub high_watermark: u64,
    pub log_start_offset: u64,
}

pub struct Partition {
    pub topic: Arc<str>,
    pub id: u32,
    dir: PathBuf,
    fs: Fs,
    config: Arc<RwLock<TopicConfig>>,
    writer: Mutex<Writer>,
    segments: RwLock<Vec<Arc<Segment>>>,
    visibility: watch::Sender<Visibility>,
    /// One of the `FLUSH_*` states: at most one fsync of a partition is queued or running.
    flush_state: AtomicU8,
    counters: PartitionCounters,
    flusher: Arc<Flusher>,
    disk: Arc<DiskUsage>,
    cold: Option<Arc<dyn ColdTier>>,
}

/// A sealed segment that is due for the archive.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SegmentRange {
    pub base_offset: u64,
    pub next_offset: u64,
    pub bytes: u64,
}

const FLUSH_IDLE: u8 = 0;
const FLUSH_QUEUED: u8 = 1;
const FLUSH_RUNNING: u8 = 2;
/// Running, and more was appended since it started: queue again when done.
const FLUSH_RUNNING_DIRTY: u8 = 3;

struct Writer {
    active: Arc<Segment>,
    active_since: Instant,
}

impl Partition {
    /// Opens (recovering) or creates the partition stored in `dir`.
    #[allow(clippy::too_many_arguments)]
    pub fn open(
        fs: Fs,
        dir: PathBuf,
        topic: Arc<str>,
        id: u32,
        config: Arc<RwLock<TopicConfig>>,
        flusher: Arc<Flusher>,
        disk: Arc<DiskUsage>,
        cold: Option<Arc<dyn ColdTier>>,
    ) -> Result<Arc<Partition>, LogError> {
        let _span = tracing::info_span!("partition", topic = %topic, partition = id).entered();
        fs.create_dir_all(&dir).map_err(|e| LogError::io(&dir, e))?;
        let index_interval = config.read().index_interval_bytes;
        let bases = segment_bases(&fs, &dir)?;
        let mut segments = Vec::with_capacity(bases.len().max(1));
        for (i, &base) in bases.iter().enumerate() {
            let sealed = i + 1 < bases.len();
            segments.push(Arc::new(Segment::open(
                fs.clone(),
                &dir,
                base,
                sealed,
                index_interval,
            )?));
        }
        if segments.is_empty() {
            segments.push(Arc::new(Segment::create(fs.clone(), &dir, 0)?));
            sync_dir(&fs, &dir)?;
        }
        for pair in segments.windows(2) {
            if pair[0].next_offset() != pair[1].base_offset {
                tracing::error!(
                    segment = %pair[0].path().display(),
                    readable_until = pair[0].next_offset(),
                    next_segment_starts = pair[1].base_offset,
                    "records are missing between two segments; reads of them will fail"
                );
            }
        }
        let active = segments.last().expect("at least one segment").clone();
        let high_watermark = active.next_offset();
        disk.add(segments.iter().map(|s| s.size()).sum());
        Ok(Arc::new(Partition {
            topic,
            id,
            dir,
            fs,
            config,
            writer: Mutex::new(Writer {
                active,
                active_since: Instant::now(),
            }),
            segments: RwLock::new(segments),
            visibility: watch::Sender::new(Visibility {
                high_watermark,
                failed: None,
            }),
            flush_state: AtomicU8::new(FLUSH_IDLE),
            counters: PartitionCounters::default(),
            flusher,
            disk,
            cold,
        }))
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The topic's settings now.
    pub fn config(&self) -> TopicConfig {
        self.config.read().clone()
    }

    /// Appends records as one batch. The records are on disk, and visible to readers, once
    /// [`Partition::wait_visible`] for the returned `next_offset` returns.
    pub fn append(self: &Arc<Self>, records: &[Record]) -> Result<Appended, LogError> {
        self.append_stamped(records, None)
    }

    /// [`Partition::append`] of a batch an idempotent producer sent: the batch keeps its
    /// producer's id, epoch and first sequence number.
    pub fn append_stamped(
        self: &Arc<Self>,
        records: &[Record],
        producer: Option<ProducerStamp>,
    ) -> Result<Appended, LogError> {
        let config = self.config.read().clone();
        if let Some(failed) = &self.visibility.borrow().failed {
            return Err(self.failed_error(failed));
        }
        self.disk.check()?;
        let mut pending = PendingBatch::build(records, config.compression, producer);
        let mut writer = self.writer.lock();
        let age = writer.active_since.elapsed();
        let active_len = writer.active.size();
        if active_len > 0
            && (active_len + pending.len() as u64 > config.segment_bytes
                || age >= Duration::from_millis(config.segment_ms))
        {
            self.roll(&mut writer)?;
        }
        let base_offset = writer.active.next_offset();
        let bytes = pending.seal(base_offset);
        let header = super::batch::verify(bytes).expect("a freshly built batch verifies");
        if let Err(error) = writer
            .active
            .append(bytes, &header, config.index_interval_bytes)
        {
            let out_of_space = error.raw_os_error() == Some(libc::ENOSPC);
            let error = LogError::io(writer.active.path(), error);
            drop(writer);
            if out_of_space {
                return Err(DiskFull::OutOfSpace(Box::new(error)).into());
            }
            self.fail(&error.to_string());
            return Err(error);
        }
        self.disk.add(pending.len() as u64);
        drop(writer);
        PartitionCounters::add(
            &self.counters.produced_records,
            pending.record_count().into(),
        );
        PartitionCounters::add(&self.counters.produced_bytes, pending.len() as u64);
        let next_offset = base_offset + u64::from(pending.record_count());
        if config.flush == FlushPolicy::Interval {
            self.publish(next_offset);
        }
        self.request_flush();
        Ok(Appended {
            base_offset,
            next_offset,
        })
    }

    /// Makes sure an fsync that starts after this call is queued or running.
    fn request_flush(self: &Arc<Self>) {
        loop {
            let (from, to) = match self.flush_state.load(Ordering::SeqCst) {
                FLUSH_IDLE => (FLUSH_IDLE, FLUSH_QUEUED),
                FLUSH_RUNNING => (FLUSH_RUNNING, FLUSH_RUNNING_DIRTY),
                _ => return,
            };
            if self
                .flush_state
                .compare_exchange(from, to, Ordering::SeqCst, Ordering::SeqCst)
                .is_ok()
            {
                if to == FLUSH_QUEUED {
                    self.flusher.enqueue(self.clone(), self.flush_due());
                }
                return;
            }
        }
    }

    /// When the flusher should fsync: now for `fsync`, after the interval for `interval`.
    fn flush_due(&self) -> Option<Instant> {
        let config = self.config.read();
        match config.flush {
            FlushPolicy::Fsync => None,
            FlushPolicy::Interval => {
                Some(Instant::now() + Duration::from_millis(config.flush_interval_ms))
            }
        }
    }

    /// Appends and waits until the records are durable per the topic's flush policy.
    pub async fn append_durable(
        self: &Arc<Self>,
        records: &[Record],
    ) -> Result<Appended, LogError> {
        let appended = self.append(records)?;
        self.wait_visible(appended.next_offset).await?;
        Ok(appended)
    }

    /// Waits until the high watermark reaches `offset`, or fails if the partition failed.
    pub async fn wait_visible(&self, offset: u64) -> Result<(), LogError> {
        let mut receiver = self.visibility.subscribe();
        let visibility = receiver
            .wait_for(|v| v.high_watermark >= offset || v.failed.is_some())
            .await
            .expect("the sender lives in self");
        if visibility.high_watermark >= offset {
            return Ok(());
        }
        let failed = visibility.failed.clone().expect("checked by wait_for");
        Err(self.failed_error(&failed))
    }

    /// Waits up to `timeout` for records at or after `offset` to become visible.
    pub async fn wait_for_records(&self, offset: u64, timeout: Duration) {
        let mut receiver = self.visibility.subscribe();
        let _ = tokio::time::timeout(
            timeout,
            receiver.wait_for(|v| v.high_watermark > offset || v.failed.is_some()),
        )
        .await;
    }

    /// Called by the flusher: fsyncs what was written so far and makes it visible, then
    /// queues itself again if more was appended meanwhile.
    pub(super) fn flush(self: &Arc<Self>) {
        self.flush_state.store(FLUSH_RUNNING, Ordering::SeqCst);
        self.sync_and_publish();
        if self
            .flush_state
            .compare_exchange(
                FLUSH_RUNNING,
                FLUSH_IDLE,
                Ordering::SeqCst,
                Ordering::SeqCst,
            )
            .is_err()
        {
            self.flush_state.store(FLUSH_QUEUED, Ordering::SeqCst);
            self.flusher.enqueue(self.clone(), self.flush_due());
        }
    }

    fn sync_and_publish(&self) {
        let (active, written) = {
            let writer = self.writer.lock();
            (writer.active.clone(), writer.active.next_offset())
        };
        PartitionCounters::add(&self.counters.fsyncs, 1);
        let started = Instant::now();
        let synced = active.sync();
        self.flusher
            .fsync_seconds
            .observe(started.elapsed().as_secs_f64());
        match synced {
            Ok(()) => self.publish(written),
            Err(error) => self.fail(&error.to_string()),
        }
    }

    fn publish(&self, offset: u64) {
        self.visibility.send_if_modified(|v| {
            let advance = v.failed.is_none() && offset > v.high_watermark;
            if advance {
                v.high_watermark = offset;
            }
            advance
        });
    }

    fn fail(&self, reason: &str) {
        tracing::error!(topic = %self.topic, partition = self.id, %reason,
            "partition stops accepting writes: data may not be on disk");
        self.visibility.send_modify(|v| {
            v.failed.get_or_insert_with(|| Arc::from(reason));
        });
    }

    fn failed_error(&self, reason: &str) -> LogError {
        LogError::PartitionFailed {
            topic: self.topic.to_string(),
            partition: self.id,
            reason: reason.to_string(),
        }
    }

    fn roll(&self, writer: &mut Writer) -> Result<(), LogError> {
        // Before sealing: a refused roll leaves the active segment as it was.
        super::open_files::check_roll(&self.topic, self.id)?;
        let started = Instant::now();
        let sealed = writer.active.seal();
        self.flusher
            .fsync_seconds
            .observe(started.elapsed().as_secs_f64());
        if let Err(error) = sealed {
            self.fail(&error.to_string());
            return Err(error);
        }
        let base = writer.active.next_offset();
        let segment = Arc::new(Segment::create(self.fs.clone(), &self.dir, base)?);
        sync_dir(&self.fs, &self.dir)?;
        // Everything up to `base` is now fsynced by the seal.
        if self.config.read().flush == FlushPolicy::Fsync {
            self.publish(base);
        }
        self.segments.write().push(segment.clone());
        tracing::debug!(topic = %self.topic, partition = self.id, base_offset = base, "rolled segment");
        writer.active = segment;
        writer.active_since = Instant::now();
        Ok(())
    }

    /// Seals the active segment when it holds records and is older than the topic's
    /// `segment_ms`, or at once with `now`: a quiet partition's last records then become
    /// archivable (and deletable by retention) without waiting for another append. True when
    /// it sealed one.
    pub fn seal_active(&self, now: bool) -> Result<bool, LogError> {
        if self.visibility.borrow().failed.is_some() {
            return Ok(false);
        }
        let segment_ms = self.config.read().segment_ms;
        let mut writer = self.writer.lock();
        let due = now || writer.active_since.elapsed() >= Duration::from_millis(segment_ms);
        if writer.active.size() == 0 || !due {
            return Ok(false);
        }
        self.roll(&mut writer)?;
        tracing::info!(topic = %self.topic, partition = self.id, "sealed the active segment");
        Ok(true)
    }

    #[cfg(test)]
    pub(super) fn active_segment(&self) -> Arc<Segment> {
        self.writer.lock().active.clone()
    }

    pub fn fsync_count(&self) -> u64 {
        PartitionCounters::get(&self.counters.fsyncs)
    }

    /// What the partition counted since the engine started, for `/metrics`.
    pub fn counters(&self) -> &PartitionCounters {
        &self.counters
    }

    pub fn high_watermark(&self) -> u64 {
        self.visibility.borrow().high_watermark
    }

    pub fn log_start_offset(&self) -> u64 {
        self.segments.read()[0].base_offset
    }

    /// Offsets held by the archive as `(first, end)`, if it holds any. An unreadable archive
    /// counts as empty here (and is logged); reading from it reports the cause.
    pub fn archive_range(&self) -> Option<(u64, u64)> {
        match self.cold.as_ref()?.range() {
            Ok(range) => range,
            Err(error) => {
                tracing::warn!(topic = %self.topic, partition = self.id, %error, "archive unreadable");
                None
            }
        }
    }

    /// The oldest offset a read can start at: in the archive if it holds older records than
    /// the log.
    pub fn earliest_offset(&self) -> u64 {
        let start = self.log_start_offset();
        self.archive_range()
            .map_or(start, |(first, _)| first.min(start))
    }

    /// Bytes of all segments.
    pub fn size_bytes(&self) -> u64 {
        self.segments.read().iter().map(|s| s.size()).sum()
    }

    pub fn segment_count(&self) -> usize {
        self.segments.read().len()
    }

    /// Reads whole batches from `offset` on, about `max_bytes` of them (at least one batch if
    /// any is visible). `offset` equal to the high watermark reads nothing.
    pub fn read(&self, offset: u64, max_bytes: usize) -> Result<Fetched, LogError> {
        // Sized up front: growing by doubling copied the data read so far each time.
        self.read_through(offset, u64::MAX, max_bytes)
    }

    /// [`Partition::read`] of the batches that start at or before `last` only: what a reader
    /// that knows where it stops (a share group's acquired records) needs, without the rest
    /// of `max_bytes`.
    pub fn read_through(
        &self,
        offset: u64,
        last: u64,
        max_bytes: usize,
    ) -> Result<Fetched, LogError> {
        let mut data = Vec::with_capacity(max_bytes.min(MAX_READ_RESERVE));
        let (next_offset, high_watermark, log_start_offset) =
            self.read_to(offset, last.saturating_add(1), max_bytes, &mut data)?;
        Ok(Fetched {
            data,
            next_offset,
            high_watermark,
            log_start_offset,
        })
    }

    /// [`Partition::read`] into a buffer of the caller's (its contents replaced, its memory
    /// kept: a reader going through much of the log reuses one); returns the offset to read
    /// next.
    pub fn read_into(
        &self,
        offset: u64,
        max_bytes: usize,
        data: &mut Vec<u8>,
    ) -> Result<u64, LogError> {
        data.clear();
        Ok(self.read_to(offset, u64::MAX, max_bytes, data)?.0)
    }

    /// Reads the batches from `offset` on that start before `until` into `data` (empty);
    /// returns the next offset, the high watermark and the log start offset as they were
    /// when the read began.
    fn read_to(
        &self,
        offset: u64,
        until: u64,
        max_bytes: usize,
        data: &mut Vec<u8>,
    ) -> Result<(u64, u64, u64), LogError> {
        let high_watermark = self.high_watermark();
        let until = until.min(high_watermark);
        let segments = self.segments.read().clone();
        let log_start_offset = segments[0].base_offset;
        if offset < log_start_offset
            && let Some(cold) = &self.cold
            && let Some((archived, next_offset)) = cold.read(offset, max_bytes)?
        {
            *data = archived;
            return Ok((next_offset, high_watermark, log_start_offset));
        }
        if offset < log_start_offset || offset > high_watermark {
            return Err(LogError::OffsetOutOfRange {
                topic: self.topic.to_string(),
                partition: self.id,
                requested: offset,
                start: self.earliest_offset(),
                end: high_watermark,
            });
        }
        let first = segments.partition_point(|s| s.base_offset <= offset) - 1;
        let mut next = offset;
        for segment in &segments[first..] {
            if next >= until || data.len() >= max_bytes {
                break;
            }
            if next < segment.base_offset {
                return Err(LogError::Missing {
                    topic: self.topic.to_string(),
                    partition: self.id,
                    from: next,
                    to: segment.base_offset,
                });
            }
            next = segment.read(next, until, max_bytes, data)?;
            if next < segment.next_offset() {
                break;
            }
        }
        Ok((next, high_watermark, log_start_offset))
    }

    /// The batches idempotent producers wrote in about the last `tail_bytes` of the
    /// partition, oldest first: each one's producer stamp, base offset and record count. This
    /// is what a restarted engine knows of its producers (Kafka keeps the same in its log).
    pub fn stamped_batches(
        &self,
        tail_bytes: u64,
    ) -> Result<Vec<(ProducerStamp, u64, u32)>, LogError> {
        let segments = self.segments.read().clone();
        let high_watermark = self.high_watermark();
        let mut per_segment = Vec::new();
        let mut left = tail_bytes;
        for segment in segments.iter().rev() {
            if left == 0 {
                break;
            }
            let mut found = Vec::new();
            left = left.saturating_sub(segment.stamped_batches(left, &mut found)?);
            per_segment.push(found);
        }
        // Newest segment first above; oldest first out, and only what readers may see.
        Ok(per_segment
            .into_iter()
            .rev()
            .flatten()
            .filter(|(_, base_offset, _)| *base_offset < high_watermark)
            .collect())
    }

    /// The first offset whose record timestamp is at or after `timestamp`, or the high
    /// watermark if there is none yet. Records that left the log for the archive are
    /// searched first, so a time older than the log start finds its archived offset.
    pub fn offset_for_timestamp(&self, timestamp: i64) -> Result<u64, LogError> {
        let high_watermark = self.high_watermark();
        let segments = self.segments.read().clone();
        if let Some(cold) = &self.cold
            && let Some(offset) = cold.offset_for_timestamp(timestamp)?
            && offset < segments[0].base_offset
        {
            return Ok(offset);
        }
        for segment in segments {
            if let Some(offset) = segment.find_timestamp(timestamp)? {
                return Ok(offset.min(high_watermark));
            }
        }
        Ok(high_watermark)
    }

    /// How many of the oldest sealed segments are past the topic's retention.
    fn expired_count(segments: &[Arc<Segment>], config: &TopicConfig, now_ms: i64) -> usize {
        let mut total: u64 = segments.iter().map(|s| s.size()).sum();
        let mut count = 0;
        for segment in &segments[..segments.len() - 1] {
            let expired = config
                .retention_ms
                .is_some_and(|ms| segment.max_timestamp() < now_ms.saturating_sub(ms as i64));
            let oversized = config
                .retention_bytes
                .is_some_and(|limit| total - segment.size() >= limit);
            if !expired && !oversized {
                break;
            }
            total -= segment.size();
            count += 1;
        }
        count
    }

    /// Sealed segments not archived yet, oldest first: those past retention, or every sealed
    /// one with `everything`.
    pub fn segments_to_archive(&self, now_ms: i64, everything: bool) -> Vec<SegmentRange> {
        let config = self.config.read().clone();
        let archived_end = self.archive_range().map_or(0, |(_, end)| end);
        let segments = self.segments.read();
        let count = if everything {
            segments.len() - 1
        } else {
            Self::expired_count(&segments, &config, now_ms)
        };
        segments[..count]
            .iter()
            .filter(|s| s.next_offset() > archived_end && s.next_offset() > s.base_offset)
            .map(|s| SegmentRange {
                base_offset: s.base_offset,
                next_offset: s.next_offset(),
                bytes: s.size(),
            })
            .collect()
    }

    /// Writes sealed segments' records to the archive, durably (oldest first, one file each);
    /// calls `archived` with each segment once its file is.
    pub fn archive(
        &self,
        segments: &[SegmentRange],
        archived: &(dyn Fn(&SegmentRange) + Sync),
    ) -> Result<(), LogError> {
        let cold = self.cold.as_ref().ok_or_else(|| {
            LogError::archive(format!(
                "{}/{}: this engine has no archive configured",
                self.topic, self.id
            ))
        })?;
        let _span =
            tracing::info_span!("archive", topic = %self.topic, partition = self.id).entered();
        let ranges: Vec<_> = segments
            .iter()
            .map(|s| s.base_offset..s.next_offset)
            .collect();
        let stored = cold.store(self, &ranges, &|range| {
            if let Some(segment) = segments.iter().find(|s| s.base_offset == range.start) {
                tracing::info!(
                    from = segment.base_offset,
                    to = segment.next_offset,
                    bytes = segment.bytes,
                    "archived segment"
                );
                let now_ms = std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)
                    .map_or(0, |d| d.as_millis() as u64);
                self.counters
                    .archived_at_ms
                    .store(now_ms, Ordering::Relaxed);
                archived(segment);
            }
        });
        if stored.is_err() {
            PartitionCounters::add(&self.counters.archive_failures, 1);
        }
        stored
    }

    /// Deletes sealed segments past the topic's retention, oldest first, archiving them first
    /// if the topic archives (a segment the archive does not hold yet is kept); returns how
    /// many bytes were freed.
    pub fn enforce_retention(&self, now_ms: i64) -> Result<u64, LogError> {
        let config = self.config.read().clone();
        let deletable_below = if config.archive {
            if self.cold.is_none() {
                tracing::warn!(topic = %self.topic, partition = self.id,
                    "the topic archives but this engine has no archive: keeping its segments");
                return Ok(0);
            }
            // Every sealed segment, not only those past retention: the archive follows the
            // log by at most segment_ms plus a retention check.
            let due = self.segments_to_archive(now_ms, true);
            self.archive(&due, &|_| {})?;
            if !due.is_empty() {
                crate::crash_point::reached(crate::crash_point::ARCHIVE_BEFORE_DELETE);
            }
            self.archive_range().map_or(0, |(_, end)| end)
        } else {
            u64::MAX
        };
        let removed: Vec<Arc<Segment>> = {
            let mut segments = self.segments.write();
            let expired = Self::expired_count(&segments, &config, now_ms);
            let count = segments[..expired]
                .iter()
                .take_while(|s| s.next_offset() <= deletable_below)
                .count();
            segments.drain(..count).collect()
        };
        let mut freed = 0;
        for segment in removed {
            tracing::info!(topic = %self.topic, partition = self.id, segment = %segment.path().display(),
                "deleting segment past retention");
            segment
                .remove_files()
                .map_err(|e| LogError::io(segment.path(), e))?;
            // Oldest first, each durably before the next: a power cut leaves a suffix of the
            // segments, never a hole where reads from the log start would stop.
            sync_dir(&self.fs, &self.dir)?;
            freed += segment.size();
        }
        self.disk.sub(freed);
        Ok(freed)
    }

    /// Deletes the partition's archive (its topic is being deleted).
    pub(super) fn delete_archive(&self) -> Result<(), LogError> {
        self.cold.as_ref().map_or(Ok(()), |cold| cold.delete())
    }

    /// Fsyncs outstanding data and writes the active segment's index, so the next start need
    /// not scan it.
    pub fn close(&self) -> Result<(), LogError> {
        let writer = self.writer.lock();
        writer.active.sync()?;
        self.publish(writer.active.next_offset());
        writer.active.write_index()
    }

    /// Removes the partition's files; the partition must no longer be in use.
    pub fn remove_files(&self) -> Result<(), LogError> {
        self.disk.sub(self.size_bytes());
        self.fs
            .remove_dir_all(&self.dir)
            .map_err(|e| LogError::io(&self.dir, e))
    }
}

/// Base offsets of the segment files in `dir`, ascending; stray temporary files are removed.
fn segment_bases(fs: &Fs, dir: &Path) -> Result<Vec<u64>, LogError> {
    let mut bases = Vec::new();
    for path in fs.read_dir(dir).map_err(|e| LogError::io(dir, e))? {
        let Some(name) = path.file_name().and_then(|n| n.to_str()) else {
            continue;
        };
        if name.ends_with(".tmp") {
            fs.remove_file(&path).map_err(|e| LogError::io(&path, e))?;
        } else if let Some(base) = name.strip_suffix(".log").and_then(|b| b.parse().ok()) {
            bases.push(base);
        }
    }
    bases.sort_unstable();
    Ok(bases)
}

pub(super) fn sync_dir(fs: &Fs, dir: &Path) -> Result<(), LogError> {
    fs.sync_dir(dir).map_err(|e| LogError::io(dir, e))
}
