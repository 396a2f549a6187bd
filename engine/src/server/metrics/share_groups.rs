//! Per share group and partition: queue depth, records in flight, and counters of what
//! happened to records (delivered, redelivered, acknowledged, released, dead-lettered, lock
//! expiries) since the engine started.

use prometheus::proto::MetricFamily;

use super::family::Family;
use crate::queues::ShareGroups;

pub(super) fn collect(shares: &ShareGroups, out: &mut Vec<MetricFamily>) {
    let mut depth = Family::gauge(
        "sluice_share_group_queue_depth_records",
        "Records of the partition the share group has not finished: available, in flight, and not yet delivered.",
    );
    let mut in_flight = Family::gauge(
        "sluice_share_group_in_flight_records",
        "Records locked to a member now.",
    );
    let mut counters = [
        ("delivered", "Deliveries, first ones and again."),
        ("redelivered", "Deliveries after the first of a record."),
        ("acked", "Records acknowledged."),
        (
            "released",
            "Records members gave back (a release, or a member leaving).",
        ),
        ("dead_lettered", "Records sent to the dead-letter topic."),
        (
            "lock_expiries",
            "Locks that ended without an acknowledgement.",
        ),
    ]
    .map(|(name, help)| {
        (
            name,
            Family::counter(&format!("sluice_share_group_{name}_total"), help),
        )
    });
    for group in shares.list() {
        let Ok(description) = shares.describe(&group) else {
            continue;
        };
        for p in &description.partitions {
            let id = p.partition.to_string();
            let labels = [
                ("group", group.as_str()),
                ("topic", p.topic.as_str()),
                ("partition", id.as_str()),
            ];
            depth.sample(&labels, p.queue_depth as f64);
            in_flight.sample(&labels, p.tally.in_flight as f64);
            let c = &p.counters;
            let values = [
                c.delivered,
                c.redelivered,
                c.acked,
                c.released,
                c.dead_lettered,
                c.lock_expiries,
            ];
            for ((_, family), value) in counters.iter_mut().zip(values) {
                family.sample(&labels, value as f64);
            }
        }
    }
    depth.into(out);
    in_flight.into(out);
    for (_, family) in counters {
        family.into(out);
    }
}
