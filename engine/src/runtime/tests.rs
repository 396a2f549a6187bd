//! The host against real components: the first-party plugins built for wasm32-wasip2 by
//! `./scripts/test` (or `cargo build --release --target wasm32-wasip2 --manifest-path
//! plugins/Cargo.toml`).

use std::path::PathBuf;
use std::sync::{Arc, OnceLock};

use bytes::Bytes;

use super::*;
use crate::log::{Record, batch};
use crate::txn::state::MemoryState;

fn plugin_wasm(name: &str) -> Vec<u8> {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../plugins/target/wasm32-wasip2/release")
        .join(format!("{name}.wasm"));
    std::fs::read(&path).unwrap_or_else(|e| {
        panic!("{}: {e}; build the plugins first: ./scripts/test does, or cargo build --release --target wasm32-wasip2 --manifest-path plugins/Cargo.toml", path.display())
    })
}

fn runtime() -> &'static Runtime {
    static RUNTIME: OnceLock<Runtime> = OnceLock::new();
    RUNTIME.get_or_init(|| Runtime::new(None).unwrap())
}

fn json_batch(values: &[&str]) -> Batch {
    let records: Vec<Record> = values
        .iter()
        .enumerate()
        .map(|(i, v)| Record {
            timestamp: 1_000 + i as i64,
            key: Some(Bytes::from(format!("k{i}"))),
            value: Some(Bytes::from(v.to_string())),
            headers: vec![crate::log::Header {
                key: "trace".into(),
                value: Some(Bytes::from(format!("t{i}"))),
            }],
        })
        .collect();
    Batch {
        topic: "orders".into(),
        partition: 2,
        base_offset: 100,
        count: records.len() as u32,
        records: batch::encode_records_frame(&records),
    }
}

fn start(
    runtime: &Runtime,
    plugin: &Plugin,
    limits: SandboxLimits,
    group: &str,
    config: &[(String, String)],
) -> Result<Sandbox, SandboxError> {
    let identity = SandboxIdentity {
        group,
        version: "1",
        log_sink: None,
    };
    Sandbox::start(
        runtime,
        plugin,
        limits,
        identity,
        Arc::new(MemoryState::default()),
        config,
    )
}

fn settings(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
    pairs
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

#[test]
fn filter_forwards_matching_records_with_their_keys_and_headers() {
    let plugin = runtime().compile(&plugin_wasm("filter")).unwrap();
    let config = settings(&[
        ("output", "big"),
        ("field", "total"),
        ("op", "gt"),
        ("value", "10"),
    ]);
    let mut sandbox = start(runtime(), &plugin, SandboxLimits::default(), "g", &config).unwrap();
    let emitted = sandbox
        .process(&json_batch(&[
            r#"{"total": 5}"#,
            r#"{"total": 50}"#,
            "not json",
            r#"{"total": 11}"#,
        ]))
        .unwrap()
        .emitted;
    assert_eq!(emitted.len(), 2);
    assert_eq!(&*emitted[0].topic, "big");
    assert_eq!(emitted[0].record.key.as_deref(), Some(&b"k1"[..]));
    assert_eq!(&emitted[0].record.value_bytes(), br#"{"total": 50}"#);
    assert_eq!(
        emitted[0].record.headers,
        vec![crate::log::Header {
            key: "trace".into(),
            value: Some(Bytes::from_static(b"t1"))
        }]
    );
    assert_eq!(&emitted[1].record.value_bytes(), br#"{"total": 11}"#);
    // The instance keeps working batch after batch.
    assert!(
        sandbox
            .process(&json_batch(&[r#"{"total": 1}"#]))
            .unwrap()
            .emitted
            .is_empty()
    );
}

#[test]
fn init_errors_reach_the_host_with_the_plugins_message() {
    let plugin = runtime().compile(&plugin_wasm("filter")).unwrap();
    let Err(error) = start(runtime(), &plugin, SandboxLimits::default(), "g", &[]) else {
        panic!("init without settings succeeded");
    };
    assert!(
        error.to_string().contains("missing setting `field`"),
        "{error}"
    );
}

#[test]
fn bad_uploads_are_refused_with_the_reason() {
    assert!(matches!(
        runtime().compile(b"hello"),
        Err(RuntimeError::NotWasm)
    ));
    assert!(matches!(
        runtime().compile(b"\0asm\x01\0\0\0"),
        Err(RuntimeError::NotComponent)
    ));
    let mut truncated = plugin_wasm("identity");
    truncated.truncate(truncated.len() / 2);
    assert!(matches!(
        runtime().compile(&truncated),
        Err(RuntimeError::Compile(_))
    ));
}

#[test]
fn compiled_code_is_cached_by_content() {
    let dir = tempfile::tempdir().unwrap();
    let runtime = Runtime::new(Some(dir.path())).unwrap();
    let wasm = plugin_wasm("identity");
    let first = runtime.compile(&wasm).unwrap();
    let cached: Vec<_> = std::fs::read_dir(dir.path())
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    assert_eq!(cached.len(), 1);
    assert!(cached[0].to_string_lossy().contains(&*first.digest));
    let second = runtime.compile(&wasm).unwrap();
    assert_eq!(first.digest, second.digest);
    let mut sandbox = start(&runtime, &second, SandboxLimits::default(), "g", &[]).unwrap();
    assert!(
        sandbox
            .process(&json_batch(&["{}"]))
            .unwrap()
            .emitted
            .is_empty()
    );
}

fn misbehaving(mode: &str, limits: SandboxLimits) -> Sandbox {
    let plugin = runtime().compile(&plugin_wasm("misbehave")).unwrap();
    start(
        runtime(),
        &plugin,
        limits,
        "bad",
        &settings(&[("mode", mode)]),
    )
    .unwrap()
}

#[test]
fn each_misbehaviour_fails_the_batch_naming_the_limit_and_other_sandboxes_keep_working() {
    let limits = SandboxLimits {
        memory_bytes: 64 << 20,
        deadline: Duration::from_millis(300),
        max_emitted_records: 1_000,
        max_emitted_bytes: 1 << 20,
    };
    let filter = runtime().compile(&plugin_wasm("filter")).unwrap();
    let config = settings(&[
        ("output", "big"),
        ("field", "total"),
        ("op", "gt"),
        ("value", "10"),
    ]);
    let mut healthy = start(
        runtime(),
        &filter,
        SandboxLimits::default(),
        "good",
        &config,
    )
    .unwrap();
    type Check = (&'static str, fn(&SandboxError) -> bool, &'static str);
    let checks: [Check; 5] = [
        (
            "loop",
            |e| matches!(e, SandboxError::Deadline(_)),
            "deadline",
        ),
        ("memory", |e| matches!(e, SandboxError::Memory(_)), "memory"),
        (
            "recursion",
            |e| matches!(e, SandboxError::Trap(t) if t.contains("recursion")),
            "stack overflow",
        ),
        (
            "trap",
            // The SDK's panic hook logs the message; the host puts it in the error.
            |e| matches!(e, SandboxError::Trap(t) if t.contains("unreachable") && t.contains("is bad")),
            "trapped",
        ),
        ("flood", |e| matches!(e, SandboxError::Quota(_)), "quota"),
    ];
    for (mode, expected, mention) in checks {
        let mut sandbox = misbehaving(mode, limits);
        assert_eq!(
            sandbox
                .process(&json_batch(&["fine"]))
                .unwrap()
                .emitted
                .len(),
            1,
            "{mode}: a good batch passes"
        );
        let error = sandbox.process(&json_batch(&["fine", "bad"])).unwrap_err();
        assert!(expected(&error), "{mode}: unexpected error {error}");
        assert!(
            error.to_string().contains(mention),
            "{mode}: `{error}` should mention {mention}"
        );
        let kept = healthy.process(&json_batch(&[r#"{"total": 50}"#])).unwrap();
        assert_eq!(
            kept.emitted.len(),
            1,
            "after {mode}, another sandbox still works"
        );
    }
}

#[test]
fn a_component_that_imports_the_file_system_is_refused_naming_the_import() {
    let Err(error) = runtime().compile(&plugin_wasm("uses_files")) else {
        panic!("a file-system import was accepted");
    };
    assert!(
        matches!(&error, RuntimeError::ForbiddenImport(name) if name.starts_with("wasi:filesystem/")),
        "{error}"
    );
}

#[test]
fn map_projects_fields_and_poisons_values_that_are_not_objects() {
    let plugin = runtime().compile(&plugin_wasm("map")).unwrap();
    let config = settings(&[("output", "slim"), ("fields", "id,total:amount")]);
    let mut sandbox = start(runtime(), &plugin, SandboxLimits::default(), "m", &config).unwrap();
    let out = sandbox
        .process(&json_batch(&[r#"{"id": 1, "total": 5, "x": 0}"#]))
        .unwrap()
        .emitted;
    assert_eq!(out.len(), 1);
    assert_eq!(&*out[0].topic, "slim");
    assert_eq!(&out[0].record.value_bytes(), br#"{"amount":5,"id":1}"#);
    let error = sandbox
        .process(&json_batch(&[r#"{"id": 2}"#, "[1, 2]"]))
        .unwrap_err();
    assert!(
        matches!(&error, SandboxError::Poison { offset: 101, reason } if reason.contains("not a JSON object")),
        "{error}"
    );
}

#[test]
fn router_sends_each_record_to_the_topic_of_its_field_value() {
    let plugin = runtime().compile(&plugin_wasm("router")).unwrap();
    let config = settings(&[
        ("field", "kind"),
        ("routes", "sale=sales,refund=refunds"),
        ("default", "other"),
    ]);
    let mut sandbox = start(runtime(), &plugin, SandboxLimits::default(), "r", &config).unwrap();
    let out = sandbox
        .process(&json_batch(&[
            r#"{"kind": "refund"}"#,
            r#"{"kind": "sale"}"#,
            r#"{"kind": "gift"}"#,
        ]))
        .unwrap()
        .emitted;
    let topics: Vec<&str> = out.iter().map(|e| &*e.topic).collect();
    assert_eq!(topics, ["refunds", "sales", "other"]);
    assert_eq!(&out[1].record.value_bytes(), br#"{"kind": "sale"}"#);
}

#[test]
fn counter_keeps_counts_in_state_across_batches() {
    let plugin = runtime().compile(&plugin_wasm("counter")).unwrap();
    let state = Arc::new(MemoryState::default());
    let identity = SandboxIdentity {
        group: "c",
        version: "1",
        log_sink: None,
    };
    let config = settings(&[("output", "counts"), ("field", "customer")]);
    let mut sandbox = Sandbox::start(
        runtime(),
        &plugin,
        SandboxLimits::default(),
        identity,
        state.clone(),
        &config,
    )
    .unwrap();
    let first = sandbox
        .process(&json_batch(&[
            r#"{"customer": "ada"}"#,
            r#"{"customer": "bob"}"#,
            r#"{"customer": "ada"}"#,
        ]))
        .unwrap();
    assert_eq!(
        &first.emitted[2].record.value_bytes(),
        br#"{"count":2,"key":"ada"}"#
    );
    state.apply(first.state_writes);
    // A failed batch leaves the committed state alone.
    assert!(sandbox.process(&json_batch(&[r#"{"other": 1}"#])).is_err());
    let second = sandbox
        .process(&json_batch(&[r#"{"customer": "ada"}"#]))
        .unwrap();
    assert_eq!(second.emitted[0].record.key.as_deref(), Some(&b"ada"[..]));
    assert_eq!(
        &second.emitted[0].record.value_bytes(),
        br#"{"count":3,"key":"ada"}"#
    );
    state.apply(second.state_writes);
    let entries = state.entries();
    assert_eq!(entries[&b"count/ada"[..]], b"3");
    assert_eq!(entries[&b"count/bob"[..]], b"1");
    assert_eq!(entries[&b"total"[..]], b"4");
}

#[test]
fn a_component_of_another_world_version_is_refused_naming_it() {
    let Err(error) = runtime().compile(&plugin_wasm("future_world")) else {
        panic!("a component built for sluice:plugin@0.2.0 was accepted");
    };
    assert!(
        matches!(&error, RuntimeError::IncompatibleWorld { found } if found.contains("@0.2.0")),
        "{error}"
    );
    assert!(error.to_string().contains("0.1.x"), "{error}");
}
