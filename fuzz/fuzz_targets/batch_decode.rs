//! Any bytes given to the batch decoder give records or an error, never a panic, and a batch
//! that decodes holds exactly the records its header announces.
#![no_main]

use bytes::Bytes;
use libfuzzer_sys::fuzz_target;
use sluice::log::batch;

fuzz_target!(|data: &[u8]| {
    for decoded in batch::Batches::new(Bytes::copy_from_slice(data)) {
        let Ok((header, records)) = decoded else { break };
        assert_eq!(records.len() as u64, header.next_offset() - header.base_offset);
    }
});
