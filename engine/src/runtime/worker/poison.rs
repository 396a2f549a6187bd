//! Calling the plugin on a read, with retries, and the search for poison records when a
//! batch keeps failing: a loop over an explicit stack of ranges, never recursion, so a batch
//! of any size is searched in bounded stack space.

use std::ops::Range;
use std::time::Duration;

use super::error::Interrupt;
use super::{Input, MAX_BACKOFF, Worker};
use crate::log::{Record, batch};
use crate::runtime::deployment::Delivery;
use crate::runtime::{Batch, Processed, SandboxError};

/// One step of processing a read: a range of its records to call the plugin on, or one of
/// its records to dead-letter.
enum Step {
    Process {
        range: Range<usize>,
        attempts: u32,
        /// Failed calls on a larger range holding this one, counted into dead letters.
        earlier_failures: u32,
    },
    DeadLetter {
        at: usize,
        error: SandboxError,
        failures: u32,
    },
}

/// How calling the plugin on a range ended.
enum Outcome {
    Done,
    /// The plugin rejected the record `at` (within the range) as poison.
    Poison {
        at: usize,
        error: SandboxError,
        failures: u32,
    },
    /// Every attempt failed.
    Failed {
        error: SandboxError,
        failures: u32,
    },
}

/// Pushes what follows `outcome` on `range`, so that the stack pops it in offset order.
/// After a poison record the rest is split in halves: a run of poison records then costs
/// n log n records sent to the plugin, not n squared. After exhausted attempts the range is
/// split in halves, each tried once, down to single records that are dead-lettered.
fn push_steps(
    steps: &mut Vec<Step>,
    range: Range<usize>,
    outcome: Outcome,
    attempts: u32,
    earlier_failures: u32,
) {
    let halves = |steps: &mut Vec<Step>, range: Range<usize>, attempts, earlier_failures| {
        let middle = range.start + range.len() / 2;
        for half in [middle..range.end, range.start..middle] {
            if !half.is_empty() {
                steps.push(Step::Process {
                    range: half,
                    attempts,
                    earlier_failures,
                });
            }
        }
    };
    match outcome {
        Outcome::Done => {}
        Outcome::Poison {
            at,
            error,
            failures,
        } => {
            let at = range.start + at;
            halves(steps, at + 1..range.end, attempts, earlier_failures);
            steps.push(Step::DeadLetter {
                at,
                error,
                failures: earlier_failures + failures,
            });
            if at > range.start {
                steps.push(Step::Process {
                    range: range.start..at,
                    attempts,
                    earlier_failures,
                });
            }
        }
        Outcome::Failed { error, failures } => {
            let failed_so_far = earlier_failures + failures;
            if range.len() == 1 {
                steps.push(Step::DeadLetter {
                    at: range.start,
                    error,
                    failures: failed_so_far,
                });
            } else {
                halves(steps, range, 1, failed_so_far);
            }
        }
    }
}

impl Worker {
    /// Runs the plugin on `records` (consecutive offsets) with up to `attempts` calls, then
    /// isolates the failing records by halving, sending each to the dead-letter topic.
    /// `earlier_failures` counts failed calls these records were already part of.
    /// Processes `records` (one read, or one dead letter being replayed) and commits them:
    /// a failing batch is retried, then searched for its poison records, which go to the
    /// dead-letter topic. The search is a loop over an explicit stack of ranges (not
    /// recursion): with every record poison it holds `batch_records` ranges at most.
    pub(super) fn process(
        &mut self,
        input: &Input,
        records: &[(u64, Record)],
        attempts: u32,
    ) -> Result<(), Interrupt> {
        let mut steps = vec![Step::Process {
            range: 0..records.len(),
            attempts,
            earlier_failures: 0,
        }];
        while let Some(step) = steps.pop() {
            match step {
                Step::Process {
                    range,
                    attempts,
                    earlier_failures,
                } => {
                    let outcome = self.call(input, &records[range.clone()], attempts)?;
                    push_steps(&mut steps, range, outcome, attempts, earlier_failures);
                }
                Step::DeadLetter {
                    at,
                    error,
                    failures,
                } => {
                    self.dead_letter(input, &records[at], &error, failures)?;
                }
            }
        }
        Ok(())
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
                Err(SandboxError::Poison { offset, reason })
                    if (first..=last).contains(&offset) =>
                {
                    return Ok(Outcome::Poison {
                        at: (offset - first) as usize,
                        error: SandboxError::Poison { offset, reason },
                        failures: failures + 1,
                    });
                }
                Err(SandboxError::Poison { offset, reason }) => SandboxError::Failed(format!(
                    "the plugin rejected offset {offset}, which is not in the batch {first}..={last}: {reason}"
                )),
                Err(error) => error,
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
