//! The `sluice` command line: `serve` runs the engine; the other commands talk to a running
//! engine over its HTTP API (`--url`, default http://127.0.0.1:7171).

mod archive;
pub mod client;
mod consume;
mod plugin;
pub mod plugin_build;
mod plugin_new;
mod plugin_test;
mod produce;
mod share_consume;
mod top;

use std::path::{Path, PathBuf};

use anyhow::Context;
use clap::{Args, Parser, Subcommand};
use figment::Figment;
use figment::providers::Serialized;

use crate::config::Config;
use crate::server::api::{AlterTopic, CreateTopic};
use client::{Client, ClientError};

const ABOUT: &str = "Sluice: a durable partitioned log with WebAssembly consumer plugins.";

const LONG_ABOUT: &str = "\
Sluice is a durable partitioned log with WebAssembly consumer plugins: one binary that stores
topics split into partitions of CRC-checked, fsynced segments, serves them over HTTP, and runs
consumer groups written as WebAssembly components in sandboxes.

Start the engine in one shell (it keeps its data in ./sluice-data by default):

    sluice serve

Then, in another:

    sluice topic create orders --partitions 3
    printf 'alice:{\"total\": 12}\\ndave:{\"total\": 7}\\n' | sluice produce orders --key-separator :
    sluice consume orders --print-key
    sluice consume orders --group billing        # remembers where it stopped
    sluice group describe billing                # members, offsets and lag
    sluice consume orders --share-group workers  # a queue: one of many competing consumers

Run a WebAssembly plugin as a consumer group, on the running engine:

    sluice topic create big
    sluice plugin deploy --group big-orders --topic orders --output-topic big \\
        --wasm filter.wasm --config output=big --config field=total --config op=gt --config value=10
    sluice plugin describe big-orders            # version, status, lag, dead letters
    sluice plugin rollback big-orders            # after deploying a new version

Every command but `serve` talks to the engine at --url (or SLUICE_URL); `plugin`, `dlq`,
`topic alter`, `topic delete`, `archive run` and `group configure/delete` need the admin token (--token, SLUICE_TOKEN,
or the admin.token the engine keeps in --data-dir, ./sluice-data by default), and so does
everything with [server] require_token_for_all. Logs go to stderr;
set SLUICE_LOG=debug (or any tracing filter) for more.";

#[derive(Parser)]
#[command(name = "sluice", version, about = ABOUT, long_about = LONG_ABOUT, propagate_version = true)]
pub struct Cli {
    /// Address of the engine's HTTP API.
    #[arg(
        long,
        global = true,
        env = "SLUICE_URL",
        default_value = "http://127.0.0.1:7171"
    )]
    pub url: String,

    /// Admin token, sent with every request: `plugin`, `dlq`, `topic alter`, `topic delete`
    /// and `archive run` need it (everything does with [server] require_token_for_all).
    /// Default: admin.token in --data-dir, else in the data directory of ./sluice.toml and
    /// SLUICE_* settings (./sluice-data unless they say otherwise).
    #[arg(long, global = true, env = "SLUICE_TOKEN", hide_env_values = true)]
    pub token: Option<String>,

    /// Data directory: where `serve` keeps its data (default ./sluice-data), and where the
    /// other commands look for the engine's admin.token.
    #[arg(long, global = true, env = "SLUICE_DATA_DIR")]
    pub data_dir: Option<PathBuf>,

    /// How log lines are written to stderr: `human` (default) or `json`, one object a line
    /// (level, target, fields with the message, and the spans: group, topic, partition) for
    /// log collectors. SLUICE_LOG sets which lines (e.g. `info`, `sluice::runtime=debug`).
    #[arg(
        long,
        global = true,
        value_enum,
        env = "SLUICE_LOG_FORMAT",
        default_value_t = LogFormat::Human
    )]
    pub log_format: LogFormat,

    #[command(subcommand)]
    pub command: Command,
}

/// How log lines are written.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum LogFormat {
    Human,
    Json,
}

#[derive(Subcommand)]
pub enum Command {
    /// Run the engine: open (and recover) the data directory and serve the HTTP API.
    #[command(long_about = "\
Run the engine: open the data directory (recovering any partition left by a crash: torn tails
are cut, missing indexes rebuilt), then serve the HTTP API until SIGINT or SIGTERM, on which it
finishes in-flight requests, fsyncs every partition and exits.

Configuration is read from, in order (later wins): built-in defaults, the TOML file given with
--config (or ./sluice.toml if present), SLUICE_* environment variables (SLUICE_DATA_DIR,
SLUICE_TOPIC_DEFAULTS__RETENTION_MS, ...; `__` separates sections), then these flags. See
sluice.toml in the repository for every option.")]
    Serve(ServeArgs),
    /// Run plugin groups on an existing Kafka cluster, with other workers (cluster mode).
    #[command(long_about = "\
Run the plugin groups on an existing Kafka cluster instead of this engine's log (cluster mode,
see docs/cluster.md). Every worker pointed at the same cluster shares the deployments and the
work: each plugin group is a Kafka consumer group whose input partitions are spread over the
live workers, and each batch's outputs, state changes and input offsets commit in one Kafka
transaction.

The cluster is [cluster] bootstrap_servers in the configuration (or
SLUICE_CLUSTER__BOOTSTRAP_SERVERS, or --bootstrap-servers). The worker serves the plugin admin API
on --listen, so the usual commands work pointed at it:

    sluice worker --bootstrap-servers localhost:9092 --listen 127.0.0.1:7272 --data-dir worker-1
    sluice --url http://127.0.0.1:7272 --data-dir worker-1 plugin deploy --group counts \\
        --topic orders --output-topic counts --wasm counter.wasm --config output=counts")]
    Worker(WorkerArgs),
    /// Create, list, describe, alter and delete topics.
    #[command(subcommand)]
    Topic(TopicCommand),
    /// Send lines from stdin or a file as records.
    Produce(produce::ProduceArgs),
    /// Print records of a topic, from a position or as a member of a consumer group.
    Consume(consume::ConsumeArgs),
    /// Inspect consumer groups (members, committed offsets, lag) and share groups (queue depth,
    /// in flight, acknowledged, redelivered, dead-lettered); set a share group's settings.
    #[command(subcommand)]
    Group(GroupCommand),
    /// Deploy, upgrade, pause, roll back and inspect WebAssembly plugin consumer groups.
    #[command(subcommand)]
    Plugin(plugin::PluginCommand),
    /// Dead-letter topics of plugin groups.
    #[command(subcommand)]
    Dlq(plugin::DlqCommand),
    /// Read a plugin group's committed state.
    #[command(subcommand)]
    State(plugin::StateCommand),
    /// Archive topics to Parquet now, list archived files, verify them.
    #[command(subcommand)]
    Archive(archive::ArchiveCommand),
    /// The engine at a glance, live: topics with produce rates, groups with lag, plugin
    /// groups with status, rates and errors (q quits). Also at http://127.0.0.1:7171/ in a
    /// browser.
    ///
    /// Example: sluice top --interval-ms 500
    Top(top::TopArgs),
}

#[derive(Args)]
pub struct ServeArgs {
    /// TOML configuration file.
    #[arg(long, short)]
    config: Option<PathBuf>,
    /// Address to listen on (default 127.0.0.1:7171).
    #[arg(long)]
    listen: Option<std::net::SocketAddr>,
}

#[derive(Args)]
pub struct WorkerArgs {
    /// TOML configuration file.
    #[arg(long, short)]
    config: Option<PathBuf>,
    /// Address of the worker's admin API (default 127.0.0.1:7171).
    #[arg(long)]
    listen: Option<std::net::SocketAddr>,
    /// Brokers of the Kafka cluster, comma-separated (default: [cluster] bootstrap_servers).
    #[arg(long)]
    bootstrap_servers: Option<String>,
    /// This worker's name, stable across its restarts (default: [cluster] worker_id, else
    /// the host name and the admin port).
    #[arg(long)]
    worker_id: Option<String>,
}

#[derive(Subcommand)]
pub enum TopicCommand {
    /// Create a topic.
    #[command(long_about = "\
Create a topic. Settings not given take the engine's [topic_defaults]:

  retention_ms          delete sealed segments older than this (none: keep forever)
  retention_bytes       keep at most about this many bytes per partition (none: no limit)
  segment_bytes         roll to a new segment file at this size
  segment_ms            roll to a new segment file at this age
  compression           none, zstd or lz4 (per batch)
  flush                 fsync (acknowledge after fsync, the default) or interval
  flush_interval_ms     with flush=interval, the longest a write stays unsynced
  max_record_bytes      largest record accepted
  index_interval_bytes  bytes between sparse index entries
  archive               true: write sealed segments to Parquet before retention deletes them;
                        older offsets are then read from the archive (see `sluice archive`)
  archive_schema        for JSON values: `infer` or '{\"customer\": \"utf8\", \"amount\": \"float64\"}';
                        archive files then also hold typed columns (and `_malformed`)
  archive_key           how archive files hold keys: string (the default), json or bytes
  archive_value         how archive files hold values: json (the default: SQL reads fields
                        without decoding), string or bytes; keys or values that do not fit go
                        to key_raw / value_raw, with the reason in _undecoded

Example: sluice topic create clicks --partitions 6 --config retention_ms=86400000 --config compression=zstd")]
    Create {
        name: String,
        /// Number of partitions.
        #[arg(long, short, default_value_t = 1)]
        partitions: u32,
        /// A setting as key=value; repeat for more.
        #[arg(long = "config", short = 'c', value_parser = parse_key_value)]
        config: Vec<(String, String)>,
    },
    /// List topics with their partition counts and sizes.
    List,
    /// Show a topic's settings and, per partition, its offsets, size and segments.
    Describe { name: String },
    /// Change a topic's settings, or raise its partition count.
    Alter {
        name: String,
        #[arg(long = "config", short = 'c', value_parser = parse_key_value)]
        config: Vec<(String, String)>,
        /// New partition count (can only grow).
        #[arg(long)]
        partitions: Option<u32>,
    },
    /// Delete a topic and all its data.
    Delete { name: String },
}

#[derive(Subcommand)]
pub enum GroupCommand {
    /// List consumer groups (with members or committed offsets) and share groups.
    List,
    /// Show a consumer group's members, their partitions, committed offsets and lag; or a
    /// share group's members and, per partition, its queue depth, in-flight, acknowledged,
    /// redelivered and dead-lettered records.
    Describe { group: String },
    /// Set a share group's settings (making the group if it does not exist). Settings not
    /// given return to their defaults ([share_groups.defaults]).
    Configure(ShareGroupSettingsArgs),
    /// Delete a share group and its progress.
    Delete { group: String },
}

#[derive(Args)]
pub struct ShareGroupSettingsArgs {
    /// The share group.
    group: String,
    /// How long a delivered record stays locked to its member.
    #[arg(long)]
    record_lock_ms: Option<u64>,
    /// Deliveries after which a record is dead-lettered.
    #[arg(long)]
    max_deliveries: Option<u16>,
    /// Records older than this when due are expired (0: never).
    #[arg(long)]
    message_ttl_ms: Option<u64>,
    /// What happens to an expired record.
    #[arg(long, value_parser = ["dead_letter", "drop"])]
    on_expiry: Option<String>,
    /// Where rejected, expired and undeliverable records go (default: <group>.dlq).
    #[arg(long)]
    dead_letter_topic: Option<String>,
    /// Where a new group starts on each partition.
    #[arg(long, value_parser = ["earliest", "latest"])]
    start_at: Option<String>,
}

impl ShareGroupSettingsArgs {
    fn settings(&self) -> anyhow::Result<crate::queues::GroupSettings> {
        let mut settings = crate::queues::GroupSettings::default();
        if let Some(v) = self.record_lock_ms {
            settings.record_lock_ms = v;
        }
        if let Some(v) = self.max_deliveries {
            settings.max_deliveries = v;
        }
        if let Some(v) = self.message_ttl_ms {
            settings.message_ttl_ms = v;
        }
        if let Some(v) = &self.on_expiry {
            settings.on_expiry = serde_json::from_value(serde_json::Value::String(v.clone()))?;
        }
        if let Some(v) = &self.start_at {
            settings.start_at = serde_json::from_value(serde_json::Value::String(v.clone()))?;
        }
        settings.dead_letter_topic = self.dead_letter_topic.clone();
        Ok(settings)
    }
}

fn parse_key_value(s: &str) -> Result<(String, String), String> {
    let (key, value) = s
        .split_once('=')
        .ok_or_else(|| format!("`{s}` is not key=value"))?;
    Ok((key.trim().to_string(), value.trim().to_string()))
}

fn json_settings(
    pairs: &[(String, String)],
) -> std::collections::BTreeMap<String, serde_json::Value> {
    pairs
        .iter()
        .map(|(k, v)| (k.clone(), serde_json::Value::String(v.clone())))
        .collect()
}

pub async fn run(cli: Cli) -> anyhow::Result<()> {
    let (token, looked) = match cli.token {
        Some(token) => (Some(token), Vec::new()),
        None => find_token(cli.data_dir.as_deref()),
    };
    let client = Client::new(&cli.url).with_token(token);
    let result = match cli.command {
        Command::Serve(args) => serve(args, cli.data_dir).await,
        Command::Worker(args) => worker(args, cli.data_dir).await,
        Command::Topic(command) => topic(&client, command).await,
        Command::Produce(args) => produce::run(&client, args).await,
        Command::Consume(args) => consume::run(&client, args).await,
        Command::Group(command) => group(&client, command).await,
        Command::Plugin(command) => plugin::run(&client, command).await,
        Command::Dlq(command) => plugin::run_dlq(&client, command).await,
        Command::State(command) => plugin::run_state(&client, command).await,
        Command::Archive(command) => archive::run(&client, command).await,
        Command::Top(args) => top::run(&client, args).await,
    };
    result.map_err(|error| say_where_the_token_was_looked_for(error, &looked))
}

/// Where the client keeps what it installs and caches: $SLUICE_CACHE, else ~/.cache/sluice.
pub(crate) fn cache_dir() -> Option<PathBuf> {
    match std::env::var_os("SLUICE_CACHE") {
        Some(dir) if !dir.is_empty() => Some(PathBuf::from(dir)),
        _ => std::env::var_os("HOME").map(|home| PathBuf::from(home).join(".cache/sluice")),
    }
}

/// The admin token an engine generated in its data directory: `--data-dir` (or
/// SLUICE_DATA_DIR) if given, else the data directory of ./sluice.toml and the SLUICE_*
/// settings (./sluice-data by default). Also the places looked in, for a 401's message.
fn find_token(data_dir: Option<&Path>) -> (Option<String>, Vec<String>) {
    let mut looked = vec!["--token and SLUICE_TOKEN (not given)".to_string()];
    let dir = match data_dir {
        Some(dir) => dir.to_path_buf(),
        None => match Config::load(None, Figment::new()) {
            Ok(config) => config.data_dir,
            Err(error) => {
                looked.push(format!("./sluice.toml and SLUICE_* settings ({error})"));
                return (None, looked);
            }
        },
    };
    let path = dir.join(crate::server::TOKEN_FILE);
    match std::fs::read_to_string(&path) {
        Ok(token) if !token.trim().is_empty() => (Some(token.trim().to_string()), looked),
        Ok(_) => {
            looked.push(format!("{} (empty)", path.display()));
            (None, looked)
        }
        Err(error) => {
            looked.push(format!("{} ({error})", path.display()));
            (None, looked)
        }
    }
}

/// A 401 says where the client looked for the token, and how to give it.
fn say_where_the_token_was_looked_for(error: anyhow::Error, looked: &[String]) -> anyhow::Error {
    let unauthorized = error
        .downcast_ref::<ClientError>()
        .and_then(ClientError::server)
        .is_some_and(|e| e.status == reqwest::StatusCode::UNAUTHORIZED);
    if !unauthorized || looked.is_empty() {
        return error;
    }
    error.context(format!(
        "the engine wants its admin token; looked in: {}. Pass --token, set SLUICE_TOKEN, or point --data-dir (SLUICE_DATA_DIR) at the engine's data directory",
        looked.join("; ")
    ))
}

/// Waits for SIGINT or SIGTERM.
async fn until_signalled() -> anyhow::Result<()> {
    let mut terminate = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = terminate.recv() => {}
    }
    Ok(())
}

/// The settings `--data-dir` and `--listen` give, over the file's and the environment's.
fn common_flags(data_dir: Option<&Path>, listen: Option<std::net::SocketAddr>) -> Figment {
    let mut flags = Figment::new();
    if let Some(dir) = data_dir {
        flags = flags.merge(Serialized::default("data_dir", dir));
    }
    if let Some(listen) = listen {
        flags = flags.merge(Serialized::default("listen", listen));
    }
    flags
}

async fn serve(args: ServeArgs, data_dir: Option<PathBuf>) -> anyhow::Result<()> {
    let flags = common_flags(data_dir.as_deref(), args.listen);
    let config = Config::load(args.config.as_deref(), flags).context("invalid configuration")?;
    let data_dir = config.data_dir.clone();
    keep_new_files_private();
    let running = crate::server::start(config).await?;
    let kafka = match running.kafka {
        Some(addr) => format!(" and Kafka clients on {addr}"),
        None => String::new(),
    };
    crate::server::announce(&format!(
        "sluice {} serving http://{}{kafka} with data in {}",
        env!("CARGO_PKG_VERSION"),
        running.addr,
        data_dir.display()
    ));
    until_signalled().await?;
    tracing::info!("shutting down: finishing requests and syncing partitions");
    running.stop().await?;
    tracing::info!("stopped cleanly");
    Ok(())
}

async fn worker(args: WorkerArgs, data_dir: Option<PathBuf>) -> anyhow::Result<()> {
    let mut flags = common_flags(data_dir.as_deref(), args.listen);
    if let Some(servers) = &args.bootstrap_servers {
        flags = flags.merge(Serialized::default("cluster.bootstrap_servers", servers));
    }
    if let Some(id) = &args.worker_id {
        flags = flags.merge(Serialized::default("cluster.worker_id", id));
    }
    let config = Config::load(args.config.as_deref(), flags).context("invalid configuration")?;
    let (servers, data_dir) = (
        config.cluster.bootstrap_servers.clone(),
        config.data_dir.clone(),
    );
    keep_new_files_private();
    let running = crate::server::worker_api::start(config).await?;
    crate::server::announce(&format!(
        "sluice {} worker {} serving http://{} (the plugin admin API) on the Kafka cluster at {servers}, data in {}",
        env!("CARGO_PKG_VERSION"),
        running.worker.id(),
        running.addr,
        data_dir.display()
    ));
    until_signalled().await?;
    tracing::info!("shutting down: stopping the groups");
    running.stop().await;
    tracing::info!("stopped cleanly");
    Ok(())
}

/// What the engine creates (segments, indexes, stores, deployments, archive files, the token)
/// is readable by its own user only: files 0600, directories 0700, whatever the umask the
/// engine was started with.
fn keep_new_files_private() {
    const PRIVATE_UMASK: libc::mode_t = 0o077;
    // SAFETY: umask only sets the process's file-creation mask; it touches no memory.
    unsafe {
        libc::umask(PRIVATE_UMASK);
    }
}

async fn topic(client: &Client, command: TopicCommand) -> anyhow::Result<()> {
    match command {
        TopicCommand::Create {
            name,
            partitions,
            config,
        } => {
            let created = client
                .create_topic(&CreateTopic {
                    name,
                    partitions,
                    config: json_settings(&config),
                })
                .await?;
            println!(
                "created topic {} with {} partitions",
                created.name,
                created.partitions.len()
            );
        }
        TopicCommand::List => {
            let list = client.list_topics().await?;
            println!("{:<32} {:>10} {:>14}", "TOPIC", "PARTITIONS", "BYTES");
            for t in list.topics {
                println!("{:<32} {:>10} {:>14}", t.name, t.partitions, t.size_bytes);
            }
        }
        TopicCommand::Describe { name } => print_topic(&client.describe_topic(&name).await?),
        TopicCommand::Alter {
            name,
            config,
            partitions,
        } => {
            let altered = client
                .alter_topic(
                    &name,
                    &AlterTopic {
                        config: json_settings(&config),
                        partitions,
                    },
                )
                .await?;
            print_topic(&altered);
        }
        TopicCommand::Delete { name } => {
            client.delete_topic(&name).await?;
            println!("deleted topic {name}");
        }
    }
    Ok(())
}

fn print_topic(topic: &crate::server::api::TopicDescription) {
    println!("topic {}", topic.name);
    let settings = serde_json::to_value(&topic.config).unwrap_or_default();
    if let Some(map) = settings.as_object() {
        for (key, value) in map {
            println!("  {key} = {value}");
        }
    }
    println!(
        "{:>10} {:>14} {:>14} {:>14} {:>9} {:>14}",
        "PARTITION", "START", "END", "BYTES", "SEGMENTS", "ARCHIVE START"
    );
    for p in &topic.partitions {
        let archived = p
            .archive_start_offset
            .map_or("-".to_string(), |o| o.to_string());
        println!(
            "{:>10} {:>14} {:>14} {:>14} {:>9} {:>14}",
            p.partition, p.log_start_offset, p.high_watermark, p.size_bytes, p.segments, archived
        );
    }
}

async fn group(client: &Client, command: GroupCommand) -> anyhow::Result<()> {
    match command {
        GroupCommand::List => {
            for group in client.list_groups().await?.groups {
                println!("{group}");
            }
            for group in client.list_share_groups().await?.groups {
                println!("{group} (share group)");
            }
        }
        GroupCommand::Configure(args) => {
            let d = client
                .configure_share_group(&args.group, &args.settings()?)
                .await?;
            print_share_group(&d);
        }
        GroupCommand::Delete { group } => {
            client.delete_share_group(&group).await?;
            println!("deleted share group {group}");
        }
        GroupCommand::Describe { group } => {
            let d = match client.describe_group(&group).await {
                Err(e) if e.server().is_some_and(|s| s.code == "unknown_group") => {
                    match client.describe_share_group(&group).await {
                        Ok(shared) => {
                            print_share_group(&shared);
                            return Ok(());
                        }
                        Err(_) => return Err(e.into()),
                    }
                }
                described => described?,
            };
            println!(
                "group {} (generation {}, {} members, total lag {})",
                d.group,
                d.generation,
                d.members.len(),
                d.total_lag
            );
            for m in &d.members {
                let parts: Vec<String> = m
                    .assignment
                    .iter()
                    .map(|tp| format!("{}/{}", tp.topic, tp.partition))
                    .collect();
                println!(
                    "  member {} ({}) last heartbeat {} ms ago: {}",
                    m.member_id,
                    m.client,
                    m.last_heartbeat_ms_ago,
                    parts.join(", ")
                );
            }
            println!(
                "{:<24} {:>9} {:>12} {:>12} {:>10}  OWNER",
                "TOPIC", "PARTITION", "COMMITTED", "END", "LAG"
            );
            for p in &d.partitions {
                let committed = p.committed.map_or("-".to_string(), |c| c.to_string());
                println!(
                    "{:<24} {:>9} {:>12} {:>12} {:>10}  {}",
                    p.topic,
                    p.partition,
                    committed,
                    p.high_watermark,
                    p.lag,
                    p.owner.as_deref().unwrap_or("-")
                );
            }
        }
    }
    Ok(())
}

fn print_share_group(d: &crate::queues::ShareGroupDescription) {
    let s = &d.settings;
    println!(
        "share group {} ({} members, queue depth {}, in flight {}); lock {} ms, max deliveries {}, dead letters to {}",
        d.group,
        d.members.len(),
        d.queue_depth,
        d.in_flight,
        s.record_lock_ms,
        s.max_deliveries,
        d.dead_letter_topic
    );
    for m in &d.members {
        println!(
            "  member {} last seen {} ms ago",
            m.member_id, m.last_seen_ms_ago
        );
    }
    println!(
        "{:<20} {:>9} {:>10} {:>10} {:>8} {:>9} {:>9} {:>11} {:>13} {:>13}",
        "TOPIC",
        "PARTITION",
        "START",
        "END",
        "DEPTH",
        "IN-FLIGHT",
        "ACKED",
        "REDELIVERED",
        "DEAD-LETTERED",
        "LOCK-EXPIRIES"
    );
    for p in &d.partitions {
        println!(
            "{:<20} {:>9} {:>10} {:>10} {:>8} {:>9} {:>9} {:>11} {:>13} {:>13}",
            p.topic,
            p.partition,
            p.start_offset,
            p.end_offset,
            p.queue_depth,
            p.tally.in_flight,
            p.counters.acked,
            p.counters.redelivered,
            p.counters.dead_lettered,
            p.counters.lock_expiries
        );
    }
}
