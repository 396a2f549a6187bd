//! `sluice archive`: archive a topic to Parquet now, list its files, verify them.

use anyhow::bail;
use clap::Subcommand;
use indicatif::{ProgressBar, ProgressStyle};

use super::client::Client;
use crate::server::api::{ArchiveProgress, ArchiveRunRequest, VerifyParams};

#[derive(Subcommand)]
pub enum ArchiveCommand {
    /// Archive sealed segments to Parquet now: of one topic, or of every topic that archives.
    #[command(long_about = "\
Archive sealed segments to Parquet now, instead of waiting for the engine.

A topic with `archive = true` is archived by the engine itself: each segment once it is sealed
(at segment_bytes, or when segment_ms passed, even with no new records), at the next retention
check, and retention deletes only what is archived. This command does it at once: without
--topic, for every topic with `archive = true`; with --topic, for that topic (any topic).

Without --everything, the segments past retention are archived; with --everything, every sealed
segment (it stays in the log until retention deletes it, and is not archived again then). With
--now, the segments being written are sealed first and every sealed segment is archived: the
archive then holds every record up to the high watermark.

Files go to <archive_dir>/<topic>/<partition>/ (default archive_dir: <data_dir>/archive), one
file per segment, written, fsynced and verified before the manifest names it.

Examples:
  sluice archive run --now
  sluice archive run --topic clicks --everything")]
    Run {
        /// The topic (default: every topic with `archive = true`).
        #[arg(long)]
        topic: Option<String>,
        /// Also archive sealed segments still in retention.
        #[arg(long)]
        everything: bool,
        /// Seal the segments being written, then archive everything up to the high watermark.
        #[arg(long)]
        now: bool,
    },
    /// List a topic's archived files (offset ranges, rows, sizes and times), its Iceberg
    /// table and its schema versions.
    List {
        #[arg(long)]
        topic: String,
        /// Print only the topic's archive directory (or object store URL), for scripts.
        #[arg(long)]
        dir: bool,
    },
    /// Re-read every archived file and check it against the manifest (rows, offsets, checksum).
    #[command(long_about = "\
Re-read every archived file (of one topic, or of all) and check it against the archive
manifest: row count, first and last offset, and a CRC-32C over every offset and value. Prints
each damaged or missing file by name and exits with status 1 if there is any; restore such a
file from a copy (the log no longer holds its records).")]
    Verify {
        #[arg(long)]
        topic: Option<String>,
    },
}

pub async fn run(client: &Client, command: ArchiveCommand) -> anyhow::Result<()> {
    match command {
        ArchiveCommand::Run {
            topic,
            everything,
            now,
        } => {
            let request = ArchiveRunRequest { everything, now };
            let topics = match topic {
                Some(topic) => vec![topic],
                None => archiving_topics(client).await?,
            };
            if topics.is_empty() {
                println!("no topic archives (set archive = true on one, or give --topic)");
            }
            for topic in &topics {
                archive_now(client, topic, &request).await?;
            }
            Ok(())
        }
        ArchiveCommand::List { topic, dir } => {
            let listing = client.archive_list(&topic).await?;
            if dir {
                println!("{}", listing.dir);
                return Ok(());
            }
            println!("archive of {} in {}", listing.topic, listing.dir);
            if let Some(table) = &listing.table {
                println!("Iceberg table: {table}");
            }
            for version in &listing.schema_versions {
                let fields: Vec<String> = version
                    .fields
                    .iter()
                    .map(|f| format!("{} {}", f.name, f.kind))
                    .collect();
                println!(
                    "schema version {}: {} ({})",
                    version.version,
                    fields.join(", "),
                    version.changes.join("; ")
                );
            }
            println!(
                "{:>9} {:>14} {:>14} {:>12} {:>14}  {:<24} {:<6} FILE",
                "PARTITION", "FIRST", "LAST", "ROWS", "BYTES", "RECORD TIMES (UTC)", "STORE"
            );
            for partition in &listing.partitions {
                for f in &partition.files {
                    let times = format!(
                        "{}..{}",
                        time(f.summary.min_timestamp),
                        time(f.summary.max_timestamp)
                    );
                    println!(
                        "{:>9} {:>14} {:>14} {:>12} {:>14}  {:<24} {:<6} {}",
                        partition.partition,
                        f.summary.first_offset,
                        f.summary.last_offset,
                        f.summary.rows,
                        f.bytes,
                        times,
                        if f.remote { "remote" } else { "local" },
                        f.file
                    );
                }
            }
            Ok(())
        }
        ArchiveCommand::Verify { topic } => {
            let result = client.archive_verify(&VerifyParams { topic }).await?;
            for problem in &result.problems {
                println!("DAMAGED {problem}");
            }
            if !result.problems.is_empty() {
                bail!(
                    "{} of {} archived files failed verification",
                    result.problems.len(),
                    result.files_checked
                );
            }
            println!("{} archived files verified", result.files_checked);
            Ok(())
        }
    }
}

fn time(ms: i64) -> String {
    let at = std::time::UNIX_EPOCH + std::time::Duration::from_millis(ms.max(0) as u64);
    humantime::format_rfc3339_seconds(at).to_string()
}

/// The topics with `archive = true`.
async fn archiving_topics(client: &Client) -> anyhow::Result<Vec<String>> {
    let mut archiving = Vec::new();
    for topic in client.list_topics().await?.topics {
        if client.describe_topic(&topic.name).await?.config.archive {
            archiving.push(topic.name);
        }
    }
    Ok(archiving)
}

async fn archive_now(
    client: &Client,
    topic: &str,
    request: &ArchiveRunRequest,
) -> anyhow::Result<()> {
    let everything = request.everything || request.now;
    let mut response = client.archive_run(topic, request).await?;
    let bar = ProgressBar::new(0);
    bar.set_style(
        ProgressStyle::with_template(
            "{msg:>10} [{bar:40}] {bytes}/{total_bytes} ({bytes_per_sec}, {eta} left)",
        )
        .expect("a valid template")
        .progress_chars("=> "),
    );
    let mut pending = Vec::new();
    while let Some(chunk) = response.chunk().await? {
        pending.extend_from_slice(&chunk);
        while let Some(end) = pending.iter().position(|&b| b == b'\n') {
            let line: Vec<u8> = pending.drain(..=end).collect();
            match serde_json::from_slice::<ArchiveProgress>(&line)? {
                ArchiveProgress::Plan { segments, bytes } => {
                    if segments == 0 {
                        bar.finish_and_clear();
                        println!(
                            "nothing to archive in {topic}{}",
                            if everything {
                                " (only the segment being written holds records)"
                            } else {
                                " (no segment is past retention; --everything archives every sealed one)"
                            }
                        );
                        return Ok(());
                    }
                    bar.set_length(bytes);
                    bar.set_message("archiving");
                }
                ArchiveProgress::Segment {
                    partition,
                    from,
                    to,
                    bytes,
                } => {
                    bar.inc(bytes);
                    bar.println(format!(
                        "partition {partition}: offsets {from}..{to} archived"
                    ));
                }
                ArchiveProgress::Done { segments, bytes } => {
                    bar.finish_and_clear();
                    println!("archived {segments} segments ({bytes} bytes) of {topic}");
                    return Ok(());
                }
                ArchiveProgress::Failed { message } => {
                    bar.abandon();
                    bail!("archiving {topic} failed: {message}");
                }
            }
        }
    }
    bar.abandon();
    bail!("the engine closed the connection before archiving {topic} finished; see its log")
}
