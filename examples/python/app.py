"""Order totals: a Sluice consumer in Python, with the Python SDK (sdk/python).

Keeps a running total of cents per customer in the group's state and emits each
order with that total. See ../README.md for the job every example does; order.py reads
the orders.
"""

from json.encoder import encode_basestring as encode_string

import sluice_sdk
from order import parse_order
from sluice_sdk import emit, log, state


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
