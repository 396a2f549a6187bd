/* The bytes between a Sluice plugin and the engine (wit/plugin.wit), for consumers in C:
 * records frames (a batch's `records`, and what `emit.send-frame` takes) and
 * `state.write-many` frames.
 *
 * A records frame holds, per record: a varint of zigzag(timestamp in ms), a varint of
 * zigzag(key length, -1 for no key), the key, a varint value length, the value, a varint
 * header count, then per header a varint name length, the UTF-8 name, a varint value length
 * and the value. Varints are LEB128, at most 10 bytes. A write-many frame holds, per write, a
 * varint key length and the key, then 0 to delete it or the value length plus one and the
 * value.
 *
 * Decoding allocates nothing: a record's fields point into the frame. Encoding appends to a
 * growable buffer. Version 0.1.0: the WIT package it implements, sluice:plugin@0.1.0. */
#ifndef SLUICE_FRAME_H
#define SLUICE_FRAME_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define SLUICE_SDK_VERSION "0.1.0"
/* Bytes a LEB128 varint of a 64-bit value takes at most. */
#define SLUICE_VARINT_BYTES_MAX 10

typedef struct {
    const uint8_t *ptr;
    size_t len;
} sluice_bytes;

/* One record; `key.ptr` is NULL when it has none. Headers are read with
 * sluice_record_header. */
typedef struct {
    uint64_t offset;
    int64_t timestamp;
    sluice_bytes key;
    sluice_bytes value;
    uint64_t header_count;
    sluice_bytes headers; /* the headers' bytes, for sluice_record_header */
} sluice_record;

/* Reads the records of a frame one at a time. */
typedef struct {
    const uint8_t *data;
    size_t len;
    size_t pos;
    uint64_t next_offset;
    uint32_t remaining;
    const char *error; /* why decoding stopped early, or NULL */
} sluice_records;

void sluice_records_init(sluice_records *records, const uint8_t *frame, size_t len,
                         uint64_t base_offset, uint32_t count);
/* Decodes the next record; false at the end or at the first malformed record (then
 * `records->error` says why, and `records->next_offset` is the record's offset). */
bool sluice_records_next(sluice_records *records, sluice_record *record);
/* The header at `*cursor` (start at 0) of a decoded record; false past the last. */
bool sluice_record_header(const sluice_record *record, size_t *cursor, sluice_bytes *name,
                          sluice_bytes *value);

/* A growable buffer for frames being written; free `data` with free(). */
typedef struct {
    uint8_t *data;
    size_t len;
    size_t capacity;
} sluice_buffer;

/* Appends one record (emitted records take timestamp 0: the engine stamps them); a key with
 * a NULL `ptr` is no key. `headers` holds `header_count` name and value pairs. False when
 * memory runs out. */
bool sluice_append_record(sluice_buffer *out, int64_t timestamp, sluice_bytes key,
                          sluice_bytes value, const sluice_bytes *header_names,
                          const sluice_bytes *header_values, size_t header_count);
/* Appends one write to a write-many frame; a value with a NULL `ptr` deletes the key. */
bool sluice_append_write(sluice_buffer *out, sluice_bytes key, sluice_bytes value);

/* Bytes of the well-formed UTF-8 character at the start of `text` (no overlongs, surrogates
 * or values past U+10FFFF), or 0 when it does not start with one. */
size_t sluice_utf8_sequence(const uint8_t *text, size_t len);

#endif
