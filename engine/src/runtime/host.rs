//! The plugin host: the control plane of plugin groups on a running engine. It deploys,
//! upgrades, pauses, resumes, rolls back and undeploys groups, each with its worker thread,
//! its versions (all kept, one active) and its dead-letter replay.
//!
//! A deployment is a directory `plugins/<group>/` in the data directory: `deployment.json`
//! (written atomically) and the uploaded components, named by their SHA-256. Compiled code is
//! cached in `plugins/.compiled/`. Deployments are started again when the engine restarts.

use parking_lot::Mutex;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use tokio::sync::watch;

use super::deployment::{
    DeployError, DeploySpec, Deployment, PartitionProgress, PluginDescription, PluginLimits,
    StartFrom, VersionInfo, check_topic, check_upload, dlq_topic, next_version_number,
    read_deployment, trial_start,
};
use super::plugin_cache::PluginCache;
use super::worker::{self, Desired, GroupShared};
use super::{LogLine, Plugin, Runtime};
use crate::log::{Log, LogError, now_ms, write_atomically};
use crate::txn::state::{Scanned, StateStore};
use crate::txn::{Position, SnapshotInfo, TxnStore};

/// One deployed group: the handle on its worker.
struct Group {
    /// Held while the group changes (deploy, pause, roll back, undeploy...), so changes to one
    /// group apply in order. Only this group's lock is held while waiting for its worker:
    /// other groups and reads (describe, logs) never wait on it.
    changing: Mutex<()>,
    control: watch::Sender<Desired>,
    shared: Arc<GroupShared>,
    thread: Mutex<Option<std::thread::JoinHandle<()>>>,
    /// Set once undeployed: a change that waited for `changing` then finds the group gone.
    gone: AtomicBool,
}

impl Group {
    fn deployment(&self) -> Deployment {
        self.control.borrow().deployment.clone()
    }

    /// Asks the worker to stop and waits for it: at most one call deadline, as the worker
    /// looks at its control between calls (docs/plugins.md).
    fn stop_worker(&self) {
        self.control.send_modify(|d| d.stop = true);
        if let Some(thread) = self.thread.lock().take() {
            let _ = thread.join();
        }
    }
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
    /// Every deployed group. Held only to look a group up, insert or remove it: never while
    /// waiting for a worker.
    groups: Mutex<BTreeMap<String, Arc<Group>>>,
    plugins: Arc<PluginCache>,
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
        let plugins = Arc::new(PluginCache::new(dir.clone(), runtime.clone()));
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
                    let group = host.start_group(deployment);
                    host.groups.lock().insert(group.0, group.1);
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
        self.check_request(group, &spec, wasm)?;
        let plugin = self.runtime.compile(wasm)?;
        let base = match self.group(group) {
            Ok(current) => {
                let current = current.deployment();
                check_topic(group, &current, &spec)?;
                current.limits
            }
            Err(_) => self.defaults,
        };
        let limits = spec.limits.apply(base);
        limits.validate()?;
        // Outside any lock, as `init` may take up to the deadline.
        trial_start(&self.runtime, group, &plugin, &limits, &spec)?;
        self.ensure_dead_letter_topic(group)?;
        let version = VersionInfo {
            version: 0,
            digest: plugin.digest.to_string(),
            size_bytes: wasm.len() as u64,
            config: spec.config.clone(),
            output_topics: spec.output_topics.clone(),
            deployed_ms: now_ms(),
        };
        let number = loop {
            if let Ok(running) = self.group(group) {
                let _changing = running.changing.lock();
                if running.gone.load(Ordering::Acquire) {
                    continue; // undeployed meanwhile: deploy as a new group
                }
                // Under the group's lock: an undeploy running meanwhile removes the group's
                // directory, component included.
                self.store_component(group, &plugin, wasm)?;
                break self.deploy_version(&running, &spec, version, limits)?;
            }
            let mut groups = self.groups.lock();
            if groups.contains_key(group) {
                continue; // deployed meanwhile: this becomes its next version
            }
            // A new group waits for no worker: the map may stay locked meanwhile.
            let start = spec.from.unwrap_or_default();
            self.store_component(group, &plugin, wasm)?;
            self.commit_start_positions(group, &spec.topic, start)?;
            let deployment = Deployment {
                group: group.to_string(),
                topic: spec.topic.clone(),
                start,
                limits,
                versions: vec![VersionInfo {
                    version: 1,
                    ..version
                }],
                active_version: 1,
                paused: false,
            };
            self.save(&deployment)?;
            let (name, started) = self.start_group(deployment);
            groups.insert(name, started);
            break 1;
        };
        tracing::info!(group, version = number, digest = %plugin.digest, "deployed plugin");
        self.describe(group)
    }

    /// Makes `version` the active version of a running group (its lock `changing` held).
    fn deploy_version(
        &self,
        running: &Group,
        spec: &DeploySpec,
        version: VersionInfo,
        limits: PluginLimits,
    ) -> Result<u32, DeployError> {
        let current = running.deployment();
        check_topic(&current.group, &current, spec)?;
        let number = next_version_number(Some(&current));
        let version = VersionInfo {
            version: number,
            ..version
        };
        let deployment = self.new_version(current, version, limits)?;
        self.save(&deployment)?;
        running.shared.engine_line(
            "info",
            &format!("version {number} deployed; switching after the current call"),
        );
        running.control.send_modify(|d| d.deployment = deployment);
        Ok(number)
    }

    /// Refuses a deploy whose name, size or topics are wrong, before compiling anything.
    fn check_request(
        &self,
        group: &str,
        spec: &DeploySpec,
        wasm: &[u8],
    ) -> Result<(), DeployError> {
        check_upload(group, wasm, self.max_upload_bytes)?;
        self.log.topic(&spec.topic)?;
        for output in &spec.output_topics {
            if self.log.topic(output).is_err() {
                return Err(DeployError::UnknownOutput(output.clone()));
            }
        }
        Ok(())
    }

    /// Keeps the component in the group's directory (named by its digest) and its compiled
    /// code in the cache.
    fn store_component(
        &self,
        group: &str,
        plugin: &Plugin,
        wasm: &[u8],
    ) -> Result<(), DeployError> {
        let dir = self.group_dir(group);
        std::fs::create_dir_all(&dir).map_err(|e| LogError::io(&dir, e))?;
        let wasm_path = dir.join(format!("{}.wasm", plugin.digest));
        if !wasm_path.exists() {
            write_atomically(&wasm_path, wasm)?;
        }
        self.plugins.insert(plugin);
        Ok(())
    }

    fn ensure_dead_letter_topic(&self, group: &str) -> Result<(), DeployError> {
        let dlq = dlq_topic(group);
        if self.log.topic(&dlq).is_err() {
            match self.log.create_topic(&dlq, 1, &[]) {
                Ok(_) | Err(LogError::TopicExists(_)) => {}
                Err(error) => return Err(error.into()),
            }
        }
        Ok(())
    }

    /// `deployment` with `version` active, after a snapshot of the state as the previous
    /// version left it (as of its last commit), to roll back to if the new one gets it wrong.
    fn new_version(
        &self,
        mut deployment: Deployment,
        version: VersionInfo,
        limits: PluginLimits,
    ) -> Result<Deployment, DeployError> {
        let number = version.version;
        self.store.take_snapshot(
            &deployment.group,
            &format!("before-v{number}"),
            deployment.active_version,
            now_ms(),
        )?;
        deployment.versions.push(version);
        deployment.active_version = number;
        deployment.limits = limits;
        Ok(deployment)
    }

    /// A deployed group, or the error naming it. The map is locked only for the lookup.
    fn group(&self, group: &str) -> Result<Arc<Group>, DeployError> {
        self.groups
            .lock()
            .get(group)
            .cloned()
            .ok_or_else(|| DeployError::UnknownGroup(group.to_string()))
    }

    /// Runs `change` on a deployed group with its lock `changing` held (and no other lock).
    fn with_group<T>(
        &self,
        group: &str,
        change: impl FnOnce(&Group) -> Result<T, DeployError>,
    ) -> Result<T, DeployError> {
        let running = self.group(group)?;
        let _changing = running.changing.lock();
        if running.gone.load(Ordering::Acquire) {
            return Err(DeployError::UnknownGroup(group.to_string()));
        }
        change(&running)
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
                StartFrom::Archive => partition.earliest_offset(),
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

    /// A group for `deployment`, its worker started: the group's name and handle.
    fn start_group(&self, deployment: Deployment) -> (String, Arc<Group>) {
        let name = deployment.group.clone();
        let (control, _) = watch::channel(Desired {
            deployment,
            stop: false,
            replay_requested: 0,
            replay_end: 0,
        });
        let group = Arc::new(Group {
            changing: Mutex::new(()),
            control,
            shared: Arc::new(GroupShared::default()),
            thread: Mutex::new(None),
            gone: AtomicBool::new(false),
        });
        self.start_worker(&name, &group);
        (name, group)
    }

    /// Starts the worker of `group` (none running), with the deployment it holds.
    fn start_worker(&self, name: &str, group: &Group) {
        group.control.send_modify(|d| d.stop = false);
        let context = worker::Context {
            group: name.to_string(),
            log: self.log.clone(),
            store: self.store.clone(),
            runtime: self.runtime.clone(),
            plugins: self.plugins.clone(),
            handle: self.handle.clone(),
            shared: group.shared.clone(),
        };
        let thread = worker::spawn(context, group.control.subscribe());
        *group.thread.lock() = Some(thread);
    }

    /// Changes a deployment and hands the new version to its worker.
    fn change(
        &self,
        group: &str,
        edit: impl FnOnce(&mut Deployment) -> Result<String, DeployError>,
    ) -> Result<PluginDescription, DeployError> {
        self.with_group(group, |running| {
            let mut deployment = running.deployment();
            let message = edit(&mut deployment)?;
            self.save(&deployment)?;
            tracing::info!(group, "{message}");
            running.shared.engine_line("info", &message);
            running.control.send_modify(|d| d.deployment = deployment);
            Ok(())
        })?;
        self.describe(group)
    }

    pub fn pause(&self, group: &str) -> Result<PluginDescription, DeployError> {
        self.change(group, |d| {
            d.paused = true;
            Ok("paused; the current call finishes first".to_string())
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
            let target = d.rollback_target(version)?;
            let from = d.active_version;
            d.active_version = target;
            Ok(format!(
                "rolled back from version {from} to version {target}; switching after the current call"
            ))
        })
    }

    /// Takes a snapshot of the group's committed state and offsets, named `name`.
    pub fn snapshot(&self, group: &str, name: &str) -> Result<SnapshotInfo, DeployError> {
        crate::log::validate_name(name).map_err(|_| {
            DeployError::BadSetting(format!(
                "snapshot name `{name}`: use 1-{} letters, digits, `.`, `_` or `-`",
                crate::log::NAME_LEN_MAX
            ))
        })?;
        self.with_group(group, |running| {
            let version = running.deployment().active_version;
            let info = self.store.take_snapshot(group, name, version, now_ms())?;
            running.shared.engine_line(
                "info",
                &format!("snapshot `{name}` taken at the last commit"),
            );
            Ok(info)
        })
    }

    pub fn snapshots(&self, group: &str) -> Result<Vec<SnapshotInfo>, DeployError> {
        self.group(group)?;
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
        let message = self.with_group(group, |running| {
            let snapshot = self.store.snapshot(group, name)?;
            let mut deployment = running.deployment();
            let target = version.unwrap_or(snapshot.version);
            if deployment.version(target).is_none() {
                return Err(DeployError::UnknownVersion {
                    group: group.to_string(),
                    version: target,
                    available: deployment.versions.iter().map(|v| v.version).collect(),
                });
            }
            running.stop_worker();
            let restored = self.store.restore_snapshot(group, name);
            if restored.is_ok() {
                deployment.active_version = target;
            }
            let saved = self.save(&deployment);
            // Whatever happened, the group runs again (on its old state if the restore failed).
            running.control.send_modify(|d| d.deployment = deployment);
            self.start_worker(group, running);
            restored?;
            saved?;
            let message = format!(
                "rolled back to snapshot `{name}` with version {target}: records after its offsets are processed again"
            );
            running.shared.engine_line("info", &message);
            Ok(message)
        })?;
        tracing::info!(group, "{message}");
        self.describe(group)
    }

    /// Asks the worker to put the group's dead letters (those there now) through the plugin
    /// again; records that fail again go back to the dead-letter topic.
    pub fn replay_dead_letters(&self, group: &str) -> Result<PluginDescription, DeployError> {
        let (cursor, end) = self.with_group(group, |running| {
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
            Ok((cursor, end))
        })?;
        let mut description = self.describe(group)?;
        description.dlq_replay = Some((cursor, end));
        Ok(description)
    }

    /// Stops the group's worker and removes the deployment, its offsets and (unless
    /// `keep_state`) its state. The dead-letter topic stays. Once this returns the group stays
    /// undeployed across a restart: its `deployment.json` is removed durably first.
    pub fn undeploy(&self, group: &str, keep_state: bool) -> Result<(), DeployError> {
        self.with_group(group, |running| {
            running.stop_worker();
            let dir = self.group_dir(group);
            remove_durably(&dir.join("deployment.json"))?;
            running.gone.store(true, Ordering::Release);
            // Cleaned up before the group leaves the map: a deploy of the name meanwhile
            // waits for this (on the group's lock) instead of writing into the directory
            // being removed.
            let cleaned = self
                .store
                .forget(group, keep_state)
                .map_err(DeployError::from)
                .and_then(|()| {
                    std::fs::remove_dir_all(&dir).map_err(|e| LogError::io(&dir, e).into())
                });
            self.groups.lock().remove(group);
            cleaned?;
            tracing::info!(group, keep_state, "undeployed plugin");
            Ok(())
        })
    }

    pub fn is_deployed(&self, group: &str) -> bool {
        self.groups.lock().contains_key(group)
    }

    pub fn list(&self) -> Vec<PluginDescription> {
        let names: Vec<String> = self.groups.lock().keys().cloned().collect();
        names
            .iter()
            .filter_map(|name| self.describe(name).ok())
            .collect()
    }

    pub fn describe(&self, group: &str) -> Result<PluginDescription, DeployError> {
        let running = self.group(group)?;
        let (deployment, shared) = (running.deployment(), running.shared.clone());
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
            instance_memory_bytes: stats.instance_memory_bytes,
            instance_recycles: stats.instance_recycles,
            batches: stats.batches,
            retries: stats.retries,
            errors: stats
                .errors
                .iter()
                .map(|(kind, count)| (kind.to_string(), *count))
                .collect(),
            dlq_replay: self.store.dlq_replay(group)?,
            outbox_pending: self.store.outbox_len(group)?,
            in_progress_records: stats.in_progress_records,
            workers: Vec::new(),
        })
    }

    /// How long the group's plugin calls took (a histogram kept since the engine started).
    pub fn batch_seconds(&self, group: &str) -> Option<prometheus::Histogram> {
        let running = self.group(group).ok()?;
        Some(running.shared.batch_seconds.clone())
    }

    /// Up to `limit` entries of a group's committed state whose key starts with `prefix`, after
    /// `start_after`. Works for undeployed groups whose state was kept.
    pub fn state(
        &self,
        group: &str,
        prefix: &[u8],
        start_after: Option<&[u8]>,
        limit: usize,
    ) -> Result<Scanned, DeployError> {
        self.store
            .state_of(group)
            .scan(prefix, start_after, limit)
            .map_err(DeployError::State)
    }

    /// The last `limit` log lines of a group.
    pub fn logs(&self, group: &str, limit: usize) -> Result<Vec<LogLine>, DeployError> {
        Ok(self.group(group)?.shared.logs.tail(limit))
    }

    /// Stops every worker after its current call; called at shutdown.
    pub fn stop(&self) {
        let groups: Vec<Arc<Group>> = self.groups.lock().values().cloned().collect();
        for group in &groups {
            group.control.send_modify(|d| d.stop = true);
        }
        for group in &groups {
            group.stop_worker();
        }
    }
}

/// Refuses a new version that reads another topic than the group does.
/// Removes `path` and makes its removal durable (the directory synced).
fn remove_durably(path: &Path) -> Result<(), DeployError> {
    match std::fs::remove_file(path) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(LogError::io(path, e).into()),
    }
    let dir = path.parent().unwrap_or(Path::new("."));
    std::fs::File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(|e| LogError::io(dir, e))?;
    Ok(())
}
