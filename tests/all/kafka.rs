//! The Kafka protocol door: kafka-python (an independent client, from ./.venv as the archive
//! tests' modules are) produces to and consumes from a running engine over real sockets, and
//! what it sees is checked against what the HTTP door holds; bad frames close only their own
//! connection, with a log line naming the client.

use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::Path;
use std::process::Command;
use std::time::Duration;

use bytes::Bytes;
use serde_json::Value;
use sluice::cli::client::Client;
use sluice::log::partitioner::partition_for_key;
use sluice::log::{Header, Record};

use crate::common::kafka::exchange;
use crate::common::plugins::{admin, create_topic, read_all, read_partitions};
use crate::common::{Server, python};

/// Runs tests/support/kafka_client.py against the engine's Kafka listener.
fn kafka_client(server: &Server, args: &[&str]) -> Value {
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("../tests/support/kafka_client.py");
    let bootstrap = server.kafka.as_deref().expect("the Kafka listener is on");
    let output = Command::new(python())
        .arg(script)
        .arg(bootstrap)
        .args(args)
        .output()
        .unwrap();
    assert!(
        output.status.success(),
        "kafka_client.py {args:?} failed:\n{}\n--- engine log\n{}",
        String::from_utf8_lossy(&output.stderr),
        server.log()
    );
    serde_json::from_slice(&output.stdout).unwrap()
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// A record as kafka_client.py prints it.
fn as_printed(partition: usize, offset: u64, record: &Record) -> Value {
    serde_json::json!({
        "partition": partition,
        "offset": offset,
        "timestamp": record.timestamp,
        "key": record.key.as_deref().map(hex),
        "value": record.value.as_deref().map(hex),
        "headers": record.headers.iter().map(|h| serde_json::json!([h.key, h.value.as_deref().map(hex)])).collect::<Vec<_>>(),
    })
}

/// Every record of `topic` through the HTTP door, as kafka_client.py prints records.
async fn through_http(client: &Client, topic: &str) -> Vec<Value> {
    let mut printed = Vec::new();
    for (partition, records) in read_partitions(client, topic).await.iter().enumerate() {
        for (offset, record) in records.iter().enumerate() {
            printed.push(as_printed(partition, offset as u64, record));
        }
    }
    printed
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_kafka_client_produces_and_consumes_and_both_doors_read_the_same() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(dir.path());
    let out = kafka_client(&server, &["roundtrip", "orders"]);
    assert_eq!(
        out["codecs"],
        serde_json::json!(["None", "gzip", "lz4", "zstd", "snappy"]),
        "every compression (./scripts/test installs kafka-python's optional modules)"
    );
    assert!(out["topics"].as_array().unwrap().contains(&"orders".into()));
    let acked = out["acked"].as_array().unwrap();
    let records = out["records"].as_array().unwrap();
    assert_eq!(acked.len(), 250);
    assert_eq!(
        records.len(),
        acked.len(),
        "each acknowledged record read once"
    );
    // Each acknowledged record is where its acknowledgement said, and where Kafka's default
    // partitioner puts its key.
    let by_place: BTreeMap<(u64, u64), &Value> = records
        .iter()
        .map(|r| {
            (
                (
                    r["partition"].as_u64().unwrap(),
                    r["offset"].as_u64().unwrap(),
                ),
                r,
            )
        })
        .collect();
    for ack in acked {
        let place = (
            ack["partition"].as_u64().unwrap(),
            ack["offset"].as_u64().unwrap(),
        );
        let record = by_place
            .get(&place)
            .unwrap_or_else(|| panic!("no record at {place:?}"));
        assert_eq!(record["key"], ack["key"]);
        let key = (0..ack["key"].as_str().unwrap().len())
            .step_by(2)
            .map(|i| u8::from_str_radix(&ack["key"].as_str().unwrap()[i..i + 2], 16).unwrap())
            .collect::<Vec<u8>>();
        assert_eq!(u64::from(partition_for_key(&key, 3)), place.0, "{ack}");
    }
    // The HTTP door reads the same records, byte for byte: keys, values, headers, timestamps.
    let client = admin(&server);
    assert_eq!(&through_http(&client, "orders").await, records);
    // Offsets: earliest, latest, by time (the first record is not older than the produce's
    // start) and after the last record (none).
    let mut counts = [0u64; 3];
    for record in records {
        counts[record["partition"].as_u64().unwrap() as usize] += 1;
    }
    for (p, count) in counts.iter().enumerate() {
        let p_key = p.to_string();
        assert_eq!(out["offsets"]["earliest"][&p_key], 0);
        assert_eq!(out["offsets"]["latest"][&p_key], *count);
        assert_eq!(out["by_time"][&p_key], 0);
        assert_eq!(out["after_the_end"][&p_key], Value::Null);
    }
    // /metrics timed the Kafka requests by API.
    let metrics = reqwest::get(format!("{}/metrics", server.url))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    for api in ["ApiVersions", "Metadata", "Produce", "Fetch", "ListOffsets"] {
        let count = metrics
            .lines()
            .find_map(|l| {
                l.strip_prefix(&format!(
                    "sluice_kafka_request_duration_seconds_count{{api=\"{api}\"}} "
                ))
            })
            .and_then(|v| v.parse::<f64>().ok())
            .unwrap_or_else(|| panic!("no {api} count in:\n{metrics}"));
        assert!(count >= 1.0, "{api}: {count}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn records_produced_over_http_read_the_same_over_kafka() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(dir.path());
    let client = admin(&server);
    create_topic(&client, "from-http", 2).await;
    let records: Vec<Record> = (0..40)
        .map(|i| Record {
            timestamp: 1_700_000_000_000 + i,
            key: (i % 5 != 0).then(|| Bytes::from(format!("key-{i}"))),
            value: Some(Bytes::from(if i % 7 == 0 {
                Vec::new()
            } else {
                vec![i as u8; i as usize]
            })),
            headers: (0..i % 3)
                .map(|h| Header {
                    key: format!("h{h}").into(),
                    value: Some(Bytes::from(vec![0xff, h as u8])),
                })
                .collect(),
        })
        .collect();
    client.produce("from-http", None, &records).await.unwrap();
    let out = kafka_client(&server, &["read", "from-http"]);
    assert_eq!(
        &through_http(&client, "from-http").await,
        out["records"].as_array().unwrap()
    );
    assert_eq!(out["records"].as_array().unwrap().len(), records.len());
    // JSON: a record without a value is a tombstone, a header given as null has a null value;
    // Kafka clients read both as null, and so does a JSON fetch.
    create_topic(&client, "tombstones", 1).await;
    let http = reqwest::Client::new();
    let topic_url = format!("{}/v1/topics/tombstones", server.url);
    let body = serde_json::json!({"records": [
        {"key": "gone", "headers": {"why": null, "who": "me"}},
        {"key": "kept", "value": "v"},
    ]});
    let produced = http
        .post(format!("{topic_url}/records"))
        .json(&body)
        .send()
        .await
        .unwrap();
    assert!(
        produced.status().is_success(),
        "{:?}",
        produced.text().await
    );
    let out = kafka_client(&server, &["read", "tombstones"]);
    let read = out["records"].as_array().unwrap();
    assert_eq!(read[0]["value"], Value::Null);
    assert_eq!(
        read[0]["headers"],
        serde_json::json!([["who", "6d65"], ["why", null]])
    );
    assert_eq!(read[1]["value"], "76");
    let fetched: Value = http
        .get(format!("{topic_url}/partitions/0/records?offset=0"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let first = &fetched["records"][0];
    assert!(
        first.get("value").is_none() && first.get("value_base64").is_none(),
        "{first}"
    );
    assert_eq!(first["headers"]["why"], Value::Null);
    assert_eq!(fetched["records"][1]["value"], "v");
}

/// Sends raw bytes on a new connection; true when the engine closed it (read gives EOF).
fn closed_after(addr: &str, bytes: &[u8]) -> bool {
    let mut stream = TcpStream::connect(addr).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    stream.write_all(bytes).unwrap();
    let mut buffer = [0u8; 64];
    matches!(stream.read(&mut buffer), Ok(0) | Err(_))
}

/// A request frame: length, api key, version, correlation id, client id, then `body`.
fn frame(api_key: i16, version: i16, body: &[u8]) -> Vec<u8> {
    let mut request = Vec::new();
    request.extend_from_slice(&api_key.to_be_bytes());
    request.extend_from_slice(&version.to_be_bytes());
    request.extend_from_slice(&7i32.to_be_bytes());
    request.extend_from_slice(&4i16.to_be_bytes());
    request.extend_from_slice(b"test");
    request.extend_from_slice(body);
    let mut framed = (request.len() as i32).to_be_bytes().to_vec();
    framed.extend_from_slice(&request);
    framed
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_frames_close_only_their_connection_with_a_log_line() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(dir.path());
    let addr = server.kafka.clone().unwrap();
    // A length past max_frame_bytes: refused before any of it is read.
    assert!(closed_after(&addr, &i32::MAX.to_be_bytes()));
    // An API key Kafka does not define, an API not served, a request that does not decode.
    assert!(closed_after(&addr, &frame(9999, 0, &[])));
    assert!(closed_after(&addr, &frame(26, 0, &[])));
    assert!(closed_after(&addr, &frame(3, 9, &[0xff])));
    // ApiVersions at a version not served is answered (KIP-511): version 0, UNSUPPORTED_VERSION
    // (35), and the versions served.
    let mut stream = TcpStream::connect(&addr).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    stream.write_all(&frame(18, 99, &[0])).unwrap(); // 0: no tagged fields
    let mut answer = [0u8; 10];
    stream.read_exact(&mut answer).unwrap();
    assert_eq!(
        i32::from_be_bytes(answer[4..8].try_into().unwrap()),
        7,
        "correlation id"
    );
    assert_eq!(i16::from_be_bytes(answer[8..10].try_into().unwrap()), 35);
    // Each closing named the client and why; the listener goes on serving.
    let log = server.log();
    for why in [
        "past max_frame_bytes",
        "api key 9999, which Kafka does not define",
        "EndTxn (api key 26) is not served",
        "a Metadata v9 request that does not decode",
    ] {
        assert!(log.contains(why), "no {why:?} in the log:\n{log}");
    }
    assert!(
        log.contains("peer=127.0.0.1:"),
        "the log names the client:\n{log}"
    );
    let client = admin(&server);
    create_topic(&client, "after", 1).await;
    let out = kafka_client(&server, &["read", "after"]);
    assert_eq!(out["records"], serde_json::json!([]));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_kafka_consumer_group_shares_the_partitions_and_commits_to_the_engines_offsets() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(dir.path());
    let client = admin(&server);
    create_topic(&client, "shared", 3).await;
    let records: Vec<Record> = (0..300)
        .map(|i| Record {
            timestamp: 1_700_000_000_000 + i,
            key: Some(Bytes::from(format!("key-{i}"))),
            value: Some(Bytes::from(format!("value-{i}"))),
            headers: Vec::new(),
        })
        .collect();
    client.produce("shared", None, &records).await.unwrap();
    let out = kafka_client(&server, &["group", "shared", "workers", "2"]);
    // Two members, each with partitions of its own, read every record once between them.
    let members = out["members"].as_object().unwrap();
    assert_eq!(members.len(), 2);
    let mut read: Vec<(u64, u64)> = Vec::new();
    let mut assigned: Vec<u64> = Vec::new();
    for member in members.values() {
        assert!(!member["read"].as_array().unwrap().is_empty(), "{out}");
        read.extend(
            member["read"]
                .as_array()
                .unwrap()
                .iter()
                .map(|r| (r[0].as_u64().unwrap(), r[1].as_u64().unwrap())),
        );
        assigned.extend(
            member["assignment"]
                .as_array()
                .unwrap()
                .iter()
                .map(|p| p.as_u64().unwrap()),
        );
    }
    assigned.sort();
    assert_eq!(assigned, [0, 1, 2], "each partition to one member: {out}");
    read.sort();
    read.dedup();
    assert_eq!(read.len(), records.len(), "every record read, none twice");
    // The commits went to the engine's offsets: a later member finds nothing left, and the
    // HTTP door's group view shows them at the end of each partition.
    assert_eq!(out["left_after_commits"], serde_json::json!([]));
    let described = client.describe_group("workers").await.unwrap();
    assert_eq!(described.total_lag, 0);
    let committed: u64 = described
        .partitions
        .iter()
        .filter_map(|p| p.committed)
        .sum();
    assert_eq!(committed, records.len() as u64);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_kafka_admin_client_describes_the_cluster_and_manages_topics_and_groups() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(dir.path());
    let out = kafka_client(&server, &["admin", "managed"]);
    let text = |key: &str| out[key].to_string();
    // One broker, this engine, with the cluster id kept in its data directory.
    let cluster_id = std::fs::read_to_string(dir.path().join("kafka.cluster_id")).unwrap();
    assert!(text("cluster").contains(&cluster_id), "{out}");
    assert!(text("cluster").contains("'broker_id': 0"), "{out}");
    // The setting given at creation, by Kafka's name, as set on the topic.
    assert!(
        text("configs").contains(
            "'retention.ms': {'value': '3600000', 'read_only': False, 'config_source': 'DYNAMIC_TOPIC_CONFIG'"
        ),
        "{out}"
    );
    // Partitions grow, never shrink; the log's topic has them.
    assert!(out["more_partitions"]["ok"].is_string(), "{out}");
    assert!(
        text("fewer_partitions").contains("InvalidPartitionsError"),
        "{out}"
    );
    assert_eq!(out["partitions_after"], serde_json::json!([0, 1, 2, 3]));
    let client = admin(&server);
    assert_eq!(
        client
            .describe_topic("managed")
            .await
            .unwrap()
            .partitions
            .len(),
        4
    );
    // A group's committed offset deleted, then the group itself.
    assert!(text("offsets_before").contains("offset=1"), "{out}");
    assert!(text("delete_offsets").contains("NoError"), "{out}");
    assert_eq!(out["offsets_after"], "{'managed-group': {}}");
    assert!(
        text("delete_group").contains("'managed-group': 'OK'"),
        "{out}"
    );
}

/// A batch an idempotent producer sent again (its answer lost) is written once, and answered
/// with the offset it was first written at; a batch out of sequence is refused; and so after a
/// kill -9 and a restart too.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_idempotent_producers_retried_batch_is_written_once() {
    use kafka_protocol::messages::produce_request::{PartitionProduceData, TopicProduceData};
    use kafka_protocol::messages::{
        ApiKey, InitProducerIdRequest, InitProducerIdResponse, ProduceRequest, ProduceResponse,
        TopicName,
    };
    use kafka_protocol::protocol::{Decodable, StrBytes};
    use kafka_protocol::records::{
        Compression, Record as KafkaRecord, RecordBatchEncoder, RecordEncodeOptions, TimestampType,
    };
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(dir.path());
    let client = admin(&server);
    create_topic(&client, "once", 1).await;
    let mut stream = TcpStream::connect(server.kafka.as_deref().unwrap()).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(30)))
        .unwrap();
    let mut answer = exchange(
        &mut stream,
        ApiKey::InitProducerId,
        4,
        &InitProducerIdRequest::default()
            .with_transactional_id(None)
            .with_producer_id((-1).into())
            .with_producer_epoch(-1)
            .with_transaction_timeout_ms(60_000),
    );
    // Response header v1 for InitProducerId v4: one empty tagged-fields byte first.
    let _ = bytes::Buf::get_u8(&mut answer);
    let producer = InitProducerIdResponse::decode(&mut answer, 4).unwrap();
    assert_eq!(producer.error_code, 0);
    let produce = |sequence: i32, values: &[&str]| {
        let records: Vec<KafkaRecord> = values
            .iter()
            .enumerate()
            .map(|(i, value)| KafkaRecord {
                transactional: false,
                control: false,
                delete_horizon: false,
                partition_leader_epoch: 0,
                producer_id: producer.producer_id.0,
                producer_epoch: producer.producer_epoch,
                timestamp_type: TimestampType::Creation,
                offset: i as i64,
                sequence: sequence + i as i32,
                timestamp: 1_700_000_000_000,
                key: None,
                value: Some(Bytes::from(value.to_string())),
                headers: Default::default(),
            })
            .collect();
        let mut batch = bytes::BytesMut::new();
        let options = RecordEncodeOptions {
            version: 2,
            compression: Compression::None,
        };
        RecordBatchEncoder::encode(&mut batch, &records, &options).unwrap();
        ProduceRequest::default()
            .with_acks(-1)
            .with_timeout_ms(30_000)
            .with_topic_data(vec![
                TopicProduceData::default()
                    .with_name(TopicName(StrBytes::from_static_str("once")))
                    .with_partition_data(vec![
                        PartitionProduceData::default()
                            .with_index(0)
                            .with_records(Some(batch.freeze())),
                    ]),
            ])
    };
    let send = |stream: &mut TcpStream, request: &ProduceRequest| {
        let mut answer = exchange(stream, ApiKey::Produce, 8, request);
        let response = ProduceResponse::decode(&mut answer, 8).unwrap();
        let partition = &response.responses[0].partition_responses[0];
        (partition.error_code, partition.base_offset)
    };
    let first = produce(0, &["a", "b"]);
    assert_eq!(send(&mut stream, &first), (0, 0));
    assert_eq!(send(&mut stream, &produce(2, &["c"])), (0, 2));
    // The first batch again: written once, answered with its first offset.
    assert_eq!(send(&mut stream, &first), (0, 0));
    // A gap in the sequence: OUT_OF_ORDER_SEQUENCE_NUMBER (45), nothing written.
    assert_eq!(send(&mut stream, &produce(9, &["z"])).0, 45);
    // kill -9 and start again: the producer's batches are known from the log, so retries
    // of both are still answered as duplicates, and its next batch is taken.
    drop(stream);
    server.kill();
    let server = Server::start(dir.path());
    let mut stream = TcpStream::connect(server.kafka.as_deref().unwrap()).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(30)))
        .unwrap();
    assert_eq!(send(&mut stream, &produce(2, &["c"])), (0, 2));
    assert_eq!(send(&mut stream, &first), (0, 0));
    assert_eq!(send(&mut stream, &produce(9, &["z"])).0, 45);
    assert_eq!(send(&mut stream, &produce(3, &["d"])), (0, 3));
    let client = admin(&server);
    let values: Vec<Vec<u8>> = read_all(&client, "once")
        .await
        .into_iter()
        .map(|r| r.value_bytes().to_vec())
        .collect();
    assert_eq!(values, ["a", "b", "c", "d"].map(|v| v.as_bytes().to_vec()));
}

/// The resident memory of a process, from /proc.
fn resident_bytes(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let line = status.lines().find(|l| l.starts_with("VmRSS:")).unwrap();
    let kib: u64 = line.split_whitespace().nth(1).unwrap().parse().unwrap();
    kib * 1024
}

/// 1,000 connections that send nothing cost the engine under 50 MiB, and the listener goes on
/// serving meanwhile.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_thousand_idle_connections_cost_little_memory() {
    use std::io::BufRead;
    const CONNECTIONS: usize = 1_000;
    const MEMORY_BYTES_MAX: u64 = 50 << 20;
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(dir.path());
    let client = admin(&server);
    create_topic(&client, "busy", 1).await;
    // Warm: a client's first connections allocate what every later one reuses.
    kafka_client(&server, &["read", "busy"]);
    let before = resident_bytes(server.child.id());
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("../tests/support/kafka_client.py");
    let mut holder = Command::new(python())
        .arg(script)
        .arg(server.kafka.as_deref().unwrap())
        .args(["idle", "-", &CONNECTIONS.to_string()])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let mut said = String::new();
    std::io::BufReader::new(holder.stdout.take().unwrap())
        .read_line(&mut said)
        .unwrap();
    assert_eq!(said.trim(), format!("open {CONNECTIONS}"));
    // The engine accepts connections in the order they came: once a later client is served,\n    // all of them were accepted, each a task the engine holds.
    let out = kafka_client(&server, &["read", "busy"]);
    assert_eq!(out["records"], serde_json::json!([]));
    let during = resident_bytes(server.child.id());
    eprintln!(
        "{CONNECTIONS} idle connections: {:.1} MiB more resident memory",
        during.saturating_sub(before) as f64 / (1 << 20) as f64
    );
    assert!(
        during.saturating_sub(before) < MEMORY_BYTES_MAX,
        "{before} bytes before, {during} with {CONNECTIONS} idle connections"
    );
    drop(holder.stdin.take());
    holder.wait().unwrap();
}

/// With `[kafka] sasl_plain_users`, a client is served only once it authenticates with
/// SASL/PLAIN as one of them; a wrong password or no SASL gets nothing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sasl_plain_admits_only_the_configured_users() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start_with_env(
        dir.path(),
        &[("SLUICE_KAFKA__SASL_PLAIN_USERS", "{alice=\"s3cret\"}")],
    );
    create_topic(&admin(&server), "guarded", 1).await;
    let out = kafka_client(&server, &["sasl", "guarded", "alice", "s3cret"]);
    assert_eq!(out["right"]["ok"], "['guarded']", "{out}");
    assert!(out["wrong"]["error"].is_string(), "{out}");
    assert!(out["none"]["error"].is_string(), "{out}");
    let log = server.log();
    assert!(log.contains("before authenticating"), "{log}");
}

/// A plugin group's output topic and its dead-letter topic read the same through the Kafka
/// door, with `read_committed` and with `read_uncommitted`, as through HTTP: the records, the
/// `sluice.plugin` header on outputs and the `sluice.dlq.*` headers on the dead letter. (A
/// plugin's outputs are appended only after their transaction committed, and a fetch reads
/// only up to the high watermark, so neither level can show an effect later taken back.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn plugin_outputs_and_dead_letters_read_the_same_through_kafka_at_both_isolation_levels() {
    use crate::common::plugins::{header, record, request, wait_for};
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(dir.path());
    let client = admin(&server);
    create_topic(&client, "visits", 2).await;
    create_topic(&client, "counts", 2).await;
    let by_user = request(
        "counter",
        "visits",
        &["counts"],
        &[("output", "counts"), ("field", "user")],
    );
    client.deploy("c", &by_user).await.unwrap();
    let records: Vec<Record> = (0..30)
        .map(|i| match i {
            7 => record("bob", r#"{"name": "bob"}"#), // no `user`: a dead letter
            _ => record(
                &format!("u{}", i % 4),
                &format!(r#"{{"user": "u{}"}}"#, i % 4),
            ),
        })
        .collect();
    client.produce("visits", None, &records).await.unwrap();
    wait_for(&client, "c", "every visit counted", |d| {
        d.total_lag == 0 && d.outbox_pending == 0 && d.dead_letters == 1
    })
    .await;
    for topic in ["counts", "c.dlq"] {
        let over_http = through_http(&client, topic).await;
        for isolation in ["read_committed", "read_uncommitted"] {
            let out = kafka_client(&server, &["read", topic, isolation]);
            assert_eq!(
                out["records"].as_array().unwrap(),
                &over_http,
                "{topic} with {isolation}"
            );
        }
    }
    let letters = read_all(&client, "c.dlq").await;
    assert_eq!(header(&letters[0], "sluice.dlq.topic"), Some("visits"));
    let counts = read_all(&client, "counts").await;
    assert_eq!(counts.len(), 29);
    assert_eq!(header(&counts[0], "sluice.plugin"), Some("c/1"));
}
