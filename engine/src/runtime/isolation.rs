//! The search for poison records when a batch keeps failing: a loop over an explicit stack
//! of ranges, never recursion, so a batch of any size is searched in bounded stack space.
//! Both workers use it: the single engine's (`runtime/worker/`) and the cluster worker's.

use std::ops::Range;

use super::SandboxError;

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
pub(crate) enum Outcome {
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

/// What the search drives: calls of the plugin on a range of the records (with retries up to
/// `attempts`), and the dead-lettering of one record.
pub(crate) trait Isolate {
    type Error;
    fn call(&mut self, range: Range<usize>, attempts: u32) -> Result<Outcome, Self::Error>;
    fn dead_letter(
        &mut self,
        at: usize,
        error: SandboxError,
        failures: u32,
    ) -> Result<(), Self::Error>;
}

/// Processes `len` records in offset order: the whole range with up to `attempts` calls, then
/// after a failure the search isolates the failing records by halving and dead-letters each.
/// With every record poison the stack holds `len` ranges at most.
pub(crate) fn search<I: Isolate>(
    len: usize,
    attempts: u32,
    isolate: &mut I,
) -> Result<(), I::Error> {
    let mut steps = vec![Step::Process {
        range: 0..len,
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
                let outcome = isolate.call(range.clone(), attempts)?;
                push_steps(&mut steps, range, outcome, attempts, earlier_failures);
            }
            Step::DeadLetter {
                at,
                error,
                failures,
            } => isolate.dead_letter(at, error, failures)?,
        }
    }
    Ok(())
}

/// What a failed call (its `failures`-th in a row) on the records at offsets `batch` means
/// for the search: a poison record within the batch ends the call's retries, as
/// [`Outcome::Poison`]; any other error (a poison offset outside the batch counts as a plain
/// failure) is returned to be retried.
pub(crate) fn failed_call(
    error: SandboxError,
    batch: std::ops::RangeInclusive<u64>,
    failures: u32,
) -> Result<Outcome, SandboxError> {
    let (first, last) = (*batch.start(), *batch.end());
    match error {
        SandboxError::Poison { offset, reason } if batch.contains(&offset) => Ok(Outcome::Poison {
            at: (offset - first) as usize,
            error: SandboxError::Poison { offset, reason },
            failures: failures + 1,
        }),
        SandboxError::Poison { offset, reason } => Err(SandboxError::Failed(format!(
            "the plugin rejected offset {offset}, which is not in the batch {first}..={last}: {reason}"
        ))),
        error => Err(error),
    }
}
