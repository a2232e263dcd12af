/* A schema declared in a header and defined in another file: the types of
 * split_types.h are defined in split_types.c and used here, as events, as
 * nested types of a type defined here, with a bare `struct` tag as well as a
 * typedef name. Linking this test at all shows that the header holds no
 * definition (two definitions would not link). */
#include "split_types.h"
#include "support.h"

/* A type of this file nesting a struct-tag type of the other file. */
typedef struct split_box {
    struct split_order order;
    split_line *extra;
    size_t nextra;
} split_box;
EW_TYPE(split_box, EW_NESTED(split_box, order, split_order),
        EW_NESTED_ARRAY(split_box, extra, split_line, nextra));

static void types_from_the_other_file_describe_their_structs(void **state)
{
    (void)state;
    assert_string_equal(split_order_type.name, "split_order");
    assert_int_equal(split_order_type.size, sizeof(struct split_order));
    assert_int_equal(split_order_type.nfields, 3);
    assert_ptr_equal(split_order_type.fields[1].type, &split_line_type);
    assert_string_equal(split_line_type.name, "split_line");
    assert_ptr_equal(split_box_type.fields[0].type, &split_order_type);
}

static void round_trip_through_both_files(void **state)
{
    (void)state;
    split_box in = {.order = split_sample(), .extra = (split_line[]){{"x", 9}}, .nextra = 1};
    for (ew_format f = EW_FORMAT_MSGPACK; f <= EW_FORMAT_JSON; f++) {
        uint8_t *buf;
        size_t len;
        char err[256];
        if (ew_encode(&split_box_type, f, &in, &buf, &len, err, sizeof err) != EW_OK)
            fail_msg("encode: %s", err);
        void *out;
        if (ew_decode(&split_box_type, f, buf, len, NULL, &out, err, sizeof err) != EW_OK)
            fail_msg("decode: %s", err);
        free(buf);
        const split_box *b = out;
        assert_int_equal(b->order.id, 42);
        assert_int_equal(b->order.nlines, 2);
        assert_string_equal(b->order.lines[1].sku, "b-2");
        assert_int_equal(b->order.lines[1].qty, 3);
        assert_true(b->order.has_first);
        assert_string_equal(b->order.first.sku, "first");
        assert_int_equal(b->nextra, 1);
        assert_string_equal(b->extra[0].sku, "x");
        ew_event_free(&split_box_type, out);
    }
}

typedef struct got {
    pthread_mutex_t mu;
    pthread_cond_t cv;
    int64_t id;
    size_t nlines;
} got;

static ew_err on_order(ew_delivery *d, const void *event, void *user)
{
    (void)d;
    const struct split_order *o = event;
    got *g = user;
    pthread_mutex_lock(&g->mu);
    g->id = o->id;
    g->nlines = o->nlines;
    pthread_cond_broadcast(&g->cv);
    pthread_mutex_unlock(&g->mu);
    return EW_OK;
}

/* The struct tag names the event by default. */
static void struct_tag_type_is_an_event(void **state)
{
    (void)state;
    ew_event_desc ev = {.type = &split_order_type};
    ew_manager *m = mgr_new("local://split", "s1");
    got g = {PTHREAD_MUTEX_INITIALIZER, PTHREAD_COND_INITIALIZER, 0, 0};
    ew_listener_desc l = {.event = &ev, .name = "L"};
    assert_int_equal(ew_listen(m, &l, on_order, &g), EW_OK);
    assert_int_equal(ew_manager_start(m), EW_OK);
    struct split_order o = split_sample();
    assert_int_equal(ew_send(m, &ev, &o), EW_OK);
    pthread_mutex_lock(&g.mu);
    while (g.id == 0)
        pthread_cond_wait(&g.cv, &g.mu); /* ctest's timeout bounds it */
    pthread_mutex_unlock(&g.mu);
    assert_int_equal(g.id, 42);
    assert_int_equal(g.nlines, 2);
    char q[EW_MAX_QUEUE_NAME];
    assert_int_equal(ew_queue_name(m, &l, q, sizeof q), EW_OK);
    assert_string_equal(q, "split_order::L");
    ew_manager_free(m);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(types_from_the_other_file_describe_their_structs),
        cmocka_unit_test(round_trip_through_both_files),
        cmocka_unit_test(struct_tag_type_is_an_event),
    };
    return cmocka_run_group_tests_name("schema_split", tests, NULL, NULL);
}
