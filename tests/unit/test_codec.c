/* The schema-driven body codecs: round trips of every kind in both formats,
 * the exact wire bytes a peer sees, and every kind of bad input with the
 * exact error text (field path included) a user reads in the logs. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <float.h>
#include <jansson.h>
#include <malloc.h>
#include <math.h>
#include <msgpack.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <eventwire/codec.h>

#include "codec_internal.h"
#include "codec_priv.h"

/* ---- schemas ------------------------------------------------------------ */

/* The field macros check member types at compile time. None of these
 * compiles (gcc: "'_Generic' selector of type 'unsigned int' is not
 * compatible with any association"; clang: "controlling expression type ...
 * not compatible with any generic association type"):
 *
 *   EW_FIELD(line, qty, EW_UINT64)              qty is uint32_t
 *   EW_FIELD(line, sku, EW_INT32)               sku is a string
 *   EW_ARRAY(order, note, EW_STRING, qty)       note is not a char **, qty not a size_t
 *   EW_OPTIONAL(order, note, EW_STRING, qty)    the presence flag must be bool
 *   EW_NESTED(order, items, line)               items is a line *, not a line
 *   EW_FIELD(order, items, EW_STRUCT)           nested structs need EW_NESTED
 */

typedef struct hello {
    const char *world;
    int32_t count;
} hello;
EW_TYPE(hello, EW_FIELD(hello, world, EW_STRING), EW_FIELD(hello, count, EW_INT32));

typedef struct line {
    const char *sku;
    uint32_t qty;
} line;
EW_TYPE(line, EW_FIELD(line, sku, EW_STRING), EW_FIELD(line, qty, EW_UINT32));

typedef struct order {
    int64_t id;
    line *items;
    size_t items_count;
    bool has_note;
    const char *note;
    uint8_t qty;
    bool has_tags;
    ew_map tags;
    bool has_price;
    float price;
    bool has_blob;
    ew_bytes blob;
} order;
EW_TYPE(order,
        EW_FIELD(order, id, EW_INT64),
        EW_NESTED_ARRAY(order, items, line, items_count),
        EW_OPTIONAL(order, note, EW_STRING, has_note),
        EW_FIELD(order, qty, EW_UINT8),
        EW_OPTIONAL(order, tags, EW_MAP, has_tags),
        EW_OPTIONAL(order, price, EW_FLOAT, has_price),
        EW_OPTIONAL(order, blob, EW_BYTES, has_blob));

typedef struct addr {
    const char *city;
    bool has_zip;
    const char *zip;
} addr;
EW_TYPE(addr, EW_FIELD(addr, city, EW_STRING), EW_OPTIONAL(addr, zip, EW_STRING, has_zip));

/* Every kind, scalar and array, plus nested and optional ones. */
typedef struct every {
    bool b;
    int8_t i8;
    int16_t i16;
    int32_t i32;
    int64_t i64;
    uint8_t u8;
    uint16_t u16;
    uint32_t u32;
    uint64_t u64;
    float f;
    double d;
    const char *s;
    ew_bytes by;
    ew_map m;
    addr home;
    bool has_work;
    addr work;
    bool has_oi;
    int32_t oi;
    bool *ab; size_t nab;
    int8_t *ai8; size_t nai8;
    int16_t *ai16; size_t nai16;
    int32_t *ai32; size_t nai32;
    int64_t *ai64; size_t nai64;
    uint8_t *au8; size_t nau8;
    uint16_t *au16; size_t nau16;
    uint32_t *au32; size_t nau32;
    uint64_t *au64; size_t nau64;
    float *af; size_t naf;
    double *ad; size_t nad;
    const char **as; size_t nas;
    ew_bytes *aby; size_t naby;
    ew_map *am; size_t nam;
    addr *aaddr; size_t naaddr;
} every;
EW_TYPE(every,
        EW_FIELD(every, b, EW_BOOL), EW_FIELD(every, i8, EW_INT8),
        EW_FIELD(every, i16, EW_INT16), EW_FIELD(every, i32, EW_INT32),
        EW_FIELD(every, i64, EW_INT64), EW_FIELD(every, u8, EW_UINT8),
        EW_FIELD(every, u16, EW_UINT16), EW_FIELD(every, u32, EW_UINT32),
        EW_FIELD(every, u64, EW_UINT64), EW_FIELD(every, f, EW_FLOAT),
        EW_FIELD(every, d, EW_DOUBLE), EW_FIELD(every, s, EW_STRING),
        EW_FIELD(every, by, EW_BYTES), EW_FIELD(every, m, EW_MAP),
        EW_NESTED(every, home, addr),
        EW_OPTIONAL_NESTED(every, work, addr, has_work),
        EW_OPTIONAL(every, oi, EW_INT32, has_oi),
        EW_ARRAY(every, ab, EW_BOOL, nab), EW_ARRAY(every, ai8, EW_INT8, nai8),
        EW_ARRAY(every, ai16, EW_INT16, nai16), EW_ARRAY(every, ai32, EW_INT32, nai32),
        EW_ARRAY(every, ai64, EW_INT64, nai64), EW_ARRAY(every, au8, EW_UINT8, nau8),
        EW_ARRAY(every, au16, EW_UINT16, nau16), EW_ARRAY(every, au32, EW_UINT32, nau32),
        EW_ARRAY(every, au64, EW_UINT64, nau64), EW_ARRAY(every, af, EW_FLOAT, naf),
        EW_ARRAY(every, ad, EW_DOUBLE, nad), EW_ARRAY(every, as, EW_STRING, nas),
        EW_ARRAY(every, aby, EW_BYTES, naby), EW_ARRAY(every, am, EW_MAP, nam),
        EW_NESTED_ARRAY(every, aaddr, addr, naaddr));

/* A recursive type: a tree through arrays (by value it could not exist). */
typedef struct node {
    const char *v;
    struct node *kids;
    size_t nkids;
} node;
EW_TYPE(node, EW_FIELD(node, v, EW_STRING), EW_NESTED_ARRAY(node, kids, node, nkids));

typedef struct big {
    uint64_t u;
} big;
EW_TYPE(big, EW_FIELD(big, u, EW_UINT64));

/* ---- helpers ------------------------------------------------------------ */

static uint8_t *enc(const ew_type *t, ew_format fmt, const void *ev, size_t *len)
{
    uint8_t *out = NULL;
    char err[256] = "";
    ew_err rc = ew_encode(t, fmt, ev, &out, len, err, sizeof err);
    if (rc != EW_OK)
        fail_msg("encode: %d %s", rc, err);
    return out;
}

static void *dec(const ew_type *t, ew_format fmt, const void *data, size_t len)
{
    void *out = NULL;
    char err[512] = "";
    ew_err rc = ew_decode(t, fmt, data, len, NULL, &out, err, sizeof err);
    if (rc != EW_OK)
        fail_msg("decode: %d %s", rc, err);
    return out;
}

/* Encodes ev, decodes it back: the caller frees the result. */
static void *roundtrip(const ew_type *t, ew_format fmt, const void *ev)
{
    size_t len = 0;
    uint8_t *b = enc(t, fmt, ev, &len);
    void *back = dec(t, fmt, b, len);
    free(b);
    return back;
}

static void expect_decode_err(const ew_type *t, ew_format fmt, const void *data,
                              size_t len, const ew_decode_limits *lim,
                              ew_err want_rc, const char *want)
{
    char err[512] = "";
    void *out = &err; /* must come back NULL */
    ew_err rc = ew_decode(t, fmt, data, len, lim, &out, err, sizeof err);
    if (rc != want_rc || strcmp(err, want) != 0)
        fail_msg("got %d \"%s\"\nwanted %d \"%s\"", rc, err, want_rc, want);
    assert_null(out);
}

static void expect_encode_err(const ew_type *t, ew_format fmt, const void *ev,
                              const char *want)
{
    char err[512] = "";
    uint8_t *out = (uint8_t *)err;
    size_t len = 99;
    ew_err rc = ew_encode(t, fmt, ev, &out, &len, err, sizeof err);
    if (rc != EW_EENCODE || strcmp(err, want) != 0)
        fail_msg("got %d \"%s\"\nwanted %d \"%s\"", rc, err, EW_EENCODE, want);
    assert_null(out);
    assert_int_equal(len, 0);
}

/* JSON written with ' for " (readable in C), turned into a jansson tree. */
static json_t *jtree(const char *squoted)
{
    char *txt = strdup(squoted);
    for (char *p = txt; *p; p++)
        if (*p == '\'')
            *p = '"';
    json_error_t je;
    json_t *j = json_loads(txt, JSON_ALLOW_NUL | JSON_DECODE_ANY, &je);
    if (!j)
        fail_msg("test JSON: %s in %s", je.text, txt);
    free(txt);
    return j;
}

static char *jtext(const char *squoted)
{
    char *txt = strdup(squoted);
    for (char *p = txt; *p; p++)
        if (*p == '\'')
            *p = '"';
    return txt;
}

/* The same tree as msgpack, packed by msgpack-c itself (not our encoder). */
static void pack_json(msgpack_packer *pk, const json_t *j)
{
    switch (json_typeof(j)) {
    case JSON_OBJECT: {
        const char *k;
        size_t kl;
        json_t *v;
        msgpack_pack_map(pk, json_object_size(j));
        json_object_keylen_foreach((json_t *)(uintptr_t)j, k, kl, v) {
            msgpack_pack_str_with_body(pk, k, kl);
            pack_json(pk, v);
        }
        break;
    }
    case JSON_ARRAY:
        msgpack_pack_array(pk, json_array_size(j));
        for (size_t i = 0; i < json_array_size(j); i++)
            pack_json(pk, json_array_get(j, i));
        break;
    case JSON_STRING:
        msgpack_pack_str_with_body(pk, json_string_value(j), json_string_length(j));
        break;
    case JSON_INTEGER: msgpack_pack_int64(pk, json_integer_value(j)); break;
    case JSON_REAL: msgpack_pack_double(pk, json_real_value(j)); break;
    case JSON_TRUE: msgpack_pack_true(pk); break;
    case JSON_FALSE: msgpack_pack_false(pk); break;
    case JSON_NULL: msgpack_pack_nil(pk); break;
    }
}

typedef struct mpbuf {
    msgpack_sbuffer sb;
    msgpack_packer pk;
} mpbuf;

static void mp_init(mpbuf *m)
{
    msgpack_sbuffer_init(&m->sb);
    msgpack_packer_init(&m->pk, &m->sb, msgpack_sbuffer_write);
}

static void mp_str(mpbuf *m, const char *s)
{
    msgpack_pack_str_with_body(&m->pk, s, strlen(s));
}

static void mp_from_json(mpbuf *m, const char *squoted)
{
    json_t *j = jtree(squoted);
    mp_init(m);
    pack_json(&m->pk, j);
    json_decref(j);
}

/* Whether p lies inside the block (the one-allocation promise). */
static bool in_block(const void *block, const void *p, size_t len)
{
    const uint8_t *b = block, *q = p;
    size_t size = malloc_usable_size((void *)(uintptr_t)block);
    return q >= b && q + len <= b + size;
}

/* ---- the wire: what a peer sees ----------------------------------------- */

static void json_body_is_exactly_the_fields_in_schema_order(void **state)
{
    (void)state;
    hello h = {"x", 1};
    size_t len;
    uint8_t *b = enc(&hello_type, EW_FORMAT_JSON, &h, &len);
    assert_int_equal(len, strlen("{\"world\":\"x\",\"count\":1}"));
    assert_memory_equal(b, "{\"world\":\"x\",\"count\":1}", len);
    free(b);

    /* Nested, arrays, optional (absent ones left out), map, bytes, float. */
    static char k1[] = "color", v1[] = "red";
    ew_map_entry tags[] = {{k1, v1}};
    line items[] = {{"a-1", 2}, {"b\"2", 0}};
    uint8_t blob[] = {0, 1, 2, 0xff};
    order o = {.id = -7, .items = items, .items_count = 2, .qty = 3,
               .has_tags = true, .tags = {tags, 1}, .has_price = true,
               .price = 0.1f, .has_blob = true, .blob = {blob, 4}};
    b = enc(&order_type, EW_FORMAT_JSON, &o, &len);
    const char *want = "{\"id\":-7,\"items\":[{\"sku\":\"a-1\",\"qty\":2},"
                       "{\"sku\":\"b\\\"2\",\"qty\":0}],\"qty\":3,"
                       "\"tags\":{\"color\":\"red\"},\"price\":0.10000000000000001,"
                       "\"blob\":\"AAEC/w==\"}";
    if (len != strlen(want) || memcmp(b, want, len) != 0)
        fail_msg("got %.*s", (int)len, (const char *)b);
    free(b);
}

static void msgpack_body_is_a_map_of_field_names(void **state)
{
    (void)state;
    hello h = {"x", 1};
    size_t len;
    uint8_t *b = enc(&hello_type, EW_FORMAT_MSGPACK, &h, &len);
    static const uint8_t want[] = {0x82, 0xa5, 'w', 'o', 'r', 'l', 'd', 0xa1, 'x',
                                   0xa5, 'c', 'o', 'u', 'n', 't', 0x01};
    assert_int_equal(len, sizeof want);
    assert_memory_equal(b, want, len);
    free(b);

    /* bytes are bin, float is float32, absent optionals are left out. */
    uint8_t blob[] = {9};
    order o = {.id = 1, .qty = 2, .has_price = true, .price = 1.5f,
               .has_blob = true, .blob = {blob, 1}};
    b = enc(&order_type, EW_FORMAT_MSGPACK, &o, &len);
    static const uint8_t want2[] = {
        0x85, 0xa2, 'i', 'd', 0x01, 0xa5, 'i', 't', 'e', 'm', 's', 0x90,
        0xa3, 'q', 't', 'y', 0x02, 0xa5, 'p', 'r', 'i', 'c', 'e', 0xca, 0x3f, 0xc0, 0, 0,
        0xa4, 'b', 'l', 'o', 'b', 0xc4, 0x01, 0x09};
    assert_int_equal(len, sizeof want2);
    assert_memory_equal(b, want2, len);
    free(b);
}

/* ---- round trips -------------------------------------------------------- */

static bool ab[] = {true, false, true};
static int8_t ai8[] = {INT8_MIN, -1, 0, INT8_MAX};
static int16_t ai16[] = {INT16_MIN, INT16_MAX};
static int32_t ai32[] = {INT32_MIN, 0, INT32_MAX};
static int64_t ai64[] = {INT64_MIN, -4294967296LL, INT64_MAX};
static uint8_t au8[] = {0, UINT8_MAX};
static uint16_t au16[] = {0, 256, UINT16_MAX};
static uint32_t au32[] = {0, 65536, UINT32_MAX};
static uint64_t au64[] = {0, 4294967296ULL, (uint64_t)INT64_MAX};
static float af[] = {-0.0f, 1e-45f, FLT_MAX, -FLT_MIN, 3.25f};
static double ad[] = {-0.0, 5e-324, DBL_MAX, 0.1, -1e300};
static const char *as[] = {"", "é ü 漢字 😀", "tab\tnew\nline \"q\" \\"};
static uint8_t bytes1[] = {0, 0xff, 0x80, 'x'};
static char mk1[] = "k", mv1[] = "v", mk2[] = "ключ", mv2[] = "", mk3[] = "", mv3[] = "e";
static ew_map_entry ment[] = {{mk1, mv1}, {mk2, mv2}, {mk3, mv3}};

static void fill_every(every *e)
{
    memset(e, 0, sizeof *e);
    e->b = true;
    e->i8 = INT8_MIN;
    e->i16 = INT16_MAX;
    e->i32 = INT32_MIN;
    e->i64 = INT64_MIN;
    e->u8 = UINT8_MAX;
    e->u16 = UINT16_MAX;
    e->u32 = UINT32_MAX;
    e->u64 = (uint64_t)INT64_MAX; /* the most JSON carries; msgpack test adds more */
    e->f = -2.5e-3f;
    e->d = 6.02214076e23;
    e->s = "hello, 世界";
    e->by = (ew_bytes){bytes1, sizeof bytes1};
    e->m = (ew_map){ment, 3};
    e->home = (addr){"Bern", true, "3000"};
    e->has_work = true;
    e->work = (addr){"Zürich", false, NULL};
    e->has_oi = true;
    e->oi = -5;
    e->ab = ab; e->nab = 3;
    e->ai8 = ai8; e->nai8 = 4;
    e->ai16 = ai16; e->nai16 = 2;
    e->ai32 = ai32; e->nai32 = 3;
    e->ai64 = ai64; e->nai64 = 3;
    e->au8 = au8; e->nau8 = 2;
    e->au16 = au16; e->nau16 = 3;
    e->au32 = au32; e->nau32 = 3;
    e->au64 = au64; e->nau64 = 3;
    e->af = af; e->naf = 5;
    e->ad = ad; e->nad = 5;
    e->as = as; e->nas = 3;
    static ew_bytes abys[3];
    abys[0] = (ew_bytes){bytes1, 1};
    abys[1] = (ew_bytes){NULL, 0};
    abys[2] = (ew_bytes){bytes1, 4};
    e->aby = abys; e->naby = 3;
    static ew_map ams[2];
    ams[0] = (ew_map){ment, 2};
    ams[1] = (ew_map){NULL, 0};
    e->am = ams; e->nam = 2;
    static addr aaddrs[2];
    aaddrs[0] = (addr){"A", true, "1"};
    aaddrs[1] = (addr){"B", false, NULL};
    e->aaddr = aaddrs; e->naaddr = 2;
}

static void assert_bytes_eq(const ew_bytes *a, const ew_bytes *b)
{
    assert_int_equal(a->len, b->len);
    if (a->len)
        assert_memory_equal(a->data, b->data, a->len);
}

static void assert_map_eq(const ew_map *a, const ew_map *b)
{
    assert_int_equal(a->count, b->count);
    for (size_t i = 0; i < a->count; i++) {
        assert_string_equal(a->entries[i].key, b->entries[i].key);
        assert_string_equal(a->entries[i].value, b->entries[i].value);
    }
}

static void assert_addr_eq(const addr *a, const addr *b)
{
    assert_string_equal(a->city, b->city);
    assert_int_equal(a->has_zip, b->has_zip);
    if (a->has_zip)
        assert_string_equal(a->zip, b->zip);
    else
        assert_null(b->zip);
}

#define ASSERT_ARR_EQ(a, b, p, n)                                   \
    do {                                                            \
        assert_int_equal((a)->n, (b)->n);                           \
        if ((a)->n)                                                 \
            assert_memory_equal((a)->p, (b)->p, (a)->n * sizeof *(a)->p); \
    } while (0)

static void assert_every_eq(const every *a, const every *b)
{
    assert_int_equal(a->b, b->b);
    assert_int_equal(a->i8, b->i8);
    assert_int_equal(a->i16, b->i16);
    assert_int_equal(a->i32, b->i32);
    assert_true(a->i64 == b->i64);
    assert_int_equal(a->u8, b->u8);
    assert_int_equal(a->u16, b->u16);
    assert_int_equal(a->u32, b->u32);
    assert_true(a->u64 == b->u64);
    assert_memory_equal(&a->f, &b->f, sizeof a->f);
    assert_memory_equal(&a->d, &b->d, sizeof a->d);
    assert_string_equal(a->s, b->s);
    assert_bytes_eq(&a->by, &b->by);
    assert_map_eq(&a->m, &b->m);
    assert_addr_eq(&a->home, &b->home);
    assert_int_equal(a->has_work, b->has_work);
    if (a->has_work)
        assert_addr_eq(&a->work, &b->work);
    assert_int_equal(a->has_oi, b->has_oi);
    assert_int_equal(a->oi, b->oi);
    ASSERT_ARR_EQ(a, b, ab, nab);
    ASSERT_ARR_EQ(a, b, ai8, nai8);
    ASSERT_ARR_EQ(a, b, ai16, nai16);
    ASSERT_ARR_EQ(a, b, ai32, nai32);
    ASSERT_ARR_EQ(a, b, ai64, nai64);
    ASSERT_ARR_EQ(a, b, au8, nau8);
    ASSERT_ARR_EQ(a, b, au16, nau16);
    ASSERT_ARR_EQ(a, b, au32, nau32);
    ASSERT_ARR_EQ(a, b, au64, nau64);
    ASSERT_ARR_EQ(a, b, af, naf);
    ASSERT_ARR_EQ(a, b, ad, nad);
    assert_int_equal(a->nas, b->nas);
    for (size_t i = 0; i < a->nas; i++)
        assert_string_equal(a->as[i], b->as[i]);
    assert_int_equal(a->naby, b->naby);
    for (size_t i = 0; i < a->naby; i++)
        assert_bytes_eq(&a->aby[i], &b->aby[i]);
    assert_int_equal(a->nam, b->nam);
    for (size_t i = 0; i < a->nam; i++)
        assert_map_eq(&a->am[i], &b->am[i]);
    assert_int_equal(a->naaddr, b->naaddr);
    for (size_t i = 0; i < a->naaddr; i++)
        assert_addr_eq(&a->aaddr[i], &b->aaddr[i]);
}

/* Every pointer of a decoded event lies inside its one block. */
static void assert_every_in_block(const every *e)
{
    const void *blk = e;
    assert_true(in_block(blk, e->s, strlen(e->s) + 1));
    assert_true(in_block(blk, e->by.data, e->by.len));
    assert_true(in_block(blk, e->m.entries, e->m.count * sizeof(ew_map_entry)));
    for (size_t i = 0; i < e->m.count; i++) {
        assert_true(in_block(blk, e->m.entries[i].key, 1));
        assert_true(in_block(blk, e->m.entries[i].value, 1));
    }
    assert_true(in_block(blk, e->home.city, strlen(e->home.city) + 1));
    assert_true(in_block(blk, e->ai64, e->nai64 * sizeof *e->ai64));
    assert_true(in_block(blk, e->ad, e->nad * sizeof *e->ad));
    assert_true(in_block(blk, e->as, e->nas * sizeof *e->as));
    for (size_t i = 0; i < e->nas; i++)
        assert_true(in_block(blk, e->as[i], strlen(e->as[i]) + 1));
    assert_true(in_block(blk, e->aaddr, e->naaddr * sizeof *e->aaddr));
    assert_true(in_block(blk, e->aaddr[0].city, 2));
    assert_true(in_block(blk, e->am[0].entries, 2 * sizeof(ew_map_entry)));
    /* and aligned for their types */
    assert_int_equal((uintptr_t)e->ai64 % _Alignof(int64_t), 0);
    assert_int_equal((uintptr_t)e->ad % _Alignof(double), 0);
    assert_int_equal((uintptr_t)e->as % _Alignof(char *), 0);
    assert_int_equal((uintptr_t)e->aaddr % _Alignof(addr), 0);
    assert_int_equal((uintptr_t)e->am % _Alignof(ew_map), 0);
}

static void every_kind_round_trips(void **state)
{
    (void)state;
    every e;
    fill_every(&e);
    for (int fmt = EW_FORMAT_MSGPACK; fmt <= EW_FORMAT_JSON; fmt++) {
        every *back = roundtrip(&every_type, (ew_format)fmt, &e);
        assert_every_eq(&e, back);
        assert_every_in_block(back);
        ew_event_free(&every_type, back);
    }
}

static void extreme_values_round_trip(void **state)
{
    (void)state;
    every e;
    fill_every(&e);
    e.i8 = INT8_MAX; e.i16 = INT16_MIN; e.i32 = INT32_MAX; e.i64 = INT64_MAX;
    e.u8 = 0; e.u16 = 0; e.u32 = 0;
    e.f = FLT_MAX; e.d = -DBL_MAX;
    for (int fmt = EW_FORMAT_MSGPACK; fmt <= EW_FORMAT_JSON; fmt++) {
        every *back = roundtrip(&every_type, (ew_format)fmt, &e);
        assert_every_eq(&e, back);
        ew_event_free(&every_type, back);
    }
    /* msgpack carries the whole uint64 range, NaN and infinities. */
    static uint64_t u64s[] = {UINT64_MAX, (uint64_t)INT64_MAX + 1};
    static float fs[] = {INFINITY, -INFINITY};
    e.u64 = UINT64_MAX;
    e.au64 = u64s;
    e.nau64 = 2;
    e.af = fs;
    e.naf = 2;
    e.d = NAN;
    every *back = roundtrip(&every_type, EW_FORMAT_MSGPACK, &e);
    assert_true(back->u64 == UINT64_MAX);
    assert_true(back->au64[1] == (uint64_t)INT64_MAX + 1);
    assert_true(isinf(back->af[0]) && back->af[0] > 0);
    assert_true(isinf(back->af[1]) && back->af[1] < 0);
    assert_true(isnan(back->d));
    ew_event_free(&every_type, back);
}

static void empty_values_round_trip(void **state)
{
    (void)state;
    every e;
    memset(&e, 0, sizeof e);
    e.s = "";
    e.home.city = "";
    for (int fmt = EW_FORMAT_MSGPACK; fmt <= EW_FORMAT_JSON; fmt++) {
        every *back = roundtrip(&every_type, (ew_format)fmt, &e);
        assert_every_eq(&e, back);
        /* empty strings are "", empty arrays, bytes and maps NULL with 0 */
        assert_non_null(back->s);
        assert_string_equal(back->s, "");
        assert_null(back->ai32);
        assert_int_equal(back->nai32, 0);
        assert_null(back->by.data);
        assert_null(back->m.entries);
        assert_false(back->has_work);
        assert_false(back->has_oi);
        ew_event_free(&every_type, back);
    }
}

static void optional_fields_absent_and_present(void **state)
{
    (void)state;
    order o = {.id = 5, .qty = 1};
    for (int fmt = EW_FORMAT_MSGPACK; fmt <= EW_FORMAT_JSON; fmt++) {
        size_t len;
        uint8_t *b = enc(&order_type, (ew_format)fmt, &o, &len);
        if (fmt == EW_FORMAT_JSON)
            assert_memory_equal(b, "{\"id\":5,\"items\":[],\"qty\":1}", len);
        else
            assert_int_equal(b[0], 0x83); /* three fields on the wire */
        order *back = dec(&order_type, (ew_format)fmt, b, len);
        free(b);
        assert_false(back->has_note);
        assert_null(back->note);
        assert_false(back->has_tags);
        assert_false(back->has_price);
        assert_false(back->has_blob);
        ew_event_free(&order_type, back);
    }
    o.has_note = true;
    o.note = "fragile";
    o.has_price = true;
    o.price = 0;
    for (int fmt = EW_FORMAT_MSGPACK; fmt <= EW_FORMAT_JSON; fmt++) {
        order *back = roundtrip(&order_type, (ew_format)fmt, &o);
        assert_true(back->has_note);
        assert_string_equal(back->note, "fragile");
        assert_true(back->has_price); /* present though zero */
        assert_true(back->price == 0);
        assert_false(back->has_tags);
        ew_event_free(&order_type, back);
    }
    /* nil / null on the wire for an optional field is absent */
    const char *body = "{'id':1,'items':[],'qty':1,'note':null,'tags':null}";
    mpbuf m;
    mp_from_json(&m, body);
    order *back = dec(&order_type, EW_FORMAT_MSGPACK, m.sb.data, m.sb.size);
    assert_false(back->has_note);
    assert_false(back->has_tags);
    ew_event_free(&order_type, back);
    msgpack_sbuffer_destroy(&m.sb);
    char *txt = jtext(body);
    back = dec(&order_type, EW_FORMAT_JSON, txt, strlen(txt));
    assert_false(back->has_note);
    ew_event_free(&order_type, back);
    free(txt);
}

static void recursive_type_through_arrays(void **state)
{
    (void)state;
    node leaves[2] = {{"l1", NULL, 0}, {"l2", NULL, 0}};
    node mid = {"mid", leaves, 2};
    node root = {"root", &mid, 1};
    for (int fmt = EW_FORMAT_MSGPACK; fmt <= EW_FORMAT_JSON; fmt++) {
        node *back = roundtrip(&node_type, (ew_format)fmt, &root);
        assert_string_equal(back->v, "root");
        assert_int_equal(back->nkids, 1);
        assert_string_equal(back->kids[0].v, "mid");
        assert_int_equal(back->kids[0].nkids, 2);
        assert_string_equal(back->kids[0].kids[1].v, "l2");
        assert_null(back->kids[0].kids[1].kids);
        ew_event_free(&node_type, back);
    }
}

/* A msgpack body is decoded in one pass into a block of about the body's
 * size; one that needs more (here: many small structs) is measured by that
 * pass and filled again into a block of the right size. Both give the same
 * values, all inside the one block. */
static void small_and_wide_bodies_decode_alike(void **state)
{
    (void)state;
    enum { WIDE = 500 };
    static char names[WIDE][8];
    static node kids[WIDE];
    for (size_t n = 3; n <= WIDE; n += WIDE - 3) {
        for (size_t i = 0; i < n; i++) {
            snprintf(names[i], sizeof names[i], "k%zu", i);
            kids[i] = (node){names[i], NULL, 0};
        }
        node root = {"root", kids, n};
        size_t len = 0;
        uint8_t *b = enc(&node_type, EW_FORMAT_MSGPACK, &root, &len);
        node *back = dec(&node_type, EW_FORMAT_MSGPACK, b, len);
        free(b);
        size_t need = sizeof(node) * (n + 1) + 5;
        for (size_t i = 0; i < n; i++)
            need += strlen(names[i]) + 1;
        if (n == WIDE)
            assert_true(need > len + 4096); /* the guess cannot hold it */
        assert_string_equal(back->v, "root");
        assert_true(in_block(back, back->v, 5));
        assert_int_equal(back->nkids, n);
        assert_true(in_block(back, back->kids, n * sizeof(node)));
        for (size_t i = 0; i < n; i++) {
            assert_string_equal(back->kids[i].v, names[i]);
            assert_true(in_block(back, back->kids[i].v, strlen(names[i]) + 1));
            assert_null(back->kids[i].kids);
            assert_int_equal(back->kids[i].nkids, 0);
        }
        ew_event_free(&node_type, back);
    }
}

/* Decoding keeps the wire order of a string map, and skips unknown fields
 * of any shape, so producers can add fields. */
static void unknown_fields_are_skipped(void **state)
{
    (void)state;
    const char *body = "{'new':{'deep':[1,2,{'x':null}]},'id':9,'zzz':'s',"
                       "'items':[{'extra':[true],'sku':'q','qty':4}],'qty':2,"
                       "'tags':{'b':'1','a':'2'},'more':1.5}";
    for (int fmt = EW_FORMAT_MSGPACK; fmt <= EW_FORMAT_JSON; fmt++) {
        order *o;
        if (fmt == EW_FORMAT_MSGPACK) {
            mpbuf m;
            mp_from_json(&m, body);
            o = dec(&order_type, EW_FORMAT_MSGPACK, m.sb.data, m.sb.size);
            msgpack_sbuffer_destroy(&m.sb);
        } else {
            char *txt = jtext(body);
            o = dec(&order_type, EW_FORMAT_JSON, txt, strlen(txt));
            free(txt);
        }
        assert_true(o->id == 9);
        assert_int_equal(o->items_count, 1);
        assert_string_equal(o->items[0].sku, "q");
        assert_int_equal(o->items[0].qty, 4);
        assert_int_equal(o->qty, 2);
        assert_true(o->has_tags);
        assert_int_equal(o->tags.count, 2);
        assert_string_equal(o->tags.entries[0].key, "b");
        assert_string_equal(o->tags.entries[1].key, "a");
        ew_event_free(&order_type, o);
    }
    /* msgpack: keys that are not strings cannot name a field: skipped too */
    mpbuf m;
    mp_init(&m);
    msgpack_pack_map(&m.pk, 5);
    msgpack_pack_int(&m.pk, 7);
    msgpack_pack_true(&m.pk);
    mp_str(&m, "id");
    msgpack_pack_int(&m.pk, 1);
    msgpack_pack_bin_with_body(&m.pk, "qty", 3);
    msgpack_pack_int(&m.pk, 1000);
    mp_str(&m, "items");
    msgpack_pack_array(&m.pk, 0);
    mp_str(&m, "qty");
    msgpack_pack_int(&m.pk, 8);
    order *o = dec(&order_type, EW_FORMAT_MSGPACK, m.sb.data, m.sb.size);
    assert_int_equal(o->qty, 8);
    ew_event_free(&order_type, o);
    msgpack_sbuffer_destroy(&m.sb);
}

static void lenient_number_forms(void **state)
{
    (void)state;
    /* float fields take integers; bytes take a msgpack str (old packers) */
    const char *body = "{'id':1,'items':[],'qty':1,'price':3}";
    char *txt = jtext(body);
    order *o = dec(&order_type, EW_FORMAT_JSON, txt, strlen(txt));
    assert_true(o->has_price && o->price == 3.0f);
    ew_event_free(&order_type, o);
    free(txt);
    mpbuf m;
    mp_from_json(&m, "{'id':1,'items':[],'qty':1,'price':-3,'blob':'raw'}");
    o = dec(&order_type, EW_FORMAT_MSGPACK, m.sb.data, m.sb.size);
    assert_true(o->has_price && o->price == -3.0f);
    assert_int_equal(o->blob.len, 3);
    assert_memory_equal(o->blob.data, "raw", 3);
    ew_event_free(&order_type, o);
    msgpack_sbuffer_destroy(&m.sb);
    /* base64 without padding is read too */
    txt = jtext("{'id':1,'items':[],'qty':1,'blob':'AAEC/w'}");
    o = dec(&order_type, EW_FORMAT_JSON, txt, strlen(txt));
    assert_int_equal(o->blob.len, 4);
    assert_int_equal(o->blob.data[3], 0xff);
    ew_event_free(&order_type, o);
    free(txt);
}

/* ---- bad input: both formats, exact messages --------------------------- */

#define ITEMS3 "{'sku':'a','qty':1},{'sku':'a','qty':1},{'sku':'a','qty':1}"

typedef struct bad_case {
    const char *body;    /* JSON with ' for "; msgpack gets the same tree */
    const char *mp_err;  /* NULL: not for msgpack */
    const char *json_err; /* NULL: not for JSON */
    ew_decode_limits lim;
} bad_case;

static const bad_case bad_cases[] = {
    {"{'id':1,'items':[" ITEMS3 ",{'sku':5,'qty':1}],'qty':1}",
     "order.items[3].sku: expected string, got int",
     "order.items[3].sku: expected string, got integer"},
    {"{'items':[],'qty':1}", "order.id: missing required field",
     "order.id: missing required field"},
    {"{'id':1,'items':[{'sku':'a'}],'qty':1}", "order.items[0].qty: missing required field",
     "order.items[0].qty: missing required field"},
    {"{'id':1,'items':[],'qty':300}", "order.qty: 300 out of range for uint8",
     "order.qty: 300 out of range for uint8"},
    {"{'id':1,'items':[],'qty':-1}", "order.qty: -1 out of range for uint8",
     "order.qty: -1 out of range for uint8"},
    {"{'id':1,'items':[{'sku':'a','qty':-2147483649}],'qty':1}",
     "order.items[0].qty: -2147483649 out of range for uint32",
     "order.items[0].qty: -2147483649 out of range for uint32"},
    {"[1,2]", "order: expected map, got array", "order: expected object, got array"},
    {"'text'", "order: expected map, got string", "order: expected object, got string"},
    {"{'id':1,'items':{},'qty':1}", "order.items: expected array, got map",
     "order.items: expected array, got object"},
    {"{'id':1,'items':['x'],'qty':1}", "order.items[0]: expected map, got string",
     "order.items[0]: expected object, got string"},
    {"{'id':1.5,'items':[],'qty':1}", "order.id: expected int, got float",
     "order.id: expected integer, got real"},
    {"{'id':null,'items':[],'qty':1}", "order.id: expected int, got nil",
     "order.id: expected integer, got null"},
    {"{'id':1,'items':[],'qty':1,'price':'1'}", "order.price: expected float, got string",
     "order.price: expected number, got string"},
    {"{'id':1,'items':[],'qty':1,'price':1e39}", "order.price: 1e+39 out of range for float",
     "order.price: 1e+39 out of range for float"},
    {"{'id':1,'items':[],'qty':1,'tags':{'k':'v','n':3}}",
     "order.tags[\"n\"]: expected string, got int",
     "order.tags[\"n\"]: expected string, got integer"},
    {"{'id':1,'items':[],'qty':1,'tags':[]}", "order.tags: expected map, got array",
     "order.tags: expected object, got array"},
    {"{'id':1,'items':[],'qty':1,'blob':7}", "order.blob: expected bin, got int",
     "order.blob: expected base64 string, got integer"},
    {"{'id':1,'items':[],'qty':1,'blob':'a*b='}", NULL, "order.blob: not base64"},
    {"{'id':1,'items':[],'qty':1,'note':'a\\u0000b'}",
     "order.note: string is not valid UTF-8 or holds a NUL byte", NULL},
    {"{'id':1,'items':[" ITEMS3 ",{'sku':'a','qty':1}],'qty':1}",
     "order.items: 4 items over the limit 3", "order.items: 4 items over the limit 3",
     {.max_items = 3}},
    {"{'id':1,'items':[],'qty':1,'tags':{'a':'1','b':'2'}}",
     "order.tags: 2 entries over the limit 1", "order.tags: 2 entries over the limit 1",
     {.max_items = 1}},
    {"{'id':1,'items':[],'qty':1,'note':'12345'}",
     "order.note: string of 5 bytes over the limit 4",
     "order.note: string of 5 bytes over the limit 4", {.max_string = 4}},
    {"{'id':1,'items':[],'qty':1,'tags':{'long':'1'}}",
     "order.tags[0]: string key of 4 bytes over the limit 3",
     "order.tags[0]: string key of 4 bytes over the limit 3", {.max_string = 3}},
    {"{'id':1,'items':[],'qty':1,'blob':'AAECAw=='}", NULL,
     "order.blob: bytes of 4 over the limit 3", {.max_string = 3}},
    /* items (2) holding structs (3): within 3, but not within 2 */
    {"{'id':1,'items':[{'sku':'a','qty':1}],'qty':1}", "order.items[0]: nesting deeper than 2",
     "order.items[0]: nesting deeper than 2", {.max_depth = 2}},
    {"{'tags':{},'id':1,'items':[],'qty':1}", "order.tags: nesting deeper than 1",
     "order.tags: nesting deeper than 1", {.max_depth = 1}},
};

static void bad_bodies_fail_with_their_path(void **state)
{
    (void)state;
    for (size_t i = 0; i < sizeof bad_cases / sizeof bad_cases[0]; i++) {
        const bad_case *c = &bad_cases[i];
        print_message("case %zu: %s\n", i, c->body);
        if (c->mp_err) {
            mpbuf m;
            mp_from_json(&m, c->body);
            expect_decode_err(&order_type, EW_FORMAT_MSGPACK, m.sb.data, m.sb.size,
                              &c->lim, EW_EDECODE, c->mp_err);
            msgpack_sbuffer_destroy(&m.sb);
        }
        if (c->json_err) {
            char *txt = jtext(c->body);
            expect_decode_err(&order_type, EW_FORMAT_JSON, txt, strlen(txt), &c->lim,
                              EW_EDECODE, c->json_err);
            free(txt);
        }
    }
}

static void msgpack_framing_errors(void **state)
{
    (void)state;
    order o = {.id = 1, .qty = 2, .has_note = true, .note = "n"};
    size_t len;
    uint8_t *b = enc(&order_type, EW_FORMAT_MSGPACK, &o, &len);
    /* every cut is truncated, never a crash or a half-filled event */
    for (size_t cut = 0; cut < len; cut++)
        expect_decode_err(&order_type, EW_FORMAT_MSGPACK, b, cut, NULL, EW_EDECODE,
                          "order: truncated msgpack");
    uint8_t *more = malloc(len + 5);
    memcpy(more, b, len);
    memset(more + len, 0xc0, 5);
    expect_decode_err(&order_type, EW_FORMAT_MSGPACK, more, len + 5, NULL, EW_EDECODE,
                      "order: 5 trailing bytes");
    free(more);
    free(b);

    static const uint8_t never_used[] = {0x81, 0xa2, 'i', 'd', 0xc1};
    expect_decode_err(&order_type, EW_FORMAT_MSGPACK, never_used, sizeof never_used,
                      NULL, EW_EDECODE, "order: malformed msgpack");
    /* an array claiming 4 billion items in 5 bytes: no 96 GiB allocation */
    static const uint8_t liar[] = {0xdd, 0xff, 0xff, 0xff, 0xff};
    expect_decode_err(&order_type, EW_FORMAT_MSGPACK, liar, sizeof liar, NULL,
                      EW_EDECODE, "order: truncated msgpack");
    static const uint8_t liar_map[] = {0x81, 0xa5, 'i', 't', 'e', 'm', 's',
                                       0xdf, 0x10, 0, 0, 0, 0xc0};
    expect_decode_err(&order_type, EW_FORMAT_MSGPACK, liar_map, sizeof liar_map, NULL,
                      EW_EDECODE, "order: truncated msgpack");
    /* a known field of ext type */
    static const uint8_t ext[] = {0x81, 0xa2, 'i', 'd', 0xd4, 0x01, 0x00};
    expect_decode_err(&order_type, EW_FORMAT_MSGPACK, ext, sizeof ext, NULL,
                      EW_EDECODE, "order.id: expected int, got ext");
}

static void msgpack_duplicate_field_is_an_error(void **state)
{
    (void)state;
    mpbuf m;
    mp_init(&m);
    msgpack_pack_map(&m.pk, 4);
    mp_str(&m, "id");
    msgpack_pack_int(&m.pk, 1);
    mp_str(&m, "items");
    msgpack_pack_array(&m.pk, 0);
    mp_str(&m, "qty");
    msgpack_pack_int(&m.pk, 1);
    mp_str(&m, "id");
    msgpack_pack_int(&m.pk, 2);
    expect_decode_err(&order_type, EW_FORMAT_MSGPACK, m.sb.data, m.sb.size, NULL,
                      EW_EDECODE, "order.id: duplicate field");
    msgpack_sbuffer_destroy(&m.sb);
    /* JSON refuses every duplicate key, as jansson reports it */
    const char *txt = "{\"id\":1,\"items\":[],\"qty\":1,\"id\":2}";
    char err[256];
    void *out = NULL;
    assert_int_equal(ew_decode(&order_type, EW_FORMAT_JSON, txt, strlen(txt), NULL,
                               &out, err, sizeof err), EW_EDECODE);
    assert_null(out);
    assert_non_null(strstr(err, "order: invalid JSON: duplicate object key"));
}

static void msgpack_strings_must_be_utf8(void **state)
{
    (void)state;
    static const char *const bad[] = {"\xc3", "\xc0\xaf", "\xed\xa0\x80",
                                      "\xf4\x90\x80\x80", "ok\xff", "abcdefgh\x80"};
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        mpbuf m;
        mp_init(&m);
        msgpack_pack_map(&m.pk, 4);
        mp_str(&m, "id");
        msgpack_pack_int(&m.pk, 1);
        mp_str(&m, "items");
        msgpack_pack_array(&m.pk, 0);
        mp_str(&m, "qty");
        msgpack_pack_int(&m.pk, 1);
        mp_str(&m, "note");
        mp_str(&m, bad[i]);
        expect_decode_err(&order_type, EW_FORMAT_MSGPACK, m.sb.data, m.sb.size, NULL,
                          EW_EDECODE,
                          "order.note: string is not valid UTF-8 or holds a NUL byte");
        msgpack_sbuffer_destroy(&m.sb);
    }
}

/* A byte at a time, as the standard reads: the reference the block-wise
 * checker must agree with. */
static bool utf8_reference(const unsigned char *s, size_t len)
{
    for (size_t i = 0; i < len;) {
        unsigned c = s[i], n;
        uint32_t cp;
        if (c == 0)
            return false;
        if (c < 0x80) {
            i++;
            continue;
        }
        if (c >= 0xc2 && c <= 0xdf)
            n = 1, cp = c & 0x1f;
        else if (c >= 0xe0 && c <= 0xef)
            n = 2, cp = c & 0x0f;
        else if (c >= 0xf0 && c <= 0xf4)
            n = 3, cp = c & 0x07;
        else
            return false;
        if (len - i <= n)
            return false;
        for (unsigned k = 1; k <= n; k++) {
            if ((s[i + k] & 0xc0) != 0x80)
                return false;
            cp = cp << 6 | (s[i + k] & 0x3f);
        }
        static const uint32_t least[] = {0, 0x80, 0x800, 0x10000};
        if (cp < least[n] || cp > 0x10ffff || (cp >= 0xd800 && cp <= 0xdfff))
            return false;
        i += n + 1;
    }
    return true;
}

/* Long strings are checked in blocks of 64, 32 and 8 bytes: a bad byte, a
 * NUL or a good multi-byte character at every offset of every length up to
 * 200 (across block edges), and random mostly-ASCII text, must get the
 * reference's answer. */
static void utf8_check_agrees_at_every_offset(void **state)
{
    (void)state;
    static const char *const pieces[] = {"\x00", "\x80", "\xff", "\xc3",
                                         "\xc3\xa9", "\xe2\x82\xac", "\xed\xa0\x80",
                                         "\xf0\x9f\x98\x80", "\xf4\x90\x80\x80", "\xe0\x80"};
    unsigned char buf[256];
    size_t checked = 0, valid = 0;
    for (size_t len = 0; len <= 200; len++) {
        for (size_t k = 0; k < sizeof pieces / sizeof pieces[0]; k++) {
            size_t pn = k == 0 ? 1 : strlen(pieces[k]);
            for (size_t at = 0; at + pn <= len; at++) {
                memset(buf, 'a', len);
                memcpy(buf + at, pieces[k], pn);
                bool want = utf8_reference(buf, len);
                if (ewi_utf8_valid((const char *)buf, len) != want)
                    fail_msg("piece %zu at %zu of %zu: want %s", k, at, len,
                             want ? "valid" : "invalid");
                checked++;
                valid += want;
            }
        }
    }
    unsigned seed = 12345;
    for (int round = 0; round < 20000; round++) {
        size_t len = (seed = seed * 1103515245u + 12345u) >> 16 & 0xff;
        for (size_t i = 0; i < len; i++) {
            seed = seed * 1103515245u + 12345u;
            unsigned r = seed >> 16;
            buf[i] = (r & 0xff) < 0xf0 ? (unsigned char)('a' + r % 26) : (unsigned char)(r >> 8);
        }
        bool want = utf8_reference(buf, len);
        if (ewi_utf8_valid((const char *)buf, len) != want)
            fail_msg("random round %d (%zu bytes): want %s", round, len,
                     want ? "valid" : "invalid");
        checked++;
        valid += want;
    }
    /* both answers were exercised */
    assert_true(valid > 1000 && checked - valid > 1000);
}

static void json_syntax_errors(void **state)
{
    (void)state;
    static const struct {
        const char *text, *has;
    } cases[] = {
        {"{\"id\":1,\"items\":[],\"qty\":1} x", "order: invalid JSON: end of file expected"},
        {"{\"id\":1,\"items\":[],\"qty\":1", "order: invalid JSON: "},
        {"", "order: invalid JSON: "},
        {"{\"id\":18446744073709551615,\"items\":[],\"qty\":1}",
         "order: invalid JSON: too big integer"},
        {"{\"id\":1,\"items\":[],\"qty\":1,\"note\":\"a\\u0000\"}",
         "order: invalid JSON: \\u0000 is not allowed"},
        {"{\"id\":1,\"items\":[],\"qty\":1,\"note\":\"\xff\"}",
         "order: invalid JSON: unable to decode byte 0xff"},
        {"{\"id\":NaN}", "order: invalid JSON: "},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        char err[256] = "";
        void *out = err;
        ew_err rc = ew_decode(&order_type, EW_FORMAT_JSON, cases[i].text,
                              strlen(cases[i].text), NULL, &out, err, sizeof err);
        if (rc != EW_EDECODE || strncmp(err, cases[i].has, strlen(cases[i].has)) != 0)
            fail_msg("case %zu: got %d \"%s\", wanted \"%s...\"", i, rc, err, cases[i].has);
        assert_null(out);
    }
}

/* Nesting past the limit names the path down to where it went too deep. */
static void deep_nesting_is_refused(void **state)
{
    (void)state;
    /* {"v":"x","kids":[{"v":"x","kids":[ ... ]}]}: 2 containers per level */
    char *txt = malloc(64 * 40 + 64);
    size_t n = 0;
    int levels = 20;
    for (int i = 0; i < levels; i++)
        n += (size_t)sprintf(txt + n, "{\"v\":\"x\",\"kids\":[");
    n += (size_t)sprintf(txt + n, "{\"v\":\"x\",\"kids\":[]}");
    for (int i = 0; i < levels; i++)
        n += (size_t)sprintf(txt + n, "]}");
    char err[600] = "";
    void *out = NULL;
    assert_int_equal(ew_decode(&node_type, EW_FORMAT_JSON, txt, n, NULL, &out, err,
                               sizeof err), EW_EDECODE);
    /* the root map is level 1, kids arrays even levels, their structs odd */
    static const char too_deep[] = "node.kids[0].kids[0].kids[0].kids[0].kids[0].kids[0]"
                                   ".kids[0].kids[0].kids[0].kids[0].kids[0].kids[0]"
                                   ".kids[0].kids[0].kids[0].kids[0]: nesting deeper than 32";
    assert_string_equal(err, too_deep);
    /* msgpack: msgpack-c's own stack ends at 32 containers as well */
    json_error_t je;
    json_t *j = json_loadb(txt, n, 0, &je);
    assert_non_null(j);
    mpbuf m;
    mp_init(&m);
    pack_json(&m.pk, j);
    json_decref(j);
    expect_decode_err(&node_type, EW_FORMAT_MSGPACK, m.sb.data, m.sb.size, NULL,
                      EW_EDECODE, "node: nesting deeper than 32");
    msgpack_sbuffer_destroy(&m.sb);
    /* 15 levels (31 containers) are fine in both formats */
    n = 0;
    for (int i = 0; i < 15; i++)
        n += (size_t)sprintf(txt + n, "{\"v\":\"x\",\"kids\":[");
    n += (size_t)sprintf(txt + n, "{\"v\":\"leaf\",\"kids\":[]}");
    for (int i = 0; i < 15; i++)
        n += (size_t)sprintf(txt + n, "]}");
    node *t = dec(&node_type, EW_FORMAT_JSON, txt, n);
    node *p = t;
    while (p->nkids)
        p = p->kids;
    assert_string_equal(p->v, "leaf");
    size_t mlen;
    uint8_t *mb = enc(&node_type, EW_FORMAT_MSGPACK, t, &mlen);
    node *t2 = dec(&node_type, EW_FORMAT_MSGPACK, mb, mlen);
    /* below msgpack-c's limit our own limit names the path */
    ew_decode_limits lim = {.max_depth = 6};
    expect_decode_err(&node_type, EW_FORMAT_MSGPACK, mb, mlen, &lim, EW_EDECODE,
                      "node.kids[0].kids[0].kids[0]: nesting deeper than 6");
    expect_decode_err(&node_type, EW_FORMAT_JSON, txt, n, &lim, EW_EDECODE,
                      "node.kids[0].kids[0].kids[0]: nesting deeper than 6");
    free(mb);
    ew_event_free(&node_type, t2);
    /* encoding refuses what no decoder could read */
    node chain[20];
    for (int i = 0; i < 20; i++)
        chain[i] = (node){"c", i < 19 ? &chain[i + 1] : NULL, i < 19 ? 1 : 0};
    char eerr[600];
    uint8_t *o = NULL;
    assert_int_equal(ew_encode(&node_type, EW_FORMAT_MSGPACK, chain, &o, &mlen, eerr,
                               sizeof eerr), EW_EENCODE);
    assert_null(o);
    assert_string_equal(eerr, too_deep);
    ew_event_free(&node_type, t);
    free(txt);
}

static void big_strings_and_default_limits(void **state)
{
    (void)state;
    /* zero limits take the defaults: 1 MiB strings */
    size_t n = 2000000;
    char *s = malloc(n + 1);
    memset(s, 'a', n);
    s[n] = '\0';
    order o = {.id = 1, .qty = 1, .has_note = true, .note = s};
    ew_decode_limits zero = {0, 0, 0};
    for (int fmt = EW_FORMAT_MSGPACK; fmt <= EW_FORMAT_JSON; fmt++) {
        size_t len;
        uint8_t *b = enc(&order_type, (ew_format)fmt, &o, &len);
        expect_decode_err(&order_type, (ew_format)fmt, b, len, &zero, EW_EDECODE,
                          "order.note: string of 2000000 bytes over the limit 1048576");
        free(b);
    }
    s[1 << 20] = '\0'; /* exactly the limit passes */
    for (int fmt = EW_FORMAT_MSGPACK; fmt <= EW_FORMAT_JSON; fmt++) {
        order *back = roundtrip(&order_type, (ew_format)fmt, &o);
        assert_int_equal(strlen(back->note), 1 << 20);
        ew_event_free(&order_type, back);
    }
    free(s);
}

/* ---- encoding errors ---------------------------------------------------- */

static void encode_errors_name_the_field(void **state)
{
    (void)state;
    line items[3] = {{"a", 1}, {"b", 2}, {NULL, 3}};
    order o = {.id = 1, .items = items, .items_count = 3, .qty = 1};
    for (int fmt = EW_FORMAT_MSGPACK; fmt <= EW_FORMAT_JSON; fmt++) {
        expect_encode_err(&order_type, (ew_format)fmt, &o,
                          "order.items[2].sku: NULL string");
        order o2 = {.id = 1, .items = NULL, .items_count = 3, .qty = 1};
        expect_encode_err(&order_type, (ew_format)fmt, &o2,
                          "order.items: NULL array with 3 items");
        order o3 = {.id = 1, .qty = 1, .has_note = true, .note = NULL};
        expect_encode_err(&order_type, (ew_format)fmt, &o3, "order.note: NULL string");
        order o4 = {.id = 1, .qty = 1, .has_note = true, .note = "bad \xc3("};
        expect_encode_err(&order_type, (ew_format)fmt, &o4,
                          "order.note: string is not valid UTF-8");
        order o5 = {.id = 1, .qty = 1, .has_blob = true, .blob = {NULL, 2}};
        expect_encode_err(&order_type, (ew_format)fmt, &o5,
                          "order.blob: NULL bytes with length 2");
        static char k[] = "k";
        ew_map_entry bad_entry[] = {{k, k}, {k, NULL}};
        order o6 = {.id = 1, .qty = 1, .has_tags = true, .tags = {bad_entry, 2}};
        expect_encode_err(&order_type, (ew_format)fmt, &o6,
                          fmt == EW_FORMAT_JSON
                              ? "order.tags[1]: duplicate key \"k\" (a JSON object cannot carry it)"
                              : "order.tags[1]: NULL map value");
        order o7 = {.id = 1, .qty = 1, .has_tags = true, .tags = {NULL, 1}};
        expect_encode_err(&order_type, (ew_format)fmt, &o7,
                          "order.tags: NULL map entries with count 1");
    }
    /* JSON cannot carry NaN, infinities, or uint64 beyond int64 (jansson) */
    order nan = {.id = 1, .qty = 1, .has_price = true, .price = NAN};
    expect_encode_err(&order_type, EW_FORMAT_JSON, &nan,
                      "order.price: NaN cannot be carried by JSON");
    nan.price = -INFINITY;
    expect_encode_err(&order_type, EW_FORMAT_JSON, &nan,
                      "order.price: infinity cannot be carried by JSON");
    big bg = {UINT64_MAX};
    expect_encode_err(&big_type, EW_FORMAT_JSON, &bg,
                      "big.u: 18446744073709551615 does not fit a JSON integer "
                      "(jansson carries at most 9223372036854775807)");
    bg.u = (uint64_t)INT64_MAX;
    size_t len;
    uint8_t *b = enc(&big_type, EW_FORMAT_JSON, &bg, &len);
    assert_memory_equal(b, "{\"u\":9223372036854775807}", len);
    free(b);
}

static void ewi_encode_appends_and_restores(void **state)
{
    (void)state;
    ewi_buf buf = {NULL, 0, 0};
    assert_int_equal(ewi_buf_append(&buf, "hdr", 3), EW_OK);
    hello h = {"x", 1};
    char err[128];
    assert_int_equal(ewi_encode(&hello_type, EW_FORMAT_JSON, &h, &buf, err, sizeof err), EW_OK);
    assert_int_equal(buf.len, 3 + 23);
    assert_memory_equal(buf.data, "hdr{\"world\":\"x\",\"count\":1}", buf.len);
    hello bad = {NULL, 1};
    assert_int_equal(ewi_encode(&hello_type, EW_FORMAT_MSGPACK, &bad, &buf, err, sizeof err),
                     EW_EENCODE);
    assert_string_equal(err, "hello.world: NULL string");
    assert_int_equal(buf.len, 26); /* nothing half-written stays */
    assert_int_equal(ewi_encode(&hello_type, (ew_format)9, &h, &buf, err, sizeof err),
                     EW_EINVAL);
    size_t n = 0;
    uint8_t *d = ewi_buf_steal(&buf, &n);
    assert_int_equal(n, 26);
    assert_null(buf.data);
    assert_int_equal(buf.len, 0);
    free(d);
    /* growing by a lot at once */
    assert_int_equal(ewi_buf_reserve(&buf, 100000), EW_OK);
    assert_true(buf.cap >= 100000);
    assert_int_equal(ewi_buf_reserve(&buf, SIZE_MAX), EW_ENOMEM);
    ewi_buf_free(&buf);
    ewi_buf_free(&buf); /* twice is fine */
}

/* The writer must not touch the buffer for a zero-length piece (the body of
 * an empty string), even when the buffer is exactly full (ASan watches). */
static void empty_string_at_the_end_of_a_full_buffer(void **state)
{
    (void)state;
    hello h = {"", 1};
    /* 82 a5 "world" a0: the empty body comes when 8 bytes are written */
    ewi_buf b = {malloc(8), 0, 8};
    char err[128];
    assert_int_equal(ewi_encode(&hello_type, EW_FORMAT_MSGPACK, &h, &b, err, sizeof err),
                     EW_OK);
    static const uint8_t want[] = {0x82, 0xa5, 'w', 'o', 'r', 'l', 'd', 0xa0,
                                   0xa5, 'c', 'o', 'u', 'n', 't', 0x01};
    assert_int_equal(b.len, sizeof want);
    assert_memory_equal(b.data, want, sizeof want);
    ewi_buf_free(&b);
}

static void bad_arguments(void **state)
{
    (void)state;
    char err[128];
    void *out = err;
    uint8_t *b = NULL;
    size_t len;
    hello h = {"x", 1};
    assert_int_equal(ew_decode(&hello_type, EW_FORMAT_MSGPACK, NULL, 3, NULL, &out, err,
                               sizeof err), EW_EINVAL);
    assert_null(out);
    assert_int_equal(ew_decode(&hello_type, (ew_format)7, "x", 1, NULL, &out, err,
                               sizeof err), EW_EINVAL);
    assert_string_equal(err, "hello: unknown format 7");
    assert_int_equal(ew_encode(NULL, EW_FORMAT_MSGPACK, &h, &b, &len, err, sizeof err),
                     EW_EINVAL);
    assert_int_equal(ew_encode(&hello_type, EW_FORMAT_MSGPACK, NULL, &b, &len, NULL, 0),
                     EW_EINVAL);
    /* EW_FORMAT_DEFAULT is msgpack */
    b = enc(&hello_type, EW_FORMAT_DEFAULT, &h, &len);
    assert_int_equal(b[0], 0x82);
    hello *back = dec(&hello_type, EW_FORMAT_DEFAULT, b, len);
    assert_string_equal(back->world, "x");
    ew_event_free(&hello_type, back);
    ew_event_free(&hello_type, NULL);
    free(b);
}

/* ---- type tables -------------------------------------------------------- */

typedef struct selfish {
    int32_t a;
    int32_t b;
} selfish;

static void type_check_accepts_real_types(void **state)
{
    (void)state;
    char err[256] = "";
    assert_int_equal(ewi_type_check(&every_type, err, sizeof err), EW_OK);
    assert_int_equal(ewi_type_check(&order_type, err, sizeof err), EW_OK);
    assert_int_equal(ewi_type_check(&node_type, err, sizeof err), EW_OK);
}

static void type_check_refuses_broken_tables(void **state)
{
    (void)state;
    static const ew_field ok_field = EW_FIELD(selfish, a, EW_INT32);
    static struct {
        ew_field f[2];
        size_t n;
        const char *want;
    } cases[] = {
        {{{"a", 99, 0, 0, 0, NULL}}, 1, "t.a: unknown kind 99"},
        {{{"a", EW_STRUCT, 0, 0, 0, NULL}}, 1, "t.a: nested struct without a type"},
        {{{"a", EW_INT32, 0, 0, 0, &hello_type}}, 1, "t.a: a nested type on a int32 field"},
        {{{"", EW_INT32, 0, 0, 0, NULL}}, 1, "t: field 0 of type t has no name"},
        {{{NULL, EW_INT32, 0, 0, 0, NULL}}, 1, "t: field 0 of type t has no name"},
        {{{"a", EW_INT32, 0, 0, 0, NULL}, {"a", EW_INT32, 0, 4, 0, NULL}}, 2,
         "t.a: duplicate field name"},
        {{{"a", EW_INT32, 0, 8, 0, NULL}}, 1,
         "t.a: offset 8 (size 4) misaligned or beyond the 8-byte struct"},
        {{{"a", EW_INT32, 0, 2, 0, NULL}}, 1,
         "t.a: offset 2 (size 4) misaligned or beyond the 8-byte struct"},
        {{{"a", EW_INT32, EW_FIELD_ARRAY | EW_FIELD_OPTIONAL, 0, 4, NULL}}, 1,
         "t.a: an array cannot be optional (an empty array is absent)"},
        {{{"a", EW_INT32, 0x80, 0, 0, NULL}}, 1, "t.a: unknown flags 0x80"},
        {{{"a", EW_INT32, EW_FIELD_OPTIONAL, 0, 8, NULL}}, 1,
         "t.a: presence offset 8 beyond the struct"},
        {{{"a", EW_STRUCT, 0, 0, 0, &node_type}}, 1,
         "t.a: offset 0 (size 24) misaligned or beyond the 8-byte struct"},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        ew_type t = {"t", sizeof(selfish), cases[i].f, cases[i].n};
        char err[256] = "";
        assert_int_equal(ewi_type_check(&t, err, sizeof err), EW_EINVAL);
        if (strcmp(err, cases[i].want) != 0)
            fail_msg("case %zu: got \"%s\", wanted \"%s\"", i, err, cases[i].want);
    }
    (void)ok_field;
    /* a type containing itself by value cannot exist in C; a hand-made table can */
    static ew_type loop_a, loop_b;
    static ew_field fa[1], fb[1];
    fa[0] = (ew_field){"b", EW_STRUCT, 0, 0, 0, &loop_b};
    fb[0] = (ew_field){"a", EW_STRUCT, 0, 0, 0, &loop_a};
    loop_a = (ew_type){"loop_a", 64, fa, 1};
    loop_b = (ew_type){"loop_b", 64, fb, 1};
    char err[256];
    assert_int_equal(ewi_type_check(&loop_a, err, sizeof err), EW_EINVAL);
    assert_string_equal(err, "loop_a.b.a: type loop_a contains itself by value");
    /* the same loop through an array is a tree: fine */
    fb[0] = (ew_field){"a", EW_STRUCT, EW_FIELD_ARRAY, 0, 8, &loop_a};
    assert_int_equal(ewi_type_check(&loop_a, err, sizeof err), EW_OK);
    ew_type noname = {NULL, 8, NULL, 0};
    assert_int_equal(ewi_type_check(&noname, err, sizeof err), EW_EINVAL);
    assert_int_equal(ewi_type_check(NULL, err, sizeof err), EW_EINVAL);
}

/* ---- content types ------------------------------------------------------ */

static void content_types(void **state)
{
    (void)state;
    assert_string_equal(ew_format_content_type(EW_FORMAT_DEFAULT), "application/msgpack");
    assert_string_equal(ew_format_content_type(EW_FORMAT_MSGPACK), "application/msgpack");
    assert_string_equal(ew_format_content_type(EW_FORMAT_JSON), "application/json");
    assert_null(ew_format_content_type((ew_format)42));
    assert_int_equal(ew_format_from_content_type(NULL), EW_FORMAT_MSGPACK);
    assert_int_equal(ew_format_from_content_type(""), EW_FORMAT_MSGPACK);
    assert_int_equal(ew_format_from_content_type("application/msgpack"), EW_FORMAT_MSGPACK);
    assert_int_equal(ew_format_from_content_type("application/x-msgpack"), EW_FORMAT_MSGPACK);
    assert_int_equal(ew_format_from_content_type("application/json"), EW_FORMAT_JSON);
    assert_int_equal(ew_format_from_content_type("Application/JSON; charset=utf-8"),
                     EW_FORMAT_JSON);
    assert_int_equal(ew_format_from_content_type(" application/json;charset=utf-8"),
                     EW_FORMAT_JSON);
    assert_int_equal(ew_format_from_content_type("application/cloudevents+json"),
                     EW_FORMAT_JSON);
    assert_int_equal(ew_format_from_content_type("text/plain"), EW_FORMAT_DEFAULT);
    assert_int_equal(ew_format_from_content_type("application/jsonx"), EW_FORMAT_DEFAULT);
    assert_int_equal(ew_format_from_content_type(";"), EW_FORMAT_DEFAULT);
}

/* ---- a deterministic mutation sweep ------------------------------------- */

/* Flip every byte of a rich body: each result is a clean success or a clean
 * error naming the type (ASan and LSan watch the rest). */
static void mutated_bodies_never_crash(void **state)
{
    (void)state;
    every e;
    fill_every(&e);
    for (int fmt = EW_FORMAT_MSGPACK; fmt <= EW_FORMAT_JSON; fmt++) {
        size_t len;
        uint8_t *b = enc(&every_type, (ew_format)fmt, &e, &len);
        static const uint8_t xors[] = {0x01, 0x20, 0x80, 0xff};
        for (size_t i = 0; i < len; i++) {
            for (size_t k = 0; k < sizeof xors; k++) {
                b[i] ^= xors[k];
                char err[512] = "";
                void *out = NULL;
                ew_err rc = ew_decode(&every_type, (ew_format)fmt, b, len, NULL, &out,
                                      err, sizeof err);
                if (rc == EW_OK) {
                    assert_non_null(out);
                    ew_event_free(&every_type, out);
                } else {
                    assert_int_equal(rc, EW_EDECODE);
                    assert_null(out);
                    assert_true(strncmp(err, "every", 5) == 0);
                }
                b[i] ^= xors[k];
            }
        }
        free(b);
    }
}

/* Each thread keeps its own msgpack-c zone: concurrent decodes do not mix,
 * and a thread's zone goes with it (LSan checks after the joins). */
static void *decode_loop(void *arg)
{
    const uint8_t *body = arg;
    for (int i = 0; i < 2000; i++) {
        char err[256];
        order *o = NULL;
        if (ew_decode(&order_type, EW_FORMAT_MSGPACK, body + 8, *(const size_t *)body,
                      NULL, (void **)&o, err, sizeof err) != EW_OK ||
            o->id != 77 || o->items_count != 2 || strcmp(o->items[1].sku, "two") != 0)
            return (void *)1;
        ew_event_free(&order_type, o);
    }
    return NULL;
}

static void decoding_from_many_threads(void **state)
{
    (void)state;
    line items[] = {{"one", 1}, {"two", 2}};
    order o = {.id = 77, .items = items, .items_count = 2, .qty = 1};
    size_t len;
    uint8_t *b = enc(&order_type, EW_FORMAT_MSGPACK, &o, &len);
    uint8_t *arg = malloc(8 + len);
    memcpy(arg, &len, sizeof len);
    memcpy(arg + 8, b, len);
    pthread_t th[4];
    for (int i = 0; i < 4; i++)
        assert_int_equal(pthread_create(&th[i], NULL, decode_loop, arg), 0);
    for (int i = 0; i < 4; i++) {
        void *res = (void *)1;
        pthread_join(th[i], &res);
        assert_null(res);
    }
    free(arg);
    free(b);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(json_body_is_exactly_the_fields_in_schema_order),
        cmocka_unit_test(msgpack_body_is_a_map_of_field_names),
        cmocka_unit_test(every_kind_round_trips),
        cmocka_unit_test(extreme_values_round_trip),
        cmocka_unit_test(empty_values_round_trip),
        cmocka_unit_test(optional_fields_absent_and_present),
        cmocka_unit_test(recursive_type_through_arrays),
        cmocka_unit_test(small_and_wide_bodies_decode_alike),
        cmocka_unit_test(unknown_fields_are_skipped),
        cmocka_unit_test(lenient_number_forms),
        cmocka_unit_test(bad_bodies_fail_with_their_path),
        cmocka_unit_test(msgpack_framing_errors),
        cmocka_unit_test(msgpack_duplicate_field_is_an_error),
        cmocka_unit_test(msgpack_strings_must_be_utf8),
        cmocka_unit_test(utf8_check_agrees_at_every_offset),
        cmocka_unit_test(json_syntax_errors),
        cmocka_unit_test(deep_nesting_is_refused),
        cmocka_unit_test(big_strings_and_default_limits),
        cmocka_unit_test(encode_errors_name_the_field),
        cmocka_unit_test(ewi_encode_appends_and_restores),
        cmocka_unit_test(empty_string_at_the_end_of_a_full_buffer),
        cmocka_unit_test(bad_arguments),
        cmocka_unit_test(type_check_accepts_real_types),
        cmocka_unit_test(type_check_refuses_broken_tables),
        cmocka_unit_test(content_types),
        cmocka_unit_test(mutated_bodies_never_crash),
        cmocka_unit_test(decoding_from_many_threads),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
