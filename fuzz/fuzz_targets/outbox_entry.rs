//! An outbox entry read back from the plugin store: parts or an error, never a panic.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let _ = sluice::txn::outbox::decode(data);
});
