// The JavaScript SDK against the shared test vectors (sdk/testdata/, written from the
// engine's codecs): valid frames decode to exactly their records and encode back byte for
// byte, every malformed frame is an error, and write-many frames encode byte for byte.

import assert from "node:assert/strict";
import { readFileSync } from "node:fs";
import { test } from "node:test";

import { FrameError, Writer, decodeRecords, encodeRecord, encodeWrite } from "../frame.js";

const testdata = new URL("../../testdata/", import.meta.url);
const vectors = (name) => JSON.parse(readFileSync(new URL(name, testdata), "utf8"));
const unhex = (text) => (text === null ? null : Uint8Array.from(Buffer.from(text, "hex")));
const records = vectors("records-frames.json");
const writes = vectors("write-many.json");

for (const vector of records.valid) {
  test(`decodes and encodes: ${vector.name}`, () => {
    const frame = unhex(vector.frame);
    const decoded = [...decodeRecords(frame, BigInt(vector.base_offset), vector.count)];
    assert.equal(decoded.length, vector.records.length);
    const out = new Writer();
    decoded.forEach((record, i) => {
      const want = vector.records[i];
      assert.equal(record.offset, BigInt(want.offset));
      assert.equal(record.timestamp, BigInt(want.timestamp));
      assert.deepEqual(record.key, unhex(want.key));
      assert.deepEqual(record.value, unhex(want.value));
      assert.deepEqual(
        record.headers,
        want.headers.map(([name, value]) => [name, unhex(value)]),
      );
      encodeRecord(out, record.timestamp, record.key, record.value, record.headers);
    });
    assert.deepEqual(out.finish(), frame);
  });
}

for (const vector of records.malformed) {
  test(`refuses: ${vector.name}`, () => {
    const frame = unhex(vector.frame);
    assert.throws(() => [...decodeRecords(frame, BigInt(vector.base_offset), vector.count)], FrameError);
  });
}

for (const vector of writes.valid) {
  test(`encodes writes: ${vector.name}`, () => {
    const out = new Writer();
    for (const write of vector.writes) encodeWrite(out, unhex(write.key), unhex(write.value));
    assert.deepEqual(out.finish(), unhex(vector.frame));
  });
}
