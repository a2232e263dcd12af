/* The rabbitmq dialect's queues, checked on the broker over AMQP 0-9-1:
 *   - a listener's dead-letter queue E::L.dlq does not exist after start;
 *     reading it before any dead letter finds none, without error, and makes
 *     no queue; the first dead letter makes it (and arrives with its reason
 *     headers): durable without arguments, as every RabbitMQ-backed
 *     transport makes it, whatever headers the dead letter carries
 *     (RabbitMQ's STOMP adapter would take x-max-priority or durable:false
 *     from a SEND to /queue/D as the queue's properties);
 *   - a dead-letter queue that exists with other properties fails the dead
 *     letter with the broker's reason, and the original is kept until the
 *     queue can be declared;
 *   - a listener whose queue is deleted on the broker (which cancels its
 *     subscription and so drops the consuming connection) consumes again
 *     after the reconnect: its queue, binding and per_process expiry are
 *     declared again before the SUBSCRIBE. */
#include "stomp_test.h"

#define URL "stomp://guest:guest@127.0.0.1:61613/?dialect=rabbitmq"

/* ---- the broker's view, over AMQP 0-9-1 -------------------------------- */

static amqp_connection_state_t amqp_open(void)
{
    amqp_connection_state_t c = amqp_new_connection();
    amqp_socket_t *s = amqp_tcp_socket_new(c);
    if (!s || amqp_socket_open(s, "127.0.0.1", 5672) ||
        amqp_login(c, "/", 0, 131072, 0, AMQP_SASL_METHOD_PLAIN, "guest", "guest")
                .reply_type != AMQP_RESPONSE_NORMAL)
        fail_msg("cannot reach RabbitMQ over AMQP 0-9-1 on 127.0.0.1:5672");
    amqp_channel_open(c, 1);
    if (amqp_get_rpc_reply(c).reply_type != AMQP_RESPONSE_NORMAL)
        fail_msg("cannot open an AMQP channel");
    return c;
}

static void amqp_done(amqp_connection_state_t c)
{
    amqp_connection_close(c, AMQP_REPLY_SUCCESS);
    amqp_destroy_connection(c);
}

/* The reply code of a declaration of q: 0 when the broker took it, else
 * its channel.close code (404 missing, 406 other properties). passive:
 * whether q exists; otherwise a declaration durable as told, no arguments,
 * which a queue with other properties refuses. */
static unsigned declare_code(const char *q, bool passive, bool durable)
{
    amqp_connection_state_t c = amqp_open();
    amqp_queue_declare(c, 1, amqp_cstring_bytes(q), passive, durable, 0, 0, amqp_empty_table);
    amqp_rpc_reply_t r = amqp_get_rpc_reply(c);
    unsigned code = 0;
    if (r.reply_type == AMQP_RESPONSE_SERVER_EXCEPTION &&
        r.reply.id == AMQP_CHANNEL_CLOSE_METHOD)
        code = ((amqp_channel_close_t *)r.reply.decoded)->reply_code;
    else if (r.reply_type != AMQP_RESPONSE_NORMAL)
        fail_msg("declaring %s: no answer from RabbitMQ", q);
    amqp_done(c);
    return code;
}

/* ---- listeners ---------------------------------------------------------- */

static ew_err never_handles(ew_delivery *d, const void *event, void *user)
{
    (void)d, (void)event, (void)user;
    return EW_ENORETRY;
}

/* Headers that RabbitMQ's STOMP adapter reads as queue properties when it
 * declares the destination of a SEND. */
static ew_err add_queue_like_headers(void *user, ew_envelope *env, const ew_event_desc *ev)
{
    (void)user, (void)ev;
    ew_err rc = ew_envelope_set_header(env, "x-max-priority", "5");
    return rc != EW_OK ? rc : ew_envelope_set_header(env, "durable", "false");
}

typedef struct prio_box {
    dlq_box box;
    char prio[16][16];
} prio_box;

static ew_err collect(void *user, const ew_envelope *env)
{
    prio_box *p = user;
    const char *h = ew_envelope_header(env, "x-max-priority");
    if (p->box.n < 16)
        snprintf(p->prio[p->box.n], sizeof p->prio[0], "%s", h ? h : "");
    return dlq_collect(&p->box, env);
}

static void dead_letter_queues_are_made_on_first_use(void **state)
{
    (void)state;
    EV(ev, "StompLazyDlq", true);
    char fail_q[EW_MAX_QUEUE_NAME], fail_dlq[EW_MAX_QUEUE_NAME], ok_dlq[EW_MAX_QUEUE_NAME];
    snprintf(fail_q, sizeof fail_q, "%s::Fail", ev.name);
    snprintf(fail_dlq, sizeof fail_dlq, "%s::Fail.dlq", ev.name);
    snprintf(ok_dlq, sizeof ok_dlq, "%s::Ok.dlq", ev.name);
    tally t;
    tally_init(&t, 3);
    ew_manager *m = mgr_new(URL, "q1");
    ew_pipeline pl = {.name = "queue-like headers", .send = add_queue_like_headers};
    assert_int_equal(ew_add_pipeline(m, &pl, NULL), EW_OK);
    assert_int_equal(ew_listen(m, &(ew_listener_desc){.event = &ev, .name = "Fail"},
                               never_handles, NULL),
                     EW_OK);
    listen_tally(m, &ev, "Ok", false, 1, &t);
    assert_int_equal(ew_manager_start(m), EW_OK);

    /* After start: the listener queues, no dead-letter queue. */
    assert_int_equal(declare_code(fail_q, true, false), 0);
    assert_int_equal(declare_code(fail_dlq, true, false), 404);
    assert_int_equal(declare_code(ok_dlq, true, false), 404);

    /* Reading the dead letters of a listener that never dead-lettered. */
    prio_box none = {0};
    size_t got = 9;
    ew_dead_letter_options rd = {.event = &ev, .listener = "Ok", .max = 10,
                                 .timeout_ms = 300, .fn = collect, .user = &none};
    assert_int_equal(ew_dead_letters(m, &rd, &got), EW_OK);
    assert_int_equal(got, 0);
    assert_int_equal(none.box.n, 0);
    /* And made no queue. */
    assert_int_equal(declare_code(ok_dlq, true, false), 404);

    /* The first dead letters make theirs. */
    send_range(m, &ev, 0, 3);
    assert_true(tally_wait_all(&t, 30000));
    prio_box dead = {0};
    size_t total = 0;
    int64_t deadline = ewi_now_ms() + 30000;
    while (total < 3 && ewi_left_ms(deadline) > 0) {
        got = 0;
        ew_dead_letter_options take = {.event = &ev, .listener = "Fail", .max = 10,
                                       .timeout_ms = 2000, .fn = collect, .user = &dead};
        assert_int_equal(ew_dead_letters(m, &take, &got), EW_OK);
        total += got;
    }
    assert_int_equal(total, 3);
    for (size_t i = 0; i < 3; i++) {
        print_message("dead letter %zu: id %lld, reason %s, queue %s, error %s\n", i,
                      (long long)dead.box.ids[i], dead.box.reason[i], dead.box.queue[i],
                      dead.box.error[i]);
        assert_true(dead.box.ids[i] >= 0 && dead.box.ids[i] < 3);
        assert_string_equal(dead.box.reason[i], "listener-failed");
        assert_string_equal(dead.box.queue[i], fail_q);
        assert_string_equal(dead.box.attempts[i], "1");
        /* The user's headers travel with it, and shaped nothing. */
        assert_string_equal(dead.prio[i], "5");
    }
    /* Durable, no arguments (else 406). */
    assert_int_equal(declare_code(fail_dlq, false, true), 0);
    /* The listener that never failed still has none, and is still read. */
    got = 9;
    assert_int_equal(ew_dead_letters(m, &rd, &got), EW_OK);
    assert_int_equal(got, 0);
    assert_int_equal(declare_code(ok_dlq, true, false), 404);
    ew_manager_free(m);
    tally_free(&t);
    stomp_test_cleanup(URL, ev.name, (const char *const[]){"Fail", "Ok"}, 2);
}

/* A dead-letter queue made earlier with other properties: the dead letter
 * fails with the broker's reason and the original stays on the listener's
 * queue; once the queue can be declared, the dead letter arrives. */
static void conflicting_dead_letter_queue_keeps_the_original(void **state)
{
    (void)state;
    EV(ev, "StompDlqConflict", true);
    char dlq[EW_MAX_QUEUE_NAME];
    snprintf(dlq, sizeof dlq, "%s::Bad.dlq", ev.name);
    capture c;
    capture_init(&c);
    ew_options o = {.server_name = "k1", .start_timeout_ms = 20000, .send_timeout_ms = 10000,
                    .on_error = capture_error, .error_user = &c, .log = capture_log,
                    .log_user = &c, .log_level = EW_LOG_ERROR};
    ew_manager *m = NULL;
    assert_int_equal(ew_manager_new(&m, URL, &o), EW_OK);
    assert_int_equal(ew_listen(m, &(ew_listener_desc){.event = &ev, .name = "Bad"},
                               never_handles, NULL),
                     EW_OK);
    assert_int_equal(ew_manager_start(m), EW_OK);
    /* Transient: eventwire's declaration (durable) contradicts it. */
    assert_int_equal(declare_code(dlq, false, false), 0);
    send_range(m, &ev, 0, 1);
    assert_true(capture_wait_for(&c, "PRECONDITION_FAILED", 30000));
    capture_print(&c);
    assert_true(capture_has(&c, dlq));
    /* The queue goes: the next try declares it as it should be. */
    rmq_delete_one(0, dlq, false);
    prio_box dead = {0};
    int64_t deadline = ewi_now_ms() + 60000;
    while (dead.box.n < 1 && ewi_left_ms(deadline) > 0) {
        size_t got = 0;
        ew_dead_letter_options take = {.event = &ev, .listener = "Bad", .max = 10,
                                       .timeout_ms = 1000, .fn = collect, .user = &dead};
        assert_int_equal(ew_dead_letters(m, &take, &got), EW_OK);
    }
    assert_int_equal(dead.box.n, 1);
    assert_int_equal(dead.box.ids[0], 0);
    assert_string_equal(dead.box.reason[0], "listener-failed");
    assert_int_equal(declare_code(dlq, false, true), 0);
    ew_manager_free(m);
    stomp_test_cleanup(URL, ev.name, (const char *const[]){"Bad"}, 1);
}

/* ---- a listener queue deleted on the broker ------------------------------ */

/* Sends id after id from *next until one reaches t (a queue that was gone
 * misses those sent before it came back); false at the deadline. */
static bool send_until_received(ew_manager *m, const ew_event_desc *ev, tally *t, int64_t *next,
                                int64_t last)
{
    int64_t deadline = ewi_now_ms() + 30000;
    while (*next < last && ewi_left_ms(deadline) > 0) {
        int64_t id = (*next)++;
        send_range(m, ev, id, id + 1);
        if (tally_wait_ids(t, (size_t)id, (size_t)id + 1, 1000))
            return true;
    }
    return false;
}

static void deleted_listener_queue_is_declared_again(void **state)
{
    (void)state;
    EV(ev, "StompGone", true);
    char shared[EW_MAX_QUEUE_NAME], mine[EW_MAX_QUEUE_NAME];
    snprintf(shared, sizeof shared, "%s::Shared", ev.name);
    snprintf(mine, sizeof mine, "%s::Mine-g1", ev.name);
    enum { N = 40 };
    tally ts, tm;
    tally_init(&ts, N);
    tally_init(&tm, N);
    capture c;
    capture_init(&c);
    ew_options o = {.server_name = "g1", .start_timeout_ms = 20000, .send_timeout_ms = 10000,
                    .on_error = capture_error, .error_user = &c};
    ew_manager *m = NULL;
    assert_int_equal(ew_manager_new(&m, URL "&reconnect_max_ms=300", &o), EW_OK);
    listen_tally(m, &ev, "Shared", false, 1, &ts);
    listen_tally(m, &ev, "Mine", true, 1, &tm);
    assert_int_equal(ew_manager_start(m), EW_OK);
    send_range(m, &ev, 0, 2);
    assert_true(tally_wait_ids(&ts, 0, 2, 30000));
    assert_true(tally_wait_ids(&tm, 0, 2, 30000));

    /* Both queues deleted: RabbitMQ cancels their subscriptions. */
    rmq_delete_one(0, shared, false);
    rmq_delete_one(0, mine, false);
    assert_true(capture_wait_for(&c, "Server cancelled subscription", 30000));

    /* Back with their binding (events to E reach them) and their properties. */
    int64_t next = 2;
    assert_true(send_until_received(m, &ev, &ts, &next, N - 5));
    assert_true(tally_wait_ids(&tm, (size_t)next - 1, (size_t)next, 10000));
    send_range(m, &ev, next, next + 3);
    assert_true(tally_wait_ids(&ts, (size_t)next, (size_t)next + 3, 30000));
    assert_true(tally_wait_ids(&tm, (size_t)next, (size_t)next + 3, 30000));
    capture_print(&c);
    assert_int_equal(declare_code(shared, true, false), 0);
    /* The per_process queue came back with its x-expires: a declaration
     * without it is refused. */
    assert_int_equal(declare_code(mine, false, true), 406);
    /* No SUBSCRIBE was refused on the way (to a missing /amq/queue/). */
    assert_false(capture_has(&c, "not_found"));
    assert_false(capture_has(&c, "SUBSCRIBE"));
    ew_manager_free(m);
    tally_free(&ts);
    tally_free(&tm);
    stomp_test_cleanup(URL, ev.name, (const char *const[]){"Shared", "Mine-g1"}, 2);
}

int main(void)
{
    support_init("stomp");
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(dead_letter_queues_are_made_on_first_use),
        cmocka_unit_test(conflicting_dead_letter_queue_keeps_the_original),
        cmocka_unit_test(deleted_listener_queue_is_declared_again),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
