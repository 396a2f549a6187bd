//! {{name}}: counts records per key. The count lives in the group's state (key = the record's
//! key, value = the count as decimal text) and each record emits its key's new count to the
//! `output` topic. A record without a key is rejected as poison: it goes to the dead-letter
//! topic and processing continues.

use sluice_sdk::{Batch, Config, Consumer, ProcessError, Settings, emit, log, poison, state};

static OUTPUT: Settings<String> = Settings::new();

struct Counter;

impl Consumer for Counter {
    fn init(config: Config) -> Result<(), String> {
        let output = config.get("output").unwrap_or("counts").to_string();
        log::write(log::Level::Info, "{{name}} ready", &[("output", &output)]);
        OUTPUT.set(output)
    }

    fn process(batch: &Batch) -> Result<(), ProcessError> {
        let output = OUTPUT.get()?;
        for record in batch.records() {
            let record = record?;
            let key = record
                .key
                .ok_or_else(|| poison(record.offset, "record has no key"))?;
            let count = state::read(key, |stored| {
                stored
                    .and_then(|s| std::str::from_utf8(s).ok()?.parse::<u64>().ok())
                    .unwrap_or(0)
            }) + 1;
            let count = count.to_string();
            state::set(key, count.as_bytes());
            emit::send(output, Some(key), count.as_bytes(), &[]).map_err(ProcessError::Failed)?;
        }
        Ok(())
    }
}

sluice_sdk::export_consumer!(Counter);
