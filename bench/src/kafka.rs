//! `sluice-bench --only kafka`: the Kafka protocol door against Apache Kafka, in the same run.
//! A librdkafka producer (the `rdkafka` crate, acks=all, batches as librdkafka makes them) and
//! consumer move the same records of 100 bytes through three brokers, one at a time on this
//! machine:
//!
//! - Sluice (in this process), fsync before acknowledgement (its default);
//! - Apache Kafka with `log.flush.interval.messages=1`: fsync of each appended batch before
//!   acknowledgement, as Sluice does;
//! - Apache Kafka with its defaults: acknowledged from the page cache, flushed later.
//!
//! Each broker first moves a tenth as many records through a topic of its own, unmeasured,
//! so that Kafka's JVM runs compiled code in the measured run. The brokers are started by
//! scripts/kafka-broker (a single KRaft node, -Xmx512m), which `--kafka-broker` names.

use std::fmt::Write as _;
use std::path::Path;
use std::process::Command;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::config::ClientConfig;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::message::Message;
use rdkafka::producer::{BaseProducer, BaseRecord, DeliveryResult, Producer, ProducerContext};
use rdkafka::{ClientContext, Offset, TopicPartitionList};

/// Bytes of each record's value.
const RECORD_BYTES: usize = 100;
/// The topic every broker gets, and the one of the warm-up before it.
const TOPIC: &str = "bench";
const WARM_UP_TOPIC: &str = "warm-up";
/// Records produced and consumed before the measured run, in tenths of --records: the JVM
/// compiles its hot paths in the first seconds (Kafka's first run was up to twice slower).
const WARM_UP_TENTHS: u64 = 1;
/// Longest a produce or consume may take before the run gives up.
const PHASE_TIMEOUT: Duration = Duration::from_secs(600);

/// The brokers measured.
#[derive(Clone, Copy, PartialEq, Eq, Debug, clap::ValueEnum)]
pub enum Broker {
    /// Sluice, fsync before acknowledgement.
    Sluice,
    /// Apache Kafka with `log.flush.interval.messages=1`.
    KafkaFsync,
    /// Apache Kafka with its defaults.
    Kafka,
}

impl Broker {
    pub const ALL: [Broker; 3] = [Broker::Sluice, Broker::KafkaFsync, Broker::Kafka];

    fn label(self) -> &'static str {
        match self {
            Broker::Sluice => "sluice (fsync before ack)",
            Broker::KafkaFsync => "kafka (fsync per batch)",
            Broker::Kafka => "kafka (defaults)",
        }
    }

    /// Settings added to the broker's server.properties.
    fn settings(self) -> &'static [&'static str] {
        match self {
            Broker::KafkaFsync => &["log.flush.interval.messages=1"],
            _ => &[],
        }
    }
}

/// One broker's figures.
struct Measured {
    broker: Broker,
    produce: Duration,
    consume: Duration,
}

/// Counts deliveries as librdkafka reports them.
#[derive(Default)]
struct Deliveries {
    delivered: AtomicU64,
    failed: AtomicU64,
}

impl ClientContext for Deliveries {}

impl ProducerContext for Deliveries {
    type DeliveryOpaque = ();

    fn delivery(&self, result: &DeliveryResult<'_>, _: ()) {
        match result {
            Ok(_) => self.delivered.fetch_add(1, Ordering::Relaxed),
            Err(_) => self.failed.fetch_add(1, Ordering::Relaxed),
        };
    }
}

pub async fn run(
    data_dir: &Path,
    broker_script: &Path,
    brokers: &[Broker],
    records: u64,
    partitions: u32,
) -> anyhow::Result<()> {
    println!();
    println!(
        "KAFKA PROTOCOL: librdkafka {}, {records} records of {RECORD_BYTES} B, acks=all, {partitions} partitions",
        rdkafka::util::get_rdkafka_version().1
    );
    println!(
        "{:<28} {:>14} {:>9} {:>14} {:>9}",
        "BROKER", "PRODUCE REC/S", "MB/S", "CONSUME REC/S", "MB/S"
    );
    let mut results = Vec::new();
    for &broker in brokers {
        let dir = tempfile::Builder::new()
            .prefix("sluice-bench-kafka-")
            .tempdir_in(data_dir)?;
        let measured = match broker {
            Broker::Sluice => {
                let server = crate::start_sluice(dir.path()).await?;
                let bootstrap = server
                    .kafka
                    .context("the Kafka listener is off")?
                    .to_string();
                let measured = measure(broker, &bootstrap, records, partitions).await?;
                server.stop().await?;
                measured
            }
            _ => {
                install(broker_script)?;
                let running =
                    Running::start(broker_script, &dir.path().join("broker"), broker.settings())?;
                measure(broker, &running.bootstrap, records, partitions).await?
            }
        };
        measured.print(records);
        results.push(measured);
    }
    print_ratios(&results);
    Ok(())
}

fn install(script: &Path) -> anyhow::Result<()> {
    let status = Command::new(script)
        .arg("install")
        .status()
        .with_context(|| format!("running {}", script.display()))?;
    if !status.success() {
        bail!("{} install failed", script.display());
    }
    Ok(())
}

/// Apache Kafka started by a script (scripts/kafka-broker or scripts/kafka-cluster), stopped
/// when dropped.
pub(crate) struct Running<'a> {
    script: &'a Path,
    dir: std::path::PathBuf,
    pub(crate) bootstrap: String,
}

impl<'a> Running<'a> {
    /// Runs `script start DIR ARGS...`; the bootstrap list it prints.
    pub(crate) fn start<S: AsRef<std::ffi::OsStr>>(
        script: &'a Path,
        dir: &Path,
        args: impl IntoIterator<Item = S>,
    ) -> anyhow::Result<Running<'a>> {
        let output = Command::new(script)
            .arg("start")
            .arg(dir)
            .args(args)
            .output()
            .with_context(|| format!("running {}", script.display()))?;
        if !output.status.success() {
            bail!(
                "{} start failed: {}",
                script.display(),
                String::from_utf8_lossy(&output.stderr)
            );
        }
        let bootstrap = String::from_utf8(output.stdout)?.trim().to_string();
        Ok(Running {
            script,
            dir: dir.to_path_buf(),
            bootstrap,
        })
    }
}

impl Drop for Running<'_> {
    fn drop(&mut self) {
        let _ = Command::new(self.script)
            .arg("stop")
            .arg(&self.dir)
            .output();
    }
}

async fn measure(
    broker: Broker,
    bootstrap: &str,
    records: u64,
    partitions: u32,
) -> anyhow::Result<Measured> {
    create_topic(bootstrap, WARM_UP_TOPIC, partitions).await?;
    create_topic(bootstrap, TOPIC, partitions).await?;
    let bootstrap = bootstrap.to_string();
    // librdkafka's calls block: off the async workers, which serve Sluice's listener.
    tokio::task::spawn_blocking(move || {
        let warm_up = records * WARM_UP_TENTHS / 10;
        produce(&bootstrap, WARM_UP_TOPIC, warm_up)?;
        consume(&bootstrap, WARM_UP_TOPIC, warm_up, partitions)?;
        let produce = produce(&bootstrap, TOPIC, records)?;
        let consume = consume(&bootstrap, TOPIC, records, partitions)?;
        Ok(Measured {
            broker,
            produce,
            consume,
        })
    })
    .await?
}

async fn create_topic(bootstrap: &str, name: &str, partitions: u32) -> anyhow::Result<()> {
    let admin: AdminClient<DefaultClientContext> = ClientConfig::new()
        .set("bootstrap.servers", bootstrap)
        .create()?;
    let topic = NewTopic::new(name, partitions as i32, TopicReplication::Fixed(1));
    for result in admin.create_topics([&topic], &AdminOptions::new()).await? {
        result.map_err(|(topic, code)| anyhow::anyhow!("creating {topic}: {code}"))?;
    }
    Ok(())
}

/// Produces `records` records, acks=all; the time until librdkafka reported every delivery.
fn produce(bootstrap: &str, topic: &str, records: u64) -> anyhow::Result<Duration> {
    let producer: BaseProducer<Deliveries> = ClientConfig::new()
        .set("bootstrap.servers", bootstrap)
        .set("acks", "all")
        .create_with_context(Deliveries::default())?;
    let value: Vec<u8> = (0..RECORD_BYTES).map(|i| (i * 7) as u8).collect();
    let mut key = String::new();
    let started = Instant::now();
    for i in 0..records {
        key.clear();
        write!(key, "{}", i % 10_000)?;
        send(&producer, BaseRecord::to(topic).key(&key).payload(&value))?;
        if i % 1_000 == 0 {
            producer.poll(Duration::ZERO);
        }
    }
    producer.flush(PHASE_TIMEOUT)?;
    let elapsed = started.elapsed();
    let deliveries = producer.context();
    let (delivered, failed) = (
        deliveries.delivered.load(Ordering::Relaxed),
        deliveries.failed.load(Ordering::Relaxed),
    );
    if delivered != records || failed != 0 {
        bail!("produce: {delivered} of {records} records delivered, {failed} failed");
    }
    Ok(elapsed)
}

/// Queues one record, waiting while librdkafka's queue is full.
pub(crate) fn send<C: ProducerContext>(
    producer: &BaseProducer<C>,
    mut record: BaseRecord<'_, String, Vec<u8>, C::DeliveryOpaque>,
) -> anyhow::Result<()>
where
    C::DeliveryOpaque: Default,
{
    loop {
        match producer.send(record) {
            Ok(()) => return Ok(()),
            Err((KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull), back)) => {
                record = back;
                producer.poll(Duration::from_millis(1));
            }
            Err((error, _)) => bail!("produce: {error}"),
        }
    }
}

/// Reads every record back from the start of each partition; the time it took.
fn consume(
    bootstrap: &str,
    topic: &str,
    records: u64,
    partitions: u32,
) -> anyhow::Result<Duration> {
    let consumer: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", bootstrap)
        .set("group.id", "sluice-bench")
        .set("enable.auto.commit", "false")
        .create()?;
    let mut assignment = TopicPartitionList::new();
    for partition in 0..partitions {
        assignment.add_partition_offset(topic, partition as i32, Offset::Beginning)?;
    }
    consumer.assign(&assignment)?;
    let started = Instant::now();
    let (mut read, mut bytes) = (0u64, 0usize);
    let mut polls = 0u64;
    while read < records {
        // The clock is read once per thousand polls, not per record.
        polls += 1;
        if polls.is_multiple_of(1_024) && started.elapsed() > PHASE_TIMEOUT {
            bail!("consume: {read} of {records} records read in {PHASE_TIMEOUT:?}");
        }
        match consumer.poll(Duration::from_secs(1)) {
            Some(Ok(message)) => {
                read += 1;
                bytes += message.payload().map_or(0, <[u8]>::len);
            }
            Some(Err(error)) => bail!("consume: {error}"),
            None => {}
        }
    }
    let elapsed = started.elapsed();
    if bytes != records as usize * RECORD_BYTES {
        bail!("consume: {bytes} bytes of values read, not {records} x {RECORD_BYTES}");
    }
    Ok(elapsed)
}

impl Measured {
    fn print(&self, records: u64) {
        let rate = |d: Duration| records as f64 / d.as_secs_f64();
        let mb = |d: Duration| rate(d) * RECORD_BYTES as f64 / 1e6;
        println!(
            "{:<28} {:>14.0} {:>9.1} {:>14.0} {:>9.1}",
            self.broker.label(),
            rate(self.produce),
            mb(self.produce),
            rate(self.consume),
            mb(self.consume)
        );
    }
}

fn print_ratios(results: &[Measured]) {
    if let [sluice, fsync, defaults] = results
        && [sluice.broker, fsync.broker, defaults.broker] == Broker::ALL
    {
        let ratio = |a: Duration, b: Duration| b.as_secs_f64() / a.as_secs_f64();
        println!(
            "sluice / kafka: produce {:.2}x kafka with fsync per batch, {:.2}x kafka's defaults; consume {:.2}x and {:.2}x",
            ratio(sluice.produce, fsync.produce),
            ratio(sluice.produce, defaults.produce),
            ratio(sluice.consume, fsync.consume),
            ratio(sluice.consume, defaults.consume),
        );
    }
}
