/* The work queue between application threads and an I/O thread
 * (core/workq.c): order, batches, wake-ups, closing. */
#include <poll.h>
#include <pthread.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <cmocka.h>

#include "workq.h"

typedef struct req {
    int from; /* pushing thread */
    int seq;  /* its order there */
    ewi_workq_item link;
} req;

static req *entry(ewi_workq_item *it)
{
    return EWI_WORKQ_ENTRY(it, req, link);
}

/* Whether the waker has a wake-up pending, without clearing it. */
static bool woken(ewi_waker *w, int timeout_ms)
{
    struct pollfd p = {.fd = ewi_waker_fd(w), .events = POLLIN};
    return poll(&p, 1, timeout_ms) == 1 && (p.revents & POLLIN);
}

static void batch_keeps_push_order(void **state)
{
    (void)state;
    ewi_workq q;
    ewi_workq_init_fn(&q, NULL, NULL);
    assert_false(ewi_workq_pending(&q));
    assert_null(ewi_workq_take(&q));
    req r[5];
    for (int i = 0; i < 5; i++) {
        r[i].seq = i;
        assert_true(ewi_workq_push(&q, &r[i].link));
    }
    assert_true(ewi_workq_pending(&q));
    int n = 0;
    for (ewi_workq_item *it = ewi_workq_take(&q); it; it = it->next)
        assert_int_equal(entry(it)->seq, n++);
    assert_int_equal(n, 5);
    /* The take emptied it: the next batch starts afresh. */
    assert_false(ewi_workq_pending(&q));
    assert_null(ewi_workq_take(&q));
    assert_true(ewi_workq_push(&q, &r[2].link));
    ewi_workq_item *b = ewi_workq_take(&q);
    assert_ptr_equal(b, &r[2].link);
    assert_null(b->next);
    ewi_workq_destroy(&q);
}

static void one_wake_up_per_batch(void **state)
{
    (void)state;
    ewi_waker w;
    assert_int_equal(ewi_waker_init(&w), EW_OK);
    ewi_workq q;
    ewi_workq_init(&q, &w);
    req r[3];
    assert_false(woken(&w, 0));
    assert_true(ewi_workq_push(&q, &r[0].link));
    assert_true(woken(&w, 0));
    /* The thread clears its wake-up, then takes: a push before the take
     * joins the batch without a wake-up of its own. */
    ewi_waker_drain(&w);
    assert_true(ewi_workq_push(&q, &r[1].link));
    assert_false(woken(&w, 0));
    ewi_workq_item *b = ewi_workq_take(&q);
    assert_ptr_equal(b, &r[0].link);
    assert_ptr_equal(b->next, &r[1].link);
    assert_null(b->next->next);
    /* After the take, the next push wakes again. */
    assert_false(woken(&w, 0));
    assert_true(ewi_workq_push(&q, &r[2].link));
    assert_true(woken(&w, 0));
    ewi_workq_destroy(&q);
    ewi_waker_close(&w);
}

static void count_wake(void *arg)
{
    (*(int *)arg)++;
}

/* A queue that counts its wake-ups, holding r[0] and r[1]. */
static void two_pushed(ewi_workq *q, int *wakes, req *r)
{
    ewi_workq_init_fn(q, count_wake, wakes);
    assert_true(ewi_workq_push(q, &r[0].link));
    assert_true(ewi_workq_push(q, &r[1].link));
    assert_int_equal(*wakes, 1);
}

static void wake_function_runs_on_the_first_push(void **state)
{
    (void)state;
    int wakes = 0;
    ewi_workq q;
    req r[3];
    two_pushed(&q, &wakes, r);
    assert_non_null(ewi_workq_take(&q));
    assert_true(ewi_workq_push(&q, &r[2].link));
    assert_int_equal(wakes, 2);
    ewi_workq_destroy(&q);
}

static void close_hands_back_the_rest_and_refuses_more(void **state)
{
    (void)state;
    int wakes = 0;
    ewi_workq q;
    req r[3];
    two_pushed(&q, &wakes, r);
    ewi_workq_item *rest = ewi_workq_close(&q);
    assert_ptr_equal(rest, &r[0].link);
    assert_ptr_equal(rest->next, &r[1].link);
    assert_null(rest->next->next);
    assert_false(ewi_workq_push(&q, &r[2].link));
    assert_false(ewi_workq_pending(&q));
    assert_null(ewi_workq_take(&q));
    assert_null(ewi_workq_close(&q));
    assert_int_equal(wakes, 1); /* a refused push wakes no one */
    ewi_workq_destroy(&q);
}

static void a_chain_goes_on_whole_and_leaves_the_wake_up_to_the_caller(void **state)
{
    (void)state;
    int wakes = 0;
    ewi_workq q;
    ewi_workq_init_fn(&q, count_wake, &wakes);
    req r[5];
    for (int i = 0; i < 5; i++) {
        r[i].seq = i;
        r[i].link.next = i < 4 ? &r[i + 1].link : (ewi_workq_item *)&r[0]; /* stale */
    }
    bool wake = false;
    /* Onto an empty queue: a wake-up is owed, and not given. */
    assert_true(ewi_workq_push_list(&q, &r[0].link, &r[2].link, &wake));
    assert_true(wake);
    assert_int_equal(wakes, 0);
    ewi_workq_wake(&q);
    assert_int_equal(wakes, 1);
    /* Onto a queue that holds a batch: none owed; the order holds. */
    assert_true(ewi_workq_push_list(&q, &r[3].link, &r[4].link, &wake));
    assert_false(wake);
    int n = 0;
    for (ewi_workq_item *it = ewi_workq_take(&q); it; it = it->next)
        assert_int_equal(entry(it)->seq, n++);
    assert_int_equal(n, 5); /* the last one's stale link was cut */
    /* Closed: refused, nothing owed. */
    assert_null(ewi_workq_close(&q));
    wake = true;
    assert_false(ewi_workq_push_list(&q, &r[0].link, &r[0].link, &wake));
    assert_false(wake);
    assert_int_equal(wakes, 1);
    ewi_workq_destroy(&q);
}

/* ---- several pushing threads, one taker ---------------------------------- */

enum { PUSHERS = 4, PER_PUSHER = 20000 };

typedef struct shared {
    ewi_waker w;
    ewi_workq q;
    req *reqs; /* PUSHERS * PER_PUSHER */
    pthread_barrier_t go;
} shared;

typedef struct pusher {
    shared *s;
    int id;
} pusher;

static void *push_all(void *arg)
{
    pusher *p = arg;
    pthread_barrier_wait(&p->s->go);
    for (int i = 0; i < PER_PUSHER; i++) {
        req *r = &p->s->reqs[p->id * PER_PUSHER + i];
        r->from = p->id;
        r->seq = i;
        if (!ewi_workq_push(&p->s->q, &r->link))
            return p; /* a push to an open queue failed */
    }
    return NULL;
}

static void many_pushers_one_taker(void **state)
{
    (void)state;
    shared s;
    s.reqs = calloc(PUSHERS * PER_PUSHER, sizeof *s.reqs);
    assert_non_null(s.reqs);
    assert_int_equal(ewi_waker_init(&s.w), EW_OK);
    ewi_workq_init(&s.q, &s.w);
    pthread_barrier_init(&s.go, NULL, PUSHERS + 1);
    pthread_t th[PUSHERS];
    pusher ps[PUSHERS];
    for (int i = 0; i < PUSHERS; i++) {
        ps[i] = (pusher){.s = &s, .id = i};
        assert_int_equal(pthread_create(&th[i], NULL, push_all, &ps[i]), 0);
    }
    pthread_barrier_wait(&s.go);

    /* The I/O thread's way: sleep on the waker, clear it, take the batch.
     * Every item must arrive through wake-ups alone, each pusher's in its
     * order; a lost wake-up shows as a 10 s sleep with work queued. */
    int next[PUSHERS] = {0};
    int got = 0, batches = 0;
    while (got < PUSHERS * PER_PUSHER) {
        if (!woken(&s.w, 10000)) {
            print_error("no wake-up for 10 s with %d of %d items taken (pending: %d)\n", got,
                        PUSHERS * PER_PUSHER, (int)ewi_workq_pending(&s.q));
            fail();
        }
        ewi_waker_drain(&s.w);
        ewi_workq_item *it = ewi_workq_take(&s.q);
        if (it)
            batches++;
        for (; it; it = it->next, got++) {
            req *r = entry(it);
            assert_int_equal(r->seq, next[r->from]);
            next[r->from]++;
        }
    }
    for (int i = 0; i < PUSHERS; i++) {
        void *res;
        pthread_join(th[i], &res);
        if (res) {
            print_error("pusher %d: a push to an open queue was refused\n", i);
            fail();
        }
        assert_int_equal(next[i], PER_PUSHER);
    }
    assert_true(batches >= 1);
    assert_false(ewi_workq_pending(&s.q));
    pthread_barrier_destroy(&s.go);
    ewi_workq_destroy(&s.q);
    ewi_waker_close(&s.w);
    free(s.reqs);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(batch_keeps_push_order),
        cmocka_unit_test(one_wake_up_per_batch),
        cmocka_unit_test(wake_function_runs_on_the_first_push),
        cmocka_unit_test(close_hands_back_the_rest_and_refuses_more),
        cmocka_unit_test(a_chain_goes_on_whole_and_leaves_the_wake_up_to_the_caller),
        cmocka_unit_test(many_pushers_one_taker),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
