/* A broker restart in the middle of a stream of 10,000 durable events loses
 * nothing: RabbitMQ is killed hard (kill -9 of the node) while events are
 * being sent and consumed, then started again with the same state. Sends
 * made during the outage wait and go out after the reconnect; unconfirmed
 * ones are sent again; the listener resumes. Every event arrives; the
 * duplicates that at-least-once allows are counted and printed.
 * usage: test_amqp_restart BROKER_SCRIPT (scripts/brokers/rabbitmq.sh) */
#include "amqp_test.h"

enum { N = 10000 };

static const char *SCRIPT;

typedef struct restarter {
    tally *t;
    int rc;
    int64_t down_ms;
} restarter;

static void *restart_midway(void *arg)
{
    restarter *r = arg;
    /* Wait until the stream is well under way on both sides. */
    tally_wait_count(r->t, N / 5, 60000);
    char cmd[1024];
    int64_t t0 = ewi_now_ms();
    snprintf(cmd, sizeof cmd, "%s kill >/dev/null 2>&1 && %s start >/dev/null 2>&1",
             SCRIPT, SCRIPT);
    r->rc = system(cmd);
    r->down_ms = ewi_now_ms() - t0;
    return NULL;
}

static void restart_mid_stream_loses_nothing(void **state)
{
    (void)state;
    EV(ev, "Restart", true);
    tally t;
    tally_init(&t, N);
    capture c;
    capture_init(&c);
    /* Sends may wait out the whole outage: kill, then a cold start. */
    ew_options o = {.on_error = capture_error, .error_user = &c,
                    .send_timeout_ms = 90000, .start_timeout_ms = 20000};
    ew_manager *m = mgr_new_opts(amqp_test_url(), "r1", &o);
    listen_tally(m, &ev, "Count", false, 4, &t);
    assert_int_equal(ew_manager_start(m), EW_OK);

    restarter r = {.t = &t};
    pthread_t th;
    assert_int_equal(pthread_create(&th, NULL, restart_midway, &r), 0);
    int64_t t0 = ewi_now_ms();
    for (int64_t i = 0; i < N; i++) {
        conf_event e = {.id = i, .text = "0123456789012345678901234567890123456789"
                                         "0123456789012345678901234567890123456789"};
        ew_err rc = ew_send_async(m, &ev, NULL, &e, count_failure_, NULL);
        if (rc != EW_OK)
            fail_msg("ew_send_async(%lld): %s", (long long)i, ew_strerror(rc));
        if (i % 500 == 0)
            ewi_sleep_ms(20); /* spread the stream so the kill lands inside it */
    }
    assert_int_equal(ew_flush(m, 180000), EW_OK);
    pthread_join(th, NULL);
    assert_int_equal(r.rc, 0);
    size_t failed = support_async_failures;
    bool all = tally_wait_all(&t, 180000);
    size_t dups = tally_dups(&t), distinct = tally_total(&t) - dups;
    print_message("restart: broker down+up in %lld ms; %d events in %lld ms; "
                  "%zu distinct received, %zu duplicates, %zu sends failed\n",
                  (long long)r.down_ms, N, (long long)(ewi_now_ms() - t0), distinct, dups,
                  failed);
    assert_int_equal(failed, 0);
    assert_true(all);
    assert_int_equal(distinct, N);
    /* The outage was seen and reported, not hidden. */
    assert_true(capture_has(&c, "connection lost"));
    ew_manager_free(m);
    tally_free(&t);
    char q[160];
    snprintf(q, sizeof q, "%s::Count", ev.name);
    rmq_delete("queue", q);
    rmq_delete("queue", strcat(q, ".dlq"));
    rmq_delete("exchange", ev.name);
}

int main(int argc, char **argv)
{
    if (argc != 2) {
        fprintf(stderr, "usage: %s scripts/brokers/rabbitmq.sh\n", argv[0]);
        return 2;
    }
    SCRIPT = argv[1];
    support_init(amqp_test_url());
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(restart_mid_stream_loses_nothing),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
