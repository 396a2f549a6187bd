//! Any bytes as a Kafka request frame (the bytes after the length prefix) are answered or
//! refused, never a panic: the header, every served request's decoder (the kafka-protocol
//! crate, patched in third_party/), the record batches of a produce with their decompression,
//! and the handlers behind them. One request path (a log in a temporary directory) serves
//! every input of a run; an input's first two bytes pick a served API and version, so that
//! most inputs reach a decoder rather than the check of the header.
#![no_main]

use std::sync::OnceLock;

use libfuzzer_sys::fuzz_target;
use sluice::server::kafka::fuzzing::RequestPath;

fn path() -> &'static RequestPath {
    static PATH: OnceLock<(tempfile::TempDir, RequestPath)> = OnceLock::new();
    let (_, path) = PATH.get_or_init(|| {
        let dir = tempfile::tempdir().expect("a temporary directory");
        let path = RequestPath::new(dir.path());
        (dir, path)
    });
    path
}

fuzz_target!(|data: &[u8]| {
    let frame = match data {
        [which, rest @ ..] => RequestPath::frame_for(usize::from(*which), rest),
        [] => Vec::new(),
    };
    if let Ok(Some(answer)) = path().answer(&frame) {
        let length = i32::from_be_bytes(answer[..4].try_into().expect("a length prefix"));
        assert_eq!(length as usize, answer.len() - 4);
    }
});
