//! Parquet archival against the real binary: pyarrow and DuckDB read the files back exactly,
//! kill -9 during archival never loses or duplicates an offset, replay crosses from the
//! archive into the log in order, and damaged files are reported by name.
//!
//! SLUICE_ARCHIVE_KILLS (default 24) sets the number of kills during archival; the pause
//! before each random kill comes from a printed seed, which `SLUICE_ARCHIVE_SEED=<seed>` reuses.
//! pyarrow, DuckDB and moto come from $SLUICE_PYTHON, else ./.venv (./scripts/test installs them).

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use crate::common::plugins::{admin, read_all, record, request, wait_for};
use crate::common::{self, Server, cli, python, stdout};
use bytes::Bytes;
use rand::{Rng, SeedableRng};
use sluice::cli::client::{Client, Position};
use sluice::log::{Header, Record};
use sluice::runtime::StartFrom;
use sluice::server::api::{ArchiveListing, CreateTopic};

pub async fn create(client: &Client, name: &str, partitions: u32, config: &[(&str, &str)]) {
    client
        .create_topic(&CreateTopic {
            name: name.into(),
            partitions,
            config: config
                .iter()
                .map(|(k, v)| (k.to_string(), serde_json::Value::String(v.to_string())))
                .collect(),
        })
        .await
        .unwrap();
}

/// Every record of a partition from `from` up to its high watermark, with offsets.
async fn read_from(client: &Client, topic: &str, partition: u32, from: u64) -> Vec<(u64, Record)> {
    let end =
        client.describe_topic(topic).await.unwrap().partitions[partition as usize].high_watermark;
    let mut out = Vec::new();
    let mut offset = from;
    while offset < end {
        let fetch = client
            .fetch(topic, partition, Position::Offset(offset), 1 << 20, 0)
            .await
            .unwrap();
        assert!(fetch.next_offset > offset, "no progress at {offset}");
        offset = fetch.next_offset;
        out.extend(fetch.records);
    }
    out
}

/// Runs the Python of [`common::python`] with `args`; returns what it printed, as JSON.
fn run_python(args: &[&std::ffi::OsStr]) -> serde_json::Value {
    let output = Command::new(python()).args(args).output().unwrap();
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    serde_json::from_slice(&output.stdout).unwrap()
}

fn row(partition: u32, offset: u64, record: &Record) -> serde_json::Value {
    let hex = |b: &[u8]| b.iter().map(|x| format!("{x:02x}")).collect::<String>();
    serde_json::json!([
        partition,
        offset,
        record.timestamp,
        record.key.as_deref().map(hex),
        hex(record.value_bytes()),
        record
            .headers
            .iter()
            .map(|h| serde_json::json!([h.key, hex(h.value_bytes())]))
            .collect::<Vec<_>>()
    ])
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pyarrow_and_duckdb_read_back_exactly_what_the_log_holds() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(dir.path());
    let client = admin(&server);
    create(
        &client,
        "rt",
        2,
        &[("segment_bytes", "4096"), ("archive", "true")],
    )
    .await;
    let records: Vec<Record> = (0..1_500u64)
        .map(|i| Record {
            timestamp: 1_700_000_000_000 + 7 * i as i64,
            // Keys and values of every kind the default encodings (string keys, json values)
            // meet: text, JSON, no key, and bytes that are neither (kept in key_raw and
            // value_raw).
            key: match i % 4 {
                0 => None,
                1 => Some(Bytes::from_static(&[0xc3, 0x28])),
                _ => Some(Bytes::from(format!("key-{}", i % 13))),
            },
            // A tombstone now and then: null in `value` and in `value_raw`.
            value: (i % 97 != 5).then(|| match i % 3 {
                0 => Bytes::from(format!(r#"{{"i": {i}, "kind": "k{}"}}"#, i % 5)),
                _ => Bytes::from([format!("v{i}").as_bytes(), &[0xff, i as u8, 0]].concat()),
            }),
            headers: (0..i % 3)
                .map(|h| Header {
                    key: format!("h{h}").into(),
                    value: Some(Bytes::from(vec![h as u8, 0xfe])),
                })
                .collect(),
        })
        .collect();
    for chunk in records.chunks(100) {
        client.produce("rt", None, chunk).await.unwrap();
    }
    let run = stdout(&cli(
        &server.url,
        &["archive", "run", "--topic", "rt", "--everything"],
        "",
    ));
    assert!(run.contains("archived"), "{run}");
    let listing: ArchiveListing = client.archive_list("rt").await.unwrap();
    let files: Vec<_> = listing
        .partitions
        .iter()
        .flat_map(|p| p.files.iter().map(move |f| (p.partition, f)))
        .collect();
    assert!(files.len() >= 4, "{listing:#?}");

    let mut expected = Vec::new();
    for (partition, file) in &files {
        let records = read_from(&client, "rt", *partition, file.summary.first_offset).await;
        for (offset, record) in records
            .iter()
            .filter(|(o, _)| *o <= file.summary.last_offset)
        {
            expected.push(row(*partition, *offset, record));
        }
    }
    assert_eq!(
        expected.len() as u64,
        files.iter().map(|(_, f)| f.summary.rows).sum::<u64>()
    );

    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("../tests/support/read_archive.py");
    let read = run_python(&[script.as_os_str(), listing.dir.as_ref()]);
    let expected = serde_json::Value::Array(expected);
    assert_eq!(read["pyarrow"], expected, "pyarrow differs");
    assert_eq!(read["duckdb"], expected, "DuckDB differs");
    let metadata = read["metadata"].as_array().unwrap();
    let mut ranges: Vec<(String, String, String)> = metadata
        .iter()
        .map(|m| {
            assert_eq!(m["sluice.topic"], "rt");
            assert_eq!(m["sluice.format"], "2");
            assert_eq!(
                (&m["sluice.key"], &m["sluice.value"]),
                (&"string".into(), &"json".into())
            );
            let text = |k: &str| m[k].as_str().unwrap().to_string();
            (
                text("sluice.partition"),
                text("sluice.first_offset"),
                text("sluice.last_offset"),
            )
        })
        .collect();
    ranges.sort();
    let mut listed: Vec<(String, String, String)> = files
        .iter()
        .map(|(p, f)| {
            (
                p.to_string(),
                f.summary.first_offset.to_string(),
                f.summary.last_offset.to_string(),
            )
        })
        .collect();
    listed.sort();
    assert_eq!(ranges, listed);

    let verified = stdout(&cli(&server.url, &["archive", "verify"], ""));
    assert!(
        verified.contains(&format!("{} archived files verified", files.len())),
        "{verified}"
    );
}

fn value_number(record: &Record) -> u64 {
    std::str::from_utf8(record.value_bytes())
        .unwrap()
        .strip_prefix("r-")
        .unwrap()
        .parse()
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_9_during_archival_leaves_every_offset_in_the_log_or_in_exactly_one_file() {
    let rounds: usize = std::env::var("SLUICE_ARCHIVE_KILLS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(24);
    let dir = tempfile::tempdir().unwrap();
    let settings = [("SLUICE_STORAGE__RETENTION_CHECK_INTERVAL_MS", "5")];
    let mut acknowledged = BTreeSet::new();
    let mut next = 0u64;
    let mut crashes_at_points = 0;
    let mut rng = rand::rngs::StdRng::seed_from_u64(common::seed("SLUICE_ARCHIVE_SEED"));
    for round in 0..rounds {
        // Every fourth round dies at one of the archive's crash points, the others at a
        // random moment while retention archives what the producer filled.
        let point = match round % 5 {
            1 => Some("archive-file-written"),
            2 => Some("archive-file-renamed"),
            3 => Some("archive-before-delete"),
            4 => Some("archive-table-committed"),
            _ => None,
        };
        let mut env = settings.to_vec();
        if let Some(point) = point {
            env.push(("SLUICE_CRASH_AT", point));
        }
        let server = Server::start_with_env(dir.path(), &env);
        let client = admin(&server);
        if round == 0 {
            create(
                &client,
                "k",
                2,
                &[
                    ("segment_bytes", "4096"),
                    ("retention_ms", "1"),
                    ("archive", "true"),
                ],
            )
            .await;
        }
        for _ in 0..6 {
            let records: Vec<Record> = (next..next + 100)
                .map(|n| Record {
                    timestamp: 0,
                    key: Some(Bytes::from(format!("k{}", n % 5))),
                    value: Some(Bytes::from(format!("r-{n}"))),
                    headers: Vec::new(),
                })
                .collect();
            let produced = client.produce("k", None, &records).await;
            next += 100;
            match produced {
                Ok(_) => acknowledged.extend(next - 100..next),
                Err(_) => break,
            }
        }
        if point.is_some() {
            let (status, log) = server.wait_exit();
            assert!(!status.success(), "{log}");
            assert!(log.contains("crash point"), "{log}");
            crashes_at_points += 1;
        } else {
            let pause = rng.random_range(0..40);
            tokio::time::sleep(Duration::from_millis(pause)).await;
            server.kill();
        }
    }
    assert!(crashes_at_points >= rounds / 5 * 4);

    let server = Server::start(dir.path());
    let client = admin(&server);
    // Retention archives on its own timer; on a loaded machine the kills may all land
    // before any archival finishes, so what is past retention is archived now, through
    // the same path, before the archive is checked.
    stdout(&cli(&server.url, &["archive", "run", "--topic", "k"], ""));
    let listing = client.archive_list("k").await.unwrap();
    let topic = client.describe_topic("k").await.unwrap();
    let mut seen = BTreeSet::new();
    for (files, partition) in listing.partitions.iter().zip(&topic.partitions) {
        // The files tile 0..end without overlap, and the log starts no later than the end.
        let mut end = 0;
        for file in &files.files {
            assert_eq!(file.summary.first_offset, end, "{files:#?}");
            assert_eq!(
                file.summary.rows,
                file.summary.last_offset - file.summary.first_offset + 1
            );
            end = file.summary.last_offset + 1;
        }
        assert!(
            partition.log_start_offset <= end,
            "offsets {end}..{} are neither archived nor in the log",
            partition.log_start_offset
        );
        assert!(!files.files.is_empty(), "nothing was archived");

        let records = read_from(&client, "k", files.partition, 0).await;
        let offsets: Vec<u64> = records.iter().map(|(o, _)| *o).collect();
        assert_eq!(offsets, (0..partition.high_watermark).collect::<Vec<_>>());
        for (_, record) in &records {
            assert!(
                seen.insert(value_number(record)),
                "record {} twice",
                value_number(record)
            );
        }
    }
    let lost: Vec<&u64> = acknowledged.difference(&seen).collect();
    assert!(lost.is_empty(), "acknowledged records lost: {lost:?}");

    // The topic's Iceberg table holds every archived offset exactly once: files a crash
    // left out of it were appended by a later commit, none twice.
    let table = crate::archive_table::read_table(Path::new(&listing.dir));
    let in_table: Vec<(u64, u64)> = table["iceberg"]["rows"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| {
            (
                r["partition"].as_u64().unwrap(),
                r["offset"].as_u64().unwrap(),
            )
        })
        .collect();
    let archived: Vec<(u64, u64)> = listing
        .partitions
        .iter()
        .flat_map(|p| {
            p.files.iter().flat_map(move |f| {
                (f.summary.first_offset..=f.summary.last_offset)
                    .map(move |o| (p.partition.into(), o))
            })
        })
        .collect();
    assert_eq!(
        in_table, archived,
        "the table and the archived files differ"
    );
    stdout(&cli(
        &server.url,
        &["archive", "verify", "--topic", "k"],
        "",
    ));

    // Stopped (a stop may still cut an archival short, like a crash) and recovered by the
    // same function the engine calls: the archive holds exactly the files its manifest
    // names, no temporary file and no second file for a range.
    assert!(server.terminate());
    let root = Path::new(&listing.dir).parent().unwrap().to_path_buf();
    let archives = sluice::archive::Archives::new(root, None, None);
    for partition in 0..2 {
        let dir = Path::new(&listing.dir).join(partition.to_string());
        let files = archives.partition("k", partition).files().unwrap();
        let listed: BTreeSet<String> = files.iter().map(|f| f.file.clone()).collect();
        let on_disk: BTreeSet<String> = std::fs::read_dir(&dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .filter(|name| name != "manifest.json")
            .collect();
        assert_eq!(on_disk, listed, "files beside the manifest's");
    }
}

/// Polls the topic's description until `done` holds.
async fn wait_topic(
    client: &Client,
    topic: &str,
    what: &str,
    done: impl Fn(&sluice::server::api::TopicDescription) -> bool,
) {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let description = client.describe_topic(topic).await.unwrap();
        if done(&description) {
            return;
        }
        assert!(Instant::now() < deadline, "gave up waiting for {what}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Waits until retention archived and deleted more than the first 500 offsets of partition 0
/// of a topic of 1,000, then stops retention there: the topic is half in the archive.
async fn archive_first_half(client: &Client, topic: &str) {
    wait_topic(
        client,
        topic,
        "the sealed segments archived and deleted",
        |t| {
            t.partitions[0].log_start_offset > 500
                && t.partitions[0].archive_start_offset == Some(0)
        },
    )
    .await;
    client
        .alter_topic(
            topic,
            &sluice::server::api::AlterTopic {
                config: BTreeMap::from([("retention_ms".into(), "none".into())]),
                partitions: None,
            },
        )
        .await
        .unwrap();
}

/// Timestamp of record 0 in the replay test (record n has TIME_ZERO + n): old enough for a
/// retention of 1 ms, distinct for each record.
const TIME_ZERO: i64 = 1_000_000;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replay_reads_the_archive_then_the_log_and_damage_is_reported_by_name() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start_with_env(
        dir.path(),
        &[("SLUICE_STORAGE__RETENTION_CHECK_INTERVAL_MS", "10")],
    );
    let client = admin(&server);
    create(
        &client,
        "h",
        1,
        &[
            ("segment_bytes", "4096"),
            ("retention_ms", "1"),
            ("archive", "true"),
        ],
    )
    .await;
    let produce = |range: std::ops::Range<u64>| {
        let client = client.clone();
        async move {
            for chunk in range.collect::<Vec<_>>().chunks(50) {
                let records: Vec<Record> = chunk
                    .iter()
                    .map(|n| Record {
                        timestamp: TIME_ZERO + *n as i64,
                        key: Some(Bytes::from(format!("k{}", n % 3))),
                        value: Some(Bytes::from(format!(r#"{{"n":{n}}}"#))),
                        headers: Vec::new(),
                    })
                    .collect();
                client.produce("h", None, &records).await.unwrap();
            }
        }
    };
    produce(0..1_000).await;
    archive_first_half(&client, "h").await;
    produce(1_000..2_000).await;
    let log_start = client.describe_topic("h").await.unwrap().partitions[0].log_start_offset;
    assert!(log_start > 0 && log_start < 1_000, "{log_start}");

    let expected: Vec<String> = (0..2_000).map(|n| format!(r#"{{"n":{n}}}"#)).collect();
    for from in [
        &["--offset", "0"][..],
        &["--from-archive"],
        &["--from", "archive"],
        &["--group", "fresh", "--from", "archive"],
    ] {
        let args = [&["consume", "h"][..], from].concat();
        let printed = stdout(&cli(&server.url, &args, ""));
        assert_eq!(printed.lines().collect::<Vec<_>>(), expected, "{from:?}");
    }
    let from_log = stdout(&cli(&server.url, &["consume", "h"], ""));
    assert_eq!(from_log.lines().count() as u64, 2_000 - log_start);

    // A start time finds its offset in the archive (the first record, one inside a file) or
    // in the log, whichever holds it now.
    for n in [0, 123, log_start - 1, log_start + 10] {
        let time = (TIME_ZERO + n as i64).to_string();
        let printed = stdout(&cli(
            &server.url,
            &["consume", "h", "--timestamp", &time],
            "",
        ));
        assert_eq!(
            printed.lines().collect::<Vec<_>>(),
            expected[n as usize..],
            "from the time of record {n}"
        );
    }

    // A plugin deployed to start at offset 0, or at the archive's start, reads the archive,
    // then the log.
    for (group, output, from) in [
        ("g", "out", StartFrom::Offset(0)),
        ("g2", "out2", StartFrom::Archive),
    ] {
        create(&client, output, 1, &[]).await;
        let mut deploy = request(
            "map",
            "h",
            &[output],
            &[("output", output), ("fields", "n")],
        );
        deploy.spec.from = Some(from);
        client.deploy(group, &deploy).await.unwrap();
        wait_for(&client, group, "everything processed", |d| {
            d.total_lag == 0 && d.outbox_pending == 0
        })
        .await;
        let outputs: Vec<String> = read_all(&client, output)
            .await
            .iter()
            .map(|r| String::from_utf8(r.value_bytes().to_vec()).unwrap())
            .collect();
        assert_eq!(outputs, expected, "deployed from {from:?}");
    }

    // Damage two files: one cut short, one with bytes changed inside.
    let listing = client.archive_list("h").await.unwrap();
    let files = &listing.partitions[0].files;
    assert!(files.len() >= 2);
    let path = |i: usize| Path::new(&listing.dir).join("0").join(&files[i].file);
    let bytes = std::fs::read(path(0)).unwrap();
    std::fs::write(path(0), &bytes[..bytes.len() / 2]).unwrap();
    let mut bytes = std::fs::read(path(1)).unwrap();
    let middle = bytes.len() / 2;
    for b in &mut bytes[middle - 8..middle + 8] {
        *b ^= 0x5a;
    }
    std::fs::write(path(1), &bytes).unwrap();

    let verify = cli(&server.url, &["archive", "verify", "--topic", "h"], "");
    assert!(!verify.status.success());
    let report = String::from_utf8_lossy(&verify.stdout);
    for file in &files[..2] {
        assert!(report.contains(&file.file), "{report}");
    }
    for (i, offset) in [(0, "0"), (1, &*files[1].summary.first_offset.to_string())] {
        let replay = cli(&server.url, &["consume", "h", "--offset", offset], "");
        assert!(!replay.status.success());
        let error = String::from_utf8_lossy(&replay.stderr);
        assert!(error.contains(&files[i].file), "{error}");
    }
}

/// The typed columns of each topic's archive (partition 0), read by pyarrow.
fn typed_rows(dirs: &[&str]) -> serde_json::Value {
    const SCRIPT: &str = r#"
import glob, json, sys
import pyarrow as pa, pyarrow.parquet as pq
out = {}
for d in sys.argv[1:]:
    table = pa.concat_tables([pq.read_table(f) for f in sorted(glob.glob(d + "/0/*.parquet"))])
    fixed = ("partition", "timestamp", "key", "value", "headers", "key_raw", "value_raw",
             "_undecoded")
    out[d] = {
        "columns": table.column_names,
        "rows": table.select([c for c in table.column_names if c not in fixed]).to_pylist(),
    }
print(json.dumps(out))
"#;
    let args: Vec<&std::ffi::OsStr> = ["-c", SCRIPT]
        .iter()
        .chain(dirs)
        .map(|a| a.as_ref())
        .collect();
    run_python(&args)
}

fn column_names(read: &serde_json::Value) -> Vec<&str> {
    read["columns"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c.as_str().unwrap())
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn schema_aware_topics_get_typed_columns_and_keep_values_that_do_not_fit() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(dir.path());
    let client = admin(&server);
    let fixed = r#"{"customer": "utf8", "amount": "float64", "items": "int64"}"#;
    create(
        &client,
        "fixed",
        1,
        &[("segment_bytes", "1024"), ("archive_schema", fixed)],
    )
    .await;
    create(
        &client,
        "guessed",
        1,
        &[("segment_bytes", "1024"), ("archive_schema", "infer")],
    )
    .await;
    let bad = [7, 8, 9];
    let value = |i: u64| match i % 10 {
        7 => "not json".to_string(),
        8 => r#"{"customer": "c", "amount": "lots", "items": 1}"#.to_string(),
        9 => "[1, 2]".to_string(),
        _ => format!(
            r#"{{"customer": "c-{}", "amount": {i}.5, "items": {}, "nested": {{"a": 1}}}}"#,
            i % 4,
            i % 3
        ),
    };
    for topic in ["fixed", "guessed"] {
        for start in (0..300).step_by(30) {
            let records: Vec<Record> = (start..start + 30)
                .map(|i| Record {
                    timestamp: 0,
                    key: None,
                    value: Some(Bytes::from(value(i))),
                    headers: Vec::new(),
                })
                .collect();
            client.produce(topic, None, &records).await.unwrap();
        }
        stdout(&cli(
            &server.url,
            &["archive", "run", "--topic", topic, "--everything"],
            "",
        ));
    }
    let root = dir.path().join("archive");
    let (fixed_dir, guessed_dir) = (root.join("fixed"), root.join("guessed"));
    let read = typed_rows(&[fixed_dir.to_str().unwrap(), guessed_dir.to_str().unwrap()]);

    let fixed = &read[fixed_dir.to_str().unwrap()];
    let columns = column_names(fixed);
    assert_eq!(
        columns,
        [
            "partition",
            "offset",
            "timestamp",
            "key",
            "value",
            "headers",
            "key_raw",
            "value_raw",
            "_undecoded",
            "amount",
            "customer",
            "items",
            "_malformed"
        ]
    );
    let rows = fixed["rows"].as_array().unwrap();
    assert!(rows.len() >= 200, "{}", rows.len());
    for row in rows {
        let i = row["offset"].as_u64().unwrap();
        if bad.contains(&(i % 10)) {
            assert!(row["_malformed"].is_string(), "{row}");
            assert!(
                row["customer"].is_null() && row["amount"].is_null(),
                "{row}"
            );
        } else {
            let expected = serde_json::json!({
                "offset": i,
                "customer": format!("c-{}", i % 4),
                "amount": i as f64 + 0.5,
                "items": i % 3,
                "_malformed": null,
            });
            assert_eq!(row, &expected);
        }
    }

    // Inferred from each file's first values: the scalar fields become columns, the one with
    // mixed types (numbers and a string) a utf8 column; the nested one stays in `value`; the
    // schema is kept for the topic's later files.
    let guessed = &read[guessed_dir.to_str().unwrap()];
    let columns = column_names(guessed);
    for column in ["customer", "items", "amount", "_malformed"] {
        assert!(columns.contains(&column), "{columns:?}");
    }
    assert!(!columns.contains(&"nested"), "{columns:?}");
    assert!(guessed_dir.join("schema.json").exists());
    for row in guessed["rows"].as_array().unwrap() {
        let i = row["offset"].as_u64().unwrap();
        let expected_malformed = i % 10 == 7 || i % 10 == 9;
        assert_eq!(row["_malformed"].is_string(), expected_malformed, "{row}");
    }

    // A schema that names an unknown type is refused when set.
    let refused = cli(
        &server.url,
        &["topic", "alter", "fixed", "--config", "archive_schema=[1]"],
        "",
    );
    assert!(!refused.status.success());
    assert!(
        String::from_utf8_lossy(&refused.stderr).contains("archive_schema"),
        "{}",
        String::from_utf8_lossy(&refused.stderr)
    );
}

/// An S3-compatible server (moto, from PyPI, installed by ./scripts/test) on a free local
/// port; stopped when dropped.
struct S3Server {
    child: std::process::Child,
    endpoint: String,
}

impl S3Server {
    fn start() -> S3Server {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let child = Command::new(python())
            .args([
                "-m",
                "moto.server",
                "-H",
                "127.0.0.1",
                "-p",
                &port.to_string(),
            ])
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap();
        let server = S3Server {
            child,
            endpoint: format!("http://127.0.0.1:{port}"),
        };
        let deadline = Instant::now() + Duration::from_secs(60);
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(Instant::now() < deadline, "moto did not start on {port}");
            std::thread::sleep(Duration::from_millis(50));
        }
        server
    }

    /// Runs tests/support/s3.py against this server; returns what it printed.
    fn run(&self, args: &[&str]) -> serde_json::Value {
        let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("../tests/support/s3.py");
        let mut all = vec![script.into_os_string(), self.endpoint.clone().into()];
        all.extend(args.iter().map(|a| a.into()));
        run_python(&all.iter().map(|a| a.as_os_str()).collect::<Vec<_>>())
    }
}

impl Drop for S3Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_s3_store_holds_the_files_and_replay_reads_them_from_it() {
    let s3 = S3Server::start();
    s3.run(&["make-bucket", "archive"]);
    let dir = tempfile::tempdir().unwrap();
    let env = [
        ("SLUICE_STORAGE__RETENTION_CHECK_INTERVAL_MS", "10"),
        ("SLUICE_STORAGE__ARCHIVE_URL", "s3://archive/sluice"),
        ("AWS_ENDPOINT", &s3.endpoint),
        ("AWS_ALLOW_HTTP", "true"),
        ("AWS_ACCESS_KEY_ID", "test"),
        ("AWS_SECRET_ACCESS_KEY", "test"),
        ("AWS_REGION", "us-east-1"),
    ];
    let server = Server::start_with_env(dir.path(), &env);
    let client = admin(&server);
    create(
        &client,
        "s",
        1,
        &[
            ("segment_bytes", "4096"),
            ("retention_ms", "1"),
            ("archive", "true"),
        ],
    )
    .await;
    let values: Vec<String> = (0..1_000).map(|n| format!("r-{n}")).collect();
    for chunk in values.chunks(50) {
        let records: Vec<Record> = chunk
            .iter()
            .map(|v| Record {
                timestamp: 1_700_000_000_000,
                key: None,
                value: Some(Bytes::from(v.clone())),
                headers: Vec::new(),
            })
            .collect();
        client.produce("s", None, &records).await.unwrap();
    }
    archive_first_half(&client, "s").await;

    // Every file is in the store, none left in the local directory; the store holds the
    // manifest's files and a copy of the manifest.
    let listing = client.archive_list("s").await.unwrap();
    assert_eq!(listing.dir, "s3://archive/sluice/s");
    let files = &listing.partitions[0].files;
    assert!(
        files.len() >= 2 && files.iter().all(|f| f.remote),
        "{listing:#?}"
    );
    let mut expected_keys: Vec<String> = files
        .iter()
        .map(|f| format!("sluice/s/0/{}", f.file))
        .chain(["sluice/s/0/manifest.json".to_string()])
        .collect();
    expected_keys.sort();
    assert_eq!(
        s3.run(&["list", "archive", "sluice/s/0/"]),
        serde_json::json!(expected_keys)
    );

    // The topic's Iceberg table is in the store too, beside the files, and pyiceberg reads
    // every archived record from it there.
    let table_keys = s3.run(&["list", "archive", "sluice/s/metadata/"]);
    assert!(
        table_keys
            .as_array()
            .unwrap()
            .contains(&"sluice/s/metadata/version-hint.text".into()),
        "{table_keys}"
    );
    let properties = serde_json::json!({
        "s3.endpoint": s3.endpoint,
        "s3.access-key-id": "test",
        "s3.secret-access-key": "test",
        "s3.region": "us-east-1",
    });
    let table = crate::archive_table::read_table_at("s3://archive/sluice/s", &properties);
    let offsets: Vec<u64> = table["iceberg"]["rows"]
        .as_array()
        .unwrap()
        .iter()
        .map(|row| row["offset"].as_u64().unwrap())
        .collect();
    // Retention may archive more meanwhile: the table holds each offset once, from 0, up to
    // at least the end of the files listed.
    let archived_end = files.last().unwrap().summary.last_offset;
    assert_eq!(offsets, (0..offsets.len() as u64).collect::<Vec<_>>());
    assert!(offsets.len() as u64 > archived_end, "{}", offsets.len());
    let local = dir.path().join("archive/s/0");
    let local_files: Vec<String> = std::fs::read_dir(&local)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    assert_eq!(local_files, ["manifest.json"]);

    // pyarrow and DuckDB read the uploaded files: the records the engine serves.
    let downloaded = tempfile::tempdir().unwrap();
    let copy = downloaded.path().display().to_string();
    s3.run(&["download", "archive", "sluice/s/", &copy]);
    let read = run_python(&[
        Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("../tests/support/read_archive.py")
            .as_os_str(),
        copy.as_ref(),
    ]);
    let archived_rows = files.iter().map(|f| f.summary.rows).sum::<u64>();
    let expected_rows: Vec<serde_json::Value> = read_from(&client, "s", 0, 0)
        .await
        .iter()
        .take(archived_rows as usize)
        .map(|(offset, record)| row(0, *offset, record))
        .collect();
    assert_eq!(read["pyarrow"], serde_json::json!(expected_rows));
    assert_eq!(read["duckdb"], serde_json::json!(expected_rows));

    // Replay from offset 0 reads the store, then the log; the archive verifies.
    let printed = stdout(&cli(&server.url, &["consume", "s", "--offset", "0"], ""));
    assert_eq!(printed.lines().collect::<Vec<_>>(), values);
    let verified = stdout(&cli(&server.url, &["archive", "verify"], ""));
    assert!(
        verified.contains(&format!("{} archived files verified", files.len())),
        "{verified}"
    );

    // A lost local archive directory: the manifest's copy in the store is found again.
    assert!(server.terminate());
    std::fs::remove_dir_all(dir.path().join("archive")).unwrap();
    let server = Server::start_with_env(dir.path(), &env);
    let client = admin(&server);
    let printed = stdout(&cli(&server.url, &["consume", "s", "--from-archive"], ""));
    assert_eq!(printed.lines().collect::<Vec<_>>(), values);

    // An object missing from the store is named by verify and by replay.
    let lost = &files[0].file;
    s3.run(&["delete", "archive", &format!("sluice/s/0/{lost}")]);
    let verify = cli(&server.url, &["archive", "verify", "--topic", "s"], "");
    assert!(!verify.status.success());
    let report = String::from_utf8_lossy(&verify.stdout);
    assert!(
        report.contains(lost) && report.contains("missing from the object store"),
        "{report}"
    );
    let replay = cli(&server.url, &["consume", "s", "--offset", "0"], "");
    assert!(!replay.status.success());
    assert!(String::from_utf8_lossy(&replay.stderr).contains(lost));

    // Deleting the topic deletes its objects.
    client.delete_topic("s").await.unwrap();
    assert_eq!(
        s3.run(&["list", "archive", "sluice/s/"]),
        serde_json::json!([])
    );
}

/// A quiet topic's last records reach Parquet without another append: its active segment is
/// sealed once `segment_ms` passed, and archived at the next retention check. `archive run
/// --now` (every archiving topic, no --topic) archives up to the high watermark at once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_quiet_topics_last_records_reach_parquet_without_another_append() {
    const SEGMENT_MS: u64 = 1_000;
    const CHECK_MS: u64 = 200;
    let dir = tempfile::tempdir().unwrap();
    let check = CHECK_MS.to_string();
    let server = Server::start_with_env(
        dir.path(),
        &[("SLUICE_STORAGE__RETENTION_CHECK_INTERVAL_MS", &check)],
    );
    let client = admin(&server);
    let segment_ms = SEGMENT_MS.to_string();
    create(
        &client,
        "quiet",
        1,
        &[("segment_ms", &segment_ms), ("archive", "true")],
    )
    .await;
    create(&client, "busy", 2, &[("archive", "true")]).await;
    let five: Vec<Record> = (0..5).map(|i| record(&format!("k{i}"), "v")).collect();
    client.produce("quiet", Some(0), &five).await.unwrap();
    let produced = Instant::now();
    let archived_end = |listing: &ArchiveListing| {
        listing.partitions[0]
            .files
            .last()
            .map(|f| f.summary.last_offset + 1)
    };
    let deadline = produced + Duration::from_secs(60);
    loop {
        let listing = client.archive_list("quiet").await.unwrap();
        if archived_end(&listing) == Some(5) {
            break;
        }
        assert!(Instant::now() < deadline, "never archived: {listing:#?}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let took = produced.elapsed();
    eprintln!("the quiet topic's last record was in Parquet {took:?} after it was produced");
    // Loose: segment_ms plus one check, with room for a loaded machine.
    assert!(
        took < Duration::from_millis(SEGMENT_MS + CHECK_MS) + Duration::from_secs(20),
        "{took:?}"
    );

    // --now: the busy topic's records (a week from sealing by age) archived at once.
    let three: Vec<Record> = (0..3).map(|i| record(&format!("k{i}"), "v")).collect();
    client.produce("busy", Some(1), &three).await.unwrap();
    let out = stdout(&cli(&server.url, &["archive", "run", "--now"], ""));
    assert!(out.contains("of busy"), "{out}");
    let listing = client.archive_list("busy").await.unwrap();
    assert_eq!(
        listing.partitions[1]
            .files
            .last()
            .map(|f| f.summary.last_offset),
        Some(2),
        "{listing:#?}"
    );
    assert!(listing.partitions[0].files.is_empty(), "{listing:#?}");
}
