"""Order totals: a Sluice consumer in Python, with the Python SDK (sdk/python).

Keeps a running total of cents per customer in the group's state and emits each
order with that total. See ../README.md for the job every example does.
"""

import json
from json.encoder import encode_basestring as encode_string

import sluice_sdk
from sluice_sdk import emit, log, state

# JSON numbers are doubles in JavaScript: only integers a double holds exactly are valid,
# so that every example accepts the same orders.
MAX_SAFE_INTEGER = 2**53 - 1


def is_integer(value) -> bool:
    # bool is a subclass of int (and not an integer here); 1.0 is the same number as 1 to
    # JSON.parse, so it counts.
    if type(value) is int:
        return -MAX_SAFE_INTEGER <= value <= MAX_SAFE_INTEGER
    return type(value) is float and abs(value) <= MAX_SAFE_INTEGER and value.is_integer()


def not_json(name):
    # Python's json takes NaN and Infinity, which are not JSON (JSON.parse refuses them).
    raise ValueError(f"{name} is not valid JSON")


# Made once: json.loads with options builds a new decoder per call.
DECODER = json.JSONDecoder(parse_constant=not_json)


def parse_order(value: bytes):
    """The order's id, customer, customer as UTF-8 and cents; ValueError (or
    JSONDecodeError) if invalid."""
    order = DECODER.decode(value.decode())
    if not isinstance(order, dict):
        raise ValueError("not a JSON object")
    order_id, customer, cents = order.get("id"), order.get("customer"), order.get("cents")
    if not is_integer(order_id):
        raise ValueError("field `id` must be an integer")
    if not isinstance(customer, str) or not customer:
        raise ValueError("field `customer` must be a non-empty string")
    key = customer.encode()  # a lone surrogate (from "\ud800") has no UTF-8 form: an error
    if not is_integer(cents) or cents < 0:
        raise ValueError("field `cents` must be a non-negative integer")
    return int(order_id), customer, key, int(cents)


class OrderTotals(sluice_sdk.Consumer):
    output = "enriched"

    def init(self, config):
        self.output = config.get("output", self.output)
        log.info("python order totals ready", output=self.output)

    def on_record(self, record):
        try:
            order_id, customer, key, cents = parse_order(record.value)
        except ValueError as error:
            raise sluice_sdk.Poison(record, f"python: invalid order: {error}")
        total = int(state.get(key) or b"0") + cents
        state.set(key, str(total).encode())
        # The same bytes as JSON.stringify: the customer escaped as json does with
        # ensure_ascii=False, the numbers as integers.
        body = f'{{"id":{order_id},"customer":{encode_string(customer)},"cents":{cents},"total_cents":{total}}}'
        emit.send(self.output, body.encode(), key=key)


WitWorld = sluice_sdk.export(OrderTotals)
