// The bytes between a plugin and the engine (wit/plugin.wit): records frames (a batch's
// `records`, and what `emit.send-frame` takes) and `state.write-many` frames.
//
// A records frame holds, per record: a varint of zigzag(timestamp in ms), a varint of
// zigzag(key length, -1 for no key), the key, a varint value length, the value, a varint
// header count, then per header a varint name length, the UTF-8 name, a varint value length
// and the value. Varints are LEB128, at most 10 bytes. A write-many frame holds, per write, a
// varint key length and the key, then 0 to delete it or the value length plus one and the
// value.
//
// Timestamps and offsets are BigInt (a timestamp needs 64 bits); lengths are Numbers (a
// frame is far shorter than 2^53 bytes). No import from the component: it runs anywhere.

/** Bytes a LEB128 varint of a 64-bit value takes at most. */
export const VARINT_BYTES_MAX = 10;

const MASK_64 = (1n << 64n) - 1n;
const utf8 = new TextDecoder("utf-8", { fatal: true });
const encoder = new TextEncoder();

/** A frame that does not hold what it announced: never read as records. */
export class FrameError extends Error {
  constructor(offset, reason) {
    super(`malformed records frame at offset ${offset}: ${reason}`);
    this.name = "FrameError";
    this.offset = offset;
    this.reason = reason;
  }
}

/** One record: `key` is null when it has none; `headers` are [name, Uint8Array] pairs. */
export class Record {
  constructor(offset, timestamp, key, value, headers) {
    this.offset = offset;
    this.timestamp = timestamp;
    this.key = key;
    this.value = value;
    this.headers = headers;
  }

  /** The value of the first header named `name`, or undefined. */
  header(name) {
    const found = this.headers.find(([headerName]) => headerName === name);
    return found?.[1];
  }
}

class Reader {
  constructor(data, offset) {
    this.data = data;
    this.pos = 0;
    this.offset = offset;
  }

  fail(reason) {
    throw new FrameError(this.offset, reason);
  }

  /** A varint as a BigInt. */
  bigVarint() {
    let result = 0n;
    for (let i = 0; i < VARINT_BYTES_MAX; i++) {
      if (this.pos >= this.data.length) this.fail("the frame ends inside the record");
      const byte = this.data[this.pos++];
      result |= BigInt(byte & 0x7f) << BigInt(7 * i);
      if (byte < 0x80) return result & MASK_64;
    }
    this.fail("a varint longer than 10 bytes");
  }

  /** A varint that is a length: a Number, checked against what is left. */
  length(what) {
    const first = this.data[this.pos];
    const value = first !== undefined && first < 0x80 ? (this.pos++, first) : this.bigVarint();
    if (BigInt(value) > BigInt(this.data.length - this.pos)) this.fail(`${what} runs past the end`);
    return Number(value);
  }

  take(length) {
    const bytes = this.data.subarray(this.pos, this.pos + length);
    this.pos += length;
    return bytes;
  }
}

/** Undoes zigzag into the range of an i64. */
function signed(value) {
  return BigInt.asIntN(64, (value >> 1n) ^ -(value & 1n));
}

/**
 * The `count` records of a records frame (a Uint8Array), decoded one at a time as they are
 * asked for. Throws FrameError at the first record the frame does not hold whole.
 */
export function* decodeRecords(data, baseOffset, count) {
  const reader = new Reader(data, BigInt(baseOffset));
  for (let n = 0; n < count; n++) {
    reader.offset = BigInt(baseOffset) + BigInt(n);
    const timestamp = signed(reader.bigVarint());
    const keyLength = signed(reader.bigVarint());
    let key = null;
    if (keyLength === -1n) {
      key = null;
    } else if (keyLength < 0n) {
      reader.fail(`key length ${keyLength}`);
    } else {
      if (keyLength > BigInt(data.length - reader.pos)) reader.fail("the key runs past the end");
      key = reader.take(Number(keyLength));
    }
    const value = reader.take(reader.length("the value"));
    const headerCount = reader.bigVarint();
    const headers = [];
    for (let h = 0n; h < headerCount; h++) {
      const nameBytes = reader.take(reader.length("a header name"));
      let name;
      try {
        name = utf8.decode(nameBytes);
      } catch {
        reader.fail("a header name is not UTF-8");
      }
      headers.push([name, reader.take(reader.length("a header value"))]);
    }
    yield new Record(reader.offset, timestamp, key, value, headers);
  }
}

/** A growing byte buffer. */
export class Writer {
  constructor(capacity = 256) {
    this.bytes = new Uint8Array(capacity);
    this.length = 0;
  }

  reserve(extra) {
    if (this.length + extra <= this.bytes.length) return;
    let size = this.bytes.length * 2;
    while (size < this.length + extra) size *= 2;
    const grown = new Uint8Array(size);
    grown.set(this.bytes.subarray(0, this.length));
    this.bytes = grown;
  }

  push(bytes) {
    this.reserve(bytes.length);
    this.bytes.set(bytes, this.length);
    this.length += bytes.length;
  }

  /** Appends `value` (a Number or BigInt, 0 to 2^64 - 1) as a varint. */
  varint(value) {
    this.reserve(VARINT_BYTES_MAX);
    if (typeof value === "number" && value < 0x80) {
      this.bytes[this.length++] = value;
      return;
    }
    let big = BigInt(value);
    while (big >= 0x80n) {
      this.bytes[this.length++] = Number(big & 0x7fn) | 0x80;
      big >>= 7n;
    }
    this.bytes[this.length++] = Number(big);
  }

  /** The bytes written so far. */
  finish() {
    return this.bytes.slice(0, this.length);
  }
}

function zigzag(value) {
  const big = BigInt.asIntN(64, BigInt(value));
  return ((big << 1n) ^ (big >> 63n)) & MASK_64;
}

/** Appends one record to a records frame (emitted records take timestamp 0). */
export function encodeRecord(out, timestamp, key, value, headers = []) {
  out.varint(zigzag(timestamp));
  if (key === null || key === undefined) {
    out.varint(1); // zigzag(-1)
  } else {
    out.varint(zigzag(key.length));
    out.push(key);
  }
  out.varint(value.length);
  out.push(value);
  out.varint(headers.length);
  for (const [name, headerValue] of headers) {
    const encoded = encoder.encode(name);
    out.varint(encoded.length);
    out.push(encoded);
    out.varint(headerValue.length);
    out.push(headerValue);
  }
}

/** Appends one write to a `state.write-many` frame: null deletes the key. */
export function encodeWrite(out, key, value) {
  out.varint(key.length);
  out.push(key);
  if (value === null || value === undefined) {
    out.varint(0);
  } else {
    out.varint(value.length + 1);
    out.push(value);
  }
}
