//! Exactly-once effects of a plugin group, proven by crashing the real binary.
//!
//! The stateful `counter` plugin keeps a count per key and a total, and emits one output per
//! input carrying the input's id. The engine is killed with SIGKILL at random moments (also
//! while a new version is being deployed, and with commits every few milliseconds so kills
//! land in group commits), and aborted at crash points too narrow to hit from outside. After
//! the last restart: every input's output exists exactly once, the counts and the total are
//! exact, committed offsets never moved backwards, and nothing a reader saw in the output
//! topic during the run disappeared or changed.
//!
//! SLUICE_EO_RECORDS (default 200,000) and SLUICE_CRASH_ROUNDS (default 30) make it larger.
//! The two random-kill tests print the seed of their random choices (the pause before each
//! kill); `SLUICE_EO_SEED=<seed>` makes the same choices again.

use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use crate::common::plugins::*;
use crate::common::{self, Server};
use bytes::Bytes;
use rand::{Rng, SeedableRng};
use sluice::cli::client::{Client, Position};
use sluice::log::Record;

const KEYS: u64 = 97;
const INPUT_PARTITIONS: u32 = 4;
const OUTPUT_PARTITIONS: u32 = 3;

fn from_env(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// Produces `records` inputs: value `{"id": i}` with key `key-<i % KEYS>`.
async fn produce_inputs(client: &Client, records: u64) {
    let ids: Vec<u64> = (0..records).collect();
    for chunk in ids.chunks(5_000) {
        let batch: Vec<Record> = chunk
            .iter()
            .map(|i| record(&format!("key-{}", i % KEYS), &format!(r#"{{"id":{i}}}"#)))
            .collect();
        client.produce("in", None, &batch).await.unwrap();
    }
}

fn counter_request(stamp: bool, generation: u32) -> sluice::server::api::DeployRequest {
    let stamp = stamp.to_string();
    let generation = generation.to_string();
    let mut request = request(
        "counter",
        "in",
        &["out"],
        &[
            ("output", "out"),
            ("carry", "id"),
            ("stamp", &stamp),
            ("generation", &generation),
        ],
    );
    // Small batches and frequent commits: many commits for the kills to land in.
    request.spec.limits.batch_records = Some(100);
    request.spec.limits.commit_interval_ms = Some(5);
    request
}

/// Serializes observations of the committed offsets: each is requested and recorded before
/// the next is requested, so the order they are recorded in is the order the engine read them.
static OBSERVING: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// Reads the group's description and records its committed offsets in `watched`.
async fn observe(
    client: &Client,
    watched: &Mutex<Watch>,
    when: &str,
) -> Option<sluice::runtime::PluginDescription> {
    let _turn = OBSERVING.lock().await;
    let description = client.describe_plugin("c").await.ok()?;
    let committed = description
        .partitions
        .iter()
        .filter_map(|p| Some((p.partition, p.committed?)))
        .collect();
    watched.lock().unwrap().committed_now(&committed, when);
    Some(description)
}

/// What the concurrent reader saw, and what went wrong while it watched.
#[derive(Default)]
struct Watch {
    /// (output partition, offset) -> value, for every output record read during the run.
    seen: HashMap<(u32, u64), Bytes>,
    /// Highest committed offset seen per input partition.
    committed: BTreeMap<u32, u64>,
    violations: Vec<String>,
}

impl Watch {
    fn committed_now(&mut self, now: &BTreeMap<u32, u64>, when: &str) {
        for (&partition, &offset) in now {
            let highest = self.committed.entry(partition).or_insert(offset);
            if offset < *highest {
                self.violations.push(format!(
                    "{when}: committed offset of partition {partition} went back from {highest} to {offset}"
                ));
            }
            *highest = (*highest).max(offset);
        }
    }
}

/// Reads the output topic and the committed offsets over and over until `stop`, across
/// restarts (the engine's address is in `url`; while it is down, requests fail and the reader
/// tries again).
async fn watch(
    url: Arc<Mutex<String>>,
    token: String,
    stop: Arc<AtomicBool>,
    out: Arc<Mutex<Watch>>,
) {
    let mut next = [0u64; OUTPUT_PARTITIONS as usize];
    while !stop.load(Ordering::Relaxed) {
        let client = Client::new(&url.lock().unwrap().clone()).with_token(Some(token.clone()));
        observe(&client, &out, "during the run").await;
        for partition in 0..OUTPUT_PARTITIONS {
            let position = Position::Offset(next[partition as usize]);
            let Ok(fetch) = client.fetch("out", partition, position, 1 << 20, 20).await else {
                continue;
            };
            let mut watch = out.lock().unwrap();
            for (offset, record) in fetch.records {
                watch
                    .seen
                    .insert((partition, offset), record.value.unwrap_or_default());
            }
            next[partition as usize] = fetch.next_offset;
        }
    }
}

/// The output value's fields.
fn parse_output(value: &[u8]) -> (u64, String, u64) {
    let json: serde_json::Value = serde_json::from_slice(value).unwrap();
    let id = json["id"].as_str().unwrap().parse().unwrap();
    (
        id,
        json["key"].as_str().unwrap().to_string(),
        json["count"].as_u64().unwrap(),
    )
}

async fn kill_at_random_while_it_works(stamp: bool) {
    let records = from_env("SLUICE_EO_RECORDS", 200_000);
    let kills = from_env("SLUICE_CRASH_ROUNDS", 30) as usize;
    let mut rng = rand::rngs::StdRng::seed_from_u64(common::seed("SLUICE_EO_SEED"));

    let dir = tempfile::tempdir().unwrap();
    let mut server = Server::start(dir.path());
    let token = token(&server);
    let mut client = admin(&server);
    create_topic(&client, "in", INPUT_PARTITIONS).await;
    create_topic(&client, "out", OUTPUT_PARTITIONS).await;
    produce_inputs(&client, records).await;
    let mut generation = 1;
    client
        .deploy("c", &counter_request(stamp, generation))
        .await
        .unwrap();

    let url = Arc::new(Mutex::new(server.url.clone()));
    let stop = Arc::new(AtomicBool::new(false));
    let watched = Arc::new(Mutex::new(Watch::default()));
    let reader = tokio::spawn(watch(
        url.clone(),
        token.clone(),
        stop.clone(),
        watched.clone(),
    ));

    let (mut kills_while_working, mut kills_during_deploy) = (0, 0);
    for round in 0..kills {
        let before: u64 = client
            .describe_plugin("c")
            .await
            .unwrap()
            .partitions
            .iter()
            .filter_map(|p| p.committed)
            .sum();
        let deploying = round % 5 == 4;
        let deploy = if deploying {
            // A new version while the group works; the kill lands while the request is in
            // flight or just after the switch.
            generation += 1;
            let (client, request) = (client.clone(), counter_request(stamp, generation));
            Some(tokio::spawn(
                async move { client.deploy("c", &request).await },
            ))
        } else {
            // Let the group commit something since the restart, then kill a little later.
            wait_for(&client, "c", "progress since the restart", |d| {
                let now: u64 = d.partitions.iter().filter_map(|p| p.committed).sum();
                now > before || d.total_lag == 0
            })
            .await;
            None
        };
        tokio::time::sleep(Duration::from_millis(rng.random_range(0..30))).await;
        let lag = observe(&client, &watched, "just before a kill")
            .await
            .expect("the engine answers")
            .total_lag;
        server.kill();
        if let Some(deploy) = deploy {
            // Refused or cut off by the kill, or deployed: each is fine.
            let _ = deploy.await;
            kills_during_deploy += 1;
        }
        if lag > 0 {
            kills_while_working += 1;
        }
        server = Server::start(dir.path());
        *url.lock().unwrap() = server.url.clone();
        client = admin(&server);
        observe(&client, &watched, &format!("after restart {round}")).await;
    }
    assert!(
        kills_while_working >= kills * 9 / 10,
        "only {kills_while_working} of {kills} kills hit the work; produce more records"
    );
    assert!(kills_during_deploy > 0);

    let done = wait_for(&client, "c", "every input counted", |d| {
        d.total_lag == 0 && d.outbox_pending == 0
    })
    .await;
    stop.store(true, Ordering::Relaxed);
    reader.await.unwrap();
    println!(
        "{kills} kills ({kills_while_working} while working, {kills_during_deploy} during a deploy); active version {}",
        done.active_version
    );

    observe(&client, &watched, "at the end").await;
    let watch = std::mem::take(&mut *watched.lock().unwrap());
    assert!(watch.violations.is_empty(), "{:#?}", watch.violations);

    println!(
        "the reader saw {} output records during the run",
        watch.seen.len()
    );
    assert!(
        !watch.seen.is_empty(),
        "the reader saw nothing during the run"
    );
    let outputs = read_partitions(&client, "out").await;
    for (&(partition, offset), value) in &watch.seen {
        let now = outputs[partition as usize]
            .get(offset as usize)
            .map(|r| r.value_bytes());
        assert_eq!(
            now,
            Some(&value[..]),
            "the reader saw {value:?} at out/{partition}@{offset}, which is now {now:?}"
        );
    }
    let mut by_id: HashMap<u64, usize> = HashMap::new();
    let mut counts: HashMap<String, Vec<u64>> = HashMap::new();
    for output in outputs.iter().flatten() {
        let (id, key, count) = parse_output(output.value_bytes());
        *by_id.entry(id).or_default() += 1;
        counts.entry(key).or_default().push(count);
    }
    let duplicated: Vec<_> = by_id.iter().filter(|(_, n)| **n > 1).take(10).collect();
    assert!(
        duplicated.is_empty(),
        "inputs with more than one output: {duplicated:?}"
    );
    let lost: Vec<u64> = (0..records)
        .filter(|i| !by_id.contains_key(i))
        .take(10)
        .collect();
    assert!(lost.is_empty(), "inputs without an output: {lost:?}");
    assert_eq!(by_id.len() as u64, records);
    for k in 0..KEYS {
        let key = format!("key-{k}");
        let mut seen = counts.remove(&key).unwrap_or_default();
        seen.sort_unstable();
        let expected: Vec<u64> =
            (1..=(0..records).filter(|i| i % KEYS == k).count() as u64).collect();
        assert_eq!(
            seen, expected,
            "{key}: the counts emitted are not 1..=its inputs"
        );
    }

    let state = client.plugin_state("c", "", None, 1_000).await.unwrap();
    let value = |name: &str| {
        state
            .entries
            .iter()
            .find(|e| e.key.as_deref() == Some(name))
            .and_then(|e| e.value.clone())
            .unwrap_or_default()
    };
    assert_eq!(value("total"), records.to_string(), "the state's total");
    let counted: u64 = (0..KEYS)
        .map(|k| value(&format!("count/key-{k}")).parse::<u64>().unwrap())
        .sum();
    assert_eq!(counted, records, "the state's counts add up to the inputs");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_9_at_random_moments_every_input_takes_effect_once() {
    kill_at_random_while_it_works(false).await;
}

/// The plugin stamps the wall clock and a random number into each output: a batch run twice
/// would emit different records, so only one run's output may survive.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_non_deterministic_plugin_keeps_only_one_runs_effects() {
    kill_at_random_while_it_works(true).await;
}

/// The engine aborts itself at a crash point (SLUICE_CRASH_AT): between the commit of an
/// outbox entry and its append, between two of its parts (recovery must find the first part
/// by its marker and append only the rest), and inside a group commit.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn crash_points_in_the_outbox_and_the_commit_recover_exactly_once() {
    use sluice::crash_point::{BEFORE_GROUP_COMMIT, OUTBOX_COMMITTED, OUTBOX_PART_APPENDED};
    const RECORDS: u64 = 3_000;
    for (point, pass) in [
        (OUTBOX_COMMITTED, 3),
        (OUTBOX_PART_APPENDED, 2),
        (BEFORE_GROUP_COMMIT, 3),
    ] {
        let dir = tempfile::tempdir().unwrap();
        let crash_at = format!("{point}:{pass}");
        let server = Server::start_with_env(dir.path(), &[("SLUICE_CRASH_AT", &crash_at)]);
        let client = admin(&server);
        create_topic(&client, "in", INPUT_PARTITIONS).await;
        create_topic(&client, "out", OUTPUT_PARTITIONS).await;
        produce_inputs(&client, RECORDS).await;
        // The abort can come before the answer; the deployment is on disk by then.
        let _ = client.deploy("c", &counter_request(false, 1)).await;
        let (status, log) = server.wait_exit();
        assert!(!status.success(), "{point}: the engine should have aborted");
        assert!(
            log.contains(&format!("crash point {point} reached")),
            "{point}: {log}"
        );

        let server = Server::start(dir.path());
        let client = admin(&server);
        wait_for(&client, "c", "every input counted", |d| {
            d.total_lag == 0 && d.outbox_pending == 0
        })
        .await;
        let mut ids: Vec<u64> = read_partitions(&client, "out")
            .await
            .iter()
            .flatten()
            .map(|r| parse_output(r.value_bytes()).0)
            .collect();
        ids.sort_unstable();
        assert_eq!(
            ids,
            (0..RECORDS).collect::<Vec<_>>(),
            "{point}: each input's output once"
        );
        if point == OUTBOX_PART_APPENDED {
            assert!(
                server.log().contains("already in the log"),
                "recovery did not find the part appended before the crash:\n{}",
                server.log()
            );
        }
    }
}

/// A snapshot pairs the state with the offsets it was committed with; rolling back to it puts
/// both back, so the records after it are processed again, by the version of the snapshot.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rollback_to_a_snapshot_restores_state_and_offsets_together() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(dir.path());
    let client = admin(&server);
    create_topic(&client, "in", 1).await;
    create_topic(&client, "out", 1).await;
    let produce = |from: u64, to: u64| {
        let batch: Vec<Record> = (from..to)
            .map(|i| record("a", &format!(r#"{{"id":{i}}}"#)))
            .collect();
        let client = client.clone();
        async move { client.produce("in", Some(0), &batch).await.unwrap() }
    };
    let total = |expected: u64| {
        let client = client.clone();
        async move {
            wait_for(&client, "c", "the total", |d| {
                d.total_lag == 0 && d.outbox_pending == 0
            })
            .await;
            let scan = client.plugin_state("c", "total", None, 1).await.unwrap();
            assert_eq!(
                scan.entries[0].value.as_deref(),
                Some(expected.to_string().as_str())
            );
        }
    };
    produce(0, 100).await;
    client
        .deploy("c", &counter_request(false, 1))
        .await
        .unwrap();
    total(100).await;
    let taken = client.take_snapshot("c", "at-100").await.unwrap();
    assert_eq!(
        (
            taken.version,
            taken.state_entries,
            taken.offsets[0].next_offset
        ),
        (1, 2, 100)
    );
    let again = client.take_snapshot("c", "at-100").await.unwrap_err();
    assert!(
        format!("{again:#}").contains("already has a snapshot named `at-100`"),
        "{again:#}"
    );
    produce(100, 150).await;
    total(150).await;
    client
        .deploy("c", &counter_request(false, 2))
        .await
        .unwrap();
    produce(150, 160).await;
    total(160).await;

    let with_token = |args: &[&str]| -> Vec<String> {
        let mut all: Vec<String> = args.iter().map(|s| s.to_string()).collect();
        all.extend(["--token".to_string(), token(&server)]);
        all
    };
    let run = |args: Vec<String>| {
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        common::cli(&server.url, &args, "")
    };
    let described = common::cli(&server.url, &["group", "describe", "c"], "");
    assert!(
        String::from_utf8_lossy(&described.stderr).contains("sluice plugin describe c"),
        "{described:?}"
    );
    let listed = common::stdout(&run(with_token(&["plugin", "snapshots", "c"])));
    assert!(
        listed.contains("at-100") && listed.contains("before-v2"),
        "{listed}"
    );
    let unknown = run(with_token(&[
        "plugin",
        "rollback",
        "c",
        "--to-snapshot",
        "nope",
    ]));
    assert!(!unknown.status.success());
    assert!(
        String::from_utf8_lossy(&unknown.stderr).contains("no snapshot named `nope`"),
        "{}",
        String::from_utf8_lossy(&unknown.stderr)
    );
    let rolled = common::stdout(&run(with_token(&[
        "plugin",
        "rollback",
        "c",
        "--to-snapshot",
        "at-100",
    ])));
    assert!(rolled.contains("active version 1"), "{rolled}");
    // Offsets 100..160 run again from the snapshot's state: the counts come out the same.
    total(160).await;
    let outputs: Vec<(u64, u64)> = read_all(&client, "out")
        .await
        .iter()
        .map(|r| {
            let (id, _, count) = parse_output(r.value_bytes());
            (id, count)
        })
        .collect();
    assert_eq!(outputs.len(), 220);
    let replayed: Vec<(u64, u64)> = (100..160).map(|i| (i, i + 1)).collect();
    assert_eq!(outputs[160..], replayed[..]);
}

/// At-most-once may lose the batches in flight at a crash, but each batch takes effect whole
/// or not at all: its state writes and its outputs commit together. After kill -9 at random
/// moments, each key's emitted counts are exactly 1..=its count in the state: none repeated
/// (outputs kept while their state writes were lost) and none missing (state kept without its
/// outputs).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn at_most_once_loses_whole_batches_never_half_of_one() {
    const RECORDS: u64 = 30_000;
    const KILLS: usize = 6;
    let mut rng = rand::rngs::StdRng::seed_from_u64(common::seed("SLUICE_EO_SEED"));
    let dir = tempfile::tempdir().unwrap();
    let mut server = Server::start(dir.path());
    let mut client = admin(&server);
    create_topic(&client, "in", INPUT_PARTITIONS).await;
    create_topic(&client, "out", OUTPUT_PARTITIONS).await;
    produce_inputs(&client, RECORDS).await;
    let mut request = counter_request(false, 1);
    request.spec.limits.delivery = Some(sluice::runtime::Delivery::AtMostOnce);
    client.deploy("c", &request).await.unwrap();
    for _ in 0..KILLS {
        let before = client.describe_plugin("c").await.unwrap().total_lag;
        wait_for(&client, "c", "progress since the restart", |d| {
            d.total_lag < before || d.total_lag == 0
        })
        .await;
        tokio::time::sleep(Duration::from_millis(rng.random_range(0..30))).await;
        server.kill();
        server = Server::start(dir.path());
        client = admin(&server);
    }
    // At-most-once commits a batch's position before it runs: the lag is 0 while the last
    // batch still runs, so its outputs and state are read once it is no longer in progress.
    wait_for(&client, "c", "every input taken (or lost)", |d| {
        d.total_lag == 0 && d.outbox_pending == 0 && d.in_progress_records == 0
    })
    .await;

    let mut counts: HashMap<String, Vec<u64>> = HashMap::new();
    for output in read_partitions(&client, "out").await.iter().flatten() {
        let (_, key, count) = parse_output(output.value_bytes());
        counts.entry(key).or_default().push(count);
    }
    let state = client
        .plugin_state("c", "count/", None, 1_000)
        .await
        .unwrap();
    for entry in &state.entries {
        let key = entry.key.as_deref().unwrap().trim_start_matches("count/");
        let counted: u64 = entry.value.as_deref().unwrap().parse().unwrap();
        let mut emitted = counts.remove(key).unwrap_or_default();
        emitted.sort_unstable();
        let repeated: Vec<u64> = emitted
            .windows(2)
            .filter(|w| w[0] == w[1])
            .map(|w| w[0])
            .collect();
        let missing: Vec<u64> = (1..=counted)
            .filter(|c| emitted.binary_search(c).is_err())
            .collect();
        assert!(
            repeated.is_empty() && missing.is_empty() && emitted.len() as u64 == counted,
            "{key}: the state counted {counted}; outputs repeat the counts {repeated:?}, miss {missing:?}, {} in all",
            emitted.len()
        );
    }
    assert!(counts.is_empty(), "outputs of keys the state never counted");
}
