// Order totals: a Sluice consumer in JavaScript, with the JavaScript SDK (sdk/js).
//
// Keeps a running total of cents per customer in the group's state and emits each order
// with that total. See ../README.md for the job every example does; order.js reads the orders.

import { Consumer, Poison, emit, exportConsumer, log, state } from "sluice-sdk";
import { parseOrder } from "./order.js";

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
