/* Outages that hit only this test's connections, through the tests' relay
 * in front of ActiveMQ's STOMP port:
 *   - the relay breaks: a send during the outage fails at its deadline with
 *     EW_ETIMEDOUT and the reason, and is never delivered later; once the
 *     relay is back the transport reconnects, the listener resumes, sends
 *     work again;
 *   - the relay freezes (the TCP connection stays open, nothing flows):
 *     missed heart-beats count as a dropped connection, and the transport
 *     reconnects once it is restored. */
#include "stomp_test.h"

static relay *path;
static int port;

static int setup(void **state)
{
    (void)state;
    path = relay_new(0, 61614, true);
    if (!path)
        return -1;
    port = relay_port(path);
    return 0;
}

static int teardown(void **state)
{
    (void)state;
    relay_free(path);
    path = NULL;
    return 0;
}

static ew_manager *open_mgr(capture *c, int hb_ms, int send_timeout_ms)
{
    char url[256];
    snprintf(url, sizeof url,
             "stomp://127.0.0.1:%d?dialect=activemq&heartbeat_ms=%d&reconnect_max_ms=300", port,
             hb_ms);
    ew_options o = {.on_error = capture_error, .error_user = c, .server_name = "o1",
                    .send_timeout_ms = send_timeout_ms, .start_timeout_ms = 10000};
    ew_manager *m = NULL;
    assert_int_equal(ew_manager_new(&m, url, &o), EW_OK);
    return m;
}

static void send_during_outage_fails_at_its_deadline(void **state)
{
    (void)state;
    EV(ev, "StompOutage", true);
    tally t;
    tally_init(&t, 10);
    capture c;
    capture_init(&c);
    ew_manager *m = open_mgr(&c, 10000, 2000);
    listen_tally(m, &ev, "L", false, 1, &t);
    assert_int_equal(ew_manager_start(m), EW_OK);
    send_range(m, &ev, 0, 3);
    assert_true(tally_wait_ids(&t, 0, 3, 30000));

    relay_break(path);
    int64_t t0 = ewi_now_ms();
    ew_err rc = ew_send(m, &ev, &(conf_event){.id = 3, .text = "lost"});
    int64_t took = ewi_now_ms() - t0;
    print_message("send during the outage: %s after %lld ms\n", ew_strerror(rc),
                  (long long)took);
    capture_print(&c);
    assert_int_equal(rc, EW_ETIMEDOUT);
    assert_true(took >= 1500 && took < 10000);
    assert_true(capture_has(&c, "lost"));

    relay_restore(path);
    /* Back: the listener resumes and sends work again. */
    int64_t deadline = ewi_now_ms() + 20000;
    int64_t next = 4;
    while (next < 10 && ewi_left_ms(deadline) > 0) {
        if (ew_send(m, &ev, &(conf_event){.id = next, .text = "after"}) == EW_OK)
            next++;
    }
    assert_int_equal(next, 10);
    assert_true(tally_wait_ids(&t, 4, 10, 30000));
    /* The failed send stays failed: had it been sent after all, it would
     * have come before the later ones (one connection, one worker). */
    if (tally_seen(&t, 3))
        fail_msg("the send that failed during the outage was delivered");
    ew_manager_free(m);
    tally_free(&t);
}

static void missed_heartbeats_drop_the_connection(void **state)
{
    (void)state;
    EV(ev, "StompFrozen", true);
    tally t;
    tally_init(&t, 4);
    capture c;
    capture_init(&c);
    ew_manager *m = open_mgr(&c, 500, 30000);
    listen_tally(m, &ev, "L", false, 1, &t);
    assert_int_equal(ew_manager_start(m), EW_OK);
    send_range(m, &ev, 0, 2);
    assert_true(tally_wait_ids(&t, 0, 2, 30000));
    relay_freeze(path);
    bool noticed = capture_wait_for(&c, "no heart-beat from the broker", 10000);
    relay_restore(path);
    capture_print(&c);
    assert_true(noticed);
    /* Reconnected through the restored relay: events flow again. */
    send_range(m, &ev, 2, 4);
    assert_true(tally_wait_all(&t, 30000));
    ew_manager_free(m);
    tally_free(&t);
}

int main(void)
{
    support_init("stomp-outage");
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(send_during_outage_fails_at_its_deadline, setup,
                                        teardown),
        cmocka_unit_test_setup_teardown(missed_heartbeats_drop_the_connection, setup,
                                        teardown),
    };
    return cmocka_run_group_tests_name("stomp_outage", tests, NULL, NULL);
}
