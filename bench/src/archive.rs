//! `sluice-bench --only archive`: Parquet archival throughput (segment bytes in, records out)
//! against pyarrow's `write_table` with zstd writing the same rows in the same run.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;
use std::time::Instant;

use anyhow::Context;
use bytes::Bytes;

use sluice::archive::Archives;
use sluice::log::{Log, LogOptions, Partition, Record, TopicConfig, now_ms};

const PYARROW_SCRIPT: &str = include_str!("pyarrow.py");
const SEGMENT_BYTES: u64 = 64 << 20;

/// Realistic records: JSON orders of about `size` bytes with keys over 1,000 customers,
/// repetitive the way event data is, not a constant pattern.
pub(super) fn order_records(size: usize, count: usize, seed: u64) -> Vec<Record> {
    const WORDS: [&str; 12] = [
        "express",
        "standard",
        "gift",
        "fragile",
        "return",
        "priority",
        "bulk",
        "sample",
        "north",
        "south",
        "warehouse",
        "pickup",
    ];
    let mut state = seed | 1;
    let mut next = move || {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        state
    };
    (0..count)
        .map(|i| {
            let customer = next() % 1_000;
            let mut value = format!(
                r#"{{"order":{},"customer":"c-{customer:04}","amount":{}.{:02},"items":{},"note":""#,
                seed * 1_000_000 + i as u64,
                next() % 10_000,
                next() % 100,
                next() % 9 + 1
            );
            while value.len() + 2 < size {
                value.push_str(WORDS[(next() % WORDS.len() as u64) as usize]);
                value.push(' ');
            }
            value.truncate(size.saturating_sub(2));
            value.push_str("\"}");
            Record {
                timestamp: 1_700_000_000_000 + i as i64,
                key: Some(Bytes::from(format!("c-{customer:04}"))),
                value: Some(Bytes::from(value)),
                headers: Vec::new(),
            }
        })
        .collect()
}

fn python() -> Option<PathBuf> {
    let candidates = [
        std::env::var("SLUICE_PYTHON").ok().map(PathBuf::from),
        Some(PathBuf::from(".venv/bin/python")),
        Some(PathBuf::from("python3")),
    ];
    candidates.into_iter().flatten().find(|python| {
        Command::new(python)
            .args(["-c", "import pyarrow"])
            .output()
            .is_ok_and(|o| o.status.success())
    })
}

struct Measured {
    seconds: f64,
    bytes: u64,
}

fn pyarrow(python: &Path, source: &Path, target: &Path) -> anyhow::Result<Measured> {
    std::fs::create_dir_all(target)?;
    let output = Command::new(python)
        .args(["-c", PYARROW_SCRIPT])
        .arg(source)
        .arg(target)
        .output()?;
    anyhow::ensure!(
        output.status.success(),
        "pyarrow failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    let result: serde_json::Value = serde_json::from_slice(&output.stdout)?;
    Ok(Measured {
        seconds: result["seconds"].as_f64().context("seconds")?,
        bytes: result["bytes"].as_u64().context("bytes")?,
    })
}

/// A log in `dir` whose topics archive into `dir/archive`, reading segments for archiving at
/// most `max_bytes_per_second` (None: no limit).
pub(super) fn open_log(
    dir: &Path,
    max_bytes_per_second: Option<u64>,
) -> anyhow::Result<(Arc<Archives>, Arc<Log>)> {
    let archives = Archives::new(dir.join("archive"), None, max_bytes_per_second);
    let options = LogOptions {
        topic_defaults: TopicConfig::default(),
        max_disk_bytes: None,
        min_free_bytes: 0,
        cold: Some(archives.opener()),
    };
    let log = Arc::new(Log::open(&dir.join("data"), options)?);
    Ok((archives, log))
}

/// A one-partition topic of 64 MiB segments holding at least `records` orders of `size`
/// bytes, every one of them in a sealed segment (ready to archive).
pub(super) fn history(
    log: &Log,
    name: &str,
    size: usize,
    records: u64,
) -> anyhow::Result<Arc<Partition>> {
    history_with(log, name, size, records, &[])
}

/// [`history`], with more topic settings.
fn history_with(
    log: &Log,
    name: &str,
    size: usize,
    records: u64,
    more: &[(&str, &str)],
) -> anyhow::Result<Arc<Partition>> {
    let mut settings = vec![
        ("retention_ms".to_string(), "none".to_string()),
        ("segment_bytes".to_string(), SEGMENT_BYTES.to_string()),
        ("flush".to_string(), "interval".to_string()),
    ];
    settings.extend(more.iter().map(|(k, v)| (k.to_string(), v.to_string())));
    let partition = log.create_topic(name, 1, &settings)?.partition(0)?;
    let mut seed = 0;
    while partition
        .segments_to_archive(now_ms(), true)
        .iter()
        .map(|s| s.next_offset)
        .max()
        .unwrap_or(0)
        < records
    {
        partition.append(&order_records(size, 1000, seed))?;
        seed += 1;
    }
    Ok(partition)
}

/// Archives a new one-partition topic `name` of `records` orders of `size` bytes (with the
/// topic settings `more`); returns the time and file bytes, the segment bytes read and the
/// rows.
fn archive_topic(
    log: &Log,
    archives: &Archives,
    name: &str,
    size: usize,
    records: u64,
    more: &[(&str, &str)],
) -> anyhow::Result<(Measured, u64, u64)> {
    let partition = history_with(log, name, size, records, more)?;
    let segments = partition.segments_to_archive(now_ms(), true);
    let bytes_in: u64 = segments.iter().map(|s| s.bytes).sum();
    let rows: u64 = segments.iter().map(|s| s.next_offset - s.base_offset).sum();
    let started = Instant::now();
    partition.archive(&segments, &|_| {})?;
    let measured = Measured {
        seconds: started.elapsed().as_secs_f64(),
        bytes: archives
            .partition(name, 0)
            .files()?
            .iter()
            .map(|f| f.bytes)
            .sum(),
    };
    Ok((measured, bytes_in, rows))
}

pub fn run(dir: &Path, records_of_100_bytes: u64, sizes: &[usize]) -> anyhow::Result<()> {
    println!();
    println!(
        "{:<10} {:>8} {:>10} {:>12} {:>10} {:>12}  {:>10} {:>10}",
        "ARCHIVAL", "RECORD", "RECORDS", "RECORDS/S", "MB/S IN", "FILE BYTES", "SPEED", "SIZE"
    );
    let python = python();
    for &size in sizes {
        let records = records_of_100_bytes * 100 / size.max(100) as u64;
        let temp = tempfile::Builder::new()
            .prefix("sluice-bench-archive-")
            .tempdir_in(dir)?;
        let (archives, log) = open_log(temp.path(), None)?;
        // The default encodings (text keys, JSON values, checked row by row), and keys and
        // values as bytes (no check), the same records.
        let (ours, bytes_in, rows) = archive_topic(&log, &archives, "orders", size, records, &[])?;
        let as_bytes = [("archive_key", "bytes"), ("archive_value", "bytes")];
        let (ours_bytes, _, _) =
            archive_topic(&log, &archives, "orders_bytes", size, records, &as_bytes)?;
        let row = |name: &str, m: &Measured, ratios: Option<(f64, f64)>| {
            let ratios = ratios.map_or(String::new(), |(speed, size)| {
                format!("{speed:>10.2} {size:>10.2}")
            });
            println!(
                "{:<10} {:>6} B {:>10} {:>12.0} {:>10.1} {:>12}  {ratios}",
                name,
                size,
                rows,
                rows as f64 / m.seconds,
                bytes_in as f64 / m.seconds / 1e6,
                m.bytes
            );
        };
        match &python {
            Some(python) => {
                let source = temp.path().join("archive/orders/0");
                let theirs = pyarrow(python, &source, &temp.path().join("pyarrow"))?;
                let ratios = |m: &Measured| {
                    Some((
                        theirs.seconds / m.seconds,
                        m.bytes as f64 / theirs.bytes as f64,
                    ))
                };
                row("sluice", &ours, ratios(&ours));
                row("bytes", &ours_bytes, ratios(&ours_bytes));
                row("pyarrow", &theirs, None);
            }
            None => {
                row("sluice", &ours, None);
                row("bytes", &ours_bytes, None);
                println!(
                    "pyarrow    (not measured: no python with pyarrow; ./scripts/test installs one in .venv, or set SLUICE_PYTHON)"
                );
            }
        }
        log.close()?;
    }
    println!(
        "SPEED = pyarrow's time / Sluice's (above 1: Sluice is faster); SIZE = Sluice's bytes / pyarrow's."
    );
    println!(
        "Sluice's time covers reading the segments, writing, fsync, reading each file back to verify it, and the Iceberg commit."
    );
    println!(
        "sluice: keys as text, values as JSON (the defaults); bytes: archive_key = archive_value = bytes."
    );
    Ok(())
}
