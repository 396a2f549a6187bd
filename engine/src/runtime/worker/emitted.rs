//! The records a group emits: staged per output partition until the next commit, committed
//! as one outbox entry with the state and offsets, then appended to the log; after a crash
//! the committed entries are appended once (a marker header finds those already there).

use std::collections::BTreeMap;
use std::ops::Range;
use std::sync::Arc;

use bytes::Bytes;

use super::error::{EngineError, Interrupt};
use super::{READ_BYTES, Worker};
use crate::log::headers::{OUTBOX_MARKER, PRODUCED_BY};
use crate::log::partitioner::partition_for_key;
use crate::log::{Header, Partition, Record, batch, now_ms};
use crate::runtime::Emitted;
use crate::txn::outbox::{self, Part};

/// Bytes of emitted records a group stages between two commits at most: past it the worker
/// commits early, whatever `commit_interval_ms` says, so a group's memory stays bounded.
pub(super) const STAGED_BYTES_MAX: usize = 64 << 20;
/// Bytes of emitted records appended as one stored batch at most (a larger record is a batch
/// of its own), so that fetches of an output topic stay within their `max_bytes`.
pub(super) const EMITTED_BATCH_BYTES: usize = 1 << 20;

/// `records` cut into runs of at most [`EMITTED_BATCH_BYTES`] (at least one record each),
/// each appended as one batch. Depends on the records alone, so an outbox entry delivered
/// again after a crash is cut the same way.
fn batches(records: &[Record]) -> Vec<Range<usize>> {
    let mut out = Vec::new();
    let (mut start, mut bytes) = (0, 0);
    for (i, record) in records.iter().enumerate() {
        let size = record.size_bytes();
        if i > start && bytes + size > EMITTED_BATCH_BYTES {
            out.push(start..i);
            (start, bytes) = (i, 0);
        }
        bytes += size;
    }
    if start < records.len() {
        out.push(start..records.len());
    }
    out
}

/// The marker of batch `index` of an outbox entry's part: the entry's own for the first (as
/// entries were marked before parts were cut), then `.1`, `.2`, ...
fn batch_marker(entry: &str, index: usize) -> Bytes {
    match index {
        0 => Bytes::from(entry.to_string()),
        _ => Bytes::from(format!("{entry}.{index}")),
    }
}

/// Records emitted since the last commit, by output topic and partition.
#[derive(Default)]
pub(super) struct Staged {
    records: BTreeMap<(Arc<str>, u32), Vec<Record>>,
    bytes: usize,
}

impl Staged {
    pub(super) fn push(&mut self, topic: Arc<str>, partition: u32, record: Record) {
        self.bytes += record.size_bytes();
        self.records
            .entry((topic, partition))
            .or_default()
            .push(record);
    }

    /// Bytes of keys, values and headers staged.
    pub(super) fn bytes(&self) -> usize {
        self.bytes
    }

    pub(super) fn take(&mut self) -> BTreeMap<(Arc<str>, u32), Vec<Record>> {
        self.bytes = 0;
        std::mem::take(&mut self.records)
    }

    pub(super) fn clear(&mut self) {
        self.take();
    }
}

/// Marks an emitted record: the time it was emitted, and `<group>/<version>` that emitted it.
pub(crate) fn stamp(record: &mut Record, now: i64, produced_by: &Bytes) {
    record.timestamp = now;
    record.headers.push(Header {
        key: PRODUCED_BY.into(),
        value: Some(produced_by.clone()),
    });
}

impl Worker {
    /// Stages what the plugin emitted for the next commit, routed to partitions (by key, as
    /// producers route; records without a key go to one partition per commit, in turn).
    pub(super) fn stage_emitted(
        &mut self,
        version: u32,
        emitted: Vec<Emitted>,
    ) -> Result<(), Interrupt> {
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
                        return Err(EngineError::NotAnOutput {
                            version,
                            topic: topic.to_string(),
                            outputs: outputs.iter().map(|o| o.to_string()).collect(),
                        }
                        .into());
                    }
                    let partitions = self
                        .context
                        .log
                        .topic(&topic)
                        .map_err(|e| EngineError::topic("output topic", e))?
                        .partition_count();
                    current = Some((topic.clone(), partitions));
                    partitions
                }
            };
            let partition = match &record.key {
                Some(key) => partition_for_key(key, partitions),
                None => self.rotation % partitions,
            };
            stamp(&mut record, now, &produced_by);
            self.outbox.push(topic, partition, record);
        }
        self.context.shared.update(|s| s.emitted_records += count);
        Ok(())
    }

    /// Appends a committed outbox entry to the log, durably. With `check`, parts already in
    /// the log (a crash came between their append and the entry's deletion) are skipped.
    pub(super) fn deliver(
        &mut self,
        sequence: u64,
        parts: Vec<Part>,
        check: bool,
    ) -> Result<(), Interrupt> {
        let entry = format!("{}/{sequence}", self.context.group);
        for mut part in parts {
            let partition = self.output_partition(&part.topic, part.partition)?;
            // Batches are appended in order: once one is missing, so are the rest.
            let mut checking = check;
            for (index, range) in batches(&part.records).into_iter().enumerate() {
                let marker = batch_marker(&entry, index);
                if checking && in_log(&partition, part.start_hint, &marker)? {
                    tracing::info!(
                        sequence,
                        topic = %part.topic,
                        partition = part.partition,
                        batch = index,
                        "outbox entry: this batch is already in the log; not appending it again"
                    );
                    continue;
                }
                checking = false;
                part.records[range.start].headers.push(Header {
                    key: OUTBOX_MARKER.into(),
                    value: Some(marker),
                });
                self.append(&partition, &part.topic, &part.records[range])?;
                crate::crash_point::reached(crate::crash_point::OUTBOX_PART_APPENDED);
            }
        }
        self.delivered.push(sequence);
        self.dirty = true;
        Ok(())
    }

    /// Appends the staged records at once, without the outbox (at-least-once and
    /// at-most-once delivery).
    pub(super) fn deliver_staged(&mut self) -> Result<(), Interrupt> {
        for ((topic, partition), records) in self.outbox.take() {
            let target = self.output_partition(&topic, partition)?;
            for range in batches(&records) {
                self.append(&target, &topic, &records[range])?;
            }
        }
        Ok(())
    }

    pub(super) fn output_partition(
        &self,
        topic: &str,
        partition: u32,
    ) -> Result<Arc<Partition>, Interrupt> {
        self.context
            .log
            .topic(topic)
            .and_then(|t| t.partition(partition))
            .map_err(|e| EngineError::topic("output topic", e).into())
    }

    /// Appends records to a partition as one batch and waits until they are durable.
    pub(super) fn append(
        &self,
        partition: &Arc<Partition>,
        topic: &str,
        records: &[Record],
    ) -> Result<(), Interrupt> {
        self.context
            .handle
            .block_on(partition.append_durable(records))
            .map(drop)
            .map_err(|e| EngineError::topic(format!("output topic `{topic}`"), e).into())
    }

    /// Delivers the outbox entries a crash left committed but maybe not in the log.
    pub(super) fn recover_outbox(&mut self) -> Result<(), Interrupt> {
        let entries = self
            .context
            .store
            .outbox(&self.context.group)
            .map_err(EngineError::from)?;
        for (sequence, bytes) in entries {
            let parts = outbox::decode(&bytes)
                .map_err(|source| EngineError::Outbox { sequence, source })?;
            self.deliver(sequence, parts, true)?;
        }
        Ok(())
    }
}

/// Whether a record with this outbox marker is in `partition` at or after `from`.
fn in_log(partition: &Partition, from: u64, marker: &[u8]) -> Result<bool, Interrupt> {
    let mut offset = from.max(partition.log_start_offset());
    while offset < partition.high_watermark() {
        let fetched = partition
            .read(offset, READ_BYTES)
            .map_err(EngineError::from)?;
        for decoded in batch::Batches::new(Bytes::from(fetched.data)) {
            let (_, records) = decoded.map_err(|source| EngineError::Batch {
                partition: partition.id,
                source,
            })?;
            let marked = records.iter().any(|r| {
                r.headers
                    .iter()
                    .any(|h| h.key == OUTBOX_MARKER && h.value.as_deref() == Some(marker))
            });
            if marked {
                return Ok(true);
            }
        }
        offset = fetched.next_offset;
    }
    Ok(false)
}
