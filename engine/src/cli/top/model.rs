//! What `sluice top` shows, computed from two successive overviews: rates are the difference
//! of the two over the time between them. Pure, so it is tested without a terminal.

use std::collections::BTreeMap;

use crate::server::api::Overview;

pub struct Screen {
    pub time_ms: i64,
    pub topics: Vec<TopicRow>,
    pub groups: Vec<GroupRow>,
    pub plugins: Vec<PluginRow>,
}

pub struct TopicRow {
    pub name: String,
    pub partitions: usize,
    /// Records in the log (high watermark less log start, all partitions).
    pub records: u64,
    pub size_bytes: u64,
    pub produced_per_second: Option<f64>,
}

pub struct GroupRow {
    pub group: String,
    pub kind: String,
    pub topics: String,
    pub lag: u64,
}

pub struct PluginRow {
    pub group: String,
    pub status: String,
    pub version: String,
    pub processed: u64,
    pub processed_per_second: Option<f64>,
    pub dead_letters: u64,
    pub failed_calls: u64,
    pub memory_bytes: u64,
    /// Known only with the admin token.
    pub last_error: Option<String>,
}

/// The screen for `now`, with rates against `before` (the previous overview) when there is one.
pub fn screen(
    now: &Overview,
    before: Option<&Overview>,
    errors: &BTreeMap<String, String>,
) -> Screen {
    let seconds = before.map(|b| (now.time_ms - b.time_ms) as f64 / 1000.0);
    let rate = |now: u64, then: Option<u64>| match (then, seconds) {
        (Some(then), Some(s)) if s > 0.0 => Some(now.saturating_sub(then) as f64 / s),
        _ => None,
    };
    let topics = now
        .topics
        .iter()
        .map(|t| {
            let end: u64 = t.partitions.iter().map(|p| p.high_watermark).sum();
            let end_before = before
                .and_then(|b| b.topics.iter().find(|x| x.name == t.name))
                .map(|x| x.partitions.iter().map(|p| p.high_watermark).sum());
            TopicRow {
                name: t.name.clone(),
                partitions: t.partitions.len(),
                records: t
                    .partitions
                    .iter()
                    .map(|p| p.high_watermark - p.log_start_offset)
                    .sum(),
                size_bytes: t.partitions.iter().map(|p| p.size_bytes).sum(),
                produced_per_second: rate(end, end_before),
            }
        })
        .collect();
    let groups = now
        .groups
        .iter()
        .map(|g| {
            let mut topics: Vec<&str> = g.partitions.iter().map(|p| p.topic.as_str()).collect();
            topics.dedup();
            GroupRow {
                group: g.group.clone(),
                kind: g.kind.clone(),
                topics: topics.join(","),
                lag: g.total_lag,
            }
        })
        .collect();
    let plugins = now
        .plugins
        .iter()
        .map(|p| {
            let processed_before = before
                .and_then(|b| b.plugins.iter().find(|x| x.group == p.group))
                .map(|x| x.processed_records);
            let status = if p.paused {
                "paused"
            } else {
                p.status.as_str()
            };
            PluginRow {
                group: p.group.clone(),
                status: status.split(':').next().unwrap_or("").to_string(),
                version: match p.running_version {
                    Some(running) if running != p.active_version => {
                        format!("v{} (running v{running})", p.active_version)
                    }
                    _ => format!("v{}", p.active_version),
                },
                processed: p.processed_records,
                processed_per_second: rate(p.processed_records, processed_before),
                dead_letters: p.dead_letters,
                failed_calls: p.failed_calls,
                memory_bytes: p.instance_memory_bytes,
                last_error: errors.get(&p.group).cloned(),
            }
        })
        .collect();
    Screen {
        time_ms: now.time_ms,
        topics,
        groups,
        plugins,
    }
}

/// `1234567` as `1.2M`, `1234` as `1.2k`: columns stay narrow.
pub fn short(n: f64) -> String {
    match n {
        n if n >= 1e9 => format!("{:.1}G", n / 1e9),
        n if n >= 1e6 => format!("{:.1}M", n / 1e6),
        n if n >= 1e4 => format!("{:.1}k", n / 1e3),
        n => format!("{n:.0}"),
    }
}

/// Bytes in binary units.
pub fn bytes(n: u64) -> String {
    const UNITS: [&str; 5] = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut value = n as f64;
    let mut unit = 0;
    while value >= 1024.0 && unit < UNITS.len() - 1 {
        value /= 1024.0;
        unit += 1;
    }
    match unit {
        0 => format!("{n} B"),
        _ => format!("{value:.1} {}", UNITS[unit]),
    }
}

/// A rate per second, or `-` before there are two overviews to compare.
pub fn per_second(rate: Option<f64>) -> String {
    rate.map_or_else(|| "-".to_string(), |r| format!("{}/s", short(r)))
}

/// The tables the terminal view shows: headers, then rows of cells.
pub struct Tables {
    pub topics: (Vec<&'static str>, Vec<Vec<String>>),
    pub groups: (Vec<&'static str>, Vec<Vec<String>>),
    pub plugins: (Vec<&'static str>, Vec<Vec<String>>),
}

impl Screen {
    pub fn tables(&self) -> Tables {
        let topics = self
            .topics
            .iter()
            .map(|t| {
                vec![
                    t.name.clone(),
                    t.partitions.to_string(),
                    short(t.records as f64),
                    bytes(t.size_bytes),
                    per_second(t.produced_per_second),
                ]
            })
            .collect();
        let groups = self
            .groups
            .iter()
            .map(|g| {
                vec![
                    g.group.clone(),
                    g.kind.clone(),
                    g.topics.clone(),
                    g.lag.to_string(),
                ]
            })
            .collect();
        let plugins = self
            .plugins
            .iter()
            .map(|p| {
                vec![
                    p.group.clone(),
                    p.status.clone(),
                    p.version.clone(),
                    short(p.processed as f64),
                    per_second(p.processed_per_second),
                    p.dead_letters.to_string(),
                    p.failed_calls.to_string(),
                    bytes(p.memory_bytes),
                    p.last_error.clone().unwrap_or_default(),
                ]
            })
            .collect();
        Tables {
            topics: (vec!["TOPIC", "PARTS", "RECORDS", "SIZE", "PRODUCE"], topics),
            groups: (vec!["GROUP", "KIND", "TOPICS", "LAG"], groups),
            plugins: (
                vec![
                    "PLUGIN GROUP",
                    "STATUS",
                    "VERSION",
                    "PROCESSED",
                    "RATE",
                    "DEAD",
                    "FAILED",
                    "MEMORY",
                    "LAST ERROR",
                ],
                plugins,
            ),
        }
    }

    /// The same tables as plain text, for `sluice top --once`.
    pub fn plain(&self) -> String {
        let tables = self.tables();
        let mut out = String::new();
        for (headers, rows) in [tables.topics, tables.groups, tables.plugins] {
            let widths: Vec<usize> = (0..headers.len())
                .map(|i| {
                    rows.iter()
                        .map(|r| r[i].chars().count())
                        .chain([headers[i].len()])
                        .max()
                        .unwrap_or(0)
                })
                .collect();
            let line = |cells: Vec<&str>| {
                let padded: Vec<String> = cells
                    .iter()
                    .zip(&widths)
                    .map(|(c, w)| format!("{c:<w$}"))
                    .collect();
                padded.join("  ").trim_end().to_string()
            };
            out.push_str(&line(headers.clone()));
            out.push('\n');
            for row in &rows {
                out.push_str(&line(row.iter().map(String::as_str).collect()));
                out.push('\n');
            }
            out.push('\n');
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::server::api::{PartitionDescription, PluginSummary, TopicDescription};

    fn overview(time_ms: i64, end: u64, processed: u64) -> Overview {
        Overview {
            time_ms,
            topics: vec![TopicDescription {
                name: "t".into(),
                config: Default::default(),
                partitions: vec![PartitionDescription {
                    partition: 0,
                    log_start_offset: 10,
                    high_watermark: end,
                    size_bytes: 2048,
                    segments: 1,
                    archive_start_offset: None,
                }],
            }],
            groups: Vec::new(),
            plugins: vec![PluginSummary {
                group: "g".into(),
                topic: "t".into(),
                dlq_topic: "g.dlq".into(),
                status: "retrying: the plugin trapped".into(),
                paused: false,
                active_version: 2,
                running_version: Some(1),
                processed_records: processed,
                emitted_records: 0,
                dead_letters: 0,
                failed_calls: 3,
                state_bytes: 0,
                instance_memory_bytes: 1 << 20,
                total_lag: 0,
            }],
        }
    }

    #[test]
    fn rates_come_from_two_readings_and_the_first_has_none() {
        let first = overview(1_000, 110, 40);
        let second = overview(3_000, 210, 60);
        let none = screen(&first, None, &BTreeMap::new());
        assert_eq!(none.topics[0].produced_per_second, None);
        assert_eq!(none.topics[0].records, 100);
        let errors = BTreeMap::from([("g".to_string(), "boom".to_string())]);
        let two = screen(&second, Some(&first), &errors);
        assert_eq!(two.topics[0].produced_per_second, Some(50.0));
        assert_eq!(two.plugins[0].processed_per_second, Some(10.0));
        assert_eq!(two.plugins[0].status, "retrying");
        assert_eq!(two.plugins[0].version, "v2 (running v1)");
        assert_eq!(two.plugins[0].last_error.as_deref(), Some("boom"));
        let text = two.plain();
        assert!(text.contains("50/s") && text.contains("1.0 MiB"), "{text}");
    }
}
