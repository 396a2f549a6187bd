// Write Sluice consumers in JavaScript. A consumer extends `Consumer` and overrides
// `process(batch)` (or `onRecord(record)`, called for each record), and `init(config)` for
// its settings; `exportConsumer` gives the component's `init` and `process` exports:
//
//   import { Consumer, Poison, emit, exportConsumer, state } from "sluice-sdk";
//
//   class Counter extends Consumer {
//     onRecord(record) {
//       if (record.key === null) throw new Poison(record, "no key");
//       const count = String(Number(state.getText(record.key) ?? "0") + 1);
//       state.set(record.key, count);
//       emit.send("counts", count, { key: record.key });
//     }
//   }
//   export const { init, process } = exportConsumer(new Counter());
//
// - Records are decoded from the batch's packed buffer one at a time, as the loop asks.
// - `state` keeps what the plugin read and wrote between batches (while the engine's
//   `state.generation` stays the same) and hands a batch's writes to the engine in one
//   `write-many` call at its end.
// - `emit` buffers a batch's records per topic and sends each topic's in one `send-frame`.
// - `throw new Poison(recordOrOffset, reason)` sends that record to the dead-letter topic;
//   anything else thrown fails the batch, which the engine retries, then searches for the
//   record that fails it. A failed batch leaves no state writes and no emitted records.
//
// This module takes the engine's interfaces through `bind` (component.js binds the real
// ones), so it runs, and is tested, anywhere. Version 0.1.0: the WIT package it implements,
// sluice:plugin@0.1.0.

import { FrameError, Record, Writer, decodeRecords, encodeRecord, encodeWrite } from "./frame.js";

export { FrameError, Record };
export const version = "0.1.0";

/** Values the plugin keeps between batches at most; past it they are dropped at a batch start. */
export const KEPT_ENTRIES_MAX = 100_000;

const encoder = new TextEncoder();
const decoder = new TextDecoder();
const bytes = (value) => (typeof value === "string" ? encoder.encode(value) : value);
// Map keys must compare by content: byte keys are kept under their latin1 text.
const keyText = (key) => String.fromCharCode.apply(null, key);

/** Thrown from `process` or `onRecord`: this record can never be processed. */
export class Poison extends Error {
  constructor(record, reason) {
    const offset = record instanceof Record ? record.offset : BigInt(record);
    super(`record at offset ${offset} is poison: ${reason}`);
    this.name = "Poison";
    this.offset = offset;
    this.reason = reason;
  }
}

/** Thrown from `process` or `onRecord`: the batch failed as a whole (the engine retries). */
export class Failed extends Error {
  constructor(message) {
    super(message);
    this.name = "Failed";
  }
}

/** Consecutive records of one partition; iterating decodes them one at a time. */
export class Batch {
  constructor(raw) {
    this.topic = raw.topic;
    this.partition = raw.partition;
    this.baseOffset = raw.baseOffset;
    this.count = raw.count;
    this.records = raw.records;
  }

  [Symbol.iterator]() {
    return decodeRecords(this.records, this.baseOffset, this.count);
  }
}

/** Override `process` (a batch) or `onRecord` (each record), and `init` for settings. */
export class Consumer {
  init(_config) {}

  process(batch) {
    for (const record of batch) this.onRecord(record);
  }

  onRecord(_record) {
    throw new Error("override onRecord(record) or process(batch)");
  }
}

class State {
  constructor() {
    this.raw = null;
    this.kept = new Map(); // key text -> Uint8Array or null
    this.written = new Map(); // key text -> [key, Uint8Array or null]
    this.generation = undefined;
  }

  /** The value of `key` (a Uint8Array or string) as a Uint8Array, or null. */
  get(key) {
    key = bytes(key);
    const text = keyText(key);
    if (this.kept.has(text)) return this.kept.get(text);
    const value = this.raw.get(key) ?? null;
    this.kept.set(text, value);
    return value;
  }

  /** The value of `key` decoded from UTF-8, or null. */
  getText(key) {
    const value = this.get(key);
    return value === null ? null : decoder.decode(value);
  }

  set(key, value) {
    key = bytes(key);
    value = bytes(value);
    const text = keyText(key);
    this.kept.set(text, value);
    this.written.set(text, [key, value]);
  }

  delete(key) {
    key = bytes(key);
    const text = keyText(key);
    this.kept.set(text, null);
    this.written.set(text, [key, null]);
  }

  /** Up to `limit` (at most 1000) [key, value] entries whose key starts with `prefix`. */
  scan(prefix, startAfter = undefined, limit = 1000) {
    this.flush(); // the engine merges its committed state with the writes handed to it
    return this.raw.scan(bytes(prefix), startAfter === undefined ? undefined : bytes(startAfter), limit);
  }

  begin() {
    const generation = this.raw.generation();
    if (generation !== this.generation || this.kept.size > KEPT_ENTRIES_MAX) {
      this.kept.clear();
      this.generation = generation;
    }
  }

  flush() {
    if (this.written.size === 0) return;
    const out = new Writer();
    for (const [key, value] of this.written.values()) encodeWrite(out, key, value);
    this.written.clear();
    this.raw.writeMany(out.finish());
  }

  forget() {
    this.kept.clear();
    this.written.clear();
  }
}

class Emit {
  constructor() {
    this.raw = null;
    this.frames = new Map(); // topic -> { out, count }
  }

  /** Emits a record to `topic`; `value` and `key` are Uint8Arrays or strings, headers are
   * [name, Uint8Array or string] pairs. Visible once the batch commits. */
  send(topic, value, { key = null, headers = [] } = {}) {
    let buffered = this.frames.get(topic);
    if (buffered === undefined) {
      buffered = { out: new Writer(), count: 0 };
      this.frames.set(topic, buffered);
    }
    const pairs =
      headers.length === 0 ? headers : headers.map(([name, value]) => [name, bytes(value)]);
    encodeRecord(buffered.out, 0, key === null ? null : bytes(key), bytes(value), pairs);
    buffered.count += 1;
  }

  flush() {
    const frames = this.frames;
    this.frames = new Map();
    for (const [topic, { out, count }] of frames) {
      this.raw.sendFrame(topic, count, out.finish());
    }
  }

  forget() {
    this.frames.clear();
  }
}

class Log {
  constructor() {
    this.raw = null;
  }

  write(level, message, fields) {
    const pairs = Object.entries(fields ?? {}).map(([k, v]) => [String(k), String(v)]);
    this.raw.write(level, String(message), pairs);
  }

  trace(message, fields) { this.write("trace", message, fields); }
  debug(message, fields) { this.write("debug", message, fields); }
  info(message, fields) { this.write("info", message, fields); }
  warn(message, fields) { this.write("warn", message, fields); }
  error(message, fields) { this.write("error", message, fields); }
}

export const state = new State();
export const emit = new Emit();
export const log = new Log();

/** Hands the engine's interfaces (`sluice:plugin/state`, `emit`, `log`) to the SDK. */
export function bind(raw) {
  state.raw = raw.state;
  emit.raw = raw.emit;
  log.raw = raw.log;
}

const describe = (error) => (error instanceof Error ? `${error.name}: ${error.message}` : String(error));

/** The component's `init` and `process` exports for a `Consumer`. */
export function exportConsumer(consumer) {
  return {
    init(config) {
      try {
        consumer.init(new Map(config));
      } catch (error) {
        throw { payload: describe(error) };
      }
    },
    process(raw) {
      state.begin();
      try {
        consumer.process(new Batch(raw));
        state.flush();
        emit.flush();
      } catch (error) {
        state.forget();
        emit.forget();
        if (error instanceof Poison) {
          throw { payload: { tag: "poison", val: { offset: error.offset, reason: error.reason } } };
        }
        // A refused send-frame throws { payload: message }.
        const message = error?.payload !== undefined ? String(error.payload) : describe(error);
        throw { payload: { tag: "failed", val: message } };
      }
    },
  };
}
