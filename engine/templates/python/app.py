"""{{name}}: counts records per key.

The count lives in the group's state (key = the record's key, value = the count as
decimal text) and each record emits its key's new count to the `output` topic. A record
without a key is rejected as poison: it goes to the dead-letter topic and processing
continues. Build with `sluice plugin build .`; componentize-py generates the `wit_world`
module from wit/plugin.wit.
"""

import wit_world
from componentize_py_types import Err
from wit_world.imports import emit, log, state
from wit_world.imports.types import Batch, Poison, ProcessError_Failed, ProcessError_Poison

output = "counts"


class WitWorld(wit_world.WitWorld):
    def init(self, config: list[tuple[str, str]]) -> None:
        global output
        output = dict(config).get("output", output)
        log.write(log.Level.INFO, "{{name}} ready", [("output", output)])

    def process(self, batch: Batch) -> None:
        for offset, key in keys(batch):
            if key is None:
                raise Err(ProcessError_Poison(Poison(offset, "record has no key")))
            count = str(int(state.get(key) or b"0") + 1).encode()
            state.set(key, count)
            try:
                emit.send(output, key, count, [])
            except Err as error:
                raise Err(ProcessError_Failed(error.value))


def keys(batch: Batch):
    """Yields (offset, key or None) of each record of the batch's records frame (the
    layout is in wit/plugin.wit, `record batch`)."""
    data, pos = batch.records, 0

    def varint() -> int:
        nonlocal pos
        result = shift = 0
        while True:
            byte = data[pos]
            pos += 1
            result |= (byte & 0x7F) << shift
            if byte < 0x80:
                return result
            shift += 7

    def zigzag() -> int:
        n = varint()
        return (n >> 1) ^ -(n & 1)

    def take(length: int) -> bytes:
        nonlocal pos
        pos += length
        return data[pos - length : pos]

    for n in range(batch.count):
        zigzag()  # timestamp
        key_length = zigzag()  # -1: no key
        key = take(key_length) if key_length >= 0 else None
        take(varint())  # value
        for _ in range(varint()):  # headers: name, then value
            take(varint())
            take(varint())
        yield batch.base_offset + n, key
