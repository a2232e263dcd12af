/* Envelope <-> AMQP 1.0 message: what C peers, aspyx-event (Python proton)
 * and broken producers put on the wire, and what comes out of it. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdlib.h>
#include <string.h>
#include <cmocka.h>

#include <proton/codec.h>
#include <proton/message.h>

#include "transports/amqp/amqp10.h"

#define NON_ASCII "é ü 漢字 😀 a:b\\c\nd"

static ew_envelope *sample(const char *ct, const char *body)
{
    ew_envelope *env = ewi_envelope_new();
    assert_non_null(env);
    assert_int_equal(ewi_envelope_set_body(env, body, strlen(body)), EW_OK);
    assert_int_equal(ewi_envelope_set_content_type(env, ct), EW_OK);
    const char *kv[][2] = {{EW_HDR_EVENT, "HelloEvent"},
                           {EW_HDR_MESSAGE_ID, "0b6f7c1e-8a1d-4c52-9a43-3f1f6f3c2a10"},
                           {EW_HDR_SENT_AT, "1732380000123"},
                           {EW_HDR_ATTEMPT, "1"},
                           {"session", NON_ASCII},
                           {"empty", ""}};
    for (size_t i = 0; i < sizeof kv / sizeof kv[0]; i++)
        assert_int_equal(ewi_envelope_put(env, kv[i][0], strlen(kv[i][0]), kv[i][1],
                                          strlen(kv[i][1])),
                         EW_OK);
    return env;
}

/* Decodes bytes with proton itself, to see what a foreign peer sees. */
static pn_message_t *peer_view(const uint8_t *bytes, size_t len)
{
    pn_message_t *m = pn_message();
    assert_int_equal(pn_message_decode(m, (const char *)bytes, len), 0);
    return m;
}

static void msgpack_round_trips_with_every_header(void **state)
{
    (void)state;
    ew_envelope *env = sample(EW_CONTENT_TYPE_MSGPACK, "\x82\xa5world\xa1x");
    uint8_t *bytes;
    size_t len;
    char err[256];
    assert_int_equal(amqp10_message_encode(env, true, &bytes, &len, err, sizeof err), EW_OK);

    /* On the wire: a data section, native properties, durable header. */
    pn_message_t *m = peer_view(bytes, len);
    assert_true(pn_message_is_durable(m));
    assert_true(pn_message_is_inferred(m));
    assert_string_equal(pn_message_get_subject(m), "HelloEvent");
    assert_string_equal(pn_message_get_content_type(m), EW_CONTENT_TYPE_MSGPACK);
    assert_int_equal(pn_message_get_creation_time(m), 1732380000123LL);
    pn_msgid_t id = pn_message_get_id(m);
    assert_int_equal(id.type, PN_STRING);
    pn_data_t *b = pn_message_body(m);
    pn_data_rewind(b);
    assert_true(pn_data_next(b));
    assert_int_equal(pn_data_type(b), PN_BINARY);
    pn_message_free(m);

    ew_envelope *back = ewi_envelope_new();
    amqp10_wire_meta meta;
    assert_int_equal(amqp10_message_decode((const char *)bytes, len, back, &meta, err,
                                         sizeof err),
                     EW_OK);
    assert_true(meta.durable);
    size_t blen;
    const char *body = ew_envelope_body(back, &blen);
    assert_int_equal(blen, 9);
    assert_memory_equal(body, "\x82\xa5world\xa1x", 9);
    assert_string_equal(ew_envelope_content_type(back), EW_CONTENT_TYPE_MSGPACK);
    for (size_t i = 0; i < ew_envelope_header_count(env); i++) {
        const char *k, *v;
        assert_int_equal(ew_envelope_header_at(env, i, &k, &v), EW_OK);
        const char *got = ew_envelope_header(back, k);
        if (!got || strcmp(got, v) != 0)
            fail_msg("header %s: sent '%s', got '%s'", k, v, got ? got : "(none)");
    }
    assert_int_equal(ew_envelope_header_count(back), ew_envelope_header_count(env));
    free(bytes);
    ewi_envelope_unref(env);
    ewi_envelope_unref(back);
}

static void json_is_an_amqp_value_string_like_aspyx_sends(void **state)
{
    (void)state;
    const char *json = "{\"world\":\"héllo\"}";
    ew_envelope *env = sample(EW_CONTENT_TYPE_JSON, json);
    uint8_t *bytes;
    size_t len;
    char err[256];
    assert_int_equal(amqp10_message_encode(env, false, &bytes, &len, err, sizeof err),
                     EW_OK);
    pn_message_t *m = peer_view(bytes, len);
    assert_false(pn_message_is_durable(m));
    assert_false(pn_message_is_inferred(m));
    pn_data_t *b = pn_message_body(m);
    pn_data_rewind(b);
    assert_true(pn_data_next(b));
    assert_int_equal(pn_data_type(b), PN_STRING);
    pn_bytes_t s = pn_data_get_string(b);
    assert_int_equal(s.size, strlen(json));
    assert_memory_equal(s.start, json, s.size);
    pn_message_free(m);
    free(bytes);
    ewi_envelope_unref(env);
}

/* What python3-qpid-proton makes of Message(body='{...}', properties={...}):
 * an amqp-value string, no content type, no subject. */
static void aspyx_message_reads_as_json_with_its_headers(void **state)
{
    (void)state;
    pn_message_t *m = pn_message();
    const char *json = "{\"world\": \"from python\"}";
    pn_data_put_string(pn_message_body(m), pn_bytes(strlen(json), json));
    pn_data_t *p = pn_message_properties(m);
    pn_data_put_map(p);
    pn_data_enter(p);
    pn_data_put_string(p, pn_bytes(7, "session"));
    pn_data_put_string(p, pn_bytes(strlen(NON_ASCII), NON_ASCII));
    pn_data_put_string(p, pn_bytes(5, "count"));
    pn_data_put_long(p, -42);
    pn_data_put_symbol(p, pn_bytes(4, "flag"));
    pn_data_put_bool(p, true);
    pn_data_put_string(p, pn_bytes(4, "list"));
    pn_data_put_list(p); /* not a simple type: skipped */
    pn_data_exit(p);
    pn_atom_t id = {.type = PN_ULONG};
    id.u.as_ulong = 77;
    pn_message_set_id(m, id);
    pn_rwbytes_t buf = {0, NULL};
    ssize_t n = pn_message_encode2(m, &buf);
    assert_true(n > 0);
    pn_message_free(m);

    ew_envelope *env = ewi_envelope_new();
    char err[256];
    amqp10_wire_meta meta;
    assert_int_equal(amqp10_message_decode(buf.start, (size_t)n, env, &meta, err, sizeof err),
                     EW_OK);
    free(buf.start);
    size_t blen;
    const char *body = ew_envelope_body(env, &blen);
    assert_int_equal(blen, strlen(json));
    assert_memory_equal(body, json, blen);
    assert_string_equal(ew_envelope_content_type(env), EW_CONTENT_TYPE_JSON);
    assert_string_equal(ew_envelope_header(env, "session"), NON_ASCII);
    assert_string_equal(ew_envelope_header(env, "count"), "-42");
    assert_string_equal(ew_envelope_header(env, "flag"), "true");
    assert_null(ew_envelope_header(env, "list"));
    assert_string_equal(ew_envelope_header(env, EW_HDR_MESSAGE_ID), "77");
    assert_null(ew_envelope_header(env, EW_HDR_EVENT));
    ewi_envelope_unref(env);
}

static void a_data_section_json_keeps_its_content_type(void **state)
{
    (void)state;
    pn_message_t *m = pn_message();
    pn_data_put_binary(pn_message_body(m), pn_bytes(2, "{}"));
    pn_message_set_inferred(m, true);
    pn_message_set_content_type(m, "application/json; charset=utf-8");
    pn_rwbytes_t buf = {0, NULL};
    ssize_t n = pn_message_encode2(m, &buf);
    pn_message_free(m);
    ew_envelope *env = ewi_envelope_new();
    char err[256];
    assert_int_equal(amqp10_message_decode(buf.start, (size_t)n, env, NULL, err, sizeof err),
                     EW_OK);
    free(buf.start);
    assert_string_equal(ew_envelope_content_type(env), "application/json; charset=utf-8");
    ewi_envelope_unref(env);
}

static void unreadable_input_is_kept_not_dropped(void **state)
{
    (void)state;
    /* Not AMQP at all: the raw bytes stay, under a content type no codec
     * claims, so core dead-letters them with the bytes intact. */
    ew_envelope *env = ewi_envelope_new();
    char err[256];
    const char junk[] = "\x00\x53\x77\xff\xff garbage";
    assert_int_equal(amqp10_message_decode(junk, sizeof junk - 1, env, NULL, err, sizeof err),
                     EW_EDECODE);
    assert_non_null(strstr(err, "not an AMQP 1.0 message"));
    size_t blen;
    const void *body = ew_envelope_body(env, &blen);
    assert_int_equal(blen, sizeof junk - 1);
    assert_memory_equal(body, junk, blen);
    assert_string_equal(ew_envelope_content_type(env), AMQP10_CT_UNREADABLE);
    assert_int_equal(ew_format_from_content_type(AMQP10_CT_UNREADABLE), EW_FORMAT_DEFAULT);
    ewi_envelope_unref(env);

    /* An amqp-value map: kept in its AMQP encoding. */
    pn_message_t *m = pn_message();
    pn_data_t *b = pn_message_body(m);
    pn_data_put_map(b);
    pn_data_enter(b);
    pn_data_put_string(b, pn_bytes(1, "k"));
    pn_data_put_int(b, 1);
    pn_data_exit(b);
    pn_rwbytes_t buf = {0, NULL};
    ssize_t n = pn_message_encode2(m, &buf);
    pn_message_free(m);
    env = ewi_envelope_new();
    assert_int_equal(amqp10_message_decode(buf.start, (size_t)n, env, NULL, err, sizeof err),
                     EW_EDECODE);
    free(buf.start);
    assert_string_equal(ew_envelope_content_type(env), AMQP10_CT_VALUE);
    body = ew_envelope_body(env, &blen);
    assert_true(blen > 0);
    ewi_envelope_unref(env);
}

static void redelivery_marks_are_read(void **state)
{
    (void)state;
    pn_message_t *m = pn_message();
    pn_message_set_delivery_count(m, 3);
    pn_message_set_first_acquirer(m, true);
    pn_data_put_binary(pn_message_body(m), pn_bytes(1, "\x80"));
    pn_message_set_inferred(m, true);
    pn_rwbytes_t buf = {0, NULL};
    ssize_t n = pn_message_encode2(m, &buf);
    pn_message_free(m);
    ew_envelope *env = ewi_envelope_new();
    amqp10_wire_meta meta;
    char err[64];
    assert_int_equal(amqp10_message_decode(buf.start, (size_t)n, env, &meta, err, sizeof err),
                     EW_OK);
    assert_int_equal(meta.delivery_count, 3);
    assert_true(meta.first_acquirer);
    free(buf.start);
    ewi_envelope_unref(env);
}

/* A body of megabytes, then small ones: the per-thread codec objects are
 * let go after a large message and made again. */
static void large_then_small_bodies(void **state)
{
    (void)state;
    size_t big = 3u << 20;
    char *body = malloc(big + 1);
    assert_non_null(body);
    memset(body, 'z', big);
    body[big] = '\0';
    for (int i = 0; i < 3; i++) {
        ew_envelope *env = sample(EW_CONTENT_TYPE_MSGPACK, i == 1 ? body : "\x80");
        uint8_t *bytes;
        size_t len;
        char err[256];
        assert_int_equal(amqp10_message_encode(env, true, &bytes, &len, err, sizeof err),
                         EW_OK);
        ew_envelope *back = ewi_envelope_new();
        assert_int_equal(amqp10_message_decode((const char *)bytes, len, back, NULL, err,
                                             sizeof err),
                         EW_OK);
        size_t blen;
        const void *b = ew_envelope_body(back, &blen);
        assert_int_equal(blen, i == 1 ? big : 1);
        assert_memory_equal(b, i == 1 ? body : "\x80", blen);
        assert_string_equal(ew_envelope_header(back, "session"), NON_ASCII);
        free(bytes);
        ewi_envelope_unref(env);
        ewi_envelope_unref(back);
    }
    free(body);
}

/* A section whose declared size disagrees with what its elements take:
 * here a header list of 2 bytes claims 2 fields, so a reader going by the
 * count takes the body section into the header and one going by the size
 * does not. Neither reading is trusted: the bytes are kept whole. */
static void sizes_that_disagree_keep_the_bytes(void **state)
{
    (void)state;
    const char bad[] = "\x00\x53\x70\xc0\x02\x02\x41" /* header [true, ...] */
                       "\x00\x53\x75\xa0\x01x";        /* data "x" */
    ew_envelope *env = ewi_envelope_new();
    char err[256];
    assert_int_equal(amqp10_message_decode(bad, sizeof bad - 1, env, NULL, err, sizeof err),
                     EW_EDECODE);
    assert_non_null(strstr(err, "not an AMQP 1.0 message"));
    size_t blen;
    const void *body = ew_envelope_body(env, &blen);
    assert_int_equal(blen, sizeof bad - 1);
    assert_memory_equal(body, bad, blen);
    assert_string_equal(ew_envelope_content_type(env), AMQP10_CT_UNREADABLE);
    ewi_envelope_unref(env);

    /* The same message with its sizes right reads normally. */
    const char good[] = "\x00\x53\x70\xc0\x02\x01\x41"
                        "\x00\x53\x75\xa0\x01x";
    env = ewi_envelope_new();
    amqp10_wire_meta meta;
    assert_int_equal(amqp10_message_decode(good, sizeof good - 1, env, &meta, err, sizeof err),
                     EW_OK);
    assert_true(meta.durable);
    body = ew_envelope_body(env, &blen);
    assert_int_equal(blen, 1);
    assert_memory_equal(body, "x", 1);
    ewi_envelope_unref(env);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(msgpack_round_trips_with_every_header),
        cmocka_unit_test(json_is_an_amqp_value_string_like_aspyx_sends),
        cmocka_unit_test(aspyx_message_reads_as_json_with_its_headers),
        cmocka_unit_test(a_data_section_json_keeps_its_content_type),
        cmocka_unit_test(unreadable_input_is_kept_not_dropped),
        cmocka_unit_test(redelivery_marks_are_read),
        cmocka_unit_test(sizes_that_disagree_keep_the_bytes),
        cmocka_unit_test(large_then_small_bodies),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
