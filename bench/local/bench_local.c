/* bench_local: events per second from ew_send to the listener on local://,
 * next to a bare msgpack-c pack + unpack + decode loop of the same struct
 * in the same run, and the ratio.
 *
 *   bench_local [events]        (default 1,000,000 hello, 200,000 orders)
 *
 * The eventwire figure covers everything an application pays: encode, the
 * framework headers (message id, send time), the pipelines (none here), the
 * in-process queue, the hand-off to a worker thread, decode into a freshly
 * allocated struct, the listener and the acknowledgement. The bare loop
 * does only the codec work, on one thread, with no allocation per event. */
#include <msgpack.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>

#include "ewi.h"

/* ---- the two events ----------------------------------------------------- */

typedef struct {
    const char *world;
    int64_t count;
} hello_event;

EW_TYPE(hello_event, EW_FIELD(hello_event, world, EW_STRING),
        EW_FIELD(hello_event, count, EW_INT64));

typedef struct {
    const char *sku;
    uint32_t qty;
    double price;
} line_item;

typedef struct {
    int64_t id;
    const char *customer;
    line_item *items;
    size_t items_count;
} order_event;

EW_TYPE(line_item, EW_FIELD(line_item, sku, EW_STRING), EW_FIELD(line_item, qty, EW_UINT32),
        EW_FIELD(line_item, price, EW_DOUBLE));
EW_TYPE(order_event, EW_FIELD(order_event, id, EW_INT64),
        EW_FIELD(order_event, customer, EW_STRING),
        EW_NESTED_ARRAY(order_event, items, line_item, items_count));

static line_item items3[3] = {{"SKU-000001", 2, 9.99}, {"SKU-000002", 1, 19.5},
                              {"SKU-000003", 7, 1.25}};

/* ---- bare msgpack-c baselines ------------------------------------------- */

static bool key_is(const msgpack_object_kv *kv, const char *k)
{
    size_t n = strlen(k);
    return kv->key.type == MSGPACK_OBJECT_STR && kv->key.via.str.size == n &&
           memcmp(kv->key.via.str.ptr, k, n) == 0;
}

static double bare_hello(long n)
{
    msgpack_sbuffer sb;
    msgpack_sbuffer_init(&sb);
    msgpack_packer pk;
    msgpack_packer_init(&pk, &sb, msgpack_sbuffer_write);
    msgpack_unpacked up;
    msgpack_unpacked_init(&up);
    volatile int64_t sink = 0;
    int64_t t0 = ewi_now_ms();
    for (long i = 0; i < n; i++) {
        hello_event in = {"world", i}, out = {0};
        msgpack_sbuffer_clear(&sb);
        msgpack_pack_map(&pk, 2);
        msgpack_pack_str_with_body(&pk, "world", 5);
        msgpack_pack_str_with_body(&pk, in.world, strlen(in.world));
        msgpack_pack_str_with_body(&pk, "count", 5);
        msgpack_pack_int64(&pk, in.count);
        size_t off = 0;
        if (msgpack_unpack_next(&up, sb.data, sb.size, &off) != MSGPACK_UNPACK_SUCCESS)
            abort();
        msgpack_object_map *m = &up.data.via.map;
        for (uint32_t k = 0; k < m->size; k++) {
            if (key_is(&m->ptr[k], "world"))
                out.world = m->ptr[k].val.via.str.ptr;
            else if (key_is(&m->ptr[k], "count"))
                out.count = m->ptr[k].val.via.i64;
        }
        sink += out.count + (out.world != NULL);
    }
    int64_t ms = ewi_now_ms() - t0;
    msgpack_unpacked_destroy(&up);
    msgpack_sbuffer_destroy(&sb);
    return n * 1000.0 / (ms ? ms : 1);
}

static double bare_order(long n)
{
    msgpack_sbuffer sb;
    msgpack_sbuffer_init(&sb);
    msgpack_packer pk;
    msgpack_packer_init(&pk, &sb, msgpack_sbuffer_write);
    msgpack_unpacked up;
    msgpack_unpacked_init(&up);
    volatile int64_t sink = 0;
    int64_t t0 = ewi_now_ms();
    for (long i = 0; i < n; i++) {
        order_event in = {i, "ACME Corporation", items3, 3}, out = {0};
        line_item got[3];
        msgpack_sbuffer_clear(&sb);
        msgpack_pack_map(&pk, 3);
        msgpack_pack_str_with_body(&pk, "id", 2);
        msgpack_pack_int64(&pk, in.id);
        msgpack_pack_str_with_body(&pk, "customer", 8);
        msgpack_pack_str_with_body(&pk, in.customer, strlen(in.customer));
        msgpack_pack_str_with_body(&pk, "items", 5);
        msgpack_pack_array(&pk, 3);
        for (int k = 0; k < 3; k++) {
            msgpack_pack_map(&pk, 3);
            msgpack_pack_str_with_body(&pk, "sku", 3);
            msgpack_pack_str_with_body(&pk, in.items[k].sku, strlen(in.items[k].sku));
            msgpack_pack_str_with_body(&pk, "qty", 3);
            msgpack_pack_uint32(&pk, in.items[k].qty);
            msgpack_pack_str_with_body(&pk, "price", 5);
            msgpack_pack_double(&pk, in.items[k].price);
        }
        size_t off = 0;
        if (msgpack_unpack_next(&up, sb.data, sb.size, &off) != MSGPACK_UNPACK_SUCCESS)
            abort();
        msgpack_object_map *m = &up.data.via.map;
        for (uint32_t k = 0; k < m->size; k++) {
            msgpack_object *v = &m->ptr[k].val;
            if (key_is(&m->ptr[k], "id"))
                out.id = v->via.i64;
            else if (key_is(&m->ptr[k], "customer"))
                out.customer = v->via.str.ptr;
            else if (key_is(&m->ptr[k], "items")) {
                out.items = got;
                out.items_count = v->via.array.size;
                for (uint32_t j = 0; j < v->via.array.size && j < 3; j++) {
                    msgpack_object_map *im = &v->via.array.ptr[j].via.map;
                    for (uint32_t q = 0; q < im->size; q++) {
                        if (key_is(&im->ptr[q], "sku"))
                            got[j].sku = im->ptr[q].val.via.str.ptr;
                        else if (key_is(&im->ptr[q], "qty"))
                            got[j].qty = (uint32_t)im->ptr[q].val.via.u64;
                        else if (key_is(&im->ptr[q], "price"))
                            got[j].price = im->ptr[q].val.via.f64;
                    }
                }
            }
        }
        sink += out.id + (long)out.items_count;
    }
    int64_t ms = ewi_now_ms() - t0;
    msgpack_unpacked_destroy(&up);
    msgpack_sbuffer_destroy(&sb);
    return n * 1000.0 / (ms ? ms : 1);
}

/* ---- eventwire ---------------------------------------------------------- */

static atomic_long received;

static ew_err on_event(ew_delivery *d, const void *event, void *user)
{
    (void)d;
    (void)event;
    (void)user;
    atomic_fetch_add_explicit(&received, 1, memory_order_relaxed);
    return EW_OK;
}

static double eventwire(const ew_type *type, const void *(*make)(long, void *), long n,
                        uint32_t concurrency, const char *name)
{
    ew_manager *m;
    char url[64];
    snprintf(url, sizeof url, "local://bench-%s-%u", name, concurrency);
    if (ew_manager_new(&m, url, NULL) != EW_OK)
        abort();
    ew_event_desc ev = {.type = type, .name = name};
    ew_listener_desc l = {.event = &ev, .name = "Bench", .concurrency = concurrency,
                          .prefetch = 1000};
    if (ew_listen(m, &l, on_event, NULL) != EW_OK || ew_manager_start(m) != EW_OK)
        abort();
    atomic_store(&received, 0);
    char scratch[256];
    int64_t t0 = ewi_now_ms();
    for (long i = 0; i < n; i++)
        if (ew_send(m, &ev, make(i, scratch)) != EW_OK)
            abort();
    while (atomic_load(&received) < n)
        ewi_sleep_ms(1);
    int64_t ms = ewi_now_ms() - t0;
    ew_manager_free(m);
    return n * 1000.0 / (ms ? ms : 1);
}

static const void *make_hello(long i, void *scratch)
{
    hello_event *h = scratch;
    *h = (hello_event){"world", i};
    return h;
}

static const void *make_order(long i, void *scratch)
{
    order_event *o = scratch;
    *o = (order_event){i, "ACME Corporation", items3, 3};
    return o;
}

static long peak_rss_kb(void)
{
    struct rusage ru;
    getrusage(RUSAGE_SELF, &ru);
    return ru.ru_maxrss;
}

int main(int argc, char **argv)
{
    long n = argc > 1 ? atol(argv[1]) : 1000000;
    long n_orders = n / 5;
    printf("bench_local: events/s from ew_send to the listener on local://\n");
    printf("%-8s %-12s %10s %14s %14s %7s\n", "event", "concurrency", "events",
           "eventwire/s", "bare codec/s", "ratio");
    struct {
        const char *name;
        const ew_type *type;
        const void *(*make)(long, void *);
        double (*bare)(long);
        long n;
    } cases[] = {{"hello", &hello_event_type, make_hello, bare_hello, n},
                 {"orders", &order_event_type, make_order, bare_order, n_orders}};
    for (size_t c = 0; c < 2; c++) {
        double bare = cases[c].bare(cases[c].n);
        for (uint32_t conc = 1; conc <= 2; conc++) {
            double ew = eventwire(cases[c].type, cases[c].make, cases[c].n, conc,
                                  cases[c].name);
            printf("%-8s %-12u %10ld %14.0f %14.0f %7.2f\n", cases[c].name, conc,
                   cases[c].n, ew, bare, ew / bare);
        }
    }
    printf("peak RSS %ld KiB\n", peak_rss_kb());
    return 0;
}
