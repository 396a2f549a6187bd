//! Request and response bodies of the HTTP API, shared by the server and the `sluice` client.
//! `docs/http-api.md` describes the endpoints.

use std::collections::BTreeMap;

use base64::Engine;
use base64::engine::general_purpose::STANDARD as BASE64;
use bytes::Bytes;
use serde::{Deserialize, Serialize};

use crate::groups::CommittedOffset;
use crate::log::{Header, Record, TopicConfig};

/// Content type of a binary produce body: a records frame.
pub const RECORDS_FRAME: &str = "application/vnd.sluice.records";
/// Content type of a binary fetch response: whole batches in the storage format.
pub const BATCHES: &str = "application/vnd.sluice.batches";
pub const HEADER_NEXT_OFFSET: &str = "sluice-next-offset";
pub const HEADER_HIGH_WATERMARK: &str = "sluice-high-watermark";
pub const HEADER_LOG_START: &str = "sluice-log-start-offset";

#[derive(Debug, Serialize, Deserialize)]
pub struct ErrorBody {
    pub error: String,
    pub code: String,
}

#[derive(Debug, Serialize, Deserialize)]
pub struct CreateTopic {
    pub name: String,
    #[serde(default = "one")]
    pub partitions: u32,
    /// Topic settings to override, e.g. `{"retention_ms": 3600000, "compression": "zstd"}`.
    #[serde(default)]
    pub config: BTreeMap<String, serde_json::Value>,
}

fn one() -> u32 {
    1
}

#[derive(Debug, Default, Serialize, Deserialize)]
pub struct AlterTopic {
    #[serde(default)]
    pub config: BTreeMap<String, serde_json::Value>,
    pub partitions: Option<u32>,
}

/// Turns JSON setting values into the `key=value` form topics take.
pub fn config_overrides(config: &BTreeMap<String, serde_json::Value>) -> Vec<(String, String)> {
    config
        .iter()
        .map(|(k, v)| {
            let value = match v {
                serde_json::Value::String(s) => s.clone(),
                serde_json::Value::Null => "none".to_string(),
                other => other.to_string(),
            };
            (k.clone(), value)
        })
        .collect()
}

#[derive(Debug, Serialize, Deserialize)]
pub struct TopicList {
    pub topics: Vec<TopicSummary>,
}

#[derive(Debug, Serialize, Deserialize)]
pub struct TopicSummary {
    pub name: String,
    pub partitions: u32,
    pub size_bytes: u64,
}

#[derive(Debug, Serialize, Deserialize)]
pub struct TopicDescription {
    pub name: String,
    pub config: TopicConfig,
    pub partitions: Vec<PartitionDescription>,
}

#[derive(Debug, Serialize, Deserialize)]
pub struct PartitionDescription {
    pub partition: u32,
    pub log_start_offset: u64,
    pub high_watermark: u64,
    pub size_bytes: u64,
    pub segments: usize,
    /// The oldest offset the archive holds, when it holds records.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub archive_start_offset: Option<u64>,
}

/// `POST /v1/topics/{topic}/archive`.
#[derive(Debug, Default, Serialize, Deserialize)]
pub struct ArchiveRunRequest {
    /// Also archive sealed segments still in retention (they stay in the log until it expires
    /// them, and are not archived again).
    #[serde(default)]
    pub everything: bool,
    /// Seal the segments being written first, and archive every sealed one: the archive then
    /// holds everything up to the high watermark.
    #[serde(default)]
    pub now: bool,
}

/// One line of the `POST /v1/topics/{topic}/archive` response (newline-delimited JSON).
#[derive(Debug, Serialize, Deserialize)]
#[serde(tag = "event", rename_all = "snake_case")]
pub enum ArchiveProgress {
    /// First line: what will be archived.
    Plan { segments: usize, bytes: u64 },
    /// One segment archived.
    Segment {
        partition: u32,
        from: u64,
        to: u64,
        bytes: u64,
    },
    /// Last line on success.
    Done { segments: usize, bytes: u64 },
    /// Last line on failure: what is archived so far stays archived.
    Failed { message: String },
}

/// `GET /v1/topics/{topic}/archive`.
#[derive(Debug, Serialize, Deserialize)]
pub struct ArchiveListing {
    pub topic: String,
    pub dir: String,
    pub partitions: Vec<PartitionArchiveListing>,
    /// The newest metadata file of the topic's Iceberg table, once it has one.
    #[serde(default)]
    pub table: Option<String>,
    /// The versions of the topic's schema (schema-aware topics), oldest first.
    #[serde(default)]
    pub schema_versions: Vec<crate::archive::SchemaVersion>,
}

#[derive(Debug, Serialize, Deserialize)]
pub struct PartitionArchiveListing {
    pub partition: u32,
    pub files: Vec<crate::archive::ArchivedFile>,
}

/// `POST /v1/archive/verify`.
#[derive(Debug, Serialize, Deserialize)]
pub struct ArchiveVerification {
    pub files_checked: usize,
    pub problems: Vec<String>,
}

#[derive(Debug, Default, Serialize, Deserialize)]
pub struct VerifyParams {
    pub topic: Option<String>,
}

/// A record in JSON: text fields for UTF-8 data, `*_base64` for anything else.
#[derive(Debug, Default, Clone, PartialEq, Serialize, Deserialize)]
pub struct JsonRecord {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub offset: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub partition: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timestamp: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub key: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub key_base64: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub value: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub value_base64: Option<String>,
    /// Header values as text (lossy for bytes that are not UTF-8), `null` for a null value.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub headers: BTreeMap<String, Option<String>>,
}

impl JsonRecord {
    pub fn from_record(record: &Record, partition: u32, offset: u64) -> JsonRecord {
        let (key, key_base64) = match &record.key {
            None => (None, None),
            Some(k) => text_or_base64(k),
        };
        let (value, value_base64) = match &record.value {
            None => (None, None), // a tombstone: neither field
            Some(v) => text_or_base64(v),
        };
        JsonRecord {
            offset: Some(offset),
            partition: Some(partition),
            timestamp: Some(record.timestamp),
            key,
            key_base64,
            value,
            value_base64,
            headers: record
                .headers
                .iter()
                .map(|h| {
                    (
                        h.key.to_string(),
                        h.value
                            .as_ref()
                            .map(|v| String::from_utf8_lossy(v).into_owned()),
                    )
                })
                .collect(),
        }
    }

    /// The record, with `default_timestamp` where none is given. Without `value` and
    /// `value_base64` it is a tombstone: its value is null.
    pub fn to_record(&self, default_timestamp: i64) -> Result<Record, String> {
        let key = text_or_base64_field("key", &self.key, &self.key_base64)?;
        let value = text_or_base64_field("value", &self.value, &self.value_base64)?;
        Ok(Record {
            timestamp: self.timestamp.unwrap_or(default_timestamp),
            key,
            value,
            headers: self
                .headers
                .iter()
                .map(|(k, v)| Header {
                    key: k.clone().into(),
                    value: v.clone().map(Bytes::from),
                })
                .collect(),
        })
    }
}

/// The bytes of a field given as text (`name`) or as base64 (`name_base64`), if either.
fn text_or_base64_field(
    name: &str,
    text: &Option<String>,
    base64: &Option<String>,
) -> Result<Option<Bytes>, String> {
    match (text, base64) {
        (Some(_), Some(_)) => Err(format!("give `{name}` or `{name}_base64`, not both")),
        (Some(text), None) => Ok(Some(Bytes::from(text.clone()))),
        (None, Some(encoded)) => BASE64
            .decode(encoded)
            .map(|bytes| Some(Bytes::from(bytes)))
            .map_err(|e| format!("{name}_base64: {e}")),
        (None, None) => Ok(None),
    }
}

fn text_or_base64(bytes: &[u8]) -> (Option<String>, Option<String>) {
    match std::str::from_utf8(bytes) {
        Ok(text) => (Some(text.to_string()), None),
        Err(_) => (None, Some(BASE64.encode(bytes))),
    }
}

#[derive(Debug, Serialize, Deserialize)]
pub struct ProduceRequest {
    pub records: Vec<JsonRecord>,
}

#[derive(Debug, Serialize, Deserialize)]
pub struct ProduceResponse {
    pub partitions: Vec<ProducedPartition>,
}

/// Records of one produce request that went to one partition: offsets
/// `base_offset .. base_offset + record_count`, in request order.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ProducedPartition {
    pub partition: u32,
    pub base_offset: u64,
    pub record_count: u64,
}

#[derive(Debug, Default, Serialize, Deserialize)]
pub struct FetchParams {
    pub offset: Option<i64>,
    pub timestamp: Option<i64>,
    pub max_bytes: Option<u64>,
    pub max_records: Option<u64>,
    pub wait_ms: Option<u64>,
}

#[derive(Debug, Serialize, Deserialize)]
pub struct FetchResponse {
    pub records: Vec<JsonRecord>,
    pub next_offset: u64,
    pub high_watermark: u64,
    pub log_start_offset: u64,
}

#[derive(Debug, Serialize, Deserialize)]
pub struct JoinRequest {
    pub member_id: Option<String>,
    #[serde(default)]
    pub client: Option<String>,
    pub topics: Vec<String>,
    pub session_timeout_ms: Option<u64>,
}

#[derive(Debug, Serialize, Deserialize)]
pub struct MemberRequest {
    pub member_id: String,
}

#[derive(Debug, Serialize, Deserialize)]
pub struct CommitRequest {
    pub member_id: Option<String>,
    pub generation: Option<u64>,
    pub offsets: Vec<CommittedOffset>,
}

#[derive(Debug, Serialize, Deserialize)]
pub struct OffsetsResponse {
    pub offsets: Vec<CommittedOffset>,
}

#[derive(Debug, Serialize, Deserialize)]
pub struct GroupList {
    pub groups: Vec<String>,
}

/// `POST /v1/plugins/{group}`: the deployment and the component, base64-encoded.
#[derive(Debug, Serialize, Deserialize)]
pub struct DeployRequest {
    #[serde(flatten)]
    pub spec: crate::runtime::DeploySpec,
    /// The component (a `.wasm` file), in standard base64.
    pub wasm_base64: String,
}

#[derive(Debug, Default, Serialize, Deserialize)]
pub struct RollbackRequest {
    /// The version to return to; by default the one before the active version (or, with
    /// `snapshot`, the one active when the snapshot was taken).
    pub version: Option<u32>,
    /// Also put back the state and offsets of this snapshot.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub snapshot: Option<String>,
}

#[derive(Debug, Serialize, Deserialize)]
pub struct SnapshotRequest {
    pub name: String,
}

#[derive(Debug, Serialize, Deserialize)]
pub struct SnapshotList {
    pub snapshots: Vec<crate::txn::SnapshotInfo>,
}

#[derive(Debug, Serialize, Deserialize)]
pub struct PluginList {
    pub plugins: Vec<crate::runtime::PluginDescription>,
}

#[derive(Debug, Serialize, Deserialize)]
pub struct PluginLogs {
    pub lines: Vec<crate::runtime::LogLine>,
}

/// One entry of a plugin group's state: text fields for UTF-8, `*_base64` for anything else.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StateEntry {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub key: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub key_base64: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub value: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub value_base64: Option<String>,
}

impl StateEntry {
    pub fn new(key: &[u8], value: &[u8]) -> StateEntry {
        let (key, key_base64) = text_or_base64(key);
        let (value, value_base64) = text_or_base64(value);
        StateEntry {
            key,
            key_base64,
            value,
            value_base64,
        }
    }
}

/// `GET /v1/plugins/{group}/state`: committed state, in key order.
#[derive(Debug, Serialize, Deserialize)]
pub struct StateScan {
    pub entries: Vec<StateEntry>,
}

/// `GET /v1/overview`: topics, groups and plugin groups at one moment, for the console.
#[derive(Debug, Serialize, Deserialize)]
pub struct Overview {
    pub time_ms: i64,
    pub topics: Vec<TopicDescription>,
    /// Consumer groups (kind `consumer`) and plugin groups (kind `plugin`), with their lag.
    pub groups: Vec<GroupProgress>,
    pub plugins: Vec<PluginSummary>,
}

#[derive(Debug, Serialize, Deserialize)]
pub struct GroupProgress {
    pub group: String,
    pub kind: String,
    pub partitions: Vec<crate::groups::PartitionLag>,
    pub total_lag: u64,
}

/// What anyone may see of a plugin group; its settings, versions and last error need the
/// admin token (`GET /v1/plugins/{group}`).
#[derive(Debug, Serialize, Deserialize)]
pub struct PluginSummary {
    pub group: String,
    pub topic: String,
    pub dlq_topic: String,
    pub status: String,
    pub paused: bool,
    pub active_version: u32,
    pub running_version: Option<u32>,
    pub processed_records: u64,
    pub emitted_records: u64,
    pub dead_letters: u64,
    pub failed_calls: u64,
    pub state_bytes: u64,
    pub instance_memory_bytes: u64,
    pub total_lag: u64,
}

/// `POST /v1/share-groups/{group}/fetch`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ShareFetchRequest {
    /// Any stable name of the consumer; its locks are its own.
    pub member_id: String,
    pub topic: String,
    /// Only these partitions (default: all).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub partitions: Option<Vec<u32>>,
    /// The prefetch: records this fetch locks at most (default 500).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_records: Option<usize>,
    /// How long the records stay locked (default: the group's record_lock_ms).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub lock_ms: Option<u64>,
    /// How long to wait when no record is available (default 0).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub wait_ms: Option<u64>,
    /// Acknowledgements of records fetched before, applied first (one call per loop).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub acks: Vec<ShareAck>,
}

/// A record delivered to a share-group member, locked to it.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct SharedRecord {
    pub topic: String,
    /// 1 on the first delivery.
    pub delivery_count: u16,
    #[serde(flatten)]
    pub record: JsonRecord,
}

#[derive(Debug, Serialize, Deserialize)]
pub struct ShareFetchResponse {
    pub records: Vec<SharedRecord>,
    /// The request's acknowledgements that were not applied.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub refused: Vec<crate::queues::Refused>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum AckAction {
    /// Done.
    Accept,
    /// Deliver it again (after `delay_ms`).
    Release,
    /// To the dead-letter topic, with `reason`.
    Reject,
    /// Extend the lock.
    Renew,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ShareAck {
    pub topic: String,
    pub partition: u32,
    pub offset: u64,
    /// The same action for every offset from `offset` to this one (inclusive): one entry for
    /// a run of records, as Kafka's acknowledgement batches.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_offset: Option<u64>,
    pub action: AckAction,
    /// For a release: wait this long before delivering it again.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub delay_ms: u64,
    /// For a reject: why (into the dead letter's `sluice.dlq.error` header).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
}

fn is_zero(n: &u64) -> bool {
    *n == 0
}

/// `POST /v1/share-groups/{group}/ack`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ShareAckRequest {
    pub member_id: String,
    pub acks: Vec<ShareAck>,
}

#[derive(Debug, Serialize, Deserialize)]
pub struct ShareAckResponse {
    /// Acknowledgements not applied (the lock ended, or the record was not this member's).
    pub refused: Vec<crate::queues::Refused>,
}

#[derive(Debug, Serialize, Deserialize)]
pub struct ShareLeaveRequest {
    pub member_id: String,
}

#[derive(Debug, Serialize, Deserialize)]
pub struct ShareGroupList {
    pub groups: Vec<String>,
}

impl ShareAck {
    /// Acknowledgements of (topic, partition, offset, action)s, consecutive offsets of a
    /// partition with the same action merged into one range.
    pub fn runs<'a>(
        records: impl IntoIterator<Item = (&'a str, u32, u64, AckAction)>,
    ) -> Vec<ShareAck> {
        let mut runs: Vec<ShareAck> = Vec::new();
        for (topic, partition, offset, action) in records {
            if let Some(last) = runs.last_mut() {
                let end = last.last_offset.unwrap_or(last.offset);
                if last.topic == topic
                    && last.partition == partition
                    && last.action == action
                    && end.checked_add(1) == Some(offset)
                {
                    last.last_offset = Some(offset);
                    continue;
                }
            }
            runs.push(ShareAck {
                topic: topic.to_string(),
                partition,
                offset,
                last_offset: None,
                action,
                delay_ms: 0,
                reason: None,
            });
        }
        runs
    }
}

/// Content type of a binary share fetch: the refused acknowledgements, then per partition
/// the acquired ranges and the stored batches that hold them ([`ShareBatches`]).
pub const SHARE_BATCHES: &str = "application/vnd.sluice.share-batches";

/// The body of a binary share fetch. On the wire, integers big-endian:
///
/// ```text
/// refused count u32 · count × (topic length u16 · topic · partition u32 · offset u64 ·
///                              reason u8: 0 not_acquired, 1 out_of_window)
/// then one section per partition, to the end of the body:
/// topic length u16 · topic (UTF-8) · partition u32 ·
/// range count u32 · count × (first offset u64 · last offset u64 · delivery count u16) ·
/// batches length u32 · batches (the log's stored format, as GET /records sends them)
/// ```
///
/// The batches may hold records outside the ranges (a batch is sent whole): a client keeps
/// the records whose offsets are in a range, with that range's delivery count, as Kafka's
/// share consumer does.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct ShareFetchBody {
    pub refused: Vec<crate::queues::Refused>,
    pub sections: Vec<ShareBatches>,
}

/// One partition of a binary share fetch.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ShareBatches {
    pub topic: String,
    pub partition: u32,
    /// (first, last inclusive, delivery count).
    pub ranges: Vec<(u64, u64, u16)>,
    pub batches: Bytes,
}

fn put_topic(out: &mut Vec<u8>, topic: &str) {
    let topic = &topic.as_bytes()[..topic.len().min(u16::MAX as usize)];
    out.extend_from_slice(&(topic.len() as u16).to_be_bytes());
    out.extend_from_slice(topic);
}

/// Reads big-endian fields from a body, naming where it is cut short.
struct BodyReader<'a> {
    body: &'a Bytes,
    at: usize,
}

impl BodyReader<'_> {
    fn take(&mut self, n: usize) -> Result<std::ops::Range<usize>, String> {
        let end = self.at.checked_add(n).filter(|end| *end <= self.body.len());
        let end = end.ok_or_else(|| format!("a share fetch body cut short at byte {}", self.at))?;
        let range = self.at..end;
        self.at = end;
        Ok(range)
    }
    fn number(&mut self, n: usize) -> Result<u64, String> {
        let range = self.take(n)?;
        Ok(self.body[range]
            .iter()
            .fold(0u64, |v, b| (v << 8) | u64::from(*b)))
    }
    fn topic(&mut self) -> Result<String, String> {
        let len = self.number(2)? as usize;
        let range = self.take(len)?;
        String::from_utf8(self.body[range].to_vec())
            .map_err(|_| "a topic name that is not UTF-8".to_string())
    }
    fn left(&self) -> usize {
        self.body.len() - self.at
    }
}

impl ShareFetchBody {
    pub fn encode(&self) -> Vec<u8> {
        let mut out = Vec::new();
        out.extend_from_slice(&(self.refused.len() as u32).to_be_bytes());
        for r in &self.refused {
            put_topic(&mut out, &r.topic);
            out.extend_from_slice(&r.partition.to_be_bytes());
            out.extend_from_slice(&r.offset.to_be_bytes());
            out.push(match r.reason {
                crate::queues::AckRefusal::NotAcquired => 0,
                crate::queues::AckRefusal::OutOfWindow => 1,
            });
        }
        for s in &self.sections {
            put_topic(&mut out, &s.topic);
            out.extend_from_slice(&s.partition.to_be_bytes());
            out.extend_from_slice(&(s.ranges.len() as u32).to_be_bytes());
            for (first, last, count) in &s.ranges {
                out.extend_from_slice(&first.to_be_bytes());
                out.extend_from_slice(&last.to_be_bytes());
                out.extend_from_slice(&count.to_be_bytes());
            }
            out.extend_from_slice(&(s.batches.len() as u32).to_be_bytes());
            out.extend_from_slice(&s.batches);
        }
        out
    }

    /// The body decoded; an error names what is cut short or wrong.
    pub fn decode(body: &Bytes) -> Result<ShareFetchBody, String> {
        let mut r = BodyReader { body, at: 0 };
        let refused_count = r.number(4)? as usize;
        if refused_count > r.left() / 15 {
            return Err(format!("{refused_count} refusals do not fit in the body"));
        }
        let mut decoded = ShareFetchBody::default();
        for _ in 0..refused_count {
            let topic = r.topic()?;
            let partition = r.number(4)? as u32;
            let offset = r.number(8)?;
            let reason = match r.number(1)? {
                0 => crate::queues::AckRefusal::NotAcquired,
                1 => crate::queues::AckRefusal::OutOfWindow,
                other => return Err(format!("unknown refusal reason {other}")),
            };
            decoded.refused.push(crate::queues::Refused {
                topic,
                partition,
                offset,
                reason,
            });
        }
        while r.left() > 0 {
            let topic = r.topic()?;
            let partition = r.number(4)? as u32;
            let count = r.number(4)? as usize;
            if count > r.left() / 18 {
                return Err(format!("{count} ranges do not fit in the body"));
            }
            let mut ranges = Vec::with_capacity(count);
            for _ in 0..count {
                ranges.push((r.number(8)?, r.number(8)?, r.number(2)? as u16));
            }
            let len = r.number(4)? as usize;
            let batches = body.slice(r.take(len)?);
            decoded.sections.push(ShareBatches {
                topic,
                partition,
                ranges,
                batches,
            });
        }
        Ok(decoded)
    }
}

#[cfg(test)]
mod share_batches_tests {
    use super::*;
    use crate::queues::{AckRefusal, Refused};
    use proptest::prelude::*;

    fn section() -> impl Strategy<Value = ShareBatches> {
        (
            "[a-z.-]{1,30}",
            any::<u32>(),
            proptest::collection::vec((any::<u64>(), any::<u64>(), any::<u16>()), 0..20),
            proptest::collection::vec(any::<u8>(), 0..200),
        )
            .prop_map(|(topic, partition, ranges, batches)| ShareBatches {
                topic,
                partition,
                ranges,
                batches: Bytes::from(batches),
            })
    }

    fn refused() -> impl Strategy<Value = Refused> {
        ("[a-z]{1,10}", any::<u32>(), any::<u64>(), any::<bool>()).prop_map(
            |(topic, partition, offset, lost)| Refused {
                topic,
                partition,
                offset,
                reason: if lost {
                    AckRefusal::NotAcquired
                } else {
                    AckRefusal::OutOfWindow
                },
            },
        )
    }

    proptest! {
        #[test]
        fn share_fetch_bodies_round_trip_and_a_cut_body_is_never_garbage(
            refused in proptest::collection::vec(refused(), 0..4),
            sections in proptest::collection::vec(section(), 0..5),
            cut in any::<prop::sample::Index>(),
        ) {
            let body = ShareFetchBody { refused, sections };
            let bytes = Bytes::from(body.encode());
            prop_assert_eq!(&ShareFetchBody::decode(&bytes).unwrap(), &body);
            let cut = cut.index(bytes.len());
            // Cut anywhere: an error, or a prefix of the sections after every refusal.
            if let Ok(decoded) = ShareFetchBody::decode(&bytes.slice(..cut)) {
                prop_assert_eq!(&decoded.refused, &body.refused);
                prop_assert_eq!(&decoded.sections[..], &body.sections[..decoded.sections.len()]);
            }
        }
    }
}
