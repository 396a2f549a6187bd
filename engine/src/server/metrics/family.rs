//! Metric families built at scrape time from the engine's own state (topics, groups, plugins,
//! the archive), for the values that live there rather than in an instrument.

use prometheus::proto::{Counter, Gauge, LabelPair, Metric, MetricFamily, MetricType};

/// One family: a name, its help, its type, and a sample per label set.
pub(super) struct Family {
    family: MetricFamily,
}

impl Family {
    /// A counter when `counter`, else a gauge.
    pub fn of(name: &str, help: &str, counter: bool) -> Family {
        match counter {
            true => Family::counter(name, help),
            false => Family::gauge(name, help),
        }
    }

    pub fn gauge(name: &str, help: &str) -> Family {
        Family::new(name, help, MetricType::GAUGE)
    }

    /// A counter; its name ends in `_total`.
    pub fn counter(name: &str, help: &str) -> Family {
        debug_assert!(name.ends_with("_total"), "{name}");
        Family::new(name, help, MetricType::COUNTER)
    }

    fn new(name: &str, help: &str, kind: MetricType) -> Family {
        let mut family = MetricFamily::default();
        family.set_name(name.to_string());
        family.set_help(help.to_string());
        family.set_field_type(kind);
        Family { family }
    }

    pub fn sample(&mut self, labels: &[(&str, &str)], value: f64) {
        let mut metric = Metric::default();
        metric.set_label(
            labels
                .iter()
                .map(|(name, value)| {
                    let mut pair = LabelPair::default();
                    pair.set_name(name.to_string());
                    pair.set_value(value.to_string());
                    pair
                })
                .collect(),
        );
        match self.family.get_field_type() {
            MetricType::COUNTER => {
                let mut counter = Counter::default();
                counter.set_value(value);
                metric.set_counter(counter);
            }
            _ => {
                let mut gauge = Gauge::default();
                gauge.set_value(value);
                metric.set_gauge(gauge);
            }
        }
        self.family.mut_metric().push(metric);
    }

    /// Adds the family to `out` unless it has no samples (the text format has no empty
    /// families).
    pub fn into(self, out: &mut Vec<MetricFamily>) {
        if !self.family.get_metric().is_empty() {
            out.push(self.family);
        }
    }
}

/// A histogram kept elsewhere (one per plugin group), with `labels` added to its samples;
/// every such histogram of one name goes into one family.
pub(super) fn labelled(
    histogram: &prometheus::Histogram,
    labels: &[(&str, &str)],
    out: &mut Vec<MetricFamily>,
) {
    use prometheus::core::Collector;
    for mut family in histogram.collect() {
        for metric in family.mut_metric() {
            let mut pairs: Vec<LabelPair> = metric.get_label().to_vec();
            pairs.extend(labels.iter().map(|(name, value)| {
                let mut pair = LabelPair::default();
                pair.set_name(name.to_string());
                pair.set_value(value.to_string());
                pair
            }));
            metric.set_label(pairs);
        }
        match out.iter_mut().find(|f| f.name() == family.name()) {
            Some(existing) => existing.mut_metric().extend(family.take_metric()),
            None => out.push(family),
        }
    }
}
