//! The Kafka protocol door: a TCP listener beside the HTTP API, on the same log, so that
//! existing Kafka clients and tools produce to and consume from Sluice. Messages are decoded
//! and encoded by the `kafka-protocol` crate; this module owns the connections and maps each
//! API onto the log.
//!
//! # Layout
//!
//! - `connection`: one client connection: length-prefixed frames read within
//!   `max_frame_bytes`, requests answered one at a time and in order, as the protocol asks.
//! - `apis`: the APIs and versions served (what ApiVersions announces) and the dispatch.
//! - `metadata`: Metadata: this engine as the only broker, leader of every partition.
//! - `produce`, `fetch`, `list_offsets`, `admin`: Produce, Fetch (with long poll),
//!   ListOffsets, CreateTopics / DeleteTopics; `alter_configs`: IncrementalAlterConfigs of
//!   topics and of share groups.
//! - `groups`, `group_apis`: consumer groups (the classic protocol) and their offsets, which
//!   are the engine's (`sluice group describe` shows them).
//! - `producers`: idempotent producers: InitProducerId, and the sequence check of each
//!   producer's batches per partition.
//! - `share_groups`: share groups (KIP-932) for `KafkaShareConsumer`: ShareGroupHeartbeat,
//!   ShareFetch and ShareAcknowledge over the engine's share groups; `topic_ids`: the stable
//!   topic ids those APIs and Metadata v10+ name topics by; `share_group_admin`:
//!   ShareGroupDescribe, DescribeShareGroupOffsets and share groups in ListGroups, for
//!   `kafka-share-groups.sh` and the Admin client.
//! - `sasl`: SASL/PLAIN, required when `[kafka] sasl_plain_users` names users.
//! - `records`: Kafka record batches (v2) to and from the log's records; `decompress`: their
//!   compressions, read within a bound.
//!
//! Versions are capped where Kafka moved from topic names to topic ids (Fetch 13, Produce 13):
//! the log names topics, and every client of Kafka 4 still speaks the older versions. Metadata
//! goes to v12 with ids derived from the names (`topic_ids`), which share consumers need.

mod admin;
mod alter_configs;
mod apis;
mod connection;
mod decompress;
mod fetch;
#[doc(hidden)]
pub mod fuzzing;
mod group_apis;
mod groups;
mod list_offsets;
mod metadata;
mod produce;
mod producers;
mod records;
mod sasl;
mod share_group_admin;
mod share_groups;
#[cfg(test)]
mod tests;
mod topic_ids;

use std::net::SocketAddr;
use std::sync::Arc;

use tokio::net::TcpListener;
use tokio::sync::{Semaphore, watch};

pub(crate) use groups::KafkaGroups;
pub(crate) use producers::{ProducerIds, Producers};
pub(crate) use share_groups::KafkaShareGroups;

use crate::config::KafkaSettings;
use crate::groups::Coordinator;
use crate::log::{Log, LogError};

/// The broker id this engine answers as: the only broker of its cluster.
const NODE_ID: i32 = 0;
/// File in the data directory holding the cluster id announced in Metadata.
const CLUSTER_ID_FILE: &str = "kafka.cluster_id";

/// What every connection shares.
pub(crate) struct KafkaContext {
    pub log: Arc<Log>,
    /// The engine's committed offsets, shared with the HTTP door's groups.
    pub offsets: Arc<Coordinator>,
    pub kafka_groups: KafkaGroups,
    /// The engine's share groups, shared with the HTTP door.
    pub shares: Arc<crate::queues::ShareGroups>,
    /// Share-group members and share sessions of Kafka clients.
    pub share_groups: KafkaShareGroups,
    pub producer_ids: ProducerIds,
    pub producers: Producers,
    pub settings: KafkaSettings,
    /// The host and port announced in Metadata.
    pub advertised: (String, i32),
    pub cluster_id: String,
    /// Largest fetch response, the HTTP API's cap too.
    pub max_fetch_bytes: u64,
    /// Longest a fetch may wait for records.
    pub max_wait_ms: u64,
    /// The engine's budget of request bytes in memory, shared with the HTTP door.
    pub inflight: Arc<Semaphore>,
    /// How long answered requests took, by API, for `/metrics`.
    pub request_seconds: prometheus::HistogramVec,
    /// The size of that budget, `[server] max_inflight_bytes`.
    pub max_inflight_bytes: u64,
    /// Longest a request frame may send nothing, or an answer go unread, or a frame wait for
    /// room in the budget: `[server] request_body_timeout_ms`.
    pub request_timeout: std::time::Duration,
    pub shutdown: watch::Receiver<bool>,
}

/// Binds the Kafka listener; the returned address is the one bound (its port chosen by the
/// kernel when the configured one is 0).
pub(crate) async fn bind(settings: &KafkaSettings) -> std::io::Result<(TcpListener, SocketAddr)> {
    let listener = TcpListener::bind(settings.listen).await?;
    let addr = listener.local_addr()?;
    Ok((listener, addr))
}

/// The cluster id of the data directory, made on first start.
pub(crate) fn cluster_id(data_dir: &std::path::Path) -> Result<String, LogError> {
    use base64::Engine;
    let path = data_dir.join(CLUSTER_ID_FILE);
    match std::fs::read_to_string(&path) {
        Ok(id) if !id.trim().is_empty() => return Ok(id.trim().to_string()),
        Ok(_) => {}
        Err(error) if error.kind() == std::io::ErrorKind::NotFound => {}
        Err(error) => return Err(LogError::io(&path, error)),
    }
    // As Kafka's: 16 random bytes in URL-safe base64 (22 characters).
    let id = base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(rand::random::<[u8; 16]>());
    crate::log::write_atomically(&path, id.as_bytes())?;
    Ok(id)
}

/// Serves Kafka clients on `listener` until shutdown: each connection on a task of its own,
/// at most `max_connections` at once.
pub(crate) fn serve(
    listener: TcpListener,
    context: Arc<KafkaContext>,
) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let slots = Arc::new(Semaphore::new(context.settings.max_connections as usize));
        let mut refusals = Refusals::default();
        let mut shutdown = context.shutdown.clone();
        loop {
            let accepted = tokio::select! {
                accepted = listener.accept() => accepted,
                _ = shutdown.wait_for(|stop| *stop) => return,
            };
            let (stream, peer) = match accepted {
                Ok(accepted) => accepted,
                Err(error) => {
                    tracing::warn!(%error, "kafka: cannot accept a connection");
                    continue;
                }
            };
            let Ok(slot) = slots.clone().try_acquire_owned() else {
                refusals.refused(peer, context.settings.max_connections);
                continue; // dropped: closed at once
            };
            let context = context.clone();
            tokio::spawn(async move {
                connection::serve(stream, peer, &context).await;
                drop(slot);
            });
        }
    })
}

/// Connections refused past `max_connections`, logged at most once per
/// `REFUSAL_LOG_INTERVAL_MS` with how many there were, so a flood does not flood the log.
#[derive(Default)]
struct Refusals {
    since_logged: u64,
    logged_at: Option<std::time::Instant>,
}

const REFUSAL_LOG_INTERVAL_MS: u64 = 1_000;

impl Refusals {
    fn refused(&mut self, peer: SocketAddr, limit: u32) {
        self.since_logged += 1;
        let interval = std::time::Duration::from_millis(REFUSAL_LOG_INTERVAL_MS);
        if self.logged_at.is_some_and(|at| at.elapsed() < interval) {
            return;
        }
        tracing::warn!(
            %peer,
            limit,
            refused = self.since_logged,
            "kafka: connections refused: max_connections are open (the count since the last such line; the peer is the latest)"
        );
        self.since_logged = 0;
        self.logged_at = Some(std::time::Instant::now());
    }
}

/// The Kafka error code for a log error, with the message clients show.
fn error_code(error: &LogError) -> i16 {
    use kafka_protocol::ResponseError as Kafka;
    match error {
        LogError::UnknownTopic(_) | LogError::UnknownPartition { .. } => {
            Kafka::UnknownTopicOrPartition.code()
        }
        LogError::RecordTooLarge { .. } => Kafka::MessageTooLarge.code(),
        LogError::OffsetOutOfRange { .. } => Kafka::OffsetOutOfRange.code(),
        LogError::TopicExists(_) => Kafka::TopicAlreadyExists.code(),
        LogError::InvalidTopicName(_) => Kafka::InvalidTopicException.code(),
        LogError::InvalidConfig(_) => Kafka::InvalidConfig.code(),
        LogError::DiskFull(_) | LogError::OpenFileBudget { .. } => Kafka::KafkaStorageError.code(),
        _ => Kafka::UnknownServerError.code(),
    }
}
