// Order totals: a Sluice consumer in JavaScript, with the JavaScript SDK (sdk/js).
//
// Keeps a running total of cents per customer in the group's state and emits each order
// with that total. See ../README.md for the job every example does.

import { Consumer, Poison, emit, exportConsumer, log, state } from "sluice-sdk";

// `fatal` makes invalid UTF-8 an error instead of U+FFFD; `ignoreBOM` keeps a BOM so that
// JSON.parse refuses it, as Python's json does.
const utf8 = new TextDecoder("utf-8", { fatal: true, ignoreBOM: true });

function parseOrder(value) {
  const order = JSON.parse(utf8.decode(value));
  if (typeof order !== "object" || order === null || Array.isArray(order)) {
    throw new Error("not a JSON object");
  }
  const { id, customer, cents } = order;
  // Safe integers only: the others do not survive JSON.parse's doubles exactly.
  if (!Number.isSafeInteger(id)) throw new Error("field `id` must be an integer");
  if (typeof customer !== "string" || customer === "") {
    throw new Error("field `customer` must be a non-empty string");
  }
  // A lone surrogate (from "\ud800") has no UTF-8 form for the state key.
  if (!customer.isWellFormed()) {
    throw new Error("field `customer` has a lone surrogate, which UTF-8 cannot encode");
  }
  if (!Number.isSafeInteger(cents) || cents < 0) {
    throw new Error("field `cents` must be a non-negative integer");
  }
  return { id, customer, cents };
}

class OrderTotals extends Consumer {
  output = "enriched";

  init(config) {
    this.output = config.get("output") ?? this.output;
    log.info("javascript order totals ready", { output: this.output });
  }

  onRecord(record) {
    let order;
    try {
      order = parseOrder(record.value);
    } catch (error) {
      throw new Poison(record, `javascript: invalid order: ${error.message}`);
    }
    // BigInt: a running total may pass 2^53 where doubles stop counting exactly.
    const total = BigInt(state.getText(order.customer) ?? "0") + BigInt(order.cents);
    state.set(order.customer, total.toString());
    // JSON.stringify has no BigInt: put the total's digits in by hand.
    const body = JSON.stringify({ id: order.id, customer: order.customer, cents: order.cents });
    emit.send(this.output, `${body.slice(0, -1)},"total_cents":${total}}`, { key: order.customer });
  }
}

export const { init, process } = exportConsumer(new OrderTotals());
