//! The reserved header names: the engine writes headers named `sluice.*` on records it
//! produces itself (plugin output, dead letters), and readers (the archive, `dlq replay`,
//! crash recovery) look for them by these names. Producers should not use the prefix.

/// On every record a plugin emits: `<group>/<version>` that produced it. The archive records
/// the values it sees in a file's metadata (`sluice.produced_by`).
pub const PRODUCED_BY: &str = "sluice.plugin";

/// On the first record a commit appended to a partition: `<group>/<outbox sequence>`.
/// Recovery looks for it to append each committed outbox entry once.
pub const OUTBOX_MARKER: &str = "sluice.outbox";

/// The prefix of the headers the engine adds to a dead letter; a replay strips them.
pub const DLQ_PREFIX: &str = "sluice.dlq.";
/// On a dead letter: why the plugin failed it.
pub const DLQ_ERROR: &str = "sluice.dlq.error";
/// On a dead letter: the plugin version that failed it.
pub const DLQ_VERSION: &str = "sluice.dlq.plugin-version";
/// On a dead letter: how many calls failed on it.
pub const DLQ_ATTEMPTS: &str = "sluice.dlq.attempts";
/// On a dead letter of a share group: the group that dead-lettered it.
pub const DLQ_GROUP: &str = "sluice.dlq.group";
/// On a dead letter: the topic it was read from.
pub const DLQ_TOPIC: &str = "sluice.dlq.topic";
/// On a dead letter: the partition it was read from.
pub const DLQ_PARTITION: &str = "sluice.dlq.partition";
/// On a dead letter: its offset in that partition.
pub const DLQ_OFFSET: &str = "sluice.dlq.offset";
