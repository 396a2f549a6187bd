//! Why a worker stops processing: an interruption from the control plane, or a failure on
//! the engine's side (not the plugin's), which the worker retries.

use super::SandboxError;
use crate::log::{LogError, batch};
use crate::runtime::plugin_cache::LoadError;
use crate::txn::StoreError;
use crate::txn::outbox::OutboxError;

/// Why processing stopped before it finished.
pub(super) enum Interrupt {
    /// The engine is stopping or the group is undeployed.
    Stop,
    /// The deployment changed (new version, pause, rollback): start over from the last commit.
    Changed,
    /// The engine could not do its part (a full disk, a missing output topic): retry later.
    /// Boxed: the interruptions that happen every batch (none) stay small.
    Engine(Box<EngineError>),
}

/// What the engine could not do for a group: its own part, not the plugin's (a full disk, a
/// missing output topic, an unreadable store). The worker retries later.
#[derive(Debug, thiserror::Error)]
pub enum EngineError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    Log(#[from] LogError),
    #[error("{what}: {source}")]
    Topic {
        what: String,
        #[source]
        source: LogError,
    },
    #[error("partition {partition}: {source}")]
    Batch {
        partition: u32,
        #[source]
        source: batch::BatchError,
    },
    #[error("dead-letter topic at offset {offset}: {source}")]
    DeadLetters {
        offset: u64,
        #[source]
        source: batch::BatchError,
    },
    #[error("version {version} cannot be loaded: {source}")]
    Load {
        version: u32,
        #[source]
        source: LoadError,
    },
    #[error("version {version} does not start: {source}")]
    Start {
        version: u32,
        #[source]
        source: SandboxError,
    },
    #[error(
        "version {version} emitted to topic `{topic}`, which is not an output topic of the group (it has {outputs:?}); deploy again with --output-topic {topic}"
    )]
    NotAnOutput {
        version: u32,
        topic: String,
        outputs: Vec<String>,
    },
    #[error("outbox entry {sequence} is unreadable: {source}")]
    Outbox {
        sequence: u64,
        #[source]
        source: OutboxError,
    },
}

impl EngineError {
    pub(super) fn topic(what: impl Into<String>, source: LogError) -> EngineError {
        EngineError::Topic {
            what: what.into(),
            source,
        }
    }
}

impl From<EngineError> for Interrupt {
    fn from(error: EngineError) -> Interrupt {
        Interrupt::Engine(Box::new(error))
    }
}
