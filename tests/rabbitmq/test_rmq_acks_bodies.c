/* Acknowledgement bookkeeping and oversized bodies on rabbitmq://.
 *
 * - The tag tracker (rmq_acks.c) on its own: it acknowledges exactly the
 *   settled tags (multiple only for the prefix below the oldest open one),
 *   and one tag held for a long time while a million others pass keeps its
 *   memory at the prefetch's size.
 * - Against RabbitMQ: one handler stuck while thousands of other events go
 *   through the same listener (prefetch 8): their acks return the prefetch
 *   credit, nothing is redelivered.
 * - A foreign producer's 3 MiB body with max_body 1 MiB is dead-lettered as
 *   too-big (not requeued in a loop) and the listener keeps handling.
 * - rabbitmqs:// with heartbeat=0 through a relay the test freezes:
 *   librabbitmq's TLS write would wait for ever; the write guard drops the
 *   connection after rpc_timeout, sends fail by their timeout, stop returns. */
#include "rmq_test.h"
#include "transports/rabbitmq/rmq.h"

#include <stdatomic.h>

/* ---- the tracker, no broker ---------------------------------------------- */

typedef struct acks_seen {
    uint64_t tag[4096];
    bool multiple[4096];
    size_t n;
} acks_seen;

static int record_ack(void *user, uint64_t tag, bool multiple)
{
    acks_seen *s = user;
    if (s->n < 4096) {
        s->tag[s->n] = tag;
        s->multiple[s->n] = multiple;
        s->n++;
    }
    return 0;
}

static void settle(rmq_tags *g, uint64_t tag)
{
    assert_true(rmq_tags_close(g, tag));
    assert_true(rmq_tags_settled(g, tag));
}

static void tracker_acks_exactly_the_settled_tags(void **state)
{
    (void)state;
    rmq_tags g = {0};
    acks_seen s = {0};
    for (uint64_t k = 1; k <= 10; k++)
        assert_true(rmq_tags_open(&g, k));
    /* 1..3 settled, 4 held, 6 and 9 settled behind it. */
    settle(&g, 2);
    settle(&g, 1);
    settle(&g, 3);
    settle(&g, 9);
    settle(&g, 6);
    assert_int_equal(rmq_tags_flush(&g, record_ack, &s), 0);
    assert_int_equal(s.n, 3);
    assert_true(s.tag[0] == 3 && s.multiple[0]);   /* 1, 2, 3 */
    assert_true(s.tag[1] == 6 && !s.multiple[1]);  /* 6 alone: 4 and 5 are held */
    assert_true(s.tag[2] == 9 && !s.multiple[2]);
    /* Settling twice, or a tag never opened, acknowledges nothing. */
    assert_false(rmq_tags_close(&g, 6));
    assert_false(rmq_tags_close(&g, 42));
    /* 5 alone: 4 below it is still held, so no multiple ack. */
    s.n = 0;
    settle(&g, 5);
    assert_int_equal(rmq_tags_flush(&g, record_ack, &s), 0);
    assert_int_equal(s.n, 1);
    assert_true(s.tag[0] == 5 && !s.multiple[0]);
    /* 4 settles: it alone is acknowledged (5, 6, 9 already were), and with
     * nothing open a multiple ack covers 4, 7, 8, 10. */
    s.n = 0;
    settle(&g, 4);
    settle(&g, 7);
    settle(&g, 8);
    settle(&g, 10);
    assert_int_equal(rmq_tags_flush(&g, record_ack, &s), 0);
    assert_int_equal(s.n, 1);
    assert_true(s.tag[0] == 10 && s.multiple[0]);
    /* Tags only grow on a channel. */
    assert_false(rmq_tags_open(&g, 10));
    assert_true(rmq_tags_open(&g, 11));
    rmq_tags_reset(&g); /* a new channel starts at 1 again */
    assert_true(rmq_tags_open(&g, 1));
    rmq_tags_free(&g);
}

static void tracker_memory_is_bounded_by_what_is_outstanding(void **state)
{
    (void)state;
    /* Tag 1 is held by a stuck handler while a million others pass through
     * a prefetch of 256: at most 256 open at once. */
    rmq_tags g = {0};
    acks_seen s = {0};
    uint64_t next = 1;
    assert_true(rmq_tags_open(&g, next++));
    size_t max_cap = 0, max_done = 0;
    while (next < 1000000) {
        uint64_t first = next;
        for (int k = 0; k < 255; k++)
            assert_true(rmq_tags_open(&g, next++));
        for (uint64_t k = first; k < next; k++)
            settle(&g, k);
        s.n = 0;
        assert_int_equal(rmq_tags_flush(&g, record_ack, &s), 0);
        assert_int_equal(s.n, 255); /* each alone: 1 is still held */
        assert_int_equal(s.tag[0], first);
        if (g.cap > max_cap)
            max_cap = g.cap;
        if (g.done_cap > max_done)
            max_done = g.done_cap;
    }
    print_message("open array %zu entries, done array %zu entries after %llu tags\n", max_cap,
                  max_done, (unsigned long long)next);
    assert_true(max_cap <= 1024);
    assert_true(max_done <= 512);
    s.n = 0;
    settle(&g, 1);
    assert_int_equal(rmq_tags_flush(&g, record_ack, &s), 0);
    assert_int_equal(s.n, 1);
    assert_true(s.tag[0] == 1 && !s.multiple[0]);
    assert_int_equal(g.live, 0);
    rmq_tags_free(&g);
}

/* ---- a stuck handler against RabbitMQ ------------------------------------ */

enum { STUCK_N = 2001, SENTINEL = STUCK_N }; /* ids 0..2000, then the sentinel */

typedef struct stuck {
    atomic_bool release;
    atomic_size_t handled, stuck_runs;
    atomic_size_t seen[STUCK_N + 1];
} stuck;

static ew_err stuck_listener(ew_delivery *d, const void *event, void *user)
{
    (void)d;
    stuck *s = user;
    const conf_event *e = event;
    if (e->id == 0) {
        s->stuck_runs++;
        int64_t deadline = ewi_now_ms() + 60000;
        while (!s->release && ewi_now_ms() < deadline)
            ewi_sleep_ms(5);
    }
    if (e->id >= 0 && e->id <= SENTINEL)
        s->seen[e->id]++;
    s->handled++;
    return EW_OK;
}

static void a_stuck_handler_does_not_hold_the_others(void **state)
{
    (void)state;
    EV(ev, "Stuck", false);
    static stuck s;
    memset(&s, 0, sizeof s);
    ew_manager *m = mgr_new(rmq_test_url(), "s1");
    ew_listener_desc d = {.event = &ev, .name = "L", .concurrency = 2, .prefetch = 8};
    assert_int_equal(ew_listen(m, &d, stuck_listener, &s), EW_OK);
    assert_int_equal(ew_manager_start(m), EW_OK);
    send_range(m, &ev, 0, 1);
    WAIT_FOR(s.stuck_runs > 0, 15000, "event 0 never reached the handler");
    assert_int_equal(s.stuck_runs, 1);
    /* 2000 events through the one free worker: with prefetch 8 they only
     * arrive if their acks return the credit while tag 1 stays open. */
    send_range_async(m, &ev, 1, STUCK_N);
    WAIT_FOR(s.handled >= STUCK_N - 1, 60000, "%zu of %d events handled beside the stuck one",
             (size_t)s.handled, STUCK_N - 1);
    s.release = true;
    WAIT_FOR(s.handled >= STUCK_N, 15000, "the released handler did not finish");
    /* A sentinel sent last: once it is handled and the stop has let the
     * handlers finish, a redelivery of any earlier event would have been
     * handled too. */
    send_range(m, &ev, SENTINEL, SENTINEL + 1);
    WAIT_FOR(s.seen[SENTINEL] > 0, 15000, "the sentinel event was not handled");
    assert_int_equal(ew_manager_stop(m, 15000), EW_OK);
    assert_int_equal(s.handled, STUCK_N + 1);
    for (int i = 0; i <= SENTINEL; i++)
        if (s.seen[i] != 1)
            fail_msg("event %d handled %zu times", i, (size_t)s.seen[i]);
    ew_manager_free(m);
    rmq_cleanup(0, ev.name, (const char *const[]){"L", NULL});
}

/* ---- a body over max_body ------------------------------------------------ */

typedef struct big_box {
    size_t n;
    size_t len[8];
    uint8_t first[8]; /* the body's first byte */
    char reason[8][32], error[8][256];
} big_box;

static ew_err big_collect(void *user, const ew_envelope *env)
{
    big_box *b = user;
    if (b->n >= 8)
        return EW_OK;
    size_t i = b->n++;
    const uint8_t *body = ew_envelope_body(env, &b->len[i]);
    b->first[i] = b->len[i] ? body[0] : 0;
    const char *h;
    snprintf(b->reason[i], sizeof b->reason[i], "%s",
             (h = ew_envelope_header(env, EW_HDR_DLQ_REASON)) ? h : "");
    snprintf(b->error[i], sizeof b->error[i], "%s",
             (h = ew_envelope_header(env, EW_HDR_DLQ_ERROR)) ? h : "");
    return EW_OK;
}

static void a_body_over_max_body_is_dead_lettered_once(void **state)
{
    (void)state;
    enum { MAX_BODY = 1 << 20, BIG = 3 << 20, NBIG = 3 };
    EV(ev, "Big", true);
    tally t;
    tally_init(&t, 10);
    capture cap;
    capture_init(&cap);
    ew_options o = {.max_body = MAX_BODY, .on_error = capture_error, .error_user = &cap};
    ew_manager *m = mgr_new_opts(rmq_test_url(), "s1", &o);
    listen_tally(m, &ev, "L", false, 1, &t);
    assert_int_equal(ew_manager_start(m), EW_OK);

    /* A foreign producer ignores our limit: three 3 MiB bodies. */
    uint8_t *body = malloc(BIG);
    assert_non_null(body);
    memset(body, 0xa5, BIG);
    amqp_connection_state_t c = raw_connect();
    for (int i = 0; i < NBIG; i++)
        raw_publish(c, ev.name, ev.name, EW_CONTENT_TYPE_MSGPACK, body, BIG);
    raw_close(c);
    free(body);
    send_range(m, &ev, 0, 10); /* the listener keeps handling */
    assert_true(tally_wait_all(&t, 30000));

    big_box box = {0};
    size_t got = 0, total = 0;
    int64_t deadline = ewi_now_ms() + 20000;
    ew_dead_letter_options dl = {.event = &ev, .listener = "L", .max = 8,
                                 .timeout_ms = 5000, .fn = big_collect, .user = &box};
    while (total < NBIG && ewi_left_ms(deadline) > 0 &&
           ew_dead_letters(m, &dl, &got) == EW_OK)
        total += got;
    assert_int_equal(total, NBIG);
    for (size_t i = 0; i < NBIG; i++) {
        print_message("dead letter %zu: %zu bytes, %s / %s\n", i, box.len[i], box.reason[i],
                      box.error[i]);
        assert_string_equal(box.reason[i], "too-big");
        /* Only max_body + 1 bytes were ever held for it. */
        assert_int_equal(box.len[i], MAX_BODY + 1);
    }
    /* Dead-lettered once each: a sentinel body (another byte) sent now is
     * the next dead letter; a second dead-lettering of one of the first
     * three would come before it. */
    body = malloc(BIG);
    assert_non_null(body);
    memset(body, 0x5a, BIG);
    c = raw_connect();
    raw_publish(c, ev.name, ev.name, EW_CONTENT_TYPE_MSGPACK, body, BIG);
    raw_close(c);
    free(body);
    deadline = ewi_now_ms() + 20000;
    while (box.n == total && ewi_left_ms(deadline) > 0 &&
           ew_dead_letters(m, &(ew_dead_letter_options){.event = &ev, .listener = "L", .max = 1, .timeout_ms = 5000, .fn = big_collect, .user = &box}, &got) == EW_OK)
        ;
    if (box.n != NBIG + 1 || box.first[NBIG] != 0x5a)
        fail_msg("after the 3 dead letters: %zu more, the first starting with 0x%02x (the "
                 "sentinel is 0x5a)", box.n - NBIG, box.n > NBIG ? box.first[NBIG] : 0);
    WAIT_FOR(capture_count(&cap, EW_ETOOBIG) == NBIG + 1, 10000,
             "%zu too-big reports, expected %d", capture_count(&cap, EW_ETOOBIG), NBIG + 1);
    assert_int_equal(tally_total(&t), 10);
    assert_int_equal(tally_dups(&t), 0);
    ew_manager_free(m);
    tally_free(&t);
    rmq_cleanup(0, ev.name, (const char *const[]){"L", NULL});
}

/* ---- a broker that stops reading, over TLS -------------------------------- */

static void frozen_relay_cannot_hang_tls_sends_or_stop(void **state)
{
    (void)state;
    const char *st = getenv("EW_BROKER_STATE");
    char ca[600];
    snprintf(ca, sizeof ca, "%s/tls/ca.pem", st && *st ? st : "/tmp/eventwire-brokers");
    if (access(ca, R_OK) != 0)
        fail_msg("no test CA at %s: run scripts/brokers/rabbitmq.sh start", ca);
    /* A plain relay before the broker's own TLS listener. */
    relay *path = relay_new(0, 5671, true);
    assert_non_null(path);
    int port = relay_port(path);

    EV(ev, "Frozen", true);
    capture cap;
    capture_init(&cap);
    ew_options o = {.send_timeout_ms = 3000, .on_error = capture_error, .error_user = &cap};
    char url[1024];
    /* heartbeat=0: librabbitmq's only way out of a full socket is gone. */
    snprintf(url, sizeof url,
             "rabbitmqs://guest:guest@127.0.0.1:%d/?cacert=%s&heartbeat=0&rpc_timeout=1000&"
             "connect_timeout=1000",
             port, ca);
    ew_manager *m = mgr_new_opts(url, "s1", &o);
    assert_int_equal(ew_manager_start(m), EW_OK);
    send_range(m, &ev, 0, 1); /* the exchange exists, the path works */

    relay_freeze(path); /* nothing reads what we write any more */
    static char big[256 << 10];
    memset(big, 'x', sizeof big - 1);
    support_async_failures = 0;
    int64_t t0 = ewi_now_ms();
    for (int i = 0; i < 64; i++) { /* 16 MiB: more than every buffer on the path */
        conf_event e = {.id = i, .text = big};
        ew_err rc = ew_send_async(m, &ev, NULL, &e, count_failure_, NULL);
        if (rc != EW_OK && rc != EW_ETIMEDOUT)
            fail_msg("ew_send_async: %s", ew_strerror(rc));
    }
    ew_err frc = ew_flush(m, 30000);
    int64_t took = ewi_now_ms() - t0;
    print_message("flush after %lld ms: %s, %zu sends failed\n", (long long)took,
                  ew_strerror(frc), (size_t)support_async_failures);
    assert_int_equal(frc, EW_OK);
    assert_true(took < 15000);
    assert_true(support_async_failures > 0);
    assert_true(capture_count(&cap, EW_EDISCONNECTED) >= 1);
    t0 = ewi_now_ms();
    ew_manager_free(m);
    print_message("stop took %lld ms\n", (long long)(ewi_now_ms() - t0));
    assert_true(ewi_now_ms() - t0 < 10000);
    relay_free(path);
    raw_delete(ev.name, true);
}

int main(void)
{
    support_init(rmq_test_url());
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(tracker_acks_exactly_the_settled_tags),
        cmocka_unit_test(tracker_memory_is_bounded_by_what_is_outstanding),
        cmocka_unit_test(a_stuck_handler_does_not_hold_the_others),
        cmocka_unit_test(a_body_over_max_body_is_dead_lettered_once),
        cmocka_unit_test(frozen_relay_cannot_hang_tls_sends_or_stop),
    };
    return cmocka_run_group_tests_name("rabbitmq acks and bodies", tests, NULL, NULL);
}
