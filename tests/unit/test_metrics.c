/* Metrics and readiness on local://: the counters after a known sequence
 * (with one worker and with several), send outcomes, readiness through
 * start, the transport's reports and stop, the Prometheus rendering, and
 * the cost of a read with 500 listeners.
 *
 *   unit_test_metrics                the cmocka tests
 *   unit_test_metrics --prometheus   prints the Prometheus text of a known
 *                                    run (check_prometheus.py parses it) */
#include "metrics_probe.h"
#include "support.h"

static const char *const DURATION = "messaging.process.duration";

static uint64_t lv(ew_manager *m, const char *name, const char *queue)
{
    return metric_value(m, name, queue);
}

/* 10 events handled, one failing once then handled, one failing every
 * attempt (2) and dead-lettered; waits until all of it was counted. */
static void run_known_sequence(ew_manager *m, const ew_event_desc *ev, tally *t,
                               uint32_t concurrency, char *queue)
{
    t->fail_once = 10;
    t->fail_always = 11;
    ew_listener_desc d = {.event = ev, .name = "Metered", .concurrency = concurrency,
                          .retry = {.attempts = 2, .backoff_ms = 5}};
    assert_int_equal(ew_listen(m, &d, tally_listener, tref(t, "s1")), EW_OK);
    assert_int_equal(ew_queue_name(m, &d, queue, EW_MAX_QUEUE_NAME), EW_OK);
    assert_int_equal(ew_manager_start(m), EW_OK);
    send_range(m, ev, 0, 12);
    WAIT_FOR(lv(m, "eventwire.listener.handled", queue) == 11 &&
                 lv(m, "eventwire.listener.dead_lettered", queue) == 1 &&
                 lv(m, "eventwire.listener.in_flight", queue) == 0,
             30000, "handled %llu of 11, dead-lettered %llu of 1, in flight %llu",
             (unsigned long long)lv(m, "eventwire.listener.handled", queue),
             (unsigned long long)lv(m, "eventwire.listener.dead_lettered", queue),
             (unsigned long long)lv(m, "eventwire.listener.in_flight", queue));
}

static void check_known_sequence(ew_manager *m, const char *queue)
{
    assert_int_equal(lv(m, "messaging.client.consumed.messages", queue), 12);
    assert_int_equal(lv(m, "eventwire.listener.handled", queue), 11);
    assert_int_equal(lv(m, "eventwire.listener.failed", queue), 3);
    assert_int_equal(lv(m, "eventwire.listener.retried", queue), 2);
    assert_int_equal(lv(m, "eventwire.listener.dead_lettered", queue), 1);
    assert_int_equal(lv(m, "eventwire.listener.redelivered", queue), 0);
    assert_int_equal(lv(m, "eventwire.listener.in_flight", queue), 0);
    assert_int_equal(lv(m, "eventwire.listener.consuming", queue), 1);
    assert_int_equal(lv(m, DURATION, queue), 14); /* 11 + 1 + 2 runs */
    assert_int_equal(lv(m, "messaging.client.sent.messages", NULL), 12);
    assert_int_equal(lv(m, "messaging.client.sent.messages", "EW_EINDOUBT"), 0);
    assert_int_equal(lv(m, "messaging.client.operation.duration", "send"), 12);
    assert_int_equal(lv(m, "eventwire.client.confirms.pending", NULL), 0);
    assert_int_equal(lv(m, "eventwire.manager.ready", NULL), 1);
    assert_int_equal(lv(m, "eventwire.client.connects", NULL), 0); /* local: none */
}

static void counts_a_known_sequence(uint32_t concurrency)
{
    EV(ev, "Metered", true);
    tally t;
    tally_init(&t, 12);
    ew_manager *m = mgr_new("local://metrics", "s1");
    char queue[EW_MAX_QUEUE_NAME];
    run_known_sequence(m, &ev, &t, concurrency, queue);
    check_known_sequence(m, queue);
    assert_int_equal(ew_manager_stop(m, 5000), EW_OK);
    assert_int_equal(lv(m, "eventwire.manager.ready", NULL), 0);
    assert_int_equal(lv(m, "eventwire.listener.consuming", queue), 0);
    /* Counters stay readable until free. */
    assert_int_equal(lv(m, "eventwire.listener.handled", queue), 11);
    ew_manager_free(m);
    tally_free(&t);
}

static void known_sequence_one_worker(void **state)
{
    (void)state;
    counts_a_known_sequence(1);
}

static void known_sequence_three_workers(void **state)
{
    (void)state;
    counts_a_known_sequence(3);
}

/* ---- sends ---------------------------------------------------------------- */

static void send_outcomes_are_counted(void **state)
{
    (void)state;
    EV(ev, "MeteredSend", false);
    ew_manager *m = mgr_new("local://metrics-send", "s1");
    conf_event e = {1, "x"};
    assert_int_equal(ew_send(m, &ev, &e), EW_ESTATE);
    assert_int_equal(lv(m, "messaging.client.sent.messages", "EW_ESTATE"), 1);
    /* Codes that never happened have no series; the in-doubt one always. */
    assert_int_equal(lv(m, "messaging.client.sent.messages", "EW_ETIMEDOUT"), METRIC_ABSENT);
    assert_int_equal(lv(m, "messaging.client.sent.messages", "EW_EINDOUBT"), 0);
    tally t;
    tally_init(&t, 20);
    listen_tally(m, &ev, "Sink", false, 1, &t);
    assert_int_equal(ew_manager_start(m), EW_OK);
    send_range(m, &ev, 0, 10);
    send_range_async(m, &ev, 10, 20);
    assert_int_equal(ew_send_to(m, &ev, "Nobody", &e), EW_ENOTFOUND);
    assert_int_equal(lv(m, "messaging.client.sent.messages", NULL), 20);
    assert_int_equal(lv(m, "messaging.client.sent.messages", "EW_ENOTFOUND"), 1);
    assert_int_equal(lv(m, "messaging.client.operation.duration", "send"), 20);
    assert_int_equal(lv(m, "eventwire.client.confirms.pending", NULL), 0);
    assert_true(tally_wait_all(&t, 30000));
    ew_manager_free(m);
    tally_free(&t);
}

/* ---- readiness ------------------------------------------------------------ */

static ewi_listener *listener_named(ew_manager *m, const char *name)
{
    pthread_mutex_lock(&m->mu);
    ewi_listener *l = m->listeners;
    while (l && strcmp(l->name, name) != 0)
        l = l->next;
    pthread_mutex_unlock(&m->mu);
    return l;
}

static void readiness_follows_the_transport(void **state)
{
    (void)state;
    EV(ev, "Ready", false);
    ew_manager *m = mgr_new("local://metrics-ready", "s1");
    tally t;
    tally_init(&t, 4);
    listen_tally(m, &ev, "A", false, 1, &t);
    listen_tally(m, &ev, "B", false, 2, &t);
    assert_false(ew_manager_ready(m)); /* not started */
    assert_int_equal(ew_manager_start(m), EW_OK);
    assert_true(ew_manager_ready(m));
    ewi_listener *a = listener_named(m, "A");
    assert_non_null(a);

    /* A transport's first connection, then a loss and a reconnect. */
    ewi_conn_state(m, 0, true);
    assert_true(ew_manager_ready(m));
    ewi_conn_state(m, 0, false);
    ewi_conn_state(m, 0, false); /* reported twice: one loss */
    assert_false(ew_manager_ready(m));
    assert_int_equal(lv(m, "eventwire.manager.ready", NULL), 0);
    ewi_sub_state(&a->sub, false); /* the loss took A's subscription */
    ewi_conn_state(m, 0, true);
    assert_false(ew_manager_ready(m)); /* connected, but A does not consume */
    assert_int_equal(lv(m, "eventwire.listener.consuming", a->queue), 0);
    ewi_sub_state(&a->sub, true);
    assert_true(ew_manager_ready(m));
    assert_int_equal(lv(m, "eventwire.client.connects", NULL), 2);
    assert_int_equal(lv(m, "eventwire.client.reconnects", NULL), 1);
    assert_int_equal(lv(m, "eventwire.client.disconnects", NULL), 1);

    /* A second connection (STOMP's consuming one) down alone. */
    ewi_conn_state(m, 1, true);
    ewi_conn_state(m, 1, false);
    assert_false(ew_manager_ready(m));
    ewi_conn_state(m, 1, true);
    assert_true(ew_manager_ready(m));

    /* Core's own mark after subscribe never hides a loss reported while
     * subscribe ran. */
    uint64_t gen = ewi_listener_sub_gen(a);
    ewi_sub_state(&a->sub, false);
    ewi_listener_consuming(a, gen);
    assert_false(ew_manager_ready(m));
    gen = ewi_listener_sub_gen(a);
    ewi_listener_consuming(a, gen);
    assert_true(ew_manager_ready(m));

    /* A listener added while running: ready again once ew_listen returned. */
    listen_tally(m, &ev, "C", false, 1, &t);
    assert_true(ew_manager_ready(m));
    send_range(m, &ev, 0, 4);
    WAIT_FOR(tally_total(&t) == 12, 10000, "%zu of 12 handled", tally_total(&t));
    assert_int_equal(ew_manager_stop(m, 5000), EW_OK);
    assert_false(ew_manager_ready(m));
    ew_manager_free(m);
    tally_free(&t);
    assert_false(ew_manager_ready(NULL));
}

/* ---- the visitor and Prometheus ------------------------------------------- */

typedef struct order_check {
    char seen[64][64]; /* metric names whose points ended */
    size_t nseen;
    char cur[64];
    size_t points;
    bool bad;
    char why[256];
} order_check;

static void order_fn(void *user, const ew_metric *x)
{
    order_check *o = user;
    o->points++;
    if (!x->name || !x->unit || !x->help || (x->nlabels && !x->labels)) {
        o->bad = true;
        snprintf(o->why, sizeof o->why, "a point with a NULL member");
        return;
    }
    if (x->kind == EW_METRIC_HISTOGRAM) {
        uint64_t sum = 0;
        for (size_t i = 0; i <= x->nbounds; i++)
            sum += x->counts[i];
        for (size_t i = 1; i < x->nbounds; i++)
            if (!(x->bounds[i - 1] < x->bounds[i]))
                o->bad = true;
        if (sum != x->count || x->nbounds != 19 || x->bounds[0] != 0.00001 ||
            x->bounds[18] != 10) {
            o->bad = true;
            snprintf(o->why, sizeof o->why, "%s: buckets do not add up or bad bounds", x->name);
        }
    }
    if (strcmp(o->cur, x->name) == 0)
        return;
    for (size_t i = 0; i < o->nseen; i++)
        if (strcmp(o->seen[i], x->name) == 0) {
            o->bad = true;
            snprintf(o->why, sizeof o->why, "points of %s are not together", x->name);
        }
    if (o->cur[0] && o->nseen < 64)
        snprintf(o->seen[o->nseen++], 64, "%s", o->cur);
    snprintf(o->cur, sizeof o->cur, "%s", x->name);
}

typedef struct textbuf {
    char *s;
    size_t len, cap;
    int fail_after; /* writes until one fails; <0: never */
} textbuf;

static ew_err text_write(void *user, const char *text, size_t len)
{
    textbuf *b = user;
    if (b->fail_after == 0)
        return EW_EIO;
    if (b->fail_after > 0)
        b->fail_after--;
    if (b->len + len + 1 > b->cap) {
        b->cap = (b->len + len + 1) * 2;
        b->s = realloc(b->s, b->cap);
        assert_non_null(b->s);
    }
    memcpy(b->s + b->len, text, len);
    b->len += len;
    b->s[b->len] = '\0';
    return EW_OK;
}

static void visit_and_prometheus(void **state)
{
    (void)state;
    EV(ev, "Prom", true);
    tally t;
    tally_init(&t, 12);
    ew_manager *m = mgr_new("local://metrics-prom", "s1");
    char queue[EW_MAX_QUEUE_NAME];
    run_known_sequence(m, &ev, &t, 1, queue);

    order_check o = {0};
    assert_int_equal(ew_metrics_visit(m, order_fn, &o), EW_OK);
    if (o.bad)
        fail_msg("%s", o.why);
    assert_true(o.points >= 17);
    assert_int_equal(ew_metrics_visit(NULL, order_fn, &o), EW_EINVAL);
    assert_int_equal(ew_metrics_visit(m, NULL, &o), EW_EINVAL);

    textbuf b = {.fail_after = -1};
    assert_int_equal(ew_metrics_prometheus(m, text_write, &b), EW_OK);
    char want[600];
    snprintf(want, sizeof want,
             "eventwire_listener_handled_total{messaging_destination_name=\"%s\"} 11\n", queue);
    assert_non_null(strstr(b.s, want));
    snprintf(want, sizeof want,
             "messaging_process_duration_seconds_bucket{messaging_destination_name=\"%s\","
             "le=\"+Inf\"} 14\n", queue);
    assert_non_null(strstr(b.s, want));
    snprintf(want, sizeof want,
             "messaging_process_duration_seconds_count{messaging_destination_name=\"%s\"} 14\n",
             queue);
    assert_non_null(strstr(b.s, want));
    assert_non_null(strstr(b.s, "# TYPE messaging_process_duration_seconds histogram\n"));
    assert_non_null(strstr(b.s, "# TYPE messaging_client_sent_messages_total counter\n"));
    assert_non_null(strstr(b.s, "\nmessaging_client_sent_messages_total 12\n"));
    assert_non_null(strstr(b.s, "messaging_client_sent_messages_total{error_type=\"EW_EINDOUBT\"} 0\n"));
    assert_non_null(strstr(b.s, "le=\"0.000025\""));
    assert_non_null(strstr(b.s, "\neventwire_manager_ready 1\n"));
    /* One HELP and one TYPE per family. */
    size_t types = 0;
    for (const char *p = b.s; (p = strstr(p, "# TYPE messaging_client_sent_messages_total ")); p++)
        types++;
    assert_int_equal(types, 1);
    free(b.s);

    /* A writer's error stops the rendering and is returned. */
    textbuf f = {.fail_after = 0};
    assert_int_equal(ew_metrics_prometheus(m, text_write, &f), EW_EIO);
    free(f.s);
    assert_int_equal(ew_metrics_prometheus(m, NULL, NULL), EW_EINVAL);
    ew_manager_free(m);
    tally_free(&t);
}

/* ---- cost of a read ----------------------------------------------------- */

enum { MANY = 500 };

static ew_err count_write(void *user, const char *text, size_t len)
{
    (void)text;
    *(size_t *)user += len;
    return EW_OK;
}

static void reading_500_listeners_is_cheap(void **state)
{
    (void)state;
    EV(ev, "Many", false);
    ew_manager *m = mgr_new("local://metrics-many", "s1");
    tally t;
    tally_init(&t, 1);
    for (int i = 0; i < MANY; i++) {
        char name[32];
        snprintf(name, sizeof name, "L%03d", i);
        listen_tally(m, &ev, name, false, 1, &t);
    }
    assert_int_equal(ew_manager_start(m), EW_OK);
    assert_true(ew_manager_ready(m));
    send_range(m, &ev, 0, 1);
    WAIT_FOR(tally_total(&t) == MANY, 30000, "%zu of %d handled", tally_total(&t), MANY);
    enum { ROUNDS = 20 };
    int64_t t0 = ewi_now_ns();
    size_t bytes = 0;
    for (int r = 0; r < ROUNDS; r++)
        assert_int_equal(ew_metrics_prometheus(m, count_write, &bytes), EW_OK);
    int64_t prom_ns = (ewi_now_ns() - t0) / ROUNDS;
    t0 = ewi_now_ns();
    for (int r = 0; r < ROUNDS; r++)
        assert_true(ew_manager_ready(m));
    int64_t ready_ns = (ewi_now_ns() - t0) / ROUNDS;
    print_message("500 listeners: ew_metrics_prometheus %.2f ms (%zu bytes), "
                  "ew_manager_ready %.1f us\n",
                  prom_ns / 1e6, bytes / ROUNDS, ready_ns / 1e3);
    char q[EW_MAX_QUEUE_NAME];
    snprintf(q, sizeof q, "%s::L499", ev.name);
    assert_int_equal(lv(m, "eventwire.listener.handled", q), 1);
    ew_manager_free(m);
    tally_free(&t);
}

/* ---- the text for the parser -------------------------------------------- */

static ew_err stdout_write(void *user, const char *text, size_t len)
{
    (void)user;
    return fwrite(text, 1, len, stdout) == len ? EW_OK : EW_EIO;
}

static int print_prometheus(void)
{
    /* The same known sequence; a name with characters label values escape
     * is not possible (names are checked), so the text is plain. */
    support_init("local://");
    EV(ev, "PromParse", true);
    tally t;
    tally_init(&t, 12);
    ew_manager *m = mgr_new("local://metrics-parse", "s1");
    t.fail_once = 10;
    t.fail_always = 11;
    ew_listener_desc d = {.event = &ev, .name = "Metered",
                          .retry = {.attempts = 2, .backoff_ms = 5}};
    char queue[EW_MAX_QUEUE_NAME];
    if (ew_listen(m, &d, tally_listener, tref(&t, "s1")) != EW_OK ||
        ew_queue_name(m, &d, queue, sizeof queue) != EW_OK || ew_manager_start(m) != EW_OK)
        return 1;
    for (int64_t i = 0; i < 12; i++)
        if (ew_send(m, &ev, &(conf_event){i, "x"}) != EW_OK)
            return 1;
    int64_t deadline = ewi_now_ms() + 30000;
    while ((lv(m, "eventwire.listener.handled", queue) != 11 ||
            lv(m, "eventwire.listener.dead_lettered", queue) != 1 ||
            lv(m, "eventwire.listener.in_flight", queue) != 0) &&
           ewi_left_ms(deadline) > 0)
        ewi_sleep_ms(2);
    fprintf(stderr, "queue %s\n", queue);
    ew_err rc = ew_metrics_prometheus(m, stdout_write, NULL);
    fflush(stdout);
    ew_manager_free(m);
    tally_free(&t);
    return rc == EW_OK ? 0 : 1;
}

int main(int argc, char **argv)
{
    if (argc == 2 && strcmp(argv[1], "--prometheus") == 0)
        return print_prometheus();
    support_init("local://");
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(known_sequence_one_worker),
        cmocka_unit_test(known_sequence_three_workers),
        cmocka_unit_test(send_outcomes_are_counted),
        cmocka_unit_test(readiness_follows_the_transport),
        cmocka_unit_test(visit_and_prometheus),
        cmocka_unit_test(reading_500_listeners_is_cheap),
    };
    return cmocka_run_group_tests_name("metrics", tests, NULL, NULL);
}
