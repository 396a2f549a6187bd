//! Order totals: a Sluice consumer in Rust (sluice-sdk). Keeps a running total of cents per
//! customer in the group's state and emits each order with that total; see ../README.md for
//! the job every example does.

use serde_json::Value;
use sluice_sdk::{Batch, Config, Consumer, ProcessError, Settings, emit, log, poison, state};

static OUTPUT: Settings<String> = Settings::new();

/// JSON numbers are doubles in JavaScript: only integers a double holds exactly are valid,
/// so that every example accepts the same orders.
const MAX_SAFE_INTEGER: f64 = 9_007_199_254_740_991.0;

struct Order {
    id: i64,
    customer: String,
    cents: i64,
}

fn integer(value: &Value) -> Option<i64> {
    // 1.0 is the same number as 1 to JSON.parse, so it counts; 1e300 does not fit.
    let number = value.as_f64()?;
    (number.fract() == 0.0 && number.abs() <= MAX_SAFE_INTEGER).then_some(number as i64)
}

fn parse_order(value: &[u8]) -> Result<Order, String> {
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
    Ok(Order { id, customer, cents })
}

struct OrderTotals;

impl Consumer for OrderTotals {
    fn init(config: Config) -> Result<(), String> {
        let output = config.get("output").unwrap_or("enriched").to_string();
        log::write(
            log::Level::Info,
            "rust order totals ready",
            &[("output", &output)],
        );
        OUTPUT.set(output)
    }

    fn process(batch: &Batch) -> Result<(), ProcessError> {
        let output = OUTPUT.get()?;
        for record in batch.records() {
            let record = record?;
            let order = parse_order(record.value)
                .map_err(|e| poison(record.offset, format!("rust: invalid order: {e}")))?;
            let key = order.customer.as_bytes();
            let total = state::read(key, |stored| {
                stored
                    .and_then(|s| std::str::from_utf8(s).ok()?.parse::<u128>().ok())
                    .unwrap_or(0)
            }) + order.cents as u128;
            state::set(key, total.to_string().as_bytes());
            let customer = Value::String(order.customer.clone()).to_string();
            let value = format!(
                r#"{{"id":{},"customer":{customer},"cents":{},"total_cents":{total}}}"#,
                order.id, order.cents
            );
            emit::send(output, Some(key), value.as_bytes(), &[]).map_err(ProcessError::Failed)?;
        }
        Ok(())
    }
}

sluice_sdk::export_consumer!(OrderTotals);
