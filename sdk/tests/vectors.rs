//! The SDK against the shared test vectors (sdk/testdata/, written from the engine's codecs):
//! every valid records frame decodes to exactly its records and encodes back byte for byte,
//! every malformed frame is an error, and write-many frames encode byte for byte.

use serde_json::Value;
use sluice_sdk::Records;
use sluice_sdk::frame::{encode_record, encode_write};

fn vectors(name: &str) -> Value {
    let path = format!("{}/testdata/{name}", env!("CARGO_MANIFEST_DIR"));
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{path}: {e}"));
    serde_json::from_str(&text).unwrap()
}

fn unhex(text: &str) -> Vec<u8> {
    (0..text.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&text[i..i + 2], 16).unwrap())
        .collect()
}

fn bytes(value: &Value) -> Option<Vec<u8>> {
    value.as_str().map(unhex)
}

#[test]
fn records_frames_decode_and_encode_byte_for_byte() {
    let file = vectors("records-frames.json");
    for case in file["valid"].as_array().unwrap() {
        let name = case["name"].as_str().unwrap();
        let frame = unhex(case["frame"].as_str().unwrap());
        let base: u64 = case["base_offset"].as_str().unwrap().parse().unwrap();
        let count = case["count"].as_u64().unwrap() as u32;
        let decoded: Vec<_> = Records::new(&frame, base, count)
            .collect::<Result<_, _>>()
            .unwrap_or_else(|e| panic!("{name}: {e}"));
        let expected = case["records"].as_array().unwrap();
        assert_eq!(decoded.len(), expected.len(), "{name}");
        let mut encoded = Vec::new();
        for (record, want) in decoded.iter().zip(expected) {
            let offset: u64 = want["offset"].as_str().unwrap().parse().unwrap();
            let timestamp: i64 = want["timestamp"].as_str().unwrap().parse().unwrap();
            assert_eq!(record.offset, offset, "{name}");
            assert_eq!(record.timestamp, timestamp, "{name}");
            assert_eq!(
                record.key.map(<[u8]>::to_vec),
                bytes(&want["key"]),
                "{name}"
            );
            assert_eq!(Some(record.value.to_vec()), bytes(&want["value"]), "{name}");
            let headers: Vec<(String, Vec<u8>)> = want["headers"]
                .as_array()
                .unwrap()
                .iter()
                .map(|h| {
                    (
                        h[0].as_str().unwrap().to_string(),
                        unhex(h[1].as_str().unwrap()),
                    )
                })
                .collect();
            let got: Vec<(String, Vec<u8>)> = record
                .headers()
                .map(|(n, v)| (n.to_string(), v.to_vec()))
                .collect();
            assert_eq!(got, headers, "{name}");
            let headers: Vec<(&str, &[u8])> = headers
                .iter()
                .map(|(n, v)| (n.as_str(), v.as_slice()))
                .collect();
            encode_record(
                &mut encoded,
                record.timestamp,
                record.key,
                record.value,
                &headers,
            );
        }
        assert_eq!(encoded, frame, "{name}: encoded differently");
    }
}

#[test]
fn malformed_records_frames_are_errors() {
    let file = vectors("records-frames.json");
    for case in file["malformed"].as_array().unwrap() {
        let name = case["name"].as_str().unwrap();
        let frame = unhex(case["frame"].as_str().unwrap());
        let count = case["count"].as_u64().unwrap() as u32;
        let decoded: Result<Vec<_>, _> = Records::new(&frame, 0, count).collect();
        assert!(decoded.is_err(), "{name}: read as {decoded:?}");
    }
}

#[test]
fn write_many_frames_encode_byte_for_byte() {
    let file = vectors("write-many.json");
    for case in file["valid"].as_array().unwrap() {
        let name = case["name"].as_str().unwrap();
        let mut encoded = Vec::new();
        for write in case["writes"].as_array().unwrap() {
            let key = unhex(write["key"].as_str().unwrap());
            encode_write(&mut encoded, &key, bytes(&write["value"]).as_deref());
        }
        assert_eq!(encoded, unhex(case["frame"].as_str().unwrap()), "{name}");
    }
}
