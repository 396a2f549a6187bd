//! The plugin part of `sluice-bench`: the host's per-batch and per-record overhead, WASM
//! against native for the same logic, and compile against cached start.

use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;

use sluice::log::{Record, batch};
use sluice::runtime::{
    Batch, Plugin, Runtime, Sandbox, SandboxError, SandboxIdentity, SandboxLimits,
};
use sluice::txn::state::MemoryState;

/// Records per identity measurement (batch size 1 uses a tenth: a call per record).
const IDENTITY_RECORDS: usize = 1_000_000;
const FILTER_RECORDS: usize = 200_000;
const FILTER_BATCH: usize = 1_000;
const FILTER_ROUNDS: usize = 7;

pub fn run(dir: &Path, required: bool) -> anyhow::Result<()> {
    let read = |name: &str| std::fs::read(dir.join(format!("{name}.wasm")));
    let (identity, filter) = match (read("identity"), read("filter")) {
        (Ok(identity), Ok(filter)) => (identity, filter),
        (Err(error), _) | (_, Err(error)) => {
            let hint = format!(
                "plugins not found in {} ({error}); build them with: cargo build --release --target wasm32-wasip2 --manifest-path plugins/Cargo.toml",
                dir.display()
            );
            if required {
                anyhow::bail!(hint);
            }
            println!("(skipping the plugin measurements: {hint})");
            return Ok(());
        }
    };
    let cache = tempfile::tempdir()?;
    let started = Instant::now();
    let cold = Runtime::new(Some(cache.path()))?;
    let identity_plugin = cold.compile(&identity)?;
    let cold_identity = started.elapsed();
    let started = Instant::now();
    cold.compile(&filter)?;
    let cold_filter = started.elapsed();
    let warm = Runtime::new(Some(cache.path()))?;
    let started = Instant::now();
    let filter_plugin = warm.compile(&filter)?;
    let config = filter_settings();
    let (mut filter_sandbox, _) = start_sandbox(&warm, &filter_plugin, &config)?;
    let warm_filter = started.elapsed();

    println!();
    println!(
        "{:<34} {:>14} {:>10}",
        "PLUGIN (100-byte records)", "RECORDS/S", "NS/RECORD"
    );
    let (mut identity_sandbox, _) = start_sandbox(&cold, &identity_plugin, &[])?;
    for size in [1usize, 100, 1_000, 10_000] {
        let total = if size == 1 {
            IDENTITY_RECORDS / 10
        } else {
            IDENTITY_RECORDS
        };
        let batch = make_batch(&sample(size, |i| format!("{i:0>100}")));
        let started = Instant::now();
        for _ in 0..total / size {
            identity_sandbox.process(&batch)?;
        }
        print_rate(
            &format!("identity, batch of {size}"),
            total,
            started.elapsed(),
        );
    }

    let batches = filter_input();
    let predicate =
        json_predicate::Predicate::new("total", "gt", "49").map_err(anyhow::Error::msg)?;
    // Alternating rounds, median of each side: the two share whatever else the machine does.
    let (mut wasm_rounds, mut native_rounds) = (Vec::new(), Vec::new());
    for _ in 0..FILTER_ROUNDS {
        let started = Instant::now();
        let mut wasm_kept = 0;
        for batch in &batches {
            wasm_kept += filter_sandbox.process(batch)?.emitted.len();
        }
        wasm_rounds.push(started.elapsed());
        let started = Instant::now();
        let mut native_kept = 0;
        for batch in &batches {
            native_kept += native_filter(&predicate, batch)?.len();
        }
        native_rounds.push(started.elapsed());
        anyhow::ensure!(
            wasm_kept == native_kept,
            "WASM kept {wasm_kept} records, native {native_kept}"
        );
    }
    let (wasm, native) = (median(&mut wasm_rounds), median(&mut native_rounds));
    print_rate("filter, WASM (median of 7)", FILTER_RECORDS, wasm);
    print_rate("filter, native (median of 7)", FILTER_RECORDS, native);
    println!(
        "{:<34} {:>14.2}",
        "filter WASM/native throughput",
        native.as_secs_f64() / wasm.as_secs_f64()
    );
    println!(
        "{:<34} {:>11.1} ms",
        "cold compile, identity",
        ms(cold_identity)
    );
    println!(
        "{:<34} {:>11.1} ms",
        "cold compile, filter",
        ms(cold_filter)
    );
    println!(
        "{:<34} {:>11.1} ms",
        "cached start, filter (load+init)",
        ms(warm_filter)
    );
    Ok(())
}

/// The filter plugin's input: JSON orders of about 100 bytes, half of them kept.
pub(super) fn filter_input() -> Vec<Batch> {
    let values = sample(FILTER_RECORDS, |i| {
        format!(
            r#"{{"order":{i},"customer":"c{:03}","total":{},"note":"xxxxxxxxxxxxxxxxxxxxxxxxxxx"}}"#,
            i % 500,
            i % 100
        )
    });
    values.chunks(FILTER_BATCH).map(make_batch).collect()
}

pub(super) fn filter_settings() -> Vec<(String, String)> {
    [
        ("output", "big"),
        ("field", "total"),
        ("op", "gt"),
        ("value", "49"),
    ]
    .iter()
    .map(|(k, v)| (k.to_string(), v.to_string()))
    .collect()
}

/// The filter plugin's work done natively: decode the batch, test each value, copy out the
/// matches as the host copies emitted records.
fn native_filter(
    predicate: &json_predicate::Predicate,
    batch: &Batch,
) -> anyhow::Result<Vec<Record>> {
    let records = batch::decode_records_frame(&Bytes::copy_from_slice(&batch.records))?;
    Ok(records
        .into_iter()
        .filter(|r| predicate.matches(r.value_bytes()))
        .map(|r| Record {
            timestamp: r.timestamp,
            key: r.key.map(|k| Bytes::copy_from_slice(&k)),
            value: r.value.as_deref().map(Bytes::copy_from_slice),
            headers: r.headers,
        })
        .collect())
}

pub(super) fn sample(count: usize, value: impl Fn(usize) -> String) -> Vec<Record> {
    (0..count)
        .map(|i| Record {
            timestamp: 1_700_000_000_000 + i as i64,
            key: Some(Bytes::from(format!("key-{}", i % 1000))),
            value: Some(Bytes::from(value(i))),
            headers: Vec::new(),
        })
        .collect()
}

pub(super) fn make_batch(records: &[Record]) -> Batch {
    Batch {
        topic: "bench".into(),
        partition: 0,
        base_offset: 0,
        count: records.len() as u32,
        records: batch::encode_records_frame(records),
    }
}

fn print_rate(name: &str, records: usize, elapsed: Duration) {
    let rate = records as f64 / elapsed.as_secs_f64();
    println!("{name:<34} {rate:>14.0} {:>10.1}", 1e9 / rate);
}

fn median(rounds: &mut [Duration]) -> Duration {
    rounds.sort();
    rounds[rounds.len() / 2]
}

fn ms(duration: Duration) -> f64 {
    duration.as_secs_f64() * 1e3
}

pub(super) fn start_sandbox(
    runtime: &Runtime,
    plugin: &Plugin,
    config: &[(String, String)],
) -> Result<(Sandbox, Arc<MemoryState>), SandboxError> {
    let identity = SandboxIdentity {
        group: "bench",
        version: "1",
        log_sink: None,
    };
    let state = Arc::new(MemoryState::default());
    let sandbox = Sandbox::start(
        runtime,
        plugin,
        SandboxLimits::default(),
        identity,
        state.clone(),
        config,
    )?;
    Ok((sandbox, state))
}
