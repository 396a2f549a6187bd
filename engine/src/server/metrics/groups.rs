//! Per consumer group and partition, for consumer groups (either door) and plugin groups
//! alike: the committed offset, and lag in records and in seconds (the age of the oldest
//! record not yet processed, from its timestamp).

use prometheus::proto::MetricFamily;

use super::family::Family;
use crate::groups::Coordinator;
use crate::log::{Log, batch};
use crate::runtime::PluginDescription;

/// Bytes read to find the oldest unprocessed record's timestamp: its batch, at least.
const TIMESTAMP_READ_BYTES: usize = 64 * 1024;

/// One group's progress on one partition.
struct Progress<'a> {
    group: &'a str,
    kind: &'static str,
    topic: &'a str,
    partition: u32,
    committed: Option<u64>,
    lag: u64,
    high_watermark: u64,
}

struct Families {
    committed: Family,
    lag_records: Family,
    lag_seconds: Family,
}

pub(super) fn collect(
    log: &Log,
    groups: &Coordinator,
    plugins: &[PluginDescription],
    now_ms: i64,
    out: &mut Vec<MetricFamily>,
) {
    let mut families = Families {
        committed: Family::gauge(
            "sluice_group_committed_offset",
            "The group's committed offset: the next record it will process.",
        ),
        lag_records: Family::gauge(
            "sluice_group_lag_records",
            "Records between the group's position (its committed offset, else the log start) and the high watermark.",
        ),
        lag_seconds: Family::gauge(
            "sluice_group_lag_seconds",
            "Age of the oldest record the group has not processed (0 when it is caught up).",
        ),
    };
    for group in groups.list().unwrap_or_default() {
        let Ok(description) = groups.describe(&group) else {
            continue;
        };
        for p in &description.partitions {
            let progress = Progress {
                group: &group,
                kind: "consumer",
                topic: &p.topic,
                partition: p.partition,
                committed: p.committed,
                lag: p.lag,
                high_watermark: p.high_watermark,
            };
            families.add(log, &progress, now_ms);
        }
    }
    for description in plugins {
        for p in &description.partitions {
            let progress = Progress {
                group: &description.group,
                kind: "plugin",
                topic: &description.topic,
                partition: p.partition,
                committed: p.committed,
                lag: p.lag,
                high_watermark: p.high_watermark,
            };
            families.add(log, &progress, now_ms);
        }
    }
    families.committed.into(out);
    families.lag_records.into(out);
    families.lag_seconds.into(out);
}

impl Families {
    fn add(&mut self, log: &Log, p: &Progress<'_>, now_ms: i64) {
        let id = p.partition.to_string();
        let labels = [
            ("group", p.group),
            ("kind", p.kind),
            ("topic", p.topic),
            ("partition", id.as_str()),
        ];
        if let Some(committed) = p.committed {
            self.committed.sample(&labels, committed as f64);
        }
        self.lag_records.sample(&labels, p.lag as f64);
        let behind_ms = match p.lag {
            0 => 0,
            _ => oldest_unprocessed_ms(log, p).map_or(0, |ts| now_ms.saturating_sub(ts).max(0)),
        };
        self.lag_seconds.sample(&labels, behind_ms as f64 / 1000.0);
    }
}

/// The timestamp of the first record the group has not processed, read from the log (from
/// its start, if the group's position was archived or deleted: the archive is not read for a
/// scrape).
fn oldest_unprocessed_ms(log: &Log, p: &Progress<'_>) -> Option<i64> {
    let partition = log.topic(p.topic).ok()?.partition(p.partition).ok()?;
    let from = p
        .committed
        .unwrap_or(0)
        .max(partition.log_start_offset())
        .max(p.high_watermark.saturating_sub(p.lag));
    let fetched = partition.read(from, TIMESTAMP_READ_BYTES).ok()?;
    let mut first = None;
    let _ = batch::visit_all(&fetched.data, from, |_, record| {
        first = Some(record.timestamp);
        Err(batch::BatchError::Malformed("stop at the first record"))
    });
    first
}
