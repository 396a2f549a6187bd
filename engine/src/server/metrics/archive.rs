//! Per archived topic and partition: what waits to be archived (sealed segments and their
//! bytes), what is archived (files and bytes, from the manifest), when a segment was last
//! archived, and how many archivals failed.

use prometheus::proto::MetricFamily;

use super::family::Family;
use crate::archive::Archives;
use crate::log::{Log, PartitionCounters};

pub(super) fn collect(log: &Log, archives: &Archives, now_ms: i64, out: &mut Vec<MetricFamily>) {
    let mut lag_segments = Family::gauge(
        "sluice_archive_lag_segments",
        "Sealed segments not yet archived.",
    );
    let mut lag_bytes = Family::gauge(
        "sluice_archive_lag_bytes",
        "Bytes of the sealed segments not yet archived.",
    );
    let mut files = Family::gauge("sluice_archive_files", "Parquet files the manifest names.");
    let mut bytes = Family::gauge(
        "sluice_archive_bytes",
        "Bytes of the Parquet files the manifest names.",
    );
    let mut last = Family::gauge(
        "sluice_archive_last_success_timestamp_seconds",
        "When a segment was last archived (Unix time; absent if none since the engine started).",
    );
    let mut failures = Family::counter(
        "sluice_archive_failures_total",
        "Archivals that failed (retried at the next retention check).",
    );
    for topic in log.topics() {
        if !topic.config().archive {
            continue;
        }
        for partition in topic.partitions() {
            let id = partition.id.to_string();
            let labels = [("topic", &*topic.name), ("partition", id.as_str())];
            let waiting = partition.segments_to_archive(now_ms, true);
            lag_segments.sample(&labels, waiting.len() as f64);
            let waiting_bytes: u64 = waiting.iter().map(|s| s.bytes).sum();
            lag_bytes.sample(&labels, waiting_bytes as f64);
            if let Ok(archived) = archives.partition(&topic.name, partition.id).files() {
                files.sample(&labels, archived.len() as f64);
                let archived_bytes: u64 = archived.iter().map(|f| f.bytes).sum();
                bytes.sample(&labels, archived_bytes as f64);
            }
            let counters = partition.counters();
            let at_ms = PartitionCounters::get(&counters.archived_at_ms);
            if at_ms > 0 {
                last.sample(&labels, at_ms as f64 / 1000.0);
            }
            let failed = PartitionCounters::get(&counters.archive_failures);
            failures.sample(&labels, failed as f64);
        }
    }
    for family in [lag_segments, lag_bytes, files, bytes, last, failures] {
        family.into(out);
    }
}
