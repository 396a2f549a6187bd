// {{name}}: counts records per key.
//
// The count lives in the group's state (key = the record's key, value = the count as
// decimal text) and each record emits its key's new count to the `output` topic. A record
// without a key is rejected as poison: it goes to the dead-letter topic and processing
// continues. Build with `sluice plugin build .`, which compiles the C SDK (sluice.h) with
// this file: clang-19 against wasi-libc, then wasm-tools makes the component.

#include <stdio.h>

#include "sluice.h"

static const char *output = "counts";  // the topic to emit to

sluice_status sluice_init(const sluice_config *config) {
    const char *configured = sluice_config_get(config, "output");
    if (configured) output = configured;
    sluice_log(SLUICE_INFO, "{{name}} ready", "output", output, NULL);
    return SLUICE_OK;
}

static sluice_status count(const sluice_record *record) {
    if (!record->key.ptr) return sluice_poison(record, "record has no key");
    uint64_t n = 0;
    sluice_bytes stored;
    if (sluice_state_get(record->key, &stored) && !sluice_parse_u64(stored, &n)) {
        return sluice_fail("the count of a key is not a decimal number");
    }
    char text[24];
    int len = snprintf(text, sizeof text, "%llu", (unsigned long long)n + 1);
    sluice_state_set(record->key, sluice_bytes_of(text, (size_t)len));
    sluice_emit(output, record->key, sluice_bytes_of(text, (size_t)len));
    return SLUICE_OK;
}

SLUICE_ON_RECORD(count)
