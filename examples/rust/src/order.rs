//! The orders of the Rust example: read as the JavaScript example's JSON.parse reads them, so
//! that every example accepts the same orders.

use serde_json::Value;

/// JSON numbers are doubles in JavaScript: only integers a double holds exactly are valid,
/// so that every example accepts the same orders.
const MAX_SAFE_INTEGER: f64 = 9_007_199_254_740_991.0;

pub struct Order {
    pub id: i64,
    pub customer: String,
    pub cents: i64,
}

fn integer(value: &Value) -> Option<i64> {
    // 1.0 is the same number as 1 to JSON.parse, so it counts; 1e300 does not fit.
    let number = value.as_f64()?;
    (number.fract() == 0.0 && number.abs() <= MAX_SAFE_INTEGER).then_some(number as i64)
}

pub fn parse_order(value: &[u8]) -> Result<Order, String> {
    let order: Value = serde_json::from_slice(value).map_err(|e| e.to_string())?;
    let Value::Object(fields) = order else {
        return Err("not a JSON object".into());
    };
    let id = fields
        .get("id")
        .and_then(integer)
        .ok_or("field `id` must be an integer")?;
    let customer = match fields.get("customer") {
        Some(Value::String(customer)) if !customer.is_empty() => customer.clone(),
        _ => return Err("field `customer` must be a non-empty string".into()),
    };
    let cents = fields
        .get("cents")
        .and_then(integer)
        .filter(|cents| *cents >= 0)
        .ok_or("field `cents` must be a non-negative integer")?;
    Ok(Order {
        id,
        customer,
        cents,
    })
}
