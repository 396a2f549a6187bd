/* The consumer layer of sluice.h: the component's exports (`init`, `process`) over the
 * wit-bindgen bindings in bindings/, the state cache, the emit buffers and the log. */
#include "sluice.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "consumer.h"

/* Out of memory traps: the engine fails the batch and starts a fresh instance. */
static void *checked(void *memory) {
    if (memory == NULL) abort();
    return memory;
}

static void must(bool appended) {
    if (!appended) abort();
}

static void *copy_of(const void *bytes, size_t len) {
    void *copy = checked(malloc(len ? len : 1));
    if (len) memcpy(copy, bytes, len);
    return copy;
}

static consumer_list_u8_t wit_list(sluice_bytes bytes) {
    consumer_list_u8_t list = {(uint8_t *)bytes.ptr, bytes.len};
    return list;
}

/* A copy of `len` bytes of `text` as a WIT string, each byte that is not part of well-formed
 * UTF-8 replaced by '?': the engine takes only UTF-8 strings. */
static consumer_string_t wit_string(const char *text, size_t len) {
    uint8_t *copy = copy_of(text, len);
    for (size_t i = 0; i < len;) {
        size_t n = sluice_utf8_sequence(copy + i, len - i);
        if (n == 0) {
            copy[i] = '?';
            n = 1;
        }
        i += n;
    }
    consumer_string_t string = {copy, len};
    return string;
}

/* ---------------------------------------------------------------------------------------
 * Why the last call failed */

static char reason[SLUICE_REASON_BYTES_MAX + 1];
static size_t reason_len;
static sluice_status reason_kind; /* what set the reason: SLUICE_OK when nothing did */
static uint64_t poison_offset;

static sluice_status set_reason(sluice_status kind, const char *format, va_list args) {
    int written = vsnprintf(reason, sizeof reason, format, args);
    reason_len = written < 0 ? 0 : (size_t)written;
    if (reason_len > SLUICE_REASON_BYTES_MAX) reason_len = SLUICE_REASON_BYTES_MAX;
    reason_kind = kind;
    return kind;
}

sluice_status sluice_fail(const char *format, ...) {
    va_list args;
    va_start(args, format);
    set_reason(SLUICE_FAILED, format, args);
    va_end(args);
    return SLUICE_FAILED;
}

sluice_status sluice_poison_at(uint64_t offset, const char *format, ...) {
    va_list args;
    va_start(args, format);
    set_reason(SLUICE_POISON, format, args);
    va_end(args);
    poison_offset = offset;
    return SLUICE_POISON;
}

sluice_status sluice_poison(const sluice_record *record, const char *format, ...) {
    va_list args;
    va_start(args, format);
    set_reason(SLUICE_POISON, format, args);
    va_end(args);
    poison_offset = record->offset;
    return SLUICE_POISON;
}

/* The reason as the export's error; the bindings free it after the call returns. */
static consumer_string_t reason_string(void) { return wit_string(reason, reason_len); }

/* ---------------------------------------------------------------------------------------
 * Records and settings */

sluice_records sluice_batch_records(const sluice_batch *batch) {
    sluice_records records;
    sluice_records_init(&records, batch->records.ptr, batch->records.len, batch->base_offset,
                        batch->count);
    return records;
}

sluice_status sluice_records_status(const sluice_records *records) {
    if (records->error == NULL) return SLUICE_OK;
    return sluice_fail("the batch's records frame is malformed at offset %llu: %s",
                       (unsigned long long)records->next_offset, records->error);
}

sluice_status sluice_each_record(const sluice_batch *batch,
                                 sluice_status (*handler)(const sluice_record *)) {
    sluice_records records = sluice_batch_records(batch);
    sluice_record record;
    while (sluice_records_next(&records, &record)) {
        sluice_status status = handler(&record);
        if (status != SLUICE_OK) return status;
    }
    return sluice_records_status(&records);
}

const char *sluice_config_get(const sluice_config *config, const char *name) {
    const char *value = NULL;
    for (size_t i = 0; i < config->count; i++) {
        if (strcmp(config->settings[i].name, name) == 0) value = config->settings[i].value;
    }
    return value;
}

sluice_bytes sluice_str(const char *text) { return sluice_bytes_of(text, strlen(text)); }

bool sluice_parse_u64(sluice_bytes text, uint64_t *value) {
    uint64_t n = 0;
    if (text.len == 0) return false;
    for (size_t i = 0; i < text.len; i++) {
        uint8_t digit = (uint8_t)(text.ptr[i] - '0');
        if (digit > 9 || n > (UINT64_MAX - digit) / 10) return false;
        n = n * 10 + digit;
    }
    *value = n;
    return true;
}

/* ---------------------------------------------------------------------------------------
 * State: an open-addressing table of the keys read or written, kept between batches */

typedef struct {
    uint8_t *key; /* NULL: an empty slot */
    size_t key_len;
    uint8_t *value; /* owned; NULL when the key has no value */
    size_t value_len;
    uint64_t hash;
    bool present;
    bool written; /* in `written`: handed to the engine at the batch's end */
} kept_entry;

static kept_entry *kept;
static size_t kept_slots; /* a power of two, or 0 */
static size_t kept_count;
static size_t *written; /* slots of the entries written in this batch */
static size_t written_count, written_capacity;
static uint64_t kept_generation;
static bool kept_generation_known;
static sluice_buffer write_frame;

static uint64_t hash_of(sluice_bytes key) { /* FNV-1a */
    uint64_t hash = 0xcbf29ce484222325u;
    for (size_t i = 0; i < key.len; i++) hash = (hash ^ key.ptr[i]) * 0x100000001b3u;
    return hash;
}

/* The slot holding `key`, or the empty slot where it would go. */
static size_t slot_of(sluice_bytes key, uint64_t hash) {
    size_t mask = kept_slots - 1;
    for (size_t slot = (size_t)hash & mask;; slot = (slot + 1) & mask) {
        kept_entry *entry = &kept[slot];
        if (entry->key == NULL) return slot;
        if (entry->hash == hash && entry->key_len == key.len &&
            memcmp(entry->key, key.ptr, key.len) == 0)
            return slot;
    }
}

static void note_written(size_t slot) {
    if (written_count == written_capacity) {
        written_capacity = written_capacity ? written_capacity * 2 : 64;
        written = checked(realloc(written, written_capacity * sizeof *written));
    }
    written[written_count++] = slot;
}

/* Doubles the table (at half full, so that probes stay short). */
static void grow_kept(void) {
    kept_entry *old = kept;
    size_t old_slots = kept_slots;
    kept_slots = old_slots ? old_slots * 2 : 1024;
    kept = checked(calloc(kept_slots, sizeof *kept));
    written_count = 0;
    for (size_t i = 0; i < old_slots; i++) {
        if (old[i].key == NULL) continue;
        size_t slot = slot_of(sluice_bytes_of(old[i].key, old[i].key_len), old[i].hash);
        kept[slot] = old[i];
        if (kept[slot].written) note_written(slot);
    }
    free(old);
}

/* The entry for `key`, added (not yet read) when absent. */
static kept_entry *entry_for(sluice_bytes key, bool *added) {
    if ((kept_count + 1) * 2 > kept_slots) grow_kept();
    uint64_t hash = hash_of(key);
    kept_entry *entry = &kept[slot_of(key, hash)];
    *added = entry->key == NULL;
    if (*added) {
        entry->key = copy_of(key.ptr, key.len);
        entry->key_len = key.len;
        entry->hash = hash;
        kept_count++;
    }
    return entry;
}

static void forget_state(void) {
    for (size_t i = 0; i < kept_slots; i++) {
        free(kept[i].key);
        free(kept[i].value);
    }
    if (kept_slots) memset(kept, 0, kept_slots * sizeof *kept);
    kept_count = 0;
    written_count = 0;
}

static void begin_state(void) {
    uint64_t generation = sluice_plugin_state_generation();
    if (!kept_generation_known || generation != kept_generation ||
        kept_count > SLUICE_KEPT_ENTRIES_MAX) {
        forget_state();
        kept_generation = generation;
        kept_generation_known = true;
    }
}

static void flush_state(void) {
    if (written_count == 0) return;
    static const uint8_t empty = 0;
    write_frame.len = 0;
    for (size_t i = 0; i < written_count; i++) {
        kept_entry *entry = &kept[written[i]];
        sluice_bytes value = {NULL, 0}; /* a delete */
        if (entry->present) value = sluice_bytes_of(entry->value ? entry->value : &empty,
                                                    entry->value_len);
        must(sluice_append_write(&write_frame, sluice_bytes_of(entry->key, entry->key_len),
                                 value));
        entry->written = false;
    }
    written_count = 0;
    consumer_list_u8_t frame = {write_frame.data, write_frame.len};
    sluice_plugin_state_write_many(&frame);
}

bool sluice_state_get(sluice_bytes key, sluice_bytes *value) {
    bool added;
    kept_entry *entry = entry_for(key, &added);
    if (added) {
        consumer_list_u8_t wit_key = wit_list(key), stored;
        entry->present = sluice_plugin_state_get(&wit_key, &stored);
        if (entry->present) { /* allocated by the bindings with malloc: ours now */
            entry->value = stored.ptr;
            entry->value_len = stored.len;
        }
    }
    if (entry->present) *value = sluice_bytes_of(entry->value, entry->value_len);
    return entry->present;
}

static void put(sluice_bytes key, const sluice_bytes *value) {
    bool added;
    kept_entry *entry = entry_for(key, &added);
    free(entry->value);
    entry->value = value ? copy_of(value->ptr, value->len) : NULL;
    entry->value_len = value ? value->len : 0;
    entry->present = value != NULL;
    if (!entry->written) {
        entry->written = true;
        note_written((size_t)(entry - kept));
    }
}

void sluice_state_set(sluice_bytes key, sluice_bytes value) { put(key, &value); }

void sluice_state_delete(sluice_bytes key) { put(key, NULL); }

sluice_entries sluice_state_scan(sluice_bytes prefix, const sluice_bytes *start_after,
                                 uint32_t limit) {
    flush_state(); /* the engine merges its committed state with the writes handed to it */
    consumer_list_u8_t wit_prefix = wit_list(prefix), after = {NULL, 0};
    if (start_after) after = wit_list(*start_after);
    if (limit > SLUICE_SCAN_ENTRIES_MAX) limit = SLUICE_SCAN_ENTRIES_MAX;
    consumer_list_tuple2_list_u8_list_u8_t *found = checked(malloc(sizeof *found));
    sluice_plugin_state_scan(&wit_prefix, start_after ? &after : NULL, limit, found);
    sluice_entries result = {checked(malloc((found->len ? found->len : 1) * sizeof(sluice_entry))),
                             found->len, found};
    for (size_t i = 0; i < found->len; i++) {
        result.entries[i].key = sluice_bytes_of(found->ptr[i].f0.ptr, found->ptr[i].f0.len);
        result.entries[i].value = sluice_bytes_of(found->ptr[i].f1.ptr, found->ptr[i].f1.len);
    }
    return result;
}

void sluice_entries_free(sluice_entries *entries) {
    if (entries->owned) {
        consumer_list_tuple2_list_u8_list_u8_free(entries->owned);
        free(entries->owned);
    }
    free(entries->entries);
    entries->entries = NULL;
    entries->owned = NULL;
    entries->count = 0;
}

/* ---------------------------------------------------------------------------------------
 * Emit: a records frame per topic, sent at the batch's end */

typedef struct {
    char *topic;
    bool topic_is_utf8;
    sluice_buffer frame;
    uint32_t count;
} topic_frame;

static topic_frame *topics;
static size_t topics_len, topics_capacity;

static topic_frame *frame_for(const char *topic) {
    for (size_t i = 0; i < topics_len; i++) {
        if (strcmp(topics[i].topic, topic) == 0) return &topics[i];
    }
    if (topics_len == topics_capacity) {
        topics_capacity = topics_capacity ? topics_capacity * 2 : 4;
        topics = checked(realloc(topics, topics_capacity * sizeof *topics));
    }
    topic_frame *added = &topics[topics_len++];
    memset(added, 0, sizeof *added);
    size_t len = strlen(topic);
    added->topic = copy_of(topic, len + 1);
    added->topic_is_utf8 = true;
    for (size_t i = 0, n; i < len; i += n) {
        n = sluice_utf8_sequence((const uint8_t *)topic + i, len - i);
        if (n == 0) {
            added->topic_is_utf8 = false;
            break;
        }
    }
    return added;
}

void sluice_emit_with_headers(const char *topic, sluice_bytes key, sluice_bytes value,
                              const sluice_header *headers, size_t header_count) {
    enum { ON_STACK = 8 };
    sluice_bytes names_on_stack[ON_STACK], values_on_stack[ON_STACK];
    sluice_bytes *names = names_on_stack, *values = values_on_stack;
    if (header_count > ON_STACK) {
        names = checked(malloc(header_count * sizeof *names));
        values = checked(malloc(header_count * sizeof *values));
    }
    for (size_t i = 0; i < header_count; i++) {
        names[i] = sluice_str(headers[i].name);
        values[i] = headers[i].value;
    }
    topic_frame *frame = frame_for(topic);
    must(sluice_append_record(&frame->frame, 0, key, value, names, values, header_count));
    frame->count++;
    if (names != names_on_stack) {
        free(names);
        free(values);
    }
}

void sluice_emit(const char *topic, sluice_bytes key, sluice_bytes value) {
    sluice_emit_with_headers(topic, key, value, NULL, 0);
}

static void forget_emitted(void) {
    for (size_t i = 0; i < topics_len; i++) {
        topics[i].frame.len = 0;
        topics[i].count = 0;
    }
}

/* Sends each topic's frame; SLUICE_FAILED (with the engine's reason) at the first refused. */
static sluice_status flush_emitted(void) {
    sluice_status status = SLUICE_OK;
    for (size_t i = 0; i < topics_len && status == SLUICE_OK; i++) {
        topic_frame *frame = &topics[i];
        if (frame->count == 0) continue;
        if (!frame->topic_is_utf8) {
            status = sluice_fail("emitted to a topic whose name is not UTF-8");
            break;
        }
        consumer_string_t topic = {(uint8_t *)frame->topic, strlen(frame->topic)}, refused;
        consumer_list_u8_t records = {frame->frame.data, frame->frame.len};
        if (!sluice_plugin_emit_send_frame(&topic, frame->count, &records, &refused)) {
            status = sluice_fail("%.*s", (int)refused.len, (const char *)refused.ptr);
            consumer_string_free(&refused);
        }
    }
    forget_emitted();
    return status;
}

/* ---------------------------------------------------------------------------------------
 * Log */

void sluice_log(sluice_level level, const char *message, ...) {
    va_list args;
    size_t pairs = 0;
    va_start(args, message);
    while (va_arg(args, const char *) != NULL) pairs++;
    va_end(args);
    pairs /= 2; /* a name without a value is left out */
    consumer_tuple2_string_string_t *fields = checked(malloc((pairs ? pairs : 1) * sizeof *fields));
    va_start(args, message);
    for (size_t i = 0; i < pairs; i++) {
        const char *name = va_arg(args, const char *);
        const char *value = va_arg(args, const char *);
        fields[i].f0 = wit_string(name, strlen(name));
        fields[i].f1 = wit_string(value, strlen(value));
    }
    va_end(args);
    consumer_string_t text = wit_string(message, strlen(message));
    consumer_list_tuple2_string_string_t list = {fields, pairs};
    sluice_plugin_log_write((sluice_plugin_log_level_t)level, &text, &list);
    consumer_list_tuple2_string_string_free(&list);
    consumer_string_free(&text);
}

/* ---------------------------------------------------------------------------------------
 * The exports */

/* The bindings are generated without their object file of the world's type (the build embeds
 * the world with `wasm-tools component embed` instead), but still link to the symbol it
 * defines. */
void __component_type_object_force_link_consumer(void) {}

__attribute__((weak)) sluice_status sluice_init(const sluice_config *config) {
    (void)config;
    return SLUICE_OK;
}

static char *c_string(const consumer_string_t *string) {
    char *copy = checked(malloc(string->len + 1));
    memcpy(copy, string->ptr, string->len);
    copy[string->len] = '\0';
    return copy;
}

/* The settings, kept for the instance's life: sluice_config_get hands out pointers into them. */
static sluice_setting *settings;
static size_t settings_count;

static void keep_settings(const consumer_list_tuple2_string_string_t *config) {
    for (size_t i = 0; i < settings_count; i++) { /* an earlier init's, if any */
        free((char *)settings[i].name);
        free((char *)settings[i].value);
    }
    free(settings);
    settings = checked(malloc((config->len ? config->len : 1) * sizeof *settings));
    settings_count = config->len;
    for (size_t i = 0; i < config->len; i++) {
        settings[i].name = c_string(&config->ptr[i].f0);
        settings[i].value = c_string(&config->ptr[i].f1);
    }
}

bool exports_consumer_init(consumer_list_tuple2_string_string_t *config, consumer_string_t *err) {
    keep_settings(config);
    sluice_config given = {settings, settings_count};
    consumer_list_tuple2_string_string_free(config); /* the arguments are ours to free */
    reason_kind = SLUICE_OK;
    sluice_status status = sluice_init(&given);
    if (status == SLUICE_OK) return true;
    if (reason_kind == SLUICE_OK) {
        sluice_fail("sluice_init returned a failure without saying why (use sluice_fail)");
    }
    *err = reason_string();
    return false;
}

/* The export's error for a batch that came to `status`. */
static void describe_failure(sluice_status status, consumer_process_error_t *err) {
    if (status != reason_kind) {
        sluice_fail("sluice_process returned %s without calling %s",
                    status == SLUICE_POISON ? "SLUICE_POISON" : "SLUICE_FAILED",
                    status == SLUICE_POISON ? "sluice_poison" : "sluice_fail");
    }
    if (reason_kind == SLUICE_POISON) {
        err->tag = SLUICE_PLUGIN_TYPES_PROCESS_ERROR_POISON;
        err->val.poison.offset = poison_offset;
        err->val.poison.reason = reason_string();
    } else {
        err->tag = SLUICE_PLUGIN_TYPES_PROCESS_ERROR_FAILED;
        err->val.failed = reason_string();
    }
}

static char *batch_topic;
static size_t batch_topic_capacity;

bool exports_consumer_process(consumer_batch_t *batch, consumer_process_error_t *err) {
    begin_state();
    if (batch->topic.len + 1 > batch_topic_capacity) {
        batch_topic_capacity = batch->topic.len + 1;
        batch_topic = checked(realloc(batch_topic, batch_topic_capacity));
    }
    memcpy(batch_topic, batch->topic.ptr, batch->topic.len);
    batch_topic[batch->topic.len] = '\0';
    sluice_batch given = {batch_topic, batch->partition, batch->base_offset, batch->count,
                          sluice_bytes_of(batch->records.ptr, batch->records.len)};
    reason_kind = SLUICE_OK;
    sluice_status status = sluice_process(&given);
    if (status == SLUICE_OK) {
        flush_state();
        status = flush_emitted();
    }
    if (status != SLUICE_OK) {
        /* The engine drops a failed batch's writes and records: so does the plugin. */
        forget_state();
        forget_emitted();
        describe_failure(status, err);
    }
    consumer_batch_free(batch); /* the arguments are ours to free */
    return status == SLUICE_OK;
}
