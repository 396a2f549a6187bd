//! `sluice produce`: lines from stdin or a file become records, sent in batches.

use std::io::BufRead;
use std::path::PathBuf;

use anyhow::Context;
use bytes::Bytes;
use clap::Args;

use super::client::Client;
use crate::log::{Header, Record};

#[derive(Args)]
#[command(long_about = "\
Send lines as records: one line, one record. Lines come from stdin, or from --file. Records are
sent in batches as lines arrive, and the command returns once every record is acknowledged
(durable on the engine's disk).

Examples:
    echo hello | sluice produce greetings
    sluice produce orders --file orders.txt --key-separator ':'   # 'alice:{...}' -> key alice
    sluice produce orders --partition 2 --header source=import < data.txt")]
pub struct ProduceArgs {
    topic: String,
    /// Read lines from this file instead of stdin.
    #[arg(long, short)]
    file: Option<PathBuf>,
    /// Split each line at the first occurrence of SEP into key and value (lines without it
    /// get no key).
    #[arg(long, value_name = "SEP")]
    key_separator: Option<String>,
    /// Send every record to this partition (default: by key hash, or spread evenly).
    #[arg(long, short)]
    partition: Option<u32>,
    /// Add a header name=value to every record; repeat for more.
    #[arg(long = "header", short = 'H', value_parser = super::parse_key_value)]
    headers: Vec<(String, String)>,
    /// Most records per request.
    #[arg(long, default_value_t = 1000)]
    batch_size: usize,
}

pub async fn run(client: &Client, args: ProduceArgs) -> anyhow::Result<()> {
    // Asked first, so that a wrong topic or partition fails even with nothing to send.
    let topic = client.describe_topic(&args.topic).await?;
    if let Some(partition) = args.partition
        && partition as usize >= topic.partitions.len()
    {
        anyhow::bail!(
            "partition {partition} does not exist: topic `{}` has {} partitions",
            args.topic,
            topic.partitions.len()
        );
    }
    let (lines_tx, mut lines) =
        tokio::sync::mpsc::channel::<std::io::Result<String>>(args.batch_size.max(1) * 4);
    let file = args.file.clone();
    std::thread::spawn(move || {
        let reader: Box<dyn BufRead> = match file {
            Some(path) => match std::fs::File::open(&path) {
                Ok(f) => Box::new(std::io::BufReader::new(f)),
                Err(e) => {
                    let _ = lines_tx.blocking_send(Err(std::io::Error::new(
                        e.kind(),
                        format!("{}: {e}", path.display()),
                    )));
                    return;
                }
            },
            None => Box::new(std::io::stdin().lock()),
        };
        for line in reader.lines() {
            if lines_tx.blocking_send(line).is_err() {
                return;
            }
        }
    });
    let headers: Vec<Header> = args
        .headers
        .iter()
        .map(|(k, v)| Header {
            key: k.clone().into(),
            value: Some(Bytes::from(v.clone())),
        })
        .collect();
    let mut sent = 0u64;
    let mut batch = Vec::with_capacity(args.batch_size);
    while let Some(first) = lines.recv().await {
        batch.push(first);
        while batch.len() < args.batch_size.max(1) {
            match lines.try_recv() {
                Ok(line) => batch.push(line),
                Err(_) => break,
            }
        }
        let mut records = Vec::with_capacity(batch.len());
        for line in batch.drain(..) {
            let line = line.context("cannot read input")?;
            let (key, value) = match args
                .key_separator
                .as_deref()
                .and_then(|sep| line.split_once(sep))
            {
                Some((key, value)) => (Some(Bytes::from(key.to_string())), value.to_string()),
                None => (None, line),
            };
            records.push(Record {
                timestamp: 0,
                key,
                value: Some(Bytes::from(value)),
                headers: headers.clone(),
            });
        }
        client
            .produce(&args.topic, args.partition, &records)
            .await
            .with_context(|| format!("produce failed after {sent} records were acknowledged"))?;
        sent += records.len() as u64;
    }
    eprintln!("produced {sent} records to {}", args.topic);
    Ok(())
}
