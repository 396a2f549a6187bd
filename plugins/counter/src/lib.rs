//! Keeps a running count per key in the group's state and emits the new count for each
//! record: a stateful plugin.
//!
//! Settings: `output` (topic) and, optionally, `field`: count by this JSON field of the value
//! (a top-level name or a JSON pointer) instead of by the record key. A record with neither
//! is poison. Each output record has the counted key as key and `{"key": K, "count": N}` as
//! value. State: `count/<key>` holds each count, `total` the number of records counted, both
//! as decimal text.

use json_predicate::Field;
use sluice_sdk::{Batch, Config, Consumer, ProcessError, Settings, emit, poison, state};

struct Options {
    output: String,
    field: Option<Field>,
}

static SETTINGS: Settings<Options> = Settings::new();

/// State key of a key's count.
pub fn count_key(key: &str) -> Vec<u8> {
    format!("count/{key}").into_bytes()
}

pub const TOTAL: &[u8] = b"total";

/// A count as stored (decimal text); an absent or unreadable entry counts as 0.
pub fn parse_count(stored: Option<Vec<u8>>) -> u64 {
    stored
        .and_then(|bytes| String::from_utf8(bytes).ok())
        .and_then(|text| text.parse().ok())
        .unwrap_or(0)
}

/// The output value for a key's new count.
pub fn output_value(key: &str, count: u64) -> Vec<u8> {
    serde_json::json!({"key": key, "count": count})
        .to_string()
        .into_bytes()
}

fn increment(key: &[u8]) -> u64 {
    let count = parse_count(state::get(key)) + 1;
    state::set(key, count.to_string().as_bytes());
    count
}

struct Counter;

impl Consumer for Counter {
    fn init(config: Config) -> Result<(), String> {
        let settings = Options {
            output: config.require("output")?.to_string(),
            field: config.get("field").map(Field::new),
        };
        SETTINGS.set(settings)
    }

    fn process(batch: &Batch) -> Result<(), ProcessError> {
        let settings = SETTINGS.get()?;
        for record in batch.records() {
            let record = record?;
            let key = match &settings.field {
                Some(field) => field.text(record.value).ok_or_else(|| {
                    poison(
                        record.offset,
                        "the value has no such field (or is not JSON)",
                    )
                })?,
                None => record
                    .key
                    .map(|k| String::from_utf8_lossy(k).into_owned())
                    .ok_or_else(|| poison(record.offset, "the record has no key to count by"))?,
            };
            let count = increment(&count_key(&key));
            increment(TOTAL);
            emit::send(
                &settings.output,
                Some(key.as_bytes()),
                &output_value(&key, count),
                &[],
            )
            .map_err(ProcessError::Failed)?;
        }
        Ok(())
    }
}

sluice_sdk::export_consumer!(Counter);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_are_decimal_text_and_default_to_zero() {
        assert_eq!(parse_count(None), 0);
        assert_eq!(parse_count(Some(b"41".to_vec())), 41);
        assert_eq!(parse_count(Some(b"garbage".to_vec())), 0);
        assert_eq!(count_key("ada"), b"count/ada");
    }

    #[test]
    fn output_is_json_with_key_and_count() {
        let value: serde_json::Value = serde_json::from_slice(&output_value("ada", 3)).unwrap();
        assert_eq!(value, serde_json::json!({"key": "ada", "count": 3}));
    }
}
