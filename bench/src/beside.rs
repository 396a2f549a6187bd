//! `sluice-bench --only archive`, second part: what archival costs the work beside it.
//! Producers (durable appends) and plugins (the filter plugin in its sandbox) run while a
//! backlog of sealed segments is archived as the engine does (low priority, the default rate
//! limit), at low priority without the limit, and at normal priority, against the same work
//! alone just before and after.

use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::Context;

use crate::archive::{history, open_log, order_records};
use crate::plugins::{filter_input, filter_settings, start_sandbox};
use sluice::config::StorageSettings;
use sluice::log::{Partition, Record, now_ms};
use sluice::runtime::{Batch, Plugin, Runtime};

/// Rounds of each measurement; the table gives the median round.
const ROUNDS: usize = 5;

/// How long the work runs alone before the first archival window (later: as long as the last
/// low-priority window).
const FIRST_ALONE_WINDOW: Duration = Duration::from_secs(2);

/// The longest archival window: archival that is still running then (starved by work that
/// takes every core, as it should be at low priority) finishes unmeasured.
const LONGEST_WINDOW: Duration = Duration::from_secs(5);

/// Bytes of each producers' partition kept between windows.
const LIVE_RETENTION_BYTES: u64 = 256 << 20;

/// The work whose throughput archival must leave alone.
pub enum Work {
    /// `producers` tasks appending batches of `batch` records durably (as `append+fsync`).
    Producers { producers: usize, batch: usize },
    /// The filter plugin over batches of 1,000 JSON records of about 100 bytes (as in the
    /// plugin benchmark), one sandbox per core, each on a thread of its own as consumer groups run.
    Plugins { filter: Vec<u8> },
}

/// What runs beside the work in a window.
enum Beside {
    Nothing,
    /// This partition's segments archived, at low priority as the engine does it (a
    /// `SCHED_IDLE` thread at the lowest I/O priority) or on an ordinary thread.
    Archival {
        partition: Arc<Partition>,
        low_priority: bool,
    },
}

/// The work, ready to run in windows.
enum Running {
    Producers {
        partitions: Vec<Arc<Partition>>,
        producers: usize,
        batch: Vec<Record>,
    },
    Plugins {
        runtime: Runtime,
        plugin: Plugin,
        batches: Arc<Vec<Batch>>,
    },
}

impl Running {
    /// Records the work got through until `stop` was set.
    async fn until(&self, stop: Arc<AtomicBool>) -> anyhow::Result<u64> {
        match self {
            Running::Producers {
                partitions,
                producers,
                batch,
            } => {
                let mut tasks = tokio::task::JoinSet::new();
                for p in 0..*producers {
                    let partition = partitions[p % partitions.len()].clone();
                    let (batch, stop) = (batch.clone(), stop.clone());
                    tasks.spawn(async move {
                        let mut appended = 0u64;
                        while !stop.load(Ordering::Relaxed) {
                            partition.append_durable(&batch).await?;
                            appended += batch.len() as u64;
                        }
                        Ok::<_, anyhow::Error>(appended)
                    });
                }
                let mut appended = 0;
                while let Some(done) = tasks.join_next().await {
                    appended += done??;
                }
                Ok(appended)
            }
            Running::Plugins {
                runtime,
                plugin,
                batches,
            } => {
                let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
                let mut threads = tokio::task::JoinSet::new();
                for _ in 0..cores {
                    let (mut sandbox, _) = start_sandbox(runtime, plugin, &filter_settings())?;
                    let (batches, stop) = (batches.clone(), stop.clone());
                    threads.spawn_blocking(move || {
                        let mut processed = 0u64;
                        for batch in batches.iter().cycle() {
                            if stop.load(Ordering::Relaxed) {
                                break;
                            }
                            sandbox.process(batch)?;
                            processed += u64::from(batch.count);
                        }
                        Ok::<_, anyhow::Error>(processed)
                    });
                }
                let mut processed = 0;
                while let Some(done) = threads.join_next().await {
                    processed += done??;
                }
                Ok(processed)
            }
        }
    }
}

/// Prints the table of `work`'s throughput beside the archival of `records_of_100_bytes`'
/// worth of `size`-byte records (at least two 64 MiB segments), in each condition of the table.
pub async fn run(
    dir: &Path,
    records_of_100_bytes: u64,
    size: usize,
    work: Work,
) -> anyhow::Result<()> {
    let records = records_of_100_bytes * 100 / size.max(100) as u64;
    let temp = tempfile::Builder::new()
        .prefix("sluice-bench-beside-")
        .tempdir_in(dir)?;
    let (_archives, log) = open_log(&temp.path().join("unpaced"), None)?;
    // The engine's default rate limit applies to the archives of this second log only.
    let paced_rate = StorageSettings::default().archive_max_bytes_per_second;
    let (_paced_archives, paced_log) = open_log(&temp.path().join("paced"), Some(paced_rate))?;
    let (title, running) = match work {
        Work::Producers { producers, batch } => {
            // Kept to a few segments (by retention after each window): the producers write
            // tens of GB over the measurement.
            let settings = [
                ("retention_ms".into(), "none".into()),
                ("retention_bytes".into(), LIVE_RETENTION_BYTES.to_string()),
            ];
            let live = log.create_topic("live", 4, &settings)?;
            let title = format!("PRODUCERS ({size} B) BESIDE ARCHIVAL ({size} B)");
            let running = Running::Producers {
                partitions: live.partitions(),
                producers,
                batch: order_records(size, batch, u64::MAX >> 1),
            };
            (title, running)
        }
        Work::Plugins { filter } => {
            let runtime = Runtime::new(None)?;
            let plugin = runtime.compile(&filter)?;
            let batches = filter_input();
            let title = format!("FILTER PLUGINS BESIDE ARCHIVAL ({size} B)");
            let running = Running::Plugins {
                runtime,
                plugin,
                batches: Arc::new(batches),
            };
            (title, running)
        }
    };
    println!();
    println!(
        "{:<40} {:>12} {:>8} {:>12} {:>14}",
        title, "RECORDS/S", "RATIO", "RANGE", "ARCHIVAL MB/S"
    );
    let conditions = [
        (
            format!("low priority, {} MiB/s limit (default)", paced_rate >> 20),
            true,
            &paced_log,
        ),
        ("low priority, no limit".to_string(), true, &log),
        ("normal priority, no limit".to_string(), false, &log),
    ];
    // Each round archives a fresh topic in each condition, each window as long as archival
    // takes (at most LONGEST_WINDOW), and runs the work alone before, between and after
    // them, each time for as long as the last first-condition window: an archival window is
    // compared with the mean of the two alone windows around it, so that the machine's drift
    // (a shared disk fast one minute and slow the next) cancels out. The host's noise moves
    // single windows a lot: the table gives each condition's median round, and its ratios'
    // range.
    let mut measured: Vec<Vec<(f64, f64, Option<f64>)>> = vec![Vec::new(); conditions.len()];
    let mut alone: Vec<f64> = Vec::new();
    let mut alone_window = FIRST_ALONE_WINDOW;
    for round in 0..ROUNDS {
        let mut histories = Vec::new();
        for (condition, (_, _, log)) in conditions.iter().enumerate() {
            histories.push(history(
                log,
                &format!("history-{condition}-{round}"),
                size,
                records,
            )?);
        }
        // Sealed segments have long been on disk when retention archives them; the kernel
        // writing these back during a window would slow the work, not archival.
        write_back_everything(temp.path())?;
        let mut windows = vec![Beside::Nothing];
        for (partition, (_, low_priority, _)) in histories.into_iter().zip(&conditions) {
            windows.push(Beside::Archival {
                partition,
                low_priority: *low_priority,
            });
            windows.push(Beside::Nothing);
        }
        let mut rates = Vec::new();
        for beside in windows {
            let (window, first_condition) = match &beside {
                Beside::Nothing => (alone_window, false),
                Beside::Archival { .. } => (LONGEST_WINDOW, rates.len() == 1),
            };
            let stop = Arc::new(AtomicBool::new(false));
            {
                let stop = stop.clone();
                tokio::spawn(async move {
                    tokio::time::sleep(window).await;
                    stop.store(true, Ordering::Relaxed);
                });
            }
            let archived_bytes = Arc::new(AtomicU64::new(0));
            let archival = match beside {
                Beside::Nothing => None,
                Beside::Archival {
                    partition,
                    low_priority,
                } => {
                    let (archived, archival) = tokio::sync::oneshot::channel();
                    let (stop, archived_bytes) = (stop.clone(), archived_bytes.clone());
                    let work = move || {
                        let segments = partition.segments_to_archive(now_ms(), true);
                        let result = partition.archive(&segments, &|segment| {
                            if !stop.load(Ordering::Relaxed) {
                                archived_bytes.fetch_add(segment.bytes, Ordering::Relaxed);
                            }
                        });
                        stop.store(true, Ordering::Relaxed);
                        let _ = archived.send(result);
                    };
                    if low_priority {
                        sluice::archive::spawn_low_priority("bench-archival", work);
                    } else {
                        std::thread::spawn(work);
                    }
                    Some(archival)
                }
            };
            let started = Instant::now();
            let done = running.until(stop).await?;
            let elapsed = started.elapsed();
            if first_condition {
                alone_window = elapsed;
            }
            let archival_rate = match archival {
                Some(archival) => {
                    archival.await.context("the archival thread stopped")??;
                    let bytes = archived_bytes.load(Ordering::Relaxed);
                    Some(bytes as f64 / elapsed.as_secs_f64() / 1e6)
                }
                None => None,
            };
            rates.push((done as f64 / elapsed.as_secs_f64(), archival_rate));
            log.enforce_retention(now_ms());
        }
        for (condition, rounds) in measured.iter_mut().enumerate() {
            let window = 2 * condition + 1;
            let around = (rates[window - 1].0 + rates[window + 1].0) / 2.0;
            let (rate, archival_rate) = rates[window];
            rounds.push((rate / around, rate, archival_rate));
        }
        let alone_windows: Vec<f64> = rates.iter().step_by(2).map(|(rate, _)| *rate).collect();
        alone.push(alone_windows.iter().sum::<f64>() / alone_windows.len() as f64);
    }
    for ((name, _, _), mut rounds) in conditions.into_iter().zip(measured) {
        rounds.sort_by(|a, b| a.0.total_cmp(&b.0));
        let (ratio, rate, archival_rate) = rounds[rounds.len() / 2];
        let (low, high) = (rounds[0].0, rounds[rounds.len() - 1].0);
        println!(
            "{:<40} {:>12.0} {:>8.2} {:>12} {:>14}",
            name,
            rate,
            ratio,
            format!("{low:.2}-{high:.2}"),
            archival_rate.map_or("-".to_string(), |r| format!("{r:.1}"))
        );
    }
    alone.sort_by(f64::total_cmp);
    println!(
        "{:<40} {:>12.0} {:>8.2} {:>12} {:>14}",
        "alone",
        alone[alone.len() / 2],
        1.0,
        "-",
        "-"
    );
    println!(
        "RATIO = records/s beside archival / alone just before and after (median of {ROUNDS} rounds, and range);"
    );
    println!(
        "ARCHIVAL MB/S = bytes of the segments archived whole within the window, per second (0: starved, at low priority archival waits for idle cores)."
    );
    paced_log.close()?;
    log.close()?;
    Ok(())
}

/// Waits until every dirty page of the file system holding `dir` is on the disk.
fn write_back_everything(dir: &Path) -> anyhow::Result<()> {
    let dir = std::fs::File::open(dir)?;
    // SAFETY: syncfs on a descriptor we hold open.
    if unsafe { libc::syncfs(std::os::fd::AsRawFd::as_raw_fd(&dir)) } != 0 {
        return Err(std::io::Error::last_os_error().into());
    }
    Ok(())
}
