//! Share-group journal entries as a restart replays them: groups or an error, never a panic
//! and never memory past the window's bound.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let _ = sluice::queues::replay_journal_entries(data);
});
