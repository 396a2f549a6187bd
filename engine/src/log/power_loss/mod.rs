//! Power-loss tests of the log: a workload of produce (appends alone and in group commits,
//! with segment rolls), retention (which deletes old segments) and archive runs (which hand
//! sealed segments to the cold tier) runs on a simulated disk ([`SimDisk`]) whose power goes
//! out at a seeded operation. The log is then opened on what the disk may hold after the
//! cut, and must serve every acknowledged record byte for byte, serve only whole, CRC-valid
//! batches without gaps, and go on at the offset after the last record that survived, which
//! is never one already acknowledged. A quarter of the runs are a `kill -9` first: the engine
//! restarts on the page cache and the power goes out after that, so what the restarted engine
//! served must survive too. Recovery then appends one record to every partition, and the
//! power goes out again at one of those operations, so what recovery itself does must be
//! durable as well.
//!
//! The test prints its seed: `SLUICE_LOG_POWER_SEED=<seed>` replays it, and
//! `SLUICE_LOG_POWER_POINTS=<n>` sets how many runs of two power cuts it makes (default
//! [`POINTS_DEFAULT`]); a failure names the seed and count that replay just the failing run.

mod cold_store;

use std::collections::{BTreeMap, BTreeSet};

use bytes::Bytes;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

use super::batch;
use super::fs::sim::{Cut, OpKind, SimDisk};
use super::partition::Appended;
use super::*;
use cold_store::{ColdStore, cold_store_opener};

const SEED_VAR: &str = "SLUICE_LOG_POWER_SEED";
const POINTS_VAR: &str = "SLUICE_LOG_POWER_POINTS";
/// Runs (of two power cuts each) of a default test: a few seconds in a debug build.
const POINTS_DEFAULT: u64 = 200;
/// Actions (produce, group commit, retention, archive run) of the workload.
const STEPS: usize = 40;
/// The largest value of a test record: batches span several sectors, so tears land inside.
const VALUE_BYTES_MAX: usize = 900;
/// Bytes asked of each read when the test reads a partition back: small, so that reads
/// start at many batches.
const READ_BYTES: usize = 2_000;
const DATA_DIR: &str = "/sim/data";

struct TopicSpec {
    name: &'static str,
    partitions: u32,
    overrides: &'static [(&'static str, &'static str)],
}

/// Small segments, so that the workload rolls many; retention by size, so that it deletes
/// them; one topic archives what retention deletes.
const TOPICS: [TopicSpec; 2] = [
    TopicSpec {
        name: "events",
        partitions: 2,
        overrides: &[
            ("segment_bytes", "1024"),
            ("retention_bytes", "3072"),
            ("retention_ms", "none"),
        ],
    },
    TopicSpec {
        name: "ledger",
        partitions: 1,
        overrides: &[
            ("segment_bytes", "1024"),
            ("retention_bytes", "2048"),
            ("retention_ms", "none"),
            ("archive", "true"),
        ],
    },
];

type Key = (&'static str, u32);

/// What the log promised, and what it may hold beyond that.
#[derive(Default, Clone)]
struct Expected {
    /// Topics whose creation returned.
    topics: BTreeSet<&'static str>,
    /// Records of acknowledged appends (and of reads that served them), by partition and
    /// offset: they must be found, unless retention deleted them.
    promised: BTreeMap<Key, BTreeMap<u64, Record>>,
    /// Records of appends that were given offsets but not acknowledged: there or not.
    in_flight: BTreeMap<Key, BTreeMap<u64, Record>>,
    /// Per partition of a topic that does not archive: the log start when the power went
    /// out. Retention deleted the records below it (or was deleting them).
    retained_from: BTreeMap<Key, u64>,
}

/// The seed of the run: the number in `var` if set (to replay a failure), else a new one;
/// printed either way, as the other randomised tests do.
fn seed(var: &str) -> u64 {
    let seed = match std::env::var(var) {
        Ok(value) => value
            .trim()
            .parse()
            .unwrap_or_else(|_| panic!("{var}={value}: not a seed (a number, 0 to 2^64-1)")),
        Err(_) => rand::random(),
    };
    eprintln!("log power-loss test: seed {seed}; {var}={seed} replays its random choices");
    seed
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("a tokio runtime")
}

fn random_record(rng: &mut StdRng, timestamp: i64) -> Record {
    let mut value = vec![0; rng.random_range(0..=VALUE_BYTES_MAX)];
    rng.fill(&mut value[..]);
    Record {
        timestamp,
        key: rng
            .random_bool(0.5)
            .then(|| Bytes::from(format!("k{}", rng.random_range(0..100)))),
        value: Some(Bytes::from(value)),
        headers: Vec::new(),
    }
}

fn open(disk: &Arc<SimDisk>, archives: &ColdStore) -> Result<Log, LogError> {
    let options = LogOptions {
        topic_defaults: TopicConfig::default(),
        max_disk_bytes: None,
        min_free_bytes: 0,
        cold: Some(cold_store_opener(disk, archives)),
    };
    Log::open_on(Fs::Sim(disk.clone()), Path::new(DATA_DIR), options)
}

/// Stops a log whose disk has lost power: nothing it does from here reaches the disk.
fn abandon(log: Log, disk: &SimDisk) {
    disk.cut_power_now();
    let _ = log.close();
}

fn partitions(log: &Log) -> Vec<(Key, Arc<Partition>)> {
    TOPICS
        .iter()
        .filter_map(|spec| log.topic(spec.name).ok().map(|topic| (spec.name, topic)))
        .flat_map(|(name, topic)| {
            topic
                .partitions()
                .into_iter()
                .map(move |partition| ((name, partition.id), partition))
        })
        .collect()
}

/// Ok if the power is out (whatever failed, failed for that); else `failure`.
fn unless_power_is_out(disk: &SimDisk, failure: String) -> Result<(), String> {
    match disk.cut() {
        Some(_) => Ok(()),
        None => Err(failure),
    }
}

/// Runs the workload until the power goes out (or to its end, where it then goes out); an
/// error if something fails with the power on.
fn run_workload(
    disk: &Arc<SimDisk>,
    archives: &ColdStore,
    rng: &mut StdRng,
    runtime: &tokio::runtime::Runtime,
    expected: &mut Expected,
) -> Result<(), String> {
    disk.set_phase("open");
    let log = match open(disk, archives) {
        Ok(log) => log,
        Err(e) => return unless_power_is_out(disk, format!("opening the log: {e}")),
    };
    disk.set_phase("create topic");
    for spec in &TOPICS {
        let overrides: Vec<(String, String)> = spec
            .overrides
            .iter()
            .map(|&(k, v)| (k.to_string(), v.to_string()))
            .collect();
        if let Err(e) = log.create_topic(spec.name, spec.partitions, &overrides) {
            let result = unless_power_is_out(disk, format!("creating {}: {e}", spec.name));
            abandon(log, disk);
            return result;
        }
        expected.topics.insert(spec.name);
    }
    let mut result = Ok(());
    for step in 0..STEPS {
        let done = match rng.random_range(0..10) {
            0 => {
                disk.set_phase("retention");
                // Errors are logged, not returned: a failed deletion shows in the checks.
                log.enforce_retention(now_ms());
                Ok(())
            }
            1 => {
                disk.set_phase("archive");
                let ledger = log.topic("ledger").expect("created above");
                ledger.partitions().iter().try_for_each(|partition| {
                    let due = partition.segments_to_archive(now_ms(), true);
                    partition.archive(&due, &|_| {})
                })
            }
            2 => {
                disk.set_phase("group commit");
                let (key, partition) = random_partition(&log, rng);
                let batches: Vec<Vec<Record>> = (0..rng.random_range(2..=4))
                    .map(|_| random_batch(rng, 1_700_000_000_000 + step as i64))
                    .collect();
                group_commit(disk, &partition, key, &batches, runtime, expected)
            }
            _ => {
                disk.set_phase("produce");
                let (key, partition) = random_partition(&log, rng);
                let records = random_batch(rng, 1_700_000_000_000 + step as i64);
                produce(&partition, key, records, runtime, expected).map(drop)
            }
        };
        if let Err(e) = done {
            result = unless_power_is_out(disk, format!("step {step}: {e}"));
            break;
        }
        if disk.cut().is_some() {
            break;
        }
    }
    for (key, partition) in partitions(&log) {
        if !partition.config().archive {
            expected
                .retained_from
                .insert(key, partition.log_start_offset());
        }
    }
    abandon(log, disk);
    result
}

fn random_partition(log: &Log, rng: &mut StdRng) -> (Key, Arc<Partition>) {
    let spec = &TOPICS[rng.random_range(0..TOPICS.len())];
    let key = (spec.name, rng.random_range(0..spec.partitions));
    let partition = log
        .topic(key.0)
        .and_then(|topic| topic.partition(key.1))
        .expect("the workload created it");
    (key, partition)
}

fn random_batch(rng: &mut StdRng, timestamp: i64) -> Vec<Record> {
    (0..rng.random_range(1..=4))
        .map(|_| random_record(rng, timestamp))
        .collect()
}

/// Appends `records`, noting them in flight.
fn append(
    partition: &Arc<Partition>,
    key: Key,
    records: &[Record],
    expected: &mut Expected,
) -> Result<Appended, LogError> {
    let appended = partition.append(records)?;
    let offsets = appended.base_offset..appended.next_offset;
    expected
        .in_flight
        .entry(key)
        .or_default()
        .extend(offsets.zip(records.iter().cloned()));
    Ok(appended)
}

/// Waits for the acknowledgement of an append; its records are then promised.
fn acknowledge(
    partition: &Partition,
    key: Key,
    appended: Appended,
    runtime: &tokio::runtime::Runtime,
    expected: &mut Expected,
) -> Result<(), LogError> {
    runtime.block_on(partition.wait_visible(appended.next_offset))?;
    let in_flight = &expected.in_flight[&key];
    let records = in_flight.range(appended.base_offset..appended.next_offset);
    let promised = expected.promised.entry(key).or_default();
    promised.extend(records.map(|(&offset, record)| (offset, record.clone())));
    Ok(())
}

/// Appends `records` and waits for the acknowledgement.
fn produce(
    partition: &Arc<Partition>,
    key: Key,
    records: Vec<Record>,
    runtime: &tokio::runtime::Runtime,
    expected: &mut Expected,
) -> Result<Appended, LogError> {
    let appended = append(partition, key, &records, expected)?;
    acknowledge(partition, key, appended, runtime, expected)?;
    Ok(appended)
}

/// Appends `batches` that wait for one fsync together, as concurrent producers do:
/// the flusher's fsync of the first is held until the rest are written, so the disk holds
/// several unsynced batches at once (a later one can survive a power cut that an earlier one
/// does not). The next fsync acknowledges them all.
fn group_commit(
    disk: &SimDisk,
    partition: &Arc<Partition>,
    key: Key,
    batches: &[Vec<Record>],
    runtime: &tokio::runtime::Runtime,
    expected: &mut Expected,
) -> Result<(), LogError> {
    disk.hold_syncs();
    let mut appended = Vec::with_capacity(batches.len());
    for records in batches {
        match append(partition, key, records, expected) {
            Ok(batch) => appended.push(batch),
            Err(e) => {
                disk.release_syncs();
                return Err(e);
            }
        }
        if appended.len() == 1 {
            // The flusher took the first append: the others wait for its next fsync.
            disk.wait_for_held_sync();
        }
    }
    disk.release_syncs();
    appended
        .into_iter()
        .try_for_each(|batch| acknowledge(partition, key, batch, runtime, expected))
}

/// Every record a partition serves, from its earliest offset (in the archive or the log) to
/// its high watermark; an error if a read fails, a batch is torn or corrupt, or offsets skip.
fn read_partition(partition: &Partition) -> Result<BTreeMap<u64, Record>, String> {
    let (mut offset, end) = (partition.earliest_offset(), partition.high_watermark());
    let mut found = BTreeMap::new();
    while offset < end {
        let fetched = partition
            .read(offset, READ_BYTES)
            .map_err(|e| format!("reading offset {offset}: {e}"))?;
        let mut next = offset;
        for decoded in batch::Batches::new(Bytes::from(fetched.data)) {
            let (header, records) = decoded
                .map_err(|e| format!("a read from offset {offset} served a bad batch: {e}"))?;
            if header.base_offset > next {
                return Err(format!(
                    "offsets {next}..{} are missing (read from {offset})",
                    header.base_offset
                ));
            }
            for (at, record) in (header.base_offset..).zip(records) {
                if at >= next {
                    found.insert(at, record);
                }
            }
            next = next.max(header.next_offset());
        }
        if next <= offset || next != fetched.next_offset {
            return Err(format!(
                "a read from offset {offset} got to {next}, but says to go on at {}",
                fetched.next_offset
            ));
        }
        offset = next;
    }
    Ok(found)
}

/// Checks a recovered log against what was promised; returns what each partition serves.
fn check(log: &Log, expected: &Expected) -> Result<BTreeMap<Key, BTreeMap<u64, Record>>, String> {
    for spec in &TOPICS {
        match log.topic(spec.name) {
            Ok(topic) if topic.partition_count() == spec.partitions => {}
            Ok(topic) => {
                return Err(format!(
                    "topic {} has {} partitions, not {}",
                    spec.name,
                    topic.partition_count(),
                    spec.partitions
                ));
            }
            Err(_) if expected.topics.contains(spec.name) => {
                return Err(format!("the created topic {} is gone", spec.name));
            }
            Err(_) => {}
        }
    }
    let mut served = BTreeMap::new();
    for (key, partition) in partitions(log) {
        let found = read_partition(&partition).map_err(|e| format!("{}/{}: {e}", key.0, key.1))?;
        let none = BTreeMap::new();
        let promised = expected.promised.get(&key).unwrap_or(&none);
        let in_flight = expected.in_flight.get(&key).unwrap_or(&none);
        let retained_from = expected.retained_from.get(&key).copied().unwrap_or(0);
        for (offset, record) in promised.range(retained_from..) {
            match found.get(offset) {
                Some(got) if got == record => {}
                Some(_) => {
                    return Err(format!(
                        "{}/{}: offset {offset}, acknowledged or served, holds another record",
                        key.0, key.1
                    ));
                }
                None => {
                    return Err(format!(
                        "{}/{}: offset {offset}, acknowledged or served, is lost (the partition serves {:?})",
                        key.0,
                        key.1,
                        found.keys().next().zip(found.keys().next_back())
                    ));
                }
            }
        }
        for (offset, record) in &found {
            if promised.get(offset).or(in_flight.get(offset)) != Some(record) {
                return Err(format!(
                    "{}/{}: offset {offset} holds a record that was never appended there",
                    key.0, key.1
                ));
            }
        }
        let promised_end = promised.keys().next_back().map_or(0, |last| last + 1);
        if partition.high_watermark() < promised_end {
            return Err(format!(
                "{}/{}: high watermark {} is below acknowledged offset {}",
                key.0,
                key.1,
                partition.high_watermark(),
                promised_end - 1
            ));
        }
        served.insert(key, found);
    }
    Ok(served)
}

/// Opens the log on `disk`, checks it, and appends one record to every partition, which must
/// get the offset after the last one that survived. Where the power goes out meanwhile, it
/// stops there.
fn recover(
    disk: &Arc<SimDisk>,
    archives: &ColdStore,
    rng: &mut StdRng,
    runtime: &tokio::runtime::Runtime,
    expected: &mut Expected,
) -> Result<(), String> {
    disk.set_phase("recovery");
    let log = match open(disk, archives) {
        Ok(log) => log,
        Err(_) if disk.cut().is_some() => return Ok(()),
        Err(e) => return Err(format!("recovery: {e}")),
    };
    check(&log, expected).map_err(|e| format!("after recovery: {e}"))?;
    disk.set_phase("append after recovery");
    for (key, partition) in partitions(&log) {
        let next = partition.high_watermark();
        let record = random_record(rng, 1_800_000_000_000);
        match produce(&partition, key, vec![record], runtime, expected) {
            Ok(appended) if appended.base_offset == next => {
                expected.topics.insert(key.0);
            }
            Ok(appended) => {
                return Err(format!(
                    "{}/{}: the first append after recovery got offset {}, not {next}",
                    key.0, key.1, appended.base_offset
                ));
            }
            Err(_) if disk.cut().is_some() => break,
            Err(e) => return Err(format!("{}/{}: append after recovery: {e}", key.0, key.1)),
        }
    }
    abandon(log, disk);
    Ok(())
}

/// One power cut: the workload until it, recovery, the checks, one more append to every
/// partition, a second power cut during those, and the checks again. Returns where the
/// two cuts fell.
fn power_cut(seed: u64, runtime: &tokio::runtime::Runtime) -> Result<[Cut; 2], String> {
    // The workload draws from its own generator, so the run that counts its operations and
    // the run that is cut make the same choices.
    let workload = || StdRng::seed_from_u64(seed);
    let history = {
        let disk = SimDisk::new(&[Path::new(DATA_DIR)]);
        let archives = ColdStore::default();
        run_workload(
            &disk,
            &archives,
            &mut workload(),
            runtime,
            &mut Expected::default(),
        )?;
        disk.history()
    };
    let operations = history.len() as u64;
    // Each kind of moment (an append's write, its fsync, a roll's index rename, a deletion,
    // an archive hand-off, ..., or after the last operation) is as likely to be cut as any
    // other, so the rare ones are cut as often as appends.
    let mut moments: BTreeMap<(&str, Option<OpKind>), Vec<u64>> = BTreeMap::new();
    for (operation, &(phase, kind)) in (1..).zip(&history) {
        moments
            .entry((phase, Some(kind)))
            .or_default()
            .push(operation);
    }
    moments.insert(("end", None), vec![operations + 1]);
    let mut rng = StdRng::seed_from_u64(!seed);
    let chosen = moments
        .values()
        .nth(rng.random_range(0..moments.len()))
        .expect("an index below the length");
    let disk = SimDisk::new(&[Path::new(DATA_DIR)]);
    let archives = ColdStore::default();
    disk.cut_power_at(chosen[rng.random_range(0..chosen.len())]);
    let mut expected = Expected::default();
    run_workload(&disk, &archives, &mut workload(), runtime, &mut expected)?;
    let cut = disk.cut().expect("the workload ends with the power out");
    let repeated = disk.history();
    if history.get(..repeated.len()) != Some(&repeated[..]) {
        return Err(format!(
            "the workload did not repeat the run that counted its operations (seed {seed})"
        ));
    }
    let killed = rng.random_ratio(1, 4);
    let context = |e: String| {
        let how = if killed {
            "kill -9, restart, then power cut"
        } else {
            "power cut"
        };
        format!(
            "{how} at operation {} of {operations} ({cut:?}): {e}",
            cut.operation
        )
    };
    let recovered = if killed {
        // kill -9: the engine restarts on the page cache; then the power goes out.
        let restarted = disk.after_process_crash();
        let log = open(&restarted, &archives)
            .map_err(|e| context(format!("reopening after kill -9: {e}")))?;
        let served = check(&log, &expected).map_err(|e| context(format!("after kill -9: {e}")))?;
        for (key, records) in served {
            expected.promised.entry(key).or_default().extend(records);
        }
        abandon(log, &restarted);
        restarted.after_power_loss(&mut rng)
    } else {
        disk.after_power_loss(&mut rng)
    };
    // Recovery and the appends after it, with the power cut again at one of their
    // operations (or after the last): counted on a copy first, with the same choices.
    let share: f64 = rng.random();
    let operations_after = {
        let trial = recovered.snapshot();
        recover(
            &trial,
            &archives,
            &mut rng.clone(),
            runtime,
            &mut expected.clone(),
        )
        .map_err(context)?;
        trial.operations()
    };
    recovered.cut_power_at(1 + (share * (operations_after + 1) as f64) as u64);
    recover(&recovered, &archives, &mut rng, runtime, &mut expected).map_err(context)?;
    let second = recovered.cut().expect("recover ends with the power out");
    let again = recovered.after_power_loss(&mut rng);
    let log = open(&again, &archives).map_err(|e| context(format!("second recovery: {e}")))?;
    check(&log, &expected).map_err(|e| context(format!("after a second power cut: {e}")))?;
    abandon(log, &again);
    Ok([cut, second])
}

#[test]
fn acknowledged_records_survive_power_cuts_whole_and_offsets_go_on() {
    let seed = seed(SEED_VAR);
    let points = std::env::var(POINTS_VAR).map_or(POINTS_DEFAULT, |value| {
        value
            .trim()
            .parse()
            .unwrap_or_else(|_| panic!("{POINTS_VAR}={value}: not a number of power cuts"))
    });
    let runtime = runtime();
    let mut cuts: BTreeMap<String, u64> = BTreeMap::new();
    for point in 0..points {
        let point_seed = seed.wrapping_add(point);
        let both = power_cut(point_seed, &runtime).unwrap_or_else(|failure| {
            panic!(
                "power cut {point} of {points}: {failure}\n\
                 {SEED_VAR}={point_seed} {POINTS_VAR}=1 replays just this cut"
            )
        });
        for cut in both {
            let at = cut
                .kind
                .map_or("end".to_string(), |kind| format!("{kind:?}"));
            *cuts.entry(format!("{}/{at}", cut.phase)).or_default() += 1;
        }
    }
    eprintln!(
        "log power-loss test: {points} runs of two power cuts, the cuts by phase/operation: \
         {cuts:?}"
    );
    if points >= POINTS_DEFAULT {
        // Each is cut a dozen times or more in a default run: a miss means the workload
        // stopped reaching it.
        for moment in [
            "produce/",
            "group commit/",
            "retention/",
            "/External",
            "recovery/",
        ] {
            assert!(
                cuts.keys().any(|at| at.contains(moment)),
                "no power cut fell at {moment}: {cuts:?}"
            );
        }
    }
}

#[test]
fn a_partition_directory_that_recovery_creates_again_is_durable() {
    // A power cut while a topic was created can keep its metadata and lose a partition's
    // directory; recovery creates that directory again, and what is acknowledged in it then
    // must survive the next power cut.
    let runtime = runtime();
    let archives = ColdStore::default();
    let disk = SimDisk::new(&[Path::new(DATA_DIR)]);
    let log = open(&disk, &archives).unwrap();
    let spec = &TOPICS[0];
    log.create_topic(spec.name, spec.partitions, &[]).unwrap();
    abandon(log, &disk);
    let disk = disk.after_process_crash();
    let topic_dir = Path::new(DATA_DIR).join("topics").join(spec.name);
    disk.remove_dir_all(&topic_dir.join("1")).unwrap();
    disk.sync_dir(&topic_dir).unwrap();
    let log = open(&disk, &archives).unwrap();
    let record = Record {
        timestamp: 1_000,
        key: None,
        value: Some(Bytes::from_static(b"appended after recovery")),
        headers: Vec::new(),
    };
    let partition = log.topic(spec.name).unwrap().partition(1).unwrap();
    runtime
        .block_on(partition.append_durable(std::slice::from_ref(&record)))
        .unwrap();
    abandon(log, &disk);
    let log = open(&disk.synced_only(), &archives).unwrap();
    let partition = log.topic(spec.name).unwrap().partition(1).unwrap();
    assert_eq!(
        read_partition(&partition).unwrap(),
        BTreeMap::from([(0, record)])
    );
}
