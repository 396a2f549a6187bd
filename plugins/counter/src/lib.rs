//! Keeps a running count per key in the group's state and emits the new count for each
//! record: a stateful plugin.
//!
//! Settings: `output` (topic) and, optionally:
//! - `field`: count by this JSON field of the value (a top-level name or a JSON pointer)
//!   instead of by the record key. A record with neither is poison.
//! - `carry`: copy this JSON field of the value into the output as `id` (text).
//! - `stamp = true`: add the wall clock (`at`, nanoseconds) and a random `nonce`: output
//!   that differs each time a record is processed, to test exactly-once with a
//!   non-deterministic plugin.
//!
//! Each output record has the counted key as key and `{"count": N, "key": K}` (plus `id`,
//! `at`, `nonce` when asked) as value. State: `count/<key>` holds each count, `total` the
//! number of records counted, both as decimal text.

use std::borrow::Cow;
use std::hash::BuildHasher;

use json_predicate::Field;
use sluice_sdk::{Batch, Config, Consumer, ProcessError, Settings, emit, poison, state};

struct Options {
    output: String,
    field: Option<Field>,
    carry: Option<Field>,
    stamp: bool,
}

static SETTINGS: Settings<Options> = Settings::new();

const COUNT_PREFIX: &[u8] = b"count/";

/// State key of a key's count, written into `out`.
pub fn count_key(out: &mut Vec<u8>, key: &str) {
    out.clear();
    out.extend_from_slice(COUNT_PREFIX);
    out.extend_from_slice(key.as_bytes());
}

pub const TOTAL: &[u8] = b"total";

/// A count as stored (decimal text); an absent or unreadable entry counts as 0.
pub fn parse_count(stored: Option<&[u8]>) -> u64 {
    stored
        .and_then(|bytes| std::str::from_utf8(bytes).ok())
        .and_then(|text| text.parse().ok())
        .unwrap_or(0)
}

/// What one output value says.
pub struct Output<'a> {
    pub count: u64,
    pub key: &'a str,
    pub id: Option<&'a str>,
    /// Wall clock (ns since the epoch) and a random number.
    pub stamp: Option<(u128, u64)>,
}

impl Output<'_> {
    /// Writes the value as JSON into `out` (reused across records: this runs for every one;
    /// written directly rather than through `serde_json::Value`).
    pub fn write(&self, out: &mut Vec<u8>) {
        let mut number = itoa::Buffer::new();
        out.clear();
        out.extend_from_slice(br#"{"count":"#);
        out.extend_from_slice(number.format(self.count).as_bytes());
        if let Some(id) = self.id {
            out.extend_from_slice(br#","id":"#);
            write_string(out, id);
        }
        out.extend_from_slice(br#","key":"#);
        write_string(out, self.key);
        if let Some((at, nonce)) = self.stamp {
            out.extend_from_slice(br#","at":"#);
            out.extend_from_slice(number.format(at).as_bytes());
            out.extend_from_slice(br#","nonce":"#);
            out.extend_from_slice(number.format(nonce).as_bytes());
        }
        out.push(b'}');
    }
}

fn write_string(out: &mut Vec<u8>, text: &str) {
    serde_json::to_writer(&mut *out, text).expect("writing a string to a Vec cannot fail");
}

fn stamp() -> (u128, u64) {
    let at = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos());
    // A fresh RandomState draws its keys from the host's random source.
    let nonce = std::collections::hash_map::RandomState::new().hash_one(at);
    (at, nonce)
}

fn increment(key: &[u8]) -> u64 {
    let count = state::read(key, parse_count) + 1;
    state::set(key, itoa::Buffer::new().format(count).as_bytes());
    count
}

struct Counter;

impl Consumer for Counter {
    fn init(config: Config) -> Result<(), String> {
        let stamp = match config.get("stamp") {
            None | Some("false") => false,
            Some("true") => true,
            Some(other) => return Err(format!("stamp must be true or false, not `{other}`")),
        };
        let settings = Options {
            output: config.require("output")?.to_string(),
            field: config.get("field").map(Field::new),
            carry: config.get("carry").map(Field::new),
            stamp,
        };
        SETTINGS.set(settings)
    }

    fn process(batch: &Batch) -> Result<(), ProcessError> {
        let settings = SETTINGS.get()?;
        // The total changes with every record: read it once per batch, write it once.
        let mut total = state::read(TOTAL, parse_count);
        let (mut state_key, mut value) = (Vec::new(), Vec::new());
        for record in batch.records() {
            let record = record?;
            let key = match &settings.field {
                Some(field) => Cow::Owned(field.text(record.value).ok_or_else(|| {
                    poison(
                        record.offset,
                        "the value has no such field (or is not JSON)",
                    )
                })?),
                None => record
                    .key
                    .map(String::from_utf8_lossy)
                    .ok_or_else(|| poison(record.offset, "the record has no key to count by"))?,
            };
            let id = match &settings.carry {
                Some(field) => Some(field.text(record.value).ok_or_else(|| {
                    poison(record.offset, "the value has no field to carry as id")
                })?),
                None => None,
            };
            count_key(&mut state_key, &key);
            let count = increment(&state_key);
            total += 1;
            let output = Output {
                count,
                key: &key,
                id: id.as_deref(),
                stamp: settings.stamp.then(stamp),
            };
            output.write(&mut value);
            emit::send(&settings.output, Some(key.as_bytes()), &value, &[])
                .map_err(ProcessError::Failed)?;
        }
        state::set(TOTAL, itoa::Buffer::new().format(total).as_bytes());
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
        assert_eq!(parse_count(Some(b"41")), 41);
        assert_eq!(parse_count(Some(b"garbage")), 0);
        let mut key = b"stale".to_vec();
        count_key(&mut key, "ada");
        assert_eq!(key, b"count/ada");
    }

    fn value(output: Output) -> serde_json::Value {
        let mut out = b"stale".to_vec();
        output.write(&mut out);
        serde_json::from_slice(&out).unwrap()
    }

    #[test]
    fn output_is_json_with_key_count_and_what_was_asked() {
        let plain = Output {
            count: 3,
            key: "a\"da",
            id: None,
            stamp: None,
        };
        assert_eq!(
            value(plain),
            serde_json::json!({"key": "a\"da", "count": 3})
        );
        let full = Output {
            count: 4,
            key: "ada",
            id: Some("17"),
            stamp: Some((1_700_000_000_123_456_789, 9)),
        };
        assert_eq!(
            value(full),
            serde_json::json!({"key": "ada", "count": 4, "id": "17", "at": 1_700_000_000_123_456_789u64, "nonce": 9})
        );
    }
}
