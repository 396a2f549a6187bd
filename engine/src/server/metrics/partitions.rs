//! Per topic and partition: offsets, size, segments, records and bytes produced and fetched,
//! fsyncs; and the fsync-duration histogram of the whole log.

use prometheus::proto::MetricFamily;

use super::family::Family;
use crate::log::{Log, Partition, PartitionCounters};

/// A gauge or counter of every partition: name, help, whether a counter, how to read it.
type PartitionMetric = (&'static str, &'static str, bool, fn(&Partition) -> u64);

const PER_PARTITION: [PartitionMetric; 9] = [
    (
        "sluice_partition_high_watermark",
        "Offset after the last visible (durable) record: the log end offset.",
        false,
        |p| p.high_watermark(),
    ),
    (
        "sluice_partition_log_start_offset",
        "First offset still in the log (older ones are deleted or archived).",
        false,
        |p| p.log_start_offset(),
    ),
    (
        "sluice_partition_size_bytes",
        "Bytes of the partition's segment files.",
        false,
        |p| p.size_bytes(),
    ),
    (
        "sluice_partition_segments",
        "Segment files of the partition.",
        false,
        |p| p.segment_count() as u64,
    ),
    (
        "sluice_partition_produced_records_total",
        "Records appended, by producers on either door and by plugin outputs.",
        true,
        |p| PartitionCounters::get(&p.counters().produced_records),
    ),
    (
        "sluice_partition_produced_bytes_total",
        "Stored bytes of the batches appended.",
        true,
        |p| PartitionCounters::get(&p.counters().produced_bytes),
    ),
    (
        "sluice_partition_fetched_records_total",
        "Records handed to consumers by fetches (HTTP and Kafka).",
        true,
        |p| PartitionCounters::get(&p.counters().fetched_records),
    ),
    (
        "sluice_partition_fetched_bytes_total",
        "Stored bytes of the batches fetches read.",
        true,
        |p| PartitionCounters::get(&p.counters().fetched_bytes),
    ),
    (
        "sluice_partition_fsyncs_total",
        "fsyncs issued for the partition (records per fsync shows group commit at work).",
        true,
        |p| PartitionCounters::get(&p.counters().fsyncs),
    ),
];

pub(super) fn collect(log: &Log, out: &mut Vec<MetricFamily>) {
    use prometheus::core::Collector;
    let topics = log.topics();
    for (name, help, counter, value) in PER_PARTITION {
        let mut family = Family::of(name, help, counter);
        for topic in &topics {
            for partition in topic.partitions() {
                let id = partition.id.to_string();
                let labels = [("topic", &*topic.name), ("partition", id.as_str())];
                family.sample(&labels, value(&partition) as f64);
            }
        }
        family.into(out);
    }
    let mut disk = Family::gauge(
        "sluice_disk_used_bytes",
        "Bytes held by segment files, all partitions together.",
    );
    disk.sample(&[], log.disk().used() as f64);
    disk.into(out);
    out.extend(log.fsync_seconds().collect());
}
