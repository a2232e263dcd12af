#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <string.h>
#include <cmocka.h>

#include "envelope_priv.h"

static void headers_set_get_replace_remove_iterate(void **state)
{
    (void)state;
    ew_envelope *env = ewi_envelope_new();
    assert_int_equal(ew_envelope_set_header(env, "session", "s1"), EW_OK);
    assert_int_equal(ew_envelope_set_header(env, "trace.id", "t:1\n2"), EW_OK);
    assert_string_equal(ew_envelope_header(env, "session"), "s1");
    assert_int_equal(ew_envelope_set_header(env, "session", "s2"), EW_OK);
    assert_string_equal(ew_envelope_header(env, "session"), "s2");
    assert_int_equal(ew_envelope_header_count(env), 2);
    const char *k, *v;
    assert_int_equal(ew_envelope_header_at(env, 0, &k, &v), EW_OK);
    assert_string_equal(k, "trace.id");
    assert_string_equal(v, "t:1\n2");
    assert_int_equal(ew_envelope_header_at(env, 2, &k, &v), EW_ENOTFOUND);
    assert_int_equal(ew_envelope_remove_header(env, "session"), EW_OK);
    assert_null(ew_envelope_header(env, "session"));
    assert_int_equal(ew_envelope_remove_header(env, "session"), EW_ENOTFOUND);
    ewi_envelope_unref(env);
}

static void reserved_and_bad_keys_are_refused(void **state)
{
    (void)state;
    ew_envelope *env = ewi_envelope_new();
    assert_int_equal(ew_envelope_set_header(env, "ew-attempt", "9"), EW_EINVAL);
    assert_int_equal(ew_envelope_set_header(env, "", "x"), EW_EINVAL);
    assert_int_equal(ew_envelope_set_header(env, "a:b", "x"), EW_EINVAL);
    assert_int_equal(ew_envelope_set_header(env, "a b", "x"), EW_EINVAL);
    assert_int_equal(ew_envelope_set_header(env, "a\nb", "x"), EW_EINVAL);
    assert_int_equal(ew_envelope_remove_header(env, "ew-event"), EW_EINVAL);
    assert_int_equal(ew_envelope_header_count(env), 0);
    ewi_envelope_unref(env);
}

static void limits_apply(void **state)
{
    (void)state;
    ewi_env_limits lim = {3, 8};
    ew_envelope *env = ewi_envelope_new();
    ewi_envelope_set_limits(env, &lim);
    assert_int_equal(ew_envelope_set_header(env, "k", "123456789"), EW_ETOOBIG);
    assert_int_equal(ew_envelope_set_header(env, "k123456789", "v"), EW_ETOOBIG);
    assert_int_equal(ew_envelope_set_header(env, "a", "1"), EW_OK);
    assert_int_equal(ew_envelope_set_header(env, "b", "1"), EW_OK);
    assert_int_equal(ew_envelope_set_header(env, "c", "1"), EW_OK);
    assert_int_equal(ew_envelope_set_header(env, "d", "1"), EW_ETOOBIG);
    assert_int_equal(ew_envelope_set_header(env, "c", "2"), EW_OK); /* replace is fine */
    ewi_envelope_unref(env);
}

static void many_headers_and_churn_grow_storage(void **state)
{
    (void)state;
    ew_envelope *env = ewi_envelope_new();
    char k[32], v[200];
    for (int round = 0; round < 50; round++)
        for (int i = 0; i < 40; i++) {
            snprintf(k, sizeof k, "key%d", i);
            snprintf(v, sizeof v, "%0*d", 150, round * 100 + i);
            assert_int_equal(ew_envelope_set_header(env, k, v), EW_OK);
        }
    assert_int_equal(ew_envelope_header_count(env), 40);
    snprintf(v, sizeof v, "%0*d", 150, 49 * 100 + 7);
    assert_string_equal(ew_envelope_header(env, "key7"), v);
    ew_envelope *copy = ewi_envelope_clone(env);
    ewi_envelope_unref(env);
    assert_string_equal(ew_envelope_header(copy, "key7"), v);
    assert_int_equal(ew_envelope_header_count(copy), 40);
    ewi_envelope_unref(copy);
}

static void framework_values_and_body(void **state)
{
    (void)state;
    ew_envelope *env = ewi_envelope_new();
    assert_int_equal(ewi_envelope_put(env, "ew-attempt", 10, "3", 1), EW_OK);
    assert_int_equal(ewi_envelope_put(env, "ew-sent-at", 10, "1700000000123", 13), EW_OK);
    assert_int_equal(ewi_envelope_put(env, "ew-event", 8, "E", 1), EW_OK);
    assert_int_equal(ewi_envelope_put(env, "bad", 3, "a\0b", 3), EW_EINVAL);
    assert_int_equal(ew_envelope_attempt(env), 3);
    assert_int_equal(ew_envelope_sent_at(env), 1700000000123LL);
    assert_string_equal(ew_envelope_event(env), "E");
    assert_int_equal(ewi_envelope_set_body(env, "\0\1\2", 3), EW_OK);
    assert_int_equal(ewi_envelope_set_content_type(env, "application/msgpack"), EW_OK);
    size_t len;
    const unsigned char *b = ew_envelope_body(env, &len);
    assert_int_equal(len, 3);
    assert_int_equal(b[2], 2);
    assert_string_equal(ew_envelope_content_type(env), "application/msgpack");
    ew_envelope *r = ewi_envelope_ref(env);
    ewi_envelope_unref(env);
    assert_string_equal(ew_envelope_event(r), "E");
    ewi_envelope_unref(r);
    ewi_envelope_unref(NULL);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(headers_set_get_replace_remove_iterate),
        cmocka_unit_test(reserved_and_bad_keys_are_refused),
        cmocka_unit_test(limits_apply),
        cmocka_unit_test(many_headers_and_churn_grow_storage),
        cmocka_unit_test(framework_values_and_body),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
