/* The library API under the eventwire command: schema-less events
 * (ew_raw_type) and reading dead letters without taking them
 * (ew_dead_letters_peek), on the transport named by the URL argument. */
#include "support.h"

#include <msgpack.h>

static const char *URL;

/* ---- the codec ---------------------------------------------------------- */

static void raw_bodies_are_checked_and_kept_as_they_are(void **state)
{
    (void)state;
    uint8_t *out;
    size_t len;
    char err[256];
    const uint8_t map[] = {0x81, 0xa1, 'a', 0x01}; /* {"a": 1} */
    ew_raw_event r = {map, sizeof map, EW_FORMAT_MSGPACK};
    assert_int_equal(ew_encode(&ew_raw_type, EW_FORMAT_MSGPACK, &r, &out, &len, err,
                               sizeof err), EW_OK);
    assert_int_equal(len, sizeof map);
    assert_memory_equal(out, map, len);
    free(out);

    const uint8_t arr[] = {0x91, 0x01};
    r = (ew_raw_event){arr, sizeof arr, EW_FORMAT_MSGPACK};
    assert_int_equal(ew_encode(&ew_raw_type, EW_FORMAT_MSGPACK, &r, &out, &len, err,
                               sizeof err), EW_EENCODE);
    assert_non_null(strstr(err, "not a map"));
    const uint8_t trailing[] = {0x81, 0xa1, 'a', 0x01, 0x01};
    r = (ew_raw_event){trailing, sizeof trailing, EW_FORMAT_MSGPACK};
    assert_int_equal(ew_encode(&ew_raw_type, EW_FORMAT_MSGPACK, &r, &out, &len, err,
                               sizeof err), EW_EENCODE);
    assert_non_null(strstr(err, "1 bytes after"));
    const uint8_t cut[] = {0x82, 0xa1, 'a', 0x01};
    r = (ew_raw_event){cut, sizeof cut, EW_FORMAT_MSGPACK};
    assert_int_equal(ew_encode(&ew_raw_type, EW_FORMAT_MSGPACK, &r, &out, &len, err,
                               sizeof err), EW_EENCODE);
    assert_non_null(strstr(err, "truncated"));

    r = (ew_raw_event){"[1]", 3, EW_FORMAT_JSON};
    assert_int_equal(ew_encode(&ew_raw_type, EW_FORMAT_MSGPACK, &r, &out, &len, err,
                               sizeof err), EW_EENCODE);
    assert_non_null(strstr(err, "not an object"));
    r = (ew_raw_event){"{\"a\":", 5, EW_FORMAT_JSON};
    assert_int_equal(ew_encode(&ew_raw_type, EW_FORMAT_JSON, &r, &out, &len, err,
                               sizeof err), EW_EENCODE);
    assert_non_null(strstr(err, "invalid JSON"));
    /* The event's format applies when the raw event names none. */
    r = (ew_raw_event){"{\"a\":1}", 7, EW_FORMAT_DEFAULT};
    assert_int_equal(ew_encode(&ew_raw_type, EW_FORMAT_JSON, &r, &out, &len, err,
                               sizeof err), EW_OK);
    free(out);
    assert_int_equal(ew_encode(&ew_raw_type, EW_FORMAT_MSGPACK, &r, &out, &len, err,
                               sizeof err), EW_EENCODE);

    void *ev;
    assert_int_equal(ew_decode(&ew_raw_type, EW_FORMAT_JSON, "{\"b\":2}", 7, NULL, &ev, err,
                               sizeof err), EW_OK);
    const ew_raw_event *got = ev;
    assert_int_equal(got->format, EW_FORMAT_JSON);
    assert_int_equal(got->len, 7);
    assert_memory_equal(got->data, "{\"b\":2}", 7);
    ew_event_free(&ew_raw_type, ev);
    assert_int_equal(ew_decode(&ew_raw_type, EW_FORMAT_MSGPACK, arr, sizeof arr, NULL, &ev,
                               err, sizeof err), EW_EDECODE);
    assert_null(ev);
}

/* ---- through the manager ------------------------------------------------ */

typedef struct seen {
    pthread_mutex_t mu;
    int n;
    int64_t ids[8];
    char text[8][32];
    ew_format formats[8];
    size_t lens[8];
    uint8_t bodies[8][64];
} seen;

static seen typed_seen = {PTHREAD_MUTEX_INITIALIZER}, raw_seen = {PTHREAD_MUTEX_INITIALIZER};

static int count_of(seen *s)
{
    pthread_mutex_lock(&s->mu);
    int n = s->n;
    pthread_mutex_unlock(&s->mu);
    return n;
}

static ew_err on_typed(ew_delivery *d, const void *event, void *user)
{
    (void)d;
    seen *s = user;
    const conf_event *e = event;
    pthread_mutex_lock(&s->mu);
    if (s->n < 8) {
        s->ids[s->n] = e->id;
        snprintf(s->text[s->n], sizeof s->text[0], "%s", e->text ? e->text : "(null)");
        s->n++;
    }
    pthread_mutex_unlock(&s->mu);
    return EW_OK;
}

static ew_err on_raw(ew_delivery *d, const void *event, void *user)
{
    (void)d;
    seen *s = user;
    const ew_raw_event *r = event;
    pthread_mutex_lock(&s->mu);
    if (s->n < 8) {
        s->formats[s->n] = r->format;
        s->lens[s->n] = r->len;
        memcpy(s->bodies[s->n], r->data, r->len < 64 ? r->len : 64);
        s->n++;
    }
    pthread_mutex_unlock(&s->mu);
    return EW_OK;
}

static void raw_and_typed_listeners_read_each_other(void **state)
{
    (void)state;
    EV(typed, "cliraw", false);
    ew_event_desc raw = {.type = &ew_raw_type, .name = typed.name};
    ew_manager *m = mgr_new(URL, "s1");
    assert_int_equal(ew_listen(m, &(ew_listener_desc){.event = &typed, .name = "Typed"},
                               on_typed, &typed_seen), EW_OK);
    /* A second manager: one manager registers an event name with one type. */
    ew_manager *m2 = mgr_new(URL, "s2");
    assert_int_equal(ew_listen(m2, &(ew_listener_desc){.event = &raw, .name = "Raw"}, on_raw,
                               &raw_seen), EW_OK);
    assert_int_equal(ew_manager_start(m), EW_OK);
    assert_int_equal(ew_manager_start(m2), EW_OK);

    /* Raw JSON from m2 (its content type follows the body's format). */
    const char json[] = "{\"id\":7,\"text\":\"raw json\",\"extra\":[1]}";
    assert_int_equal(ew_send(m2, &raw, &(ew_raw_event){json, sizeof json - 1, EW_FORMAT_JSON}),
                     EW_OK);
    /* Raw msgpack from m2. */
    msgpack_sbuffer sb;
    msgpack_sbuffer_init(&sb);
    msgpack_packer pk;
    msgpack_packer_init(&pk, &sb, msgpack_sbuffer_write);
    msgpack_pack_map(&pk, 2);
    msgpack_pack_str_with_body(&pk, "id", 2);
    msgpack_pack_int64(&pk, 8);
    msgpack_pack_str_with_body(&pk, "text", 4);
    msgpack_pack_str_with_body(&pk, "raw mp", 6);
    assert_int_equal(ew_send(m2, &raw, &(ew_raw_event){sb.data, sb.size, EW_FORMAT_DEFAULT}),
                     EW_OK);
    /* A body that is no map is refused before it leaves. */
    assert_int_equal(ew_send(m2, &raw, &(ew_raw_event){"[]", 2, EW_FORMAT_JSON}), EW_EENCODE);
    /* Typed from m. */
    assert_int_equal(ew_send(m, &typed, &(conf_event){9, "typed"}), EW_OK);

    WAIT_FOR(count_of(&typed_seen) == 3 && count_of(&raw_seen) == 3, 20000,
             "typed %d, raw %d of 3", count_of(&typed_seen), count_of(&raw_seen));
    ew_manager_free(m2);
    ew_manager_free(m);
    int64_t sum = 0;
    for (int i = 0; i < 3; i++) {
        sum += typed_seen.ids[i];
        if (typed_seen.ids[i] == 7)
            assert_string_equal(typed_seen.text[i], "raw json");
        if (typed_seen.ids[i] == 8)
            assert_string_equal(typed_seen.text[i], "raw mp");
    }
    assert_int_equal(sum, 7 + 8 + 9);
    int json_n = 0, mp_n = 0;
    for (int i = 0; i < 3; i++) {
        if (raw_seen.formats[i] == EW_FORMAT_JSON) {
            json_n++;
            assert_int_equal(raw_seen.lens[i], sizeof json - 1);
            assert_memory_equal(raw_seen.bodies[i], json, sizeof json - 1);
        } else {
            assert_int_equal(raw_seen.formats[i], EW_FORMAT_MSGPACK);
            mp_n++;
        }
    }
    assert_int_equal(json_n, 1);
    assert_int_equal(mp_n, 2);
    msgpack_sbuffer_destroy(&sb);
}

/* ---- peeking at dead letters -------------------------------------------- */

static ew_err refuse(ew_delivery *d, const void *event, void *user)
{
    (void)d;
    (void)event;
    (void)user;
    return EW_ENORETRY;
}

typedef struct order {
    size_t n;
    int64_t ids[32];
} order;

static ew_err note_id(void *user, const ew_envelope *env)
{
    order *o = user;
    size_t len;
    const void *body = ew_envelope_body(env, &len);
    void *ev;
    if (ew_decode(&conf_event_type, EW_FORMAT_MSGPACK, body, len, NULL, &ev, NULL, 0) != EW_OK)
        return EW_EDECODE;
    if (o->n < 32)
        o->ids[o->n++] = ((conf_event *)ev)->id;
    ew_event_free(&conf_event_type, ev);
    return EW_OK;
}

static ew_err stop_at_third(void *user, const ew_envelope *env)
{
    order *o = user;
    if (o->n == 2)
        return EW_EREFUSED;
    return note_id(user, env);
}

static size_t peek_all(ew_manager *m, const ew_event_desc *ev, order *o)
{
    memset(o, 0, sizeof *o);
    size_t seen_n = 0;
    ew_err rc = ew_dead_letters_peek(m, &(ew_dead_letter_options){.event = ev,
                                                                 .listener = "Failing",
                                                                 .max = 32, .timeout_ms = 2000,
                                                                 .fn = note_id, .user = o},
                                     &seen_n);
    assert_int_equal(rc, EW_OK);
    assert_int_equal(seen_n, o->n);
    return seen_n;
}

/* Peeks until a look sees want dead letters (a look over AMQP 1.0 on
 * Artemis can end before the queue's end: its drain is answered early). */
static size_t peek_until(ew_manager *m, const ew_event_desc *ev, order *o, size_t want)
{
    int64_t deadline = ewi_now_ms() + 30000;
    while (peek_all(m, ev, o) != want && ewi_left_ms(deadline) > 0) {
    }
    return o->n;
}

static void peek_looks_and_leaves_every_dead_letter(void **state)
{
    (void)state;
    EV(ev, "clipeek", true);
    ew_manager *m = mgr_new(URL, "s1");
    assert_int_equal(ew_listen(m, &(ew_listener_desc){.event = &ev, .name = "Failing"}, refuse,
                               NULL), EW_OK);
    assert_int_equal(ew_manager_start(m), EW_OK);
    for (int64_t i = 0; i < 5; i++)
        assert_int_equal(ew_send(m, &ev, &(conf_event){i, "x"}), EW_OK);
    order o;
    /* Dead-lettered one by one (concurrency 1): wait until all five are. */
    assert_int_equal(peek_until(m, &ev, &o, 5), 5);
    /* More rounds than a broker's usual redelivery limit (ActiveMQ: 6). */
    for (int round = 0; round < 8; round++) {
        assert_int_equal(peek_until(m, &ev, &o, 5), 5);
        for (int64_t i = 0; i < 5; i++)
            assert_int_equal(o.ids[i], i); /* all there, in order */
    }
    /* A refusal ends the look with its code; nothing is taken either. */
    size_t n = 0;
    ew_err rc = EW_OK;
    int64_t deadline = ewi_now_ms() + 30000;
    do {
        memset(&o, 0, sizeof o);
        rc = ew_dead_letters_peek(m, &(ew_dead_letter_options){
                                         .event = &ev, .listener = "Failing", .max = 32,
                                         .timeout_ms = 2000, .fn = stop_at_third, .user = &o},
                                  &n);
    } while (rc == EW_OK && ewi_left_ms(deadline) > 0);
    assert_int_equal(rc, EW_EREFUSED);
    assert_int_equal(n, 2);
    assert_int_equal(peek_until(m, &ev, &o, 5), 5);
    /* Taking takes them, in the same order. */
    memset(&o, 0, sizeof o);
    size_t taken = 0, total = 0;
    deadline = ewi_now_ms() + 30000;
    while (total < 5 && ewi_left_ms(deadline) > 0 &&
           ew_dead_letters(m, &(ew_dead_letter_options){
                                  .event = &ev, .listener = "Failing", .max = 32,
                                  .timeout_ms = 2000, .fn = note_id, .user = &o},
                           &taken) == EW_OK)
        total += taken;
    assert_int_equal(total, 5);
    for (int64_t i = 0; i < 5; i++)
        assert_int_equal(o.ids[i], i);
    memset(&o, 0, sizeof o);
    n = 99;
    assert_int_equal(ew_dead_letters_peek(m, &(ew_dead_letter_options){
                                                 .event = &ev, .listener = "Failing",
                                                 .max = 32, .timeout_ms = 300,
                                                 .fn = note_id, .user = &o},
                                          &n),
                     EW_OK);
    assert_int_equal(n, 0);
    ew_manager_free(m);
}

int main(int argc, char **argv)
{
    if (argc != 2) {
        fprintf(stderr, "usage: %s URL\n", argv[0]);
        return 2;
    }
    URL = argv[1];
    support_init(URL);
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(raw_bodies_are_checked_and_kept_as_they_are),
        cmocka_unit_test(raw_and_typed_listeners_read_each_other),
        cmocka_unit_test(peek_looks_and_leaves_every_dead_letter),
    };
    return cmocka_run_group_tests_name(URL, tests, NULL, NULL);
}
