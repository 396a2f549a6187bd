//! The group's changelog: a compacted topic, `<group>.changelog`, with one partition per
//! input partition, holding that partition's state. Every transaction that moves an input
//! partition's offset writes to the changelog partition of the same number:
//!
//! - each state write: key `s` + the state key, value the new value (a tombstone deletes);
//! - then a position record: key `p`, value the input partition's next offset, 8 bytes
//!   big-endian, the offset the same transaction commits for the consumer group.
//!
//! A worker that is assigned a partition reads the committed offset X (which waits for any
//! transaction in flight on it), then restores the state by reading the changelog partition
//! from its start, committed transactions only, until the position record that says X. The
//! state and the offset are then those of the same transaction, whatever the order in which
//! Kafka wrote the transaction's markers.

use std::time::{Duration, Instant};

use rdkafka::Message;
use rdkafka::error::KafkaError;

use super::ClusterError;
use super::client::Clients;
use super::tasks::Task;

/// First byte of a state record's key.
pub(crate) const STATE_KIND: u8 = b's';
/// The key of a position record.
pub(crate) const POSITION_KEY: &[u8] = b"p";
/// How long a poll of the changelog waits for records.
const POLL_WAIT: Duration = Duration::from_millis(200);

/// The changelog topic of a group.
pub fn changelog_topic(group: &str) -> String {
    format!("{group}.changelog")
}

/// The changelog key of a state key.
pub(crate) fn state_key(key: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(key.len() + 1);
    out.push(STATE_KIND);
    out.extend_from_slice(key);
    out
}

/// What one changelog record says.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Entry<'a> {
    State {
        key: &'a [u8],
        value: Option<&'a [u8]>,
    },
    Position(i64),
}

/// Decodes a changelog record; `None` for one that is neither kind.
pub(crate) fn decode<'a>(key: &'a [u8], value: Option<&'a [u8]>) -> Option<Entry<'a>> {
    match key.split_first() {
        Some((&STATE_KIND, state)) => Some(Entry::State { key: state, value }),
        _ if key == POSITION_KEY => {
            let bytes: [u8; 8] = value?.try_into().ok()?;
            Some(Entry::Position(i64::from_be_bytes(bytes)))
        }
        _ => None,
    }
}

/// Restores the state of input partition `partition` up to the transaction that committed
/// input offset `until` (`None`: nothing was ever committed, so the changelog is read to its
/// end). Waits at most `patience` for that transaction's records.
pub(crate) fn restore(
    clients: &Clients,
    topic: &str,
    partition: i32,
    until: Option<i64>,
    patience: Duration,
) -> Result<Task, ClusterError> {
    let mut task = Task::default();
    if until.is_none_or(|offset| offset <= 0) {
        // A partition with nothing committed has no state; a changelog left by an earlier
        // deployment of the same name is not this group's.
        return Ok(task);
    }
    let until = until.unwrap_or_default();
    let reader = clients.reader_of(topic, partition)?;
    let started = Instant::now();
    loop {
        if started.elapsed() > patience {
            return Err(ClusterError::RestoreStalled {
                topic: topic.to_string(),
                partition,
                offset: until,
                waited_ms: started.elapsed().as_millis() as u64,
            });
        }
        let message = match reader.poll(POLL_WAIT) {
            None | Some(Err(KafkaError::PartitionEOF(_))) => continue,
            Some(Err(error)) => {
                return Err(ClusterError::Kafka {
                    what: format!("restoring from `{topic}` partition {partition}"),
                    source: error,
                });
            }
            Some(Ok(message)) => message,
        };
        let offset = message.offset();
        let entry = decode(message.key().unwrap_or_default(), message.payload());
        match entry {
            Some(Entry::State { key, value }) => {
                task.apply(key.to_vec(), value.map(<[u8]>::to_vec))
            }
            Some(Entry::Position(position)) if position >= until => return Ok(task),
            Some(Entry::Position(_)) => {}
            None => {
                return Err(ClusterError::Changelog {
                    topic: topic.to_string(),
                    partition,
                    offset,
                    reason: "a record that is neither state nor position".into(),
                });
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_decode_to_what_they_encode() {
        let key = state_key(b"count/a");
        assert_eq!(
            decode(&key, Some(b"3")),
            Some(Entry::State {
                key: b"count/a",
                value: Some(b"3")
            })
        );
        assert_eq!(
            decode(&state_key(b""), None),
            Some(Entry::State {
                key: b"",
                value: None
            })
        );
        assert_eq!(
            decode(POSITION_KEY, Some(&42i64.to_be_bytes())),
            Some(Entry::Position(42))
        );
        assert_eq!(decode(POSITION_KEY, Some(b"short")), None);
        assert_eq!(decode(b"x", Some(b"1")), None);
    }
}
