// The orders of the C example (order.c): what app.c needs to read and write them.
#ifndef ORDER_H
#define ORDER_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

// A growable byte buffer; running out of memory aborts (the engine fails the batch and
// starts a fresh instance).
typedef struct {
    uint8_t *data;
    size_t len, cap;
} buffer;

void append(buffer *b, const void *bytes, size_t len);
void append_str(buffer *b, const char *s);
void append_byte(buffer *b, uint8_t byte);
void append_i64(buffer *b, int64_t n);

// What an order's fields held; for duplicate keys the last one wins, as in JSON.parse.
typedef struct {
    bool id_ok, cents_ok, customer_ok, customer_lone_surrogate;
    int64_t id, cents;
    buffer customer;  // UTF-8 (or WTF-8 when it has a lone surrogate)
} order;

// Parses an order (`key` is scratch space); on error, writes why into `why`.
bool parse_order(const uint8_t *value, size_t len, order *o, buffer *key, buffer *why);
// The customer as a JSON string, escaped as JSON.stringify escapes it.
void append_json_string(buffer *b, const buffer *s);
// `stored` (ASCII digits; empty or missing means 0) plus `cents`, into `out`; false if
// `stored` is not a decimal number. Totals have no bound, as the JavaScript example's BigInt.
bool add_decimal(const uint8_t *stored, size_t len, uint64_t cents, buffer *out);

#endif
