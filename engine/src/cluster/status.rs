//! What every worker does for every group, shared through the compacted topic
//! `_sluice_status` (key `<group>/<worker id>`): each worker reports its groups every
//! [`REPORT_INTERVAL`] (partitions owned with their committed offsets, ends and lag, and its
//! counters), writes a tombstone when it stops a group, and follows the topic, so
//! `plugin describe` through any worker shows all of them. A worker killed without a
//! tombstone drops out of the view once its last report is older than [`STALE_AFTER`].

use std::collections::BTreeMap;
use std::time::Duration;

use parking_lot::Mutex;
use rdkafka::TopicPartitionList;
use rdkafka::consumer::{BaseConsumer, Consumer};

use super::ClusterError;
use super::client::Clients;
use super::group::GroupStatus;
use crate::log::now_ms;
use crate::runtime::{PartitionProgress, WorkerProgress};

/// The compacted topic of worker reports.
pub const STATUS_TOPIC: &str = "_sluice_status";
/// How often a worker reports.
pub(crate) const REPORT_INTERVAL: Duration = Duration::from_secs(2);
/// A report older than this is a worker that is gone.
const STALE_AFTER: Duration = Duration::from_secs(30);
/// How long a report's requests (committed offsets, partition ends) may take: a slow cluster
/// delays a report, never stops the others.
const REPORT_REQUEST_TIMEOUT: Duration = Duration::from_secs(5);

/// The key of a worker's report on a group.
pub(crate) fn report_key(group: &str, worker_id: &str) -> String {
    format!("{group}/{worker_id}")
}

/// The reports read from the status topic, by group and worker.
#[derive(Default)]
pub(crate) struct Reports {
    by_group: Mutex<BTreeMap<String, BTreeMap<String, WorkerProgress>>>,
}

impl Reports {
    /// Takes one record of the status topic.
    pub(crate) fn apply(&self, key: &[u8], value: Option<&[u8]>) {
        let key = String::from_utf8_lossy(key);
        let Some((group, worker)) = key.split_once('/') else {
            return;
        };
        let mut by_group = self.by_group.lock();
        let workers = by_group.entry(group.to_string()).or_default();
        match value.map(serde_json::from_slice::<WorkerProgress>) {
            Some(Ok(progress)) => {
                workers.insert(worker.to_string(), progress);
            }
            None => {
                workers.remove(worker);
            }
            Some(Err(error)) => {
                tracing::warn!(%error, %key, "skipping an unreadable worker report")
            }
        }
    }

    /// The workers that reported on `group` lately, by id.
    pub(crate) fn live(&self, group: &str) -> Vec<WorkerProgress> {
        let oldest = now_ms() - STALE_AFTER.as_millis() as i64;
        self.by_group
            .lock()
            .get(group)
            .map(|workers| {
                workers
                    .values()
                    .filter(|w| w.updated_ms >= oldest)
                    .cloned()
                    .collect()
            })
            .unwrap_or_default()
    }
}

/// Reads committed offsets and partition ends for a worker's reports.
pub(crate) struct Progress {
    /// One reader per group: committed offsets are read as the group's.
    readers: BTreeMap<String, BaseConsumer>,
    clients: Clients,
}

impl Progress {
    pub(crate) fn new(clients: &Clients) -> Progress {
        Progress {
            readers: BTreeMap::new(),
            clients: clients.clone(),
        }
    }

    /// This worker's report on `group`, reading topic `topic`.
    pub(crate) fn report(
        &mut self,
        worker_id: &str,
        group: &str,
        topic: &str,
        status: &GroupStatus,
    ) -> Result<WorkerProgress, ClusterError> {
        let partitions = self.partitions(group, topic, &status.partitions)?;
        Ok(WorkerProgress {
            worker_id: worker_id.to_string(),
            status: status.status.clone(),
            running_version: status.running_version,
            partitions,
            processed_records: status.processed_records,
            emitted_records: status.emitted_records,
            dead_letters: status.dead_letters,
            transactions: status.transactions,
            aborted_transactions: status.aborted_transactions,
            updated_ms: now_ms(),
        })
    }

    fn partitions(
        &mut self,
        group: &str,
        topic: &str,
        owned: &[i32],
    ) -> Result<Vec<PartitionProgress>, ClusterError> {
        if owned.is_empty() {
            return Ok(Vec::new());
        }
        let reader = match self.readers.get(group) {
            Some(reader) => reader,
            None => {
                let mut config = self.clients.base();
                config
                    .set("group.id", format!("sluice.{group}"))
                    .set("enable.auto.commit", "false")
                    .set("isolation.level", "read_committed");
                let reader: BaseConsumer = config
                    .create()
                    .map_err(ClusterError::kafka("creating a progress reader"))?;
                self.readers.entry(group.to_string()).or_insert(reader)
            }
        };
        let mut wanted = TopicPartitionList::new();
        for &partition in owned {
            wanted.add_partition(topic, partition);
        }
        let committed = reader
            .committed_offsets(wanted, REPORT_REQUEST_TIMEOUT)
            .map_err(ClusterError::kafka("reading committed offsets"))?;
        let mut progress = Vec::new();
        for &partition in owned {
            let (start, end) = reader
                .fetch_watermarks(topic, partition, REPORT_REQUEST_TIMEOUT)
                .map_err(ClusterError::kafka("reading a partition's end"))?;
            let committed = committed
                .find_partition(topic, partition)
                .and_then(|e| e.offset().to_raw())
                .filter(|&offset| offset >= 0);
            let from = committed.unwrap_or(start).max(0) as u64;
            progress.push(PartitionProgress {
                partition: partition as u32,
                committed: committed.map(|c| c as u64),
                high_watermark: end.max(0) as u64,
                lag: (end.max(0) as u64).saturating_sub(from),
            });
        }
        Ok(progress)
    }

    /// Forgets a group's reader (the group stopped here).
    pub(crate) fn forget(&mut self, group: &str) {
        self.readers.remove(group);
    }
}
