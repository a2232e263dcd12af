/* Many listeners start quickly on a RabbitMQ-backed transport.
 *
 * test_many_listeners URL LABEL: registers 500 listeners of one event on
 * URL (rabbitmq://, stomp:// dialect=rabbitmq or amqp:// dialect=rabbitmq),
 * starts the manager and prints how long the start took, checks that every
 * listener's dead-letter queue exists, sends one event and checks that
 * every listener got it. Declaring a listener costs one
 * round trip to the broker (the declarations are pipelined), so the start
 * grows slowly with the number of listeners; the time is printed, not
 * asserted (a loaded machine is slow). The queues, dead-letter queues and
 * the exchange are deleted afterwards. */
#include "rmq_test.h"

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

/* Deletes what the test declared, on one raw connection. */
static void cleanup(const char *event)
{
    amqp_connection_state_t c = raw_connect();
    char q[256];
    for (int i = 0; i < NLISTENERS; i++)
        for (int dlq = 0; dlq < 2; dlq++) {
            snprintf(q, sizeof q, "%s::L%d%s", event, i, dlq ? ".dlq" : "");
            amqp_queue_delete(c, 1, amqp_cstring_bytes(q), 0, 0);
            if (!raw_ok(c)) {
                raw_close(c);
                c = raw_connect();
            }
        }
    amqp_exchange_delete(c, 1, amqp_cstring_bytes(event), 0);
    raw_close(c);
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
    /* The dead-letter queues exist once start returned (a passive declare
     * of a missing queue closes the channel with 404). */
    amqp_connection_state_t c = raw_connect();
    int no_dlq = 0;
    for (int i = 0; i < NLISTENERS; i++) {
        char q[256];
        snprintf(q, sizeof q, "%s::L%d.dlq", ev.name, i);
        amqp_queue_declare(c, 1, amqp_cstring_bytes(q), 1, 0, 0, 0, amqp_empty_table);
        if (!raw_ok(c)) {
            if (no_dlq++ < 10)
                print_message("%s: no dead-letter queue %s after start\n", label, q);
            raw_close(c);
            c = raw_connect();
        }
    }
    raw_close(c);
    if (no_dlq)
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
    assert_int_equal(no_dlq, 0);
    assert_true(all);
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
    const struct CMUnitTest tests[] = {cmocka_unit_test(listeners_start_and_consume)};
    return cmocka_run_group_tests(tests, NULL, NULL);
}
