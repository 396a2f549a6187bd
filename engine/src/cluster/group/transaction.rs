//! One Kafka transaction per batch. It begins before the plugin runs: emitted records and
//! dead letters are sent as each call produces them, so the producer sends while the next
//! calls run; then the state writes (to the changelog, each partition's followed by its
//! position record) and the input offsets (`send_offsets_to_transaction`, with the consumer
//! group's metadata, so that a worker whose generation is over is refused) complete it, and
//! it commits: all of the batch or none of it. The state writes become the tasks' committed
//! state only after the commit.

use std::collections::BTreeMap;
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
const QUEUE_FULL_WAIT: Duration = Duration::from_millis(1);
/// Times a commit that failed with a retriable error is tried again.
const COMMIT_RETRIES: u32 = 3;

/// How many abortable failures in a row a session takes before it ends (and a new one
/// starts, after a backoff).
const ABORTS_IN_A_ROW_MAX: u32 = 5;
/// How long a seek back after an abort may take.
const SEEK_TIMEOUT: Duration = Duration::from_secs(10);

impl Session {
    /// Processes a batch and commits its effects in one transaction. On failure nothing of
    /// the batch stays: the transaction is aborted and the writes dropped. After an abortable
    /// failure (a rebalance that made the group's generation old, a broker lost past the
    /// retries) the consumer goes back to the batch's first offsets and the session goes on;
    /// after any other, or too many in a row, the caller ends the session.
    pub(super) fn transact(
        &mut self,
        batch: BTreeMap<i32, Vec<(i64, Record)>>,
    ) -> Result<(), ClusterError> {
        let started = std::time::Instant::now();
        let outcome = self
            .producer
            .begin_transaction()
            .map_err(ClusterError::kafka("transaction: begin"))
            .and_then(|()| self.process_batch(&batch))
            .and_then(|next_offsets| {
                let processing = started.elapsed();
                self.commit(&next_offsets)?;
                Ok(processing)
            });
        match outcome {
            Ok(processing) => {
                tracing::debug!(
                    records = batch.values().map(Vec::len).sum::<usize>(),
                    processing_ms = processing.as_millis() as u64,
                    committing_ms = (started.elapsed() - processing).as_millis() as u64,
                    "transaction committed"
                );
                self.tasks.commit();
                self.rotation = self.rotation.wrapping_add(1);
                self.aborts_in_a_row = 0;
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
                    return Err(error);
                }
                self.aborts_in_a_row += 1;
                if !error.is_abortable() || self.aborts_in_a_row > ABORTS_IN_A_ROW_MAX {
                    return Err(error);
                }
                tracing::warn!(%error, "transaction aborted; the batch is read again");
                self.status.lock().last_error = Some(error.to_string());
                self.rewind(&batch);
                Ok(())
            }
        }
    }

    /// Sends the consumer back to the first offset of each partition of an aborted batch
    /// (a partition a rebalance took away meanwhile is left to its new owner).
    fn rewind(&mut self, batch: &BTreeMap<i32, Vec<(i64, Record)>>) {
        for (&partition, records) in batch {
            let first = rdkafka::Offset::Offset(records[0].0);
            if let Err(error) =
                self.consumer
                    .seek(&self.deployment.topic, partition, first, SEEK_TIMEOUT)
            {
                tracing::info!(partition, %error, "not reading the partition again here");
                self.tasks.remove(partition);
            }
        }
    }

    /// Runs the plugin on each partition's records; the next input offset of each.
    fn process_batch(
        &mut self,
        batch: &BTreeMap<i32, Vec<(i64, Record)>>,
    ) -> Result<BTreeMap<i32, i64>, ClusterError> {
        let mut next_offsets = BTreeMap::new();
        for (&partition, records) in batch {
            self.ensure_task(partition)?;
            self.process_partition(partition, records)?;
            let last = records[records.len() - 1].0;
            next_offsets.insert(partition, last + 1);
        }
        Ok(next_offsets)
    }

    /// Completes the open transaction: the state writes and each partition's position record
    /// to the changelog, the input offsets, then the commit.
    fn commit(&mut self, next_offsets: &BTreeMap<i32, i64>) -> Result<(), ClusterError> {
        let failed = |what: &str| ClusterError::kafka(format!("transaction: {what}"));
        let changelog = self.changelog.clone();
        for (partition, writes) in self.tasks.pending() {
            for (key, value) in &writes {
                self.send_raw(
                    &changelog,
                    partition,
                    Some(&state_key(key)),
                    value.as_deref(),
                )?;
            }
        }
        for (&partition, &next) in next_offsets {
            let position = next.to_be_bytes();
            self.send_raw(&changelog, partition, Some(POSITION_KEY), Some(&position))?;
        }
        crate::crash_point::reached(crate::crash_point::CLUSTER_RECORDS_SENT);
        let mut offsets = TopicPartitionList::new();
        for (&partition, &next) in next_offsets {
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

    /// Sends a record (with its headers and timestamp) in the open transaction.
    pub(super) fn send(
        &self,
        topic: &str,
        partition: i32,
        record: Option<&Record>,
    ) -> Result<(), ClusterError> {
        let Some(record) = record else {
            return self.send_raw(topic, partition, None, None);
        };
        let mut headers = OwnedHeaders::new_with_capacity(record.headers.len());
        for header in &record.headers {
            headers = headers.insert(KafkaHeader {
                key: &header.key,
                value: header.value.as_deref(),
            });
        }
        let mut out = BaseRecord::<[u8], [u8]>::to(topic)
            .partition(partition)
            .headers(headers)
            .timestamp(record.timestamp);
        if let Some(key) = record.key.as_deref() {
            out = out.key(key);
        }
        if let Some(value) = record.value.as_deref() {
            out = out.payload(value);
        }
        self.queue(topic, out)
    }

    /// Sends a key and value (a tombstone without one) in the open transaction.
    fn send_raw(
        &self,
        topic: &str,
        partition: i32,
        key: Option<&[u8]>,
        value: Option<&[u8]>,
    ) -> Result<(), ClusterError> {
        let mut out = BaseRecord::<[u8], [u8]>::to(topic).partition(partition);
        if let Some(key) = key {
            out = out.key(key);
        }
        if let Some(value) = value {
            out = out.payload(value);
        }
        self.queue(topic, out)
    }

    /// Queues a record, waiting while the producer's queue is full.
    fn queue(
        &self,
        topic: &str,
        mut record: BaseRecord<'_, [u8], [u8]>,
    ) -> Result<(), ClusterError> {
        loop {
            match self.producer.send(record) {
                Ok(()) => return Ok(()),
                Err((KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull), back)) => {
                    record = back;
                    std::thread::sleep(QUEUE_FULL_WAIT);
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
