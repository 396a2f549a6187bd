//! The Kafka request path on its own, for the property tests (`tests.rs`) and the fuzz target
//! (`fuzz/fuzz_targets/kafka_request.rs`): a listener's shared state on a fresh log in a
//! directory of the caller's, and one call that answers a request frame as a connection
//! would, without a socket.

use std::sync::Arc;
use std::time::Duration;

use bytes::{BufMut, Bytes, BytesMut};
use kafka_protocol::messages::{ApiKey, RequestHeader};
use kafka_protocol::protocol::{Encodable, StrBytes};
use tokio::sync::watch;

use super::{KafkaContext, apis};
use crate::config::KafkaSettings;
use crate::groups::{Coordinator, SessionLimits};
use crate::log::{Log, LogOptions, TopicConfig};

/// A Kafka listener's state without the listener: the log (with a topic `t` of two
/// partitions), the offsets, the groups and the producers.
pub struct RequestPath {
    context: KafkaContext,
    runtime: tokio::runtime::Runtime,
    /// Kept so that the context's shutdown signal stays open.
    _shutdown: watch::Sender<bool>,
}

impl RequestPath {
    /// A fresh log in `dir` (which must be empty).
    pub fn new(dir: &std::path::Path) -> RequestPath {
        let options = LogOptions {
            topic_defaults: TopicConfig::default(),
            max_disk_bytes: None,
            min_free_bytes: 0,
            cold: None,
        };
        let log = Arc::new(Log::open(dir, options).expect("a log in an empty directory"));
        log.create_topic("t", 2, &[]).expect("topic t");
        let limits = SessionLimits {
            min: Duration::from_millis(1),
            max: Duration::from_secs(60),
        };
        let offsets = Arc::new(
            Coordinator::open(&dir.join("groups.redb"), log.clone(), limits)
                .expect("offsets in an empty directory"),
        );
        let (shutdown_sender, shutdown) = watch::channel(false);
        let shares = Arc::new(
            crate::queues::ShareGroups::open(dir, log.clone(), Default::default())
                .expect("share groups in an empty directory"),
        );
        let context = KafkaContext {
            log,
            offsets,
            kafka_groups: Default::default(),
            shares,
            share_groups: Default::default(),
            producer_ids: super::ProducerIds::open(dir).expect("producer ids"),
            producers: Default::default(),
            settings: KafkaSettings::default(),
            advertised: ("127.0.0.1".to_string(), 9092),
            cluster_id: "test".to_string(),
            max_fetch_bytes: 1 << 20,
            // Fetches that wait, wait little: cases run one after the other.
            max_wait_ms: 1,
            inflight: Arc::new(tokio::sync::Semaphore::new(1 << 16)),
            request_seconds: crate::server::metrics::kafka_request_histogram(),
            max_inflight_bytes: 1 << 26,
            request_timeout: Duration::from_secs(10),
            shutdown,
        };
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()
            .expect("a tokio runtime");
        RequestPath {
            context,
            runtime,
            _shutdown: shutdown_sender,
        }
    }

    /// A request frame of the `which`th served API and version (counting every version of
    /// every served API but JoinGroup's and SyncGroup's, which wait for their round, modulo
    /// their number), with a correct header and `body`.
    pub fn frame_for(which: usize, body: &[u8]) -> Vec<u8> {
        let cases = served_cases();
        let (api, version) = cases[which % cases.len()];
        let mut out = BytesMut::new();
        RequestHeader::default()
            .with_request_api_key(api as i16)
            .with_request_api_version(version)
            .with_correlation_id(7)
            .with_client_id(Some(StrBytes::from_static_str("fuzz")))
            .encode(&mut out, api.request_header_version(version))
            .expect("a header encodes");
        out.put_slice(body);
        out.to_vec()
    }

    /// Answers one request frame (without its length prefix) as a connection would: the
    /// length-prefixed answer, None when the request wants none, or why the connection
    /// would be closed.
    pub fn answer(&self, frame: &[u8]) -> Result<Option<Vec<u8>>, String> {
        let peer = "127.0.0.1:1".parse().expect("an address");
        let (mut session, mut shares) = Default::default();
        let frame = Bytes::copy_from_slice(frame);
        self.runtime
            .block_on(apis::answer(
                frame,
                peer,
                &mut session,
                &mut shares,
                &self.context,
            ))
            .map(|answer| answer.map(|bytes| bytes.to_vec()))
            .map_err(|error| error.to_string())
    }
}

/// Every served API at every served version but JoinGroup's and SyncGroup's (they wait for
/// their round: left to the black-box tests).
pub fn served_cases() -> Vec<(ApiKey, i16)> {
    apis::SERVED
        .iter()
        .flat_map(|(api, min, max)| (*min..=*max).map(move |v| (*api, v)))
        .filter(|(api, _)| !matches!(api, ApiKey::JoinGroup | ApiKey::SyncGroup))
        .collect()
}
