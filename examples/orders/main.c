/* orders: an event with nested structs and arrays, two listeners, one with
 * concurrency 4 that fails for some orders, which end in its dead letters. */
#include <eventwire/eventwire.h>

#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

typedef struct {
    const char *street;
    const char *city;
} address;

typedef struct {
    const char *sku;
    uint32_t qty;
    double price;
} line_item;

typedef struct {
    int64_t id;
    const char *customer;
    address ship_to;
    line_item *items;
    size_t items_count;
    bool has_note;
    const char *note;
    ew_map tags;
} order_placed;

EW_TYPE(address, EW_FIELD(address, street, EW_STRING), EW_FIELD(address, city, EW_STRING));
EW_TYPE(line_item,
        EW_FIELD(line_item, sku, EW_STRING),
        EW_FIELD(line_item, qty, EW_UINT32),
        EW_FIELD(line_item, price, EW_DOUBLE));
EW_TYPE(order_placed,
        EW_FIELD(order_placed, id, EW_INT64),
        EW_FIELD(order_placed, customer, EW_STRING),
        EW_NESTED(order_placed, ship_to, address),
        EW_NESTED_ARRAY(order_placed, items, line_item, items_count),
        EW_OPTIONAL(order_placed, note, EW_STRING, has_note),
        EW_FIELD(order_placed, tags, EW_MAP));

static const ew_event_desc ORDER = {.type = &order_placed_type,
                                    .name = "OrderPlaced",
                                    .durable = true};

#define ORDERS 20

static atomic_int billed, shipped;

static ew_err on_bill(ew_delivery *d, const void *event, void *user)
{
    const order_placed *o = event;
    (void)d;
    (void)user;
    double total = 0;
    for (size_t i = 0; i < o->items_count; i++)
        total += o->items[i].qty * o->items[i].price;
    printf("billing: order %lld for %s, %zu items, %.2f\n", (long long)o->id,
           o->customer, o->items_count, total);
    atomic_fetch_add(&billed, 1);
    return EW_OK;
}

/* Fails for every seventh order: those are retried, then dead-lettered. */
static ew_err on_ship(ew_delivery *d, const void *event, void *user)
{
    const order_placed *o = event;
    (void)user;
    if (o->id % 7 == 0) {
        printf("shipping: order %lld to %s fails (attempt %u)\n", (long long)o->id,
               o->ship_to.city, ew_delivery_attempt(d));
        return EW_ELISTENER;
    }
    atomic_fetch_add(&shipped, 1);
    return EW_OK;
}

static ew_err on_dead_letter(void *user, const ew_envelope *env)
{
    (void)user;
    printf("dead letter %s: %s after %s attempts: %s\n", ew_envelope_message_id(env),
           ew_envelope_header(env, EW_HDR_DLQ_REASON),
           ew_envelope_header(env, EW_HDR_DLQ_ATTEMPTS),
           ew_envelope_header(env, EW_HDR_DLQ_ERROR));
    return EW_OK;
}

int main(void)
{
    const char *url = getenv("EW_URL") ? getenv("EW_URL") : "local://";
    ew_manager *m;
    ew_err rc = ew_manager_new(&m, url, NULL);
    if (rc != EW_OK) {
        fprintf(stderr, "orders: %s: %s\n", ew_strerror(rc), ew_last_error());
        return 1;
    }
    rc = ew_listen(m, &(ew_listener_desc){.event = &ORDER, .name = "Billing"}, on_bill, NULL);
    if (rc == EW_OK)
        rc = ew_listen(m,
                       &(ew_listener_desc){.event = &ORDER,
                                           .name = "Shipping",
                                           .concurrency = 4,
                                           .retry = {.attempts = 3, .backoff_ms = 20}},
                       on_ship, NULL);
    if (rc == EW_OK)
        rc = ew_manager_start(m);
    for (int64_t id = 1; rc == EW_OK && id <= ORDERS; id++) {
        line_item items[] = {{"SKU-1", (uint32_t)id, 2.5}, {"SKU-2", 1, 10.0}};
        char channel[] = "channel", web[] = "web";
        ew_map_entry tags[] = {{channel, web}};
        order_placed o = {.id = id,
                          .customer = "ACME",
                          .ship_to = {"Main St 1", "Springfield"},
                          .items = items,
                          .items_count = 2,
                          .has_note = id % 2 == 0,
                          .note = "leave at the door",
                          .tags = {tags, 1}};
        rc = ew_send(m, &ORDER, &o);
    }
    if (rc != EW_OK) {
        fprintf(stderr, "orders: %s: %s\n", ew_strerror(rc), ew_last_error());
        ew_manager_free(m);
        return 1;
    }
    /* Orders 7 and 14 fail on every attempt: read them from dead letters. */
    size_t dead = 0, got;
    ew_dead_letter_options dl = {.event = &ORDER, .listener = "Shipping", .max = 10,
                                 .timeout_ms = 5000, .fn = on_dead_letter, .user = NULL};
    while (dead < ORDERS / 7 &&
           ew_dead_letters(m, &dl, &got) == EW_OK && got > 0)
        dead += got;
    ew_manager_stop(m, 5000);
    printf("billed %d, shipped %d, dead letters %zu\n", atomic_load(&billed),
           atomic_load(&shipped), dead);
    ew_manager_free(m);
    return dead == ORDERS / 7 ? 0 : 1;
}
