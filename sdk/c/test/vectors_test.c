/* The C SDK's codecs against the shared test vectors (the .txt files of sdk/testdata, the JSON vectors as
 * lines, written from the engine's codecs): valid frames decode to exactly their records and
 * encode back byte for byte, every malformed frame is an error, and write-many frames encode
 * byte for byte. Built with the host compiler: cc -std=c11 -Wall -Wextra -Werror. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "../sluice_frame.h"

#define LINE_BYTES_MAX (1 << 20)
#define FIELDS_MAX 512

static int failures = 0;

#define CHECK(cond, ...)                                         \
    do {                                                         \
        if (!(cond)) {                                           \
            fprintf(stderr, "FAILED %s:%d: ", __FILE__, __LINE__); \
            fprintf(stderr, __VA_ARGS__);                        \
            fprintf(stderr, "\n");                               \
            failures++;                                          \
        }                                                        \
    } while (0)

/* Decodes hex (`=`: empty) into a new buffer; sets *len. */
static uint8_t *unhex(const char *text, size_t *len) {
    if (strcmp(text, "=") == 0) {
        *len = 0;
        return malloc(1);
    }
    size_t n = strlen(text) / 2;
    uint8_t *out = malloc(n ? n : 1);
    for (size_t i = 0; i < n; i++) sscanf(text + 2 * i, "%2hhx", &out[i]);
    *len = n;
    return out;
}

static int split(char *line, char **fields) {
    int n = 0;
    for (char *field = strtok(line, " \n"); field && n < FIELDS_MAX; field = strtok(NULL, " \n"))
        fields[n++] = field;
    return n;
}

static bool same(sluice_bytes got, const char *want_hex) {
    size_t len;
    uint8_t *want = unhex(want_hex, &len);
    bool equal = got.len == len && (len == 0 || memcmp(got.ptr, want, len) == 0);
    free(want);
    return equal;
}

static void records_frames(const char *path) {
    FILE *file = fopen(path, "r");
    CHECK(file != NULL, "cannot open %s", path);
    if (!file) return;
    char *line = malloc(LINE_BYTES_MAX);
    char *fields[FIELDS_MAX];
    int cases = 0;
    while (fgets(line, LINE_BYTES_MAX, file)) {
        if (line[0] == '#') continue;
        int n = split(line, fields);
        if (n < 5 || (strcmp(fields[0], "valid") && strcmp(fields[0], "malformed"))) continue;
        bool valid = strcmp(fields[0], "valid") == 0;
        const char *name = fields[1];
        uint64_t base = strtoull(fields[2], NULL, 10);
        uint32_t count = (uint32_t)strtoul(fields[3], NULL, 10);
        size_t frame_len;
        uint8_t *frame = unhex(fields[4], &frame_len);
        sluice_records records;
        sluice_records_init(&records, frame, frame_len, base, count);
        sluice_record record;
        sluice_buffer encoded = {0};
        uint32_t decoded = 0;
        cases++;
        if (!valid) {
            while (sluice_records_next(&records, &record)) decoded++;
            CHECK(records.error != NULL, "malformed %s: read %u records", name, decoded);
            free(frame);
            continue;
        }
        for (uint32_t i = 0; i < count; i++) {
            char expected[LINE_BYTES_MAX / 4];
            CHECK(fgets(expected, sizeof expected, file) != NULL, "%s: record line missing", name);
            char *want[FIELDS_MAX];
            int wn = split(expected, want);
            bool ok = sluice_records_next(&records, &record);
            CHECK(ok, "%s: record %u: %s", name, i, records.error ? records.error : "missing");
            if (!ok || wn < 6) break;
            decoded++;
            CHECK(record.offset == strtoull(want[1], NULL, 10), "%s: offset", name);
            CHECK(record.timestamp == strtoll(want[2], NULL, 10), "%s: timestamp", name);
            if (strcmp(want[3], "-") == 0)
                CHECK(record.key.ptr == NULL, "%s: a key where none is", name);
            else
                CHECK(record.key.ptr != NULL && same(record.key, want[3]), "%s: key", name);
            CHECK(same(record.value, want[4]), "%s: value", name);
            size_t header_count = strtoul(want[5], NULL, 10);
            CHECK(record.header_count == header_count, "%s: header count", name);
            sluice_bytes names[256], values[256];
            size_t cursor = 0, h = 0;
            while (h < 256 && sluice_record_header(&record, &cursor, &names[h], &values[h])) {
                CHECK(6 + 2 * (int)h + 1 < wn && same(names[h], want[6 + 2 * h]) &&
                          same(values[h], want[7 + 2 * h]),
                      "%s: header %zu", name, h);
                h++;
            }
            CHECK(h == header_count, "%s: %zu headers read, %zu announced", name, h, header_count);
            sluice_append_record(&encoded, record.timestamp, record.key, record.value, names,
                                 values, h);
        }
        CHECK(decoded == count, "%s: %u of %u records", name, decoded, count);
        CHECK(encoded.len == frame_len &&
                  (frame_len == 0 || memcmp(encoded.data, frame, frame_len) == 0),
              "%s: encoded differently", name);
        free(encoded.data);
        free(frame);
    }
    CHECK(cases > 10, "only %d cases in %s", cases, path);
    free(line);
    fclose(file);
}

static void write_many(const char *path) {
    FILE *file = fopen(path, "r");
    CHECK(file != NULL, "cannot open %s", path);
    if (!file) return;
    char *line = malloc(LINE_BYTES_MAX);
    char *fields[FIELDS_MAX];
    while (fgets(line, LINE_BYTES_MAX, file)) {
        int n = split(line, fields);
        if (n < 4 || strcmp(fields[0], "valid")) continue;
        const char *name = fields[1];
        size_t frame_len;
        uint8_t *frame = unhex(fields[2], &frame_len);
        size_t writes = strtoul(fields[3], NULL, 10);
        sluice_buffer encoded = {0};
        for (size_t w = 0; w < writes; w++) {
            char write_line[LINE_BYTES_MAX / 4];
            char *parts[4];
            CHECK(fgets(write_line, sizeof write_line, file) != NULL, "%s: write missing", name);
            if (split(write_line, parts) < 3) break;
            size_t key_len, value_len = 0;
            uint8_t *key = unhex(parts[1], &key_len);
            uint8_t *value = strcmp(parts[2], "-") ? unhex(parts[2], &value_len) : NULL;
            sluice_append_write(&encoded, (sluice_bytes){key, key_len},
                                (sluice_bytes){value, value_len});
            free(key);
            free(value);
        }
        CHECK(encoded.len == frame_len &&
                  (frame_len == 0 || memcmp(encoded.data, frame, frame_len) == 0),
              "%s: encoded differently", name);
        free(encoded.data);
        free(frame);
    }
    free(line);
    fclose(file);
}

int main(int argc, char **argv) {
    const char *dir = argc > 1 ? argv[1] : "sdk/testdata";
    char path[4096];
    snprintf(path, sizeof path, "%s/records-frames.txt", dir);
    records_frames(path);
    snprintf(path, sizeof path, "%s/write-many.txt", dir);
    write_many(path);
    if (failures) {
        fprintf(stderr, "%d failures\n", failures);
        return 1;
    }
    printf("the C SDK's codecs agree with every vector\n");
    return 0;
}
