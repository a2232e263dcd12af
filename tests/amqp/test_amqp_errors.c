/* Broker-side errors reach the application with the broker's own text:
 *   - bad credentials: start fails with EW_EAUTH, the error handler gets
 *     AMQP 1.0's SASL condition; no credentials: SASL ANONYMOUS works;
 *   - a listener queue that contradicts an existing one (another x-expires):
 *     start fails with EW_ECONFLICT and RabbitMQ's PRECONDITION_FAILED text,
 *     as on every RabbitMQ-backed transport;
 *   - a missing exchange (deleted under a running service): the send fails
 *     with EW_EBROKER and RabbitMQ's amqp:not-found text;
 *   - a consumed queue deleted under a listener (RabbitMQ 3.10 resets the
 *     connection instead of detaching the consumer): reported, declared and
 *     consumed again after the reconnect; what is sent next arrives. */
#include "amqp_test.h"

static ew_manager *captured_manager(const char *url, const char *server, capture *c,
                                    int start_timeout_ms)
{
    ew_options o = {.on_error = capture_error, .error_user = c, .log = capture_log,
                    .log_user = c, .log_level = EW_LOG_DEBUG,
                    .start_timeout_ms = start_timeout_ms, .send_timeout_ms = 5000};
    return mgr_new_opts(url, server, &o);
}

static void bad_credentials_fail_start_with_the_sasl_condition(void **state)
{
    (void)state;
    ewi_url u;
    char err[128], url[512];
    assert_int_equal(ewi_url_parse(amqp_test_url(), &u, err, sizeof err), EW_OK);
    snprintf(url, sizeof url, "amqp://%s:not-the-password@%s:%d?dialect=rabbitmq",
             u.user ? u.user : "guest", u.host[0] ? u.host : "127.0.0.1",
             u.port ? u.port : 5672);
    ewi_url_free(&u);
    capture c;
    capture_init(&c);
    ew_manager *m = captured_manager(url, "e1", &c, 12000);
    int64_t t0 = ewi_now_ms();
    assert_int_equal(ew_manager_start(m), EW_EAUTH);
    /* Refused credentials are final: no retrying until the timeout (RabbitMQ
     * itself holds the socket about 3 s after a failed SASL exchange). */
    assert_true(ewi_now_ms() - t0 < 6000);
    capture_print(&c);
    assert_true(c.errors >= 1);
    assert_int_equal(c.last_code, EW_EAUTH);
    assert_true(capture_has(&c, "amqp:unauthorized-access"));
    /* The password never reaches a log line. */
    assert_false(capture_has(&c, "not-the-password"));
    ew_manager_free(m);
}

/* No user in the URL: SASL ANONYMOUS, which RabbitMQ's plugin maps to its
 * default user (guest, from loopback). */
static void anonymous_sasl_connects(void **state)
{
    (void)state;
    ewi_url u;
    char err[128], url[512];
    assert_int_equal(ewi_url_parse(amqp_test_url(), &u, err, sizeof err), EW_OK);
    snprintf(url, sizeof url, "amqp://%s:%d?dialect=rabbitmq",
             u.host[0] ? u.host : "127.0.0.1", u.port ? u.port : 5672);
    ewi_url_free(&u);
    EV(ev, "Anon", true);
    tally t;
    tally_init(&t, 3);
    ew_manager *m = mgr_new(url, "e0");
    listen_tally(m, &ev, "L", false, 1, &t);
    assert_int_equal(ew_manager_start(m), EW_OK);
    send_range(m, &ev, 0, 3);
    assert_true(tally_wait_all(&t, 15000));
    ew_manager_free(m);
    tally_free(&t);
    rmq_cleanup(0, ev.name, (const char *const[]){"L", NULL});
}

static void a_contradicting_queue_is_a_conflict(void **state)
{
    (void)state;
    EV(ev, "AmqpPre", false);
    capture c1, c2;
    capture_init(&c1);
    capture_init(&c2);
    char u1[512], u2[512];
    snprintf(u1, sizeof u1, "%s&per_process_expires_ms=60000", amqp_test_url());
    snprintf(u2, sizeof u2, "%s&per_process_expires_ms=30000", amqp_test_url());
    ew_manager *m1 = captured_manager(u1, "same", &c1, 20000);
    tally t;
    tally_init(&t, 1);
    listen_tally(m1, &ev, "P", true, 1, &t);
    assert_int_equal(ew_manager_start(m1), EW_OK);
    /* The same per_process queue with another expiry: RabbitMQ refuses. */
    ew_manager *m2 = captured_manager(u2, "same", &c2, 20000);
    listen_tally(m2, &ev, "P", true, 1, &t);
    ew_err rc = ew_manager_start(m2);
    capture_print(&c2);
    assert_int_equal(rc, EW_ECONFLICT);
    assert_true(capture_has(&c2, "PRECONDITION_FAILED"));
    assert_true(capture_has(&c2, "x-expires"));
    ew_manager_free(m2);
    ew_manager_free(m1);
    tally_free(&t);
    char q[256];
    snprintf(q, sizeof q, "%s::P-same", ev.name);
    rmq_delete("queue", q);
    snprintf(q, sizeof q, "%s::P.dlq", ev.name);
    rmq_delete("queue", q);
    rmq_delete("exchange", ev.name);
}

static void a_missing_exchange_fails_the_send_with_not_found(void **state)
{
    (void)state;
    EV(ev, "Gone", true);
    capture c;
    capture_init(&c);
    ew_manager *m = captured_manager(amqp_test_url(), "e2", &c, 20000);
    assert_int_equal(ew_manager_start(m), EW_OK);
    assert_int_equal(ew_send(m, &ev, &(conf_event){.id = 1, .text = "x"}), EW_OK);
    rmq_delete("exchange", ev.name);
    /* Written on the open link, then the broker detached it: no outcome
     * came for it, so it is in doubt. */
    ew_err rc = ew_send(m, &ev, &(conf_event){.id = 2, .text = "x"});
    capture_print(&c);
    assert_int_equal(rc, EW_EINDOUBT);
    assert_true(capture_has(&c, "amqp:not-found"));
    char want[160];
    snprintf(want, sizeof want, "no exchange '%s'", ev.name);
    assert_true(capture_has(&c, want));
    /* The next one finds the sender refused before anything was written. */
    rc = ew_send(m, &ev, &(conf_event){.id = 3, .text = "x"});
    capture_print(&c);
    assert_int_equal(rc, EW_EBROKER);
    ew_manager_free(m);
}

static void a_deleted_queue_is_reported_and_consumed_again(void **state)
{
    (void)state;
    EV(ev, "Deleted", true);
    capture c;
    capture_init(&c);
    tally t;
    tally_init(&t, 2);
    ew_manager *m = captured_manager(amqp_test_url(), "e3", &c, 20000);
    listen_tally(m, &ev, "L", false, 1, &t);
    assert_int_equal(ew_manager_start(m), EW_OK);
    send_range(m, &ev, 0, 1);
    assert_true(tally_wait_ids(&t, 0, 1, 15000));
    char q[160];
    snprintf(q, sizeof q, "%s::L", ev.name);
    rmq_delete("queue", q);
    /* RabbitMQ 3.10 sends the consumer no detach: its AMQP 1.0 session
     * crashes and the connection resets (later plugins detach the link).
     * Either way the transport reports it, declares the queue again and
     * consumes again. */
    int64_t until = ewi_now_ms() + 15000;
    while (!capture_has(&c, "connection lost") && !capture_has(&c, "detached the consumer") &&
           ewi_now_ms() < until)
        ewi_sleep_ms(20);
    assert_true(capture_has(&c, "connection lost") ||
                capture_has(&c, "detached the consumer"));
    char again[256];
    snprintf(again, sizeof again, "consuming /amq/queue/%s again", q);
    assert_true(capture_wait_for(&c, again, 15000));
    /* Wait until the new consumer is there, then send once more. */
    for (int i = 0; i < 150 && !tally_wait_ids(&t, 1, 2, 100); i++)
        send_range(m, &ev, 1, 2);
    assert_true(tally_wait_ids(&t, 1, 2, 15000));
    capture_print(&c);
    ew_manager_free(m);
    tally_free(&t);
    rmq_delete("queue", q);
    rmq_delete("queue", strcat(q, ".dlq"));
    rmq_delete("exchange", ev.name);
}

int main(void)
{
    support_init(amqp_test_url());
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(bad_credentials_fail_start_with_the_sasl_condition),
        cmocka_unit_test(anonymous_sasl_connects),
        cmocka_unit_test(a_contradicting_queue_is_a_conflict),
        cmocka_unit_test(a_missing_exchange_fails_the_send_with_not_found),
        cmocka_unit_test(a_deleted_queue_is_reported_and_consumed_again),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
