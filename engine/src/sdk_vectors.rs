//! The shared test vectors of the plugin SDKs (`sdk/testdata/`): records frames (a batch's
//! records, and what `send-frame` takes) and `state.write-many` frames, as bytes with their
//! decoded form, plus malformed frames that every decoder must refuse.
//!
//! The engine's codecs are the reference: this test builds every vector with them and checks
//! the committed files hold exactly those bytes, so an SDK that agrees with the files agrees
//! with the engine. `SLUICE_WRITE_SDK_VECTORS=1 cargo test -p sluice --lib sdk_vectors` writes
//! the files again after a deliberate change.

use std::path::PathBuf;

use bytes::Bytes;
use serde_json::{Value, json};

use crate::log::batch::{self, put_varint, zigzag};
use crate::log::{Header, Record};
use crate::txn::state::{StateWrite, decode_write_many};

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn record(timestamp: i64, key: Option<&[u8]>, value: &[u8], headers: &[(&str, &[u8])]) -> Record {
    Record {
        timestamp,
        key: key.map(Bytes::copy_from_slice),
        value: Some(Bytes::copy_from_slice(value)),
        headers: headers
            .iter()
            .map(|(name, value)| Header {
                key: name.to_string().into(),
                value: Some(Bytes::copy_from_slice(value)),
            })
            .collect(),
    }
}

/// Valid records frames: (name, base offset, records).
fn valid_frames() -> Vec<(&'static str, u64, Vec<Record>)> {
    let many_headers: Vec<(String, Vec<u8>)> = (0..200)
        .map(|i| (format!("h{i}"), vec![i as u8; i % 5]))
        .collect();
    let many_headers: Vec<(&str, &[u8])> = many_headers
        .iter()
        .map(|(n, v)| (n.as_str(), v.as_slice()))
        .collect();
    let big_value = vec![b'x'; 20_000];
    vec![
        ("no records", 0, vec![]),
        (
            "one record with key, value and a header",
            10,
            vec![record(
                1_700_000_000_000,
                Some(b"alice"),
                br#"{"total": 12}"#,
                &[("source", b"web")],
            )],
        ),
        ("no key", 0, vec![record(5, None, b"v", &[])]),
        (
            "empty key (present, zero bytes)",
            0,
            vec![record(5, Some(b""), b"v", &[])],
        ),
        ("empty value", 0, vec![record(5, Some(b"k"), b"", &[])]),
        (
            "timestamp 0 (emitted records)",
            0,
            vec![record(0, Some(b"k"), b"v", &[])],
        ),
        ("negative timestamp", 0, vec![record(-1, None, b"v", &[])]),
        (
            "largest and smallest timestamps (10-byte varints)",
            u64::MAX - 2,
            vec![
                record(i64::MAX, None, b"a", &[]),
                record(i64::MIN, None, b"b", &[]),
            ],
        ),
        (
            "200 headers",
            0,
            vec![record(7, Some(b"k"), b"v", &many_headers)],
        ),
        (
            "header with empty name and empty value",
            0,
            vec![record(7, None, b"v", &[("", b"")])],
        ),
        (
            "non-UTF-8 key, value and header value",
            3,
            vec![record(
                7,
                Some(&[0xff, 0xfe]),
                &[0xc3, 0x28],
                &[("bin", &[0x80, 0x00])],
            )],
        ),
        (
            "UTF-8 header name",
            0,
            vec![record(7, None, b"v", &[("nom-\u{e9}t\u{e9}", b"\xce\xbb")])],
        ),
        (
            "20,000-byte value (3-byte length varint)",
            0,
            vec![record(7, Some(&[b'k'; 200]), &big_value, &[])],
        ),
        (
            "several records",
            100,
            (0..5)
                .map(|i| {
                    record(
                        1_000 + i,
                        Some(format!("k{i}").as_bytes()),
                        format!("v{i}").as_bytes(),
                        &[],
                    )
                })
                .collect(),
        ),
    ]
}

/// Frames no decoder may read as records: (name, count the batch announces, bytes).
fn malformed_frames() -> Vec<(&'static str, u32, Vec<u8>)> {
    let good = batch::encode_records_frame(&[record(5, Some(b"key"), b"value", &[("h", b"x")])]);
    let mut cases = vec![
        ("empty buffer for one record", 1, vec![]),
        ("cut in the key", 1, good[..4].to_vec()),
        ("cut in the value", 1, good[..9].to_vec()),
        ("cut in a header", 1, good[..good.len() - 1].to_vec()),
    ];
    // A varint of 11 bytes (more than any u64 needs) as the timestamp.
    let mut long_varint = vec![0x80; 10];
    long_varint.push(0x01);
    long_varint.extend_from_slice(&good[1..]);
    cases.push(("11-byte varint", 1, long_varint));
    // Key length -2: only -1 (no key) is negative.
    let mut bad_key = Vec::new();
    put_varint(&mut bad_key, zigzag(5));
    put_varint(&mut bad_key, zigzag(-2));
    put_varint(&mut bad_key, 0);
    put_varint(&mut bad_key, 0);
    cases.push(("key length -2", 1, bad_key));
    // A value length far past the end of the buffer (and past 2^32).
    let mut huge = Vec::new();
    put_varint(&mut huge, zigzag(5));
    put_varint(&mut huge, zigzag(-1));
    put_varint(&mut huge, 1 << 40);
    huge.extend_from_slice(b"abc");
    cases.push(("value length past the end", 1, huge));
    // A header name that is not UTF-8.
    let mut bad_name = Vec::new();
    put_varint(&mut bad_name, zigzag(5));
    put_varint(&mut bad_name, zigzag(-1));
    put_varint(&mut bad_name, 0);
    put_varint(&mut bad_name, 1);
    put_varint(&mut bad_name, 1);
    bad_name.push(0xff);
    put_varint(&mut bad_name, 0);
    cases.push(("header name not UTF-8", 1, bad_name));
    cases
}

/// Valid write-many frames: (name, writes).
fn valid_writes() -> Vec<(&'static str, Vec<StateWrite>)> {
    vec![
        ("no writes", vec![]),
        (
            "one set",
            vec![(b"count/alice".to_vec(), Some(b"3".to_vec()))],
        ),
        ("one delete", vec![(b"count/alice".to_vec(), None)]),
        ("empty key, empty value", vec![(vec![], Some(vec![]))]),
        (
            "set, delete and set again of one key, in order",
            vec![
                (b"k".to_vec(), Some(b"1".to_vec())),
                (b"k".to_vec(), None),
                (b"k".to_vec(), Some(b"2".to_vec())),
            ],
        ),
        (
            "200-byte key and 20,000-byte value",
            vec![(vec![0xab; 200], Some(vec![0x01; 20_000]))],
        ),
    ]
}

fn encode_writes(writes: &[StateWrite]) -> Vec<u8> {
    let mut out = Vec::new();
    for (key, value) in writes {
        put_varint(&mut out, key.len() as u64);
        out.extend_from_slice(key);
        match value {
            None => put_varint(&mut out, 0),
            Some(value) => {
                put_varint(&mut out, value.len() as u64 + 1);
                out.extend_from_slice(value);
            }
        }
    }
    out
}

/// Write-many frames no decoder may read as writes.
fn malformed_writes() -> Vec<(&'static str, Vec<u8>)> {
    let good = encode_writes(&[(b"key".to_vec(), Some(b"value".to_vec()))]);
    let mut long_varint = vec![0xff; 10];
    long_varint.push(0x01);
    vec![
        ("cut in the key", good[..2].to_vec()),
        ("cut before the value length", good[..4].to_vec()),
        ("cut in the value", good[..good.len() - 1].to_vec()),
        ("11-byte varint", long_varint),
        (
            "key length past the end",
            vec![0x80, 0x80, 0x80, 0x80, 0x10, b'k'],
        ),
    ]
}

fn records_json(base_offset: u64, records: &[Record]) -> Value {
    let records: Vec<Value> = records
        .iter()
        .enumerate()
        .map(|(i, r)| {
            json!({
                "offset": base_offset.wrapping_add(i as u64).to_string(),
                "timestamp": r.timestamp.to_string(),
                "key": r.key.as_ref().map(|k| hex(k)),
                "value": hex(r.value_bytes()),
                "headers": r.headers.iter().map(|h| json!([h.key.to_string(), hex(h.value_bytes())])).collect::<Vec<_>>(),
            })
        })
        .collect();
    Value::Array(records)
}

fn records_frames_file() -> Value {
    let valid: Vec<Value> = valid_frames()
        .into_iter()
        .map(|(name, base, records)| {
            let frame = batch::encode_records_frame(&records);
            let decoded = batch::decode_records_frame(&Bytes::from(frame.clone()))
                .unwrap_or_else(|e| panic!("{name}: the engine cannot decode its own frame: {e}"));
            assert_eq!(decoded, records, "{name}");
            json!({
                "name": name,
                "base_offset": base.to_string(),
                "count": records.len(),
                "frame": hex(&frame),
                "records": records_json(base, &records),
            })
        })
        .collect();
    let malformed: Vec<Value> = malformed_frames()
        .into_iter()
        .map(|(name, count, frame)| {
            // Malformed for a decoder given the count (the SDKs) as for one reading to the end
            // (the engine): an error, or not the records announced.
            let decoded = batch::decode_records_frame(&Bytes::from(frame.clone()));
            assert!(
                decoded.map_or(true, |records| records.len() != count as usize),
                "{name}: the engine reads it"
            );
            json!({"name": name, "base_offset": "0", "count": count, "frame": hex(&frame)})
        })
        .collect();
    json!({
        "about": "Records frames: a batch's `records` and what `emit.send-frame` takes (wit/plugin.wit). Bytes are lowercase hex; key null means no key; headers are [name, value hex]; offsets and timestamps are decimal strings (64-bit values that JSON numbers do not all hold). Every SDK decodes `frame` with `base_offset` and `count` into exactly `records`, encodes `records` into exactly `frame` (timestamps included), and refuses every `malformed` frame with an error. Written by engine/src/sdk_vectors.rs.",
        "valid": valid,
        "malformed": malformed,
    })
}

fn write_many_file() -> Value {
    let valid: Vec<Value> = valid_writes()
        .into_iter()
        .map(|(name, writes)| {
            let frame = encode_writes(&writes);
            assert_eq!(
                decode_write_many(Bytes::from(frame.clone())).unwrap(),
                writes,
                "{name}"
            );
            let writes: Vec<Value> = writes
                .iter()
                .map(|(k, v)| json!({"key": hex(k), "value": v.as_ref().map(|v| hex(v))}))
                .collect();
            json!({"name": name, "frame": hex(&frame), "writes": writes})
        })
        .collect();
    let malformed: Vec<Value> = malformed_writes()
        .into_iter()
        .map(|(name, frame)| {
            assert!(
                decode_write_many(Bytes::from(frame.clone())).is_err(),
                "{name}: the engine reads it"
            );
            json!({"name": name, "frame": hex(&frame)})
        })
        .collect();
    json!({
        "about": "state.write-many frames (wit/plugin.wit): per write, a LEB128 key length and the key, then 0 to delete it or the value length plus one and the value. Bytes are lowercase hex; value null deletes. Every SDK encodes `writes` into exactly `frame` (writes in this order) and the engine decodes it back; every `malformed` frame is an error. Written by engine/src/sdk_vectors.rs.",
        "valid": valid,
        "malformed": malformed,
    })
}

/// Bytes in the text files: lowercase hex, `=` for none (an empty field would vanish between
/// spaces).
fn text_hex(bytes: &[u8]) -> String {
    if bytes.is_empty() {
        "=".to_string()
    } else {
        hex(bytes)
    }
}

/// The records vectors as lines, for SDKs whose tests have no JSON parser (C): `valid NAME
/// BASE COUNT FRAME`, then per record `record OFFSET TIMESTAMP KEY VALUE HEADERS` and per
/// header `NAME VALUE` on the same line; `malformed NAME BASE COUNT FRAME`. Names and bytes
/// in hex (`=`: empty), a key `-` when there is none.
fn records_frames_text() -> String {
    let mut out = String::from(
        "# The vectors of records-frames.json as lines (see engine/src/sdk_vectors.rs).\n",
    );
    for (name, base, records) in valid_frames() {
        let frame = batch::encode_records_frame(&records);
        out += &format!(
            "valid {} {base} {} {}\n",
            hex(name.as_bytes()),
            records.len(),
            text_hex(&frame)
        );
        for (i, r) in records.iter().enumerate() {
            let key = r.key.as_ref().map_or("-".to_string(), |k| text_hex(k));
            out += &format!(
                "record {} {} {key} {} {}",
                base.wrapping_add(i as u64),
                r.timestamp,
                text_hex(r.value_bytes()),
                r.headers.len()
            );
            for h in &r.headers {
                out += &format!(
                    " {} {}",
                    text_hex(h.key.as_bytes()),
                    text_hex(h.value_bytes())
                );
            }
            out += "\n";
        }
    }
    for (name, count, frame) in malformed_frames() {
        out += &format!(
            "malformed {} 0 {count} {}\n",
            hex(name.as_bytes()),
            text_hex(&frame)
        );
    }
    out
}

/// The write-many vectors as lines: `valid NAME FRAME WRITES`, then per write `write KEY
/// VALUE` (`-`: delete); `malformed NAME FRAME`.
fn write_many_text() -> String {
    let mut out = String::from(
        "# The vectors of write-many.json as lines (see engine/src/sdk_vectors.rs).\n",
    );
    for (name, writes) in valid_writes() {
        let frame = encode_writes(&writes);
        out += &format!(
            "valid {} {} {}\n",
            hex(name.as_bytes()),
            text_hex(&frame),
            writes.len()
        );
        for (key, value) in &writes {
            let value = value.as_ref().map_or("-".to_string(), |v| text_hex(v));
            out += &format!("write {} {value}\n", text_hex(key));
        }
    }
    for (name, frame) in malformed_writes() {
        out += &format!("malformed {} {}\n", hex(name.as_bytes()), text_hex(&frame));
    }
    out
}

fn testdata() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../sdk/testdata")
}

#[test]
fn the_sdk_vectors_are_what_the_engine_encodes() {
    let json = |value: Value| serde_json::to_string_pretty(&value).unwrap() + "\n";
    let files = [
        ("records-frames.json", json(records_frames_file())),
        ("write-many.json", json(write_many_file())),
        ("records-frames.txt", records_frames_text()),
        ("write-many.txt", write_many_text()),
    ];
    let rewrite = std::env::var_os("SLUICE_WRITE_SDK_VECTORS").is_some();
    for (name, text) in files {
        let path = testdata().join(name);
        if rewrite {
            std::fs::create_dir_all(testdata()).unwrap();
            std::fs::write(&path, &text).unwrap();
            continue;
        }
        let committed =
            std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        assert!(
            committed == text,
            "{} differs from what the engine encodes; after a deliberate change run \
             SLUICE_WRITE_SDK_VECTORS=1 cargo test -p sluice --lib sdk_vectors",
            path.display()
        );
    }
}
