//! `sluice plugin ...` and `sluice dlq ...`: deploy and manage plugin consumer groups on a
//! running engine through its admin API.

use std::collections::BTreeMap;
use std::path::PathBuf;

use anyhow::Context;
use base64::Engine;
use base64::engine::general_purpose::STANDARD as BASE64;
use clap::{Args, Subcommand};

use super::client::{Client, PluginAction};
use super::consume::parse_timestamp;
use super::parse_key_value;
use crate::runtime::{DeploySpec, LimitOverrides, PluginDescription, StartFrom};
use crate::server::api::{DeployRequest, RollbackRequest};

#[derive(Subcommand)]
pub enum PluginCommand {
    /// Deploy a plugin as a consumer group, or a new version of a deployed one.
    #[command(long_about = "\
Deploy a WebAssembly component (built for the `consumer` world of wit/plugin.wit) as the
consumer group --group of --topic. The engine compiles it, starts it once with the --config
settings (so a bad component or configuration is refused here, changing nothing), then runs it
on every partition of the topic.

Deploying to a group that exists adds a new version: the group switches to it after its
current batch commits, with no record lost or processed twice. Earlier versions are kept for
`sluice plugin rollback`.

Records the plugin emits go to the --output-topic topics (create them first); records it
cannot process go, after --max-attempts calls, to the dead-letter topic <group>.dlq.

Example:
  sluice plugin deploy --group big-orders --topic orders --output-topic big \\
      --wasm plugins/target/wasm32-wasip2/release/filter.wasm \\
      --config output=big --config field=total --config op=gt --config value=100")]
    Deploy(DeployArgs),
    /// List deployed plugin groups with their version, status and lag.
    List,
    /// Show a group's versions, limits, progress per partition, counters and state size.
    Describe { group: String },
    /// Print the group's recent log lines: the plugin's own and the engine's about it.
    Logs {
        group: String,
        /// How many of the latest lines.
        #[arg(long, short = 'n', default_value_t = 100)]
        lines: usize,
    },
    /// Stop processing after the current batch (the position is kept).
    Pause { group: String },
    /// Continue processing where the group stopped.
    Resume { group: String },
    /// Switch back to an earlier version (by default the one before the active version).
    ///
    /// With --to-snapshot, also put back the state and offsets of a snapshot: the group
    /// runs the version active when the snapshot was taken (or --to-version) from the
    /// snapshot's offsets, so the records after them are processed again and their outputs
    /// emitted again.
    Rollback {
        group: String,
        #[arg(long)]
        to_version: Option<u32>,
        #[arg(long)]
        to_snapshot: Option<String>,
    },
    /// Take a snapshot of the group's committed state and offsets, to roll back to later.
    /// One is also taken before every upgrade, named before-v<N>.
    Snapshot {
        group: String,
        #[arg(long)]
        name: String,
    },
    /// List the group's snapshots: name, version, offsets, state size.
    Snapshots { group: String },
    /// Run a plugin on records from a file, in the engine's sandbox, without a server.
    Test(super::plugin_test::TestArgs),
    /// Build a consumer's source directory (Rust, Python, JavaScript, C or Go) into a component.
    Build(super::plugin_build::BuildArgs),
    /// Create a new consumer from a template, in Rust, Python, JavaScript, C or Go.
    New(super::plugin_new::NewArgs),
    /// Stop the group and remove it: its versions, offsets and (unless --keep-state) state.
    /// Its dead-letter topic stays.
    Undeploy {
        group: String,
        #[arg(long)]
        keep_state: bool,
    },
}

#[derive(Args)]
pub struct DeployArgs {
    /// The consumer group: one sandbox, one position per partition, one state namespace.
    #[arg(long)]
    group: String,
    /// The topic to consume.
    #[arg(long)]
    topic: String,
    /// The component to run (a .wasm file).
    #[arg(long)]
    wasm: PathBuf,
    /// A topic the plugin may emit to; repeat for more.
    #[arg(long = "output-topic")]
    output_topics: Vec<String>,
    /// A setting for the plugin's init, as key=value; repeat for more.
    #[arg(long = "config", short = 'c', value_parser = parse_key_value)]
    config: Vec<(String, String)>,
    /// Where a new group starts: earliest (the oldest record in the log), archive (the oldest
    /// in the topic's Parquet archive, then on into the log), latest, an offset (offset:N or
    /// N), or a time (timestamp:MS or an RFC 3339 time). Ignored when the group exists.
    #[arg(long, value_parser = parse_start)]
    from: Option<StartFrom>,
    /// Memory limit of the plugin, in MiB.
    #[arg(long)]
    memory_mb: Option<u64>,
    /// Time one `process` call may take.
    #[arg(long)]
    deadline_ms: Option<u64>,
    /// Calls a failing batch gets before the poison record is looked for.
    #[arg(long)]
    max_attempts: Option<u32>,
    /// Wait before the first retry (doubles each time).
    #[arg(long)]
    retry_backoff_ms: Option<u64>,
    /// Most records per `process` call.
    #[arg(long)]
    batch_records: Option<u32>,
    /// Longest time processed batches wait to be committed together.
    #[arg(long)]
    commit_interval_ms: Option<u64>,
    /// exactly-once (default), at-least-once or at-most-once: what a crash may do to the
    /// group's effects (see docs/exactly-once.md).
    #[arg(long)]
    delivery: Option<crate::runtime::Delivery>,
    /// Records one `process` call may emit.
    #[arg(long)]
    max_emitted_records: Option<u64>,
    /// Bytes one `process` call may emit.
    #[arg(long)]
    max_emitted_bytes: Option<u64>,
    /// Bytes (keys and values) the group's state may hold; a batch growing it past this
    /// fails (default 1 GiB).
    #[arg(long)]
    max_state_bytes: Option<u64>,
    /// MiB an instance's linear memory may grow by since it started before a fresh instance
    /// replaces it between batches (default 32; 0: never): keeps a leaking language runtime
    /// away from the memory limit without failing a call.
    #[arg(long)]
    recycle_growth_mb: Option<u64>,
}

#[derive(Subcommand)]
pub enum StateCommand {
    /// Print the value of one key of a plugin group's committed state.
    Get {
        #[arg(long)]
        group: String,
        key: String,
    },
    /// Print a plugin group's committed state whose keys start with --prefix, in key order,
    /// one `key<TAB>value` line per entry.
    Scan {
        #[arg(long)]
        group: String,
        #[arg(long, default_value = "")]
        prefix: String,
        /// At most this many entries.
        #[arg(long, short = 'n', default_value_t = 100)]
        limit: usize,
    },
}

#[derive(Subcommand)]
pub enum DlqCommand {
    /// Put a group's dead letters (those there now) through its plugin again; records that
    /// fail again return to the dead-letter topic. Read dead letters, with the headers that
    /// say why each failed, with `sluice consume <group>.dlq --format json`.
    Replay { group: String },
}

fn parse_start(text: &str) -> Result<StartFrom, String> {
    match text {
        "earliest" => return Ok(StartFrom::Earliest),
        "archive" => return Ok(StartFrom::Archive),
        "latest" => return Ok(StartFrom::Latest),
        _ => {}
    }
    if let Some(offset) = text.strip_prefix("offset:").or(Some(text))
        && let Ok(offset) = offset.parse::<u64>()
    {
        return Ok(StartFrom::Offset(offset));
    }
    let time = text.strip_prefix("timestamp:").unwrap_or(text);
    parse_timestamp(time)
        .map(StartFrom::Timestamp)
        .map_err(|_| {
            format!("`{text}` is not earliest, archive, latest, an offset (offset:N) or a time (timestamp:MS or RFC 3339)")
        })
}

pub async fn run(client: &Client, command: PluginCommand) -> anyhow::Result<()> {
    match command {
        PluginCommand::Deploy(args) => deploy(client, args).await,
        // Plugins make blocking calls (WASI), which must not run on an async worker.
        PluginCommand::Test(args) => {
            tokio::task::spawn_blocking(move || super::plugin_test::run(args)).await?
        }
        PluginCommand::Build(args) => {
            tokio::task::spawn_blocking(move || super::plugin_build::run(args)).await?
        }
        PluginCommand::New(args) => super::plugin_new::run(args),
        PluginCommand::List => list(client).await,
        PluginCommand::Describe { group } => {
            print_description(&client.describe_plugin(&group).await?);
            Ok(())
        }
        PluginCommand::Logs { group, lines } => logs(client, &group, lines).await,
        PluginCommand::Pause { group } => {
            action(
                client,
                &group,
                PluginAction::Pause,
                &RollbackRequest::default(),
            )
            .await
        }
        PluginCommand::Resume { group } => {
            action(
                client,
                &group,
                PluginAction::Resume,
                &RollbackRequest::default(),
            )
            .await
        }
        PluginCommand::Rollback {
            group,
            to_version,
            to_snapshot,
        } => {
            let request = RollbackRequest {
                version: to_version,
                snapshot: to_snapshot,
            };
            action(client, &group, PluginAction::Rollback, &request).await
        }
        PluginCommand::Snapshot { group, name } => snapshot(client, &group, &name).await,
        PluginCommand::Snapshots { group } => snapshots(client, &group).await,
        PluginCommand::Undeploy { group, keep_state } => {
            client.undeploy(&group, keep_state).await?;
            let kept = if keep_state { " (state kept)" } else { "" };
            println!("undeployed group {group}{kept}");
            Ok(())
        }
    }
}

async fn list(client: &Client) -> anyhow::Result<()> {
    let list = client.list_plugins().await?;
    println!(
        "{:<24} {:<24} {:>7} {:>10}  STATUS",
        "GROUP", "TOPIC", "VERSION", "LAG"
    );
    for p in list.plugins {
        println!(
            "{:<24} {:<24} {:>7} {:>10}  {}",
            p.group, p.topic, p.active_version, p.total_lag, p.status
        );
    }
    Ok(())
}

async fn logs(client: &Client, group: &str, lines: usize) -> anyhow::Result<()> {
    for line in client.plugin_logs(group, lines).await?.lines {
        let time = time_text(line.time_ms);
        let fields: Vec<String> = line
            .fields
            .iter()
            .map(|(k, v)| format!(" {k}={v}"))
            .collect();
        println!(
            "{time} {:>5} {:<6} v{:<3} {}{}",
            line.level.to_uppercase(),
            line.source,
            line.version,
            line.message,
            fields.concat()
        );
    }
    Ok(())
}

async fn snapshot(client: &Client, group: &str, name: &str) -> anyhow::Result<()> {
    let snapshot = client.take_snapshot(group, name).await?;
    println!(
        "snapshot {} of group {group}: version {}, {} state entries, offsets {}",
        snapshot.name,
        snapshot.version,
        snapshot.state_entries,
        offsets_text(&snapshot.offsets)
    );
    Ok(())
}

async fn snapshots(client: &Client, group: &str) -> anyhow::Result<()> {
    let list = client.snapshots(group).await?;
    println!(
        "{:<24} {:>7} {:>24} {:>10} {:>12}  OFFSETS",
        "SNAPSHOT", "VERSION", "TAKEN", "ENTRIES", "BYTES"
    );
    for s in list.snapshots {
        println!(
            "{:<24} {:>7} {:>24} {:>10} {:>12}  {}",
            s.name,
            s.version,
            time_text(s.created_ms).to_string(),
            s.state_entries,
            s.state_bytes,
            offsets_text(&s.offsets)
        );
    }
    Ok(())
}

pub async fn run_state(client: &Client, command: StateCommand) -> anyhow::Result<()> {
    let show = |text: &Option<String>, base64: &Option<String>| {
        text.clone()
            .or_else(|| base64.as_ref().map(|b| format!("base64:{b}")))
            .unwrap_or_default()
    };
    match command {
        StateCommand::Get { group, key } => {
            let scan = client.plugin_state(&group, &key, None, 1).await?;
            match scan.entries.first() {
                Some(entry) if entry.key.as_deref() == Some(key.as_str()) => {
                    println!("{}", show(&entry.value, &entry.value_base64));
                    Ok(())
                }
                _ => anyhow::bail!("group {group} has no state key `{key}`"),
            }
        }
        StateCommand::Scan {
            group,
            prefix,
            limit,
        } => {
            let mut after: Option<String> = None;
            let mut printed = 0;
            while printed < limit {
                let page = (limit - printed).min(1_000);
                let scan = client
                    .plugin_state(&group, &prefix, after.as_deref(), page)
                    .await?;
                for entry in &scan.entries {
                    println!(
                        "{}\t{}",
                        show(&entry.key, &entry.key_base64),
                        show(&entry.value, &entry.value_base64)
                    );
                }
                printed += scan.entries.len();
                match scan.entries.last().and_then(|e| e.key.clone()) {
                    Some(last) if scan.entries.len() == page => after = Some(last),
                    _ => break,
                }
            }
            Ok(())
        }
    }
}

pub async fn run_dlq(client: &Client, command: DlqCommand) -> anyhow::Result<()> {
    match command {
        DlqCommand::Replay { group } => {
            let d = client
                .plugin_action(
                    &group,
                    PluginAction::ReplayDeadLetters,
                    &RollbackRequest::default(),
                )
                .await?;
            if let Some((from, to)) = d.dlq_replay {
                println!(
                    "replaying dead letters {from}..{to} of {} through version {}",
                    d.dlq_topic, d.active_version
                );
            }
            Ok(())
        }
    }
}

fn time_text(ms: i64) -> humantime::Rfc3339Timestamp {
    humantime::format_rfc3339_millis(
        std::time::UNIX_EPOCH + std::time::Duration::from_millis(ms.max(0) as u64),
    )
}

/// `topic/partition@offset` for each input partition.
fn offsets_text(offsets: &[crate::txn::SnapshotOffset]) -> String {
    let parts: Vec<String> = offsets
        .iter()
        .map(|o| format!("{}/{}@{}", o.topic, o.partition, o.next_offset))
        .collect();
    parts.join(" ")
}

async fn action(
    client: &Client,
    group: &str,
    action: PluginAction,
    request: &RollbackRequest,
) -> anyhow::Result<()> {
    let d = client.plugin_action(group, action, request).await?;
    println!(
        "group {}: active version {}{}",
        d.group,
        d.active_version,
        if d.paused { ", paused" } else { "" }
    );
    Ok(())
}

async fn deploy(client: &Client, args: DeployArgs) -> anyhow::Result<()> {
    let wasm = std::fs::read(&args.wasm)
        .with_context(|| format!("cannot read {}", args.wasm.display()))?;
    let request = DeployRequest {
        spec: DeploySpec {
            topic: args.topic,
            output_topics: args.output_topics,
            config: args.config.into_iter().collect::<BTreeMap<_, _>>(),
            from: args.from,
            limits: LimitOverrides {
                memory_mb: args.memory_mb,
                deadline_ms: args.deadline_ms,
                max_emitted_records: args.max_emitted_records,
                max_emitted_bytes: args.max_emitted_bytes,
                max_attempts: args.max_attempts,
                retry_backoff_ms: args.retry_backoff_ms,
                batch_records: args.batch_records,
                commit_interval_ms: args.commit_interval_ms,
                delivery: args.delivery,
                max_state_bytes: args.max_state_bytes,
                recycle_growth_mb: args.recycle_growth_mb,
            },
        },
        wasm_base64: BASE64.encode(&wasm),
    };
    let d = client.deploy(&args.group, &request).await?;
    let version = d
        .versions
        .iter()
        .find(|v| v.version == d.active_version)
        .context("the engine's answer lacks the active version")?;
    println!(
        "deployed version {} of group {} ({} bytes, sha256 {}), consuming {}; dead letters go to {}",
        d.active_version,
        d.group,
        version.size_bytes,
        &version.digest[..12.min(version.digest.len())],
        d.topic,
        d.dlq_topic
    );
    Ok(())
}

fn print_description(d: &PluginDescription) {
    println!("group {} consuming {}", d.group, d.topic);
    println!(
        "  status: {}{}",
        d.status,
        if d.paused { " (paused)" } else { "" }
    );
    let running = d.running_version.map_or("-".to_string(), |v| v.to_string());
    println!("  active version {} (running {running})", d.active_version);
    if let Some(error) = &d.last_error {
        println!("  last error: {error}");
    }
    println!(
        "  processed {} records, emitted {}, dead letters {} (in {}), failed calls {}",
        d.processed_records, d.emitted_records, d.dead_letters, d.dlq_topic, d.failed_calls
    );
    println!(
        "  state: {} entries, {} bytes; instance memory {} bytes, recycled {} times",
        d.state_entries, d.state_bytes, d.instance_memory_bytes, d.instance_recycles
    );
    if d.in_progress_records > 0 || d.outbox_pending > 0 {
        println!(
            "  effects pending: {} records in progress, {} committed outbox entries not yet in their topics",
            d.in_progress_records, d.outbox_pending
        );
    }
    if let Some((cursor, end)) = d.dlq_replay
        && cursor < end
    {
        println!("  replaying dead letters {cursor}..{end}");
    }
    let l = &d.limits;
    println!(
        "  limits: memory {} MiB, deadline {} ms, batch {} records, {} attempts (backoff {} ms), emit {} records / {} bytes per batch, state {} bytes at most, recycle after {} MiB of growth",
        l.memory_mb,
        l.deadline_ms,
        l.batch_records,
        l.max_attempts,
        l.retry_backoff_ms,
        l.max_emitted_records,
        l.max_emitted_bytes,
        l.max_state_bytes,
        l.recycle_growth_mb
    );
    println!(
        "  {:>7} {:<14} {:>10}  OUTPUTS / CONFIG",
        "VERSION", "SHA256", "BYTES"
    );
    for v in &d.versions {
        let config: Vec<String> = v
            .config
            .iter()
            .map(|(k, val)| format!("{k}={val}"))
            .collect();
        let marker = if v.version == d.active_version {
            "*"
        } else {
            " "
        };
        println!(
            "  {marker}{:>6} {:<14} {:>10}  {:?} {}",
            v.version,
            &v.digest[..12.min(v.digest.len())],
            v.size_bytes,
            v.output_topics,
            config.join(" ")
        );
    }
    println!(
        "  {:>9} {:>12} {:>12} {:>10}",
        "PARTITION", "COMMITTED", "END", "LAG"
    );
    for p in &d.partitions {
        let committed = p.committed.map_or("-".to_string(), |c| c.to_string());
        println!(
            "  {:>9} {:>12} {:>12} {:>10}",
            p.partition, committed, p.high_watermark, p.lag
        );
    }
    if !d.workers.is_empty() {
        println!(
            "  {:<20} {:<12} {:>7} {:<16} {:>12} {:>10} {:>8}",
            "WORKER", "STATUS", "VERSION", "PARTITIONS", "PROCESSED", "LAG", "ABORTED"
        );
    }
    for w in &d.workers {
        let partitions: Vec<String> = w
            .partitions
            .iter()
            .map(|p| p.partition.to_string())
            .collect();
        let version = w.running_version.map_or("-".to_string(), |v| v.to_string());
        let lag: u64 = w.partitions.iter().map(|p| p.lag).sum();
        let status: String = w.status.chars().take(12).collect();
        println!(
            "  {:<20} {:<12} {:>7} {:<16} {:>12} {:>10} {:>8}",
            w.worker_id,
            status,
            version,
            partitions.join(","),
            w.processed_records,
            lag,
            w.aborted_transactions
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn from_takes_names_offsets_and_times() {
        assert_eq!(parse_start("earliest"), Ok(StartFrom::Earliest));
        assert_eq!(parse_start("latest"), Ok(StartFrom::Latest));
        assert_eq!(parse_start("archive"), Ok(StartFrom::Archive));
        assert_eq!(parse_start("42"), Ok(StartFrom::Offset(42)));
        assert_eq!(parse_start("offset:42"), Ok(StartFrom::Offset(42)));
        assert_eq!(
            parse_start("timestamp:1700000000000"),
            Ok(StartFrom::Timestamp(1_700_000_000_000))
        );
        assert_eq!(
            parse_start("2023-11-14T22:13:20Z"),
            Ok(StartFrom::Timestamp(1_700_000_000_000))
        );
        assert!(parse_start("yesterday").unwrap_err().contains("earliest"));
    }
}
