/* Many listeners start quickly on a RabbitMQ-backed transport.
 *
 * test_many_listeners URL LABEL: registers 500 listeners of one event on
 * URL (rabbitmq://, stomp:// dialect=rabbitmq or amqp:// dialect=rabbitmq),
 * starts the manager and prints how long the start took, checks that every
 * listener's dead-letter queue exists (amqp://: that none does, it is
 * declared on first use), sends one event and checks that
 * every listener got it. The declarations are pipelined, so the start grows
 * slowly with the number of listeners; the time is printed, not asserted
 * (a loaded machine is slow; bench/start measures it). The queues,
 * dead-letter queues and the exchange are deleted afterwards.
 *
 * The administration module alone: in one batch, listeners of an event
 * whose exchange the broker refuses (one of another type is in the way)
 * fail with EW_ECONFLICT and the broker's text, and the listeners of
 * another event in the same batch are declared and announced once each. */
#include "rmq_test.h"
#include "transports/rmqadmin/rmqadmin.h"

#include <stdatomic.h>

#define NLISTENERS 500

static const char *url, *label;
static atomic_int got[NLISTENERS];
static pthread_mutex_t mu = PTHREAD_MUTEX_INITIALIZER;
static pthread_cond_t cv = PTHREAD_COND_INITIALIZER;
static int reached; /* listeners that got the event at least once */

static ew_err on_event(ew_delivery *d, const void *event, void *user)
{
    (void)d;
    (void)event;
    atomic_int *slot = user;
    if (atomic_fetch_add(slot, 1) == 0) {
        pthread_mutex_lock(&mu);
        reached++;
        pthread_cond_broadcast(&cv);
        pthread_mutex_unlock(&mu);
    }
    return EW_OK;
}

static bool wait_all(int timeout_ms)
{
    int64_t deadline = ewi_now_ms() + timeout_ms;
    pthread_mutex_lock(&mu);
    while (reached < NLISTENERS && ewi_now_ms() < deadline) {
        struct timespec ts;
        clock_gettime(CLOCK_REALTIME, &ts);
        ts.tv_nsec += 100 * 1000000L;
        if (ts.tv_nsec >= 1000000000L) {
            ts.tv_sec++;
            ts.tv_nsec -= 1000000000L;
        }
        pthread_cond_timedwait(&cv, &mu, &ts);
    }
    bool ok = reached == NLISTENERS;
    pthread_mutex_unlock(&mu);
    return ok;
}

/* Deletes what the test declared (listeners P0..P(n-1) of event), on one
 * raw connection. */
static void cleanup_listeners(const char *event, const char *prefix, int n)
{
    amqp_connection_state_t c = raw_connect();
    char q[256];
    for (int i = 0; i < n; i++)
        for (int dlq = 0; dlq < 2; dlq++) {
            snprintf(q, sizeof q, "%s::%s%d%s", event, prefix, i, dlq ? ".dlq" : "");
            amqp_queue_delete(c, 1, amqp_cstring_bytes(q), 0, 0);
            if (!raw_ok(c)) {
                raw_close(c);
                c = raw_connect();
            }
        }
    amqp_exchange_delete(c, 1, amqp_cstring_bytes(event), 0);
    raw_close(c);
}

static void cleanup(const char *event)
{
    cleanup_listeners(event, "L", NLISTENERS);
}

static void listeners_start_and_consume(void **state)
{
    (void)state;
    EV(ev, "Many", false);
    ew_options o = {.start_timeout_ms = 60000, .log_level = EW_LOG_WARN};
    ew_manager *m = mgr_new_opts(url, "many", &o);
    char names[NLISTENERS][16];
    for (int i = 0; i < NLISTENERS; i++) {
        snprintf(names[i], sizeof names[i], "L%d", i);
        ew_listener_desc d = {.event = &ev, .name = names[i], .concurrency = 1};
        ew_err rc = ew_listen(m, &d, on_event, &got[i]);
        if (rc != EW_OK)
            fail_msg("ew_listen(%s): %s", names[i], ew_strerror(rc));
    }
    int64_t t0 = ewi_now_ms();
    ew_err rc = ew_manager_start(m);
    int64_t took = ewi_now_ms() - t0;
    if (rc != EW_OK)
        fail_msg("%s: start with %d listeners failed: %s", label, NLISTENERS, ew_strerror(rc));
    print_message("%s: %d listeners started in %lld ms\n", label, NLISTENERS, (long long)took);
    /* amqp:// declares a listener's dead-letter queue on first use: none
     * exists after start. The others declare them at start: every one
     * exists once start returned. (A passive declare of a missing queue
     * closes the channel with 404.) */
    bool lazy = strncmp(label, "amqp", 4) == 0;
    amqp_connection_state_t c = raw_connect();
    int no_dlq = 0;
    for (int i = 0; i < NLISTENERS; i++) {
        char q[256];
        snprintf(q, sizeof q, "%s::L%d.dlq", ev.name, i);
        amqp_queue_declare(c, 1, amqp_cstring_bytes(q), 1, 0, 0, 0, amqp_empty_table);
        if (!raw_ok(c)) {
            if (!lazy && no_dlq < 10)
                print_message("%s: no dead-letter queue %s after start\n", label, q);
            no_dlq++;
            raw_close(c);
            c = raw_connect();
        } else if (lazy) {
            print_message("%s: dead-letter queue %s declared at start\n", label, q);
        }
    }
    raw_close(c);
    if (no_dlq && !lazy)
        print_message("%s: %d of %d dead-letter queues missing\n", label, no_dlq, NLISTENERS);
    conf_event e = {.id = 1, .text = "one for each"};
    assert_int_equal(ew_send(m, &ev, &e), EW_OK);
    bool all = wait_all(60000);
    if (!all) {
        int missing = 0;
        for (int i = 0; i < NLISTENERS; i++)
            if (!atomic_load(&got[i]) && missing++ < 10)
                print_message("%s: listener L%d got nothing\n", label, i);
        print_message("%s: %d of %d listeners got nothing within 60 s\n", label, missing,
                      NLISTENERS);
    }
    ew_manager_stop(m, 10000);
    ew_manager_free(m);
    cleanup(ev.name);
    assert_int_equal(no_dlq, lazy ? NLISTENERS : 0);
    assert_true(all);
}

#define NBATCH 20 /* listeners of the batch, every other one refused */

static void count_done(void *user, size_t i)
{
    int *told = user;
    told[i]++;
}

static void refused_exchange_fails_its_listeners_only(void **state)
{
    (void)state;
    EV(bad, "BatchBad", false);
    EV(good, "BatchGood", false);
    amqp_connection_state_t c = raw_connect();
    amqp_exchange_declare(c, 1, amqp_cstring_bytes(bad.name), amqp_cstring_bytes("fanout"), 0,
                          1, 0, 0, amqp_empty_table);
    if (!raw_ok(c))
        fail_msg("raw client: cannot declare the fanout exchange %s", bad.name);
    raw_close(c);
    rmqa_conf conf = {.host = "127.0.0.1", .port = 5672, .connect_timeout_ms = 10000,
                      .label = "127.0.0.1:5672 (test)"};
    rmqa *a = rmqa_new(&conf);
    assert_non_null(a);
    char qs[NBATCH][2][128];
    rmqa_decl ds[NBATCH];
    for (int i = 0; i < NBATCH; i++) {
        const char *event = i % 2 ? bad.name : good.name;
        snprintf(qs[i][0], sizeof qs[i][0], "%s::L%d", event, i / 2);
        snprintf(qs[i][1], sizeof qs[i][1], "%s::L%d.dlq", event, i / 2);
        ds[i] = (rmqa_decl){.kind = RMQA_LISTENER, .event = event, .queue = qs[i][0],
                            .dlq = qs[i][1]};
    }
    ew_err rcs[NBATCH];
    int told[NBATCH] = {0};
    char err[600] = "";
    ew_err rc = rmqa_ensure_many_cb(a, ds, NBATCH, rcs, err, sizeof err, count_done, told);
    rmqa_free(a);
    /* The good listeners' queues exist. */
    c = raw_connect();
    int missing = 0;
    for (int i = 0; i < NBATCH; i += 2)
        for (int k = 0; k < 2; k++) {
            amqp_queue_declare(c, 1, amqp_cstring_bytes(qs[i][k]), 1, 0, 0, 0, amqp_empty_table);
            if (!raw_ok(c)) {
                print_message("%s: queue %s missing after the batch\n", label, qs[i][k]);
                missing++;
                raw_close(c);
                c = raw_connect();
            }
        }
    raw_close(c);
    cleanup_listeners(bad.name, "L", NBATCH / 2);
    cleanup_listeners(good.name, "L", NBATCH / 2);
    print_message("%s: batch: %s (%s)\n", label, ew_strerror(rc), err);
    assert_int_equal(rc, EW_ECONFLICT);
    assert_non_null(strstr(err, "PRECONDITION_FAILED"));
    assert_non_null(strstr(err, bad.name));
    for (int i = 0; i < NBATCH; i++) {
        if (rcs[i] != (i % 2 ? EW_ECONFLICT : EW_OK))
            fail_msg("%s: declaration of %s gave %s", label, qs[i][0], ew_strerror(rcs[i]));
        if (told[i] != (i % 2 ? 0 : 1))
            fail_msg("%s: %s announced %d time(s)", label, qs[i][0], told[i]);
    }
    assert_int_equal(missing, 0);
}

int main(int argc, char **argv)
{
    if (argc < 3) {
        fprintf(stderr, "usage: %s URL LABEL\n", argv[0]);
        return 2;
    }
    url = argv[1];
    label = argv[2];
    support_init(url);
    const struct CMUnitTest tests[] = {cmocka_unit_test(listeners_start_and_consume),
                                       cmocka_unit_test(refused_exchange_fails_its_listeners_only)};
    return cmocka_run_group_tests(tests, NULL, NULL);
}
