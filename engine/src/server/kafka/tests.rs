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
