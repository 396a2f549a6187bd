/* Write Sluice consumers in C.
 *
 * A consumer defines `sluice_process` (a batch), or names a per-record handler with
 * SLUICE_ON_RECORD, and may define `sluice_init` for its settings:
 *
 *     #include "sluice.h"
 *
 *     static sluice_status count(const sluice_record *record) {
 *         if (!record->key.ptr) return sluice_poison(record, "no key");
 *         sluice_bytes stored;
 *         uint64_t n = 0;
 *         if (sluice_state_get(record->key, &stored) && !sluice_parse_u64(stored, &n))
 *             return sluice_fail("the count is not a number");
 *         char text[24];
 *         int len = snprintf(text, sizeof text, "%llu", (unsigned long long)n + 1);
 *         sluice_state_set(record->key, sluice_bytes_of(text, (size_t)len));
 *         sluice_emit("counts", record->key, sluice_bytes_of(text, (size_t)len));
 *         return SLUICE_OK;
 *     }
 *     SLUICE_ON_RECORD(count)
 *
 * - Records are decoded from the batch's packed buffer one at a time, as the loop asks; a
 *   record's key, value and headers point into that buffer, valid during the call.
 * - State keeps what the plugin read and wrote between batches (while the engine's
 *   `state.generation` stays the same) and hands the engine a batch's writes in one
 *   `write-many` call at its end.
 * - Emitted records are buffered per topic; each topic's are sent in one `send-frame` call at
 *   the end of the batch.
 * - Returning `sluice_poison(record, ...)` sends that record to the dead-letter topic;
 *   returning `sluice_fail(...)` fails the batch, which the engine retries, then searches
 *   for the record that fails it. A failed batch leaves no state writes and no emitted
 *   records behind.
 * - Running out of memory traps: the batch fails and the engine starts a fresh instance.
 *
 * `sluice plugin build` compiles this file's sluice.c, the frame codecs (sluice_frame.c) and
 * the committed wit-bindgen bindings (bindings/) with the consumer's .c files. Version 0.1.0:
 * the WIT package it implements, sluice:plugin@0.1.0. */
#ifndef SLUICE_H
#define SLUICE_H

#include <stdarg.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "sluice_frame.h"

/* Values kept between batches at most; past it they are dropped at a batch's start. */
#define SLUICE_KEPT_ENTRIES_MAX 100000
/* Bytes of an error or poison reason kept; a longer one is cut (at a UTF-8 boundary). */
#define SLUICE_REASON_BYTES_MAX 4096
/* Entries one `sluice_state_scan` returns at most (the engine's own limit). */
#define SLUICE_SCAN_ENTRIES_MAX 1000

/* What processing a batch (or a record) came to. */
typedef enum {
    SLUICE_OK = 0,
    SLUICE_FAILED, /* the batch failed: the engine retries it */
    SLUICE_POISON, /* one record can never be processed: it goes to the dead letters */
} sluice_status;

/* Consecutive records of one partition. */
typedef struct {
    const char *topic; /* NUL-terminated */
    uint32_t partition;
    uint64_t base_offset;
    uint32_t count;
    sluice_bytes records; /* a records frame: read it with sluice_batch_records */
} sluice_batch;

/* One `key=value` setting given at deploy. */
typedef struct {
    const char *name;  /* NUL-terminated, kept for the instance's life */
    const char *value; /* NUL-terminated, kept for the instance's life */
} sluice_setting;

typedef struct {
    const sluice_setting *settings;
    size_t count;
} sluice_config;

/* One entry of a scan. */
typedef struct {
    sluice_bytes key;
    sluice_bytes value;
} sluice_entry;

/* The entries of a scan, owned by the caller until sluice_entries_free. */
typedef struct {
    sluice_entry *entries;
    size_t count;
    void *owned; /* the memory the entries point into */
} sluice_entries;

/* One header of an emitted record. */
typedef struct {
    const char *name; /* NUL-terminated UTF-8 */
    sluice_bytes value;
} sluice_header;

typedef enum {
    SLUICE_TRACE = 0,
    SLUICE_DEBUG,
    SLUICE_INFO,
    SLUICE_WARN,
    SLUICE_ERROR,
} sluice_level;

/* Defined by the consumer. Called once per instance; returning SLUICE_FAILED (through
 * sluice_fail) refuses the deploy with its reason. Optional: the default accepts any
 * settings. */
sluice_status sluice_init(const sluice_config *config);
/* Defined by the consumer (or by SLUICE_ON_RECORD): processes one batch. */
sluice_status sluice_process(const sluice_batch *batch);

/* Defines sluice_process as a loop calling `handler` (sluice_status (*)(const sluice_record
 * *)) on each record, stopping at the first that does not return SLUICE_OK. */
#define SLUICE_ON_RECORD(handler)                                         \
    sluice_status sluice_process(const sluice_batch *batch) {             \
        return sluice_each_record(batch, handler);                        \
    }
sluice_status sluice_each_record(const sluice_batch *batch,
                                 sluice_status (*handler)(const sluice_record *));

/* The batch's records, to read with sluice_records_next; when it returns false, check
 * `records.error` (a malformed frame) with sluice_records_status. */
sluice_records sluice_batch_records(const sluice_batch *batch);
/* SLUICE_OK once every record was read, or a failed batch saying why the frame is bad. */
sluice_status sluice_records_status(const sluice_records *records);

/* The value of setting `name` (the last one given), or NULL. */
const char *sluice_config_get(const sluice_config *config, const char *name);

/* Fails the batch, with a printf-style reason. */
sluice_status sluice_fail(const char *format, ...) __attribute__((format(printf, 1, 2)));
/* Marks `record` as poison, with a printf-style reason. */
sluice_status sluice_poison(const sluice_record *record, const char *format, ...)
    __attribute__((format(printf, 2, 3)));
/* The same, for the record at `offset`. */
sluice_status sluice_poison_at(uint64_t offset, const char *format, ...)
    __attribute__((format(printf, 2, 3)));

/* Whether `key` has a value; if so `*value` points to it, valid until the next set or delete
 * of that key or the end of the batch. */
bool sluice_state_get(sluice_bytes key, sluice_bytes *value);
void sluice_state_set(sluice_bytes key, sluice_bytes value);
void sluice_state_delete(sluice_bytes key);
/* Up to `limit` (at most SLUICE_SCAN_ENTRIES_MAX) entries whose key starts with `prefix`, in
 * key order, after `*start_after` when it is not NULL: page through a prefix with the last
 * key seen. Free the result with sluice_entries_free. */
sluice_entries sluice_state_scan(sluice_bytes prefix, const sluice_bytes *start_after,
                                 uint32_t limit);
void sluice_entries_free(sluice_entries *entries);

/* Emits a record to `topic` (one of the group's output topics); a key with a NULL `ptr` is no
 * key. It becomes visible when the batch commits. */
void sluice_emit(const char *topic, sluice_bytes key, sluice_bytes value);
void sluice_emit_with_headers(const char *topic, sluice_bytes key, sluice_bytes value,
                              const sluice_header *headers, size_t header_count);

/* Writes a log line to the engine's log, with the group and plugin version. After the
 * message come name and value pairs of NUL-terminated strings, ended by NULL. */
void sluice_log(sluice_level level, const char *message, ...) __attribute__((sentinel));

/* The bytes of `len` bytes at `ptr`, of a NUL-terminated string, and no bytes (no key). */
static inline sluice_bytes sluice_bytes_of(const void *ptr, size_t len) {
    sluice_bytes bytes = {(const uint8_t *)ptr, len};
    return bytes;
}
sluice_bytes sluice_str(const char *text);
static inline sluice_bytes sluice_no_key(void) {
    sluice_bytes none = {NULL, 0};
    return none;
}
/* Reads the decimal number `text` holds into `*value`; false when it holds anything but
 * digits, or a number past UINT64_MAX. */
bool sluice_parse_u64(sluice_bytes text, uint64_t *value);

#endif
