/* Reading dead letters in small batches, over and over, while the queue
 * holds many: every dead letter is taken exactly once, no call fails, and the
 * consuming connection is never dropped. On RabbitMQ an UNSUBSCRIBE while
 * messages are on their way to the reader made the broker send "ERROR
 * Subscription not found", which closed the connection of every listener;
 * the rabbitmq dialect now keeps the reader subscribed until stop.
 * usage: test_stomp_dlq rabbitmq|activemq */
#include "stomp_test.h"

static const char *DIALECT;
#define N_DEAD 300

typedef struct seen {
    pthread_mutex_t mu;
    int n;
    int dups;
    unsigned char got[N_DEAD];
} seen;

static ew_err take(void *user, const ew_envelope *env)
{
    seen *s = user;
    size_t len = 0;
    const void *body = ew_envelope_body(env, &len);
    char text[32] = "";
    if (body && len < sizeof text)
        memcpy(text, body, len);
    int k = -1;
    sscanf(text, "dead %d", &k);
    pthread_mutex_lock(&s->mu);
    s->n++;
    if (k >= 0 && k < N_DEAD) {
        if (s->got[k])
            s->dups++;
        s->got[k] = 1;
    }
    pthread_mutex_unlock(&s->mu);
    return EW_OK;
}

static void small_batches_take_every_dead_letter_once(void **state)
{
    (void)state;
    EV(ev, "StompDlqRead", true);
    tally t;
    tally_init(&t, 10);
    capture c;
    capture_init(&c);
    ew_options o = {.server_name = "d1", .start_timeout_ms = 20000,
                    .on_error = capture_error, .error_user = &c};
    ew_manager *m = NULL;
    assert_int_equal(ew_manager_new(&m, stomp_test_url(DIALECT), &o), EW_OK);
    listen_tally(m, &ev, "Reader", false, 1, &t);
    assert_int_equal(ew_manager_start(m), EW_OK); /* makes no E::Reader.dlq */

    /* N_DEAD messages straight into the dead-letter queue. */
    raw_stomp r;
    raw_connect(&r, stomp_test_url(DIALECT));
    char frame[512];
    for (int k = 0; k < N_DEAD; k++) {
        int n = snprintf(frame, sizeof frame,
                         "SEND\ndestination:/queue/%s\\c\\cReader.dlq\npersistent:true\n"
                         "content-type:text/plain\n%s\ndead %d",
                         ev.name, k == N_DEAD - 1 ? "receipt:last\n" : "", k);
        raw_send(&r, frame, (size_t)n + 1);
    }
    raw_wait_receipt(&r, "last");
    raw_close(&r);

    seen s = {.n = 0};
    pthread_mutex_init(&s.mu, NULL);
    int64_t deadline = ewi_now_ms() + 60000;
    int calls = 0;
    while (s.n < N_DEAD && ewi_left_ms(deadline) > 0) {
        size_t got = 0;
        size_t max = 1 + (size_t)(calls++ % 3);
        ew_dead_letter_options dl = {.event = &ev, .listener = "Reader", .max = max,
                                     .timeout_ms = 2000, .fn = take, .user = &s};
        assert_int_equal(ew_dead_letters(m, &dl, &got), EW_OK);
        assert_true(got <= max);
    }
    print_message("%d dead letters in %d calls, %d duplicates\n", s.n, calls, s.dups);
    capture_print(&c);
    assert_int_equal(s.n, N_DEAD);
    assert_int_equal(s.dups, 0);
    size_t more = 9;
    ew_dead_letter_options dl = {.event = &ev, .listener = "Reader", .max = 10,
                                 .timeout_ms = 500, .fn = take, .user = &s};
    assert_int_equal(ew_dead_letters(m, &dl, &more), EW_OK);
    assert_int_equal(more, 0);
    /* The consuming connection stayed up: its listener still works. */
    send_range(m, &ev, 0, 10);
    assert_true(tally_wait_all(&t, 30000));
    assert_int_equal(tally_dups(&t), 0);
    assert_false(capture_has(&c, "Subscription not found"));
    assert_false(capture_has(&c, "lost"));
    ew_manager_free(m);
    stomp_test_cleanup(stomp_test_url(DIALECT), ev.name, (const char *const[]){"Reader"}, 1);
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
        cmocka_unit_test(small_batches_take_every_dead_letter_once),
    };
    return cmocka_run_group_tests_name(DIALECT, tests, NULL, NULL);
}
