/* A RabbitMQ restart in the middle of a stream of 20,000 durable events
 * loses nothing. While a sender streams events and listeners on another
 * manager handle them, the broker is killed hard (SIGKILL of beam.smp) and
 * started again with the same state. Sends made during the outage wait for
 * the reconnect; unconfirmed ones are sent again; both managers reconnect,
 * declare again and resume. Every event is handled at least once; the
 * duplicates at-least-once allows are counted and printed.
 * usage: rabbitmq_restart BROKER_SCRIPT (scripts/brokers/rabbitmq.sh) */
#include "rmq_test.h"

enum { N = 20000 };

static const char *SCRIPT;

typedef struct restarter {
    tally *t;
    int rc;
    int64_t down_ms;
    size_t handled_before;
} restarter;

static void *restart_midway(void *arg)
{
    restarter *r = arg;
    /* Well under way on both sides, far from the end. */
    tally_wait_count(r->t, N / 4, 120000);
    pthread_mutex_lock(&r->t->mu);
    r->handled_before = r->t->finished;
    pthread_mutex_unlock(&r->t->mu);
    char cmd[1024];
    int64_t t0 = ewi_now_ms();
    snprintf(cmd, sizeof cmd, "%s kill && %s start", SCRIPT, SCRIPT);
    r->rc = system(cmd);
    r->down_ms = ewi_now_ms() - t0;
    return NULL;
}

static void hard_kill_mid_stream_loses_nothing(void **state)
{
    (void)state;
    EV(ev, "Restart", true);
    tally t;
    tally_init(&t, N);
    capture cs, cr;
    capture_init(&cs);
    capture_init(&cr);
    /* Sends may wait out the whole outage: a kill, then a cold start. */
    ew_options so = {.on_error = capture_error, .error_user = &cs, .send_timeout_ms = 90000,
                     .start_timeout_ms = 20000};
    ew_options ro = so;
    ro.error_user = &cr;
    ew_manager *sender = mgr_new_opts(rmq_test_url(), "sender", &so);
    ew_manager *recv = mgr_new_opts(rmq_test_url(), "receiver", &ro);
    listen_tally(recv, &ev, "Count", false, 4, &t);
    assert_int_equal(ew_manager_start(recv), EW_OK);
    assert_int_equal(ew_manager_start(sender), EW_OK);

    restarter r = {.t = &t};
    pthread_t th;
    assert_int_equal(pthread_create(&th, NULL, restart_midway, &r), 0);
    int64_t t0 = ewi_now_ms();
    support_async_failures = 0;
    for (int64_t i = 0; i < N; i++) {
        conf_event e = {.id = i, .text = "0123456789012345678901234567890123456789"
                                         "0123456789012345678901234567890123456789"};
        ew_err rc = ew_send_async(sender, &ev, NULL, &e, count_failure_, NULL);
        if (rc != EW_OK)
            fail_msg("ew_send_async(%lld): %s", (long long)i, ew_strerror(rc));
        if (i % 1000 == 999)
            ewi_sleep_ms(100); /* a stream, not one burst: the kill lands inside it */
    }
    assert_int_equal(ew_flush(sender, 180000), EW_OK);
    pthread_join(th, NULL);
    assert_int_equal(r.rc, 0);
    size_t failed = support_async_failures;
    bool all = tally_wait_all(&t, 180000);
    ewi_sleep_ms(500); /* late redeliveries still count as duplicates */
    size_t dups = tally_dups(&t), distinct = tally_total(&t) - dups;
    print_message("restart: kill at %zu handled; broker back in %lld ms; %d events in %lld ms; "
                  "%zu distinct handled, %zu duplicates, %zu sends failed\n",
                  r.handled_before, (long long)r.down_ms, N, (long long)(ewi_now_ms() - t0),
                  distinct, dups, failed);
    assert_int_equal(failed, 0);
    assert_true(all);
    assert_int_equal(distinct, N);
    /* The outage was reported on both sides, not hidden. */
    print_message("sender saw: %sreceiver saw: %s", cs.text, cr.text);
    assert_true(capture_count(&cs, EW_EDISCONNECTED) >= 1);
    assert_true(capture_count(&cr, EW_EDISCONNECTED) >= 1);
    assert_true(capture_has(&cr, "reconnecting"));
    ew_manager_free(sender);
    ew_manager_free(recv);
    tally_free(&t);
    char q[256];
    snprintf(q, sizeof q, "%s::Count", ev.name);
    raw_delete(q, false);
    snprintf(q, sizeof q, "%s::Count.dlq", ev.name);
    raw_delete(q, false);
    raw_delete(ev.name, true);
}

int main(int argc, char **argv)
{
    if (argc != 2) {
        fprintf(stderr, "usage: %s BROKER_SCRIPT\n", argv[0]);
        return 2;
    }
    SCRIPT = argv[1];
    support_init(rmq_test_url());
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(hard_kill_mid_stream_loses_nothing),
    };
    return cmocka_run_group_tests_name("rabbitmq restart", tests, NULL, NULL);
}
