//! A plugin that tries to read a file: its component imports `wasi:filesystem`, which the
//! engine must refuse at load time.

use sluice_sdk::{Batch, Consumer, ProcessError};

struct UsesFiles;

impl Consumer for UsesFiles {
    fn process(_batch: &Batch) -> Result<(), ProcessError> {
        let secret =
            std::fs::read("/etc/passwd").map_err(|e| ProcessError::Failed(e.to_string()))?;
        std::hint::black_box(secret);
        Ok(())
    }
}

sluice_sdk::export_consumer!(UsesFiles);
