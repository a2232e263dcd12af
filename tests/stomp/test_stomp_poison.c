/* A raw STOMP client (not eventwire) puts malformed messages on a
 * listener's destination: a body that is a STOMP frame itself with NUL bytes
 * in it, invalid JSON, an unknown content type, and no body at all. Each one
 * ends in the listener's dead-letter queue with its reason, nothing is lost,
 * and the service keeps handling good events around them. A body far over
 * max_body (over the parser's limit too) is dead-lettered as too-big instead
 * of failing the connection for ever; a MESSAGE with more headers than can
 * be parsed is reported with the listener's queue each time (rabbitmq).
 * usage: test_stomp_poison rabbitmq|activemq */
#include "stomp_test.h"

static const char *DIALECT;

typedef struct dl {
    pthread_mutex_t mu;
    int n;
    char reason[8][64];
    char ct[8][64];
} dl;

static ew_err collect(void *user, const ew_envelope *env)
{
    dl *d = user;
    pthread_mutex_lock(&d->mu);
    if (d->n < 8) {
        const char *r = ew_envelope_header(env, EW_HDR_DLQ_REASON);
        const char *ct = ew_envelope_content_type(env);
        snprintf(d->reason[d->n], sizeof d->reason[0], "%s", r ? r : "(none)");
        snprintf(d->ct[d->n], sizeof d->ct[0], "%s", ct ? ct : "(none)");
    }
    d->n++;
    pthread_mutex_unlock(&d->mu);
    return EW_OK;
}

/* SEND frames as a foreign producer would write them. */
static size_t poison_frame(char *buf, size_t len, const char *dest, int kind)
{
    static const char fake[] = "MESSAGE\ndestination:/queue/x\nack:1\n\n\0\0garbage\0";
    switch (kind) {
    case 0: { /* a frame inside the body, NULs included, claimed to be msgpack */
        int n = snprintf(buf, len, "SEND\ndestination:%s\ncontent-type:application/msgpack\n"
                         "receipt:k0\npersistent:true\ncontent-length:%zu\n\n",
                         dest, sizeof fake - 1);
        memcpy(buf + n, fake, sizeof fake - 1);
        buf[n + sizeof fake - 1] = 0;
        return (size_t)n + sizeof fake;
    }
    case 1: /* broken JSON */
        return (size_t)snprintf(buf, len, "SEND\ndestination:%s\ncontent-type:application/json\n"
                                "receipt:k1\npersistent:true\n\n{\"id\": 1, \"text\": ",
                                dest) + 1;
    case 2: /* a content type nobody decodes */
        return (size_t)snprintf(buf, len, "SEND\ndestination:%s\ncontent-type:text/x-nonsense\n"
                                "receipt:k2\npersistent:true\n\nhello", dest) + 1;
    default: /* no body, no content type, a stray header */
        return (size_t)snprintf(buf, len, "SEND\ndestination:%s\nreceipt:k3\n"
                                "persistent:true\nx-weird:\\c\\n\n\n", dest) + 1;
    }
}

static void malformed_bodies_end_in_dead_letters(void **state)
{
    (void)state;
    EV(ev, "StompPoison", true);
    tally t;
    tally_init(&t, 10);
    ew_manager *m = mgr_new(stomp_test_url(DIALECT), "p1");
    listen_tally(m, &ev, "Victim", false, 1, &t);
    assert_int_equal(ew_manager_start(m), EW_OK);
    send_range(m, &ev, 0, 5);

    char dest[256];
    if (strcmp(DIALECT, "rabbitmq") == 0)
        snprintf(dest, sizeof dest, "/exchange/%s/%s", ev.name, ev.name);
    else
        snprintf(dest, sizeof dest, "/topic/VirtualTopic.%s", ev.name);
    raw_stomp r;
    raw_connect(&r, stomp_test_url(DIALECT));
    char frame[1024];
    for (int k = 0; k < 4; k++) {
        size_t n = poison_frame(frame, sizeof frame, dest, k);
        raw_send(&r, frame, n);
        char id[8];
        snprintf(id, sizeof id, "k%d", k);
        raw_wait_receipt(&r, id);
    }
    raw_close(&r);

    /* The service goes on. */
    send_range(m, &ev, 5, 10);
    assert_true(tally_wait_all(&t, 30000));
    assert_int_equal(tally_dups(&t), 0);

    dl d = {.n = 0};
    pthread_mutex_init(&d.mu, NULL);
    int64_t deadline = ewi_now_ms() + 30000;
    while (d.n < 4 && ewi_left_ms(deadline) > 0) {
        size_t got = 0;
        ew_dead_letter_options rd = {.event = &ev, .listener = "Victim", .max = 10,
                                     .timeout_ms = 2000, .fn = collect, .user = &d};
        assert_int_equal(ew_dead_letters(m, &rd, &got), EW_OK);
    }
    for (int i = 0; i < d.n && i < 8; i++)
        print_message("dead letter %d: reason %s, content type %s\n", i, d.reason[i], d.ct[i]);
    assert_int_equal(d.n, 4);
    for (int i = 0; i < 4; i++)
        assert_string_equal(d.reason[i], "decode-failed");
    /* Dead letters keep what the producer said (one listener thread: in order). */
    assert_string_equal(d.ct[0], "application/msgpack");
    assert_string_equal(d.ct[1], "application/json");
    assert_string_equal(d.ct[2], "text/x-nonsense");
    /* Nothing more: no redelivery loop. */
    size_t more = 9;
    ew_dead_letter_options rd = {.event = &ev, .listener = "Victim", .max = 10,
                                 .timeout_ms = 500, .fn = collect, .user = &d};
    assert_int_equal(ew_dead_letters(m, &rd, &more), EW_OK);
    assert_int_equal(more, 0);
    ew_manager_free(m);
    stomp_test_cleanup(stomp_test_url(DIALECT), ev.name, (const char *const[]){"Victim"}, 1);
    tally_free(&t);
}

static int64_t count_reports(capture *c, const char *needle)
{
    pthread_mutex_lock(&c->mu);
    int64_t n = 0;
    for (const char *p = c->text; (p = strstr(p, needle)); p++)
        n++;
    pthread_mutex_unlock(&c->mu);
    return n;
}

static void oversized_body_is_dead_lettered_not_looped(void **state)
{
    (void)state;
    EV(ev, "StompHuge", true);
    tally t;
    tally_init(&t, 10);
    capture c;
    capture_init(&c);
    /* max_body 1000: the parser keeps up to 4000 bytes; 50000 are sent */
    ew_options o = {.server_name = "h1", .start_timeout_ms = 20000, .max_body = 1000,
                    .on_error = capture_error, .error_user = &c};
    ew_manager *m = NULL;
    assert_int_equal(ew_manager_new(&m, stomp_test_url(DIALECT), &o), EW_OK);
    listen_tally(m, &ev, "Big", false, 1, &t);
    assert_int_equal(ew_manager_start(m), EW_OK);
    send_range(m, &ev, 0, 5);

    char dest[256];
    if (strcmp(DIALECT, "rabbitmq") == 0)
        snprintf(dest, sizeof dest, "/exchange/%s/%s", ev.name, ev.name);
    else
        snprintf(dest, sizeof dest, "/topic/VirtualTopic.%s", ev.name);
    static char frame[60000];
    int n = snprintf(frame, sizeof frame, "SEND\ndestination:%s\ncontent-type:application/json\n"
                     "receipt:big\npersistent:true\ncontent-length:50000\n\n", dest);
    memset(frame + n, 'x', 50000);
    frame[n + 50000] = 0;
    raw_stomp r;
    raw_connect(&r, stomp_test_url(DIALECT));
    raw_send(&r, frame, (size_t)n + 50001);
    raw_wait_receipt(&r, "big");
    raw_close(&r);

    send_range(m, &ev, 5, 10);
    assert_true(tally_wait_all(&t, 30000));
    dl d = {.n = 0};
    pthread_mutex_init(&d.mu, NULL);
    int64_t deadline = ewi_now_ms() + 30000;
    while (d.n < 1 && ewi_left_ms(deadline) > 0) {
        size_t got = 0;
        ew_dead_letter_options rd = {.event = &ev, .listener = "Big", .max = 10,
                                     .timeout_ms = 2000, .fn = collect, .user = &d};
        assert_int_equal(ew_dead_letters(m, &rd, &got), EW_OK);
    }
    capture_print(&c);
    assert_int_equal(d.n, 1);
    assert_string_equal(d.reason[0], "too-big");
    assert_true(capture_has(&c, "has a body of 50000 bytes"));
    /* The connection never failed on it. */
    assert_false(capture_has(&c, "protocol error"));
    assert_false(capture_has(&c, "connection to"));
    ew_manager_free(m);
    stomp_test_cleanup(stomp_test_url(DIALECT), ev.name, (const char *const[]){"Big"}, 1);
    tally_free(&t);
}

/* Too many headers cannot be parsed safely: the connection drops, the broker
 * redelivers; each time the report names the listener's queue. */
static void unparsable_message_is_reported_with_its_queue(void **state)
{
    (void)state;
    if (strcmp(DIALECT, "rabbitmq") != 0)
        return; /* ActiveMQ's queue could not be cleaned up over STOMP */
    EV(ev, "StompHdrs", true);
    tally t;
    tally_init(&t, 1);
    capture c;
    capture_init(&c);
    ew_options o = {.server_name = "h2", .start_timeout_ms = 20000, .max_headers = 4,
                    .on_error = capture_error, .error_user = &c};
    ew_manager *m = NULL;
    char url[300];
    snprintf(url, sizeof url, "%s&reconnect_max_ms=200", stomp_test_url(DIALECT));
    assert_int_equal(ew_manager_new(&m, url, &o), EW_OK);
    listen_tally(m, &ev, "Many", false, 1, &t);
    assert_int_equal(ew_manager_start(m), EW_OK);
    char dest[256];
    snprintf(dest, sizeof dest, "/exchange/%s/%s", ev.name, ev.name);
    static char frame[8000];
    int n = snprintf(frame, sizeof frame, "SEND\ndestination:%s\nreceipt:many\n", dest);
    for (int i = 0; i < 100; i++) /* the parser takes 4 + 64 */
        n += snprintf(frame + n, sizeof frame - (size_t)n, "h%d:v\n", i);
    n += snprintf(frame + n, sizeof frame - (size_t)n, "\nbody");
    raw_stomp r;
    raw_connect(&r, stomp_test_url(DIALECT));
    raw_send(&r, frame, (size_t)n + 1);
    raw_wait_receipt(&r, "many");
    raw_close(&r);
    char named[EW_MAX_QUEUE_NAME + 32];
    snprintf(named, sizeof named, "{queue %s::Many} a message from", ev.name);
    int64_t deadline = ewi_now_ms() + 20000;
    while (count_reports(&c, named) < 2 && ewi_left_ms(deadline) > 0)
        usleep(50000);
    capture_print(&c);
    assert_true(count_reports(&c, named) >= 2); /* each time, not once */
    assert_true(capture_has(&c, "more than 68 headers"));
    ew_manager_free(m);
    stomp_test_cleanup(url, ev.name, (const char *const[]){"Many"}, 1);
    tally_free(&t);
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
        cmocka_unit_test(malformed_bodies_end_in_dead_letters),
        cmocka_unit_test(oversized_body_is_dead_lettered_not_looped),
        cmocka_unit_test(unparsable_message_is_reported_with_its_queue),
    };
    return cmocka_run_group_tests_name(DIALECT, tests, NULL, NULL);
}
