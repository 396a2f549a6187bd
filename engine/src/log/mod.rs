//! The partitioned log: topics of partitions of segments of CRC-checked record batches.
//!
//! [`Log`] owns the data directory: it opens (and recovers) every topic at start, creates,
//! alters and deletes topics, applies retention, and fences other processes off the directory
//! with a lock file. Nothing here knows about HTTP, consumer groups or plugins.

pub mod batch;
pub mod cold;
pub mod counters;
mod disk_usage;
mod error;
mod flusher;
pub mod fs;
pub mod headers;
pub mod index;
pub mod open_files;
pub mod partition;
pub mod partitioner;
pub mod segment;
pub mod topic;
pub mod topic_config;

use parking_lot::RwLock;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use fs::{Fs, FsFile};

pub use batch::{BatchError, Compression, Header, Record};
pub use cold::{ColdTier, ColdTierOpener};
pub use counters::PartitionCounters;
pub use disk_usage::DiskUsage;
pub use error::{DiskFull, LogError};
pub use flusher::Flusher;
pub use partition::{Fetched, Partition};
pub use topic::{Produced, Topic};
pub use topic_config::{ColumnEncoding, FlushPolicy, TopicConfig};

/// Writes a small file so that a crash leaves either the old or the new content (see
/// [`Fs::write_atomically`]).
pub fn write_atomically(path: &Path, bytes: &[u8]) -> Result<(), LogError> {
    Fs::Os.write_atomically(path, bytes)
}

/// Settings of the log as a whole.
#[derive(Clone)]
pub struct LogOptions {
    pub topic_defaults: TopicConfig,
    pub max_disk_bytes: Option<u64>,
    pub min_free_bytes: u64,
    /// Makes each partition's cold tier (the archive); None: topics cannot archive.
    pub cold: Option<ColdTierOpener>,
}

pub struct Log {
    dir: PathBuf,
    fs: Fs,
    topics: RwLock<BTreeMap<String, Arc<Topic>>>,
    defaults: TopicConfig,
    flusher: Arc<Flusher>,
    disk: Arc<DiskUsage>,
    cold: Option<ColdTierOpener>,
    /// Segment files the log may keep open; see [`open_files`].
    _lock: FsFile,
}

impl Log {
    /// Locks the data directory and opens every topic in it, recovering each partition.
    pub fn open(dir: &Path, options: LogOptions) -> Result<Log, LogError> {
        Log::open_on(Fs::Os, dir, options)
    }

    /// [`Log::open`] with its files on `fs`.
    fn open_on(fs: Fs, dir: &Path, options: LogOptions) -> Result<Log, LogError> {
        options.topic_defaults.validate()?;
        let topics_dir = dir.join("topics");
        fs.create_dir_all(&topics_dir)
            .map_err(|e| LogError::io(&topics_dir, e))?;
        let lock_path = dir.join("LOCK");
        let lock = fs
            .open_or_create(&lock_path)
            .map_err(|e| LogError::io(&lock_path, e))?;
        if !lock.try_lock() {
            return Err(LogError::Locked(dir.to_path_buf()));
        }
        // A process killed before its fsyncs leaves writes in the page cache that a power cut
        // could still take back, directory entries included. Recovery reads them as if they
        // were on disk and serves them: make them so first. This also makes durable the
        // data directory and `topics/` if they were just created.
        fs.sync_file_system(dir).map_err(|e| LogError::io(dir, e))?;
        let disk = Arc::new(DiskUsage::new(
            dir.to_path_buf(),
            options.max_disk_bytes,
            options.min_free_bytes,
        ));
        disk.refresh_free_space();
        let flusher = Flusher::start();
        let mut topics = BTreeMap::new();
        for path in fs
            .read_dir(&topics_dir)
            .map_err(|e| LogError::io(&topics_dir, e))?
        {
            let name = path
                .file_name()
                .and_then(|n| n.to_str())
                .unwrap_or_default()
                .to_string();
            if name.starts_with(".trash-") {
                fs.remove_dir_all(&path)
                    .map_err(|e| LogError::io(&path, e))?;
                continue;
            }
            if !fs.exists(&path.join("topic.json")) {
                tracing::warn!(dir = %path.display(), "ignoring a directory without topic.json");
                continue;
            }
            let topic = Topic::open(
                fs.clone(),
                path,
                flusher.clone(),
                disk.clone(),
                options.cold.clone(),
            )?;
            topics.insert(topic.name.to_string(), Arc::new(topic));
        }
        tracing::info!(dir = %dir.display(), topics = topics.len(), bytes = disk.used(), "log opened");
        Ok(Log {
            dir: dir.to_path_buf(),
            fs,
            topics: RwLock::new(topics),
            defaults: options.topic_defaults,
            flusher,
            disk,
            cold: options.cold,
            _lock: lock,
        })
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    pub fn disk(&self) -> &DiskUsage {
        &self.disk
    }

    /// Bounds the segment files the log keeps open (see [`open_files`]); no bound by default.
    pub fn set_segment_budget(&self, segments: u64) {
        open_files::set_segment_budget(segments);
    }

    /// Refuses `partitions` more partitions (each opens a segment file) past the budget.
    fn check_open_files(&self, partitions: u64) -> Result<(), LogError> {
        open_files::check_partitions(partitions)
    }

    pub fn topic_defaults(&self) -> &TopicConfig {
        &self.defaults
    }

    pub fn create_topic(
        &self,
        name: &str,
        partitions: u32,
        overrides: &[(String, String)],
    ) -> Result<Arc<Topic>, LogError> {
        validate_name(name)?;
        check_partition_count(partitions)?;
        self.check_open_files(u64::from(partitions))?;
        let config = self.defaults.with_overrides(overrides)?;
        let mut topics = self.topics.write();
        if topics.contains_key(name) {
            return Err(LogError::TopicExists(name.to_string()));
        }
        let dir = self.dir.join("topics").join(name);
        let topic = Arc::new(Topic::create(
            self.fs.clone(),
            dir,
            name,
            partitions,
            config,
            self.flusher.clone(),
            self.disk.clone(),
            self.cold.clone(),
        )?);
        topics.insert(name.to_string(), topic.clone());
        tracing::info!(topic = name, partitions, "topic created");
        Ok(topic)
    }

    pub fn topic(&self, name: &str) -> Result<Arc<Topic>, LogError> {
        self.topics
            .read()
            .get(name)
            .cloned()
            .ok_or_else(|| LogError::UnknownTopic(name.to_string()))
    }

    pub fn topics(&self) -> Vec<Arc<Topic>> {
        self.topics.read().values().cloned().collect()
    }

    pub fn alter_topic(
        &self,
        name: &str,
        overrides: &[(String, String)],
        partitions: Option<u32>,
    ) -> Result<Arc<Topic>, LogError> {
        let topic = self.topic(name)?;
        if let Some(count) = partitions {
            // The same caps as at creation, checked before any partition is made.
            check_partition_count(count)?;
            let added = count.saturating_sub(topic.partition_count());
            self.check_open_files(u64::from(added))?;
        }
        topic.alter(overrides, partitions)?;
        Ok(topic)
    }

    /// Deletes a topic and its data. The directory is first renamed away, so a crash midway
    /// never leaves a half-deleted topic that would be opened again.
    pub fn delete_topic(&self, name: &str) -> Result<(), LogError> {
        let topic = self
            .topics
            .write()
            .remove(name)
            .ok_or_else(|| LogError::UnknownTopic(name.to_string()))?;
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos());
        let trash = self
            .dir
            .join("topics")
            .join(format!(".trash-{name}-{nanos}"));
        self.fs
            .rename(topic.dir(), &trash)
            .map_err(|e| LogError::io(topic.dir(), e))?;
        partition::sync_dir(&self.fs, &self.dir.join("topics"))?;
        self.disk
            .sub(topic.partitions().iter().map(|p| p.size_bytes()).sum());
        self.fs
            .remove_dir_all(&trash)
            .map_err(|e| LogError::io(&trash, e))?;
        for partition in topic.partitions() {
            partition.delete_archive()?;
        }
        tracing::info!(topic = name, "topic deleted");
        Ok(())
    }

    /// Applies retention to every partition (archiving first what its topic archives);
    /// returns the bytes freed.
    pub fn enforce_retention(&self, now_ms: i64) -> u64 {
        let mut freed = 0;
        for topic in self.topics() {
            for partition in topic.partitions() {
                if let Err(error) = partition.seal_active(false) {
                    tracing::error!(topic = %topic.name, partition = partition.id, %error, "sealing an idle segment failed");
                }
                match partition.enforce_retention(now_ms) {
                    Ok(bytes) => freed += bytes,
                    Err(error) => {
                        tracing::error!(topic = %topic.name, partition = partition.id, %error, "retention failed")
                    }
                }
            }
        }
        freed
    }

    /// How long partition fsyncs took, for `/metrics`.
    pub fn fsync_seconds(&self) -> &prometheus::Histogram {
        &self.flusher.fsync_seconds
    }

    /// Flushes every partition, writes active indexes, and stops the flusher.
    pub fn close(&self) -> Result<(), LogError> {
        self.flusher.stop();
        for topic in self.topics() {
            for partition in topic.partitions() {
                partition.close()?;
            }
        }
        Ok(())
    }
}

/// The most partitions one topic may have, at creation and after growing.
pub const PARTITIONS_PER_TOPIC_MAX: u32 = 10_000;

fn check_partition_count(partitions: u32) -> Result<(), LogError> {
    if partitions == 0 || partitions > PARTITIONS_PER_TOPIC_MAX {
        return Err(LogError::InvalidConfig(format!(
            "partitions must be between 1 and {PARTITIONS_PER_TOPIC_MAX}"
        )));
    }
    Ok(())
}

/// The longest name of a topic, group or snapshot, in bytes.
pub const NAME_LEN_MAX: usize = 200;

/// Checks a topic, group or snapshot name: 1 to [`NAME_LEN_MAX`] characters from a-z, A-Z,
/// 0-9, `.`, `_` and `-`, not starting with `.` or `_` (they name files and directories).
pub(crate) fn validate_name(name: &str) -> Result<(), LogError> {
    let valid = !name.is_empty()
        && name.len() <= NAME_LEN_MAX
        && !name.starts_with('.')
        && !name.starts_with('_')
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"._-".contains(&b));
    if valid {
        Ok(())
    } else {
        Err(LogError::InvalidTopicName(name.to_string()))
    }
}

/// Milliseconds since the Unix epoch.
pub fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64)
}

#[cfg(test)]
mod power_loss;
#[cfg(test)]
mod tests;
