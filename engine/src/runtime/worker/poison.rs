//! Calling the plugin on a read, with retries; a batch that keeps failing is searched for
//! its poison records by [`crate::runtime::isolation`].

use std::ops::Range;
use std::time::Duration;

use super::error::Interrupt;
use super::{Input, MAX_BACKOFF, Worker};
use crate::log::{Record, batch};
use crate::runtime::deployment::Delivery;
use crate::runtime::isolation::{self, Isolate, Outcome};
use crate::runtime::{Batch, Processed, SandboxError};

/// One read (or one dead letter being replayed) as the search sees it.
struct Read<'a> {
    worker: &'a mut Worker,
    input: &'a Input,
    records: &'a [(u64, Record)],
}

impl Isolate for Read<'_> {
    type Error = Interrupt;

    fn call(&mut self, range: Range<usize>, attempts: u32) -> Result<Outcome, Interrupt> {
        self.worker.call(self.input, &self.records[range], attempts)
    }

    fn dead_letter(
        &mut self,
        at: usize,
        error: SandboxError,
        failures: u32,
    ) -> Result<(), Interrupt> {
        self.worker
            .dead_letter(self.input, &self.records[at], &error, failures)
    }
}

impl Worker {
    /// Processes `records` (one read, or one dead letter being replayed) and commits them:
    /// a failing batch is retried, then searched for its poison records, which go to the
    /// dead-letter topic.
    pub(super) fn process(
        &mut self,
        input: &Input,
        records: &[(u64, Record)],
        attempts: u32,
    ) -> Result<(), Interrupt> {
        let mut read = Read {
            worker: self,
            input,
            records,
        };
        isolation::search(records.len(), attempts, &mut read)
    }

    /// Calls the plugin on `records` up to `attempts` times (with backoff); on success
    /// stages and commits what it produced.
    fn call(
        &mut self,
        input: &Input,
        records: &[(u64, Record)],
        attempts: u32,
    ) -> Result<Outcome, Interrupt> {
        let first = records[0].0;
        let last = records[records.len() - 1].0;
        let batch = self.make_batch(input, records);
        let mut failures = 0;
        loop {
            // Between calls, whatever the search is doing: a stop or a new deployment takes
            // effect within one call's deadline.
            self.check_control()?;
            self.ensure_sandbox()?;
            let (version, sandbox) = self.sandbox.as_mut().expect("ensured above");
            let version = *version;
            let started = std::time::Instant::now();
            let processed = sandbox.process(&batch);
            let shared = &self.context.shared;
            shared
                .batch_seconds
                .observe(started.elapsed().as_secs_f64());
            let memory = sandbox.memory_bytes() as u64;
            shared.update(|s| {
                s.instance_memory_bytes = memory;
                s.batches += 1;
            });
            let error = match processed.and_then(|p| self.within_limits(p)) {
                Ok((processed, growth)) => {
                    self.stage_emitted(version, processed.emitted)?;
                    // At-least-once appends outputs before the commit (a crash repeats them).
                    // Exactly-once and at-most-once put them in the outbox, committed with the
                    // state writes: a batch takes effect whole or not at all.
                    if self.deployment.limits.delivery == Delivery::AtLeastOnce {
                        self.deliver_staged()?;
                    }
                    self.commit(input, last + 1, (processed.state_writes, growth))?;
                    self.context
                        .shared
                        .update(|s| s.processed_records += records.len() as u64);
                    return Ok(Outcome::Done);
                }
                Err(error) => match isolation::failed_call(error, first..=last, failures) {
                    Ok(poison) => return Ok(poison),
                    Err(error) => error,
                },
            };
            failures += 1;
            self.note_failure(version, first..=last, failures, attempts, &error);
            if failures < attempts {
                self.context.shared.update(|s| s.retries += 1);
                let backoff = Duration::from_millis(self.deployment.limits.retry_backoff_ms)
                    .saturating_mul(1 << (failures - 1).min(16))
                    .min(MAX_BACKOFF);
                self.sleep(backoff)?;
                continue;
            }
            return Ok(Outcome::Failed { error, failures });
        }
    }

    /// `processed` with what its state writes add to the state; `StateFull` if they would
    /// grow it past `max_state_bytes`, `OutputRefused` if it emitted a record larger than its
    /// output topic takes. Either fails the call, so the record responsible is isolated and
    /// dead-lettered like any poison record.
    fn within_limits(&self, processed: Processed) -> Result<(Processed, i64), SandboxError> {
        let mut start = 0;
        while start < processed.emitted.len() {
            let topic = &processed.emitted[start].topic;
            let run = processed.emitted[start..]
                .iter()
                .take_while(|e| e.topic == *topic)
                .count();
            // An unknown topic is the engine's to report (`stage_emitted`), not a size.
            if let Ok(output) = self.context.log.topic(topic) {
                let records = processed.emitted[start..start + run]
                    .iter()
                    .map(|e| &e.record);
                output
                    .check_record_sizes(records)
                    .map_err(SandboxError::OutputRefused)?;
            }
            start += run;
        }
        let growth = self
            .state
            .growth(&processed.state_writes)
            .map_err(SandboxError::State)?;
        if growth <= 0 {
            return Ok((processed, growth));
        }
        let limit = self.deployment.limits.max_state_bytes;
        // An unreadable size counts as full: the commit would fail on the same store anyway.
        let committed = self
            .context
            .store
            .state_size(&self.context.group)
            .map_or(u64::MAX, |(_, bytes)| bytes);
        let size = committed
            .saturating_add_signed(self.state.staged_growth())
            .saturating_add_signed(growth);
        if size > limit {
            return Err(SandboxError::StateFull { size, limit });
        }
        Ok((processed, growth))
    }

    /// Reports a failed call in the group's status and logs; drops a sandbox it left unusable.
    fn note_failure(
        &mut self,
        version: u32,
        offsets: std::ops::RangeInclusive<u64>,
        failures: u32,
        attempts: u32,
        error: &SandboxError,
    ) {
        if error.needs_restart() {
            self.sandbox = None;
        }
        let (first, last) = offsets.into_inner();
        let message =
            format!("batch {first}..={last} failed (call {failures} of {attempts}): {error}");
        tracing::warn!(version, "{message}");
        self.note("warn", &message);
        self.context.shared.update(|s| {
            s.failed_calls += 1;
            *s.errors.entry(error.kind()).or_default() += 1;
            s.last_error = Some(error.to_string());
            s.status = format!("retrying: {error}");
        });
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
}
