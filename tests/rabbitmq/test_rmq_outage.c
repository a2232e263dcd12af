/* Connection outages without touching the shared broker: the manager talks
 * to RabbitMQ through the tests' relay (tests/support/relay.h), which the
 * test breaks and restores. Sends during an outage wait for the reconnect,
 * or fail with EW_ETIMEDOUT and a clear text once their deadline passed;
 * the listener resumes after the reconnect. */
#include "rmq_test.h"

static relay *path;

static void relay_url(char *buf, size_t len)
{
    /* heartbeat=1: an outage is noticed within seconds even without traffic. */
    snprintf(buf, len, "rabbitmq://guest:guest@127.0.0.1:%d/?heartbeat=1", relay_port(path));
}

static int relay_up(void **state)
{
    (void)state;
    path = relay_new(0, 5672, true);
    return path ? 0 : -1;
}

static int relay_gone(void **state)
{
    (void)state;
    relay_free(path);
    path = NULL;
    return 0;
}

static void send_during_outage_times_out_then_recovers(void **state)
{
    (void)state;
    EV(ev, "Outage", true);
    tally t;
    tally_init(&t, 3);
    capture cap;
    capture_init(&cap);
    char url[256];
    relay_url(url, sizeof url);
    ew_options o = {.on_error = capture_error, .error_user = &cap, .send_timeout_ms = 1500,
                    .log_level = EW_LOG_ERROR};
    ew_manager *m = mgr_new_opts(url, "s1", &o);
    listen_tally(m, &ev, "L", false, 1, &t);
    assert_int_equal(ew_manager_start(m), EW_OK);
    assert_int_equal(ew_send(m, &ev, &(conf_event){.id = 0, .text = "before"}), EW_OK);
    assert_true(tally_wait_ids(&t, 0, 1, 10000));

    relay_break(path);
    assert_true(capture_wait_for(&cap, "lost", 10000));
    int64_t t0 = ewi_now_ms();
    assert_int_equal(ew_send(m, &ev, &(conf_event){.id = 1, .text = "during"}), EW_ETIMEDOUT);
    int64_t waited = ewi_now_ms() - t0;
    print_message("send during the outage failed after %lld ms; reports:\n%s",
                  (long long)waited, cap.text);
    assert_true(waited >= 1300 && waited < 5000);

    relay_restore(path);
    /* After the reconnect the same manager sends and its listener receives. */
    ew_err rc = EW_ETIMEDOUT;
    for (int i = 0; i < 20 && rc != EW_OK; i++)
        rc = ew_send(m, &ev, &(conf_event){.id = 2, .text = "after"});
    assert_int_equal(rc, EW_OK);
    assert_true(tally_wait_ids(&t, 2, 3, 15000));
    assert_true(capture_count(&cap, EW_EDISCONNECTED) >= 1);
    ew_manager_free(m);
    tally_free(&t);
    rmq_cleanup(0, ev.name, (const char *const[]){"L", NULL});
}

static _Atomic int log_has_down;
static void watch_log(void *user, ew_log_level level, const char *msg)
{
    (void)user;
    (void)level;
    if (strstr(msg, "is down since"))
        log_has_down = 1;
}

static void timed_out_send_says_why(void **state)
{
    (void)state;
    EV(ev, "OutageText", true);
    char url[256];
    relay_url(url, sizeof url);
    ew_options o = {.send_timeout_ms = 800, .log = watch_log, .log_level = EW_LOG_ERROR};
    ew_manager *m = mgr_new_opts(url, "s1", &o);
    assert_int_equal(ew_manager_start(m), EW_OK);
    assert_int_equal(ew_send(m, &ev, &(conf_event){.id = 0, .text = "x"}), EW_OK);
    relay_break(path);
    /* Until the transport noticed the cut, sends may still succeed. */
    ew_err rc;
    do {
        log_has_down = 0;
        rc = ew_send(m, &ev, &(conf_event){.id = 1, .text = "x"});
    } while (rc == EW_OK);
    assert_int_equal(rc, EW_ETIMEDOUT);
    if (!log_has_down)
        fail_msg("the timed-out send did not log that the connection is down");
    ew_manager_free(m);
    raw_delete(ev.name, true);
}

static void sends_queued_during_a_short_outage_all_arrive(void **state)
{
    (void)state;
    EV(ev, "Blip", true);
    enum { N = 200 };
    tally t;
    tally_init(&t, N);
    char url[256];
    relay_url(url, sizeof url);
    capture cap;
    capture_init(&cap);
    ew_options o = {.send_timeout_ms = 30000, .log_level = EW_LOG_ERROR,
                    .on_error = capture_error, .error_user = &cap};
    ew_manager *m = mgr_new_opts(url, "s1", &o);
    listen_tally(m, &ev, "L", false, 2, &t);
    assert_int_equal(ew_manager_start(m), EW_OK);
    send_range(m, &ev, 0, N / 2);
    relay_break(path);
    support_async_failures = 0;
    for (int64_t i = N / 2; i < N; i++)
        assert_int_equal(ew_send_async(m, &ev, NULL, &(conf_event){.id = i, .text = "x"},
                                       count_failure_, NULL),
                         EW_OK);
    /* The outage lasts until the transport has seen it. */
    assert_true(capture_wait_for(&cap, "lost", 10000));
    relay_restore(path);
    assert_int_equal(ew_flush(m, 30000), EW_OK);
    assert_int_equal(support_async_failures, 0);
    assert_true(tally_wait_all(&t, 30000));
    print_message("short outage: %zu duplicates\n", tally_dups(&t));
    ew_manager_free(m);
    tally_free(&t);
    rmq_cleanup(0, ev.name, (const char *const[]){"L", NULL});
}

int main(void)
{
    support_init(rmq_test_url());
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(send_during_outage_times_out_then_recovers, relay_up,
                                        relay_gone),
        cmocka_unit_test_setup_teardown(timed_out_send_says_why, relay_up, relay_gone),
        cmocka_unit_test_setup_teardown(sends_queued_during_a_short_outage_all_arrive,
                                        relay_up, relay_gone),
    };
    return cmocka_run_group_tests_name("rabbitmq outages", tests, NULL, NULL);
}
