//! `GET /metrics`: the Prometheus text exposition of what an operator watches, through the
//! `prometheus` crate. Instruments (histograms, the request counters) are kept where the
//! work happens; everything else is read from the engine's state at scrape time, so a
//! scrape always agrees with `sluice topic describe`, `group describe` and `plugin describe`.
//!
//! # Layout
//! - `family.rs`: metric families built at scrape time.
//! - `partitions.rs`: per topic and partition; the fsync histogram.
//! - `groups.rs`: per group and partition, consumer and plugin groups: committed offset, lag.
//! - `plugins.rs`: per plugin group: processing, errors, memory, versions, status.
//! - `archive.rs`: per archived partition: archive lag, files, last success, failures.
//! - `requests.rs`: request counters and the HTTP request-latency middleware.
//!
//! Names follow Prometheus' conventions: base units last (`_bytes`, `_seconds`), `_total`
//! on counters; docs/metrics.md lists them all.

mod archive;
mod family;
mod groups;
mod partitions;
mod plugins;
mod requests;
mod share_groups;

use prometheus::Encoder;
use prometheus::core::Collector;
use prometheus::proto::MetricFamily;

pub use requests::{Counters, kafka_request_histogram, request_histogram, track_requests};

use super::{AppState, INFLIGHT_PERMIT_BYTES, inflight_permits};
use crate::log::now_ms;
use family::Family;

/// The whole exposition: it reads the log, the group stores and the archive manifests, so
/// it runs off the async workers.
pub fn render(state: &AppState) -> String {
    let now = now_ms();
    let mut out: Vec<MetricFamily> = Vec::new();
    for (name, help, value) in state.counters.totals() {
        let mut family = Family::counter(name, help);
        family.sample(&[], value as f64);
        family.into(&mut out);
    }
    out.extend(state.requests.collect());
    out.extend(state.kafka_requests.collect());
    let mut inflight = Family::gauge(
        "sluice_inflight_request_bytes",
        "Request bytes held in memory now, HTTP bodies and Kafka frames (at most [server] max_inflight_bytes).",
    );
    let capacity = inflight_permits(state.config.server.max_inflight_bytes) as usize;
    let held = capacity.saturating_sub(state.inflight.available_permits());
    inflight.sample(&[], (held as u64 * INFLIGHT_PERMIT_BYTES) as f64);
    inflight.into(&mut out);
    partitions::collect(&state.log, &mut out);
    let plugin_groups = state.plugins.list();
    groups::collect(&state.log, &state.groups, &plugin_groups, now, &mut out);
    plugins::collect(&state.plugins, &plugin_groups, &mut out);
    share_groups::collect(&state.shares, &mut out);
    archive::collect(&state.log, &state.archives, now, &mut out);
    out.extend(state.process.collect());
    // A labelled histogram nothing was observed in yet has no samples; the text encoder
    // refuses a family without any (and would stop there).
    out.retain(|family| !family.get_metric().is_empty());
    let mut text = Vec::new();
    if let Err(error) = prometheus::TextEncoder::new().encode(&out, &mut text) {
        tracing::error!(%error, "metrics: the exposition does not encode");
    }
    String::from_utf8(text).unwrap_or_default()
}
