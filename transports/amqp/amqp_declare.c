/* The rabbitmq dialect's declarations, made once and remembered.
 *
 * Every exchange and queue this transport needs is declared over a short
 * AMQP 0-9-1 connection before the AMQP 1.0 link that uses it is attached,
 * and remembered: after a reconnect the I/O thread declares them all again
 * (a restarted broker has lost the non-durable ones) before it re-attaches.
 * Existence checks (a send to one listener's queue) are remembered only
 * until the next reconnect. */
#include "amqp.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

typedef struct decl_entry decl_entry;
struct decl_entry {
    amqp_decl_kind kind;
    char *event, *queue, *dlq;
    bool durable, per_process;
    decl_entry *next;
};

static bool same(const decl_entry *e, const amqp_decl *d)
{
    if (e->kind != d->kind)
        return false;
    if (d->kind == AMQP_DECL_EXCHANGE)
        return strcmp(e->event, d->event) == 0;
    return strcmp(e->queue, d->queue) == 0;
}

static bool cached(ewi_transport *t, const amqp_decl *d)
{
    pthread_mutex_lock(&t->decl_mu);
    decl_entry *e = t->decls;
    while (e && !same(e, d))
        e = e->next;
    pthread_mutex_unlock(&t->decl_mu);
    return e != NULL;
}

static char *dup_or_null(const char *s)
{
    return s ? strdup(s) : NULL;
}

static void entry_free(decl_entry *e)
{
    free(e->event);
    free(e->queue);
    free(e->dlq);
    free(e);
}

static void remember(ewi_transport *t, const amqp_decl *d)
{
    decl_entry *e = calloc(1, sizeof *e);
    if (!e)
        return; /* only costs a second declaration later */
    e->kind = d->kind;
    e->event = dup_or_null(d->event);
    e->queue = dup_or_null(d->queue);
    e->dlq = dup_or_null(d->dlq);
    e->durable = d->durable;
    e->per_process = d->per_process;
    if ((d->event && !e->event) || (d->queue && !e->queue) || (d->dlq && !e->dlq)) {
        entry_free(e);
        return;
    }
    pthread_mutex_lock(&t->decl_mu);
    decl_entry *o = t->decls;
    while (o && !same(o, d))
        o = o->next;
    if (o) {
        entry_free(e);
    } else {
        e->next = t->decls;
        t->decls = e;
    }
    pthread_mutex_unlock(&t->decl_mu);
}

static ew_err apply(ewi_transport *t, amqp_topo *tp, const amqp_decl *d, char *err,
                    size_t errlen)
{
    switch (d->kind) {
    case AMQP_DECL_EXCHANGE:
        return amqp_topo_exchange(tp, d->event, d->durable, err, errlen);
    case AMQP_DECL_LISTENER:
        return amqp_topo_listener(tp, d->event, d->queue, d->durable, d->per_process,
                                  t->opt.expires_ms, d->dlq, err, errlen);
    case AMQP_DECL_DLQ:
        return amqp_topo_dlq(tp, d->queue, err, errlen);
    case AMQP_DECL_EXISTS:
        return amqp_topo_queue_exists(tp, d->queue, err, errlen);
    }
    return EW_EINVAL;
}

/* Failures worth another try: the broker is not reachable (yet). */
static bool transient(ew_err rc)
{
    return rc == EW_ECONNECT || rc == EW_ETIMEDOUT || rc == EW_EIO;
}

ew_err amqp_ensure(ewi_transport *t, const amqp_decl *d, int64_t deadline, char *err,
                   size_t errlen)
{
    if (cached(t, d))
        return EW_OK;
    if (t->opt.dialect == AMQP_DIALECT_ARTEMIS) {
        if (d->kind != AMQP_DECL_EXISTS && !(d->kind == AMQP_DECL_LISTENER && d->per_process))
            return EW_OK; /* Artemis creates addresses and queues on first use */
        ew_err rc = amqp_artemis_ensure(t, d, deadline, err, errlen);
        if (rc == EW_OK)
            remember(t, d);
        return rc;
    }
    ewi_backoff bo;
    ewi_backoff_init(&bo, 50, 1000);
    for (;;) {
        int left = ewi_left_ms(deadline);
        amqp_topo *tp = NULL;
        ew_err rc = amqp_topo_open(&t->opt, left > 5000 ? 5000 : (left ? left : 1), &tp,
                                   err, errlen);
        if (rc == EW_OK) {
            rc = apply(t, tp, d, err, errlen);
            amqp_topo_close(tp);
        }
        if (rc == EW_OK) {
            remember(t, d);
            return EW_OK;
        }
        if (!transient(rc))
            return rc;
        pthread_mutex_lock(&t->mu);
        bool stop = t->stopping || t->io_exited;
        pthread_mutex_unlock(&t->mu);
        int pause = ewi_backoff_next(&bo);
        if (stop || ewi_left_ms(deadline) <= pause)
            return rc == EW_ECONNECT ? EW_ETIMEDOUT : rc;
        ewi_sleep_ms(pause);
    }
}

ew_err amqp_redeclare_all(ewi_transport *t, int timeout_ms, char *err, size_t errlen)
{
    if (t->opt.dialect != AMQP_DIALECT_RABBITMQ)
        return EW_OK;
    /* Take a copy: declaring blocks, and other threads add entries. */
    pthread_mutex_lock(&t->decl_mu);
    size_t n = 0;
    for (decl_entry **pp = (decl_entry **)&t->decls; *pp;) {
        decl_entry *e = *pp;
        if (e->kind == AMQP_DECL_EXISTS) { /* checked again on next use */
            *pp = e->next;
            entry_free(e);
            continue;
        }
        n++;
        pp = &e->next;
    }
    amqp_decl *copy = n ? calloc(n, sizeof *copy) : NULL;
    char **strs = n ? calloc(3 * n, sizeof *strs) : NULL;
    bool oom = n && (!copy || !strs);
    size_t i = 0;
    for (decl_entry *e = t->decls; e && !oom; e = e->next, i++) {
        strs[3 * i] = dup_or_null(e->event);
        strs[3 * i + 1] = dup_or_null(e->queue);
        strs[3 * i + 2] = dup_or_null(e->dlq);
        copy[i] = (amqp_decl){e->kind, strs[3 * i], strs[3 * i + 1], strs[3 * i + 2],
                              e->durable, e->per_process};
        if ((e->event && !strs[3 * i]) || (e->queue && !strs[3 * i + 1]) ||
            (e->dlq && !strs[3 * i + 2]))
            oom = true;
    }
    pthread_mutex_unlock(&t->decl_mu);

    ew_err rc = oom ? EW_ENOMEM : EW_OK;
    if (oom)
        amqp_textf(err, errlen, "out of memory");
    amqp_topo *tp = NULL;
    if (rc == EW_OK && n)
        rc = amqp_topo_open(&t->opt, timeout_ms, &tp, err, errlen);
    /* Exchanges first: bindings need them. */
    for (int pass = 0; pass < 2 && rc == EW_OK; pass++)
        for (i = 0; i < n && rc == EW_OK; i++)
            if ((copy[i].kind == AMQP_DECL_EXCHANGE) == (pass == 0))
                rc = apply(t, tp, &copy[i], err, errlen);
    amqp_topo_close(tp);
    for (i = 0; strs && i < 3 * n; i++)
        free(strs[i]);
    free(strs);
    free(copy);
    return rc;
}

void amqp_decl_cache_free(ewi_transport *t)
{
    for (decl_entry *e = t->decls, *next; e; e = next) {
        next = e->next;
        entry_free(e);
    }
    t->decls = NULL;
}
