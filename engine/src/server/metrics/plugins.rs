//! Per plugin group: records processed, emitted and dead-lettered; calls (batches) and how
//! long they took; errors by kind; retries; state and instance memory; the running and
//! active version; and the status.

use prometheus::proto::MetricFamily;

use super::family::{Family, labelled};
use crate::runtime::{ERROR_KINDS, PluginDescription, PluginHost};

/// The statuses a group is reported in, one gauge each (1 for the current one).
const STATUSES: [&str; 6] = [
    "running", "paused", "starting", "retrying", "failing", "stopped",
];

type PluginMetric = (
    &'static str,
    &'static str,
    bool,
    fn(&PluginDescription) -> u64,
);

const PER_GROUP: [PluginMetric; 10] = [
    (
        "sluice_plugin_processed_records_total",
        "Input records the plugin processed and committed.",
        true,
        |d| d.processed_records,
    ),
    (
        "sluice_plugin_emitted_records_total",
        "Records the plugin emitted to its output topics.",
        true,
        |d| d.emitted_records,
    ),
    (
        "sluice_plugin_dead_letters_total",
        "Input records sent to the group's dead-letter topic.",
        true,
        |d| d.dead_letters,
    ),
    (
        "sluice_plugin_batches_total",
        "Calls of the plugin on a batch, failed ones included.",
        true,
        |d| d.batches,
    ),
    (
        "sluice_plugin_retries_total",
        "Calls made again after a failure, and engine failures waited out.",
        true,
        |d| d.retries,
    ),
    (
        "sluice_plugin_state_bytes",
        "Bytes of the group's committed state (keys and values).",
        false,
        |d| d.state_bytes,
    ),
    (
        "sluice_plugin_state_entries",
        "Entries of the group's committed state.",
        false,
        |d| d.state_entries,
    ),
    (
        "sluice_plugin_instance_memory_bytes",
        "Linear memory of the running instance after its last call (0 when none runs).",
        false,
        |d| d.instance_memory_bytes,
    ),
    (
        "sluice_plugin_active_version",
        "The version deployed to run (what a rollback changes).",
        false,
        |d| u64::from(d.active_version),
    ),
    (
        "sluice_plugin_running_version",
        "The version processing now (0 while none runs; differs from the active one while a switch is pending).",
        false,
        |d| d.running_version.map_or(0, u64::from),
    ),
];

/// `groups` is the host's list, read once per scrape (each description reads the store).
pub(super) fn collect(
    plugins: &PluginHost,
    groups: &[PluginDescription],
    out: &mut Vec<MetricFamily>,
) {
    for (name, help, counter, value) in PER_GROUP {
        let mut family = Family::of(name, help, counter);
        for group in groups {
            family.sample(&[("group", &group.group)], value(group) as f64);
        }
        family.into(out);
    }
    let mut errors = Family::counter(
        "sluice_plugin_errors_total",
        "Failed calls by kind: trap, deadline, memory, quota (emit quota, max_state_bytes, an output topic's record size), failed (the plugin's own error), init, engine.",
    );
    let mut status = Family::gauge(
        "sluice_plugin_status",
        "1 for the group's current status (running, paused, starting, retrying, failing, stopped), 0 for the others.",
    );
    for group in groups {
        for kind in ERROR_KINDS {
            let count = group.errors.get(kind).copied().unwrap_or(0);
            errors.sample(&[("group", &group.group), ("kind", kind)], count as f64);
        }
        let current = current_status(group);
        for name in STATUSES {
            let value = f64::from(u8::from(name == current));
            status.sample(&[("group", &group.group), ("status", name)], value);
        }
        if let Some(histogram) = plugins.batch_seconds(&group.group) {
            labelled(&histogram, &[("group", &group.group)], out);
        }
    }
    errors.into(out);
    status.into(out);
}

/// The first word of the group's status ("retrying: ..." is retrying), paused whatever the
/// worker last said when the deployment is paused.
fn current_status(group: &PluginDescription) -> &str {
    if group.paused {
        return "paused";
    }
    let word = group.status.split([':', ' ']).next().unwrap_or("");
    STATUSES
        .iter()
        .find(|s| **s == word)
        .copied()
        .unwrap_or("running")
}
