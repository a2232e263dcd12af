#include "workq.h"

static void wake_waker(void *arg)
{
    ewi_waker_wake(arg);
}

void ewi_workq_init_fn(ewi_workq *q, ewi_workq_wake_fn wake, void *arg)
{
    pthread_mutex_init(&q->mu, NULL);
    q->head = q->tail = NULL;
    q->closed = false;
    q->wake = wake;
    q->wake_arg = arg;
}

void ewi_workq_init(ewi_workq *q, ewi_waker *w)
{
    ewi_workq_init_fn(q, wake_waker, w);
}

void ewi_workq_destroy(ewi_workq *q)
{
    pthread_mutex_destroy(&q->mu);
}

bool ewi_workq_push(ewi_workq *q, ewi_workq_item *it)
{
    bool wake;
    if (!ewi_workq_push_list(q, it, it, &wake))
        return false;
    if (wake)
        ewi_workq_wake(q);
    return true;
}

bool ewi_workq_push_list(ewi_workq *q, ewi_workq_item *first, ewi_workq_item *last,
                         bool *wake)
{
    last->next = NULL;
    *wake = false;
    pthread_mutex_lock(&q->mu);
    if (q->closed) {
        pthread_mutex_unlock(&q->mu);
        return false;
    }
    *wake = !q->head;
    if (q->tail)
        q->tail->next = first;
    else
        q->head = first;
    q->tail = last;
    pthread_mutex_unlock(&q->mu);
    return true;
}

void ewi_workq_wake(ewi_workq *q)
{
    if (q->wake)
        q->wake(q->wake_arg);
}

ewi_workq_item *ewi_workq_take(ewi_workq *q)
{
    pthread_mutex_lock(&q->mu);
    ewi_workq_item *batch = q->head;
    q->head = q->tail = NULL;
    pthread_mutex_unlock(&q->mu);
    return batch;
}

ewi_workq_item *ewi_workq_close(ewi_workq *q)
{
    pthread_mutex_lock(&q->mu);
    ewi_workq_item *batch = q->head;
    q->head = q->tail = NULL;
    q->closed = true;
    pthread_mutex_unlock(&q->mu);
    return batch;
}

void ewi_workq_open(ewi_workq *q)
{
    pthread_mutex_lock(&q->mu);
    q->closed = false;
    pthread_mutex_unlock(&q->mu);
}

bool ewi_workq_pending(ewi_workq *q)
{
    pthread_mutex_lock(&q->mu);
    bool pending = q->head != NULL;
    pthread_mutex_unlock(&q->mu);
    return pending;
}
