/* The W3C trace context: parsing and formatting traceparent (valid and
 * invalid forms), tracestate limits, and the per-thread current context. */
#include "support.h"

static const char TP[] = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";

static void parses_and_formats_traceparent(void **state)
{
    (void)state;
    ew_trace_context c;
    assert_int_equal(ew_trace_parse(&c, TP, "rojo=00f067aa0ba902b7"), EW_OK);
    assert_int_equal(c.trace_id[0], 0x4b);
    assert_int_equal(c.trace_id[15], 0x36);
    assert_int_equal(c.span_id[0], 0x00);
    assert_int_equal(c.span_id[7], 0xb7);
    assert_int_equal(c.flags, EW_TRACE_FLAG_SAMPLED);
    assert_string_equal(c.tracestate, "rojo=00f067aa0ba902b7");
    char buf[56];
    assert_int_equal(ew_trace_format(&c, buf, sizeof buf), EW_OK);
    assert_string_equal(buf, TP);
    assert_int_equal(ew_trace_format(&c, buf, 55), EW_EINVAL);
    /* Unknown flag bits are carried as they are. */
    assert_int_equal(ew_trace_parse(&c, "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-03",
                                    NULL),
                     EW_OK);
    assert_int_equal(c.flags, 3);
    /* A later version may add fields; its first four are read. */
    assert_int_equal(ew_trace_parse(&c, "cc-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-what",
                                    NULL),
                     EW_OK);
    assert_int_equal(ew_trace_format(&c, buf, sizeof buf), EW_OK);
    assert_string_equal(buf, TP); /* sent on as version 00 */
}

static void refuses_invalid_traceparent(void **state)
{
    (void)state;
    static const char *const bad[] = {
        "",
        "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7",       /* no flags */
        "00-4BF92F3577B34DA6A3CE929D0E0E4736-00f067aa0ba902b7-01",    /* uppercase */
        "00-00000000000000000000000000000000-00f067aa0ba902b7-01",    /* zero trace id */
        "00-4bf92f3577b34da6a3ce929d0e0e4736-0000000000000000-01",    /* zero parent id */
        "ff-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",    /* version ff */
        "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-x",  /* 00 with more */
        "00_4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",    /* separator */
        "00-4bf92f3577b34da6a3ce929d0e0e473g-00f067aa0ba902b7-01",    /* not hex */
        "cc-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01x",   /* no '-' after */
    };
    ew_trace_context c;
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        memset(&c, 0x55, sizeof c);
        if (ew_trace_parse(&c, bad[i], "a=b") != EW_EINVAL)
            fail_msg("accepted '%s'", bad[i]);
        assert_int_equal(c.trace_id[0], 0); /* cleared */
        assert_string_equal(c.tracestate, "");
    }
    assert_int_equal(ew_trace_parse(&c, NULL, NULL), EW_EINVAL);
    assert_int_equal(ew_trace_parse(NULL, TP, NULL), EW_EINVAL);
    /* A tracestate too long to carry is dropped, the traceparent kept. */
    char longts[EW_TRACESTATE_MAX + 8];
    memset(longts, 'a', sizeof longts - 1);
    longts[sizeof longts - 1] = '\0';
    assert_int_equal(ew_trace_parse(&c, TP, longts), EW_OK);
    assert_string_equal(c.tracestate, "");
    ew_trace_context zero = {0};
    char buf[56];
    assert_int_equal(ew_trace_format(&zero, buf, sizeof buf), EW_EINVAL);
}

static void *other_thread(void *arg)
{
    ew_trace_context c;
    *(bool *)arg = ew_trace_current(&c);
    return NULL;
}

static void current_context_is_per_thread(void **state)
{
    (void)state;
    ew_trace_context c, out;
    assert_false(ew_trace_current(&out));
    assert_int_equal(ew_trace_parse(&c, TP, NULL), EW_OK);
    ew_trace_set_current(&c);
    assert_true(ew_trace_current(&out));
    assert_memory_equal(&out, &c, sizeof c);
    bool seen = true;
    pthread_t th;
    assert_int_equal(pthread_create(&th, NULL, other_thread, &seen), 0);
    pthread_join(th, NULL);
    assert_false(seen);
    ew_trace_set_current(NULL);
    assert_false(ew_trace_current(&out));
}

static void refuses_bad_arguments(void **state)
{
    (void)state;
    ew_manager *m = mgr_new("local://trace-args", "s1");
    assert_int_equal(ew_add_trace_pipeline(NULL, NULL), EW_EINVAL);
    assert_int_equal(ew_add_trace_pipeline(m, &(ew_trace_hooks){.version = 1}), EW_EINVAL);
    assert_int_equal(ew_add_trace_pipeline(m, NULL), EW_OK);
    assert_int_equal(ew_add_trace_pipeline(m, NULL), EW_ECONFLICT);
    ew_manager_free(m);
}

int main(void)
{
    support_init("local://");
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(parses_and_formats_traceparent),
        cmocka_unit_test(refuses_invalid_traceparent),
        cmocka_unit_test(current_context_is_per_thread),
        cmocka_unit_test(refuses_bad_arguments),
    };
    return cmocka_run_group_tests_name("trace", tests, NULL, NULL);
}
