//! The web console in a real browser: tests/console/drive.mjs drives Debian's headless
//! Chromium (playwright-core, no browser download) through the console of a running engine
//! set up here, and checks what the page shows; this test then checks through the API that
//! what the page did took effect. Screenshots go to target/console-screenshots/.

use std::path::PathBuf;
use std::process::Command;

use bytes::Bytes;
use sluice::log::Record;
use sluice::server::api::CreateTopic;

use crate::common::Server;
use crate::common::plugins::{admin, paused_trap_group, token};

const ORDERS: u64 = 200;

fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_console_shows_lag_acts_on_a_plugin_group_and_browses_records_in_chromium() {
    let dir = tempfile::tempdir().unwrap();
    // Retention checks often: the archived topic's oldest segments leave the log.
    let server = Server::start_with_env(
        dir.path(),
        &[("SLUICE_STORAGE__RETENTION_CHECK_INTERVAL_MS", "100")],
    );
    let client = admin(&server);
    paused_trap_group(&client, "orders", 2, 2).await;
    // Produced while paused: the group lags by all of it.
    let orders: Vec<Record> = (0..ORDERS)
        .map(|n| Record {
            timestamp: 1_700_000_000_000 + n as i64,
            key: Some(Bytes::from(format!("customer-{}", n % 7))),
            value: Some(Bytes::from(format!(
                "{{\"order\":{n},\"amount\":{}}}",
                n * 3
            ))),
            headers: Vec::new(),
        })
        .collect();
    client.produce("orders", Some(0), &orders).await.unwrap();
    let bad = Record {
        timestamp: 1_700_000_001_000,
        key: None,
        value: Some(Bytes::from_static(b"bad")),
        headers: Vec::new(),
    };
    client.produce("orders", Some(1), &[bad]).await.unwrap();

    // A topic whose oldest records are only in the archive.
    client
        .create_topic(&CreateTopic {
            name: "clicks".into(),
            partitions: 1,
            config: [
                ("segment_bytes".to_string(), serde_json::json!(4096)),
                ("retention_ms".to_string(), serde_json::json!(1)),
                ("archive".to_string(), serde_json::json!(true)),
            ]
            .into(),
        })
        .await
        .unwrap();
    let clicks: Vec<Record> = (0..800)
        .map(|n| Record {
            timestamp: 1_700_000_000_000 + n,
            key: None,
            value: Some(Bytes::from(format!("{{\"click\":{n}}}"))),
            headers: Vec::new(),
        })
        .collect();
    // In batches: a segment rolls between batches, never within one.
    for batch in clicks.chunks(20) {
        client.produce("clicks", Some(0), batch).await.unwrap();
    }
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    while client.describe_topic("clicks").await.unwrap().partitions[0].log_start_offset == 0 {
        assert!(
            std::time::Instant::now() < deadline,
            "retention never archived and deleted"
        );
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }

    let shots = repo().join("target/console-screenshots");
    let output = Command::new("node")
        .arg(repo().join("tests/console/drive.mjs"))
        .arg(&server.url)
        .arg(token(&server))
        .arg(&shots)
        .output()
        .expect("node runs (./scripts/test installs it, with Chromium and playwright-core)");
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        output.status.success(),
        "{stderr}\n{stdout}\nthe engine's log:\n{}",
        server.log()
    );
    eprintln!("console screenshots: {} ({stdout})", shots.display());
    let seen: serde_json::Value = serde_json::from_str(stdout.trim()).unwrap();
    assert_eq!(seen["lag"][0], ORDERS + 1, "the lag the page showed first");

    // What the page did, seen through the API.
    let described = client.describe_plugin("copy").await.unwrap();
    assert!(described.paused, "paused from the page: {described:#?}");
    assert_eq!(described.total_lag, 0);
    assert_eq!(described.processed_records, ORDERS);
    assert_eq!(
        described.dead_letters, 2,
        "dead-lettered, then replayed from the page"
    );
    for name in ["overview", "plugin", "topic"] {
        for width in [1280, 390] {
            let shot = shots.join(format!("{name}-{width}.png"));
            assert!(shot.exists(), "{}", shot.display());
        }
    }
}
