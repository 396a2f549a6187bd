//! The example consumers (examples/<language>/), each built from source by its own build
//! script (which installs its toolchain), deployed to the real binary and checked end to end:
//! the same orders give the same output records and state in every language, and a poison
//! record reaches the dead-letter topic with that language's own error message.
//!
//! `SLUICE_EXAMPLES=rust,python` limits the languages (default: all).

mod common;

use std::path::Path;
use std::process::Command;

use base64::Engine;
use bytes::Bytes;
use common::Server;
use common::plugins::{admin, create_topic, header, read_all, wait_for};
use sluice::log::Record;
use sluice::runtime::{DeploySpec, LimitOverrides, StartFrom};
use sluice::server::api::DeployRequest;

/// Each example's directory, and a phrase of its language's own JSON error for `not json`.
const EXAMPLES: [(&str, &str); 4] = [
    ("rust", "rust: invalid order: expected"),
    ("python", "python: invalid order: Expecting value"),
    ("js", "javascript: invalid order: JSON.parse"),
    ("c", "c: invalid order: not JSON at byte 0"),
];

const ORDERS: [&str; 8] = [
    r#"{"id":1,"customer":"alice","cents":1250}"#,
    r#"{"id":2,"customer":"bob","cents":500}"#,
    r#"{"id":3,"customer":"alice","cents":2500}"#,
    "not json",
    r#"{"id":4,"customer":"bob","cents":99}"#,
    r#"{"id":5,"cents":10}"#,
    r#"{"id":6,"customer":"zoë \"z\"","cents":0,"note":"extra fields are ignored"}"#,
    r#"{"id":7.0,"customer":"bob","cents":1e2}"#,
];

/// The job's specification for [`ORDERS`]: what every example emits (key, value)...
const EMITTED: [(&str, &str); 6] = [
    (
        "alice",
        r#"{"id":1,"customer":"alice","cents":1250,"total_cents":1250}"#,
    ),
    (
        "bob",
        r#"{"id":2,"customer":"bob","cents":500,"total_cents":500}"#,
    ),
    (
        "alice",
        r#"{"id":3,"customer":"alice","cents":2500,"total_cents":3750}"#,
    ),
    (
        "bob",
        r#"{"id":4,"customer":"bob","cents":99,"total_cents":599}"#,
    ),
    (
        "zoë \"z\"",
        r#"{"id":6,"customer":"zoë \"z\"","cents":0,"total_cents":0}"#,
    ),
    (
        "bob",
        r#"{"id":7,"customer":"bob","cents":100,"total_cents":699}"#,
    ),
];
/// ... the state it leaves (in key order), and the offsets it rejects as poison.
const STATE: [(&str, &str); 3] = [("alice", "3750"), ("bob", "699"), ("zoë \"z\"", "0")];
const POISON: [(u64, &str); 2] = [(3, "not json"), (5, "field `customer`")];

fn selected() -> Vec<(&'static str, &'static str)> {
    let only = std::env::var("SLUICE_EXAMPLES").ok();
    EXAMPLES
        .into_iter()
        .filter(|(name, _)| {
            only.as_deref()
                .is_none_or(|o| o.split(',').any(|s| s == *name))
        })
        .collect()
}

fn owned(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
    pairs
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

/// Runs the example's build script; returns the component it wrote.
fn build(example: &str) -> Vec<u8> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../examples")
        .join(example);
    let output = Command::new("bash")
        .arg(dir.join("build.sh"))
        .output()
        .unwrap();
    assert!(
        output.status.success(),
        "examples/{example}/build.sh failed:\n{}\n{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    std::fs::read(dir.join("target/order-totals.wasm")).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_language_builds_and_computes_the_same_totals() {
    let examples = selected();
    let components: Vec<Vec<u8>> = examples.iter().map(|(name, _)| build(name)).collect();
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(dir.path());
    let client = admin(&server);
    create_topic(&client, "orders", 1).await;
    let records: Vec<Record> = ORDERS
        .iter()
        .map(|order| Record {
            timestamp: 0,
            key: None,
            value: Bytes::from(*order),
            headers: Vec::new(),
        })
        .collect();
    client.produce("orders", Some(0), &records).await.unwrap();

    for ((name, _), wasm) in examples.iter().zip(&components) {
        let output = format!("enriched-{name}");
        create_topic(&client, &output, 1).await;
        let request = DeployRequest {
            spec: DeploySpec {
                topic: "orders".into(),
                output_topics: vec![output.clone()],
                config: [("output".to_string(), output.clone())].into(),
                from: Some(StartFrom::Earliest),
                limits: LimitOverrides::default(),
            },
            wasm_base64: base64::engine::general_purpose::STANDARD.encode(wasm),
        };
        client
            .deploy(&format!("totals-{name}"), &request)
            .await
            .unwrap();
    }

    for (name, mention) in &examples {
        let group = format!("totals-{name}");
        wait_for(&client, &group, "every order processed", |d| {
            d.total_lag == 0 && d.outbox_pending == 0 && d.dead_letters == POISON.len() as u64
        })
        .await;
        let emitted: Vec<(String, String)> = read_all(&client, &format!("enriched-{name}"))
            .await
            .iter()
            .map(|r| {
                let text = |b: &[u8]| String::from_utf8(b.to_vec()).unwrap();
                (text(r.key.as_deref().unwrap_or_default()), text(&r.value))
            })
            .collect();
        assert_eq!(emitted, owned(&EMITTED), "{name}");

        let state: Vec<(String, String)> = client
            .plugin_state(&group, "", None, 100)
            .await
            .unwrap()
            .entries
            .into_iter()
            .map(|e| (e.key.unwrap_or_default(), e.value.unwrap_or_default()))
            .collect();
        assert_eq!(state, owned(&STATE), "{name}");

        let letters = read_all(&client, &format!("{group}.dlq")).await;
        assert_eq!(letters.len(), POISON.len(), "{name}");
        for (letter, (offset, why)) in letters.iter().zip(POISON) {
            assert_eq!(
                header(letter, "sluice.dlq.offset"),
                Some(&*offset.to_string())
            );
            let error = header(letter, "sluice.dlq.error").unwrap();
            let expected = if offset == 3 { *mention } else { why };
            assert!(error.contains(expected), "{name}: {error}");
        }
    }
}
