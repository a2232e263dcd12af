/* Listener workers: the inbox the transport fills, the handling of one
 * message (decode, handle pipelines, listener, retry with backoff), dead
 * letters, and the drain on stop. Every delivery ends in exactly one settle. */
#include "manager_priv.h"

#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

struct ew_delivery {
    const ew_envelope *env;
    const char *queue;
    uint32_t attempt;
};

const ew_envelope *ew_delivery_envelope(const ew_delivery *d)
{
    return d ? d->env : NULL;
}

const char *ew_delivery_header(const ew_delivery *d, const char *key)
{
    return d ? ew_envelope_header(d->env, key) : NULL;
}

const char *ew_delivery_queue(const ew_delivery *d)
{
    return d ? d->queue : NULL;
}

uint32_t ew_delivery_attempt(const ew_delivery *d)
{
    return d ? d->attempt : 0;
}

/* ---- messages ----------------------------------------------------------- */

ewi_msg *ewi_msg_new(ewi_sub *sub, ew_envelope *env)
{
    ewi_msg *msg = calloc(1, sizeof *msg);
    if (!env)
        env = ewi_envelope_new();
    if (!msg || !env) {
        free(msg);
        ewi_envelope_unref(env);
        return NULL;
    }
    msg->env = env;
    msg->sub = sub;
    return msg;
}

void ewi_msg_free(ewi_msg *msg)
{
    if (!msg)
        return;
    ewi_envelope_unref(msg->env);
    free(msg);
}


/* Handling shorter than this on average: a busy worker is back for the
 * next message soon, and a new one need not wake another worker. */
#define HANDLE_QUICK_NS 20000
/* While handlers are quick, the work waiting (messages times the average
 * handling time, at least WORK_MIN_NS each) per busy worker that wakes
 * another: for less, the busy ones are back for it sooner than a woken
 * thread would be, and on a small machine the extra thread only takes
 * turns with the sender. */
#define WAKE_WORK_NS 50000
#define WORK_MIN_NS 1000
/* How long an idle worker of an in-process transport naps when it has
 * just emptied the inbox: while events stream in, the next ones arrive
 * within microseconds, and rather than poll for them (a core burnt) or
 * sleep until woken for each (a futex wake-up per event on the sender),
 * it lets them gather for this long and takes them together. A nap that
 * finds nothing ends in an ordinary sleep, which the next event ends at
 * once: at a low rate, an event waits for no nap. */
#define NAP_NS 100000
/* Messages that end a nap early. */
#define NAP_WAKE 64

/* How often a sleeping worker looks at the inbox while others are busy
 * with quick handlers. */
#define SLEEP_POLL_MS 2

/* Whether the inbox holds more than the busy workers take in good time
 * (mu held, or a deliverer after its push: see ewi_listener.posted):
 * handlers that are not quick, or more work waiting than WAKE_WORK_NS per
 * busy worker. */
static bool backlog(const ewi_listener *l)
{
    int64_t avg = atomic_load_explicit(&l->handle_ns, memory_order_relaxed);
    int64_t on = (int64_t)l->busy + l->napping; /* a napper takes what comes */
    if (on == 0 || avg >= HANDLE_QUICK_NS)
        return true;
    if (avg < WORK_MIN_NS)
        avg = WORK_MIN_NS;
    return (int64_t)ewi_inbox(l) * avg >= WAKE_WORK_NS * on;
}

/* Whether a worker is on the inbox: busy with a batch, or napping (it takes
 * what comes when its nap ends) (mu held, or a deliverer after its push). */
static bool others_on_it(const ewi_listener *l)
{
    return l->busy > 0 || l->napping;
}

/* Whether messages in the inbox should wake a sleeping worker: to poll
 * while none does (see worker_main), or for handlers that are not quick.
 * A backlog behind quick handlers is the poller's to see. */
static bool wake_another(const ewi_listener *l)
{
    return l->polling == 0 || !others_on_it(l) ||
           atomic_load_explicit(&l->handle_ns, memory_order_relaxed) >= HANDLE_QUICK_NS;
}

/* Whether the inbox asks for a sleeping worker to be woken (mu held). The
 * caller signals l->cv after it unlocks mu: signalled under the lock, the
 * woken worker would often run at once and block on mu, a second switch. */
static bool wake_for_inbox(const ewi_listener *l)
{
    return l->head && l->sleeping && !l->napping && wake_another(l);
}

static void pool_push(ewi_listener *l);
static bool runnable(const ewi_listener *l);

/* Appends first..last (n messages) to head..tail (mu held). */
static void inbox_append(ewi_listener *l, ewi_msg *first, ewi_msg *last, size_t n)
{
    if (l->tail)
        l->tail->qnext = first;
    else
        l->head = first;
    l->tail = last;
    l->nhead += n;
}

/* Puts a chain taken from the inbox and not started back at its head
 * (mu held). */
static void inbox_give_back(ewi_listener *l, ewi_msg *first)
{
    ewi_msg *last = first;
    size_t n = 1;
    for (; last->qnext; last = last->qnext)
        n++;
    last->qnext = l->head;
    l->head = first;
    if (!l->tail)
        l->tail = last;
    l->nhead += n;
    atomic_store(&l->taken, atomic_load(&l->taken) - n);
}

/* Moves what deliverers posted without the lock to head..tail, oldest first
 * (mu held). */
static void absorb(ewi_listener *l)
{
    if (!atomic_load(&l->posted))
        return;
    ewi_msg *s = atomic_exchange(&l->posted, NULL), *first = NULL, *last = s;
    size_t n = 0;
    while (s) {
        ewi_msg *next = s->qnext;
        s->qnext = first;
        first = s;
        s = next;
        n++;
    }
    last->qnext = NULL;
    inbox_append(l, first, last, n);
}

void ewi_deliver_list(ewi_msg *first)
{
    if (!first)
        return;
    ewi_listener *l = first->sub->core;
    ewi_msg *last = first;
    size_t n = 1, redelivered = first->redeliveries != 0;
    for (; last->qnext; last = last->qnext, n++)
        redelivered += last->qnext->redeliveries != 0;
    if (redelivered)
        ewi_ctr_add(&l->mx.redelivered, redelivered, false);
    ewi_ctr_add(&l->mx.delivered, n, false);
    if (l->m->pool) {
        pthread_mutex_lock(&l->mu);
        inbox_append(l, first, last, n);
        /* A listener with a free slot goes on the pool's run queue. */
        if (runnable(l))
            pool_push(l);
        pthread_mutex_unlock(&l->mu);
        return;
    }
    /* Pushed newest first, message by message: the chain goes on reversed,
     * and absorb turns the whole stack around. */
    ewi_msg *rev = NULL;
    for (ewi_msg *msg = first, *next; msg; msg = next) {
        next = msg->qnext;
        msg->qnext = rev;
        rev = msg;
    }
    ewi_msg *top = atomic_load_explicit(&l->posted, memory_order_relaxed);
    do
        first->qnext = top;
    while (!atomic_compare_exchange_weak(&l->posted, &top, rev));
    /* The rule below, read without the lock: a worker busy with a batch
     * takes these when it is done, and a napping one when its nap ends,
     * unless a batch waits; then no lock and no wake-up. */
    bool napping = atomic_load(&l->napping);
    if (napping ? ewi_inbox(l) < NAP_WAKE : !atomic_load(&l->sleeping) || !wake_another(l))
        return;
    pthread_mutex_lock(&l->mu);
    absorb(l);
    /* A napping worker takes what gathered when its nap ends, or at once
     * for a batch. Else wake a worker only when one sleeps, and then
     * not when busy workers handle messages quickly: one of them takes this
     * one in a moment, and a wake-up per message would cost the sender more
     * than the handler takes (concurrency 2 would be slower than 1). Slow
     * handlers, or a backlog, wake the next worker at once; a worker that
     * takes a batch and leaves messages wakes the next one too. Should a
     * quick handler block, a sleeping worker that polls (worker_main) takes
     * the message: without one, this wakes one. */
    bool nap_end = l->napping && l->nhead >= NAP_WAKE, wake = wake_for_inbox(l);
    pthread_mutex_unlock(&l->mu);
    if (nap_end)
        pthread_cond_signal(&l->nap_cv);
    if (wake)
        pthread_cond_signal(&l->cv);
}

void ewi_deliver(ewi_msg *msg)
{
    msg->qnext = NULL;
    ewi_deliver_list(msg);
}

void ewi_deliveries_flush(ewi_deliveries *d)
{
    ewi_msg *first = d->first;
    d->first = d->last = NULL;
    ewi_deliver_list(first);
}

void ewi_deliveries_add(ewi_deliveries *d, ewi_msg *msg)
{
    msg->qnext = NULL;
    if (d->first && d->first->sub != msg->sub)
        ewi_deliveries_flush(d);
    if (d->first)
        d->last->qnext = msg;
    else
        d->first = msg;
    d->last = msg;
}

/* Only one worker thread adds to a listener's worker counters. */
static inline bool single(const ewi_listener *l)
{
    return l->desc.concurrency == 1;
}

/* A settle by a worker thread. */
static void settle(ewi_listener *l, ewi_msg *msg, ewi_settle how)
{
    ewi_ctr_add(&l->mx.settled, 1, single(l));
    l->m->ops->settle(l->m->t, msg, how);
}

/* A settle by stop's drain or free, perhaps while workers still settle. */
static void settle_other(ewi_listener *l, ewi_msg *msg, ewi_settle how)
{
    atomic_fetch_add_explicit(&l->mx.settled_other, 1, memory_order_relaxed);
    l->m->ops->settle(l->m->t, msg, how);
}

/* What a worker thread holds of its batch: the acknowledgements it has not
 * given the transport yet and, with several workers, the messages of its
 * batch it has not started, lent: another worker takes them when this one
 * makes no progress (a handler that blocks, a retry's backoff). */
typedef struct worker_ctx {
    ewi_msg *acks, **acks_tail;
    size_t nacks;
    _Alignas(64) _Atomic(ewi_msg *) lent; /* the owner pops, a thief takes all */
    _Atomic uint64_t progress;            /* messages the owner started */
    uint64_t *seen;                       /* others' progress at this one's last look */
} worker_ctx;

/* The most acknowledgements a worker holds: it gives them to the transport
 * when it has this many, when the inbox is empty (before it sleeps, so that
 * a prefetch of one still flows), before a retry's backoff and on stop. */
#define ACKS_MAX 64

static _Thread_local worker_ctx *tl_ctx;

/* Gives the transport the acknowledgements held, at once. */
static void flush_acks(ewi_listener *l, worker_ctx *w)
{
    if (!w || !w->acks)
        return;
    *w->acks_tail = NULL;
    l->m->ops->settle_acks(l->m->t, w->acks);
    w->acks = NULL;
    w->acks_tail = &w->acks;
    w->nacks = 0;
}

/* An acknowledgement by a worker thread: held until the worker's batch is
 * done when the transport takes them together (one lock for all). */
static void ack(ewi_listener *l, ewi_msg *msg)
{
    worker_ctx *w = tl_ctx;
    if (!w || !l->m->ops->settle_acks) {
        settle(l, msg, EWI_ACK);
        return;
    }
    ewi_ctr_add(&l->mx.settled, 1, single(l));
    *w->acks_tail = msg;
    w->acks_tail = &msg->qnext;
    w->nacks++;
}

/* Before a worker waits (a retry's backoff): what it acknowledged goes to
 * the transport, not held for the length of the wait. */
static void before_wait(ewi_listener *l)
{
    flush_acks(l, tl_ctx);
}

static bool backoff_wait(ewi_listener *l, int ms);

/* ---- dead letters ------------------------------------------------------- */

/* Publishes a copy with the reason to E::L.dlq and waits for the broker;
 * only then is the original acknowledged, so nothing is lost between. */
static void dead_letter(ewi_listener *l, ewi_msg *msg, const char *reason,
                        uint32_t attempts, const char *fmt, ...) EWI_PRINTF(5, 6);

static void dead_letter(ewi_listener *l, ewi_msg *msg, const char *reason,
                        uint32_t attempts, const char *fmt, ...)
{
    ew_manager *m = l->m;
    char text[512], num[16];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(text, sizeof text, fmt, ap);
    va_end(ap);
    const char *id = ew_envelope_message_id(msg->env);
    ew_err code = strcmp(reason, "decode-failed") == 0    ? EW_EDECODE
                  : strcmp(reason, "too-big") == 0        ? EW_ETOOBIG
                  : strcmp(reason, "handle-refused") == 0 ? EW_EREFUSED
                                                          : EW_ELISTENER;
    ewi_report(m, code, l->queue, l->event->name, id,
               "dead-lettered to %s (%s): %s", l->dlq, reason, text);

    ew_envelope *env = ewi_envelope_clone(msg->env);
    ew_err rc = env ? EW_OK : EW_ENOMEM;
    snprintf(num, sizeof num, "%u", attempts);
    const char *kv[][2] = {{EW_HDR_DLQ_REASON, reason},
                           {EW_HDR_DLQ_ERROR, text},
                           {EW_HDR_DLQ_QUEUE, l->queue},
                           {EW_HDR_DLQ_ATTEMPTS, num},
                           {EW_HDR_DLQ_SERVER, m->server}};
    for (size_t i = 0; rc == EW_OK && i < sizeof kv / sizeof kv[0]; i++)
        rc = ewi_envelope_put(env, kv[i][0], strlen(kv[i][0]), kv[i][1],
                              strlen(kv[i][1]));
    /* The original stays unacknowledged until its dead letter is confirmed.
     * A failed publish (dead-letter queue full or deleted, broker away) is
     * retried here with a capped backoff instead of handing the message back
     * to the broker, which would redeliver it at once: no hot loop. Only a
     * stop gives it back. */
    int delay = 200;
    for (unsigned tries = 1; env && rc != EW_ENOMEM; tries++) {
        ewi_pub p = {.dest = EWI_DEST_DLQ,
                     .event = l->event->name,
                     .listener = l->name,
                     .queue = l->dlq,
                     .durable = true,
                     .env = env,
                     .deadline_ms = ewi_now_ms() + m->cfg.send_timeout_ms};
        ewi_last_error_clear();
        rc = ewi_publish_sync(m, &p);
        if (rc == EW_OK)
            break;
        if (tries == 1 || tries % 10 == 0) {
            char why[sizeof text];
            snprintf(why, sizeof why, "%s",
                     ewi_last_error_peek()[0] ? ewi_last_error_peek() : ew_strerror(rc));
            ewi_report(m, rc, l->queue, l->event->name, id,
                       "dead-letter publish to %s failed (try %u): %s; retrying in %d ms",
                       l->dlq, tries, why, delay);
        }
        if (!backoff_wait(l, delay))
            break; /* stopping */
        delay = delay * 2 > 30000 ? 30000 : delay * 2;
    }
    ewi_envelope_unref(env);
    if (rc == EW_OK) {
        ewi_ctr_add(&l->mx.dead_lettered, 1, single(l));
        settle(l, msg, EWI_ACK);
        return;
    }
    /* Stopping (or out of memory): the broker keeps it and redelivers it. */
    settle(l, msg, EWI_REQUEUE);
}

/* ---- handling one message ----------------------------------------------- */

/* Sleeps ms unless the listener stops first; false when it stopped. */
static bool backoff_wait(ewi_listener *l, int ms)
{
    before_wait(l);
    int64_t deadline = ewi_now_ms() + ms;
    pthread_mutex_lock(&l->mu);
    /* Not l->cv: a delivery's signal must reach an idle worker, not one
     * that is waiting out a backoff. */
    while (!l->stopping && ewi_left_ms(deadline) > 0)
        ewi_cond_wait_until(&l->backoff_cv, &l->mu, deadline);
    bool go_on = !l->stopping;
    pthread_mutex_unlock(&l->mu);
    return go_on;
}

static void retry_report(ewi_listener *l, const char *id, const char *fmt, ...)
    EWI_PRINTF(3, 4);

static void retry_report(ewi_listener *l, const char *id, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    ewi_vreport(l->m, EW_LOG_WARN, EW_ELISTENER, l->queue, l->event->name, id, fmt, ap);
    va_end(ap);
}

/* Runs the handle hooks, the listener and the after hooks once. */
static ew_err run_once(ewi_listener *l, ew_delivery *d, const void *event,
                       const char **refused_by)
{
    ewi_pipes *pipes = ewi_pipes_get(l->m);
    size_t n = pipes ? pipes->n : 0, ran = 0;
    ew_err rc = EW_OK;
    for (; ran < n; ran++) {
        const ewi_pipe *p = &pipes->items[ran];
        if (p->p.handle && (rc = p->p.handle(p->user, d->env, &l->desc)) != EW_OK) {
            *refused_by = p->name;
            break;
        }
    }
    if (rc == EW_OK)
        rc = l->fn(d, event, l->user);
    for (size_t i = ran < n ? ran + 1 : n; i-- > 0;) {
        const ewi_pipe *p = &pipes->items[i];
        if (p->p.after)
            p->p.after(p->user, d->env, &l->desc, rc);
    }
    return rc;
}

/* How long the listener (and hooks) ran on this thread for its last
 * message, from the first attempt to the last; -1 when it did not run. */
static _Thread_local int64_t tl_ran_ns;

static void run_attempts(ewi_listener *l, ewi_msg *msg, void *event, uint32_t spent,
                         uint32_t attempt, double delay);
static bool park(ewi_listener *l, ewi_msg *msg, void *event, uint32_t spent,
                 uint32_t attempt, double delay, int wait_ms);

/* The last content type this thread read and its format: a listener's
 * messages nearly always carry the same one, and a comparison costs less
 * than parsing it again. */
#define CT_CACHE 64
static _Thread_local char tl_ct[CT_CACHE];
static _Thread_local ew_format tl_ct_fmt = EW_FORMAT_DEFAULT;

static ew_format format_of(const char *ct)
{
    if (!ct)
        return ew_format_from_content_type(ct);
    if (tl_ct_fmt != EW_FORMAT_DEFAULT && strcmp(ct, tl_ct) == 0)
        return tl_ct_fmt;
    ew_format fmt = ew_format_from_content_type(ct);
    size_t n = strlen(ct);
    if (fmt != EW_FORMAT_DEFAULT && n < CT_CACHE) {
        memcpy(tl_ct, ct, n + 1);
        tl_ct_fmt = fmt;
    }
    return fmt;
}

static void handle(ewi_listener *l, ewi_msg *msg)
{
    ew_manager *m = l->m;
    const ew_envelope *env = msg->env;
    size_t len;
    const void *body = ew_envelope_body(env, &len);
    const ew_retry_policy *rp = &l->retry;

    if (len > m->cfg.max_body) {
        dead_letter(l, msg, "too-big", 0, "body of %zu bytes is over the limit %zu", len,
                    m->cfg.max_body);
        return;
    }
    /* The same header limits as on send, whoever produced the message. */
    if (env->nh > m->cfg.max_headers) {
        dead_letter(l, msg, "too-big", 0, "%zu headers, over the limit %zu", env->nh,
                    m->cfg.max_headers);
        return;
    }
    for (size_t i = 0; i < env->nh; i++)
        if (env->h[i].klen > m->cfg.max_header_len || env->h[i].vlen > m->cfg.max_header_len) {
            dead_letter(l, msg, "too-big", 0,
                        "header '%.40s' of %u+%u bytes is over the limit %zu",
                        env->s + env->h[i].off, env->h[i].klen, env->h[i].vlen,
                        m->cfg.max_header_len);
            return;
        }
    ew_format fmt = format_of(ew_envelope_content_type(env));
    if (fmt == EW_FORMAT_DEFAULT) {
        dead_letter(l, msg, "decode-failed", 0, "unknown content type '%s'",
                    ew_envelope_content_type(env));
        return;
    }
    void *event = NULL;
    char err[256];
    ew_decode_limits limits = {.max_string = m->cfg.max_body};
    if (ew_decode(l->event->desc.type, fmt, body, len, &limits, &event, err,
                  sizeof err) != EW_OK) {
        dead_letter(l, msg, "decode-failed", 0, "%s", err);
        return;
    }

    /* Redeliveries the broker reports count as attempts already spent (a
     * consumer that crashed in the handler), but a redelivered message always
     * runs at least once more: the broker cannot tell a message that was
     * handled and failed from one that was only prefetched when a
     * connection dropped or a consumer stopped. */
    uint32_t spent = msg->redeliveries < rp->attempts ? msg->redeliveries
                                                      : rp->attempts - 1;
    run_attempts(l, msg, event, spent, spent + 1, rp->backoff_ms);
}

/* Runs the listener from attempt on, until it succeeds, the policy's
 * attempts are spent, or (on the worker pool) a retry's backoff parks the
 * message. */
static void run_attempts(ewi_listener *l, ewi_msg *msg, void *event, uint32_t spent,
                         uint32_t attempt, double delay)
{
    const ew_envelope *env = msg->env;
    const ew_retry_policy *rp = &l->retry;
    int64_t first_ns = 0;
    for (;; attempt++) {
        ew_delivery d = {env, l->queue, attempt};
        const char *refused_by = NULL;
        if (attempt > spent + 1)
            ewi_ctr_add(&l->mx.retried, 1, single(l));
        int64_t t0 = ewi_now_ns();
        if (!first_ns)
            first_ns = t0;
        ew_err rc = run_once(l, &d, event, &refused_by);
        int64_t t1 = ewi_now_ns();
        tl_ran_ns = t1 - first_ns; /* retries and their backoff included */
        ewi_hist_add(&l->mx.duration, t1 - t0, single(l));
        if (rc == EW_OK) {
            ew_event_free(l->event->desc.type, event);
            ewi_ctr_add(&l->mx.handled, 1, single(l));
            ack(l, msg);
            return;
        }
        if (!refused_by)
            ewi_ctr_add(&l->mx.failed, 1, single(l));
        if (refused_by) {
            ew_event_free(l->event->desc.type, event);
            dead_letter(l, msg, "handle-refused", attempt, "pipeline %s refused: %s",
                        refused_by, ew_strerror(rc));
            return;
        }
        if (rc == EW_ENORETRY || attempt >= rp->attempts) {
            ew_event_free(l->event->desc.type, event);
            dead_letter(l, msg, "listener-failed", attempt,
                        "listener failed on attempt %u of %u: %s", attempt,
                        rp->attempts, ew_strerror(rc));
            return;
        }
        retry_report(l, ew_envelope_message_id(env),
                     "listener failed on attempt %u of %u (%s); retrying in %.0f ms",
                     attempt, rp->attempts, ew_strerror(rc), delay);
        double next = fmin(delay * rp->multiplier, (double)rp->max_backoff_ms);
        /* On the pool the thread serves others meanwhile. */
        if (l->m->pool && park(l, msg, event, spent, attempt + 1, next, (int)delay))
            return;
        if (!backoff_wait(l, (int)delay)) {
            /* Stopping: the broker gets it back and redelivers it later. */
            ew_event_free(l->event->desc.type, event);
            settle(l, msg, EWI_REQUEUE);
            return;
        }
        delay = next;
    }
}

/* ---- the workers -------------------------------------------------------- */

/* The most messages a worker takes from the inbox at once: one lock and
 * one wake-up per batch rather than per message. */
#define BATCH_MAX 64

/* Naps (mu held) for NAP_NS at most, as the one napping worker (mu held:
 * ewi_deliver_list sees it napping and leaves it the messages). */
static void nap(ewi_listener *l)
{
    int64_t until = ewi_now_ns() + NAP_NS;
    struct timespec ts = {(time_t)(until / 1000000000), (long)(until % 1000000000)};
    l->napping = true;
    pthread_cond_timedwait(&l->nap_cv, &l->mu, &ts);
    l->napping = false;
}

/* Takes a batch from the inbox (mu held): up to BATCH_MAX in order (the
 * worker would handle them one after the other anyway). With several
 * workers that lend what they have not started (worker_main), a batch only
 * while handlers are quick, else one message; on a pool one message, so
 * that a handler that blocks never holds back a message another worker
 * could handle. */
static ewi_msg *take_batch(ewi_listener *l)
{
    size_t k = l->nhead;
    if (l->desc.concurrency > 1 &&
        (l->m->pool ||
         atomic_load_explicit(&l->handle_ns, memory_order_relaxed) >= HANDLE_QUICK_NS))
        k = 1;
    if (k > BATCH_MAX)
        k = BATCH_MAX;
    ewi_msg *first = l->head, *last = first;
    for (size_t i = 1; i < k; i++)
        last = last->qnext;
    l->head = last->qnext;
    last->qnext = NULL;
    if (!l->head)
        l->tail = NULL;
    l->nhead -= k;
    atomic_store(&l->taken, atomic_load(&l->taken) + k);
    return first;
}

/* The next message a worker lent and still owns (NULL: none, or taken by
 * another worker). */
static ewi_msg *lent_next(worker_ctx *w)
{
    if (!atomic_load_explicit(&w->lent, memory_order_relaxed))
        return NULL;
    ewi_msg *msg = atomic_exchange(&w->lent, NULL);
    if (msg) {
        atomic_store(&w->lent, msg->qnext);
        msg->qnext = NULL;
    }
    return msg;
}

/* Whether a worker has messages lent (mu held). */
static bool lent_any(const ewi_listener *l)
{
    for (uint32_t i = 0; i < l->nwctx; i++)
        if (atomic_load_explicit(&l->wctx[i]->lent, memory_order_relaxed))
            return true;
    return false;
}

/* Takes over, as this worker's batch, what another worker lent and made
 * no progress on since this one last looked (mu held, not stopping; NULL:
 * nothing). A sleeping worker looks every SLEEP_POLL_MS, so a blocked
 * handler holds back the rest of its batch for two polls at most. One
 * owner's chain at a time, and not back to the inbox: two owners' chains
 * given back there could land in the wrong order ahead of what waits. */
static ewi_msg *take_lent(ewi_listener *l, worker_ctx *self)
{
    for (uint32_t i = 0; i < l->nwctx; i++) {
        worker_ctx *o = l->wctx[i];
        if (o == self || !atomic_load_explicit(&o->lent, memory_order_relaxed))
            continue;
        uint64_t p = atomic_load_explicit(&o->progress, memory_order_relaxed);
        if (p != self->seen[i]) {
            self->seen[i] = p;
            continue;
        }
        ewi_msg *first = atomic_exchange(&o->lent, NULL);
        if (first)
            return first;
    }
    return NULL;
}

/* This worker joins l->busy, if it is not counted there yet (mu held). */
static void count(ewi_listener *l, bool *counted)
{
    if (!*counted)
        l->busy++;
    *counted = true;
}

/* This worker leaves l->busy, if it is counted there (mu held). */
static void uncount(ewi_listener *l, bool *counted)
{
    if (!*counted)
        return;
    *counted = false;
    if (--l->busy == 0 && l->stopping)
        pthread_cond_broadcast(&l->idle);
}

static void *worker_main(void *arg)
{
    ewi_listener *l = arg;
    bool inproc = l->m->ops->features & EWI_FEAT_INPROC;
    bool several = l->desc.concurrency > 1;
    worker_ctx w = {.acks = NULL};
    w.acks_tail = &w.acks;
    atomic_init(&w.lent, NULL);
    atomic_init(&w.progress, 0);
    uint64_t seen_local[8];
    w.seen = l->desc.concurrency <= 8 ? seen_local : calloc(l->desc.concurrency, sizeof *w.seen);
    if (!w.seen)
        several = false; /* out of memory: no batches, so nothing lent */
    else
        memset(w.seen, 0xff, l->desc.concurrency * sizeof *w.seen);
    tl_ctx = &w;
    pthread_mutex_lock(&l->mu);
    if (several)
        l->wctx[l->nwctx++] = &w;
    /* Counted in l->busy from taking a batch until this worker naps, sleeps
     * or stops: between two batches, deliverers see it on the inbox and
     * need not take mu or wake another worker for it. */
    bool counted = false;
    for (;;) {
        absorb(l);
        ewi_msg *batch = NULL; /* taken over from another worker */
        if (several && !l->head && !l->stopping)
            batch = take_lent(l, &w);
        if (!l->head && !batch && w.acks) {
            /* Nothing to take: the acknowledgements held go now, before
             * this worker polls or sleeps (counted busy meanwhile: it is
             * back for what comes in a moment). */
            count(l, &counted);
            pthread_mutex_unlock(&l->mu);
            flush_acks(l, &w);
            pthread_mutex_lock(&l->mu);
            continue;
        }
        if (!l->head && !batch && !l->stopping && inproc && !l->napping) {
            uncount(l, &counted);
            nap(l);
            absorb(l);
        }
        /* Set when a poll found the busy workers moving on, or a wake-up
         * found them handling quickly with no backlog (it was for a poller):
         * what waits is theirs to take (one more thread on it would only
         * take turns with them and the sender), until a poll finds them
         * stuck or a wake-up finds a backlog. */
        bool yield = several && !batch && l->busy > (size_t)counted && !backlog(l);
        while (!batch && !l->stopping && (!l->head || (yield && others_on_it(l)))) {
            uncount(l, &counted);
            l->sleeping++;
            /* Counted first, then looked: a deliverer that pushed before
             * it saw no sleeper (and took no lock). */
            absorb(l);
            if (several && !l->head)
                batch = take_lent(l, &w);
            if (batch || (l->head && (!yield || !others_on_it(l)))) {
                l->sleeping--;
                break;
            }
            /* ewi_deliver may leave a message to a busy worker that handles
             * quickly, and a worker may lend the rest of its batch; should
             * that handler block, the message waits no longer than two of
             * these polls (three for a lent one). A napping worker takes
             * what comes, so this one polls meanwhile too (the deliverers
             * need not wake a poller each time the napper gets busy). */
            if (others_on_it(l) && (atomic_load_explicit(&l->handle_ns, memory_order_relaxed) <
                                        HANDLE_QUICK_NS ||
                                    (several && lent_any(l)))) {
                size_t before = atomic_load(&l->nstarted), waiting = ewi_inbox(l);
                l->polling++;
                int rc = ewi_cond_wait_until(&l->cv, &l->mu, ewi_now_ms() + SLEEP_POLL_MS);
                l->polling--;
                /* A poll leaves the inbox to the others while they move on
                 * and keep up with it. */
                yield = others_on_it(l) &&
                        (rc == ETIMEDOUT ? atomic_load(&l->nstarted) != before &&
                                               !(ewi_inbox(l) > waiting && backlog(l))
                                         : !backlog(l));
            } else {
                pthread_cond_wait(&l->cv, &l->mu);
                yield = !backlog(l);
            }
            l->sleeping--;
        }
        if (l->stopping && !batch)
            break; /* a batch taken over goes back below, as any other */
        if (!batch)
            batch = take_batch(l);
        count(l, &counted);
        if (several && batch->qnext) {
            atomic_store(&w.lent, batch->qnext);
            batch->qnext = NULL;
        }
        /* Workers that sleep without polling never look at what is lent:
         * with none polling (the one that did may be this one, now busy),
         * one gets up, and polls while anything is lent. */
        bool wake = several && l->sleeping > 0 && l->polling == 0 && lent_any(l);
        /* Messages left that no worker polls for: the next one gets up
         * (the rule of ewi_deliver_list, this worker being busy). */
        wake = wake || wake_for_inbox(l);
        pthread_mutex_unlock(&l->mu);
        if (wake)
            pthread_cond_signal(&l->cv);
        while (!atomic_load_explicit(&l->stopping, memory_order_relaxed)) {
            ewi_msg *msg = batch;
            if (msg)
                batch = msg->qnext;
            else if (!several || !(msg = lent_next(&w)))
                break;
            ewi_ctr_add(&l->nstarted, 1, single(l));
            if (l->desc.concurrency == 1) {
                handle(l, msg);
                continue;
            }
            atomic_store_explicit(&w.progress,
                                  atomic_load_explicit(&w.progress, memory_order_relaxed) + 1,
                                  memory_order_relaxed);
            tl_ran_ns = -1;
            handle(l, msg);
            if (tl_ran_ns < 0)
                continue; /* the listener did not run (a dead letter) */
            /* Several workers may update it at once: a lost update only
             * skips one sample of an average. */
            int64_t avg = atomic_load_explicit(&l->handle_ns, memory_order_relaxed);
            atomic_store_explicit(&l->handle_ns, avg + (tl_ran_ns - avg) / 8,
                                  memory_order_relaxed);
        }
        if (several && atomic_load_explicit(&w.lent, memory_order_relaxed)) {
            /* Stopping: what it lent and still owns goes back below. */
            ewi_msg *rest = atomic_exchange(&w.lent, NULL);
            if (rest && batch)
                batch->qnext = rest; /* batch: the one message not started */
            else if (rest)
                batch = rest;
        }
        /* With more to take, the acknowledgements wait for the next batch
         * (up to ACKS_MAX): the loop gives them before it naps or sleeps. */
        if (w.nacks >= ACKS_MAX || batch)
            flush_acks(l, &w);
        /* Stopping: what this worker had not started goes back, as the
         * inbox does in ewi_listener_drain (the transport keeps the order). */
        for (ewi_msg *next; batch; batch = next) {
            next = batch->qnext;
            ewi_ctr_add(&l->nstarted, 1, single(l));
            settle(l, batch, EWI_REQUEUE);
        }
        pthread_mutex_lock(&l->mu);
    }
    uncount(l, &counted);
    pthread_mutex_unlock(&l->mu);
    flush_acks(l, &w);
    if (w.seen != seen_local)
        free(w.seen);
    tl_ctx = NULL;
    return NULL;
}


/* ---- the shared worker pool --------------------------------------------- */

/* How long a pool thread keeps to one listener of concurrency 1 while other
 * listeners wait for a thread: then it gives the rest of its batch back to
 * the inbox (in order) and takes the next listener in turn. */
#define POOL_TURN_NS 2000000

/* A message of a pool listener waiting out a retry's backoff: it keeps its
 * slot under the listener's concurrency (busy), so a listener of
 * concurrency 1 takes no later message meanwhile, and a pool thread takes
 * it up again when it is due. */
typedef struct ewi_parked {
    ewi_listener *l;
    ewi_msg *msg;
    void *event;
    uint32_t spent, attempt;
    double delay;            /* the backoff after the next failure */
    int64_t due_ms;
    struct ewi_parked *next;
} ewi_parked;

/* Set by park on the thread that parked its message. */
static _Thread_local bool tl_parked;

static bool park(ewi_listener *l, ewi_msg *msg, void *event, uint32_t spent,
                 uint32_t attempt, double delay, int wait_ms)
{
    ewi_parked *pk = malloc(sizeof *pk);
    if (!pk)
        return false; /* the thread waits the backoff out instead */
    *pk = (ewi_parked){l, msg, event, spent, attempt, delay, ewi_now_ms() + wait_ms, NULL};
    ewi_pool *p = l->m->pool;
    pthread_mutex_lock(&p->mu);
    ewi_parked **pp = &p->timers;
    while (*pp && (*pp)->due_ms <= pk->due_ms)
        pp = &(*pp)->next;
    pk->next = *pp;
    *pp = pk;
    /* A new earliest: a sleeping thread waits for it. */
    if (p->timers == pk && p->sleeping)
        pthread_cond_signal(&p->cv);
    pthread_mutex_unlock(&p->mu);
    tl_parked = true;
    return true;
}

/* Whether a pool thread may take a message of l now (mu held). */
static bool runnable(const ewi_listener *l)
{
    return l->head && !l->stopping && l->busy < l->desc.concurrency;
}

/* A pool thread is done with its turn on l (l->mu held): its slot is
 * free again unless the message it ran was parked for a backoff (the
 * parked message keeps it), and a stop waiting for l to go idle is told. */
static void slot_done_locked(ewi_listener *l)
{
    if (!tl_parked)
        l->busy--;
    tl_parked = false;
    if (l->busy == 0 && l->stopping)
        pthread_cond_broadcast(&l->idle);
}

/* Puts l at the end of the pool's run queue unless it is on it (l->mu
 * held). */
static void pool_push(ewi_listener *l)
{
    ewi_pool *p = l->m->pool;
    pthread_mutex_lock(&p->mu);
    if (!l->pool_ready && !p->stopping) {
        l->pool_ready = true;
        l->pool_next = NULL;
        if (p->tail)
            p->tail->pool_next = l;
        else
            p->head = l;
        p->tail = l;
        atomic_fetch_add_explicit(&p->nready, 1, memory_order_relaxed);
        if (p->sleeping)
            pthread_cond_signal(&p->cv);
    }
    pthread_mutex_unlock(&p->mu);
}

/* Takes l off the run queue (pool mu held). */
static void pool_unlink(ewi_pool *p, ewi_listener *l)
{
    if (!l->pool_ready)
        return;
    ewi_listener *prev = NULL;
    for (ewi_listener *x = p->head; x; prev = x, x = x->pool_next)
        if (x == l) {
            if (prev)
                prev->pool_next = l->pool_next;
            else
                p->head = l->pool_next;
            if (p->tail == l)
                p->tail = prev;
            break;
        }
    l->pool_ready = false;
    atomic_fetch_sub_explicit(&p->nready, 1, memory_order_relaxed);
}

/* Serves l on a pool thread: batches while it has messages and a free slot
 * under its concurrency, as long as no other listener waits for a thread.
 * Settles as worker_main does. */
static void pool_serve(ewi_listener *l, worker_ctx *w)
{
    ewi_pool *p = l->m->pool;
    pthread_mutex_lock(&l->mu);
    while (runnable(l)) {
        ewi_msg *batch = take_batch(l);
        l->busy++;
        /* Room for another of the pool's threads (concurrency > 1). */
        if (runnable(l))
            pool_push(l);
        pthread_mutex_unlock(&l->mu);
        int64_t t0 = ewi_now_ns();
        while (batch && !atomic_load_explicit(&l->stopping, memory_order_relaxed)) {
            ewi_msg *msg = batch;
            batch = msg->qnext;
            ewi_ctr_add(&l->nstarted, 1, single(l));
            tl_parked = false;
            handle(l, msg);
            if (tl_parked)
                break; /* its slot stays taken; the rest goes back, in order */
            if (batch && atomic_load_explicit(&p->nready, memory_order_relaxed) > 0 &&
                ewi_now_ns() - t0 >= POOL_TURN_NS)
                break; /* others wait: the rest goes back, in order */
        }
        flush_acks(l, w);
        pthread_mutex_lock(&l->mu);
        if (batch && !l->stopping) {
            /* Only this thread takes from a listener of concurrency 1 (the
             * only one with batches), so its inbox's head follows them. */
            inbox_give_back(l, batch);
            batch = NULL;
        }
        pthread_mutex_unlock(&l->mu);
        /* Stopping: what was not started goes back, as in worker_main. */
        for (ewi_msg *next; batch; batch = next) {
            next = batch->qnext;
            ewi_ctr_add(&l->nstarted, 1, single(l));
            settle(l, batch, EWI_REQUEUE);
        }
        pthread_mutex_lock(&l->mu);
        slot_done_locked(l);
        /* Others wait for a thread: l takes its turn at the end. */
        if (runnable(l) && atomic_load_explicit(&p->nready, memory_order_relaxed) > 0) {
            pool_push(l);
            break;
        }
    }
    pthread_mutex_unlock(&l->mu);
}

/* Takes a parked message up again on a pool thread. */
static void pool_resume(ewi_parked *pk, worker_ctx *w)
{
    ewi_listener *l = pk->l;
    pthread_mutex_lock(&l->mu);
    bool stopping = l->stopping;
    pthread_mutex_unlock(&l->mu);
    tl_parked = false;
    if (stopping) {
        /* The broker gets it back, as after a backoff a stop ended. */
        ew_event_free(l->event->desc.type, pk->event);
        settle(l, pk->msg, EWI_REQUEUE);
    } else {
        run_attempts(l, pk->msg, pk->event, pk->spent, pk->attempt, pk->delay);
    }
    free(pk);
    flush_acks(l, w);
    pthread_mutex_lock(&l->mu);
    slot_done_locked(l);
    if (runnable(l))
        pool_push(l);
    pthread_mutex_unlock(&l->mu);
}

static void *pool_main(void *arg)
{
    ewi_pool *p = arg;
    worker_ctx w = {.acks = NULL};
    w.acks_tail = &w.acks;
    tl_ctx = &w;
    pthread_mutex_lock(&p->mu);
    for (;;) {
        if (p->timers && ewi_left_ms(p->timers->due_ms) == 0) {
            ewi_parked *pk = p->timers;
            p->timers = pk->next;
            ewi_listener *l = pk->l;
            l->pool_visits++;
            pthread_mutex_unlock(&p->mu);
            pool_resume(pk, &w);
            pthread_mutex_lock(&p->mu);
            if (--l->pool_visits == 0)
                pthread_cond_broadcast(&p->left);
            continue;
        }
        if (!p->head) {
            if (p->stopping && !p->timers)
                break; /* every listener was freed */
            p->sleeping++;
            if (p->timers)
                ewi_cond_wait_until(&p->cv, &p->mu, p->timers->due_ms);
            else
                pthread_cond_wait(&p->cv, &p->mu);
            p->sleeping--;
            continue;
        }
        ewi_listener *l = p->head;
        pool_unlink(p, l);
        l->pool_visits++;
        pthread_mutex_unlock(&p->mu);
        pool_serve(l, &w);
        pthread_mutex_lock(&p->mu);
        if (--l->pool_visits == 0)
            pthread_cond_broadcast(&p->left);
    }
    pthread_mutex_unlock(&p->mu);
    tl_ctx = NULL;
    return NULL;
}

ew_err ewi_pool_new(ew_manager *m, uint32_t size)
{
    ewi_pool *p = calloc(1, sizeof *p);
    if (!p || !(p->threads = calloc(size, sizeof *p->threads))) {
        free(p);
        return EW_ENOMEM;
    }
    ewi_mutex_init(&p->mu);
    ewi_cond_init_mono(&p->cv);
    ewi_cond_init_mono(&p->left);
    atomic_init(&p->nready, 0);
    p->size = size;
    m->pool = p;
    return EW_OK;
}

/* Starts the pool's threads once (with the first listener's workers). */
static ew_err pool_start(ew_manager *m)
{
    ewi_pool *p = m->pool;
    ew_err rc = EW_OK;
    pthread_mutex_lock(&p->mu);
    while (p->nthreads < p->size) {
        if (ewi_thread_start(m, &p->threads[p->nthreads], pool_main, p, "ew:pool") != 0) {
            ewi_log(m, EW_LOG_ERROR, "cannot start worker pool thread %u", p->nthreads);
            rc = EW_ENOMEM;
            break;
        }
        if (++p->nthreads == p->size)
            ewi_log(m, EW_LOG_INFO, "worker pool of %u threads started", p->size);
    }
    pthread_mutex_unlock(&p->mu);
    return rc;
}

void ewi_pool_free(ew_manager *m)
{
    ewi_pool *p = m->pool;
    if (!p)
        return;
    pthread_mutex_lock(&p->mu);
    p->stopping = true;
    pthread_cond_broadcast(&p->cv);
    pthread_mutex_unlock(&p->mu);
    for (uint32_t i = 0; i < p->nthreads; i++)
        pthread_join(p->threads[i], NULL);
    free(p->threads);
    pthread_mutex_destroy(&p->mu);
    pthread_cond_destroy(&p->cv);
    pthread_cond_destroy(&p->left);
    free(p);
    m->pool = NULL;
}

/* Takes a stopped listener off the pool (it is never pushed again) and,
 * with wait, waits until no pool thread looks at it any more. */
static void pool_forget(ewi_listener *l, bool wait)
{
    ewi_pool *p = l->m->pool;
    ewi_parked *mine = NULL;
    pthread_mutex_lock(&p->mu);
    pool_unlink(p, l);
    for (ewi_parked **pp = &p->timers; *pp;) {
        ewi_parked *pk = *pp;
        if (pk->l != l) {
            pp = &pk->next;
            continue;
        }
        *pp = pk->next;
        pk->next = mine;
        mine = pk;
    }
    while (wait && l->pool_visits > 0)
        pthread_cond_wait(&p->left, &p->mu);
    pthread_mutex_unlock(&p->mu);
    /* Messages in a backoff: back to the broker, as a stop ends a backoff. */
    size_t n = 0;
    for (ewi_parked *pk = mine, *next; pk; pk = next, n++) {
        next = pk->next;
        ew_event_free(l->event->desc.type, pk->event);
        settle_other(l, pk->msg, EWI_REQUEUE);
        free(pk);
    }
    if (n) {
        pthread_mutex_lock(&l->mu);
        l->busy -= n;
        if (l->busy == 0)
            pthread_cond_broadcast(&l->idle);
        pthread_mutex_unlock(&l->mu);
    }
}

ew_err ewi_listener_start_workers(ewi_listener *l)
{
    l->started = true;
    if (l->m->pool) {
        ew_err rc = pool_start(l->m);
        if (rc == EW_OK) {
            /* Messages that came before (none on a fresh subscription). */
            pthread_mutex_lock(&l->mu);
            if (runnable(l))
                pool_push(l);
            pthread_mutex_unlock(&l->mu);
        }
        return rc;
    }
    l->threads = calloc(l->desc.concurrency, sizeof *l->threads);
    l->wctx = calloc(l->desc.concurrency, sizeof *l->wctx);
    if (!l->threads || !l->wctx)
        return EW_ENOMEM;
    /* Taken as slow until measured: the first messages each wake a worker. */
    atomic_store_explicit(&l->handle_ns, HANDLE_QUICK_NS, memory_order_relaxed);
    for (uint32_t i = 0; i < l->desc.concurrency; i++) {
        /* "ew:<listener>" in top, gdb and perf (15 characters at most). */
        char name[16] = "ew:";
        memcpy(name + 3, l->name, strnlen(l->name, sizeof name - 4));
        if (ewi_thread_start(l->m, &l->threads[i], worker_main, l, name) != 0) {
            ewi_log(l->m, EW_LOG_ERROR, "%s: cannot start worker thread %u", l->queue, i);
            return EW_ENOMEM;
        }
        l->nthreads++;
    }
    return EW_OK;
}

ew_err ewi_listener_drain(ewi_listener *l, int64_t deadline_ms)
{
    pthread_mutex_lock(&l->mu);
    l->stopping = true;
    pthread_cond_broadcast(&l->cv);
    pthread_cond_broadcast(&l->nap_cv);
    pthread_cond_broadcast(&l->backoff_cv);
    absorb(l);
    ewi_msg *rest = l->head;
    l->head = l->tail = NULL;
    l->drained += l->nhead;
    atomic_store(&l->taken, atomic_load(&l->taken) + l->nhead);
    l->nhead = 0;
    ew_err rc = EW_OK;
    if (l->m->pool && l->started) {
        pthread_mutex_unlock(&l->mu);
        pool_forget(l, false);
        pthread_mutex_lock(&l->mu);
    }
    while (l->busy > 0) {
        if (ewi_left_ms(deadline_ms) == 0) {
            rc = EW_ETIMEDOUT;
            break;
        }
        ewi_cond_wait_until(&l->idle, &l->mu, deadline_ms);
    }
    pthread_mutex_unlock(&l->mu);
    /* Not handled: back to the broker, in order. */
    for (ewi_msg *msg = rest, *next; msg; msg = next) {
        next = msg->qnext;
        settle_other(l, msg, EWI_REQUEUE);
    }
    if (rc == EW_OK) {
        for (uint32_t i = 0; i < l->nthreads; i++)
            pthread_join(l->threads[i], NULL);
        l->nthreads = 0;
    }
    return rc;
}

void ewi_listener_free(ewi_listener *l)
{
    if (!l)
        return;
    if (l->nthreads) {
        pthread_mutex_lock(&l->mu);
        l->stopping = true;
        pthread_cond_broadcast(&l->cv);
        pthread_cond_broadcast(&l->nap_cv);
        pthread_cond_broadcast(&l->backoff_cv);
        pthread_mutex_unlock(&l->mu);
        for (uint32_t i = 0; i < l->nthreads; i++)
            pthread_join(l->threads[i], NULL);
    }
    if (l->m->pool && l->started) {
        /* The pool's threads finish its handlers, then leave it. */
        pthread_mutex_lock(&l->mu);
        l->stopping = true;
        pthread_cond_broadcast(&l->backoff_cv);
        pthread_mutex_unlock(&l->mu);
        pool_forget(l, false); /* gives back what waits out a backoff */
        pthread_mutex_lock(&l->mu);
        while (l->busy > 0)
            pthread_cond_wait(&l->idle, &l->mu);
        pthread_mutex_unlock(&l->mu);
        pool_forget(l, true);
    }
    /* Anything that arrived after the drain (it should not) still settles. */
    absorb(l);
    for (ewi_msg *msg = l->head, *next; msg; msg = next) {
        next = msg->qnext;
        settle_other(l, msg, EWI_REQUEUE);
    }
    free(l->threads);
    free(l->wctx);
    pthread_mutex_destroy(&l->mu);
    pthread_cond_destroy(&l->cv);
    pthread_cond_destroy(&l->nap_cv);
    pthread_cond_destroy(&l->backoff_cv);
    pthread_cond_destroy(&l->idle);
    free(l);
}
