/* The rules every transport shares for a send's outcome and its in-flight
 * window (core/outcome.c). */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdlib.h>
#include <string.h>
#include <cmocka.h>

#include "ewi.h"

static void unwritten_keeps_its_code_written_is_in_doubt(void **state)
{
    (void)state;
    ewi_pub p;
    memset(&p, 0, sizeof p);
    assert_int_equal(ewi_pub_unconfirmed(&p, EW_ETIMEDOUT), EW_ETIMEDOUT);
    assert_int_equal(ewi_pub_unconfirmed(&p, EW_ECLOSED), EW_ECLOSED);
    assert_int_equal(ewi_pub_unconfirmed(&p, EW_OK), EW_OK);
    assert_string_equal(ewi_pub_detail(&p, "unsent", "written"), "unsent");
    p.written = true;
    assert_int_equal(ewi_pub_unconfirmed(&p, EW_ETIMEDOUT), EW_EINDOUBT);
    assert_int_equal(ewi_pub_unconfirmed(&p, EW_ECLOSED), EW_EINDOUBT);
    assert_int_equal(ewi_pub_unconfirmed(&p, EW_EDISCONNECTED), EW_EINDOUBT);
    /* A confirm, or the broker's own refusal, is known: kept. */
    assert_int_equal(ewi_pub_unconfirmed(&p, EW_OK), EW_OK);
    assert_int_equal(ewi_pub_unconfirmed(&p, EW_EBROKER), EW_EBROKER);
    assert_int_equal(ewi_pub_unconfirmed(&p, EW_ENOTFOUND), EW_ENOTFOUND);
    assert_string_equal(ewi_pub_detail(&p, "unsent", "written"), "written");
}

static void full_window_times_out_at_the_deadline(void **state)
{
    (void)state;
    pthread_mutex_t mu;
    pthread_mutex_init(&mu, NULL);
    ewi_window w;
    ewi_window_init(&w, 2, EWI_DEFAULT_MAX_INFLIGHT_BYTES);
    pthread_mutex_lock(&mu);
    assert_int_equal(ewi_window_take(&w, &mu, ewi_now_ms() + 1000, 0), EW_OK);
    assert_int_equal(ewi_window_take(&w, &mu, ewi_now_ms() + 1000, 0), EW_OK);
    int64_t t0 = ewi_now_ms();
    assert_int_equal(ewi_window_take(&w, &mu, t0 + 50, 0), EW_ETIMEDOUT);
    assert_true(ewi_now_ms() - t0 >= 50);
    assert_int_equal(w.used, 2);
    ewi_window_give(&w, 1, 0);
    assert_int_equal(ewi_window_take(&w, &mu, ewi_now_ms(), 0), EW_OK);
    pthread_mutex_unlock(&mu);
    ewi_window_destroy(&w);
    pthread_mutex_destroy(&mu);
}

typedef struct waiter_arg {
    ewi_window *w;
    pthread_mutex_t *mu;
    ew_err rc;
    bool waiting;
    int wait_ms; /* the take's deadline from now (0: 30 s) */
    size_t bytes; /* the body it takes room for */
} waiter_arg;

static void *take_main(void *arg)
{
    waiter_arg *a = arg;
    pthread_mutex_lock(a->mu);
    a->waiting = true;
    a->rc = ewi_window_take(a->w, a->mu, ewi_now_ms() + (a->wait_ms ? a->wait_ms : 30000),
                            a->bytes);
    pthread_mutex_unlock(a->mu);
    return NULL;
}

/* Waits (bounded) until the thread is inside take, asleep on the window. */
static void wait_for_waiter(waiter_arg *a)
{
    int64_t deadline = ewi_now_ms() + 10000;
    for (;;) {
        pthread_mutex_lock(a->mu);
        bool in = a->waiting && a->w->waiters == 1;
        pthread_mutex_unlock(a->mu);
        if (in)
            return;
        assert_true(ewi_left_ms(deadline) > 0);
        ewi_sleep_ms(1);
    }
}

/* Starts a sender on a full window and waits until it sleeps there. */
static pthread_t start_waiter(waiter_arg *a)
{
    pthread_t th;
    assert_int_equal(pthread_create(&th, NULL, take_main, a), 0);
    wait_for_waiter(a);
    return th;
}

/* Gives n slots back one at a time (mu held around each, as a transport). */
static void give_each(ewi_window *w, pthread_mutex_t *mu, int n)
{
    for (int i = 0; i < n; i++) {
        pthread_mutex_lock(mu);
        ewi_window_give(w, 1, 0);
        pthread_mutex_unlock(mu);
    }
}

static void give_wakes_a_waiting_sender(void **state)
{
    (void)state;
    pthread_mutex_t mu;
    pthread_mutex_init(&mu, NULL);
    ewi_window w;
    ewi_window_init(&w, 1, EWI_DEFAULT_MAX_INFLIGHT_BYTES);
    pthread_mutex_lock(&mu);
    assert_int_equal(ewi_window_take(&w, &mu, ewi_now_ms(), 0), EW_OK);
    pthread_mutex_unlock(&mu);
    waiter_arg a = {&w, &mu, EW_EINVAL, false};
    pthread_t th = start_waiter(&a);
    give_each(&w, &mu, 1);
    pthread_join(th, NULL);
    assert_int_equal(a.rc, EW_OK);
    assert_int_equal(w.used, 1);
    ewi_window_destroy(&w);
    pthread_mutex_destroy(&mu);
}

/* A sender blocked on a big window is woken once 64 slots are free, not
 * for each one; a slot freed meanwhile is still its own at its deadline. */
static void a_big_window_wakes_its_sender_per_batch(void **state)
{
    (void)state;
    pthread_mutex_t mu;
    pthread_mutex_init(&mu, NULL);
    ewi_window w;
    ewi_window_init(&w, 4096, EWI_DEFAULT_MAX_INFLIGHT_BYTES);
    pthread_mutex_lock(&mu);
    for (int i = 0; i < 4096; i++)
        assert_int_equal(ewi_window_take(&w, &mu, ewi_now_ms(), 0), EW_OK);
    pthread_mutex_unlock(&mu);
    /* One slot freed: not a batch, and the waiter sleeps to its deadline,
     * then takes that slot rather than failing. */
    waiter_arg a = {&w, &mu, EW_EINVAL, false, 300};
    pthread_t th = start_waiter(&a);
    give_each(&w, &mu, 1);
    pthread_join(th, NULL);
    assert_int_equal(a.rc, EW_OK);
    assert_int_equal(w.used, 4096);
    /* 64 freed one by one: the 64th wakes the waiter (30 s deadline). */
    waiter_arg b = {&w, &mu, EW_EINVAL, false, 0};
    th = start_waiter(&b);
    give_each(&w, &mu, 64);
    int64_t t0 = ewi_now_ms();
    pthread_join(th, NULL);
    assert_true(ewi_now_ms() - t0 < 20000); /* woken, not timed out */
    assert_int_equal(b.rc, EW_OK);
    assert_int_equal(w.used, 4096 - 64 + 1);
    ewi_window_destroy(&w);
    pthread_mutex_destroy(&mu);
}

static void close_fails_waiting_and_later_takes(void **state)
{
    (void)state;
    pthread_mutex_t mu;
    pthread_mutex_init(&mu, NULL);
    ewi_window w;
    ewi_window_init(&w, 1, EWI_DEFAULT_MAX_INFLIGHT_BYTES);
    pthread_mutex_lock(&mu);
    assert_int_equal(ewi_window_take(&w, &mu, ewi_now_ms(), 0), EW_OK);
    pthread_mutex_unlock(&mu);
    waiter_arg a = {&w, &mu, EW_EINVAL, false};
    pthread_t th = start_waiter(&a);
    pthread_mutex_lock(&mu);
    ewi_window_close(&w);
    pthread_mutex_unlock(&mu);
    pthread_join(th, NULL);
    assert_int_equal(a.rc, EW_ECLOSED);
    pthread_mutex_lock(&mu);
    ewi_window_give(&w, 1, 0);
    assert_int_equal(ewi_window_take(&w, &mu, ewi_now_ms() + 1000, 0), EW_ECLOSED);
    ewi_window_open(&w);
    assert_int_equal(ewi_window_take(&w, &mu, ewi_now_ms(), 0), EW_OK);
    pthread_mutex_unlock(&mu);
    ewi_window_destroy(&w);
    pthread_mutex_destroy(&mu);
}

/* The window also bounds the bodies' bytes: a send that would take them
 * past max_bytes waits (and fails at its deadline) though slots are free;
 * a body larger than the whole window is let in alone; bytes given back
 * wake a sender waiting for them. */
static void a_window_bounds_the_bodies_bytes(void **state)
{
    (void)state;
    pthread_mutex_t mu;
    pthread_mutex_init(&mu, NULL);
    ewi_window w;
    ewi_window_init(&w, 100, 1000);
    pthread_mutex_lock(&mu);
    assert_int_equal(ewi_window_take(&w, &mu, ewi_now_ms(), 600), EW_OK);
    assert_int_equal(ewi_window_take(&w, &mu, ewi_now_ms(), 300), EW_OK);
    int64_t t0 = ewi_now_ms();
    assert_int_equal(ewi_window_take(&w, &mu, t0 + 50, 200), EW_ETIMEDOUT);
    assert_true(ewi_now_ms() - t0 >= 50);
    assert_int_equal(ewi_window_take(&w, &mu, ewi_now_ms(), 100), EW_OK);
    assert_int_equal(w.used_bytes, 1000);
    ewi_window_give(&w, 3, 1000);
    /* empty: one body over the limit goes alone, the next waits for it */
    assert_int_equal(ewi_window_take(&w, &mu, ewi_now_ms(), 5000), EW_OK);
    assert_int_equal(ewi_window_take(&w, &mu, ewi_now_ms(), 1), EW_ETIMEDOUT);
    pthread_mutex_unlock(&mu);
    waiter_arg a = {&w, &mu, EW_EINVAL, false, 0, 800};
    pthread_t th = start_waiter(&a);
    pthread_mutex_lock(&mu);
    ewi_window_give(&w, 1, 5000);
    pthread_mutex_unlock(&mu);
    int64_t t1 = ewi_now_ms();
    pthread_join(th, NULL);
    assert_true(ewi_now_ms() - t1 < 20000); /* woken, not timed out */
    assert_int_equal(a.rc, EW_OK);
    assert_int_equal(w.used, 1);
    assert_int_equal(w.used_bytes, 800);
    ewi_window_destroy(&w);
    pthread_mutex_destroy(&mu);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(unwritten_keeps_its_code_written_is_in_doubt),
        cmocka_unit_test(full_window_times_out_at_the_deadline),
        cmocka_unit_test(give_wakes_a_waiting_sender),
        cmocka_unit_test(a_big_window_wakes_its_sender_per_batch),
        cmocka_unit_test(close_fails_waiting_and_later_takes),
        cmocka_unit_test(a_window_bounds_the_bodies_bytes),
    };
    return cmocka_run_group_tests_name("outcome", tests, NULL, NULL);
}
