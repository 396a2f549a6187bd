//! One plugin instance in its own store: memory cap, CPU deadline per call, output quota, no
//! files or network, and its own state.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use wasmtime::component::{HasSelf, Linker, ResourceTable};
use wasmtime::{Store, StoreLimits, StoreLimitsBuilder, Trap};
use wasmtime_wasi::{WasiCtx, WasiCtxBuilder, WasiCtxView, WasiView};

use super::bindings::Consumer;
use super::bindings::sluice::plugin::{emit, log, state, types};
use super::{Batch, EPOCH_TICK, Plugin, ProcessError, Runtime};

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

/// A record a plugin emitted.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Emitted {
    pub topic: String,
    pub key: Option<Vec<u8>>,
    pub value: Vec<u8>,
    pub headers: Vec<(String, Vec<u8>)>,
}

/// Why a call into a plugin did not succeed. After `Failed`, `Poison` and `Quota` the instance
/// takes further calls; after the others (traps) make a new sandbox.
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
}

struct Host {
    wasi: WasiCtx,
    table: ResourceTable,
    limits: StoreLimits,
    state: BTreeMap<Vec<u8>, Vec<u8>>,
    emitted: Vec<Emitted>,
    emitted_bytes: usize,
    quota: (usize, usize),
    quota_exceeded: Option<String>,
    group: Arc<str>,
    version: Arc<str>,
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

impl state::Host for Host {
    fn get(&mut self, key: Vec<u8>) -> wasmtime::Result<Option<Vec<u8>>> {
        Ok(self.state.get(&key).cloned())
    }

    fn set(&mut self, key: Vec<u8>, value: Vec<u8>) -> wasmtime::Result<()> {
        self.state.insert(key, value);
        Ok(())
    }

    fn delete(&mut self, key: Vec<u8>) -> wasmtime::Result<()> {
        self.state.remove(&key);
        Ok(())
    }

    fn scan(
        &mut self,
        prefix: Vec<u8>,
        start_after: Option<Vec<u8>>,
        limit: u32,
    ) -> wasmtime::Result<Vec<(Vec<u8>, Vec<u8>)>> {
        use std::ops::Bound;
        let start = match &start_after {
            Some(after) if after.as_slice() >= prefix.as_slice() => Bound::Excluded(after.clone()),
            _ => Bound::Included(prefix.clone()),
        };
        Ok(self
            .state
            .range((start, Bound::Unbounded))
            .take_while(|(k, _)| k.starts_with(&prefix))
            .take(limit.min(MAX_SCAN) as usize)
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect())
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
        let size = topic.len()
            + key.as_ref().map_or(0, Vec::len)
            + value.len()
            + headers
                .iter()
                .map(|h| h.key.len() + h.value.len())
                .sum::<usize>();
        let (max_records, max_bytes) = self.quota;
        if self.emitted.len() >= max_records || self.emitted_bytes + size > max_bytes {
            let reason = format!("{max_records} records or {max_bytes} bytes");
            self.quota_exceeded = Some(reason.clone());
            return Ok(Err(format!("output quota exceeded: {reason} per batch")));
        }
        self.emitted_bytes += size;
        self.emitted.push(Emitted {
            topic,
            key,
            value,
            headers: headers.into_iter().map(|h| (h.key, h.value)).collect(),
        });
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
        let fields: Vec<String> = fields.iter().map(|(k, v)| format!("{k}={v}")).collect();
        let fields = fields.join(" ");
        let (group, version) = (&*self.group, &*self.version);
        match level {
            log::Level::Trace => tracing::trace!(group, version, fields, "{message}"),
            log::Level::Debug => tracing::debug!(group, version, fields, "{message}"),
            log::Level::Info => tracing::info!(group, version, fields, "{message}"),
            log::Level::Warn => tracing::warn!(group, version, fields, "{message}"),
            log::Level::Error => tracing::error!(group, version, fields, "{message}"),
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
        group: &str,
        version: &str,
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
            limits: StoreLimitsBuilder::new()
                .memory_size(limits.memory_bytes)
                .trap_on_grow_failure(true)
                .instances(16)
                .tables(16)
                .memories(4)
                .build(),
            state: BTreeMap::new(),
            emitted: Vec::new(),
            emitted_bytes: 0,
            quota: (limits.max_emitted_records, limits.max_emitted_bytes),
            quota_exceeded: None,
            group: Arc::from(group),
            version: Arc::from(version),
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

    /// Runs `process` on a batch; returns the records it emitted.
    pub fn process(&mut self, batch: &Batch) -> Result<Vec<Emitted>, SandboxError> {
        let host = self.store.data_mut();
        host.emitted.clear();
        host.emitted_bytes = 0;
        host.quota_exceeded = None;
        self.store
            .set_epoch_deadline(deadline_ticks(self.limits.deadline));
        let result = self.consumer.call_process(&mut self.store, batch);
        let host = self.store.data_mut();
        if let Some(reason) = host.quota_exceeded.take() {
            return Err(SandboxError::Quota(reason));
        }
        match result {
            Ok(Ok(())) => Ok(std::mem::take(&mut host.emitted)),
            Ok(Err(ProcessError::Failed(message))) => Err(SandboxError::Failed(message)),
            Ok(Err(ProcessError::Poison(p))) => Err(SandboxError::Poison {
                offset: p.offset,
                reason: p.reason,
            }),
            Err(error) => Err(classify(error, &self.limits, SandboxError::Trap)),
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
            let text = format!("{error:#}");
            if text.contains("forcing trap when growing memory") {
                SandboxError::Memory(limits.memory_bytes)
            } else {
                other(text)
            }
        }
    }
}
