//! Share groups (queues) against the real server: competing consumers beyond the partition
//! count, locks that end, releases, rejects, dead letters past `max_deliveries`, and a kill -9
//! of the engine in the middle, after which exactly the unacknowledged records come back.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use rand::{Rng, SeedableRng};
use sluice::cli::client::{Client, Position};
use sluice::log::Record;
use sluice::queues::{AckRefusal, GroupSettings};
use sluice::server::api::{AckAction, ShareAck, ShareAckRequest, ShareFetchRequest, SharedRecord};

use crate::common::kafka::exchange;
use crate::common::plugins::{admin, create_topic};
use crate::common::{self, Server};

/// A record's place: (partition, offset).
type Place = (u32, u64);

/// Produces `count` keyed records `job-<i>` to `topic`; returns where each landed.
async fn produce(client: &Client, topic: &str, count: usize) -> BTreeMap<Place, usize> {
    let mut places = BTreeMap::new();
    for chunk_start in (0..count).step_by(1000) {
        let end = (chunk_start + 1000).min(count);
        let records: Vec<Record> = (chunk_start..end)
            .map(|i| Record {
                timestamp: sluice::log::now_ms(),
                key: Some(Bytes::from(format!("k{i}"))),
                value: Some(Bytes::from(format!("job-{i}"))),
                headers: Vec::new(),
            })
            .collect();
        client.produce(topic, None, &records).await.unwrap();
    }
    // Where each landed, read back (keys route by murmur2).
    let topic_info = client.describe_topic(topic).await.unwrap();
    for p in &topic_info.partitions {
        let mut offset = 0;
        while offset < p.high_watermark {
            let fetched = client
                .fetch(topic, p.partition, Position::Offset(offset), 1 << 20, 0)
                .await
                .unwrap();
            for (record_offset, record) in &fetched.records {
                let value = String::from_utf8(record.value_bytes().to_vec()).unwrap();
                if let Some(index) = value.strip_prefix("job-") {
                    places.insert((p.partition, *record_offset), index.parse().unwrap());
                }
            }
            offset = fetched.next_offset;
        }
    }
    assert_eq!(places.len(), count);
    places
}

fn fetch_request(member: &str, topic: &str, max: usize, wait_ms: u64) -> ShareFetchRequest {
    ShareFetchRequest {
        member_id: member.into(),
        topic: topic.into(),
        partitions: None,
        max_records: Some(max),
        lock_ms: None,
        wait_ms: Some(wait_ms),
        acks: Vec::new(),
    }
}

fn ack(record: &SharedRecord, action: AckAction) -> ShareAck {
    ShareAck {
        topic: record.topic.clone(),
        partition: record.record.partition.unwrap(),
        offset: record.record.offset.unwrap(),
        last_offset: None,
        action,
        delay_ms: 0,
        reason: (action == AckAction::Reject).then(|| "cannot parse".to_string()),
    }
}

fn place(record: &SharedRecord) -> Place {
    (
        record.record.partition.unwrap(),
        record.record.offset.unwrap(),
    )
}

async fn configure(server: &Server, group: &str, settings: GroupSettings) {
    admin(server)
        .configure_share_group(group, &settings)
        .await
        .unwrap();
}

/// A restart redelivers exactly the records that were not acknowledged, with their delivery
/// counts, and none that were.
#[tokio::test]
async fn a_kill_9_redelivers_exactly_the_unacknowledged_records() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(dir.path());
    let client = Client::new(&server.url);
    create_topic(&client, "jobs", 1).await;
    produce(&client, "jobs", 100).await;
    let fetched = client
        .share_fetch("work", &fetch_request("a", "jobs", 100, 0))
        .await
        .unwrap();
    assert_eq!(fetched.records.len(), 100);
    assert!(fetched.records.iter().all(|r| r.delivery_count == 1));
    // Acknowledge every offset not divisible by 5, in two calls; release 3 of the others.
    let acks: Vec<ShareAck> = fetched
        .records
        .iter()
        .filter(|r| r.record.offset.unwrap() % 5 != 0)
        .map(|r| ack(r, AckAction::Accept))
        .collect();
    let (first, second) = acks.split_at(37);
    let answer = client
        .share_ack(
            "work",
            &ShareAckRequest {
                member_id: "a".into(),
                acks: first.to_vec(),
            },
        )
        .await
        .unwrap();
    assert!(answer.refused.is_empty(), "{:?}", answer.refused);
    // The rest with the next fetch, as a member's loop sends them; nothing is left to take.
    let next = client
        .share_fetch(
            "work",
            &ShareFetchRequest {
                acks: second.to_vec(),
                ..fetch_request("a", "jobs", 100, 0)
            },
        )
        .await
        .unwrap();
    assert!(next.refused.is_empty(), "{:?}", next.refused);
    assert!(next.records.is_empty());
    let released: Vec<ShareAck> = [0u64, 5, 10]
        .iter()
        .map(|offset| ShareAck {
            topic: "jobs".into(),
            partition: 0,
            offset: *offset,
            last_offset: None,
            action: AckAction::Release,
            delay_ms: 0,
            reason: None,
        })
        .collect();
    client
        .share_ack(
            "work",
            &ShareAckRequest {
                member_id: "a".into(),
                acks: released,
            },
        )
        .await
        .unwrap();
    server.kill();

    let server = Server::start(dir.path());
    let client = Client::new(&server.url);
    // The binary fetch: stored batches and the acquired ranges, decoded by the client.
    let again = client
        .share_fetch_batches("work", &fetch_request("b", "jobs", 1000, 0))
        .await
        .unwrap();
    assert!(again.refused.is_empty());
    let taken: Vec<&(u64, u16, Record)> = again.batches.iter().flat_map(|b| &b.records).collect();
    let offsets: BTreeSet<u64> = taken.iter().map(|(offset, _, _)| *offset).collect();
    let expected: BTreeSet<u64> = (0..100).filter(|o| o % 5 == 0).collect();
    assert_eq!(offsets, expected, "exactly the 20 unacknowledged come back");
    assert!(
        taken.iter().all(|(_, count, _)| *count == 2),
        "each was delivered once before the kill: {:?}",
        taken.iter().map(|(o, c, _)| (o, c)).collect::<Vec<_>>()
    );
    for (offset, _, record) in &taken {
        let value = String::from_utf8(record.value_bytes().to_vec()).unwrap();
        assert!(value.starts_with("job-"), "{offset}: {value}");
    }
    let description = client.describe_share_group("work").await.unwrap();
    let partition = &description.partitions[0];
    assert_eq!(partition.start_offset, 0, "offset 0 is not done");
    assert_eq!(partition.end_offset, 100);
    assert_eq!(partition.tally.in_flight, 20);
    assert_eq!(partition.tally.done, 80);
    assert_eq!(description.queue_depth, 20);
}

/// What a consumer did, as the test saw it.
#[derive(Default)]
struct Observed {
    /// Every delivery seen: (place, delivery count).
    deliveries: Vec<(Place, u16)>,
    /// Acknowledgements the engine confirmed.
    acked: Vec<Place>,
    /// Acknowledgements whose answer was lost (the engine was killed): applied or not.
    unknown: BTreeSet<Place>,
    /// Fetches whose answer was lost: their records were locked but not seen.
    lost_fetches: u64,
    refused: Vec<(Place, AckRefusal)>,
}

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Behaviour {
    /// Takes a batch, then stops without a word, holding its locks.
    Crashes,
    /// Releases every 7th record it gets, to be delivered again.
    Nacks,
    /// Holds its first batch past the lock, then acknowledges it: refused.
    Slow,
    Steady,
}

const LOCK_MS: u64 = 1_500;
const MAX_DELIVERIES: u16 = 4;
const PREFETCH: usize = 200;

/// Poison: every consumer releases it; after MAX_DELIVERIES it must be dead-lettered.
fn is_poison(index: usize) -> bool {
    index % 997 == 3
}

/// Rejected outright by whoever gets it.
fn is_rejected(index: usize) -> bool {
    index % 1009 == 5
}

struct Run {
    url: Mutex<String>,
    places: BTreeMap<Place, usize>,
    done: std::sync::atomic::AtomicBool,
}

impl Run {
    fn client(&self) -> Client {
        Client::new(&self.url.lock().unwrap())
    }
}

async fn consumer(run: Arc<Run>, name: String, behaviour: Behaviour) -> Observed {
    let mut observed = Observed::default();
    let mut batches = 0u64;
    while !run.done.load(std::sync::atomic::Ordering::Acquire) {
        let client = run.client();
        let fetched = match client
            .share_fetch("work", &fetch_request(&name, "jobs", PREFETCH, 200))
            .await
        {
            Ok(fetched) => fetched,
            Err(e) if e.server().is_none() => {
                // The engine is down (killed): what this fetch locked was never seen.
                observed.lost_fetches += 1;
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
            Err(e) => panic!("{name}: fetch failed: {e}"),
        };
        if fetched.records.is_empty() {
            continue;
        }
        batches += 1;
        for record in &fetched.records {
            observed
                .deliveries
                .push((place(record), record.delivery_count));
        }
        if behaviour == Behaviour::Crashes {
            // Gone with its locks: never acknowledges, never leaves.
            return observed;
        }
        if behaviour == Behaviour::Slow && batches == 1 {
            // The behaviour under test: work that outlasts the lock.
            tokio::time::sleep(Duration::from_millis(LOCK_MS + 500)).await;
        }
        let acks: Vec<ShareAck> = fetched
            .records
            .iter()
            .enumerate()
            .map(|(i, record)| {
                let index = run.places[&place(record)];
                let action = if is_poison(index) {
                    AckAction::Release
                } else if is_rejected(index) {
                    AckAction::Reject
                } else if behaviour == Behaviour::Nacks && i % 7 == 3 {
                    AckAction::Release
                } else {
                    AckAction::Accept
                };
                ack(record, action)
            })
            .collect();
        let accepted: Vec<Place> = acks
            .iter()
            .filter(|a| a.action == AckAction::Accept)
            .map(|a| (a.partition, a.offset))
            .collect();
        let request = ShareAckRequest {
            member_id: name.clone(),
            acks,
        };
        match run.client().share_ack("work", &request).await {
            Ok(answer) => {
                let refused: BTreeSet<Place> = answer
                    .refused
                    .iter()
                    .map(|r| (r.partition, r.offset))
                    .collect();
                observed.refused.extend(
                    answer
                        .refused
                        .iter()
                        .map(|r| ((r.partition, r.offset), r.reason)),
                );
                observed
                    .acked
                    .extend(accepted.into_iter().filter(|p| !refused.contains(p)));
            }
            Err(e) if e.server().is_none() => {
                observed.unknown.extend(accepted);
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            Err(e) => panic!("{name}: ack failed: {e}"),
        }
    }
    observed
}

/// The dead letters of the run: origin place -> (attempts, error), and how many duplicates.
async fn dead_letters(client: &Client) -> (BTreeMap<Place, (u16, String)>, usize) {
    let mut letters = BTreeMap::new();
    let mut duplicates = 0;
    let mut offset = 0;
    loop {
        let fetched = client
            .fetch("work.dlq", 0, Position::Offset(offset), 1 << 20, 0)
            .await
            .unwrap();
        for (_, record) in &fetched.records {
            let header = |name: &str| {
                record
                    .headers
                    .iter()
                    .find(|h| h.key == name)
                    .and_then(|h| h.value.as_ref())
                    .map(|v| String::from_utf8(v.to_vec()).unwrap())
                    .unwrap_or_else(|| panic!("dead letter without {name}"))
            };
            let origin = (
                header("sluice.dlq.partition").parse().unwrap(),
                header("sluice.dlq.offset").parse().unwrap(),
            );
            assert_eq!(header("sluice.dlq.group"), "work");
            let entry = (
                header("sluice.dlq.attempts").parse().unwrap(),
                header("sluice.dlq.error"),
            );
            if letters.insert(origin, entry).is_some() {
                duplicates += 1;
            }
        }
        if fetched.next_offset >= fetched.high_watermark {
            return (letters, duplicates);
        }
        offset = fetched.next_offset;
    }
}

/// 8 competing consumers on 2 partitions: one crashes holding locks, one nacks, one is slow
/// past its lock, and the engine is killed with kill -9 in the middle. In the end every record
/// is acknowledged exactly once or dead-lettered, each delivery count was seen in order, and
/// poison records are in the dead-letter topic after MAX_DELIVERIES deliveries.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn competing_consumers_survive_crashes_nacks_slowness_and_a_kill_9() {
    let seed = common::seed("SLUICE_SHARE_SEED");
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
    let records: usize = std::env::var("SLUICE_SHARE_RECORDS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(20_000);
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(dir.path());
    let client = Client::new(&server.url);
    create_topic(&client, "jobs", 2).await;
    configure(
        &server,
        "work",
        GroupSettings {
            record_lock_ms: LOCK_MS,
            max_deliveries: MAX_DELIVERIES,
            ..GroupSettings::default()
        },
    )
    .await;
    let places = produce(&client, "jobs", records).await;
    let run = Arc::new(Run {
        url: Mutex::new(server.url.clone()),
        places,
        done: Default::default(),
    });
    let behaviours = [
        Behaviour::Crashes,
        Behaviour::Nacks,
        Behaviour::Slow,
        Behaviour::Steady,
        Behaviour::Steady,
        Behaviour::Steady,
        Behaviour::Steady,
        Behaviour::Steady,
    ];
    let consumers: Vec<_> = behaviours
        .iter()
        .enumerate()
        .map(|(i, b)| tokio::spawn(consumer(run.clone(), format!("c{i}-{b:?}"), *b)))
        .collect();

    // Kill the engine once a share of the records drawn from the seed is done.
    let kill_at = rng.random_range(records / 5..records * 3 / 5) as u64;
    let mut server = Some(server);
    let deadline = Instant::now() + Duration::from_secs(300);
    let mut killed = false;
    loop {
        assert!(
            Instant::now() < deadline,
            "the queue did not drain in 300 s"
        );
        let description = match run.client().describe_share_group("work").await {
            Ok(d) => d,
            Err(_) => continue,
        };
        let done: u64 = description
            .partitions
            .iter()
            .map(|p| p.tally.done)
            .sum::<u64>()
            + description
                .partitions
                .iter()
                .map(|p| p.start_offset)
                .sum::<u64>();
        if !killed && done >= kill_at {
            eprintln!("kill -9 with about {done} of {records} records done");
            server.take().unwrap().kill();
            let restarted = Server::start(dir.path());
            *run.url.lock().unwrap() = restarted.url.clone();
            server = Some(restarted);
            killed = true;
            continue;
        }
        if killed && description.partitions.len() == 2 && description.queue_depth == 0 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    run.done.store(true, std::sync::atomic::Ordering::Release);
    let mut observed = Vec::new();
    for consumer in consumers {
        observed.push(consumer.await.unwrap());
    }
    let client = run.client();
    let (letters, duplicate_letters) = dead_letters(&client).await;
    eprintln!(
        "dead letters: {} ({} duplicates after the kill)",
        letters.len(),
        duplicate_letters
    );

    // Each delivery of a record was seen once, in order; a gap only where a fetch's answer
    // was lost to the kill.
    let mut seen: BTreeMap<Place, Vec<u16>> = BTreeMap::new();
    for o in &observed {
        for (place, count) in &o.deliveries {
            seen.entry(*place).or_default().push(*count);
        }
    }
    let lost_fetches: u64 = observed.iter().map(|o| o.lost_fetches).sum();
    let mut gaps = 0;
    for (place, counts) in seen.iter_mut() {
        counts.sort_unstable();
        let distinct: BTreeSet<u16> = counts.iter().copied().collect();
        assert_eq!(
            distinct.len(),
            counts.len(),
            "{place:?}: a delivery count seen twice: {counts:?}"
        );
        if counts.iter().enumerate().any(|(i, c)| *c != i as u16 + 1) {
            gaps += 1;
        }
    }
    assert!(
        gaps as u64 <= lost_fetches * PREFETCH as u64,
        "{gaps} records with a gap in their delivery counts, but only {lost_fetches} fetches lost"
    );

    // Every record: acknowledged exactly once (or its acknowledgement's answer was lost and it
    // never came back), or dead-lettered; never both.
    let mut acked: BTreeMap<Place, u32> = BTreeMap::new();
    for o in &observed {
        for place in &o.acked {
            *acked.entry(*place).or_default() += 1;
        }
    }
    let unknown: BTreeSet<Place> = observed.iter().flat_map(|o| o.unknown.clone()).collect();
    for (place, index) in &run.places {
        if let Some((attempts, error)) = letters.get(place) {
            assert!(
                !acked.contains_key(place),
                "{place:?} acked and dead-lettered"
            );
            if is_rejected(*index) {
                assert!(error.contains("cannot parse"), "{error}");
                continue;
            }
            // Poison, or a record that happened to miss its lock MAX_DELIVERIES times (held
            // by the crashed and the slow consumer, released by the nacker, cut by the kill).
            assert_eq!(*attempts, MAX_DELIVERIES, "{place:?}: {error}");
            assert!(error.contains("max_deliveries"), "{error}");
            let last_seen = seen.get(place).and_then(|c| c.last()).copied();
            assert!(
                last_seen == Some(MAX_DELIVERIES) || lost_fetches > 0,
                "{place:?} dead-lettered after {last_seen:?} deliveries seen"
            );
            continue;
        }
        assert!(
            !is_poison(*index) && !is_rejected(*index),
            "record {index} at {place:?} is not dead-lettered"
        );
        match acked.get(place) {
            Some(1) => {}
            Some(n) => panic!("record {index} at {place:?} acknowledged {n} times"),
            None => assert!(
                unknown.contains(place),
                "record {index} at {place:?} was never acknowledged"
            ),
        }
    }
    // The crash, the slow consumer and the nacks each forced redeliveries.
    let slow = &observed[2];
    assert!(
        !slow.refused.is_empty(),
        "the slow consumer's late acknowledgements were refused"
    );
    for (place, reason) in &slow.refused {
        assert_eq!(*reason, AckRefusal::NotAcquired);
        assert!(
            seen[place].len() >= 2 || letters.contains_key(place),
            "{place:?}: refused to the slow consumer, but not delivered again"
        );
    }
    let crashed: BTreeSet<Place> = observed[0].deliveries.iter().map(|d| d.0).collect();
    assert!(!crashed.is_empty());
    for place in &crashed {
        assert!(
            seen[place].len() >= 2 || unknown.contains(place) || letters.contains_key(place),
            "{place:?} held by the crashed consumer was not delivered again"
        );
    }
    let busy = observed.iter().filter(|o| !o.acked.is_empty()).count();
    assert!(
        busy >= 6,
        "only {busy} of 8 consumers acknowledged anything"
    );
    let described = client.describe_share_group("work").await.unwrap();
    assert_eq!(described.in_flight, 0);
    let metrics = reqwest::get(format!("{}/metrics", run.url.lock().unwrap()))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        metrics.contains("sluice_share_group_queue_depth_records{group=\"work\""),
        "{metrics}"
    );
}

/// The CLI consumes as a share-group member, acknowledging what it prints, and `group
/// describe` shows the share group's counts.
#[tokio::test]
async fn the_cli_consumes_a_share_group_and_describes_it() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(dir.path());
    let client = Client::new(&server.url);
    create_topic(&client, "jobs", 2).await;
    produce(&client, "jobs", 30).await;
    let first = common::stdout(&common::cli(
        &server.url,
        &["consume", "jobs", "--share-group", "cli", "-n", "10"],
        "",
    ));
    assert_eq!(first.lines().count(), 10, "{first}");
    let rest = common::stdout(&common::cli(
        &server.url,
        &["consume", "jobs", "--share-group", "cli"],
        "",
    ));
    let mut all: Vec<&str> = first.lines().chain(rest.lines()).collect();
    all.sort_unstable();
    let mut expected: Vec<String> = (0..30).map(|i| format!("job-{i}")).collect();
    expected.sort_unstable();
    assert_eq!(
        all, expected,
        "each record printed once across the two runs"
    );
    let described = common::stdout(&common::cli(&server.url, &["group", "describe", "cli"], ""));
    assert!(described.contains("share group cli"), "{described}");
    assert!(described.contains("IN-FLIGHT"), "{described}");
    let acked: u64 = described
        .lines()
        .filter(|l| l.starts_with("jobs"))
        .map(|l| l.split_whitespace().nth(6).unwrap().parse::<u64>().unwrap())
        .sum();
    assert_eq!(acked, 30, "{described}");
    let listed = common::stdout(&common::cli(&server.url, &["group", "list"], ""));
    assert!(listed.contains("cli (share group)"), "{listed}");
}

/// Time-to-live, delayed release, renew, and clear errors for bad requests.
#[tokio::test]
async fn ttl_delay_renew_and_bad_requests() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(dir.path());
    let client = Client::new(&server.url);
    create_topic(&client, "jobs", 1).await;
    // Records stamped an hour ago expire at once under a one-minute time-to-live.
    let old: Vec<Record> = (0..5)
        .map(|i| Record {
            timestamp: sluice::log::now_ms() - 3_600_000,
            key: None,
            value: Some(Bytes::from(format!("old-{i}"))),
            headers: Vec::new(),
        })
        .collect();
    client.produce("jobs", Some(0), &old).await.unwrap();
    produce(&client, "jobs", 3).await;
    configure(
        &server,
        "ttl",
        GroupSettings {
            message_ttl_ms: 60_000,
            ..GroupSettings::default()
        },
    )
    .await;
    let fetched = client
        .share_fetch("ttl", &fetch_request("m", "jobs", 100, 0))
        .await
        .unwrap();
    let offsets: Vec<u64> = fetched
        .records
        .iter()
        .map(|r| r.record.offset.unwrap())
        .collect();
    assert_eq!(
        offsets,
        vec![5, 6, 7],
        "the 5 expired records are not delivered"
    );
    let (letters, _) = {
        let mut letters = BTreeMap::new();
        let fetch = client
            .fetch("ttl.dlq", 0, Position::Offset(0), 1 << 20, 0)
            .await
            .unwrap();
        for (_, record) in fetch.records {
            letters.insert(record.value_bytes().to_vec(), ());
        }
        (letters, ())
    };
    assert_eq!(letters.len(), 5, "the expired records are dead-lettered");

    // A delayed release is not delivered before its delay; renew keeps a lock alive.
    let delayed = ShareAck {
        delay_ms: 60_000,
        ..ack(&fetched.records[0], AckAction::Release)
    };
    let renew = ack(&fetched.records[1], AckAction::Renew);
    let answer = client
        .share_ack(
            "ttl",
            &ShareAckRequest {
                member_id: "m".into(),
                acks: vec![delayed, renew],
            },
        )
        .await
        .unwrap();
    assert!(answer.refused.is_empty());
    let none = client
        .share_fetch("ttl", &fetch_request("other", "jobs", 100, 0))
        .await
        .unwrap();
    assert!(
        none.records.is_empty(),
        "offset 5 waits out its delay, 6 and 7 are locked: {:?}",
        none.records
    );
    // Another member's acknowledgement of m's record is refused.
    let theirs = client
        .share_ack(
            "ttl",
            &ShareAckRequest {
                member_id: "other".into(),
                acks: vec![ack(&fetched.records[2], AckAction::Accept)],
            },
        )
        .await
        .unwrap();
    assert_eq!(theirs.refused[0].reason, AckRefusal::NotAcquired);

    // Bad requests: clear errors.
    let bad = client
        .share_fetch("ttl", &fetch_request("m", "jobs", 0, 0))
        .await
        .unwrap_err();
    assert_eq!(bad.server().unwrap().code, "bad_max_records");
    let unknown = client
        .share_ack(
            "nope",
            &ShareAckRequest {
                member_id: "m".into(),
                acks: Vec::new(),
            },
        )
        .await
        .unwrap_err();
    assert_eq!(unknown.server().unwrap().status, 404);
    let no_topic = client
        .share_fetch("ttl", &fetch_request("m", "missing", 10, 0))
        .await
        .unwrap_err();
    assert_eq!(no_topic.server().unwrap().status, 404);
    let no_member = client
        .share_fetch("ttl", &fetch_request("", "jobs", 10, 0))
        .await
        .unwrap_err();
    assert_eq!(no_member.server().unwrap().status, 400);
    // A range past the per-call limit is refused before it is expanded.
    let huge = client
        .share_ack(
            "ttl",
            &ShareAckRequest {
                member_id: "m".into(),
                acks: vec![ShareAck {
                    last_offset: Some(u64::MAX),
                    ..ack(&fetched.records[2], AckAction::Accept)
                }],
            },
        )
        .await
        .unwrap_err();
    assert_eq!(huge.server().unwrap().code, "too_many_acks");
    // Settings need the admin token.
    let anonymous = Client::new(&server.url);
    let refused = anonymous
        .configure_share_group("ttl", &GroupSettings::default())
        .await
        .unwrap_err();
    assert_eq!(refused.server().unwrap().status, 401);
    let bad_setting = admin(&server)
        .configure_share_group(
            "ttl",
            &GroupSettings {
                max_deliveries: 0,
                ..GroupSettings::default()
            },
        )
        .await
        .unwrap_err();
    assert!(
        bad_setting.to_string().contains("max_deliveries"),
        "{bad_setting}"
    );
}

/// A Kafka share consumer whose connection drops (it crashed) gives its records back at once,
/// as Kafka does since 4.1, instead of when their locks run out (30 s by default); while the
/// connection lives they stay its own.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_kafka_share_consumer_whose_connection_drops_gives_its_records_back() {
    use bytes::Buf;
    use kafka_protocol::messages::metadata_request::MetadataRequestTopic;
    use kafka_protocol::messages::share_fetch_request::{FetchPartition, FetchTopic};
    use kafka_protocol::messages::{
        ApiKey, GroupId, MetadataRequest, MetadataResponse, ShareFetchRequest as KafkaShareFetch,
        ShareFetchResponse, TopicName,
    };
    use kafka_protocol::protocol::{Decodable, StrBytes};
    const RECORDS: usize = 10;

    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(dir.path());
    let client = admin(&server);
    create_topic(&client, "jobs", 1).await;
    produce(&client, "jobs", RECORDS).await;
    let mut stream = std::net::TcpStream::connect(server.kafka.as_deref().unwrap()).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(30)))
        .unwrap();
    let topic = MetadataRequestTopic::default()
        .with_name(Some(TopicName(StrBytes::from_static_str("jobs"))));
    let request = MetadataRequest::default().with_topics(Some(vec![topic]));
    let mut answer = exchange(&mut stream, ApiKey::Metadata, 12, &request);
    answer.advance(1); // response header v1: its tagged fields
    let topic_id = MetadataResponse::decode(&mut answer, 12).unwrap().topics[0].topic_id;

    let partition = FetchPartition::default().with_partition_index(0);
    let request = KafkaShareFetch::default()
        .with_group_id(Some(GroupId(StrBytes::from_static_str("work"))))
        .with_member_id(Some(StrBytes::from_static_str("kafka-member")))
        .with_share_session_epoch(0)
        .with_max_wait_ms(5_000)
        .with_min_bytes(1)
        .with_max_bytes(1 << 20)
        .with_max_records(100)
        .with_batch_size(100)
        .with_topics(vec![
            FetchTopic::default()
                .with_topic_id(topic_id)
                .with_partitions(vec![partition]),
        ]);
    let mut answer = exchange(&mut stream, ApiKey::ShareFetch, 1, &request);
    answer.advance(1);
    let fetched = ShareFetchResponse::decode(&mut answer, 1).unwrap();
    assert_eq!(fetched.error_code, 0);
    let acquired: i64 = fetched.responses[0].partitions[0]
        .acquired_records
        .iter()
        .map(|r| r.last_offset - r.first_offset + 1)
        .sum();
    assert_eq!(acquired, RECORDS as i64);

    let other = fetch_request("http-member", "jobs", 100, 0);
    let held = client.share_fetch("work", &other).await.unwrap();
    assert!(
        held.records.is_empty(),
        "records of a live session were delivered again"
    );

    drop(stream);
    let waited = Instant::now();
    let other = fetch_request("http-member", "jobs", 100, 10_000);
    let back = client.share_fetch("work", &other).await.unwrap();
    assert_eq!(back.records.len(), RECORDS, "after {:?}", waited.elapsed());
    assert!(back.records.iter().all(|r| r.delivery_count == 2));
}

/// A release's delay outlives a kill -9: after the restart, a record released for 30 s is not
/// delivered, and one released for 3 s comes back no sooner than 3 s after its release.
#[tokio::test]
async fn a_delayed_release_outlives_a_kill_9() {
    const SHORT_MS: u64 = 3_000;
    const LONG_MS: u64 = 30_000;
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(dir.path());
    let client = Client::new(&server.url);
    create_topic(&client, "jobs", 1).await;
    produce(&client, "jobs", 2).await;
    let fetched = client
        .share_fetch("work", &fetch_request("a", "jobs", 10, 0))
        .await
        .unwrap();
    assert_eq!(fetched.records.len(), 2);
    let release = |offset: u64, delay_ms: u64| ShareAck {
        topic: "jobs".into(),
        partition: 0,
        offset,
        last_offset: None,
        action: AckAction::Release,
        delay_ms,
        reason: None,
    };
    let request = ShareAckRequest {
        member_id: "a".into(),
        acks: vec![release(0, LONG_MS), release(1, SHORT_MS)],
    };
    let released = Instant::now();
    let answer = client.share_ack("work", &request).await.unwrap();
    assert!(answer.refused.is_empty(), "{:?}", answer.refused);
    server.kill();

    let server = Server::start(dir.path());
    let client = Client::new(&server.url);
    let mut delivered = Vec::new();
    while delivered.is_empty() {
        assert!(
            released.elapsed() < Duration::from_millis(LONG_MS),
            "nothing came back"
        );
        let fetched = client
            .share_fetch("work", &fetch_request("b", "jobs", 10, 1_000))
            .await
            .unwrap();
        delivered = fetched.records;
    }
    let waited = released.elapsed();
    let offsets: Vec<u64> = delivered.iter().map(|r| r.record.offset.unwrap()).collect();
    assert_eq!(offsets, vec![1], "only the short delay ended");
    assert!(
        waited >= Duration::from_millis(SHORT_MS),
        "delivered {waited:?} after a release of {SHORT_MS} ms"
    );
    assert_eq!(delivered[0].delivery_count, 2);
}
