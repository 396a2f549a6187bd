//! `GET /metrics` as Prometheus reads it: produce, fetch, commit, deploy a plugin, archive, and
//! check that each counter, gauge and lag moved by exactly what was done.

use bytes::Bytes;
use sluice::cli::client::{Client, PluginAction, Position};
use sluice::log::Record;
use sluice::server::api::{CommitRequest, CreateTopic, RollbackRequest};
use std::collections::BTreeMap;

use crate::common::plugins::{admin, create_topic, request, wait_for};
use crate::common::{Server, cli, stdout};

/// Age given to the produced records, so their lag in seconds is known.
const RECORD_AGE_SECONDS: i64 = 3_600;

/// A series (name and labels) and the value it should have.
type Expected<'a> = (&'a str, &'a [(&'a str, &'a str)], f64);

/// Samples of an exposition by series, `name{label="value",...}` with the labels sorted by
/// name (as Prometheus identifies a series), and the families' types.
struct Scrape {
    samples: BTreeMap<String, f64>,
    types: BTreeMap<String, String>,
    text: String,
}

impl Scrape {
    async fn of(client: &Client) -> Scrape {
        let response = reqwest::get(format!("{}/metrics", client.url()))
            .await
            .unwrap();
        let content_type = response.headers()["content-type"].to_str().unwrap();
        assert!(
            content_type.starts_with("text/plain; version=0.0.4"),
            "{content_type}"
        );
        let text = response.text().await.unwrap();
        let (mut samples, mut types) = (BTreeMap::new(), BTreeMap::new());
        for line in text.lines() {
            if let Some(rest) = line.strip_prefix("# TYPE ") {
                let (name, kind) = rest.split_once(' ').unwrap();
                let earlier = types.insert(name.to_string(), kind.to_string());
                assert!(earlier.is_none(), "{name} is described twice:\n{text}");
                continue;
            }
            if line.starts_with('#') || line.is_empty() {
                continue;
            }
            let (series, value) = line.rsplit_once(' ').unwrap();
            let value: f64 = value.parse().unwrap_or_else(|_| panic!("{line}"));
            samples.insert(normalized(series), value);
        }
        Scrape {
            samples,
            types,
            text,
        }
    }

    /// The sample of `name` with `labels`; panics naming what is there when absent.
    fn get(&self, name: &str, labels: &[(&str, &str)]) -> f64 {
        let key = key(name, labels);
        match self.samples.get(&key) {
            Some(value) => *value,
            None => panic!("no {key} in:\n{}", self.text),
        }
    }

    /// Each (name, labels, value) holds; all that do not are named at once.
    fn expect(&self, expected: &[Expected<'_>]) {
        let wrong: Vec<String> = expected
            .iter()
            .filter(|(name, labels, value)| self.get(name, labels) != *value)
            .map(|(name, labels, value)| {
                format!(
                    "{}: {} (expected {value})",
                    key(name, labels),
                    self.get(name, labels)
                )
            })
            .collect();
        assert!(wrong.is_empty(), "{}\nin:\n{}", wrong.join("\n"), self.text);
    }

    fn has(&self, name: &str, labels: &[(&str, &str)]) -> bool {
        self.samples.contains_key(&key(name, labels))
    }
}

fn key(name: &str, labels: &[(&str, &str)]) -> String {
    let mut labels = labels.to_vec();
    labels.sort();
    let labels: Vec<String> = labels.iter().map(|(k, v)| format!("{k}=\"{v}\"")).collect();
    match labels.is_empty() {
        true => name.to_string(),
        false => format!("{name}{{{}}}", labels.join(",")),
    }
}

/// `name{b="1",a="2"}` with its labels sorted: `name{a="2",b="1"}`.
fn normalized(series: &str) -> String {
    let Some((name, labels)) = series.split_once('{') else {
        return series.to_string();
    };
    let labels = labels.trim_end_matches('}');
    let mut pairs: Vec<(&str, &str)> = labels
        .split("\",")
        .map(|pair| {
            let (k, v) = pair.split_once('=').unwrap();
            (k, v.trim_matches('"'))
        })
        .collect();
    pairs.sort();
    key(name, &pairs)
}

fn aged_records(count: usize, now_ms: i64) -> Vec<Record> {
    (0..count)
        .map(|i| Record {
            timestamp: now_ms - RECORD_AGE_SECONDS * 1000,
            key: Some(Bytes::from(format!("k{i}"))),
            value: Some(Bytes::from(format!("{{\"n\":{i}}}"))),
            headers: Vec::new(),
        })
        .collect()
}

fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as i64
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_metric_moves_by_what_was_done() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(dir.path());
    let client = admin(&server);
    create_topic(&client, "in", 2).await;
    create_topic(&client, "out", 1).await;
    let before = Scrape::of(&client).await;
    let p0 = [("topic", "in"), ("partition", "0")];
    let p1 = [("topic", "in"), ("partition", "1")];
    assert_eq!(
        before.get("sluice_partition_produced_records_total", &p0),
        0.0
    );

    // Produce: 100 records to partition 0 in 4 requests, 50 to partition 1 in one.
    let now = now_ms();
    for _ in 0..4 {
        client
            .produce("in", Some(0), &aged_records(25, now))
            .await
            .unwrap();
    }
    client
        .produce("in", Some(1), &aged_records(50, now))
        .await
        .unwrap();
    // Fetch partition 0 from offset 10: 90 records handed out.
    let fetched = client
        .fetch("in", 0, Position::Offset(10), 1 << 20, 0)
        .await
        .unwrap();
    assert_eq!(fetched.records.len(), 90);
    // A consumer group commits 30 on partition 0 and nothing on partition 1.
    client
        .commit(
            "readers",
            &CommitRequest {
                member_id: None,
                generation: None,
                offsets: vec![sluice::groups::CommittedOffset {
                    topic: "in".into(),
                    partition: 0,
                    offset: 30,
                }],
            },
        )
        .await
        .unwrap();

    let after = Scrape::of(&client).await;
    assert_eq!(
        after.types["sluice_partition_produced_records_total"],
        "counter"
    );
    after.expect(&[
        ("sluice_partition_produced_records_total", &p0, 100.0),
        ("sluice_partition_produced_records_total", &p1, 50.0),
    ]);
    assert!(after.get("sluice_partition_produced_bytes_total", &p0) > 100.0 * 8.0);
    after.expect(&[
        ("sluice_partition_fetched_records_total", &p0, 90.0),
        ("sluice_partition_fetched_records_total", &p1, 0.0),
        ("sluice_partition_high_watermark", &p0, 100.0),
        ("sluice_partition_log_start_offset", &p0, 0.0),
    ]);
    assert!(after.get("sluice_partition_fsyncs_total", &p0) >= 1.0);
    assert!(after.get("sluice_fsync_duration_seconds_count", &[]) >= 1.0);
    assert_eq!(after.get("sluice_produced_records_total", &[]), 150.0);
    let produce_route = [
        ("route", "/v1/topics/{topic}/records"),
        ("method", "POST"),
        ("status", "200"),
    ];
    assert_eq!(
        after.get("sluice_http_request_duration_seconds_count", &produce_route)
            - before
                .samples
                .get(&key(
                    "sluice_http_request_duration_seconds_count",
                    &produce_route
                ))
                .copied()
                .unwrap_or(0.0),
        5.0
    );

    // The consumer group: committed on partition 0, lag from the log start on partition 1.
    let g0 = [
        ("group", "readers"),
        ("kind", "consumer"),
        ("topic", "in"),
        ("partition", "0"),
    ];
    let g1 = [
        ("group", "readers"),
        ("kind", "consumer"),
        ("topic", "in"),
        ("partition", "1"),
    ];
    assert_eq!(after.get("sluice_group_committed_offset", &g0), 30.0);
    assert!(!after.has("sluice_group_committed_offset", &g1));
    after.expect(&[
        ("sluice_group_lag_records", &g0, 70.0),
        ("sluice_group_lag_records", &g1, 50.0),
    ]);
    let age = after.get("sluice_group_lag_seconds", &g0);
    let slack = 120.0;
    assert!(
        (RECORD_AGE_SECONDS as f64..RECORD_AGE_SECONDS as f64 + slack).contains(&age),
        "lag of {age} s"
    );

    // A plugin group deployed paused lags by everything; resumed, it catches up to 0.
    let mut deploy = request("misbehave", "in", &["out"], &[("mode", "trap")]);
    deploy.spec.limits.batch_records = Some(10);
    client.deploy("copy", &deploy).await.unwrap();
    client
        .plugin_action("copy", PluginAction::Pause, &RollbackRequest::default())
        .await
        .unwrap();
    // Paused, and what it processed before the pause committed.
    wait_for(&client, "copy", "paused", |d| {
        d.status == "paused" && d.total_lag + d.processed_records == 150
    })
    .await;
    let paused = Scrape::of(&client).await;
    let c0 = [
        ("group", "copy"),
        ("kind", "plugin"),
        ("topic", "in"),
        ("partition", "0"),
    ];
    let c1 = [
        ("group", "copy"),
        ("kind", "plugin"),
        ("topic", "in"),
        ("partition", "1"),
    ];
    let copy = [("group", "copy")];
    let processed_before = paused.get("sluice_plugin_processed_records_total", &copy);
    let lag_before =
        paused.get("sluice_group_lag_records", &c0) + paused.get("sluice_group_lag_records", &c1);
    assert_eq!(lag_before + processed_before, 150.0);
    assert_eq!(
        paused.get(
            "sluice_plugin_status",
            &[("group", "copy"), ("status", "paused")]
        ),
        1.0
    );
    assert_eq!(
        paused.get(
            "sluice_plugin_status",
            &[("group", "copy"), ("status", "running")]
        ),
        0.0
    );
    assert_eq!(paused.get("sluice_plugin_active_version", &copy), 1.0);

    client
        .plugin_action("copy", PluginAction::Resume, &RollbackRequest::default())
        .await
        .unwrap();
    wait_for(&client, "copy", "caught up", |d| {
        d.total_lag == 0 && d.outbox_pending == 0
    })
    .await;
    let caught_up = Scrape::of(&client).await;
    caught_up.expect(&[
        ("sluice_plugin_processed_records_total", &copy, 150.0),
        ("sluice_plugin_emitted_records_total", &copy, 150.0),
        ("sluice_plugin_dead_letters_total", &copy, 0.0),
        ("sluice_group_lag_records", &c0, 0.0),
        ("sluice_group_lag_seconds", &c0, 0.0),
        ("sluice_group_committed_offset", &c0, 100.0),
    ]);
    let batches = caught_up.get("sluice_plugin_batches_total", &copy);
    assert!(
        batches >= 15.0,
        "{batches} batches of at most 10 records for 150"
    );
    assert_eq!(
        caught_up.get("sluice_plugin_batch_duration_seconds_count", &copy),
        batches
    );
    assert!(caught_up.get("sluice_plugin_instance_memory_bytes", &copy) > 0.0);
    assert_eq!(caught_up.get("sluice_plugin_running_version", &copy), 1.0);
    assert_eq!(
        caught_up.get(
            "sluice_plugin_status",
            &[("group", "copy"), ("status", "running")]
        ),
        1.0
    );
    let out = [("topic", "out"), ("partition", "0")];
    assert_eq!(
        caught_up.get("sluice_partition_produced_records_total", &out),
        150.0
    );

    // A record the plugin traps on: retried, then dead-lettered; counted by kind.
    let bad = Record {
        timestamp: now_ms(),
        key: None,
        value: Some(Bytes::from_static(b"bad")),
        headers: Vec::new(),
    };
    client.produce("in", Some(1), &[bad]).await.unwrap();
    let attempts = wait_for(&client, "copy", "the bad record dead-lettered", |d| {
        d.dead_letters == 1
    })
    .await;
    let failed = Scrape::of(&client).await;
    let traps = failed.get(
        "sluice_plugin_errors_total",
        &[("group", "copy"), ("kind", "trap")],
    );
    assert_eq!(traps, attempts.errors["trap"] as f64);
    assert!(traps >= 1.0);
    assert_eq!(
        failed.get(
            "sluice_plugin_errors_total",
            &[("group", "copy"), ("kind", "deadline")]
        ),
        0.0
    );
    assert_eq!(
        failed.get("sluice_plugin_retries_total", &copy),
        attempts.retries as f64
    );
    assert_eq!(failed.get("sluice_plugin_dead_letters_total", &copy), 1.0);

    // The process and the in-flight budget.
    assert!(failed.get("process_resident_memory_bytes", &[]) > 1e6);
    assert!(failed.get("process_open_fds", &[]) > 3.0);
    // Whole seconds in the prometheus crate's collector: present, if still 0 this early.
    assert!(failed.get("process_cpu_seconds_total", &[]) >= 0.0);
    assert_eq!(failed.get("sluice_inflight_request_bytes", &[]), 0.0);
}

/// Archive lag before an archival, files and bytes and the time of the last success after.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn archive_metrics_show_the_lag_then_the_files() {
    let dir = tempfile::tempdir().unwrap();
    // No archival but the one this test asks for: the engine's own waits an hour.
    let server = Server::start_with_env(
        dir.path(),
        &[("SLUICE_STORAGE__RETENTION_CHECK_INTERVAL_MS", "3600000")],
    );
    let client = admin(&server);
    client
        .create_topic(&CreateTopic {
            name: "cold".into(),
            partitions: 1,
            config: [
                ("segment_bytes".to_string(), serde_json::json!(4096)),
                ("archive".to_string(), serde_json::json!(true)),
            ]
            .into(),
        })
        .await
        .unwrap();
    for _ in 0..30 {
        client
            .produce("cold", Some(0), &aged_records(40, now_ms()))
            .await
            .unwrap();
    }
    let labels = [("topic", "cold"), ("partition", "0")];
    let before = Scrape::of(&client).await;
    let segments = before.get("sluice_partition_segments", &labels);
    assert!(segments >= 3.0, "{segments} segments");
    assert_eq!(
        before.get("sluice_archive_lag_segments", &labels),
        segments - 1.0
    );
    assert!(before.get("sluice_archive_lag_bytes", &labels) > 0.0);
    assert_eq!(before.get("sluice_archive_files", &labels), 0.0);
    assert!(!before.has("sluice_archive_last_success_timestamp_seconds", &labels));

    let started = now_ms() as f64 / 1000.0;
    stdout(&cli(
        &server.url,
        &["archive", "run", "--topic", "cold", "--everything"],
        "",
    ));
    let after = Scrape::of(&client).await;
    after.expect(&[
        ("sluice_archive_lag_segments", &labels, 0.0),
        ("sluice_archive_lag_bytes", &labels, 0.0),
    ]);
    assert_eq!(after.get("sluice_archive_files", &labels), segments - 1.0);
    assert!(after.get("sluice_archive_bytes", &labels) > 0.0);
    let last = after.get("sluice_archive_last_success_timestamp_seconds", &labels);
    assert!(
        last >= started.floor() && last <= now_ms() as f64 / 1000.0 + 1.0,
        "{last}"
    );
    assert_eq!(after.get("sluice_archive_failures_total", &labels), 0.0);
}
