//! Group commit: commits that arrive while a transaction is being made durable wait for it,
//! then share the next one. Several groups' commits (and, per group, the batches of a commit
//! interval) cost one redb transaction and one fsync.
//!
//! No thread of its own: the first committer to find no transaction in progress leads it,
//! taking every commit queued so far; the others wait for their result.

use parking_lot::{Condvar, Mutex};
use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};

use super::state::StateWrites;

use super::StoreError;

/// One group's commit, owned so that another thread's transaction can apply it.
#[derive(Debug)]
pub(super) struct Commit {
    pub group: String,
    /// (topic, partition, next offset).
    pub positions: Vec<(String, u32, u64)>,
    pub writes: StateWrites,
    pub replay: Option<(u64, u64)>,
    pub outbox: Option<Vec<u8>>,
    pub delivered: Vec<u64>,
}

type Outcome = Result<Option<u64>, StoreError>;

#[derive(Default)]
struct Queue {
    waiting: Vec<(u64, Commit)>,
    finished: HashMap<u64, Outcome>,
    in_progress: bool,
    next_ticket: u64,
}

#[derive(Default)]
pub(super) struct GroupCommit {
    queue: Mutex<Queue>,
    done: Condvar,
    commits: AtomicU64,
    transactions: AtomicU64,
}

impl GroupCommit {
    /// Queues `commit` and returns once a transaction holding it is durable (or failed).
    /// `apply_all` makes one transaction of the commits it is given.
    pub fn commit(
        &self,
        commit: Commit,
        apply_all: impl FnOnce(&[(u64, Commit)]) -> Result<Vec<Option<u64>>, StoreError>,
    ) -> Outcome {
        self.commits.fetch_add(1, Ordering::Relaxed);
        let mut queue = self.queue.lock();
        let ticket = queue.next_ticket;
        queue.next_ticket += 1;
        queue.waiting.push((ticket, commit));
        let mut apply_all = Some(apply_all);
        loop {
            if let Some(outcome) = queue.finished.remove(&ticket) {
                return outcome;
            }
            // A follower never leads (it has handed its commit to the queue and may wait for
            // it), but a committer whose commit missed the running transaction does.
            if queue.in_progress {
                self.done.wait(&mut queue);
                continue;
            }
            queue.in_progress = true;
            let batch = std::mem::take(&mut queue.waiting);
            drop(queue);
            let apply = apply_all.take().expect("a committer leads at most once");
            self.transactions.fetch_add(1, Ordering::Relaxed);
            let outcomes: Vec<Outcome> = match apply(&batch) {
                Ok(sequences) => sequences.into_iter().map(Ok).collect(),
                Err(error) => batch.iter().map(|_| Err(error.clone())).collect(),
            };
            queue = self.queue.lock();
            queue.in_progress = false;
            for ((ticket, _), outcome) in batch.iter().zip(outcomes) {
                queue.finished.insert(*ticket, outcome);
            }
            self.done.notify_all();
        }
    }

    /// (commits asked for, transactions made) since the store opened.
    pub fn counts(&self) -> (u64, u64) {
        (
            self.commits.load(Ordering::Relaxed),
            self.transactions.load(Ordering::Relaxed),
        )
    }
}
