/* Receiving on the I/O thread: one receiver link per listener with credit
 * up to the listener's prefetch, deliveries handed to core, core's settles
 * mapped to outcomes per dialect, and a receiver the broker dropped
 * attached again. */
#include "amqp10.h"

#include <stdlib.h>
#include <string.h>

#include <proton/delivery.h>
#include <proton/disposition.h>
#include <proton/link.h>


static void amqp10_recv_signal(ewi_transport *t, amqp10_sub *s, amqp10_sub_state st,
                       const char *error)
{
    pthread_mutex_lock(&t->mu);
    if (s->state != AMQP10_SUB_GONE) {
        s->state = st;
        if (error)
            amqp10_textf(s->error, sizeof s->error, "%s", error);
    }
    if (st == AMQP10_SUB_GONE && s->unsub_done) {
        *s->unsub_done = true; /* s may be freed right after this */
        s->unsub_done = NULL;
    }
    pthread_cond_broadcast(&t->cond);
    pthread_mutex_unlock(&t->mu);
}

static void amqp10_recv_attach(ewi_transport *t, amqp10_sub *s)
{
    if (s->l || s->unsubscribed || !amqp10_is_up(t))
        return;
    s->attached = false;
    s->outstanding = 0;
    s->l = amqp10_open_link(t, false, &s->source, s, s->alone);
    s->link_id = t->next_link_id;
    pn_link_flow(s->l, (int)s->prefetch);
}

static void sub_unlink(ewi_transport *t, amqp10_sub *s)
{
    for (amqp10_sub **pp = &t->subs; *pp; pp = &(*pp)->next)
        if (*pp == s) {
            *pp = s->next;
            return;
        }
}

/* Frees s once nothing refers to it any more. */
static void amqp10_recv_maybe_free(ewi_transport *t, amqp10_sub *s)
{
    if (!s->unsubscribed)
        return;
    if (s->l && s->outstanding == 0) {
        amqp10_close_link(t, s->l); /* parked deliveries go back to the queue */
        s->l = NULL;
        amqp10_acc_reset(&s->acc);
        s->link_id = 0;
    }
    if (s->l || s->nrecs)
        return;
    sub_unlink(t, s);
    amqp10_acc_reset(&s->acc);
    free(s);
}

/* Credit back up to the prefetch window once half of it is free: one flow
 * frame per half window, not one per message. */
static void top_up(amqp10_sub *s)
{
    if (!s->l || s->unsubscribed)
        return;
    long want = (long)s->prefetch - (long)s->outstanding - pn_link_credit(s->l);
    if (want > 0 && want >= ((long)s->prefetch + 1) / 2)
        pn_link_flow(s->l, (int)want);
}

/* The broker detached a receiver (or ended its session). */
void amqp10_recv_lost(ewi_transport *t, amqp10_sub *s, const char *why)
{
    ewi_deliveries_flush(&t->dl); /* what was read goes first */
    amqp10_close_link(t, s->l);
    s->l = NULL;
    amqp10_acc_reset(&s->acc);
    s->link_id = 0;
    s->outstanding = 0;
    bool was_attached = s->attached;
    s->attached = false;
    s->alone = true; /* its next attach disturbs no other link */
    if (s->unsubscribed) {
        amqp10_recv_maybe_free(t, s);
        return;
    }
    pthread_mutex_lock(&t->mu);
    amqp10_sub_state st = s->state;
    pthread_mutex_unlock(&t->mu);
    if (st == AMQP10_SUB_PENDING && !was_attached) {
        char text[700];
        amqp10_textf(text, sizeof text, "attaching a consumer to %s refused: %s",
                 s->source.addr, why);
        amqp10_recv_signal(t, s, AMQP10_SUB_FAILED, text);
        return;
    }
    if (s->sub)
        ewi_sub_state(s->sub, false);
    int delay = ewi_backoff_next(&s->bo);
    s->reattach_at = ewi_now_ms() + delay;
    ewi_report(t->m, EW_EBROKER, s->queue, NULL, NULL,
               "amqp %s: the broker detached the consumer of %s: %s; attaching "
               "again in %d ms", t->where, s->source.addr, why, delay);
}

void amqp10_recv_moved(ewi_transport *t, amqp10_sub *s)
{
    ewi_deliveries_flush(&t->dl); /* what was read goes first */
    s->l = NULL; /* freed with its session */
    amqp10_acc_reset(&s->acc);
    s->link_id = 0;
    s->outstanding = 0;
    s->attached = false;
    if (s->unsubscribed) {
        amqp10_recv_maybe_free(t, s);
        return;
    }
    if (!s->reattach_at)
        amqp10_recv_attach(t, s);
}

static void reattach_due(ewi_transport *t, int64_t now)
{
    for (amqp10_sub *s = t->subs; s; s = s->next) {
        if (!s->reattach_at || s->reattach_at > now || s->unsubscribed || !amqp10_is_up(t))
            continue;
        s->reattach_at = 0;
        if (s->sub && t->opt.dialect == AMQP10_DIALECT_RABBITMQ) {
            /* The queue may be gone (deleted by hand): declare it again. */
            char err[512];
            amqp10_decl d = {AMQP10_DECL_LISTENER, s->sub->event, s->queue, NULL,
                           s->sub->durable, s->sub->per_process};
            ew_err rc = amqp10_declare_now(t, &d, err, sizeof err);
            if (rc != EW_OK) {
                int delay = ewi_backoff_next(&s->bo);
                s->reattach_at = now + delay;
                ewi_log(t->m, EW_LOG_WARN, "amqp %s: %s: %s; trying again in %d ms",
                        t->where, s->queue, err, delay);
                continue;
            }
        }
        amqp10_recv_attach(t, s);
    }
}

/* When a consumed queue is deleted, RabbitMQ 3.10's plugin sends the
 * consumer no detach: its session process crashes on the broker's
 * basic.cancel, which resets the whole connection (the reconnect then
 * declares the queue again). Should a plugin version neither detach nor
 * crash, the link would stay attached and silent; ?queue_check_ms=N makes
 * the rabbitmq dialect check every N ms (passive declares over AMQP 0-9-1)
 * that every consumed queue exists, and declare and attach again when not.
 * Off by default: every check is one more short connection in the broker's
 * log. */
static void check_queues(ewi_transport *t, int64_t now)
{
    if (t->opt.dialect != AMQP10_DIALECT_RABBITMQ || !t->opt.queue_check_ms ||
        now < t->next_queue_check || !amqp10_is_up(t))
        return;
    t->next_queue_check = now + t->opt.queue_check_ms;
    bool any = false;
    for (amqp10_sub *s = t->subs; s && !any; s = s->next)
        any = s->attached && !s->unsubscribed;
    if (!any)
        return;
    char err[512];
    for (amqp10_sub *s = t->subs; s; s = s->next) {
        if (!s->attached || s->unsubscribed)
            continue;
        amqp10_decl d = {AMQP10_DECL_EXISTS, NULL, s->queue, NULL, true, false};
        /* An outage shows on the AMQP 1.0 connection itself; an unreachable
         * administration ends this round at once (each further check would
         * wait for its own connect timeout on this I/O thread). */
        ew_err rc = amqp10_declare_now(t, &d, err, sizeof err);
        if (rc == EW_OK)
            continue;
        if (rc != EW_ENOTFOUND)
            break;
        ewi_report(t->m, EW_EBROKER, s->queue, NULL, NULL,
                   "amqp %s: the queue %s is gone (%s) and the broker did not tell its "
                   "consumer; declaring it again and attaching again",
                   t->where, s->queue, err);
        if (s->sub)
            ewi_sub_state(s->sub, false);
        amqp10_close_link(t, s->l);
        s->l = NULL;
        amqp10_acc_reset(&s->acc);
        s->link_id = 0;
        s->outstanding = 0;
        s->attached = false;
        s->reattach_at = now;
    }
}

void amqp10_recv_message(ewi_transport *t, amqp10_sub *s, pn_delivery_t *d)
{
    /* An event for a delivery read already (the broker updated it while
     * core holds it): there is nothing to read, and pn_link_recv would read
     * the link's current one. */
    if (!pn_delivery_readable(d))
        return;
    int got = amqp10_acc_read(&s->acc, d);
    if (got == 0)
        return; /* the rest is still coming */
    if (got == -1) {
        top_up(s); /* aborted by the sender: nothing to hand over */
        return;
    }
    if (s->unsubscribed) {
        /* Parked unsettled: it goes back to the queue when the link closes
         * (releasing it now would bring it straight back on this link). */
        amqp10_acc_reset(&s->acc);
        return;
    }
    size_t len = 0;
    const char *bytes = got == 1 ? amqp10_acc_bytes(&s->acc, &len) : NULL;
    if (!bytes) {
        /* Out of memory: the broker keeps it. */
        pn_delivery_update(d, PN_RELEASED);
        pn_delivery_settle(d);
        if (got != 1)
            pn_link_advance(pn_delivery_link(d));
        top_up(s);
        return;
    }
    ew_envelope *env = ewi_envelope_new();
    amqp10_wire_meta meta = {0, false, false};
    char err[512];
    ew_err rc = env ? amqp10_message_decode(bytes, len, env, &meta, err, sizeof err)
                    : EW_ENOMEM;
    amqp10_acc_done(&s->acc);
    if (rc == EW_EDECODE) {
        ewi_log(t->m, EW_LOG_WARN, "amqp %s: %s: %s", t->where, s->queue, err);
        rc = EW_OK; /* core dead-letters what it cannot read */
    }
    amqp10_rec *rec = rc == EW_OK ? amqp10_rec_new(t) : NULL;
    ewi_msg *msg = rec ? ewi_msg_new(s->sub, env) : NULL;
    if (!msg) {
        /* Out of memory: the broker keeps it. */
        free(rec);
        if (!rec)
            ewi_envelope_unref(env);
        pn_delivery_update(d, PN_RELEASED);
        pn_delivery_settle(d);
        top_up(s);
        return;
    }
    uint32_t redelivered = meta.delivery_count;
    if (t->opt.dialect == AMQP10_DIALECT_RABBITMQ && !meta.first_acquirer &&
        redelivered == 0)
        redelivered = 1; /* RabbitMQ 3.x marks redeliveries only this way */
    msg->redeliveries = redelivered;
    msg->tag = ++t->next_tag;
    msg->tdata = rec;
    rec->w.kind = AMQP10_W_SETTLE;
    rec->owner = AMQP10_REC_SUB;
    rec->holder = s;
    rec->msg = msg;
    rec->link_id = s->link_id;
    rec->d = d;
    s->outstanding++;
    s->nrecs++;
    ewi_deliveries_add(&t->dl, msg);
}

void amqp10_recv_settle(ewi_transport *t, amqp10_rec *rec)
{
    if (rec->owner == AMQP10_REC_FETCH) {
        amqp10_fetch_settle(t, rec);
        return;
    }
    amqp10_sub *s = rec->holder;
    if (rec->link_id && rec->link_id == s->link_id && s->l) {
        pn_delivery_t *d = rec->d;
        if (rec->how == EWI_ACK) {
            pn_delivery_update(d, PN_ACCEPTED);
        } else if (t->opt.dialect == AMQP10_DIALECT_ARTEMIS) {
            /* Artemis: modified + delivery-failed counts toward its
             * max-delivery-attempts (redelivery count grows, a message that
             * can never be dead-lettered by us ends in its DLA instead of
             * looping); released would not count. */
            pn_disposition_set_failed(pn_delivery_local(d), true);
            pn_delivery_update(d, PN_MODIFIED);
        } else {
            /* RabbitMQ 3.10: released = requeue, redelivered flag set;
             * modified ends the session (unrecognised state before 3.10.11). */
            pn_delivery_update(d, PN_RELEASED);
        }
        pn_delivery_settle(d);
        s->outstanding--;
        top_up(s);
    }
    s->nrecs--;
    ewi_msg_free(rec->msg);
    amqp10_rec_release(t, rec);
    amqp10_recv_maybe_free(t, s);
}

/* At most a prefetch window's worth of records: the next window of
 * deliveries allocates nothing. */
#define REC_SPARES 1024

amqp10_rec *amqp10_rec_new(ewi_transport *t)
{
    amqp10_rec *rec = t->rec_spare;
    if (!rec)
        return calloc(1, sizeof *rec);
    t->rec_spare = rec->next;
    t->rec_spare_n--;
    *rec = (amqp10_rec){0};
    return rec;
}

void amqp10_rec_release(ewi_transport *t, amqp10_rec *rec)
{
    if (t->rec_spare_n >= REC_SPARES) {
        free(rec);
        return;
    }
    rec->next = t->rec_spare;
    t->rec_spare = rec;
    t->rec_spare_n++;
}

void amqp10_rec_spares_free(ewi_transport *t)
{
    for (amqp10_rec *r = t->rec_spare, *n; r; r = n) {
        n = r->next;
        free(r);
    }
    t->rec_spare = NULL;
    t->rec_spare_n = 0;
}

void amqp10_recv_take_sub(ewi_transport *t, amqp10_sub *s)
{
    s->next = t->subs;
    t->subs = s;
    ewi_backoff_init(&s->bo, 200, (int)t->opt.reconnect_max_ms);
    amqp10_recv_attach(t, s);
}

void amqp10_recv_take_unsub(ewi_transport *t, amqp10_sub *s)
{
    ewi_deliveries_flush(&t->dl); /* what was read goes first */
    s->unsubscribed = true;
    s->reattach_at = 0;
    amqp10_recv_signal(t, s, AMQP10_SUB_GONE, NULL);
    amqp10_recv_maybe_free(t, s);
}

void amqp10_recv_tick(ewi_transport *t, int64_t now)
{
    check_queues(t, now);
    reattach_due(t, now);
}

/* The connection is gone (I/O thread): deliveries in core's hands are
 * stale (the broker requeues them); links attach again on the next
 * connection. */
void amqp10_recv_disconnected(ewi_transport *t)
{
    ewi_deliveries_flush(&t->dl); /* what was read goes first */
    for (amqp10_sub *s = t->subs, *next; s; s = next) {
        next = s->next;
        if (s->sub && !s->unsubscribed)
            ewi_sub_state(s->sub, false);
        s->l = NULL;
        amqp10_acc_reset(&s->acc);
        s->link_id = 0;
        s->attached = false;
        s->outstanding = 0;
        s->reattach_at = 0;
        amqp10_recv_maybe_free(t, s);
    }
}

void amqp10_recv_attach_all(ewi_transport *t)
{
    for (amqp10_sub *s = t->subs; s; s = s->next)
        if (!s->reattach_at)
            amqp10_recv_attach(t, s);
}

void amqp10_recv_opened(ewi_transport *t, amqp10_sub *s)
{
    s->attached = true;
    s->alone = false;
    ewi_backoff_reset(&s->bo);
    pthread_mutex_lock(&t->mu);
    bool again = s->state == AMQP10_SUB_ACTIVE;
    pthread_mutex_unlock(&t->mu);
    if (again)
        ewi_log(t->m, EW_LOG_INFO, "amqp %s: %s: consuming %s again", t->where, s->queue,
                s->source.addr);
    if (again && s->sub && !s->unsubscribed)
        ewi_sub_state(s->sub, true);
    amqp10_recv_signal(t, s, AMQP10_SUB_ACTIVE, NULL);
}

/* A settle that can no longer reach the broker (the I/O thread is ending):
 * only frees. */
void amqp10_recv_forget(amqp10_rec *rec)
{
    ((amqp10_sub *)rec->holder)->nrecs--;
    ewi_msg_free(rec->msg);
    free(rec);
}

/* The I/O thread ends (t->mu held): subscriptions still waiting fail. */
void amqp10_recv_finish_locked(ewi_transport *t, const char *why)
{
    for (amqp10_sub *s = t->subs; s; s = s->next)
        if (s->state == AMQP10_SUB_PENDING) {
            s->state = AMQP10_SUB_FAILED;
            amqp10_textf(s->error, sizeof s->error, "%s", why);
        }
}
