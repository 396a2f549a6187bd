//! `sluice consume --share-group G`: consume as one of any number of competing members of a
//! share group (a queue). Each fetched record is locked to this member; what is printed is
//! acknowledged, and what is fetched but not printed (past --max-records) is released at once
//! for another member.

use std::io::Write;

use anyhow::Context;

use super::client::Client;
use crate::server::api::{AckAction, ShareAck, ShareAckRequest, ShareFetchRequest, SharedRecord};

/// How long a fetch waits for a record while following.
const FOLLOW_WAIT_MS: u64 = 1_000;
/// How long a fetch waits before the command decides the queue is drained.
const DRAIN_WAIT_MS: u64 = 200;

pub struct ShareConsume<'a> {
    pub topic: &'a str,
    pub group: &'a str,
    pub partition: Option<u32>,
    pub follow: bool,
    pub max_records: Option<u64>,
    pub prefetch: usize,
    pub json: bool,
    pub print_key: bool,
}

pub async fn run(client: &Client, options: ShareConsume<'_>) -> anyhow::Result<()> {
    let member_id = format!(
        "sluice-cli-{}-{:08x}",
        std::process::id(),
        rand::random::<u32>()
    );
    let result = consume(client, &options, &member_id).await;
    // Leaving releases anything still locked to this member at once.
    let left = client.share_leave(options.group, &member_id).await;
    result.and(left.map_err(anyhow::Error::from))
}

async fn consume(
    client: &Client,
    options: &ShareConsume<'_>,
    member_id: &str,
) -> anyhow::Result<()> {
    let mut remaining = options.max_records.unwrap_or(u64::MAX);
    while remaining > 0 {
        let wait_ms = if options.follow {
            FOLLOW_WAIT_MS
        } else {
            DRAIN_WAIT_MS
        };
        let request = ShareFetchRequest {
            member_id: member_id.to_string(),
            topic: options.topic.to_string(),
            partitions: options.partition.map(|p| vec![p]),
            max_records: Some(
                options
                    .prefetch
                    .min(remaining.min(usize::MAX as u64) as usize),
            ),
            lock_ms: None,
            wait_ms: Some(wait_ms),
            acks: Vec::new(),
        };
        let fetched = client
            .share_fetch(options.group, &request)
            .await
            .with_context(|| format!("fetching from share group {}", options.group))?;
        if fetched.records.is_empty() {
            if options.follow {
                continue;
            }
            return Ok(());
        }
        let mut done = Vec::with_capacity(fetched.records.len());
        let mut out = std::io::stdout().lock();
        for record in &fetched.records {
            let action = if remaining == 0 {
                AckAction::Release
            } else {
                print(&mut out, record, options)?;
                remaining -= 1;
                AckAction::Accept
            };
            let r = &record.record;
            done.push((
                record.topic.as_str(),
                r.partition.unwrap_or(0),
                r.offset.unwrap_or(0),
                action,
            ));
        }
        let acks = ShareAck::runs(done);
        out.flush()?;
        drop(out);
        let answer = client
            .share_ack(
                options.group,
                &ShareAckRequest {
                    member_id: member_id.to_string(),
                    acks,
                },
            )
            .await?;
        for refused in &answer.refused {
            // Its lock ended before the acknowledgement: another member gets it again.
            tracing::warn!(
                topic = %refused.topic, partition = refused.partition, offset = refused.offset,
                reason = ?refused.reason, "acknowledgement refused; the record will be delivered again"
            );
        }
    }
    Ok(())
}

fn print(
    out: &mut impl Write,
    record: &SharedRecord,
    options: &ShareConsume<'_>,
) -> anyhow::Result<()> {
    if options.json {
        serde_json::to_writer(&mut *out, record)?;
    } else {
        let r = &record.record;
        let decoded = r
            .to_record(0)
            .map_err(|e| anyhow::anyhow!("the engine sent a record that does not decode: {e}"))?;
        if options.print_key {
            out.write_all(decoded.key.as_deref().unwrap_or_default())?;
            out.write_all(b"\t")?;
        }
        out.write_all(decoded.value_bytes())?;
    }
    out.write_all(b"\n")?;
    Ok(())
}
