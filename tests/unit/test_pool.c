/* The shared worker pool (ew_options.worker_pool) on local://: a bounded
 * number of threads for many listeners, each listener's concurrency a cap,
 * order kept with concurrency 1, listeners taking turns, and a stop that
 * delivers what is queued. The conformance suite runs every delivery case
 * with the pool too (EW_TEST_WORKER_POOL). */
#include "support.h"

static bool no_eventwire_threads(void *arg)
{
    (void)arg;
    int ew;
    ew_thread_census(&ew, NULL, NULL);
    return ew == 0;
}

static ew_manager *pool_mgr(const char *url, uint32_t threads)
{
    ew_options o = {.worker_pool = threads};
    return mgr_new_opts(url, "s1", &o);
}

/* Idle pool threads, waiting for a listener. */
static size_t pool_sleeping(ew_manager *m)
{
    pthread_mutex_lock(&m->pool->mu);
    size_t n = m->pool->sleeping;
    pthread_mutex_unlock(&m->pool->mu);
    return n;
}

static void pool_size_is_checked(void **state)
{
    (void)state;
    ew_manager *m = NULL;
    assert_int_equal(ew_manager_new(&m, "local://", &(ew_options){.worker_pool = 1025}),
                     EW_EINVAL);
    assert_null(m);
    assert_non_null(strstr(ew_last_error(), "worker_pool"));
}

/* 100 listeners of concurrency 2: the pool's 4 threads, not 200. */
static void hundred_listeners_run_on_the_pool_threads(void **state)
{
    (void)state;
    EV(ev, "PoolThreads", false);
    tally t;
    tally_init(&t, 1);
    int ew_before, ew_during, ew_after;
    int before = ew_thread_census(&ew_before, NULL, NULL);
    ew_manager *m = pool_mgr("local://pool-threads", 4);
    char names[100][16];
    for (int i = 0; i < 100; i++) {
        snprintf(names[i], sizeof names[i], "L%d", i);
        ew_listener_desc d = {.event = &ev, .name = names[i], .concurrency = 2};
        assert_int_equal(ew_listen(m, &d, tally_listener, tref(&t, names[i])), EW_OK);
    }
    assert_int_equal(ew_manager_start(m), EW_OK);
    send_range(m, &ev, 0, 1);
    /* Every listener handles the event: all are served. */
    assert_true(tally_wait_count(&t, 100, 30000));
    int during = ew_thread_census(&ew_during, NULL, NULL);
    print_message("threads: %d before (%d of eventwire), %d (%d) with 100 listeners of "
                  "concurrency 2 on a pool of 4\n", before, ew_before, during, ew_during);
    assert_int_equal(ew_before, 0);
    assert_int_equal(ew_during, 4);
    /* Besides, at most a sanitizer's own thread. */
    assert_true(during - before <= 5);
    ew_manager_free(m);
    /* Every thread was joined; the kernel may still list a joined thread
     * for a moment while it reaps it. */
    if (!wait_until(no_eventwire_threads, NULL, 10000)) {
        ew_thread_census(&ew_after, NULL, NULL);
        fail_msg("%d eventwire thread(s) still listed 10 s after ew_manager_free", ew_after);
    }
    tally_free(&t);
}

/* A handler that counts how many of its runs overlap, and holds each run
 * until the test opens the gate. */
typedef struct gate {
    pthread_mutex_t mu;
    pthread_cond_t cv;
    int active, max_active, done;
    bool open;
    int64_t last[4];   /* per listener: the last id handled */
    int out_of_order;
} gate;

static void gate_init(gate *g, bool open)
{
    memset(g, 0, sizeof *g);
    pthread_mutex_init(&g->mu, NULL);
    pthread_cond_init(&g->cv, NULL);
    g->open = open;
    for (int i = 0; i < 4; i++)
        g->last[i] = -1;
}

static void gate_free(gate *g)
{
    pthread_mutex_destroy(&g->mu);
    pthread_cond_destroy(&g->cv);
}

static int gate_get(gate *g, int *which)
{
    pthread_mutex_lock(&g->mu);
    int v = *which;
    pthread_mutex_unlock(&g->mu);
    return v;
}

static void gate_open(gate *g)
{
    pthread_mutex_lock(&g->mu);
    g->open = true;
    pthread_cond_broadcast(&g->cv);
    pthread_mutex_unlock(&g->mu);
}

typedef struct gate_ref {
    gate *g;
    int slot;
    int active;   /* this listener's runs at once */
} gate_ref;

static ew_err gate_listener(ew_delivery *d, const void *event, void *user)
{
    (void)d;
    gate_ref *r = user;
    gate *g = r->g;
    const conf_event *e = event;
    pthread_mutex_lock(&g->mu);
    g->active++;
    r->active++;
    if (r->active > g->max_active)
        g->max_active = r->active;
    if (e->id <= g->last[r->slot])
        g->out_of_order++;
    g->last[r->slot] = e->id;
    while (!g->open)
        pthread_cond_wait(&g->cv, &g->mu);
    g->active--;
    r->active--;
    g->done++;
    pthread_mutex_unlock(&g->mu);
    return EW_OK;
}

/* Concurrency 3 on a pool of 8: three of its messages run at once, never a
 * fourth, though five pool threads are idle and messages wait. */
static void concurrency_caps_the_pool_threads_of_a_listener(void **state)
{
    (void)state;
    EV(ev, "PoolCap", false);
    gate g;
    gate_init(&g, false);
    gate_ref r = {.g = &g};
    ew_manager *m = pool_mgr("local://pool-cap", 8);
    ew_listener_desc d = {.event = &ev, .name = "Capped", .concurrency = 3};
    assert_int_equal(ew_listen(m, &d, gate_listener, &r), EW_OK);
    assert_int_equal(ew_manager_start(m), EW_OK);
    send_range(m, &ev, 0, 30);
    WAIT_FOR(gate_get(&g, &g.active) == 3, 30000, "three handlers never ran at once");
    /* The other five threads went back to sleep with messages waiting. */
    WAIT_FOR(pool_sleeping(m) == 5, 30000, "the idle pool threads never slept");
    assert_int_equal(gate_get(&g, &g.active), 3);
    gate_open(&g);
    WAIT_FOR(gate_get(&g, &g.done) == 30, 30000, "%d of 30 handled", gate_get(&g, &g.done));
    assert_int_equal(g.max_active, 3);
    assert_int_equal(ew_manager_stop(m, 10000), EW_OK);
    ew_manager_free(m);
    gate_free(&g);
}

/* Four listeners of concurrency 1 on a pool of 4 threads: each sees its
 * messages one at a time, in the order sent, though a different pool
 * thread may run each batch. */
static void concurrency_one_keeps_order_on_the_pool(void **state)
{
    (void)state;
    EV(ev, "PoolOrder", false);
    gate g;
    gate_init(&g, true);
    gate_ref r[4];
    ew_manager *m = pool_mgr("local://pool-order", 4);
    char names[4][8];
    for (int i = 0; i < 4; i++) {
        r[i] = (gate_ref){.g = &g, .slot = i};
        snprintf(names[i], sizeof names[i], "O%d", i);
        ew_listener_desc d = {.event = &ev, .name = names[i], .concurrency = 1};
        assert_int_equal(ew_listen(m, &d, gate_listener, &r[i]), EW_OK);
    }
    assert_int_equal(ew_manager_start(m), EW_OK);
    send_range_async(m, &ev, 0, 3000);
    WAIT_FOR(gate_get(&g, &g.done) == 4 * 3000, 60000, "%d of 12000 handled",
             gate_get(&g, &g.done));
    assert_int_equal(g.out_of_order, 0);
    assert_int_equal(g.max_active, 1);
    for (int i = 0; i < 4; i++)
        assert_int_equal(g.last[i], 2999);
    ew_manager_free(m);
    gate_free(&g);
}

/* One pool thread, a slow listener with a long backlog and a fast one: the
 * fast one's messages are all handled while most of the slow one's still
 * wait (the listeners take turns, neither waits for the other's backlog). */
static void a_busy_listener_does_not_starve_the_others(void **state)
{
    (void)state;
    EV(slow_ev, "PoolSlow", false);
    EV(fast_ev, "PoolFast", false);
    tally slow, fast;
    tally_init(&slow, 200);
    tally_init(&fast, 50);
    tally_slow(&slow, 5);
    ew_manager *m = pool_mgr("local://pool-fair", 1);
    listen_tally(m, &slow_ev, "Slow", false, 1, &slow);
    listen_tally(m, &fast_ev, "Fast", false, 1, &fast);
    assert_int_equal(ew_manager_start(m), EW_OK);
    send_range(m, &slow_ev, 0, 200);
    assert_true(tally_wait_count(&slow, 1, 30000)); /* the slow one holds the thread */
    send_range(m, &fast_ev, 0, 50);
    assert_true(tally_wait_all(&fast, 60000));
    size_t slow_done = tally_total(&slow);
    print_message("fast: 50 of 50 handled while slow had %zu of 200\n", slow_done);
    /* Turns of 2 ms: a handful of the slow one's messages, not a whole
     * batch of 64 (nor all 200) before the fast one's. */
    assert_true(slow_done < 40);
    /* And the slow one goes on to the end. */
    assert_true(tally_wait_all(&slow, 60000));
    assert_int_equal(tally_dups(&slow), 0);
    assert_int_equal(tally_dups(&fast), 0);
    ew_manager_free(m);
    tally_free(&slow);
    tally_free(&fast);
}

/* A retry's backoff does not hold a pool thread: with one thread, another
 * listener is served while a message waits to be retried, and the waiting
 * listener (concurrency 1) takes none of its later messages meanwhile. */
static void a_retry_backoff_frees_the_pool_thread(void **state)
{
    (void)state;
    EV(retry_ev, "PoolRetry", false);
    EV(fast_ev, "PoolRetryFast", false);
    tally retry, fast;
    tally_init(&retry, 5);
    tally_init(&fast, 50);
    retry.fail_once = 0;
    ew_manager *m = pool_mgr("local://pool-retry", 1);
    ew_listener_desc rd = {.event = &retry_ev, .name = "Retry",
                           .retry = {.attempts = 3, .backoff_ms = 5000}};
    assert_int_equal(ew_listen(m, &rd, tally_listener, tref(&retry, "r")), EW_OK);
    listen_tally(m, &fast_ev, "Fast", false, 1, &fast);
    assert_int_equal(ew_manager_start(m), EW_OK);
    send_range(m, &retry_ev, 0, 5);
    assert_true(tally_wait_count(&retry, 1, 30000)); /* id 0 failed: a 5 s backoff */
    send_range(m, &fast_ev, 0, 50);
    assert_true(tally_wait_all(&fast, 30000));
    /* Still in its backoff: nothing of the retrying listener handled yet. */
    assert_int_equal(tally_total(&retry), 0);
    assert_true(tally_wait_all(&retry, 60000));
    pthread_mutex_lock(&retry.mu);
    assert_int_equal(retry.attempts[0], 2);
    assert_int_equal(retry.out_of_order, 0);
    pthread_mutex_unlock(&retry.mu);
    {
        ewi_listener *l = m->listeners->next; /* Retry, registered first */
        assert_string_equal(l->name, "Retry");
        /* Counted once the listener returned (after the tally noted it). */
        WAIT_FOR(atomic_load(&l->mx.handled) == 5, 30000, "handled %llu of 5",
                 (unsigned long long)atomic_load(&l->mx.handled));
        assert_int_equal(atomic_load(&l->mx.retried), 1);
    }
    ew_manager_free(m);
    tally_free(&retry);
    tally_free(&fast);
}

/* A graceful stop on local:// delivers what is queued; every delivery
 * settles exactly once. */
static void stop_delivers_what_is_queued_on_the_pool(void **state)
{
    (void)state;
    EV(ev, "PoolStop", false);
    tally a, b;
    tally_init(&a, 500);
    tally_init(&b, 500);
    ew_manager *m = pool_mgr("local://pool-stop", 2);
    listen_tally(m, &ev, "A", false, 1, &a);
    listen_tally(m, &ev, "B", false, 4, &b);
    assert_int_equal(ew_manager_start(m), EW_OK);
    send_range(m, &ev, 0, 500);
    assert_int_equal(ew_manager_stop(m, 60000), EW_OK);
    assert_int_equal(tally_total(&a), 500);
    assert_int_equal(tally_total(&b), 500);
    assert_int_equal(tally_dups(&a), 0);
    assert_int_equal(tally_dups(&b), 0);
    for (ewi_listener *l = m->listeners; l; l = l->next) {
        assert_int_equal(atomic_load(&l->mx.handled), 500);
        assert_int_equal(atomic_load(&l->mx.settled) + atomic_load(&l->mx.settled_other),
                         500);
    }
    ew_manager_free(m);
    tally_free(&a);
    tally_free(&b);
}

/* A listener in a retry's backoff, removed: ew_unlisten ends the backoff,
 * the message goes back, and the pool serves the other listener on. */
static void unlisten_ends_a_backoff_on_the_pool(void **state)
{
    (void)state;
    EV(ev, "PoolUnlisten", false);
    tally failing, ok;
    tally_init(&failing, 20);
    tally_init(&ok, 20);
    failing.fail_always = 0; /* id 0 fails on every run */
    ew_manager *m = pool_mgr("local://pool-unlisten", 2);
    ew_listener_desc fd = {.event = &ev, .name = "Failing",
                           .retry = {.attempts = 5, .backoff_ms = 60000}};
    assert_int_equal(ew_listen(m, &fd, tally_listener, tref(&failing, "f")), EW_OK);
    listen_tally(m, &ev, "Ok", false, 1, &ok);
    assert_int_equal(ew_manager_start(m), EW_OK);
    send_range(m, &ev, 0, 20);
    assert_true(tally_wait_count(&failing, 1, 30000)); /* now in a 60 s backoff */
    assert_true(tally_wait_all(&ok, 30000));
    int64_t t0 = ewi_now_ms();
    assert_int_equal(ew_unlisten(m, &fd, 0), EW_OK);
    assert_true(ewi_now_ms() - t0 < 30000);
    assert_int_equal(tally_seen(&failing, 0), 0);
    ew_manager_free(m);
    tally_free(&failing);
    tally_free(&ok);
}

int main(void)
{
    support_init("local://");
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(pool_size_is_checked),
        cmocka_unit_test(hundred_listeners_run_on_the_pool_threads),
        cmocka_unit_test(concurrency_caps_the_pool_threads_of_a_listener),
        cmocka_unit_test(concurrency_one_keeps_order_on_the_pool),
        cmocka_unit_test(a_busy_listener_does_not_starve_the_others),
        cmocka_unit_test(a_retry_backoff_frees_the_pool_thread),
        cmocka_unit_test(stop_delivers_what_is_queued_on_the_pool),
        cmocka_unit_test(unlisten_ends_a_backoff_on_the_pool),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
