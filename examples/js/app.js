// Order totals: a Sluice consumer in JavaScript (ComponentizeJS).
//
// Keeps a running total of cents per customer in the group's state and emits each order
// with that total. See ../README.md for the job every example does.

import { send } from "sluice:plugin/emit@0.1.0";
import { write } from "sluice:plugin/log@0.1.0";
import { get, set } from "sluice:plugin/state@0.1.0";

let output = "enriched";

// `fatal` makes invalid UTF-8 an error instead of U+FFFD; `ignoreBOM` keeps a BOM so that
// JSON.parse refuses it, as Python's json does.
const utf8 = new TextDecoder("utf-8", { fatal: true, ignoreBOM: true });
const encoder = new TextEncoder();

export function init(config) {
  output = new Map(config).get("output") ?? output;
  write("info", "javascript order totals ready", [["output", output]]);
}

// Returning normally is `ok`; a thrown value's `payload` is the `err` case.
export function process(batch) {
  for (const [offset, value] of records(batch)) {
    let order;
    try {
      order = parseOrder(value);
    } catch (error) {
      const reason = `javascript: invalid order: ${error.message}`;
      throw { payload: { tag: "poison", val: { offset, reason } } };
    }
    const key = encoder.encode(order.customer);
    const stored = get(key);
    // BigInt: a running total may pass 2^53 where doubles stop counting exactly.
    const total = BigInt(stored ? utf8.decode(stored) : "0") + BigInt(order.cents);
    set(key, encoder.encode(total.toString()));
    // JSON.stringify has no BigInt: put the total's digits in by hand.
    const body = JSON.stringify({ id: order.id, customer: order.customer, cents: order.cents });
    const text = `${body.slice(0, -1)},"total_cents":${total}}`;
    try {
      send(output, key, encoder.encode(text), []);
    } catch (error) {
      throw { payload: { tag: "failed", val: error.payload ?? String(error) } };
    }
  }
}

function parseOrder(value) {
  const order = JSON.parse(utf8.decode(value));
  if (typeof order !== "object" || order === null || Array.isArray(order)) {
    throw new Error("not a JSON object");
  }
  const { id, customer, cents } = order;
  // Safe integers only: the others do not survive JSON.parse's doubles exactly.
  if (!Number.isSafeInteger(id)) {
    throw new Error("field `id` must be an integer");
  }
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

// Decodes the batch's records frame (wit/plugin.wit, `record batch`) into [offset, value].
function* records(batch) {
  const data = batch.records;
  let pos = 0;
  // Arithmetic rather than bit operators: those cut to 32 bits and a timestamp has 42.
  const varint = () => {
    let result = 0;
    for (let scale = 1; ; scale *= 128) {
      const byte = data[pos++];
      result += (byte & 0x7f) * scale;
      if (byte < 0x80) return result;
    }
  };
  const zigzag = () => {
    const n = varint();
    return n % 2 ? -(n + 1) / 2 : n / 2;
  };
  const take = (length) => data.subarray(pos, (pos += length));

  for (let n = 0; n < batch.count; n++) {
    zigzag(); // timestamp
    take(Math.max(zigzag(), 0)); // key; -1 means none
    const value = take(varint());
    for (let headers = varint(); headers > 0; headers--) {
      take(varint()); // name
      take(varint()); // value
    }
    yield [batch.baseOffset + BigInt(n), value];
  }
}
