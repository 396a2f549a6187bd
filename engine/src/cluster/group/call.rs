//! Calling the plugin on the records of one input partition, with retries and the search for
//! poison records shared with the single engine ([`crate::runtime::isolation`]); what a call
//! emits and the dead letters are sent in the open transaction as they come, so the producer
//! sends them while the next calls run.

use std::ops::Range;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;

use super::Session;
use crate::cluster::ClusterError;
use crate::log::partitioner::partition_for_key;
use crate::log::{Record, batch, now_ms};
use crate::runtime::isolation::{self, Isolate, Outcome};
use crate::runtime::worker::{Origin, letter, stamp};
use crate::runtime::{Batch, Emitted, Processed, Sandbox, SandboxError, SandboxIdentity};
use crate::txn::state::StateStore;

/// Longest wait between retries of a call.
const MAX_BACKOFF: Duration = Duration::from_secs(30);

/// One input partition's records in a transaction, as the search sees them.
struct Call<'a> {
    session: &'a mut Session,
    partition: i32,
    records: &'a [(i64, Record)],
}

impl Isolate for Call<'_> {
    type Error = ClusterError;

    fn call(&mut self, range: Range<usize>, attempts: u32) -> Result<Outcome, ClusterError> {
        let records = &self.records[range];
        self.session.call(self.partition, records, attempts)
    }

    fn dead_letter(
        &mut self,
        at: usize,
        error: SandboxError,
        failures: u32,
    ) -> Result<(), ClusterError> {
        let (offset, record) = &self.records[at];
        let session = &mut *self.session;
        let version = session
            .sandbox
            .as_ref()
            .map_or(session.deployment.active_version, |(v, _)| *v);
        let origin = Origin {
            topic: &session.deployment.topic,
            partition: self.partition as u32,
            offset: *offset as u64,
        };
        let message = format!(
            "record {}/{}@{offset} sent to `{}` after {failures} failed calls: {error}",
            origin.topic, origin.partition, session.dlq
        );
        let letter = letter(record, &origin, version, failures, &error);
        let dlq = session.dlq.clone();
        session.send(&dlq, 0, Some(&letter))?;
        tracing::warn!(version, "{message}");
        session.status.lock().dead_letters += 1;
        Ok(())
    }
}

impl Session {
    /// Runs the plugin on one partition's records in batches of `batch_records`, isolating
    /// and dead-lettering poison records; what they produce is sent in the open transaction.
    pub(super) fn process_partition(
        &mut self,
        partition: i32,
        records: &[(i64, Record)],
    ) -> Result<(), ClusterError> {
        self.tasks.select(partition);
        let size = self.deployment.limits.batch_records.max(1) as usize;
        let attempts = self.deployment.limits.max_attempts;
        for chunk in records.chunks(size) {
            let mut call = Call {
                session: self,
                partition,
                records: chunk,
            };
            isolation::search(chunk.len(), attempts, &mut call)?;
        }
        Ok(())
    }

    /// Calls the plugin on `records` up to `attempts` times (with backoff); on success its
    /// emitted records are sent in the open transaction and its state writes join it.
    fn call(
        &mut self,
        partition: i32,
        records: &[(i64, Record)],
        attempts: u32,
    ) -> Result<Outcome, ClusterError> {
        let first = records[0].0 as u64;
        let last = records[records.len() - 1].0 as u64;
        let plain: Vec<Record> = records.iter().map(|(_, r)| r.clone()).collect();
        let batch = Batch {
            topic: self.deployment.topic.clone(),
            partition: partition as u32,
            base_offset: first,
            count: records.len() as u32,
            records: batch::encode_records_frame(&plain),
        };
        let mut failures = 0;
        loop {
            self.ensure_sandbox()?;
            let (version, sandbox) = self.sandbox.as_mut().expect("ensured above");
            let version = *version;
            let processed = sandbox.process(&batch);
            self.status.lock().batches += 1;
            let error = match processed.and_then(|p| self.within_limits(p)) {
                Ok(processed) => {
                    self.stage_emitted(version, processed.emitted)?;
                    self.tasks.stage(processed.state_writes);
                    self.status.lock().processed_records += records.len() as u64;
                    return Ok(Outcome::Done);
                }
                Err(error) => match isolation::failed_call(error, first..=last, failures) {
                    Ok(poison) => return Ok(poison),
                    Err(error) => error,
                },
            };
            failures += 1;
            if error.needs_restart() {
                self.sandbox = None;
            }
            tracing::warn!(
                version,
                "batch {first}..={last} failed (call {failures} of {attempts}): {error}"
            );
            {
                let mut status = self.status.lock();
                status.failed_calls += 1;
                status.last_error = Some(error.to_string());
            }
            if failures < attempts {
                let backoff = Duration::from_millis(self.deployment.limits.retry_backoff_ms)
                    .saturating_mul(1 << (failures - 1).min(16))
                    .min(MAX_BACKOFF);
                std::thread::sleep(backoff);
                continue;
            }
            return Ok(Outcome::Failed { error, failures });
        }
    }

    /// `StateFull` if the call's writes would grow its partition's state past
    /// `max_state_bytes`: the record responsible is then isolated and dead-lettered.
    fn within_limits(&self, processed: Processed) -> Result<Processed, SandboxError> {
        let growth = self.tasks.growth(&processed.state_writes);
        if growth <= 0 {
            return Ok(processed);
        }
        let limit = self.deployment.limits.max_state_bytes;
        let size = self.tasks.size_bytes().saturating_add_signed(growth);
        if size > limit {
            return Err(SandboxError::StateFull { size, limit });
        }
        Ok(processed)
    }

    /// Starts the active version if it is not the one running, and looks up its output
    /// topics' partition counts.
    fn ensure_sandbox(&mut self) -> Result<(), ClusterError> {
        let active = self.deployment.active_version;
        if self.sandbox.as_ref().is_some_and(|(v, _)| *v == active) {
            return Ok(());
        }
        let version = self.deployment.active().clone();
        let wasm = self.env.components.get(&version.digest)?;
        let plugin = self.env.runtime.compile(&wasm)?;
        let mut outputs = std::collections::BTreeMap::new();
        for topic in &version.output_topics {
            outputs.insert(topic.clone(), self.env.clients.partition_count(topic)?);
        }
        let version_text = active.to_string();
        let identity = SandboxIdentity {
            group: &self.deployment.group,
            version: &version_text,
            log_sink: None,
        };
        let state: Arc<dyn StateStore> = self.tasks.clone();
        let config: Vec<(String, String)> = version.config.clone().into_iter().collect();
        let sandbox = Sandbox::start(
            &self.env.runtime,
            &plugin,
            self.deployment.limits.sandbox(),
            identity,
            state,
            &config,
        )
        .map_err(ClusterError::Start)?;
        tracing::info!(version = active, "version running");
        self.outputs = outputs;
        self.sandbox = Some((active, sandbox));
        self.status.lock().running_version = Some(active);
        Ok(())
    }

    /// Sends what the plugin emitted in the open transaction, routed to output partitions (by
    /// key, as producers route; records without a key to one partition per transaction, in
    /// turn).
    fn stage_emitted(&mut self, version: u32, emitted: Vec<Emitted>) -> Result<(), ClusterError> {
        let produced_by = Bytes::from(format!("{}/{version}", self.deployment.group));
        let now = now_ms();
        let count = emitted.len() as u64;
        for Emitted { topic, mut record } in emitted {
            let Some(&partitions) = self.outputs.get(&*topic) else {
                return Err(crate::runtime::EngineError::NotAnOutput {
                    version,
                    topic: topic.to_string(),
                    outputs: self.outputs.keys().cloned().collect(),
                }
                .into());
            };
            let partition = match &record.key {
                Some(key) => partition_for_key(key, partitions),
                None => self.rotation % partitions,
            };
            stamp(&mut record, now, &produced_by);
            self.send(&topic, partition as i32, Some(&record))?;
        }
        self.status.lock().emitted_records += count;
        Ok(())
    }
}
