//! The web console in a real browser: tests/console/drive.mjs drives Debian's headless
//! Chromium (playwright-core, no browser download) through the console of a running engine
//! set up here, and checks what the page shows; this test then checks through the API that
//! what the page did took effect. Screenshots go to target/console-screenshots/.

use std::path::PathBuf;
use std::process::Command;

use bytes::Bytes;
use sluice::log::Record;

use crate::common::Server;
use crate::common::plugins::{admin, paused_trap_group, token};

const ORDERS: u64 = 200;

fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_console_shows_lag_acts_on_a_plugin_group_and_browses_records_in_chromium() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(dir.path());
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
