//! The worker of one plugin group on a Kafka cluster: a thread that joins the group's Kafka
//! consumer group (`sluice.<group>`), and for each batch of records from the partitions it
//! owns runs the plugin with each partition's state ([`super::tasks`]), then commits the
//! emitted records, the state writes (to the changelog), the dead letters and the input
//! offsets in one Kafka transaction. It switches versions between transactions. A transaction
//! that fails is aborted and its batch read again (a rebalance, a broker lost); a failure the
//! session cannot go on from (a fenced producer, aborts in a row) ends the session, and a new
//! one starts from the committed offsets.

mod call;
mod membership;
mod transaction;

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::{Bytes, BytesMut};
use parking_lot::Mutex;
use rdkafka::consumer::{BaseConsumer, Consumer, ConsumerContext, Rebalance};
use rdkafka::message::{Headers, Message};
use rdkafka::producer::{DefaultProducerContext, Producer, ThreadedProducer};
use rdkafka::{ClientContext, TopicPartitionList};
use serde::Serialize;
use tokio::sync::watch;

use super::ClusterError;
use super::changelog::{changelog_topic, restore};
use super::client::{Clients, REQUEST_TIMEOUT};
use super::deployments::Components;
use super::tasks::Tasks;
use crate::log::{Header, Record};
use crate::runtime::{Deployment, Runtime, Sandbox, StartFrom, dlq_topic};
use membership::Membership;

/// Records one transaction takes at most (with `commit_interval_ms`, the other bound): a
/// transaction costs round trips to the cluster whatever its size, so a backlog is worked off
/// in large ones; this bounds the memory a batch holds (about 100 MB at 1 KiB records).
const TRANSACTION_RECORDS_MAX: usize = 100_000;
/// Size of the buffers a poll copies consumed keys and values into (one allocation per
/// chunk instead of one per key and per value; a larger key or value gets a chunk its size).
const COPY_CHUNK_BYTES: usize = 1 << 20;
/// Kafka's rebalance timeout for the group's consumer (`max.poll.interval.ms`, unless
/// `[cluster.client]` sets it): how long a rebalance waits for a member that does not rejoin
/// before it goes on without it. Kafka's default, 5 minutes, held every other worker's
/// partitions that long when one worker's consumer did not rejoin after its coordinator
/// moved. A worker polls between transactions, which the transaction timeout bounds.
const REBALANCE_TIMEOUT_MS: u64 = 60_000;
/// How long a poll waits for records when none are buffered.
const IDLE_POLL: Duration = Duration::from_millis(200);
/// Longest wait before a new session after failures.
const MAX_BACKOFF: Duration = Duration::from_secs(30);
/// First wait before a new session after a failure; doubles while failures last.
const FIRST_BACKOFF: Duration = Duration::from_millis(500);
/// How often a waiting group looks at its deployment.
const CONTROL_POLL: Duration = Duration::from_millis(50);

/// What the group should be doing, set by the [`super::Worker`].
#[derive(Debug, Clone)]
pub(crate) struct Desired {
    pub deployment: Deployment,
    pub stop: bool,
}

/// What a group reports, for `plugin describe`.
#[derive(Debug, Clone, Default, Serialize)]
pub struct GroupStatus {
    pub running_version: Option<u32>,
    pub status: String,
    pub last_error: Option<String>,
    /// Input partitions this worker owns.
    pub partitions: Vec<i32>,
    pub processed_records: u64,
    pub emitted_records: u64,
    pub dead_letters: u64,
    pub failed_calls: u64,
    pub batches: u64,
    pub transactions: u64,
    pub aborted_transactions: u64,
    /// Sessions started (a first one, then one after each failure).
    pub sessions: u64,
    pub state_entries: u64,
    pub state_bytes: u64,
}

/// What every group of a worker shares.
#[derive(Clone)]
pub(crate) struct Env {
    pub clients: Clients,
    pub runtime: Arc<Runtime>,
    pub components: Arc<Components>,
    pub worker_id: String,
}

pub(crate) fn spawn(
    env: Env,
    control: watch::Receiver<Desired>,
    status: Arc<Mutex<GroupStatus>>,
) -> std::thread::JoinHandle<()> {
    let group = control.borrow().deployment.group.clone();
    std::thread::Builder::new()
        .name(format!("sluice-group-{group}"))
        .spawn(move || run(&env, control, &status))
        .expect("the OS starts a thread")
}

fn set_status(status: &Mutex<GroupStatus>, text: &str) {
    let mut status = status.lock();
    if status.status != text {
        status.status = text.to_string();
    }
}

/// Sessions one after the other until the group stops: a failure ends a session, and the next
/// starts after a backoff from the committed offsets.
fn run(env: &Env, mut control: watch::Receiver<Desired>, status: &Arc<Mutex<GroupStatus>>) {
    let group = control.borrow().deployment.group.clone();
    let span = tracing::info_span!("group", group = %group);
    let _entered = span.enter();
    let mut failures = 0u32;
    loop {
        let desired = control.borrow_and_update().clone();
        if desired.stop {
            break;
        }
        if desired.deployment.paused {
            set_status(status, "paused");
            status.lock().partitions.clear();
            wait(&mut control, Duration::MAX);
            continue;
        }
        status.lock().sessions += 1;
        let outcome = Session::open(env, desired.deployment, status.clone()).and_then(|session| {
            let (session, outcome) = session.run_to_end(&mut control);
            match &outcome {
                Ok(()) => drop(session),
                // The failure's handling below clears its partitions at once, whatever the
                // teardown does.
                Err(_) => close_in_background(&group, session),
            }
            outcome
        });
        match outcome {
            Ok(()) => failures = 0,
            Err(error) => {
                let backoff = FIRST_BACKOFF
                    .saturating_mul(1 << failures.min(6))
                    .min(MAX_BACKOFF);
                failures += 1;
                let message = error.to_string();
                tracing::warn!(error = %message, ?backoff, "group session ended; starting a new one");
                {
                    let mut status = status.lock();
                    status.status = format!("failing: {message}");
                    status.last_error = Some(message);
                    status.partitions.clear();
                }
                wait(&mut control, backoff);
            }
        }
    }
    set_status(status, "stopped");
}

/// Lets go of a failed session's clients on a thread of their own. Closing a consumer leaves
/// its group and destroying a transactional producer waits on the cluster: with the broker
/// that coordinates them lost, that was seen to block for minutes, and the group's thread
/// (and its status, still naming the partitions) with it. The next session does not wait:
/// its producer fences this one's transactional id, and its consumer joins anew.
fn close_in_background(group: &str, session: Session) {
    let spawned = std::thread::Builder::new()
        .name(format!("sluice-close-{group}"))
        .spawn(move || {
            let started = Instant::now();
            drop(session);
            tracing::debug!(
                ms = started.elapsed().as_millis() as u64,
                "failed session closed"
            );
        });
    if let Err(error) = spawned {
        tracing::warn!(%error, "cannot close the failed session on a thread of its own");
    }
}

/// Waits up to `duration`, or until the deployment changes; true if it changed.
fn wait(control: &mut watch::Receiver<Desired>, duration: Duration) -> bool {
    let started = Instant::now();
    while started.elapsed() < duration {
        if control.has_changed().unwrap_or(true) {
            return true;
        }
        std::thread::sleep(CONTROL_POLL.min(duration));
    }
    false
}

/// Partitions assigned and revoked by rebalances, recorded by the consumer's callbacks
/// (which run inside `poll`) for the session to act on after it.
#[derive(Default)]
struct Rebalances {
    revoked: Mutex<Vec<i32>>,
    assigned: Mutex<Vec<i32>>,
}

struct GroupContext {
    rebalances: Arc<Rebalances>,
}

impl ClientContext for GroupContext {}

impl ConsumerContext for GroupContext {
    fn pre_rebalance(&self, _: &BaseConsumer<Self>, rebalance: &Rebalance<'_>) {
        let (list, partitions) = match rebalance {
            Rebalance::Assign(list) => (&self.rebalances.assigned, *list),
            Rebalance::Revoke(list) => (&self.rebalances.revoked, *list),
            Rebalance::Error(error) => {
                tracing::warn!(%error, "rebalance error");
                return;
            }
        };
        list.lock()
            .extend(partitions.elements().iter().map(|e| e.partition()));
    }
}

/// One membership of the consumer group, with its transactional producer.
pub(crate) struct Session {
    env: Env,
    deployment: Deployment,
    status: Arc<Mutex<GroupStatus>>,
    consumer: BaseConsumer<GroupContext>,
    /// Its own thread serves delivery reports, so a commit or an abort never waits on them.
    producer: ThreadedProducer<DefaultProducerContext>,
    rebalances: Arc<Rebalances>,
    tasks: Arc<Tasks>,
    /// The running version and its instance.
    sandbox: Option<(u32, Sandbox)>,
    /// Partition counts of the running version's output topics.
    outputs: BTreeMap<String, u32>,
    /// Picks the partition of emitted records without a key; moves on at each transaction.
    rotation: u32,
    changelog: String,
    dlq: String,
    /// Transactions aborted since the last commit.
    aborts_in_a_row: u32,
    membership: Membership,
}

impl Session {
    fn open(
        env: &Env,
        deployment: Deployment,
        status: Arc<Mutex<GroupStatus>>,
    ) -> Result<Session, ClusterError> {
        set_status(&status, "starting");
        let group = &deployment.group;
        let settings = env.clients.settings();
        let reset = match deployment.start {
            StartFrom::Latest => "latest",
            _ => "earliest",
        };
        let rebalances = Arc::new(Rebalances::default());
        // librdkafka refuses a poll interval shorter than the session timeout.
        let rebalance_timeout_ms = REBALANCE_TIMEOUT_MS.max(settings.session_timeout_ms);
        let mut config = env
            .clients
            .base_with(&[("max.poll.interval.ms", &rebalance_timeout_ms.to_string())]);
        let client_id = format!("sluice.{group}.{}", env.worker_id);
        let consumer_group = format!("sluice.{group}");
        config
            .set("group.id", &consumer_group)
            .set("client.id", &client_id)
            .set("enable.auto.commit", "false")
            .set("enable.auto.offset.store", "false")
            .set("isolation.level", "read_committed")
            .set("partition.assignment.strategy", "cooperative-sticky")
            .set(
                "session.timeout.ms",
                settings.session_timeout_ms.to_string(),
            )
            .set("auto.offset.reset", reset);
        let consumer: BaseConsumer<GroupContext> = config
            .create_with_context(GroupContext {
                rebalances: rebalances.clone(),
            })
            .map_err(ClusterError::kafka("creating the group's consumer"))?;
        // Outputs are written three times on a replicated cluster: compressed, the brokers
        // do less (and the network carries less). A sent record's success needs no report:
        // `commit_transaction` fails if any record of the transaction failed, so only the
        // failures are reported (the producer's polling thread otherwise handles one report
        // per record).
        let mut config = env.clients.base_with(&[
            ("compression.type", "lz4"),
            ("delivery.report.only.error", "true"),
        ]);
        config
            .set(
                "transactional.id",
                format!("sluice.{group}.{}", env.worker_id),
            )
            .set(
                "transaction.timeout.ms",
                settings.transaction_timeout_ms.to_string(),
            );
        let producer: ThreadedProducer<DefaultProducerContext> = config
            .create()
            .map_err(ClusterError::kafka("creating the group's producer"))?;
        // Fences this worker's previous incarnation and aborts a transaction it left open.
        producer
            .init_transactions(REQUEST_TIMEOUT)
            .map_err(ClusterError::kafka("starting transactions"))?;
        consumer
            .subscribe(&[deployment.topic.as_str()])
            .map_err(ClusterError::kafka(format!(
                "subscribing to `{}`",
                deployment.topic
            )))?;
        Ok(Session {
            env: env.clone(),
            changelog: changelog_topic(group),
            dlq: dlq_topic(group),
            deployment,
            status,
            consumer,
            producer,
            rebalances,
            tasks: Arc::new(Tasks::default()),
            sandbox: None,
            outputs: BTreeMap::new(),
            rotation: 0,
            aborts_in_a_row: 0,
            membership: Membership::new(
                consumer_group,
                client_id,
                Duration::from_millis(settings.session_timeout_ms.saturating_mul(2)),
            ),
        })
    }

    /// [`Session::run`], handing the session back with its outcome.
    fn run_to_end(
        mut self,
        control: &mut watch::Receiver<Desired>,
    ) -> (Session, Result<(), ClusterError>) {
        let outcome = self.run(control);
        (self, outcome)
    }

    /// Batches until the group stops or pauses (`Ok`) or the session fails (`Err`).
    fn run(&mut self, control: &mut watch::Receiver<Desired>) -> Result<(), ClusterError> {
        set_status(&self.status, "running");
        loop {
            // Between transactions: a new version takes effect at a transaction boundary.
            if control.has_changed().unwrap_or(true) {
                let desired = control.borrow_and_update().clone();
                if desired.stop || desired.deployment.paused {
                    return Ok(());
                }
                self.switch(desired.deployment);
            }
            let collecting = Instant::now();
            let batch = self.collect()?;
            if batch.is_empty() {
                // Idle with partitions: is this worker still the group's member that owns
                // them? (Busy, a refused commit would say.)
                if !self.status.lock().partitions.is_empty() {
                    self.membership.check(&self.consumer)?;
                }
                continue;
            }
            tracing::debug!(
                collecting_ms = collecting.elapsed().as_millis() as u64,
                "batch read"
            );
            self.transact(batch)?;
        }
    }

    /// Takes a new deployment record; a new active version starts before the next batch.
    fn switch(&mut self, deployment: Deployment) {
        let running = self.sandbox.as_ref().map(|(v, _)| *v);
        if running.is_some_and(|v| v != deployment.active_version) {
            tracing::info!(
                from = running,
                to = deployment.active_version,
                "switching versions between transactions"
            );
            self.sandbox = None;
        }
        self.deployment = deployment;
    }

    /// Records polled until [`TRANSACTION_RECORDS_MAX`] or until `commit_interval_ms` has
    /// passed since the first, by partition; empty when none came within [`IDLE_POLL`].
    fn collect(&mut self) -> Result<BTreeMap<i32, Vec<(i64, Record)>>, ClusterError> {
        let limits = &self.deployment.limits;
        let limit = TRANSACTION_RECORDS_MAX;
        let interval = Duration::from_millis(limits.commit_interval_ms.max(1));
        let mut batch: BTreeMap<i32, Vec<(i64, Record)>> = BTreeMap::new();
        let mut count = 0;
        let mut first: Option<Instant> = None;
        let mut copies = Copies::default();
        loop {
            let wait = match first {
                None => IDLE_POLL,
                Some(at) => interval.saturating_sub(at.elapsed()),
            };
            if first.is_some() && wait.is_zero() {
                break;
            }
            let polled = self.consumer.poll(wait);
            match polled {
                None => {}
                Some(Err(error)) => {
                    tracing::warn!(%error, "consumer error");
                    if matches!(error.rdkafka_error_code(), Some(code) if is_fatal(code)) {
                        return Err(ClusterError::kafka("consuming")(error));
                    }
                }
                Some(Ok(message)) if message.topic() == self.deployment.topic => {
                    batch
                        .entry(message.partition())
                        .or_default()
                        .push((message.offset(), copies.record(&message)));
                    count += 1;
                    first.get_or_insert_with(Instant::now);
                }
                Some(Ok(_)) => {}
            }
            self.apply_rebalances(&mut batch);
            // Nothing read within IDLE_POLL: back to the caller, which looks at the deployment.
            if count >= limit || first.is_none() {
                break;
            }
        }
        Ok(batch)
    }

    /// Drops the tasks (and the records read) of partitions that rebalances took away or
    /// newly gave: a newly assigned partition restores its state afresh.
    fn apply_rebalances(&mut self, batch: &mut BTreeMap<i32, Vec<(i64, Record)>>) {
        let revoked = std::mem::take(&mut *self.rebalances.revoked.lock());
        let assigned = std::mem::take(&mut *self.rebalances.assigned.lock());
        if revoked.is_empty() && assigned.is_empty() {
            return;
        }
        for partition in revoked.iter().chain(&assigned) {
            batch.remove(partition);
            self.tasks.remove(*partition);
        }
        let owned = self
            .consumer
            .assignment()
            .map(|list| list.elements().iter().map(|e| e.partition()).collect())
            .unwrap_or_default();
        tracing::info!(?revoked, ?assigned, ?owned, "rebalance");
        self.status.lock().partitions = owned;
    }

    /// Restores the state of `partition` from the changelog if this session has not yet.
    fn ensure_task(&self, partition: i32) -> Result<(), ClusterError> {
        if self.tasks.contains(partition) {
            return Ok(());
        }
        let mut wanted = TopicPartitionList::new();
        wanted.add_partition(&self.deployment.topic, partition);
        // For a read_committed consumer this waits until no transaction is in flight on it.
        let committed = self
            .consumer
            .committed_offsets(wanted, REQUEST_TIMEOUT)
            .map_err(ClusterError::kafka("reading committed offsets"))?;
        let until = committed
            .find_partition(&self.deployment.topic, partition)
            .and_then(|e| e.offset().to_raw())
            .filter(|&offset| offset >= 0);
        let settings = self.env.clients.settings();
        let patience = Duration::from_millis(settings.transaction_timeout_ms) * 3 + REQUEST_TIMEOUT;
        let started = Instant::now();
        let task = restore(
            &self.env.clients,
            &self.changelog,
            partition,
            until,
            patience,
        )?;
        tracing::info!(
            partition,
            until,
            entries = task.entries().len(),
            ms = started.elapsed().as_millis() as u64,
            "restored the partition's state from the changelog"
        );
        self.tasks.insert(partition, task);
        Ok(())
    }
}

/// Errors after which the client cannot go on.
fn is_fatal(code: rdkafka::types::RDKafkaErrorCode) -> bool {
    use rdkafka::types::RDKafkaErrorCode::*;
    matches!(code, Fatal | Fenced | ProducerFenced | InvalidProducerEpoch)
}

/// Copies of consumed messages: the client's buffers are its own until the next poll, so
/// their bytes are copied, into shared chunks rather than an allocation each (the group
/// thread spent a third of its time in malloc and free). A chunk is freed with the last
/// record copied into it, when the transaction is done with them.
#[derive(Default)]
struct Copies {
    chunk: BytesMut,
}

impl Copies {
    /// A consumed message as the plugin sees records.
    fn record<M: Message>(&mut self, message: &M) -> Record {
        let headers = match message.headers() {
            Some(headers) => headers
                .iter()
                .map(|h| Header {
                    key: h.key.to_string().into(),
                    value: h.value.map(|v| self.copy(v)),
                })
                .collect(),
            None => Vec::new(),
        };
        Record {
            timestamp: message.timestamp().to_millis().unwrap_or_default(),
            key: message.key().map(|k| self.copy(k)),
            value: message.payload().map(|v| self.copy(v)),
            headers,
        }
    }

    fn copy(&mut self, bytes: &[u8]) -> Bytes {
        if self.chunk.capacity() - self.chunk.len() < bytes.len() {
            self.chunk = BytesMut::with_capacity(COPY_CHUNK_BYTES.max(bytes.len()));
        }
        self.chunk.extend_from_slice(bytes);
        self.chunk.split().freeze()
    }
}

#[cfg(test)]
mod tests {
    use rdkafka::message::{Header as KafkaHeader, OwnedHeaders, OwnedMessage, Timestamp};

    use super::*;

    /// Each record keeps its own bytes, whether it shares a chunk, starts a new one, or is
    /// larger than a chunk; absent keys and values stay absent.
    #[test]
    fn copies_keep_each_messages_bytes_across_chunks() {
        let sizes = [0, 1, 100, COPY_CHUNK_BYTES - 5, 10, COPY_CHUNK_BYTES * 2, 7];
        let mut copies = Copies::default();
        let mut copied = Vec::new();
        for (i, &size) in sizes.iter().enumerate() {
            let value = vec![i as u8; size];
            let header = [i as u8, 0xff];
            let headers = OwnedHeaders::new().insert(KafkaHeader {
                key: "h",
                value: Some(&header[..]),
            });
            let message = OwnedMessage::new(
                Some(value.clone()),
                Some(format!("k{i}").into_bytes()),
                "in".into(),
                Timestamp::CreateTime(i as i64),
                0,
                i as i64,
                Some(headers),
            );
            copied.push((value, copies.record(&message)));
        }
        for (i, (value, record)) in copied.iter().enumerate() {
            assert_eq!(
                record.value.as_deref(),
                Some(value.as_slice()),
                "record {i}"
            );
            assert_eq!(record.key.as_deref(), Some(format!("k{i}").as_bytes()));
            assert_eq!(record.timestamp, i as i64);
            assert_eq!(record.headers.len(), 1);
            assert_eq!(record.headers[0].key.as_ref(), "h");
            assert_eq!(
                record.headers[0].value.as_deref(),
                Some(&[i as u8, 0xff][..])
            );
        }
        let bare = OwnedMessage::new(None, None, "in".into(), Timestamp::NotAvailable, 0, 9, None);
        let record = copies.record(&bare);
        assert_eq!((record.key, record.value), (None, None));
        assert!(record.headers.is_empty());
    }
}
