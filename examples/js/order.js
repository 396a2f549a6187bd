// The orders of the JavaScript example: JSON.parse after a strict UTF-8 decode, and the
// checks every example makes of an order.

// `fatal` makes invalid UTF-8 an error instead of U+FFFD; `ignoreBOM` keeps a BOM so that
// JSON.parse refuses it, as Python's json does.
const utf8 = new TextDecoder("utf-8", { fatal: true, ignoreBOM: true });

export function parseOrder(value) {
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
