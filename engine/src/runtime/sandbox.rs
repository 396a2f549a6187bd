//! One plugin instance in its own store: memory cap, CPU deadline per call, output quota, no
//! files or network, and its own state.
//!
//! State reads go to the group's committed state (a [`StateStore`]) through the writes of the
//! current call; the writes are returned with the call's output and applied by the caller
//! together with the offset commit, so a failed call leaves no trace.

use std::sync::Arc;
use std::time::Duration;

use wasmtime::component::{HasSelf, Linker, ResourceTable};
use wasmtime::{ResourceLimiter, Store, StoreLimits, StoreLimitsBuilder, Trap};
use wasmtime_wasi::{WasiCtx, WasiCtxBuilder, WasiCtxView, WasiView};

use super::bindings::Consumer;
use super::bindings::sluice::plugin::{emit, log, state, types};
use super::logs::{LogBuffer, LogLine};
use super::{Batch, EPOCH_TICK, Plugin, ProcessError, Runtime};
use crate::log::{Header, Record, batch};
use crate::txn::state::{StateError, StateStore, StateWrites, decode_write_many, merged_scan};
use bytes::Bytes;

/// Most entries one `state.scan` returns.
const MAX_SCAN: u32 = 1000;

/// What a sandbox may use.
#[derive(Debug, Clone, Copy)]
pub struct SandboxLimits {
    /// Linear memory of the plugin, all memories together.
    pub memory_bytes: usize,
    /// CPU (wall-clock) time one `init` or `process` call may take.
    pub deadline: Duration,
    /// Records one `process` call may emit.
    pub max_emitted_records: usize,
    /// Bytes (keys, values, headers) one `process` call may emit.
    pub max_emitted_bytes: usize,
}

impl Default for SandboxLimits {
    fn default() -> Self {
        SandboxLimits {
            // Interpreter-based plugins (JavaScript, Python) need more than 64 MiB.
            memory_bytes: 256 * 1024 * 1024,
            deadline: Duration::from_secs(5),
            max_emitted_records: 100_000,
            max_emitted_bytes: 64 * 1024 * 1024,
        }
    }
}

/// What a successful `process` call produced.
#[derive(Debug, Default)]
pub struct Processed {
    pub emitted: Vec<Emitted>,
    pub state_writes: StateWrites,
}

/// A record a plugin emitted, with the topic it goes to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Emitted {
    pub topic: Arc<str>,
    pub record: Record,
}

/// Why a call into a plugin did not succeed. After `Failed`, `Poison` and `Quota` the instance
/// takes further calls; after the others make a new sandbox (see
/// [`SandboxError::needs_restart`]).
#[derive(Debug, thiserror::Error)]
pub enum SandboxError {
    #[error(
        "the plugin ran past its deadline of {0:?} (an endless loop?); raise the group's deadline if the work is legitimate"
    )]
    Deadline(Duration),
    #[error(
        "the plugin needed more memory than its limit of {0} bytes; raise the group's memory limit or use less"
    )]
    Memory(usize),
    #[error(
        "the plugin emitted more than its quota per batch ({0}); emit less per batch or raise the quota"
    )]
    Quota(String),
    #[error("the plugin trapped: {0}")]
    Trap(String),
    #[error("the plugin failed the batch: {0}")]
    Failed(String),
    #[error("the plugin rejected the record at offset {offset}: {reason}")]
    Poison { offset: u64, reason: String },
    #[error("the plugin's init failed: {0}")]
    Init(String),
    #[error("the group's state store failed: {0}")]
    State(#[source] StateError),
    #[error(
        "the batch would grow the group's state to {size} bytes, past its limit of {limit} bytes (max_state_bytes); delete state in the plugin or raise the limit"
    )]
    StateFull { size: u64, limit: u64 },
    #[error("the plugin emitted a record its output topic refuses: {0}")]
    OutputRefused(#[source] crate::log::LogError),
}

/// The kinds of failed call `/metrics` counts (`sluice_plugin_errors_total{kind}`).
pub const ERROR_KINDS: [&str; 7] = [
    "trap", "deadline", "memory", "quota", "failed", "init", "engine",
];

impl SandboxError {
    /// Which of [`ERROR_KINDS`] this is: limits the group set (deadline, memory, quota: the
    /// per-batch emit quota, max_state_bytes and the output topic's record size), the
    /// plugin's own failure or rejection, a trap, init, or the engine's state store.
    pub fn kind(&self) -> &'static str {
        match self {
            SandboxError::Deadline(_) => "deadline",
            SandboxError::Memory(_) => "memory",
            SandboxError::Quota(_)
            | SandboxError::StateFull { .. }
            | SandboxError::OutputRefused(_) => "quota",
            SandboxError::Trap(_) => "trap",
            SandboxError::Failed(_) | SandboxError::Poison { .. } => "failed",
            SandboxError::Init(_) => "init",
            SandboxError::State(_) => "engine",
        }
    }

    /// Whether the instance is unusable after this error (a trap leaves it poisoned).
    pub fn needs_restart(&self) -> bool {
        matches!(
            self,
            SandboxError::Deadline(_)
                | SandboxError::Memory(_)
                | SandboxError::Trap(_)
                | SandboxError::State(_)
                | SandboxError::Init(_)
        )
    }
}

/// The store's limits, which also count the linear memory its instances hold (all memories
/// together): what [`Sandbox::memory_bytes`] reports.
struct Limiter {
    limits: StoreLimits,
    memory_bytes: usize,
}

impl ResourceLimiter for Limiter {
    fn memory_growing(
        &mut self,
        current: usize,
        desired: usize,
        maximum: Option<usize>,
    ) -> wasmtime::Result<bool> {
        let allowed = self.limits.memory_growing(current, desired, maximum)?;
        if allowed {
            self.memory_bytes += desired.saturating_sub(current);
        }
        Ok(allowed)
    }

    fn memory_grow_failed(&mut self, error: wasmtime::Error) -> wasmtime::Result<()> {
        self.limits.memory_grow_failed(error)
    }

    fn table_growing(
        &mut self,
        current: usize,
        desired: usize,
        maximum: Option<usize>,
    ) -> wasmtime::Result<bool> {
        self.limits.table_growing(current, desired, maximum)
    }

    fn table_grow_failed(&mut self, error: wasmtime::Error) -> wasmtime::Result<()> {
        self.limits.table_grow_failed(error)
    }

    fn instances(&self) -> usize {
        self.limits.instances()
    }

    fn tables(&self) -> usize {
        self.limits.tables()
    }

    fn memories(&self) -> usize {
        self.limits.memories()
    }
}

struct Host {
    wasi: WasiCtx,
    table: ResourceTable,
    limits: Limiter,
    state: Arc<dyn StateStore>,
    writes: StateWrites,
    state_error: Option<StateError>,
    emitted: Vec<Emitted>,
    emitted_bytes: usize,
    quota: (usize, usize),
    quota_exceeded: Option<String>,
    group: Arc<str>,
    version: Arc<str>,
    log_sink: Option<Arc<LogBuffer>>,
    /// The panic message the plugin logged during the current call (Rust SDK convention).
    panic_message: Option<String>,
}

/// Whom a sandbox runs for: its log lines carry the group and plugin version, and reach
/// `log_sink` when given.
pub struct SandboxIdentity<'a> {
    pub group: &'a str,
    pub version: &'a str,
    pub log_sink: Option<Arc<LogBuffer>>,
}

impl WasiView for Host {
    fn ctx(&mut self) -> WasiCtxView<'_> {
        WasiCtxView {
            ctx: &mut self.wasi,
            table: &mut self.table,
        }
    }
}

impl types::Host for Host {}

impl Host {
    /// Records a state store failure; the call fails with it once the plugin returns.
    fn state_failed(&mut self, error: StateError) -> wasmtime::Error {
        let message = format!("state store: {error}");
        self.state_error = Some(error);
        wasmtime::Error::msg(message)
    }
}

impl state::Host for Host {
    fn get(&mut self, key: Vec<u8>) -> wasmtime::Result<Option<Vec<u8>>> {
        if let Some(written) = self.writes.get(&key) {
            return Ok(written.clone());
        }
        self.state.get(&key).map_err(|e| self.state_failed(e))
    }

    fn set(&mut self, key: Vec<u8>, value: Vec<u8>) -> wasmtime::Result<()> {
        self.writes.insert(key, Some(value));
        Ok(())
    }

    fn delete(&mut self, key: Vec<u8>) -> wasmtime::Result<()> {
        self.writes.insert(key, None);
        Ok(())
    }

    fn scan(
        &mut self,
        prefix: Vec<u8>,
        start_after: Option<Vec<u8>>,
        limit: u32,
    ) -> wasmtime::Result<Vec<(Vec<u8>, Vec<u8>)>> {
        let limit = limit.min(MAX_SCAN) as usize;
        let state = self.state.clone();
        let scanned = merged_scan(&self.writes, &prefix, start_after.as_deref(), limit, |n| {
            state.scan(&prefix, start_after.as_deref(), n)
        });
        scanned.map_err(|error| self.state_failed(error))
    }

    fn write_many(&mut self, writes: Vec<u8>) -> wasmtime::Result<()> {
        let writes = decode_write_many(Bytes::from(writes))
            .map_err(|e| wasmtime::Error::msg(format!("state.write-many: {e}")))?;
        self.writes.extend(writes);
        Ok(())
    }

    fn generation(&mut self) -> wasmtime::Result<u64> {
        Ok(self.state.generation())
    }
}

impl Host {
    /// Counts records against the quota; false (and the batch fails) past it.
    fn within_quota(&mut self, records: usize, bytes: usize) -> bool {
        let (max_records, max_bytes) = self.quota;
        if self.emitted.len() + records > max_records || self.emitted_bytes + bytes > max_bytes {
            self.quota_exceeded = Some(format!("{max_records} records or {max_bytes} bytes"));
            return false;
        }
        self.emitted_bytes += bytes;
        true
    }

    fn quota_error(&self) -> String {
        format!(
            "output quota exceeded: {} per batch",
            self.quota_exceeded.as_deref().unwrap_or_default()
        )
    }

    /// The topic as an `Arc`, shared by the records emitted to it.
    fn topic(&self, topic: String) -> Arc<str> {
        match self.emitted.last() {
            Some(last) if *last.topic == *topic => last.topic.clone(),
            _ => Arc::from(topic),
        }
    }
}

impl emit::Host for Host {
    fn send(
        &mut self,
        topic: String,
        key: Option<Vec<u8>>,
        value: Vec<u8>,
        headers: Vec<types::Header>,
    ) -> wasmtime::Result<Result<(), String>> {
        let record = Record {
            timestamp: 0,
            key: key.map(Bytes::from),
            value: Some(Bytes::from(value)),
            headers: headers
                .into_iter()
                .map(|h| Header {
                    key: h.key.into(),
                    value: Some(Bytes::from(h.value)),
                })
                .collect(),
        };
        if !self.within_quota(1, topic.len() + record.size_bytes()) {
            return Ok(Err(self.quota_error()));
        }
        let topic = self.topic(topic);
        self.emitted.push(Emitted { topic, record });
        Ok(Ok(()))
    }

    fn send_frame(
        &mut self,
        topic: String,
        count: u32,
        records: Vec<u8>,
    ) -> wasmtime::Result<Result<(), String>> {
        let records = match batch::decode_records_frame(&Bytes::from(records)) {
            Ok(records) if records.len() == count as usize => records,
            Ok(records) => {
                return Ok(Err(format!(
                    "send-frame: the frame holds {} records, not {count}",
                    records.len()
                )));
            }
            Err(error) => return Ok(Err(format!("send-frame: {error}"))),
        };
        let bytes: usize = records.iter().map(|r| topic.len() + r.size_bytes()).sum();
        if !self.within_quota(records.len(), bytes) {
            return Ok(Err(self.quota_error()));
        }
        let topic = self.topic(topic);
        self.emitted
            .extend(records.into_iter().map(|record| Emitted {
                topic: topic.clone(),
                record,
            }));
        Ok(Ok(()))
    }
}

impl log::Host for Host {
    fn write(
        &mut self,
        level: log::Level,
        message: String,
        fields: Vec<(String, String)>,
    ) -> wasmtime::Result<()> {
        let text: Vec<String> = fields.iter().map(|(k, v)| format!("{k}={v}")).collect();
        let text = text.join(" ");
        let (group, version) = (&*self.group, &*self.version);
        let name = match level {
            log::Level::Trace => {
                tracing::trace!(group, version, fields = text, "{message}");
                "trace"
            }
            log::Level::Debug => {
                tracing::debug!(group, version, fields = text, "{message}");
                "debug"
            }
            log::Level::Info => {
                tracing::info!(group, version, fields = text, "{message}");
                "info"
            }
            log::Level::Warn => {
                tracing::warn!(group, version, fields = text, "{message}");
                "warn"
            }
            log::Level::Error => {
                tracing::error!(group, version, fields = text, "{message}");
                "error"
            }
        };
        if matches!(level, log::Level::Error) && message.starts_with("panicked at ") {
            self.panic_message = Some(message.clone());
        }
        if let Some(sink) = &self.log_sink {
            sink.push(LogLine {
                time_ms: crate::log::now_ms(),
                level: name.to_string(),
                source: "plugin".to_string(),
                version: self.version.to_string(),
                message,
                fields,
            });
        }
        Ok(())
    }
}

/// A plugin instance with its limits and state.
pub struct Sandbox {
    store: Store<Host>,
    consumer: Consumer,
    limits: SandboxLimits,
}

impl Sandbox {
    /// Instantiates the plugin and calls its `init` with `config`.
    pub fn start(
        runtime: &Runtime,
        plugin: &Plugin,
        limits: SandboxLimits,
        identity: SandboxIdentity,
        state: Arc<dyn StateStore>,
        config: &[(String, String)],
    ) -> Result<Sandbox, SandboxError> {
        let mut linker: Linker<Host> = Linker::new(runtime.engine());
        wasmtime_wasi::p2::add_to_linker_sync(&mut linker)
            .map_err(|e| SandboxError::Init(format!("{e:#}")))?;
        Consumer::add_to_linker::<Host, HasSelf<Host>>(&mut linker, |host| host)
            .map_err(|e| SandboxError::Init(format!("{e:#}")))?;
        let host = Host {
            wasi: WasiCtxBuilder::new().build(),
            table: ResourceTable::new(),
            limits: Limiter {
                limits: StoreLimitsBuilder::new()
                    .memory_size(limits.memory_bytes)
                    .trap_on_grow_failure(true)
                    // Core instances are cheap; a Python component built by componentize-py
                    // with stubbed WASI has 38 (one per stubbed interface).
                    .instances(64)
                    .tables(16)
                    .memories(4)
                    .build(),
                memory_bytes: 0,
            },
            state,
            writes: StateWrites::new(),
            state_error: None,
            emitted: Vec::new(),
            emitted_bytes: 0,
            quota: (limits.max_emitted_records, limits.max_emitted_bytes),
            quota_exceeded: None,
            group: Arc::from(identity.group),
            version: Arc::from(identity.version),
            log_sink: identity.log_sink,
            panic_message: None,
        };
        let mut store = Store::new(runtime.engine(), host);
        store.limiter(|host| &mut host.limits);
        store.set_epoch_deadline(deadline_ticks(limits.deadline));
        let consumer = Consumer::instantiate(&mut store, &plugin.component, &linker)
            .map_err(|e| classify(e, &limits, SandboxError::Init))?;
        let mut sandbox = Sandbox {
            store,
            consumer,
            limits,
        };
        sandbox
            .store
            .set_epoch_deadline(deadline_ticks(limits.deadline));
        match sandbox.consumer.call_init(&mut sandbox.store, config) {
            Ok(Ok(())) => Ok(sandbox),
            Ok(Err(message)) => Err(SandboxError::Init(message)),
            Err(error) => Err(classify(error, &limits, SandboxError::Init)),
        }
    }

    /// Bytes of linear memory the instance holds (memory only grows: its peak).
    pub fn memory_bytes(&self) -> usize {
        self.store.data().limits.memory_bytes
    }

    /// Runs `process` on a batch; returns the records it emitted and the state it wrote, for
    /// the caller to apply with the offset commit.
    pub fn process(&mut self, batch: &Batch) -> Result<Processed, SandboxError> {
        let host = self.store.data_mut();
        host.emitted.clear();
        host.emitted_bytes = 0;
        host.quota_exceeded = None;
        host.writes.clear();
        host.state_error = None;
        host.panic_message = None;
        self.store
            .set_epoch_deadline(deadline_ticks(self.limits.deadline));
        let result = self.consumer.call_process(&mut self.store, batch);
        let host = self.store.data_mut();
        if let Some(reason) = host.quota_exceeded.take() {
            return Err(SandboxError::Quota(reason));
        }
        if let Some(error) = host.state_error.take() {
            return Err(SandboxError::State(error));
        }
        match result {
            Ok(Ok(())) => Ok(Processed {
                emitted: std::mem::take(&mut host.emitted),
                state_writes: std::mem::take(&mut host.writes),
            }),
            Ok(Err(ProcessError::Failed(message))) => Err(SandboxError::Failed(message)),
            Ok(Err(ProcessError::Poison(p))) => Err(SandboxError::Poison {
                offset: p.offset,
                reason: p.reason,
            }),
            Err(error) => Err(
                match (
                    classify(error, &self.limits, SandboxError::Trap),
                    host.panic_message.take(),
                ) {
                    (SandboxError::Trap(trap), Some(panic)) => {
                        SandboxError::Trap(format!("{panic} ({trap})"))
                    }
                    (other, _) => other,
                },
            ),
        }
    }
}

fn deadline_ticks(deadline: Duration) -> u64 {
    (deadline.as_millis() / EPOCH_TICK.as_millis()).max(1) as u64
}

/// Names the limit behind a trap.
fn classify(
    error: wasmtime::Error,
    limits: &SandboxLimits,
    other: fn(String) -> SandboxError,
) -> SandboxError {
    match error.downcast_ref::<Trap>() {
        Some(Trap::Interrupt) => SandboxError::Deadline(limits.deadline),
        Some(Trap::StackOverflow) => other("call stack exhausted (unbounded recursion?)".into()),
        // Compilers that keep the stack in linear memory (Rust, C) overflow it this way.
        Some(Trap::MemoryOutOfBounds) => {
            other("out of bounds memory access (a stack overflow from deep recursion, or a bug in the plugin)".into())
        }
        // A Rust panic ends in `unreachable`; its message went to the discarded stderr.
        Some(trap) => other(trap.to_string()),
        None => {
            let text = without_backtrace(&error);
            if text.contains("forcing trap when growing memory") {
                SandboxError::Memory(limits.memory_bytes)
            } else {
                other(text)
            }
        }
    }
}

/// The error's causes, joined, without the wasm backtrace wasmtime attaches: frame addresses
/// of the component say nothing in `last_error` or a dead letter's header (the engine's debug
/// log keeps the whole error).
fn without_backtrace(error: &wasmtime::Error) -> String {
    tracing::debug!("plugin call failed: {error:?}");
    let causes: Vec<String> = error
        .chain()
        .map(|cause| cause.to_string())
        .filter(|text| !text.contains("wasm backtrace:"))
        .map(|text| text.lines().next().unwrap_or_default().trim().to_string())
        .filter(|text| !text.is_empty())
        .collect();
    if causes.is_empty() {
        return "the plugin failed without a reason".to_string();
    }
    causes.join(": ")
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// A `write-many` frame as the SDK encodes it: varint key length, key, varint (value length
    /// + 1, 0 for a delete), value.
    fn encode_writes(writes: &[(Vec<u8>, Option<Vec<u8>>)]) -> Vec<u8> {
        let mut out = Vec::new();
        for (key, value) in writes {
            batch::put_varint(&mut out, key.len() as u64);
            out.extend_from_slice(key);
            match value {
                None => batch::put_varint(&mut out, 0),
                Some(value) => {
                    batch::put_varint(&mut out, value.len() as u64 + 1);
                    out.extend_from_slice(value);
                }
            }
        }
        out
    }

    proptest! {
        #[test]
        fn write_many_frames_round_trip(writes in proptest::collection::vec((proptest::collection::vec(any::<u8>(), 0..32), proptest::option::of(proptest::collection::vec(any::<u8>(), 0..64))), 0..20)) {
            let frame = Bytes::from(encode_writes(&writes));
            prop_assert_eq!(decode_write_many(frame).unwrap(), writes);
        }

        /// A plugin's `write-many` frame of any bytes is an error or writes, never a panic,
        /// and no write is longer than the frame.
        #[test]
        fn arbitrary_write_many_frames_never_panic(frame in proptest::collection::vec(any::<u8>(), 0..2048)) {
            let len = frame.len();
            if let Ok(writes) = decode_write_many(Bytes::from(frame)) {
                for (key, value) in writes {
                    prop_assert!(key.len() + value.map_or(0, |v| v.len()) <= len);
                }
            }
        }
    }

    /// What wasmtime reports for a trap deep in a component: the causes and a backtrace.
    #[test]
    fn errors_are_told_without_the_wasm_backtrace() {
        let error = wasmtime::Error::msg("all fuel consumed by WebAssembly")
            .context(
                "error while executing at wasm backtrace:\n    0: 0x1d2f - plugin.wasm!process\n    1: 0x2a00 - plugin.wasm!export",
            )
            .context("calling `process`");
        let text = without_backtrace(&error);
        assert_eq!(text, "calling `process`: all fuel consumed by WebAssembly");
        let limits = SandboxLimits::default();
        match classify(error, &limits, SandboxError::Trap) {
            SandboxError::Trap(message) => assert!(!message.contains("0x1d2f"), "{message}"),
            other => panic!("{other:?}"),
        }
    }
}
