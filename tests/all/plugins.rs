//! Plugin consumer groups against the real server: deploy while producing, upgrade and roll
//! back, misbehaving plugins kept apart, dead letters and their replay, the admin token, bad
//! uploads, and deployments surviving a restart. The plugins are the first-party ones in
//! plugins/, built for wasm32-wasip2 by ./scripts/test.

use std::collections::BTreeSet;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use crate::common::plugins::*;
use crate::common::{self, Server};
use base64::Engine;
use base64::engine::general_purpose::STANDARD as BASE64;
use sluice::cli::client::{Client, PluginAction, Position};
use sluice::log::Record;
use sluice::runtime::{LimitOverrides, StartFrom};
use sluice::server::api::DeployRequest;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_admin_api_refuses_a_wrong_or_missing_token_and_deploys_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(dir.path());
    let client = admin(&server);
    create_topic(&client, "in", 1).await;
    let deploy = request("identity", "in", &[], &[]);
    for anonymous in [
        Client::new(&server.url),
        Client::new(&server.url).with_token(Some("not-the-token".into())),
    ] {
        let error = anonymous.deploy("g", &deploy).await.unwrap_err();
        assert_eq!(status_of(&error), 401, "{error:#}");
        assert!(error.to_string().contains("token"), "{error:#}");
        let error = anonymous.list_plugins().await.unwrap_err();
        assert_eq!(status_of(&error), 401);
    }
    assert!(client.list_plugins().await.unwrap().plugins.is_empty());
    client.deploy("g", &deploy).await.unwrap();
    assert_eq!(client.list_plugins().await.unwrap().plugins.len(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_uploads_get_a_clear_error_and_change_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start_with(dir.path(), &[]);
    let client = admin(&server);
    create_topic(&client, "in", 1).await;
    create_topic(&client, "out", 1).await;
    let mut not_wasm = request("identity", "in", &[], &[]);
    not_wasm.wasm_base64 = BASE64.encode(b"#!/bin/sh\necho hello\n");
    let mut core_module = request("identity", "in", &[], &[]);
    core_module.wasm_base64 = BASE64.encode(b"\0asm\x01\0\0\0");
    let mut truncated = request("identity", "in", &[], &[]);
    let bytes = wasm("identity");
    truncated.wasm_base64 = BASE64.encode(&bytes[..bytes.len() / 2]);
    let cases: Vec<(&str, DeployRequest, u16, &str)> = vec![
        ("not wasm", not_wasm, 400, "not WebAssembly"),
        ("core module", core_module, 400, "not a component"),
        ("truncated", truncated, 400, "does not compile"),
        (
            "file system",
            request("uses_files", "in", &[], &[]),
            400,
            "wasi:filesystem",
        ),
        (
            "another world version",
            request("future_world", "in", &[], &[]),
            400,
            "sluice:plugin@0.1.x",
        ),
        (
            "bad config",
            request("filter", "in", &["out"], &[("output", "out")]),
            400,
            "missing setting `field`",
        ),
        (
            "missing output",
            request("identity", "in", &["nowhere"], &[]),
            404,
            "output topic `nowhere` does not exist",
        ),
        (
            "missing input",
            request("identity", "nothing", &[], &[]),
            404,
            "nothing",
        ),
    ];
    for (name, deploy, status, mention) in cases {
        let error = client.deploy("g", &deploy).await.unwrap_err();
        assert_eq!(status_of(&error), status, "{name}: {error:#}");
        assert!(error.to_string().contains(mention), "{name}: {error:#}");
    }
    // An interface of the right package and version that the world does not have is refused
    // when the upload is validated, naming the import, not when the host fails to link it.
    let error = client
        .deploy("g", &request("backdoor", "in", &[], &[]))
        .await
        .unwrap_err();
    let refused = error.server().expect("the server refused it");
    assert_eq!(refused.code, "invalid_plugin", "{error}");
    assert!(
        refused.message.contains("sluice:plugin/backdoor@0.1.0"),
        "{error}"
    );
    assert!(client.list_plugins().await.unwrap().plugins.is_empty());
    assert!(!dir.path().join("plugins/g").exists());
    drop(server);

    let dir = tempfile::tempdir().unwrap();
    let small = Server::start_with_env(dir.path(), &[("SLUICE_PLUGINS__MAX_UPLOAD_BYTES", "1000")]);
    let client = admin(&small);
    create_topic(&client, "in", 1).await;
    let error = client
        .deploy("g", &request("identity", "in", &[], &[]))
        .await
        .unwrap_err();
    assert_eq!(status_of(&error), 413, "{error:#}");
    assert!(error.to_string().contains("max_upload_bytes"), "{error:#}");
    assert!(client.list_plugins().await.unwrap().plugins.is_empty());
}

/// Deploys `map` while a producer runs, upgrades it twice and rolls back once: every input
/// record comes out exactly once, from exactly one version, and the versions take over in
/// the order deployed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deploy_while_producing_upgrade_twice_and_roll_back_once() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(dir.path());
    let client = admin(&server);
    create_topic(&client, "orders", 3).await;
    create_topic(&client, "slim", 2).await;

    let produced = Arc::new(AtomicU64::new(0));
    let stop = Arc::new(AtomicBool::new(false));
    let producer = {
        let (client, produced, stop) = (client.clone(), produced.clone(), stop.clone());
        tokio::spawn(async move {
            let mut next = 0u64;
            while !stop.load(Ordering::SeqCst) || next < 3_000 {
                let records: Vec<Record> = (next..next + 50)
                    .map(|id| {
                        record(
                            &format!("k{}", id % 17),
                            &format!(r#"{{"id": {id}, "pad": "x"}}"#),
                        )
                    })
                    .collect();
                client.produce("orders", None, &records).await.unwrap();
                next += 50;
                produced.store(next, Ordering::SeqCst);
            }
            next
        })
    };
    while produced.load(Ordering::SeqCst) < 500 {
        tokio::task::yield_now().await;
    }
    fn config(fields: &str) -> [(&str, &str); 2] {
        [("output", "slim"), ("fields", fields)]
    }
    let mut v1 = request("map", "orders", &["slim"], &config("id"));
    v1.spec.limits.batch_records = Some(40);
    client.deploy("g", &v1).await.unwrap();
    let seen = wait_for(&client, "g", "v1 at work", |d| {
        d.running_version == Some(1) && d.processed_records > 0
    })
    .await;
    client
        .deploy(
            "g",
            &request("map", "orders", &["slim"], &config("id:ident")),
        )
        .await
        .unwrap();
    let seen = wait_for(&client, "g", "v2 at work", |d| {
        d.running_version == Some(2) && d.processed_records > seen.processed_records
    })
    .await;
    client
        .deploy("g", &request("map", "orders", &["slim"], &config("id:key")))
        .await
        .unwrap();
    let seen = wait_for(&client, "g", "v3 at work", |d| {
        d.running_version == Some(3) && d.processed_records > seen.processed_records
    })
    .await;
    let rolled = client
        .plugin_action("g", PluginAction::Rollback, &Default::default())
        .await
        .unwrap();
    assert_eq!(rolled.active_version, 2);
    wait_for(&client, "g", "v2 again at work", |d| {
        d.running_version == Some(2) && d.processed_records > seen.processed_records
    })
    .await;
    stop.store(true, Ordering::SeqCst);
    let total = producer.await.unwrap();
    let done = wait_for(&client, "g", "everything processed", |d| {
        d.total_lag == 0 && d.outbox_pending == 0 && d.processed_records >= total
    })
    .await;
    assert_eq!(done.processed_records, total);
    assert_eq!(done.dead_letters, 0);

    // The versions in the order they ran: the rollback brought version 2 back after 3.
    const PHASES: [u32; 4] = [1, 2, 3, 2];
    let mut ids = BTreeSet::new();
    let mut phases_seen = BTreeSet::new();
    for partition in read_partitions(&client, "slim").await {
        let mut phase = 0;
        for out in &partition {
            let version: u32 = header(out, "sluice.plugin")
                .and_then(|h| h.strip_prefix("g/"))
                .and_then(|v| v.parse().ok())
                .expect("every output names its version");
            // Within an output partition, outputs are in processing order.
            phase = (phase..PHASES.len())
                .find(|&p| PHASES[p] == version)
                .unwrap_or_else(|| panic!("version {version} ran out of order"));
            phases_seen.insert(phase);
            let value: serde_json::Value = serde_json::from_slice(out.value_bytes()).unwrap();
            let field = ["id", "ident", "key"][version as usize - 1];
            let id = value[field]
                .as_u64()
                .unwrap_or_else(|| panic!("version {version} wrote {value}"));
            assert!(ids.insert(id), "record {id} came out twice");
            assert_eq!(header(out, "origin"), Some("test"), "headers are kept");
        }
    }
    assert_eq!(
        ids,
        (0..total).collect::<BTreeSet<_>>(),
        "every record came out once"
    );
    assert_eq!(
        phases_seen.len(),
        PHASES.len(),
        "every version did some of the work"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn misbehaving_plugins_fail_alone_and_their_bad_record_goes_to_the_dead_letter_topic() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(dir.path());
    let client = admin(&server);
    create_topic(&client, "in", 2).await;
    create_topic(&client, "out", 1).await;
    create_topic(&client, "copy", 1).await;
    let mut good = request(
        "router",
        "in",
        &["copy"],
        &[("field", "x"), ("default", "copy")],
    );
    good.spec.limits.batch_records = Some(5);
    client.deploy("good", &good).await.unwrap();
    let modes = [
        ("loop", "deadline"),
        ("memory", "memory"),
        ("recursion", "recursion"),
        ("trap", "is bad"),
        ("flood", "quota"),
    ];
    for (mode, _) in modes {
        let mut bad = request("misbehave", "in", &["out"], &[("mode", mode)]);
        bad.spec.limits = LimitOverrides {
            memory_mb: Some(64),
            deadline_ms: Some(300),
            max_emitted_records: Some(1_000),
            max_attempts: Some(2),
            retry_backoff_ms: Some(10),
            batch_records: Some(8),
            ..Default::default()
        };
        client.deploy(&format!("bad-{mode}"), &bad).await.unwrap();
    }
    let records: Vec<Record> = (0..30)
        .map(|i| {
            let value = if i == 17 {
                "bad".to_string()
            } else {
                format!("fine-{i}")
            };
            record(&format!("k{i}"), &value)
        })
        .collect();
    client.produce("in", Some(0), &records).await.unwrap();
    client.produce("in", Some(1), &records[..10]).await.unwrap();

    // Counters follow the commit: wait for both.
    wait_for(&client, "good", "all copied", |d| {
        d.total_lag == 0 && d.outbox_pending == 0 && d.processed_records == 40
    })
    .await;
    assert_eq!(read_all(&client, "copy").await.len(), 40);
    for (mode, mention) in modes {
        let group = format!("bad-{mode}");
        wait_for(&client, &group, "the bad record isolated", |d| {
            d.total_lag == 0
                && d.outbox_pending == 0
                && d.dead_letters == 1
                && d.processed_records == 39
        })
        .await;
        let letters = read_all(&client, &format!("{group}.dlq")).await;
        assert_eq!(letters.len(), 1, "{mode}");
        let letter = &letters[0];
        assert_eq!(letter.value_bytes(), b"bad");
        assert_eq!(letter.key.as_deref(), Some(&b"k17"[..]));
        assert_eq!(header(letter, "origin"), Some("test"));
        let error = header(letter, "sluice.dlq.error").unwrap();
        assert!(error.contains(mention), "{mode}: {error}");
        assert_eq!(header(letter, "sluice.dlq.topic"), Some("in"));
        assert_eq!(header(letter, "sluice.dlq.partition"), Some("0"));
        assert_eq!(header(letter, "sluice.dlq.offset"), Some("17"));
        assert_eq!(header(letter, "sluice.dlq.plugin-version"), Some("1"));
        let attempts: u32 = header(letter, "sluice.dlq.attempts")
            .unwrap()
            .parse()
            .unwrap();
        assert!(attempts >= 2, "{mode}: {attempts} attempts");
    }
    // Each bad group forwarded every good record once: a failed call's emits are dropped.
    let forwarded = read_all(&client, "out").await;
    assert_eq!(forwarded.len(), 39 * modes.len());
    let health = reqwest::get(format!("{}/v1/health", server.url))
        .await
        .unwrap();
    assert!(health.status().is_success());
}

/// A record the plugin rejects goes to the dead-letter topic; after a fixed version is
/// deployed, `dlq replay` puts it through again and it takes effect once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dead_letters_replay_through_a_fixed_version() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(dir.path());
    let client = admin(&server);
    create_topic(&client, "visits", 1).await;
    create_topic(&client, "counts", 1).await;
    let by_field = request(
        "counter",
        "visits",
        &["counts"],
        &[("output", "counts"), ("field", "user")],
    );
    client.deploy("c", &by_field).await.unwrap();
    let records = vec![
        record("ada", r#"{"user": "ada"}"#),
        record("bob", r#"{"name": "bob"}"#),
        record("ada", r#"{"user": "ada"}"#),
    ];
    client.produce("visits", None, &records).await.unwrap();
    let seen = wait_for(&client, "c", "the poison isolated", |d| {
        d.total_lag == 0 && d.outbox_pending == 0 && d.dead_letters == 1
    })
    .await;
    assert_eq!(seen.state_entries, 2, "count/ada and total");
    let by_key = request("counter", "visits", &["counts"], &[("output", "counts")]);
    client.deploy("c", &by_key).await.unwrap();
    let replay = client
        .plugin_action("c", PluginAction::ReplayDeadLetters, &Default::default())
        .await
        .unwrap();
    assert_eq!(replay.dlq_replay, Some((0, 1)));
    let done = wait_for(&client, "c", "the replay", |d| {
        d.dlq_replay == Some((1, 1)) && d.outbox_pending == 0
    })
    .await;
    assert_eq!(done.state_entries, 3, "count/ada, count/bob and total");
    let counts = read_all(&client, "counts").await;
    let values: Vec<String> = counts
        .iter()
        .map(|r| String::from_utf8_lossy(r.value_bytes()).into_owned())
        .collect();
    assert_eq!(
        values,
        [
            r#"{"count":1,"key":"ada"}"#,
            r#"{"count":2,"key":"ada"}"#,
            r#"{"count":1,"key":"bob"}"#
        ]
    );
    assert_eq!(header(&counts[2], "sluice.plugin"), Some("c/2"));
    assert_eq!(
        read_all(&client, "c.dlq").await.len(),
        1,
        "nothing failed again"
    );
}

/// Through the CLI: deploy, pause, resume, restart the engine; the deployment, its version,
/// its position and its state are all still there.
#[test]
fn deployments_survive_a_restart_and_the_cli_manages_them() {
    use crate::common::{cli, stdout};
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(dir.path());
    let url = server.url.clone();
    // The token stays the same across restarts: it is kept in the data directory.
    let admin_token = token(&server);
    let with_token = |args: &[&str]| -> Vec<String> {
        let mut all: Vec<String> = args.iter().map(|s| s.to_string()).collect();
        all.push("--token".into());
        all.push(admin_token.clone());
        all
    };
    let run = |url: &str, args: Vec<String>, input: &str| {
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        cli(url, &args, input)
    };
    stdout(&cli(&url, &["topic", "create", "visits"], ""));
    stdout(&cli(&url, &["topic", "create", "counts"], ""));
    let counter = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../plugins/target/wasm32-wasip2/release/counter.wasm");
    let deployed = stdout(&run(
        &url,
        with_token(&[
            "plugin",
            "deploy",
            "--group",
            "visits-per-user",
            "--topic",
            "visits",
            "--output-topic",
            "counts",
            "--wasm",
            counter.to_str().unwrap(),
            "--config",
            "output=counts",
            "--from",
            "earliest",
        ]),
        "",
    ));
    assert!(
        deployed.contains("deployed version 1 of group visits-per-user"),
        "{deployed}"
    );
    let unauthorized = cli(&url, &["plugin", "list", "--token", "wrong"], "");
    assert!(!unauthorized.status.success());
    assert!(String::from_utf8_lossy(&unauthorized.stderr).contains("401"));
    stdout(&cli(
        &url,
        &["produce", "visits", "--key-separator", ":"],
        "ada:1\nbob:2\nada:3\n",
    ));
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let client = admin(&server);
    runtime.block_on(wait_for(&client, "visits-per-user", "3 counted", |d| {
        d.total_lag == 0 && d.outbox_pending == 0
    }));
    stdout(&run(
        &url,
        with_token(&["plugin", "pause", "visits-per-user"]),
        "",
    ));
    runtime.block_on(wait_for(&client, "visits-per-user", "paused", |d| {
        d.status == "paused"
    }));
    stdout(&cli(
        &url,
        &["produce", "visits", "--key-separator", ":"],
        "ada:4\n",
    ));
    let described = stdout(&run(
        &url,
        with_token(&["plugin", "describe", "visits-per-user"]),
        "",
    ));
    assert!(described.contains("paused"), "{described}");
    assert!(described.contains("state: 3 entries"), "{described}");
    assert!(server.terminate(), "clean exit on SIGTERM");

    let server = Server::start(dir.path());
    let url = server.url.clone();
    let client = admin(&server);
    let listed = stdout(&run(&url, with_token(&["plugin", "list"]), ""));
    assert!(listed.contains("visits-per-user"), "{listed}");
    let paused = runtime
        .block_on(client.describe_plugin("visits-per-user"))
        .unwrap();
    assert!(paused.paused && paused.total_lag == 1, "{paused:#?}");
    stdout(&run(
        &url,
        with_token(&["plugin", "resume", "visits-per-user"]),
        "",
    ));
    runtime.block_on(wait_for(&client, "visits-per-user", "resumed", |d| {
        d.total_lag == 0 && d.outbox_pending == 0
    }));
    let counts = stdout(&cli(
        &url,
        &["consume", "counts", "--from-beginning", "-n", "4"],
        "",
    ));
    assert_eq!(
        counts.lines().collect::<Vec<_>>(),
        [
            r#"{"count":1,"key":"ada"}"#,
            r#"{"count":1,"key":"bob"}"#,
            r#"{"count":2,"key":"ada"}"#,
            r#"{"count":3,"key":"ada"}"#
        ],
        "counting continued after the restart"
    );
    let state = stdout(&run(
        &url,
        with_token(&["state", "get", "--group", "visits-per-user", "count/ada"]),
        "",
    ));
    assert_eq!(state.trim(), "3");
    let scanned = stdout(&run(
        &url,
        with_token(&[
            "state",
            "scan",
            "--group",
            "visits-per-user",
            "--prefix",
            "count/",
        ]),
        "",
    ));
    assert_eq!(scanned, "count/ada\t3\ncount/bob\t1\n");
    let logs = stdout(&run(
        &url,
        with_token(&["plugin", "logs", "visits-per-user"]),
        "",
    ));
    assert!(logs.contains("version 1 running"), "{logs}");
    stdout(&run(
        &url,
        with_token(&["plugin", "undeploy", "visits-per-user"]),
        "",
    ));
    let listed = stdout(&run(&url, with_token(&["plugin", "list"]), ""));
    assert!(!listed.contains("visits-per-user"), "{listed}");
}

/// `sluice plugin test` runs a plugin on a file of records with no server: emitted records,
/// poison and the state changes come out as JSON lines.
#[test]
fn plugin_test_runs_a_plugin_locally_and_prints_outputs_poison_and_state() {
    let dir = tempfile::tempdir().unwrap();
    let input = dir.path().join("visits.jsonl");
    std::fs::write(
        &input,
        concat!(
            r#"{"key": "a", "value": {"user": "ada"}}"#,
            "\n",
            r#"{"key": "b", "value": {"name": "nobody"}}"#,
            "\n",
            r#"{"key": "c", "value": "{\"user\": \"ada\"}"}"#,
            "\n",
        ),
    )
    .unwrap();
    let seed = dir.path().join("seed.json");
    std::fs::write(&seed, r#"{"count/ada": "40", "unrelated": "x"}"#).unwrap();
    let counter = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../plugins/target/wasm32-wasip2/release/counter.wasm");
    let output = common::cli(
        "http://127.0.0.1:1",
        &[
            "plugin",
            "test",
            "--wasm",
            counter.to_str().unwrap(),
            "--input",
            input.to_str().unwrap(),
            "--state",
            seed.to_str().unwrap(),
            "--config",
            "output=counts",
            "--config",
            "field=user",
        ],
        "",
    );
    let lines: Vec<serde_json::Value> = common::stdout(&output)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(lines.len(), 4, "{lines:#?}");
    assert_eq!(lines[0]["emit"]["topic"], "counts");
    assert_eq!(lines[0]["emit"]["value"], r#"{"count":41,"key":"ada"}"#);
    assert_eq!(lines[1]["poison"]["offset"], 1);
    assert_eq!(lines[2]["emit"]["value"], r#"{"count":42,"key":"ada"}"#);
    assert_eq!(
        lines[3]["state"],
        serde_json::json!({"count/ada": "42", "total": "2"})
    );
}

/// `--from` picks where a new group starts: the end at deploy time, an offset, or a time.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_new_group_starts_where_from_says() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(dir.path());
    let client = admin(&server);
    create_topic(&client, "in", 1).await;
    let mut old: Vec<Record> = (0..10).map(|i| record("k", &format!("old-{i}"))).collect();
    for (i, r) in old.iter_mut().enumerate() {
        r.timestamp = 1_000_000 + i as i64 * 1_000;
    }
    client.produce("in", Some(0), &old).await.unwrap();
    let cases = [
        ("latest", StartFrom::Latest, 10),
        ("offset", StartFrom::Offset(7), 7),
        ("past-the-end", StartFrom::Offset(99), 10),
        ("timestamp", StartFrom::Timestamp(1_004_500), 5),
        ("earliest", StartFrom::Earliest, 0),
    ];
    for (group, from, start) in cases {
        let mut deploy = request("identity", "in", &[], &[]);
        deploy.spec.from = Some(from);
        client.deploy(group, &deploy).await.unwrap();
        let d = wait_for(&client, group, "caught up", |d| {
            d.total_lag == 0 && d.outbox_pending == 0 && d.processed_records == 10 - start
        })
        .await;
        assert_eq!(d.partitions[0].committed, Some(10), "{group}");
    }
    client
        .produce("in", Some(0), &[record("k", "new")])
        .await
        .unwrap();
    for (group, _, start) in cases {
        wait_for(&client, group, "the new record", |d| {
            d.total_lag == 0 && d.outbox_pending == 0 && d.processed_records == 11 - start
        })
        .await;
    }
}

/// Every delivery mode processes and emits everything when nothing crashes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_delivery_mode_processes_every_record() {
    use sluice::runtime::Delivery;
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(dir.path());
    let client = admin(&server);
    create_topic(&client, "visits", 2).await;
    let modes = [
        ("exactly", Delivery::ExactlyOnce),
        ("at-least", Delivery::AtLeastOnce),
        ("at-most", Delivery::AtMostOnce),
    ];
    for (name, delivery) in modes {
        let output = format!("counts-{name}");
        create_topic(&client, &output, 1).await;
        let mut deploy = request("counter", "visits", &[&output], &[("output", &output)]);
        deploy.spec.limits.delivery = Some(delivery);
        deploy.spec.limits.batch_records = Some(7);
        client.deploy(name, &deploy).await.unwrap();
    }
    let records: Vec<Record> = (0..100)
        .map(|i| record(&format!("k{}", i % 3), "v"))
        .collect();
    client.produce("visits", None, &records).await.unwrap();
    for (name, delivery) in modes {
        let d = wait_for(&client, name, "all counted", |d| {
            d.total_lag == 0 && d.outbox_pending == 0 && d.processed_records == 100
        })
        .await;
        assert_eq!(d.limits.delivery, delivery);
        assert_eq!(d.state_entries, 4, "{name}: three keys and the total");
        assert_eq!(
            read_all(&client, &format!("counts-{name}")).await.len(),
            100,
            "{name}"
        );
    }
}

/// At-most-once commits a batch's position before the batch runs, so the lag is 0 while it
/// still runs: `in_progress_records` says so, and a client that waits for the lag, the outbox
/// and the records in progress sees every effect. Here the one-record batch loops to its
/// deadline on each of its attempts (seconds), then is dead-lettered.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_at_most_once_batch_is_in_progress_at_a_lag_of_0_until_its_effects_commit() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(dir.path());
    let client = admin(&server);
    create_topic(&client, "in", 1).await;
    create_topic(&client, "out", 1).await;
    let mut slow = request("misbehave", "in", &["out"], &[("mode", "loop")]);
    slow.spec.limits = LimitOverrides {
        delivery: Some(sluice::runtime::Delivery::AtMostOnce),
        deadline_ms: Some(1_000),
        max_attempts: Some(3),
        retry_backoff_ms: Some(10),
        ..Default::default()
    };
    client.deploy("slow", &slow).await.unwrap();
    client
        .produce("in", Some(0), &[record("k", "bad")])
        .await
        .unwrap();
    // Its position commits first: the lag is 0 while the batch runs.
    let running = wait_for(&client, "slow", "the batch taken", |d| {
        d.total_lag == 0 && d.in_progress_records > 0
    })
    .await;
    assert_eq!(running.in_progress_records, 1);
    assert_eq!(running.dead_letters, 0);
    let done = wait_for(&client, "slow", "every effect visible", |d| {
        d.total_lag == 0 && d.outbox_pending == 0 && d.in_progress_records == 0
    })
    .await;
    assert_eq!(done.dead_letters, 1);
    assert_eq!(read_all(&client, "slow.dlq").await.len(), 1);
    assert!(read_all(&client, "out").await.is_empty());
}

/// A batch of 100,000 records that are all poison: the poison search is a loop over a stack
/// of ranges, so it dead-letters every one in bounded stack space (recursion one level per
/// record would overflow the worker's stack), once each, in offset order, and the group
/// stays healthy for the next record.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_batch_of_100_000_poison_records_dead_letters_each_once_without_recursion() {
    const RECORDS: u64 = 100_000;
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(dir.path());
    let client = admin(&server);
    create_topic(&client, "in", 1).await;
    create_topic(&client, "out", 1).await;
    // One produce request: one stored batch, read by the worker as one batch.
    let records: Vec<Record> = (0..RECORDS)
        .map(|i| record(&format!("k{i}"), "bad"))
        .collect();
    client.produce("in", Some(0), &records).await.unwrap();
    let mut poisoned = request("misbehave", "in", &["out"], &[("mode", "poison")]);
    poisoned.spec.limits.batch_records = Some(RECORDS as u32);
    client.deploy("poisoned", &poisoned).await.unwrap();
    let described = wait_for(&client, "poisoned", "every record dead-lettered", |d| {
        d.total_lag == 0 && d.outbox_pending == 0 && d.dead_letters == RECORDS
    })
    .await;
    assert_eq!(described.processed_records, 0);
    let letters = read_all(&client, "poisoned.dlq").await;
    assert_eq!(letters.len() as u64, RECORDS);
    for (i, letter) in letters.iter().enumerate() {
        assert_eq!(header(letter, "sluice.dlq.offset"), Some(&*i.to_string()));
        assert_eq!(letter.key.as_deref(), Some(format!("k{i}").as_bytes()));
    }
    // Still running: a good record after them goes through.
    client
        .produce("in", Some(0), &[record("fine", "good")])
        .await
        .unwrap();
    wait_for(&client, "poisoned", "the good record forwarded", |d| {
        d.total_lag == 0 && d.outbox_pending == 0 && d.processed_records == 1
    })
    .await;
    let forwarded = read_all(&client, "out").await;
    assert_eq!(forwarded.len(), 1);
    assert_eq!(forwarded[0].value_bytes(), b"good");
}

/// An engine-side failure (here a deleted output topic) is retried after 1 s, doubling while
/// it lasts, as docs/plugins.md says: reloading the group is not progress and does not reset
/// the backoff. The group's log says when it retries next.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_engine_failure_backs_off_doubling_while_it_lasts() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(dir.path());
    let client = admin(&server);
    create_topic(&client, "in", 1).await;
    create_topic(&client, "out", 1).await;
    let forward = request("misbehave", "in", &["out"], &[("mode", "trap")]);
    client.deploy("stuck", &forward).await.unwrap();
    client.delete_topic("out").await.unwrap();
    client
        .produce("in", Some(0), &[record("k", "fine")])
        .await
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(60);
    let waits = loop {
        let lines = client.plugin_logs("stuck", 100).await.unwrap().lines;
        let waits: Vec<String> = lines
            .iter()
            .filter_map(|line| line.message.rsplit_once("; retrying in "))
            .map(|(_, wait)| wait.to_string())
            .collect();
        if waits.len() >= 3 {
            break waits;
        }
        assert!(
            Instant::now() < deadline,
            "three retries not seen: {lines:#?}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert_eq!(waits[..3], ["1s", "2s", "4s"], "{waits:?}");
    let described = client.describe_plugin("stuck").await.unwrap();
    assert!(
        described.status.starts_with("failing: "),
        "{}",
        described.status
    );
    assert!(described.status.contains("out"), "{}", described.status);
}

/// A group's state cannot grow past `max_state_bytes`: a batch that would grow it fails with
/// a clear reason, its records end as dead letters (replayable once the limit is raised),
/// and the group goes on; the limit shows in `plugin describe`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn state_stops_growing_at_max_state_bytes() {
    const LIMIT_BYTES: u64 = 2_000;
    const KEYS: usize = 200;
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(dir.path());
    let client = admin(&server);
    create_topic(&client, "in", 1).await;
    create_topic(&client, "counts", 1).await;
    let mut counter = request("counter", "in", &["counts"], &[("output", "counts")]);
    counter.spec.limits.max_state_bytes = Some(LIMIT_BYTES);
    counter.spec.limits.max_attempts = Some(1);
    counter.spec.limits.batch_records = Some(10);
    let deployed = client.deploy("capped", &counter).await.unwrap();
    assert_eq!(deployed.limits.max_state_bytes, LIMIT_BYTES);
    let records: Vec<Record> = (0..KEYS)
        .map(|i| record(&format!("user-{i:04}"), "{}"))
        .collect();
    client.produce("in", Some(0), &records).await.unwrap();
    let done = wait_for(
        &client,
        "capped",
        "every record counted or dead-lettered",
        |d| d.total_lag == 0 && d.outbox_pending == 0,
    )
    .await;
    assert!(
        done.instance_memory_bytes > 0,
        "describe shows the instance's memory"
    );
    assert!(
        done.state_bytes <= LIMIT_BYTES,
        "state of {} bytes, over the limit of {LIMIT_BYTES}",
        done.state_bytes
    );
    let counted = read_all(&client, "counts").await.len() as u64;
    assert!(counted > 0, "records were counted until the state was full");
    assert_eq!(counted + done.dead_letters, KEYS as u64, "none lost");
    let letters = read_all(&client, "capped.dlq").await;
    assert_eq!(letters.len() as u64, done.dead_letters);
    let error = header(&letters[0], "sluice.dlq.error").unwrap();
    assert!(error.contains("max_state_bytes"), "{error}");
}

/// A plugin's output obeys its output topic: a record over the topic's `max_record_bytes` fails
/// the batch and its input is dead-lettered with the reason; what is emitted is stored in
/// batches of at most 1 MiB, so a small fetch of the output topic returns little.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn plugin_output_obeys_the_output_topics_limits() {
    const BIG_BYTES: usize = 2 << 20;
    const MEDIUM_BYTES: usize = 200 << 10;
    const MEDIUM: usize = 20;
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(dir.path());
    let client = admin(&server);
    client
        .create_topic(&sluice::server::api::CreateTopic {
            name: "in".into(),
            partitions: 1,
            config: [("max_record_bytes".to_string(), (4u64 << 20).into())].into(),
        })
        .await
        .unwrap();
    create_topic(&client, "out", 1).await;
    let mut forward = request("misbehave", "in", &["out"], &[("mode", "trap")]);
    forward.spec.limits.max_attempts = Some(1);
    client.deploy("forward", &forward).await.unwrap();

    let big = record("big", &"b".repeat(BIG_BYTES));
    client.produce("in", Some(0), &[big]).await.unwrap();
    let medium: Vec<Record> = (0..MEDIUM)
        .map(|i| record(&format!("m{i}"), &"m".repeat(MEDIUM_BYTES)))
        .collect();
    client.produce("in", Some(0), &medium).await.unwrap();
    let done = wait_for(&client, "forward", "all forwarded or dead-lettered", |d| {
        d.total_lag == 0 && d.outbox_pending == 0
    })
    .await;
    assert_eq!(done.dead_letters, 1, "the record too large for `out`");
    let letters = read_all(&client, "forward.dlq").await;
    assert_eq!(letters[0].key.as_deref(), Some(&b"big"[..]));
    let error = header(&letters[0], "sluice.dlq.error").unwrap();
    assert!(error.contains("max_record_bytes"), "{error}");

    let forwarded = read_all(&client, "out").await;
    assert_eq!(
        forwarded.len(),
        MEDIUM,
        "every medium record forwarded once"
    );
    let small = client
        .fetch("out", 0, Position::Offset(0), 1_000, 0)
        .await
        .unwrap();
    let fetched_bytes: usize = small
        .records
        .iter()
        .map(|(_, r)| r.value_bytes().len())
        .sum();
    assert!(
        !small.records.is_empty() && fetched_bytes <= 1 << 20,
        "a fetch of 1,000 bytes returned {} records, {fetched_bytes} bytes",
        small.records.len()
    );
}
