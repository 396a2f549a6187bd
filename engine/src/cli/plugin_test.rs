//! `sluice plugin test`: runs a plugin on records from a file in the engine's sandbox, with no
//! server, and prints what it emitted, what it rejected and how it changed its state.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;

use anyhow::Context;
use clap::Args;
use serde_json::{Value, json};

use super::parse_key_value;
use crate::log::{Record, batch, now_ms};
use crate::runtime::{Batch, PluginLimits, Runtime, Sandbox, SandboxError, SandboxIdentity};
use crate::server::api::JsonRecord;
use crate::txn::state::{MemoryState, StateWrites};

#[derive(Args)]
#[command(long_about = "\
Run a plugin on records from a file, in the same sandbox and with the same limits as the
engine, without a server. Prints one JSON line per event:

  {\"emit\": {\"topic\", \"key\", \"value\", \"headers\"}}   a record the plugin emitted
  {\"poison\": {\"offset\", \"reason\"}}                   a record the plugin rejected
  {\"error\": {\"offset\", \"message\"}}                   a record on which the plugin failed
                                                       (found by running it alone)
  {\"state\": {\"key\": \"value\" or null}}               the state at the end, where it changed

The input has one JSON record per line: {\"key\": \"ada\", \"value\": {\"total\": 3},
\"headers\": {\"h\": \"v\"}, \"timestamp\": 1700000000000}; a value that is not a string is
passed as its JSON text. Offsets count from 0 in file order.

With --expect FILE, the printed lines are compared (as JSON) with FILE's, and the command
fails at the first difference: a test for the plugin, runnable in any CI.

Example:
  sluice plugin test --wasm counter.wasm --config output=counts --input visits.jsonl")]
pub struct TestArgs {
    /// The component to run.
    #[arg(long)]
    wasm: PathBuf,
    /// JSON lines of records.
    #[arg(long)]
    input: PathBuf,
    /// A setting for the plugin's init, as key=value; repeat for more.
    #[arg(long = "config", short = 'c', value_parser = parse_key_value)]
    config: Vec<(String, String)>,
    /// A JSON object of state to start from: {"key": "value"}.
    #[arg(long)]
    state: Option<PathBuf>,
    /// Records per `process` call.
    #[arg(long, default_value_t = 100)]
    batch_records: usize,
    /// Memory limit of the plugin, in MiB.
    #[arg(long)]
    memory_mb: Option<u64>,
    /// Time one `process` call may take.
    #[arg(long)]
    deadline_ms: Option<u64>,
    /// Topic name the batches say they come from.
    #[arg(long, default_value = "input")]
    topic: String,
    /// A file of the JSON lines the run must print (compared as JSON, in order): the command
    /// fails, naming the first difference, when the plugin does anything else.
    #[arg(long)]
    expect: Option<PathBuf>,
}

pub fn run(args: TestArgs) -> anyhow::Result<()> {
    let wasm = std::fs::read(&args.wasm)
        .with_context(|| format!("cannot read {}", args.wasm.display()))?;
    let records = read_input(&args.input)?;
    let state = Arc::new(MemoryState::default());
    let mut seed = StateWrites::new();
    if let Some(path) = &args.state {
        let text = std::fs::read_to_string(path)
            .with_context(|| format!("cannot read {}", path.display()))?;
        let object: BTreeMap<String, String> = serde_json::from_str(&text)
            .with_context(|| format!("{} is not a JSON object of string values", path.display()))?;
        for (key, value) in object {
            seed.insert(key.into_bytes(), Some(value.into_bytes()));
        }
        state.apply(seed.clone());
    }
    let before = state.entries();
    let defaults = PluginLimits::default();
    let limits = PluginLimits {
        memory_mb: args.memory_mb.unwrap_or(defaults.memory_mb),
        deadline_ms: args.deadline_ms.unwrap_or(defaults.deadline_ms),
        ..defaults
    };
    // The compiled code is cached by the component's digest, as the engine caches it: a second
    // test of an unchanged component (a Python or JavaScript one takes tens of seconds to
    // compile) starts at once.
    let cache = super::cache_dir().map(|dir| dir.join("compiled"));
    let runtime = Runtime::new(cache.as_deref())?;
    let plugin = runtime.compile(&wasm)?;
    let mut tester = Tester {
        runtime,
        plugin,
        limits,
        state,
        config: args.config,
        topic: args.topic,
        sandbox: None,
        started_memory_bytes: 0,
        recycles: 0,
        printed: Vec::new(),
    };
    let indexed: Vec<(u64, Record)> = records
        .into_iter()
        .enumerate()
        .map(|(i, r)| (i as u64, r))
        .collect();
    for chunk in indexed.chunks(args.batch_records.max(1)) {
        tester.process(chunk)?;
    }
    let after = tester.state.entries();
    let mut changes = serde_json::Map::new();
    for (key, value) in &after {
        if before.get(key) != Some(value) {
            changes.insert(text(key), Value::String(text(value)));
        }
    }
    for key in before.keys().filter(|k| !after.contains_key(*k)) {
        changes.insert(text(key), Value::Null);
    }
    tester.print(json!({ "state": changes }));
    if let Some(sandbox) = &tester.sandbox {
        eprintln!(
            "the plugin's linear memory: {:.1} MiB (limit {} MiB); instances recycled after \
             {} MiB of growth: {}",
            sandbox.memory_bytes() as f64 / (1024.0 * 1024.0),
            limits.memory_mb,
            limits.recycle_growth_mb,
            tester.recycles
        );
    }
    match &args.expect {
        Some(path) => compare(path, &tester.printed),
        None => Ok(()),
    }
}

/// Checks the printed lines against the expected ones in `path`.
fn compare(path: &PathBuf, printed: &[Value]) -> anyhow::Result<()> {
    let text =
        std::fs::read_to_string(path).with_context(|| format!("cannot read {}", path.display()))?;
    let mut expected = Vec::new();
    for (number, line) in text.lines().enumerate() {
        if !line.trim().is_empty() {
            let value: Value = serde_json::from_str(line)
                .with_context(|| format!("{}:{}: not JSON", path.display(), number + 1))?;
            expected.push((number + 1, value));
        }
    }
    for (at, (number, want)) in expected.iter().enumerate() {
        match printed.get(at) {
            Some(got) if got == want => {}
            Some(got) => anyhow::bail!(
                "line {} of the output differs from {}:{number}:\n  expected {want}\n  printed  {got}",
                at + 1,
                path.display()
            ),
            None => anyhow::bail!(
                "the output ended after {} lines; {}:{number} expects {want}",
                printed.len(),
                path.display()
            ),
        }
    }
    if let Some(extra) = printed.get(expected.len()) {
        anyhow::bail!(
            "line {} of the output is not in {}: {extra}",
            expected.len() + 1,
            path.display()
        );
    }
    eprintln!("ok: the output matches {}", path.display());
    Ok(())
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

fn read_input(path: &PathBuf) -> anyhow::Result<Vec<Record>> {
    let text =
        std::fs::read_to_string(path).with_context(|| format!("cannot read {}", path.display()))?;
    let now = now_ms();
    let mut records = Vec::new();
    for (number, line) in text.lines().enumerate() {
        if line.trim().is_empty() {
            continue;
        }
        let mut value: Value = serde_json::from_str(line)
            .with_context(|| format!("{}:{}: not JSON", path.display(), number + 1))?;
        if let Some(field) = value.get_mut("value")
            && !field.is_string()
        {
            *field = Value::String(field.to_string());
        }
        let record: JsonRecord = serde_json::from_value(value)
            .with_context(|| format!("{}:{}: not a record", path.display(), number + 1))?;
        records.push(
            record
                .to_record(now)
                .map_err(|e| anyhow::anyhow!("{}:{}: {e}", path.display(), number + 1))?,
        );
    }
    Ok(records)
}

struct Tester {
    runtime: Runtime,
    plugin: crate::runtime::Plugin,
    limits: PluginLimits,
    state: Arc<MemoryState>,
    config: Vec<(String, String)>,
    topic: String,
    sandbox: Option<Sandbox>,
    /// Linear memory of the instance when it started.
    started_memory_bytes: usize,
    /// Instances replaced because their memory grew past `recycle_growth_mb`, as the engine
    /// replaces them.
    recycles: u64,
    /// Every line printed, for --expect.
    printed: Vec<Value>,
}

impl Tester {
    fn print(&mut self, line: Value) {
        println!("{line}");
        self.printed.push(line);
    }

    fn sandbox(&mut self) -> anyhow::Result<&mut Sandbox> {
        if self.sandbox.is_none() {
            let identity = SandboxIdentity {
                group: "test",
                version: "local",
                log_sink: None,
            };
            let sandbox = Sandbox::start(
                &self.runtime,
                &self.plugin,
                self.limits.sandbox(),
                identity,
                self.state.clone(),
                &self.config,
            )
            .map_err(|e| anyhow::anyhow!("{e}"))?;
            self.started_memory_bytes = sandbox.memory_bytes();
            self.sandbox = Some(sandbox);
        }
        Ok(self.sandbox.as_mut().expect("started above"))
    }

    /// Drops an instance whose memory grew past `recycle_growth_mb`, as the engine does: the
    /// next batch starts a fresh one.
    fn recycle_if_grown(&mut self) {
        let grown = self.sandbox.as_ref().is_some_and(|sandbox| {
            let memory = sandbox.memory_bytes() as u64;
            self.limits
                .recycle_due(self.started_memory_bytes as u64, memory)
        });
        if grown {
            self.sandbox = None;
            self.recycles += 1;
        }
    }

    /// Runs one batch; on failure, finds the records it fails on by running them alone.
    fn process(&mut self, records: &[(u64, Record)]) -> anyhow::Result<()> {
        let plain: Vec<Record> = records.iter().map(|(_, r)| r.clone()).collect();
        let batch = Batch {
            topic: self.topic.clone(),
            partition: 0,
            base_offset: records[0].0,
            count: records.len() as u32,
            records: batch::encode_records_frame(&plain),
        };
        match self.sandbox()?.process(&batch) {
            Ok(processed) => {
                for emitted in processed.emitted {
                    let mut out = JsonRecord::from_record(&emitted.record, 0, 0);
                    out.offset = None;
                    out.partition = None;
                    out.timestamp = None;
                    let mut line = serde_json::to_value(out)?;
                    line["topic"] = Value::String(emitted.topic.to_string());
                    self.print(json!({ "emit": line }));
                }
                self.state.apply(processed.state_writes);
                self.recycle_if_grown();
            }
            Err(SandboxError::Poison { offset, reason }) => {
                let at = records.iter().position(|(o, _)| *o == offset);
                let Some(at) = at else {
                    anyhow::bail!("the plugin rejected offset {offset}, which is not in the batch");
                };
                if at > 0 {
                    self.process(&records[..at])?;
                }
                self.print(json!({ "poison": { "offset": offset, "reason": reason } }));
                if at + 1 < records.len() {
                    self.process(&records[at + 1..])?;
                }
            }
            Err(error) => {
                if error.needs_restart() {
                    self.sandbox = None;
                }
                if records.len() == 1 {
                    let message = error.to_string();
                    self.print(json!({ "error": { "offset": records[0].0, "message": message } }));
                } else {
                    for record in records {
                        self.process(std::slice::from_ref(record))?;
                    }
                }
            }
        }
        Ok(())
    }
}
