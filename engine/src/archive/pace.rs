//! The archival rate limit: segment bytes read for archiving per second, shared by every
//! partition of the engine.
//!
//! Why a limit on top of the archival threads' low priority: those threads only take idle
//! cores, yet durable producers still lost part of their throughput while a backlog was
//! archived as fast as the idle time allowed (most likely shared caches and wake-ups into busy
//! cores), and next to none with archival held to the default limit (`sluice-bench --only
//! archive`; docs/architecture.md, Archive, has the figures). Archival only has to keep up
//! with what producers append over time; catching up on a backlog does not have to be fast.
//! Kafka's tiered storage has the same knob (`remote.log.manager.copy.max.bytes.per.second`).

use std::sync::Mutex;
use std::time::{Duration, Instant};

/// A leaky bucket: each read of `n` bytes is due `n / rate` after the previous one was due, or
/// after now if the bucket is idle (no credit is saved up while idle).
pub struct Pace {
    bytes_per_second: Option<u64>,
    /// When the bytes accounted so far are all due.
    due: Mutex<Option<Instant>>,
}

impl Pace {
    /// At most `bytes_per_second` (None or 0: no limit).
    pub fn new(bytes_per_second: Option<u64>) -> Pace {
        Pace {
            bytes_per_second: bytes_per_second.filter(|&rate| rate > 0),
            due: Mutex::new(None),
        }
    }

    /// Accounts `bytes` just read for archiving, and waits until they are due.
    pub fn take(&self, bytes: usize) {
        let wait = self.reserve(bytes, Instant::now());
        if !wait.is_zero() {
            std::thread::sleep(wait);
        }
    }

    /// How long a reader that read `bytes` at `now` waits.
    fn reserve(&self, bytes: usize, now: Instant) -> Duration {
        let Some(rate) = self.bytes_per_second else {
            return Duration::ZERO;
        };
        let mut due = self
            .due
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        let start = due.map_or(now, |due| due.max(now));
        let next = start + Duration::from_secs_f64(bytes as f64 / rate as f64);
        *due = Some(next);
        next - now
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MB: usize = 1_000_000;

    #[test]
    fn reads_wait_their_share_of_the_rate_and_idle_time_is_not_saved_up() {
        let pace = Pace::new(Some(64 * MB as u64));
        let t0 = Instant::now();
        assert_eq!(pace.reserve(64 * MB, t0), Duration::from_secs(1));
        // A second reader at the same instant queues behind the first.
        assert_eq!(pace.reserve(32 * MB, t0), Duration::from_millis(1_500));
        // Long after: waits only for its own bytes, not for the quiet time before.
        let later = t0 + Duration::from_secs(10);
        assert_eq!(pace.reserve(16 * MB, later), Duration::from_millis(250));
    }

    #[test]
    fn no_limit_never_waits() {
        for pace in [Pace::new(None), Pace::new(Some(0))] {
            assert_eq!(pace.reserve(usize::MAX, Instant::now()), Duration::ZERO);
        }
    }
}
