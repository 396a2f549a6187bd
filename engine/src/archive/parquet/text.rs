//! Keys and values as their column encoding holds them (see [`ColumnEncoding`]): bytes as
//! they are, or text (UTF-8, or one JSON value) with the bytes that are not kept whole in a
//! side column, and why in `_undecoded`. Written on the encoding threads, read back by replay
//! and verification, which join the two columns into the bytes that were produced.

use std::collections::BTreeMap;
use std::sync::Arc;

use arrow_array::builder::{BinaryBuilder, StringBuilder};
use arrow_array::cast::AsArray;
use arrow_array::{Array, ArrayRef, BinaryArray, StringArray};
use arrow_schema::{ArrowError, DataType};

use crate::archive::columns::ColumnEncoding;

/// Why rows of a row group are in a side column, by row: `key: ...`, `value: ...` or both.
#[derive(Default)]
pub struct Undecoded {
    reasons: BTreeMap<usize, String>,
}

impl Undecoded {
    fn add(&mut self, row: usize, what: &str, reason: &str) {
        let entry = self.reasons.entry(row).or_default();
        if !entry.is_empty() {
            entry.push_str("; ");
        }
        entry.push_str(what);
        entry.push_str(": ");
        entry.push_str(reason);
    }

    /// The `_undecoded` column of `rows` rows.
    pub fn finish(self, rows: usize) -> ArrayRef {
        if self.reasons.is_empty() {
            return Arc::new(StringArray::new_null(rows));
        }
        let mut column = StringBuilder::new();
        for row in 0..rows {
            column.append_option(self.reasons.get(&row));
        }
        Arc::new(column.finish())
    }
}

/// Whether `bytes` fit `encoding`; if not, why.
fn check(encoding: ColumnEncoding, bytes: &[u8]) -> Result<(), String> {
    match encoding {
        ColumnEncoding::Bytes => Ok(()),
        ColumnEncoding::String => std::str::from_utf8(bytes)
            .map(drop)
            .map_err(|e| format!("not UTF-8 ({e})")),
        ColumnEncoding::Json => serde_json::from_slice::<serde::de::IgnoredAny>(bytes)
            .map(drop)
            .map_err(|e| format!("not one JSON value ({e})")),
    }
}

/// The column of `bytes` (keys or values, `what` names which) as `encoding` holds them, and
/// its side column (None for bytes, which always fit). Rows that do not fit are null in the
/// first, kept whole in the second, and named in `undecoded`.
pub fn encode(
    bytes: BinaryArray,
    encoding: ColumnEncoding,
    what: &str,
    undecoded: &mut Undecoded,
) -> Result<(ArrayRef, Option<ArrayRef>), ArrowError> {
    if encoding == ColumnEncoding::Bytes {
        return Ok((Arc::new(bytes), None));
    }
    let rows = bytes.len();
    let mut unfit = Vec::new();
    if encoding == ColumnEncoding::Json {
        unfit.extend((0..rows).filter_map(|row| {
            let reason = check(encoding, bytes.valid(row)?).err()?;
            Some((row, reason))
        }));
    }
    if unfit.is_empty() {
        // Every row fits: the same buffers, checked as UTF-8 at once.
        if let Ok(text) = StringArray::try_from_binary(bytes.clone()) {
            return Ok((Arc::new(text), Some(Arc::new(BinaryArray::new_null(rows)))));
        }
        unfit.extend((0..rows).filter_map(|row| {
            let reason = check(encoding, bytes.valid(row)?).err()?;
            Some((row, reason))
        }));
    }
    let mut text = StringBuilder::with_capacity(rows, bytes.values().len());
    let mut raw = BinaryBuilder::new();
    let mut next_unfit = unfit.into_iter().peekable();
    for row in 0..rows {
        match next_unfit.next_if(|(unfit_row, _)| *unfit_row == row) {
            Some((_, reason)) => {
                text.append_null();
                raw.append_value(bytes.value(row));
                undecoded.add(row, what, &reason);
            }
            None => {
                let fits = bytes.valid(row).map(std::str::from_utf8).transpose();
                text.append_option(fits.map_err(|e| ArrowError::from_external_error(e.into()))?);
                raw.append_null();
            }
        }
    }
    Ok((Arc::new(text.finish()), Some(Arc::new(raw.finish()))))
}

/// The bytes of a row from its column (binary, or text) and its side column if the file has
/// one: the value produced, or None for a null (no key, a tombstone).
pub fn joined<'a>(
    column: &'a dyn Array,
    raw: Option<&'a BinaryArray>,
    row: usize,
) -> Option<&'a [u8]> {
    if column.is_valid(row) {
        return match column.data_type() {
            DataType::Utf8 => Some(column.as_string::<i32>().value(row).as_bytes()),
            _ => Some(column.as_binary::<i32>().value(row)),
        };
    }
    raw.and_then(|raw| raw.valid(row))
}

/// The value of a row of a binary array, None when null.
trait Valid {
    fn valid(&self, row: usize) -> Option<&[u8]>;
}

impl Valid for BinaryArray {
    fn valid(&self, row: usize) -> Option<&[u8]> {
        self.is_valid(row).then(|| self.value(row))
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    /// Keys or values of every kind: bytes, plain text, JSON objects and strings, none.
    fn arb_held() -> impl Strategy<Value = Option<Vec<u8>>> {
        proptest::option::of(prop_oneof![
            proptest::collection::vec(any::<u8>(), 0..40),
            "[a-z0-9 ]{0,20}".prop_map(String::into_bytes),
            any::<i64>().prop_map(|n| format!(r#"{{"n": {n}, "s": [1, "x"]}}"#).into_bytes()),
            "\\PC{0,10}".prop_map(|s| serde_json::to_vec(&s).expect("a string serialises")),
        ])
    }

    proptest! {
        /// Whatever the encoding, a row's column and side column give back its bytes; a row
        /// is flagged exactly when it is in the side column; a JSON column holds only JSON.
        #[test]
        fn every_encoding_gives_back_the_bytes(rows in proptest::collection::vec(arb_held(), 0..50)) {
            let bytes = BinaryArray::from_iter(rows.iter().map(Option::as_deref));
            for encoding in [ColumnEncoding::Bytes, ColumnEncoding::String, ColumnEncoding::Json] {
                let mut undecoded = Undecoded::default();
                let (column, raw) = encode(bytes.clone(), encoding, "value", &mut undecoded).unwrap();
                let raw = raw.as_ref().map(|raw| raw.as_binary::<i32>());
                let flags = undecoded.finish(rows.len());
                for (row, expected) in rows.iter().enumerate() {
                    prop_assert_eq!(joined(column.as_ref(), raw, row), expected.as_deref());
                    let in_raw = raw.is_some_and(|raw| raw.is_valid(row));
                    prop_assert_eq!(flags.is_valid(row), in_raw);
                    if encoding == ColumnEncoding::Json && column.is_valid(row) {
                        let text = column.as_string::<i32>().value(row);
                        prop_assert!(serde_json::from_str::<serde::de::IgnoredAny>(text).is_ok());
                    }
                }
            }
        }
    }
}
