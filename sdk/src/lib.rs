//! Write [Sluice](https://github.com/) consumer plugins in Rust.
//!
//! A plugin is a type implementing [`Consumer`], exported with [`export_consumer!`], built for
//! `wasm32-wasip2`:
//!
//! ```no_run
//! use sluice_sdk::{Batch, Config, Consumer, ProcessError, emit};
//!
//! struct Shout;
//!
//! impl Consumer for Shout {
//!     fn init(_config: Config) -> Result<(), String> {
//!         Ok(())
//!     }
//!
//!     fn process(batch: &Batch) -> Result<(), ProcessError> {
//!         for record in batch.records() {
//!             let record = record?;
//!             let loud = record.value.to_ascii_uppercase();
//!             emit::send("shouted", record.key, &loud, &[]).map_err(ProcessError::Failed)?;
//!         }
//!         Ok(())
//!     }
//! }
//!
//! sluice_sdk::export_consumer!(Shout);
//! ```
//!
//! `batch.records()` decodes the batch's packed buffer lazily: keys, values and headers are
//! slices of it, so reading a record allocates nothing.

#[doc(hidden)]
pub mod bindings {
    wit_bindgen::generate!({
        world: "consumer",
        path: "../wit",
        pub_export_macro: true,
        export_macro_name: "export_bindings",
        default_bindings_module: "sluice_sdk::bindings",
    });
}

pub mod frame;

pub use bindings::sluice::plugin::types::ProcessError;
pub use frame::{FrameError, Record, Records};

/// The settings given at deploy (`--config key=value`).
pub struct Config(Vec<(String, String)>);

impl Config {
    /// The value of a setting, if given.
    pub fn get(&self, key: &str) -> Option<&str> {
        self.0
            .iter()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.as_str())
    }

    /// The value of a setting, or an error naming it.
    pub fn require(&self, key: &str) -> Result<&str, String> {
        self.get(key)
            .ok_or_else(|| format!("missing setting `{key}`: deploy with --config {key}=..."))
    }

    pub fn iter(&self) -> impl Iterator<Item = (&str, &str)> {
        self.0.iter().map(|(k, v)| (k.as_str(), v.as_str()))
    }
}

/// What a plugin reads from its settings in `init` and uses in every `process`:
///
/// ```no_run
/// use sluice_sdk::{Config, ProcessError, Settings};
///
/// static OUTPUT: Settings<String> = Settings::new();
///
/// fn init(config: Config) -> Result<(), String> {
///     OUTPUT.set(config.require("output")?.to_string())
/// }
///
/// fn process() -> Result<(), ProcessError> {
///     let output: &String = OUTPUT.get()?;
///     # let _ = output;
///     Ok(())
/// }
/// ```
pub struct Settings<T>(std::sync::OnceLock<T>);

impl<T> Settings<T> {
    pub const fn new() -> Self {
        Settings(std::sync::OnceLock::new())
    }

    pub fn set(&self, value: T) -> Result<(), String> {
        self.0
            .set(value)
            .map_err(|_| "init was called twice".to_string())
    }

    pub fn get(&self) -> Result<&T, ProcessError> {
        self.0
            .get()
            .ok_or_else(|| ProcessError::Failed("process was called before init".into()))
    }
}

impl<T> Default for Settings<T> {
    fn default() -> Self {
        Settings::new()
    }
}

/// Consecutive records of one partition.
pub struct Batch {
    inner: bindings::sluice::plugin::types::Batch,
}

impl Batch {
    pub fn topic(&self) -> &str {
        &self.inner.topic
    }

    pub fn partition(&self) -> u32 {
        self.inner.partition
    }

    pub fn base_offset(&self) -> u64 {
        self.inner.base_offset
    }

    pub fn len(&self) -> usize {
        self.inner.count as usize
    }

    pub fn is_empty(&self) -> bool {
        self.inner.count == 0
    }

    /// The records, decoded as you go.
    pub fn records(&self) -> Records<'_> {
        Records::new(
            &self.inner.records,
            self.inner.base_offset,
            self.inner.count,
        )
    }
}

/// A consumer plugin.
pub trait Consumer {
    /// Called once when the sandbox starts, with the deploy settings.
    fn init(config: Config) -> Result<(), String> {
        let _ = config;
        Ok(())
    }

    /// Called with each batch. Return [`ProcessError::Poison`] to reject one record, or
    /// [`ProcessError::Failed`] to have the whole batch retried.
    fn process(batch: &Batch) -> Result<(), ProcessError>;
}

impl From<FrameError> for ProcessError {
    fn from(error: FrameError) -> Self {
        ProcessError::Failed(error.to_string())
    }
}

/// Poison a record: it goes to the dead-letter topic with `reason`.
pub fn poison(offset: u64, reason: impl Into<String>) -> ProcessError {
    ProcessError::Poison(bindings::sluice::plugin::types::Poison {
        offset,
        reason: reason.into(),
    })
}

/// The group's keyed state.
///
/// Values read and written are kept in the plugin between batches, and writes are handed to
/// the engine in one call when `process` returns: a key read and written for every record
/// costs no call into the engine once it is known. The engine says (`state.generation`) when
/// the kept values are stale, for instance after it dropped uncommitted writes to retry from
/// its last commit; a failed batch drops them too.
pub mod state {
    use std::cell::RefCell;

    use rustc_hash::FxHashMap as HashMap;

    use crate::bindings::sluice::plugin::state as raw;

    /// Entries kept between batches, at most; past it they are dropped at the next batch.
    const MAX_KEPT: usize = 65_536;

    struct Kept {
        value: Option<Vec<u8>>,
        written: bool,
    }

    #[derive(Default)]
    struct Cache {
        /// The engine's generation the entries belong to.
        generation: Option<u64>,
        entries: HashMap<Vec<u8>, Kept>,
    }

    thread_local! {
        static CACHE: RefCell<Cache> = RefCell::new(Cache::default());
    }

    pub fn get(key: &[u8]) -> Option<Vec<u8>> {
        read(key, |value| value.map(<[u8]>::to_vec))
    }

    /// Reads a value without copying it out: `f` sees it in place.
    pub fn read<T>(key: &[u8], f: impl FnOnce(Option<&[u8]>) -> T) -> T {
        CACHE.with_borrow_mut(|c| {
            if let Some(kept) = c.entries.get(key) {
                return f(kept.value.as_deref());
            }
            let value = raw::get(key);
            let result = f(value.as_deref());
            let kept = Kept {
                value,
                written: false,
            };
            c.entries.insert(key.to_vec(), kept);
            result
        })
    }

    pub fn set(key: &[u8], value: &[u8]) {
        // Reuses the buffer of the value kept: a key written per record allocates once.
        write(key, |kept| {
            let buffer = kept.get_or_insert_with(Vec::new);
            buffer.clear();
            buffer.extend_from_slice(value);
        })
    }

    pub fn delete(key: &[u8]) {
        write(key, |kept| *kept = None)
    }

    fn write(key: &[u8], update: impl FnOnce(&mut Option<Vec<u8>>)) {
        CACHE.with_borrow_mut(|c| {
            if let Some(kept) = c.entries.get_mut(key) {
                update(&mut kept.value);
                kept.written = true;
                return;
            }
            let mut value = None;
            update(&mut value);
            let kept = Kept {
                value,
                written: true,
            };
            c.entries.insert(key.to_vec(), kept);
        })
    }

    /// Entries whose key starts with `prefix`, after `start_after`, at most `limit`.
    pub fn scan(prefix: &[u8], start_after: Option<&[u8]>, limit: u32) -> Vec<(Vec<u8>, Vec<u8>)> {
        // The engine merges its committed state with the writes it has been handed.
        flush();
        raw::scan(prefix, start_after, limit)
    }

    /// Drops the kept values if the engine's state changed under them (or there are too many).
    pub(crate) fn begin() {
        let generation = raw::generation();
        CACHE.with_borrow_mut(|c| {
            if c.generation != Some(generation) || c.entries.len() > MAX_KEPT {
                c.entries.clear();
                c.generation = Some(generation);
            }
        })
    }

    /// Hands the buffered writes to the engine, packed as `state.write-many` wants them.
    pub(crate) fn flush() {
        let mut frame = Vec::new();
        CACHE.with_borrow_mut(|c| {
            for (key, kept) in c.entries.iter_mut().filter(|(_, k)| k.written) {
                crate::frame::encode_write(&mut frame, key, kept.value.as_deref());
                kept.written = false;
            }
        });
        if !frame.is_empty() {
            raw::write_many(&frame);
        }
    }

    /// Forgets every kept value: the batch failed, so the engine dropped its writes.
    pub(crate) fn forget() {
        CACHE.with_borrow_mut(|c| {
            c.entries.clear();
            c.generation = None;
        });
    }
}

/// Records sent to output topics.
pub mod emit {
    use std::cell::RefCell;

    /// Bytes buffered for one topic before they are handed to the engine.
    const FLUSH_BYTES: usize = 256 * 1024;

    struct Pending {
        topic: String,
        count: u32,
        frame: Vec<u8>,
    }

    thread_local! {
        static PENDING: RefCell<Vec<Pending>> = const { RefCell::new(Vec::new()) };
    }

    /// Sends a record to `topic`. Records are buffered and handed to the engine in one call
    /// per topic when `process` returns (or every 256 KiB), so emitting costs no call into the
    /// engine per record. An error (the group's output quota is exceeded) can therefore come
    /// from a later `send`, or fail the batch after `process` returned; either way the batch
    /// fails with a quota error and none of its records are kept.
    pub fn send(
        topic: &str,
        key: Option<&[u8]>,
        value: &[u8],
        headers: &[(&str, &[u8])],
    ) -> Result<(), String> {
        let full = PENDING.with_borrow_mut(|pending| {
            let index = match pending.iter().position(|p| p.topic == topic) {
                Some(index) => index,
                None => {
                    pending.push(Pending {
                        topic: topic.to_string(),
                        count: 0,
                        frame: Vec::new(),
                    });
                    pending.len() - 1
                }
            };
            let buffer = &mut pending[index];
            crate::frame::encode(&mut buffer.frame, key, value, headers);
            buffer.count += 1;
            buffer.frame.len() >= FLUSH_BYTES
        });
        if full { flush() } else { Ok(()) }
    }

    /// Hands every buffered record to the engine.
    pub(crate) fn flush() -> Result<(), String> {
        let pending = PENDING.with_borrow_mut(std::mem::take);
        let mut result = Ok(());
        for buffer in pending {
            if result.is_ok() {
                result = crate::bindings::sluice::plugin::emit::send_frame(
                    &buffer.topic,
                    buffer.count,
                    &buffer.frame,
                );
            }
        }
        result
    }

    /// Drops buffered records (the batch failed).
    pub(crate) fn discard() {
        PENDING.with_borrow_mut(Vec::clear);
    }
}

/// Log lines that reach the engine's log.
pub mod log {
    pub use crate::bindings::sluice::plugin::log::Level;

    pub fn write(level: Level, message: &str, fields: &[(&str, &str)]) {
        let fields: Vec<(String, String)> = fields
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        crate::bindings::sluice::plugin::log::write(level, message, &fields)
    }

    pub fn info(message: &str) {
        write(Level::Info, message, &[])
    }

    pub fn warn(message: &str) {
        write(Level::Warn, message, &[])
    }
}

/// Message prefix of the log line a panic writes; the engine puts it in the trap's error.
const PANIC_PREFIX: &str = "panicked at ";

#[doc(hidden)]
pub fn __init<C: Consumer>(config: Vec<(String, String)>) -> Result<(), String> {
    // A panic ends in a trap whose message says only `unreachable`; stderr goes nowhere.
    // Logging it first lets the engine name the cause in the error and the dead letter.
    std::panic::set_hook(Box::new(|info| {
        let location = info
            .location()
            .map_or(String::new(), |l| format!("{}:{}", l.file(), l.line()));
        let payload = info
            .payload()
            .downcast_ref::<&str>()
            .map(|s| s.to_string())
            .or_else(|| info.payload().downcast_ref::<String>().cloned())
            .unwrap_or_default();
        log::write(
            log::Level::Error,
            &format!("{PANIC_PREFIX}{location}: {payload}"),
            &[],
        );
    }));
    state::begin();
    let result = C::init(Config(config));
    // Writes in `init` are not kept by the engine: only a batch's writes commit.
    state::forget();
    result
}

#[doc(hidden)]
pub fn __process<C: Consumer>(
    batch: bindings::sluice::plugin::types::Batch,
) -> Result<(), ProcessError> {
    emit::discard();
    state::begin();
    let result = C::process(&Batch { inner: batch }).and_then(|()| {
        state::flush();
        emit::flush().map_err(ProcessError::Failed)
    });
    if result.is_err() {
        emit::discard();
        state::forget();
    }
    result
}

/// Exports a [`Consumer`] as the component's `consumer` world.
#[macro_export]
macro_rules! export_consumer {
    ($consumer:ty) => {
        struct __SluiceExport;

        impl $crate::bindings::Guest for __SluiceExport {
            fn init(config: ::std::vec::Vec<(::std::string::String, ::std::string::String)>) -> ::std::result::Result<(), ::std::string::String> {
                $crate::__init::<$consumer>(config)
            }

            fn process(batch: $crate::bindings::sluice::plugin::types::Batch) -> ::std::result::Result<(), $crate::ProcessError> {
                $crate::__process::<$consumer>(batch)
            }
        }

        $crate::bindings::export_bindings!(__SluiceExport with_types_in $crate::bindings);
    };
}
