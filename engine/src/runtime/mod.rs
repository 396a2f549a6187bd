//! The WebAssembly plugin host: compiles and validates consumer components (caching the
//! compiled code on disk, keyed by content and engine configuration) and runs each in a
//! [`Sandbox`] of its own with a memory cap, a per-call CPU deadline and an output quota.
//!
//! The contract is `wit/plugin.wit`; the host side is typed from it with `bindgen!`.

pub(crate) mod deployment;
mod host;
pub(crate) mod isolation;
mod logs;
mod plugin_cache;
mod sandbox;
pub(crate) mod worker;

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use wasmtime::component::Component;
use wasmtime::{Config, Engine};

pub use deployment::{
    Delivery, DeployError, DeploySpec, Deployment, LimitOverrides, PartitionProgress,
    PluginDescription, PluginLimits, StartFrom, VersionInfo, WorkerProgress, dlq_topic,
};
pub use host::PluginHost;
pub use logs::{LogBuffer, LogLine};
pub use sandbox::{
    ERROR_KINDS, Emitted, Processed, Sandbox, SandboxError, SandboxIdentity, SandboxLimits,
};
pub use worker::EngineError;

pub(crate) mod bindings {
    wasmtime::component::bindgen!({
        world: "consumer",
        path: "../wit",
        imports: { default: trappable },
    });
}

pub use bindings::sluice::plugin::types::{Batch, ProcessError};

/// How often the CPU deadline clock ticks; deadlines are whole ticks.
const EPOCH_TICK: Duration = Duration::from_millis(5);

/// The WIT package and major.minor version this engine implements.
const WORLD_PACKAGE: &str = "sluice:plugin";
const WORLD_VERSION: &str = "0.1";
/// The interfaces of the world (wit/plugin.wit) a plugin may import: the host links these
/// and no others.
const WORLD_INTERFACES: [&str; 4] = ["types", "state", "emit", "log"];

/// WASI interfaces a plugin may import: what language runtimes need to start (environment,
/// exit, stdio, streams, clocks, random). The host gives them nothing: no variables, no
/// arguments, stdin closed, stdout and stderr discarded. Files, sockets and HTTP are refused.
const ALLOWED_WASI: [&str; 15] = [
    "wasi:cli/environment",
    "wasi:cli/exit",
    "wasi:cli/stdin",
    "wasi:cli/stdout",
    "wasi:cli/stderr",
    "wasi:cli/terminal-input",
    "wasi:cli/terminal-output",
    "wasi:cli/terminal-stdin",
    "wasi:cli/terminal-stdout",
    "wasi:cli/terminal-stderr",
    "wasi:io/error",
    "wasi:io/poll",
    "wasi:io/streams",
    "wasi:clocks/monotonic-clock",
    "wasi:clocks/wall-clock",
];
const ALLOWED_RANDOM: [&str; 3] = [
    "wasi:random/random",
    "wasi:random/insecure",
    "wasi:random/insecure-seed",
];

#[derive(Debug, thiserror::Error)]
pub enum RuntimeError {
    #[error(
        "the upload is not WebAssembly (it does not start with the `\\0asm` magic); build the plugin for wasm32-wasip2"
    )]
    NotWasm,
    #[error(
        "the upload is a core WebAssembly module, not a component; build for wasm32-wasip2 or run `wasm-tools component new` on it"
    )]
    NotComponent,
    #[error("the component does not compile: {0}")]
    Compile(String),
    #[error(
        "the component imports `{0}`, which plugins may not use (no files, sockets or other \
         hosts); remove the dependency that needs it"
    )]
    ForbiddenImport(String),
    #[error(
        "the component targets `{found}`, but this engine implements {WORLD_PACKAGE}@{WORLD_VERSION}.x; \
         rebuild it against the engine's wit/ files"
    )]
    IncompatibleWorld { found: String },
    #[error(
        "the component imports `{found}`, which the engine's {WORLD_PACKAGE}@{WORLD_VERSION} world \
         does not have (it has {}); rebuild it against the engine's wit/ files",
        WORLD_INTERFACES.join(", ")
    )]
    UnknownInterface { found: String },
    #[error("the component does not implement the `consumer` world: {0}")]
    WrongWorld(String),
    #[error("cannot set up the WebAssembly engine: {0}")]
    Engine(#[source] Box<dyn std::error::Error + Send + Sync>),
    #[error("cannot create the compiled-code cache {}: {source}", dir.display())]
    CacheDir {
        dir: PathBuf,
        source: std::io::Error,
    },
}

/// The WebAssembly engine shared by every sandbox, with its compile cache.
pub struct Runtime {
    engine: Engine,
    cache_dir: Option<PathBuf>,
}

/// A validated, compiled consumer component.
#[derive(Clone)]
pub struct Plugin {
    pub(crate) component: Component,
    /// SHA-256 of the component's bytes, hex.
    pub digest: Arc<str>,
}

impl Runtime {
    /// Starts the engine and its deadline clock. Compiled components are cached in
    /// `cache_dir` when given.
    pub fn new(cache_dir: Option<&Path>) -> Result<Runtime, RuntimeError> {
        let mut config = Config::new();
        config.epoch_interruption(true);
        // For profiling plugins with `perf`: JIT code symbols go to /tmp/perf-<pid>.map.
        if std::env::var_os("SLUICE_WASM_PERFMAP").is_some() {
            config.profiler(wasmtime::ProfilingStrategy::PerfMap);
        }
        let engine = Engine::new(&config).map_err(|e| RuntimeError::Engine(e.into()))?;
        let clock = engine.weak();
        std::thread::Builder::new()
            .name("sluice-wasm-clock".into())
            .spawn(move || {
                loop {
                    std::thread::sleep(EPOCH_TICK);
                    match clock.upgrade() {
                        Some(engine) => engine.increment_epoch(),
                        None => return,
                    }
                }
            })
            .map_err(|e| RuntimeError::Engine(e.into()))?;
        if let Some(dir) = cache_dir {
            std::fs::create_dir_all(dir).map_err(|source| RuntimeError::CacheDir {
                dir: dir.to_path_buf(),
                source,
            })?;
        }
        Ok(Runtime {
            engine,
            cache_dir: cache_dir.map(Path::to_path_buf),
        })
    }

    pub(crate) fn engine(&self) -> &Engine {
        &self.engine
    }

    /// Validates and compiles a component, or loads its compiled code from the cache.
    pub fn compile(&self, wasm: &[u8]) -> Result<Plugin, RuntimeError> {
        if !wasm.starts_with(b"\0asm") {
            return Err(RuntimeError::NotWasm);
        }
        if wasm.get(4..8) == Some(&[1, 0, 0, 0]) {
            return Err(RuntimeError::NotComponent);
        }
        let digest = hex(&sha2_256(wasm));
        let component = match self.cache_path(&digest) {
            Some(path) => self.load_or_compile(wasm, &path)?,
            None => Component::new(&self.engine, wasm)
                .map_err(|e| RuntimeError::Compile(format!("{e:#}")))?,
        };
        self.validate(&component)?;
        Ok(Plugin {
            component,
            digest: Arc::from(digest),
        })
    }

    fn cache_path(&self, digest: &str) -> Option<PathBuf> {
        use std::hash::{Hash, Hasher};
        let mut hasher = std::collections::hash_map::DefaultHasher::new();
        self.engine
            .precompile_compatibility_hash()
            .hash(&mut hasher);
        let engine_key = hasher.finish();
        self.cache_dir
            .as_ref()
            .map(|dir| dir.join(format!("{digest}-{engine_key:016x}.cwasm")))
    }

    fn load_or_compile(&self, wasm: &[u8], path: &Path) -> Result<Component, RuntimeError> {
        if path.exists() {
            // SAFETY: the file was written by `precompile_component` of an engine with the same
            // compatibility hash (it is in the name) and is only ever replaced by rename.
            match unsafe { Component::deserialize_file(&self.engine, path) } {
                Ok(component) => return Ok(component),
                Err(error) => {
                    tracing::warn!(file = %path.display(), %error, "ignoring unusable compiled-code cache entry")
                }
            }
        }
        let compiled = self
            .engine
            .precompile_component(wasm)
            .map_err(|e| RuntimeError::Compile(format!("{e:#}")))?;
        let tmp = path.with_extension("tmp");
        if let Err(error) =
            std::fs::write(&tmp, &compiled).and_then(|()| std::fs::rename(&tmp, path))
        {
            tracing::warn!(file = %path.display(), %error, "cannot cache compiled code");
        }
        // SAFETY: these bytes were just produced by this engine's `precompile_component`.
        unsafe { Component::deserialize(&self.engine, &compiled) }
            .map_err(|e| RuntimeError::Compile(format!("{e:#}")))
    }

    /// Refuses imports outside the world and the allowed WASI interfaces, and a world of an
    /// incompatible version.
    fn validate(&self, component: &Component) -> Result<(), RuntimeError> {
        let ty = component.component_type();
        for (name, _) in ty.imports(&self.engine) {
            let (interface, version) = name.split_once('@').unwrap_or((name, ""));
            if let Some(rest) = interface.strip_prefix(WORLD_PACKAGE) {
                let Some(member) = rest.strip_prefix('/') else {
                    return Err(RuntimeError::ForbiddenImport(name.to_string()));
                };
                if !(version == WORLD_VERSION || version.starts_with(&format!("{WORLD_VERSION}.")))
                {
                    return Err(RuntimeError::IncompatibleWorld {
                        found: name.to_string(),
                    });
                }
                if !WORLD_INTERFACES.contains(&member) {
                    return Err(RuntimeError::UnknownInterface {
                        found: name.to_string(),
                    });
                }
                continue;
            }
            if !ALLOWED_WASI.contains(&interface) && !ALLOWED_RANDOM.contains(&interface) {
                return Err(RuntimeError::ForbiddenImport(name.to_string()));
            }
        }
        let exports: Vec<String> = ty
            .exports(&self.engine)
            .map(|(name, _)| name.to_string())
            .collect();
        for wanted in ["init", "process"] {
            if !exports.iter().any(|e| e == wanted) {
                return Err(RuntimeError::WrongWorld(format!(
                    "it exports {exports:?} but not `{wanted}`; implement {WORLD_PACKAGE}/consumer"
                )));
            }
        }
        Ok(())
    }
}

fn sha2_256(bytes: &[u8]) -> [u8; 32] {
    use sha2::Digest;
    sha2::Sha256::digest(bytes).into()
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

#[cfg(test)]
mod tests;
