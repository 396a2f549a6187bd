//! Consumers in every language, built from source with `sluice plugin build` (which installs
//! the language's toolchain):
//! - the examples (examples/<language>/), deployed to the real binary and checked end to end:
//!   the same orders give the same output records and state in every language, and a poison
//!   record reaches the dead-letter topic with that language's own error message;
//! - the templates of `sluice plugin new`, which must build and pass their own test as
//!   generated.
//!
//! `SLUICE_EXAMPLES=rust,python` limits the languages (default: all).

use std::path::Path;
use std::process::Command;

use crate::common::plugins::{admin, create_topic, header, read_all, wait_for};
use crate::common::{self, Server};
use base64::Engine;
use bytes::Bytes;
use sluice::cli::client::Client;
use sluice::log::Record;
use sluice::runtime::{DeploySpec, LimitOverrides, StartFrom};
use sluice::server::api::DeployRequest;

/// Each example's directory, and a phrase of its language's own JSON error for `not json`.
const EXAMPLES: [(&str, &str); 5] = [
    ("rust", "rust: invalid order: expected"),
    ("python", "python: invalid order: Expecting value"),
    ("js", "javascript: invalid order: JSON.parse"),
    ("c", "c: invalid order: not JSON at byte 0"),
    ("go", "go: invalid order: invalid character"),
];

/// The languages `sluice plugin new` has a template for.
const TEMPLATES: [&str; 5] = ["rust", "python", "js", "c", "go"];

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

/// Runs `sluice` with `args`, asserting that it succeeds; returns its output.
fn sluice(args: &[&str], envs: &[(&str, &Path)]) -> std::process::Output {
    let output = Command::new(common::BIN)
        .args(args)
        .envs(envs.iter().copied())
        .output()
        .unwrap();
    assert!(
        output.status.success(),
        "sluice {} failed:\n{}\n{}",
        args.join(" "),
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    output
}

/// `sluice plugin build` writes into the example's own `target/`: two tests building the same
/// example at once would read each other's half-written component, so builds take turns.
static BUILDING: std::sync::Mutex<()> = std::sync::Mutex::new(());

/// Builds the example with `sluice plugin build`; returns the component it wrote.
fn build(example: &str) -> Vec<u8> {
    let _one_at_a_time = BUILDING
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner());
    let dir = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../examples")
        .join(example);
    sluice(&["plugin", "build", dir.to_str().unwrap()], &[]);
    std::fs::read(dir.join(format!("target/{example}.wasm"))).unwrap()
}

#[test]
fn every_template_builds_and_passes_its_own_test() {
    let parent = tempfile::tempdir().unwrap();
    // The Rust template's dependencies, built once across runs rather than per temporary
    // directory.
    let cargo_target = Path::new(env!("CARGO_TARGET_TMPDIR")).join("plugin-templates");
    for (language, _) in selected()
        .into_iter()
        .filter(|(l, _)| TEMPLATES.contains(l))
    {
        let name = format!("counter-{language}");
        let dir = parent.path().join(&name);
        let parent_arg = parent.path().to_str().unwrap();
        sluice(
            &[
                "plugin", "new", "--lang", language, "--parent", parent_arg, &name,
            ],
            &[],
        );
        sluice(
            &["plugin", "build", dir.to_str().unwrap()],
            &[("CARGO_TARGET_DIR", &cargo_target)],
        );
        let wasm = dir.join(format!("target/{name}.wasm"));
        let test = |expected: &Path| {
            Command::new(common::BIN)
                .args(["plugin", "test", "--wasm", wasm.to_str().unwrap()])
                .args(["--input", dir.join("test/input.jsonl").to_str().unwrap()])
                .args(["--expect", expected.to_str().unwrap()])
                .output()
                .unwrap()
        };
        let passed = test(&dir.join("test/expected.jsonl"));
        assert!(
            passed.status.success(),
            "{language}: {}",
            String::from_utf8_lossy(&passed.stderr)
        );

        // The test can fail: a count one off is named as a difference.
        let wrong = parent.path().join(format!("{language}-wrong.jsonl"));
        let expected = std::fs::read_to_string(dir.join("test/expected.jsonl")).unwrap();
        std::fs::write(
            &wrong,
            expected.replacen(r#""value":"2""#, r#""value":"3""#, 1),
        )
        .unwrap();
        // The second test of the unchanged component loads its compiled code from the cache.
        let started = std::time::Instant::now();
        let failed = test(&wrong);
        let second = started.elapsed();
        eprintln!("{language}: a second `plugin test` took {second:?}");
        assert!(
            second < std::time::Duration::from_secs(2),
            "{language}: a second `plugin test` of the same component took {second:?}"
        );
        assert!(!failed.status.success(), "{language}");
        let error = String::from_utf8_lossy(&failed.stderr);
        assert!(
            error.contains("line 3 of the output differs"),
            "{language}: {error}"
        );
    }
}

fn orders(values: &[&str]) -> Vec<Record> {
    values
        .iter()
        .map(|order| Record {
            timestamp: 0,
            key: None,
            value: Some(Bytes::copy_from_slice(order.as_bytes())),
            headers: Vec::new(),
        })
        .collect()
}

/// Starts the engine on `dir` with the topic `orders` holding [`ORDERS`].
async fn start_with_orders(dir: &Path) -> (Server, Client) {
    let server = Server::start(dir);
    let client = admin(&server);
    create_topic(&client, "orders", 1).await;
    client
        .produce("orders", Some(0), &orders(&ORDERS))
        .await
        .unwrap();
    (server, client)
}

/// Deploys an example as the group `totals-<name>` of `orders`, emitting to
/// `enriched-<name>` (which it creates).
async fn deploy(client: &Client, name: &str, wasm: &[u8]) {
    let output = format!("enriched-{name}");
    create_topic(client, &output, 1).await;
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

/// Waits until the example's group has processed every order of `orders`.
async fn caught_up(client: &Client, name: &str) {
    wait_for(
        client,
        &format!("totals-{name}"),
        "every order processed",
        |d| d.total_lag == 0 && d.outbox_pending == 0,
    )
    .await;
}

/// The compiled-code cache: each file with its modification time.
fn compiled_cache(data_dir: &Path) -> Vec<(std::ffi::OsString, std::time::SystemTime)> {
    let mut files: Vec<_> = std::fs::read_dir(data_dir.join("plugins/.compiled"))
        .unwrap()
        .map(|entry| {
            let entry = entry.unwrap();
            (
                entry.file_name(),
                entry.metadata().unwrap().modified().unwrap(),
            )
        })
        .collect();
    files.sort();
    files
}

/// Python and JavaScript components embed an interpreter: compiling one takes seconds. The
/// engine compiles on a blocking thread, so other groups go on processing and requests go on
/// being answered meanwhile; and the compiled code is cached, so a restart does not compile
/// again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_big_component_compiles_off_the_hot_path_and_restarts_from_the_cache() {
    let selected = selected();
    let big = selected.iter().find(|(n, _)| ["python", "js"].contains(n));
    let small = selected.iter().find(|(n, _)| ["c", "rust"].contains(n));
    let (Some((big, _)), Some((small, _))) = (big, small) else {
        eprintln!("skipped: needs python or js, and c or rust, in SLUICE_EXAMPLES");
        return;
    };
    let (big_wasm, small_wasm) = (build(big), build(small));
    let dir = tempfile::tempdir().unwrap();
    let (server, client) = start_with_orders(dir.path()).await;
    deploy(&client, small, &small_wasm).await;
    caught_up(&client, small).await;

    let deploying = tokio::spawn({
        let (client, big) = (client.clone(), big.to_string());
        async move { deploy(&client, &big, &big_wasm).await }
    });
    // While the big component compiles: orders produced are processed by the small group
    // and every request is answered. Counted are the rounds that finished before the deploy.
    let mut rounds_during_deploy = 0;
    while !deploying.is_finished() {
        client
            .produce("orders", Some(0), &orders(&[ORDERS[0]]))
            .await
            .unwrap();
        caught_up(&client, small).await;
        if !deploying.is_finished() {
            rounds_during_deploy += 1;
        }
    }
    deploying.await.unwrap();
    eprintln!("{rounds_during_deploy} orders processed while {big} compiled");
    assert!(
        rounds_during_deploy >= 2,
        "only {rounds_during_deploy} orders were processed while {big} compiled"
    );
    caught_up(&client, big).await;
    let processed = read_all(&client, &format!("enriched-{big}")).await.len();

    let cache = compiled_cache(dir.path());
    assert_eq!(cache.len(), 2, "one compiled file per component: {cache:?}");
    assert!(server.terminate());
    let server = Server::start(dir.path());
    let client = admin(&server);
    client
        .produce("orders", Some(0), &orders(&[ORDERS[0]]))
        .await
        .unwrap();
    caught_up(&client, big).await;
    let after = read_all(&client, &format!("enriched-{big}")).await.len();
    assert_eq!(after, processed + 1, "{big} after the restart");
    assert_eq!(
        compiled_cache(dir.path()),
        cache,
        "the restart loaded the compiled code, it did not compile again"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_language_builds_and_computes_the_same_totals() {
    let examples = selected();
    let components: Vec<Vec<u8>> = examples.iter().map(|(name, _)| build(name)).collect();
    let dir = tempfile::tempdir().unwrap();
    let (_server, client) = start_with_orders(dir.path()).await;

    for ((name, _), wasm) in examples.iter().zip(&components) {
        deploy(&client, name, wasm).await;
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
                (
                    text(r.key.as_deref().unwrap_or_default()),
                    text(r.value_bytes()),
                )
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

/// componentize-py 0.25 keeps the arguments of every import call, so a Python consumer's
/// linear memory grows with what it emits (about 85 bytes a record). The engine replaces an
/// instance whose memory grew past `recycle_growth_mb` with a fresh one between batches:
/// over 2,000,000 records (`SLUICE_MEMORY_RECORDS` for more) the Python example's memory
/// stays under 64 MiB, no call fails, and every total is right.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_python_consumer_stays_flat_in_memory_over_millions_of_records() {
    const CUSTOMERS: u64 = 1_000;
    const PRODUCE_RECORDS_MAX: u64 = 20_000;
    const MEMORY_BYTES_MAX: u64 = 64 << 20;
    if !selected().iter().any(|(name, _)| *name == "python") {
        eprintln!("skipped: needs python in SLUICE_EXAMPLES");
        return;
    }
    let records: u64 = std::env::var("SLUICE_MEMORY_RECORDS")
        .ok()
        .and_then(|n| n.parse().ok())
        .unwrap_or(2_000_000);
    let wasm = build("python");
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(dir.path());
    let client = admin(&server);
    create_topic(&client, "orders", 1).await;
    let order = |i: u64| {
        let customer = i % CUSTOMERS;
        format!(
            r#"{{"id":{i},"customer":"c{customer}","cents":{}}}"#,
            i % 97
        )
    };
    let mut produced = 0;
    while produced < records {
        let end = (produced + PRODUCE_RECORDS_MAX).min(records);
        let values: Vec<String> = (produced..end).map(order).collect();
        let values: Vec<&str> = values.iter().map(String::as_str).collect();
        client
            .produce("orders", Some(0), &orders(&values))
            .await
            .unwrap();
        produced = end;
    }
    deploy(&client, "python", &wasm).await;

    // Sampled while the group works through the records: the most memory seen.
    let group = "totals-python";
    let mut most_memory_bytes = 0;
    let mut sampling = tokio::time::interval(std::time::Duration::from_millis(100));
    let started = std::time::Instant::now();
    let done = loop {
        sampling.tick().await;
        let d = client.describe_plugin(group).await.unwrap();
        most_memory_bytes = most_memory_bytes.max(d.instance_memory_bytes);
        assert_eq!(d.failed_calls, 0, "a call failed: {:?}", d.last_error);
        if d.processed_records >= records && d.total_lag == 0 && d.outbox_pending == 0 {
            break d;
        }
        assert!(
            started.elapsed() < std::time::Duration::from_secs(1_800),
            "gave up after 30 minutes: {d:#?}"
        );
    };
    let rate = records as f64 / started.elapsed().as_secs_f64();
    eprintln!(
        "{records} records at {rate:.0}/s: at most {:.1} MiB of linear memory, {} recycles",
        most_memory_bytes as f64 / (1 << 20) as f64,
        done.instance_recycles
    );
    assert!(
        most_memory_bytes < MEMORY_BYTES_MAX,
        "the instance's memory reached {most_memory_bytes} bytes"
    );
    assert!(done.instance_recycles >= 1, "never recycled: {done:#?}");
    assert_eq!(done.processed_records, records);
    assert_eq!(done.dead_letters, 0);
    let logs = client.plugin_logs(group, 1_000).await.unwrap();
    assert!(
        !format!("{logs:?}").contains("trapped"),
        "an instance trapped: {logs:?}"
    );
    // Customer c0's total: the cents of orders 0, 1000, 2000, ...
    let scan = client.plugin_state(group, "c0", None, 1).await.unwrap();
    let expected: u64 = (0..records)
        .step_by(CUSTOMERS as usize)
        .map(|i| i % 97)
        .sum();
    assert_eq!(scan.entries[0].key.as_deref(), Some("c0"));
    assert_eq!(
        scan.entries[0].value.as_deref(),
        Some(expected.to_string().as_str())
    );
}
