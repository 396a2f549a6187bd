//! Consumer groups against the real server: balanced assignment, take-over from committed
//! offsets when a member leaves or times out, and no record skipped.

use std::collections::{BTreeMap, BTreeSet};

use crate::common::Server;
use bytes::Bytes;
use sluice::cli::client::{Client, Position};
use sluice::groups::{CommittedOffset, Membership};
use sluice::log::Record;
use sluice::server::api::{CommitRequest, CreateTopic, JoinRequest};

/// A server with topic `t` of `partitions` partitions.
async fn server_with_topic(dir: &std::path::Path, partitions: u32) -> (Server, Client) {
    let server = Server::start(dir);
    let client = Client::new(&server.url);
    client
        .create_topic(&CreateTopic {
            name: "t".into(),
            partitions,
            config: BTreeMap::new(),
        })
        .await
        .unwrap();
    (server, client)
}

async fn join(client: &Client, timeout_ms: u64) -> Membership {
    client
        .join(
            "g",
            &JoinRequest {
                member_id: None,
                client: Some("test".into()),
                topics: vec!["t".into()],
                session_timeout_ms: Some(timeout_ms),
            },
        )
        .await
        .unwrap()
}

/// Reads up to `max` records of a partition from the group's committed offset, commits
/// after them, and returns their values.
async fn consume(client: &Client, member: &Membership, partition: u32, max: usize) -> Vec<String> {
    let committed = client.committed("g").await.unwrap();
    let offset = committed
        .iter()
        .find(|c| c.partition == partition)
        .map_or(0, |c| c.offset);
    let fetch = client
        .fetch("t", partition, Position::Offset(offset), 1 << 20, 0)
        .await
        .unwrap();
    let records: Vec<_> = fetch.records.into_iter().take(max).collect();
    if let Some((last, _)) = records.last() {
        client
            .commit(
                "g",
                &CommitRequest {
                    member_id: Some(member.member_id.clone()),
                    generation: Some(member.generation),
                    offsets: vec![CommittedOffset {
                        topic: "t".into(),
                        partition,
                        offset: last + 1,
                    }],
                },
            )
            .await
            .unwrap();
    }
    records
        .into_iter()
        .map(|(_, r)| String::from_utf8(r.value_bytes().to_vec()).unwrap())
        .collect()
}

#[tokio::test]
async fn members_share_partitions_and_take_over_from_committed_offsets() {
    let dir = tempfile::tempdir().unwrap();
    let (_server, client) = server_with_topic(dir.path(), 6).await;
    for p in 0..6u32 {
        let records: Vec<Record> = (0..50)
            .map(|i| Record {
                timestamp: 0,
                key: None,
                value: Some(Bytes::from(format!("{p}-{i}"))),
                headers: vec![],
            })
            .collect();
        client.produce("t", Some(p), &records).await.unwrap();
    }

    let a = join(&client, 30_000).await;
    let b = join(&client, 30_000).await;
    let c = join(&client, 30_000).await;
    let mut members = Vec::new();
    for m in [&a, &b, &c] {
        members.push(client.heartbeat("g", &m.member_id).await.unwrap());
    }
    let mut owned = BTreeSet::new();
    for m in &members {
        assert_eq!(m.assignment.len(), 2, "{m:?}");
        for tp in &m.assignment {
            assert!(
                owned.insert(tp.partition),
                "partition {} assigned twice",
                tp.partition
            );
        }
    }
    assert_eq!(owned.len(), 6);

    // Each member consumes 20 records of each of its partitions and commits.
    let mut seen: BTreeSet<String> = BTreeSet::new();
    for m in &members {
        for tp in &m.assignment {
            seen.extend(consume(&client, m, tp.partition, 20).await);
        }
    }
    // A member that lost its partitions cannot commit them any more.
    let leaver = members[0].clone();
    client.leave("g", &leaver.member_id).await.unwrap();
    let stale = client
        .commit(
            "g",
            &CommitRequest {
                member_id: Some(leaver.member_id.clone()),
                generation: Some(leaver.generation),
                offsets: vec![CommittedOffset {
                    topic: "t".into(),
                    partition: leaver.assignment[0].partition,
                    offset: 50,
                }],
            },
        )
        .await;
    assert!(stale.is_err());

    let mut survivors = Vec::new();
    for m in &members[1..] {
        survivors.push(client.heartbeat("g", &m.member_id).await.unwrap());
    }
    let taken: BTreeSet<u32> = survivors
        .iter()
        .flat_map(|m| m.assignment.iter().map(|tp| tp.partition))
        .collect();
    assert_eq!(
        taken.len(),
        6,
        "survivors own all partitions: {survivors:?}"
    );
    assert!(survivors.iter().all(|m| m.assignment.len() == 3));
    for m in &survivors {
        for tp in &m.assignment {
            seen.extend(consume(&client, m, tp.partition, 1000).await);
        }
    }
    let expected: BTreeSet<String> = (0..6)
        .flat_map(|p| (0..50).map(move |i| format!("{p}-{i}")))
        .collect();
    assert_eq!(seen, expected, "every record consumed, none skipped");

    let metrics = reqwest::get(format!("{}/metrics", client.url()))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    for p in 0..6 {
        assert!(
            metrics.contains(&format!(
                "sluice_partition_high_watermark{{topic=\"t\",partition=\"{p}\"}} 50\n"
            )),
            "{metrics}"
        );
        assert!(
            metrics.contains(&format!(
                "sluice_group_lag_records{{group=\"g\",kind=\"consumer\",topic=\"t\",partition=\"{p}\"}} 0\n"
            )),
            "{metrics}"
        );
    }
    assert!(
        metrics.contains("sluice_produced_records_total 300\n"),
        "{metrics}"
    );
    let description = client.describe_group("g").await.unwrap();
    assert_eq!(description.total_lag, 0);
    assert_eq!(description.members.len(), 2);
}

#[tokio::test]
async fn a_member_that_stops_heartbeating_is_removed_and_its_partitions_move() {
    let dir = tempfile::tempdir().unwrap();
    let (_server, client) = server_with_topic(dir.path(), 2).await;
    let silent = join(&client, 1_000).await;
    let alive = join(&client, 30_000).await;
    assert_eq!(
        client
            .heartbeat("g", &silent.member_id)
            .await
            .unwrap()
            .assignment
            .len(),
        1
    );
    // Heartbeat the live member until the silent one's session expires and it gets both.
    let mut rounds = 0;
    loop {
        let current = client.heartbeat("g", &alive.member_id).await.unwrap();
        if current.assignment.len() == 2 {
            break;
        }
        rounds += 1;
        assert!(rounds < 200, "silent member never expired");
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    let error = client.heartbeat("g", &silent.member_id).await.unwrap_err();
    assert!(error.to_string().contains("join again"), "{error}");
}
