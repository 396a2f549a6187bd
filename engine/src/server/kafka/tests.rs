//! The request path against arbitrary bytes: whatever a client sends, the dispatch answers or
//! refuses it, never panics, and the listener's state stays usable. Each case is a served API
//! and version with a correct header, followed by random bytes, so that the decoders and the
//! handlers behind them see every shape of garbage (and the odd well-formed request).

use std::sync::Arc;
use std::time::Duration;

use bytes::{BufMut, Bytes, BytesMut};
use kafka_protocol::messages::{ApiKey, RequestHeader};
use kafka_protocol::protocol::{Encodable, StrBytes};
use proptest::prelude::*;
use tokio::sync::watch;

use super::{KafkaContext, apis};
use crate::config::KafkaSettings;
use crate::groups::{Coordinator, SessionLimits};
use crate::log::{Log, LogOptions, TopicConfig};

fn context(dir: &std::path::Path) -> KafkaContext {
    let options = LogOptions {
        topic_defaults: TopicConfig::default(),
        max_disk_bytes: None,
        min_free_bytes: 0,
        cold: None,
    };
    let log = Arc::new(Log::open(dir, options).unwrap());
    log.create_topic("t", 2, &[]).unwrap();
    let limits = SessionLimits {
        min: Duration::from_millis(1),
        max: Duration::from_secs(60),
    };
    let offsets =
        Arc::new(Coordinator::open(&dir.join("groups.redb"), log.clone(), limits).unwrap());
    let (_, shutdown) = watch::channel(false);
    KafkaContext {
        log,
        offsets,
        kafka_groups: Default::default(),
        producer_ids: super::ProducerIds::open(dir).unwrap(),
        producers: Default::default(),
        settings: KafkaSettings::default(),
        advertised: ("127.0.0.1".to_string(), 9092),
        cluster_id: "test".to_string(),
        max_fetch_bytes: 1 << 20,
        // Fetches and joins that wait, wait little: the cases run one after the other.
        max_wait_ms: 1,
        shutdown,
    }
}

/// A frame (without its length) of `api` at `version` with a correct header and `body`.
fn frame(api: ApiKey, version: i16, body: &[u8]) -> Bytes {
    let mut out = BytesMut::new();
    RequestHeader::default()
        .with_request_api_key(api as i16)
        .with_request_api_version(version)
        .with_correlation_id(7)
        .with_client_id(Some(StrBytes::from_static_str("fuzz")))
        .encode(&mut out, api.request_header_version(version))
        .unwrap();
    out.put_slice(body);
    out.freeze()
}

/// Every served API at every served version.
fn served() -> Vec<(ApiKey, i16)> {
    apis::SERVED
        .iter()
        .flat_map(|(api, min, max)| (*min..=*max).map(move |v| (*api, v)))
        // JoinGroup and SyncGroup wait for their round: left to the black-box tests.
        .filter(|(api, _)| !matches!(api, ApiKey::JoinGroup | ApiKey::SyncGroup))
        .collect()
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    #[test]
    fn any_body_of_any_served_request_is_answered_or_refused(
        which in any::<prop::sample::Index>(),
        body in prop::collection::vec(any::<u8>(), 0..256),
    ) {
        let dir = tempfile::tempdir().unwrap();
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()
            .unwrap();
        let context = context(dir.path());
        let cases = served();
        let (api, version) = cases[which.index(cases.len())];
        let peer = "127.0.0.1:1".parse().unwrap();
        let answered = runtime.block_on(apis::answer(frame(api, version, &body), peer, &mut Default::default(), &context));
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
        let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
        let context = context(dir.path());
        let peer = "127.0.0.1:1".parse().unwrap();
        let _ = runtime.block_on(apis::answer(Bytes::from(frame), peer, &mut Default::default(), &context));
    }
}
