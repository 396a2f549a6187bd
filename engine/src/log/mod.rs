//! The partitioned log: topics of partitions of segments of CRC-checked record batches.
//!
//! [`Log`] owns the data directory: it opens (and recovers) every topic at start, creates,
//! alters and deletes topics, applies retention, and fences other processes off the directory
//! with a lock file. Nothing here knows about HTTP, consumer groups or plugins.

pub mod batch;
pub mod cold;
mod flusher;
pub mod headers;
pub mod index;
pub mod partition;
pub mod partitioner;
pub mod segment;
pub mod topic;

use std::collections::BTreeMap;
use std::fs::File;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, RwLock};

pub use batch::{BatchError, Compression, Header, Record};
pub use cold::{ColdTier, ColdTierOpener};
pub use flusher::Flusher;
pub use partition::{Fetched, Partition};
pub use topic::{FlushPolicy, Produced, Topic, TopicConfig};

#[derive(Debug, thiserror::Error)]
pub enum LogError {
    #[error("I/O error on {path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error(
        "corrupt data in {path} at byte {position} (reading offset {offset}): {source}. The records \
         stored there cannot be served; restore the file from a backup, or delete the segment to \
         give them up"
    )]
    Corrupt {
        path: PathBuf,
        position: u64,
        offset: u64,
        source: BatchError,
    },
    #[error(
        "records {from}..{to} of {topic}/{partition} are missing from disk (a segment file was lost or cut short)"
    )]
    Missing {
        topic: String,
        partition: u32,
        from: u64,
        to: u64,
    },
    #[error("topic `{0}` does not exist; create it with `sluice topic create {0}`")]
    UnknownTopic(String),
    #[error("topic `{0}` already exists")]
    TopicExists(String),
    #[error(
        "invalid topic name `{0}`: use 1 to 200 characters from a-z, A-Z, 0-9, `.`, `_` and `-`, \
         not starting with `.` or `_`"
    )]
    InvalidTopicName(String),
    #[error("partition {partition} does not exist: topic `{topic}` has {count} partitions (0 to {})", count.saturating_sub(1))]
    UnknownPartition {
        topic: String,
        partition: u32,
        count: u32,
    },
    #[error(
        "offset {requested} is out of range for {topic}/{partition}: it holds offsets {start} to {end} (exclusive)"
    )]
    OffsetOutOfRange {
        topic: String,
        partition: u32,
        requested: u64,
        start: u64,
        end: u64,
    },
    #[error(
        "a record of {size} bytes exceeds max_record_bytes = {limit} of topic `{topic}`; raise it with `sluice topic alter {topic} --config max_record_bytes=N`"
    )]
    RecordTooLarge {
        topic: String,
        size: usize,
        limit: u64,
    },
    #[error(
        "partition {topic}/{partition} stopped accepting writes after a failed write or fsync ({reason}); check the disk and restart the engine"
    )]
    PartitionFailed {
        topic: String,
        partition: u32,
        reason: String,
    },
    #[error("{0}")]
    DiskFull(String),
    #[error("archive: {0}")]
    Archive(#[source] Box<dyn std::error::Error + Send + Sync>),
    #[error("invalid configuration: {0}")]
    InvalidConfig(String),
    #[error(
        "data directory {0} is in use by another sluice process (its LOCK file is held); stop that process or choose another --data-dir"
    )]
    Locked(PathBuf),
}

impl LogError {
    pub fn io(path: &Path, source: std::io::Error) -> LogError {
        LogError::Io {
            path: path.to_path_buf(),
            source,
        }
    }

    /// An error of the cold tier (the archive), kept as the source.
    pub fn archive(error: impl Into<Box<dyn std::error::Error + Send + Sync>>) -> LogError {
        LogError::Archive(error.into())
    }
}

/// Disk space accounting: refuses appends past the configured limits so that the disk never
/// fills up under the log.
pub struct DiskUsage {
    dir: PathBuf,
    used: AtomicU64,
    max_bytes: Option<u64>,
    min_free_bytes: u64,
    low_on_space: AtomicBool,
}

impl DiskUsage {
    pub fn new(dir: PathBuf, max_bytes: Option<u64>, min_free_bytes: u64) -> DiskUsage {
        DiskUsage {
            dir,
            used: AtomicU64::new(0),
            max_bytes,
            min_free_bytes,
            low_on_space: AtomicBool::new(false),
        }
    }

    fn add(&self, bytes: u64) {
        self.used.fetch_add(bytes, Ordering::Relaxed);
    }

    fn sub(&self, bytes: u64) {
        self.used
            .fetch_sub(bytes.min(self.used()), Ordering::Relaxed);
    }

    /// Bytes held by segment files.
    pub fn used(&self) -> u64 {
        self.used.load(Ordering::Relaxed)
    }

    /// Re-reads the free space of the file system holding the data directory.
    pub fn refresh_free_space(&self) {
        if let Some(free) = free_bytes(&self.dir) {
            let low = free < self.min_free_bytes;
            if low != self.low_on_space.swap(low, Ordering::Relaxed) {
                if low {
                    tracing::warn!(
                        free,
                        min_free_bytes = self.min_free_bytes,
                        "free disk space is low: refusing produce"
                    );
                } else {
                    tracing::info!(free, "free disk space recovered: accepting produce");
                }
            }
        }
    }

    fn check(&self) -> Result<(), LogError> {
        if let Some(max) = self.max_bytes
            && self.used() >= max
        {
            return Err(LogError::DiskFull(format!(
                "the log holds {} bytes, at its limit max_disk_bytes = {max}: produce is refused until \
                 retention frees space; lower retention, delete topics or raise max_disk_bytes",
                self.used()
            )));
        }
        if self.low_on_space.load(Ordering::Relaxed) {
            return Err(LogError::DiskFull(format!(
                "free space on the disk of {} is below min_free_bytes = {}: produce is refused until \
                 space is freed; lower retention, delete topics or free disk space",
                self.dir.display(),
                self.min_free_bytes
            )));
        }
        Ok(())
    }
}

fn free_bytes(dir: &Path) -> Option<u64> {
    use std::os::unix::ffi::OsStrExt;
    let path = std::ffi::CString::new(dir.as_os_str().as_bytes()).ok()?;
    let mut stat: libc::statvfs = unsafe { std::mem::zeroed() };
    // SAFETY: `path` is NUL-terminated and `stat` is a valid out-pointer for the call.
    let rc = unsafe { libc::statvfs(path.as_ptr(), &mut stat) };
    (rc == 0).then(|| stat.f_bavail as u64 * stat.f_frsize as u64)
}

/// Writes a small file so that a crash leaves either the old or the new content.
pub fn write_atomically(path: &Path, bytes: &[u8]) -> Result<(), LogError> {
    let tmp = path.with_extension("tmp");
    let write = || -> std::io::Result<()> {
        let mut file = File::create(&tmp)?;
        file.write_all(bytes)?;
        file.sync_all()?;
        std::fs::rename(&tmp, path)?;
        File::open(path.parent().unwrap_or(Path::new(".")))?.sync_all()
    };
    write().map_err(|e| LogError::io(path, e))
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
    topics: RwLock<BTreeMap<String, Arc<Topic>>>,
    defaults: TopicConfig,
    flusher: Arc<Flusher>,
    disk: Arc<DiskUsage>,
    cold: Option<ColdTierOpener>,
    _lock: File,
}

impl Log {
    /// Locks the data directory and opens every topic in it, recovering each partition.
    pub fn open(dir: &Path, options: LogOptions) -> Result<Log, LogError> {
        options.topic_defaults.validate()?;
        let topics_dir = dir.join("topics");
        std::fs::create_dir_all(&topics_dir).map_err(|e| LogError::io(&topics_dir, e))?;
        let lock_path = dir.join("LOCK");
        let lock = File::options()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&lock_path)
            .map_err(|e| LogError::io(&lock_path, e))?;
        if lock.try_lock().is_err() {
            return Err(LogError::Locked(dir.to_path_buf()));
        }
        let disk = Arc::new(DiskUsage::new(
            dir.to_path_buf(),
            options.max_disk_bytes,
            options.min_free_bytes,
        ));
        disk.refresh_free_space();
        let flusher = Flusher::start();
        let mut topics = BTreeMap::new();
        for entry in std::fs::read_dir(&topics_dir).map_err(|e| LogError::io(&topics_dir, e))? {
            let path = entry.map_err(|e| LogError::io(&topics_dir, e))?.path();
            let name = path
                .file_name()
                .and_then(|n| n.to_str())
                .unwrap_or_default()
                .to_string();
            if name.starts_with(".trash-") {
                std::fs::remove_dir_all(&path).map_err(|e| LogError::io(&path, e))?;
                continue;
            }
            if !path.join("topic.json").exists() {
                tracing::warn!(dir = %path.display(), "ignoring a directory without topic.json");
                continue;
            }
            let topic = Topic::open(path, flusher.clone(), disk.clone(), options.cold.clone())?;
            topics.insert(topic.name.to_string(), Arc::new(topic));
        }
        tracing::info!(dir = %dir.display(), topics = topics.len(), bytes = disk.used(), "log opened");
        Ok(Log {
            dir: dir.to_path_buf(),
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
        if partitions == 0 || partitions > 10_000 {
            return Err(LogError::InvalidConfig(
                "partitions must be between 1 and 10000".into(),
            ));
        }
        let config = self.defaults.with_overrides(overrides)?;
        let mut topics = self.topics.write().expect("topics lock");
        if topics.contains_key(name) {
            return Err(LogError::TopicExists(name.to_string()));
        }
        let dir = self.dir.join("topics").join(name);
        let topic = Arc::new(Topic::create(
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
            .expect("topics lock")
            .get(name)
            .cloned()
            .ok_or_else(|| LogError::UnknownTopic(name.to_string()))
    }

    pub fn topics(&self) -> Vec<Arc<Topic>> {
        self.topics
            .read()
            .expect("topics lock")
            .values()
            .cloned()
            .collect()
    }

    pub fn alter_topic(
        &self,
        name: &str,
        overrides: &[(String, String)],
        partitions: Option<u32>,
    ) -> Result<Arc<Topic>, LogError> {
        let topic = self.topic(name)?;
        topic.alter(overrides, partitions)?;
        Ok(topic)
    }

    /// Deletes a topic and its data. The directory is first renamed away, so a crash midway
    /// never leaves a half-deleted topic that would be opened again.
    pub fn delete_topic(&self, name: &str) -> Result<(), LogError> {
        let topic = self
            .topics
            .write()
            .expect("topics lock")
            .remove(name)
            .ok_or_else(|| LogError::UnknownTopic(name.to_string()))?;
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos());
        let trash = self
            .dir
            .join("topics")
            .join(format!(".trash-{name}-{nanos}"));
        std::fs::rename(topic.dir(), &trash).map_err(|e| LogError::io(topic.dir(), e))?;
        partition::sync_dir(&self.dir.join("topics"))?;
        self.disk
            .sub(topic.partitions().iter().map(|p| p.size_bytes()).sum());
        std::fs::remove_dir_all(&trash).map_err(|e| LogError::io(&trash, e))?;
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

pub(crate) fn validate_name(name: &str) -> Result<(), LogError> {
    let valid = !name.is_empty()
        && name.len() <= 200
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
mod tests;
