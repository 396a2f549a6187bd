//! The worker of one plugin consumer group: a thread that reads batches from every partition of
//! the group's input topic, runs the plugin on them, and commits the state writes, the new
//! offsets and the emitted records (an outbox entry) in one transaction, then appends the
//! outbox to the log (docs/exactly-once.md). It owns retries with backoff, poison-record
//! isolation (splitting a failing batch), the dead-letter topic and dead-letter replay, and
//! switching versions at a batch boundary.

use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use tokio::sync::watch;

use super::deploy::{Delivery, Deployment, PluginCache, dlq_topic};
use super::{
    Batch, LogBuffer, Runtime, Sandbox, SandboxError, SandboxIdentity, StateStore, StateWrites,
    merged_scan,
};
use crate::log::partitioner::partition_for_key;
use crate::log::{Header, Log, Partition, Record, batch, now_ms};
use crate::runtime::Emitted;
use crate::txn::outbox::{self, Part};
use crate::txn::{CommitExtras, GroupState, Position, TxnStore};

/// How long an idle worker waits for records before looking at its partitions again.
const IDLE_WAIT: Duration = Duration::from_secs(1);
/// Longest wait between retries.
const MAX_BACKOFF: Duration = Duration::from_secs(30);
/// First wait after an engine-side failure (a full disk, a deleted output topic) before trying
/// again; it doubles while the failure lasts, up to `MAX_BACKOFF`.
const ENGINE_RETRY: Duration = Duration::from_secs(1);
/// Sleeps at least this long only end with a change of the deployment.
const MAX_SLEEP: Duration = Duration::from_secs(24 * 3600);
/// Bytes read from a partition at a time (more if one stored batch is larger).
const READ_BYTES: usize = 256 << 10;

/// Headers the engine adds to a dead letter.
pub const DLQ_ERROR: &str = "sluice.dlq.error";
pub const DLQ_VERSION: &str = "sluice.dlq.plugin-version";
pub const DLQ_ATTEMPTS: &str = "sluice.dlq.attempts";
pub const DLQ_TOPIC: &str = "sluice.dlq.topic";
pub const DLQ_PARTITION: &str = "sluice.dlq.partition";
pub const DLQ_OFFSET: &str = "sluice.dlq.offset";
/// Header on every record a plugin emits: `<group>/<version>` that produced it.
pub const PRODUCED_BY: &str = "sluice.plugin";
/// Header on the first record a commit appended to a partition: `<group>/<outbox sequence>`.
/// Recovery looks for it to append each committed entry once.
pub const OUTBOX_MARKER: &str = "sluice.outbox";

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
}

/// Shared between a worker and the host.
#[derive(Default)]
pub struct GroupShared {
    pub logs: Arc<LogBuffer>,
    stats: Mutex<Stats>,
}

impl GroupShared {
    pub fn snapshot(&self) -> Stats {
        self.stats.lock().expect("stats lock").clone()
    }

    fn update(&self, change: impl FnOnce(&mut Stats)) {
        change(&mut self.stats.lock().expect("stats lock"));
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
    let state = Arc::new(Uncommitted {
        committed: context.store.state_of(&context.group),
        writes: Mutex::new(StateWrites::new()),
        cache: Mutex::new(HashMap::new()),
        generation: AtomicU64::new(0),
    });
    let worker = Worker {
        context,
        control,
        deployment,
        replay_seen: 0,
        sandbox: None,
        positions: BTreeMap::new(),
        replay: None,
        replay_request: None,
        state,
        outbox: BTreeMap::new(),
        delivered: Vec::new(),
        rotation: 0,
        dirty: false,
        last_commit: Instant::now(),
    };
    std::thread::Builder::new()
        .name(name)
        .spawn(move || worker.run())
        .expect("the OS starts a thread")
}

/// Why processing stopped before it finished.
enum Interrupt {
    /// The engine is stopping or the group is undeployed.
    Stop,
    /// The deployment changed (new version, pause, rollback): start over from the last commit.
    Changed,
    /// The engine could not do its part (a full disk, a missing output topic): retry later.
    Engine(String),
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

/// The group's committed state seen through the writes of batches processed since the last
/// commit: what the plugin reads. Committed values read or written are cached (the worker is
/// the group's only writer), so hot keys do not cost a store read each time.
struct Uncommitted {
    committed: GroupState,
    writes: Mutex<StateWrites>,
    cache: Mutex<HashMap<Vec<u8>, Option<Vec<u8>>>>,
    /// Bumped when uncommitted writes are dropped: the plugin's own copies are stale then.
    generation: AtomicU64,
}

/// Committed values kept in memory per group, at most.
const CACHE_ENTRIES: usize = 100_000;

impl Uncommitted {
    /// The writes just committed become the cached committed values.
    fn committed(&self, writes: StateWrites) {
        let mut cache = self.cache.lock().expect("cache lock");
        if cache.len() + writes.len() > CACHE_ENTRIES {
            cache.clear();
        }
        cache.extend(writes);
    }

    /// Forgets everything not read from the store (after a failed commit).
    fn reset(&self) {
        self.writes.lock().expect("writes lock").clear();
        self.cache.lock().expect("cache lock").clear();
        self.generation.fetch_add(1, Ordering::Relaxed);
    }
}

impl StateStore for Uncommitted {
    fn get(&self, key: &[u8]) -> Result<Option<Vec<u8>>, String> {
        if let Some(written) = self.writes.lock().expect("writes lock").get(key) {
            return Ok(written.clone());
        }
        if let Some(cached) = self.cache.lock().expect("cache lock").get(key) {
            return Ok(cached.clone());
        }
        let value = self.committed.get(key)?;
        let mut cache = self.cache.lock().expect("cache lock");
        if cache.len() >= CACHE_ENTRIES {
            cache.clear();
        }
        cache.insert(key.to_vec(), value.clone());
        Ok(value)
    }

    fn scan(
        &self,
        prefix: &[u8],
        start_after: Option<&[u8]>,
        limit: usize,
    ) -> Result<Vec<(Vec<u8>, Vec<u8>)>, String> {
        let writes = self.writes.lock().expect("writes lock");
        merged_scan(&writes, prefix, start_after, limit, |n| {
            self.committed.scan(prefix, start_after, n)
        })
    }

    fn generation(&self) -> u64 {
        self.generation.load(Ordering::Relaxed)
    }
}

struct Worker {
    context: Context,
    control: watch::Receiver<Desired>,
    deployment: Deployment,
    replay_seen: u64,
    /// The running version and its instance.
    sandbox: Option<(u32, Sandbox)>,
    /// Next offset to process, per partition of the input topic (committed or not).
    positions: BTreeMap<u32, u64>,
    /// Dead-letter replay cursor and end (committed or not).
    replay: Option<(u64, u64)>,
    /// A `dlq replay` request not yet taken: where it ends.
    replay_request: Option<u64>,
    /// State the plugin reads, with the writes not yet committed.
    state: Arc<Uncommitted>,
    /// Records emitted since the last commit, by topic and partition.
    outbox: BTreeMap<(Arc<str>, u32), Vec<Record>>,
    /// Outbox entries appended to the log since the last commit (deleted by the next one).
    delivered: Vec<u64>,
    /// Picks the partition of records without a key; moves on at each commit.
    rotation: u32,
    /// Progress made since the last commit.
    dirty: bool,
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
            let outcome = if !loaded {
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
                self.ensure_sandbox().and_then(|()| self.step())
            };
            // An idle group commits what it did before waiting.
            let outcome = match outcome {
                Ok(false) => self.flush().map(|()| false),
                other => other,
            };
            if outcome.is_ok() {
                engine_failures = 0;
            }
            match outcome {
                Ok(true) => {}
                Ok(false) => self.wait_for_input(),
                Err(Interrupt::Stop) => {
                    if let Err(Interrupt::Engine(message)) = self.flush() {
                        tracing::error!(error = %message, "cannot commit at stop; the last batches will be processed again");
                    }
                    break;
                }
                Err(Interrupt::Changed) => {}
                Err(Interrupt::Engine(message)) => {
                    self.context
                        .shared
                        .set_status(&format!("failing: {message}"));
                    self.note("error", &message);
                    tracing::error!(error = %message, "group cannot make progress; retrying");
                    loaded = false;
                    let wait = ENGINE_RETRY
                        .saturating_mul(1 << engine_failures.min(5))
                        .min(MAX_BACKOFF);
                    engine_failures += 1;
                    if let Err(Interrupt::Stop) = self.sleep(wait) {
                        break;
                    }
                }
            }
        }
        if let Err(Interrupt::Engine(message)) = self.flush() {
            tracing::error!(error = %message, "cannot commit at stop; the last batches will be processed again");
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
        self.state.reset();
        self.outbox.clear();
        self.delivered.clear();
        self.dirty = false;
        let offsets = self
            .context
            .store
            .offsets(&self.context.group)
            .map_err(|e| Interrupt::Engine(e.to_string()))?;
        self.positions = offsets
            .into_iter()
            .filter(|(topic, _, _)| *topic == self.deployment.topic)
            .map(|(_, partition, offset)| (partition, offset))
            .collect();
        self.replay = self
            .context
            .store
            .dlq_replay(&self.context.group)
            .map_err(|e| Interrupt::Engine(e.to_string()))?;
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
            .map_err(|e| Interrupt::Engine(format!("version {active} cannot be loaded: {e}")))?;
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
            &super::deploy::settings(&version.config),
        )
        .map_err(|e| Interrupt::Engine(format!("version {active} does not start: {e}")))?;
        self.sandbox = Some((active, sandbox));
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
            .map_err(|e| Interrupt::Engine(e.to_string()))?;
        for partition in topic.partitions() {
            if self.control.has_changed().unwrap_or(true) {
                return Err(Interrupt::Changed);
            }
            let records = self.read(&partition)?;
            if records.is_empty() {
                continue;
            }
            worked = true;
            if self.deployment.limits.delivery == Delivery::AtMostOnce {
                let next = records[records.len() - 1].0 + 1;
                self.positions.insert(partition.id, next);
                self.dirty = true;
                self.flush()?;
            }
            let input = Input::Log {
                partition: partition.id,
            };
            let attempts = self.deployment.limits.max_attempts;
            self.process(&input, &records, attempts, 0)?;
            self.context.shared.set_status("running");
            let interval = Duration::from_millis(self.deployment.limits.commit_interval_ms);
            if self.last_commit.elapsed() >= interval {
                self.flush()?;
            }
        }
        Ok(worked)
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
            .map_err(|e| Interrupt::Engine(e.to_string()))?;
        let mut records = Vec::new();
        for decoded in batch::Batches::new(Bytes::from(fetched.data)) {
            let (header, batch) = decoded
                .map_err(|e| Interrupt::Engine(format!("partition {}: {e}", partition.id)))?;
            let offsets = header.base_offset..header.next_offset();
            records.extend(offsets.zip(batch).filter(|(offset, _)| *offset >= position));
            if records.len() >= limit {
                break;
            }
        }
        records.truncate(limit);
        Ok(records)
    }

    /// Runs the plugin on `records` (consecutive offsets) with up to `attempts` calls, then
    /// isolates the failing records by halving, sending each to the dead-letter topic.
    /// `earlier_failures` counts failed calls these records were already part of.
    fn process(
        &mut self,
        input: &Input,
        records: &[(u64, Record)],
        attempts: u32,
        earlier_failures: u32,
    ) -> Result<(), Interrupt> {
        let first = records[0].0;
        let last = records[records.len() - 1].0;
        let batch = self.make_batch(input, records);
        let mut failures = 0;
        loop {
            self.ensure_sandbox()?;
            let (version, sandbox) = self.sandbox.as_mut().expect("ensured above");
            let version = *version;
            let error = match sandbox.process(&batch) {
                Ok(processed) => {
                    self.stage_emitted(version, processed.emitted)?;
                    if self.deployment.limits.delivery != Delivery::ExactlyOnce {
                        self.deliver_staged()?;
                    }
                    self.commit(input, last + 1, processed.state_writes)?;
                    self.context
                        .shared
                        .update(|s| s.processed_records += records.len() as u64);
                    return Ok(());
                }
                Err(SandboxError::Poison { offset, reason })
                    if (first..=last).contains(&offset) =>
                {
                    let at = (offset - first) as usize;
                    if at > 0 {
                        self.process(input, &records[..at], attempts, earlier_failures)?;
                    }
                    let error = SandboxError::Poison { offset, reason };
                    self.dead_letter(input, &records[at], &error, earlier_failures + failures + 1)?;
                    if at + 1 < records.len() {
                        self.process(input, &records[at + 1..], attempts, earlier_failures)?;
                    }
                    return Ok(());
                }
                Err(SandboxError::Poison { offset, reason }) => SandboxError::Failed(format!(
                    "the plugin rejected offset {offset}, which is not in the batch {first}..={last}: {reason}"
                )),
                Err(error) => error,
            };
            failures += 1;
            if error.needs_restart() {
                self.sandbox = None;
            }
            let message =
                format!("batch {first}..={last} failed (call {failures} of {attempts}): {error}");
            tracing::warn!(version, "{message}");
            self.note("warn", &message);
            self.context.shared.update(|s| {
                s.failed_calls += 1;
                s.last_error = Some(error.to_string());
                s.status = format!("retrying: {error}");
            });
            if failures < attempts {
                let backoff = Duration::from_millis(self.deployment.limits.retry_backoff_ms)
                    .saturating_mul(1 << (failures - 1).min(16))
                    .min(MAX_BACKOFF);
                self.sleep(backoff)?;
                continue;
            }
            let failed_so_far = earlier_failures + failures;
            if records.len() == 1 {
                return self.dead_letter(input, &records[0], &error, failed_so_far);
            }
            let middle = records.len() / 2;
            self.process(input, &records[..middle], 1, failed_so_far)?;
            return self.process(input, &records[middle..], 1, failed_so_far);
        }
    }

    fn make_batch(&self, input: &Input, records: &[(u64, Record)]) -> Batch {
        let (topic, partition) = match input {
            Input::Log { partition } => (self.deployment.topic.clone(), *partition),
            Input::Replay {
                topic, partition, ..
            } => (topic.clone(), *partition),
        };
        let plain: Vec<Record> = records.iter().map(|(_, r)| r.clone()).collect();
        Batch {
            topic,
            partition,
            base_offset: records[0].0,
            count: records.len() as u32,
            records: batch::encode_records_frame(&plain),
        }
    }

    /// Stages what the plugin emitted for the next commit, routed to partitions (by key, as
    /// producers route; records without a key go to one partition per commit, in turn).
    fn stage_emitted(&mut self, version: u32, emitted: Vec<Emitted>) -> Result<(), Interrupt> {
        if emitted.is_empty() {
            return Ok(());
        }
        let outputs = &self.deployment.active().output_topics;
        let produced_by = Bytes::from(format!("{}/{version}", self.context.group));
        let now = now_ms();
        let count = emitted.len() as u64;
        // Records come in runs to the same topic: check and look it up once per run.
        let mut current: Option<(Arc<str>, u32)> = None;
        for Emitted { topic, mut record } in emitted {
            let partitions = match &current {
                Some((name, partitions)) if **name == *topic => *partitions,
                _ => {
                    if !outputs.iter().any(|o| **o == *topic) {
                        return Err(Interrupt::Engine(format!(
                            "version {version} emitted to topic `{topic}`, which is not an output topic of the group (it has {outputs:?}); deploy again with --output-topic {topic}"
                        )));
                    }
                    let partitions = self
                        .context
                        .log
                        .topic(&topic)
                        .map_err(|e| Interrupt::Engine(format!("output topic: {e}")))?
                        .partition_count();
                    current = Some((topic.clone(), partitions));
                    partitions
                }
            };
            let partition = match &record.key {
                Some(key) => partition_for_key(key, partitions),
                None => self.rotation % partitions,
            };
            record.timestamp = now;
            record.headers.push(Header {
                key: PRODUCED_BY.into(),
                value: produced_by.clone(),
            });
            self.outbox
                .entry((topic, partition))
                .or_default()
                .push(record);
        }
        self.context.shared.update(|s| s.emitted_records += count);
        Ok(())
    }

    /// Appends a committed outbox entry to the log, durably. With `check`, parts already in
    /// the log (a crash came between their append and the entry's deletion) are skipped.
    fn deliver(&mut self, sequence: u64, parts: Vec<Part>, check: bool) -> Result<(), Interrupt> {
        let marker = Bytes::from(format!("{}/{sequence}", self.context.group));
        for mut part in parts {
            let Some(first) = part.records.first_mut() else {
                continue;
            };
            let partition = self.output_partition(&part.topic, part.partition)?;
            if check && in_log(&partition, part.start_hint, &marker)? {
                tracing::info!(
                    sequence,
                    topic = %part.topic,
                    partition = part.partition,
                    "outbox entry: this part is already in the log; not appending it again"
                );
                continue;
            }
            first.headers.push(Header {
                key: OUTBOX_MARKER.into(),
                value: marker.clone(),
            });
            self.append(&partition, &part.topic, &part.records)?;
            crate::crash_point::reached(crate::crash_point::OUTBOX_PART_APPENDED);
        }
        self.delivered.push(sequence);
        self.dirty = true;
        Ok(())
    }

    /// Appends the staged records at once, without the outbox (at-least-once and
    /// at-most-once delivery).
    fn deliver_staged(&mut self) -> Result<(), Interrupt> {
        for ((topic, partition), records) in std::mem::take(&mut self.outbox) {
            let target = self.output_partition(&topic, partition)?;
            self.append(&target, &topic, &records)?;
        }
        Ok(())
    }

    fn output_partition(&self, topic: &str, partition: u32) -> Result<Arc<Partition>, Interrupt> {
        self.context
            .log
            .topic(topic)
            .and_then(|t| t.partition(partition))
            .map_err(|e| Interrupt::Engine(format!("output topic: {e}")))
    }

    /// Appends records to a partition as one batch and waits until they are durable.
    fn append(
        &self,
        partition: &Arc<Partition>,
        topic: &str,
        records: &[Record],
    ) -> Result<(), Interrupt> {
        self.context
            .handle
            .block_on(partition.append_durable(records))
            .map(drop)
            .map_err(|e| Interrupt::Engine(format!("output topic `{topic}`: {e}")))
    }

    /// Delivers the outbox entries a crash left committed but maybe not in the log.
    fn recover_outbox(&mut self) -> Result<(), Interrupt> {
        let entries = self
            .context
            .store
            .outbox(&self.context.group)
            .map_err(|e| Interrupt::Engine(e.to_string()))?;
        for (sequence, bytes) in entries {
            let parts = outbox::decode(&bytes).map_err(|e| {
                Interrupt::Engine(format!("outbox entry {sequence} is unreadable: {e}"))
            })?;
            self.deliver(sequence, parts, true)?;
        }
        Ok(())
    }

    /// Records progress: the next offset (or replay cursor) with the batch's state writes,
    /// committed by the next [`Worker::flush`].
    fn commit(
        &mut self,
        input: &Input,
        next_offset: u64,
        writes: StateWrites,
    ) -> Result<(), Interrupt> {
        self.state
            .writes
            .lock()
            .expect("writes lock")
            .extend(writes);
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
        let writes = std::mem::take(&mut *self.state.writes.lock().expect("writes lock"));
        let mut parts = Vec::new();
        for ((topic, partition), records) in std::mem::take(&mut self.outbox) {
            let start_hint = self
                .context
                .log
                .topic(&topic)
                .and_then(|t| t.partition(partition))
                .map_err(|e| Interrupt::Engine(format!("output topic: {e}")))?
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
            .map_err(|e| Interrupt::Engine(e.to_string()))?;
        self.state.committed(writes);
        self.delivered.clear();
        self.dirty = false;
        self.last_commit = Instant::now();
        self.rotation = self.rotation.wrapping_add(1);
        if let Some(sequence) = sequence {
            crate::crash_point::reached(crate::crash_point::OUTBOX_COMMITTED);
            self.deliver(sequence, parts, false)?;
        }
        Ok(())
    }

    /// Sends one record to the group's dead-letter topic and commits past it.
    fn dead_letter(
        &mut self,
        input: &Input,
        (offset, record): &(u64, Record),
        error: &SandboxError,
        failures: u32,
    ) -> Result<(), Interrupt> {
        let version = self
            .sandbox
            .as_ref()
            .map_or(self.deployment.active_version, |(v, _)| *v);
        let (topic, partition, attempts) = match input {
            Input::Log { partition } => (self.deployment.topic.clone(), *partition, failures),
            Input::Replay {
                topic,
                partition,
                attempts,
                ..
            } => (topic.clone(), *partition, attempts + failures),
        };
        let mut headers = record.headers.clone();
        let text = |s: String| Bytes::from(s);
        headers.extend([
            Header {
                key: DLQ_ERROR.into(),
                value: text(error.to_string()),
            },
            Header {
                key: DLQ_VERSION.into(),
                value: text(version.to_string()),
            },
            Header {
                key: DLQ_ATTEMPTS.into(),
                value: text(attempts.to_string()),
            },
            Header {
                key: DLQ_TOPIC.into(),
                value: text(topic.clone()),
            },
            Header {
                key: DLQ_PARTITION.into(),
                value: text(partition.to_string()),
            },
            Header {
                key: DLQ_OFFSET.into(),
                value: text(offset.to_string()),
            },
        ]);
        let letter = Record {
            timestamp: record.timestamp,
            key: record.key.clone(),
            value: record.value.clone(),
            headers,
        };
        let dlq = dlq_topic(&self.context.group);
        self.outbox
            .entry((Arc::from(dlq.as_str()), 0))
            .or_default()
            .push(letter);
        if self.deployment.limits.delivery != Delivery::ExactlyOnce {
            self.deliver_staged()?;
        }
        let message = format!(
            "record {topic}/{partition}@{offset} sent to `{dlq}` after {attempts} failed calls: {error}"
        );
        tracing::warn!(version, "{message}");
        self.note("warn", &message);
        self.context.shared.update(|s| s.dead_letters += 1);
        self.commit(input, offset + 1, StateWrites::new())
    }

    /// Puts the next dead letter of a requested replay through the plugin.
    fn replay_step(&mut self) -> Result<bool, Interrupt> {
        if let Some(end) = self.replay_request.take() {
            let cursor = self.replay.map_or(0, |(cursor, _)| cursor);
            self.replay = Some((cursor, end));
            self.dirty = true;
            self.flush()?;
        }
        let Some((cursor, end)) = self.replay else {
            return Ok(false);
        };
        if cursor >= end {
            return Ok(false);
        }
        let dlq = dlq_topic(&self.context.group);
        let partition = self
            .context
            .log
            .topic(&dlq)
            .and_then(|t| t.partition(0))
            .map_err(|e| Interrupt::Engine(format!("dead-letter topic: {e}")))?;
        let cursor = cursor.max(partition.log_start_offset());
        let fetched = partition
            .read(cursor, READ_BYTES)
            .map_err(|e| Interrupt::Engine(e.to_string()))?;
        let letters = batch::decode_all(&Bytes::from(fetched.data), cursor)
            .map_err(|e| Interrupt::Engine(format!("dead-letter topic: {e}")))?;
        let Some((dlq_offset, letter)) = letters.into_iter().next() else {
            return Ok(false);
        };
        let header = |name: &str| {
            letter
                .headers
                .iter()
                .rev()
                .find(|h| h.key == name)
                .and_then(|h| std::str::from_utf8(&h.value).ok())
                .map(str::to_string)
        };
        let input = Input::Replay {
            topic: header(DLQ_TOPIC).unwrap_or_else(|| self.deployment.topic.clone()),
            partition: header(DLQ_PARTITION)
                .and_then(|p| p.parse().ok())
                .unwrap_or(0),
            dlq_offset,
            end,
            attempts: header(DLQ_ATTEMPTS)
                .and_then(|a| a.parse().ok())
                .unwrap_or(0),
        };
        let source_offset = header(DLQ_OFFSET)
            .and_then(|o| o.parse().ok())
            .unwrap_or(dlq_offset);
        let original = Record {
            headers: letter
                .headers
                .iter()
                .filter(|h| !h.key.starts_with("sluice.dlq."))
                .cloned()
                .collect(),
            ..letter
        };
        let attempts = self.deployment.limits.max_attempts;
        self.process(&input, &[(source_offset, original)], attempts, 0)?;
        Ok(true)
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

/// Whether a record with this outbox marker is in `partition` at or after `from`.
fn in_log(partition: &Partition, from: u64, marker: &[u8]) -> Result<bool, Interrupt> {
    let mut offset = from.max(partition.log_start_offset());
    while offset < partition.high_watermark() {
        let fetched = partition
            .read(offset, READ_BYTES)
            .map_err(|e| Interrupt::Engine(e.to_string()))?;
        for decoded in batch::Batches::new(Bytes::from(fetched.data)) {
            let (_, records) = decoded.map_err(|e| Interrupt::Engine(e.to_string()))?;
            let marked = records.iter().any(|r| {
                r.headers
                    .iter()
                    .any(|h| h.key == OUTBOX_MARKER && h.value == marker)
            });
            if marked {
                return Ok(true);
            }
        }
        offset = fetched.next_offset;
    }
    Ok(false)
}
