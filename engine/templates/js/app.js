// {{name}}: counts records per key.
//
// The count lives in the group's state (key = the record's key, value = the count as
// decimal text) and each record emits its key's new count to the `output` topic. A record
// without a key is rejected as poison: it goes to the dead-letter topic and processing
// continues. Build with `sluice plugin build .`, which bundles the JavaScript SDK
// ("sluice-sdk") with this file (esbuild) and makes the component (ComponentizeJS).

import { Consumer, Poison, emit, exportConsumer, log, state } from "sluice-sdk";

class Counter extends Consumer {
  output = "counts";

  init(config) {
    this.output = config.get("output") ?? this.output;
    log.info("{{name}} ready", { output: this.output });
  }

  onRecord(record) {
    if (record.key === null) throw new Poison(record, "record has no key");
    const count = String(Number(state.getText(record.key) ?? "0") + 1);
    state.set(record.key, count);
    emit.send(this.output, count, { key: record.key });
  }
}

export const { init, process } = exportConsumer(new Counter());
