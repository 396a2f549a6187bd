//! `sluice bench --only archive`, second part: what archival costs the work beside it.
//! Producers (durable appends) and plugins (the filter plugin in its sandbox) run while a
//! backlog of sealed segments is archived at low priority, as the engine does, then at normal
//! priority, against the same work alone just before and after.

use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::Context;

use super::bench_archive::{history, open_log, order_records};
use super::bench_plugins::{filter_input, filter_settings, start_sandbox};
use crate::log::{Partition, Record, now_ms};
use crate::runtime::{Batch, Plugin, Runtime};

/// Rounds of each measurement; the table gives the median round.
const ROUNDS: usize = 5;

/// How long the work runs alone before the first archival window (later: as long as the last
/// low-priority window).
const FIRST_ALONE_WINDOW: Duration = Duration::from_secs(2);

/// The longest archival window: archival that is still running then (starved by work that
/// takes every core, as it should be at low priority) finishes unmeasured.
const LONGEST_WINDOW: Duration = Duration::from_secs(5);

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
    /// This partition's segments archived as the engine does it: on a `SCHED_IDLE` thread at
    /// the lowest I/O priority.
    LowPriority(Arc<Partition>),
    /// This partition's segments archived on an ordinary thread.
    NormalPriority(Arc<Partition>),
}

/// The work, ready to run in windows.
enum Running {
    Producers {
        partitions: Vec<Arc<Partition>>,
        producers: usize,
        batch: Vec<Record>,
    },
    Plugins {
        runtime: Arc<Runtime>,
        plugin: Arc<Plugin>,
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
/// worth of `size`-byte records (at least two 64 MiB segments), at low and at normal priority.
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
    let (_archives, log) = open_log(temp.path())?;
    let (title, running) = match work {
        Work::Producers { producers, batch } => {
            let live = log.create_topic("live", 4, &[("retention_ms".into(), "none".into())])?;
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
            let plugin = Arc::new(runtime.compile(&filter)?);
            let batches = filter_input();
            let title = format!("FILTER PLUGINS BESIDE ARCHIVAL ({size} B)");
            let running = Running::Plugins {
                runtime: Arc::new(runtime),
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
    // Each round archives a fresh topic at low, then at normal priority, each window as long
    // as archival takes (at most LONGEST_WINDOW), and runs the work alone before, between and
    // after them, each time for as long as the last low-priority window: an archival window
    // is compared with the mean of the two alone windows around it, so that the machine's
    // drift (a shared disk fast one minute and slow the next) cancels out. The host's noise
    // moves single windows a lot: the table gives each condition's median round, and its
    // ratios' range.
    let mut measured: [Vec<(f64, f64, Option<f64>)>; 3] = Default::default();
    let mut alone_window = FIRST_ALONE_WINDOW;
    for round in 0..ROUNDS {
        let low = history(&log, &format!("history-low-{round}"), size, records)?;
        let normal = history(&log, &format!("history-normal-{round}"), size, records)?;
        // Sealed segments have long been on disk when retention archives them; the kernel
        // writing these back during a window would slow the work, not archival.
        write_back_everything(temp.path())?;
        let mut rates = Vec::new();
        for beside in [
            Beside::Nothing,
            Beside::LowPriority(low),
            Beside::Nothing,
            Beside::NormalPriority(normal),
            Beside::Nothing,
        ] {
            let low_priority = matches!(beside, Beside::LowPriority(_));
            let window = match beside {
                Beside::Nothing => alone_window,
                _ => LONGEST_WINDOW,
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
                Beside::LowPriority(partition) | Beside::NormalPriority(partition) => {
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
                        crate::server::spawn_low_priority("bench-archival", work);
                    } else {
                        std::thread::spawn(work);
                    }
                    Some(archival)
                }
            };
            let started = Instant::now();
            let done = running.until(stop).await?;
            let elapsed = started.elapsed();
            if low_priority {
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
        }
        let around = |window: usize| (rates[window - 1].0 + rates[window + 1].0) / 2.0;
        let alone = (rates[0].0 + rates[2].0 + rates[4].0) / 3.0;
        for (condition, (rate, archival_rate, baseline)) in [
            (rates[1].0, rates[1].1, around(1)),
            (rates[3].0, rates[3].1, around(3)),
            (alone, None, alone),
        ]
        .into_iter()
        .enumerate()
        {
            measured[condition].push((rate / baseline, rate, archival_rate));
        }
    }
    let names = [
        "archival at low priority",
        "archival at normal priority",
        "alone",
    ];
    for (name, mut rounds) in names.into_iter().zip(measured) {
        rounds.sort_by(|a, b| a.0.total_cmp(&b.0));
        let (ratio, rate, archival_rate) = rounds[rounds.len() / 2];
        let range = match (rounds.first(), rounds.last()) {
            (Some(low), Some(high)) if name != "alone" => format!("{:.2}-{:.2}", low.0, high.0),
            _ => "-".to_string(),
        };
        println!(
            "{:<40} {:>12.0} {:>8.2} {:>12} {:>14}",
            name,
            rate,
            ratio,
            range,
            archival_rate.map_or("-".to_string(), |r| format!("{r:.1}"))
        );
    }
    println!(
        "RATIO = records/s beside archival / alone just before and after (median of {ROUNDS} rounds, and range);"
    );
    println!(
        "ARCHIVAL MB/S = segment bytes archived per second meanwhile (0 when starved: at low priority archival waits for idle cores)."
    );
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
