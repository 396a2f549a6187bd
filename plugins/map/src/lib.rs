//! Projects and renames fields of JSON records: each record becomes an object holding only the
//! listed fields, under their new names, sent to the output topic with the record's key and
//! headers.
//!
//! Settings: `output` (topic) and `fields`, a comma-separated list of `source` or
//! `source:target`, where `source` is a top-level name or a JSON pointer (`/customer/id`) and
//! `target` the name in the output (by default the last part of `source`). Fields missing from
//! a record are left out. A record whose value is not a JSON object is poison: it goes to the
//! dead-letter topic.

use serde_json::{Map, Value};
use sluice_sdk::{Batch, Config, Consumer, ProcessError, Settings, emit, poison};

/// One `source[:target]` of the `fields` setting.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Projection {
    /// A JSON pointer.
    pub source: String,
    pub target: String,
}

/// Parses the `fields` setting.
pub fn parse_fields(fields: &str) -> Result<Vec<Projection>, String> {
    let projections: Vec<Projection> = fields
        .split(',')
        .map(str::trim)
        .filter(|f| !f.is_empty())
        .map(|field| {
            let (source, target) = match field.split_once(':') {
                Some((source, target)) => (source.trim(), Some(target.trim())),
                None => (field, None),
            };
            let pointer = if source.starts_with('/') {
                source.to_string()
            } else {
                format!("/{source}")
            };
            let last = pointer.rsplit('/').next().unwrap_or_default();
            let target = target.unwrap_or(last).replace("~1", "/").replace("~0", "~");
            Projection {
                source: pointer,
                target,
            }
        })
        .collect();
    if projections.is_empty() {
        return Err("`fields` lists no field: give e.g. fields=id,total:amount".into());
    }
    if let Some(p) = projections.iter().find(|p| p.target.is_empty()) {
        return Err(format!("field `{}` has an empty target name", p.source));
    }
    Ok(projections)
}

/// The projected object, or why the value cannot be projected.
pub fn project(projections: &[Projection], value: &[u8]) -> Result<Vec<u8>, String> {
    let document: Value =
        serde_json::from_slice(value).map_err(|e| format!("value is not JSON: {e}"))?;
    if !document.is_object() {
        return Err("value is not a JSON object".into());
    }
    let mut out = Map::new();
    for p in projections {
        if let Some(found) = document.pointer(&p.source) {
            out.insert(p.target.clone(), found.clone());
        }
    }
    serde_json::to_vec(&Value::Object(out)).map_err(|e| e.to_string())
}

struct Options {
    output: String,
    projections: Vec<Projection>,
}

static SETTINGS: Settings<Options> = Settings::new();

struct MapPlugin;

impl Consumer for MapPlugin {
    fn init(config: Config) -> Result<(), String> {
        let settings = Options {
            output: config.require("output")?.to_string(),
            projections: parse_fields(config.require("fields")?)?,
        };
        SETTINGS.set(settings)
    }

    fn process(batch: &Batch) -> Result<(), ProcessError> {
        let settings = SETTINGS.get()?;
        for record in batch.records() {
            let record = record?;
            let projected = project(&settings.projections, record.value)
                .map_err(|reason| poison(record.offset, reason))?;
            let headers: Vec<(&str, &[u8])> = record.headers().collect();
            emit::send(&settings.output, record.key, &projected, &headers)
                .map_err(ProcessError::Failed)?;
        }
        Ok(())
    }
}

sluice_sdk::export_consumer!(MapPlugin);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn projects_renames_and_skips_missing_fields() {
        let fields = parse_fields("id, /customer/name:customer, total:amount, absent").unwrap();
        let out = project(
            &fields,
            br#"{"id": 7, "customer": {"name": "ada"}, "total": 12.5, "other": true}"#,
        )
        .unwrap();
        let out: Value = serde_json::from_slice(&out).unwrap();
        assert_eq!(
            out,
            serde_json::json!({"id": 7, "customer": "ada", "amount": 12.5})
        );
    }

    #[test]
    fn values_that_are_not_objects_are_refused() {
        let fields = parse_fields("id").unwrap();
        assert!(
            project(&fields, b"not json")
                .unwrap_err()
                .contains("not JSON")
        );
        assert!(
            project(&fields, b"[1]")
                .unwrap_err()
                .contains("not a JSON object")
        );
    }

    #[test]
    fn an_empty_field_list_is_a_configuration_error() {
        assert!(parse_fields(" , ").is_err());
        assert!(parse_fields("a:").is_err());
    }
}
