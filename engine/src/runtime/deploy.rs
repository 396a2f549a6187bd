//! Plugin deployments on a running engine: one consumer group per deployment, each with its
//! worker thread, its versions (all kept, one active), pause, rollback and dead-letter replay.
//!
//! A deployment is a directory `plugins/<group>/` in the data directory: `deployment.json`
//! (written atomically) and the uploaded components, named by their SHA-256. Compiled code is
//! cached in `plugins/.compiled/`. Deployments are started again when the engine restarts.

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use serde::{Deserialize, Serialize};
use tokio::sync::watch;

use super::worker::{self, Desired, GroupShared};
use super::{LogLine, MemoryState, Plugin, Runtime, RuntimeError};
use super::{Sandbox, SandboxError, SandboxIdentity, SandboxLimits};
use crate::log::{Log, LogError, now_ms, write_atomically};
use crate::txn::{Position, SnapshotError, SnapshotInfo, StoreError, TxnStore};

/// Where a new group starts reading its input topic.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum StartFrom {
    /// The oldest record still in the log.
    #[default]
    Earliest,
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
}

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

    fn validate(&self) -> Result<(), DeployError> {
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
}

impl LimitOverrides {
    fn apply(&self, base: PluginLimits) -> PluginLimits {
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
        "invalid group name `{0}`: use 1-200 letters, digits, `.`, `_` or `-`, not starting with `.` or `_`"
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
    /// Dead-letter replay: next dead-letter offset and where the replay ends.
    pub dlq_replay: Option<(u64, u64)>,
    /// Commits whose emitted records are not yet known to be in their topics; with
    /// `total_lag`, 0 means every effect of the input so far is visible.
    pub outbox_pending: u64,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct PartitionProgress {
    pub partition: u32,
    pub committed: Option<u64>,
    pub high_watermark: u64,
    pub lag: u64,
}

struct Group {
    control: watch::Sender<Desired>,
    shared: Arc<GroupShared>,
    thread: Option<std::thread::JoinHandle<()>>,
}

/// Every deployment of the engine and its worker.
pub struct PluginHost {
    dir: PathBuf,
    runtime: Arc<Runtime>,
    log: Arc<Log>,
    store: Arc<TxnStore>,
    defaults: PluginLimits,
    max_upload_bytes: u64,
    handle: tokio::runtime::Handle,
    /// Held while a deployment changes, so changes to one group apply in order.
    groups: Mutex<BTreeMap<String, Group>>,
    plugins: Arc<PluginCache>,
}

/// Compiled plugins by digest, shared with the workers: a version is compiled once per engine
/// run (and loaded from the compiled-code cache after a restart).
pub(super) struct PluginCache {
    dir: PathBuf,
    runtime: Arc<Runtime>,
    compiled: Mutex<HashMap<String, Plugin>>,
}

impl PluginCache {
    fn insert(&self, plugin: &Plugin) {
        self.compiled
            .lock()
            .expect("compiled lock")
            .insert(plugin.digest.to_string(), plugin.clone());
    }

    /// The compiled plugin of one of `group`'s versions.
    pub(super) fn get(&self, group: &str, digest: &str) -> Result<Plugin, String> {
        if let Some(plugin) = self.compiled.lock().expect("compiled lock").get(digest) {
            return Ok(plugin.clone());
        }
        let path = self.dir.join(group).join(format!("{digest}.wasm"));
        let wasm = std::fs::read(&path).map_err(|e| format!("{}: {e}", path.display()))?;
        let plugin = self.runtime.compile(&wasm).map_err(|e| e.to_string())?;
        self.insert(&plugin);
        Ok(plugin)
    }
}

impl PluginHost {
    /// Opens `plugins/` and `plugins.redb` in the data directory and starts every deployment.
    pub fn open(
        data_dir: &Path,
        log: Arc<Log>,
        defaults: PluginLimits,
        max_upload_bytes: u64,
        handle: tokio::runtime::Handle,
    ) -> Result<Arc<PluginHost>, DeployError> {
        let dir = data_dir.join("plugins");
        std::fs::create_dir_all(&dir).map_err(|e| LogError::io(&dir, e))?;
        let runtime = Arc::new(Runtime::new(Some(&dir.join(".compiled")))?);
        let store = TxnStore::open(&data_dir.join("plugins.redb"))?;
        let plugins = Arc::new(PluginCache {
            dir: dir.clone(),
            runtime: runtime.clone(),
            compiled: Mutex::new(HashMap::new()),
        });
        let host = Arc::new(PluginHost {
            dir,
            runtime,
            log,
            store,
            defaults,
            max_upload_bytes,
            handle,
            groups: Mutex::new(BTreeMap::new()),
            plugins,
        });
        let entries = std::fs::read_dir(&host.dir).map_err(|e| LogError::io(&host.dir, e))?;
        for entry in entries.flatten() {
            let path = entry.path().join("deployment.json");
            if !path.exists() {
                continue;
            }
            match read_deployment(&path) {
                Ok(deployment) => {
                    tracing::info!(group = %deployment.group, version = deployment.active_version, "starting deployed plugin");
                    let mut groups = host.groups.lock().expect("groups lock");
                    host.start_worker(&mut groups, deployment);
                }
                Err(error) => {
                    tracing::error!(file = %path.display(), %error, "cannot read a deployment; it is not started (fix or remove the file)")
                }
            }
        }
        Ok(host)
    }

    pub fn runtime(&self) -> &Arc<Runtime> {
        &self.runtime
    }

    fn group_dir(&self, group: &str) -> PathBuf {
        self.dir.join(group)
    }

    /// Deploys a plugin: a new group, or a new version of an existing one (which the worker
    /// switches to after its current batch commits). Blocking: compiles the component and
    /// starts it once to check it; nothing changes if either fails.
    pub fn deploy(
        &self,
        group: &str,
        spec: DeploySpec,
        wasm: &[u8],
    ) -> Result<PluginDescription, DeployError> {
        crate::log::validate_name(group)
            .map_err(|_| DeployError::InvalidGroupName(group.to_string()))?;
        if wasm.len() as u64 > self.max_upload_bytes {
            return Err(DeployError::TooLarge {
                size: wasm.len() as u64,
                limit: self.max_upload_bytes,
            });
        }
        self.log.topic(&spec.topic)?;
        for output in &spec.output_topics {
            if self.log.topic(output).is_err() {
                return Err(DeployError::UnknownOutput(output.clone()));
            }
        }
        let plugin = self.runtime.compile(wasm)?;
        let check_topic = |current: &Deployment| {
            if current.topic == spec.topic {
                Ok(())
            } else {
                Err(DeployError::TopicMismatch {
                    group: group.to_string(),
                    current: current.topic.clone(),
                    requested: spec.topic.clone(),
                })
            }
        };
        let base = match self.deployment(group) {
            Some(current) => {
                check_topic(&current)?;
                current.limits
            }
            None => self.defaults,
        };
        let limits = spec.limits.apply(base);
        limits.validate()?;
        // Started once with a scratch state, so that a bad configuration is refused here;
        // outside the lock, as `init` may take up to the deadline.
        let trial = SandboxIdentity {
            group,
            version: "trial",
            log_sink: None,
        };
        Sandbox::start(
            &self.runtime,
            &plugin,
            limits.sandbox(),
            trial,
            Arc::new(MemoryState::default()),
            &settings(&spec.config),
        )
        .map_err(DeployError::Start)?;

        let mut groups = self.groups.lock().expect("groups lock");
        let existing = groups
            .get(group)
            .map(|g| g.control.borrow().deployment.clone());
        if let Some(current) = &existing {
            check_topic(current)?;
        }
        let dir = self.group_dir(group);
        std::fs::create_dir_all(&dir).map_err(|e| LogError::io(&dir, e))?;
        let wasm_path = dir.join(format!("{}.wasm", plugin.digest));
        if !wasm_path.exists() {
            write_atomically(&wasm_path, wasm)?;
        }
        self.plugins.insert(&plugin);
        let dlq = dlq_topic(group);
        if self.log.topic(&dlq).is_err() {
            match self.log.create_topic(&dlq, 1, &[]) {
                Ok(_) | Err(LogError::TopicExists(_)) => {}
                Err(error) => return Err(error.into()),
            }
        }
        let number = existing
            .as_ref()
            .and_then(|d| d.versions.iter().map(|v| v.version).max())
            .unwrap_or(0)
            + 1;
        let version = VersionInfo {
            version: number,
            digest: plugin.digest.to_string(),
            size_bytes: wasm.len() as u64,
            config: spec.config,
            output_topics: spec.output_topics,
            deployed_ms: now_ms(),
        };
        let deployment = match existing {
            Some(mut deployment) => {
                // The state as the previous version left it (as of its last commit), to roll
                // back to if the new version gets it wrong.
                self.store.take_snapshot(
                    group,
                    &format!("before-v{number}"),
                    deployment.active_version,
                    now_ms(),
                )?;
                deployment.versions.push(version);
                deployment.active_version = number;
                deployment.limits = limits;
                deployment
            }
            None => {
                let start = spec.from.unwrap_or_default();
                self.commit_start_positions(group, &spec.topic, start)?;
                Deployment {
                    group: group.to_string(),
                    topic: spec.topic,
                    start,
                    limits,
                    versions: vec![version],
                    active_version: number,
                    paused: false,
                }
            }
        };
        self.save(&deployment)?;
        tracing::info!(group, version = number, digest = %plugin.digest, "deployed plugin");
        match groups.get(group) {
            Some(running) => {
                running.shared.engine_line(
                    "info",
                    &format!("version {number} deployed; switching after the current batch"),
                );
                running.control.send_modify(|d| d.deployment = deployment);
            }
            None => self.start_worker(&mut groups, deployment),
        }
        drop(groups);
        self.describe(group)
    }

    /// The current deployment of a group.
    fn deployment(&self, group: &str) -> Option<Deployment> {
        let groups = self.groups.lock().expect("groups lock");
        groups
            .get(group)
            .map(|g| g.control.borrow().deployment.clone())
    }

    /// Positions where a new group starts, committed before its worker runs so that a restart
    /// does not move them (`latest` means the end at deploy time).
    fn commit_start_positions(
        &self,
        group: &str,
        topic: &str,
        start: StartFrom,
    ) -> Result<(), DeployError> {
        self.store.forget(group, false)?;
        let topic_handle = self.log.topic(topic)?;
        let mut offsets = Vec::new();
        for partition in topic_handle.partitions() {
            let (low, high) = (partition.log_start_offset(), partition.high_watermark());
            let offset = match start {
                StartFrom::Earliest => low,
                StartFrom::Latest => high,
                // An offset older than the log is replayed from the archive, if it holds it.
                StartFrom::Offset(offset) => offset.clamp(partition.earliest_offset(), high),
                StartFrom::Timestamp(ms) => partition.offset_for_timestamp(ms)?,
            };
            offsets.push((partition.id, offset));
        }
        let positions: Vec<Position> = offsets
            .iter()
            .map(|&(partition, next_offset)| Position {
                topic,
                partition,
                next_offset,
            })
            .collect();
        self.store.commit(
            group,
            &positions,
            &Default::default(),
            crate::txn::CommitExtras::default(),
        )?;
        Ok(())
    }

    fn save(&self, deployment: &Deployment) -> Result<(), DeployError> {
        let path = self.group_dir(&deployment.group).join("deployment.json");
        let json = serde_json::to_vec_pretty(deployment).expect("a deployment serializes");
        write_atomically(&path, &json)?;
        Ok(())
    }

    fn start_worker(&self, groups: &mut BTreeMap<String, Group>, deployment: Deployment) {
        let group = deployment.group.clone();
        let shared = Arc::new(GroupShared::default());
        let (control, receiver) = watch::channel(Desired {
            deployment,
            stop: false,
            replay_requested: 0,
            replay_end: 0,
        });
        let context = worker::Context {
            group: group.clone(),
            log: self.log.clone(),
            store: self.store.clone(),
            runtime: self.runtime.clone(),
            plugins: self.plugins.clone(),
            handle: self.handle.clone(),
            shared: shared.clone(),
        };
        let thread = worker::spawn(context, receiver);
        groups.insert(
            group,
            Group {
                control,
                shared,
                thread: Some(thread),
            },
        );
    }

    /// Changes a deployment and hands the new version to its worker.
    fn change(
        &self,
        group: &str,
        edit: impl FnOnce(&mut Deployment) -> Result<String, DeployError>,
    ) -> Result<PluginDescription, DeployError> {
        let groups = self.groups.lock().expect("groups lock");
        let running = running(&groups, group)?;
        let mut deployment = running.control.borrow().deployment.clone();
        let message = edit(&mut deployment)?;
        self.save(&deployment)?;
        tracing::info!(group, "{message}");
        running.shared.engine_line("info", &message);
        running.control.send_modify(|d| d.deployment = deployment);
        drop(groups);
        self.describe(group)
    }

    pub fn pause(&self, group: &str) -> Result<PluginDescription, DeployError> {
        self.change(group, |d| {
            d.paused = true;
            Ok("paused; the current batch finishes first".to_string())
        })
    }

    pub fn resume(&self, group: &str) -> Result<PluginDescription, DeployError> {
        self.change(group, |d| {
            d.paused = false;
            Ok("resumed".to_string())
        })
    }

    /// Makes `version` (by default the one deployed before the active one) active again.
    pub fn rollback(
        &self,
        group: &str,
        version: Option<u32>,
    ) -> Result<PluginDescription, DeployError> {
        self.change(group, |d| {
            let target = match version {
                Some(v) => d.version(v).map(|v| v.version).ok_or_else(|| {
                    DeployError::UnknownVersion {
                        group: d.group.clone(),
                        version: v,
                        available: d.versions.iter().map(|v| v.version).collect(),
                    }
                })?,
                None => d
                    .versions
                    .iter()
                    .map(|v| v.version)
                    .filter(|&v| v < d.active_version)
                    .max()
                    .ok_or_else(|| DeployError::NoPreviousVersion(d.group.clone()))?,
            };
            let from = d.active_version;
            d.active_version = target;
            Ok(format!(
                "rolled back from version {from} to version {target}; switching after the current batch"
            ))
        })
    }

    /// Takes a snapshot of the group's committed state and offsets, named `name`.
    pub fn snapshot(&self, group: &str, name: &str) -> Result<SnapshotInfo, DeployError> {
        crate::log::validate_name(name).map_err(|_| {
            DeployError::BadSetting(format!(
                "snapshot name `{name}`: use 1-200 letters, digits, `.`, `_` or `-`"
            ))
        })?;
        let groups = self.groups.lock().expect("groups lock");
        let running = running(&groups, group)?;
        let version = running.control.borrow().deployment.active_version;
        let info = self.store.take_snapshot(group, name, version, now_ms())?;
        running.shared.engine_line(
            "info",
            &format!("snapshot `{name}` taken at the last commit"),
        );
        Ok(info)
    }

    pub fn snapshots(&self, group: &str) -> Result<Vec<SnapshotInfo>, DeployError> {
        running(&self.groups.lock().expect("groups lock"), group)?;
        Ok(self.store.snapshots(group)?)
    }

    /// Stops the group's worker (it commits first), puts back the state, offsets and replay
    /// cursor of snapshot `name`, activates `version` (default: the one active when the
    /// snapshot was taken) and starts the worker again: the records after the snapshot's
    /// offsets are processed again, by that version.
    pub fn rollback_to_snapshot(
        &self,
        group: &str,
        name: &str,
        version: Option<u32>,
    ) -> Result<PluginDescription, DeployError> {
        let mut groups = self.groups.lock().expect("groups lock");
        let running = running(&groups, group)?;
        let snapshot = self.store.snapshot(group, name)?;
        let mut deployment = running.control.borrow().deployment.clone();
        let target = version.unwrap_or(snapshot.version);
        if deployment.version(target).is_none() {
            return Err(DeployError::UnknownVersion {
                group: group.to_string(),
                version: target,
                available: deployment.versions.iter().map(|v| v.version).collect(),
            });
        }
        let mut stopped = groups.remove(group).expect("checked above");
        stopped.control.send_modify(|d| d.stop = true);
        if let Some(thread) = stopped.thread.take() {
            let _ = thread.join();
        }
        let restored = self.store.restore_snapshot(group, name);
        if restored.is_ok() {
            deployment.active_version = target;
        }
        let saved = self.save(&deployment);
        // Whatever happened, the group runs again (on its old state if the restore failed).
        self.start_worker(&mut groups, deployment);
        restored?;
        saved?;
        let message = format!(
            "rolled back to snapshot `{name}` with version {target}: records after its offsets are processed again"
        );
        tracing::info!(group, "{message}");
        if let Some(running) = groups.get(group) {
            running.shared.engine_line("info", &message);
        }
        drop(groups);
        self.describe(group)
    }

    /// Asks the worker to put the group's dead letters (those there now) through the plugin
    /// again; records that fail again go back to the dead-letter topic.
    pub fn replay_dead_letters(&self, group: &str) -> Result<PluginDescription, DeployError> {
        let groups = self.groups.lock().expect("groups lock");
        let running = running(&groups, group)?;
        let dlq = self.log.topic(&dlq_topic(group))?.partition(0)?;
        let end = dlq.high_watermark();
        let cursor = match self.store.dlq_replay(group)? {
            Some((cursor, _)) => cursor.max(dlq.log_start_offset()),
            None => dlq.log_start_offset(),
        };
        running
            .shared
            .engine_line("info", &format!("replaying dead letters up to {end}"));
        // The worker owns the cursor (it commits it with its progress): it takes the request.
        running.control.send_modify(|d| {
            d.replay_requested += 1;
            d.replay_end = end;
        });
        drop(groups);
        let mut description = self.describe(group)?;
        description.dlq_replay = Some((cursor, end));
        Ok(description)
    }

    /// Stops the group's worker and removes the deployment, its offsets and (unless
    /// `keep_state`) its state. The dead-letter topic stays.
    pub fn undeploy(&self, group: &str, keep_state: bool) -> Result<(), DeployError> {
        let mut groups = self.groups.lock().expect("groups lock");
        let mut running = groups
            .remove(group)
            .ok_or_else(|| DeployError::UnknownGroup(group.to_string()))?;
        running.control.send_modify(|d| d.stop = true);
        if let Some(thread) = running.thread.take() {
            let _ = thread.join();
        }
        self.store.forget(group, keep_state)?;
        let dir = self.group_dir(group);
        std::fs::remove_dir_all(&dir).map_err(|e| LogError::io(&dir, e))?;
        tracing::info!(group, keep_state, "undeployed plugin");
        Ok(())
    }

    pub fn is_deployed(&self, group: &str) -> bool {
        self.groups.lock().expect("groups lock").contains_key(group)
    }

    pub fn list(&self) -> Vec<PluginDescription> {
        let names: Vec<String> = self
            .groups
            .lock()
            .expect("groups lock")
            .keys()
            .cloned()
            .collect();
        names
            .iter()
            .filter_map(|name| self.describe(name).ok())
            .collect()
    }

    pub fn describe(&self, group: &str) -> Result<PluginDescription, DeployError> {
        let (deployment, shared) = {
            let groups = self.groups.lock().expect("groups lock");
            let running = running(&groups, group)?;
            (
                running.control.borrow().deployment.clone(),
                running.shared.clone(),
            )
        };
        let committed = self.store.offsets(group)?;
        let mut partitions = Vec::new();
        if let Ok(topic) = self.log.topic(&deployment.topic) {
            for partition in topic.partitions() {
                let committed = committed
                    .iter()
                    .find(|(t, p, _)| *t == deployment.topic && *p == partition.id)
                    .map(|(_, _, offset)| *offset);
                let high_watermark = partition.high_watermark();
                let from = committed.unwrap_or(partition.log_start_offset());
                partitions.push(PartitionProgress {
                    partition: partition.id,
                    committed,
                    high_watermark,
                    lag: high_watermark.saturating_sub(from),
                });
            }
        }
        let (state_entries, state_bytes) = self.store.state_size(group)?;
        let stats = shared.snapshot();
        Ok(PluginDescription {
            group: deployment.group.clone(),
            topic: deployment.topic.clone(),
            dlq_topic: deployment.dlq_topic(),
            active_version: deployment.active_version,
            running_version: stats.running_version,
            paused: deployment.paused,
            status: stats.status,
            last_error: stats.last_error,
            limits: deployment.limits,
            versions: deployment.versions.clone(),
            total_lag: partitions.iter().map(|p| p.lag).sum(),
            partitions,
            processed_records: stats.processed_records,
            emitted_records: stats.emitted_records,
            dead_letters: stats.dead_letters,
            failed_calls: stats.failed_calls,
            state_entries,
            state_bytes,
            dlq_replay: self.store.dlq_replay(group)?,
            outbox_pending: self.store.outbox_len(group)?,
        })
    }

    /// Up to `limit` entries of a group's committed state whose key starts with `prefix`, after
    /// `start_after`. Works for undeployed groups whose state was kept.
    pub fn state(
        &self,
        group: &str,
        prefix: &[u8],
        start_after: Option<&[u8]>,
        limit: usize,
    ) -> Result<Vec<(Vec<u8>, Vec<u8>)>, DeployError> {
        use super::StateStore;
        self.store
            .state_of(group)
            .scan(prefix, start_after, limit)
            .map_err(|message| DeployError::BadSetting(format!("state store: {message}")))
    }

    /// The last `limit` log lines of a group.
    pub fn logs(&self, group: &str, limit: usize) -> Result<Vec<LogLine>, DeployError> {
        let groups = self.groups.lock().expect("groups lock");
        let running = running(&groups, group)?;
        Ok(running.shared.logs.tail(limit))
    }

    /// Stops every worker after its current batch; called at shutdown.
    pub fn stop(&self) {
        let mut groups = self.groups.lock().expect("groups lock");
        for group in groups.values() {
            group.control.send_modify(|d| d.stop = true);
        }
        for group in groups.values_mut() {
            if let Some(thread) = group.thread.take() {
                let _ = thread.join();
            }
        }
    }
}

/// Settings in the form `init` takes them.
pub(super) fn settings(config: &BTreeMap<String, String>) -> Vec<(String, String)> {
    config.iter().map(|(k, v)| (k.clone(), v.clone())).collect()
}

/// A deployed group, or the error naming it.
fn running<'a>(groups: &'a BTreeMap<String, Group>, group: &str) -> Result<&'a Group, DeployError> {
    groups
        .get(group)
        .ok_or_else(|| DeployError::UnknownGroup(group.to_string()))
}

fn read_deployment(path: &Path) -> Result<Deployment, String> {
    let bytes = std::fs::read(path).map_err(|e| e.to_string())?;
    let deployment: Deployment = serde_json::from_slice(&bytes).map_err(|e| e.to_string())?;
    if deployment.version(deployment.active_version).is_none() {
        return Err(format!(
            "active version {} is not among its versions",
            deployment.active_version
        ));
    }
    Ok(deployment)
}

impl GroupShared {
    /// Records a line about the group from the engine, in the group's log and the engine's.
    pub fn engine_line(&self, level: &str, message: &str) {
        self.logs.push(LogLine {
            time_ms: now_ms(),
            level: level.to_string(),
            source: "engine".to_string(),
            version: self
                .snapshot()
                .running_version
                .map_or(String::new(), |v| v.to_string()),
            message: message.to_string(),
            fields: Vec::new(),
        });
    }
}
