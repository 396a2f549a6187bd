"""Order totals: a Sluice consumer in Python, with the Python SDK (sdk/python).

Keeps a running total of cents per customer in the group's state and emits each
order with that total. See ../README.md for the job every example does.
"""

import json

import sluice_sdk
from sluice_sdk import emit, log, state

# JSON numbers are doubles in JavaScript: only integers a double holds exactly are valid,
# so that every example accepts the same orders.
MAX_SAFE_INTEGER = 2**53 - 1


def is_integer(value) -> bool:
    # bool is a subclass of int; 1.0 is the same number as 1 to JSON.parse, so it counts.
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return False
    return abs(value) <= MAX_SAFE_INTEGER and float(value).is_integer()


def not_json(name):
    # Python's json takes NaN and Infinity, which are not JSON (JSON.parse refuses them).
    raise ValueError(f"{name} is not valid JSON")


# Made once: json.loads and json.dumps with options build a new decoder or encoder per call.
DECODER = json.JSONDecoder(parse_constant=not_json)
# ensure_ascii=False and compact separators: the same bytes as JSON.stringify.
ENCODER = json.JSONEncoder(ensure_ascii=False, separators=(",", ":"))


def parse_order(value: bytes):
    """The order's id, customer and cents; ValueError (or JSONDecodeError) if invalid."""
    order = DECODER.decode(value.decode())
    if not isinstance(order, dict):
        raise ValueError("not a JSON object")
    order_id, customer, cents = order.get("id"), order.get("customer"), order.get("cents")
    if not is_integer(order_id):
        raise ValueError("field `id` must be an integer")
    if not isinstance(customer, str) or not customer:
        raise ValueError("field `customer` must be a non-empty string")
    customer.encode()  # a lone surrogate (from "\ud800") has no UTF-8 form for the state key
    if not is_integer(cents) or cents < 0:
        raise ValueError("field `cents` must be a non-negative integer")
    return int(order_id), customer, int(cents)


class OrderTotals(sluice_sdk.Consumer):
    output = "enriched"

    def init(self, config):
        self.output = config.get("output", self.output)
        log.info("python order totals ready", output=self.output)

    def on_record(self, record):
        try:
            order_id, customer, cents = parse_order(record.value)
        except ValueError as error:
            raise sluice_sdk.Poison(record, f"python: invalid order: {error}")
        key = customer.encode()
        total = int(state.get(key) or b"0") + cents
        state.set(key, str(total).encode())
        body = {"id": order_id, "customer": customer, "cents": cents, "total_cents": total}
        emit.send(self.output, ENCODER.encode(body).encode(), key=key)


WitWorld = sluice_sdk.export(OrderTotals)
