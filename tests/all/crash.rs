//! kill -9 the real server at random moments while producers wait for acknowledgements; after
//! each restart every acknowledged record is present exactly once, in order, per partition.
//!
//! SLUICE_CRASH_ROUNDS (default 20) sets the number of kills. The random choices (how many
//! acknowledgements before each kill, each producer's batch size) come from a seed that the
//! test prints first (`--nocapture` shows it, and so does a failure, with the test's output);
//! `SLUICE_CRASH_SEED=<seed> cargo test --test all crash::` makes the same choices again.
//! When each kill lands still depends on timing.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use crate::common::{self, Server};
use bytes::Bytes;
use rand::{Rng, SeedableRng};
use sluice::cli::client::{Client, Position};
use sluice::log::Record;

const PARTITIONS: u32 = 4;
/// kill -9 rounds; SLUICE_CRASH_ROUNDS raises it for a soak.
fn kills() -> usize {
    std::env::var("SLUICE_CRASH_ROUNDS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(20)
}

/// record id -> (partition, offset) for every acknowledged record.
type Acked = Arc<Mutex<HashMap<u64, (u32, u64)>>>;

async fn read_partition(client: &Client, partition: u32) -> Vec<(u64, String)> {
    let mut out = Vec::new();
    let mut offset = 0;
    loop {
        let fetch = client
            .fetch("crash", partition, Position::Offset(offset), 1 << 20, 0)
            .await
            .unwrap();
        out.extend(
            fetch
                .records
                .into_iter()
                .map(|(o, r)| (o, String::from_utf8(r.value_bytes().to_vec()).unwrap())),
        );
        offset = fetch.next_offset;
        if offset >= fetch.high_watermark {
            return out;
        }
    }
}

async fn verify(client: &Client, acked: &Acked) -> usize {
    let acked = acked.lock().unwrap().clone();
    let mut seen: HashMap<u64, (u32, u64)> = HashMap::new();
    for partition in 0..PARTITIONS {
        let records = read_partition(client, partition).await;
        for (i, (offset, value)) in records.iter().enumerate() {
            assert_eq!(
                *offset, i as u64,
                "offsets of partition {partition} are dense and in order"
            );
            let id: u64 = value.strip_prefix("id-").unwrap().parse().unwrap();
            assert!(
                seen.insert(id, (partition, *offset)).is_none(),
                "record {id} is stored twice"
            );
        }
    }
    for (id, place) in &acked {
        assert_eq!(
            seen.get(id),
            Some(place),
            "acknowledged record {id} lost or moved"
        );
    }
    seen.len()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn acknowledged_records_survive_kill_minus_nine() {
    let dir = tempfile::tempdir().unwrap();
    let mut rng = rand::rngs::StdRng::seed_from_u64(common::seed("SLUICE_CRASH_SEED"));
    let acked: Acked = Arc::default();
    let next_id = Arc::new(std::sync::atomic::AtomicU64::new(0));
    let mut server = Server::start(dir.path());
    Client::new(&server.url)
        .create_topic(&sluice::server::api::CreateTopic {
            name: "crash".into(),
            partitions: PARTITIONS,
            config: [("segment_bytes".to_string(), serde_json::json!(64 * 1024))].into(),
        })
        .await
        .unwrap();
    for round in 0..kills() {
        let client = Client::new(&server.url);
        let kill_after = rng.random_range(1..40u64);
        let acks_this_round = Arc::new(std::sync::atomic::AtomicU64::new(0));
        let (enough_tx, mut enough) = tokio::sync::watch::channel(false);
        let mut producers = tokio::task::JoinSet::new();
        for _ in 0..4 {
            let (client, acked, next_id, acks, enough_tx) = (
                client.clone(),
                acked.clone(),
                next_id.clone(),
                acks_this_round.clone(),
                enough_tx.clone(),
            );
            let batch = rng.random_range(1..200u64);
            producers.spawn(async move {
                loop {
                    let first = next_id.fetch_add(batch, std::sync::atomic::Ordering::SeqCst);
                    let records: Vec<Record> = (first..first + batch)
                        .map(|id| Record {
                            timestamp: 0,
                            key: Some(Bytes::from(format!("key-{}", id % 97))),
                            value: Some(Bytes::from(format!("id-{id}"))),
                            headers: vec![],
                        })
                        .collect();
                    let Ok(response) = client.produce("crash", None, &records).await else {
                        return;
                    };
                    let mut acked = acked.lock().unwrap();
                    for part in response.partitions {
                        let ids = records.iter().filter(|r| {
                            sluice::log::partitioner::partition_for_key(
                                r.key.as_ref().unwrap(),
                                PARTITIONS,
                            ) == part.partition
                        });
                        for (i, r) in ids.enumerate() {
                            let id: u64 = std::str::from_utf8(&r.value_bytes()[3..])
                                .unwrap()
                                .parse()
                                .unwrap();
                            acked.insert(id, (part.partition, part.base_offset + i as u64));
                        }
                    }
                    if acks.fetch_add(1, std::sync::atomic::Ordering::SeqCst) + 1 >= kill_after {
                        let _ = enough_tx.send(true);
                    }
                }
            });
        }
        enough.wait_for(|e| *e).await.unwrap();
        server.kill();
        while producers.join_next().await.is_some() {}
        server = Server::start(dir.path());
        let stored = verify(&Client::new(&server.url), &acked).await;
        assert!(stored >= acked.lock().unwrap().len(), "round {round}");
    }
    let total_acked = acked.lock().unwrap().len();
    assert!(total_acked > 0);
    assert!(server.terminate(), "clean shutdown");
}
