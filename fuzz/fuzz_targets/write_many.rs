//! A plugin's `state.write-many` frame: writes or an error, and no write longer than the frame.
#![no_main]

use bytes::Bytes;
use libfuzzer_sys::fuzz_target;
use sluice::txn::state::decode_write_many;

fuzz_target!(|data: &[u8]| {
    if let Ok(writes) = decode_write_many(Bytes::copy_from_slice(data)) {
        for (key, value) in writes {
            assert!(key.len() + value.map_or(0, |v| v.len()) <= data.len());
        }
    }
});
