//! Group commit: one thread fsyncs every partition that has unsynced appends, so that all the
//! appends that arrived while the previous round ran share the next round's fsync.
//!
//! Partitions in `fsync` mode are flushed as soon as possible; partitions in `interval` mode
//! are flushed when their interval since the first unsynced append has passed.

use std::sync::{Arc, Condvar, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use super::partition::Partition;

#[derive(Default)]
struct Queue {
    urgent: Vec<Arc<Partition>>,
    relaxed: Vec<(Instant, Arc<Partition>)>,
    stopping: bool,
}

#[derive(Default)]
struct Shared {
    queue: Mutex<Queue>,
    wake: Condvar,
}

pub struct Flusher {
    shared: Arc<Shared>,
    thread: Mutex<Option<JoinHandle<()>>>,
}

impl Flusher {
    pub fn start() -> Arc<Flusher> {
        let shared = Arc::new(Shared::default());
        let worker = shared.clone();
        let thread = std::thread::Builder::new()
            .name("sluice-flusher".into())
            .spawn(move || run(&worker))
            .expect("spawning the flusher thread");
        Arc::new(Flusher {
            shared,
            thread: Mutex::new(Some(thread)),
        })
    }

    /// Queues a partition for the next round (`due == None`) or for a time.
    pub(super) fn enqueue(&self, partition: Arc<Partition>, due: Option<Instant>) {
        let mut queue = self.shared.queue.lock().expect("flush queue lock");
        match due {
            None => queue.urgent.push(partition),
            Some(due) => queue.relaxed.push((due, partition)),
        }
        drop(queue);
        self.shared.wake.notify_one();
    }

    /// Flushes everything queued and stops the thread.
    pub fn stop(&self) {
        self.shared.queue.lock().expect("flush queue lock").stopping = true;
        self.shared.wake.notify_one();
        if let Some(thread) = self.thread.lock().expect("flusher thread lock").take() {
            let _ = thread.join();
        }
    }
}

fn run(shared: &Shared) {
    loop {
        let (work, stopping) = next_round(shared);
        for partition in &work {
            partition.flush();
        }
        if stopping {
            return;
        }
    }
}

/// Waits for partitions to flush and takes them off the queue.
fn next_round(shared: &Shared) -> (Vec<Arc<Partition>>, bool) {
    let mut queue = shared.queue.lock().expect("flush queue lock");
    loop {
        let now = Instant::now();
        let relaxed_due = queue.relaxed.iter().any(|(due, _)| *due <= now);
        if queue.stopping || relaxed_due || !queue.urgent.is_empty() {
            let mut work = std::mem::take(&mut queue.urgent);
            let stopping = queue.stopping;
            let (due, later): (Vec<_>, Vec<_>) = std::mem::take(&mut queue.relaxed)
                .into_iter()
                .partition(|(due, _)| stopping || *due <= now);
            queue.relaxed = later;
            work.extend(due.into_iter().map(|(_, p)| p));
            return (work, stopping);
        }
        let timeout = queue
            .relaxed
            .iter()
            .map(|(due, _)| due.saturating_duration_since(now))
            .min()
            .unwrap_or(Duration::from_secs(3600));
        queue = shared
            .wake
            .wait_timeout(queue, timeout)
            .expect("flush queue lock")
            .0;
    }
}
