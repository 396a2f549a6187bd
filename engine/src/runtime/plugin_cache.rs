//! Compiled plugins by digest, shared by the plugin host and the workers.

use parking_lot::Mutex;
use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::Arc;

use super::{Plugin, Runtime, RuntimeError};

/// Why a stored version of a plugin cannot be loaded.
#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    #[error("{}: {source}", path.display())]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error(transparent)]
    Compile(#[from] RuntimeError),
}

/// Compiled plugins by digest, shared with the workers: a version is compiled once per engine
/// run (and loaded from the compiled-code cache after a restart).
pub(super) struct PluginCache {
    dir: PathBuf,
    runtime: Arc<Runtime>,
    compiled: Mutex<HashMap<String, Plugin>>,
}

impl PluginCache {
    pub(super) fn new(dir: PathBuf, runtime: Arc<Runtime>) -> PluginCache {
        PluginCache {
            dir,
            runtime,
            compiled: Mutex::new(HashMap::new()),
        }
    }

    pub(super) fn insert(&self, plugin: &Plugin) {
        self.compiled
            .lock()
            .insert(plugin.digest.to_string(), plugin.clone());
    }

    /// The compiled plugin of one of `group`'s versions.
    pub(super) fn get(&self, group: &str, digest: &str) -> Result<Plugin, LoadError> {
        if let Some(plugin) = self.compiled.lock().get(digest) {
            return Ok(plugin.clone());
        }
        let path = self.dir.join(group).join(format!("{digest}.wasm"));
        let wasm = match std::fs::read(&path) {
            Ok(wasm) => wasm,
            Err(source) => return Err(LoadError::Read { path, source }),
        };
        let plugin = self.runtime.compile(&wasm)?;
        self.insert(&plugin);
        Ok(plugin)
    }
}
