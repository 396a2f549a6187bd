"""{{name}}: counts records per key.

The count lives in the group's state (key = the record's key, value = the count as
decimal text) and each record emits its key's new count to the `output` topic. A record
without a key is rejected as poison: it goes to the dead-letter topic and processing
continues. Build with `sluice plugin build .`, which puts the Python SDK (`sluice_sdk`) in
the component.
"""

import sluice_sdk
from sluice_sdk import emit, log, state


class Counter(sluice_sdk.Consumer):
    output = "counts"

    def init(self, config):
        self.output = config.get("output", self.output)
        log.info("{{name}} ready", output=self.output)

    def on_record(self, record):
        if record.key is None:
            raise sluice_sdk.Poison(record, "record has no key")
        count = str(int(state.get(record.key) or b"0") + 1).encode()
        state.set(record.key, count)
        emit.send(self.output, count, key=record.key)


WitWorld = sluice_sdk.export(Counter)
