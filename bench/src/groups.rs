//! The plugin-group part of `sluice-bench`: a consumer group running the identity plugin
//! through the whole engine path (read from the log, run the plugin, commit state and offset),
//! alone and then beside a group whose plugin loops on some records, on the same topic: how
//! much a misbehaving group costs the others. And the stateful counter plugin (state reads and
//! writes and an output record per input) in exactly-once and in at-least-once delivery.

use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;

use sluice::log::{Log, LogOptions, Record, TopicConfig};
use sluice::runtime::{Delivery, DeploySpec, LimitOverrides, PluginHost, PluginLimits, StartFrom};

const PARTITIONS: u32 = 4;
/// Every this many records, one the looping plugin chokes on.
const BAD_EVERY: u64 = 1_000;

/// A log with the input topic produced, and a plugin host over it, in a temporary directory.
struct Setup {
    _dir: tempfile::TempDir,
    log: Arc<Log>,
    host: Arc<PluginHost>,
}

impl Setup {
    /// Produces `records` 100-byte records over 1,000 keys to topic `in`; every `BAD_EVERY`th
    /// value is one the looping plugin chokes on.
    async fn open(base: &Path, records: u64) -> anyhow::Result<Self> {
        let dir = tempfile::tempdir_in(base)?;
        let options = LogOptions {
            topic_defaults: TopicConfig {
                retention_ms: None,
                ..TopicConfig::default()
            },
            max_disk_bytes: None,
            min_free_bytes: 0,
            cold: None,
        };
        let log = Arc::new(Log::open(dir.path(), options)?);
        let topic = log.create_topic("in", PARTITIONS, &[])?;
        log.create_topic("out", 1, &[])?;
        log.create_topic("counts", PARTITIONS, &[])?;
        let mut next = 0u64;
        while next < records {
            let chunk: Vec<Record> = (next..(next + 1_000).min(records))
                .map(|i| Record {
                    timestamp: 1_700_000_000_000,
                    key: Some(Bytes::from(format!("key-{}", i % 1_000))),
                    value: Some(Bytes::from(if i % BAD_EVERY == BAD_EVERY / 2 {
                        "bad".to_string()
                    } else {
                        format!("{i:0>100}")
                    })),
                    headers: Vec::new(),
                })
                .collect();
            next += chunk.len() as u64;
            topic.produce(None, chunk).await?;
        }
        let host = {
            let (path, log) = (dir.path().to_path_buf(), log.clone());
            let handle = tokio::runtime::Handle::current();
            tokio::task::spawn_blocking(move || {
                PluginHost::open(&path, log, PluginLimits::default(), u64::MAX, handle)
            })
            .await??
        };
        Ok(Setup {
            _dir: dir,
            log,
            host,
        })
    }

    async fn close(self) -> anyhow::Result<()> {
        let host = self.host;
        tokio::task::spawn_blocking(move || host.stop()).await?;
        self.log.close()?;
        Ok(())
    }
}

fn read_plugins<const N: usize>(plugins: &Path, names: [&str; N]) -> Option<[Vec<u8>; N]> {
    let mut read = Vec::new();
    for name in names {
        match std::fs::read(plugins.join(format!("{name}.wasm"))) {
            Ok(bytes) => read.push(bytes),
            Err(_) => {
                println!("(skipping the plugin-group measurements: plugins not built)");
                return None;
            }
        }
    }
    read.try_into().ok()
}

pub async fn run(base: &Path, plugins: &Path, records: u64) -> anyhow::Result<()> {
    // Long enough for the looping group to spend many deadlines meanwhile.
    let records = records * 2;
    let Some([identity, misbehave]) = read_plugins(plugins, ["identity", "misbehave"]) else {
        return Ok(());
    };
    let setup = Setup::open(base, records).await?;
    let host = &setup.host;
    let alone = time_group(host, "alone", &identity, records, LimitOverrides::default()).await?;
    let spec = DeploySpec {
        topic: "in".into(),
        output_topics: vec!["out".into()],
        config: [("mode".to_string(), "loop".to_string())].into(),
        from: Some(StartFrom::Earliest),
        limits: LimitOverrides {
            deadline_ms: Some(100),
            max_attempts: Some(2),
            retry_backoff_ms: Some(10),
            batch_records: Some(100),
            ..LimitOverrides::default()
        },
    };
    let deploy_host = host.clone();
    tokio::task::spawn_blocking(move || deploy_host.deploy("looping", spec, &misbehave)).await??;
    let beside = time_group(
        host,
        "beside",
        &identity,
        records,
        LimitOverrides::default(),
    )
    .await?;
    let looping = host.describe("looping")?;
    let undeploy = host.clone();
    tokio::task::spawn_blocking(move || undeploy.undeploy("looping", false)).await??;
    setup.close().await?;

    println!();
    println!(
        "{:<44} {:>14} {:>10}",
        "PLUGIN GROUP (identity, 100-byte records)", "RECORDS/S", "NS/RECORD"
    );
    print_rates(
        records,
        &[
            ("alone, log -> plugin -> commit", alone),
            ("beside a group looping on 1 record in 1000", beside),
        ],
    );
    println!(
        "{:<44} {:>14.2}",
        "throughput beside / alone",
        alone.as_secs_f64() / beside.as_secs_f64()
    );
    println!(
        "{:<44} {:>14}",
        "  (looping group: calls stopped at deadline)", looping.failed_calls
    );
    Ok(())
}

/// The stateful counter plugin (two state reads and writes and one output record per input)
/// in exactly-once and then in at-least-once delivery, over the same input.
pub async fn run_exactly_once(base: &Path, plugins: &Path, records: u64) -> anyhow::Result<()> {
    let Some([counter]) = read_plugins(plugins, ["counter"]) else {
        return Ok(());
    };
    let sandbox_alone = time_counter_sandbox(&counter, records)?;
    let setup = Setup::open(base, records).await?;
    let mut counts = Vec::new();
    for (group, delivery) in [
        ("counter-exactly-once", Delivery::ExactlyOnce),
        ("counter-at-least-once", Delivery::AtLeastOnce),
    ] {
        let limits = LimitOverrides {
            delivery: Some(delivery),
            ..LimitOverrides::default()
        };
        counts.push(time_group(&setup.host, group, &counter, records, limits).await?);
    }
    setup.close().await?;
    let (exactly, at_least) = (counts[0], counts[1]);
    println!();
    println!(
        "{:<44} {:>14} {:>10}",
        format!("COUNTER PLUGIN ({records} records of 100 B)"),
        "RECORDS/S",
        "NS/RECORD"
    );
    print_rates(
        records,
        &[
            ("exactly-once (state, outputs, offsets)", exactly),
            ("at-least-once", at_least),
            ("the plugin alone: sandbox, state in memory", sandbox_alone),
        ],
    );
    println!(
        "{:<44} {:>14.2}",
        "exactly-once / at-least-once",
        at_least.as_secs_f64() / exactly.as_secs_f64()
    );
    Ok(())
}

/// The counter in exactly-once delivery on the single engine over `records` records: the
/// baseline of the cluster measurement.
///
/// Timed from the first processed record to the last, as cluster workers are (their join,
/// like the engine's deploy and compile, is left out). Returns that time and the CPU time this
/// process (the engine) used in it.
pub async fn time_counter_exactly_once(
    base: &Path,
    counter: &[u8],
    records: u64,
) -> anyhow::Result<(Duration, Duration)> {
    let setup = Setup::open(base, records).await?;
    deploy(
        &setup.host,
        "counter-engine",
        counter,
        LimitOverrides::default(),
    )
    .await?;
    while setup.host.describe("counter-engine")?.processed_records == 0 {
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    let (started, cpu) = (Instant::now(), crate::process_cpu());
    loop {
        let progress = setup.host.describe("counter-engine")?;
        if progress.total_lag == 0 && progress.processed_records >= records {
            break;
        }
        // Not more often: a describe reads the store, on the engine's cores.
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let (elapsed, cpu) = (started.elapsed(), crate::process_cpu().saturating_sub(cpu));
    setup.close().await?;
    Ok((elapsed, cpu))
}

/// The counter in a sandbox over batches of 1,000, its state in memory: what the plugin
/// itself costs, without the log, the outbox or commits.
fn time_counter_sandbox(counter: &[u8], records: u64) -> anyhow::Result<Duration> {
    use crate::plugins::{make_batch, sample, start_sandbox};
    let runtime = sluice::runtime::Runtime::new(None)?;
    let plugin = runtime.compile(counter)?;
    let config = [("output".to_string(), "counts".to_string())];
    let (mut sandbox, state) = start_sandbox(&runtime, &plugin, &config)?;
    let batches: Vec<_> = sample(100_000, |i| format!("{i:0>100}"))
        .chunks(1_000)
        .map(make_batch)
        .collect();
    let batch_count = (records / 1_000) as usize;
    let started = Instant::now();
    for batch in batches.iter().cycle().take(batch_count) {
        let processed = sandbox.process(batch)?;
        state.apply(processed.state_writes);
    }
    let elapsed = started.elapsed();
    let total = state.entries().remove(b"total".as_slice());
    anyhow::ensure!(
        total == Some((batch_count * 1_000).to_string().into_bytes()),
        "the counter's total is {total:?}, not {}",
        batch_count * 1_000
    );
    Ok(elapsed)
}

fn print_rates(records: u64, rows: &[(&str, Duration)]) {
    for (name, elapsed) in rows {
        let rate = records as f64 / elapsed.as_secs_f64();
        println!("{name:<44} {rate:>14.0} {:>10.1}", 1e9 / rate);
    }
}

/// Deploys `wasm` as `group` over `in` from the earliest offset, configured to write to
/// `counts`.
async fn deploy(
    host: &Arc<PluginHost>,
    group: &str,
    wasm: &[u8],
    limits: LimitOverrides,
) -> anyhow::Result<()> {
    let spec = DeploySpec {
        topic: "in".into(),
        output_topics: vec!["counts".into()],
        config: [("output".to_string(), "counts".to_string())].into(),
        from: Some(StartFrom::Earliest),
        limits,
    };
    let (host, name, bytes) = (host.clone(), group.to_string(), wasm.to_vec());
    tokio::task::spawn_blocking(move || host.deploy(&name, spec, &bytes)).await??;
    Ok(())
}

/// Deploys `wasm` as `group` from the earliest offset and times it to the end of the input.
async fn time_group(
    host: &Arc<PluginHost>,
    group: &str,
    wasm: &[u8],
    records: u64,
    limits: LimitOverrides,
) -> anyhow::Result<Duration> {
    let started = Instant::now();
    deploy(host, group, wasm, limits).await?;
    loop {
        let progress = host.describe(group)?;
        if progress.total_lag == 0 && progress.processed_records >= records {
            return Ok(started.elapsed());
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}
