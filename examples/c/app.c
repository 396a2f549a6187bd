// Order totals: a Sluice consumer in C, with the C SDK (sdk/c/sluice.h).
//
// Keeps a running total of cents per customer in the group's state and emits each order
// with that total. See ../README.md for the job every example does; order.c reads the
// orders' JSON (C has no JSON of its own).

#include "order.h"
#include "sluice.h"

static const char *output = "enriched";  // the topic to emit to

sluice_status sluice_init(const sluice_config *config) {
    const char *configured = sluice_config_get(config, "output");
    if (configured) output = configured;
    sluice_log(SLUICE_INFO, "c order totals ready", "output", output, NULL);
    return SLUICE_OK;
}

// Kept between records and batches, so that a record allocates only when one must grow.
static order current;
static buffer scratch, why, total, body;

static sluice_status on_order(const sluice_record *record) {
    why.len = 0;
    if (!parse_order(record->value.ptr, record->value.len, &current, &scratch, &why)) {
        return sluice_poison(record, "c: invalid order: %.*s", (int)why.len, (char *)why.data);
    }
    sluice_bytes customer = sluice_bytes_of(current.customer.data, current.customer.len);
    sluice_bytes stored = {0};
    bool found = sluice_state_get(customer, &stored);
    if (!add_decimal(stored.ptr, found ? stored.len : 0, (uint64_t)current.cents, &total)) {
        return sluice_fail("c: the stored total is not a decimal number");
    }
    sluice_state_set(customer, sluice_bytes_of(total.data, total.len));

    body.len = 0;
    append_str(&body, "{\"id\":");
    append_i64(&body, current.id);
    append_str(&body, ",\"customer\":");
    append_json_string(&body, &current.customer);
    append_str(&body, ",\"cents\":");
    append_i64(&body, current.cents);
    append_str(&body, ",\"total_cents\":");
    append(&body, total.data, total.len);
    append_byte(&body, '}');
    sluice_emit(output, customer, sluice_bytes_of(body.data, body.len));
    return SLUICE_OK;
}

SLUICE_ON_RECORD(on_order)
