//! `sluice-bench`: its flags, the order the measurements run in, and the first table:
//! throughput of the log in-process and of the server over 127.0.0.1, for 100-byte and 1 KiB
//! records (the README quotes its output). The other measurements have a module each.

mod archive;
mod beside;
mod cluster;
mod groups;
mod kafka;
mod languages;
mod plugins;
mod queues;

use std::io::IsTerminal;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use clap::{Parser, ValueEnum};
use sluice::cli::plugin_build::Language;
use tracing_subscriber::EnvFilter;

use crate::beside::Work;
use sluice::cli::client::{Client, Position};
use sluice::config::Config;
use sluice::log::{Log, LogOptions, Record, TopicConfig, batch};

const ABOUT: &str = "Measure append, read, produce and consume throughput on this machine.";

#[derive(Parser)]
#[command(name = "sluice-bench", version, about = ABOUT, long_about = "\
Measure throughput on this machine, for 100-byte and 1 KiB records:

  append          records appended straight into a partition, no fsync
  append+fsync    concurrent appenders, each waiting for its group-committed fsync
  read            records read back from a partition and decoded
  produce         binary produce requests over HTTP on 127.0.0.1, acknowledged after fsync
  consume         binary fetches over HTTP on 127.0.0.1, batches decoded and CRC-checked
  plugins         the identity plugin at batch sizes 1 to 10,000 (engine and ABI overhead),
                  the filter plugin in WASM against the same Rust compiled natively, and cold
                  compile against a cached start (needs the plugins built, see plugins/README.md);
                  then a plugin consumer group through the whole engine path (log, plugin,
                  commit of state and offset), alone and beside a group whose plugin loops
  exactly-once    the stateful counter plugin (state, an output record per input, offsets)
                  in exactly-once and in at-least-once delivery over the same --records
                  (the README's figure: --records 10000000)
  languages       the order-totals example consumer of every language (examples/), built
                  from source, over the same --records orders: records/s against the job in
                  native Rust, memory per instance, cold compile and cached start (the README's
                  figure: --records 1000000)
  archive         Parquet archival of sealed segments (read, written, fsynced, verified)
                  against pyarrow.parquet.write_table with zstd writing the same rows in the
                  same run (needs python with pyarrow: ./scripts/test installs it in .venv);
                  then producers (append+fsync) and filter plugins (one per core) beside
                  archival as the engine runs it (low priority, default rate limit), at low
                  priority without the limit, and at normal priority, against the same work
                  alone just before and after
  cluster         (only with --only cluster: it needs Java 17 and Maven) the counter plugin,
                  exactly-once, run by 1, 2 and 3 `sluice worker`s on an Apache Kafka cluster
                  of --cluster-nodes nodes (scripts/kafka-cluster), against the single engine
                  in the same run (the README's figure: --records 1000000)
  kafka           (only with --only kafka: it needs Java 17 and Maven) a librdkafka producer
                  (acks=all) and consumer over Sluice's Kafka listener, then over Apache Kafka
                  started by scripts/kafka-broker with fsync per batch and with its defaults,
                  100-byte records, --records of them (the README's figure: 1000000)

  queues          (only with --only queues: it needs rabbitmq-server and redis-server from
                  Debian) --records records produced, then consumed and acknowledged one by
                  one by 1 and by 8 competing consumers: a Sluice share group over HTTP, a
                  RabbitMQ durable queue (classic and quorum, publisher confirms, prefetch
                  1000, manual acks) and Redis Streams with appendfsync always (XREADGROUP +
                  XACK), in the same run (the README's figure: --records 1000000)

Data goes to a temporary directory under --dir (default: the current directory), removed
afterwards. The last line gives the peak resident memory of the process.")]
struct BenchArgs {
    /// Records per measurement for 100-byte records (larger records: the same bytes in fewer
    /// records).
    #[arg(long, default_value_t = 2_000_000)]
    records: u64,
    /// Partitions of each benchmark topic; consumers read one partition each.
    #[arg(long, default_value_t = 4)]
    partitions: u32,
    /// Concurrent producers (and in-process appenders), spread over the partitions; each
    /// waits for its acknowledgement before sending again.
    #[arg(long, default_value_t = 8)]
    producers: usize,
    /// Records per append or produce request.
    #[arg(long, default_value_t = 1000)]
    batch: usize,
    /// Where the temporary data directory goes.
    #[arg(long, default_value = ".")]
    dir: PathBuf,
    /// Record sizes to measure, comma-separated.
    #[arg(long, value_delimiter = ',', default_values_t = [100usize, 1024])]
    record_size: Vec<usize>,
    /// Where the first-party plugins were built (for the plugin measurements).
    #[arg(long, default_value = "plugins/target/wasm32-wasip2/release")]
    plugins_dir: PathBuf,
    /// Where the example consumers are (one directory per language).
    #[arg(long, default_value = "examples")]
    examples_dir: PathBuf,
    /// Which measurements to run.
    #[arg(long, value_enum, default_value_t = Part::All)]
    only: Part,
    /// The languages of the `languages` measurement, comma-separated (default: all).
    #[arg(long, value_enum, value_delimiter = ',')]
    language: Vec<Language>,
    /// The script that installs, starts and stops Apache Kafka (for `--only kafka`).
    #[arg(long, default_value = "scripts/kafka-broker")]
    kafka_broker: PathBuf,
    /// The brokers of `--only kafka`, comma-separated (default: all three, in this order).
    #[arg(long, value_enum, value_delimiter = ',', default_values_t = crate::kafka::Broker::ALL)]
    kafka_brokers: Vec<crate::kafka::Broker>,
    /// The script that starts and stops an Apache Kafka cluster (for `--only cluster`).
    #[arg(long, default_value = "scripts/kafka-cluster")]
    kafka_cluster: PathBuf,
    /// The systems of `--only queues`, comma-separated (default: all four).
    #[arg(long, value_enum, value_delimiter = ',', default_values_t = crate::queues::System::ALL)]
    queue_systems: Vec<crate::queues::System>,
    /// Nodes of the Kafka cluster of `--only cluster`.
    #[arg(long, default_value_t = 3)]
    cluster_nodes: u32,
}

#[derive(Clone, Copy, PartialEq, Eq, ValueEnum)]
enum Part {
    All,
    Log,
    Server,
    Plugins,
    ExactlyOnce,
    Languages,
    Archive,
    /// Not part of `all`: it needs Java and Maven for Apache Kafka.
    Kafka,
    /// Not part of `all`: it needs Java and Maven for an Apache Kafka cluster.
    Cluster,
    /// Not part of `all`: it needs RabbitMQ and Redis (Debian's packages).
    Queues,
}

struct Row {
    name: &'static str,
    size: usize,
    records: u64,
    elapsed: Duration,
}

impl Row {
    fn print(&self) {
        let secs = self.elapsed.as_secs_f64();
        let rate = self.records as f64 / secs;
        println!(
            "{:<14} {:>6} B {:>12} {:>14.0} {:>10.1}",
            self.name,
            self.size,
            self.records,
            rate,
            rate * self.size as f64 / 1e6
        );
    }
}

fn main() -> ExitCode {
    let args = BenchArgs::parse();
    // The misbehaving plugin group of the plugin measurements would fill its table with
    // warnings.
    let filter = EnvFilter::try_from_env("SLUICE_LOG").unwrap_or_else(|_| EnvFilter::new("error"));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal())
        .init();
    let runtime = match tokio::runtime::Runtime::new() {
        Ok(runtime) => runtime,
        Err(error) => {
            eprintln!("error: cannot start the async runtime: {error}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(run(args)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("error: {error:#}");
            ExitCode::FAILURE
        }
    }
}

async fn run(args: BenchArgs) -> anyhow::Result<()> {
    if matches!(args.only, Part::All | Part::Log | Part::Server) {
        println!(
            "{:<14} {:>8} {:>12} {:>14} {:>10}",
            "SCENARIO", "RECORD", "RECORDS", "RECORDS/S", "MB/S"
        );
    }
    for &size in &args.record_size {
        let records = args.records * 100 / size.max(100) as u64;
        let records = records - records % (args.batch * args.producers) as u64;
        if matches!(args.only, Part::All | Part::Log) {
            for row in bench_log(&args, size, records).await? {
                row.print();
            }
        }
        if matches!(args.only, Part::All | Part::Server) {
            for row in bench_server(&args, size, records).await? {
                row.print();
            }
        }
    }
    if matches!(args.only, Part::All | Part::Plugins) {
        crate::plugins::run(&args.plugins_dir, args.only == Part::Plugins)?;
        crate::groups::run(&args.dir, &args.plugins_dir, args.records).await?;
    }
    if matches!(args.only, Part::All | Part::ExactlyOnce) {
        crate::groups::run_exactly_once(&args.dir, &args.plugins_dir, args.records).await?;
    }
    if matches!(args.only, Part::All | Part::Languages) {
        let (examples, records) = (args.examples_dir.clone(), args.records);
        let languages = match args.language.is_empty() {
            true => Language::ALL.to_vec(),
            false => args.language.clone(),
        };
        // Plugins make blocking calls (WASI), which must not run on an async worker.
        tokio::task::spawn_blocking(move || crate::languages::run(&examples, records, &languages))
            .await??;
    }
    if args.only == Part::Cluster {
        crate::cluster::run(
            &args.dir,
            &args.plugins_dir,
            &args.kafka_cluster,
            args.records,
            args.cluster_nodes,
        )
        .await?;
    }
    if args.only == Part::Queues {
        crate::queues::run(&args.dir, args.records, &args.queue_systems).await?;
    }
    if args.only == Part::Kafka {
        let brokers = &args.kafka_brokers;
        crate::kafka::run(
            &args.dir,
            &args.kafka_broker,
            brokers,
            args.records,
            args.partitions,
        )
        .await?;
    }
    if matches!(args.only, Part::All | Part::Archive) {
        crate::archive::run(&args.dir, args.records, &args.record_size)?;
        for &size in &args.record_size {
            let producers = Work::Producers {
                producers: args.producers,
                batch: args.batch,
            };
            crate::beside::run(&args.dir, args.records, size, producers).await?;
        }
        match std::fs::read(args.plugins_dir.join("filter.wasm")) {
            Ok(filter) => {
                let size = args.record_size.first().copied().unwrap_or(100);
                let plugins = Work::Plugins { filter };
                crate::beside::run(&args.dir, args.records, size, plugins).await?;
            }
            Err(error) => println!(
                "(skipping the plugins beside archival: {}/filter.wasm: {error}; see plugins/README.md)",
                args.plugins_dir.display()
            ),
        }
    }
    println!("peak resident memory: {} MiB", peak_rss_kib() / 1024);
    Ok(())
}

/// A batch of `count` records of `size`-byte values with varied content.
fn sample_records(size: usize, count: usize) -> Vec<Record> {
    (0..count)
        .map(|i| {
            let value: Vec<u8> = (0..size).map(|j| (i * 31 + j * 7) as u8).collect();
            Record {
                timestamp: 1_700_000_000_000 + i as i64,
                key: None,
                value: Some(Bytes::from(value)),
                headers: Vec::new(),
            }
        })
        .collect()
}

/// Benchmark records carry old timestamps: keep them from time-based retention.
fn keep_forever() -> (String, String) {
    ("retention_ms".into(), "none".into())
}

fn relaxed_topic() -> Vec<(String, String)> {
    vec![
        keep_forever(),
        ("flush".into(), "interval".into()),
        ("flush_interval_ms".into(), "3600000".into()),
    ]
}

async fn bench_log(args: &BenchArgs, size: usize, records: u64) -> anyhow::Result<Vec<Row>> {
    let dir = tempfile::Builder::new()
        .prefix("sluice-bench-")
        .tempdir_in(&args.dir)?;
    let options = LogOptions {
        topic_defaults: TopicConfig::default(),
        max_disk_bytes: None,
        min_free_bytes: 0,
        cold: None,
    };
    let log = Arc::new(Log::open(dir.path(), options)?);
    let batch = sample_records(size, args.batch);
    let batches = records / args.batch as u64;

    let topic = log.create_topic("append", 1, &relaxed_topic())?;
    let partition = topic.partition(0)?;
    let started = Instant::now();
    for _ in 0..batches {
        partition.append(&batch)?;
    }
    let append = Row {
        name: "append",
        size,
        records,
        elapsed: started.elapsed(),
    };

    let topic = log.create_topic("append-fsync", args.partitions, &[keep_forever()])?;
    let started = Instant::now();
    let mut tasks = tokio::task::JoinSet::new();
    for p in 0..args.producers {
        let (partition, batch) = (topic.partition(p as u32 % args.partitions)?, batch.clone());
        let per = batches / args.producers as u64;
        tasks.spawn(async move {
            for _ in 0..per {
                partition.append_durable(&batch).await?;
            }
            Ok::<_, sluice::log::LogError>(())
        });
    }
    while let Some(done) = tasks.join_next().await {
        done??;
    }
    let fsync = Row {
        name: "append+fsync",
        size,
        records,
        elapsed: started.elapsed(),
    };

    let started = Instant::now();
    let mut offset = 0;
    let mut read = 0u64;
    while offset < partition.high_watermark() {
        let fetched = partition.read(offset, 4 << 20)?;
        read += count_records(Bytes::from(fetched.data), offset)?;
        offset = fetched.next_offset;
    }
    let reading = Row {
        name: "read",
        size,
        records: read,
        elapsed: started.elapsed(),
    };
    log.close()?;
    Ok(vec![append, fsync, reading])
}

/// Decodes (and CRC-checks) every batch, counting the records at or after `from`.
fn count_records(data: Bytes, from: u64) -> anyhow::Result<u64> {
    let mut count = 0;
    for batch in batch::Batches::new(data) {
        let (header, records) = batch?;
        count += records.len() as u64
            - from
                .saturating_sub(header.base_offset)
                .min(records.len() as u64);
    }
    Ok(count)
}

/// A Sluice server in this process on loopback ports of the system's choosing (HTTP and
/// Kafka), with its defaults but no free-space floor, so a small benchmark disk still runs.
pub(crate) async fn start_sluice(dir: &std::path::Path) -> anyhow::Result<sluice::server::Running> {
    let config = Config {
        data_dir: dir.to_path_buf(),
        listen: "127.0.0.1:0".parse()?,
        storage: sluice::config::StorageSettings {
            min_free_bytes: 0,
            ..Default::default()
        },
        kafka: sluice::config::KafkaSettings {
            listen: "127.0.0.1:0".parse()?,
            ..Default::default()
        },
        ..Config::default()
    };
    Ok(sluice::server::start(config).await?)
}

async fn bench_server(args: &BenchArgs, size: usize, records: u64) -> anyhow::Result<Vec<Row>> {
    let dir = tempfile::Builder::new()
        .prefix("sluice-bench-")
        .tempdir_in(&args.dir)?;
    let server = start_sluice(dir.path()).await?;
    let client = Client::new(&format!("http://{}", server.addr));
    let partitions = args.partitions;
    client
        .create_topic(&sluice::server::api::CreateTopic {
            name: "bench".into(),
            partitions,
            config: [("retention_ms".to_string(), serde_json::Value::Null)].into(),
        })
        .await?;
    let frame = Bytes::from(batch::encode_records_frame(&sample_records(
        size, args.batch,
    )));
    let per = records / args.batch as u64 / args.producers as u64;

    let started = Instant::now();
    let mut tasks = tokio::task::JoinSet::new();
    for producer in 0..args.producers {
        let (client, frame) = (client.clone(), frame.clone());
        let partition = producer as u32 % partitions;
        tasks.spawn(async move {
            for _ in 0..per {
                client
                    .produce_frame("bench", Some(partition), frame.clone())
                    .await?;
            }
            Ok::<_, anyhow::Error>(0u64)
        });
    }
    while let Some(done) = tasks.join_next().await {
        done??;
    }
    let produce = Row {
        name: "produce",
        size,
        records,
        elapsed: started.elapsed(),
    };

    let started = Instant::now();
    for p in 0..partitions {
        let client = client.clone();
        tasks.spawn(async move {
            let (mut offset, mut count) = (0u64, 0u64);
            loop {
                let (data, next, high_watermark, _) = client
                    .fetch_raw("bench", p, Position::Offset(offset), 4 << 20, 0)
                    .await?;
                count += count_records(data, offset)?;
                offset = next;
                if offset >= high_watermark {
                    return Ok(count);
                }
            }
        });
    }
    let mut consumed = 0;
    while let Some(done) = tasks.join_next().await {
        consumed += done??;
    }
    let consume = Row {
        name: "consume",
        size,
        records: consumed,
        elapsed: started.elapsed(),
    };
    server.stop().await?;
    Ok(vec![produce, consume])
}

/// CPU time this process has used so far, user and system, all threads.
fn process_cpu() -> Duration {
    // SAFETY: a zeroed rusage is a valid value of the plain C struct getrusage fills.
    let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
    // SAFETY: getrusage writes into the struct it is given, which outlives the call.
    if unsafe { libc::getrusage(libc::RUSAGE_SELF, &mut usage) } != 0 {
        return Duration::ZERO;
    }
    let time = |t: libc::timeval| {
        Duration::from_secs(t.tv_sec.max(0) as u64) + Duration::from_micros(t.tv_usec.max(0) as u64)
    };
    time(usage.ru_utime) + time(usage.ru_stime)
}

/// CPU time (user and system) of each live thread of this process so far, by thread id,
/// with the thread's name; to the kernel's clock tick (10 ms).
fn threads_cpu() -> std::collections::BTreeMap<u32, (String, Duration)> {
    // SAFETY: sysconf reads a constant of the system; it has no preconditions.
    let ticks_per_second = unsafe { libc::sysconf(libc::_SC_CLK_TCK) }.max(1) as f64;
    let mut out = std::collections::BTreeMap::new();
    let Ok(tasks) = std::fs::read_dir("/proc/self/task") else {
        return out;
    };
    for task in tasks.flatten() {
        let Some(tid) = task.file_name().to_str().and_then(|t| t.parse().ok()) else {
            continue;
        };
        let Ok(stat) = std::fs::read_to_string(task.path().join("stat")) else {
            continue; // the thread ended meanwhile
        };
        // "tid (name) state ppid ...": the name may hold spaces and parentheses, so the
        // fields are counted from the last ')'; utime and stime are fields 14 and 15.
        let (Some(open), Some(close)) = (stat.find('('), stat.rfind(')')) else {
            continue;
        };
        let name = stat[open + 1..close].to_string();
        let fields: Vec<&str> = stat[close + 1..].split_whitespace().collect();
        let Some(times) = fields.get(11..13) else {
            continue;
        };
        let ticks: f64 = times.iter().filter_map(|f| f.parse::<f64>().ok()).sum();
        out.insert(
            tid,
            (name, Duration::from_secs_f64(ticks / ticks_per_second)),
        );
    }
    out
}

fn peak_rss_kib() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmHWM:"))?
                .split_whitespace()
                .nth(1)?
                .parse()
                .ok()
        })
        .unwrap_or(0)
}
