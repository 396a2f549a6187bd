//! A predicate on one field of a JSON document: the logic of the `filter` plugin, in its own
//! crate so that the engine's benchmark can run the very same code natively as the baseline.

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Op {
    Eq,
    Ne,
    Gt,
    Ge,
    Lt,
    Le,
    Exists,
}

#[derive(Debug, Clone)]
pub struct Predicate {
    pointer: String,
    op: Op,
    value: serde_json::Value,
}

impl Predicate {
    pub fn new(field: &str, op: &str, value: &str) -> Result<Predicate, String> {
        let op = match op {
            "eq" => Op::Eq,
            "ne" => Op::Ne,
            "gt" => Op::Gt,
            "ge" => Op::Ge,
            "lt" => Op::Lt,
            "le" => Op::Le,
            "exists" => Op::Exists,
            other => {
                return Err(format!(
                    "unknown op `{other}`: use eq, ne, gt, ge, lt, le or exists"
                ));
            }
        };
        let pointer = if field.starts_with('/') {
            field.to_string()
        } else {
            format!("/{field}")
        };
        let value = serde_json::from_str(value)
            .unwrap_or_else(|_| serde_json::Value::String(value.to_string()));
        Ok(Predicate { pointer, op, value })
    }

    /// Whether a record value (JSON bytes) matches.
    pub fn matches(&self, json: &[u8]) -> bool {
        let Ok(document) = serde_json::from_slice::<serde_json::Value>(json) else {
            return false;
        };
        let Some(found) = document.pointer(&self.pointer) else {
            return false;
        };
        let ordering = match (found.as_f64(), self.value.as_f64()) {
            (Some(a), Some(b)) => a.partial_cmp(&b),
            _ => Some(text(found).cmp(&text(&self.value))),
        };
        match self.op {
            Op::Exists => true,
            Op::Eq => ordering == Some(std::cmp::Ordering::Equal),
            Op::Ne => ordering != Some(std::cmp::Ordering::Equal),
            Op::Gt => ordering == Some(std::cmp::Ordering::Greater),
            Op::Ge => matches!(
                ordering,
                Some(std::cmp::Ordering::Greater | std::cmp::Ordering::Equal)
            ),
            Op::Lt => ordering == Some(std::cmp::Ordering::Less),
            Op::Le => matches!(
                ordering,
                Some(std::cmp::Ordering::Less | std::cmp::Ordering::Equal)
            ),
        }
    }
}

fn text(value: &serde_json::Value) -> String {
    match value {
        serde_json::Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::Predicate;

    #[test]
    fn predicates_compare_numbers_as_numbers_and_text_as_text() {
        let gt = Predicate::new("total", "gt", "10").unwrap();
        assert!(gt.matches(br#"{"total": 12.5}"#));
        assert!(!gt.matches(br#"{"total": 9}"#));
        assert!(!gt.matches(br#"{"other": 50}"#));
        assert!(!gt.matches(b"not json"));
        let eq = Predicate::new("/order/status", "eq", "paid").unwrap();
        assert!(eq.matches(br#"{"order": {"status": "paid"}}"#));
        assert!(!eq.matches(br#"{"order": {"status": "open"}}"#));
        assert!(
            Predicate::new("x", "exists", "")
                .unwrap()
                .matches(br#"{"x": null}"#)
        );
        assert!(Predicate::new("x", "like", "a").is_err());
    }
}
