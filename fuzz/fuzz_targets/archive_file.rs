//! An archive file read back (replay, recovery) or verified, from bytes that may have been
//! damaged on disk or in the object store: rows or an error naming the file, never a panic.
#![no_main]

use bytes::Bytes;
use libfuzzer_sys::fuzz_target;
use sluice::archive::parquet::{FileContents, Source, Summary, verify};

fuzz_target!(|data: &[u8]| {
    let source = || Source::Fetched {
        name: "fuzzed.parquet".into(),
        bytes: Bytes::copy_from_slice(data),
    };
    if let Ok(contents) = FileContents::read(source()) {
        let summary = contents.summary.clone();
        let _ = contents.rows_from(summary.first_offset, 1_000);
        let _ = verify(source(), &summary);
    }
});
