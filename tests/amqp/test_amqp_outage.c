/* An outage of this service's connection only: the test talks to RabbitMQ
 * through the tests' relay and breaks it, which cuts the connection while
 * the broker and everyone else's tests go on.
 *   - a send during the outage waits for the send timeout, then fails with
 *     EW_ETIMEDOUT and says why (no connection, the last error); it is
 *     never delivered later;
 *   - once the relay is back, the transport reconnects by itself, the
 *     listener consumes again and sends go through. */
#include "amqp_test.h"

static void send_during_outage_fails_clearly_then_service_resumes(void **state)
{
    (void)state;
    EV(ev, "Outage", true);
    relay *path = relay_new(0, 5672, true);
    assert_non_null(path);
    int port = relay_port(path);

    ewi_url u;
    char err[128], url[512];
    assert_int_equal(ewi_url_parse(amqp_test_url(), &u, err, sizeof err), EW_OK);
    snprintf(url, sizeof url, "amqp://%s:%s@127.0.0.1:%d?dialect=rabbitmq&reconnect_max_ms=300",
             u.user ? u.user : "guest", u.password ? u.password : "guest", port);
    ewi_url_free(&u);
    capture c;
    capture_init(&c);
    tally t;
    tally_init(&t, 10);
    ew_options o = {.on_error = capture_error, .error_user = &c, .log = capture_log,
                    .log_user = &c, .send_timeout_ms = 1500};
    ew_manager *m = mgr_new_opts(url, "o1", &o);
    listen_tally(m, &ev, "L", false, 1, &t);
    assert_int_equal(ew_manager_start(m), EW_OK);
    send_range(m, &ev, 0, 1);
    assert_true(tally_wait_ids(&t, 0, 1, 10000));

    relay_break(path);
    assert_true(capture_wait_for(&c, "connection lost", 10000));
    int64_t t0 = ewi_now_ms();
    ew_err rc = ew_send(m, &ev, &(conf_event){.id = 5, .text = "in the outage"});
    int64_t waited = ewi_now_ms() - t0;
    print_message("outage send: %s after %lld ms\n", ew_strerror(rc), (long long)waited);
    assert_int_equal(rc, EW_ETIMEDOUT);
    assert_true(waited >= 1000 && waited < 5000);
    assert_true(capture_has(&c, "no connection to"));
    assert_true(capture_has(&c, "still reconnecting"));

    relay_restore(path);
    assert_true(capture_wait_for(&c, "reconnected", 15000));
    /* The listener consumes again: a send goes through end to end, and it
     * is the sentinel for the failed send: had that one been delivered
     * behind the caller's back, it would have come first. */
    send_range(m, &ev, 1, 2);
    assert_true(tally_wait_ids(&t, 1, 2, 15000));
    if (tally_seen(&t, 5))
        fail_msg("the send that failed during the outage was delivered");
    ew_manager_free(m);
    tally_free(&t);
    relay_free(path);
    rmq_cleanup(0, ev.name, (const char *const[]){"L", NULL});
}

int main(void)
{
    support_init(amqp_test_url());
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(send_during_outage_fails_clearly_then_service_resumes),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
