//! Order totals: a Sluice consumer in Rust (sluice-sdk). Keeps a running total of cents per
//! customer in the group's state and emits each order with that total; see ../README.md for
//! the job every example does; order.rs reads the orders.

mod order;

use serde_json::Value;
use sluice_sdk::{Batch, Config, Consumer, ProcessError, Settings, emit, log, poison, state};

use order::parse_order;

static OUTPUT: Settings<String> = Settings::new();

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
