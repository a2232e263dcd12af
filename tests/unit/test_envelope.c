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

/* The send path's framework headers read back as the same headers put one
 * by one would, for every length of sent-at. */
static void framework_headers_in_one_go(void **state)
{
    (void)state;
    static const char id[] = "0b5e1c2a-9d3f-4c1e-8a7b-2f6d4e5c3b1a";
    const uint64_t sent[] = {0, 7, 10, 99, 100, 1700000000123ULL, 18446744073709551615ULL};
    for (size_t i = 0; i < sizeof sent / sizeof sent[0]; i++) {
        ew_envelope *env = ewi_envelope_new();
        assert_int_equal(ewi_envelope_put_framework(env, "OrderPlaced", 11, id, sent[i]),
                         EW_OK);
        char text[24];
        snprintf(text, sizeof text, "%llu", (unsigned long long)sent[i]);
        assert_int_equal(ew_envelope_header_count(env), 4);
        assert_string_equal(ew_envelope_event(env), "OrderPlaced");
        assert_string_equal(ew_envelope_message_id(env), id);
        assert_string_equal(ew_envelope_header(env, EW_HDR_SENT_AT), text);
        assert_string_equal(ew_envelope_header(env, EW_HDR_ATTEMPT), "1");
        assert_int_equal(ew_envelope_attempt(env), 1);
        /* Over 19 digits is not a number to the envelope, as when put. */
        assert_int_equal(ew_envelope_sent_at(env),
                         strlen(text) <= 19 ? (int64_t)sent[i] : 0);
        const char *k, *v;
        size_t kl, vl;
        assert_int_equal(ewi_envelope_header_n(env, 1, &k, &kl, &v, &vl), EW_OK);
        assert_int_equal(kl, strlen(EW_HDR_MESSAGE_ID));
        assert_int_equal(vl, 36);
        assert_string_equal(v, id);
        assert_int_equal(ewi_envelope_header_n(env, 4, &k, &kl, &v, &vl), EW_ENOTFOUND);
        /* Only on an envelope without headers. */
        assert_int_equal(ewi_envelope_put_framework(env, "E", 1, id, 1), EW_EINVAL);
        ewi_envelope_unref(env);
    }
}

/* Received headers in one go give what one ewi_envelope_put each gives when
 * the first value of a key counts and pairs no C string carries are left
 * out, across batches and past the inline storage. */
static void received_headers_in_one_go(void **state)
{
    (void)state;
    static char big[600], keys[48][8];
    memset(big, 'v', sizeof big - 1);
    ewi_env_kv kv[64];
    size_t n = 0;
    kv[n++] = (ewi_env_kv){"a", "new", 1, 3};     /* env has a: left out */
    kv[n++] = (ewi_env_kv){"b", "1", 1, 1};
    kv[n++] = (ewi_env_kv){"", "x", 0, 1};        /* empty key */
    kv[n++] = (ewi_env_kv){"c", "x\0y", 1, 3};    /* NUL in the value */
    kv[n++] = (ewi_env_kv){"d\0", "x", 2, 1};     /* NUL in the key */
    kv[n++] = (ewi_env_kv){"c", "ok", 1, 2};      /* c was left out: this counts */
    kv[n++] = (ewi_env_kv){"b", "2", 1, 1};       /* the first b counts */
    kv[n++] = (ewi_env_kv){EW_HDR_ATTEMPT, "2", 10, 1};
    kv[n++] = (ewi_env_kv){EW_HDR_SENT_AT, "1700000000123", 10, 13};
    kv[n++] = (ewi_env_kv){"big", big, 3, sizeof big - 1};
    for (size_t i = 0; i < 48; i++) {
        snprintf(keys[i], sizeof keys[i], "k%zu", i % 40); /* 8 repeats */
        kv[n++] = (ewi_env_kv){keys[i], keys[i], strlen(keys[i]), strlen(keys[i])};
    }
    ew_envelope *env = ewi_envelope_new(), *ref = ewi_envelope_new();
    assert_int_equal(ewi_envelope_put(env, "a", 1, "old", 3), EW_OK);
    assert_int_equal(ewi_envelope_put(ref, "a", 1, "old", 3), EW_OK);
    /* Two batches: the second sees what the first put. */
    assert_int_equal(ewi_envelope_put_received(env, kv, 7), EW_OK);
    assert_int_equal(ewi_envelope_put_received(env, kv + 7, n - 7), EW_OK);
    for (size_t i = 0; i < n; i++) {
        if (kv[i].klen == 0 || memchr(kv[i].key, 0, kv[i].klen) ||
            memchr(kv[i].value, 0, kv[i].vlen))
            continue;
        char key[16];
        snprintf(key, sizeof key, "%.*s", (int)kv[i].klen, kv[i].key);
        if (!ew_envelope_header(ref, key))
            assert_int_equal(ewi_envelope_put(ref, kv[i].key, kv[i].klen, kv[i].value,
                                              kv[i].vlen), EW_OK);
    }
    assert_int_equal(ew_envelope_header_count(env), 1 + 5 + 40);
    assert_int_equal(ew_envelope_header_count(env), ew_envelope_header_count(ref));
    for (size_t i = 0; i < ew_envelope_header_count(ref); i++) {
        const char *k1, *v1, *k2, *v2;
        size_t kl1, vl1, kl2, vl2;
        assert_int_equal(ewi_envelope_header_n(env, i, &k1, &kl1, &v1, &vl1), EW_OK);
        assert_int_equal(ewi_envelope_header_n(ref, i, &k2, &kl2, &v2, &vl2), EW_OK);
        assert_string_equal(k1, k2);
        assert_string_equal(v1, v2);
        assert_int_equal(kl1, kl2);
        assert_int_equal(vl1, vl2);
    }
    assert_string_equal(ew_envelope_header(env, "a"), "old");
    assert_string_equal(ew_envelope_header(env, "b"), "1");
    assert_string_equal(ew_envelope_header(env, "c"), "ok");
    assert_string_equal(ew_envelope_header(env, "big"), big);
    assert_int_equal(ew_envelope_attempt(env), 2);
    assert_int_equal(ew_envelope_sent_at(env), 1700000000123LL);
    /* Too long for the envelope's offsets: nothing is put. */
    ewi_env_kv huge = {"h", "", 1, (size_t)UINT32_MAX + 1};
    assert_int_equal(ewi_envelope_put_received(env, &huge, 1), EW_ETOOBIG);
    assert_int_equal(ew_envelope_header_count(env), 46);
    ewi_envelope_unref(env);
    ewi_envelope_unref(ref);
}

static void body_buffers_small_and_large(void **state)
{
    (void)state;
    ew_envelope *env = ewi_envelope_new();
    for (size_t len = 0; len < 3 * EWI_ENV_INLINE_BODY; len += EWI_ENV_INLINE_BODY / 2 + 1) {
        unsigned char *b = ewi_envelope_body_buf(env, len);
        assert_non_null(b);
        memset(b, 'x', len);
        size_t got;
        const unsigned char *r = ew_envelope_body(env, &got);
        assert_ptr_equal(r, b);
        assert_int_equal(got, len);
    }
    ewi_envelope_unref(env);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(headers_set_get_replace_remove_iterate),
        cmocka_unit_test(reserved_and_bad_keys_are_refused),
        cmocka_unit_test(limits_apply),
        cmocka_unit_test(many_headers_and_churn_grow_storage),
        cmocka_unit_test(framework_values_and_body),
        cmocka_unit_test(framework_headers_in_one_go),
        cmocka_unit_test(received_headers_in_one_go),
        cmocka_unit_test(body_buffers_small_and_large),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
