/* Headers with ':', line breaks, backslashes, non-ASCII text and frame-like
 * content arrive unchanged through a real broker; a header name that STOMP
 * or the broker interpret is refused with a clear error, not sent.
 * usage: test_stomp_headers rabbitmq|activemq */
#include "stomp_test.h"

static const char *DIALECT;
static char long_value[3001];

static const struct {
    const char *key, *value;
} HEADERS[] = {
    {"colon", "a:b"},
    {"colons", "::x::y:"},
    {"newline", "line1\nline2\n"},
    {"crlf", "cr\rlf\r\n"},
    {"backslash", "back\\slash \\c \\n \\\\"},
    {"utf8", "\xc3\xbc\xc3\xb1\xc3\xad\xc2\xa9\xc3\xb8" "d\xc3\xa9 \xe6\xbc\xa2\xe5\xad\x97 \xf0\x9f\x8e\x89"},
    {"empty", ""},
    {"inject", "v\n\nSEND\ndestination:/queue/evil\n\nbody"},
    {"odd", ODD_VALUE},
    {"type", "passes-through"},
    {"correlation-id", "c-1"},
    {"x.dotted_under-score", "k"},
};
#define NH (sizeof HEADERS / sizeof HEADERS[0])

static ew_err set_headers(void *user, ew_envelope *env, const ew_event_desc *ev)
{
    (void)user;
    (void)ev;
    for (size_t i = 0; i < NH; i++)
        if (ew_envelope_set_header(env, HEADERS[i].key, HEADERS[i].value) != EW_OK)
            return EW_EINVAL;
    return ew_envelope_set_header(env, "long", long_value);
}

static ew_err check(ew_delivery *d, const void *event, void *user)
{
    tally *t = user;
    const conf_event *e = event;
    bool ok = true;
    for (size_t i = 0; i < NH; i++) {
        const char *v = ew_delivery_header(d, HEADERS[i].key);
        if (!v || strcmp(v, HEADERS[i].value) != 0) {
            print_message("header %s: got '%s'\n", HEADERS[i].key, v ? v : "(absent)");
            ok = false;
        }
    }
    const char *l = ew_delivery_header(d, "long");
    ok = ok && l && strcmp(l, long_value) == 0;
    /* Nothing of the broker's own leaks in as an event header. */
    ok = ok && !ew_delivery_header(d, "destination") && !ew_delivery_header(d, "message-id") &&
         !ew_delivery_header(d, "subscription") && !ew_delivery_header(d, "receipt");
    tally_note(t, e->id, ok ? "ok" : "bad", "h");
    return EW_OK;
}

static void odd_headers_arrive_unchanged(void **state)
{
    (void)state;
    for (size_t i = 0; i < sizeof long_value - 1; i++)
        long_value[i] = "ab:\n\\\xc3\xa9"[i % 7];
    long_value[sizeof long_value - 1] = 0;
    /* A 7-byte cycle may cut the two-byte é at the end: keep it valid UTF-8. */
    if ((unsigned char)long_value[sizeof long_value - 2] == 0xc3)
        long_value[sizeof long_value - 2] = 'z';
    EV(ev, "StompHeaders", true);
    tally t;
    tally_init(&t, 10);
    ew_manager *m = mgr_new(stomp_test_url(DIALECT), "h1");
    ew_pipeline p = {.name = "odd", .send = set_headers};
    assert_int_equal(ew_add_pipeline(m, &p, NULL), EW_OK);
    assert_int_equal(ew_listen(m, &(ew_listener_desc){.event = &ev, .name = "Check"}, check, &t),
                     EW_OK);
    assert_int_equal(ew_manager_start(m), EW_OK);
    send_range(m, &ev, 0, 10);
    assert_true(tally_wait_all(&t, 30000));
    assert_int_equal(tally_by_label(&t, "bad"), 0);
    assert_int_equal(tally_by_label(&t, "ok"), 10);
    ew_manager_free(m);
    stomp_test_cleanup(stomp_test_url(DIALECT), ev.name, (const char *const[]){"Check"}, 1);
    tally_free(&t);
}

static ew_err set_reserved(void *user, ew_envelope *env, const ew_event_desc *ev)
{
    (void)ev;
    return ew_envelope_set_header(env, (const char *)user, "/queue/elsewhere");
}

static void reserved_header_names_are_refused(void **state)
{
    (void)state;
    EV(ev, "StompReserved", true);
    const char *names[] = {"destination", "receipt", "persistent", "expires"};
    for (size_t i = 0; i < 4; i++) {
        ew_manager *m = mgr_new(stomp_test_url(DIALECT), "r1");
        ew_pipeline p = {.name = "bad", .send = set_reserved};
        assert_int_equal(ew_add_pipeline(m, &p, (void *)(uintptr_t)names[i]), EW_OK);
        assert_int_equal(ew_manager_start(m), EW_OK);
        ew_err rc = ew_send(m, &ev, &(conf_event){.id = 1, .text = "x"});
        if (rc != EW_EINVAL)
            fail_msg("a header named %s: %s, want EW_EINVAL", names[i], ew_strerror(rc));
        ew_manager_free(m);
    }
    stomp_test_cleanup(stomp_test_url(DIALECT), ev.name, NULL, 0);
}

int main(int argc, char **argv)
{
    if (argc != 2 || (strcmp(argv[1], "rabbitmq") && strcmp(argv[1], "activemq"))) {
        fprintf(stderr, "usage: %s rabbitmq|activemq\n", argv[0]);
        return 2;
    }
    DIALECT = argv[1];
    support_init(stomp_test_url(DIALECT));
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(odd_headers_arrive_unchanged),
        cmocka_unit_test(reserved_header_names_are_refused),
    };
    return cmocka_run_group_tests_name(DIALECT, tests, NULL, NULL);
}
