//! The request path against arbitrary bytes: whatever a client sends, the dispatch answers or
//! refuses it, never panics, and the listener's state stays usable. Each case is a served API
//! and version with a correct header, followed by random bytes, so that the decoders and the
//! handlers behind them see every shape of garbage (and the odd well-formed request).

use proptest::prelude::*;

use super::fuzzing::{RequestPath, served_cases};

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    #[test]
    fn any_body_of_any_served_request_is_answered_or_refused(
        which in any::<prop::sample::Index>(),
        body in prop::collection::vec(any::<u8>(), 0..256),
    ) {
        let dir = tempfile::tempdir().unwrap();
        let path = RequestPath::new(dir.path());
        let which = which.index(served_cases().len());
        let answered = path.answer(&RequestPath::frame_for(which, &body));
        if let Ok(Some(response)) = answered {
            // A length prefix that says how long the rest is, then the correlation id.
            prop_assert!(response.len() >= 8);
            let length = i32::from_be_bytes(response[..4].try_into().unwrap());
            prop_assert_eq!(length as usize, response.len() - 4);
            prop_assert_eq!(i32::from_be_bytes(response[4..8].try_into().unwrap()), 7);
        }
    }

    #[test]
    fn any_frame_is_answered_or_refused(frame in prop::collection::vec(any::<u8>(), 0..64)) {
        let dir = tempfile::tempdir().unwrap();
        let _ = RequestPath::new(dir.path()).answer(&frame);
    }
}

/// Any records, with null keys, values and header values, and unique header names (the
/// codec keeps headers in a map).
fn arb_records() -> impl Strategy<Value = Vec<crate::log::Record>> {
    use bytes::Bytes;
    let bytes = |max| prop::collection::vec(any::<u8>(), 0..max).prop_map(Bytes::from);
    let record = (
        -1_000_000i64..i64::MAX / 4,
        prop::option::of(bytes(20)),
        prop::option::of(bytes(300)),
        prop::collection::btree_map("[a-z]{1,6}", prop::option::of(bytes(8)), 0..3),
    )
        .prop_map(|(timestamp, key, value, headers)| crate::log::Record {
            timestamp,
            key,
            value,
            headers: headers
                .into_iter()
                .map(|(name, value)| crate::log::Header {
                    key: name.into(),
                    value,
                })
                .collect(),
        });
    prop::collection::vec(record, 1..30)
}

proptest! {
    /// Stored batches written out as Kafka batches read back, with the codec's own decoder,
    /// as the same records at the same offsets, from the fetch offset on, with the producer's
    /// sequence numbers.
    #[test]
    fn fetched_batches_decode_as_the_stored_records(
        batches in prop::collection::vec(arb_records(), 1..4),
        stamped in any::<bool>(),
        skip in any::<prop::sample::Index>(),
    ) {
        use crate::log::batch::{PendingBatch, ProducerStamp, Compression};
        let mut data = Vec::new();
        let mut expected = Vec::new();
        let mut base = 1_000u64;
        for (i, records) in batches.iter().enumerate() {
            let producer = stamped.then_some(ProducerStamp { id: 7, epoch: 1, base_sequence: 10 * i as i32 });
            let mut pending = PendingBatch::build(records, Compression::None, producer);
            data.extend_from_slice(pending.seal(base));
            for (n, record) in records.iter().enumerate() {
                expected.push((base + n as u64, record.clone(), producer.map(|p| p.base_sequence + n as i32)));
            }
            base += records.len() as u64;
        }
        let from = expected[skip.index(expected.len())].0;
        let encoded = super::records::encode_fetched(&data, from).unwrap();
        let mut buf = encoded.clone();
        let mut decoded = Vec::new();
        while bytes::Buf::has_remaining(&buf) {
            let set = kafka_protocol::records::RecordBatchDecoder::decode(&mut buf).unwrap();
            decoded.extend(set.records);
        }
        let expected: Vec<_> = expected.into_iter().filter(|(offset, ..)| *offset >= from).collect();
        prop_assert_eq!(decoded.len(), expected.len());
        for (got, (offset, record, sequence)) in decoded.iter().zip(&expected) {
            prop_assert_eq!(got.offset, *offset as i64);
            prop_assert_eq!(got.timestamp, record.timestamp);
            prop_assert_eq!(&got.key, &record.key);
            prop_assert_eq!(&got.value, &record.value);
            if let Some(sequence) = sequence {
                prop_assert_eq!(got.sequence, *sequence);
            }
            prop_assert_eq!(got.producer_id, if stamped { 7 } else { -1 });
            let headers: Vec<(String, Option<bytes::Bytes>)> = got.headers.iter().map(|(k, v)| (k.as_str().to_string(), v.clone())).collect();
            let wanted: Vec<(String, Option<bytes::Bytes>)> = record.headers.iter().map(|h| (h.key.to_string(), h.value.clone())).collect();
            prop_assert_eq!(headers, wanted);
        }
    }
}
