//! Cluster mode (docs/cluster.md): `sluice worker` runs the plugin groups on an existing
//! Kafka cluster instead of the engine's own log, with the same components, sandbox and
//! limits. Each plugin group is a Kafka consumer group shared by the live workers; each
//! batch's effects and input offsets commit in one Kafka transaction; state lives per input
//! partition in a compacted changelog; deployments are shared through compacted topics.
//!
//! # Layout
//! - [`Worker`] (this file): the deployments this worker follows and the groups it runs, and
//!   the control operations (deploy, pause, resume, roll back, undeploy, describe).
//! - `client`: the Kafka clients and admin operations, configured from `[cluster]`.
//! - `deployments`: the shared deployment records and components.
//! - `group/`: the worker of one group: sessions, plugin calls, transactions, and whether
//!   the coordinator still counts it a member.
//! - `tasks`: state per input partition; `changelog`: its topic and restore.

mod changelog;
mod client;
mod deployments;
mod error;
mod group;
mod status;
mod tasks;

use std::collections::BTreeMap;
use std::sync::{Arc, Weak};
use std::time::{Duration, Instant};

use parking_lot::Mutex;
use tokio::sync::watch;

pub use changelog::changelog_topic;
use client::Clients;
pub use deployments::{COMPONENTS_TOPIC, DEPLOYMENTS_TOPIC};
use deployments::{Components, Publisher};
pub use error::ClusterError;
pub use group::GroupStatus;
use group::{Desired, Env};
use rdkafka::consumer::Consumer;
pub use status::STATUS_TOPIC;
use status::{Progress, REPORT_INTERVAL, Reports, report_key};

use crate::config::Config;
use crate::log::now_ms;
use crate::runtime::{
    DeployError, DeploySpec, Deployment, PluginDescription, PluginLimits, Runtime, StartFrom,
    VersionInfo, dlq_topic,
};

/// How long a change waits to be read back from the deployments topic.
const APPLY_TIMEOUT: Duration = Duration::from_secs(30);

struct Running {
    control: watch::Sender<Desired>,
    status: Arc<Mutex<GroupStatus>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

/// A cluster worker: follows the shared deployments and runs a group worker for each.
pub struct Worker {
    env: Env,
    publisher: Publisher,
    defaults: PluginLimits,
    max_upload_bytes: u64,
    /// The latest deployment record of each group, as read from the deployments topic.
    deployments: Mutex<BTreeMap<String, Deployment>>,
    groups: Mutex<BTreeMap<String, Running>>,
    /// Next offset of the deployments topic applied.
    applied: watch::Receiver<i64>,
    stop: watch::Sender<bool>,
    /// The threads that follow the shared topics and report this worker's groups.
    threads: Mutex<Vec<std::thread::JoinHandle<()>>>,
    /// What every worker reports of its groups.
    reports: Arc<Reports>,
    /// Serializes changes made through this worker (read, change, write of a record).
    changing: Mutex<()>,
}

impl Worker {
    /// Connects to the cluster, creates the shared topics if needed, and starts following the
    /// deployments (starting the groups they name).
    pub fn start(config: &Config) -> Result<Arc<Worker>, ClusterError> {
        let clients = Clients::new(&config.cluster)?;
        clients.check_connection()?;
        let worker_id = config.cluster.worker_id.clone().unwrap_or_else(|| {
            let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
                .map(|h| h.trim().to_string())
                .unwrap_or_else(|_| "localhost".into());
            format!("{host}-{}", config.listen.port())
        });
        let runtime = Arc::new(Runtime::new(Some(&config.data_dir.join("compiled")))?);
        let components = Components::new(&clients, &config.data_dir.join("components"))?;
        clients.ensure_topic(DEPLOYMENTS_TOPIC, 1, true)?;
        clients.ensure_topic(COMPONENTS_TOPIC, 1, true)?;
        clients.ensure_topic(STATUS_TOPIC, 1, true)?;
        let (applied_tx, applied) = watch::channel(0);
        let (stop, stop_rx) = watch::channel(false);
        let worker = Arc::new(Worker {
            publisher: Publisher::new(&clients)?,
            env: Env {
                clients: clients.clone(),
                runtime,
                components,
                worker_id: worker_id.clone(),
            },
            defaults: config.plugins.defaults,
            max_upload_bytes: config.plugins.max_upload_bytes,
            deployments: Mutex::new(BTreeMap::new()),
            groups: Mutex::new(BTreeMap::new()),
            applied,
            stop,
            threads: Mutex::new(Vec::new()),
            reports: Arc::new(Reports::default()),
            changing: Mutex::new(()),
        });
        let weak: Weak<Worker> = Arc::downgrade(&worker);
        let (follow_clients, follow_stop) = (clients.clone(), stop_rx.clone());
        let follower = spawn("sluice-deployments", move || {
            let apply = |group: &str, deployment: Option<Deployment>| {
                if let Some(worker) = weak.upgrade() {
                    worker.apply(group, deployment);
                }
            };
            if let Err(error) =
                deployments::follow(&follow_clients, apply, &applied_tx, &follow_stop)
            {
                tracing::error!(%error, "cannot follow the deployments topic");
            }
        })?;
        let reports = worker.reports.clone();
        let (status_clients, status_stop) = (clients.clone(), stop_rx.clone());
        let status_follower = spawn("sluice-status", move || {
            let (read, _) = watch::channel(0);
            let apply = |key: &[u8], value: Option<&[u8]>| reports.apply(key, value);
            if let Err(error) =
                deployments::follow_topic(&status_clients, STATUS_TOPIC, &read, &status_stop, apply)
            {
                tracing::error!(%error, "cannot follow the status topic");
            }
        })?;
        let weak: Weak<Worker> = Arc::downgrade(&worker);
        let reporter = spawn("sluice-reporter", move || report(&weak, &clients, stop_rx))?;
        worker
            .threads
            .lock()
            .extend([follower, status_follower, reporter]);
        // Deploys through this worker build on every record written so far.
        worker.catch_up()?;
        tracing::info!(worker_id, "cluster worker started");
        Ok(worker)
    }

    /// Waits until this worker has read the deployments topic up to its end as of now, so
    /// that a change made through it builds on every change made before (through any worker).
    fn catch_up(&self) -> Result<(), ClusterError> {
        let reader = self.env.clients.reader()?;
        let started = Instant::now();
        // A topic just created may not be known to every broker yet: asked again until then.
        let end = loop {
            match reader.fetch_watermarks(DEPLOYMENTS_TOPIC, 0, client::REQUEST_TIMEOUT) {
                Ok((_, end)) => break end,
                Err(error) if started.elapsed() > APPLY_TIMEOUT => {
                    return Err(ClusterError::kafka("reading the deployments topic's end")(
                        error,
                    ));
                }
                Err(_) => std::thread::sleep(Duration::from_millis(200)),
            }
        };
        while *self.applied.borrow() < end {
            if started.elapsed() > APPLY_TIMEOUT {
                return Err(ClusterError::NotCaughtUp {
                    end,
                    waited_ms: started.elapsed().as_millis() as u64,
                });
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        Ok(())
    }

    /// This worker's id (its transactional ids derive from it).
    pub fn id(&self) -> &str {
        &self.env.worker_id
    }

    /// Starts, changes or stops a group after its record changed.
    fn apply(&self, group: &str, deployment: Option<Deployment>) {
        let mut groups = self.groups.lock();
        match deployment {
            Some(deployment) => {
                self.deployments
                    .lock()
                    .insert(group.to_string(), deployment.clone());
                if let Some(running) = groups.get(group) {
                    running.control.send_modify(|d| d.deployment = deployment);
                    return;
                }
                let (control, receiver) = watch::channel(Desired {
                    deployment,
                    stop: false,
                });
                let status = Arc::new(Mutex::new(GroupStatus::default()));
                let thread = group::spawn(self.env.clone(), receiver, status.clone());
                groups.insert(
                    group.to_string(),
                    Running {
                        control,
                        status,
                        thread: Some(thread),
                    },
                );
            }
            None => {
                self.deployments.lock().remove(group);
                if let Some(mut running) = groups.remove(group) {
                    drop(groups);
                    running.control.send_modify(|d| d.stop = true);
                    if let Some(thread) = running.thread.take() {
                        let _ = thread.join();
                    }
                    self.withdraw_report(group);
                }
            }
        }
    }

    /// Removes this worker's report on a group it no longer runs.
    fn withdraw_report(&self, group: &str) {
        let key = report_key(group, &self.env.worker_id);
        if let Err(error) = self.publisher.put(STATUS_TOPIC, key.as_bytes(), None) {
            tracing::warn!(%error, group, "cannot withdraw this worker's report");
        }
    }

    /// Deploys a component: a new group, or a new version of one. Every worker switches to
    /// it between two of its transactions.
    pub fn deploy(
        &self,
        group: &str,
        spec: DeploySpec,
        wasm: &[u8],
    ) -> Result<PluginDescription, ClusterError> {
        crate::runtime::deployment::check_upload(group, wasm, self.max_upload_bytes)?;
        if let Some(from @ (StartFrom::Archive | StartFrom::Offset(_) | StartFrom::Timestamp(_))) =
            spec.from
        {
            return Err(ClusterError::Unsupported(format!(
                "--from {from:?}: in cluster mode a new group starts at the earliest or the latest offset"
            )));
        }
        let partitions = self.env.clients.partition_count(&spec.topic)?;
        for output in &spec.output_topics {
            self.env
                .clients
                .partition_count(output)
                .map_err(|_| DeployError::UnknownOutput(output.clone()))?;
        }
        let plugin = self.env.runtime.compile(wasm)?;
        let _changing = self.changing.lock();
        self.catch_up()?;
        let current = self.deployments.lock().get(group).cloned();
        if let Some(current) = &current {
            crate::runtime::deployment::check_topic(group, current, &spec)?;
        }
        let limits = spec
            .limits
            .apply(current.as_ref().map_or(self.defaults, |d| d.limits));
        limits.validate()?;
        crate::runtime::deployment::trial_start(&self.env.runtime, group, &plugin, &limits, &spec)?;
        let clients = &self.env.clients;
        clients.ensure_topic(&changelog_topic(group), partitions, true)?;
        clients.ensure_topic(&dlq_topic(group), 1, false)?;
        self.publisher.put_component(&plugin.digest, wasm)?;
        self.env.components.keep(&plugin.digest, wasm)?;
        let number = crate::runtime::deployment::next_version_number(current.as_ref());
        let version = VersionInfo {
            version: number,
            digest: plugin.digest.to_string(),
            size_bytes: wasm.len() as u64,
            config: spec.config.clone(),
            output_topics: spec.output_topics.clone(),
            deployed_ms: now_ms(),
        };
        let deployment = match current {
            Some(mut deployment) => {
                deployment.versions.push(version);
                deployment.active_version = number;
                deployment.limits = limits;
                deployment
            }
            None => Deployment {
                group: group.to_string(),
                topic: spec.topic.clone(),
                start: spec.from.unwrap_or_default(),
                limits,
                versions: vec![version],
                active_version: number,
                paused: false,
            },
        };
        self.publish(group, Some(&deployment))?;
        tracing::info!(group, version = number, digest = %plugin.digest, "deployed plugin");
        self.describe(group)
    }

    pub fn pause(&self, group: &str) -> Result<PluginDescription, ClusterError> {
        self.change(group, |d| {
            d.paused = true;
            Ok(())
        })
    }

    pub fn resume(&self, group: &str) -> Result<PluginDescription, ClusterError> {
        self.change(group, |d| {
            d.paused = false;
            Ok(())
        })
    }

    /// Makes `version` (by default the one before the active one) active again.
    pub fn rollback(
        &self,
        group: &str,
        version: Option<u32>,
    ) -> Result<PluginDescription, ClusterError> {
        self.change(group, |d| {
            d.active_version = d.rollback_target(version)?;
            Ok(())
        })
    }

    /// Removes the group's deployment record: every worker stops the group. Its changelog,
    /// dead-letter topic and committed offsets stay on the cluster.
    pub fn undeploy(&self, group: &str) -> Result<(), ClusterError> {
        let _changing = self.changing.lock();
        self.catch_up()?;
        self.known(group)?;
        self.publish(group, None)
    }

    fn change(
        &self,
        group: &str,
        edit: impl FnOnce(&mut Deployment) -> Result<(), DeployError>,
    ) -> Result<PluginDescription, ClusterError> {
        let _changing = self.changing.lock();
        self.catch_up()?;
        let mut deployment = self.known(group)?;
        edit(&mut deployment)?;
        self.publish(group, Some(&deployment))?;
        self.describe(group)
    }

    fn known(&self, group: &str) -> Result<Deployment, ClusterError> {
        self.deployments
            .lock()
            .get(group)
            .cloned()
            .ok_or_else(|| DeployError::UnknownGroup(group.to_string()).into())
    }

    /// Writes a record and waits until this worker has read it back (and applied it).
    fn publish(&self, group: &str, deployment: Option<&Deployment>) -> Result<(), ClusterError> {
        let offset = self.publisher.put_deployment(group, deployment)?;
        let started = Instant::now();
        while *self.applied.borrow() <= offset {
            if started.elapsed() > APPLY_TIMEOUT {
                return Err(ClusterError::NotApplied {
                    group: group.to_string(),
                    waited_ms: started.elapsed().as_millis() as u64,
                });
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        Ok(())
    }

    pub fn list(&self) -> Vec<PluginDescription> {
        let names: Vec<String> = self.deployments.lock().keys().cloned().collect();
        names.iter().filter_map(|n| self.describe(n).ok()).collect()
    }

    /// The group's deployment, with what every live worker does for it (the counters are
    /// their sums, the status this worker's).
    pub fn describe(&self, group: &str) -> Result<PluginDescription, ClusterError> {
        let deployment = self.known(group)?;
        let status = self
            .groups
            .lock()
            .get(group)
            .map(|r| r.status.lock().clone())
            .unwrap_or_default();
        let workers = self.reports.live(group);
        let mut partitions: Vec<_> = workers.iter().flat_map(|w| w.partitions.clone()).collect();
        partitions.sort_by_key(|p| p.partition);
        let sum = |count: fn(&crate::runtime::WorkerProgress) -> u64| -> u64 {
            workers.iter().map(count).sum()
        };
        Ok(PluginDescription {
            group: deployment.group.clone(),
            topic: deployment.topic.clone(),
            dlq_topic: deployment.dlq_topic(),
            active_version: deployment.active_version,
            running_version: status.running_version,
            paused: deployment.paused,
            status: status.status.clone(),
            last_error: status.last_error.clone(),
            limits: deployment.limits,
            versions: deployment.versions.clone(),
            total_lag: partitions.iter().map(|p| p.lag).sum(),
            partitions,
            processed_records: sum(|w| w.processed_records),
            emitted_records: sum(|w| w.emitted_records),
            dead_letters: sum(|w| w.dead_letters),
            failed_calls: status.failed_calls,
            state_entries: status.state_entries,
            state_bytes: status.state_bytes,
            instance_memory_bytes: 0,
            instance_recycles: 0,
            batches: status.batches,
            retries: 0,
            errors: BTreeMap::new(),
            dlq_replay: None,
            outbox_pending: 0,
            in_progress_records: 0,
            workers,
        })
    }

    /// What this worker does for each group.
    pub fn statuses(&self) -> BTreeMap<String, GroupStatus> {
        self.groups
            .lock()
            .iter()
            .map(|(name, running)| (name.clone(), running.status.lock().clone()))
            .collect()
    }

    /// Stops the threads that follow and report, then every group (each finishes or aborts
    /// its transaction), withdrawing this worker's reports.
    pub fn stop(&self) {
        self.stop.send_replace(true);
        for thread in std::mem::take(&mut *self.threads.lock()) {
            let _ = thread.join();
        }
        let mut groups = std::mem::take(&mut *self.groups.lock());
        for running in groups.values() {
            running.control.send_modify(|d| d.stop = true);
        }
        for (group, running) in groups.iter_mut() {
            if let Some(thread) = running.thread.take() {
                let _ = thread.join();
            }
            self.withdraw_report(group);
        }
    }
}

fn spawn(
    name: &str,
    work: impl FnOnce() + Send + 'static,
) -> Result<std::thread::JoinHandle<()>, ClusterError> {
    std::thread::Builder::new()
        .name(name.into())
        .spawn(work)
        .map_err(|source| ClusterError::Io {
            what: format!("starting thread {name}"),
            source,
        })
}

/// Reports this worker's groups to the status topic every [`REPORT_INTERVAL`] until `stop`.
fn report(worker: &Weak<Worker>, clients: &Clients, mut stop: watch::Receiver<bool>) {
    let mut progress = Progress::new(clients);
    loop {
        let Some(worker) = worker.upgrade() else {
            return;
        };
        let running: Vec<(String, GroupStatus)> = worker.statuses().into_iter().collect();
        let deployments = worker.deployments.lock().clone();
        for (group, status) in &running {
            let Some(deployment) = deployments.get(group) else {
                progress.forget(group);
                continue;
            };
            let report = progress
                .report(&worker.env.worker_id, group, &deployment.topic, status)
                .and_then(|report| {
                    let key = report_key(group, &worker.env.worker_id);
                    let value = serde_json::to_vec(&report).expect("a report serializes");
                    worker
                        .publisher
                        .put(STATUS_TOPIC, key.as_bytes(), Some(&value))
                });
            if let Err(error) = report {
                tracing::warn!(%error, group, "cannot report the group's progress");
                // A reader that failed (its coordinator moved with a broker's restart, say)
                // is made anew for the next report rather than asked again forever.
                progress.forget(group);
            }
        }
        drop(worker);
        let deadline = Instant::now() + REPORT_INTERVAL;
        while Instant::now() < deadline {
            if *stop.borrow_and_update() {
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}
