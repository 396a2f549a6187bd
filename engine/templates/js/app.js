// {{name}}: counts records per key.
//
// The count lives in the group's state (key = the record's key, value = the count as
// decimal text) and each record emits its key's new count to the `output` topic. A record
// without a key is rejected as poison: it goes to the dead-letter topic and processing
// continues. Build with `sluice plugin build .` (ComponentizeJS).

import { send } from "sluice:plugin/emit@0.1.0";
import { write } from "sluice:plugin/log@0.1.0";
import { get, set } from "sluice:plugin/state@0.1.0";

let output = "counts";
const decoder = new TextDecoder();
const encoder = new TextEncoder();

export function init(config) {
  output = new Map(config).get("output") ?? output;
  write("info", "{{name}} ready", [["output", output]]);
}

// Returning normally is `ok`; a thrown value's `payload` is the `err` case.
export function process(batch) {
  for (const [offset, key] of keys(batch)) {
    if (key === undefined) {
      throw { payload: { tag: "poison", val: { offset, reason: "record has no key" } } };
    }
    const stored = get(key);
    const count = encoder.encode(String(Number(stored ? decoder.decode(stored) : "0") + 1));
    set(key, count);
    try {
      send(output, key, count, []);
    } catch (error) {
      throw { payload: { tag: "failed", val: error.payload ?? String(error) } };
    }
  }
}

// Decodes the batch's records frame (wit/plugin.wit, `record batch`) into [offset, key].
function* keys(batch) {
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
    const keyLength = zigzag(); // -1: no key
    const key = keyLength >= 0 ? take(keyLength) : undefined;
    take(varint()); // value
    for (let headers = varint(); headers > 0; headers--) {
      take(varint()); // name
      take(varint()); // value
    }
    yield [batch.baseOffset + BigInt(n), key];
  }
}
