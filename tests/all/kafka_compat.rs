//! The Kafka compatibility suite: the same client programs run against a real Apache Kafka
//! broker (a single KRaft node from Maven Central, started by scripts/kafka-broker) and against
//! Sluice, and their outputs are compared. Where the two legitimately differ, the difference
//! is named, with its reason, in tests/kafka/differences.json; anything else that differs
//! fails the test, and so does a named difference that no longer differs.
//!
//! The clients: the official Java client (tests/kafka, scenarios `produce-consume`, `admin`,
//! `unsupported`); confluent-kafka, librdkafka inside (tests/support/kafka_suite.py
//! `confluent`: an idempotent producer, a cooperative-sticky group of three on six partitions
//! as members join and leave, commit and resume, seek by time, admin); kcat (`kcat`: 100,000
//! keyed records with headers from a file, consumed back); kafka-python, an independent
//! pure-Python client (tests/support/kafka_client.py `compat`: tombstones and fixed timestamps
//! in every compression, offsets by time, a group's commits). The broker needs Java 17 and Maven,
//! and kcat comes from Debian: ./scripts/test installs them, and confluent-kafka in ./.venv.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;

use serde_json::Value;

use crate::common::{Server, python};

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

fn broker_script() -> PathBuf {
    repo().join("scripts/kafka-broker")
}

/// A running Apache Kafka broker, stopped when dropped (also when a test fails).
struct KafkaBroker {
    dir: tempfile::TempDir,
    bootstrap: String,
}

impl KafkaBroker {
    fn start() -> KafkaBroker {
        let dir = tempfile::tempdir().unwrap();
        let output = Command::new(broker_script())
            .arg("start")
            .arg(dir.path().join("broker"))
            .output()
            .unwrap();
        assert!(
            output.status.success(),
            "scripts/kafka-broker start failed:\n{}",
            String::from_utf8_lossy(&output.stderr)
        );
        let bootstrap = String::from_utf8(output.stdout).unwrap().trim().to_string();
        KafkaBroker { dir, bootstrap }
    }
}

impl Drop for KafkaBroker {
    fn drop(&mut self) {
        let _ = Command::new(broker_script())
            .arg("stop")
            .arg(self.dir.path().join("broker"))
            .output();
    }
}

/// The JSON a client program printed; fails with its stderr and the server's log.
fn printed(mut command: Command, what: &str, server_log: &dyn Fn() -> String) -> Value {
    let output = command.output().unwrap();
    assert!(
        output.status.success(),
        "{what} failed:\n{}\n--- server log\n{}",
        String::from_utf8_lossy(&output.stderr),
        server_log()
    );
    serde_json::from_slice(&output.stdout).unwrap()
}

/// A scenario of the Java client program (tests/kafka) against `bootstrap`.
fn java_client(bootstrap: &str, scenario: &str, server_log: &dyn Fn() -> String) -> Value {
    let mut command = Command::new(broker_script());
    command.args(["client", "--bootstrap", bootstrap, scenario, "--compact"]);
    let what = format!("the Java client's {scenario} against {bootstrap}");
    printed(command, &what, server_log)
}

/// A scenario of tests/support/kafka_suite.py (librdkafka) against `bootstrap`.
fn librdkafka_client(bootstrap: &str, scenario: &str, server_log: &dyn Fn() -> String) -> Value {
    let mut command = Command::new(python());
    command
        .arg(repo().join("tests/support/kafka_suite.py"))
        .args([bootstrap, scenario]);
    let what = format!("kafka_suite.py {scenario} against {bootstrap}");
    printed(command, &what, server_log)
}

/// The `compat` scenario of tests/support/kafka_client.py (kafka-python, an independent
/// pure-Python client) against `bootstrap`.
fn kafka_python_client(bootstrap: &str, _: &str, server_log: &dyn Fn() -> String) -> Value {
    let mut command = Command::new(python());
    command
        .arg(repo().join("tests/support/kafka_client.py"))
        .args([bootstrap, "compat", "py-compat"]);
    let what = format!("kafka_client.py compat against {bootstrap}");
    printed(command, &what, server_log)
}

/// Every leaf of `value` by its JSON pointer.
fn leaves(value: &Value) -> BTreeMap<String, Value> {
    let mut out = BTreeMap::new();
    let mut stack = vec![(String::new(), value)];
    while let Some((pointer, value)) = stack.pop() {
        match value {
            Value::Object(map) => {
                for (key, inner) in map {
                    stack.push((format!("{pointer}/{key}"), inner));
                }
            }
            Value::Array(items) => {
                for (i, inner) in items.iter().enumerate() {
                    stack.push((format!("{pointer}/{i}"), inner));
                }
            }
            leaf => {
                out.insert(pointer, leaf.clone());
            }
        }
    }
    out
}

/// What differs between Kafka's output and Sluice's that `named` does not explain, and the
/// named differences that did not differ.
fn unexplained(kafka: &Value, sluice: &Value, named: &BTreeMap<String, Value>) -> Vec<String> {
    let (kafka, sluice) = (leaves(kafka), leaves(sluice));
    let mut used = std::collections::BTreeSet::new();
    let mut problems = Vec::new();
    let pointers: std::collections::BTreeSet<&String> = kafka.keys().chain(sluice.keys()).collect();
    for pointer in pointers {
        let (k, s) = (kafka.get(pointer), sluice.get(pointer));
        if k == s {
            continue;
        }
        let covered = named
            .keys()
            .find(|name| *pointer == **name || pointer.starts_with(&format!("{name}/")));
        match covered {
            Some(name) => {
                used.insert(name.clone());
            }
            None => problems.push(format!("{pointer}: Kafka {k:?}, Sluice {s:?}")),
        }
    }
    for name in named.keys().filter(|name| !used.contains(*name)) {
        problems.push(format!("{name} is named as a difference but is the same"));
    }
    problems
}

/// The Java client's, confluent-kafka's and kcat's scenarios give the same results on Apache
/// Kafka and on Sluice, but for the differences tests/kafka/differences.json names.
#[test]
fn kafka_clients_see_sluice_as_they_see_apache_kafka() {
    let install = Command::new(broker_script())
        .arg("install")
        .output()
        .unwrap();
    assert!(
        install.status.success(),
        "scripts/kafka-broker install failed:\n{}",
        String::from_utf8_lossy(&install.stderr)
    );
    let differences: Value = serde_json::from_slice(
        &std::fs::read(repo().join("tests/kafka/differences.json")).unwrap(),
    )
    .unwrap();
    let kafka = KafkaBroker::start();
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(dir.path());
    let sluice = server.kafka.clone().expect("the Kafka listener is on");
    let mut problems = Vec::new();
    type Client = fn(&str, &str, &dyn Fn() -> String) -> Value;
    let scenarios: [(&str, Client); 7] = [
        ("produce-consume", java_client),
        ("share", java_client),
        ("admin", java_client),
        ("unsupported", java_client),
        ("confluent", librdkafka_client),
        ("kcat", librdkafka_client),
        ("kafka-python", kafka_python_client),
    ];
    for (scenario, client) in scenarios {
        let from_kafka = client(&kafka.bootstrap, scenario, &|| String::new());
        let from_sluice = client(&sluice, scenario, &|| server.log());
        let named: BTreeMap<String, Value> = differences[scenario]
            .as_object()
            .unwrap_or_else(|| panic!("differences.json has no {scenario:?}"))
            .clone()
            .into_iter()
            .collect();
        for problem in unexplained(&from_kafka, &from_sluice, &named) {
            problems.push(format!("{scenario}: {problem}"));
        }
    }
    assert!(
        problems.is_empty(),
        "Sluice and Apache Kafka differ where tests/kafka/differences.json names nothing:\n{}",
        problems.join("\n")
    );
}

#[test]
fn differences_are_found_and_named_differences_must_differ() {
    let kafka = serde_json::json!({"a": 1, "b": {"m": "x", "n": [1, 2]}, "c": "same"});
    let sluice = serde_json::json!({"a": 2, "b": {"m": "y", "n": [1]}, "c": "same"});
    let named: BTreeMap<String, Value> = [("/b".to_string(), Value::Null)].into();
    assert_eq!(
        unexplained(&kafka, &sluice, &named),
        ["/a: Kafka Some(Number(1)), Sluice Some(Number(2))"]
    );
    let stale: BTreeMap<String, Value> = [("/c".to_string(), Value::Null)].into();
    assert!(unexplained(&kafka, &kafka, &stale)[0].contains("/c is named"));
}
