//! `sluice archive`: archive a topic to Parquet now, list its files, verify them.

use anyhow::bail;
use clap::Subcommand;
use indicatif::{ProgressBar, ProgressStyle};

use super::client::Client;
use crate::server::api::{ArchiveProgress, ArchiveRunRequest, VerifyParams};

#[derive(Subcommand)]
pub enum ArchiveCommand {
    /// Archive a topic's sealed segments to Parquet now.
    #[command(long_about = "\
Archive a topic's sealed segments to Parquet now, instead of waiting for retention.

Without --everything, the segments past retention are archived (the engine does that itself
before it deletes them; this only does it sooner). With --everything, every sealed segment is:
it stays in the log until retention deletes it, and is not archived again then. The segment
being written to is never archived; it is sealed when it reaches segment_bytes or segment_ms.

The topic needs `archive = true` for retention to wait for its archive; this command works on
any topic. Files go to <archive_dir>/<topic>/<partition>/ (default archive_dir:
<data_dir>/archive), one file per segment, written, fsynced and verified before the manifest
names it.

Example: sluice archive run --topic clicks --everything")]
    Run {
        #[arg(long)]
        topic: String,
        /// Also archive sealed segments still in retention.
        #[arg(long)]
        everything: bool,
    },
    /// List a topic's archived files: offset ranges, rows, sizes and times.
    List {
        #[arg(long)]
        topic: String,
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
        ArchiveCommand::Run { topic, everything } => archive_now(client, &topic, everything).await,
        ArchiveCommand::List { topic } => {
            let listing = client.archive_list(&topic).await?;
            println!("archive of {} in {}", listing.topic, listing.dir);
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

async fn archive_now(client: &Client, topic: &str, everything: bool) -> anyhow::Result<()> {
    let mut response = client
        .archive_run(topic, &ArchiveRunRequest { everything })
        .await?;
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
