"""The bytes between a plugin and the engine (wit/plugin.wit): records frames (a batch's
`records`, and what `emit.send-frame` takes) and `state.write-many` frames.

A records frame holds, per record: a varint of zigzag(timestamp in ms), a varint of
zigzag(key length, -1 for no key), the key, a varint value length, the value, a varint header
count, then per header a varint name length, the UTF-8 name, a varint value length and the
value. Varints are LEB128, at most 10 bytes. A write-many frame holds, per write, a varint key
length and the key, then 0 to delete the key or the value length plus one and the value.

Pure Python with no imports from the component, so it runs (and is tested) anywhere.
"""

from __future__ import annotations

from typing import Iterator, Optional, Sequence

#: Bytes a LEB128 varint of a 64-bit value takes at most.
VARINT_BYTES_MAX = 10


class FrameError(ValueError):
    """A frame that does not hold what it announced: never read as records."""

    def __init__(self, offset: int, reason: str) -> None:
        super().__init__(f"malformed records frame at offset {offset}: {reason}")
        self.offset = offset
        self.reason = reason


class Record:
    """One record of a batch. `key` is None when the record has none; `headers` is a list of
    (name, value) pairs, names decoded from UTF-8."""

    __slots__ = ("offset", "timestamp", "key", "value", "headers")

    def __init__(
        self,
        offset: int,
        timestamp: int,
        key: Optional[bytes],
        value: bytes,
        headers: list[tuple[str, bytes]],
    ) -> None:
        self.offset = offset
        self.timestamp = timestamp
        self.key = key
        self.value = value
        self.headers = headers

    def header(self, name: str) -> Optional[bytes]:
        """The value of the first header with this name, if any."""
        for header_name, value in self.headers:
            if header_name == name:
                return value
        return None

    def __repr__(self) -> str:
        return (
            f"Record(offset={self.offset}, timestamp={self.timestamp}, key={self.key!r}, "
            f"value={self.value!r}, headers={self.headers!r})"
        )


def _varint(data: bytes, pos: int) -> tuple[int, int]:
    """The varint at `pos` and the position after it; IndexError past the end."""
    byte = data[pos]
    if byte < 0x80:
        return byte, pos + 1
    result = byte & 0x7F
    shift = 7
    for i in range(1, VARINT_BYTES_MAX):
        byte = data[pos + i]
        result |= (byte & 0x7F) << shift
        if byte < 0x80:
            return result, pos + i + 1
        shift += 7
    raise OverflowError("a varint longer than 10 bytes")


def _signed(value: int) -> int:
    """Undoes zigzag, into the range of an i64."""
    value &= 0xFFFFFFFFFFFFFFFF
    return (value >> 1) ^ -(value & 1)


def decode_records(data: bytes, base_offset: int, count: int) -> Iterator[Record]:
    """The `count` records of a records frame, decoded one at a time as they are asked for.
    Raises FrameError at the first record the frame does not hold whole."""
    end = len(data)
    pos = 0
    varint = _varint
    for n in range(count):
        offset = base_offset + n
        try:
            # Most varints here are one byte: read those inline (a call costs more than the
            # decoding), the rest through _varint.
            # A timestamp in ms takes six bytes: decoded inline too, with no call.
            timestamp = 0
            shift = 0
            while True:
                byte = data[pos]
                pos += 1
                timestamp |= (byte & 0x7F) << shift
                if byte < 0x80:
                    break
                shift += 7
                if shift == 70:
                    raise OverflowError("a varint longer than 10 bytes")
            if shift == 63:  # ten bytes: only the low 64 bits count
                timestamp &= 0xFFFFFFFFFFFFFFFF
            byte = data[pos]
            if byte < 0x80:
                pos += 1
                key_length = (byte >> 1) ^ -(byte & 1)
            else:
                key_length, pos = varint(data, pos)
                key_length = _signed(key_length)
            if key_length == -1:
                key = None
            elif key_length < 0:
                raise FrameError(offset, f"key length {key_length}")
            else:
                stop = pos + key_length
                if stop > end:
                    raise FrameError(offset, "the key runs past the end")
                key = data[pos:stop]
                pos = stop
            byte = data[pos]
            if byte < 0x80:
                value_length = byte
                pos += 1
            else:
                value_length, pos = varint(data, pos)
            stop = pos + value_length
            if stop > end:
                raise FrameError(offset, "the value runs past the end")
            value = data[pos:stop]
            pos = stop
            header_count = data[pos]
            if header_count == 0:
                pos += 1
                yield Record(offset, (timestamp >> 1) ^ -(timestamp & 1), key, value, [])
                continue
            if header_count < 0x80:
                pos += 1
            else:
                header_count, pos = varint(data, pos)
            headers = []
            for _ in range(header_count):
                name_length, pos = varint(data, pos)
                stop = pos + name_length
                if stop > end:
                    raise FrameError(offset, "a header name runs past the end")
                name = data[pos:stop].decode("utf-8")
                pos = stop
                length, pos = varint(data, pos)
                stop = pos + length
                if stop > end:
                    raise FrameError(offset, "a header value runs past the end")
                headers.append((name, data[pos:stop]))
                pos = stop
        except IndexError:
            raise FrameError(offset, "the frame ends inside the record") from None
        except OverflowError as error:
            raise FrameError(offset, str(error)) from None
        except UnicodeDecodeError:
            raise FrameError(offset, "a header name is not UTF-8") from None
        yield Record(offset, _signed(timestamp), key, value, headers)


def put_varint(out: bytearray, value: int) -> None:
    """Appends `value` (0 to 2**64 - 1) as a LEB128 varint."""
    while value >= 0x80:
        out.append((value & 0x7F) | 0x80)
        value >>= 7
    out.append(value)


def _zigzag(value: int) -> int:
    return ((value << 1) ^ (value >> 63)) & 0xFFFFFFFFFFFFFFFF


def encode_record(
    out: bytearray,
    timestamp: int,
    key: Optional[bytes],
    value: bytes,
    headers: Sequence[tuple[str, bytes]] = (),
) -> None:
    """Appends one record to a records frame (emitted records take timestamp 0: the engine
    stamps them)."""
    if timestamp == 0:
        out.append(0)  # emitted records: the engine stamps them
    else:
        put_varint(out, _zigzag(timestamp))
    if key is None:
        out.append(1)  # zigzag(-1)
    elif len(key) < 64:
        out.append(len(key) << 1)
        out += key
    else:
        put_varint(out, _zigzag(len(key)))
        out += key
    if len(value) < 0x80:
        out.append(len(value))
    else:
        put_varint(out, len(value))
    out += value
    if not headers:
        out.append(0)
        return
    put_varint(out, len(headers))
    for name, header_value in headers:
        encoded = name.encode("utf-8")
        put_varint(out, len(encoded))
        out += encoded
        put_varint(out, len(header_value))
        out += header_value


def encode_write(out: bytearray, key: bytes, value: Optional[bytes]) -> None:
    """Appends one write to a `state.write-many` frame: None deletes the key."""
    put_varint(out, len(key))
    out += key
    if value is None:
        out.append(0)
    else:
        put_varint(out, len(value) + 1)
        out += value
