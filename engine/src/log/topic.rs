//! A topic: its partitions, its configuration and its persisted metadata, and routing records
//! to partitions.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, RwLock};

use serde::{Deserialize, Serialize};

use super::batch::{Compression, Record};
use super::flusher::Flusher;
use super::partition::{Appended, Partition};
use super::partitioner::partition_for_key;
use super::{ColdTierOpener, DiskUsage, LogError, write_atomically};

/// When an append counts as durable.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum FlushPolicy {
    /// fsync before the append is acknowledged or visible (group-committed).
    #[default]
    Fsync,
    /// Acknowledge after the write; fsync every `flush_interval_ms`. A crash can lose the
    /// records of the last interval, which readers may already have seen.
    Interval,
}

/// Per-topic settings. Every field has a default; `[topic_defaults]` in the config file
/// changes them for new topics, `topic create --config` and `topic alter` per topic.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct TopicConfig {
    /// Delete sealed segments whose newest record is older than this. None keeps them.
    pub retention_ms: Option<u64>,
    /// Delete the oldest sealed segments while a partition holds more than this. None: no limit.
    pub retention_bytes: Option<u64>,
    /// Start a new segment when the active one would grow past this size.
    pub segment_bytes: u64,
    /// Start a new segment when the active one is older than this.
    pub segment_ms: u64,
    /// Bytes between two entries of the sparse offset and time indexes.
    pub index_interval_bytes: u64,
    /// Compression of each batch's records: none, zstd or lz4.
    pub compression: Compression,
    pub flush: FlushPolicy,
    /// With `flush = "interval"`: the longest time an append stays unsynced.
    pub flush_interval_ms: u64,
    /// Largest record (key + value + headers) a producer may send.
    pub max_record_bytes: u64,
    /// Write sealed segments to the Parquet archive before retention deletes them; reads of
    /// older offsets are then served from the archive.
    pub archive: bool,
    /// For topics of JSON values: `infer`, or a JSON object of field names to types (utf8,
    /// int32, int64, float32, float64, bool, timestamp_ms); archive files then also hold the
    /// values decoded into typed columns, and a `_malformed` column for those that do not fit.
    pub archive_schema: Option<String>,
}

impl Default for TopicConfig {
    fn default() -> Self {
        TopicConfig {
            retention_ms: Some(7 * 24 * 3600 * 1000),
            retention_bytes: None,
            segment_bytes: 128 * 1024 * 1024,
            segment_ms: 7 * 24 * 3600 * 1000,
            index_interval_bytes: 16 * 1024,
            compression: Compression::None,
            flush: FlushPolicy::Fsync,
            flush_interval_ms: 1000,
            max_record_bytes: 1024 * 1024,
            archive: false,
            archive_schema: None,
        }
    }
}

impl TopicConfig {
    /// Returns a copy with `key = value` settings applied (values as on the command line:
    /// numbers, words, or `none` to clear an optional limit).
    pub fn with_overrides(&self, overrides: &[(String, String)]) -> Result<TopicConfig, LogError> {
        let mut fields = serde_json::to_value(self).expect("config serialises");
        let map = fields.as_object_mut().expect("config is a struct");
        for (key, value) in overrides {
            if !map.contains_key(key) {
                let known: Vec<&str> = map.keys().map(String::as_str).collect();
                return Err(LogError::InvalidConfig(format!(
                    "unknown topic setting `{key}`; known settings: {}",
                    known.join(", ")
                )));
            }
            let parsed = match value.as_str() {
                "none" | "null" => serde_json::Value::Null,
                "true" => serde_json::Value::Bool(true),
                "false" => serde_json::Value::Bool(false),
                v => v
                    .parse::<u64>()
                    .map_or_else(|_| serde_json::Value::String(v.to_string()), Into::into),
            };
            map.insert(key.clone(), parsed);
        }
        let config: TopicConfig =
            serde_json::from_value(fields).map_err(|e| LogError::InvalidConfig(format!("{e}")))?;
        config.validate()?;
        Ok(config)
    }

    pub fn validate(&self) -> Result<(), LogError> {
        let invalid = |what: &str| Err(LogError::InvalidConfig(what.to_string()));
        if self.segment_bytes < 1024 {
            return invalid("segment_bytes must be at least 1024");
        }
        if self.segment_bytes > u32::MAX as u64 {
            return invalid("segment_bytes must be below 4 GiB");
        }
        if self.index_interval_bytes == 0 || self.segment_ms == 0 || self.flush_interval_ms == 0 {
            return invalid(
                "index_interval_bytes, segment_ms and flush_interval_ms must be positive",
            );
        }
        if self.max_record_bytes == 0 || self.max_record_bytes > 64 * 1024 * 1024 {
            return invalid("max_record_bytes must be between 1 and 67108864");
        }
        if let Some(schema) = &self.archive_schema
            && schema.trim() != "infer"
            && serde_json::from_str::<serde_json::Map<String, serde_json::Value>>(schema).is_err()
        {
            return invalid(
                "archive_schema must be `infer` or a JSON object of field names to types, like                  {\"customer\": \"utf8\", \"amount\": \"float64\"}",
            );
        }
        Ok(())
    }
}

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
    pub(super) fn create(
        dir: PathBuf,
        name: &str,
        partitions: u32,
        config: TopicConfig,
        flusher: Arc<Flusher>,
        disk: Arc<DiskUsage>,
        cold: Option<ColdTierOpener>,
    ) -> Result<Topic, LogError> {
        std::fs::create_dir_all(&dir).map_err(|e| LogError::io(&dir, e))?;
        let topic = Topic::assemble(dir, name, config, flusher, disk, cold);
        topic.add_partitions(partitions)?;
        topic.save()?;
        Ok(topic)
    }

    pub(super) fn open(
        dir: PathBuf,
        flusher: Arc<Flusher>,
        disk: Arc<DiskUsage>,
        cold: Option<ColdTierOpener>,
    ) -> Result<Topic, LogError> {
        let path = dir.join(METADATA_FILE);
        let bytes = std::fs::read(&path).map_err(|e| LogError::io(&path, e))?;
        let metadata: Metadata = serde_json::from_slice(&bytes).map_err(|e| {
            LogError::InvalidConfig(format!(
                "{} is not valid topic metadata: {e}",
                path.display()
            ))
        })?;
        let _span = tracing::info_span!("topic", topic = %metadata.name).entered();
        let topic = Topic::assemble(dir, &metadata.name, metadata.config, flusher, disk, cold);
        topic.add_partitions(metadata.partitions)?;
        Ok(topic)
    }

    fn assemble(
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
        let mut partitions = self.partitions.write().expect("partitions lock");
        for id in partitions.len() as u32..count {
            partitions.push(Partition::open(
                self.dir.join(id.to_string()),
                self.name.clone(),
                id,
                self.config.clone(),
                self.flusher.clone(),
                self.disk.clone(),
                self.cold.as_ref().map(|open| open(&self.name, id)),
            )?);
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
        write_atomically(&self.dir.join(METADATA_FILE), &bytes)
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    pub fn config(&self) -> TopicConfig {
        self.config.read().expect("config lock").clone()
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
        *self.config.write().expect("config lock") = config;
        self.save()
    }

    pub fn partition_count(&self) -> u32 {
        self.partitions.read().expect("partitions lock").len() as u32
    }

    pub fn partitions(&self) -> Vec<Arc<Partition>> {
        self.partitions.read().expect("partitions lock").clone()
    }

    pub fn partition(&self, id: u32) -> Result<Arc<Partition>, LogError> {
        let partitions = self.partitions.read().expect("partitions lock");
        partitions
            .get(id as usize)
            .cloned()
            .ok_or_else(|| LogError::UnknownPartition {
                topic: self.name.to_string(),
                partition: id,
                count: partitions.len() as u32,
            })
    }

    /// Appends records, routed to `partition` if given, else by key (Kafka's murmur2) or, for
    /// records without a key, to the next partition in turn per call. Returns once every
    /// record is durable per the flush policy.
    pub async fn produce(
        &self,
        partition: Option<u32>,
        records: Vec<Record>,
    ) -> Result<Vec<Produced>, LogError> {
        let limit = self.config.read().expect("config lock").max_record_bytes;
        for record in &records {
            let size = record.key.as_ref().map_or(0, |k| k.len())
                + record.value.len()
                + record
                    .headers
                    .iter()
                    .map(|h| h.key.len() + h.value.len())
                    .sum::<usize>();
            if size as u64 > limit {
                return Err(LogError::RecordTooLarge {
                    topic: self.name.to_string(),
                    size,
                    limit,
                });
            }
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
