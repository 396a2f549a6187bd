//! The archive as analysts read it: one schema per topic, versioned as its values change, and
//! the topic's Apache Iceberg table, read by pyiceberg (`StaticTable`, no catalog) and the
//! files by DuckDB (`union_by_name`), each finding every archived record exactly once.
//!
//! pyiceberg and DuckDB come from $SLUICE_PYTHON, else ./.venv (./scripts/test installs them).

use std::collections::BTreeMap;
use std::path::Path;
use std::process::Command;

use bytes::Bytes;
use sluice::cli::client::Client;
use sluice::log::Record;

use crate::common::plugins::admin;
use crate::common::{Server, cli, python, stdout};

/// Reads the topic's table and files with tests/support/read_table.py.
pub fn read_table(topic_dir: &Path) -> serde_json::Value {
    read_table_at(&topic_dir.display().to_string(), &serde_json::json!({}))
}

/// Reads the topic's table at `location` (a directory, or an object store URL) with
/// tests/support/read_table.py, giving pyiceberg `properties`.
pub fn read_table_at(location: &str, properties: &serde_json::Value) -> serde_json::Value {
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("../tests/support/read_table.py");
    let output = Command::new(python())
        .arg(script)
        .arg(location)
        .arg(properties.to_string())
        .output()
        .unwrap();
    serde_json::from_str(&stdout(&output)).unwrap()
}

async fn produce_json(client: &Client, topic: &str, values: Vec<serde_json::Value>) {
    let records: Vec<Record> = values
        .iter()
        .map(|value| Record {
            timestamp: 1_700_000_000_000,
            key: value["user"].as_str().map(|u| Bytes::from(u.to_string())),
            value: Some(Bytes::from(value.to_string())),
            headers: Vec::new(),
        })
        .collect();
    for chunk in records.chunks(50) {
        client.produce(topic, None, chunk).await.unwrap();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_iceberg_table_holds_every_record_once_across_schema_changes() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(dir.path());
    let client = admin(&server);
    let config = [("archive", "true"), ("archive_schema", "infer")];
    crate::archive::create(&client, "ev", 2, &config).await;
    // Three phases, each archived at once (`--now`): `n` is an integer, then a number with
    // a fraction beside a new field `vip`, then text.
    let phases: [fn(u64) -> serde_json::Value; 3] = [
        |i| serde_json::json!({"user": format!("u{}", i % 7), "n": i}),
        |i| serde_json::json!({"user": format!("u{}", i % 7), "n": i as f64 + 0.5, "vip": i % 2 == 0}),
        |i| serde_json::json!({"user": format!("u{}", i % 7), "n": format!("n{i}")}),
    ];
    let mut produced = BTreeMap::new();
    for (phase, make) in phases.iter().enumerate() {
        let values: Vec<serde_json::Value> =
            (0..200).map(|i| make(phase as u64 * 1000 + i)).collect();
        for value in &values {
            produced.insert(value.to_string(), phase);
        }
        produce_json(&client, "ev", values).await;
        let run = stdout(&cli(&server.url, &["archive", "run", "--now"], ""));
        assert!(run.contains("archived"), "{run}");
    }

    // One schema for the topic, a version per change.
    let topic_dir = dir.path().join("archive/ev");
    let history: serde_json::Value =
        serde_json::from_slice(&std::fs::read(topic_dir.join("schema.json")).unwrap()).unwrap();
    let changes: Vec<Vec<String>> = history["versions"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| serde_json::from_value(v["changes"].clone()).unwrap())
        .collect();
    assert_eq!(
        changes,
        [
            vec!["added n int64", "added user utf8"],
            vec!["widened n int64 to float64", "added vip bool"],
            vec!["widened n float64 to utf8"],
        ],
        "{history:#}"
    );

    let read = read_table(&topic_dir);
    // DuckDB reads the files of every version together, by name.
    let duckdb = &read["duckdb"];
    assert_eq!(
        (duckdb["rows"].as_u64(), duckdb["distinct"].as_u64()),
        (Some(600), Some(600))
    );
    assert_eq!(duckdb["types"]["n"], "VARCHAR", "{duckdb}");
    assert_eq!(duckdb["types"]["value"], "JSON", "{duckdb}");

    // pyiceberg reads the table: every record once, each `n` in the column of its version.
    let iceberg = &read["iceberg"];
    let columns: Vec<&str> = iceberg["columns"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c.as_str().unwrap())
        .collect();
    for column in [
        "n",
        "n__int64",
        "n__float64",
        "vip",
        "user",
        "value",
        "_malformed",
    ] {
        assert!(columns.contains(&column), "{columns:?}");
    }
    let rows = iceberg["rows"].as_array().unwrap();
    assert_eq!(rows.len(), 600);
    let mut seen = std::collections::BTreeSet::new();
    for row in rows {
        assert!(
            seen.insert((row["partition"].as_u64(), row["offset"].as_u64())),
            "{row}"
        );
        let value = row["value"].as_str().unwrap();
        let phase = produced[value];
        let original: serde_json::Value = serde_json::from_str(value).unwrap();
        let n_column = ["n__int64", "n__float64", "n"][phase];
        assert_eq!(row[n_column], original["n"], "{row}");
        assert_eq!(row["user"], original["user"], "{row}");
        for other in ["n__int64", "n__float64", "n"]
            .iter()
            .filter(|c| **c != n_column)
        {
            assert!(row[*other].is_null(), "{row}");
        }
    }
    assert!(iceberg["snapshots"].as_u64().unwrap() >= 3, "{iceberg}");
}
