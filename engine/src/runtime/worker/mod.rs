//! The worker of one plugin consumer group: a thread that reads batches from every partition of
//! the group's input topic, runs the plugin on them, and commits the state writes, the new
//! offsets and the emitted records (an outbox entry) in one transaction, then appends the
//! outbox to the log (docs/exactly-once.md). It owns retries with backoff, poison-record
//! isolation (splitting a failing batch), the dead-letter topic and dead-letter replay, and
//! switching versions at a batch boundary.

mod dead_letter;
mod emitted;
mod error;
mod poison;

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use parking_lot::Mutex;
use tokio::sync::watch;

use super::deployment::{Delivery, Deployment, settings};
use super::plugin_cache::PluginCache;
use super::{LogBuffer, LogLine, Runtime, Sandbox, SandboxError, SandboxIdentity};
use crate::log::{Log, Partition, Record, batch, now_ms};
use crate::txn::outbox::{self, Part};
use crate::txn::state::{StateStore, StateWrites, Uncommitted};
use crate::txn::{CommitExtras, Position, TxnStore};
pub(crate) use dead_letter::{Origin, letter};
pub(crate) use emitted::stamp;
use emitted::{STAGED_BYTES_MAX, Staged};
pub use error::EngineError;
use error::Interrupt;

/// How long an idle worker waits for records before looking at its partitions again.
const IDLE_WAIT: Duration = Duration::from_secs(1);
/// Longest wait between retries.
const MAX_BACKOFF: Duration = Duration::from_secs(30);
/// First wait after an engine-side failure (a full disk, a deleted output topic) before trying
/// again; it doubles while the failure lasts, up to `MAX_BACKOFF`.
const ENGINE_RETRY: Duration = Duration::from_secs(1);
/// Sleeps at least this long only end with a change of the deployment.
const MAX_SLEEP: Duration = Duration::from_secs(24 * 3600);
/// Bytes in a MiB, for messages.
const MIB: f64 = (1 << 20) as f64;
/// Bytes read from a partition at a time (more if one stored batch is larger).
const READ_BYTES: usize = 256 << 10;

/// What the worker should be doing, set by the [`super::PluginHost`].
#[derive(Debug, Clone)]
pub(super) struct Desired {
    pub deployment: Deployment,
    pub stop: bool,
    /// Incremented for each `dlq replay` request.
    pub replay_requested: u64,
    /// Where the latest requested replay ends (the dead-letter topic's end at the request).
    pub replay_end: u64,
}

/// What the worker reports, read by `plugin describe`.
#[derive(Debug, Clone, Default)]
pub struct Stats {
    pub running_version: Option<u32>,
    pub status: String,
    pub last_error: Option<String>,
    pub processed_records: u64,
    pub emitted_records: u64,
    pub dead_letters: u64,
    pub failed_calls: u64,
    /// Linear memory of the running instance after its last call.
    pub instance_memory_bytes: u64,
    /// Instances replaced because their memory grew past `recycle_growth_mb`.
    pub instance_recycles: u64,
    /// Calls of the plugin on a batch, successful or not.
    pub batches: u64,
    /// Failed calls by kind (one of [`crate::runtime::ERROR_KINDS`]), and engine
    /// failures that stopped the group's progress ("engine").
    pub errors: BTreeMap<&'static str, u64>,
    /// Calls made again after a failure, and engine failures waited out.
    pub retries: u64,
    /// Records taken past the committed position whose batch has not committed its effects:
    /// at-most-once commits the position before the batch runs, so its lag is 0 meanwhile.
    pub in_progress_records: u64,
}

/// Shared between a worker and the host.
pub struct GroupShared {
    pub logs: Arc<LogBuffer>,
    stats: Mutex<Stats>,
    /// How long each call of the plugin on a batch took.
    pub batch_seconds: prometheus::Histogram,
}

/// Upper bounds of the batch-duration histogram's buckets: 100 µs doubling to about 6.5 s.
fn batch_buckets_seconds() -> Vec<f64> {
    prometheus::exponential_buckets(100e-6, 2.0, 17).expect("valid bucket parameters")
}

impl Default for GroupShared {
    fn default() -> Self {
        let opts = prometheus::HistogramOpts::new(
            "sluice_plugin_batch_duration_seconds",
            "Time a call of the plugin on one batch took, failed calls included.",
        )
        .buckets(batch_buckets_seconds());
        GroupShared {
            logs: Default::default(),
            stats: Default::default(),
            batch_seconds: prometheus::Histogram::with_opts(opts)
                .expect("a valid histogram definition"),
        }
    }
}

impl GroupShared {
    pub fn snapshot(&self) -> Stats {
        self.stats.lock().clone()
    }

    fn update(&self, change: impl FnOnce(&mut Stats)) {
        change(&mut self.stats.lock());
    }

    fn set_status(&self, status: &str) {
        self.update(|s| {
            if s.status != status {
                s.status = status.to_string();
            }
        });
    }
}

pub(super) struct Context {
    pub group: String,
    pub log: Arc<Log>,
    pub store: Arc<TxnStore>,
    pub runtime: Arc<Runtime>,
    pub plugins: Arc<PluginCache>,
    pub handle: tokio::runtime::Handle,
    pub shared: Arc<GroupShared>,
}

pub(super) fn spawn(
    context: Context,
    control: watch::Receiver<Desired>,
) -> std::thread::JoinHandle<()> {
    let deployment = control.borrow().deployment.clone();
    let name = format!("sluice-group-{}", context.group);
    let state = Arc::new(Uncommitted::new(context.store.state_of(&context.group)));
    let worker = Worker {
        context,
        control,
        deployment,
        replay_seen: 0,
        sandbox: None,
        started_memory_bytes: 0,
        recycled: false,
        positions: BTreeMap::new(),
        replay: None,
        replay_request: None,
        state,
        outbox: Staged::default(),
        delivered: Vec::new(),
        rotation: 0,
        dirty: false,
        taken: 0,
        last_commit: Instant::now(),
    };
    std::thread::Builder::new()
        .name(name)
        .spawn(move || worker.run())
        .expect("the OS starts a thread")
}

/// Where the records being processed come from, and so where their progress is committed.
#[derive(Debug, Clone)]
enum Input {
    Log {
        partition: u32,
    },
    /// One dead letter, put through the plugin again with its original coordinates.
    Replay {
        topic: String,
        partition: u32,
        dlq_offset: u64,
        end: u64,
        attempts: u32,
    },
}

struct Worker {
    context: Context,
    control: watch::Receiver<Desired>,
    deployment: Deployment,
    replay_seen: u64,
    /// The running version and its instance.
    sandbox: Option<(u32, Sandbox)>,
    /// Linear memory of the running instance when it started (after `init`).
    started_memory_bytes: u64,
    /// The running instance was dropped to be recycled, not because it failed.
    recycled: bool,
    /// Next offset to process, per partition of the input topic (committed or not).
    positions: BTreeMap<u32, u64>,
    /// Dead-letter replay cursor and end (committed or not).
    replay: Option<(u64, u64)>,
    /// A `dlq replay` request not yet taken: where it ends.
    replay_request: Option<u64>,
    /// State the plugin reads, with the writes not yet committed.
    state: Arc<Uncommitted>,
    /// Records emitted since the last commit, by topic and partition.
    outbox: Staged,
    /// Outbox entries appended to the log since the last commit (deleted by the next one).
    delivered: Vec<u64>,
    /// Picks the partition of records without a key; moves on at each commit.
    rotation: u32,
    /// Progress made since the last commit.
    dirty: bool,
    /// At-most-once: records of the batch whose position the next commit takes.
    taken: u64,
    last_commit: Instant,
}

impl Worker {
    fn run(mut self) {
        let span = tracing::info_span!("group", group = %self.context.group);
        let _entered = span.enter();
        self.context.shared.set_status("starting");
        let mut loaded = false;
        let mut engine_failures = 0u32;
        loop {
            let stop = self.refresh();
            if stop {
                break;
            }
            // Loading again after a failure is not progress: only a step that works ends the
            // backoff, so a failure that lasts waits longer each time.
            let loading = !loaded;
            let outcome = if loading {
                self.load().map(|()| {
                    loaded = true;
                    true
                })
            } else if self.deployment.paused {
                self.context.shared.set_status("paused");
                // Only a change of the deployment (resume, undeploy) ends a pause.
                self.flush()
                    .and_then(|()| self.sleep(Duration::MAX).map(|()| true))
            } else {
                // Resumed, or loaded with nothing to do yet: running, though no batch has
                // said so.
                self.context.shared.update(|s| {
                    if s.status == "paused" || s.status == "starting" {
                        s.status = "running".to_string();
                    }
                });
                self.ensure_sandbox().and_then(|()| self.step())
            };
            // An idle group commits what it did before waiting.
            let outcome = match outcome {
                Ok(false) => self.flush().map(|()| false),
                other => other,
            };
            if outcome.is_ok() && !loading {
                engine_failures = 0;
            }
            match outcome {
                Ok(true) => {}
                Ok(false) => self.wait_for_input(),
                Err(Interrupt::Stop) => {
                    if let Err(Interrupt::Engine(error)) = self.flush() {
                        tracing::error!(%error, "cannot commit at stop; the last batches will be processed again");
                    }
                    break;
                }
                Err(Interrupt::Changed) => {}
                Err(Interrupt::Engine(error)) => {
                    let wait = ENGINE_RETRY
                        .saturating_mul(1 << engine_failures.min(5))
                        .min(MAX_BACKOFF);
                    engine_failures += 1;
                    let message = error.to_string();
                    self.context.shared.update(|s| {
                        *s.errors.entry("engine").or_default() += 1;
                        s.retries += 1;
                    });
                    self.context
                        .shared
                        .set_status(&format!("failing: {message}"));
                    let retrying = humantime::format_duration(wait);
                    self.note("error", &format!("{message}; retrying in {retrying}"));
                    tracing::error!(error = %message, %retrying, "group cannot make progress");
                    loaded = false;
                    if let Err(Interrupt::Stop) = self.sleep(wait) {
                        break;
                    }
                }
            }
        }
        if let Err(Interrupt::Engine(error)) = self.flush() {
            tracing::error!(%error, "cannot commit at stop; the last batches will be processed again");
        }
        self.context.shared.set_status("stopped");
    }

    /// Takes the latest deployment; true when the worker should stop.
    fn refresh(&mut self) -> bool {
        let desired = self.control.borrow_and_update();
        self.deployment = desired.deployment.clone();
        let replay = desired.replay_requested;
        let stop = desired.stop;
        drop(desired);
        if replay != self.replay_seen {
            self.replay_seen = replay;
            self.replay_request = Some(self.control.borrow().replay_end);
        }
        stop
    }

    /// Reads the committed positions and replay cursor, dropping uncommitted progress.
    fn load(&mut self) -> Result<(), Interrupt> {
        // At-most-once: a batch taken but not committed is lost, not in progress.
        self.taken = 0;
        self.context.shared.update(|s| s.in_progress_records = 0);
        self.state.reset();
        self.outbox.clear();
        self.delivered.clear();
        self.dirty = false;
        let offsets = self
            .context
            .store
            .offsets(&self.context.group)
            .map_err(EngineError::from)?;
        self.positions = offsets
            .into_iter()
            .filter(|(topic, _, _)| *topic == self.deployment.topic)
            .map(|(_, partition, offset)| (partition, offset))
            .collect();
        self.replay = self
            .context
            .store
            .dlq_replay(&self.context.group)
            .map_err(EngineError::from)?;
        self.recover_outbox()?;
        self.flush()
    }

    fn note(&self, level: &str, message: &str) {
        self.context.shared.engine_line(level, message);
    }

    /// Starts the active version if it is not the one running.
    fn ensure_sandbox(&mut self) -> Result<(), Interrupt> {
        let active = self.deployment.active_version;
        if self.sandbox.as_ref().is_some_and(|(v, _)| *v == active) {
            return Ok(());
        }
        // The previous version's batches commit before the next version runs.
        self.flush()?;
        let previous = self.context.shared.snapshot().running_version;
        let version = self.deployment.active().clone();
        let plugin = self
            .context
            .plugins
            .get(&self.context.group, &version.digest)
            .map_err(|source| EngineError::Load {
                version: active,
                source,
            })?;
        let version_text = active.to_string();
        let identity = SandboxIdentity {
            group: &self.context.group,
            version: &version_text,
            log_sink: Some(self.context.shared.logs.clone()),
        };
        let state: Arc<dyn StateStore> = self.state.clone();
        let sandbox = Sandbox::start(
            &self.context.runtime,
            &plugin,
            self.deployment.limits.sandbox(),
            identity,
            state,
            &settings(&version.config),
        )
        .map_err(|source| EngineError::Start {
            version: active,
            source,
        })?;
        self.started_memory_bytes = sandbox.memory_bytes() as u64;
        self.sandbox = Some((active, sandbox));
        if std::mem::take(&mut self.recycled) {
            return Ok(()); // `recycle_if_grown` said why
        }
        self.context.shared.update(|s| {
            s.running_version = Some(active);
            s.status = "running".to_string();
        });
        let message = match previous {
            Some(from) if from == active => {
                format!("restarted version {active} (the previous instance trapped)")
            }
            Some(from) => format!(
                "switched from version {from} to version {active} at offsets {:?}",
                self.positions
            ),
            None => format!("version {active} running from offsets {:?}", self.positions),
        };
        tracing::info!(version = active, "{message}");
        self.note("info", &message);
        Ok(())
    }

    /// One batch from each partition with records (and one dead letter being replayed);
    /// false when there was nothing to do.
    fn step(&mut self) -> Result<bool, Interrupt> {
        let mut worked = self.replay_step()?;
        let topic = self
            .context
            .log
            .topic(&self.deployment.topic)
            .map_err(EngineError::from)?;
        for partition in topic.partitions() {
            self.check_control()?;
            let records = self.read(&partition)?;
            if records.is_empty() {
                continue;
            }
            worked = true;
            if self.deployment.limits.delivery == Delivery::AtMostOnce {
                let next = records[records.len() - 1].0 + 1;
                // In progress before its position commits, so no describe sees a lag of 0
                // with nothing in progress while the batch runs.
                self.taken = records.len() as u64;
                let taken = self.taken;
                self.context
                    .shared
                    .update(|s| s.in_progress_records = taken);
                self.positions.insert(partition.id, next);
                self.dirty = true;
                self.flush()?;
            }
            let input = Input::Log {
                partition: partition.id,
            };
            let attempts = self.deployment.limits.max_attempts;
            self.process(&input, &records, attempts)?;
            self.recycle_if_grown()?;
            self.context.shared.set_status("running");
            let interval = Duration::from_millis(self.deployment.limits.commit_interval_ms);
            if self.last_commit.elapsed() >= interval || self.outbox.bytes() >= STAGED_BYTES_MAX {
                self.flush()?;
            }
        }
        Ok(worked)
    }

    /// Replaces an instance whose linear memory grew past `recycle_growth_mb` since it started
    /// with a fresh one, between batches and after a commit: no call fails, and a language
    /// runtime that leaks never reaches the memory limit (where it would trap mid-batch).
    fn recycle_if_grown(&mut self) -> Result<(), Interrupt> {
        let Some((version, sandbox)) = &self.sandbox else {
            return Ok(());
        };
        let (version, memory) = (*version, sandbox.memory_bytes() as u64);
        if !self
            .deployment
            .limits
            .recycle_due(self.started_memory_bytes, memory)
        {
            return Ok(());
        }
        self.flush()?;
        self.sandbox = None;
        self.recycled = true;
        self.context.shared.update(|s| s.instance_recycles += 1);
        let message = format!(
            "recycled version {version}: its linear memory grew from {:.1} MiB to {:.1} MiB \
             since it started (recycle_growth_mb {}); a fresh instance takes the next batch",
            self.started_memory_bytes as f64 / MIB,
            memory as f64 / MIB,
            self.deployment.limits.recycle_growth_mb
        );
        tracing::info!(version, "{message}");
        self.note("info", &message);
        Ok(())
    }

    /// The next records of a partition, up to the group's batch size.
    fn read(&mut self, partition: &Arc<Partition>) -> Result<Vec<(u64, Record)>, Interrupt> {
        let position = self.positions.get(&partition.id).copied().unwrap_or(0);
        // Older records than the log holds are read from the archive, if it holds them.
        let log_start = if position < partition.log_start_offset() {
            partition.earliest_offset()
        } else {
            position
        };
        let position = if position < log_start {
            if position > 0 {
                let message = format!(
                    "records {position}..{log_start} of partition {} left the log (retention) and are not archived: the group skips them and continues at {log_start}",
                    partition.id
                );
                tracing::warn!(partition = partition.id, "{message}");
                self.note("warn", &message);
            }
            self.positions.insert(partition.id, log_start);
            log_start
        } else {
            position
        };
        if position >= partition.high_watermark() {
            return Ok(Vec::new());
        }
        let limit = self.deployment.limits.batch_records as usize;
        // A read returns at least one stored batch, however large.
        let fetched = partition
            .read(position, READ_BYTES)
            .map_err(EngineError::from)?;
        let mut records = Vec::new();
        for decoded in batch::Batches::new(Bytes::from(fetched.data)) {
            let (header, batch) = decoded.map_err(|source| EngineError::Batch {
                partition: partition.id,
                source,
            })?;
            let offsets = header.base_offset..header.next_offset();
            records.extend(offsets.zip(batch).filter(|(offset, _)| *offset >= position));
            if records.len() >= limit {
                break;
            }
        }
        records.truncate(limit);
        Ok(records)
    }

    /// Records progress: the next offset (or replay cursor) with the batch's state writes,
    /// committed by the next [`Worker::flush`].
    fn commit(
        &mut self,
        input: &Input,
        next_offset: u64,
        (writes, growth): (StateWrites, i64),
    ) -> Result<(), Interrupt> {
        self.state.stage(writes, growth);
        match input {
            Input::Log { partition } => {
                self.positions.insert(*partition, next_offset);
            }
            Input::Replay {
                dlq_offset, end, ..
            } => self.replay = Some((dlq_offset + 1, *end)),
        }
        self.dirty = true;
        Ok(())
    }

    /// Commits the progress since the last commit in one durable transaction (positions,
    /// replay cursor, state writes and the emitted records as an outbox entry), then appends
    /// the emitted records to the log: they become visible only once committed.
    fn flush(&mut self) -> Result<(), Interrupt> {
        if !self.dirty {
            return Ok(());
        }
        let writes = self.state.take_writes();
        let mut parts = Vec::new();
        for ((topic, partition), records) in self.outbox.take() {
            let start_hint = self
                .context
                .log
                .topic(&topic)
                .and_then(|t| t.partition(partition))
                .map_err(|e| EngineError::topic("output topic", e))?
                .high_watermark();
            parts.push(Part {
                topic: topic.to_string(),
                partition,
                start_hint,
                records,
            });
        }
        let entry = (!parts.is_empty()).then(|| outbox::encode(&parts));
        let positions: Vec<Position> = self
            .positions
            .iter()
            .map(|(&partition, &next_offset)| Position {
                topic: &self.deployment.topic,
                partition,
                next_offset,
            })
            .collect();
        let extras = CommitExtras {
            replay: self.replay,
            outbox: entry,
            delivered: &self.delivered,
        };
        // On failure the staged work is gone: the caller reloads and the uncommitted batches
        // run again.
        let sequence = self
            .context
            .store
            .commit(&self.context.group, &positions, &writes, extras)
            .map_err(EngineError::from)?;
        self.state.committed(writes);
        self.delivered.clear();
        self.dirty = false;
        // The batch whose position this commit took runs until the next commit.
        let in_progress = std::mem::take(&mut self.taken);
        self.context
            .shared
            .update(|s| s.in_progress_records = in_progress);
        self.last_commit = Instant::now();
        self.rotation = self.rotation.wrapping_add(1);
        if let Some(sequence) = sequence {
            crate::crash_point::reached(crate::crash_point::OUTBOX_COMMITTED);
            self.deliver(sequence, parts, false)?;
        }
        Ok(())
    }

    /// Waits for records in any partition, or a change of the deployment.
    fn wait_for_input(&mut self) {
        let partitions = self
            .context
            .log
            .topic(&self.deployment.topic)
            .map(|t| t.partitions())
            .unwrap_or_default();
        let waits: Vec<(Arc<Partition>, u64)> = partitions
            .into_iter()
            .map(|p| {
                let position = self.positions.get(&p.id).copied().unwrap_or(0);
                (p, position)
            })
            .collect();
        let control = &mut self.control;
        self.context.handle.block_on(async {
            let mut waiting = tokio::task::JoinSet::new();
            for (partition, position) in waits {
                waiting.spawn(async move { partition.wait_for_records(position, IDLE_WAIT).await });
            }
            if waiting.is_empty() {
                waiting.spawn(tokio::time::sleep(IDLE_WAIT));
            }
            tokio::select! {
                _ = waiting.join_next() => {}
                _ = control.changed() => {}
            }
        });
    }

    /// `Stop` or `Changed` if the host asked for a change since the worker last looked.
    fn check_control(&self) -> Result<(), Interrupt> {
        match self.control.has_changed() {
            Ok(false) => Ok(()),
            Ok(true) if !self.control.borrow().stop => Err(Interrupt::Changed),
            _ => Err(Interrupt::Stop),
        }
    }

    /// Sleeps, unless the deployment changes first.
    fn sleep(&mut self, duration: Duration) -> Result<(), Interrupt> {
        let control = &mut self.control;
        let changed = self.context.handle.block_on(async {
            if duration < MAX_SLEEP {
                tokio::time::timeout(duration, control.changed()).await
            } else {
                Ok(control.changed().await)
            }
        });
        match changed {
            Err(_elapsed) => Ok(()),
            Ok(Err(_closed)) => Err(Interrupt::Stop),
            Ok(Ok(())) if control.borrow().stop => Err(Interrupt::Stop),
            Ok(Ok(())) => Err(Interrupt::Changed),
        }
    }
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
