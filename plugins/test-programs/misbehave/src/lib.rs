//! A plugin that misbehaves on purpose, for the sandbox tests. The `mode` setting picks how,
//! when a batch holds a record whose value is `bad`: `loop` (never returns), `memory`
//! (allocates 4 GiB, 16 MiB at a time), `recursion` (unbounded recursion), `trap` (panics), `flood` (emits a
//! million records, ignoring errors), `poison` (rejects the record as poison). Other records are forwarded to `out`.

use std::sync::OnceLock;

use sluice_sdk::{Batch, Config, Consumer, ProcessError, emit};

static MODE: OnceLock<String> = OnceLock::new();

struct Misbehave;

#[allow(unconditional_recursion)]
fn recurse(depth: u64) -> u64 {
    let local = [depth; 64];
    std::hint::black_box(&local);
    recurse(depth + 1) + local[0]
}

impl Consumer for Misbehave {
    fn init(config: Config) -> Result<(), String> {
        MODE.set(config.require("mode")?.to_string())
            .map_err(|_| "init called twice".to_string())
    }

    fn process(batch: &Batch) -> Result<(), ProcessError> {
        let mode = MODE.get().map(String::as_str).unwrap_or_default();
        for record in batch.records() {
            let record = record?;
            if record.value != b"bad" {
                emit::send("out", record.key, record.value, &[]).map_err(ProcessError::Failed)?;
                continue;
            }
            match mode {
                "loop" => loop {
                    std::hint::black_box(record.offset);
                },
                "memory" => {
                    let mut hog = Vec::new();
                    for _ in 0..256 {
                        hog.push(vec![1u8; 16 << 20]);
                    }
                    std::hint::black_box(&hog);
                }
                "recursion" => {
                    std::hint::black_box(recurse(0));
                }
                "trap" => panic!("record {} is bad", record.offset),
                "poison" => return Err(sluice_sdk::poison(record.offset, "the record is bad")),
                "flood" => {
                    for _ in 0..1_000_000 {
                        let _ = emit::send("out", None, &[0u8; 100], &[]);
                    }
                }
                other => return Err(ProcessError::Failed(format!("unknown mode {other}"))),
            }
        }
        Ok(())
    }
}

sluice_sdk::export_consumer!(Misbehave);
