/* What the RabbitMQ transport builds on the broker, checked with
 * rabbitmqctl, and the errors a user gets when the broker says no:
 * incompatible existing objects, bad credentials, a wrong vhost, no broker.
 * usage: rabbitmq_topology BROKER_SCRIPT (scripts/brokers/rabbitmq.sh) */
#include "rmq_test.h"
#include "transports/rmqadmin/rmqadmin.h"

static const char *SCRIPT;

static ew_manager *mgr_capture(const char *url, const char *server, capture *c)
{
    ew_options o = {.on_error = capture_error, .error_user = c, .log_level = EW_LOG_ERROR};
    return mgr_new_opts(url, server, &o);
}

static ew_err always_fails(ew_delivery *d, const void *event, void *user)
{
    (void)d;
    (void)event;
    (void)user;
    return EW_ELISTENER;
}

static void topology_names_on_the_broker(void **state)
{
    (void)state;
    EV(ev, "Topo", true);
    EV(tev, "TopoT", false);
    tally t;
    tally_init(&t, 10);
    ew_manager *m = mgr_new(rmq_test_url(), "s1");
    listen_tally(m, &ev, "A", false, 1, &t);
    listen_tally(m, &ev, "P", true, 1, &t);
    listen_tally(m, &tev, "B", false, 1, &t);
    assert_int_equal(ew_manager_start(m), EW_OK);

    char row[512], name[256];
    char *ex = ctl(SCRIPT, "list_exchanges name type durable auto_delete");
    snprintf(name, sizeof name, "%s", ev.name);
    assert_non_null(ctl_row(ex, name, row, sizeof row));
    print_message("exchange: %s\n", row);
    assert_non_null(strstr(row, "\ttopic\ttrue\tfalse"));
    /* A transient event still gets a durable exchange: its type and
     * durability can never change once declared. */
    assert_non_null(ctl_row(ex, tev.name, row, sizeof row));
    assert_non_null(strstr(row, "\ttopic\ttrue\tfalse"));
    free(ex);

    char *qs = ctl(SCRIPT, "list_queues name durable auto_delete arguments");
    const struct {
        const char *suffix, *event, *want;
    } rows[] = {
        {"::A", ev.name, "\ttrue\tfalse\t[]"},
        {"::P-s1", ev.name, "\ttrue\tfalse\t[{\"x-expires\",60000}]"},
        {"::B", tev.name, "\tfalse\tfalse\t[]"},
    };
    for (size_t i = 0; i < sizeof rows / sizeof rows[0]; i++) {
        snprintf(name, sizeof name, "%s%s", rows[i].event, rows[i].suffix);
        if (!ctl_row(qs, name, row, sizeof row))
            fail_msg("queue %s is not on the broker:\n%s", name, qs);
        print_message("queue: %s\n", row);
        assert_non_null(strstr(row, rows[i].want));
    }
    /* Dead-letter queues are declared before their first dead letter. */
    const char *no_dlq[][2] = {{ev.name, "::A.dlq"}, {ev.name, "::P.dlq"}, {tev.name, "::B.dlq"}};
    for (size_t i = 0; i < 3; i++) {
        snprintf(name, sizeof name, "%s%s", no_dlq[i][0], no_dlq[i][1]);
        if (ctl_row(qs, name, row, sizeof row))
            fail_msg("dead-letter queue %s made at start: %s", name, row);
    }
    free(qs);

    char *bs = ctl(SCRIPT, "list_bindings source_name destination_name routing_key");
    const char *bound[] = {"::A", "::P-s1"};
    for (size_t i = 0; i < 2; i++) {
        char want[400];
        snprintf(want, sizeof want, "%s\t%s%s\t#\n", ev.name, ev.name, bound[i]);
        if (!strstr(bs, want))
            fail_msg("binding '%s' missing:\n%s", want, bs);
    }
    /* Dead-letter queues are fed through the default exchange only. */
    snprintf(name, sizeof name, "%s\t%s::A.dlq\t#", ev.name, ev.name);
    assert_null(strstr(bs, name));
    free(bs);

    /* Messages carry routing key E and reach every queue bound with '#'. */
    send_range(m, &ev, 0, 5);
    assert_true(tally_wait_ids(&t, 0, 5, 30000));
    ew_manager_free(m);
    tally_free(&t);

    /* The first dead letter of A makes E::A.dlq: durable, no arguments. */
    m = mgr_new(rmq_test_url(), "s1");
    ew_listener_desc fails = {.event = &ev, .name = "A", .retry = {.attempts = 1}};
    assert_int_equal(ew_listen(m, &fails, always_fails, NULL), EW_OK);
    assert_int_equal(ew_manager_start(m), EW_OK);
    send_range(m, &ev, 0, 1);
    dlq_box box = {0};
    size_t got = 0;
    ew_dead_letter_options dl = {.event = &ev, .listener = "A", .max = 1,
                                 .timeout_ms = 30000, .fn = dlq_collect, .user = &box};
    assert_int_equal(ew_dead_letters(m, &dl, &got), EW_OK);
    assert_int_equal(got, 1);
    assert_string_equal(box.reason[0], "listener-failed");
    ew_manager_free(m);
    qs = ctl(SCRIPT, "list_queues name durable auto_delete arguments");
    snprintf(name, sizeof name, "%s::A.dlq", ev.name);
    if (!ctl_row(qs, name, row, sizeof row))
        fail_msg("dead-letter queue %s is not on the broker:\n%s", name, qs);
    print_message("queue: %s\n", row);
    assert_non_null(strstr(row, "\ttrue\tfalse\t[]"));
    free(qs);
    const char *gone[] = {"::A", "::P-s1", "::A.dlq", "::P.dlq"};
    for (size_t i = 0; i < 4; i++) {
        snprintf(name, sizeof name, "%s%s", ev.name, gone[i]);
        raw_delete(name, false);
    }
    snprintf(name, sizeof name, "%s::B", tev.name);
    raw_delete(name, false);
    snprintf(name, sizeof name, "%s::B.dlq", tev.name);
    raw_delete(name, false);
    raw_delete(ev.name, true);
    raw_delete(tev.name, true);
}

static void incompatible_queue_is_a_clear_error(void **state)
{
    (void)state;
    EV(ev, "ClashQ", true);
    char q[256];
    snprintf(q, sizeof q, "%s::L", ev.name);
    /* Someone made E::L transient before; our durable event needs it durable. */
    amqp_connection_state_t c = raw_connect();
    amqp_queue_declare(c, 1, amqp_cstring_bytes(q), 0, 0, 0, 0, amqp_empty_table);
    assert_true(raw_ok(c));
    raw_close(c);

    capture cap;
    capture_init(&cap);
    tally t;
    tally_init(&t, 1);
    ew_manager *m = mgr_capture(rmq_test_url(), "s1", &cap);
    listen_tally(m, &ev, "L", false, 1, &t);
    assert_int_equal(ew_manager_start(m), EW_ECONFLICT);
    print_message("%s", cap.text);
    char want[300];
    snprintf(want, sizeof want, "declaring queue '%s'", q);
    assert_true(capture_has(&cap, want));
    assert_true(capture_has(&cap, "406 PRECONDITION_FAILED"));
    assert_true(capture_has(&cap, "inequivalent arg 'durable'"));
    ew_manager_free(m);
    tally_free(&t);
    raw_delete(q, false);
    raw_delete(ev.name, true);
}

/* A dead-letter queue someone made transient: the first dead letter cannot
 * go there; the error names the queue and the broker's reason, and the
 * original stays on the listener's queue (given back at stop). */
static void incompatible_dead_letter_queue_keeps_the_message(void **state)
{
    (void)state;
    EV(ev, "ClashD", true);
    char q[256], dlq[256];
    snprintf(q, sizeof q, "%s::L", ev.name);
    snprintf(dlq, sizeof dlq, "%s::L.dlq", ev.name);
    amqp_connection_state_t c = raw_connect();
    amqp_queue_declare(c, 1, amqp_cstring_bytes(dlq), 0, 0, 0, 0, amqp_empty_table);
    assert_true(raw_ok(c));
    raw_close(c);

    capture cap;
    capture_init(&cap);
    ew_manager *m = mgr_capture(rmq_test_url(), "s1", &cap);
    ew_listener_desc d = {.event = &ev, .name = "L", .retry = {.attempts = 1}};
    assert_int_equal(ew_listen(m, &d, always_fails, NULL), EW_OK);
    assert_int_equal(ew_manager_start(m), EW_OK);
    send_range(m, &ev, 0, 1);
    char want[300];
    snprintf(want, sizeof want, "dead-letter publish to %s failed", dlq);
    assert_true(capture_wait_for(&cap, want, 30000));
    assert_true(capture_wait_for(&cap, "inequivalent arg 'durable'", 30000));
    print_message("%s", cap.text);
    assert_int_equal(ew_manager_stop(m, 10000), EW_OK);
    ew_manager_free(m);
    c = raw_connect();
    amqp_message_t msg;
    assert_true(raw_get(c, q, &msg));
    amqp_destroy_message(&msg);
    assert_false(raw_get(c, dlq, &msg));
    raw_close(c);
    raw_delete(q, false);
    raw_delete(dlq, false);
    raw_delete(ev.name, true);
}

static void incompatible_exchange_is_a_clear_error(void **state)
{
    (void)state;
    EV(ev, "ClashX", true);
    amqp_connection_state_t c = raw_connect();
    amqp_exchange_declare(c, 1, amqp_cstring_bytes(ev.name), amqp_cstring_bytes("fanout"), 0,
                          1, 0, 0, amqp_empty_table);
    assert_true(raw_ok(c));
    raw_close(c);

    /* A sender without listeners meets it on its first send. */
    capture cap;
    capture_init(&cap);
    ew_manager *m = mgr_capture(rmq_test_url(), "s1", &cap);
    assert_int_equal(ew_manager_start(m), EW_OK);
    assert_int_equal(ew_send(m, &ev, &(conf_event){.id = 1, .text = "x"}), EW_ECONFLICT);
    print_message("%s", cap.text);
    char want[300];
    snprintf(want, sizeof want, "declaring exchange '%s' (topic, durable)", ev.name);
    assert_true(capture_has(&cap, want));
    assert_true(capture_has(&cap, "inequivalent arg 'type'"));
    /* The connection survived the refusal: other events still work. */
    EV(ok, "ClashOk", true);
    tally t;
    tally_init(&t, 3);
    ew_listener_desc d = {.event = &ok, .name = "L"};
    assert_int_equal(ew_listen(m, &d, tally_listener, tref(&t, "s1")), EW_OK);
    send_range(m, &ok, 0, 3);
    assert_true(tally_wait_all(&t, 30000));
    ew_manager_free(m);
    tally_free(&t);
    raw_delete(ev.name, true);
    rmq_cleanup(0, ok.name, (const char *const[]){"L", NULL});
}

static void bad_credentials_fail_at_start(void **state)
{
    (void)state;
    capture cap;
    capture_init(&cap);
    ew_manager *m = mgr_capture("rabbitmq://guest:wrong@127.0.0.1:5672/", "s1", &cap);
    int64_t t0 = ewi_now_ms();
    assert_int_equal(ew_manager_start(m), EW_EAUTH);
    /* Refused credentials are not retried until the start timeout. */
    assert_true(ewi_now_ms() - t0 < 5000);
    print_message("%s", cap.text);
    assert_true(capture_has(&cap, "refused the login of user 'guest'"));
    assert_true(capture_has(&cap, "ACCESS_REFUSED"));
    assert_false(capture_has(&cap, "wrong")); /* the password stays out */
    ew_manager_free(m);
}

static void wrong_vhost_fails_at_start(void **state)
{
    (void)state;
    capture cap;
    capture_init(&cap);
    ew_manager *m = mgr_capture("rabbitmq://guest:guest@127.0.0.1:5672/no-such-vhost", "s1",
                                &cap);
    assert_int_equal(ew_manager_start(m), EW_EAUTH);
    print_message("%s", cap.text);
    assert_true(capture_has(&cap, "vhost 'no-such-vhost'"));
    assert_true(capture_has(&cap, "NOT_ALLOWED"));
    ew_manager_free(m);
}

static void no_broker_fails_at_start_after_the_timeout(void **state)
{
    (void)state;
    capture cap;
    capture_init(&cap);
    ew_options o = {.on_error = capture_error, .error_user = &cap, .log_level = EW_LOG_ERROR,
                    .start_timeout_ms = 1500};
    /* Port 1 on 127.0.0.1: nothing listens there. */
    ew_manager *m = mgr_new_opts("rabbitmq://guest:guest@127.0.0.1:1/", "s1", &o);
    int64_t t0 = ewi_now_ms();
    assert_int_equal(ew_manager_start(m), EW_ECONNECT);
    int64_t took = ewi_now_ms() - t0;
    assert_true(took >= 1400 && took < 6000);
    print_message("%s", cap.text);
    assert_true(capture_has(&cap, "cannot reach RabbitMQ at rabbitmq://127.0.0.1:1/"));
    ew_manager_free(m);
}

/* The broker connection (its pid, as close_connection takes it) whose
 * client-provided name is cname, into buf, and its state ("running",
 * "closed", ...) into state; NULL when there is none. */
static const char *connection_named(const char *cname, char *buf, size_t len, char *state,
                                    size_t statelen)
{
    char *out = ctl(SCRIPT, "list_connections pid state client_properties");
    const char *found = NULL;
    for (const char *p = out; p && *p && !found;) {
        const char *e = strchr(p, '\n');
        size_t ll = e ? (size_t)(e - p) : strlen(p);
        const char *tab = memchr(p, '\t', ll);
        const char *tab2 = tab ? memchr(tab + 1, '\t', ll - (size_t)(tab + 1 - p)) : NULL;
        char line[2048];
        snprintf(line, sizeof line, "%.*s", (int)ll, p);
        if (tab2 && strstr(line, cname)) {
            snprintf(buf, len, "%.*s", (int)(tab - p), p);
            snprintf(state, statelen, "%.*s", (int)(tab2 - tab - 1), tab + 1);
            found = buf;
        }
        p = e ? e + 1 : NULL;
    }
    free(out);
    return found;
}

/* Has the broker close the connection named cname (an operator's
 * close_connection) and waits until it is no longer running. The broker
 * sends connection.close at once and marks the connection closed; it drops
 * it only when the client answers (an idle administration connection does
 * not read) or after its closing timeout (30 s without heartbeats). Closed
 * is what the declarations that follow must cope with. */
static void close_and_wait_closed(const char *cname)
{
    char conn[256], cstate[64];
    if (!connection_named(cname, conn, sizeof conn, cstate, sizeof cstate))
        fail_msg("no broker connection named '%s'", cname);
    char args[512];
    snprintf(args, sizeof args, "close_connection '%s' 'stale administration test'", conn);
    free(ctl(SCRIPT, args));
    int64_t until = ewi_now_ms() + 30000;
    while (connection_named(cname, conn, sizeof conn, cstate, sizeof cstate) &&
           strcmp(cstate, "running") == 0)
        if (ewi_now_ms() > until)
            fail_msg("the broker still lists '%s' as running 30 s after close_connection",
                     cname);
}

/* An administration connection the broker closed while it was idle (an
 * operator's close_connection) is opened again for the next batch of
 * declarations, and for the next single one, while the broker still holds
 * the closed connection. */
static void a_closed_administration_connection_is_reopened(void **state)
{
    (void)state;
    EV(ev, "StaleAdmin", true);
    char cname[128], qa[256], qb[256], dlqa[256], dlqb[256], err[600];
    snprintf(cname, sizeof cname, "eventwire test administration %s", ev.name);
    rmqa_conf c = {.host = "127.0.0.1", .port = 5672, .connect_timeout_ms = 5000,
                   .conn_name = cname, .label = "127.0.0.1:5672 (test)"};
    rmqa *a = rmqa_new(&c);
    assert_non_null(a);
    rmqa_decl ex = {.kind = RMQA_EXCHANGE, .event = ev.name};
    if (rmqa_ensure(a, &ex, err, sizeof err) != EW_OK)
        fail_msg("declaring the exchange: %s", err);

    close_and_wait_closed(cname);

    snprintf(qa, sizeof qa, "%s::A", ev.name);
    snprintf(qb, sizeof qb, "%s::B", ev.name);
    snprintf(dlqa, sizeof dlqa, "%s::A.dlq", ev.name);
    snprintf(dlqb, sizeof dlqb, "%s::B.dlq", ev.name);
    rmqa_decl ds[] = {
        {.kind = RMQA_LISTENER, .event = ev.name, .queue = qa, .dlq = dlqa, .durable = true},
        {.kind = RMQA_LISTENER, .event = ev.name, .queue = qb, .dlq = dlqb, .durable = true}};
    ew_err rcs[2];
    err[0] = '\0';
    ew_err rc = rmqa_ensure_many(a, ds, 2, rcs, err, sizeof err);
    if (rc != EW_OK)
        fail_msg("the batch after the close: %s: %s", ew_strerror(rc), err);
    assert_int_equal(rcs[0], EW_OK);
    assert_int_equal(rcs[1], EW_OK);
    char *qs = ctl(SCRIPT, "list_queues name durable");
    char row[512];
    bool both = ctl_row(qs, qa, row, sizeof row) && ctl_row(qs, qb, row, sizeof row);
    free(qs);
    assert_true(both);

    /* A single declaration after the same close, while the broker still
     * holds the closed connection: opened again as well. */
    close_and_wait_closed(cname);
    char qc[256], dlqc[256];
    snprintf(qc, sizeof qc, "%s::C", ev.name);
    snprintf(dlqc, sizeof dlqc, "%s::C.dlq", ev.name);
    rmqa_decl dc = {.kind = RMQA_LISTENER, .event = ev.name, .queue = qc, .dlq = dlqc,
                    .durable = true};
    err[0] = '\0';
    if ((rc = rmqa_ensure(a, &dc, err, sizeof err)) != EW_OK)
        fail_msg("a declaration after the close: %s: %s", ew_strerror(rc), err);
    qs = ctl(SCRIPT, "list_queues name durable");
    bool there = ctl_row(qs, qc, row, sizeof row);
    free(qs);
    assert_true(there);
    rmqa_free(a);
    raw_delete(qa, false);
    raw_delete(qb, false);
    raw_delete(qc, false);
    raw_delete(dlqa, false);
    raw_delete(dlqb, false);
    raw_delete(dlqc, false);
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
        cmocka_unit_test(topology_names_on_the_broker),
        cmocka_unit_test(a_closed_administration_connection_is_reopened),
        cmocka_unit_test(incompatible_queue_is_a_clear_error),
        cmocka_unit_test(incompatible_dead_letter_queue_keeps_the_message),
        cmocka_unit_test(incompatible_exchange_is_a_clear_error),
        cmocka_unit_test(bad_credentials_fail_at_start),
        cmocka_unit_test(wrong_vhost_fails_at_start),
        cmocka_unit_test(no_broker_fails_at_start_after_the_timeout),
    };
    return cmocka_run_group_tests_name("rabbitmq topology and errors", tests, NULL, NULL);
}
