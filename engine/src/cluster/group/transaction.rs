//! One Kafka transaction per batch: the emitted records, the state writes (to the changelog,
//! each followed by the partition's position record), the dead letters and the input offsets
//! (`send_offsets_to_transaction`, with the consumer group's metadata, so that a worker whose
//! generation is over is fenced) commit together or not at all. The state writes become the
//! tasks' committed state only after the commit.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use rdkafka::TopicPartitionList;
use rdkafka::consumer::Consumer;
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::message::{Header as KafkaHeader, OwnedHeaders};
use rdkafka::producer::{BaseRecord, Producer};

use super::Session;
use crate::cluster::ClusterError;
use crate::cluster::changelog::{POSITION_KEY, state_key};
use crate::cluster::client::REQUEST_TIMEOUT;
use crate::log::Record;

/// How long a full producer queue is given to drain before a send is tried again.
const QUEUE_FULL_WAIT: Duration = Duration::from_millis(50);
/// Times a commit that failed with a retriable error is tried again.
const COMMIT_RETRIES: u32 = 3;

/// What a batch's transaction writes.
#[derive(Default)]
pub(crate) struct Effects {
    /// Emitted records: topic, partition, record.
    pub outputs: Vec<(Arc<str>, i32, Record)>,
    pub dead_letters: Vec<Record>,
    /// Next offset of each input partition the batch read.
    pub next_offsets: BTreeMap<i32, i64>,
}

impl Session {
    /// Processes a batch and commits its effects in one transaction. On failure nothing of
    /// the batch stays: the transaction is aborted, the writes dropped, and the caller ends
    /// the session (the next starts from the committed offsets).
    pub(super) fn transact(
        &mut self,
        batch: BTreeMap<i32, Vec<(i64, Record)>>,
    ) -> Result<(), ClusterError> {
        let mut effects = Effects::default();
        let outcome = self
            .process_batch(&batch, &mut effects)
            .and_then(|()| self.commit(&effects));
        match outcome {
            Ok(()) => {
                self.tasks.commit();
                self.rotation = self.rotation.wrapping_add(1);
                let (entries, bytes) = self.tasks.sizes();
                let mut status = self.status.lock();
                status.transactions += 1;
                status.state_entries = entries;
                status.state_bytes = bytes;
                Ok(())
            }
            Err(error) => {
                self.tasks.discard();
                self.status.lock().aborted_transactions += 1;
                if let Err(abort) = self.producer.abort_transaction(REQUEST_TIMEOUT) {
                    tracing::warn!(%abort, "aborting the transaction");
                }
                Err(error)
            }
        }
    }

    fn process_batch(
        &mut self,
        batch: &BTreeMap<i32, Vec<(i64, Record)>>,
        effects: &mut Effects,
    ) -> Result<(), ClusterError> {
        for (&partition, records) in batch {
            self.ensure_task(partition)?;
            self.process_partition(partition, records, effects)?;
            let last = records[records.len() - 1].0;
            effects.next_offsets.insert(partition, last + 1);
        }
        Ok(())
    }

    fn commit(&mut self, effects: &Effects) -> Result<(), ClusterError> {
        let failed = |what: &str| ClusterError::kafka(format!("transaction: {what}"));
        self.producer.begin_transaction().map_err(failed("begin"))?;
        for (topic, partition, record) in &effects.outputs {
            self.send(
                topic,
                *partition,
                record.key.as_deref(),
                record.value.as_deref(),
                Some(record),
            )?;
        }
        let changelog = self.changelog.clone();
        for (partition, writes) in self.tasks.pending() {
            for (key, value) in &writes {
                self.send(
                    &changelog,
                    partition,
                    Some(&state_key(key)),
                    value.as_deref(),
                    None,
                )?;
            }
        }
        for (&partition, &next) in &effects.next_offsets {
            let position = next.to_be_bytes();
            self.send(
                &changelog,
                partition,
                Some(POSITION_KEY),
                Some(&position),
                None,
            )?;
        }
        let dlq = self.dlq.clone();
        for letter in &effects.dead_letters {
            self.send(
                &dlq,
                0,
                letter.key.as_deref(),
                letter.value.as_deref(),
                Some(letter),
            )?;
        }
        crate::crash_point::reached(crate::crash_point::CLUSTER_RECORDS_SENT);
        let mut offsets = TopicPartitionList::new();
        for (&partition, &next) in &effects.next_offsets {
            offsets
                .add_partition_offset(
                    &self.deployment.topic,
                    partition,
                    rdkafka::Offset::Offset(next),
                )
                .map_err(failed("offsets"))?;
        }
        let metadata = self
            .consumer
            .group_metadata()
            .ok_or_else(|| failed("offsets")(KafkaError::NoMessageReceived))?;
        self.producer
            .send_offsets_to_transaction(&offsets, &metadata, REQUEST_TIMEOUT)
            .map_err(failed("sending the offsets"))?;
        crate::crash_point::reached(crate::crash_point::CLUSTER_OFFSETS_SENT);
        let mut retries = 0;
        loop {
            match self.producer.commit_transaction(REQUEST_TIMEOUT) {
                Ok(()) => break,
                Err(KafkaError::Transaction(error))
                    if error.is_retriable() && retries < COMMIT_RETRIES =>
                {
                    retries += 1;
                    tracing::warn!(%error, retries, "committing the transaction again");
                }
                Err(error) => return Err(failed("commit")(error)),
            }
        }
        crate::crash_point::reached(crate::crash_point::CLUSTER_COMMITTED);
        Ok(())
    }

    /// Queues one record of the transaction, waiting while the producer's queue is full.
    fn send(
        &self,
        topic: &str,
        partition: i32,
        key: Option<&[u8]>,
        value: Option<&[u8]>,
        source: Option<&Record>,
    ) -> Result<(), ClusterError> {
        let mut record = BaseRecord::<[u8], [u8]>::to(topic).partition(partition);
        if let Some(key) = key {
            record = record.key(key);
        }
        if let Some(value) = value {
            record = record.payload(value);
        }
        if let Some(source) = source {
            let mut headers = OwnedHeaders::new_with_capacity(source.headers.len());
            for header in &source.headers {
                headers = headers.insert(KafkaHeader {
                    key: &header.key,
                    value: header.value.as_deref(),
                });
            }
            record = record.headers(headers).timestamp(source.timestamp);
        }
        loop {
            match self.producer.send(record) {
                Ok(()) => return Ok(()),
                Err((KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull), back)) => {
                    record = back;
                    self.producer.poll(QUEUE_FULL_WAIT);
                }
                Err((error, _)) => {
                    return Err(ClusterError::kafka(format!(
                        "transaction: producing to `{topic}`"
                    ))(error));
                }
            }
        }
    }
}
