/* Unit tests of the RabbitMQ transport's pure parts: envelope <-> AMQP
 * properties and the URL options. No broker. */
#include "support.h"
#include "transports/rabbitmq/rmq.h"

static ew_envelope *sample(void)
{
    ew_envelope *env = ewi_envelope_new();
    ewi_envelope_set_body(env, "\x81\xa1x\x01", 4);
    ewi_envelope_set_content_type(env, "application/msgpack");
    const char *kv[][2] = {{EW_HDR_EVENT, "OrderPlaced"},
                           {EW_HDR_MESSAGE_ID, "0b5e1c2a-9d3f-4c1e-8a7b-2f6d4e5c3b1a"},
                           {EW_HDR_SENT_AT, "1700000000123"},
                           {EW_HDR_ATTEMPT, "1"},
                           {"session", "s-42"},
                           {"odd", ODD_VALUE}};
    for (size_t i = 0; i < sizeof kv / sizeof kv[0]; i++)
        assert_int_equal(ewi_envelope_put(env, kv[i][0], strlen(kv[i][0]), kv[i][1],
                                          strlen(kv[i][1])),
                         EW_OK);
    return env;
}

static void every_header_and_property_survives_the_round_trip(void **state)
{
    (void)state;
    ew_envelope *env = sample();
    rmq_props_buf buf = {0};
    amqp_basic_properties_t p;
    assert_int_equal(rmq_props_from_env(env, true, &buf, &p), EW_OK);
    assert_int_equal(p.delivery_mode, 2);
    assert_true(p._flags & AMQP_BASIC_MESSAGE_ID_FLAG);
    assert_int_equal(p.message_id.len, 36);
    assert_memory_equal(p.message_id.bytes, "0b5e1c2a", 8);
    assert_true(p._flags & AMQP_BASIC_TIMESTAMP_FLAG);
    assert_int_equal(p.timestamp, 1700000000);
    assert_true(p._flags & AMQP_BASIC_TYPE_FLAG);
    assert_int_equal(p.type.len, strlen("OrderPlaced"));
    assert_true(p._flags & AMQP_BASIC_CONTENT_TYPE_FLAG);
    assert_int_equal(p.headers.num_entries, 6);
    for (int i = 0; i < p.headers.num_entries; i++)
        assert_int_equal(p.headers.entries[i].value.kind, AMQP_FIELD_KIND_UTF8);

    /* Through the wire encoding and back, as the broker would hand it over. */
    uint8_t wire[4096];
    amqp_bytes_t enc = {sizeof wire, wire};
    size_t off = 0;
    assert_true(amqp_encode_table(enc, &p.headers, &off) == AMQP_STATUS_OK);
    amqp_pool_t pool;
    init_amqp_pool(&pool, 4096);
    amqp_table_t decoded;
    size_t doff = 0;
    amqp_bytes_t in = {off, wire};
    assert_true(amqp_decode_table(in, &pool, &decoded, &doff) == AMQP_STATUS_OK);
    amqp_basic_properties_t q = p;
    q.headers = decoded;

    ew_envelope *back = ewi_envelope_new();
    size_t skipped = 9;
    assert_int_equal(rmq_props_to_env(&q, back, &skipped), EW_OK);
    assert_int_equal(skipped, 0);
    assert_string_equal(ew_envelope_content_type(back), "application/msgpack");
    assert_int_equal(ew_envelope_header_count(back), 6);
    assert_string_equal(ew_envelope_header(back, "odd"), ODD_VALUE);
    assert_string_equal(ew_envelope_header(back, "session"), "s-42");
    assert_string_equal(ew_envelope_message_id(back), "0b5e1c2a-9d3f-4c1e-8a7b-2f6d4e5c3b1a");
    assert_int_equal(ew_envelope_sent_at(back), 1700000000123LL);
    assert_string_equal(ew_envelope_event(back), "OrderPlaced");
    empty_amqp_pool(&pool);
    ewi_envelope_unref(back);
    ewi_envelope_unref(env);
    rmq_props_buf_free(&buf);
}

static void transient_messages_are_not_persistent(void **state)
{
    (void)state;
    ew_envelope *env = sample();
    rmq_props_buf buf = {0};
    amqp_basic_properties_t p;
    assert_int_equal(rmq_props_from_env(env, false, &buf, &p), EW_OK);
    assert_int_equal(p.delivery_mode, 1);
    ewi_envelope_unref(env);
    rmq_props_buf_free(&buf);
}

static void a_key_over_255_bytes_is_refused_not_truncated(void **state)
{
    (void)state;
    ew_envelope *env = sample();
    char key[300];
    memset(key, 'k', sizeof key - 1);
    key[sizeof key - 1] = '\0';
    assert_int_equal(ewi_envelope_put(env, key, strlen(key), "v", 1), EW_OK);
    rmq_props_buf buf = {0};
    amqp_basic_properties_t p;
    assert_int_equal(rmq_props_from_env(env, true, &buf, &p), EW_ETOOBIG);
    ewi_envelope_unref(env);
    rmq_props_buf_free(&buf);
}

/* The frame's properties written straight from the envelope are the bytes
 * librabbitmq writes for rmq_props_from_env's properties. */
static void check_encoding(const ew_envelope *env)
{
    rmq_props_buf buf = {0};
    amqp_basic_properties_t p;
    uint8_t ours[8192], theirs[8192];
    for (int persistent = 0; persistent < 2; persistent++) {
        assert_int_equal(rmq_props_from_env(env, persistent, &buf, &p), EW_OK);
        int n = rmq_wire_encode_env(env, persistent, (amqp_bytes_t){sizeof ours, ours});
        int m = amqp_encode_properties(AMQP_BASIC_CLASS, &p,
                                       (amqp_bytes_t){sizeof theirs, theirs});
        assert_true(n > 0);
        assert_int_equal(n, m);
        assert_memory_equal(ours, theirs, (size_t)n);
        /* Too small a buffer fails, never writes past it. */
        for (int less = 1; less <= n; less += 7)
            assert_int_equal(rmq_wire_encode_env(env, persistent,
                                                 (amqp_bytes_t){(size_t)(n - less), ours}),
                             -1);
    }
    rmq_props_buf_free(&buf);
}

static void encoded_properties_match_librabbitmq(void **state)
{
    (void)state;
    ew_envelope *env = sample();
    check_encoding(env);
    /* Without a content type; a sent-at that is not a number; an id too
     * long for the message-id property; no framework headers at all. */
    ewi_envelope_set_content_type(env, NULL);
    check_encoding(env);
    assert_int_equal(ewi_envelope_put(env, EW_HDR_SENT_AT, strlen(EW_HDR_SENT_AT), "soon", 4),
                     EW_OK);
    char id[300];
    memset(id, 'i', sizeof id);
    assert_int_equal(ewi_envelope_put(env, EW_HDR_MESSAGE_ID, strlen(EW_HDR_MESSAGE_ID), id,
                                      sizeof id),
                     EW_OK);
    check_encoding(env);
    ew_envelope *bare = ewi_envelope_new();
    check_encoding(bare);
    assert_int_equal(ewi_envelope_set_content_type(bare, "text/plain"), EW_OK);
    assert_int_equal(ewi_envelope_put(bare, "k", 1, "", 0), EW_OK);
    check_encoding(bare);
    /* A key over 255 bytes is refused, as by rmq_props_from_env. */
    char key[300];
    memset(key, 'k', sizeof key);
    assert_int_equal(ewi_envelope_put(bare, key, sizeof key, "v", 1), EW_OK);
    uint8_t out[4096];
    assert_int_equal(rmq_wire_encode_env(bare, true, (amqp_bytes_t){sizeof out, out}), -1);
    ewi_envelope_unref(bare);
    ewi_envelope_unref(env);
}

/* What a foreign producer sends: typed header values, properties without
 * our ew-* headers. */
static void foreign_properties_become_headers(void **state)
{
    (void)state;
    amqp_table_entry_t e[7];
    e[0] = (amqp_table_entry_t){amqp_cstring_bytes("count"), {AMQP_FIELD_KIND_I32, {.i32 = -7}}};
    e[1] = (amqp_table_entry_t){amqp_cstring_bytes("flag"), {AMQP_FIELD_KIND_BOOLEAN, {.boolean = 1}}};
    e[2] = (amqp_table_entry_t){amqp_cstring_bytes("big"), {AMQP_FIELD_KIND_U64, {.u64 = 18446744073709551615ull}}};
    e[3].key = amqp_cstring_bytes("price");
    e[3].value.kind = AMQP_FIELD_KIND_DECIMAL;
    e[3].value.value.decimal.decimals = 2;
    e[3].value.value.decimal.value = 1999;
    e[4].key = amqp_cstring_bytes("nested");
    e[4].value.kind = AMQP_FIELD_KIND_TABLE;
    e[4].value.value.table = amqp_empty_table;
    e[5].key = amqp_cstring_bytes("raw");
    e[5].value.kind = AMQP_FIELD_KIND_BYTES;
    e[5].value.value.bytes = amqp_cstring_bytes("bytes");
    e[6].key = amqp_cstring_bytes("nul");
    e[6].value.kind = AMQP_FIELD_KIND_UTF8;
    e[6].value.value.bytes = (amqp_bytes_t){3, (void *)(uintptr_t) "a\0b"};
    amqp_basic_properties_t p;
    memset(&p, 0, sizeof p);
    p._flags = AMQP_BASIC_HEADERS_FLAG | AMQP_BASIC_MESSAGE_ID_FLAG |
               AMQP_BASIC_TIMESTAMP_FLAG | AMQP_BASIC_TYPE_FLAG | AMQP_BASIC_CONTENT_TYPE_FLAG;
    p.headers.num_entries = 7;
    p.headers.entries = e;
    p.message_id = amqp_cstring_bytes("foreign-1");
    p.timestamp = 1700000000;
    p.type = amqp_cstring_bytes("Hello");
    p.content_type = amqp_cstring_bytes("application/json");

    ew_envelope *env = ewi_envelope_new();
    size_t skipped;
    assert_int_equal(rmq_props_to_env(&p, env, &skipped), EW_OK);
    assert_int_equal(skipped, 2); /* the nested table and the NUL byte */
    assert_string_equal(ew_envelope_header(env, "count"), "-7");
    assert_string_equal(ew_envelope_header(env, "flag"), "true");
    assert_string_equal(ew_envelope_header(env, "big"), "18446744073709551615");
    assert_string_equal(ew_envelope_header(env, "price"), "19.99");
    assert_string_equal(ew_envelope_header(env, "raw"), "bytes");
    assert_null(ew_envelope_header(env, "nested"));
    assert_string_equal(ew_envelope_message_id(env), "foreign-1");
    assert_int_equal(ew_envelope_sent_at(env), 1700000000000LL);
    assert_string_equal(ew_envelope_event(env), "Hello");
    assert_string_equal(ew_envelope_content_type(env), "application/json");
    ewi_envelope_unref(env);
}

/* A key repeated in the headers table: the first value counts (as on every
 * transport), and the second is counted as skipped. More headers than one
 * batch of the reader all arrive. */
static void repeated_header_keys_keep_the_first(void **state)
{
    (void)state;
    enum { N = 40 };
    amqp_table_entry_t e[N + 2];
    char keys[N][8];
    for (int i = 0; i < N; i++) {
        snprintf(keys[i], sizeof keys[i], "h%d", i);
        e[i] = (amqp_table_entry_t){amqp_cstring_bytes(keys[i]),
                                    {AMQP_FIELD_KIND_I32, {.i32 = i}}};
    }
    e[N] = (amqp_table_entry_t){amqp_cstring_bytes("h7"), {AMQP_FIELD_KIND_I32, {.i32 = 99}}};
    e[N + 1] = (amqp_table_entry_t){amqp_cstring_bytes("last"),
                                    {AMQP_FIELD_KIND_UTF8, {.bytes = amqp_cstring_bytes("x")}}};
    amqp_basic_properties_t p;
    memset(&p, 0, sizeof p);
    p._flags = AMQP_BASIC_HEADERS_FLAG;
    p.headers.num_entries = N + 2;
    p.headers.entries = e;
    ew_envelope *env = ewi_envelope_new();
    size_t skipped;
    assert_int_equal(rmq_props_to_env(&p, env, &skipped), EW_OK);
    assert_int_equal(skipped, 1);
    assert_int_equal(ew_envelope_header_count(env), N + 1);
    assert_string_equal(ew_envelope_header(env, "h7"), "7");
    assert_string_equal(ew_envelope_header(env, "h39"), "39");
    assert_string_equal(ew_envelope_header(env, "last"), "x");
    ewi_envelope_unref(env);
}

/* ---- URL options -------------------------------------------------------- */

static ew_err parse(const char *text, rmq_opts *o)
{
    ewi_url u;
    char err[256];
    assert_int_equal(ewi_url_parse(text, &u, err, sizeof err), EW_OK);
    ew_err rc = rmq_opts_parse(NULL, &u, o);
    ewi_url_free(&u);
    return rc;
}

static void url_defaults_and_vhosts(void **state)
{
    (void)state;
    rmq_opts o;
    assert_int_equal(parse("rabbitmq://127.0.0.1", &o), EW_OK);
    assert_string_equal(o.vhost, "/");
    assert_string_equal(o.user, "guest");
    assert_int_equal(o.port, 5672);
    assert_int_equal(o.heartbeat_s, 10);
    assert_int_equal(o.max_inflight, 512);
    assert_int_equal(o.max_inflight_bytes, 16u << 20);
    assert_false(o.tls);
    rmq_opts_free(&o);
    assert_int_equal(parse("rabbitmq://127.0.0.1/?max_inflight=10&max_inflight_bytes=1048576", &o),
                     EW_OK);
    assert_int_equal(o.max_inflight, 10);
    assert_int_equal(o.max_inflight_bytes, 1048576);
    rmq_opts_free(&o);
    assert_int_equal(parse("rabbitmq://u:p@127.0.0.1:5673/%2F", &o), EW_OK);
    assert_string_equal(o.vhost, "/");
    assert_int_equal(o.port, 5673);
    rmq_opts_free(&o);
    assert_int_equal(parse("rabbitmqs://u:p@127.0.0.1/prod?verify=0&heartbeat=5", &o), EW_OK);
    assert_true(o.tls);
    assert_int_equal(o.port, 5671);
    assert_string_equal(o.vhost, "prod");
    assert_false(o.verify);
    assert_int_equal(o.heartbeat_s, 5);
    /* The label for logs never carries the password. */
    assert_null(strstr(o.label, "p@"));
    rmq_opts_free(&o);
}

static void bad_options_are_refused(void **state)
{
    (void)state;
    rmq_opts o;
    assert_int_equal(parse("rabbitmq://127.0.0.1/?hearbeat=5", &o), EW_EINVAL);
    assert_int_equal(parse("rabbitmq://127.0.0.1/?heartbeat=abc", &o), EW_EINVAL);
    assert_int_equal(parse("rabbitmq://127.0.0.1/?max_inflight=0", &o), EW_EINVAL);
    assert_int_equal(parse("rabbitmq://127.0.0.1/?max_inflight_bytes=1023", &o), EW_EINVAL);
    /* TLS files only with rabbitmqs://, and cert goes with key. */
    assert_int_equal(parse("rabbitmq://127.0.0.1/?cacert=/x", &o), EW_EINVAL);
    assert_int_equal(parse("rabbitmqs://127.0.0.1/?cert=/x", &o), EW_EINVAL);
    assert_int_equal(parse("rabbitmq:///", &o), EW_EINVAL);
}

static void manager_rejects_reserved_event_names(void **state)
{
    (void)state;
    ew_manager *m = NULL;
    ew_options opts = {.log_level = EW_LOG_ERROR};
    assert_int_equal(ew_manager_new(&m, "rabbitmq://guest:guest@127.0.0.1:5672/", &opts), EW_OK);
    ew_event_desc ev = {.type = &conf_event_type, .name = "amq.Thing", .durable = true};
    ew_listener_desc l = {.event = &ev, .name = "L"};
    assert_int_equal(ew_listen(m, &l, tally_listener, NULL), EW_EINVAL);
    ew_manager_free(m);
}

/* A listener the broker refuses is retried on a channel of its own each
 * time: the channel it had goes back, so thousands of retries leave room for
 * the other listeners (channel_max 2047 on RabbitMQ). */
static void refused_listeners_give_their_channel_back(void **state)
{
    (void)state;
    static rmq_chans c;
    rmq_chans_reset(&c);
    uint16_t a = rmq_chans_take(&c, 2047);
    assert_int_equal(a, RMQ_CH_FIRST_SUB);
    for (int i = 0; i < 5000; i++) {
        uint16_t ch = rmq_chans_take(&c, 2047);
        if (ch != RMQ_CH_FIRST_SUB + 1)
            fail_msg("retry %d got channel %u, wanted %u again", i, ch, RMQ_CH_FIRST_SUB + 1);
        rmq_chans_give(&c, ch); /* refused: the broker closed it */
    }
    /* Every number up to channel_max once, then none; one given back is
     * the next taken. */
    size_t n = 1;
    while (rmq_chans_take(&c, 2047))
        n++;
    assert_int_equal(n, 2047 - RMQ_CH_FIRST_SUB + 1);
    rmq_chans_give(&c, 700);
    assert_int_equal(rmq_chans_take(&c, 2047), 700);
    assert_int_equal(rmq_chans_take(&c, 2047), 0);
    rmq_chans_give(&c, a);
    assert_int_equal(rmq_chans_take(&c, 2047), a);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(every_header_and_property_survives_the_round_trip),
        cmocka_unit_test(refused_listeners_give_their_channel_back),
        cmocka_unit_test(transient_messages_are_not_persistent),
        cmocka_unit_test(a_key_over_255_bytes_is_refused_not_truncated),
        cmocka_unit_test(foreign_properties_become_headers),
        cmocka_unit_test(repeated_header_keys_keep_the_first),
        cmocka_unit_test(encoded_properties_match_librabbitmq),
        cmocka_unit_test(url_defaults_and_vhosts),
        cmocka_unit_test(bad_options_are_refused),
        cmocka_unit_test(manager_rejects_reserved_event_names),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
