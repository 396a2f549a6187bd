//! The cluster-mode part of `sluice-bench` (`--only cluster`): exactly-once records/s of the
//! counter plugin run by `sluice worker`s (in this process) on an Apache Kafka cluster started
//! by scripts/kafka-cluster, against the same plugin on the single engine in the same run; then
//! 1, 2 and 3 workers sharing the group. On one machine the workers and brokers share its
//! cores, so more workers show the overhead of sharing, not the scaling (docs/cluster.md).
//! The rate at which the same records were produced into the cluster (an idempotent producer,
//! acks=all, nothing else running) is printed too: the most the cluster takes on this machine.

use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context;
use rdkafka::ClientConfig;
use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::producer::{BaseProducer, BaseRecord, Producer};

use sluice::cluster::Worker;
use sluice::config::Config;
use sluice::runtime::DeploySpec;

/// Input partitions, as the single engine's measurement has.
const PARTITIONS: u32 = 4;
/// The longest a measurement may take.
const PHASE_TIMEOUT: Duration = Duration::from_secs(600);

pub async fn run(
    base: &Path,
    plugins: &Path,
    script: &Path,
    records: u64,
    nodes: u32,
) -> anyhow::Result<()> {
    let counter = std::fs::read(plugins.join("counter.wasm"))
        .with_context(|| format!("the counter plugin in {}", plugins.display()))?;
    let (engine, engine_cpu) =
        crate::groups::time_counter_exactly_once(base, &counter, records).await?;
    let dir = tempfile::tempdir_in(base)?;
    let cluster = crate::kafka::Running::start(script, dir.path(), [nodes.to_string()])?;
    let replicas = nodes.min(3) as i32;
    for topic in ["in", "counts"] {
        create_topic(&cluster.bootstrap, topic, replicas).await?;
    }
    let (bootstrap, produced) = (cluster.bootstrap.clone(), records);
    let producing = Instant::now();
    tokio::task::spawn_blocking(move || produce(&bootstrap, "in", produced)).await??;
    let producing = producing.elapsed();
    let mut rows = Vec::new();
    for workers in 1..=3u32 {
        let (bootstrap, dir, wasm) = (
            cluster.bootstrap.clone(),
            base.to_path_buf(),
            counter.clone(),
        );
        let timed = tokio::task::spawn_blocking(move || {
            time_workers(&bootstrap, &dir, &wasm, records, workers)
        })
        .await??;
        rows.push((workers, timed));
    }
    println!();
    // CPU per record: this process's (the engine's, or the workers' with their Kafka
    // clients), not the brokers'. What a worker would cost on cores of its own.
    let cpu_per_record = |cpu: Duration| cpu.as_secs_f64() * 1e6 / records as f64;
    println!(
        "{:<52} {:>14} {:>10} {:>12}",
        format!("COUNTER PLUGIN, EXACTLY-ONCE ({records} records of 100 B)"),
        "RECORDS/S",
        "VS ENGINE",
        "CPU US/REC"
    );
    let engine_rate = records as f64 / engine.as_secs_f64();
    println!(
        "{:<52} {engine_rate:>14.0} {:>10.2} {:>12.2}",
        "single engine (redb transaction)",
        1.0,
        cpu_per_record(engine_cpu)
    );
    let produce_rate = records as f64 / producing.as_secs_f64();
    println!(
        "{:<52} {produce_rate:>14.0} {:>10.2} {:>12}",
        "the cluster's ceiling: produce alone (acks=all)",
        produce_rate / engine_rate,
        "-"
    );
    for (workers, timed) in &rows {
        let rate = records as f64 / timed.elapsed.as_secs_f64();
        println!(
            "{:<52} {rate:>14.0} {:>10.2} {:>12.2}",
            format!(
                "{workers} worker(s) on {nodes} Kafka node(s), per worker: {:.0}",
                rate / f64::from(*workers)
            ),
            rate / engine_rate,
            cpu_per_record(timed.cpu)
        );
    }
    if let Some((_, one)) = rows.first() {
        let split: Vec<String> = one
            .by_thread
            .iter()
            .map(|(kind, cpu)| format!("{kind} {:.2}", cpu_per_record(*cpu)))
            .collect();
        println!(
            "one worker's CPU us per record by thread: {}",
            split.join(", ")
        );
    }
    Ok(())
}

/// A run of workers: how long it took, and the CPU time this process (the workers with their
/// Kafka clients) used meanwhile, in all and by kind of thread.
struct Timed {
    elapsed: Duration,
    cpu: Duration,
    by_thread: Vec<(&'static str, Duration)>,
}

/// The kind of a worker's thread, by its name.
fn thread_kind(name: &str) -> &'static str {
    if name.starts_with("sluice-group") {
        "group thread (plugin, records in and out)"
    } else if name.starts_with("rdk:") {
        "librdkafka (fetch, compression, requests)"
    } else {
        "other"
    }
}

/// CPU time of this process's threads by kind since `before`.
fn cpu_by_thread(
    before: &std::collections::BTreeMap<u32, (String, Duration)>,
) -> Vec<(&'static str, Duration)> {
    let mut kinds: Vec<(&'static str, Duration)> = Vec::new();
    for (tid, (name, now)) in crate::threads_cpu() {
        let spent = now.saturating_sub(before.get(&tid).map_or(Duration::ZERO, |b| b.1));
        let kind = thread_kind(&name);
        match kinds.iter_mut().find(|(k, _)| *k == kind) {
            Some((_, total)) => *total += spent,
            None => kinds.push((kind, spent)),
        }
    }
    kinds.sort_by_key(|(kind, _)| *kind);
    kinds
}

/// Starts `workers` workers, deploys the counter through the first as a new group from the
/// earliest offset, and times it from its first processed record to the last: the steady
/// rate, without the group's join (a few seconds, the same whatever the input).
fn time_workers(
    bootstrap: &str,
    base: &Path,
    wasm: &[u8],
    records: u64,
    workers: u32,
) -> anyhow::Result<Timed> {
    let dir = tempfile::tempdir_in(base)?;
    let mut running: Vec<Arc<Worker>> = Vec::new();
    for n in 0..workers {
        let mut config = Config {
            data_dir: dir.path().join(format!("w{n}")),
            ..Config::default()
        };
        config.cluster.bootstrap_servers = bootstrap.to_string();
        config.cluster.worker_id = Some(format!("bench-{workers}-{n}"));
        config.cluster.replication_factor = None;
        running.push(Worker::start(&config)?);
    }
    let group = format!("counter-{workers}");
    let spec = DeploySpec {
        topic: "in".into(),
        output_topics: vec!["counts".into()],
        config: [("output".to_string(), "counts".to_string())].into(),
        ..DeploySpec::default()
    };
    running[0].deploy(&group, spec, wasm)?;
    let processed = || -> u64 {
        running
            .iter()
            .filter_map(|w| w.statuses().get(&group).map(|s| s.processed_records))
            .sum()
    };
    let deadline = Instant::now() + PHASE_TIMEOUT;
    while processed() == 0 {
        anyhow::ensure!(Instant::now() < deadline, "the group processed nothing");
        std::thread::sleep(Duration::from_millis(1));
    }
    let (started, cpu, threads) = (Instant::now(), crate::process_cpu(), crate::threads_cpu());
    while processed() < records {
        anyhow::ensure!(
            Instant::now() < deadline,
            "the group processed {} of {records} records",
            processed()
        );
        std::thread::sleep(Duration::from_millis(1));
    }
    let timed = Timed {
        elapsed: started.elapsed(),
        cpu: crate::process_cpu().saturating_sub(cpu),
        by_thread: cpu_by_thread(&threads),
    };
    for worker in &running {
        worker.stop();
    }
    Ok(timed)
}

async fn create_topic(bootstrap: &str, name: &str, replicas: i32) -> anyhow::Result<()> {
    let admin: AdminClient<DefaultClientContext> = ClientConfig::new()
        .set("bootstrap.servers", bootstrap)
        .create()?;
    let topic = NewTopic::new(name, PARTITIONS as i32, TopicReplication::Fixed(replicas));
    for result in admin.create_topics([&topic], &AdminOptions::new()).await? {
        result.map_err(|(topic, code)| anyhow::anyhow!("creating {topic}: {code}"))?;
    }
    Ok(())
}

/// Produces the single engine's input: 100-byte values, keys `key-<i % 1000>`.
fn produce(bootstrap: &str, topic: &str, records: u64) -> anyhow::Result<()> {
    let producer: BaseProducer = ClientConfig::new()
        .set("bootstrap.servers", bootstrap)
        .set("acks", "all")
        .set("enable.idempotence", "true")
        .set("linger.ms", "5")
        .create()?;
    for i in 0..records {
        let (key, value) = (
            format!("key-{}", i % 1_000),
            format!("{i:0>100}").into_bytes(),
        );
        crate::kafka::send(&producer, BaseRecord::to(topic).key(&key).payload(&value))?;
        if i % 1_000 == 0 {
            producer.poll(Duration::ZERO);
        }
    }
    producer.flush(PHASE_TIMEOUT)?;
    Ok(())
}
