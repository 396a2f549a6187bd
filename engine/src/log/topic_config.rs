//! Per-topic settings and when an append counts as durable: plain data read by the topic,
//! its partitions and the flusher.

use serde::{Deserialize, Serialize};

use super::LogError;
use super::batch::Compression;

/// The smallest `segment_bytes` a topic may set.
const SEGMENT_BYTES_MIN: u64 = 1024;
/// The largest `segment_bytes` (4 GiB less one byte).
const SEGMENT_BYTES_MAX: u64 = u32::MAX as u64;
/// The largest `max_record_bytes` a topic may set.
const RECORD_BYTES_MAX: u64 = 64 * 1024 * 1024;
/// The default retention and segment age.
const WEEK_MS: u64 = 7 * 24 * 3600 * 1000;

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

/// How the archive writes a record's key or value (docs/archive-format.md, Columns).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ColumnEncoding {
    /// The bytes as they are (a BLOB column).
    Bytes,
    /// UTF-8 text; bytes that are not valid UTF-8 go to a side column, flagged.
    String,
    /// Text annotated as JSON (Parquet's JSON logical type); bytes that are not one JSON
    /// value go to a side column, flagged.
    Json,
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
    /// How archive files hold record keys: bytes, string or json.
    pub archive_key: ColumnEncoding,
    /// How archive files hold record values: bytes, string or json. The default, json, lets
    /// SQL read fields without decoding (DuckDB: `value->>'field'`).
    pub archive_value: ColumnEncoding,
}

impl Default for TopicConfig {
    fn default() -> Self {
        TopicConfig {
            retention_ms: Some(WEEK_MS),
            retention_bytes: None,
            segment_bytes: 128 * 1024 * 1024,
            segment_ms: WEEK_MS,
            index_interval_bytes: 16 * 1024,
            compression: Compression::None,
            flush: FlushPolicy::Fsync,
            flush_interval_ms: 1000,
            max_record_bytes: 1024 * 1024,
            archive: false,
            archive_schema: None,
            archive_key: ColumnEncoding::String,
            archive_value: ColumnEncoding::Json,
        }
    }
}

impl TopicConfig {
    /// Adds the settings a topic created by an older version lacks, with the values that keep
    /// it as it was (its archive files kept keys and values as bytes).
    pub fn upgrade_stored(config: &mut serde_json::Value) {
        if let Some(fields) = config.as_object_mut() {
            for setting in ["archive_key", "archive_value"] {
                fields.entry(setting).or_insert_with(|| "bytes".into());
            }
        }
    }

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
        if self.segment_bytes < SEGMENT_BYTES_MIN {
            return invalid("segment_bytes must be at least 1024");
        }
        if self.segment_bytes > SEGMENT_BYTES_MAX {
            return invalid("segment_bytes must be below 4 GiB");
        }
        if self.index_interval_bytes == 0 || self.segment_ms == 0 || self.flush_interval_ms == 0 {
            return invalid(
                "index_interval_bytes, segment_ms and flush_interval_ms must be positive",
            );
        }
        if self.max_record_bytes == 0 || self.max_record_bytes > RECORD_BYTES_MAX {
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
