/* ERROR frames from RabbitMQ reach the application clearly: a bad login or
 * vhost fails start at once with EW_EAUTH and the broker's text; a send to a
 * destination the broker refuses fails with EW_EBROKER and the broker's
 * text, and the service keeps working; a SUBSCRIBE that contradicts an
 * existing queue fails with EW_ECONFLICT and the broker's PRECONDITION_FAILED text; a
 * listener whose queue is replaced by a contradicting one is given up after
 * three refusals (reported with its queue name), retried now and then, and
 * resumes once the broker takes it again; the manager stops cleanly.
 * (ActiveMQ 5 without an authentication plugin accepts any login and any
 * destination: it has no ERROR to provoke through the API.) */
#include "stomp_test.h"

static void with_url(char *buf, size_t len, const char *user_pass, const char *vhost,
                     const char *extra)
{
    snprintf(buf, len, "stomp://%s127.0.0.1:61613/%s?dialect=rabbitmq%s", user_pass, vhost,
             extra);
}

static ew_manager *mgr_capture(const char *url, const char *server, capture *c)
{
    ew_options o = {.on_error = capture_error, .error_user = c, .start_timeout_ms = 20000,
                    .send_timeout_ms = 10000, .server_name = server};
    ew_manager *m = NULL;
    ew_err rc = ew_manager_new(&m, url, &o);
    if (rc != EW_OK)
        fail_msg("ew_manager_new(%s): %s", url, ew_strerror(rc));
    return m;
}

static void bad_login_fails_start_with_the_brokers_text(void **state)
{
    (void)state;
    const char *cases[][2] = {{"guest:wrong@", ""}, {"guest:guest@", "no-such-vhost"}};
    for (size_t i = 0; i < 2; i++) {
        capture c;
        capture_init(&c);
        char url[256];
        with_url(url, sizeof url, cases[i][0], cases[i][1], "");
        ew_manager *m = mgr_capture(url, "e1", &c);
        int64_t t0 = ewi_now_ms();
        assert_int_equal(ew_manager_start(m), EW_EAUTH);
        /* A refusal is final: no waiting out the start timeout. */
        assert_true(ewi_now_ms() - t0 < 10000);
        capture_print(&c);
        assert_int_equal(c.last_code, EW_EAUTH);
        assert_true(capture_has(&c, "refused the connection"));
        /* the broker's own words */
        assert_true(capture_has(&c, i == 0 ? "guest" : "no-such-vhost"));
        /* never the password */
        assert_false(capture_has(&c, "wrong"));
        ew_manager_free(m);
    }
}

static void refused_destination_fails_the_send_and_the_service_goes_on(void **state)
{
    (void)state;
    capture c;
    capture_init(&c);
    char url[256];
    with_url(url, sizeof url, "guest:guest@", "", "");
    ew_manager *m = mgr_capture(url, "e2", &c);
    EV(ev, "StompErr", true);
    tally t;
    tally_init(&t, 5);
    listen_tally(m, &ev, "L", false, 1, &t);
    assert_int_equal(ew_manager_start(m), EW_OK);
    /* An event whose exchange was never declared: RabbitMQ answers the SEND
     * with ERROR not_found and closes the connection. */
    char ghost[64];
    snprintf(ghost, sizeof ghost, "Ghost_%s", support_run_id);
    ew_envelope *env = ewi_envelope_new();
    ewi_envelope_set_body(env, "x", 1);
    ewi_pub p = {.dest = EWI_DEST_EVENT, .event = ghost, .durable = true, .env = env,
                 .deadline_ms = ewi_now_ms() + 15000};
    ew_err rc = ewi_publish_sync(m, &p);
    ewi_envelope_unref(env);
    capture_print(&c);
    assert_int_equal(rc, EW_EBROKER);
    assert_true(capture_has(&c, "no exchange"));
    /* The connection came back: sends and deliveries go on. */
    send_range(m, &ev, 0, 5);
    assert_true(tally_wait_all(&t, 30000));
    ew_manager_free(m);
    tally_free(&t);
    stomp_test_cleanup(url, ev.name, (const char *const[]){"L"}, 1);
}

static void contradicting_subscribe_fails_with_a_conflict(void **state)
{
    (void)state;
    EV(ev, "StompPre", false);
    capture c1, c2;
    capture_init(&c1);
    capture_init(&c2);
    char u1[256], u2[256];
    with_url(u1, sizeof u1, "guest:guest@", "", "&per_process_expires_ms=60000");
    with_url(u2, sizeof u2, "guest:guest@", "", "&per_process_expires_ms=30000");
    ew_manager *m1 = mgr_capture(u1, "same", &c1);
    tally t;
    tally_init(&t, 1);
    listen_tally(m1, &ev, "P", true, 1, &t);
    assert_int_equal(ew_manager_start(m1), EW_OK);
    /* The same per_process queue with another expiry: RabbitMQ refuses. */
    ew_manager *m2 = mgr_capture(u2, "same", &c2);
    listen_tally(m2, &ev, "P", true, 1, &t);
    ew_err rc = ew_manager_start(m2);
    capture_print(&c2);
    /* A 406 is EW_ECONFLICT on every RabbitMQ-backed transport. */
    assert_int_equal(rc, EW_ECONFLICT);
    assert_true(capture_has(&c2, "PRECONDITION_FAILED"));
    assert_true(capture_has(&c2, "x-expires"));
    ew_manager_free(m2);
    ew_manager_free(m1);
    tally_free(&t);
    stomp_test_cleanup(u1, ev.name, (const char *const[]){"P-same"}, 1);
}

/* Over AMQP 0-9-1 (what STOMP cannot do): delete queue q, then, when
 * redeclare, declare it again non-durable (contradicting the listener's). */
static void amqp_replace_queue(const char *q, bool redeclare)
{
    amqp_connection_state_t c = amqp_new_connection();
    amqp_socket_t *s = amqp_tcp_socket_new(c);
    if (!s || amqp_socket_open(s, "127.0.0.1", 5672) ||
        amqp_login(c, "/", 0, 131072, 0, AMQP_SASL_METHOD_PLAIN, "guest", "guest")
                .reply_type != AMQP_RESPONSE_NORMAL)
        fail_msg("cannot reach RabbitMQ over AMQP 0-9-1");
    amqp_channel_open(c, 1);
    assert_int_equal(amqp_get_rpc_reply(c).reply_type, AMQP_RESPONSE_NORMAL);
    amqp_queue_delete(c, 1, amqp_cstring_bytes(q), 0, 0);
    assert_int_equal(amqp_get_rpc_reply(c).reply_type, AMQP_RESPONSE_NORMAL);
    if (redeclare) {
        amqp_queue_declare(c, 1, amqp_cstring_bytes(q), 0, 0, 0, 0, amqp_empty_table);
        assert_int_equal(amqp_get_rpc_reply(c).reply_type, AMQP_RESPONSE_NORMAL);
    }
    amqp_channel_close(c, 1, AMQP_REPLY_SUCCESS);
    amqp_connection_close(c, AMQP_REPLY_SUCCESS);
    amqp_destroy_connection(c);
}

static void refused_resubscribe_is_given_up_then_resumes(void **state)
{
    (void)state;
    EV(ev, "StompGiveUp", true);
    capture c;
    capture_init(&c);
    char url[256];
    /* given-up subscriptions are retried after 10 x reconnect_max_ms */
    with_url(url, sizeof url, "guest:guest@", "", "&reconnect_max_ms=300");
    ew_manager *m = mgr_capture(url, "g1", &c);
    tally t;
    tally_init(&t, 6);
    listen_tally(m, &ev, "L", false, 1, &t);
    assert_int_equal(ew_manager_start(m), EW_OK);
    send_range(m, &ev, 0, 3);
    assert_true(tally_wait_ids(&t, 0, 3, 30000));

    /* The durable listener queue becomes a non-durable one: every
     * re-SUBSCRIBE (durable:true) is refused with precondition_failed. */
    char q[EW_MAX_QUEUE_NAME + 8];
    snprintf(q, sizeof q, "%s::L", ev.name);
    amqp_replace_queue(q, true);
    int64_t deadline = ewi_now_ms() + 30000;
    while (!capture_has(&c, "refused 3 times") && ewi_now_ms() < deadline)
        usleep(50000);
    capture_print(&c);
    assert_true(capture_has(&c, "refused 3 times"));
    char named[EW_MAX_QUEUE_NAME + 32];
    snprintf(named, sizeof named, "{queue %s} SUBSCRIBE", q);
    assert_true(capture_has(&c, named)); /* the report names the listener */
    assert_true(capture_has(&c, "PRECONDITION_FAILED"));

    /* The broker would take it again: the listener resumes by itself. */
    amqp_replace_queue(q, false);
    deadline = ewi_now_ms() + 30000;
    bool resumed = false;
    for (int64_t i = 3; i < 6 && ewi_now_ms() < deadline;) {
        send_range(m, &ev, i, i + 1);
        if (tally_wait_ids(&t, (size_t)i, (size_t)i + 1, 1000)) {
            i++;
            resumed = i == 6;
        }
    }
    assert_true(resumed);
    /* Stopping after a given-up period frees it once (ASan checks). */
    ew_manager_free(m);
    tally_free(&t);
    stomp_test_cleanup(url, ev.name, (const char *const[]){"L"}, 1);
}

int main(void)
{
    support_init("stomp");
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(bad_login_fails_start_with_the_brokers_text),
        cmocka_unit_test(refused_destination_fails_the_send_and_the_service_goes_on),
        cmocka_unit_test(contradicting_subscribe_fails_with_a_conflict),
        cmocka_unit_test(refused_resubscribe_is_given_up_then_resumes),
    };
    return cmocka_run_group_tests_name("stomp_errors", tests, NULL, NULL);
}
