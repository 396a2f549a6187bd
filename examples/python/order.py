"""The orders of the Python example: read as the JavaScript example's JSON.parse reads them,
so that every example accepts the same orders."""

import json

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
