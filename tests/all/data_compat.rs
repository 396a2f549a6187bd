//! Data compatibility: the binary under test opens a data directory written by an earlier
//! release and serves it unchanged. The fixture (tests/fixtures/datadir-<commit>/, written by
//! scripts/make-compat-fixture with that release's binary) holds the data directory in `data/`
//! and, in `expected/`, what that release served from it. This test copies `data/`, starts the
//! real binary on the copy and compares, through the CLI and the HTTP API only: topics and
//! their offsets, every record (archived or in the log) byte for byte, reads by time,
//! consumer-group offsets, the plugin group (versions, state, snapshot, continuing to count
//! from its stored state) and the archive (list, verify, replay from offset 0).
//!
//! A format change must come with a migration that keeps this test passing on every fixture;
//! a new format version adds a fixture beside the old ones (never regenerate an old one).

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use crate::common::{Server, cli, stdout};
use serde_json::{Value, json};

/// The fixture written by the release at this commit.
const FIXTURE: &str = "datadir-558bec1";
/// The plugin group in the fixture, its input and output topics.
const GROUP: &str = "visit-counts";

fn fixture_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../tests/fixtures")
        .join(FIXTURE)
}

/// Every file under `dir` with its bytes (paths relative to `dir`).
fn files(dir: &Path) -> BTreeMap<PathBuf, Vec<u8>> {
    fn walk(root: &Path, dir: &Path, out: &mut BTreeMap<PathBuf, Vec<u8>>) {
        for entry in std::fs::read_dir(dir).unwrap_or_else(|e| panic!("{}: {e}", dir.display())) {
            let path = entry.unwrap().path();
            if path.is_dir() {
                walk(root, &path, out);
            } else {
                let bytes = std::fs::read(&path).unwrap();
                out.insert(path.strip_prefix(root).unwrap().to_path_buf(), bytes);
            }
        }
    }
    let mut out = BTreeMap::new();
    walk(dir, dir, &mut out);
    out
}

/// Copies a directory tree with plain new files and directories (the repository's checkout
/// modes, whatever they are, are not carried over).
fn copy_tree(from: &Path, to: &Path) {
    for (path, bytes) in files(from) {
        let target = to.join(&path);
        std::fs::create_dir_all(target.parent().unwrap()).unwrap();
        std::fs::write(&target, bytes).unwrap();
    }
}

fn read_json(path: &Path) -> Value {
    let text = std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// JSON lines, as `sluice consume --format json` prints them.
fn json_lines(text: &str) -> Vec<Value> {
    text.lines()
        .map(|line| serde_json::from_str(line).unwrap_or_else(|e| panic!("{line}: {e}")))
        .collect()
}

/// The HTTP API, with the admin token.
struct Api {
    url: String,
    token: String,
    http: reqwest::Client,
    runtime: tokio::runtime::Runtime,
}

impl Api {
    /// The status and JSON body of a request (`Value::Null` for an empty body).
    fn call(
        &self,
        method: reqwest::Method,
        path: &str,
        body: Option<Value>,
        token: bool,
    ) -> (u16, Value) {
        self.runtime.block_on(async {
            let mut request = self.http.request(method, format!("{}{path}", self.url));
            if token {
                request = request.bearer_auth(&self.token);
            }
            if let Some(body) = body {
                request = request.json(&body);
            }
            let response = request.send().await.unwrap();
            let status = response.status().as_u16();
            let text = response.text().await.unwrap();
            let value = if text.is_empty() {
                Value::Null
            } else {
                serde_json::from_str(&text).unwrap_or_else(|e| panic!("{path}: {e}: {text}"))
            };
            (status, value)
        })
    }

    fn get(&self, path: &str) -> Value {
        let (status, value) = self.call(reqwest::Method::GET, path, None, true);
        assert_eq!(status, 200, "GET {path}: {value}");
        value
    }

    fn post(&self, path: &str, body: Value) -> Value {
        let (status, value) = self.call(reqwest::Method::POST, path, Some(body), true);
        assert!(
            (200..300).contains(&status),
            "POST {path}: {status} {value}"
        );
        value
    }

    /// Polls `path` until `done` holds (a minute at most).
    fn wait(&self, path: &str, what: &str, done: impl Fn(&Value) -> bool) -> Value {
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            let value = self.get(path);
            if done(&value) {
                return value;
            }
            assert!(
                Instant::now() < deadline,
                "gave up waiting for {what}; last seen {value:#}"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

/// `sluice consume TOPIC --partition P ARGS.. --format json`, parsed.
fn consume(url: &str, topic: &str, partition: u64, args: &[&str]) -> Vec<Value> {
    let partition = partition.to_string();
    let all = [
        &[
            "consume",
            topic,
            "--partition",
            &partition,
            "--format",
            "json",
        ][..],
        args,
    ]
    .concat();
    json_lines(&stdout(&cli(url, &all, "")))
}

fn offsets_of(records: &[Value]) -> Vec<u64> {
    records
        .iter()
        .map(|r| r["offset"].as_u64().unwrap())
        .collect()
}

#[test]
fn a_data_directory_of_558bec1_is_opened_and_served_unchanged() {
    let fixture = fixture_dir();
    let expected = fixture.join("expected");
    let before = files(&fixture);
    assert!(
        before.keys().any(|p| p.starts_with("data/topics")),
        "{} holds no data directory",
        fixture.display()
    );

    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    copy_tree(&fixture.join("data"), &data);
    let token = std::fs::read_to_string(data.join("admin.token")).unwrap();
    let server = Server::start(&data);
    let url = server.url.clone();
    let api = Api {
        url: url.clone(),
        token: token.trim().to_string(),
        http: reqwest::Client::new(),
        runtime: tokio::runtime::Runtime::new().unwrap(),
    };

    // --- topics: the same names, partitions, offsets and settings ---------------------------
    let listed: BTreeSet<String> = api.get("/v1/topics")["topics"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["name"].as_str().unwrap().to_string())
        .collect();
    let expected_topics: BTreeSet<String> = read_json(&expected.join("topics.json"))["topics"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["name"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(listed, expected_topics, "the topics");
    let mut records_checked = 0;
    for topic in &expected_topics {
        let was = read_json(&expected.join("topics").join(format!("{topic}.json")));
        let now = api.get(&format!("/v1/topics/{topic}"));
        // Settings: each one the fixture had, with the same value (a later release may add
        // settings, with defaults).
        for (key, value) in was["config"].as_object().unwrap() {
            assert_eq!(&now["config"][key], value, "{topic}: setting {key}");
        }
        let was_partitions = was["partitions"].as_array().unwrap();
        let now_partitions = now["partitions"].as_array().unwrap();
        assert_eq!(
            now_partitions.len(),
            was_partitions.len(),
            "{topic}: partitions"
        );
        for (was_p, now_p) in was_partitions.iter().zip(now_partitions) {
            let p = was_p["partition"].as_u64().unwrap();
            assert_eq!(now_p["partition"], was_p["partition"]);
            for field in ["log_start_offset", "high_watermark", "archive_start_offset"] {
                assert_eq!(now_p[field], was_p[field], "{topic}/{p}: {field}");
            }
            // Every record from offset 0 (the archive's, then the log's), byte for byte: keys
            // and values as text or base64, headers, timestamps, offsets.
            let was_records: Vec<Value> = json_lines(
                &std::fs::read_to_string(
                    expected.join("records").join(format!("{topic}.{p}.jsonl")),
                )
                .unwrap(),
            );
            let first = was_p["archive_start_offset"]
                .as_u64()
                .unwrap_or(u64::MAX)
                .min(was_p["log_start_offset"].as_u64().unwrap());
            let end = was_p["high_watermark"].as_u64().unwrap();
            assert_eq!(
                offsets_of(&was_records),
                (first..end).collect::<Vec<_>>(),
                "{topic}/{p}: the fixture's listing covers every offset"
            );
            let now_records = consume(&url, topic, p, &["--offset", "0"]);
            assert_eq!(now_records, was_records, "{topic}/{p}: the records");
            records_checked += now_records.len();
        }
    }
    assert!(records_checked >= 100, "{records_checked} records checked");

    // --- reads by time: in the archive, in the log, in a sealed segment (the time index) -----
    for entry in std::fs::read_dir(expected.join("records")).unwrap() {
        let path = entry.unwrap().path();
        let name = path.file_name().unwrap().to_str().unwrap().to_string();
        let Some((topic, time)) = name
            .strip_suffix(".jsonl")
            .and_then(|n| n.split_once(".timestamp-"))
        else {
            continue;
        };
        let was = json_lines(&std::fs::read_to_string(&path).unwrap());
        assert_eq!(was.len(), 1, "{name}");
        let now = consume(&url, topic, 0, &["--timestamp", time, "-n", "1"]);
        assert_eq!(now, was, "{topic}: the first record at or after {time}");
    }

    // --- the archive: listed, verified, read from offset 0 then on into the log -------------
    let archive = read_json(&expected.join("archive/clicks.json"));
    let listing = api.get("/v1/topics/clicks/archive");
    assert_eq!(
        listing["partitions"], archive["partitions"],
        "the archive manifest"
    );
    let archived: Vec<&str> = archive["partitions"][0]["files"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| f["file"].as_str().unwrap())
        .collect();
    assert_eq!(
        archived.len(),
        4,
        "the fixture archived 4 segments of clicks"
    );
    let list = stdout(&cli(&url, &["archive", "list", "--topic", "clicks"], ""));
    for file in &archived {
        assert!(list.contains(file), "archive list names {file}:\n{list}");
    }
    let verified = stdout(&cli(&url, &["archive", "verify"], ""));
    assert!(
        verified.contains(&format!("{} archived files verified", archived.len())),
        "{verified}"
    );
    let clicks = read_json(&expected.join("topics/clicks.json"));
    let log_start = clicks["partitions"][0]["log_start_offset"]
        .as_u64()
        .unwrap();
    let end = clicks["partitions"][0]["high_watermark"].as_u64().unwrap();
    let archive_end = archive["partitions"][0]["files"][3]["last_offset"]
        .as_u64()
        .unwrap()
        + 1;
    assert!(
        0 < log_start && log_start < archive_end && archive_end < end,
        "the fixture has offsets only in the archive, in both and only in the log"
    );
    let from_archive = consume(&url, "clicks", 0, &["--from-archive"]);
    assert_eq!(offsets_of(&from_archive), (0..end).collect::<Vec<_>>());
    let from_log = consume(&url, "clicks", 0, &[]);
    assert_eq!(
        from_log[..],
        from_archive[log_start as usize..],
        "the log's records"
    );

    // --- consumer groups: committed offsets, and a member continues after them --------------
    let groups = api.get("/v1/groups");
    for group in ["billing", "auditors"] {
        assert!(
            groups["groups"].as_array().unwrap().contains(&json!(group)),
            "consumer group {group} is not listed: {groups}"
        );
        let was = read_json(&expected.join("groups").join(format!("{group}.json")));
        let now = api.get(&format!("/v1/groups/{group}/offsets"));
        assert_eq!(now, was, "committed offsets of {group}");
    }
    let committed = read_json(&expected.join("groups/billing.json"))["offsets"][0].clone();
    assert_eq!(
        (committed["topic"].as_str(), committed["partition"].as_u64()),
        (Some("orders"), Some(0))
    );
    let next = committed["offset"].as_u64().unwrap();
    let resumed = consume(&url, "orders", 0, &["--group", "billing", "-n", "1"]);
    assert_eq!(
        offsets_of(&resumed),
        [next],
        "billing resumes after its committed offset"
    );

    // --- the plugin group -------------------------------------------------------------------
    let (status, _) = api.call(reqwest::Method::GET, "/v1/plugins", None, false);
    assert_eq!(status, 401, "the admin API still needs the token");
    assert!(
        !server.log().contains("generated the admin token"),
        "the fixture's admin.token was not used:\n{}",
        server.log()
    );
    let was = read_json(&expected.join(format!("plugins/{GROUP}.json")));
    let now = api.wait(
        &format!("/v1/plugins/{GROUP}"),
        "the group running again",
        |d| {
            d["running_version"] == d["active_version"]
                && d["total_lag"] == 0
                && d["outbox_pending"] == 0
        },
    );
    for field in [
        "group",
        "topic",
        "dlq_topic",
        "active_version",
        "paused",
        "versions",
    ] {
        assert_eq!(now[field], was[field], "{GROUP}: {field}");
    }
    // Limits added since keep their defaults; the ones the release had are unchanged.
    for (limit, value) in was["limits"].as_object().unwrap() {
        assert_eq!(&now["limits"][limit], value, "{GROUP}: limit {limit}");
    }
    assert_eq!(was["active_version"], 2);
    assert_eq!(
        was["versions"].as_array().unwrap().len(),
        2,
        "the version history"
    );
    let committed = |d: &Value| -> Vec<(Value, Value)> {
        d["partitions"]
            .as_array()
            .unwrap()
            .iter()
            .map(|p| (p["partition"].clone(), p["committed"].clone()))
            .collect()
    };
    assert_eq!(
        committed(&now),
        committed(&was),
        "{GROUP}: committed offsets"
    );
    for field in ["state_entries", "state_bytes"] {
        assert_eq!(now[field], was[field], "{GROUP}: {field}");
    }
    let state_path = format!("/v1/plugins/{GROUP}/state");
    let state_was = read_json(&expected.join(format!("plugins/{GROUP}.state.json")));
    assert_eq!(api.get(&state_path), state_was, "{GROUP}: state");
    assert_eq!(
        api.get(&format!("/v1/plugins/{GROUP}/snapshots")),
        read_json(&expected.join(format!("plugins/{GROUP}.snapshots.json"))),
        "{GROUP}: snapshots"
    );
    let count = |state: &Value, key: &str| -> u64 {
        state["entries"]
            .as_array()
            .unwrap()
            .iter()
            .find(|e| e["key"] == key)
            .unwrap_or_else(|| panic!("no {key} in {state}"))["value"]
            .as_str()
            .unwrap()
            .parse()
            .unwrap()
    };
    let (ada, total) = (count(&state_was, "count/ada"), count(&state_was, "total"));

    // One more visit of ada: the count continues from the stored state, through version 2.
    let output_end =
        read_json(&expected.join("topics/counts.json"))["partitions"][0]["high_watermark"]
            .as_u64()
            .unwrap();
    api.post(
        "/v1/topics/visits/records",
        json!({"records": [{"key": "ada", "value": r#"{"n": 1000, "user": "ada"}"#,
            "timestamp": 1_720_000_999_000i64}]}),
    );
    api.wait(
        "/v1/topics/counts",
        "the new count in the output topic",
        |t| t["partitions"][0]["high_watermark"] == output_end + 1,
    );
    api.wait(
        &format!("/v1/plugins/{GROUP}"),
        "the new visit committed",
        |d| d["total_lag"] == 0 && d["outbox_pending"] == 0,
    );
    let outputs = consume(&url, "counts", 0, &["--offset", &output_end.to_string()]);
    assert_eq!(outputs.len(), 1, "{outputs:#?}");
    assert_eq!(outputs[0]["key"], "ada");
    let value: Value = serde_json::from_str(outputs[0]["value"].as_str().unwrap()).unwrap();
    assert_eq!(value, json!({"count": ada + 1, "id": "1000", "key": "ada"}));
    assert_eq!(outputs[0]["headers"]["sluice.plugin"], format!("{GROUP}/2"));
    let state_now = api.get(&state_path);
    assert_eq!(count(&state_now, "count/ada"), ada + 1);
    assert_eq!(count(&state_now, "total"), total + 1);

    // --- the engine trusted the old files: no index rebuilt, nothing cut, no warning --------
    let log = server.log();
    assert!(
        !log.contains("rebuilding segment index"),
        "the index files of {FIXTURE} were not trusted (an index format change needs a migration):\n{log}"
    );
    let warnings: Vec<&str> = log
        .lines()
        .filter(|l| l.contains(" WARN ") || l.contains(" ERROR "))
        .collect();
    assert!(
        warnings.is_empty(),
        "warnings on the fixture:\n{}",
        warnings.join("\n")
    );
    assert!(server.terminate(), "clean exit on SIGTERM");

    assert!(
        files(&fixture) == before,
        "the fixture in the repository was changed"
    );
}
