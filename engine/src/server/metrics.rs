//! `GET /metrics`: Prometheus text exposition of the log, its partitions, request counters and
//! consumer group lag.

use std::fmt::Write;
use std::sync::atomic::{AtomicU64, Ordering};

use crate::groups::Coordinator;
use crate::log::{Log, Partition};

/// Request counters, bumped by the handlers.
#[derive(Default)]
pub struct Counters {
    pub produce_requests: AtomicU64,
    pub produced_records: AtomicU64,
    pub produced_bytes: AtomicU64,
    pub fetch_requests: AtomicU64,
    pub fetched_bytes: AtomicU64,
}

impl Counters {
    pub fn add(counter: &AtomicU64, amount: u64) {
        counter.fetch_add(amount, Ordering::Relaxed);
    }
}

struct Exposition {
    text: String,
}

impl Exposition {
    fn family(&mut self, name: &str, kind: &str, help: &str) {
        let _ = writeln!(self.text, "# HELP {name} {help}\n# TYPE {name} {kind}");
    }

    fn sample(&mut self, name: &str, labels: &[(&str, &str)], value: u64) {
        let labels: Vec<String> = labels
            .iter()
            .map(|(k, v)| format!("{k}=\"{}\"", escape(v)))
            .collect();
        if labels.is_empty() {
            let _ = writeln!(self.text, "{name} {value}");
        } else {
            let _ = writeln!(self.text, "{name}{{{}}} {value}", labels.join(","));
        }
    }
}

fn escape(value: &str) -> String {
    value
        .replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

pub fn render(log: &Log, groups: &Coordinator, counters: &Counters) -> String {
    let mut out = Exposition {
        text: String::new(),
    };
    render_requests(&mut out, counters);
    out.family(
        "sluice_disk_used_bytes",
        "gauge",
        "Bytes held by segment files.",
    );
    out.sample("sluice_disk_used_bytes", &[], log.disk().used());
    render_partitions(&mut out, log);
    render_group_lag(&mut out, groups);
    out.text
}

fn render_requests(out: &mut Exposition, counters: &Counters) {
    let totals: [(&str, &str, &AtomicU64); 5] = [
        (
            "sluice_produce_requests_total",
            "Produce requests answered successfully.",
            &counters.produce_requests,
        ),
        (
            "sluice_produced_records_total",
            "Records acknowledged to producers.",
            &counters.produced_records,
        ),
        (
            "sluice_produced_bytes_total",
            "Request body bytes of acknowledged produce requests.",
            &counters.produced_bytes,
        ),
        (
            "sluice_fetch_requests_total",
            "Fetch requests answered successfully.",
            &counters.fetch_requests,
        ),
        (
            "sluice_fetched_bytes_total",
            "Batch bytes returned by fetches.",
            &counters.fetched_bytes,
        ),
    ];
    for (name, help, counter) in totals {
        out.family(name, "counter", help);
        out.sample(name, &[], counter.load(Ordering::Relaxed));
    }
}

/// A metric of every partition: name, type, help and how to read it.
type PartitionMetric = (
    &'static str,
    &'static str,
    &'static str,
    fn(&Partition) -> u64,
);

const PER_PARTITION: [PartitionMetric; 5] = [
    (
        "sluice_partition_high_watermark",
        "gauge",
        "Offset after the last visible (durable) record.",
        |p| p.high_watermark(),
    ),
    (
        "sluice_partition_log_start_offset",
        "gauge",
        "First offset still stored.",
        |p| p.log_start_offset(),
    ),
    (
        "sluice_partition_size_bytes",
        "gauge",
        "Bytes of the partition's segments.",
        |p| p.size_bytes(),
    ),
    (
        "sluice_partition_segments",
        "gauge",
        "Segment files of the partition.",
        |p| p.segment_count() as u64,
    ),
    (
        "sluice_partition_fsyncs_total",
        "counter",
        "fsyncs issued for the partition.",
        |p| p.fsync_count(),
    ),
];

fn render_partitions(out: &mut Exposition, log: &Log) {
    let topics = log.topics();
    for (name, kind, help, value) in PER_PARTITION {
        out.family(name, kind, help);
        for topic in &topics {
            for partition in topic.partitions() {
                let id = partition.id.to_string();
                out.sample(
                    name,
                    &[("topic", &topic.name), ("partition", &id)],
                    value(&partition),
                );
            }
        }
    }
}

fn render_group_lag(out: &mut Exposition, groups: &Coordinator) {
    out.family(
        "sluice_group_lag",
        "gauge",
        "Records between a group's committed offset and the high watermark.",
    );
    for group in groups.list().unwrap_or_default() {
        let Ok(description) = groups.describe(&group) else {
            continue;
        };
        for p in description.partitions {
            let id = p.partition.to_string();
            out.sample(
                "sluice_group_lag",
                &[("group", &group), ("topic", &p.topic), ("partition", &id)],
                p.lag,
            );
        }
    }
}
