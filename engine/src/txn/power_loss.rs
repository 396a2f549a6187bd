//! Power-loss tests of the plugin store: a redb storage backend that keeps what was synced
//! apart from what was only written, and at a chosen operation "loses power". The disk then
//! holds the synced bytes plus any subset of the later writes, some of them torn (only a
//! prefix reached the disk), in any order, as a real disk may. Reopened from that image, the
//! store must hold exactly the transactions that had committed (plus, perhaps, the one in
//! flight), each whole: none lost, none half applied.

use std::collections::BTreeMap;
use std::io;
use std::sync::{Arc, Mutex};

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

use super::state::{StateStore, StateWrites};
use super::{CommitExtras, Position, TxnStore};

/// Sector size: a torn write keeps a whole number of these.
const SECTOR: usize = 512;

#[derive(Debug, Clone)]
enum Op {
    Write { offset: u64, data: Vec<u8> },
    SetLen(u64),
}

fn apply(image: &mut Vec<u8>, op: &Op) {
    match op {
        Op::Write { offset, data } => {
            let end = *offset as usize + data.len();
            if image.len() < end {
                image.resize(end, 0);
            }
            image[*offset as usize..end].copy_from_slice(data);
        }
        Op::SetLen(len) => image.resize(*len as usize, 0),
    }
}

#[derive(Debug, Default)]
struct Disk {
    /// What a reader sees: every write so far.
    current: Vec<u8>,
    /// What is certainly on the disk: everything up to the last sync.
    synced: Vec<u8>,
    /// Writes since the last sync, in order.
    unsynced: Vec<Op>,
    /// Operations (writes, syncs, length changes) so far.
    operations: u64,
    /// The operation at which the power goes out.
    fail_at: Option<u64>,
    /// The power went out: every later operation fails.
    dead: bool,
}

#[derive(Debug, Clone, Default)]
struct PowerLossBackend(Arc<Mutex<Disk>>);

impl PowerLossBackend {
    fn new(image: Vec<u8>, fail_at: Option<u64>) -> Self {
        PowerLossBackend(Arc::new(Mutex::new(Disk {
            current: image.clone(),
            synced: image,
            fail_at,
            ..Disk::default()
        })))
    }

    /// Counts an operation; fails it (and all later ones) at the power cut.
    fn operation(disk: &mut Disk) -> io::Result<()> {
        if !disk.dead {
            disk.operations += 1;
            disk.dead = disk.fail_at == Some(disk.operations);
        }
        if disk.dead {
            return Err(io::Error::other("power lost"));
        }
        Ok(())
    }

    fn operations(&self) -> u64 {
        self.0.lock().unwrap().operations
    }

    /// The disk after the power cut: the synced bytes and a random choice of the unsynced
    /// writes, each kept whole, torn, or lost, applied in a random order.
    fn image_after_power_loss(&self, rng: &mut StdRng) -> Vec<u8> {
        let disk = self.0.lock().unwrap();
        let mut image = disk.synced.clone();
        let mut reached: Vec<Op> = Vec::new();
        for op in &disk.unsynced {
            match (rng.random_range(0..3), op) {
                (0, _) => {}
                (1, Op::Write { offset, data }) if data.len() > SECTOR => {
                    let sectors = rng.random_range(1..data.len().div_ceil(SECTOR));
                    reached.push(Op::Write {
                        offset: *offset,
                        data: data[..sectors * SECTOR].to_vec(),
                    });
                }
                _ => reached.push(op.clone()),
            }
        }
        // Length changes keep their order (a file system journals them); data may land in
        // any order.
        let (lengths, mut writes): (Vec<Op>, Vec<Op>) = reached
            .into_iter()
            .partition(|op| matches!(op, Op::SetLen(_)));
        for op in &lengths {
            apply(&mut image, op);
        }
        for i in (1..writes.len()).rev() {
            writes.swap(i, rng.random_range(0..=i));
        }
        for op in &writes {
            apply(&mut image, op);
        }
        image
    }
}

impl redb::StorageBackend for PowerLossBackend {
    fn len(&self) -> io::Result<u64> {
        Ok(self.0.lock().unwrap().current.len() as u64)
    }

    fn read(&self, offset: u64, len: usize) -> io::Result<Vec<u8>> {
        let disk = self.0.lock().unwrap();
        let end = offset as usize + len;
        if end > disk.current.len() {
            return Err(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                "read past the end",
            ));
        }
        Ok(disk.current[offset as usize..end].to_vec())
    }

    fn set_len(&self, len: u64) -> io::Result<()> {
        let disk = &mut *self.0.lock().unwrap();
        PowerLossBackend::operation(disk)?;
        let op = Op::SetLen(len);
        apply(&mut disk.current, &op);
        disk.unsynced.push(op);
        Ok(())
    }

    fn sync_data(&self, _eventual: bool) -> io::Result<()> {
        let disk = &mut *self.0.lock().unwrap();
        PowerLossBackend::operation(disk)?;
        for op in std::mem::take(&mut disk.unsynced) {
            apply(&mut disk.synced, &op);
        }
        Ok(())
    }

    fn write(&self, offset: u64, data: &[u8]) -> io::Result<()> {
        let disk = &mut *self.0.lock().unwrap();
        PowerLossBackend::operation(disk)?;
        let op = Op::Write {
            offset,
            data: data.to_vec(),
        };
        apply(&mut disk.current, &op);
        disk.unsynced.push(op);
        Ok(())
    }
}

/// Everything the store holds for the test group.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
struct Contents {
    offsets: Vec<(String, u32, u64)>,
    state: BTreeMap<Vec<u8>, Vec<u8>>,
    outbox: Vec<(u64, Vec<u8>)>,
    replay: Option<(u64, u64)>,
}

fn contents(store: &Arc<TxnStore>) -> Contents {
    Contents {
        offsets: store.offsets(GROUP).unwrap(),
        state: store
            .state_of(GROUP)
            .scan(b"", None, usize::MAX)
            .unwrap()
            .into_iter()
            .collect(),
        outbox: store.outbox(GROUP).unwrap(),
        replay: store.dlq_replay(GROUP).unwrap(),
    }
}

const GROUP: &str = "g";
const TRANSACTIONS: u64 = 24;

/// Commit `n` (from 1) of the workload: every one moves the offset, rewrites some keys,
/// deletes one, adds an outbox entry (big enough to span pages) and retires older ones.
fn commit(store: &TxnStore, n: u64) -> Result<(), super::StoreError> {
    let mut writes = StateWrites::new();
    writes.insert(b"total".to_vec(), Some(n.to_string().into_bytes()));
    writes.insert(
        format!("key-{}", n % 7).into_bytes(),
        Some(vec![n as u8; 300 * (n as usize % 5)]),
    );
    writes.insert(format!("key-{}", (n + 3) % 7).into_bytes(), None);
    let entry = vec![n as u8; 5_000 + 700 * (n as usize % 9)];
    let delivered: Vec<u64> = (n >= 3).then(|| n - 3).into_iter().collect();
    store
        .commit(
            GROUP,
            &[Position {
                topic: "in",
                partition: 0,
                next_offset: n * 10,
            }],
            &writes,
            CommitExtras {
                replay: n.is_multiple_of(4).then_some((n, n + 1)),
                outbox: Some(entry),
                delivered: &delivered,
            },
        )
        .map(drop)
}

/// What the store holds after the first `n` commits, computed on a disk that never fails.
fn expected_after(n: u64) -> Contents {
    let store = TxnStore::open_on(PowerLossBackend::default(), "model").unwrap();
    for i in 1..=n {
        commit(&store, i).unwrap();
    }
    contents(&store)
}

#[test]
fn no_committed_transaction_is_lost_or_half_applied_at_any_power_cut() {
    let expected: Vec<Contents> = (0..=TRANSACTIONS).map(expected_after).collect();
    let total_operations = {
        let backend = PowerLossBackend::default();
        drop(TxnStore::open_on(backend.clone(), "created").unwrap());
        let synced = backend.0.lock().unwrap().synced.clone();
        let backend = PowerLossBackend::new(synced, None);
        let store = TxnStore::open_on(backend.clone(), "count").unwrap();
        for n in 1..=TRANSACTIONS {
            commit(&store, n).unwrap();
        }
        backend.operations()
    };
    // `TxnStore::open` creates a new store under another name and renames it into place
    // when it is durable: the crashes start from a created store.
    let created = {
        let backend = PowerLossBackend::default();
        drop(TxnStore::open_on(backend.clone(), "created").unwrap());
        backend.0.lock().unwrap().synced.clone()
    };
    let crash_points = 160u64;
    for seed in 0..crash_points {
        let mut rng = StdRng::seed_from_u64(seed);
        let fail_at = rng.random_range(1..=total_operations);
        let backend = PowerLossBackend::new(created.clone(), Some(fail_at));
        let mut acknowledged = 0;
        if let Ok(store) = TxnStore::open_on(backend.clone(), "crashing") {
            for n in 1..=TRANSACTIONS {
                if commit(&store, n).is_err() {
                    break;
                }
                acknowledged = n;
            }
        }
        let image = backend.image_after_power_loss(&mut rng);
        let reopened = TxnStore::open_on(PowerLossBackend::new(image, None), "reopened")
            .unwrap_or_else(|e| panic!("seed {seed} (cut at operation {fail_at}): {e}"));
        let found = contents(&reopened);
        let applied = (acknowledged..=TRANSACTIONS.min(acknowledged + 1))
            .find(|&n| found == expected[n as usize]);
        assert!(
            applied.is_some(),
            "seed {seed} (cut at operation {fail_at} of {total_operations}): {acknowledged} commits acknowledged, \
             but the store holds neither their state nor that of the one in flight: {:?}",
            found.offsets
        );
        // The reopened store keeps working.
        commit(&reopened, applied.unwrap_or(0) + 1).unwrap();
    }
}
