/* A broker restart in the middle of a stream of 10,000 durable events loses
 * nothing: the broker is killed hard while events are being sent and
 * consumed, then started again with the same state. Sends made during the
 * outage wait and go out after the reconnect; SENDs whose RECEIPT was lost
 * are sent again; the listener re-subscribes. Every event arrives; the
 * duplicates that at-least-once allows are counted and printed.
 * usage: test_stomp_restart rabbitmq|activemq BROKER_SCRIPT */
#include "stomp_test.h"

enum { N = 10000 };

static const char *DIALECT, *SCRIPT;

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
    snprintf(cmd, sizeof cmd, "%s kill >/dev/null 2>&1 && %s start >/dev/null 2>&1", SCRIPT,
             SCRIPT);
    r->rc = system(cmd);
    r->down_ms = ewi_now_ms() - t0;
    return NULL;
}

static void restart_mid_stream_loses_nothing(void **state)
{
    (void)state;
    EV(ev, "StompRestart", true);
    tally t;
    tally_init(&t, N);
    capture c;
    capture_init(&c);
    /* Sends may wait out the whole outage: kill, then a cold start. Short
     * heart-beats find a half-dead connection quickly. */
    char url[512];
    const char *base = stomp_test_url(DIALECT);
    snprintf(url, sizeof url, "%s%sheartbeat_ms=2000&reconnect_max_ms=1000", base,
             strchr(base, '?') ? "&" : "?");
    ew_options o = {.on_error = capture_error, .error_user = &c, .send_timeout_ms = 120000,
                    .start_timeout_ms = 20000, .server_name = "r1"};
    ew_manager *m = NULL;
    assert_int_equal(ew_manager_new(&m, url, &o), EW_OK);
    listen_tally(m, &ev, "Count", false, 4, &t);
    assert_int_equal(ew_manager_start(m), EW_OK);

    restarter r = {.t = &t};
    pthread_t th;
    assert_int_equal(pthread_create(&th, NULL, restart_midway, &r), 0);
    int64_t t0 = ewi_now_ms();
    support_async_failures = 0;
    for (int64_t i = 0; i < N; i++) {
        conf_event e = {.id = i, .text = "0123456789012345678901234567890123456789"
                                         "0123456789012345678901234567890123456789"};
        ew_err rc = ew_send_async(m, &ev, NULL, &e, count_failure_, NULL);
        if (rc != EW_OK)
            fail_msg("ew_send_async(%lld): %s", (long long)i, ew_strerror(rc));
        if (i % 500 == 0)
            ewi_sleep_ms(20); /* spread the stream so the kill lands inside it */
    }
    assert_int_equal(ew_flush(m, 240000), EW_OK);
    pthread_join(th, NULL);
    assert_int_equal(r.rc, 0);
    size_t failed = support_async_failures;
    bool all = tally_wait_all(&t, 180000);
    size_t dups = tally_dups(&t), distinct = tally_total(&t) - dups;
    print_message("restart (%s): broker down+up in %lld ms; %d events in %lld ms; "
                  "%zu distinct received, %zu duplicates, %zu sends failed\n",
                  DIALECT, (long long)r.down_ms, N, (long long)(ewi_now_ms() - t0), distinct,
                  dups, failed);
    assert_int_equal(failed, 0);
    assert_true(all);
    assert_int_equal(distinct, N);
    /* The outage was seen and reported, not hidden. */
    assert_true(capture_has(&c, "lost"));
    ew_manager_free(m);
    stomp_test_cleanup(stomp_test_url(DIALECT), ev.name, (const char *const[]){"Count"}, 1);
    tally_free(&t);
}

int main(int argc, char **argv)
{
    if (argc != 3 || (strcmp(argv[1], "rabbitmq") && strcmp(argv[1], "activemq"))) {
        fprintf(stderr, "usage: %s rabbitmq|activemq scripts/brokers/<broker>.sh\n", argv[0]);
        return 2;
    }
    DIALECT = argv[1];
    SCRIPT = argv[2];
    support_init(stomp_test_url(DIALECT));
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(restart_mid_stream_loses_nothing),
    };
    return cmocka_run_group_tests_name(DIALECT, tests, NULL, NULL);
}
