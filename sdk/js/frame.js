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
//
// Decoding and encoding use Numbers wherever a value fits in 2^53 (every length, and
// timestamps of this era), and make a record's BigInts only when asked for: under
// ComponentizeJS's interpreter each BigInt is an allocation, and they were most of the cost
// of a record.

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

/** One record: `key` is null when it has none; `headers` are [name, Uint8Array] pairs;
 * `offset` and `timestamp` are BigInts (given as Numbers or BigInts). */
export class Record {
  constructor(offset, timestamp, key, value, headers) {
    this.rawOffset = offset;
    this.rawTimestamp = timestamp;
    this.key = key;
    this.value = value;
    this.headers = headers;
  }

  get offset() {
    return BigInt(this.rawOffset);
  }

  get timestamp() {
    return BigInt(this.rawTimestamp);
  }

  /** The value of the first header named `name`, or undefined. */
  header(name) {
    const found = this.headers.find(([headerName]) => headerName === name);
    return found?.[1];
  }
}

/** Largest value a varint of seven bytes holds (49 bits): always an exact Number. */
const SMALL_VARINT_BYTES_MAX = 7;

class Reader {
  constructor(data, baseOffset) {
    this.data = data;
    this.pos = 0;
    this.baseOffset = baseOffset;
    this.n = 0; // the record being read
  }

  fail(reason) {
    throw new FrameError(BigInt(this.baseOffset) + BigInt(this.n), reason);
  }

  /** A varint: a Number when it takes at most seven bytes, else a BigInt (of 64 bits). */
  varint() {
    const data = this.data;
    let result = 0;
    let scale = 1;
    for (let i = 0; i < SMALL_VARINT_BYTES_MAX; i++) {
      const byte = data[this.pos++];
      if (byte === undefined) this.fail("the frame ends inside the record");
      result += (byte & 0x7f) * scale;
      if (byte < 0x80) return result;
      scale *= 0x80;
    }
    let big = BigInt(result);
    for (let i = SMALL_VARINT_BYTES_MAX; i < VARINT_BYTES_MAX; i++) {
      const byte = data[this.pos++];
      if (byte === undefined) this.fail("the frame ends inside the record");
      big |= BigInt(byte & 0x7f) << BigInt(7 * i);
      if (byte < 0x80) return big & MASK_64;
    }
    this.fail("a varint longer than 10 bytes");
  }

  /** A varint that is a length: a Number, checked against what is left. */
  length(what) {
    const value = this.varint();
    if (typeof value !== "number" || value > this.data.length - this.pos) {
      this.fail(`${what} runs past the end`);
    }
    return value;
  }

  take(length) {
    const bytes = this.data.subarray(this.pos, this.pos + length);
    this.pos += length;
    return bytes;
  }
}

/** Undoes zigzag: a Number for a Number, into the range of an i64 for a BigInt. */
function signed(value) {
  if (typeof value === "number") return value % 2 === 0 ? value / 2 : -(value + 1) / 2;
  return BigInt.asIntN(64, (value >> 1n) ^ -(value & 1n));
}

/** The records' offsets: Numbers while they are exact, else BigInts. */
function offsetOf(base, n) {
  return typeof base === "number" ? base + n : base + BigInt(n);
}

/**
 * The `count` records of a records frame (a Uint8Array), decoded one at a time as they are
 * asked for. Throws FrameError at the first record the frame does not hold whole.
 */
export function* decodeRecords(data, baseOffset, count) {
  const bigBase = BigInt(baseOffset);
  const base = bigBase + BigInt(count) <= BigInt(Number.MAX_SAFE_INTEGER) ? Number(bigBase) : bigBase;
  const reader = new Reader(data, base);
  for (let n = 0; n < count; n++) {
    reader.n = n;
    const timestamp = signed(reader.varint());
    const keyLength = signed(reader.varint());
    let key = null;
    if (keyLength === -1 || keyLength === -1n) {
      key = null;
    } else if (typeof keyLength !== "number" || keyLength < 0) {
      reader.fail(keyLength < 0 ? `key length ${keyLength}` : "the key runs past the end");
    } else {
      if (keyLength > data.length - reader.pos) reader.fail("the key runs past the end");
      key = reader.take(keyLength);
    }
    const value = reader.take(reader.length("the value"));
    const headerCount = reader.varint();
    const headers = [];
    if (headerCount !== 0) {
      if (typeof headerCount !== "number" || headerCount > data.length - reader.pos) {
        reader.fail("the headers run past the end");
      }
      for (let h = 0; h < headerCount; h++) {
        const nameBytes = reader.take(reader.length("a header name"));
        let name;
        try {
          name = utf8.decode(nameBytes);
        } catch {
          reader.fail("a header name is not UTF-8");
        }
        headers.push([name, reader.take(reader.length("a header value"))]);
      }
    }
    yield new Record(offsetOf(base, n), timestamp, key, value, headers);
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
    if (typeof value === "number" && value <= Number.MAX_SAFE_INTEGER) {
      while (value >= 0x80) {
        this.bytes[this.length++] = (value % 0x80) | 0x80;
        value = Math.floor(value / 0x80);
      }
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
  if (typeof value === "number" && Math.abs(value) <= Number.MAX_SAFE_INTEGER / 2) {
    return value >= 0 ? value * 2 : -value * 2 - 1;
  }
  const big = BigInt.asIntN(64, BigInt(value));
  return ((big << 1n) ^ (big >> 63n)) & MASK_64;
}

/** Appends one record to a records frame (emitted records take timestamp 0). */
export function encodeRecord(out, timestamp, key, value, headers = []) {
  out.varint(zigzag(typeof timestamp === "bigint" && timestamp === 0n ? 0 : timestamp));
  if (key === null || key === undefined) {
    out.varint(1); // zigzag(-1)
  } else {
    out.varint(key.length * 2); // zigzag of a length
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
