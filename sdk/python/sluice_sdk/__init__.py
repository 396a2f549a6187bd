"""Write Sluice consumers in Python.

A consumer subclasses `Consumer` and overrides `process(batch)` (or `on_record(record)`, called
for each record), and `init(config)` for its settings; `export` turns it into the component's
`WitWorld`:

    import sluice_sdk
    from sluice_sdk import emit, state

    class Counter(sluice_sdk.Consumer):
        def on_record(self, record):
            if record.key is None:
                raise sluice_sdk.Poison(record, "no key")
            count = int(state.get(record.key) or b"0") + 1
            state.set(record.key, str(count).encode())
            emit.send("counts", str(count).encode(), key=record.key)

    WitWorld = sluice_sdk.export(Counter)

- Records are decoded from the batch's packed buffer one at a time, as the loop asks.
- `state` keeps what the plugin read and wrote between batches (while the engine's
  `state.generation` stays the same) and hands the engine a batch's writes in one
  `write-many` call at its end.
- `emit` buffers a batch's records per topic and sends each topic's in one `send-frame` call.
- `raise Poison(record_or_offset, reason)` sends that record to the dead-letter topic; any
  other exception fails the batch, which the engine retries, then searches for the record
  that fails it. A failed batch leaves no state writes and no emitted records behind.

`sluice plugin build` puts this package in the component. Its version is the version of the
WIT package it implements, `sluice:plugin@0.1.0`.
"""

from __future__ import annotations

from typing import Iterator, Optional, Sequence, Union

from .frame import FrameError, Record, decode_records, encode_record, encode_write

__version__ = "0.1.0"
__all__ = [
    "Batch",
    "Consumer",
    "Failed",
    "FrameError",
    "Poison",
    "Record",
    "emit",
    "export",
    "log",
    "state",
]

#: Values the plugin keeps between batches at most; past it they are dropped at a batch start.
KEPT_ENTRIES_MAX = 100_000


class Poison(Exception):
    """Raised from `process` or `on_record`: this record can never be processed. It goes to
    the group's dead-letter topic with `reason`; processing goes on after it."""

    def __init__(self, record: Union[Record, int], reason: str) -> None:
        self.offset = record.offset if isinstance(record, Record) else int(record)
        self.reason = reason
        super().__init__(f"record at offset {self.offset} is poison: {reason}")


class Failed(Exception):
    """Raised from `process` or `on_record`: the batch failed as a whole (the engine retries
    it). Any other exception fails the batch the same way."""


class Batch:
    """Consecutive records of one partition. Iterating decodes them one at a time."""

    __slots__ = ("topic", "partition", "base_offset", "count", "_records")

    def __init__(self, topic: str, partition: int, base_offset: int, count: int, records: bytes):
        self.topic = topic
        self.partition = partition
        self.base_offset = base_offset
        self.count = count
        self._records = records

    def __iter__(self) -> Iterator[Record]:
        return decode_records(self._records, self.base_offset, self.count)

    def __len__(self) -> int:
        return self.count


class Consumer:
    """Override `process` (a batch) or `on_record` (each record), and `init` for settings."""

    def init(self, config: dict[str, str]) -> None:
        """Called once per instance with the `key=value` settings given at deploy; raising
        refuses the deploy with the exception's message."""

    def process(self, batch: Batch) -> None:
        for record in batch:
            self.on_record(record)

    def on_record(self, record: Record) -> None:
        raise NotImplementedError("override on_record(record) or process(batch)")


class _State:
    """The group's state, with the values read or written kept between batches."""

    def __init__(self) -> None:
        self._raw = None
        self._kept: dict[bytes, Optional[bytes]] = {}
        self._written: dict[bytes, Optional[bytes]] = {}
        self._generation: Optional[int] = None

    def get(self, key: bytes) -> Optional[bytes]:
        """The value of `key`, or None."""
        key = bytes(key)
        try:
            return self._kept[key]
        except KeyError:
            value = self._raw.get(key)
            self._kept[key] = value
            return value

    def set(self, key: bytes, value: bytes) -> None:
        key, value = bytes(key), bytes(value)
        self._kept[key] = value
        self._written[key] = value

    def delete(self, key: bytes) -> None:
        key = bytes(key)
        self._kept[key] = None
        self._written[key] = None

    def scan(
        self, prefix: bytes, start_after: Optional[bytes] = None, limit: int = 1000
    ) -> list[tuple[bytes, bytes]]:
        """Up to `limit` (at most 1000) entries whose key starts with `prefix`, in key order,
        after `start_after`: page through a prefix with the last key seen."""
        self._flush()  # the engine merges its committed state with the writes handed to it
        return self._raw.scan(bytes(prefix), start_after, limit)

    def _begin(self) -> None:
        generation = self._raw.generation()
        if generation != self._generation or len(self._kept) > KEPT_ENTRIES_MAX:
            self._kept.clear()
            self._generation = generation

    def _flush(self) -> None:
        if not self._written:
            return
        frame = bytearray()
        for key, value in self._written.items():
            encode_write(frame, key, value)
        self._written.clear()
        self._raw.write_many(bytes(frame))

    def _forget(self) -> None:
        """After a failed batch: the engine dropped its writes, so drop what was kept."""
        self._kept.clear()
        self._written.clear()


class _Emit:
    """Records sent to output topics, buffered per topic and sent at the end of the batch."""

    def __init__(self) -> None:
        self._raw = None
        self._frames: dict[str, list] = {}

    def send(
        self,
        topic: str,
        value: bytes,
        key: Optional[bytes] = None,
        headers: Sequence[tuple[str, bytes]] = (),
    ) -> None:
        """Emits a record to `topic` (one of the group's output topics); it becomes visible
        when the batch commits."""
        buffered = self._frames.get(topic)
        if buffered is None:
            buffered = self._frames[topic] = [bytearray(), 0]
        buffered[1] += 1
        frame = buffered[0]
        # The usual record inline (a call costs more than encoding it): timestamp 0 (the
        # engine stamps emitted records), a key under 64 bytes, a value under 128, no headers.
        if not headers and len(value) < 0x80 and (key is None or len(key) < 64):
            if key is None:
                frame += b"\x00\x01"
            else:
                frame.append(0)
                frame.append(len(key) << 1)
                frame += key
            frame.append(len(value))
            frame += value
            frame.append(0)
            return
        encode_record(frame, 0, key, value, headers)

    def _flush(self) -> None:
        frames, self._frames = self._frames, {}
        for topic, (frame, count) in frames.items():
            self._raw.send_frame(topic, count, bytes(frame))

    def _forget(self) -> None:
        self._frames.clear()


class _Log:
    """Log lines that reach the engine's log with the group and plugin version."""

    def __init__(self) -> None:
        self._raw = None

    def _write(self, level: str, message: str, fields: dict) -> None:
        pairs = [(str(k), str(v)) for k, v in fields.items()]
        self._raw.write(getattr(self._raw.Level, level), str(message), pairs)

    def trace(self, message: str, **fields) -> None:
        self._write("TRACE", message, fields)

    def debug(self, message: str, **fields) -> None:
        self._write("DEBUG", message, fields)

    def info(self, message: str, **fields) -> None:
        self._write("INFO", message, fields)

    def warn(self, message: str, **fields) -> None:
        self._write("WARN", message, fields)

    def error(self, message: str, **fields) -> None:
        self._write("ERROR", message, fields)


state = _State()
emit = _Emit()
log = _Log()


def _describe(error: BaseException) -> str:
    return f"{type(error).__name__}: {error}"


def export(consumer) -> type:
    """The component's `WitWorld` class for a `Consumer` subclass (or instance): assign it
    to `WitWorld` in app.py."""
    # Generated by componentize-py from wit/plugin.wit when the component is built.
    import wit_world
    from componentize_py_types import Err
    from wit_world.imports import emit as raw_emit
    from wit_world.imports import log as raw_log
    from wit_world.imports import state as raw_state
    from wit_world.imports import types

    state._raw, emit._raw, log._raw = raw_state, raw_emit, raw_log
    instance = consumer() if isinstance(consumer, type) else consumer

    def fail(error: BaseException):
        state._forget()
        emit._forget()
        if isinstance(error, Poison):
            return Err(types.ProcessError_Poison(types.Poison(error.offset, error.reason)))
        if isinstance(error, Err):  # a send-frame refused (quota, not an output topic)
            return Err(types.ProcessError_Failed(str(error.value)))
        return Err(types.ProcessError_Failed(_describe(error)))

    class WitWorld(wit_world.WitWorld):
        def init(self, config: list[tuple[str, str]]) -> None:
            try:
                instance.init(dict(config))
            except Exception as error:
                raise Err(_describe(error))

        def process(self, batch) -> None:
            state._begin()
            try:
                instance.process(
                    Batch(batch.topic, batch.partition, batch.base_offset, batch.count, batch.records)
                )
                state._flush()
                emit._flush()
            except Exception as error:
                raise fail(error)

    return WitWorld
