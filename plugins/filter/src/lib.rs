//! Forwards the records whose JSON value satisfies a predicate on one field.
//!
//! Settings: `output` (topic), `field` (a JSON pointer such as `/order/status`, or a top-level
//! name), `op` (`eq`, `ne`, `gt`, `ge`, `lt`, `le`, `exists`; default `eq`) and `value` (compared
//! as a number when both sides are numbers, else as text). Records that are not JSON objects do
//! not match. The predicate lives in the `json-predicate` crate so that it also runs natively,
//! which the benchmark (`sluice-bench`) uses as the baseline.

use json_predicate::Predicate;
use sluice_sdk::{Batch, Config, Consumer, ProcessError, Settings, emit};

struct Options {
    output: String,
    predicate: Predicate,
}

static SETTINGS: Settings<Options> = Settings::new();

struct Filter;

impl Consumer for Filter {
    fn init(config: Config) -> Result<(), String> {
        let predicate = Predicate::new(
            config.require("field")?,
            config.get("op").unwrap_or("eq"),
            config.get("value").unwrap_or("null"),
        )?;
        let settings = Options {
            output: config.require("output")?.to_string(),
            predicate,
        };
        SETTINGS.set(settings)
    }

    fn process(batch: &Batch) -> Result<(), ProcessError> {
        let settings = SETTINGS.get()?;
        for record in batch.records() {
            let record = record?;
            if settings.predicate.matches(record.value) {
                let headers: Vec<(&str, &[u8])> = record.headers().collect();
                emit::send(&settings.output, record.key, record.value, &headers)
                    .map_err(ProcessError::Failed)?;
            }
        }
        Ok(())
    }
}

sluice_sdk::export_consumer!(Filter);
