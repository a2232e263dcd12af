/* Dead-letter queues and shared sessions on RabbitMQ through AMQP 1.0:
 *   - a listener's dead-letter queue E::L.dlq is declared on first use,
 *     not at start: after ew_manager_start it does not exist; reading the
 *     dead letters of a listener that never dead-lettered gives none,
 *     without error, and makes no queue; a failing listener's message arrives in E::L.dlq with
 *     its reason headers (the queue is declared before the first dead
 *     letter is sent: RabbitMQ's plugin would drop a send to a missing
 *     queue without a word);
 *   - after a reconnect the dead-letter queue is declared again before the
 *     next dead letter (here it was deleted by hand meanwhile);
 *   - a sender has a session of its own: when RabbitMQ ends it because the
 *     sender's exchange is gone, that sender's sends fail with the broker's
 *     text, and no other link is touched (another event's sends and its
 *     listener go on).
 * Queue existence is checked with a passive queue.declare over AMQP 0-9-1. */
#include "amqp_test.h"

/* Whether queue q exists on the test broker (passive declare). */
static bool queue_exists(const char *q)
{
    amqp_connection_state_t c = amqp_new_connection();
    amqp_socket_t *s = amqp_tcp_socket_new(c);
    if (!s || amqp_socket_open(s, "127.0.0.1", 5672) ||
        amqp_login(c, "/", 0, 131072, 0, AMQP_SASL_METHOD_PLAIN, "guest", "guest")
                .reply_type != AMQP_RESPONSE_NORMAL)
        fail_msg("cannot reach RabbitMQ over AMQP 0-9-1 on 127.0.0.1:5672");
    amqp_channel_open(c, 1);
    assert_int_equal(amqp_get_rpc_reply(c).reply_type, AMQP_RESPONSE_NORMAL);
    amqp_queue_declare(c, 1, amqp_cstring_bytes(q), 1, 0, 0, 0, amqp_empty_table);
    amqp_rpc_reply_t r = amqp_get_rpc_reply(c);
    bool exists = r.reply_type == AMQP_RESPONSE_NORMAL;
    if (!exists) {
        /* Only "not found" means missing; anything else is a failed check. */
        if (r.reply_type != AMQP_RESPONSE_SERVER_EXCEPTION ||
            r.reply.id != AMQP_CHANNEL_CLOSE_METHOD ||
            ((amqp_channel_close_t *)r.reply.decoded)->reply_code != 404)
            fail_msg("passive declare of %s: neither declared nor 404", q);
    } else {
        amqp_channel_close(c, 1, AMQP_REPLY_SUCCESS);
    }
    amqp_connection_close(c, AMQP_REPLY_SUCCESS);
    amqp_destroy_connection(c);
    return exists;
}

/* Listener `name` of ev failing event id fail_id twice (then dead letter). */
static void listen_failing(ew_manager *m, const ew_event_desc *ev, const char *name,
                           tally *t)
{
    ew_listener_desc d = {.event = ev, .name = name,
                          .retry = {.attempts = 2, .backoff_ms = 10}};
    assert_int_equal(ew_listen(m, &d, tally_listener, tref(t, name)), EW_OK);
}

static void dead_letter_queue_is_declared_on_first_use(void **state)
{
    (void)state;
    EV(ev, "AmqpLazyDlq", true);
    char q_fail[160], q_fail_dlq[160], q_quiet[160], q_quiet_dlq[160];
    snprintf(q_fail, sizeof q_fail, "%s::Fails", ev.name);
    snprintf(q_fail_dlq, sizeof q_fail_dlq, "%s::Fails.dlq", ev.name);
    snprintf(q_quiet, sizeof q_quiet, "%s::Quiet", ev.name);
    snprintf(q_quiet_dlq, sizeof q_quiet_dlq, "%s::Quiet.dlq", ev.name);
    tally tf, tq;
    tally_init(&tf, 4);
    tally_init(&tq, 4);
    tf.fail_always = 2;
    ew_manager *m = mgr_new(amqp_test_url(), "d1");
    listen_failing(m, &ev, "Fails", &tf);
    listen_tally(m, &ev, "Quiet", false, 1, &tq);
    assert_int_equal(ew_manager_start(m), EW_OK);

    /* Started: the listener queues exist, their dead-letter queues not. */
    assert_true(queue_exists(q_fail));
    assert_true(queue_exists(q_quiet));
    if (queue_exists(q_fail_dlq) || queue_exists(q_quiet_dlq))
        fail_msg("a dead-letter queue was declared at start");

    /* A listener that never dead-lettered: none, and no error. */
    dlq_box box = {0};
    size_t got = 99;
    ew_dead_letter_options quiet = {.event = &ev, .listener = "Quiet", .max = 10,
                                    .timeout_ms = 500, .fn = dlq_collect, .user = &box};
    assert_int_equal(ew_dead_letters(m, &quiet, &got), EW_OK);
    assert_int_equal(got, 0);
    assert_int_equal(box.n, 0);
    if (queue_exists(q_quiet_dlq) || queue_exists(q_fail_dlq))
        fail_msg("reading Quiet's dead letters declared a dead-letter queue");

    /* Fails dead-letters id 2; its queue is made before the dead letter is
     * sent, so the message is there (a send to a missing queue would be
     * dropped by the broker without a word). */
    send_range(m, &ev, 0, 4);
    assert_true(tally_wait_all(&tq, 30000));
    assert_true(tally_wait_ids(&tf, 0, 2, 30000));
    assert_true(tally_wait_ids(&tf, 3, 4, 30000));
    ew_dead_letter_options fails = {.event = &ev, .listener = "Fails", .max = 10,
                                    .timeout_ms = 30000, .fn = dlq_collect, .user = &box};
    assert_int_equal(ew_dead_letters(m, &fails, &got), EW_OK);
    assert_int_equal(got, 1);
    assert_int_equal(box.n, 1);
    assert_int_equal(box.ids[0], 2);
    assert_string_equal(box.reason[0], "listener-failed");
    assert_string_equal(box.attempts[0], "2");
    assert_string_equal(box.queue[0], q_fail);
    assert_true(queue_exists(q_fail_dlq));

    ew_manager_free(m);
    tally_free(&tf);
    tally_free(&tq);
    rmq_cleanup(0, ev.name, (const char *const[]){"Fails", "Quiet", NULL});
}

static void dead_letter_queue_is_declared_again_after_a_reconnect(void **state)
{
    (void)state;
    EV(ev, "AmqpDlqAgain", true);
    char q_dlq[160];
    snprintf(q_dlq, sizeof q_dlq, "%s::Fails.dlq", ev.name);
    relay *path = relay_new(0, 5672, true);
    assert_non_null(path);
    ewi_url u;
    char err[128], url[512];
    assert_int_equal(ewi_url_parse(amqp_test_url(), &u, err, sizeof err), EW_OK);
    snprintf(url, sizeof url, "amqp://%s:%s@127.0.0.1:%d?dialect=rabbitmq&reconnect_max_ms=300",
             u.user ? u.user : "guest", u.password ? u.password : "guest", relay_port(path));
    ewi_url_free(&u);
    capture c;
    capture_init(&c);
    tally t;
    tally_init(&t, 4);
    t.fail_always = 1;
    ew_options o = {.on_error = capture_error, .error_user = &c, .log = capture_log,
                    .log_user = &c, .send_timeout_ms = 5000};
    ew_manager *m = mgr_new_opts(url, "d2", &o);
    listen_failing(m, &ev, "Fails", &t);
    assert_int_equal(ew_manager_start(m), EW_OK);
    assert_false(queue_exists(q_dlq));
    send_range(m, &ev, 0, 2);
    assert_true(tally_wait_ids(&t, 0, 1, 30000));
    /* The dead letter of 1 is on its way, then in its queue. */
    WAIT_FOR(queue_exists(q_dlq), 30000, "no dead-letter queue %s after a dead letter", q_dlq);
    dlq_box box = {0};
    size_t got = 0;
    ew_dead_letter_options dl = {.event = &ev, .listener = "Fails", .max = 1,
                                 .timeout_ms = 30000, .fn = dlq_collect, .user = &box};
    assert_int_equal(ew_dead_letters(m, &dl, &got), EW_OK);
    assert_int_equal(got, 1);
    assert_int_equal(box.ids[0], 1);

    /* The queue goes (deleted by hand, or a broker that lost it) while the
     * connection is down. */
    relay_break(path);
    assert_true(capture_wait_for(&c, "connection lost", 10000));
    rmq_delete("queue", q_dlq);
    relay_restore(path);
    assert_true(capture_wait_for(&c, "reconnected", 15000));

    pthread_mutex_lock(&t.mu);
    t.fail_always = 3;
    pthread_mutex_unlock(&t.mu);
    send_range(m, &ev, 2, 4);
    assert_true(tally_wait_ids(&t, 2, 3, 30000));
    /* The dead letter of 3 is there. (1 may come again first: its accept
     * can have been on its way when the connection went.) */
    size_t found = 16;
    int64_t until = ewi_now_ms() + 30000;
    while (found == 16 && box.n < 16 && ewi_now_ms() < until) {
        size_t from = box.n;
        ew_err rc = ew_dead_letters(m, &dl, &got);
        if (rc != EW_OK)
            fail_msg("reading dead letters after the reconnect: %s: %s", ew_strerror(rc),
                     ew_last_error());
        for (size_t i = from; i < box.n; i++)
            if (box.ids[i] == 3)
                found = i;
            else if (box.ids[i] != 1)
                fail_msg("dead letter %lld after the reconnect, expected 3",
                         (long long)box.ids[i]);
    }
    if (found == 16)
        fail_msg("the dead letter of 3, sent after the reconnect, is not in %s", q_dlq);
    assert_string_equal(box.reason[found], "listener-failed");

    ew_manager_free(m);
    tally_free(&t);
    relay_free(path);
    rmq_cleanup(0, ev.name, (const char *const[]){"Fails", NULL});
}

static void a_session_ended_for_one_sender_spares_the_other_links(void **state)
{
    (void)state;
    EV(keep, "AmqpSsnKeep", true);
    EV(gone, "AmqpSsnGone", true);
    capture c;
    capture_init(&c);
    tally t;
    tally_init(&t, 6);
    ew_options o = {.on_error = capture_error, .error_user = &c, .log = capture_log,
                    .log_user = &c, .send_timeout_ms = 5000};
    ew_manager *m = mgr_new_opts(amqp_test_url(), "d3", &o);
    listen_tally(m, &keep, "L", false, 1, &t);
    assert_int_equal(ew_manager_start(m), EW_OK);
    /* Both senders attached, each on a session of its own. */
    send_range(m, &keep, 0, 1);
    assert_int_equal(ew_send(m, &gone, &(conf_event){.id = 0, .text = "x"}), EW_OK);
    assert_true(tally_wait_ids(&t, 0, 1, 15000));

    rmq_delete("exchange", gone.name);
    /* RabbitMQ ends the session when the transfer meets the missing
     * exchange: that send fails with its text ... */
    ew_err rc = ew_send(m, &gone, &(conf_event){.id = 1, .text = "x"});
    capture_print(&c);
    assert_true(rc == EW_EINDOUBT || rc == EW_EBROKER);
    char want[160];
    snprintf(want, sizeof want, "no exchange '%s'", gone.name);
    assert_true(capture_wait_for(&c, want, 5000));
    /* ... the broker ended that sender's session, which no other link
     * shares (else they would have been attached again, with a warning) ... */
    assert_false(capture_has(&c, "attached again"));
    /* ... and the other event goes on. */
    send_range(m, &keep, 1, 6);
    assert_true(tally_wait_ids(&t, 1, 6, 15000));

    ew_manager_free(m);
    tally_free(&t);
    rmq_cleanup(0, keep.name, (const char *const[]){"L", NULL});
    rmq_delete("exchange", gone.name);
}

int main(void)
{
    support_init(amqp_test_url());
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(dead_letter_queue_is_declared_on_first_use),
        cmocka_unit_test(dead_letter_queue_is_declared_again_after_a_reconnect),
        cmocka_unit_test(a_session_ended_for_one_sender_spares_the_other_links),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
