// The consumer layer against fake engine interfaces: a batch's writes reach the engine in one
// write-many and its records in one send-frame per topic, values are kept between batches
// while the generation stays the same, and a failed batch leaves nothing behind.

import assert from "node:assert/strict";
import { test } from "node:test";

import { Writer, decodeRecords, encodeRecord } from "../frame.js";
import { Consumer, Poison, bind, emit, exportConsumer, state } from "../index.js";

const text = (b) => new TextDecoder().decode(b);

// Each fake engine starts at a generation of its own: the SDK's state is one per module, as
// in a component, so a test must not find the values another test kept.
let generations = 0n;

function fakeEngine() {
  generations += 10n;
  const engine = { store: new Map(), gets: 0, writeManys: [], frames: [], generation: generations };
  bind({
    state: {
      get: (key) => {
        engine.gets += 1;
        return engine.store.get(text(key));
      },
      writeMany: (frame) => engine.writeManys.push(frame),
      scan: () => [],
      generation: () => engine.generation,
    },
    emit: { sendFrame: (topic, count, frame) => engine.frames.push({ topic, count, frame }) },
    log: { write: () => {} },
  });
  return engine;
}

function batch(keys) {
  const out = new Writer();
  for (const key of keys) encodeRecord(out, 1n, key === null ? null : new TextEncoder().encode(key), new Uint8Array([1]));
  return { topic: "in", partition: 0, baseOffset: 10n, count: keys.length, records: out.finish() };
}

class Counter extends Consumer {
  onRecord(record) {
    if (record.key === null) throw new Poison(record, "no key");
    const count = String(Number(state.getText(record.key) ?? "0") + 1);
    state.set(record.key, count);
    emit.send("counts", count, { key: record.key });
  }
}

test("one write-many and one send-frame per batch, values kept between batches", () => {
  const engine = fakeEngine();
  const { process } = exportConsumer(new Counter());
  process(batch(["a", "b", "a"]));
  process(batch(["a"]));
  assert.equal(engine.writeManys.length, 2);
  assert.equal(engine.frames.length, 2);
  assert.equal(engine.frames[0].count, 3);
  const counts = [...decodeRecords(engine.frames[0].frame, 0n, 3)].map((r) => text(r.value));
  assert.deepEqual(counts, ["1", "1", "2"]);
  assert.equal(text([...decodeRecords(engine.frames[1].frame, 0n, 1)][0].value), "3");
  assert.equal(engine.gets, 2, "a and b read once each: then kept");
});

test("a poison record fails the batch with its offset and leaves nothing behind", () => {
  const engine = fakeEngine();
  const { process } = exportConsumer(new Counter());
  assert.throws(
    () => process(batch(["a", null])),
    (thrown) => thrown.payload.tag === "poison" && thrown.payload.val.offset === 11n,
  );
  assert.equal(engine.writeManys.length, 0);
  assert.equal(engine.frames.length, 0);
  process(batch(["a"]));
  assert.equal(text([...decodeRecords(engine.frames[0].frame, 0n, 1)][0].value), "1");
});

test("a new generation drops the kept values", () => {
  const engine = fakeEngine();
  const { process } = exportConsumer(new Counter());
  process(batch(["a"]));
  engine.generation += 1n;
  process(batch(["a"]));
  assert.equal(engine.gets, 2);
});
