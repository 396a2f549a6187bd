//! A predicate on one field of a JSON document: the logic of the `filter` plugin, in its own
//! crate so that the benchmark (`sluice-bench`, bench/) can run the very same code natively
//! as the baseline.

use std::borrow::Cow;

use serde::de::{self, Deserialize, Deserializer, IgnoredAny, MapAccess, SeqAccess, Visitor};
use serde_json::value::RawValue;

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

/// A field of a JSON document: a JSON pointer (`/order/total`) or a top-level name (`total`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Field {
    /// The JSON pointer's reference tokens, unescaped (`~1` is `/`, `~0` is `~`).
    path: Vec<String>,
}

impl Field {
    pub fn new(field: &str) -> Field {
        let pointer = if field.starts_with('/') {
            field.to_string()
        } else {
            format!("/{field}")
        };
        let path = pointer
            .split('/')
            .skip(1)
            .map(|token| token.replace("~1", "/").replace("~0", "~"))
            .collect();
        Field { path }
    }

    /// The raw JSON of the field in `json`, if `json` is JSON and has it.
    pub fn raw<'a>(&self, json: &'a [u8]) -> Option<&'a RawValue> {
        std::str::from_utf8(json)
            .ok()
            .and_then(|text| lookup(text, &self.path))
    }

    /// The field's value as text: a string without its quotes, anything else as JSON.
    pub fn text(&self, json: &[u8]) -> Option<String> {
        let raw = self.raw(json)?;
        Some(match serde_json::from_str::<String>(raw.get()) {
            Ok(text) => text,
            Err(_) => raw.get().trim().to_string(),
        })
    }
}

#[derive(Debug, Clone)]
pub struct Predicate {
    field: Field,
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
        let value = serde_json::from_str(value)
            .unwrap_or_else(|_| serde_json::Value::String(value.to_string()));
        Ok(Predicate {
            field: Field::new(field),
            op,
            value,
        })
    }

    /// Whether a record value (JSON bytes) matches.
    pub fn matches(&self, json: &[u8]) -> bool {
        let Some(raw) = self.field.raw(json) else {
            return false;
        };
        let Ok(found) = serde_json::from_str::<serde_json::Value>(raw.get()) else {
            return false;
        };
        let found = &found;
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

/// The raw JSON at `path` in `json`, found without building the document: only the members
/// and elements on the path are looked at, the rest is skipped unparsed.
fn lookup<'a>(json: &'a str, path: &[String]) -> Option<&'a RawValue> {
    if path.is_empty() {
        return serde_json::from_str(json).ok();
    }
    let mut text = json;
    let mut current = None;
    for token in path {
        let mut reader = serde_json::Deserializer::from_str(text);
        let found: &'a RawValue = if text.trim_start().starts_with('[') {
            let index: usize = token.parse().ok()?;
            reader.deserialize_seq(Element(index)).ok()??
        } else {
            reader.deserialize_map(Member(token)).ok()??
        };
        // Nothing but whitespace may follow the document.
        reader.end().ok()?;
        text = found.get();
        current = Some(found);
    }
    current
}

/// Visits an object, keeping the raw value of one member.
struct Member<'k>(&'k str);

impl<'de> Visitor<'de> for Member<'_> {
    type Value = Option<&'de RawValue>;

    fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        f.write_str("a JSON object")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
        let mut found = None;
        while let Some(Key(key)) = map.next_key::<Key<'de>>()? {
            if found.is_none() && key == self.0 {
                found = Some(map.next_value::<&'de RawValue>()?);
            } else {
                map.next_value::<IgnoredAny>()?;
            }
        }
        Ok(found)
    }
}

/// Visits an array, keeping the raw value of one element.
struct Element(usize);

impl<'de> Visitor<'de> for Element {
    type Value = Option<&'de RawValue>;

    fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        f.write_str("a JSON array")
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Self::Value, A::Error> {
        let mut found = None;
        let mut index = 0;
        loop {
            if index == self.0 {
                match seq.next_element::<&'de RawValue>()? {
                    Some(raw) => found = Some(raw),
                    None => return Ok(None),
                }
            } else if seq.next_element::<IgnoredAny>()?.is_none() {
                return Ok(found);
            }
            index += 1;
        }
    }
}

/// An object key, borrowed from the document unless it holds escapes.
struct Key<'de>(Cow<'de, str>);

impl<'de> Deserialize<'de> for Key<'de> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct KeyVisitor;
        impl<'de> Visitor<'de> for KeyVisitor {
            type Value = Key<'de>;

            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("a string")
            }

            fn visit_borrowed_str<E: de::Error>(self, v: &'de str) -> Result<Key<'de>, E> {
                Ok(Key(Cow::Borrowed(v)))
            }

            fn visit_str<E: de::Error>(self, v: &str) -> Result<Key<'de>, E> {
                Ok(Key(Cow::Owned(v.to_string())))
            }
        }
        deserializer.deserialize_str(KeyVisitor)
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
        let nested = Predicate::new("/items/1/price", "ge", "3").unwrap();
        assert!(nested.matches(br#"{"items": [{"price": 1}, {"price": 3}], "z": {"a": [1, {}]}}"#));
        assert!(!nested.matches(br#"{"items": [{"price": 9}]}"#));
        let escaped = Predicate::new("/a~1b", "eq", "yes").unwrap();
        assert!(escaped.matches(br#"{"x": "\u0041", "a/b": "yes"}"#));
        assert!(
            Predicate::new("/k\"q", "eq", "1")
                .unwrap()
                .matches(br#"{"k\"q": 1}"#)
        );
    }
}
