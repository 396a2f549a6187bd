//! Topic ids (Metadata v10 and later, the share-group APIs): the log names topics and keeps
//! no id, so a topic's id is derived from the cluster id and its name, the same on every
//! start. Unlike Kafka's, it does not change when a topic is deleted and made again under
//! the same name: a client holding the old id reads the new topic.

use sha2::{Digest, Sha256};
use uuid::Uuid;

use crate::log::Log;

/// The id of topic `name` in cluster `cluster_id`.
pub(super) fn topic_id(cluster_id: &str, name: &str) -> Uuid {
    let digest = Sha256::new()
        .chain_update(b"sluice topic id\0")
        .chain_update(cluster_id.as_bytes())
        .chain_update(b"\0")
        .chain_update(name.as_bytes())
        .finalize();
    let mut bytes = [0u8; 16];
    bytes.copy_from_slice(&digest[..16]);
    // Never the zero id (no topic) nor Kafka's reserved metadata topic id (1).
    bytes[0] |= 0x80;
    Uuid::from_bytes(bytes)
}

/// The topic whose id is `id`, if any.
pub(super) fn topic_named(log: &Log, cluster_id: &str, id: Uuid) -> Option<String> {
    log.topics()
        .iter()
        .map(|t| t.name.to_string())
        .find(|name| topic_id(cluster_id, name) == id)
}
