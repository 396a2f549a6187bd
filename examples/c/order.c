// The orders of the C example: a strict JSON reader for them, growable buffers, and the
// decimal running totals.
//
// The orders are JSON, parsed here by hand so that the example needs nothing but wasi-libc.
// The parser accepts exactly what the JavaScript example's JSON.parse accepts (after a strict
// UTF-8 decode) and reads numbers as it does, never reads past its input, and takes any
// depth of nesting without recursion.

#include "order.h"

#include <stdlib.h>
#include <string.h>

// JSON numbers are doubles in JavaScript: only integers a double holds exactly are valid,
// so that every example accepts the same orders.
#define MAX_SAFE_INTEGER 9007199254740991LL

// ---------------------------------------------------------------------------------------
// Growable byte buffers

static void reserve(buffer *b, size_t extra) {
    if (extra <= b->cap - b->len) return;
    size_t cap = b->cap ? b->cap : 64;
    while (cap - b->len < extra) {
        if (cap > SIZE_MAX / 2) abort();
        cap *= 2;
    }
    uint8_t *data = realloc(b->data, cap);
    if (!data) abort();  // traps: the engine fails the batch and starts a new instance
    b->data = data;
    b->cap = cap;
}

void append(buffer *b, const void *bytes, size_t len) {
    reserve(b, len);
    memcpy(b->data + b->len, bytes, len);
    b->len += len;
}

void append_str(buffer *b, const char *s) { append(b, s, strlen(s)); }

void append_byte(buffer *b, uint8_t byte) { append(b, &byte, 1); }

static void append_u64(buffer *b, uint64_t n) {
    char digits[20];
    size_t i = sizeof digits;
    do {
        digits[--i] = (char)('0' + n % 10);
        n /= 10;
    } while (n);
    append(b, digits + i, sizeof digits - i);
}

void append_i64(buffer *b, int64_t n) {
    if (n < 0) append_byte(b, '-');
    append_u64(b, n < 0 ? -(uint64_t)n : (uint64_t)n);
}

// ---------------------------------------------------------------------------------------
// JSON

typedef struct {
    const uint8_t *p;
    size_t len, pos;
} cursor;

static int peek(const cursor *c) { return c->pos < c->len ? c->p[c->pos] : -1; }

static void skip_ws(cursor *c) {
    while (c->pos < c->len) {
        uint8_t ch = c->p[c->pos];
        if (ch != ' ' && ch != '\t' && ch != '\n' && ch != '\r') return;
        c->pos++;
    }
}

static bool literal(cursor *c, const char *word) {
    size_t n = strlen(word);
    if (c->len - c->pos < n || memcmp(c->p + c->pos, word, n) != 0) return false;
    c->pos += n;
    return true;
}

// Where the input stops being UTF-8 (WHATWG's strict decoder: no overlong forms, no
// surrogates, nothing past U+10FFFF), or `len` if it is all UTF-8.
static size_t utf8_error(const uint8_t *s, size_t len) {
    size_t i = 0;
    while (i < len) {
        uint8_t b = s[i];
        size_t n;
        uint8_t lo = 0x80, hi = 0xBF;  // the second byte's range
        if (b < 0x80) {
            i++;
            continue;
        } else if (b >= 0xC2 && b <= 0xDF) {
            n = 2;
        } else if (b >= 0xE0 && b <= 0xEF) {
            n = 3;
            if (b == 0xE0) lo = 0xA0;
            if (b == 0xED) hi = 0x9F;
        } else if (b >= 0xF0 && b <= 0xF4) {
            n = 4;
            if (b == 0xF0) lo = 0x90;
            if (b == 0xF4) hi = 0x8F;
        } else {
            return i;
        }
        if (len - i < n || s[i + 1] < lo || s[i + 1] > hi) return i;
        for (size_t k = 2; k < n; k++)
            if ((s[i + k] & 0xC0) != 0x80) return i;
        i += n;
    }
    return len;
}

static int hex_digit(uint8_t ch) {
    if (ch >= '0' && ch <= '9') return ch - '0';
    if (ch >= 'a' && ch <= 'f') return ch - 'a' + 10;
    if (ch >= 'A' && ch <= 'F') return ch - 'A' + 10;
    return -1;
}

// The code unit of a `\uXXXX` escape at the cursor, or -1 if there is none.
static long unicode_escape(const cursor *c, size_t at) {
    if (c->len - at < 6 || c->p[at] != '\\' || c->p[at + 1] != 'u') return -1;
    long unit = 0;
    for (size_t k = 2; k < 6; k++) {
        int d = hex_digit(c->p[at + k]);
        if (d < 0) return -1;
        unit = unit * 16 + d;
    }
    return unit;
}

static void append_utf8(buffer *b, uint32_t cp) {
    uint8_t out[4];
    size_t n;
    if (cp < 0x80) {
        out[0] = (uint8_t)cp;
        n = 1;
    } else if (cp < 0x800) {
        out[0] = (uint8_t)(0xC0 | cp >> 6);
        out[1] = (uint8_t)(0x80 | (cp & 0x3F));
        n = 2;
    } else if (cp < 0x10000) {
        out[0] = (uint8_t)(0xE0 | cp >> 12);
        out[1] = (uint8_t)(0x80 | (cp >> 6 & 0x3F));
        out[2] = (uint8_t)(0x80 | (cp & 0x3F));
        n = 3;
    } else {
        out[0] = (uint8_t)(0xF0 | cp >> 18);
        out[1] = (uint8_t)(0x80 | (cp >> 12 & 0x3F));
        out[2] = (uint8_t)(0x80 | (cp >> 6 & 0x3F));
        out[3] = (uint8_t)(0x80 | (cp & 0x3F));
        n = 4;
    }
    append(b, out, n);
}

// A string at the cursor (which is on its opening quote), decoded into `out` when given.
// A surrogate escape without its other half is kept (as WTF-8) and flagged, as JSON.parse
// keeps it in its UTF-16 string: only the customer's name must be valid UTF-8.
static bool string(cursor *c, buffer *out, bool *lone_surrogate) {
    if (out) out->len = 0;
    if (lone_surrogate) *lone_surrogate = false;
    c->pos++;
    for (;;) {
        size_t start = c->pos;
        while (c->pos < c->len && c->p[c->pos] >= 0x20 && c->p[c->pos] != '"' &&
               c->p[c->pos] != '\\')
            c->pos++;
        if (out) append(out, c->p + start, c->pos - start);
        int ch = peek(c);
        if (ch == '"') {
            c->pos++;
            return true;
        }
        if (ch != '\\') return false;  // the end, or a control character
        if (c->len - c->pos < 2) return false;
        uint8_t esc = c->p[c->pos + 1];
        static const char escapes[] = "\"\\/bfnrt", decoded[] = "\"\\/\b\f\n\r\t";
        const char *simple = esc ? strchr(escapes, esc) : NULL;
        if (simple) {
            if (out) append_byte(out, (uint8_t)decoded[simple - escapes]);
            c->pos += 2;
            continue;
        }
        long unit = unicode_escape(c, c->pos);
        if (unit < 0) return false;
        c->pos += 6;
        uint32_t cp = (uint32_t)unit;
        if (unit >= 0xD800 && unit <= 0xDBFF) {
            long low = unicode_escape(c, c->pos);
            if (low >= 0xDC00 && low <= 0xDFFF) {
                cp = 0x10000 + (uint32_t)((unit - 0xD800) << 10) + (uint32_t)(low - 0xDC00);
                c->pos += 6;
            }
        }
        if (cp >= 0xD800 && cp <= 0xDFFF && lone_surrogate) *lone_surrogate = true;
        if (out) append_utf8(out, cp);
    }
}

// A number at the cursor. `safe` tells whether it is an integer that a double holds exactly
// (as JSON.parse reads it: a double, so 1.0 and 1e2 count and 1.5 or 2^53 do not).
static bool number(cursor *c, bool *safe, int64_t *value) {
    size_t start = c->pos;
    bool negative = peek(c) == '-', fraction = false;
    if (negative) c->pos++;
    size_t digits = c->pos;
    if (peek(c) == '0') {
        c->pos++;
    } else if (peek(c) >= '1' && peek(c) <= '9') {
        while (peek(c) >= '0' && peek(c) <= '9') c->pos++;
    } else {
        return false;
    }
    size_t digits_end = c->pos;
    if (peek(c) == '.') {
        fraction = true;
        c->pos++;
        if (!(peek(c) >= '0' && peek(c) <= '9')) return false;
        while (peek(c) >= '0' && peek(c) <= '9') c->pos++;
    }
    if (peek(c) == 'e' || peek(c) == 'E') {
        fraction = true;
        c->pos++;
        if (peek(c) == '+' || peek(c) == '-') c->pos++;
        if (!(peek(c) >= '0' && peek(c) <= '9')) return false;
        while (peek(c) >= '0' && peek(c) <= '9') c->pos++;
    }

    *safe = false;
    if (!fraction) {
        // An integer literal: exact, unless it has more digits than 2^53 - 1.
        if (digits_end - digits > 16) return true;
        uint64_t n = 0;
        for (size_t i = digits; i < digits_end; i++) n = n * 10 + (c->p[i] - '0');
        if (n > MAX_SAFE_INTEGER) return true;
        *safe = true;
        *value = negative ? -(int64_t)n : (int64_t)n;
        return true;
    }
    // Otherwise the double nearest to it, as JSON.parse (and Python's float) reads it.
    size_t n = c->pos - start;
    char *text = malloc(n + 1);
    if (!text) abort();
    memcpy(text, c->p + start, n);
    text[n] = 0;
    double d = strtod(text, NULL);
    free(text);
    if (d >= -(double)MAX_SAFE_INTEGER && d <= (double)MAX_SAFE_INTEGER &&
        d == (double)(int64_t)d) {
        *safe = true;
        *value = (int64_t)d;  // -0.0 becomes 0, as JSON.stringify writes it
    }
    return true;
}

// Any JSON value at the cursor, checked and skipped. Without recursion: nesting as deep as
// the input allows costs heap, not stack (the stack remembers `[` or `{` per level).
static bool skip_value(cursor *c) {
    buffer stack = {0};
    bool ok = false;
    for (;;) {
        // A value is expected here.
        skip_ws(c);
        int ch = peek(c);
        if (ch == '{' || ch == '[') {
            c->pos++;
            skip_ws(c);
            if (peek(c) == (ch == '{' ? '}' : ']')) {
                c->pos++;
            } else {
                append_byte(&stack, (uint8_t)ch);
                if (ch == '{') {
                    if (peek(c) != '"' || !string(c, NULL, NULL)) goto done;
                    skip_ws(c);
                    if (peek(c) != ':') goto done;
                    c->pos++;
                }
                continue;
            }
        } else if (ch == '"') {
            if (!string(c, NULL, NULL)) goto done;
        } else if (ch == '-' || (ch >= '0' && ch <= '9')) {
            bool safe;
            int64_t value;
            if (!number(c, &safe, &value)) goto done;
        } else if (!literal(c, "true") && !literal(c, "false") && !literal(c, "null")) {
            goto done;
        }
        // After a value: close containers, or go on to the next element or member.
        for (;;) {
            if (stack.len == 0) {
                ok = true;
                goto done;
            }
            uint8_t open = stack.data[stack.len - 1];
            skip_ws(c);
            ch = peek(c);
            if (ch == (open == '{' ? '}' : ']')) {
                c->pos++;
                stack.len--;
                continue;
            }
            if (ch != ',') goto done;
            c->pos++;
            if (open == '{') {
                skip_ws(c);
                if (peek(c) != '"' || !string(c, NULL, NULL)) goto done;
                skip_ws(c);
                if (peek(c) != ':') goto done;
                c->pos++;
            }
            break;
        }
    }
done:
    free(stack.data);
    return ok;
}

enum field { OTHER, ID, CUSTOMER, CENTS };

static enum field field_named(const buffer *key) {
    static const struct {
        const char *name;
        enum field field;
    } fields[] = {{"id", ID}, {"customer", CUSTOMER}, {"cents", CENTS}};
    for (size_t i = 0; i < sizeof fields / sizeof fields[0]; i++) {
        size_t n = strlen(fields[i].name);
        if (key->len == n && memcmp(key->data, fields[i].name, n) == 0) return fields[i].field;
    }
    return OTHER;
}

// One member's value, at the cursor, into the order's fields.
static bool member(cursor *c, enum field field, order *o) {
    int ch = peek(c);
    bool is_string = ch == '"', is_number = ch == '-' || (ch >= '0' && ch <= '9');
    if (field == CUSTOMER) {
        o->customer_ok = is_string;
        if (is_string) return string(c, &o->customer, &o->customer_lone_surrogate);
    } else if (field == ID || field == CENTS) {
        bool *ok = field == ID ? &o->id_ok : &o->cents_ok;
        *ok = false;
        if (is_number) return number(c, ok, field == ID ? &o->id : &o->cents);
    }
    return skip_value(c);
}

// The top-level value: an object whose members go into `o`, or anything else (false in
// `*object`). False if it is not JSON, with the cursor where it stops being JSON.
static bool document(cursor *c, order *o, buffer *key, bool *object) {
    skip_ws(c);
    *object = peek(c) == '{';
    if (!*object) {
        if (!skip_value(c)) return false;
    } else {
        c->pos++;
        skip_ws(c);
        if (peek(c) == '}') {
            c->pos++;
        } else {
            for (;;) {
                if (peek(c) != '"' || !string(c, key, NULL)) return false;
                skip_ws(c);
                if (peek(c) != ':') return false;
                c->pos++;
                skip_ws(c);
                if (!member(c, field_named(key), o)) return false;
                skip_ws(c);
                if (peek(c) == '}') {
                    c->pos++;
                    break;
                }
                if (peek(c) != ',') return false;
                c->pos++;
                skip_ws(c);
            }
        }
    }
    skip_ws(c);
    return c->pos == c->len;
}

// Parses an order; on error, writes why into `why`.
bool parse_order(const uint8_t *value, size_t len, order *o, buffer *key, buffer *why) {
    o->id_ok = o->cents_ok = o->customer_ok = o->customer_lone_surrogate = false;
    o->customer.len = 0;
    size_t bad = utf8_error(value, len);
    if (bad < len) {
        append_str(why, "not UTF-8 at byte ");
        append_u64(why, bad);
        return false;
    }
    cursor c = {value, len, 0};
    bool object;
    if (!document(&c, o, key, &object)) {
        append_str(why, "not JSON at byte ");
        append_u64(why, c.pos);
        return false;
    }
    const char *error = NULL;
    if (!object)
        error = "not a JSON object";
    else if (!o->id_ok)
        error = "field `id` must be an integer";
    else if (!o->customer_ok || o->customer.len == 0)
        error = "field `customer` must be a non-empty string";
    else if (o->customer_lone_surrogate)
        error = "field `customer` has a lone surrogate, which UTF-8 cannot encode";
    else if (!o->cents_ok || o->cents < 0)
        error = "field `cents` must be a non-negative integer";
    if (error) append_str(why, error);
    return !error;
}

// The customer as a JSON string, escaped as JSON.stringify and Python's json.dumps
// (ensure_ascii=False) escape it.
void append_json_string(buffer *b, const buffer *s) {
    static const char hex[] = "0123456789abcdef";
    append_byte(b, '"');
    for (size_t i = 0; i < s->len; i++) {
        uint8_t ch = s->data[i];
        const char *escape = NULL;
        switch (ch) {
            case '"': escape = "\\\""; break;
            case '\\': escape = "\\\\"; break;
            case '\b': escape = "\\b"; break;
            case '\f': escape = "\\f"; break;
            case '\n': escape = "\\n"; break;
            case '\r': escape = "\\r"; break;
            case '\t': escape = "\\t"; break;
        }
        if (escape) {
            append_str(b, escape);
        } else if (ch < 0x20) {
            char u[] = {'\\', 'u', '0', '0', hex[ch >> 4], hex[ch & 15]};
            append(b, u, sizeof u);
        } else {
            append_byte(b, ch);
        }
    }
    append_byte(b, '"');
}

// ---------------------------------------------------------------------------------------
// Running totals: decimal ASCII of any length (as the JavaScript example's BigInt)

// `stored` (ASCII digits; empty or missing means 0) plus `cents`, into `out`. False if
// `stored` is not a decimal number.
bool add_decimal(const uint8_t *stored, size_t len, uint64_t cents, buffer *out) {
    for (size_t i = 0; i < len; i++)
        if (stored[i] < '0' || stored[i] > '9') return false;
    size_t n = (len > 20 ? len : 20) + 1;
    out->len = 0;
    reserve(out, n);
    unsigned carry = 0;
    for (size_t i = 0; i < n; i++) {
        unsigned digit = carry + (unsigned)(cents % 10);
        cents /= 10;
        if (i < len) digit += stored[len - 1 - i] - '0';
        out->data[n - 1 - i] = (uint8_t)('0' + digit % 10);
        carry = digit / 10;
    }
    size_t zeros = 0;
    while (zeros < n - 1 && out->data[zeros] == '0') zeros++;
    memmove(out->data, out->data + zeros, n - zeros);
    out->len = n - zeros;
    return true;
}
