//! Sends each record, unchanged, to an output topic chosen by the value of one JSON field.
//!
//! Settings: `field` (a top-level name or a JSON pointer), `routes` (comma-separated
//! `value=topic` pairs) and `default` (the topic for other values; without it, such records
//! are dropped). String field values are compared without their quotes; other values as JSON
//! text (`routes=true=flagged,1=ones`).

use json_predicate::Field;
use sluice_sdk::{Batch, Config, Consumer, ProcessError, Settings, emit};

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Routes {
    pub field: Field,
    pub routes: Vec<(String, String)>,
    pub default: Option<String>,
}

impl Routes {
    pub fn new(field: &str, routes: &str, default: Option<&str>) -> Result<Routes, String> {
        let routes = routes
            .split(',')
            .map(str::trim)
            .filter(|r| !r.is_empty())
            .map(|route| {
                route
                    .rsplit_once('=')
                    .map(|(value, topic)| (value.trim().to_string(), topic.trim().to_string()))
                    .filter(|(_, topic)| !topic.is_empty())
                    .ok_or_else(|| format!("route `{route}` is not value=topic"))
            })
            .collect::<Result<Vec<_>, _>>()?;
        if routes.is_empty() && default.is_none() {
            return Err("give routes=value=topic,... or default=topic".into());
        }
        Ok(Routes {
            field: Field::new(field),
            routes,
            default: default.map(str::to_string),
        })
    }

    /// The topic for a record value, if any.
    pub fn topic_for(&self, value: &[u8]) -> Option<&str> {
        let found = self.field.text(value);
        found
            .and_then(|found| {
                self.routes
                    .iter()
                    .find(|(v, _)| *v == found)
                    .map(|(_, topic)| topic.as_str())
            })
            .or(self.default.as_deref())
    }
}

static ROUTES: Settings<Routes> = Settings::new();

struct Router;

impl Consumer for Router {
    fn init(config: Config) -> Result<(), String> {
        let routes = Routes::new(
            config.require("field")?,
            config.get("routes").unwrap_or_default(),
            config.get("default"),
        )?;
        ROUTES.set(routes)
    }

    fn process(batch: &Batch) -> Result<(), ProcessError> {
        let routes = ROUTES.get()?;
        for record in batch.records() {
            let record = record?;
            if let Some(topic) = routes.topic_for(record.value) {
                let headers: Vec<(&str, &[u8])> = record.headers().collect();
                emit::send(topic, record.key, record.value, &headers)
                    .map_err(ProcessError::Failed)?;
            }
        }
        Ok(())
    }
}

sluice_sdk::export_consumer!(Router);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn routes_by_field_value_with_a_default() {
        let routes = Routes::new(
            "/kind",
            "refund=refunds, sale=sales,true=flagged",
            Some("other"),
        )
        .unwrap();
        assert_eq!(routes.topic_for(br#"{"kind": "sale"}"#), Some("sales"));
        assert_eq!(routes.topic_for(br#"{"kind": "refund"}"#), Some("refunds"));
        assert_eq!(routes.topic_for(br#"{"kind": true}"#), Some("flagged"));
        assert_eq!(routes.topic_for(br#"{"kind": "gift"}"#), Some("other"));
        assert_eq!(routes.topic_for(b"not json"), Some("other"));
    }

    #[test]
    fn without_a_default_unmatched_records_are_dropped() {
        let routes = Routes::new("kind", "sale=sales", None).unwrap();
        assert_eq!(routes.topic_for(br#"{"kind": "gift"}"#), None);
    }

    #[test]
    fn malformed_routes_are_refused() {
        assert!(Routes::new("kind", "sale", None).is_err());
        assert!(Routes::new("kind", "", None).is_err());
    }
}
