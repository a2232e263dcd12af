/* local:// — the in-process transport, the embedded default.
 *
 * A small broker inside the process with a broker's semantics: every queue
 * bound to an event gets its own copy; consumers of one queue compete,
 * round-robin, each holding at most its prefetch unacknowledged; a message
 * is removed only when acknowledged and a requeued one goes back to the
 * head of its queue; queues are bounded (a send to a full queue waits up to
 * its deadline, then fails: nothing is dropped). Managers that open the same
 * local://name share one broker, so several managers in one process act
 * like several servers. A per_process queue vanishes when its last consumer
 * leaves, as an expiring broker queue does. */
#include "ewi.h"
#include "options.h"

#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>


/* A message on a queue. The delivered ewi_msg lives inside it (its env is
 * the entry's reference, its redeliveries the entry's count), so a delivery
 * costs no allocation of its own. */
typedef struct lentry {
    ewi_msg msg;
    uint64_t seq; /* order of arrival in its queue */
    struct lentry *next;
} lentry;

struct lconsumer;

typedef struct lqueue {
    char name[EW_MAX_QUEUE_NAME];
    char event[EW_MAX_EVENT_NAME + 1]; /* bound to; "" for a dead-letter queue */
    bool per_process;
    lentry *head, *tail;
    size_t ready, unacked;
    uint64_t next_seq;
    struct lconsumer *consumers, *rr;
    struct lqueue *next;
} lqueue;

typedef struct lconsumer {
    ewi_sub *sub;
    lqueue *q;
    uint32_t credit;
    size_t outstanding;
    bool active;
    bool draining;  /* stopping: takes only messages older than until */
    uint64_t until;
    struct lconsumer *next;
    /* What dispatch hands over, in order, at the end of its round. */
    ewi_msg *out, **out_tail;
    struct lconsumer *out_next;
} lconsumer;

#define SPENT_MAX 128

typedef struct lbroker {
    char name[128];
    int refs;
    size_t capacity;
    pthread_mutex_t mu;
    pthread_cond_t room;   /* a queue got room */
    size_t room_waiters;   /* publishers waiting on room */
    pthread_cond_t arrive; /* a dead-letter queue got a message */
    lqueue *queues;
    /* Entries of acknowledged messages, kept for the next publishes: an
     * entry is allocated by the sending thread and released by a worker, and
     * malloc pays for every block freed on another thread than the one that
     * took it. */
    lentry *pool;
    size_t pooled;
    /* Envelopes of acknowledged messages, released by the next publish: a
     * sender's thread made them, and releasing them there keeps their
     * memory with that thread's allocator rather than moving it across. */
    ew_envelope *spent[SPENT_MAX];
    size_t nspent;
    struct lbroker *next;
} lbroker;

#define POOL_MAX 4096

struct ewi_transport {
    ew_manager *m;
    lbroker *b;
    atomic_bool stopped; /* read by senders, set by stop */
};

static pthread_mutex_t g_mu = PTHREAD_MUTEX_INITIALIZER;
static lbroker *g_brokers;

/* ---- broker registry ---------------------------------------------------- */

static lbroker *broker_open(const char *name, size_t capacity)
{
    pthread_mutex_lock(&g_mu);
    lbroker *b = g_brokers;
    while (b && strcmp(b->name, name) != 0)
        b = b->next;
    if (!b && (b = calloc(1, sizeof *b))) {
        snprintf(b->name, sizeof b->name, "%s", name);
        b->capacity = capacity;
        ewi_mutex_init(&b->mu);
        ewi_cond_init_mono(&b->room);
        ewi_cond_init_mono(&b->arrive);
        b->next = g_brokers;
        g_brokers = b;
    }
    if (b)
        b->refs++;
    pthread_mutex_unlock(&g_mu);
    return b;
}

static void queue_free(lqueue *q)
{
    for (lentry *e = q->head, *n; e; e = n) {
        n = e->next;
        ewi_envelope_unref(e->msg.env);
        free(e);
    }
    for (lconsumer *c = q->consumers, *n; c; c = n) {
        n = c->next;
        free(c);
    }
    free(q);
}

static void broker_close(lbroker *b)
{
    pthread_mutex_lock(&g_mu);
    if (--b->refs > 0) {
        pthread_mutex_unlock(&g_mu);
        return;
    }
    for (lbroker **p = &g_brokers; *p; p = &(*p)->next)
        if (*p == b) {
            *p = b->next;
            break;
        }
    pthread_mutex_unlock(&g_mu);
    for (lqueue *q = b->queues, *n; q; q = n) {
        n = q->next;
        queue_free(q);
    }
    for (lentry *e = b->pool, *n; e; e = n) {
        n = e->next;
        free(e);
    }
    for (size_t i = 0; i < b->nspent; i++)
        ewi_envelope_unref(b->spent[i]);
    pthread_mutex_destroy(&b->mu);
    pthread_cond_destroy(&b->room);
    pthread_cond_destroy(&b->arrive);
    free(b);
}

/* ---- queues (broker lock held) ----------------------------------------- */

static lqueue *queue_find(lbroker *b, const char *name)
{
    for (lqueue *q = b->queues; q; q = q->next)
        if (strcmp(q->name, name) == 0)
            return q;
    return NULL;
}

static lqueue *queue_declare(lbroker *b, const char *name, const char *event,
                             bool per_process)
{
    lqueue *q = queue_find(b, name);
    if (q)
        return q;
    q = calloc(1, sizeof *q);
    if (!q)
        return NULL;
    snprintf(q->name, sizeof q->name, "%s", name);
    snprintf(q->event, sizeof q->event, "%s", event ? event : "");
    q->per_process = per_process;
    q->next = b->queues;
    b->queues = q;
    return q;
}

/* A per_process queue dies with its last consumer and last unacked message. */
static void queue_maybe_expire(lbroker *b, lqueue *q)
{
    if (!q->per_process || q->consumers || q->unacked)
        return;
    for (lqueue **p = &b->queues; *p; p = &(*p)->next)
        if (*p == q) {
            *p = q->next;
            break;
        }
    queue_free(q);
}

static void push_tail(lqueue *q, lentry *e)
{
    e->seq = q->next_seq++;
    e->next = NULL;
    if (q->tail)
        q->tail->next = e;
    else
        q->head = e;
    q->tail = e;
    q->ready++;
}

static lentry *pop_head(lqueue *q)
{
    lentry *e = q->head;
    if (e) {
        q->head = e->next;
        if (!q->head)
            q->tail = NULL;
        q->ready--;
    }
    return e;
}

/* Hands ready messages to consumers with credit, round-robin: each
 * consumer gets what falls to it as one chain (one hand-off to its
 * listener's workers rather than one per message). */
static void dispatch(lqueue *q)
{
    lconsumer *outs = NULL;
    while (q->head && q->consumers) {
        lconsumer *start = q->rr ? q->rr : q->consumers, *c = start;
        uint64_t seq = q->head->seq;
        do {
            if (c->credit > 0 && (!c->draining || seq < c->until))
                break;
            c = c->next ? c->next : q->consumers;
        } while (c != start);
        if (c->credit == 0 || (c->draining && seq >= c->until))
            break;
        q->rr = c->next ? c->next : q->consumers;
        lentry *e = pop_head(q);
        e->msg.sub = c->sub;
        e->msg.tdata = e;
        e->msg.tag = (uint64_t)(uintptr_t)c;
        c->credit--;
        c->outstanding++;
        q->unacked++;
        if (!c->out) {
            c->out_tail = &c->out;
            c->out_next = outs;
            outs = c;
        }
        *c->out_tail = &e->msg;
        c->out_tail = &e->msg.qnext;
    }
    for (lconsumer *c = outs; c; c = c->out_next) {
        ewi_msg *chain = c->out;
        *c->out_tail = NULL;
        c->out = NULL;
        ewi_deliver_list(chain);
    }
}

static bool has_room(lbroker *b, const lqueue *q)
{
    return q->ready + q->unacked < b->capacity;
}

/* Wakes waiting publishers once q has drained a little below full: waking
 * them for every freed slot would cost a context switch per message. */
static void wake_publishers(lbroker *b, const lqueue *q)
{
    size_t slack = b->capacity / 16 ? b->capacity / 16 : 1;
    if (b->room_waiters && q->ready + q->unacked + slack <= b->capacity)
        pthread_cond_broadcast(&b->room);
}

static lentry *entry_new(ew_envelope *env)
{
    lentry *e = calloc(1, sizeof *e);
    if (e)
        e->msg.env = ewi_envelope_ref(env);
    return e;
}

/* An entry for env from the pool, else a new one (lock held). */
static lentry *entry_get(lbroker *b, ew_envelope *env)
{
    lentry *e = b->pool;
    if (!e)
        return entry_new(env);
    b->pool = e->next;
    b->pooled--;
    memset(e, 0, sizeof *e);
    e->msg.env = ewi_envelope_ref(env);
    return e;
}

/* Gives an entry whose envelope was taken out back (lock held). */
static void entry_put(lbroker *b, lentry *e)
{
    if (b->pooled >= POOL_MAX) {
        free(e);
        return;
    }
    e->next = b->pool;
    b->pool = e;
    b->pooled++;
}

/* Appends e (or a new entry when e is NULL) to q. */
static ew_err enqueue(lbroker *b, lqueue *q, ew_envelope *env, lentry *e)
{
    if (!e && !(e = entry_get(b, env)))
        return EW_ENOMEM;
    push_tail(q, e);
    dispatch(q);
    return EW_OK;
}

/* Waits (lock held) for room or until the deadline; false on timeout. */
static bool wait_room(lbroker *b, int64_t deadline)
{
    if (ewi_left_ms(deadline) == 0)
        return false;
    b->room_waiters++;
    ewi_cond_wait_until(&b->room, &b->mu, deadline);
    b->room_waiters--;
    return true;
}

/* ---- the transport ------------------------------------------------------ */

static ew_err l_create(ew_manager *m, const ewi_url *url, ewi_transport **out)
{
    ewi_opts p;
    char err[400];
    if (ewi_opts_parse(m, url, EWI_OPTS_LOCAL, false, &p, err, sizeof err) != EW_OK) {
        ewi_log(m, EW_LOG_ERROR, "local URL: %s", err);
        return EW_EINVAL;
    }
    long cap = p.num[EWI_OPT_CAPACITY];
    if (url->user || url->port || (url->path && *url->path)) {
        ewi_log(m, EW_LOG_ERROR, "local: the URL takes only a name: local://[name]");
        return EW_EINVAL;
    }
    ewi_transport *t = calloc(1, sizeof *t);
    if (!t)
        return EW_ENOMEM;
    t->m = m;
    t->b = broker_open(url->host, (size_t)cap);
    if (!t->b) {
        free(t);
        return EW_ENOMEM;
    }
    *out = t;
    return EW_OK;
}

static ew_err l_start(ewi_transport *t, int timeout_ms)
{
    EWI_UNUSED(timeout_ms);
    t->stopped = false;
    return EW_OK;
}

static ew_err l_declare(ewi_transport *t, const char *event, bool durable)
{
    EWI_UNUSED(t);
    EWI_UNUSED(event);
    EWI_UNUSED(durable);
    return EW_OK; /* events are bindings of queues here: nothing to make */
}

static ew_err l_subscribe(ewi_transport *t, ewi_sub *sub)
{
    lbroker *b = t->b;
    lconsumer *c = calloc(1, sizeof *c);
    if (!c)
        return EW_ENOMEM;
    pthread_mutex_lock(&b->mu);
    lqueue *q = queue_declare(b, sub->queue, sub->event, sub->per_process);
    lqueue *dlq = queue_declare(b, sub->dlq, NULL, false);
    if (!q || !dlq) {
        pthread_mutex_unlock(&b->mu);
        free(c);
        return EW_ENOMEM;
    }
    c->sub = sub;
    c->q = q;
    c->credit = sub->prefetch;
    c->active = true;
    c->next = q->consumers;
    q->consumers = c;
    sub->tdata = c;
    dispatch(q);
    pthread_mutex_unlock(&b->mu);
    return EW_OK;
}

static void unlink_consumer(lqueue *q, lconsumer *c)
{
    for (lconsumer **p = &q->consumers; *p; p = &(*p)->next)
        if (*p == c) {
            *p = c->next;
            break;
        }
    if (q->rr == c)
        q->rr = NULL;
}

static void l_unsubscribe(ewi_transport *t, ewi_sub *sub)
{
    lbroker *b = t->b;
    lconsumer *c = sub->tdata;
    if (!c)
        return;
    pthread_mutex_lock(&b->mu);
    lqueue *q = c->q;
    unlink_consumer(q, c);
    c->active = false;
    sub->tdata = NULL;
    if (c->outstanding == 0)
        free(c);
    dispatch(q); /* other consumers take over */
    queue_maybe_expire(b, q);
    pthread_cond_broadcast(&b->room); /* a publisher may wait on a queue now gone */
    pthread_mutex_unlock(&b->mu);
}

/* A per_process queue expires with its last consumer and unacknowledged
 * message; what stays is a queue another manager of the same server name
 * consumes, or one with messages held: those go now. */
static ew_err l_delete_queue(ewi_transport *t, ewi_sub *sub, bool check, char *err,
                             size_t errlen)
{
    if (check)
        return EW_OK;
    lbroker *b = t->b;
    pthread_mutex_lock(&b->mu);
    lqueue *q = queue_find(b, sub->queue);
    ew_err rc = EW_OK;
    if (q && q->consumers) {
        snprintf(err, errlen, "queue %s has another consumer", sub->queue);
        rc = EW_ECONFLICT;
    } else if (q && q->unacked) {
        snprintf(err, errlen, "queue %s has %zu unacknowledged message(s) of another "
                 "manager", sub->queue, (size_t)q->unacked);
        rc = EW_ECONFLICT;
    } else if (q) {
        for (lqueue **p = &b->queues; *p; p = &(*p)->next)
            if (*p == q) {
                *p = q->next;
                break;
            }
        queue_free(q);
        pthread_cond_broadcast(&b->room);
    }
    pthread_mutex_unlock(&b->mu);
    return rc;
}

/* The queues a publish goes to (lock held): every queue bound to the event,
 * or the one named queue. Returns how many, or -1 on ENOMEM; *qs may be
 * re-allocated (then the caller frees it). */
static long targets(lbroker *b, const ewi_pub *p, lqueue ***qs, size_t *cap,
                    lqueue **inline_qs)
{
    size_t n = 0;
    if (p->dest != EWI_DEST_EVENT) {
        lqueue *q = p->dest == EWI_DEST_DLQ ? queue_declare(b, p->queue, NULL, false)
                                            : queue_find(b, p->queue);
        if (q)
            (*qs)[n++] = q;
        return q || p->dest != EWI_DEST_DLQ ? (long)n : -1;
    }
    for (lqueue *q = b->queues; q; q = q->next) {
        if (strcmp(q->event, p->event) != 0)
            continue;
        if (n == *cap) {
            lqueue **more = malloc(*cap * 2 * sizeof *more);
            if (!more)
                return -1;
            memcpy(more, *qs, n * sizeof *more);
            if (*qs != inline_qs)
                free(*qs);
            *qs = more;
            *cap *= 2;
        }
        (*qs)[n++] = q;
    }
    return (long)n;
}

static ew_err l_publish(ewi_transport *t, ewi_pub *p)
{
    lbroker *b = t->b;
    if (t->stopped)
        return EW_ECLOSED;
    lqueue *inline_qs[64], **qs = inline_qs;
    size_t cap = sizeof inline_qs / sizeof inline_qs[0];
    char detail[EW_MAX_QUEUE_NAME + 64];
    detail[0] = '\0'; /* not = "": that clears the whole array per send */
    ew_err rc = EW_OK;
    /* Most events go to one queue: its entry comes from the pool. */
    ew_envelope *spent[SPENT_MAX];
    size_t nspent = 0;
    pthread_mutex_lock(&b->mu);
    if (b->nspent >= SPENT_MAX / 2) {
        nspent = b->nspent;
        memcpy(spent, b->spent, nspent * sizeof *spent);
        b->nspent = 0;
    }
    lentry *spare = entry_get(b, p->env);
    if (!spare) {
        pthread_mutex_unlock(&b->mu);
        for (size_t i = 0; i < nspent; i++)
            ewi_envelope_unref(spent[i]);
        return EW_ENOMEM;
    }
    /* All or nothing: every target queue must have room. Targets are looked
     * up again after each wait, since queues may come and go meanwhile. */
    for (;;) {
        long n = targets(b, p, &qs, &cap, inline_qs);
        if (n < 0) {
            rc = EW_ENOMEM;
            break;
        }
        if (n == 0 && p->dest == EWI_DEST_LISTENER) {
            rc = EW_ENOTFOUND;
            snprintf(detail, sizeof detail, "no queue %s", p->queue);
            break;
        }
        const lqueue *full = NULL;
        for (long i = 0; i < n && !full; i++)
            if (!has_room(b, qs[i]))
                full = qs[i];
        if (!full) {
            for (long i = 0; rc == EW_OK && i < n; i++)
                rc = enqueue(b, qs[i], p->env, i == 0 ? spare : NULL);
            if (n > 0)
                spare = NULL;
            break;
        }
        if (!wait_room(b, p->deadline_ms)) {
            rc = EW_ETIMEDOUT;
            snprintf(detail, sizeof detail, "queue %s is full (%zu messages)",
                     full->name, b->capacity);
            break;
        }
    }
    if (rc == EW_OK && p->dest == EWI_DEST_DLQ)
        pthread_cond_broadcast(&b->arrive);
    if (spare) {
        ewi_envelope_unref(spare->msg.env); /* the caller holds another */
        entry_put(b, spare);
    }
    pthread_mutex_unlock(&b->mu);
    for (size_t i = 0; i < nspent; i++)
        ewi_envelope_unref(spent[i]);
    if (qs != inline_qs)
        free(qs);
    /* Still full at the deadline: the send fails here and done never runs,
     * the rule of every transport's window. */
    if (rc == EW_ETIMEDOUT)
        ewi_log(t->m, EW_LOG_ERROR, "send %s: %s until the send deadline", p->event, detail);
    if (rc == EW_ENOMEM || rc == EW_ETIMEDOUT)
        return rc;
    p->done(p, rc, detail[0] ? detail : NULL);
    return EW_OK;
}

static void l_settle(ewi_transport *t, ewi_msg *msg, ewi_settle how)
{
    lbroker *b = t->b;
    lentry *e = msg->tdata;
    lconsumer *c = (lconsumer *)(uintptr_t)msg->tag;
    ew_envelope *acked = NULL;
    pthread_mutex_lock(&b->mu);
    lqueue *q = c->q;
    q->unacked--;
    c->outstanding--;
    if (how == EWI_REQUEUE) {
        /* Back in its original place among the ready messages, so that
         * several messages given back keep their order. */
        e->msg.redeliveries++;
        lentry **at = &q->head;
        while (*at && (*at)->seq < e->seq)
            at = &(*at)->next;
        e->next = *at;
        *at = e;
        if (!e->next)
            q->tail = e;
        q->ready++;
    } else {
        acked = e->msg.env;
        entry_put(b, e);
    }
    if (c->active)
        c->credit++;
    else if (c->outstanding == 0)
        free(c);
    dispatch(q);
    wake_publishers(b, q);
    queue_maybe_expire(b, q);
    pthread_mutex_unlock(&b->mu);
    /* Released outside the lock the senders need. */
    ewi_envelope_unref(acked);
}

static void l_settle_acks(ewi_transport *t, ewi_msg *first)
{
    lbroker *b = t->b;
    /* Read once: the first entry may be freed in the loop. */
    uint64_t tag = first->tag;
    lconsumer *c = (lconsumer *)(uintptr_t)tag;
    lqueue *q = c->q;
    /* Released by a sender (spent), or else outside the lock the senders
     * need. */
    ew_envelope *acked[64];
    size_t nacked = 0;
    ewi_msg *more = NULL;
    pthread_mutex_lock(&b->mu);
    size_t n = 0;
    for (ewi_msg *msg = first, *next; msg; msg = next) {
        next = msg->qnext;
        if (nacked == sizeof acked / sizeof acked[0] || msg->tag != tag) {
            more = msg; /* the rest after this lock (or another consumer's) */
            break;
        }
        lentry *e = msg->tdata;
        if (b->nspent < SPENT_MAX)
            b->spent[b->nspent++] = e->msg.env;
        else
            acked[nacked++] = e->msg.env;
        entry_put(b, e);
        n++;
    }
    q->unacked -= n;
    c->outstanding -= n;
    if (c->active)
        c->credit += (uint32_t)n;
    else if (c->outstanding == 0)
        free(c);
    dispatch(q);
    wake_publishers(b, q);
    queue_maybe_expire(b, q);
    pthread_mutex_unlock(&b->mu);
    for (size_t i = 0; i < nacked; i++)
        ewi_envelope_unref(acked[i]);
    if (more)
        l_settle_acks(t, more);
}

static ew_err l_dlq_take(ewi_transport *t, ewi_dlq_req *req)
{
    lbroker *b = t->b;
    int64_t deadline = ewi_now_ms() + (req->timeout_ms > 0 ? req->timeout_ms : 0);
    lentry *taken = NULL, **tail = &taken;
    pthread_mutex_lock(&b->mu);
    for (;;) {
        lqueue *q = queue_find(b, req->dlq);
        while (q && q->head && req->taken < req->max) {
            *tail = pop_head(q);
            tail = &(*tail)->next;
            *tail = NULL;
            req->taken++;
        }
        if (req->taken > 0 || req->max == 0)
            break;
        if (ewi_left_ms(deadline) == 0)
            break;
        ewi_cond_wait_until(&b->arrive, &b->mu, deadline);
    }
    pthread_cond_broadcast(&b->room);
    pthread_mutex_unlock(&b->mu);
    req->taken = 0;
    lentry *e = taken;
    if (req->keep) {
        /* Seen, then all given back below. */
        for (lentry *k = e; k && req->fn(req->user, k->msg.env) == EW_OK; k = k->next)
            req->taken++;
    }
    while (e && !req->keep && req->fn(req->user, e->msg.env) == EW_OK) {
        lentry *n = e->next;
        ewi_envelope_unref(e->msg.env);
        free(e);
        req->taken++;
        e = n;
    }
    if (e) {
        /* Refused (or only looked at): it and the rest go back to the head
         * of the queue, in their order. */
        pthread_mutex_lock(&b->mu);
        lqueue *q = queue_find(b, req->dlq);
        lentry *last = e;
        size_t n = 1;
        for (; last->next; last = last->next)
            n++;
        if (q) {
            last->next = q->head;
            q->head = e;
            if (!q->tail)
                q->tail = last;
            q->ready += n;
            dispatch(q);
            e = NULL;
        }
        pthread_mutex_unlock(&b->mu);
        for (lentry *n2; e; e = n2) { /* the queue was deleted meanwhile */
            n2 = e->next;
            ewi_envelope_unref(e->msg.env);
            free(e);
        }
    }
    return EW_OK;
}

static size_t l_backlog(ewi_transport *t, ewi_sub *sub)
{
    lbroker *b = t->b;
    pthread_mutex_lock(&b->mu);
    lconsumer *c = sub->tdata;
    size_t n = 0;
    if (c) {
        if (!c->draining) {
            c->draining = true;
            c->until = c->q->next_seq;
        }
        /* Ready messages are in arrival order. */
        for (const lentry *e = c->q->head; e && e->seq < c->until; e = e->next)
            n++;
    }
    pthread_mutex_unlock(&b->mu);
    return n;
}

static void l_stop(ewi_transport *t)
{
    t->stopped = true;
}

static void l_destroy(ewi_transport *t)
{
    broker_close(t->b);
    free(t);
}

static const char *const local_schemes[] = {"local", NULL};

const ewi_transport_ops ewi_local_transport = {
    .name = "local",
    .schemes = local_schemes,
    .features = EWI_FEAT_DLQ_READ | EWI_FEAT_INPROC | EWI_FEAT_VOLATILE |
                EWI_FEAT_NO_CREDENTIALS,
    .create = l_create,
    .check_names = NULL,
    .start = l_start,
    .declare = l_declare,
    .subscribe = l_subscribe,
    .unsubscribe = l_unsubscribe,
    .delete_queue = l_delete_queue,
    .publish = l_publish,
    .settle = l_settle,
    .settle_acks = l_settle_acks,
    .dlq_take = l_dlq_take,
    .backlog = l_backlog,
    .stop = l_stop,
    .destroy = l_destroy,
};
