//! Dead letters: a poison record goes to the group's dead-letter topic with why, which
//! version and how many attempts in its headers, and `dlq replay` puts them through the
//! plugin again with their original coordinates.

use std::sync::Arc;

use bytes::Bytes;

use super::error::{EngineError, Interrupt};
use super::{Input, READ_BYTES, Worker};
use crate::log::headers::{
    DLQ_ATTEMPTS, DLQ_ERROR, DLQ_OFFSET, DLQ_PARTITION, DLQ_PREFIX, DLQ_TOPIC, DLQ_VERSION,
};
use crate::log::{Header, Record, batch};
use crate::runtime::SandboxError;
use crate::runtime::deployment::{Delivery, dlq_topic};
use crate::txn::state::StateWrites;

/// Where a dead letter was read from.
pub(crate) struct Origin<'a> {
    pub topic: &'a str,
    pub partition: u32,
    pub offset: u64,
}

/// The dead letter of `record`: the record with why it failed, under which version, after how
/// many attempts and where it was read from in `sluice.dlq.*` headers.
pub(crate) fn letter(
    record: &Record,
    origin: &Origin<'_>,
    version: u32,
    attempts: u32,
    error: &SandboxError,
) -> Record {
    let mut headers = record.headers.clone();
    let text = |s: String| Some(Bytes::from(s));
    headers.extend([
        Header {
            key: DLQ_ERROR.into(),
            value: text(error.to_string()),
        },
        Header {
            key: DLQ_VERSION.into(),
            value: text(version.to_string()),
        },
        Header {
            key: DLQ_ATTEMPTS.into(),
            value: text(attempts.to_string()),
        },
        Header {
            key: DLQ_TOPIC.into(),
            value: text(origin.topic.to_string()),
        },
        Header {
            key: DLQ_PARTITION.into(),
            value: text(origin.partition.to_string()),
        },
        Header {
            key: DLQ_OFFSET.into(),
            value: text(origin.offset.to_string()),
        },
    ]);
    Record {
        timestamp: record.timestamp,
        key: record.key.clone(),
        value: record.value.clone(),
        headers,
    }
}

impl Worker {
    /// Sends one record to the group's dead-letter topic and commits past it.
    pub(super) fn dead_letter(
        &mut self,
        input: &Input,
        (offset, record): &(u64, Record),
        error: &SandboxError,
        failures: u32,
    ) -> Result<(), Interrupt> {
        let version = self
            .sandbox
            .as_ref()
            .map_or(self.deployment.active_version, |(v, _)| *v);
        let (topic, partition, attempts) = match input {
            Input::Log { partition } => (self.deployment.topic.clone(), *partition, failures),
            Input::Replay {
                topic,
                partition,
                attempts,
                ..
            } => (topic.clone(), *partition, attempts + failures),
        };
        let letter = letter(
            record,
            &Origin {
                topic: &topic,
                partition,
                offset: *offset,
            },
            version,
            attempts,
            error,
        );
        let dlq = dlq_topic(&self.context.group);
        self.outbox.push(Arc::from(dlq.as_str()), 0, letter);
        // As the outputs of a batch (see `call`): only at-least-once appends before the commit.
        if self.deployment.limits.delivery == Delivery::AtLeastOnce {
            self.deliver_staged()?;
        }
        let message = format!(
            "record {topic}/{partition}@{offset} sent to `{dlq}` after {attempts} failed calls: {error}"
        );
        tracing::warn!(version, "{message}");
        self.note("warn", &message);
        self.context.shared.update(|s| s.dead_letters += 1);
        self.commit(input, offset + 1, (StateWrites::new(), 0))
    }

    /// Puts the next dead letter of a requested replay through the plugin.
    pub(super) fn replay_step(&mut self) -> Result<bool, Interrupt> {
        if let Some(end) = self.replay_request.take() {
            let cursor = self.replay.map_or(0, |(cursor, _)| cursor);
            self.replay = Some((cursor, end));
            self.dirty = true;
            self.flush()?;
        }
        let Some((cursor, end)) = self.replay else {
            return Ok(false);
        };
        if cursor >= end {
            return Ok(false);
        }
        let dlq = dlq_topic(&self.context.group);
        let partition = self
            .context
            .log
            .topic(&dlq)
            .and_then(|t| t.partition(0))
            .map_err(|e| EngineError::topic("dead-letter topic", e))?;
        let cursor = cursor.max(partition.log_start_offset());
        let fetched = partition
            .read(cursor, READ_BYTES)
            .map_err(EngineError::from)?;
        let letters = batch::decode_all(&Bytes::from(fetched.data), cursor).map_err(|source| {
            EngineError::DeadLetters {
                offset: cursor,
                source,
            }
        })?;
        let Some((dlq_offset, letter)) = letters.into_iter().next() else {
            return Ok(false);
        };
        let header = |name: &str| {
            letter
                .headers
                .iter()
                .rev()
                .find(|h| h.key == name)
                .and_then(|h| std::str::from_utf8(h.value_bytes()).ok())
                .map(str::to_string)
        };
        let input = Input::Replay {
            topic: header(DLQ_TOPIC).unwrap_or_else(|| self.deployment.topic.clone()),
            partition: header(DLQ_PARTITION)
                .and_then(|p| p.parse().ok())
                .unwrap_or(0),
            dlq_offset,
            end,
            attempts: header(DLQ_ATTEMPTS)
                .and_then(|a| a.parse().ok())
                .unwrap_or(0),
        };
        let source_offset = header(DLQ_OFFSET)
            .and_then(|o| o.parse().ok())
            .unwrap_or(dlq_offset);
        let original = Record {
            headers: letter
                .headers
                .iter()
                .filter(|h| !h.key.starts_with(DLQ_PREFIX))
                .cloned()
                .collect(),
            ..letter
        };
        let attempts = self.deployment.limits.max_attempts;
        self.process(&input, &[(source_offset, original)], attempts)?;
        Ok(true)
    }
}
