"""Order totals: a Sluice consumer in Python (componentize-py).

Keeps a running total of cents per customer in the group's state and emits each
order with that total. See ../README.md for the job every example does.
"""

import json

import wit_world
from componentize_py_types import Err
from wit_world.imports import emit, log, state
from wit_world.imports.types import Batch, Poison, ProcessError_Failed, ProcessError_Poison

# JSON numbers are doubles in JavaScript: only integers a double holds exactly are valid,
# so that every example accepts the same orders.
MAX_SAFE_INTEGER = 2**53 - 1

output = "enriched"


class WitWorld(wit_world.WitWorld):
    def init(self, config: list[tuple[str, str]]) -> None:
        global output
        output = dict(config).get("output", output)
        log.write(log.Level.INFO, "python order totals ready", [("output", output)])

    def process(self, batch: Batch) -> None:
        for offset, value in records(batch):
            try:
                order_id, customer, cents = parse_order(value)
            except ValueError as error:
                reason = f"python: invalid order: {error}"
                raise Err(ProcessError_Poison(Poison(offset, reason)))
            key = customer.encode()
            total = int(state.get(key) or b"0") + cents
            state.set(key, str(total).encode())
            body = {"id": order_id, "customer": customer, "cents": cents, "total_cents": total}
            # ensure_ascii=False and compact separators: the same bytes as JSON.stringify.
            text = json.dumps(body, ensure_ascii=False, separators=(",", ":"))
            try:
                emit.send(output, key, text.encode(), [])
            except Err as error:
                raise Err(ProcessError_Failed(error.value))


def parse_order(value: bytes) -> tuple[int, str, int]:
    """The order's id, customer and cents; ValueError (or JSONDecodeError) if invalid."""
    # Python's json takes NaN and Infinity, which are not JSON (JSON.parse refuses them).
    order = json.loads(value.decode(), parse_constant=not_json)
    if not isinstance(order, dict):
        raise ValueError("not a JSON object")
    order_id, customer, cents = order.get("id"), order.get("customer"), order.get("cents")
    if not is_integer(order_id):
        raise ValueError("field `id` must be an integer")
    if not isinstance(customer, str) or not customer:
        raise ValueError("field `customer` must be a non-empty string")
    # A lone surrogate (from "\ud800") has no UTF-8 form for the state key.
    customer.encode()
    if not is_integer(cents) or cents < 0:
        raise ValueError("field `cents` must be a non-negative integer")
    return int(order_id), customer, int(cents)


def is_integer(value: object) -> bool:
    # bool is a subclass of int; 1.0 is the same number as 1 to JSON.parse, so it counts.
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return False
    return abs(value) <= MAX_SAFE_INTEGER and float(value).is_integer()


def not_json(name: str) -> None:
    raise ValueError(f"{name} is not valid JSON")


def records(batch: Batch):
    """Yields (offset, value) of each record of the batch's records frame."""
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
        take(max(zigzag(), 0))  # key; -1 means none
        value = take(varint())
        for _ in range(varint()):  # headers: name, then value
            take(varint())
            take(varint())
        yield batch.base_offset + n, value
