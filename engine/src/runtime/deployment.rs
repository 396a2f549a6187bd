//! The deployment data model: what `deployment.json` holds (versions, limits, delivery,
//! where to start), what a deploy asks for, what `plugin describe` shows, and the errors of the
//! control plane. Plain data with no threads: the plugin host and the workers both read it.

use std::collections::BTreeMap;
use std::path::Path;

use serde::{Deserialize, Serialize};

use super::RuntimeError;
use super::sandbox::{SandboxError, SandboxLimits};
use crate::log::LogError;
use crate::txn::{SnapshotError, StoreError};

/// Where a new group starts reading its input topic.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum StartFrom {
    /// The oldest record still in the log (Kafka's `earliest`).
    #[default]
    Earliest,
    /// The oldest record of the topic's Parquet archive (records retention deleted from the
    /// log), then on into the log; the log start when nothing is archived.
    Archive,
    /// Only records produced after the deploy.
    Latest,
    /// This offset in every partition (clamped to what the log and its archive hold).
    Offset(u64),
    /// The first record at or after this time (ms since the Unix epoch) in every partition.
    Timestamp(i64),
}

/// What a crash may do to a plugin group's effects (state writes, emitted records, offsets).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "kebab-case")]
pub enum Delivery {
    /// Every input record takes effect once: emitted records go through the outbox, committed
    /// with state and offsets (docs/exactly-once.md).
    #[default]
    ExactlyOnce,
    /// Emitted records are appended right after each batch, before the commit: a crash can
    /// repeat the records of the batches since the last commit. State stays exact.
    AtLeastOnce,
    /// Each batch's offset is committed before it is processed: a crash can lose the effects
    /// of the batches being processed, never repeat them.
    AtMostOnce,
}

impl std::str::FromStr for Delivery {
    type Err = String;
    fn from_str(text: &str) -> Result<Delivery, String> {
        match text {
            "exactly-once" => Ok(Delivery::ExactlyOnce),
            "at-least-once" => Ok(Delivery::AtLeastOnce),
            "at-most-once" => Ok(Delivery::AtMostOnce),
            other => Err(format!(
                "unknown delivery `{other}`: use exactly-once, at-least-once or at-most-once"
            )),
        }
    }
}

/// Limits, retry and delivery policy of a group; every field can be given at deploy.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct PluginLimits {
    /// Linear memory of the plugin.
    pub memory_mb: u64,
    /// Wall-clock time one `process` call may take.
    pub deadline_ms: u64,
    /// Records one `process` call may emit.
    pub max_emitted_records: u64,
    /// Bytes one `process` call may emit.
    pub max_emitted_bytes: u64,
    /// Calls a failing batch gets before the engine isolates the poison record.
    pub max_attempts: u32,
    /// Wait before the first retry; doubles with each retry, up to 30 s.
    pub retry_backoff_ms: u64,
    /// Most records in one `process` call.
    pub batch_records: u32,
    /// Longest time processed batches wait to be committed together (one durable commit for
    /// all of them); an idle group commits at once.
    pub commit_interval_ms: u64,
    pub delivery: Delivery,
    /// Bytes (keys and values) the group's committed state may hold: a batch that would grow
    /// it past this fails, so a plugin cannot take the disk.
    pub max_state_bytes: u64,
    /// Growth of an instance's linear memory since it started past which it is replaced by a
    /// fresh instance between batches, after a commit (0: never). No call fails: a language
    /// runtime that leaks (componentize-py keeps the arguments of every import call) stays
    /// far from `memory_mb`, at the cost of the plugin's own caches starting cold.
    pub recycle_growth_mb: u64,
}

/// The default of `max_state_bytes`: 1 GiB.
pub const STATE_BYTES_DEFAULT: u64 = 1 << 30;

impl Default for PluginLimits {
    fn default() -> Self {
        let sandbox = SandboxLimits::default();
        PluginLimits {
            memory_mb: (sandbox.memory_bytes >> 20) as u64,
            deadline_ms: sandbox.deadline.as_millis() as u64,
            max_emitted_records: sandbox.max_emitted_records as u64,
            max_emitted_bytes: sandbox.max_emitted_bytes as u64,
            max_attempts: 3,
            retry_backoff_ms: 200,
            batch_records: 1_000,
            commit_interval_ms: 100,
            delivery: Delivery::ExactlyOnce,
            max_state_bytes: STATE_BYTES_DEFAULT,
            recycle_growth_mb: 32,
        }
    }
}

impl PluginLimits {
    pub fn sandbox(&self) -> SandboxLimits {
        SandboxLimits {
            memory_bytes: (self.memory_mb << 20) as usize,
            deadline: std::time::Duration::from_millis(self.deadline_ms),
            max_emitted_records: self.max_emitted_records as usize,
            max_emitted_bytes: self.max_emitted_bytes as usize,
        }
    }

    /// Whether an instance that started with `started_bytes` of linear memory and holds
    /// `memory_bytes` now is due to be replaced by a fresh one (see `recycle_growth_mb`).
    pub fn recycle_due(&self, started_bytes: u64, memory_bytes: u64) -> bool {
        let growth_bytes_max = self.recycle_growth_mb << 20;
        growth_bytes_max > 0 && memory_bytes > started_bytes.saturating_add(growth_bytes_max)
    }

    pub fn validate(&self) -> Result<(), DeployError> {
        let checks = [
            (self.memory_mb >= 1, "memory_mb must be at least 1"),
            (self.deadline_ms >= 10, "deadline_ms must be at least 10"),
            (self.max_attempts >= 1, "max_attempts must be at least 1"),
            (
                (1..=100_000).contains(&self.batch_records),
                "batch_records must be between 1 and 100000",
            ),
        ];
        match checks.iter().find(|(ok, _)| !ok) {
            Some((_, message)) => Err(DeployError::BadSetting(message.to_string())),
            None => Ok(()),
        }
    }
}

/// Limits given at deploy; unset fields keep the group's (or the engine's default).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct LimitOverrides {
    pub memory_mb: Option<u64>,
    pub deadline_ms: Option<u64>,
    pub max_emitted_records: Option<u64>,
    pub max_emitted_bytes: Option<u64>,
    pub max_attempts: Option<u32>,
    pub retry_backoff_ms: Option<u64>,
    pub batch_records: Option<u32>,
    pub commit_interval_ms: Option<u64>,
    pub delivery: Option<Delivery>,
    pub max_state_bytes: Option<u64>,
    pub recycle_growth_mb: Option<u64>,
}

impl LimitOverrides {
    pub(crate) fn apply(&self, base: PluginLimits) -> PluginLimits {
        PluginLimits {
            memory_mb: self.memory_mb.unwrap_or(base.memory_mb),
            deadline_ms: self.deadline_ms.unwrap_or(base.deadline_ms),
            max_emitted_records: self.max_emitted_records.unwrap_or(base.max_emitted_records),
            max_emitted_bytes: self.max_emitted_bytes.unwrap_or(base.max_emitted_bytes),
            max_attempts: self.max_attempts.unwrap_or(base.max_attempts),
            retry_backoff_ms: self.retry_backoff_ms.unwrap_or(base.retry_backoff_ms),
            batch_records: self.batch_records.unwrap_or(base.batch_records),
            commit_interval_ms: self.commit_interval_ms.unwrap_or(base.commit_interval_ms),
            delivery: self.delivery.unwrap_or(base.delivery),
            max_state_bytes: self.max_state_bytes.unwrap_or(base.max_state_bytes),
            recycle_growth_mb: self.recycle_growth_mb.unwrap_or(base.recycle_growth_mb),
        }
    }
}

/// One uploaded version of a group's plugin.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct VersionInfo {
    pub version: u32,
    /// SHA-256 of the component.
    pub digest: String,
    pub size_bytes: u64,
    /// The settings given to the plugin's `init`.
    pub config: BTreeMap<String, String>,
    /// Topics the plugin may emit to.
    pub output_topics: Vec<String>,
    pub deployed_ms: i64,
}

/// What `deployment.json` holds.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Deployment {
    pub group: String,
    pub topic: String,
    pub start: StartFrom,
    pub limits: PluginLimits,
    pub versions: Vec<VersionInfo>,
    pub active_version: u32,
    pub paused: bool,
}

impl Deployment {
    pub fn dlq_topic(&self) -> String {
        dlq_topic(&self.group)
    }

    pub fn version(&self, version: u32) -> Option<&VersionInfo> {
        self.versions.iter().find(|v| v.version == version)
    }

    /// The version a rollback returns to: `version`, else the newest before the active one.
    pub fn rollback_target(&self, version: Option<u32>) -> Result<u32, DeployError> {
        match version {
            Some(v) => {
                self.version(v)
                    .map(|v| v.version)
                    .ok_or_else(|| DeployError::UnknownVersion {
                        group: self.group.clone(),
                        version: v,
                        available: self.versions.iter().map(|v| v.version).collect(),
                    })
            }
            None => self
                .versions
                .iter()
                .map(|v| v.version)
                .filter(|&v| v < self.active_version)
                .max()
                .ok_or_else(|| DeployError::NoPreviousVersion(self.group.clone())),
        }
    }

    pub fn active(&self) -> &VersionInfo {
        self.version(self.active_version)
            .expect("the active version is one of the versions")
    }
}

/// The dead-letter topic of a group.
pub fn dlq_topic(group: &str) -> String {
    format!("{group}.dlq")
}

/// A deploy request, without the component's bytes.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(default)]
pub struct DeploySpec {
    pub topic: String,
    pub output_topics: Vec<String>,
    pub config: BTreeMap<String, String>,
    pub from: Option<StartFrom>,
    pub limits: LimitOverrides,
}

#[derive(Debug, thiserror::Error)]
pub enum DeployError {
    #[error(
        "invalid group name `{0}`: use 1-{max} letters, digits, `.`, `_` or `-`, not starting with `.` or `_`",
        max = crate::log::NAME_LEN_MAX
    )]
    InvalidGroupName(String),
    #[error("no plugin is deployed for group `{0}`; see `sluice plugin list`")]
    UnknownGroup(String),
    #[error(
        "the upload is {size} bytes, over the limit of {limit} bytes; raise [plugins] max_upload_bytes or make the component smaller (build with --release, strip debug info)"
    )]
    TooLarge { size: u64, limit: u64 },
    #[error(transparent)]
    Invalid(#[from] RuntimeError),
    #[error("the plugin does not start: {0}")]
    Start(SandboxError),
    #[error(
        "group `{group}` consumes topic `{current}`, not `{requested}`; undeploy it first or use another group name"
    )]
    TopicMismatch {
        group: String,
        current: String,
        requested: String,
    },
    #[error("output topic `{0}` does not exist; create it first with `sluice topic create {0}`")]
    UnknownOutput(String),
    #[error("group `{group}` has no version {version}; it has {available:?}")]
    UnknownVersion {
        group: String,
        version: u32,
        available: Vec<u32>,
    },
    #[error("group `{0}` has no version before the active one to roll back to")]
    NoPreviousVersion(String),
    #[error("bad setting: {0}")]
    BadSetting(String),
    #[error(transparent)]
    Log(#[from] LogError),
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    State(#[from] crate::txn::state::StateError),
    #[error(transparent)]
    Snapshot(#[from] SnapshotError),
}

/// A group as `plugin list` and `plugin describe` show it.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct PluginDescription {
    pub group: String,
    pub topic: String,
    pub dlq_topic: String,
    pub active_version: u32,
    /// The version processing now (differs from the active one while a switch is pending).
    pub running_version: Option<u32>,
    pub paused: bool,
    /// running, paused, starting, retrying or failing, with the reason.
    pub status: String,
    pub last_error: Option<String>,
    pub limits: PluginLimits,
    pub versions: Vec<VersionInfo>,
    pub partitions: Vec<PartitionProgress>,
    pub total_lag: u64,
    pub processed_records: u64,
    pub emitted_records: u64,
    pub dead_letters: u64,
    pub failed_calls: u64,
    pub state_entries: u64,
    pub state_bytes: u64,
    /// Linear memory of the running instance (all its memories), after its last call; 0 when
    /// none runs. `#[serde(default)]`: answers of earlier engines lack it.
    #[serde(default)]
    pub instance_memory_bytes: u64,
    /// Instances replaced by fresh ones since the engine started, because their memory grew
    /// past `recycle_growth_mb`.
    #[serde(default)]
    pub instance_recycles: u64,
    /// Calls of the plugin on a batch since the engine started, failed ones included.
    #[serde(default)]
    pub batches: u64,
    /// Calls made again after a failure, and engine failures waited out.
    #[serde(default)]
    pub retries: u64,
    /// Failed calls by kind: trap, deadline, memory, quota, failed (the plugin's own error),
    /// init, engine.
    #[serde(default)]
    pub errors: BTreeMap<String, u64>,
    /// Dead-letter replay: next dead-letter offset and where the replay ends.
    pub dlq_replay: Option<(u64, u64)>,
    /// Commits whose emitted records are not yet known to be in their topics; with
    /// `total_lag` and `in_progress_records`, 0 means every effect of the input so far is
    /// visible.
    pub outbox_pending: u64,
    /// Records taken whose batch has not yet committed its effects. Only at-most-once has
    /// any at a lag of 0: it commits its position before the batch runs (a crash loses the
    /// batch). `#[serde(default)]`: answers of earlier engines lack it.
    #[serde(default)]
    pub in_progress_records: u64,
    /// In cluster mode, what each live worker does for the group (empty on a single engine).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub workers: Vec<WorkerProgress>,
}

/// What one cluster worker reports of a group: its partitions with their lag, and its
/// counters since it started.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct WorkerProgress {
    pub worker_id: String,
    pub status: String,
    pub running_version: Option<u32>,
    pub partitions: Vec<PartitionProgress>,
    pub processed_records: u64,
    pub emitted_records: u64,
    pub dead_letters: u64,
    pub transactions: u64,
    pub aborted_transactions: u64,
    /// When the worker reported this (ms since the Unix epoch).
    pub updated_ms: i64,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PartitionProgress {
    pub partition: u32,
    pub committed: Option<u64>,
    pub high_watermark: u64,
    pub lag: u64,
}

pub(crate) fn check_topic(
    group: &str,
    current: &Deployment,
    spec: &DeploySpec,
) -> Result<(), DeployError> {
    if current.topic == spec.topic {
        return Ok(());
    }
    Err(DeployError::TopicMismatch {
        group: group.to_string(),
        current: current.topic.clone(),
        requested: spec.topic.clone(),
    })
}

/// The number of the next version of a group: one past the highest so far.
pub(crate) fn next_version_number(existing: Option<&Deployment>) -> u32 {
    existing
        .and_then(|d| d.versions.iter().map(|v| v.version).max())
        .unwrap_or(0)
        + 1
}

/// Refuses a deploy whose group name is not a valid name or whose component is larger than
/// `max_upload_bytes`.
pub(crate) fn check_upload(
    group: &str,
    wasm: &[u8],
    max_upload_bytes: u64,
) -> Result<(), DeployError> {
    crate::log::validate_name(group)
        .map_err(|_| DeployError::InvalidGroupName(group.to_string()))?;
    if wasm.len() as u64 > max_upload_bytes {
        return Err(DeployError::TooLarge {
            size: wasm.len() as u64,
            limit: max_upload_bytes,
        });
    }
    Ok(())
}

/// Starts the plugin once with a scratch state, so that a bad configuration is refused
/// before a deploy changes anything.
pub(crate) fn trial_start(
    runtime: &super::Runtime,
    group: &str,
    plugin: &super::Plugin,
    limits: &PluginLimits,
    spec: &DeploySpec,
) -> Result<(), DeployError> {
    let trial = super::SandboxIdentity {
        group,
        version: "trial",
        log_sink: None,
    };
    super::Sandbox::start(
        runtime,
        plugin,
        limits.sandbox(),
        trial,
        std::sync::Arc::new(crate::txn::state::MemoryState::default()),
        &settings(&spec.config),
    )
    .map(drop)
    .map_err(DeployError::Start)
}

/// Settings in the form `init` takes them.
pub(crate) fn settings(config: &BTreeMap<String, String>) -> Vec<(String, String)> {
    config.iter().map(|(k, v)| (k.clone(), v.clone())).collect()
}

/// Why a `deployment.json` cannot be read back.
#[derive(Debug, thiserror::Error)]
pub enum ReadDeploymentError {
    #[error(transparent)]
    Io(#[from] std::io::Error),
    #[error(transparent)]
    Json(#[from] serde_json::Error),
    #[error("active version {0} is not among its versions")]
    NoActiveVersion(u32),
}

pub(super) fn read_deployment(path: &Path) -> Result<Deployment, ReadDeploymentError> {
    let bytes = std::fs::read(path)?;
    let deployment: Deployment = serde_json::from_slice(&bytes)?;
    if deployment.version(deployment.active_version).is_none() {
        return Err(ReadDeploymentError::NoActiveVersion(
            deployment.active_version,
        ));
    }
    Ok(deployment)
}
