/* The C SDK's consumer layer (sluice.c) against a fake engine: the imports of the bindings
 * (bindings/consumer.h) are defined here over an in-memory state, so that the test drives the
 * exports as the engine would and checks the state cache, the one write-many and the one
 * send-frame per batch and topic, and what a failed or poisoned batch leaves behind. Built
 * with the host compiler: cc -std=c11 -Wall -Wextra -Werror, with the sanitizers. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "../bindings/consumer.h"
#include "../sluice.h"

static int failures = 0;

/* A malloc'd copy (strdup is POSIX, not C11). */
static uint8_t *copy(const char *text) {
    size_t len = strlen(text) + 1;
    return memcpy(malloc(len), text, len);
}

#define CHECK(cond, ...)                                           \
    do {                                                           \
        if (!(cond)) {                                             \
            fprintf(stderr, "FAILED %s:%d: ", __FILE__, __LINE__); \
            fprintf(stderr, __VA_ARGS__);                          \
            fprintf(stderr, "\n");                                 \
            failures++;                                            \
        }                                                          \
    } while (0)

/* ---------------------------------------------------------------------------------------
 * The fake engine */

#define STORE_ENTRIES_MAX 16
#define TEXT_BYTES_MAX 256

typedef struct {
    char key[TEXT_BYTES_MAX];
    char value[TEXT_BYTES_MAX];
    bool present;
} stored_entry;

static stored_entry store[STORE_ENTRIES_MAX];
static uint64_t generation = 1;
static int gets, write_manys, send_frames;
static char sent_topic[TEXT_BYTES_MAX];
static uint32_t sent_count;
static bool refuse_sends;
static char logged[TEXT_BYTES_MAX];

static stored_entry *stored(const uint8_t *key, size_t len, bool add) {
    for (int i = 0; i < STORE_ENTRIES_MAX; i++) {
        if (store[i].present && strlen(store[i].key) == len && memcmp(store[i].key, key, len) == 0)
            return &store[i];
    }
    for (int i = 0; add && i < STORE_ENTRIES_MAX; i++) {
        if (!store[i].present) {
            memcpy(store[i].key, key, len);
            store[i].key[len] = '\0';
            store[i].present = true;
            return &store[i];
        }
    }
    return NULL;
}

static const char *value_of(const char *key) {
    stored_entry *entry = stored((const uint8_t *)key, strlen(key), false);
    return entry ? entry->value : NULL;
}

uint64_t sluice_plugin_state_generation(void) { return generation; }

bool sluice_plugin_state_get(consumer_list_u8_t *key, consumer_list_u8_t *ret) {
    gets++;
    stored_entry *entry = stored(key->ptr, key->len, false);
    if (!entry) return false;
    ret->len = strlen(entry->value);
    ret->ptr = malloc(ret->len + 1);
    memcpy(ret->ptr, entry->value, ret->len);
    return true;
}

static uint64_t varint(const uint8_t *data, size_t *pos) {
    uint64_t value = 0;
    for (int shift = 0;; shift += 7) {
        uint8_t byte = data[(*pos)++];
        value |= (uint64_t)(byte & 0x7f) << shift;
        if (byte < 0x80) return value;
    }
}

void sluice_plugin_state_write_many(consumer_list_u8_t *writes) {
    write_manys++;
    for (size_t pos = 0; pos < writes->len;) {
        uint64_t key_len = varint(writes->ptr, &pos);
        const uint8_t *key = writes->ptr + pos;
        pos += key_len;
        uint64_t tag = varint(writes->ptr, &pos);
        stored_entry *entry = stored(key, key_len, tag != 0);
        if (tag == 0) {
            if (entry) entry->present = false;
            continue;
        }
        memcpy(entry->value, writes->ptr + pos, tag - 1);
        entry->value[tag - 1] = '\0';
        pos += tag - 1;
    }
}

void sluice_plugin_state_scan(consumer_list_u8_t *prefix, consumer_list_u8_t *start_after,
                              uint32_t limit, consumer_list_tuple2_list_u8_list_u8_t *ret) {
    (void)start_after;
    ret->ptr = malloc(STORE_ENTRIES_MAX * sizeof *ret->ptr);
    ret->len = 0;
    for (int i = 0; i < STORE_ENTRIES_MAX && ret->len < limit; i++) {
        if (!store[i].present || strncmp(store[i].key, (char *)prefix->ptr, prefix->len) != 0)
            continue;
        consumer_tuple2_list_u8_list_u8_t *entry = &ret->ptr[ret->len++];
        entry->f0.len = strlen(store[i].key);
        entry->f0.ptr = copy(store[i].key);
        entry->f1.len = strlen(store[i].value);
        entry->f1.ptr = copy(store[i].value);
    }
}

bool sluice_plugin_emit_send_frame(consumer_string_t *topic, uint32_t count,
                                   consumer_list_u8_t *records, consumer_string_t *err) {
    (void)records;
    send_frames++;
    snprintf(sent_topic, sizeof sent_topic, "%.*s", (int)topic->len, (char *)topic->ptr);
    sent_count = count;
    if (refuse_sends) {
        err->ptr = copy("not an output topic");
        err->len = strlen("not an output topic");
        return false;
    }
    return true;
}

void sluice_plugin_log_write(sluice_plugin_log_level_t level, consumer_string_t *message,
                             consumer_list_tuple2_string_string_t *fields) {
    (void)level;
    snprintf(logged, sizeof logged, "%.*s", (int)message->len, (char *)message->ptr);
    for (size_t i = 0; i < fields->len; i++) {
        size_t used = strlen(logged);
        snprintf(logged + used, sizeof logged - used, " %.*s=%.*s", (int)fields->ptr[i].f0.len,
                 (char *)fields->ptr[i].f0.ptr, (int)fields->ptr[i].f1.len,
                 (char *)fields->ptr[i].f1.ptr);
    }
}

void consumer_string_free(consumer_string_t *ret) {
    free(ret->ptr);
    ret->ptr = NULL;
    ret->len = 0;
}

void consumer_list_tuple2_string_string_free(consumer_list_tuple2_string_string_t *ptr) {
    for (size_t i = 0; i < ptr->len; i++) {
        consumer_string_free(&ptr->ptr[i].f0);
        consumer_string_free(&ptr->ptr[i].f1);
    }
    free(ptr->ptr);
}

void consumer_list_tuple2_list_u8_list_u8_free(consumer_list_tuple2_list_u8_list_u8_t *ptr) {
    for (size_t i = 0; i < ptr->len; i++) {
        free(ptr->ptr[i].f0.ptr);
        free(ptr->ptr[i].f1.ptr);
    }
    free(ptr->ptr);
}

void consumer_batch_free(consumer_batch_t *ptr) {
    free(ptr->topic.ptr);
    free(ptr->records.ptr);
}

/* ---------------------------------------------------------------------------------------
 * The consumer under test: counts records per key, as the C template does */

static const char *output = "counts";

sluice_status sluice_init(const sluice_config *config) {
    const char *configured = sluice_config_get(config, "output");
    if (configured) output = configured;
    if (sluice_config_get(config, "refuse")) return sluice_fail("refused: %s", "as asked");
    sluice_log(SLUICE_INFO, "ready", "output", output, NULL);
    return SLUICE_OK;
}

static sluice_status count(const sluice_record *record) {
    if (!record->key.ptr) return sluice_poison(record, "no key \xff here");
    uint64_t n = 0;
    sluice_bytes value;
    if (sluice_state_get(record->key, &value) && !sluice_parse_u64(value, &n))
        return sluice_fail("not a count");
    char text[24];
    int len = snprintf(text, sizeof text, "%llu", (unsigned long long)n + 1);
    sluice_state_set(record->key, sluice_bytes_of(text, (size_t)len));
    sluice_emit(output, record->key, sluice_bytes_of(text, (size_t)len));
    return SLUICE_OK;
}

SLUICE_ON_RECORD(count)

/* ---------------------------------------------------------------------------------------
 * The engine's side of the calls */

/* A batch of records with these keys (NULL: no key), as the engine hands it over. */
static consumer_batch_t batch_of(uint64_t base_offset, const char **keys, uint32_t count) {
    sluice_buffer frame = {0};
    for (uint32_t i = 0; i < count; i++) {
        sluice_bytes key = keys[i] ? sluice_str(keys[i]) : sluice_no_key();
        sluice_append_record(&frame, 1000 + i, key, sluice_str("v"), NULL, NULL, 0);
    }
    consumer_batch_t batch = {{copy("visits"), 6}, 0, base_offset, count,
                              {frame.data, frame.len}};
    return batch;
}

static bool process(uint64_t base_offset, const char **keys, uint32_t count,
                    consumer_process_error_t *err) {
    consumer_batch_t batch = batch_of(base_offset, keys, count);
    return exports_consumer_process(&batch, err);
}

static void settings(const char *name, const char *value, bool expect_ok) {
    consumer_tuple2_string_string_t *pairs = malloc(2 * sizeof *pairs);
    const char *texts[4] = {"output", "first", name, value};
    for (int i = 0; i < 2; i++) {
        pairs[i].f0.ptr = copy(texts[2 * i]);
        pairs[i].f0.len = strlen(texts[2 * i]);
        pairs[i].f1.ptr = copy(texts[2 * i + 1]);
        pairs[i].f1.len = strlen(texts[2 * i + 1]);
    }
    consumer_list_tuple2_string_string_t config = {pairs, 2};
    consumer_string_t err = {0};
    bool ok = exports_consumer_init(&config, &err);
    CHECK(ok == expect_ok, "init with %s=%s returned %d", name, value, ok);
    if (!ok) CHECK(err.len > 0 && memcmp(err.ptr, "refused: as asked", err.len) == 0,
                   "init's error: %.*s", (int)err.len, (char *)err.ptr);
    free(err.ptr);
}

static void free_error(consumer_process_error_t *err) {
    if (err->tag == SLUICE_PLUGIN_TYPES_PROCESS_ERROR_FAILED) free(err->val.failed.ptr);
    else free(err->val.poison.reason.ptr);
}

int main(void) {
    settings("refuse", "yes", false);
    settings("output", "counts", true);
    CHECK(strcmp(logged, "ready output=counts") == 0, "the log line: %s", logged);

    /* One batch: each key read once, one write-many, one send-frame. */
    consumer_process_error_t err = {0};
    const char *three[] = {"a", "b", "a"};
    CHECK(process(0, three, 3, &err), "the first batch failed");
    CHECK(gets == 2, "%d gets for two keys", gets);
    CHECK(write_manys == 1 && send_frames == 1, "%d write-many, %d send-frame calls",
          write_manys, send_frames);
    CHECK(strcmp(sent_topic, "counts") == 0 && sent_count == 3, "sent %u to %s", sent_count,
          sent_topic);
    CHECK(value_of("a") && strcmp(value_of("a"), "2") == 0, "a = %s", value_of("a"));
    CHECK(value_of("b") && strcmp(value_of("b"), "1") == 0, "b = %s", value_of("b"));

    /* The same generation: the values are kept, nothing is read again. */
    const char *one[] = {"a"};
    CHECK(process(3, one, 1, &err), "the second batch failed");
    CHECK(gets == 2, "%d gets after a batch of kept keys", gets);
    CHECK(strcmp(value_of("a"), "3") == 0, "a = %s", value_of("a"));

    /* A new generation (the engine's state changed under the plugin): read again. */
    generation++;
    strcpy(stored((const uint8_t *)"a", 1, false)->value, "10");
    CHECK(process(4, one, 1, &err), "the third batch failed");
    CHECK(gets == 3 && strcmp(value_of("a"), "11") == 0, "%d gets, a = %s", gets,
          value_of("a"));

    /* Poison: the record's offset, its reason made UTF-8, and nothing written or sent. */
    int writes_before = write_manys, sends_before = send_frames;
    const char *poisoned[] = {"a", NULL};
    CHECK(!process(5, poisoned, 2, &err), "a batch with a poison record succeeded");
    CHECK(err.tag == SLUICE_PLUGIN_TYPES_PROCESS_ERROR_POISON && err.val.poison.offset == 6,
          "tag %d offset %llu", err.tag, (unsigned long long)err.val.poison.offset);
    CHECK(err.val.poison.reason.len == 13 &&
              memcmp(err.val.poison.reason.ptr, "no key ? here", 13) == 0,
          "reason %.*s", (int)err.val.poison.reason.len, (char *)err.val.poison.reason.ptr);
    free_error(&err);
    CHECK(write_manys == writes_before && send_frames == sends_before,
          "a poisoned batch wrote or sent");
    /* What the failed batch did to `a` in the plugin is forgotten: read again. */
    CHECK(process(7, one, 1, &err), "the batch after the poison failed");
    CHECK(gets == 4 && strcmp(value_of("a"), "12") == 0, "%d gets, a = %s", gets,
          value_of("a"));

    /* A refused send-frame fails the batch with the engine's reason. */
    refuse_sends = true;
    CHECK(!process(8, one, 1, &err), "a batch whose send was refused succeeded");
    CHECK(err.tag == SLUICE_PLUGIN_TYPES_PROCESS_ERROR_FAILED &&
              err.val.failed.len == strlen("not an output topic"),
          "failed with %.*s", (int)err.val.failed.len, (char *)err.val.failed.ptr);
    free_error(&err);
    refuse_sends = false;

    /* A malformed frame fails the batch: never a misread record. */
    consumer_batch_t cut = batch_of(9, one, 1);
    cut.records.len--;
    CHECK(!exports_consumer_process(&cut, &err), "a cut frame was processed");
    CHECK(err.tag == SLUICE_PLUGIN_TYPES_PROCESS_ERROR_FAILED &&
              strstr((char *)err.val.failed.ptr, "malformed at offset 9") != NULL,
          "failed with %.*s", (int)err.val.failed.len, (char *)err.val.failed.ptr);
    free_error(&err);

    /* A scan sees the writes of the batch so far. */
    sluice_entries found = sluice_state_scan(sluice_str("a"), NULL, 10);
    CHECK(found.count == 1 && found.entries[0].value.len == 2, "scan found %zu", found.count);
    sluice_entries_free(&found);

    if (failures) {
        fprintf(stderr, "%d checks failed\n", failures);
        return 1;
    }
    printf("the C SDK's consumer layer: every check passed\n");
    return 0;
}
