/* Dead letters on RabbitMQ: E::L.dlq is declared before the first dead
 * letter, not at start; a listener that keeps failing has its message
 * moved to it after the retries, with the original body and headers
 * plus the reason headers, checked on the broker with a raw client; a
 * message a foreign producer (a raw librabbitmq client) publishes that
 * cannot be decoded goes to the dead letters at once, and the service keeps
 * running. */
#include "rmq_test.h"

static ew_err stamp(void *user, ew_envelope *env, const ew_event_desc *ev)
{
    (void)user;
    (void)ev;
    return ew_envelope_set_header(env, "tenant", "acme");
}

static void failing_message_reaches_the_dlq_with_its_reasons(void **state)
{
    (void)state;
    EV(ev, "Pay", true);
    enum { N = 10, BAD = 4 };
    tally t;
    tally_init(&t, N);
    t.fail_always = BAD;
    ew_manager *m = mgr_new(rmq_test_url(), "s1");
    ew_pipeline p = {.name = "stamp", .send = stamp};
    assert_int_equal(ew_add_pipeline(m, &p, NULL), EW_OK);
    ew_listener_desc d = {.event = &ev, .name = "Charge",
                          .retry = {.attempts = 2, .backoff_ms = 20}};
    assert_int_equal(ew_listen(m, &d, tally_listener, tref(&t, "s1")), EW_OK);
    assert_int_equal(ew_manager_start(m), EW_OK);
    char dlq[256], q[256], h[512];
    snprintf(dlq, sizeof dlq, "%s::Charge.dlq", ev.name);
    snprintf(q, sizeof q, "%s::Charge", ev.name);
    amqp_connection_state_t c = raw_connect();
    /* Declared before the first dead letter, not at start. */
    assert_true(raw_queue_exists(c, q));
    assert_false(raw_queue_exists(c, dlq));
    send_range(m, &ev, 0, N);
    assert_true(tally_wait_ids(&t, 0, BAD, 30000));
    assert_true(tally_wait_ids(&t, BAD + 1, N, 30000));
    /* N - 1 successes and 2 failed attempts; the dead-lettering follows the
     * last one on its worker, and the stop waits for the workers. */
    assert_true(tally_wait_finished(&t, N + 1, 30000));
    assert_int_equal(ew_manager_stop(m, 10000), EW_OK);

    /* On the broker, in E::L.dlq: read it with a plain AMQP client. */
    amqp_message_t msg;
    assert_true(raw_get(c, dlq, &msg));
    const amqp_table_t *tab = &msg.properties.headers;
    assert_string_equal(raw_header(tab, EW_HDR_DLQ_REASON, h, sizeof h), "listener-failed");
    assert_string_equal(raw_header(tab, EW_HDR_DLQ_ATTEMPTS, h, sizeof h), "2");
    assert_string_equal(raw_header(tab, EW_HDR_DLQ_QUEUE, h, sizeof h), q);
    assert_string_equal(raw_header(tab, EW_HDR_DLQ_SERVER, h, sizeof h), "s1");
    assert_non_null(raw_header(tab, EW_HDR_DLQ_ERROR, h, sizeof h));
    print_message("dead letter: %s\n", h);
    assert_string_equal(raw_header(tab, "tenant", h, sizeof h), "acme");
    assert_string_equal(raw_header(tab, EW_HDR_EVENT, h, sizeof h), ev.name);
    assert_non_null(raw_header(tab, EW_HDR_MESSAGE_ID, h, sizeof h));
    assert_int_equal(msg.properties.delivery_mode, 2);
    /* The original body, byte for byte: it decodes to the failing event. */
    void *e = NULL;
    assert_int_equal(ew_decode(&conf_event_type, EW_FORMAT_MSGPACK, msg.body.bytes,
                               msg.body.len, NULL, &e, NULL, 0),
                     EW_OK);
    assert_int_equal(((conf_event *)e)->id, BAD);
    ew_event_free(&conf_event_type, e);
    amqp_destroy_message(&msg);
    /* Exactly one: no redelivery loop, and the listener queue is empty. */
    assert_false(raw_get(c, dlq, &msg));
    assert_false(raw_get(c, q, &msg));
    raw_close(c);
    assert_int_equal(t.attempts[BAD], 2);
    ew_manager_free(m);
    tally_free(&t);
    raw_delete(q, false);
    raw_delete(dlq, false);
    raw_delete(ev.name, true);
}

static void undecodable_raw_message_goes_to_dead_letters(void **state)
{
    (void)state;
    EV(ev, "Foreign", true);
    tally t;
    tally_init(&t, 3);
    ew_manager *m = mgr_new(rmq_test_url(), "s1");
    listen_tally(m, &ev, "Strict", false, 1, &t);
    assert_int_equal(ew_manager_start(m), EW_OK);

    /* A foreign producer: no eventwire headers at all, as RabbitMQ tools
     * or another language's client would publish. */
    amqp_connection_state_t c = raw_connect();
    static const char garbage[] = "\xc1\xc1 not msgpack";
    raw_publish(c, ev.name, ev.name, EW_CONTENT_TYPE_MSGPACK, garbage, sizeof garbage - 1);
    raw_publish(c, ev.name, ev.name, "text/plain", "hello", 5);
    raw_publish(c, ev.name, ev.name, NULL, "{}", 2);
    raw_close(c);
    send_range(m, &ev, 0, 3); /* the service keeps going */
    assert_true(tally_wait_all(&t, 30000));

    dlq_box box = {0};
    size_t got = 0, total = 0;
    int64_t deadline = ewi_now_ms() + 15000;
    ew_dead_letter_options dl = {.event = &ev, .listener = "Strict", .max = 10,
                                 .timeout_ms = 5000, .fn = dlq_collect, .user = &box};
    while (total < 3 && ewi_left_ms(deadline) > 0 &&
           ew_dead_letters(m, &dl, &got) == EW_OK)
        total += got;
    assert_int_equal(total, 3);
    for (size_t i = 0; i < 3; i++) {
        print_message("dead letter %zu: %s / %s\n", i, box.reason[i], box.error[i]);
        assert_string_equal(box.reason[i], "decode-failed");
        assert_string_equal(box.attempts[i], "0");
    }
    assert_non_null(strstr(box.error[1], "text/plain"));
    /* Taken means removed. */
    dl.timeout_ms = 300;
    assert_int_equal(ew_dead_letters(m, &dl, &got), EW_OK);
    assert_int_equal(got, 0);
    assert_int_equal(tally_total(&t), 3);
    ew_manager_free(m);
    tally_free(&t);
    rmq_cleanup(0, ev.name, (const char *const[]){"Strict", NULL});
}

/* A listener that never dead-lettered (or none of that name) has no
 * dead-letter queue: none to read, and reading makes none. */
static void no_dead_letters_without_a_dead_letter_queue(void **state)
{
    (void)state;
    EV(ev, "NoDlq", true);
    capture cap;
    capture_init(&cap);
    ew_options o = {.on_error = capture_error, .error_user = &cap};
    ew_manager *m = mgr_new_opts(rmq_test_url(), "s1", &o);
    assert_int_equal(ew_manager_start(m), EW_OK);
    dlq_box box = {0};
    size_t got = 7;
    ew_dead_letter_options dl = {.event = &ev, .listener = "Nobody", .max = 10,
                                 .timeout_ms = 100, .fn = dlq_collect, .user = &box};
    assert_int_equal(ew_dead_letters(m, &dl, &got), EW_OK);
    assert_int_equal(got, 0);
    char dlq[256];
    snprintf(dlq, sizeof dlq, "%s::Nobody.dlq", ev.name);
    amqp_connection_state_t c = raw_connect();
    assert_false(raw_queue_exists(c, dlq));
    raw_close(c);
    /* The connection is still good afterwards. */
    tally t;
    tally_init(&t, 2);
    ew_listener_desc d = {.event = &ev, .name = "L"};
    assert_int_equal(ew_listen(m, &d, tally_listener, tref(&t, "s1")), EW_OK);
    send_range(m, &ev, 0, 2);
    assert_true(tally_wait_all(&t, 30000));
    ew_manager_free(m);
    tally_free(&t);
    rmq_cleanup(0, ev.name, (const char *const[]){"L", NULL});
}

int main(void)
{
    support_init(rmq_test_url());
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(failing_message_reaches_the_dlq_with_its_reasons),
        cmocka_unit_test(undecodable_raw_message_goes_to_dead_letters),
        cmocka_unit_test(no_dead_letters_without_a_dead_letter_queue),
    };
    return cmocka_run_group_tests_name("rabbitmq dead letters", tests, NULL, NULL);
}
