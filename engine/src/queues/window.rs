//! One share partition's in-flight window: the state and delivery count of every record from
//! the start offset (everything before it is acknowledged or dead-lettered) to the end offset
//! (nothing at or after it has been delivered yet), and the locks members hold on them.
//!
//! Pure state: no I/O and no clock of its own (callers pass `now`), so the rules are tested
//! alone. Every change is returned as [`Change`]s for the journal to make durable; what the
//! journal keeps is the durable part of a slot (its state and delivery count), never a lock.

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// The durable state of a record in the window, as the journal stores it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Durable {
    /// Waiting to be delivered (again).
    Available = 0,
    /// Delivered and locked by a member.
    Acquired = 1,
    /// Done: a member acknowledged it.
    Acked = 2,
    /// Done: dead-lettered, or dropped past its time-to-live.
    Archived = 3,
}

impl Durable {
    pub fn from_byte(byte: u8) -> Option<Durable> {
        Some(match byte {
            0 => Durable::Available,
            1 => Durable::Acquired,
            2 => Durable::Acked,
            3 => Durable::Archived,
            _ => return None,
        })
    }
}

/// A record's state in memory.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Slot {
    Available {
        deliveries: u16,
        /// Released with a delay: not delivered again before this.
        not_before: Option<Instant>,
    },
    Acquired {
        deliveries: u16,
        member: Arc<str>,
        lock_until: Instant,
    },
    /// On its way to the dead-letter topic; durable as it was before until it arrives there.
    DeadLettering {
        deliveries: u16,
    },
    Acked {
        deliveries: u16,
    },
    Archived {
        deliveries: u16,
    },
}

impl Slot {
    fn deliveries(&self) -> u16 {
        match self {
            Slot::Available { deliveries, .. }
            | Slot::Acquired { deliveries, .. }
            | Slot::DeadLettering { deliveries }
            | Slot::Acked { deliveries }
            | Slot::Archived { deliveries } => *deliveries,
        }
    }

    fn is_done(&self) -> bool {
        matches!(self, Slot::Acked { .. } | Slot::Archived { .. })
    }
}

/// A record's new durable state, for the journal.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Change {
    pub offset: u64,
    pub state: Durable,
    pub deliveries: u16,
}

/// Why a record leaves for the dead-letter topic.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DeadLetterReason {
    /// Delivered `max_deliveries` times without an acknowledgement.
    MaxDeliveries(u16),
    /// A member rejected it, saying why.
    Rejected(String),
    /// Older than the group's time-to-live when it was due for delivery.
    Expired,
}

impl std::fmt::Display for DeadLetterReason {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            DeadLetterReason::MaxDeliveries(n) => {
                write!(
                    f,
                    "delivered {n} times (max_deliveries) without an acknowledgement"
                )
            }
            DeadLetterReason::Rejected(why) => write!(f, "rejected by a consumer: {why}"),
            DeadLetterReason::Expired => write!(f, "older than the group's message_ttl_ms"),
        }
    }
}

/// What a member says of one record it holds.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AckKind {
    /// Done with it.
    Accept,
    /// Give it back, to be delivered again (after `delay`).
    Release { delay: Duration },
    /// It cannot be processed: dead-letter it with this reason.
    Reject { reason: String },
    /// Still working on it: extend the lock by the group's lock duration.
    Renew,
}

/// Why an acknowledgement was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum AckRefusal {
    /// The record is not locked by this member: its lock expired (it may have gone to another
    /// member), or it was never delivered to it.
    NotAcquired,
    /// The offset was never delivered (past the window's end, or a partition the group
    /// never fetched).
    OutOfWindow,
}

/// Counts of what happened in a window, for describe and /metrics (since the engine started).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct WindowCounters {
    pub delivered: u64,
    pub redelivered: u64,
    pub acked: u64,
    pub released: u64,
    pub dead_lettered: u64,
    pub dropped: u64,
    pub lock_expiries: u64,
    /// Records retention deleted before they were done.
    pub skipped: u64,
}

/// How the window is limited and how records are acquired.
#[derive(Debug, Clone, Copy)]
pub struct Rules {
    /// Records in the window at most (end - start).
    pub max_window_records: u64,
    /// A record available again after this many deliveries is dead-lettered instead.
    pub max_deliveries: u16,
}

/// Who takes records, and until when.
#[derive(Debug, Clone)]
pub struct Lock<'a> {
    pub member: &'a Arc<str>,
    pub until: Instant,
}

/// A record the caller should deliver.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Acquired {
    pub offset: u64,
    pub deliveries: u16,
}

#[derive(Debug, Clone)]
pub struct Window {
    start: u64,
    slots: VecDeque<Slot>,
    pub counters: WindowCounters,
}

impl Window {
    pub fn new(start: u64) -> Window {
        Window {
            start,
            slots: VecDeque::new(),
            counters: WindowCounters::default(),
        }
    }

    /// The first offset not yet done.
    pub fn start(&self) -> u64 {
        self.start
    }

    /// The first offset never delivered.
    pub fn end(&self) -> u64 {
        self.start + self.slots.len() as u64
    }

    fn index(&self, offset: u64) -> Option<usize> {
        let index = usize::try_from(offset.checked_sub(self.start)?).ok()?;
        (index < self.slots.len()).then_some(index)
    }

    fn slot_mut(&mut self, offset: u64) -> Option<&mut Slot> {
        let index = self.index(offset)?;
        self.slots.get_mut(index)
    }

    /// Sets a record's durable state as the journal replays it. Offsets below the start are
    /// done already; a gap up to `offset` is filled with available records.
    pub fn restore(&mut self, change: Change) {
        if change.offset < self.start {
            return;
        }
        while self.end() <= change.offset {
            self.slots.push_back(Slot::Available {
                deliveries: 0,
                not_before: None,
            });
        }
        let deliveries = change.deliveries;
        let slot = match change.state {
            // A lock does not survive a restart: Kafka's share-partition leader does the same.
            Durable::Available | Durable::Acquired => Slot::Available {
                deliveries,
                not_before: None,
            },
            Durable::Acked => Slot::Acked { deliveries },
            Durable::Archived => Slot::Archived { deliveries },
        };
        *self.slot_mut(change.offset).expect("filled above") = slot;
    }

    /// Sets when an available record, released with a delay, may be delivered again, as the
    /// journal replays it. A record in any other state is left as it is.
    pub fn restore_delay(&mut self, offset: u64, until: Instant) {
        if let Some(Slot::Available { not_before, .. }) = self.slot_mut(offset) {
            *not_before = Some(until);
        }
    }

    /// The delayed records still waiting at `now`: (offset, not before).
    pub fn delays(&self, now: Instant) -> Vec<(u64, Instant)> {
        (self.start..)
            .zip(&self.slots)
            .filter_map(|(offset, slot)| match slot {
                Slot::Available {
                    not_before: Some(until),
                    ..
                } if *until > now => Some((offset, *until)),
                _ => None,
            })
            .collect()
    }

    /// Moves the start to `offset` (a replayed start, or retention's log start), forgetting
    /// the records before it. Returns how many were not done.
    pub fn advance_to(&mut self, offset: u64) -> u64 {
        let mut skipped = 0;
        while self.start < offset {
            match self.slots.pop_front() {
                Some(slot) if slot.is_done() => {}
                Some(_) => skipped += 1,
                None => {
                    self.start = offset;
                    return skipped;
                }
            }
            self.start += 1;
        }
        skipped
    }

    /// Drops the done records at the front; returns whether the start moved.
    pub fn compact(&mut self) -> bool {
        let before = self.start;
        while self.slots.front().is_some_and(Slot::is_done) {
            self.slots.pop_front();
            self.start += 1;
        }
        self.start != before
    }

    /// Makes every lock that ended at or before `now` available again; returns how many.
    pub fn expire_locks(&mut self, now: Instant) -> u64 {
        let mut expired = 0;
        for slot in self.slots.iter_mut() {
            if let Slot::Acquired {
                deliveries,
                lock_until,
                ..
            } = slot
                && *lock_until <= now
            {
                *slot = Slot::Available {
                    deliveries: *deliveries,
                    not_before: None,
                };
                expired += 1;
            }
        }
        self.counters.lock_expiries += expired;
        expired
    }

    /// Releases every lock `member` holds (it left, or its session ended).
    pub fn release_member(&mut self, member: &str) -> Vec<Change> {
        let mut changes = Vec::new();
        for (index, slot) in self.slots.iter_mut().enumerate() {
            if let Slot::Acquired {
                deliveries,
                member: holder,
                ..
            } = slot
                && &**holder == member
            {
                let deliveries = *deliveries;
                *slot = Slot::Available {
                    deliveries,
                    not_before: None,
                };
                changes.push(Change {
                    offset: self.start + index as u64,
                    state: Durable::Available,
                    deliveries,
                });
            }
        }
        self.counters.released += changes.len() as u64;
        changes
    }

    /// When the next lock ends or the next delayed record becomes available, if any.
    pub fn next_deadline(&self) -> Option<Instant> {
        self.slots
            .iter()
            .filter_map(|slot| match slot {
                Slot::Acquired { lock_until, .. } => Some(*lock_until),
                Slot::Available { not_before, .. } => *not_before,
                _ => None,
            })
            .min()
    }

    /// Acquires up to `max` records for the lock's member until its end: available ones first (in
    /// offset order), then new ones below `high_watermark` while the window has room. Records
    /// that reached `max_deliveries` go to `dead_letters` instead (state DeadLettering).
    pub fn acquire(
        &mut self,
        now: Instant,
        lock: &Lock<'_>,
        max: usize,
        high_watermark: u64,
        rules: Rules,
        dead_letters: &mut Vec<(u64, DeadLetterReason)>,
    ) -> Vec<Acquired> {
        let mut acquired = Vec::new();
        for (index, slot) in self.slots.iter_mut().enumerate() {
            if acquired.len() >= max {
                return acquired;
            }
            let Slot::Available {
                deliveries,
                not_before,
            } = slot
            else {
                continue;
            };
            if not_before.is_some_and(|t| t > now) {
                continue;
            }
            let offset = self.start + index as u64;
            let deliveries = *deliveries;
            if deliveries >= rules.max_deliveries {
                *slot = Slot::DeadLettering { deliveries };
                dead_letters.push((offset, DeadLetterReason::MaxDeliveries(deliveries)));
                continue;
            }
            *slot = Slot::Acquired {
                deliveries: deliveries + 1,
                member: lock.member.clone(),
                lock_until: lock.until,
            };
            if deliveries > 0 {
                self.counters.redelivered += 1;
            }
            acquired.push(Acquired {
                offset,
                deliveries: deliveries + 1,
            });
        }
        let limit = high_watermark.min(self.start.saturating_add(rules.max_window_records));
        while acquired.len() < max && self.end() < limit {
            acquired.push(Acquired {
                offset: self.end(),
                deliveries: 1,
            });
            self.slots.push_back(Slot::Acquired {
                deliveries: 1,
                member: lock.member.clone(),
                lock_until: lock.until,
            });
        }
        self.counters.delivered += acquired.len() as u64;
        acquired
    }

    /// Takes back an acquisition that was not delivered (the record was past its
    /// time-to-live): `dead_letter` sends it to the dead-letter topic, else it is dropped.
    /// Returns the durable change of a drop.
    pub fn unacquire_expired(&mut self, offset: u64, dead_letter: bool) -> Option<Change> {
        let index = self.index(offset)?;
        let slot = &mut self.slots[index];
        let Slot::Acquired { deliveries, .. } = slot else {
            return None;
        };
        let deliveries = deliveries.saturating_sub(1);
        self.counters.delivered -= 1;
        if dead_letter {
            *slot = Slot::DeadLettering { deliveries };
            return None;
        }
        *slot = Slot::Archived { deliveries };
        self.counters.dropped += 1;
        Some(Change {
            offset,
            state: Durable::Archived,
            deliveries,
        })
    }

    /// The durable state of an acquired record, for the journal entry of an acquisition.
    pub fn durable(&self, offset: u64) -> Option<Change> {
        let index = usize::try_from(offset.checked_sub(self.start)?).ok()?;
        let (state, deliveries) = match self.slots.get(index)? {
            Slot::Available { deliveries, .. } | Slot::DeadLettering { deliveries } => {
                (Durable::Available, *deliveries)
            }
            Slot::Acquired { deliveries, .. } => (Durable::Acquired, *deliveries),
            Slot::Acked { deliveries } => (Durable::Acked, *deliveries),
            Slot::Archived { deliveries } => (Durable::Archived, *deliveries),
        };
        Some(Change {
            offset,
            state,
            deliveries,
        })
    }

    /// Applies what `member` says of the record at `offset`. A reject leaves the record
    /// DeadLettering (no durable change until [`Window::dead_lettered`]).
    pub fn acknowledge(
        &mut self,
        now: Instant,
        member: &str,
        offset: u64,
        kind: &AckKind,
        lock: Duration,
    ) -> Result<Option<Change>, AckRefusal> {
        if offset < self.start {
            // Done already: acknowledged by whoever held it after this member's lock ended.
            return Err(AckRefusal::NotAcquired);
        }
        let index = self.index(offset).ok_or(AckRefusal::OutOfWindow)?;
        let slot = &mut self.slots[index];
        let Slot::Acquired {
            deliveries,
            member: holder,
            lock_until,
        } = slot
        else {
            return Err(AckRefusal::NotAcquired);
        };
        // A lock that ended is not honoured even before another fetch notices it ended.
        if &**holder != member || *lock_until <= now {
            return Err(AckRefusal::NotAcquired);
        }
        let deliveries = *deliveries;
        let (next, state) = match kind {
            AckKind::Accept => {
                self.counters.acked += 1;
                (Slot::Acked { deliveries }, Durable::Acked)
            }
            AckKind::Release { delay } => {
                self.counters.released += 1;
                let not_before = (!delay.is_zero()).then(|| now + *delay);
                (
                    Slot::Available {
                        deliveries,
                        not_before,
                    },
                    Durable::Available,
                )
            }
            AckKind::Reject { .. } => {
                *slot = Slot::DeadLettering { deliveries };
                return Ok(None);
            }
            AckKind::Renew => {
                *lock_until = now + lock;
                return Ok(None);
            }
        };
        *slot = next;
        Ok(Some(Change {
            offset,
            state,
            deliveries,
        }))
    }

    /// A record reached the dead-letter topic.
    pub fn dead_lettered(&mut self, offset: u64) -> Option<Change> {
        let slot = self.slot_mut(offset)?;
        let Slot::DeadLettering { deliveries } = *slot else {
            return None;
        };
        *slot = Slot::Archived { deliveries };
        self.counters.dead_lettered += 1;
        Some(Change {
            offset,
            state: Durable::Archived,
            deliveries,
        })
    }

    /// A record could not reach the dead-letter topic: it is available again.
    pub fn dead_letter_failed(&mut self, offset: u64) {
        if let Some(slot) = self.slot_mut(offset)
            && let Slot::DeadLettering { deliveries } = *slot
        {
            *slot = Slot::Available {
                deliveries,
                not_before: None,
            };
        }
    }

    /// Every record's durable state, for a snapshot.
    pub fn snapshot(&self) -> Vec<Change> {
        (self.start..self.end())
            .filter_map(|offset| self.durable(offset))
            .collect()
    }

    /// Counts by state: (available, acquired, done, dead-lettering).
    pub fn tally(&self) -> Tally {
        let mut tally = Tally::default();
        for slot in &self.slots {
            match slot {
                Slot::Available { .. } => tally.available += 1,
                Slot::Acquired { .. } => tally.in_flight += 1,
                Slot::DeadLettering { .. } => tally.dead_lettering += 1,
                Slot::Acked { .. } | Slot::Archived { .. } => tally.done += 1,
            }
        }
        tally
    }

    /// The delivery count of the record at `offset`, if it is in the window.
    pub fn deliveries(&self, offset: u64) -> Option<u16> {
        let index = usize::try_from(offset.checked_sub(self.start)?).ok()?;
        self.slots.get(index).map(Slot::deliveries)
    }
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Tally {
    pub available: u64,
    pub in_flight: u64,
    pub done: u64,
    pub dead_lettering: u64,
}

#[cfg(test)]
mod tests {
    use super::*;

    const RULES: Rules = Rules {
        max_window_records: 10,
        max_deliveries: 3,
    };

    fn member(name: &str) -> Arc<str> {
        Arc::from(name)
    }

    fn acquire(window: &mut Window, now: Instant, who: &Arc<str>, max: usize) -> Vec<u64> {
        let mut dead = Vec::new();
        let lock = Lock {
            member: who,
            until: now + Duration::from_secs(30),
        };
        let got = window.acquire(now, &lock, max, 100, RULES, &mut dead);
        assert!(dead.is_empty(), "unexpected dead letters {dead:?}");
        got.iter().map(|a| a.offset).collect()
    }

    #[test]
    fn records_are_shared_between_members_and_the_window_is_bounded() {
        let now = Instant::now();
        let mut window = Window::new(5);
        let (a, b) = (member("a"), member("b"));
        assert_eq!(acquire(&mut window, now, &a, 4), vec![5, 6, 7, 8]);
        assert_eq!(
            acquire(&mut window, now, &b, 100),
            vec![9, 10, 11, 12, 13, 14]
        );
        // The window holds 10 records: nothing more until the front is done.
        assert!(acquire(&mut window, now, &b, 100).is_empty());
        let lock = Duration::from_secs(30);
        window
            .acknowledge(now, "a", 5, &AckKind::Accept, lock)
            .unwrap();
        assert!(window.compact());
        assert_eq!(window.start(), 6);
        assert_eq!(acquire(&mut window, now, &b, 100), vec![15]);
    }

    #[test]
    fn only_the_holder_of_a_live_lock_may_acknowledge() {
        let now = Instant::now();
        let lock = Duration::from_secs(30);
        let mut window = Window::new(0);
        let (a, b) = (member("a"), member("b"));
        acquire(&mut window, now, &a, 1);
        assert_eq!(
            window.acknowledge(now, "b", 0, &AckKind::Accept, lock),
            Err(AckRefusal::NotAcquired)
        );
        assert_eq!(
            window.acknowledge(now, "a", 1, &AckKind::Accept, lock),
            Err(AckRefusal::OutOfWindow)
        );
        let later = now + Duration::from_secs(31);
        assert_eq!(
            window.acknowledge(later, "a", 0, &AckKind::Accept, lock),
            Err(AckRefusal::NotAcquired),
            "an ended lock is not honoured"
        );
        assert_eq!(window.expire_locks(later), 1);
        let mut dead = Vec::new();
        let taker = Lock {
            member: &b,
            until: later + lock,
        };
        let again = window.acquire(later, &taker, 5, 1, RULES, &mut dead);
        assert_eq!(
            again,
            vec![Acquired {
                offset: 0,
                deliveries: 2
            }]
        );
        assert_eq!(window.counters.redelivered, 1);
        assert_eq!(window.counters.lock_expiries, 1);
    }

    #[test]
    fn a_record_delivered_max_times_is_dead_lettered_and_a_reject_too() {
        let mut now = Instant::now();
        let lock = Duration::from_secs(1);
        let mut window = Window::new(0);
        let a = member("a");
        for delivery in 1..=3u16 {
            let mut dead = Vec::new();
            let taker = Lock {
                member: &a,
                until: now + lock,
            };
            let got = window.acquire(now, &taker, 1, 2, RULES, &mut dead);
            assert_eq!(got[0].deliveries, delivery);
            let change = window
                .acknowledge(
                    now,
                    "a",
                    0,
                    &AckKind::Release {
                        delay: Duration::ZERO,
                    },
                    lock,
                )
                .unwrap();
            assert_eq!(change.unwrap().deliveries, delivery);
            now += Duration::from_millis(1);
        }
        let mut dead = Vec::new();
        let taker = Lock {
            member: &a,
            until: now + lock,
        };
        let got = window.acquire(now, &taker, 1, 2, RULES, &mut dead);
        assert_eq!(dead, vec![(0, DeadLetterReason::MaxDeliveries(3))]);
        assert_eq!(got[0].offset, 1, "the next record is delivered instead");
        window
            .acknowledge(
                now,
                "a",
                1,
                &AckKind::Reject {
                    reason: "bad".into(),
                },
                lock,
            )
            .unwrap();
        assert!(!window.compact(), "dead-lettering is not done yet");
        assert_eq!(window.dead_lettered(0).unwrap().state, Durable::Archived);
        assert_eq!(window.dead_lettered(1).unwrap().state, Durable::Archived);
        assert!(window.compact());
        assert_eq!(window.start(), 2);
        assert_eq!(window.counters.dead_lettered, 2);
    }

    #[test]
    fn a_delayed_release_waits_and_renew_extends_the_lock() {
        let now = Instant::now();
        let lock = Duration::from_secs(10);
        let mut window = Window::new(0);
        let a = member("a");
        acquire(&mut window, now, &a, 2);
        window
            .acknowledge(
                now,
                "a",
                0,
                &AckKind::Release {
                    delay: Duration::from_secs(5),
                },
                lock,
            )
            .unwrap();
        assert_eq!(
            acquire(&mut window, now, &a, 1),
            vec![2],
            "0 waits out its delay"
        );
        let until = now + Duration::from_secs(5);
        assert_eq!(window.delays(now), vec![(0, until)]);
        assert!(
            window.delays(until).is_empty(),
            "a delay that ended is not kept"
        );
        // The delay as a restart restores it: the record waits in the new window too.
        let mut restored = Window::new(0);
        for change in window.snapshot() {
            restored.restore(change);
        }
        restored.restore_delay(0, until);
        assert_eq!(acquire(&mut restored, now, &a, 3), vec![1, 2, 3], "0 waits");
        let soon = now + Duration::from_secs(6);
        window
            .acknowledge(soon, "a", 1, &AckKind::Renew, lock)
            .unwrap();
        assert_eq!(window.expire_locks(now + Duration::from_secs(11)), 0);
        let got = acquire(&mut window, soon, &a, 1);
        assert_eq!(got, vec![0], "the delayed record is due again");
    }

    #[test]
    fn a_restored_window_makes_locks_available_and_keeps_counts() {
        let mut window = Window::new(10);
        window.restore(Change {
            offset: 12,
            state: Durable::Acquired,
            deliveries: 2,
        });
        window.restore(Change {
            offset: 10,
            state: Durable::Acked,
            deliveries: 1,
        });
        window.restore(Change {
            offset: 9,
            state: Durable::Acked,
            deliveries: 1,
        });
        assert_eq!(window.end(), 13);
        assert!(window.compact());
        assert_eq!(window.start(), 11);
        let now = Instant::now();
        let got = acquire(&mut window, now, &member("a"), 5);
        assert_eq!(got, vec![11, 12, 13, 14, 15]);
        assert_eq!(window.deliveries(12), Some(3));
        assert_eq!(window.advance_to(13), 2, "11 and 12 were not done");
    }
}
