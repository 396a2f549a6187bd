//! Reads every record and does nothing with it: what remains is the cost of the engine, the
//! canonical ABI and decoding.

use sluice_sdk::{Batch, Consumer, ProcessError};

struct Identity;

impl Consumer for Identity {
    fn process(batch: &Batch) -> Result<(), ProcessError> {
        let mut bytes = 0usize;
        for record in batch.records() {
            bytes += record?.value.len();
        }
        std::hint::black_box(bytes);
        Ok(())
    }
}

sluice_sdk::export_consumer!(Identity);
