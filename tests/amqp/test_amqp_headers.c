/* Headers travel as AMQP 1.0 application-properties (strings): values with
 * non-ASCII text, control characters, separators, empty and long values
 * arrive byte for byte, for msgpack and JSON events alike. */
#include "amqp_test.h"

static char long_value[3001];

static const char *const HDRS[][2] = {
    {"greek", "αβγ δέκα"},
    {"emoji", "😀👍🏽"},
    {"cjk", "漢字かなカナ한글"},
    {"odd", ODD_VALUE},
    {"separators", "a=b;c,d|e&f?g#h%20i"},
    {"empty", ""},
    {"long", long_value},
};
#define NHDRS (sizeof HDRS / sizeof HDRS[0])

static ew_err put_headers(void *user, ew_envelope *env, const ew_event_desc *ev)
{
    (void)user;
    (void)ev;
    for (size_t i = 0; i < NHDRS; i++) {
        int rc = ew_envelope_set_header(env, HDRS[i][0], HDRS[i][1]);
        if (rc != EW_OK)
            return rc;
    }
    return EW_OK;
}

static ew_err check_headers(ew_delivery *d, const void *event, void *user)
{
    tally *t = user;
    const conf_event *e = event;
    bool ok = true;
    for (size_t i = 0; i < NHDRS; i++) {
        const char *v = ew_delivery_header(d, HDRS[i][0]);
        if (!v || strcmp(v, HDRS[i][1]) != 0) {
            print_message("header %s: sent '%.40s', got '%.40s'\n", HDRS[i][0],
                          HDRS[i][1], v ? v : "(none)");
            ok = false;
        }
    }
    tally_note(t, e->id, ok ? "ok" : "bad", ew_delivery_queue(d));
    return EW_OK;
}

static void round_trip(ew_format fmt, const char *base)
{
    char name[64];
    snprintf(name, sizeof name, "%s_%s", base, support_run_id);
    ew_event_desc ev = {.type = &conf_event_type, .name = name, .durable = true,
                        .format = fmt};
    tally t;
    tally_init(&t, 10);
    ew_manager *m = mgr_new(amqp_test_url(), "h1");
    ew_pipeline p = {.name = "non-ascii", .send = put_headers};
    assert_int_equal(ew_add_pipeline(m, &p, NULL), EW_OK);
    assert_int_equal(ew_listen(m, &(ew_listener_desc){.event = &ev, .name = "H"},
                               check_headers, &t),
                     EW_OK);
    assert_int_equal(ew_manager_start(m), EW_OK);
    for (int64_t i = 0; i < 10; i++)
        assert_int_equal(ew_send(m, &ev, &(conf_event){.id = i, .text = "ünïcödé body"}),
                         EW_OK);
    assert_true(tally_wait_all(&t, 30000));
    assert_int_equal(tally_by_label(&t, "bad"), 0);
    assert_int_equal(tally_by_label(&t, "ok"), 10);
    ew_manager_free(m);
    tally_free(&t);
    rmq_cleanup(0, name, (const char *const[]){"H", NULL});
}

static void non_ascii_headers_round_trip_msgpack(void **state)
{
    (void)state;
    round_trip(EW_FORMAT_MSGPACK, "HdrMsgpack");
}

static void non_ascii_headers_round_trip_json(void **state)
{
    (void)state;
    round_trip(EW_FORMAT_JSON, "HdrJson");
}

int main(void)
{
    /* 3000 bytes of two-byte characters. */
    for (size_t i = 0; i + 2 <= 3000; i += 2)
        memcpy(long_value + i, "é", 2);
    support_init(amqp_test_url());
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(non_ascii_headers_round_trip_msgpack),
        cmocka_unit_test(non_ascii_headers_round_trip_json),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
