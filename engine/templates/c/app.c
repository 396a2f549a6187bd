// {{name}}: counts records per key.
//
// The count lives in the group's state (key = the record's key, value = the count as
// decimal text) and each record emits its key's new count to the `output` topic. A record
// without a key is rejected as poison: it goes to the dead-letter topic and processing
// continues. Build with `sluice plugin build .`: wit-bindgen writes consumer.h from
// wit/plugin.wit, clang-19 compiles against wasi-libc, wasm-tools makes the component.

#include <stdbool.h>
#include <stdint.h>
#include <string.h>

#include "consumer.h"

// ---------------------------------------------------------------------------------------
// The records frame (wit/plugin.wit, `record batch`)

typedef struct {
    const uint8_t *p;
    size_t len, pos;
} cursor;

static bool varint(cursor *c, uint64_t *value) {
    *value = 0;
    for (unsigned shift = 0; shift < 64; shift += 7) {
        if (c->pos >= c->len) return false;
        uint8_t byte = c->p[c->pos++];
        *value |= (uint64_t)(byte & 0x7F) << shift;
        if (byte < 0x80) return true;
    }
    return false;
}

static bool zigzag(cursor *c, int64_t *value) {
    uint64_t n;
    if (!varint(c, &n)) return false;
    *value = (int64_t)(n >> 1) ^ -(int64_t)(n & 1);
    return true;
}

static bool take(cursor *c, uint64_t length, const uint8_t **bytes) {
    if (length > c->len - c->pos) return false;
    *bytes = c->p + c->pos;
    c->pos += (size_t)length;
    return true;
}

// The next record's key: *key is NULL when it has none.
static bool next_key(cursor *c, const uint8_t **key, size_t *key_len) {
    int64_t timestamp, length;
    uint64_t n, headers;
    const uint8_t *skipped;
    if (!zigzag(c, &timestamp) || !zigzag(c, &length)) return false;
    *key = NULL;
    *key_len = 0;
    if (length >= 0) {  // -1: no key
        if (!take(c, (uint64_t)length, key)) return false;
        *key_len = (size_t)length;
    }
    if (!varint(c, &n) || !take(c, n, &skipped)) return false;  // value
    if (!varint(c, &headers)) return false;
    for (; headers > 0; headers--) {
        if (!varint(c, &n) || !take(c, n, &skipped)) return false;  // name
        if (!varint(c, &n) || !take(c, n, &skipped)) return false;  // value
    }
    return true;
}

// ---------------------------------------------------------------------------------------
// The exports

static consumer_string_t output;  // the topic to emit to

bool exports_consumer_init(consumer_list_tuple2_string_string_t *config, consumer_string_t *err) {
    (void)err;  // init cannot fail
    consumer_string_free(&output);
    consumer_string_dup(&output, "counts");
    for (size_t i = 0; i < config->len; i++) {  // the last `output` wins
        consumer_tuple2_string_string_t *setting = &config->ptr[i];
        if (setting->f0.len == 6 && memcmp(setting->f0.ptr, "output", 6) == 0) {
            consumer_string_free(&output);
            output = setting->f1;  // the arguments are ours: keep this one, free the rest
            setting->f1 = (consumer_string_t){0};
        }
    }
    consumer_list_tuple2_string_string_free(config);

    consumer_tuple2_string_string_t field = {.f1 = output};
    consumer_string_set(&field.f0, "output");
    consumer_list_tuple2_string_string_t fields = {&field, 1};
    consumer_string_t message;
    consumer_string_set(&message, "{{name}} ready");
    sluice_plugin_log_write(SLUICE_PLUGIN_LOG_LEVEL_INFO, &message, &fields);
    return true;
}

// The error case of `process`, with a copy of the message: the bindings free it after the
// call returns.
static bool failed(consumer_process_error_t *err, const char *message) {
    err->tag = SLUICE_PLUGIN_TYPES_PROCESS_ERROR_FAILED;
    consumer_string_dup(&err->val.failed, message);
    return false;
}

static bool count_record(uint64_t offset, const uint8_t *key, size_t key_len,
                         consumer_process_error_t *err) {
    if (key == NULL) {
        err->tag = SLUICE_PLUGIN_TYPES_PROCESS_ERROR_POISON;
        err->val.poison.offset = offset;
        consumer_string_dup(&err->val.poison.reason, "record has no key");
        return false;
    }
    consumer_list_u8_t state_key = {(uint8_t *)key, key_len};
    consumer_list_u8_t stored;  // set only when `get` finds the key
    uint64_t count = 0;
    if (sluice_plugin_state_get(&state_key, &stored)) {
        for (size_t i = 0; i < stored.len && stored.ptr[i] >= '0' && stored.ptr[i] <= '9'; i++) {
            count = count * 10 + (stored.ptr[i] - '0');
        }
        consumer_list_u8_free(&stored);
    }
    uint8_t text[20];  // the digits of count + 1, written from the end
    size_t start = sizeof text;
    for (count++; start == sizeof text || count > 0; count /= 10) text[--start] = '0' + count % 10;
    consumer_list_u8_t count_bytes = {text + start, sizeof text - start};
    sluice_plugin_state_set(&state_key, &count_bytes);

    sluice_plugin_emit_list_header_t no_headers = {NULL, 0};
    consumer_string_t send_error;
    if (!sluice_plugin_emit_send(&output, &state_key, &count_bytes, &no_headers, &send_error)) {
        err->tag = SLUICE_PLUGIN_TYPES_PROCESS_ERROR_FAILED;
        err->val.failed = send_error;  // ours to hand on: the bindings free it
        return false;
    }
    return true;
}

bool exports_consumer_process(consumer_batch_t *batch, consumer_process_error_t *err) {
    bool ok = true;
    cursor frame = {batch->records.ptr, batch->records.len, 0};
    for (uint32_t n = 0; ok && n < batch->count; n++) {
        const uint8_t *key;
        size_t key_len;
        if (!next_key(&frame, &key, &key_len)) {
            ok = failed(err, "the batch's records frame is truncated");
        } else {
            ok = count_record(batch->base_offset + n, key, key_len, err);
        }
    }
    consumer_batch_free(batch);  // the arguments are ours to free
    return ok;
}
