/* A work queue from any thread to one I/O thread.
 *
 * Items are intrusive: a request embeds an ewi_workq_item and is found again
 * from it with EWI_WORKQ_ENTRY. The queue keeps the order of pushes.
 *
 * Threads: ewi_workq_push and ewi_workq_pending may be called from any
 * thread; ewi_workq_take and ewi_workq_close are for the one thread that
 * runs the work. Each call takes the queue's own lock once; a caller may hold
 * its own lock around a call (that lock then comes first, always), and the
 * queue never calls out while it holds its lock.
 *
 * Wake-ups: a push onto an empty queue wakes the I/O thread, once per batch:
 * a push onto a queue that is not empty does not, since the thread takes it
 * with the rest. So the I/O thread clears its wake-up (ewi_waker_drain)
 * before it takes the batch, or looks at ewi_workq_pending before it
 * sleeps: a wake-up cleared after a take may have been the one for the next
 * batch. The wake-up runs on the pushing thread, after the queue's lock is
 * released, and under whatever lock the pusher holds.
 *
 * Closing: ewi_workq_close hands back what is left and refuses every later
 * push, so that a request is either taken by the I/O thread or refused,
 * never left behind. */
#ifndef EVENTWIRE_WORKQ_H
#define EVENTWIRE_WORKQ_H

#include <pthread.h>
#include <stdbool.h>
#include <stddef.h>

#include "waker.h"

typedef struct ewi_workq_item {
    struct ewi_workq_item *next; /* the queue's, and the taker's once taken */
} ewi_workq_item;

typedef void (*ewi_workq_wake_fn)(void *arg);

typedef struct ewi_workq {
    pthread_mutex_t mu;
    ewi_workq_item *head, *tail;
    bool closed;
    ewi_workq_wake_fn wake;
    void *wake_arg;
} ewi_workq;

/* The containing object of an item: EWI_WORKQ_ENTRY(it, struct req, link). */
#define EWI_WORKQ_ENTRY(item, type, member) ((type *)(void *)((char *)(item) - offsetof(type, member)))

/* A queue whose pushes wake w (an I/O thread that polls ewi_waker_fd). */
void ewi_workq_init(ewi_workq *q, ewi_waker *w);
/* A queue whose pushes call wake(arg) (an I/O thread that sleeps elsewhere,
 * in an event loop with a wake-up call of its own). */
void ewi_workq_init_fn(ewi_workq *q, ewi_workq_wake_fn wake, void *arg);
/* The queue must be empty or its items owned elsewhere: nothing is freed. */
void ewi_workq_destroy(ewi_workq *q);

/* Appends it, and wakes the I/O thread if the queue was empty. false when the
 * queue is closed: it was not queued and stays the caller's. */
bool ewi_workq_push(ewi_workq *q, ewi_workq_item *it);
/* Appends the chain first..last (linked by next) as ewi_workq_push does,
 * but leaves the wake-up to the caller: *wake says whether one is owed
 * (the queue was empty), and the caller gives it with ewi_workq_wake once
 * it has released its own lock, so that the I/O thread, woken, does not
 * find that lock held. false when the queue is closed (*wake false). */
bool ewi_workq_push_list(ewi_workq *q, ewi_workq_item *first, ewi_workq_item *last,
                         bool *wake);
/* The wake-up an ewi_workq_push_list owed. */
void ewi_workq_wake(ewi_workq *q);
/* The whole batch in push order, linked by next (NULL: empty); the queue is
 * empty after it. */
ewi_workq_item *ewi_workq_take(ewi_workq *q);
/* Closes the queue: what is left, as ewi_workq_take; later pushes fail. */
ewi_workq_item *ewi_workq_close(ewi_workq *q);
/* Takes pushes again after ewi_workq_close (a transport started again after
 * its I/O thread ended). */
void ewi_workq_open(ewi_workq *q);
/* Whether items wait (a hint once the lock is released, but a true one
 * until the next take: only the I/O thread takes). */
bool ewi_workq_pending(ewi_workq *q);

#endif
