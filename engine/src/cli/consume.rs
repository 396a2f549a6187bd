//! `sluice consume`: print records of a topic, either from a chosen position or as a member
//! of a consumer group (committing what it printed, so the group resumes there).

use std::collections::BTreeMap;
use std::io::Write;
use std::time::Duration;

use anyhow::Context;
use clap::{Args, ValueEnum};
use tokio::sync::mpsc;
use tokio::task::JoinSet;

use super::client::{Client, Position};
use crate::groups::{CommittedOffset, TopicPartition};
use crate::log::Record;
use crate::server::api::{CommitRequest, JoinRequest, JsonRecord};

/// The named starting points of `--from`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum StartAt {
    Beginning,
    Archive,
    End,
}

#[derive(Args)]
#[command(long_about = "\
Print records of a topic, one per line, then exit once caught up (or keep waiting with --follow).

Without --group, reading starts at --from beginning (the default: the oldest record in the
log, Kafka's earliest), --from archive (the oldest record in the topic's Parquet archive, then
on into the log), --from end, --offset N (in every chosen partition; an offset older than the log is read from
the archive) or --timestamp T (the first record at or after T, in milliseconds since the epoch
or RFC 3339 like 2026-11-23T10:00:00Z).

With --group G, the command joins consumer group G: the engine assigns it a share of the
partitions (shared with other members of G), reading starts where the group last committed
(else at the --from-* position), and what was printed is committed, so the next run of the
group continues after it. Delivery is at-least-once: after a crash or rebalance some records
may print again, none are skipped.

With --share-group G, the command is one of any number of competing members of share group
G (a queue: docs/queues.md). Every partition is shared; each record goes to one member at a
time, locked to it; the records printed are acknowledged, and a record whose member dies is
delivered again to another once its lock ends. Without --follow it exits when no record is
left to take.

Examples:
    sluice consume orders --print-key
    sluice consume orders --partition 1 --offset 1000 --max-records 10
    sluice consume orders --timestamp 2026-11-23T10:00:00Z --format json
    sluice consume orders --group billing --follow
    sluice consume jobs --share-group workers --follow")]
pub struct ConsumeArgs {
    topic: String,
    /// Only this partition (default: all).
    #[arg(long, short)]
    partition: Option<u32>,
    /// Start at the first record still in the log (the default).
    #[arg(long, conflicts_with_all = ["from_end", "offset", "timestamp", "from_archive"])]
    from_beginning: bool,
    /// Start at the first record of the topic's archive (records retention deleted from the
    /// log but archived to Parquet), then continue into the log.
    #[arg(long, conflicts_with_all = ["from_end", "offset", "timestamp"])]
    from_archive: bool,
    /// Start after the last record: print only new ones (useful with --follow).
    #[arg(long, conflicts_with_all = ["offset", "timestamp"])]
    from_end: bool,
    /// Where to start, in one option: beginning (the oldest record in the log, Kafka's
    /// earliest), archive (the oldest in the topic's Parquet archive, then the log) or end;
    /// the same as --from-beginning, --from-archive and --from-end.
    #[arg(long, value_enum, conflicts_with_all = ["from_beginning", "from_archive", "from_end", "offset", "timestamp"])]
    from: Option<StartAt>,
    /// Start at this offset.
    #[arg(long, conflicts_with = "timestamp")]
    offset: Option<u64>,
    /// Start at the first record with a timestamp at or after this.
    #[arg(long)]
    timestamp: Option<String>,
    /// Consume as a member of this consumer group.
    #[arg(long, short, conflicts_with = "share_group")]
    group: Option<String>,
    /// Consume as one of any number of competing members of this share group (a queue):
    /// records are locked to this member, printed ones are acknowledged, and a record whose
    /// member dies is delivered to another.
    #[arg(long, conflicts_with_all = ["from_beginning", "from_archive", "from_end", "from", "offset", "timestamp"])]
    share_group: Option<String>,
    /// With --share-group: records one fetch locks at most (the prefetch).
    #[arg(long, default_value_t = 500, requires = "share_group")]
    prefetch: usize,
    /// Keep waiting for new records instead of exiting when caught up.
    #[arg(long, short)]
    follow: bool,
    /// Stop after this many records.
    #[arg(long, short = 'n')]
    max_records: Option<u64>,
    /// Output: text (the value; see --print-key) or json (one object per record).
    #[arg(long, value_enum, default_value_t = Format::Text)]
    format: Format,
    /// In text output, print the key and a tab before the value.
    #[arg(long)]
    print_key: bool,
}

#[derive(Clone, Copy, ValueEnum)]
enum Format {
    Text,
    Json,
}

/// Records read from one partition by one fetch.
struct Chunk {
    partition: u32,
    records: Vec<(u64, Record)>,
    /// The partition is caught up and the consumer does not follow.
    done: bool,
}

const FETCH_BYTES: u64 = 4 * 1024 * 1024;
const FOLLOW_WAIT_MS: u64 = 1_000;

pub async fn run(client: &Client, args: ConsumeArgs) -> anyhow::Result<()> {
    if let Some(group) = &args.share_group {
        let options = super::share_consume::ShareConsume {
            topic: &args.topic,
            group,
            partition: args.partition,
            follow: args.follow,
            max_records: args.max_records,
            prefetch: args.prefetch,
            json: matches!(args.format, Format::Json),
            print_key: args.print_key,
        };
        return super::share_consume::run(client, options).await;
    }
    let start = start_position(&args)?;
    let mut printer = Printer {
        format: args.format,
        print_key: args.print_key,
        remaining: args.max_records.unwrap_or(u64::MAX),
    };
    match args.group.clone() {
        None => {
            let partitions = match args.partition {
                Some(p) => vec![p],
                None => {
                    (0..client.describe_topic(&args.topic).await?.partitions.len() as u32).collect()
                }
            };
            let mut positions = BTreeMap::new();
            for p in partitions {
                positions.insert(p, resolve(client, &args.topic, p, &start).await?);
            }
            let (mut readers, mut chunks) =
                spawn_readers(client, &args.topic, &positions, args.follow);
            while let Some(chunk) = chunks.recv().await {
                printer.print(&chunk)?;
                if printer.satisfied() {
                    break;
                }
            }
            readers.abort_all();
            Ok(())
        }
        Some(group) => consume_in_group(client, &args, &group, start, &mut printer).await,
    }
}

enum Start {
    Beginning,
    Archive,
    End,
    At(Position),
}

fn start_position(args: &ConsumeArgs) -> anyhow::Result<Start> {
    if let Some(offset) = args.offset {
        return Ok(Start::At(Position::Offset(offset)));
    }
    if let Some(text) = &args.timestamp {
        return Ok(Start::At(Position::Timestamp(parse_timestamp(text)?)));
    }
    Ok(match args.from {
        Some(StartAt::End) => Start::End,
        Some(StartAt::Archive) => Start::Archive,
        Some(StartAt::Beginning) => Start::Beginning,
        None if args.from_end => Start::End,
        None if args.from_archive => Start::Archive,
        None => Start::Beginning,
    })
}

/// Milliseconds since the epoch, or an RFC 3339 time.
pub fn parse_timestamp(text: &str) -> anyhow::Result<i64> {
    if let Ok(ms) = text.parse::<i64>() {
        return Ok(ms);
    }
    let time = humantime::parse_rfc3339_weak(text).with_context(|| {
        format!(
            "`{text}` is neither milliseconds since the epoch nor a time like 2026-11-23T10:00:00Z"
        )
    })?;
    Ok(time
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64))
}

/// The concrete starting offset of a partition.
async fn resolve(
    client: &Client,
    topic: &str,
    partition: u32,
    start: &Start,
) -> anyhow::Result<u64> {
    let description = client.describe_topic(topic).await?;
    let info = description
        .partitions
        .iter()
        .find(|p| p.partition == partition)
        .with_context(|| {
            format!(
                "topic {topic} has no partition {partition} (it has {})",
                description.partitions.len()
            )
        })?;
    Ok(match start {
        Start::Beginning => info.log_start_offset,
        Start::Archive => info
            .archive_start_offset
            .map_or(info.log_start_offset, |first| {
                first.min(info.log_start_offset)
            }),
        Start::End => info.high_watermark,
        Start::At(Position::Offset(offset)) => *offset,
        Start::At(Position::Timestamp(ts)) => {
            let fetch = client
                .fetch(topic, partition, Position::Timestamp(*ts), 1, 0)
                .await?;
            fetch
                .records
                .first()
                .map_or(fetch.high_watermark, |(o, _)| *o)
        }
    })
}

fn spawn_readers(
    client: &Client,
    topic: &str,
    positions: &BTreeMap<u32, u64>,
    follow: bool,
) -> (JoinSet<()>, mpsc::Receiver<anyhow::Result<Chunk>>) {
    let (sender, receiver) = mpsc::channel(positions.len().max(1) * 2);
    let mut readers = JoinSet::new();
    for (&partition, &offset) in positions {
        let (client, topic, sender) = (client.clone(), topic.to_string(), sender.clone());
        readers.spawn(async move {
            let mut offset = offset;
            loop {
                let wait = if follow { FOLLOW_WAIT_MS } else { 0 };
                let fetched = client
                    .fetch(
                        &topic,
                        partition,
                        Position::Offset(offset),
                        FETCH_BYTES,
                        wait,
                    )
                    .await;
                let chunk = fetched.map_err(anyhow::Error::from).map(|f| {
                    offset = f.next_offset;
                    Chunk {
                        partition,
                        records: f.records,
                        done: !follow && f.next_offset >= f.high_watermark,
                    }
                });
                let stop = chunk.as_ref().map_or(true, |c| c.done);
                if sender.send(chunk).await.is_err() || stop {
                    return;
                }
            }
        });
    }
    (readers, receiver)
}

struct Printer {
    format: Format,
    print_key: bool,
    remaining: u64,
}

impl Printer {
    /// Prints a chunk; returns how many records it printed (fewer than the chunk holds once
    /// --max-records is reached).
    fn print(&mut self, chunk: &anyhow::Result<Chunk>) -> anyhow::Result<usize> {
        let chunk = match chunk {
            Ok(chunk) => chunk,
            Err(e) => anyhow::bail!("{e:#}"),
        };
        let mut out = std::io::stdout().lock();
        let mut printed = 0;
        for (offset, record) in &chunk.records {
            if self.remaining == 0 {
                break;
            }
            match self.format {
                Format::Text => {
                    if self.print_key {
                        out.write_all(record.key.as_deref().unwrap_or_default())?;
                        out.write_all(b"\t")?;
                    }
                    out.write_all(record.value_bytes())?;
                    out.write_all(b"\n")?;
                }
                Format::Json => {
                    serde_json::to_writer(
                        &mut out,
                        &JsonRecord::from_record(record, chunk.partition, *offset),
                    )?;
                    out.write_all(b"\n")?;
                }
            }
            self.remaining -= 1;
            printed += 1;
        }
        out.flush()?;
        Ok(printed)
    }

    fn satisfied(&self) -> bool {
        self.remaining == 0
    }
}

/// The session timeout the CLI asks for when it joins a group.
const SESSION_TIMEOUT_MS: u64 = 10_000;

async fn consume_in_group(
    client: &Client,
    args: &ConsumeArgs,
    group: &str,
    start: Start,
    printer: &mut Printer,
) -> anyhow::Result<()> {
    let mut membership = client
        .join(
            group,
            &JoinRequest {
                member_id: None,
                client: Some("sluice-cli".into()),
                topics: vec![args.topic.clone()],
                session_timeout_ms: Some(SESSION_TIMEOUT_MS),
            },
        )
        .await?;
    let result = async {
        loop {
            let positions = assigned_positions(client, args, group, &membership, &start).await?;
            match consume_assignment(client, args, group, &membership, positions, printer).await? {
                Outcome::Finished => return Ok(()),
                Outcome::Rebalanced(current) => {
                    tracing::info!(
                        generation = current.generation,
                        "group rebalanced; resuming with the new assignment"
                    );
                    membership = current;
                }
            }
        }
    }
    .await;
    let left = client.leave(group, &membership.member_id).await;
    result.and(left.map_err(anyhow::Error::from))
}

/// Where to read each assigned partition: the group's committed offset, or `start`.
async fn assigned_positions(
    client: &Client,
    args: &ConsumeArgs,
    group: &str,
    membership: &crate::groups::Membership,
    start: &Start,
) -> anyhow::Result<BTreeMap<u32, u64>> {
    let committed = client.committed(group).await?;
    let mut positions = BTreeMap::new();
    for tp in membership
        .assignment
        .iter()
        .filter(|tp| tp.topic == args.topic)
    {
        if args.partition.is_some_and(|p| p != tp.partition) {
            continue;
        }
        let stored = committed
            .iter()
            .find(|c| c.topic == tp.topic && c.partition == tp.partition);
        let offset = match stored {
            Some(c) => c.offset,
            None => resolve(client, &args.topic, tp.partition, start).await?,
        };
        positions.insert(tp.partition, offset);
    }
    Ok(positions)
}

/// Reads and prints the assigned partitions from `positions`, committing what was printed
/// and heartbeating, until done or the group rebalances.
async fn consume_assignment(
    client: &Client,
    args: &ConsumeArgs,
    group: &str,
    membership: &crate::groups::Membership,
    positions: BTreeMap<u32, u64>,
    printer: &mut Printer,
) -> anyhow::Result<Outcome> {
    let (mut readers, mut chunks) = spawn_readers(client, &args.topic, &positions, args.follow);
    let mut heartbeat = tokio::time::interval(Duration::from_millis(SESSION_TIMEOUT_MS / 3));
    heartbeat.tick().await;
    let mut progress: BTreeMap<u32, u64> = BTreeMap::new();
    let mut open = positions.len();
    let outcome = loop {
        if open == 0 {
            break Outcome::Finished;
        }
        tokio::select! {
            chunk = chunks.recv() => {
                let Some(chunk) = chunk else { break Outcome::Finished };
                let printed = printer.print(&chunk)?;
                if let Ok(chunk) = &chunk {
                    if let Some((offset, _)) = chunk.records[..printed].last() {
                        progress.insert(chunk.partition, offset + 1);
                    }
                    if chunk.done {
                        open -= 1;
                    }
                }
                commit(client, group, membership, &args.topic, &progress).await?;
                if printer.satisfied() {
                    break Outcome::Finished;
                }
            }
            _ = heartbeat.tick() => {
                let current = client.heartbeat(group, &membership.member_id).await?;
                if current.generation != membership.generation {
                    break Outcome::Rebalanced(current);
                }
            }
        }
    };
    readers.abort_all();
    Ok(outcome)
}

enum Outcome {
    Finished,
    Rebalanced(crate::groups::Membership),
}

async fn commit(
    client: &Client,
    group: &str,
    membership: &crate::groups::Membership,
    topic: &str,
    progress: &BTreeMap<u32, u64>,
) -> anyhow::Result<()> {
    if progress.is_empty() {
        return Ok(());
    }
    let offsets = progress
        .iter()
        .filter(|(p, _)| {
            membership.assignment.contains(&TopicPartition {
                topic: topic.to_string(),
                partition: **p,
            })
        })
        .map(|(&partition, &offset)| CommittedOffset {
            topic: topic.to_string(),
            partition,
            offset,
        })
        .collect();
    client
        .commit(
            group,
            &CommitRequest {
                member_id: Some(membership.member_id.clone()),
                generation: Some(membership.generation),
                offsets,
            },
        )
        .await?;
    Ok(())
}
