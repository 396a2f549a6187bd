//! `sluice-bench --only queues`: a work queue three ways in the same run. The same records of
//! 100 bytes are produced, then consumed by 1 and by 8 competing consumers that acknowledge
//! each record, with a prefetch of 1,000:
//!
//! - Sluice's share groups over HTTP (the engine in this process): each fetch carries the
//!   acknowledgements of the records the previous one took (ranges of offsets; a fetch that
//!   came back short, when the queue runs dry, is acknowledged at once instead), in binary
//!   (stored batches and acquired ranges) and in JSON; the window journal fsynced before each
//!   answer, produce acknowledged after fsync;
//! - RabbitMQ (Debian's package, started here): a durable queue (classic, then quorum),
//!   persistent messages published with publisher confirms, consumers with `basic.qos`
//!   prefetch 1,000 and manual acknowledgements (`multiple` every 100 deliveries, and after
//!   10 ms without one);
//! - Redis Streams (Debian's package, started here) with `appendfsync always`, so that a
//!   write is on disk before its answer as in the other two: XADD pipelined, then XREADGROUP
//!   COUNT 1,000 and one XACK per read naming each entry.
//!
//! Every client is a Rust client in this process (sluice's own, `lapin`, `redis`), on the
//! same cores as the brokers. Consumption ends when the last record is acknowledged
//! ([`Progress`]): consumers still in a long poll for records that will not come do not count.

use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use bytes::Bytes;
use futures::StreamExt;
use lapin::options::{
    BasicAckOptions, BasicConsumeOptions, BasicPublishOptions, BasicQosOptions,
    ConfirmSelectOptions, QueueDeclareOptions,
};
use lapin::types::{AMQPValue, FieldTable};
use lapin::{BasicProperties, Connection, ConnectionProperties};
use sluice::cli::client::Client;
use sluice::log::Record;
use sluice::server::api::{AckAction, CreateTopic, ShareAck, ShareAckRequest, ShareFetchRequest};

const RECORD_BYTES: usize = 100;
const PREFETCH: usize = 1_000;
/// Records per produce request, publish window and XADD pipeline.
const PRODUCE_BATCH: usize = 1_000;
/// RabbitMQ consumers acknowledge with `multiple` every this many deliveries, and what they
/// hold when no delivery came for this long.
const RABBIT_ACK_EVERY: u64 = 100;
const RABBIT_ACK_IDLE: Duration = Duration::from_millis(10);
const PARTITIONS: u32 = 2;
const CONSUMER_COUNTS: [usize; 2] = [1, 8];
const START_TIMEOUT: Duration = Duration::from_secs(60);

/// The systems measured.
#[derive(Clone, Copy, PartialEq, Eq, Debug, clap::ValueEnum)]
pub enum System {
    /// Binary share fetches (stored batches and acquired ranges).
    Sluice,
    /// Share fetches in JSON.
    SluiceJson,
    RabbitClassic,
    RabbitQuorum,
    Redis,
}

impl System {
    pub const ALL: [System; 5] = [
        System::Sluice,
        System::SluiceJson,
        System::RabbitClassic,
        System::RabbitQuorum,
        System::Redis,
    ];

    fn label(self) -> &'static str {
        match self {
            System::Sluice => "sluice share group (binary)",
            System::SluiceJson => "sluice share group (JSON)",
            System::RabbitClassic => "rabbitmq classic durable",
            System::RabbitQuorum => "rabbitmq quorum",
            System::Redis => "redis streams (fsync always)",
        }
    }
}

/// A run's consumption, shared by its consumers: the records acknowledged, and when the last
/// one was.
struct Progress {
    records: u64,
    acked: AtomicU64,
    started: Instant,
    finished: OnceLock<Duration>,
}

impl Progress {
    fn start(records: u64) -> Arc<Progress> {
        Arc::new(Progress {
            records,
            acked: AtomicU64::new(0),
            started: Instant::now(),
            finished: OnceLock::new(),
        })
    }

    fn acked(&self, count: u64) {
        if self.acked.fetch_add(count, Ordering::Relaxed) + count >= self.records {
            let _ = self.finished.set(self.started.elapsed());
        }
    }

    fn done(&self) -> bool {
        self.acked.load(Ordering::Relaxed) >= self.records
    }

    /// From the start to the last acknowledgement.
    fn elapsed(&self) -> Duration {
        self.finished
            .get()
            .copied()
            .unwrap_or_else(|| self.started.elapsed())
    }
}

struct Measured {
    system: System,
    consumers: usize,
    produce: Duration,
    consume: Duration,
}

pub async fn run(data_dir: &Path, records: u64, systems: &[System]) -> anyhow::Result<()> {
    println!();
    println!(
        "QUEUES: {records} records of {RECORD_BYTES} B produced, then consumed and acknowledged one by one, prefetch {PREFETCH}"
    );
    println!(
        "{:<30} {:>9} {:>14} {:>14}",
        "SYSTEM", "CONSUMERS", "PRODUCE REC/S", "CONSUME+ACK/S"
    );
    let mut results = Vec::new();
    for &system in systems {
        for consumers in CONSUMER_COUNTS {
            let dir = tempfile::Builder::new()
                .prefix("sluice-bench-queues-")
                .tempdir_in(data_dir)?;
            let measured = match system {
                System::Sluice | System::SluiceJson => {
                    sluice_run(system, dir.path(), records, consumers).await?
                }
                System::RabbitClassic | System::RabbitQuorum => {
                    let rabbit = Rabbit::start(dir.path())?;
                    let measured = rabbit.measure(system, records, consumers).await;
                    rabbit.stop();
                    measured?
                }
                System::Redis => {
                    let redis = Redis::start(dir.path())?;
                    redis.measure(records, consumers).await?
                }
            };
            print_row(&measured, records);
            results.push(measured);
        }
    }
    print_ratios(&results, records);
    Ok(())
}

fn rate(records: u64, elapsed: Duration) -> f64 {
    records as f64 / elapsed.as_secs_f64()
}

fn print_row(m: &Measured, records: u64) {
    println!(
        "{:<30} {:>9} {:>14.0} {:>14.0}",
        m.system.label(),
        m.consumers,
        rate(records, m.produce),
        rate(records, m.consume)
    );
}

fn print_ratios(results: &[Measured], records: u64) {
    for consumers in CONSUMER_COUNTS {
        let of = |system| {
            results
                .iter()
                .find(|m| m.system == system && m.consumers == consumers)
                .map(|m| rate(records, m.consume))
        };
        let Some(sluice) = of(System::Sluice).or(of(System::SluiceJson)) else {
            continue;
        };
        let best = [System::RabbitClassic, System::RabbitQuorum, System::Redis]
            .into_iter()
            .filter_map(|s| of(s).map(|r| (s, r)))
            .max_by(|a, b| a.1.total_cmp(&b.1));
        if let Some((system, best_rate)) = best {
            println!(
                "{consumers} consumer(s): sluice / best other ({}) = {:.2}",
                system.label(),
                sluice / best_rate
            );
        }
    }
}

fn value(i: u64) -> Vec<u8> {
    format!("{i:0>width$}", width = RECORD_BYTES).into_bytes()
}

async fn sluice_run(
    system: System,
    dir: &Path,
    records: u64,
    consumers: usize,
) -> anyhow::Result<Measured> {
    let server = crate::start_sluice(dir).await?;
    let url = format!("http://{}", server.addr);
    let client = Client::new(&url);
    client
        .create_topic(&CreateTopic {
            name: "jobs".into(),
            partitions: PARTITIONS,
            config: Default::default(),
        })
        .await?;
    let started = Instant::now();
    let mut producers = tokio::task::JoinSet::new();
    let next = Arc::new(AtomicU64::new(0));
    for _ in 0..4 {
        let (client, next) = (client.clone(), next.clone());
        producers.spawn(async move {
            loop {
                let from = next.fetch_add(PRODUCE_BATCH as u64, Ordering::Relaxed);
                if from >= records {
                    return anyhow::Ok(());
                }
                let batch: Vec<Record> = (from..(from + PRODUCE_BATCH as u64).min(records))
                    .map(|i| Record {
                        timestamp: sluice::log::now_ms(),
                        key: None,
                        value: Some(Bytes::from(value(i))),
                        headers: Vec::new(),
                    })
                    .collect();
                client.produce("jobs", None, &batch).await?;
            }
        });
    }
    while let Some(done) = producers.join_next().await {
        done??;
    }
    let produce = started.elapsed();
    let progress = Progress::start(records);
    let mut tasks = tokio::task::JoinSet::new();
    for c in 0..consumers {
        let (client, progress) = (client.clone(), progress.clone());
        tasks.spawn(async move {
            let member = format!("bench-{c}");
            // The acknowledgements of the records taken last, sent with the next fetch.
            let mut pending: Vec<(u32, u64)> = Vec::new();
            while !progress.done() {
                let request = ShareFetchRequest {
                    member_id: member.clone(),
                    topic: "jobs".into(),
                    partitions: None,
                    max_records: Some(PREFETCH),
                    lock_ms: None,
                    wait_ms: Some(100),
                    acks: ShareAck::runs(
                        pending
                            .iter()
                            .map(|(p, o)| ("jobs", *p, *o, AckAction::Accept)),
                    ),
                };
                // (partition, offset) of each record taken, in offset order per partition.
                let (refused, taken): (usize, Vec<(u32, u64)>) = if system == System::SluiceJson {
                    let fetched = client.share_fetch("bench", &request).await?;
                    let taken = fetched
                        .records
                        .iter()
                        .map(|r| {
                            (
                                r.record.partition.unwrap_or(0),
                                r.record.offset.unwrap_or(0),
                            )
                        })
                        .collect();
                    (fetched.refused.len(), taken)
                } else {
                    let fetched = client.share_fetch_batches("bench", &request).await?;
                    let taken = fetched
                        .batches
                        .iter()
                        .flat_map(|b| b.records.iter().map(|(o, _, _)| (b.partition, *o)))
                        .collect();
                    (fetched.refused.len(), taken)
                };
                if refused > 0 {
                    bail!("{refused} acknowledgements refused");
                }
                progress.acked(pending.len() as u64);
                pending = taken;
                // A short fetch means the queue ran dry: acknowledge now rather than with a
                // fetch that would wait for records.
                if pending.len() < PREFETCH && !pending.is_empty() {
                    let acks = ShareAck::runs(
                        pending
                            .iter()
                            .map(|(p, o)| ("jobs", *p, *o, AckAction::Accept)),
                    );
                    let request = ShareAckRequest {
                        member_id: member.clone(),
                        acks,
                    };
                    let refused = client.share_ack("bench", &request).await?.refused.len();
                    if refused > 0 {
                        bail!("{refused} acknowledgements refused");
                    }
                    progress.acked(pending.len() as u64);
                    pending.clear();
                }
            }
            anyhow::Ok(())
        });
    }
    while let Some(done) = tasks.join_next().await {
        done??;
    }
    let consume = progress.elapsed();
    // The figure counts only if the engine agrees: every record acknowledged once, none left.
    let group = client.describe_share_group("bench").await?;
    if group.queue_depth != 0 || group.in_flight != 0 || group.counters.acked != records {
        bail!(
            "the share group disagrees: depth {}, in flight {}, acknowledged {} of {records}",
            group.queue_depth,
            group.in_flight,
            group.counters.acked
        );
    }
    server.stop().await?;
    Ok(Measured {
        system,
        consumers,
        produce,
        consume,
    })
}

/// A free port on 127.0.0.1.
fn free_port() -> anyhow::Result<u16> {
    Ok(std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port())
}

/// A RabbitMQ node of its own, its data in a temporary directory.
struct Rabbit {
    node: String,
    port: u16,
    env: Vec<(String, String)>,
    child: Child,
}

const RABBIT_BIN: &str = "/usr/lib/rabbitmq/bin";

impl Rabbit {
    fn start(dir: &Path) -> anyhow::Result<Rabbit> {
        if !Path::new(RABBIT_BIN).join("rabbitmq-server").exists() {
            bail!("RabbitMQ is not installed: apt-get install rabbitmq-server");
        }
        let port = free_port()?;
        let dist = free_port()?;
        let node = format!("bench{port}@localhost");
        for sub in ["mnesia", "log"] {
            std::fs::create_dir_all(dir.join(sub))?;
        }
        std::fs::write(dir.join("enabled_plugins"), "[].\n")?;
        std::fs::write(dir.join("rabbitmq.conf"), "loopback_users = none\n")?;
        let path = |p: &str| dir.join(p).display().to_string();
        let env = vec![
            ("RABBITMQ_MNESIA_BASE".into(), path("mnesia")),
            ("RABBITMQ_LOG_BASE".into(), path("log")),
            ("RABBITMQ_NODENAME".into(), node.clone()),
            ("RABBITMQ_NODE_PORT".into(), port.to_string()),
            ("RABBITMQ_DIST_PORT".into(), dist.to_string()),
            (
                "RABBITMQ_ENABLED_PLUGINS_FILE".into(),
                path("enabled_plugins"),
            ),
            ("RABBITMQ_CONFIG_FILE".into(), path("rabbitmq")),
        ];
        let child = Command::new(Path::new(RABBIT_BIN).join("rabbitmq-server"))
            .envs(env.iter().map(|(k, v)| (k, v)))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .context("start rabbitmq-server")?;
        let rabbit = Rabbit {
            node,
            port,
            env,
            child,
        };
        // `await_startup` fails at once while the Erlang node is not up yet: ask again.
        let deadline = Instant::now() + START_TIMEOUT;
        loop {
            let status = rabbit
                .ctl(&["await_startup", "--timeout", "10"])
                .context("wait for RabbitMQ")?;
            if status.success() {
                return Ok(rabbit);
            }
            if Instant::now() > deadline {
                bail!("RabbitMQ did not start within {START_TIMEOUT:?} (rabbitmqctl: {status})");
            }
            std::thread::sleep(Duration::from_millis(500));
        }
    }

    fn ctl(&self, args: &[&str]) -> std::io::Result<std::process::ExitStatus> {
        Command::new(Path::new(RABBIT_BIN).join("rabbitmqctl"))
            .arg("-n")
            .arg(&self.node)
            .args(args)
            .envs(self.env.iter().map(|(k, v)| (k, v)))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
    }

    fn stop(mut self) {
        let _ = self.ctl(&["stop"]);
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    async fn connect(&self) -> anyhow::Result<Connection> {
        let url = format!("amqp://guest:guest@127.0.0.1:{}/%2f", self.port);
        Ok(Connection::connect(&url, ConnectionProperties::default()).await?)
    }

    async fn measure(
        &self,
        system: System,
        records: u64,
        consumers: usize,
    ) -> anyhow::Result<Measured> {
        let connection = self.connect().await?;
        let channel = connection.create_channel().await?;
        let mut arguments = FieldTable::default();
        let kind = if system == System::RabbitQuorum {
            "quorum"
        } else {
            "classic"
        };
        arguments.insert("x-queue-type".into(), AMQPValue::LongString(kind.into()));
        channel
            .queue_declare("jobs".into(), QueueDeclareOptions::durable(), arguments)
            .await?;
        channel
            .confirm_select(ConfirmSelectOptions::default())
            .await?;
        let started = Instant::now();
        let properties = BasicProperties::default().with_delivery_mode(2);
        let mut next = 0u64;
        while next < records {
            let end = (next + PRODUCE_BATCH as u64).min(records);
            let mut confirms = Vec::with_capacity(PRODUCE_BATCH);
            for i in next..end {
                confirms.push(
                    channel
                        .basic_publish(
                            "".into(),
                            "jobs".into(),
                            BasicPublishOptions::default(),
                            &value(i),
                            properties.clone(),
                        )
                        .await?,
                );
            }
            for confirm in confirms {
                if !confirm.await?.is_ack() {
                    bail!("RabbitMQ refused a message");
                }
            }
            next = end;
        }
        let produce = started.elapsed();
        let progress = Progress::start(records);
        let mut tasks = tokio::task::JoinSet::new();
        for c in 0..consumers {
            let connection = self.connect().await?;
            let progress = progress.clone();
            tasks.spawn(async move {
                let channel = connection.create_channel().await?;
                channel
                    .basic_qos(PREFETCH as u16, BasicQosOptions::default())
                    .await?;
                let mut consumer = channel
                    .basic_consume(
                        "jobs".into(),
                        format!("c{c}").as_str().into(),
                        BasicConsumeOptions::default(),
                        FieldTable::default(),
                    )
                    .await?;
                let mut unacked = 0u64;
                // The last delivery taken: acknowledging "all" (tag 0) would also take the
                // deliveries the client holds but has not handed out yet.
                let mut last_tag = 0;
                while !progress.done() {
                    let next = tokio::time::timeout(RABBIT_ACK_IDLE, consumer.next());
                    let delivery = match next.await {
                        Err(_) => {
                            if unacked > 0 {
                                channel
                                    .basic_ack(last_tag, BasicAckOptions { multiple: true })
                                    .await?;
                                progress.acked(unacked);
                                unacked = 0;
                            }
                            continue;
                        }
                        Ok(None) => break,
                        Ok(Some(delivery)) => delivery?,
                    };
                    unacked += 1;
                    last_tag = delivery.delivery_tag;
                    if unacked >= RABBIT_ACK_EVERY {
                        delivery.ack(BasicAckOptions { multiple: true }).await?;
                        progress.acked(unacked);
                        unacked = 0;
                    }
                }
                anyhow::Ok(())
            });
        }
        while let Some(done) = tasks.join_next().await {
            done??;
        }
        let consume = progress.elapsed();
        Ok(Measured {
            system,
            consumers,
            produce,
            consume,
        })
    }
}

/// A Redis server of its own, with an append-only file fsynced on every write.
struct Redis {
    port: u16,
    child: Child,
}

impl Drop for Redis {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Redis {
    fn start(dir: &Path) -> anyhow::Result<Redis> {
        let port = free_port()?;
        let child = Command::new("redis-server")
            .args(["--port", &port.to_string(), "--bind", "127.0.0.1"])
            .args([
                "--appendonly",
                "yes",
                "--appendfsync",
                "always",
                "--save",
                "",
            ])
            .arg("--dir")
            .arg(dir)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .context("start redis-server (apt-get install redis-server)")?;
        let redis = Redis { port, child };
        let deadline = Instant::now() + START_TIMEOUT;
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            if Instant::now() > deadline {
                bail!("redis-server did not listen within {START_TIMEOUT:?}");
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        Ok(redis)
    }

    async fn connection(&self) -> anyhow::Result<redis::aio::MultiplexedConnection> {
        let client = redis::Client::open(format!("redis://127.0.0.1:{}/", self.port))?;
        Ok(client.get_multiplexed_async_connection().await?)
    }

    async fn measure(&self, records: u64, consumers: usize) -> anyhow::Result<Measured> {
        let mut connection = self.connection().await?;
        let started = Instant::now();
        let mut next = 0u64;
        while next < records {
            let end = (next + PRODUCE_BATCH as u64).min(records);
            let mut pipe = redis::pipe();
            for i in next..end {
                pipe.cmd("XADD")
                    .arg("jobs")
                    .arg("*")
                    .arg("v")
                    .arg(value(i))
                    .ignore();
            }
            let () = pipe.query_async(&mut connection).await?;
            next = end;
        }
        let produce = started.elapsed();
        let () = redis::cmd("XGROUP")
            .arg(&["CREATE", "jobs", "g", "0"])
            .query_async(&mut connection)
            .await?;
        let progress = Progress::start(records);
        let mut tasks = tokio::task::JoinSet::new();
        for c in 0..consumers {
            let mut connection = self.connection().await?;
            let progress = progress.clone();
            tasks.spawn(async move {
                let name = format!("c{c}");
                while !progress.done() {
                    let reply: redis::streams::StreamReadReply = redis::cmd("XREADGROUP")
                        .arg(&["GROUP", "g", &name, "COUNT"])
                        .arg(PREFETCH)
                        .arg(&["BLOCK", "100", "STREAMS", "jobs", ">"])
                        .query_async(&mut connection)
                        .await?;
                    let ids: Vec<String> = reply
                        .keys
                        .into_iter()
                        .flat_map(|k| k.ids.into_iter().map(|e| e.id))
                        .collect();
                    if ids.is_empty() {
                        continue;
                    }
                    let count: u64 = redis::cmd("XACK")
                        .arg("jobs")
                        .arg("g")
                        .arg(&ids)
                        .query_async(&mut connection)
                        .await?;
                    progress.acked(count);
                }
                anyhow::Ok(())
            });
        }
        while let Some(done) = tasks.join_next().await {
            done??;
        }
        let consume = progress.elapsed();
        Ok(Measured {
            system: System::Redis,
            consumers,
            produce,
            consume,
        })
    }
}
