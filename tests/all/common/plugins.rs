//! Helpers for tests that deploy plugins: the first-party plugins (built for
//! wasm32-wasip2 by ./scripts/test), an admin client, topics, deploy requests, polling a
//! group and reading topics back.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use base64::Engine;
use base64::engine::general_purpose::STANDARD as BASE64;
use bytes::Bytes;
use sluice::cli::client::{Client, ClientError, Position};
use sluice::log::{Header, Record};
use sluice::runtime::{DeploySpec, LimitOverrides, PluginDescription, StartFrom};
use sluice::server::api::{CreateTopic, DeployRequest};

use super::Server;

pub fn wasm(name: &str) -> Vec<u8> {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../plugins/target/wasm32-wasip2/release")
        .join(format!("{name}.wasm"));
    std::fs::read(&path).unwrap_or_else(|e| {
        panic!(
            "{}: {e}; build the plugins first (./scripts/test does)",
            path.display()
        )
    })
}

pub fn token(server: &Server) -> String {
    std::fs::read_to_string(server.dir.join("admin.token")).expect("the engine wrote its token")
}

pub fn admin(server: &Server) -> Client {
    Client::new(&server.url).with_token(Some(token(server)))
}

pub async fn create_topic(client: &Client, name: &str, partitions: u32) {
    client
        .create_topic(&CreateTopic {
            name: name.into(),
            partitions,
            config: BTreeMap::new(),
        })
        .await
        .unwrap();
}

pub fn request(
    plugin: &str,
    topic: &str,
    outputs: &[&str],
    config: &[(&str, &str)],
) -> DeployRequest {
    DeployRequest {
        spec: DeploySpec {
            topic: topic.into(),
            output_topics: outputs.iter().map(|s| s.to_string()).collect(),
            config: config
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
            from: Some(StartFrom::Earliest),
            limits: LimitOverrides::default(),
        },
        wasm_base64: BASE64.encode(wasm(plugin)),
    }
}

pub fn status_of(error: &ClientError) -> u16 {
    error
        .server()
        .unwrap_or_else(|| panic!("not a server error: {error:#}"))
        .status
        .as_u16()
}

/// Polls the group's description until `done` holds (a minute at most).
pub async fn wait_for(
    client: &Client,
    group: &str,
    what: &str,
    done: impl Fn(&PluginDescription) -> bool,
) -> PluginDescription {
    let deadline = Instant::now() + Duration::from_secs(90);
    loop {
        let description = client.describe_plugin(group).await.unwrap();
        if done(&description) {
            return description;
        }
        assert!(
            Instant::now() < deadline,
            "group {group}: gave up waiting for {what}; last seen {description:#?}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// The records of each partition of a topic, in offset order.
pub async fn read_partitions(client: &Client, topic: &str) -> Vec<Vec<Record>> {
    let partitions = client.describe_topic(topic).await.unwrap().partitions;
    let mut out = Vec::new();
    for p in partitions {
        let mut records = Vec::new();
        let mut offset = p.log_start_offset;
        while offset < p.high_watermark {
            let fetch = client
                .fetch(topic, p.partition, Position::Offset(offset), 1 << 20, 0)
                .await
                .unwrap();
            offset = fetch.next_offset;
            records.extend(fetch.records.into_iter().map(|(_, r)| r));
        }
        out.push(records);
    }
    out
}

/// Every record of a topic, partition after partition.
pub async fn read_all(client: &Client, topic: &str) -> Vec<Record> {
    read_partitions(client, topic).await.concat()
}

pub fn header<'a>(record: &'a Record, name: &str) -> Option<&'a str> {
    record
        .headers
        .iter()
        .rev()
        .find(|h| h.key == name)
        .and_then(|h| std::str::from_utf8(h.value_bytes()).ok())
}

pub fn record(key: &str, value: &str) -> Record {
    Record {
        timestamp: 0,
        key: Some(Bytes::from(key.to_string())),
        value: Some(Bytes::from(value.to_string())),
        headers: vec![Header {
            key: "origin".into(),
            value: Some(Bytes::from_static(b"test")),
        }],
    }
}

/// A group `copy` of the `misbehave` plugin in `trap` mode on `topic` (to `out`, both
/// created here), failing a call at most `max_attempts` times, deployed and paused: what is
/// produced next waits, as lag.
pub async fn paused_trap_group(client: &Client, topic: &str, partitions: u32, max_attempts: u32) {
    create_topic(client, topic, partitions).await;
    create_topic(client, "out", 1).await;
    let mut deploy = request("misbehave", topic, &["out"], &[("mode", "trap")]);
    deploy.spec.limits.max_attempts = Some(max_attempts);
    deploy.spec.limits.retry_backoff_ms = Some(10);
    client.deploy("copy", &deploy).await.unwrap();
    client
        .plugin_action(
            "copy",
            sluice::cli::client::PluginAction::Pause,
            &sluice::server::api::RollbackRequest::default(),
        )
        .await
        .unwrap();
    wait_for(client, "copy", "paused", |d| d.status == "paused").await;
}
