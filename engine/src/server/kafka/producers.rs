//! Idempotent producers: InitProducerId hands out producer ids, and each partition remembers,
//! per producer, its epoch and the sequence numbers of its last batches, so that a batch a
//! producer sends again (a retry after a lost answer) is written once and answered with the
//! offset it was first written at, and a batch out of order is refused.
//!
//! Producer ids come from `kafka.producer_ids` in the data directory, a block at a time, the
//! block's end written (and synced) before any id of it is handed out: an id is never given
//! twice, across restarts too. The sequence state lives in the log, as Kafka keeps it: each
//! batch of an idempotent producer is stored with its producer id, epoch and first sequence
//! number, and the first produce to a partition after a start reads those stamps back from the
//! last [`RECOVERY_SCAN_BYTES`] of the partition. A retry that crosses a restart (even a
//! `kill -9`) is still answered as a duplicate; a producer whose last batch lies further back
//! than that is taken whatever its sequence, as Kafka takes one whose state expired.

use std::collections::{HashMap, VecDeque};
use std::path::PathBuf;
use std::sync::Arc;

use kafka_protocol::ResponseError;
use parking_lot::Mutex;

use crate::log::partition::Partition;
use crate::log::{LogError, write_atomically};

/// Producer ids reserved in the file at a time.
const ID_BLOCK: i64 = 1_000;
/// Batches remembered per producer and partition: Kafka's limit of in-flight requests.
const BATCHES_REMEMBERED_MAX: usize = 5;
/// Producers remembered per partition; the least recently seen is forgotten past it.
const PRODUCERS_PER_PARTITION_MAX: usize = 10_000;
/// How far back from its end a partition's log is read, at the first produce after a start,
/// for the batches its idempotent producers wrote.
pub(crate) const RECOVERY_SCAN_BYTES: u64 = 64 * 1024 * 1024;

/// Hands out producer ids, never the same twice.
pub(crate) struct ProducerIds {
    path: PathBuf,
    /// (next id, end of the reserved block).
    next: Mutex<(i64, i64)>,
}

impl ProducerIds {
    pub(crate) fn open(data_dir: &std::path::Path) -> Result<ProducerIds, LogError> {
        let path = data_dir.join("kafka.producer_ids");
        let reserved = match std::fs::read_to_string(&path) {
            Ok(text) => text.trim().parse::<i64>().unwrap_or(0),
            Err(error) if error.kind() == std::io::ErrorKind::NotFound => 0,
            Err(error) => return Err(LogError::io(&path, error)),
        };
        // What the last run reserved may have been handed out: start past it.
        Ok(ProducerIds {
            path,
            next: Mutex::new((reserved, reserved)),
        })
    }

    /// A new producer id.
    pub fn allocate(&self) -> Result<i64, LogError> {
        let mut next = self.next.lock();
        if next.0 >= next.1 {
            let end = next.1 + ID_BLOCK;
            write_atomically(&self.path, end.to_string().as_bytes())?;
            next.1 = end;
        }
        let id = next.0;
        next.0 += 1;
        Ok(id)
    }
}

/// The producer fields of a produced batch.
#[derive(Debug, Clone, Copy)]
pub(super) struct BatchProducer {
    pub id: i64,
    pub epoch: i16,
    pub base_sequence: i32,
    pub count: i32,
}

struct Written {
    base_sequence: i32,
    last_sequence: i32,
    base_offset: u64,
}

#[derive(Default)]
struct ProducerState {
    epoch: i16,
    batches: VecDeque<Written>,
}

/// What to do with a batch.
pub(super) enum Verdict {
    /// Write it.
    Append,
    /// Written before, at this offset: answer so, write nothing.
    Duplicate(u64),
}

/// The producers of one partition.
#[derive(Default)]
pub(super) struct PartitionProducers {
    producers: HashMap<i64, ProducerState>,
    /// Producer ids, least recently seen first.
    seen: VecDeque<i64>,
    /// The log partition this state belongs to, once read back from its log: a topic deleted
    /// and created again under the same name starts afresh.
    partition: std::sync::Weak<Partition>,
}

impl PartitionProducers {
    /// Makes this the state of `partition`: read back from its log the first time.
    fn belong_to(&mut self, partition: &Arc<Partition>) -> Result<(), LogError> {
        if std::ptr::eq(self.partition.as_ptr(), Arc::as_ptr(partition)) {
            return Ok(());
        }
        *self = PartitionProducers::default();
        for (stamp, base_offset, count) in partition.stamped_batches(RECOVERY_SCAN_BYTES)? {
            let batch = BatchProducer {
                id: stamp.id,
                epoch: stamp.epoch,
                base_sequence: stamp.base_sequence,
                count: count as i32,
            };
            self.written(&batch, base_offset);
        }
        self.partition = Arc::downgrade(partition);
        Ok(())
    }

    /// Whether `batch` is new, a duplicate, or refused (the error code).
    pub fn check(&self, batch: &BatchProducer) -> Result<Verdict, i16> {
        let Some(state) = self.producers.get(&batch.id) else {
            return Ok(Verdict::Append); // first seen (or forgotten): taken as it comes
        };
        if batch.epoch < state.epoch {
            return Err(ResponseError::InvalidProducerEpoch.code());
        }
        if batch.epoch > state.epoch {
            // A bumped epoch starts its sequences again.
            return match batch.base_sequence {
                0 => Ok(Verdict::Append),
                _ => Err(ResponseError::OutOfOrderSequenceNumber.code()),
            };
        }
        if let Some(written) = state
            .batches
            .iter()
            .find(|w| w.base_sequence == batch.base_sequence)
        {
            return Ok(Verdict::Duplicate(written.base_offset));
        }
        let expected = state
            .batches
            .back()
            .map_or(0, |w| w.last_sequence.wrapping_add(1).max(0));
        match batch.base_sequence == expected {
            true => Ok(Verdict::Append),
            false => Err(ResponseError::OutOfOrderSequenceNumber.code()),
        }
    }

    /// Remembers a batch written at `base_offset`.
    pub fn written(&mut self, batch: &BatchProducer, base_offset: u64) {
        let state = self.producers.entry(batch.id).or_default();
        if batch.epoch != state.epoch {
            state.epoch = batch.epoch;
            state.batches.clear();
        }
        state.batches.push_back(Written {
            base_sequence: batch.base_sequence,
            last_sequence: batch.base_sequence.wrapping_add(batch.count - 1),
            base_offset,
        });
        if state.batches.len() > BATCHES_REMEMBERED_MAX {
            state.batches.pop_front();
        }
        // The usual case, the same producer again, costs no scan.
        if self.seen.back() != Some(&batch.id) {
            self.seen.retain(|id| *id != batch.id);
            self.seen.push_back(batch.id);
        }
        if self.seen.len() > PRODUCERS_PER_PARTITION_MAX
            && let Some(oldest) = self.seen.pop_front()
        {
            self.producers.remove(&oldest);
        }
    }
}

/// A partition's producers, locked from a batch's check to its append.
type Guarded = Arc<Mutex<PartitionProducers>>;

/// The producers of every partition, each partition's behind a lock of its own, held from the
/// check of a batch to its append.
#[derive(Default)]
pub(crate) struct Producers {
    partitions: Mutex<HashMap<(String, u32), Guarded>>,
}

impl Producers {
    /// The producers of `partition`, locked; read back from its log at the first call.
    pub(super) fn lock(
        &self,
        partition: &Arc<Partition>,
    ) -> Result<parking_lot::ArcMutexGuard<parking_lot::RawMutex, PartitionProducers>, LogError>
    {
        let guarded = self
            .partitions
            .lock()
            .entry((partition.topic.to_string(), partition.id))
            .or_default()
            .clone();
        let mut producers = guarded.lock_arc();
        producers.belong_to(partition)?;
        Ok(producers)
    }
}

/// InitProducerId: a new producer id at epoch 0, or (KIP-360) the same id at the next epoch
/// for a producer that asks with its own. Transactions are not served.
pub(super) fn init_producer_id(
    request: kafka_protocol::messages::InitProducerIdRequest,
    ids: &ProducerIds,
) -> kafka_protocol::messages::InitProducerIdResponse {
    use kafka_protocol::messages::{InitProducerIdResponse, ProducerId};
    let refused = |code: i16| {
        InitProducerIdResponse::default()
            .with_error_code(code)
            .with_producer_id(ProducerId(-1))
            .with_producer_epoch(-1)
    };
    if request
        .transactional_id
        .as_ref()
        .is_some_and(|id| !id.0.is_empty())
    {
        return refused(ResponseError::TransactionalIdAuthorizationFailed.code());
    }
    if request.producer_id.0 >= 0 && request.producer_epoch >= 0 {
        let epoch = request.producer_epoch.checked_add(1);
        return match epoch {
            Some(epoch) => InitProducerIdResponse::default()
                .with_producer_id(request.producer_id)
                .with_producer_epoch(epoch),
            // The epoch is spent: a new id.
            None => allocated(ids, refused),
        };
    }
    allocated(ids, refused)
}

fn allocated(
    ids: &ProducerIds,
    refused: impl Fn(i16) -> kafka_protocol::messages::InitProducerIdResponse,
) -> kafka_protocol::messages::InitProducerIdResponse {
    use kafka_protocol::messages::{InitProducerIdResponse, ProducerId};
    match ids.allocate() {
        Ok(id) => InitProducerIdResponse::default()
            .with_producer_id(ProducerId(id))
            .with_producer_epoch(0),
        Err(error) => {
            tracing::error!(%error, "kafka: cannot reserve producer ids");
            refused(ResponseError::KafkaStorageError.code())
        }
    }
}
