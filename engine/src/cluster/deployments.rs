//! Deployments shared by every worker of a cluster. The deployment record of each group (its
//! versions, limits and whether it is paused) is the latest record under the group's name in
//! the compacted topic `_sluice_deployments`; undeploying writes a tombstone. Components are
//! kept by content in the compacted topic `_sluice_components`, cut into chunks (key
//! `<sha-256>/<index>/<count>`), and cached by each worker under its data directory. Every
//! worker reads the deployments topic from its start and follows it ([`follow`]), so a change
//! made through any worker reaches all of them.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use rdkafka::Message;
use rdkafka::consumer::Consumer;
use rdkafka::error::KafkaError;
use rdkafka::producer::{FutureProducer, FutureRecord, Producer};
use tokio::sync::watch;

use super::ClusterError;
use super::client::{Clients, REQUEST_TIMEOUT};
use crate::runtime::Deployment;

/// The compacted topic of deployment records, keyed by group.
pub const DEPLOYMENTS_TOPIC: &str = "_sluice_deployments";
/// The compacted topic of components, keyed by digest and chunk.
pub const COMPONENTS_TOPIC: &str = "_sluice_components";
/// Bytes of a component per record: under Kafka's default `message.max.bytes` (1 MiB).
const CHUNK_BYTES: usize = 512 << 10;
/// How long a poll of the deployments topic waits.
const FOLLOW_WAIT: Duration = Duration::from_millis(250);

/// Writes deployment records and components.
pub(crate) struct Publisher {
    config: rdkafka::ClientConfig,
    producer: parking_lot::Mutex<FutureProducer>,
}

impl Publisher {
    pub(crate) fn new(clients: &Clients) -> Result<Publisher, ClusterError> {
        let mut config = clients.base();
        config.set("enable.idempotence", "true").set("acks", "all");
        let producer = config
            .create()
            .map_err(ClusterError::kafka("creating the deployments producer"))?;
        Ok(Publisher {
            config,
            producer: parking_lot::Mutex::new(producer),
        })
    }

    /// Writes one record and waits until the cluster holds it. An idempotent producer that
    /// hit a fatal error (librdkafka's, e.g. a sequence lost across a broker's restart) fails
    /// every later write: it is replaced and the write tried once more.
    pub(crate) fn put(
        &self,
        topic: &str,
        key: &[u8],
        value: Option<&[u8]>,
    ) -> Result<i64, ClusterError> {
        let producer = self.producer.lock().clone();
        match put_with(&producer, topic, key, value) {
            Err(error) => match producer.client().fatal_error() {
                Some((code, why)) => {
                    tracing::warn!(?code, %why, "the deployments producer failed fatally; making a new one");
                    let renewed: FutureProducer = self
                        .config
                        .create()
                        .map_err(ClusterError::kafka("creating the deployments producer"))?;
                    *self.producer.lock() = renewed.clone();
                    put_with(&renewed, topic, key, value)
                }
                None => Err(error),
            },
            written => written,
        }
    }

    /// Stores a component's chunks (again, if they are there: the records are the same).
    pub(crate) fn put_component(&self, digest: &str, wasm: &[u8]) -> Result<(), ClusterError> {
        let chunks: Vec<&[u8]> = wasm.chunks(CHUNK_BYTES).collect();
        for (index, chunk) in chunks.iter().enumerate() {
            let key = format!("{digest}/{index}/{}", chunks.len());
            self.put(COMPONENTS_TOPIC, key.as_bytes(), Some(chunk))?;
        }
        Ok(())
    }

    /// Writes a group's deployment record, or its tombstone; the record's offset.
    pub(crate) fn put_deployment(
        &self,
        group: &str,
        deployment: Option<&Deployment>,
    ) -> Result<i64, ClusterError> {
        let value = deployment.map(|d| serde_json::to_vec(d).expect("a deployment serializes"));
        self.put(DEPLOYMENTS_TOPIC, group.as_bytes(), value.as_deref())
    }
}

/// Follows the deployments topic from its start, calling `apply` with each group's record
/// (`None` once undeployed) and publishing the next offset applied, until `stop` says so.
pub(crate) fn follow(
    clients: &Clients,
    mut apply: impl FnMut(&str, Option<Deployment>),
    applied: &watch::Sender<i64>,
    stop: &watch::Receiver<bool>,
) -> Result<(), ClusterError> {
    follow_topic(clients, DEPLOYMENTS_TOPIC, applied, stop, |key, value| {
        let group = String::from_utf8_lossy(key).to_string();
        match value.map(serde_json::from_slice::<Deployment>) {
            None => apply(&group, None),
            Some(Ok(deployment)) => apply(&group, Some(deployment)),
            Some(Err(source)) => {
                let error = ClusterError::Deployment { group, source };
                tracing::error!(%error, "skipping a deployment record");
            }
        }
    })
}

/// Follows partition 0 of a compacted `topic` from its start, calling `apply` with each
/// record's key and value and publishing the next offset applied, until `stop` says so.
pub(crate) fn follow_topic(
    clients: &Clients,
    topic: &str,
    applied: &watch::Sender<i64>,
    stop: &watch::Receiver<bool>,
    mut apply: impl FnMut(&[u8], Option<&[u8]>),
) -> Result<(), ClusterError> {
    let reader = clients.reader_of(topic, 0)?;
    while !*stop.borrow() {
        let message = match reader.poll(FOLLOW_WAIT) {
            None | Some(Err(KafkaError::PartitionEOF(_))) => continue,
            Some(Err(error)) => {
                tracing::warn!(%error, topic, "reading a shared topic");
                continue;
            }
            Some(Ok(message)) => message,
        };
        apply(message.key().unwrap_or_default(), message.payload());
        applied.send_replace(message.offset() + 1);
    }
    Ok(())
}

/// Components by digest: cached in a directory, fetched from the components topic.
pub(crate) struct Components {
    clients: Clients,
    dir: PathBuf,
}

impl Components {
    pub(crate) fn new(clients: &Clients, dir: &Path) -> Result<Arc<Components>, ClusterError> {
        std::fs::create_dir_all(dir).map_err(|source| ClusterError::Io {
            what: format!("creating the component cache {}", dir.display()),
            source,
        })?;
        Ok(Arc::new(Components {
            clients: clients.clone(),
            dir: dir.to_path_buf(),
        }))
    }

    /// Keeps a component this worker deployed, so it need not read it back.
    pub(crate) fn keep(&self, digest: &str, wasm: &[u8]) -> Result<(), ClusterError> {
        let path = self.dir.join(format!("{digest}.wasm"));
        let partial = self.dir.join(format!("{digest}.wasm.partial"));
        std::fs::write(&partial, wasm)
            .and_then(|()| std::fs::rename(&partial, &path))
            .map_err(|source| ClusterError::Io {
                what: format!("writing {}", path.display()),
                source,
            })
    }

    /// The component with this digest, from the cache or else the components topic.
    pub(crate) fn get(&self, digest: &str) -> Result<Vec<u8>, ClusterError> {
        let path = self.dir.join(format!("{digest}.wasm"));
        if let Ok(wasm) = std::fs::read(&path) {
            return Ok(wasm);
        }
        let wasm = self.fetch(digest)?;
        self.keep(digest, &wasm)?;
        Ok(wasm)
    }

    /// Reads the components topic to its end for the chunks of `digest`.
    fn fetch(&self, digest: &str) -> Result<Vec<u8>, ClusterError> {
        let reader = self.clients.reader_of(COMPONENTS_TOPIC, 0)?;
        let (_, end) = reader
            .fetch_watermarks(COMPONENTS_TOPIC, 0, REQUEST_TIMEOUT)
            .map_err(ClusterError::kafka("reading the components topic's end"))?;
        let prefix = format!("{digest}/");
        let mut chunks: BTreeMap<usize, Vec<u8>> = BTreeMap::new();
        let mut expected = 0;
        let mut position = 0;
        let deadline = std::time::Instant::now() + REQUEST_TIMEOUT;
        while position < end && std::time::Instant::now() < deadline {
            let message = match reader.poll(FOLLOW_WAIT) {
                None | Some(Err(KafkaError::PartitionEOF(_))) => continue,
                Some(Err(error)) => {
                    return Err(ClusterError::kafka("reading the components topic")(error));
                }
                Some(Ok(message)) => message,
            };
            position = message.offset() + 1;
            let key = String::from_utf8_lossy(message.key().unwrap_or_default()).to_string();
            let Some(rest) = key.strip_prefix(&prefix) else {
                continue;
            };
            let Some((index, count)) = rest.split_once('/') else {
                continue;
            };
            if let (Ok(index), Ok(count)) = (index.parse(), count.parse()) {
                expected = count;
                chunks.insert(index, message.payload().unwrap_or_default().to_vec());
            }
        }
        if expected == 0 || chunks.len() != expected {
            return Err(ClusterError::MissingComponent {
                digest: digest.to_string(),
                topic: COMPONENTS_TOPIC.to_string(),
                found: chunks.len(),
                expected,
            });
        }
        Ok(chunks.into_values().flatten().collect())
    }
}

fn put_with(
    producer: &FutureProducer,
    topic: &str,
    key: &[u8],
    value: Option<&[u8]>,
) -> Result<i64, ClusterError> {
    let mut record = FutureRecord::<[u8], [u8]>::to(topic).key(key);
    if let Some(value) = value {
        record = record.payload(value);
    }
    let what = format!("writing to `{topic}`");
    let delivery = producer
        .send_result(record)
        .map_err(|(error, _)| ClusterError::kafka(what.clone())(error))?;
    match futures::executor::block_on(delivery) {
        Ok(Ok(delivery)) => Ok(delivery.offset),
        Ok(Err((error, _))) => Err(ClusterError::kafka(what)(error)),
        Err(_canceled) => Err(ClusterError::kafka(what)(KafkaError::Canceled)),
    }
}
