//! Any bytes given as a produce body (records frame) give records or an error, never a panic,
//! and decoded records survive a round trip.
#![no_main]

use bytes::Bytes;
use libfuzzer_sys::fuzz_target;
use sluice::log::batch;

fuzz_target!(|data: &[u8]| {
    let frame = Bytes::copy_from_slice(data);
    if let Ok(records) = batch::decode_records_frame(&frame) {
        let encoded = Bytes::from(batch::encode_records_frame(&records));
        assert_eq!(batch::decode_records_frame(&encoded).ok(), Some(records));
    }
});
