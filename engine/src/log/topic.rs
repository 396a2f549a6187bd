//! A topic: its partitions and its persisted metadata (its configuration is
//! [`TopicConfig`]), and routing records to partitions.

use parking_lot::RwLock;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};

use serde::{Deserialize, Serialize};

use super::batch::Record;
use super::flusher::Flusher;
use super::fs::Fs;
use super::partition::{Appended, Partition, sync_dir};
use super::partitioner::partition_for_key;
use super::topic_config::TopicConfig;
use super::{ColdTierOpener, DiskUsage, LogError};

#[derive(Serialize, Deserialize)]
struct Metadata {
    format_version: u32,
    name: String,
    partitions: u32,
    config: TopicConfig,
}

const METADATA_FILE: &str = "topic.json";

pub struct Topic {
    pub name: Arc<str>,
    dir: PathBuf,
    fs: Fs,
    config: Arc<RwLock<TopicConfig>>,
    partitions: RwLock<Vec<Arc<Partition>>>,
    next_unkeyed: AtomicU32,
    flusher: Arc<Flusher>,
    disk: Arc<DiskUsage>,
    cold: Option<ColdTierOpener>,
}

/// What one produce call appended to one partition.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct Produced {
    pub partition: u32,
    pub base_offset: u64,
    pub record_count: u64,
}

impl Topic {
    #[allow(clippy::too_many_arguments)]
    pub(super) fn create(
        fs: Fs,
        dir: PathBuf,
        name: &str,
        partitions: u32,
        config: TopicConfig,
        flusher: Arc<Flusher>,
        disk: Arc<DiskUsage>,
        cold: Option<ColdTierOpener>,
    ) -> Result<Topic, LogError> {
        fs.create_dir_all(&dir).map_err(|e| LogError::io(&dir, e))?;
        let topic = Topic::assemble(fs, dir, name, config, flusher, disk, cold);
        topic.add_partitions(partitions)?;
        topic.save()?;
        // The topic's own name in topics/: until it is durable, a power cut could take the
        // topic away with everything acknowledged in it.
        let parent = topic.dir.parent().unwrap_or(Path::new("."));
        sync_dir(&topic.fs, parent)?;
        Ok(topic)
    }

    pub(super) fn open(
        fs: Fs,
        dir: PathBuf,
        flusher: Arc<Flusher>,
        disk: Arc<DiskUsage>,
        cold: Option<ColdTierOpener>,
    ) -> Result<Topic, LogError> {
        let path = dir.join(METADATA_FILE);
        let bytes = fs.read(&path).map_err(|e| LogError::io(&path, e))?;
        let invalid = |e: serde_json::Error| {
            LogError::InvalidConfig(format!(
                "{} is not valid topic metadata: {e}",
                path.display()
            ))
        };
        let mut stored: serde_json::Value = serde_json::from_slice(&bytes).map_err(invalid)?;
        if let Some(config) = stored.get_mut("config") {
            TopicConfig::upgrade_stored(config);
        }
        let metadata: Metadata = serde_json::from_value(stored).map_err(invalid)?;
        let _span = tracing::info_span!("topic", topic = %metadata.name).entered();
        let topic = Topic::assemble(
            fs,
            dir,
            &metadata.name,
            metadata.config,
            flusher,
            disk,
            cold,
        );
        topic.add_partitions(metadata.partitions)?;
        Ok(topic)
    }

    fn assemble(
        fs: Fs,
        dir: PathBuf,
        name: &str,
        config: TopicConfig,
        flusher: Arc<Flusher>,
        disk: Arc<DiskUsage>,
        cold: Option<ColdTierOpener>,
    ) -> Topic {
        Topic {
            name: Arc::from(name),
            dir,
            fs,
            config: Arc::new(RwLock::new(config)),
            partitions: RwLock::new(Vec::new()),
            next_unkeyed: AtomicU32::new(0),
            flusher,
            disk,
            cold,
        }
    }

    /// Opens or creates partitions until there are `count`.
    fn add_partitions(&self, count: u32) -> Result<(), LogError> {
        let mut partitions = self.partitions.write();
        let mut created = false;
        for id in partitions.len() as u32..count {
            let dir = self.dir.join(id.to_string());
            created |= !self.fs.exists(&dir);
            partitions.push(Partition::open(
                self.fs.clone(),
                dir,
                self.name.clone(),
                id,
                self.config.clone(),
                self.flusher.clone(),
                self.disk.clone(),
                self.cold.as_ref().map(|open| open(&self.name, id)),
            )?);
        }
        if created {
            // The new directories' names: one that recovery creates again (a power cut
            // during the topic's creation kept its metadata but not the directory) must not
            // vanish, with what is appended to it, at the next power cut.
            sync_dir(&self.fs, &self.dir)?;
        }
        Ok(())
    }

    fn save(&self) -> Result<(), LogError> {
        let metadata = Metadata {
            format_version: 1,
            name: self.name.to_string(),
            partitions: self.partition_count(),
            config: self.config(),
        };
        let bytes = serde_json::to_vec_pretty(&metadata).expect("metadata serialises");
        self.fs
            .write_atomically(&self.dir.join(METADATA_FILE), &bytes)
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    pub fn config(&self) -> TopicConfig {
        self.config.read().clone()
    }

    /// Changes settings and/or raises the partition count (it cannot shrink: keyed records
    /// would move).
    pub(super) fn alter(
        &self,
        overrides: &[(String, String)],
        partitions: Option<u32>,
    ) -> Result<(), LogError> {
        let config = self.config().with_overrides(overrides)?;
        if let Some(count) = partitions {
            if count < self.partition_count() {
                return Err(LogError::InvalidConfig(format!(
                    "topic `{}` has {} partitions; the count can grow but not shrink",
                    self.name,
                    self.partition_count()
                )));
            }
            self.add_partitions(count)?;
        }
        *self.config.write() = config;
        self.save()
    }

    pub fn partition_count(&self) -> u32 {
        self.partitions.read().len() as u32
    }

    pub fn partitions(&self) -> Vec<Arc<Partition>> {
        self.partitions.read().clone()
    }

    pub fn partition(&self, id: u32) -> Result<Arc<Partition>, LogError> {
        let partitions = self.partitions.read();
        partitions
            .get(id as usize)
            .cloned()
            .ok_or_else(|| LogError::UnknownPartition {
                topic: self.name.to_string(),
                partition: id,
                count: partitions.len() as u32,
            })
    }

    /// Refuses a record larger than `limit` (the topic's `max_record_bytes`, read once by a
    /// caller checking many records).
    fn check_record_size(&self, record: &Record, limit: u64) -> Result<(), LogError> {
        let size = record.size_bytes();
        if size as u64 > limit {
            return Err(LogError::RecordTooLarge {
                topic: self.name.to_string(),
                size,
                limit,
            });
        }
        Ok(())
    }

    /// Refuses any of `records` larger than the topic's `max_record_bytes`: what a producer
    /// is refused, for records that reach the topic another way (a plugin's output).
    pub fn check_record_sizes<'a>(
        &self,
        records: impl IntoIterator<Item = &'a Record>,
    ) -> Result<(), LogError> {
        let limit = self.config.read().max_record_bytes;
        records
            .into_iter()
            .try_for_each(|record| self.check_record_size(record, limit))
    }

    /// Appends records, routed to `partition` if given, else by key (Kafka's murmur2) or, for
    /// records without a key, to the next partition in turn per call. Returns once every
    /// record is durable per the flush policy.
    pub async fn produce(
        &self,
        partition: Option<u32>,
        records: Vec<Record>,
    ) -> Result<Vec<Produced>, LogError> {
        let limit = self.config.read().max_record_bytes;
        for record in &records {
            self.check_record_size(record, limit)?;
        }
        let count = self.partition_count();
        let routed: Vec<(u32, Vec<Record>)> = match partition {
            Some(id) => {
                self.partition(id)?;
                vec![(id, records)]
            }
            None => {
                let unkeyed = self.next_unkeyed.fetch_add(1, Ordering::Relaxed) % count;
                let mut groups: Vec<Vec<Record>> = (0..count).map(|_| Vec::new()).collect();
                for record in records {
                    let id = record
                        .key
                        .as_ref()
                        .map_or(unkeyed, |k| partition_for_key(k, count));
                    groups[id as usize].push(record);
                }
                groups
                    .into_iter()
                    .enumerate()
                    .filter(|(_, g)| !g.is_empty())
                    .map(|(i, g)| (i as u32, g))
                    .collect()
            }
        };
        let mut appended: Vec<(Arc<Partition>, u32, Appended)> = Vec::with_capacity(routed.len());
        for (id, records) in &routed {
            if records.is_empty() {
                continue;
            }
            let partition = self.partition(*id)?;
            let result = partition.append(records)?;
            appended.push((partition, *id, result));
        }
        let mut produced = Vec::with_capacity(appended.len());
        for (partition, id, result) in appended {
            partition.wait_visible(result.next_offset).await?;
            produced.push(Produced {
                partition: id,
                base_offset: result.base_offset,
                record_count: result.next_offset - result.base_offset,
            });
        }
        Ok(produced)
    }
}
