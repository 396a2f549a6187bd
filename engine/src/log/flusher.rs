//! Group commit: a few threads fsync partitions that have unsynced appends, so that all the
//! appends that arrive while a partition's previous fsync runs share its next one.
//!
//! Partitions in `fsync` mode are flushed as soon as a thread is free; partitions in
//! `interval` mode when their interval since the first unsynced append has passed. Each
//! thread flushes one partition at a time, so a slow fsync of one partition never holds back
//! the acknowledgements of another.

use parking_lot::{Condvar, Mutex};
use std::collections::VecDeque;
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use super::partition::Partition;

/// Threads issuing fsyncs. fdatasyncs of different files proceed in parallel in the kernel
/// and the file system journal merges them; a handful keeps the disk busy without a thread
/// per partition.
const FLUSH_THREADS: usize = 4;

#[derive(Default)]
struct Queue {
    urgent: VecDeque<Arc<Partition>>,
    relaxed: Vec<(Instant, Arc<Partition>)>,
    stopping: bool,
}

#[derive(Default)]
struct Shared {
    queue: Mutex<Queue>,
    wake: Condvar,
}

/// How long the flusher sleeps with nothing relaxed queued; an enqueue wakes it sooner.
const IDLE_WAIT: Duration = Duration::from_secs(3600);

pub struct Flusher {
    shared: Arc<Shared>,
    threads: Mutex<Vec<JoinHandle<()>>>,
    /// How long each partition fsync took (the flusher's, and a roll's seal), for `/metrics`.
    pub fsync_seconds: prometheus::Histogram,
}

/// Upper bounds of the fsync histogram's buckets: 50 µs doubling to about 1.6 s.
fn fsync_buckets_seconds() -> Vec<f64> {
    prometheus::exponential_buckets(50e-6, 2.0, 16).expect("valid bucket parameters")
}

impl Flusher {
    pub fn start() -> Arc<Flusher> {
        let shared = Arc::new(Shared::default());
        let threads = (0..FLUSH_THREADS)
            .map(|i| {
                let worker = shared.clone();
                std::thread::Builder::new()
                    .name(format!("sluice-flush-{i}"))
                    .spawn(move || run(&worker))
                    .expect("spawning a flusher thread")
            })
            .collect();
        let opts = prometheus::HistogramOpts::new(
            "sluice_fsync_duration_seconds",
            "Time an fsync of a partition's segment took.",
        )
        .buckets(fsync_buckets_seconds());
        Arc::new(Flusher {
            shared,
            threads: Mutex::new(threads),
            fsync_seconds: prometheus::Histogram::with_opts(opts)
                .expect("a valid histogram definition"),
        })
    }

    /// Queues a partition for flushing as soon as possible (`due == None`) or at a time.
    pub(super) fn enqueue(&self, partition: Arc<Partition>, due: Option<Instant>) {
        let mut queue = self.shared.queue.lock();
        match due {
            None => queue.urgent.push_back(partition),
            Some(due) => queue.relaxed.push((due, partition)),
        }
        drop(queue);
        self.shared.wake.notify_one();
    }

    /// Flushes everything queued and stops the threads.
    pub fn stop(&self) {
        self.shared.queue.lock().stopping = true;
        self.shared.wake.notify_all();
        for thread in self.threads.lock().drain(..) {
            let _ = thread.join();
        }
    }
}

fn run(shared: &Shared) {
    while let Some(partition) = next_partition(shared) {
        partition.flush();
    }
}

/// Waits for a partition to flush; `None` once stopping and nothing is left.
fn next_partition(shared: &Shared) -> Option<Arc<Partition>> {
    let mut queue = shared.queue.lock();
    loop {
        if let Some(partition) = queue.urgent.pop_front() {
            return Some(partition);
        }
        let now = Instant::now();
        let stopping = queue.stopping;
        if let Some(i) = queue
            .relaxed
            .iter()
            .position(|(due, _)| stopping || *due <= now)
        {
            return Some(queue.relaxed.swap_remove(i).1);
        }
        if stopping {
            return None;
        }
        let timeout = queue
            .relaxed
            .iter()
            .map(|(due, _)| due.saturating_duration_since(now))
            .min()
            .unwrap_or(IDLE_WAIT);
        shared.wake.wait_for(&mut queue, timeout);
    }
}
