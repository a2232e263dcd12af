/* The transport conformance suite: the same cases on every transport.
 *
 *   conformance <url>      e.g. local://, rabbitmq://guest:guest@127.0.0.1:5672/
 *
 * Every case uses event names unique to this run, so leftovers of earlier
 * runs on a broker cannot leak in. Modeled on Watermill's pubsub test suite:
 * what a user relies on, asserted the same way for every broker. */
#include <sched.h>

#include "metrics_probe.h"
#include "support.h"

static const char *URL;


/* ---- fan-out ------------------------------------------------------------ */

static void fan_out_reaches_every_listener(void **state)
{
    (void)state;
    EV(ev, "FanOut", true);
    tally a, b;
    tally_init(&a, 200);
    tally_init(&b, 200);
    ew_manager *m = mgr_new(URL, "s1");
    listen_tally(m, &ev, "A", false, 1, &a);
    listen_tally(m, &ev, "B", false, 1, &b);
    assert_int_equal(ew_manager_start(m), EW_OK);
    send_range(m, &ev, 0, 200);
    assert_true(tally_wait_all(&a, 30000));
    assert_true(tally_wait_all(&b, 30000));
    assert_int_equal(tally_dups(&a), 0);
    assert_int_equal(tally_dups(&b), 0);
    ew_manager_free(m);
    tally_free(&a);
    tally_free(&b);
}

/* ---- competing consumers ------------------------------------------------ */

static void one_listener_on_two_servers_competes(void **state)
{
    (void)state;
    EV(ev, "Compete", true);
    tally t;
    tally_init(&t, 300);
    tally_slow(&t, 2); /* a little work per event, so both get a share */
    ew_manager *m1 = mgr_new(URL, "s1"), *m2 = mgr_new(URL, "s2");
    ew_listener_desc d = {.event = &ev, .name = "Worker", .prefetch = 10};
    assert_int_equal(ew_listen(m1, &d, tally_listener, tref(&t, "s1")), EW_OK);
    assert_int_equal(ew_listen(m2, &d, tally_listener, tref(&t, "s2")), EW_OK);
    assert_int_equal(ew_manager_start(m1), EW_OK);
    assert_int_equal(ew_manager_start(m2), EW_OK);
    send_range(m1, &ev, 0, 300);
    assert_true(tally_wait_all(&t, 60000));
    assert_int_equal(tally_dups(&t), 0);
    /* Both servers took part: the queue is shared, not copied. */
    size_t on1 = tally_by_label(&t, "s1"), on2 = tally_by_label(&t, "s2");
    print_message("competing: %zu on s1, %zu on s2\n", on1, on2);
    assert_true(on1 > 0 && on2 > 0);
    assert_int_equal(on1 + on2, 300);
    ew_manager_free(m1);
    ew_manager_free(m2);
    tally_free(&t);
}

/* ---- per_process -------------------------------------------------------- */

static void per_process_gives_every_server_a_copy(void **state)
{
    (void)state;
    EV(ev, "PerProcess", true);
    tally t1, t2;
    tally_init(&t1, 100);
    tally_init(&t2, 100);
    ew_manager *m1 = mgr_new(URL, "s1"), *m2 = mgr_new(URL, "s2");
    listen_tally(m1, &ev, "Cache", true, 1, &t1);
    listen_tally(m2, &ev, "Cache", true, 1, &t2);
    assert_int_equal(ew_manager_start(m1), EW_OK);
    assert_int_equal(ew_manager_start(m2), EW_OK);
    char q[EW_MAX_QUEUE_NAME];
    ew_listener_desc d = {.event = &ev, .name = "Cache", .per_process = true};
    assert_int_equal(ew_queue_name(m1, &d, q, sizeof q), EW_OK);
    char want[EW_MAX_QUEUE_NAME];
    snprintf(want, sizeof want, "%s::Cache-s1", ev.name);
    assert_string_equal(q, want);
    send_range(m1, &ev, 0, 100);
    assert_true(tally_wait_all(&t1, 30000));
    assert_true(tally_wait_all(&t2, 30000));
    assert_string_equal(t1.last_queue, want);
    ew_manager_free(m1);
    ew_manager_free(m2);
    tally_free(&t1);
    tally_free(&t2);
}

/* ---- headers and pipelines ---------------------------------------------- */

static ew_err stamp_send(void *user, ew_envelope *env, const ew_event_desc *ev)
{
    (void)ev;
    return ew_envelope_set_header(env, "session", user);
}

static _Thread_local char seen_session[64];

static ew_err stamp_handle(void *user, const ew_envelope *env, const ew_listener_desc *l)
{
    (void)user;
    (void)l;
    const char *s = ew_envelope_header(env, "session");
    snprintf(seen_session, sizeof seen_session, "%s", s ? s : "(none)");
    return EW_OK;
}

static ew_err add_odd_header(void *user, ew_envelope *env, const ew_event_desc *ev)
{
    (void)user;
    (void)ev;
    return ew_envelope_set_header(env, "odd", ODD_VALUE);
}

static ew_err check_headers(ew_delivery *d, const void *event, void *user)
{
    tally *t = user;
    const conf_event *e = event;
    /* The handle hook ran on this thread before us. */
    bool ok = strcmp(seen_session, "s-42") == 0 &&
              strcmp(ew_delivery_header(d, "session"), "s-42") == 0 &&
              strcmp(ew_delivery_header(d, "odd"), ODD_VALUE) == 0 &&
              ew_envelope_message_id(ew_delivery_envelope(d)) != NULL &&
              strlen(ew_envelope_message_id(ew_delivery_envelope(d))) == 36 &&
              ew_envelope_sent_at(ew_delivery_envelope(d)) > 1600000000000LL &&
              ew_delivery_attempt(d) == 1 &&
              strcmp(ew_envelope_event(ew_delivery_envelope(d)), e->text) == 0;
    if (!ok)
        print_message("headers: session=%s/%s odd=%s id=%s attempt=%u event=%s\n",
                      seen_session, ew_delivery_header(d, "session"),
                      ew_delivery_header(d, "odd"),
                      ew_envelope_message_id(ew_delivery_envelope(d)),
                      ew_delivery_attempt(d), ew_envelope_event(ew_delivery_envelope(d)));
    tally_note(t, e->id, ok ? "ok" : "bad", ew_delivery_queue(d));
    return EW_OK;
}

static void headers_and_pipelines_travel_end_to_end(void **state)
{
    (void)state;
    EV(ev, "Headers", true);
    tally t;
    tally_init(&t, 20);
    ew_manager *m = mgr_new(URL, "s1");
    ew_pipeline stamp = {.name = "stamp", .send = stamp_send, .handle = stamp_handle};
    ew_pipeline odd = {.name = "odd", .send = add_odd_header};
    assert_int_equal(ew_add_pipeline(m, &stamp, (void *)(uintptr_t)"s-42"), EW_OK);
    assert_int_equal(ew_add_pipeline(m, &odd, NULL), EW_OK);
    assert_int_equal(ew_listen(m, &(ew_listener_desc){.event = &ev, .name = "H"},
                               check_headers, &t),
                     EW_OK);
    assert_int_equal(ew_manager_start(m), EW_OK);
    for (int64_t i = 0; i < 20; i++) {
        conf_event e = {.id = i, .text = ev.name};
        assert_int_equal(ew_send(m, &ev, &e), EW_OK);
    }
    assert_true(tally_wait_all(&t, 30000));
    assert_int_equal(tally_by_label(&t, "bad"), 0);
    ew_manager_free(m);
    tally_free(&t);
}

/* ---- send to one listener ----------------------------------------------- */

static void send_to_reaches_only_that_listener(void **state)
{
    (void)state;
    EV(ev, "SendTo", true);
    tally a, b;
    tally_init(&a, 11);
    tally_init(&b, 11);
    ew_manager *m = mgr_new(URL, "s1");
    listen_tally(m, &ev, "A", false, 1, &a);
    listen_tally(m, &ev, "B", false, 1, &b);
    assert_int_equal(ew_manager_start(m), EW_OK);
    for (int64_t i = 0; i < 5; i++)
        assert_int_equal(ew_send_to(m, &ev, "A", &(conf_event){.id = i, .text = "to-a"}),
                         EW_OK);
    /* Then a broadcast: B, ordered, must see it as its first and only event. */
    for (int64_t i = 5; i < 10; i++)
        assert_int_equal(ew_send(m, &ev, &(conf_event){.id = i, .text = "all"}), EW_OK);
    /* A sentinel broadcast last: once B (one worker, in order) handled it,
     * anything sent before it to B's queue was handled too. */
    assert_int_equal(ew_send(m, &ev, &(conf_event){.id = 10, .text = "sentinel"}), EW_OK);
    assert_true(tally_wait_all(&a, 30000));
    assert_true(tally_wait_ids(&b, 5, 11, 30000));
    for (int64_t i = 0; i < 5; i++)
        if (tally_seen(&b, i))
            fail_msg("listener B handled event %lld, sent to A only", (long long)i);
    assert_int_equal(tally_total(&b), 6);
    /* A listener that does not exist is an error, not a silent loss. */
    assert_int_not_equal(ew_send_to(m, &ev, "Nobody", &(conf_event){.id = 0, .text = "x"}),
                         EW_OK);
    ew_manager_free(m);
    tally_free(&a);
    tally_free(&b);
}

/* ---- ordering ----------------------------------------------------------- */

static void concurrency_one_keeps_order(void **state)
{
    (void)state;
    EV(ev, "Order", true);
    tally t;
    tally_init(&t, 1000);
    ew_manager *m = mgr_new(URL, "s1");
    listen_tally(m, &ev, "Seq", false, 1, &t);
    assert_int_equal(ew_manager_start(m), EW_OK);
    send_range_async(m, &ev, 0, 1000);
    assert_true(tally_wait_all(&t, 60000));
    assert_int_equal(t.out_of_order, 0);
    ew_manager_free(m);
    tally_free(&t);
}

/* ---- retry, then dead letter -------------------------------------------- */

static void failing_listener_is_retried_then_dead_lettered(void **state)
{
    (void)state;
    EV(ev, "Retry", true);
    tally t;
    tally_init(&t, 21);
    t.fail_always = 13; /* every attempt fails */
    t.fail_once = 7;    /* the first attempt fails */
    ew_manager *m = mgr_new(URL, "s1");
    ew_listener_desc d = {.event = &ev, .name = "Flaky",
                          .retry = {.attempts = 3, .backoff_ms = 10}};
    assert_int_equal(ew_listen(m, &d, tally_listener, tref(&t, "s1")), EW_OK);
    assert_int_equal(ew_manager_start(m), EW_OK);
    send_range(m, &ev, 0, 20);
    assert_true(tally_wait_ids(&t, 0, 13, 30000));
    assert_true(tally_wait_ids(&t, 14, 20, 30000));
    dlq_box box = {0};
    size_t got = 0;
    ew_dead_letter_options dl = {.event = &ev, .listener = "Flaky", .max = 10,
                                 .timeout_ms = 30000, .fn = dlq_collect, .user = &box};
    assert_int_equal(ew_dead_letters(m, &dl, &got), EW_OK);
    assert_int_equal(got, 1);
    assert_int_equal(box.n, 1);
    assert_int_equal(box.ids[0], 13);
    assert_string_equal(box.reason[0], "listener-failed");
    assert_string_equal(box.attempts[0], "3");
    char q[EW_MAX_QUEUE_NAME];
    snprintf(q, sizeof q, "%s::Flaky", ev.name);
    assert_string_equal(box.queue[0], q);
    assert_int_equal(t.attempts[13], 3);
    assert_int_equal(t.attempts[7], 2);
    assert_int_equal(t.max_attempt_seen[7], 2);
    /* Nothing else arrives in dead letters (no redelivery loop): a sentinel
     * that fails too is the next dead letter; a second one of 13 would come
     * before it. */
    pthread_mutex_lock(&t.mu);
    t.fail_always = 20;
    pthread_mutex_unlock(&t.mu);
    send_range(m, &ev, 20, 21);
    assert_int_equal(ew_dead_letters(m, &(ew_dead_letter_options){.event = &ev, .listener = "Flaky", .max = 1, .timeout_ms = 30000, .fn = dlq_collect, .user = &box}, &got),
                     EW_OK);
    if (got != 1 || box.ids[1] != 20)
        fail_msg("the dead letter after 13 is %s%lld, expected the sentinel 20",
                 got ? "" : "missing: ", got ? (long long)box.ids[1] : 0LL);
    pthread_mutex_lock(&t.mu);
    assert_int_equal(t.attempts[13], 3);
    pthread_mutex_unlock(&t.mu);
    ew_manager_free(m);
    tally_free(&t);
}

/* ---- metrics ------------------------------------------------------------ */

static uint64_t mv(ew_manager *m, const char *name, const char *label)
{
    return metric_value(m, name, label);
}

/* A known sequence: 10 events handled, one failing once and then handled,
 * one failing on both its attempts and dead-lettered. Every counter of the
 * listener and of the sends says exactly that, and the manager is ready. */
static void metrics_count_a_known_sequence(void **state)
{
    (void)state;
    EV(ev, "Metered", true);
    tally t;
    tally_init(&t, 12);
    t.fail_once = 10;
    t.fail_always = 11;
    ew_manager *m = mgr_new(URL, "s1");
    ew_listener_desc d = {.event = &ev, .name = "Metered",
                          .retry = {.attempts = 2, .backoff_ms = 10}};
    assert_int_equal(ew_listen(m, &d, tally_listener, tref(&t, "s1")), EW_OK);
    char q[EW_MAX_QUEUE_NAME];
    assert_int_equal(ew_queue_name(m, &d, q, sizeof q), EW_OK);
    assert_false(ew_manager_ready(m));
    assert_int_equal(ew_manager_start(m), EW_OK);
    assert_true(ew_manager_ready(m));
    send_range(m, &ev, 0, 12);
    WAIT_FOR(mv(m, "eventwire.listener.handled", q) == 11 &&
                 mv(m, "eventwire.listener.dead_lettered", q) == 1 &&
                 mv(m, "eventwire.listener.in_flight", q) == 0,
             60000, "%s: handled %llu of 11, dead-lettered %llu of 1, in flight %llu", q,
             (unsigned long long)mv(m, "eventwire.listener.handled", q),
             (unsigned long long)mv(m, "eventwire.listener.dead_lettered", q),
             (unsigned long long)mv(m, "eventwire.listener.in_flight", q));
    struct {
        const char *name, *label;
        uint64_t want;
    } checks[] = {
        {"messaging.client.consumed.messages", q, 12},
        {"eventwire.listener.handled", q, 11},
        {"eventwire.listener.failed", q, 3},      /* 1 + 2 runs */
        {"eventwire.listener.retried", q, 2},     /* one retry each */
        {"eventwire.listener.dead_lettered", q, 1},
        {"eventwire.listener.redelivered", q, 0},
        {"eventwire.listener.in_flight", q, 0},
        {"eventwire.listener.consuming", q, 1},
        {"messaging.process.duration", q, 14},    /* runs: 10 + 2 + 2 */
        {"messaging.client.sent.messages", NULL, 12},
        {"messaging.client.sent.messages", "EW_EINDOUBT", 0},
        {"messaging.client.operation.duration", "send", 12},
        {"eventwire.client.confirms.pending", NULL, 0},
        {"eventwire.client.reconnects", NULL, 0},
        {"eventwire.client.disconnects", NULL, 0},
        {"eventwire.manager.ready", NULL, 1},
    };
    for (size_t i = 0; i < sizeof checks / sizeof checks[0]; i++) {
        uint64_t got = mv(m, checks[i].name, checks[i].label);
        if (got != checks[i].want)
            fail_msg("%s{%s}: %llu, expected %llu", checks[i].name,
                     checks[i].label ? checks[i].label : "", (unsigned long long)got,
                     (unsigned long long)checks[i].want);
    }
    /* Broker transports count their connections (STOMP has two); local://
     * has none. */
    uint64_t connects = mv(m, "eventwire.client.connects", NULL);
    if (strncmp(URL, "local:", 6) == 0)
        assert_int_equal(connects, 0);
    else if (connects < 1 || connects > 2)
        fail_msg("%llu connects, expected 1 (2 on STOMP)", (unsigned long long)connects);
    /* The dead letter is there, once. */
    dlq_box box = {0};
    size_t got = 0;
    ew_dead_letter_options dl = {.event = &ev, .listener = "Metered", .max = 10,
                                 .timeout_ms = 30000, .fn = dlq_collect, .user = &box};
    assert_int_equal(ew_dead_letters(m, &dl, &got), EW_OK);
    assert_int_equal(got, 1);
    assert_int_equal(box.ids[0], 11);
    assert_int_equal(ew_manager_stop(m, 10000), EW_OK);
    assert_false(ew_manager_ready(m));
    assert_int_equal(mv(m, "eventwire.listener.consuming", q), 0);
    ew_manager_free(m);
    tally_free(&t);
}

/* ---- trace context ------------------------------------------------------ */

typedef struct trace_seen {
    pthread_mutex_t mu;
    int handled[3];
    bool had[3];          /* ew_trace_current in the listener */
    ew_trace_context ctx[3];
    char header[3][64];   /* the traceparent header as received */
    int begins_with_ctx, begins_without, ends;
    pthread_t sender;
    bool same_thread;     /* a listener ran on the sending thread */
} trace_seen;

static ew_err trace_listener(ew_delivery *d, const void *event, void *user)
{
    const conf_event *e = event;
    trace_seen *t = user;
    if (e->id < 0 || e->id > 2)
        return EW_OK;
    pthread_mutex_lock(&t->mu);
    size_t i = (size_t)e->id;
    t->had[i] = ew_trace_current(&t->ctx[i]);
    const char *h = ew_delivery_header(d, "traceparent");
    snprintf(t->header[i], sizeof t->header[i], "%s", h ? h : "");
    t->same_thread |= pthread_equal(pthread_self(), t->sender);
    t->handled[i]++;
    pthread_mutex_unlock(&t->mu);
    return EW_OK;
}

static void trace_begin(void *user, const ew_trace_context *ctx, const ew_listener_desc *l)
{
    (void)l;
    trace_seen *t = user;
    pthread_mutex_lock(&t->mu);
    if (ctx)
        t->begins_with_ctx++;
    else
        t->begins_without++;
    pthread_mutex_unlock(&t->mu);
}

static void trace_end(void *user, const ew_trace_context *ctx, const ew_listener_desc *l,
                      ew_err result)
{
    (void)ctx;
    (void)l;
    (void)result;
    trace_seen *t = user;
    pthread_mutex_lock(&t->mu);
    t->ends++;
    pthread_mutex_unlock(&t->mu);
}

static int trace_handled(trace_seen *t)
{
    pthread_mutex_lock(&t->mu);
    int n = t->handled[0] + t->handled[1] + t->handled[2];
    pthread_mutex_unlock(&t->mu);
    return n;
}

/* The sending thread's W3C trace context reaches the listener's thread
 * with the trace pipeline: an unsampled one with a tracestate, a sampled
 * one, and none at all. */
static void trace_context_reaches_the_listener(void **state)
{
    (void)state;
    EV(ev, "Traced", true);
    trace_seen t = {.sender = pthread_self()};
    pthread_mutex_init(&t.mu, NULL);
    ew_manager *m = mgr_new(URL, "s1");
    ew_trace_hooks hooks = {.begin = trace_begin, .end = trace_end, .user = &t};
    assert_int_equal(ew_add_trace_pipeline(m, &hooks), EW_OK);
    assert_int_equal(ew_add_trace_pipeline(m, NULL), EW_ECONFLICT);
    assert_int_equal(ew_listen(m, &(ew_listener_desc){.event = &ev, .name = "Traced"},
                               trace_listener, &t),
                     EW_OK);
    assert_int_equal(ew_manager_start(m), EW_OK);

    static const char UNSAMPLED[] = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-00";
    static const char SAMPLED[] = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01";
    ew_trace_context c0, c1;
    assert_int_equal(ew_trace_parse(&c0, UNSAMPLED, "congo=t61rcWkgMzE,rojo=00f067aa0ba902b7"),
                     EW_OK);
    assert_int_equal(ew_trace_parse(&c1, SAMPLED, NULL), EW_OK);
    ew_trace_set_current(&c0);
    assert_int_equal(ew_send(m, &ev, &(conf_event){0, "unsampled"}), EW_OK);
    ew_trace_set_current(&c1);
    assert_int_equal(ew_send(m, &ev, &(conf_event){1, "sampled"}), EW_OK);
    ew_trace_set_current(NULL);
    assert_int_equal(ew_send(m, &ev, &(conf_event){2, "none"}), EW_OK);
    WAIT_FOR(trace_handled(&t) == 3, 30000, "%d of 3 traced events handled", trace_handled(&t));
    ew_manager_stop(m, 10000);

    assert_true(t.had[0]);
    assert_memory_equal(t.ctx[0].trace_id, c0.trace_id, 16);
    assert_memory_equal(t.ctx[0].span_id, c0.span_id, 8);
    assert_int_equal(t.ctx[0].flags, 0); /* not sampled, carried all the same */
    assert_string_equal(t.ctx[0].tracestate, "congo=t61rcWkgMzE,rojo=00f067aa0ba902b7");
    assert_string_equal(t.header[0], UNSAMPLED);
    assert_true(t.had[1]);
    assert_int_equal(t.ctx[1].flags, EW_TRACE_FLAG_SAMPLED);
    assert_string_equal(t.header[1], SAMPLED);
    assert_string_equal(t.ctx[1].tracestate, "");
    assert_false(t.had[2]);
    assert_string_equal(t.header[2], "");
    assert_false(t.same_thread);
    assert_int_equal(t.begins_with_ctx, 2);
    assert_int_equal(t.begins_without, 1);
    assert_int_equal(t.ends, 3);
    ew_manager_free(m);
    pthread_mutex_destroy(&t.mu);
}

/* ---- undecodable bodies ------------------------------------------------- */

static void undecodable_body_goes_to_dead_letters_at_once(void **state)
{
    (void)state;
    EV(ev, "Garbage", true);
    tally t;
    tally_init(&t, 2);
    ew_manager *m = mgr_new(URL, "s1");
    listen_tally(m, &ev, "Strict", false, 1, &t);
    assert_int_equal(ew_manager_start(m), EW_OK);
    /* Bytes that are not msgpack, then msgpack of the wrong shape. */
    publish_raw(m, ev.name, EW_CONTENT_TYPE_MSGPACK, "\xc1\xc1\xc1garbage", 10);
    publish_raw(m, ev.name, EW_CONTENT_TYPE_MSGPACK, "\x81\xa2" "id" "\xa3" "abc", 8);
    send_range(m, &ev, 0, 2); /* the service keeps running */
    assert_true(tally_wait_all(&t, 30000));
    dlq_box box = {0};
    size_t got = 0, total = 0;
    ew_dead_letter_options dl = {.event = &ev, .listener = "Strict", .max = 10,
                                 .timeout_ms = 10000, .fn = dlq_collect, .user = &box};
    while (total < 2 && ew_dead_letters(m, &dl, &got) == EW_OK && got > 0)
        total += got;
    assert_int_equal(total, 2);
    for (size_t i = 0; i < 2; i++) {
        assert_string_equal(box.reason[i], "decode-failed");
        assert_string_equal(box.attempts[i], "0");
    }
    assert_non_null(strstr(box.error[1], "id"));
    ew_manager_free(m);
    tally_free(&t);
}

/* ---- a dead-letter reader that refuses --------------------------------- */

static ew_err never_handles(ew_delivery *d, const void *event, void *user)
{
    (void)d, (void)event, (void)user;
    return EW_ENORETRY;
}

typedef struct refusal {
    int calls;
    char id[64];
    dlq_box seen; /* its headers, as the refusing reader saw them */
} refusal;

static ew_err refuse_dead_letter(void *user, const ew_envelope *env)
{
    refusal *r = user;
    if (r->calls++ == 0) {
        const char *id = ew_envelope_message_id(env);
        snprintf(r->id, sizeof r->id, "%s", id ? id : "");
        dlq_collect(&r->seen, env);
    }
    return EW_EBROKER; /* any code but EW_OK keeps the message */
}

typedef struct keep_box {
    dlq_box box;
    char ids[16][64];
} keep_box;

static ew_err keep_collect(void *user, const ew_envelope *env)
{
    keep_box *k = user;
    const char *id = ew_envelope_message_id(env);
    if (k->box.n < 16)
        snprintf(k->ids[k->box.n], sizeof k->ids[0], "%s", id ? id : "");
    return dlq_collect(&k->box, env);
}

static void refused_dead_letter_goes_back_to_its_queue(void **state)
{
    (void)state;
    EV(ev, "Refused", true);
    ew_manager *m = mgr_new(URL, "s1");
    assert_int_equal(ew_listen(m, &(ew_listener_desc){.event = &ev, .name = "Keep"},
                               never_handles, NULL),
                     EW_OK);
    assert_int_equal(ew_manager_start(m), EW_OK);
    send_range(m, &ev, 0, 2);
    refusal refused = {0};
    size_t got = 9;
    ew_dead_letter_options refuse = {.event = &ev, .listener = "Keep", .max = 10,
                                     .timeout_ms = 30000, .fn = refuse_dead_letter,
                                     .user = &refused};
    assert_int_equal(ew_dead_letters(m, &refuse, &got), EW_EBROKER);
    assert_int_equal(refused.calls, 1); /* the call ends at the first refusal */
    assert_int_equal(got, 0);
    assert_true(refused.id[0] != '\0');
    /* Both are there to be taken, the refused one included, as it was. */
    keep_box kept = {0};
    size_t total = 0;
    ew_dead_letter_options take = {.event = &ev, .listener = "Keep", .max = 10,
                                   .timeout_ms = 30000, .fn = keep_collect, .user = &kept};
    while (total < 2) {
        got = 0;
        ew_err rc = ew_dead_letters(m, &take, &got);
        if (rc != EW_OK || got == 0)
            fail_msg("dead letters: %zu of 2 taken, then %s: %s", total, ew_strerror(rc),
                     ew_last_error());
        total += got;
    }
    assert_int_equal(total, 2);
    assert_int_equal(kept.box.n, 2);
    assert_true((kept.box.ids[0] == 0 && kept.box.ids[1] == 1) ||
                (kept.box.ids[0] == 1 && kept.box.ids[1] == 0));
    for (size_t i = 0; i < 2; i++)
        assert_string_equal(kept.box.reason[i], "listener-failed");
    size_t same = 2;
    for (size_t i = 0; i < 2; i++)
        if (strcmp(kept.ids[i], refused.id) == 0)
            same = i;
    if (same == 2)
        fail_msg("the refused dead letter %s is not among those taken (%s, %s)", refused.id,
                 kept.ids[0], kept.ids[1]);
    assert_int_equal(kept.box.ids[same], refused.seen.ids[0]);
    assert_string_equal(kept.box.reason[same], refused.seen.reason[0]);
    assert_string_equal(kept.box.attempts[same], refused.seen.attempts[0]);
    assert_string_equal(kept.box.queue[same], refused.seen.queue[0]);
    assert_string_equal(kept.box.error[same], refused.seen.error[0]);
    ew_manager_free(m);
}

/* ---- waiting for the first dead letter ---------------------------------- */

typedef struct late_reader {
    ew_manager *m;
    const ew_event_desc *ev;
    keep_box box;
    size_t got;
    ew_err rc;
} late_reader;

static void *read_first_dead_letter(void *arg)
{
    late_reader *r = arg;
    ew_dead_letter_options o = {.event = r->ev, .listener = "Late", .max = 1,
                                .timeout_ms = 30000, .fn = keep_collect, .user = &r->box};
    r->rc = ew_dead_letters(r->m, &o, &r->got);
    return NULL;
}

/* ew_dead_letters waits up to its timeout for the first dead letter, also
 * while none has been made yet (on the brokers the first dead letter makes
 * the dead-letter queue). */
static void dead_letters_wait_for_the_first(void **state)
{
    (void)state;
    EV(ev, "LateDlq", true);
    ew_manager *m = mgr_new(URL, "s1");
    assert_int_equal(ew_listen(m, &(ew_listener_desc){.event = &ev, .name = "Late"},
                               never_handles, NULL),
                     EW_OK);
    assert_int_equal(ew_manager_start(m), EW_OK);
    /* None yet: the call waits its timeout out, then takes nothing. */
    keep_box none = {0};
    size_t got = 9;
    ew_dead_letter_options o = {.event = &ev, .listener = "Late", .max = 1, .timeout_ms = 300,
                                .fn = keep_collect, .user = &none};
    int64_t t0 = ewi_now_ms();
    assert_int_equal(ew_dead_letters(m, &o, &got), EW_OK);
    int64_t waited = ewi_now_ms() - t0;
    assert_int_equal(got, 0);
    if (waited < 300)
        fail_msg("ew_dead_letters returned after %lld ms, before its timeout of 300 ms",
                 (long long)waited);
    /* A reader that waits when the first dead letter comes takes it. */
    late_reader r = {.m = m, .ev = &ev};
    pthread_t th;
    assert_int_equal(pthread_create(&th, NULL, read_first_dead_letter, &r), 0);
    send_range(m, &ev, 0, 1);
    pthread_join(th, NULL);
    if (r.rc != EW_OK || r.got != 1)
        fail_msg("the waiting reader got %zu dead letters (%s: %s)", r.got, ew_strerror(r.rc),
                 ew_last_error());
    assert_int_equal(r.box.box.n, 1);
    assert_string_equal(r.box.box.reason[0], "listener-failed");
    ew_manager_free(m);
}

/* ---- drain on stop ------------------------------------------------------ */

static void stop_drains_and_returns_the_rest(void **state)
{
    (void)state;
    EV(ev, "Drain", true);
    tally t;
    tally_init(&t, 20);
    tally_slow(&t, 150);
    /* A keeper holds the local broker (and its queue) across the restart. */
    ew_manager *keeper = mgr_new(URL, "keeper");
    assert_int_equal(ew_manager_start(keeper), EW_OK);
    ew_manager *m = mgr_new(URL, "s1");
    ew_listener_desc d = {.event = &ev, .name = "Slow", .concurrency = 2, .prefetch = 4};
    assert_int_equal(ew_listen(m, &d, tally_listener, tref(&t, "s1")), EW_OK);
    assert_int_equal(ew_manager_start(m), EW_OK);
    send_range(keeper, &ev, 0, 20);
    assert_true(tally_wait_count(&t, 2, 30000));
    assert_int_equal(ew_manager_stop(m, 10000), EW_OK);
    /* Every handler that started also finished. */
    assert_int_equal(t.started, t.finished);
    size_t first = tally_total(&t);
    if (m->ops->features & EWI_FEAT_VOLATILE) {
        /* In-process queues die with the process: the stop handled what
         * was queued (within its timeout). */
        if (first != 20)
            fail_msg("stop on %s handled %zu of 20 queued events", URL, first);
    } else if (first >= 20) {
        fail_msg("all 20 slow events were handled before the stop returned");
    }
    ew_manager_free(m);
    /* The rest is delivered to the next instance. */
    ew_manager *m2 = mgr_new(URL, "s2");
    tally_slow(&t, 0);
    assert_int_equal(ew_listen(m2, &d, tally_listener, tref(&t, "s2")), EW_OK);
    assert_int_equal(ew_manager_start(m2), EW_OK);
    assert_true(tally_wait_all(&t, 30000));
    print_message("drain: %zu handled before stop, %zu duplicates\n", first,
                  tally_dups(&t));
    ew_manager_free(m2);
    ew_manager_free(keeper);
    tally_free(&t);
}

/* ---- registration after start, threads, JSON ---------------------------- */

static void listener_added_after_start_receives(void **state)
{
    (void)state;
    EV(ev, "Late", true);
    tally early, late;
    tally_init(&early, 20);
    tally_init(&late, 20);
    ew_manager *m = mgr_new(URL, "s1");
    listen_tally(m, &ev, "Early", false, 1, &early);
    assert_int_equal(ew_manager_start(m), EW_OK);
    send_range(m, &ev, 0, 10);
    /* Subscribed by the time ew_listen returns: it gets what follows. */
    listen_tally(m, &ev, "Late", false, 1, &late);
    send_range(m, &ev, 10, 20);
    assert_true(tally_wait_all(&early, 30000));
    assert_true(tally_wait_ids(&late, 10, 20, 30000));
    ew_manager_free(m);
    tally_free(&early);
    tally_free(&late);
}

/* Whether queue E::<name> exists, asked of the broker by a fresh manager
 * (nothing remembered): a send to that one queue is refused with
 * EW_ENOTFOUND when it does not exist. */
static bool queue_exists(const ew_event_desc *ev, const char *name, int64_t id)
{
    ew_manager *c = mgr_new(URL, "probe");
    assert_int_equal(ew_manager_start(c), EW_OK);
    ew_err rc = ew_send_to(c, ev, name, &(conf_event){.id = id, .text = "probe"});
    if (rc != EW_OK && rc != EW_ENOTFOUND)
        fail_msg("send to %s: %s (%s)", name, ew_strerror(rc), ew_last_error());
    ew_manager_free(c);
    return rc == EW_OK;
}

static bool url_is_activemq(void)
{
    return strstr(URL, "dialect=activemq") || strstr(URL, ":61614");
}

static void unlisten_with_delete_removes_the_queue(void **state)
{
    (void)state;
    EV(ev, "Unlisten", true);
    tally keep, tmp;
    tally_init(&keep, 20);
    tally_init(&tmp, 11);
    ew_manager *m = mgr_new(URL, "s1");
    listen_tally(m, &ev, "Keep", false, 1, &keep);
    assert_int_equal(ew_manager_start(m), EW_OK);
    uint64_t reconnects = metric_value(m, "eventwire.client.reconnects", NULL);
    /* Added on the running manager: consuming once ew_listen returns. */
    listen_tally(m, &ev, "Tmp", true, 1, &tmp);
    ew_listener_desc d = {.event = &ev, .name = "Tmp", .per_process = true};
    send_range(m, &ev, 0, 10);
    assert_true(tally_wait_ids(&tmp, 0, 10, 30000));
    assert_true(ew_manager_ready(m));
    size_t tmp_got = 10;
    if (!url_is_activemq()) {
        /* Its queue E::Tmp-s1 is on the broker, and the probe reaches it. */
        assert_true(queue_exists(&ev, "Tmp-s1", 10));
        assert_true(tally_wait_ids(&tmp, 10, 11, 30000));
        tmp_got = 11;
    }
    /* Refusals change nothing: a shared queue is not deleted, an unknown
     * listener is not found. */
    ew_listener_desc shared = {.event = &ev, .name = "Keep"};
    assert_int_equal(ew_unlisten(m, &shared, EW_UNLISTEN_DELETE_QUEUE), EW_EINVAL);
    ew_listener_desc nobody = {.event = &ev, .name = "Nobody", .per_process = true};
    assert_int_equal(ew_unlisten(m, &nobody, 0), EW_ENOTFOUND);
    if (url_is_activemq()) {
        /* ActiveMQ 5 cannot delete a queue over STOMP: refused before
         * anything else, so the listener still consumes. */
        assert_int_equal(ew_unlisten(m, &d, EW_UNLISTEN_DELETE_QUEUE), EW_ENOTSUP);
        assert_true(strstr(ew_last_error(), "activemq") != NULL);
        assert_int_equal(ew_unlisten(m, &d, 0), EW_OK);
    } else {
        assert_int_equal(ew_unlisten(m, &d, EW_UNLISTEN_DELETE_QUEUE), EW_OK);
        assert_false(queue_exists(&ev, "Tmp-s1", 10));
    }
    assert_int_equal(ew_unlisten(m, &d, 0), EW_ENOTFOUND);
    /* The other listener goes on, and the manager is ready without it. */
    send_range(m, &ev, 10, 20);
    assert_true(tally_wait_all(&keep, 30000));
    assert_int_equal(tally_total(&tmp), tmp_got);
    assert_true(ew_manager_ready(m));
    /* Removing one listener did not cost the others their connection. */
    assert_int_equal(metric_value(m, "eventwire.client.reconnects", NULL), reconnects);
    ew_manager_free(m);
    tally_free(&keep);
    tally_free(&tmp);
}

static void unlisten_keeps_a_shared_queue_for_the_next_listener(void **state)
{
    (void)state;
    /* Documented at ew_unlisten: RabbitMQ's STOMP keeps the removed
     * listener's subscription until the connection ends, so what arrives
     * meanwhile comes back only then: here, with the manager's end. */
    bool held_until_close =
        strstr(URL, "stomp://") && (strstr(URL, "dialect=rabbitmq") || strstr(URL, ":61613"));
    EV(ev, "Relisten", true);
    tally first, second;
    tally_init(&first, 5);
    tally_init(&second, 10);
    ew_manager *m = mgr_new(URL, "s1");
    listen_tally(m, &ev, "Shared", false, 1, &first);
    assert_int_equal(ew_manager_start(m), EW_OK);
    send_range(m, &ev, 0, 5);
    assert_true(tally_wait_all(&first, 30000));
    ew_listener_desc d = {.event = &ev, .name = "Shared"};
    assert_int_equal(ew_unlisten(m, &d, 0), EW_OK);
    /* Nobody consumes E::Shared now; it keeps what arrives. */
    for (int64_t i = 5; i < 10; i++)
        assert_int_equal(ew_send_to(m, &ev, "Shared", &(conf_event){.id = i, .text = "kept"}),
                         EW_OK);
    assert_int_equal(tally_total(&first), 5);
    if (held_until_close) {
        ew_manager_free(m);
        m = mgr_new(URL, "s1");
        listen_tally(m, &ev, "Shared", false, 1, &second);
        assert_int_equal(ew_manager_start(m), EW_OK);
        assert_true(tally_wait_ids(&second, 5, 10, 30000));
        ew_manager_free(m);
        tally_free(&first);
        tally_free(&second);
        return;
    }
    /* The name is free again, and the new listener gets what was kept. */
    listen_tally(m, &ev, "Shared", false, 1, &second);
    assert_true(tally_wait_ids(&second, 5, 10, 30000));
    ew_manager_free(m);
    tally_free(&first);
    tally_free(&second);
}

typedef struct {
    ew_manager *m;
    const ew_event_desc *ev;
    int64_t from, to;
    int failures;
} sender_job;

static void *sender_main(void *arg)
{
    sender_job *j = arg;
    for (int64_t i = j->from; i < j->to; i++)
        if (ew_send(j->m, j->ev, &(conf_event){.id = i, .text = "threaded"}) != EW_OK)
            j->failures++;
    return NULL;
}

static void sends_from_many_threads_all_arrive(void **state)
{
    (void)state;
    EV(ev, "Threads", true);
    enum { THREADS = 4, EACH = 250 };
    tally t;
    tally_init(&t, THREADS * EACH);
    ew_manager *m = mgr_new(URL, "s1");
    listen_tally(m, &ev, "All", false, 2, &t);
    assert_int_equal(ew_manager_start(m), EW_OK);
    pthread_t th[THREADS];
    sender_job jobs[THREADS];
    for (int i = 0; i < THREADS; i++) {
        jobs[i] = (sender_job){m, &ev, (int64_t)i * EACH, (int64_t)(i + 1) * EACH, 0};
        pthread_create(&th[i], NULL, sender_main, &jobs[i]);
    }
    for (int i = 0; i < THREADS; i++) {
        pthread_join(th[i], NULL);
        assert_int_equal(jobs[i].failures, 0);
    }
    assert_true(tally_wait_all(&t, 60000));
    assert_int_equal(tally_dups(&t), 0);
    ew_manager_free(m);
    tally_free(&t);
}

static ew_err check_json(ew_delivery *d, const void *event, void *user)
{
    const conf_event *e = event;
    const char *ct = ew_envelope_content_type(ew_delivery_envelope(d));
    size_t len;
    const char *body = ew_envelope_body(ew_delivery_envelope(d), &len);
    /* The body is exactly the object of the fields, as aspyx-event sends. */
    char want[96];
    snprintf(want, sizeof want, "{\"id\":%lld,\"text\":\"j\\u00e9\"}", (long long)e->id);
    char want_raw[96];
    snprintf(want_raw, sizeof want_raw, "{\"id\":%lld,\"text\":\"j\xc3\xa9\"}",
             (long long)e->id);
    bool ok = ew_format_from_content_type(ct) == EW_FORMAT_JSON &&
              strcmp(e->text, "j\xc3\xa9") == 0 &&
              ((len == strlen(want) && memcmp(body, want, len) == 0) ||
               (len == strlen(want_raw) && memcmp(body, want_raw, len) == 0));
    if (!ok)
        print_message("json: content type '%s', body '%.*s'\n", ct, (int)len, body);
    tally_note(user, e->id, ok ? "ok" : "bad", ew_delivery_queue(d));
    return EW_OK;
}

static void json_events_travel_as_plain_objects(void **state)
{
    (void)state;
    EV(ev, "Json", true);
    ev.format = EW_FORMAT_JSON;
    tally t;
    tally_init(&t, 10);
    ew_manager *m = mgr_new(URL, "s1");
    assert_int_equal(ew_listen(m, &(ew_listener_desc){.event = &ev, .name = "J"},
                               check_json, &t),
                     EW_OK);
    assert_int_equal(ew_manager_start(m), EW_OK);
    for (int64_t i = 0; i < 10; i++)
        assert_int_equal(ew_send(m, &ev, &(conf_event){.id = i, .text = "j\xc3\xa9"}), EW_OK);
    assert_true(tally_wait_all(&t, 30000));
    assert_int_equal(tally_by_label(&t, "bad"), 0);
    ew_manager_free(m);
    tally_free(&t);
}

/* ---- volume ------------------------------------------------------------- */

static void ten_thousand_events_none_lost_none_duplicated(void **state)
{
    (void)state;
    EV(ev, "Volume", true);
    enum { N = 10000 };
    tally t;
    tally_init(&t, N);
    /* A window the broker confirms well within the send timeout even on a
     * loaded machine: a send waits for room instead of for its confirm. */
    char url[600];
    if (strncmp(URL, "local://", 8) == 0)
        snprintf(url, sizeof url, "%s", URL);
    else
        snprintf(url, sizeof url, "%s%smax_inflight=256", URL, strchr(URL, '?') ? "&" : "?");
    ew_manager *m = mgr_new(url, "s1");
    listen_tally(m, &ev, "Count", false, 4, &t);
    assert_int_equal(ew_manager_start(m), EW_OK);
    int64_t t0 = ewi_now_ms();
    send_range_async(m, &ev, 0, N);
    assert_true(tally_wait_all(&t, 120000));
    print_message("volume: %d events in %lld ms\n", N, (long long)(ewi_now_ms() - t0));
    assert_int_equal(tally_dups(&t), 0);
    assert_int_equal(tally_total(&t), N);
    ew_manager_free(m);
    tally_free(&t);
}

/* ---- a full in-flight window ------------------------------------------- */

/* One rule on every transport: when the window is still full at the send
 * deadline, ew_send_async itself returns EW_ETIMEDOUT and its callback never
 * runs; whatever failed as not sent (EW_ETIMEDOUT, EW_ECLOSED) never
 * arrives; whatever completed EW_OK arrives; EW_EINDOUBT may go either way. */
#define WIN_MAX 3000
#define WIN_ENOUGH 20 /* sends refused at a full window before we stop */

typedef struct win_send {
    pthread_mutex_t *mu;
    int runs;
    ew_err err;
} win_send;

static void win_done(void *user, ew_err err)
{
    win_send *w = user;
    pthread_mutex_lock(w->mu);
    w->runs++;
    w->err = err;
    pthread_mutex_unlock(w->mu);
}

/* The window case with window_opt on a broker's URL, sending text. */
static void window_case(const char *window_opt, const char *text)
{
    EV(ev, "Window", true);
    /* A window one send fills: window_opt on a broker; on local:// a queue
     * of capacity 1 (its own broker name) behind a slow listener. */
    char url[600];
    bool local = strncmp(URL, "local://", 8) == 0;
    if (local)
        snprintf(url, sizeof url, "local://window%s?capacity=1", support_run_id);
    else
        snprintf(url, sizeof url, "%s%s%s", URL, strchr(URL, '?') ? "&" : "?", window_opt);
    tally t;
    tally_init(&t, WIN_MAX + 2);
    if (local)
        tally_slow(&t, 2);
    ew_manager *m = mgr_new(url, "s1");
    ew_manager *keeper = mgr_new(url, "keeper");
    listen_tally(keeper, &ev, "Counter", false, 1, &t);
    assert_int_equal(ew_manager_start(keeper), EW_OK);
    assert_int_equal(ew_manager_start(m), EW_OK);
    conf_event first = {.id = WIN_MAX, .text = "declares"};
    assert_int_equal(ew_send(m, &ev, &first), EW_OK);
    /* From here a 1 ms send timeout: the next send finds the first still
     * unconfirmed. Set after start, so declarations keep their bound (the
     * test reads it back on this thread only). */
    m->cfg.send_timeout_ms = 1;

    pthread_mutex_t mu;
    pthread_mutex_init(&mu, NULL);
    win_send *ws = calloc(WIN_MAX, sizeof *ws);
    ew_err *rcs = calloc(WIN_MAX, sizeof *rcs);
    size_t sent = 0, refused = 0;
    for (; sent < WIN_MAX && refused < WIN_ENOUGH; sent++) {
        ws[sent].mu = &mu;
        conf_event e = {.id = (int64_t)sent, .text = text};
        rcs[sent] = ew_send_async(m, &ev, NULL, &e, win_done, &ws[sent]);
        if (rcs[sent] == EW_ETIMEDOUT)
            refused++;
        else if (rcs[sent] != EW_OK)
            fail_msg("ew_send_async(%zu): %s", sent, ew_strerror(rcs[sent]));
    }
    assert_int_equal(ew_flush(m, 60000), EW_OK);
    /* The sentinel, on the same connection and with the usual bound: once
     * it is handled, every message confirmed before it was sent has been
     * handled too (one queue, one worker). */
    m->cfg.send_timeout_ms = 15000;
    conf_event last = {.id = WIN_MAX + 1, .text = "sentinel"};
    assert_int_equal(ew_send(m, &ev, &last), EW_OK);
    assert_true(tally_wait_ids(&t, WIN_MAX + 1, WIN_MAX + 2, 30000));

    size_t ok = 0, not_sent = 0, in_doubt = 0, bad = 0;
    pthread_mutex_lock(&mu);
    pthread_mutex_lock(&t.mu);
    for (size_t i = 0; i < sent; i++) {
        if (rcs[i] != EW_OK) {
            if (ws[i].runs != 0 || t.seen[i] != 0) {
                print_error("send %zu returned %s, yet its callback ran %d time(s) and it "
                            "arrived %u time(s)\n", i, ew_strerror(rcs[i]), ws[i].runs,
                            t.seen[i]);
                bad++;
            }
            continue;
        }
        if (ws[i].runs != 1) {
            print_error("send %zu: callback ran %d times\n", i, ws[i].runs);
            bad++;
            continue;
        }
        switch (ws[i].err) {
        case EW_OK:
            ok++;
            if (t.seen[i] == 0) {
                print_error("send %zu completed EW_OK but never arrived\n", i);
                bad++;
            }
            break;
        case EW_ETIMEDOUT:
        case EW_ECLOSED:
            not_sent++;
            if (t.seen[i] != 0) {
                print_error("send %zu failed with %s (not sent) but arrived\n", i,
                            ew_strerror(ws[i].err));
                bad++;
            }
            break;
        case EW_EINDOUBT:
            in_doubt++;
            break;
        default:
            print_error("send %zu failed with %s\n", i, ew_strerror(ws[i].err));
            bad++;
        }
    }
    pthread_mutex_unlock(&t.mu);
    pthread_mutex_unlock(&mu);
    print_message("window: %zu sends, %zu refused at a full window, %zu ok, %zu not sent, "
                  "%zu in doubt\n", sent, refused, ok, not_sent, in_doubt);
    assert_int_equal(bad, 0);
    /* The case is about the full window: it must have happened. */
    assert_true(refused > 0);
    ew_manager_free(m);
    ew_manager_free(keeper);
    free(ws);
    free(rcs);
    pthread_mutex_destroy(&mu);
    tally_free(&t);
}

static void full_window_fails_the_send_itself(void **state)
{
    (void)state;
    window_case("max_inflight=1", "w");
}

/* The same with a window of 1,024 bytes and bodies of about 700: one send
 * fills it. local:// has no such window, and refuses the option. */
static void window_full_of_bytes_fails_the_send_itself(void **state)
{
    (void)state;
    if (strncmp(URL, "local://", 8) == 0) {
        ew_manager *m = NULL;
        assert_int_equal(ew_manager_new(&m, "local://?max_inflight_bytes=1024", NULL),
                         EW_EINVAL);
        assert_null(m);
        return;
    }
    char text[701];
    memset(text, 'b', sizeof text - 1);
    text[sizeof text - 1] = '\0';
    window_case("max_inflight_bytes=1024", text);
}

/* ---- bodies of every size ------------------------------------------------ */

/* The text of event i with n bytes: a pattern that differs by size and
 * position, ending in a two-byte character when there is room. */
static void size_text(char *out, size_t n, int64_t i)
{
    for (size_t k = 0; k < n; k++)
        out[k] = (char)('a' + (k * 7 + (size_t)i) % 26);
    if (n >= 2)
        memcpy(out + n - 2, "\xc3\xa9", 2);
    out[n] = '\0';
}

static const size_t body_sizes[] = {0, 1, 255, 256, 257, 4095, 4096, 4097, 131064, 131065,
                                    262200, 1000000};
#define NSIZES (sizeof body_sizes / sizeof body_sizes[0])

static ew_err check_size(ew_delivery *d, const void *event, void *user)
{
    const conf_event *e = event;
    bool ok = false;
    if (e->id >= 0 && (size_t)e->id < 2 * NSIZES) {
        size_t n = body_sizes[e->id % NSIZES];
        char *want = malloc(n + 1);
        size_text(want, n, e->id);
        ok = strlen(e->text) == n && memcmp(e->text, want, n) == 0;
        if (!ok)
            print_message("size: event %lld of %zu bytes arrived with %zu\n",
                          (long long)e->id, n, strlen(e->text));
        free(want);
    }
    tally_note(user, e->id, ok ? "ok" : "bad", ew_delivery_queue(d));
    return EW_OK;
}

static void size_sent(void *user, ew_err err)
{
    if (err != EW_OK)
        print_error("size: an asynchronous send failed: %s\n", ew_strerror(err));
    atomic_fetch_add((atomic_int *)user, err == EW_OK ? 1 : 1000);
}

/* Bodies from empty to about 1 MB (the default max_body), across the
 * sizes where the transports change how they carry a body (kept inline,
 * written by reference, split into frames), arrive byte for byte: once
 * sent one by one with ew_send, once all at once with ew_send_async. */
static void bodies_of_every_size_arrive_whole(void **state)
{
    (void)state;
    EV(ev, "Sizes", true);
    tally t;
    tally_init(&t, 2 * NSIZES);
    ew_manager *m = mgr_new(URL, "s1");
    assert_int_equal(ew_listen(m, &(ew_listener_desc){.event = &ev, .name = "S"},
                               check_size, &t),
                     EW_OK);
    assert_int_equal(ew_manager_start(m), EW_OK);
    char *text = malloc(body_sizes[NSIZES - 1] + 1);
    for (size_t k = 0; k < NSIZES; k++) {
        size_text(text, body_sizes[k], (int64_t)k);
        ew_err rc = ew_send(m, &ev, &(conf_event){.id = (int64_t)k, .text = text});
        if (rc != EW_OK)
            fail_msg("ew_send of %zu bytes: %s", body_sizes[k], ew_strerror(rc));
    }
    atomic_int done = 0;
    for (size_t k = 0; k < NSIZES; k++) {
        int64_t id = (int64_t)(NSIZES + k);
        size_text(text, body_sizes[k], id);
        ew_err rc = ew_send_async(m, &ev, NULL, &(conf_event){.id = id, .text = text},
                                  size_sent, &done);
        if (rc != EW_OK)
            fail_msg("ew_send_async of %zu bytes: %s", body_sizes[k], ew_strerror(rc));
    }
    free(text);
    assert_int_equal(ew_flush(m, 60000), EW_OK);
    assert_int_equal(atomic_load(&done), (int)NSIZES);
    assert_true(tally_wait_all(&t, 60000));
    assert_int_equal(tally_by_label(&t, "bad"), 0);
    assert_int_equal(tally_dups(&t), 0);
    ew_manager_free(m);
    tally_free(&t);
}

/* ---- how the manager's threads are scheduled ---------------------------- */

/* By default every thread eventwire starts (I/O threads, workers) runs under
 * SCHED_BATCH; with EW_THREADS_INHERIT under the starting thread's policy.
 * The application's own threads keep theirs either way. */
static void threads_are_batch_scheduled_unless_inherited(void **state)
{
    (void)state;
    bool local = strncmp(URL, "local:", 6) == 0;
    int own = sched_getscheduler(0);
    assert_true(own >= 0);
    for (int inherit = 0; inherit <= 1; inherit++) {
        EV(ev, inherit ? "SchedInherit" : "SchedBatch", true);
        tally t;
        tally_init(&t, 10);
        ew_options o = {.threads = inherit ? EW_THREADS_INHERIT : EW_THREADS_DEFAULT};
        ew_manager *m = mgr_new_opts(URL, "s1", &o);
        listen_tally(m, &ev, "Sched", false, 2, &t);
        assert_int_equal(ew_manager_start(m), EW_OK);
        send_range(m, &ev, 0, 10);
        assert_true(tally_wait_all(&t, 30000));
        int batch, other;
        ew_thread_census(NULL, &batch, &other);
        /* The two workers (or the pool), and a broker transport's I/O. */
        int least = 2 + (local ? 0 : 1);
        print_message("%s: %d eventwire threads SCHED_BATCH, %d not\n",
                      inherit ? "inherit" : "default", batch, other);
        assert_int_equal(sched_getscheduler(0), own);
        if (inherit) {
            assert_int_equal(batch, 0);
            assert_true(other >= least);
        } else {
            assert_true(batch >= least);
            assert_int_equal(other, 0);
        }
        ew_manager_free(m);
        tally_free(&t);
    }
}

int main(int argc, char **argv)
{
    if (argc != 2) {
        fprintf(stderr, "usage: %s URL\n", argv[0]);
        return 2;
    }
    URL = argv[1];
    support_init(URL);
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(fan_out_reaches_every_listener),
        cmocka_unit_test(one_listener_on_two_servers_competes),
        cmocka_unit_test(per_process_gives_every_server_a_copy),
        cmocka_unit_test(headers_and_pipelines_travel_end_to_end),
        cmocka_unit_test(send_to_reaches_only_that_listener),
        cmocka_unit_test(concurrency_one_keeps_order),
        cmocka_unit_test(failing_listener_is_retried_then_dead_lettered),
        cmocka_unit_test(undecodable_body_goes_to_dead_letters_at_once),
        cmocka_unit_test(refused_dead_letter_goes_back_to_its_queue),
        cmocka_unit_test(dead_letters_wait_for_the_first),
        cmocka_unit_test(stop_drains_and_returns_the_rest),
        cmocka_unit_test(listener_added_after_start_receives),
        cmocka_unit_test(unlisten_with_delete_removes_the_queue),
        cmocka_unit_test(unlisten_keeps_a_shared_queue_for_the_next_listener),
        cmocka_unit_test(sends_from_many_threads_all_arrive),
        cmocka_unit_test(json_events_travel_as_plain_objects),
        cmocka_unit_test(ten_thousand_events_none_lost_none_duplicated),
        cmocka_unit_test(full_window_fails_the_send_itself),
        cmocka_unit_test(window_full_of_bytes_fails_the_send_itself),
        cmocka_unit_test(bodies_of_every_size_arrive_whole),
        cmocka_unit_test(metrics_count_a_known_sequence),
        cmocka_unit_test(trace_context_reaches_the_listener),
        cmocka_unit_test(threads_are_batch_scheduled_unless_inherited),
    };
    return cmocka_run_group_tests_name(URL, tests, NULL, NULL);
}
