//! The languages part of `sluice-bench`: every example consumer (examples/<language>/, the
//! same order-totals job), built from source, over the same records: records/s, memory per
//! instance, cold compile and cached start, against the job in native Rust in the same run.

use std::collections::HashMap;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context;
use bytes::Bytes;
use clap::ValueEnum;
use serde_json::Value;

use crate::plugins::make_batch;
use sluice::cli::plugin_build::{Language, build};
use sluice::log::Record;
use sluice::runtime::{Batch, PluginLimits, Runtime, Sandbox, SandboxIdentity, SandboxLimits};
use sluice::txn::state::MemoryState;

/// Records per `process` call: the engine's default batch size.
const BATCH: usize = 1_000;
/// Distinct customers, so distinct state keys.
const CUSTOMERS: usize = 1_000;

/// One language's figures.
struct Measured {
    size: u64,
    cold_compile: Duration,
    cached_start: Duration,
    elapsed: Duration,
    /// The most linear memory an instance held.
    memory_bytes: usize,
    /// Instances replaced because their memory grew past `recycle_growth_mb`.
    recycles: u32,
}

pub fn run(examples: &Path, records: u64, languages: &[Language]) -> anyhow::Result<()> {
    let records = records as usize;
    let orders: Vec<Record> = (0..records).map(order).collect();
    let batches: Vec<Batch> = orders
        .chunks(BATCH)
        .enumerate()
        .map(|(n, chunk)| Batch {
            base_offset: (n * BATCH) as u64,
            ..make_batch(chunk)
        })
        .collect();

    // The median of three: one short run of native code is at the mercy of the machine.
    let mut native_rounds = Vec::new();
    let mut expected = HashMap::new();
    for _ in 0..3 {
        let started = Instant::now();
        expected = native_totals(&orders)?;
        native_rounds.push(started.elapsed());
    }
    native_rounds.sort();
    let native = native_rounds[1];

    // Build everything first: the builds' output comes before the table.
    let built: Vec<(Language, anyhow::Result<Vec<u8>>)> = languages
        .iter()
        .copied()
        .map(|language| {
            let dir = examples.join(example_dir(language));
            let wasm = build(&dir, Some(language), None)
                .and_then(|path| std::fs::read(&path).context("cannot read the component"));
            (language, wasm)
        })
        .collect();

    println!();
    println!(
        "{:<22} {:>9} {:>13} {:>13} {:>12} {:>9} {:>10} {:>8}",
        format!("LANGUAGE ({records} orders)"),
        "SIZE",
        "COLD COMPILE",
        "CACHED START",
        "RECORDS/S",
        "/NATIVE",
        "MEMORY",
        "RECYCLES"
    );
    let native_rate = records as f64 / native.as_secs_f64();
    println!(
        "{:<22} {:>9} {:>13} {:>13} {:>12.0} {:>9.2} {:>10}",
        "native Rust (baseline)", "-", "-", "-", native_rate, 1.0, "-"
    );
    for (language, wasm) in built {
        let measured = wasm.and_then(|wasm| measure(&wasm, &batches, &expected));
        match measured {
            Ok(m) => {
                let rate = records as f64 / m.elapsed.as_secs_f64();
                println!(
                    "{:<22} {:>6} KiB {:>10.0} ms {:>10.0} ms {:>12.0} {:>9.3} {:>6.1} MiB {:>8}",
                    language.name(),
                    m.size.div_ceil(1024),
                    m.cold_compile.as_secs_f64() * 1e3,
                    m.cached_start.as_secs_f64() * 1e3,
                    rate,
                    rate / native_rate,
                    m.memory_bytes as f64 / (1024.0 * 1024.0),
                    m.recycles
                );
            }
            Err(error) => println!("{:<22} skipped: {error:#}", language.name()),
        }
    }
    Ok(())
}

/// examples/<the name `--lang` takes>: rust, python, js, c, go.
fn example_dir(language: Language) -> String {
    language
        .to_possible_value()
        .map(|value| value.get_name().to_string())
        .unwrap_or_default()
}

/// The n-th order of the benchmark: valid, spread over [`CUSTOMERS`] customers.
fn order(n: usize) -> Record {
    let value = format!(
        r#"{{"id":{n},"customer":"customer-{}","cents":{}}}"#,
        n % CUSTOMERS,
        n % 5_000
    );
    Record {
        timestamp: 1_700_000_000_000 + n as i64,
        key: None,
        value: Some(Bytes::from(value)),
        headers: Vec::new(),
    }
}

/// Compiles `wasm` (cold, then from the cache), runs it over `batches` applying its state
/// writes as the engine does, and checks that it ends with the `expected` totals.
fn measure(
    wasm: &[u8],
    batches: &[Batch],
    expected: &HashMap<String, u64>,
) -> anyhow::Result<Measured> {
    let cache = tempfile::tempdir()?;
    let started = Instant::now();
    Runtime::new(Some(cache.path()))?.compile(wasm)?;
    let cold_compile = started.elapsed();

    let runtime = Runtime::new(Some(cache.path()))?;
    let started = Instant::now();
    let plugin = runtime.compile(wasm)?;
    let state = Arc::new(MemoryState::default());
    let identity = SandboxIdentity {
        group: "bench",
        version: "1",
        log_sink: None,
    };
    let config = [("output".to_string(), "enriched".to_string())];
    let mut sandbox = Sandbox::start(
        &runtime,
        &plugin,
        SandboxLimits::default(),
        identity,
        state.clone(),
        &config,
    )?;
    let cached_start = started.elapsed();

    let started = Instant::now();
    let mut emitted = 0;
    // Instances are recycled as the engine recycles them (`recycle_growth_mb`), so memory is
    // what a group holds, and a recycle's cost is in the time.
    let limits = PluginLimits::default();
    let (mut started_memory, mut most_memory, mut recycles) = (sandbox.memory_bytes(), 0, 0);
    for batch in batches {
        let processed = sandbox.process(batch)?;
        emitted += processed.emitted.len();
        state.apply(processed.state_writes);
        let memory = sandbox.memory_bytes();
        most_memory = most_memory.max(memory);
        if limits.recycle_due(started_memory as u64, memory as u64) {
            sandbox = Sandbox::start(
                &runtime,
                &plugin,
                SandboxLimits::default(),
                SandboxIdentity {
                    group: "bench",
                    version: "1",
                    log_sink: None,
                },
                state.clone(),
                &config,
            )?;
            started_memory = sandbox.memory_bytes();
            recycles += 1;
        }
    }
    let elapsed = started.elapsed();

    let records: usize = batches.iter().map(|b| b.count as usize).sum();
    anyhow::ensure!(
        emitted == records,
        "emitted {emitted} records for {records} orders"
    );
    let totals: HashMap<String, u64> = state
        .entries()
        .into_iter()
        .map(|(key, value)| {
            let total = std::str::from_utf8(&value)
                .ok()
                .and_then(|t| t.parse().ok())
                .unwrap_or(u64::MAX);
            (String::from_utf8_lossy(&key).into_owned(), total)
        })
        .collect();
    anyhow::ensure!(&totals == expected, "its totals differ from native Rust's");
    Ok(Measured {
        size: wasm.len() as u64,
        cold_compile,
        cached_start,
        elapsed,
        memory_bytes: most_memory,
        recycles,
    })
}

/// The job in native Rust, as the Rust example does it (serde_json, the same checks, the
/// same output text): the baseline. Returns the totals per customer.
fn native_totals(orders: &[Record]) -> anyhow::Result<HashMap<String, u64>> {
    let mut totals: HashMap<String, u64> = HashMap::new();
    let mut emitted = Vec::with_capacity(orders.len());
    let integer = |value: Option<&Value>| {
        let number = value?.as_f64()?;
        (number.fract() == 0.0 && number.abs() <= 9_007_199_254_740_991.0).then_some(number as i64)
    };
    for record in orders {
        let order: Value = serde_json::from_slice(record.value_bytes())?;
        let Value::Object(fields) = order else {
            anyhow::bail!("not a JSON object");
        };
        let id = integer(fields.get("id")).context("field `id` must be an integer")?;
        let Some(Value::String(customer)) = fields.get("customer") else {
            anyhow::bail!("field `customer` must be a non-empty string");
        };
        let cents = integer(fields.get("cents"))
            .filter(|c| *c >= 0)
            .context("field `cents` must be a non-negative integer")?;
        let total = totals.entry(customer.clone()).or_default();
        *total += cents as u64;
        let customer = Value::String(customer.clone()).to_string();
        emitted.push(format!(
            r#"{{"id":{id},"customer":{customer},"cents":{cents},"total_cents":{total}}}"#
        ));
    }
    anyhow::ensure!(emitted.len() == orders.len());
    Ok(totals)
}
