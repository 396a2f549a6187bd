//! What can go wrong in cluster mode: the Kafka cluster refusing or failing a request, a
//! changelog or deployment record that cannot be read, or a plugin that cannot be loaded.

use rdkafka::error::KafkaError;

use crate::runtime::{DeployError, RuntimeError, SandboxError};

#[derive(Debug, thiserror::Error)]
pub enum ClusterError {
    #[error("[cluster] bootstrap_servers is empty: name one or more brokers of the Kafka cluster")]
    NoBootstrapServers,
    #[error("cannot use the Kafka cluster at {servers}: {reason}")]
    Unreachable { servers: String, reason: String },
    #[error("Kafka client ({what}): {source}")]
    Kafka {
        what: String,
        #[source]
        source: KafkaError,
    },
    #[error("topic `{topic}` does not exist on the Kafka cluster")]
    UnknownTopic { topic: String },
    #[error("cannot create topic `{topic}` on the Kafka cluster: {reason}")]
    CreateTopic { topic: String, reason: String },
    #[error(
        "changelog `{topic}` partition {partition} has no record of input offset {offset} after {waited_ms} ms; its state cannot be restored"
    )]
    RestoreStalled {
        topic: String,
        partition: i32,
        offset: i64,
        waited_ms: u64,
    },
    #[error("changelog `{topic}` partition {partition} offset {offset}: {reason}")]
    Changelog {
        topic: String,
        partition: i32,
        offset: i64,
        reason: String,
    },
    #[error("deployment record of group `{group}` is unreadable: {source}")]
    Deployment {
        group: String,
        #[source]
        source: serde_json::Error,
    },
    #[error("component {digest} is not complete in `{topic}` ({found} of {expected} chunks)")]
    MissingComponent {
        digest: String,
        topic: String,
        found: usize,
        expected: usize,
    },
    /// What the single engine would also refuse (an emitted record to a topic that is not
    /// an output).
    #[error(transparent)]
    Engine(#[from] crate::runtime::EngineError),
    #[error("not supported in cluster mode: {0}")]
    Unsupported(String),
    #[error(
        "the coordinator of consumer group `{group}` no longer lists this worker ({client_id}) as a member, though it holds partitions; joining again"
    )]
    NotAMember { group: String, client_id: String },
    #[error("the change of group `{group}` was written but not read back within {waited_ms} ms")]
    NotApplied { group: String, waited_ms: u64 },
    #[error(
        "the deployments topic was not read up to offset {end} within {waited_ms} ms; the change was not made"
    )]
    NotCaughtUp { end: i64, waited_ms: u64 },
    #[error(transparent)]
    Runtime(#[from] RuntimeError),
    #[error("the plugin does not start: {0}")]
    Start(#[source] SandboxError),
    #[error(transparent)]
    Deploy(#[from] DeployError),
    #[error("{what}: {source}")]
    Io {
        what: String,
        #[source]
        source: std::io::Error,
    },
}

impl ClusterError {
    /// Whether a transaction that failed with this error can be aborted and its batch read
    /// again in the same session: a Kafka error that is not fatal (a fenced producer is).
    pub(crate) fn is_abortable(&self) -> bool {
        match self {
            ClusterError::Kafka {
                source: KafkaError::Transaction(error),
                ..
            } => !error.is_fatal(),
            ClusterError::Kafka {
                source: KafkaError::MessageProduction(_) | KafkaError::Flush(_),
                ..
            } => true,
            _ => false,
        }
    }

    pub(crate) fn kafka(what: impl Into<String>) -> impl FnOnce(KafkaError) -> ClusterError {
        let what = what.into();
        move |source| ClusterError::Kafka { what, source }
    }
}
