/* A raw STOMP client (not eventwire) puts malformed messages on a
 * listener's destination: a body that is a STOMP frame itself with NUL bytes
 * in it, invalid JSON, an unknown content type, and no body at all. Each one
 * ends in the listener's dead-letter queue with its reason, nothing is lost,
 * and the service keeps handling good events around them.
 * usage: test_stomp_poison rabbitmq|activemq */
#include "stomp_test.h"

static const char *DIALECT;

typedef struct dl {
    pthread_mutex_t mu;
    int n;
    char reason[8][64];
    char ct[8][64];
} dl;

static void collect(void *user, const ew_envelope *env)
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
        assert_int_equal(ew_dead_letters(m, &ev, "Victim", 10, 2000, collect, &d, &got), EW_OK);
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
    assert_int_equal(ew_dead_letters(m, &ev, "Victim", 10, 500, collect, &d, &more), EW_OK);
    assert_int_equal(more, 0);
    ew_manager_free(m);
    stomp_test_cleanup(stomp_test_url(DIALECT), ev.name, (const char *const[]){"Victim"}, 1);
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
    };
    return cmocka_run_group_tests_name(DIALECT, tests, NULL, NULL);
}
