/* The codecs of sluice_frame.h. */
#include "sluice_frame.h"

#include <stdlib.h>
#include <string.h>

void sluice_records_init(sluice_records *records, const uint8_t *frame, size_t len,
                         uint64_t base_offset, uint32_t count) {
    records->data = frame;
    records->len = len;
    records->pos = 0;
    records->next_offset = base_offset;
    records->remaining = count;
    records->error = NULL;
}

/* The varint at `*pos` of `data`; NULL or the reason it is not one. */
static const char *read_varint(const uint8_t *data, size_t len, size_t *pos, uint64_t *value) {
    uint64_t result = 0;
    for (int i = 0; i < SLUICE_VARINT_BYTES_MAX; i++) {
        if (*pos >= len) return "the frame ends inside the record";
        uint8_t byte = data[(*pos)++];
        result |= (uint64_t)(byte & 0x7f) << (7 * i);
        if (byte < 0x80) {
            *value = result;
            return NULL;
        }
    }
    return "a varint longer than 10 bytes";
}

static const char *take(const uint8_t *data, size_t len, size_t *pos, uint64_t length,
                        sluice_bytes *field, const char *past_end) {
    if (length > len - *pos) return past_end;
    field->ptr = data + *pos;
    field->len = (size_t)length;
    *pos += (size_t)length;
    return NULL;
}

static int64_t unzigzag(uint64_t value) { return (int64_t)(value >> 1) ^ -(int64_t)(value & 1); }

size_t sluice_utf8_sequence(const uint8_t *text, size_t len) {
    if (len == 0) return 0;
    uint8_t b = text[0];
    size_t need;
    uint32_t min, cp;
    if (b < 0x80) return 1;
    else if ((b & 0xe0) == 0xc0) { need = 1; min = 0x80; cp = b & 0x1f; }
    else if ((b & 0xf0) == 0xe0) { need = 2; min = 0x800; cp = b & 0x0f; }
    else if ((b & 0xf8) == 0xf0) { need = 3; min = 0x10000; cp = b & 0x07; }
    else return 0;
    if (need >= len) return 0; /* cut short */
    for (size_t k = 1; k <= need; k++) {
        uint8_t c = text[k];
        if ((c & 0xc0) != 0x80) return 0;
        cp = (cp << 6) | (c & 0x3f);
    }
    if (cp < min || cp > 0x10ffff || (cp >= 0xd800 && cp <= 0xdfff)) return 0;
    return need + 1;
}

/* Whether `bytes` is well-formed UTF-8. */
static bool valid_utf8(sluice_bytes bytes) {
    size_t i = 0;
    while (i < bytes.len) {
        size_t n = sluice_utf8_sequence(bytes.ptr + i, bytes.len - i);
        if (n == 0) return false;
        i += n;
    }
    return true;
}

static const char *decode(sluice_records *r, sluice_record *record) {
    const char *error;
    uint64_t timestamp, key_length, value_length, header_count;
    if ((error = read_varint(r->data, r->len, &r->pos, &timestamp))) return error;
    if ((error = read_varint(r->data, r->len, &r->pos, &key_length))) return error;
    int64_t signed_key_length = unzigzag(key_length);
    record->key.ptr = NULL;
    record->key.len = 0;
    if (signed_key_length < -1) return "a key length below -1";
    if (signed_key_length >= 0 &&
        (error = take(r->data, r->len, &r->pos, (uint64_t)signed_key_length, &record->key,
                      "the key runs past the end")))
        return error;
    if (record->key.ptr == NULL && signed_key_length == 0) record->key.ptr = r->data + r->pos;
    if ((error = read_varint(r->data, r->len, &r->pos, &value_length))) return error;
    if ((error = take(r->data, r->len, &r->pos, value_length, &record->value,
                      "the value runs past the end")))
        return error;
    if ((error = read_varint(r->data, r->len, &r->pos, &header_count))) return error;
    size_t headers_start = r->pos;
    for (uint64_t h = 0; h < header_count; h++) {
        uint64_t length;
        sluice_bytes name, value;
        if ((error = read_varint(r->data, r->len, &r->pos, &length))) return error;
        if ((error = take(r->data, r->len, &r->pos, length, &name,
                          "a header name runs past the end")))
            return error;
        if (!valid_utf8(name)) return "a header name is not UTF-8";
        if ((error = read_varint(r->data, r->len, &r->pos, &length))) return error;
        if ((error = take(r->data, r->len, &r->pos, length, &value,
                          "a header value runs past the end")))
            return error;
    }
    record->offset = r->next_offset;
    record->timestamp = unzigzag(timestamp);
    record->header_count = header_count;
    record->headers.ptr = r->data + headers_start;
    record->headers.len = r->pos - headers_start;
    return NULL;
}

bool sluice_records_next(sluice_records *records, sluice_record *record) {
    if (records->remaining == 0 || records->error != NULL) return false;
    const char *error = decode(records, record);
    if (error != NULL) {
        records->error = error;
        return false;
    }
    records->remaining--;
    records->next_offset++;
    return true;
}

bool sluice_record_header(const sluice_record *record, size_t *cursor, sluice_bytes *name,
                          sluice_bytes *value) {
    const uint8_t *data = record->headers.ptr;
    size_t len = record->headers.len;
    uint64_t length;
    if (*cursor >= len) return false;
    /* Checked when the record was decoded: these reads stay within its headers. */
    if (read_varint(data, len, cursor, &length) ||
        take(data, len, cursor, length, name, "past") ||
        read_varint(data, len, cursor, &length) ||
        take(data, len, cursor, length, value, "past"))
        return false;
    return true;
}

static bool reserve(sluice_buffer *out, size_t extra) {
    if (out->capacity - out->len >= extra) return true;
    size_t capacity = out->capacity ? out->capacity : 256;
    while (capacity - out->len < extra) capacity *= 2;
    uint8_t *grown = realloc(out->data, capacity);
    if (grown == NULL) return false;
    out->data = grown;
    out->capacity = capacity;
    return true;
}

static bool put_varint(sluice_buffer *out, uint64_t value) {
    if (!reserve(out, SLUICE_VARINT_BYTES_MAX)) return false;
    while (value >= 0x80) {
        out->data[out->len++] = (uint8_t)(value & 0x7f) | 0x80;
        value >>= 7;
    }
    out->data[out->len++] = (uint8_t)value;
    return true;
}

static bool put_bytes(sluice_buffer *out, sluice_bytes bytes) {
    if (!put_varint(out, bytes.len) || !reserve(out, bytes.len)) return false;
    if (bytes.len) memcpy(out->data + out->len, bytes.ptr, bytes.len);
    out->len += bytes.len;
    return true;
}

static uint64_t zigzag(int64_t value) { return ((uint64_t)value << 1) ^ (uint64_t)(value >> 63); }

bool sluice_append_record(sluice_buffer *out, int64_t timestamp, sluice_bytes key,
                          sluice_bytes value, const sluice_bytes *header_names,
                          const sluice_bytes *header_values, size_t header_count) {
    if (!put_varint(out, zigzag(timestamp))) return false;
    if (key.ptr == NULL) {
        if (!put_varint(out, 1)) return false; /* zigzag(-1) */
    } else {
        if (!put_varint(out, zigzag((int64_t)key.len)) || !reserve(out, key.len)) return false;
        if (key.len) memcpy(out->data + out->len, key.ptr, key.len);
        out->len += key.len;
    }
    if (!put_bytes(out, value) || !put_varint(out, header_count)) return false;
    for (size_t i = 0; i < header_count; i++) {
        if (!put_bytes(out, header_names[i]) || !put_bytes(out, header_values[i])) return false;
    }
    return true;
}

bool sluice_append_write(sluice_buffer *out, sluice_bytes key, sluice_bytes value) {
    if (!put_bytes(out, key)) return false;
    if (value.ptr == NULL) return put_varint(out, 0);
    if (!put_varint(out, (uint64_t)value.len + 1) || !reserve(out, value.len)) return false;
    if (value.len) memcpy(out->data + out->len, value.ptr, value.len);
    out->len += value.len;
    return true;
}
