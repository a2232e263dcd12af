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

/* Decodes bytes both ways (in place and through proton's decoder) and
 * checks that they agree, header order included. */
static ew_envelope *both_ways(const char *bytes, size_t len, amqp10_wire_meta *meta)
{
    assert_true(amqp10_message_in_place(bytes, len));
    char err[256], err2[256];
    ew_envelope *a = ewi_envelope_new(), *b = ewi_envelope_new();
    amqp10_wire_meta mb;
    assert_int_equal(amqp10_message_decode(bytes, len, a, meta, err, sizeof err), EW_OK);
    assert_int_equal(amqp10_message_decode_generic(bytes, len, b, &mb, err2, sizeof err2),
                     EW_OK);
    assert_int_equal(meta->durable, mb.durable);
    assert_int_equal(meta->first_acquirer, mb.first_acquirer);
    assert_int_equal(meta->delivery_count, mb.delivery_count);
    size_t la, lb;
    const void *ba = ew_envelope_body(a, &la), *bb = ew_envelope_body(b, &lb);
    assert_int_equal(la, lb);
    assert_memory_equal(ba, bb, la);
    assert_string_equal(ew_envelope_content_type(a), ew_envelope_content_type(b));
    assert_int_equal(ew_envelope_header_count(a), ew_envelope_header_count(b));
    for (size_t i = 0; i < ew_envelope_header_count(a); i++) {
        const char *ka, *va, *kb, *vb;
        assert_int_equal(ew_envelope_header_at(a, i, &ka, &va), EW_OK);
        assert_int_equal(ew_envelope_header_at(b, i, &kb, &vb), EW_OK);
        assert_string_equal(ka, kb);
        assert_string_equal(va, vb);
    }
    ewi_envelope_unref(b);
    return a;
}

/* A message from another client with every header field, annotations, every
 * scalar application-property type and the other properties fields: read in
 * place, with what proton's decoder gives. */
static void foreign_fields_read_in_place_as_proton_reads_them(void **state)
{
    (void)state;
    pn_message_t *m = pn_message();
    pn_message_set_durable(m, true);
    pn_message_set_priority(m, 7);
    pn_message_set_ttl(m, 60000);
    pn_message_set_first_acquirer(m, true);
    pn_message_set_delivery_count(m, 3);
    pn_message_set_address(m, "somewhere");
    pn_message_set_reply_to(m, "back");
    pn_message_set_subject(m, "Subj");
    pn_message_set_content_type(m, "application/x-test");
    pn_message_set_creation_time(m, 1700000000000LL);
    pn_message_set_group_id(m, "g");
    pn_atom_t cid = {.type = PN_UUID};
    memcpy(cid.u.as_uuid.bytes, "0123456789abcdef", 16);
    pn_message_set_correlation_id(m, cid);
    pn_atom_t id = {.type = PN_UUID};
    memcpy(id.u.as_uuid.bytes, "fedcba9876543210", 16);
    pn_message_set_id(m, id);
    pn_data_t *ann = pn_message_annotations(m);
    pn_data_put_map(ann);
    pn_data_enter(ann);
    pn_data_put_symbol(ann, pn_bytes(9, "x-opt-foo"));
    pn_data_put_list(ann);
    pn_data_enter(ann);
    pn_data_put_int(ann, 1);
    pn_data_put_string(ann, pn_bytes(3, "two"));
    pn_data_exit(ann);
    pn_data_exit(ann);
    pn_data_t *p = pn_message_properties(m);
    pn_data_put_map(p);
    pn_data_enter(p);
#define PUT(key, call)                                                                  \
    pn_data_put_string(p, pn_bytes(strlen(key), key));                                  \
    call
    PUT("ub", pn_data_put_ubyte(p, 200));
    PUT("b", pn_data_put_byte(p, -5));
    PUT("us", pn_data_put_ushort(p, 65000));
    PUT("s", pn_data_put_short(p, -300));
    PUT("ui", pn_data_put_uint(p, 4000000000u));
    PUT("ui0", pn_data_put_uint(p, 0));
    PUT("ui1", pn_data_put_uint(p, 9));
    PUT("i", pn_data_put_int(p, -70000));
    PUT("i1", pn_data_put_int(p, -7));
    PUT("c", pn_data_put_char(p, 0x1F600));
    PUT("ul", pn_data_put_ulong(p, 18000000000000000000ull));
    PUT("ul1", pn_data_put_ulong(p, 200));
    PUT("l", pn_data_put_long(p, -9000000000LL));
    PUT("l1", pn_data_put_long(p, 100));
    PUT("ts", pn_data_put_timestamp(p, 1700000000001LL));
    PUT("f", pn_data_put_float(p, 1.5f));
    PUT("d", pn_data_put_double(p, -2.25));
    PUT("u", pn_data_put_uuid(p, id.u.as_uuid));
    PUT("bin", pn_data_put_binary(p, pn_bytes(3, "abc")));
    PUT("sym", pn_data_put_symbol(p, pn_bytes(3, "xyz")));
    PUT("null", pn_data_put_null(p));
    PUT("t", pn_data_put_bool(p, true));
    PUT("map", pn_data_put_map(p));
#undef PUT
    pn_data_put_symbol(p, pn_bytes(6, "symkey"));
    pn_data_put_string(p, pn_bytes(1, "v"));
    pn_data_exit(p);
    char big[1000];
    memset(big, 'z', sizeof big);
    pn_data_put_binary(pn_message_body(m), pn_bytes(sizeof big, big));
    pn_message_set_inferred(m, true);
    pn_rwbytes_t buf = {0, NULL};
    ssize_t n = pn_message_encode2(m, &buf);
    assert_true(n > 0);
    pn_message_free(m);

    amqp10_wire_meta meta;
    ew_envelope *env = both_ways(buf.start, (size_t)n, &meta);
    free(buf.start);
    assert_true(meta.durable);
    assert_true(meta.first_acquirer);
    assert_int_equal(meta.delivery_count, 3);
    assert_string_equal(ew_envelope_header(env, "ub"), "200");
    assert_string_equal(ew_envelope_header(env, "s"), "-300");
    assert_string_equal(ew_envelope_header(env, "ul"), "18000000000000000000");
    assert_string_equal(ew_envelope_header(env, "c"), "128512");
    assert_string_equal(ew_envelope_header(env, "d"), "-2.25");
    assert_string_equal(ew_envelope_header(env, "symkey"), "v");
    assert_null(ew_envelope_header(env, "map"));
    assert_string_equal(ew_envelope_header(env, EW_HDR_EVENT), "Subj");
    assert_string_equal(ew_envelope_header(env, EW_HDR_SENT_AT), "1700000000000");
    assert_string_equal(ew_envelope_content_type(env), "application/x-test");
    ewi_envelope_unref(env);
}

/* Long values take the 32-bit forms (str32, map32, vbin32) on our side; they
 * read back in place as proton reads them. */
static void long_values_round_trip_in_place(void **state)
{
    (void)state;
    char body[70000], val[300];
    memset(body, 'b', sizeof body);
    memset(val, 'v', sizeof val - 1);
    val[sizeof val - 1] = '\0';
    ew_envelope *env = sample(EW_CONTENT_TYPE_MSGPACK, "x");
    assert_int_equal(ewi_envelope_set_body(env, body, sizeof body), EW_OK);
    assert_int_equal(ewi_envelope_put(env, "long", 4, val, strlen(val)), EW_OK);
    uint8_t *bytes;
    size_t len;
    char err[256];
    assert_int_equal(amqp10_message_encode(env, true, &bytes, &len, err, sizeof err), EW_OK);
    pn_message_t *m = peer_view(bytes, len);
    assert_string_equal(pn_message_get_subject(m), "HelloEvent");
    pn_message_free(m);
    amqp10_wire_meta meta;
    ew_envelope *back = both_ways((const char *)bytes, len, &meta);
    size_t blen;
    ew_envelope_body(back, &blen);
    assert_int_equal(blen, sizeof body);
    assert_string_equal(ew_envelope_header(back, "long"), val);
    assert_int_equal(ew_envelope_header_count(back), ew_envelope_header_count(env));
    free(bytes);
    ewi_envelope_unref(env);
    ewi_envelope_unref(back);
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
        cmocka_unit_test(foreign_fields_read_in_place_as_proton_reads_them),
        cmocka_unit_test(long_values_round_trip_in_place),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
