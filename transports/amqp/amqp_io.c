/* The I/O thread: the one thread that touches proton.
 *
 * It runs the proactor loop, owns the connection and every session, link
 * and delivery, takes work that other threads queued (publishes, settles,
 * subscriptions), sends within link credit, maps outcomes to publish
 * completions, hands received messages to core, and reconnects with capped,
 * jittered backoff. Every link has its own session: RabbitMQ answers a
 * refused attach (a missing exchange or queue) by ending the whole session,
 * and one bad target must not take the others down with it. */
#include "amqp.h"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <proton/connection.h>
#include <proton/delivery.h>
#include <proton/disposition.h>
#include <proton/link.h>
#include <proton/proactor.h>
#include <proton/sasl.h>
#include <proton/session.h>
#include <proton/ssl.h>
#include <proton/terminus.h>
#include <proton/transport.h>

#define TICK_MS 100          /* deadlines and reconnects are checked this often */
#define CLOSE_GRACE_MS 2000  /* stop: wait this long for the broker's close */
#define TOPO_TIMEOUT_MS 5000 /* rabbitmq: redeclaring after a reconnect */

/* ---- small helpers ------------------------------------------------------ */

void amqp_condition_text(pn_condition_t *c, const char *fallback, char *buf,
                         size_t len)
{
    if (c && pn_condition_is_set(c)) {
        const char *name = pn_condition_get_name(c);
        const char *desc = pn_condition_get_description(c);
        amqp_textf(buf, len, "%s%s%s", name ? name : "error", desc ? ": " : "",
                 desc ? desc : "");
    } else {
        amqp_textf(buf, len, "%s", fallback);
    }
}

static void set_caps(pn_terminus_t *term, amqp_cap cap)
{
    if (cap == AMQP_CAP_NONE)
        return;
    const char *s = cap == AMQP_CAP_TOPIC ? "topic" : "queue";
    pn_data_t *d = pn_terminus_capabilities(term);
    pn_data_put_array(d, false, PN_SYMBOL);
    pn_data_enter(d);
    pn_data_put_symbol(d, pn_bytes(strlen(s), s));
    pn_data_exit(d);
}

pn_link_t *amqp_open_link(ewi_transport *t, bool sender, const amqp_addr *a,
                          void *ctx)
{
    char name[AMQP_ADDR_MAX + 48];
    uint64_t id = ++t->next_link_id;
    amqp_textf(name, sizeof name, "%s-%llu-%s", sender ? "ew-send" : "ew-recv",
             (unsigned long long)id, a->addr);
    pn_session_t *ssn = pn_session(t->conn);
    pn_session_open(ssn);
    pn_link_t *l = sender ? pn_sender(ssn, name) : pn_receiver(ssn, name);
    pn_terminus_t *term = sender ? pn_link_target(l) : pn_link_source(l);
    pn_terminus_set_address(term, a->addr);
    set_caps(term, a->cap);
    pn_link_set_snd_settle_mode(l, PN_SND_UNSETTLED);
    pn_link_set_rcv_settle_mode(l, PN_RCV_FIRST);
    pn_link_set_context(l, ctx);
    pn_session_set_context(ssn, l);
    pn_link_open(l);
    return l;
}

void amqp_close_link(pn_link_t *l)
{
    if (!l)
        return;
    pn_session_t *ssn = pn_link_session(l);
    pn_link_set_context(l, NULL);
    pn_session_set_context(ssn, NULL);
    pn_link_close(l);
    pn_session_close(ssn);
}

char *amqp_read_delivery(pn_delivery_t *d, size_t *len)
{
    pn_link_t *l = pn_delivery_link(d);
    size_t cap = pn_delivery_pending(d), n = 0;
    char *buf = malloc(cap ? cap : 1);
    if (!buf) {
        pn_link_advance(l);
        return NULL;
    }
    for (;;) {
        if (n == cap) {
            size_t more = pn_delivery_pending(d);
            if (!more)
                break;
            char *nb = realloc(buf, cap + more);
            if (!nb) {
                free(buf);
                pn_link_advance(l);
                return NULL;
            }
            buf = nb;
            cap += more;
        }
        ssize_t r = pn_link_recv(l, buf + n, cap - n);
        if (r == PN_EOS || r == 0)
            break;
        if (r < 0) { /* PN_ABORTED or a state error: nothing usable */
            free(buf);
            pn_link_advance(l);
            return NULL;
        }
        n += (size_t)r;
    }
    pn_link_advance(l);
    *len = n;
    return buf;
}

static bool is_up(ewi_transport *t) { return t->conn && t->connected && !t->closing; }

/* ---- publishes ---------------------------------------------------------- */

static void list_push(amqp_out **head, amqp_out **tail, amqp_out *o)
{
    o->next = NULL;
    o->prev = *tail;
    if (*tail)
        (*tail)->next = o;
    else
        *head = o;
    *tail = o;
}

static void list_unlink(amqp_out **head, amqp_out **tail, amqp_out *o)
{
    if (o->prev)
        o->prev->next = o->next;
    else
        *head = o->next;
    if (o->next)
        o->next->prev = o->prev;
    else
        *tail = o->prev;
    o->prev = o->next = NULL;
}

/* Runs done once; the record itself lives on while a delivery points to it. */
static void out_done(ewi_transport *t, amqp_out *o, int err, const char *detail)
{
    ewi_pub *p = o->pub;
    if (!p)
        return;
    o->pub = NULL;
    p->done(p, err, detail);
    pthread_mutex_lock(&t->mu);
    t->pending--;
    if (t->window_waiters)
        pthread_cond_broadcast(&t->cond);
    pthread_mutex_unlock(&t->mu);
}

static void out_free(amqp_out *o)
{
    free(o->bytes);
    free(o);
}

static void out_finish(ewi_transport *t, amqp_out *o, int err, const char *detail)
{
    out_done(t, o, err, detail);
    out_free(o);
}

static amqp_sender *sender_for(ewi_transport *t, const amqp_addr *a)
{
    for (amqp_sender *s = t->senders; s; s = s->next)
        if (s->target.cap == a->cap && strcmp(s->target.addr, a->addr) == 0)
            return s;
    amqp_sender *s = calloc(1, sizeof *s);
    if (!s)
        return NULL;
    s->kind = AMQP_OBJ_SENDER;
    s->target = *a;
    s->next = t->senders;
    t->senders = s;
    return s;
}

static void sender_attach(ewi_transport *t, amqp_sender *s)
{
    if (s->l || !is_up(t))
        return;
    s->opened = false;
    s->l = amqp_open_link(t, true, &s->target, s);
}

static void pump(ewi_transport *t, amqp_sender *s)
{
    if (!s->l || !s->opened)
        return;
    while (s->pend_head && pn_link_credit(s->l) > 0) {
        amqp_out *o = s->pend_head;
        list_unlink(&s->pend_head, &s->pend_tail, o);
        uint64_t tag = ++t->next_tag;
        pn_delivery_t *d = pn_delivery(s->l, pn_dtag((const char *)&tag, sizeof tag));
        pn_link_send(s->l, (const char *)o->bytes, o->len);
        pn_link_advance(s->l);
        pn_delivery_set_context(d, o);
        o->d = d;
        list_push(&s->fl_head, &s->fl_tail, o);
    }
}

/* The broker refused or dropped this sender: every publish on it fails with
 * the broker's text; the next publish attaches again. */
static void sender_lost(ewi_transport *t, amqp_sender *s, const char *why)
{
    char detail[600];
    amqp_textf(detail, sizeof detail, "sender to %s: %s", s->target.addr, why);
    ewi_log(t->m, EW_LOG_WARN, "amqp %s: %s", t->where, detail);
    amqp_out *o;
    while ((o = s->fl_head)) {
        list_unlink(&s->fl_head, &s->fl_tail, o);
        if (o->d)
            pn_delivery_set_context(o->d, NULL);
        out_finish(t, o, EW_EBROKER, detail);
    }
    while ((o = s->pend_head)) {
        list_unlink(&s->pend_head, &s->pend_tail, o);
        out_finish(t, o, EW_EBROKER, detail);
    }
    amqp_close_link(s->l);
    s->l = NULL;
    s->opened = false;
}

static void on_outcome(ewi_transport *t, pn_delivery_t *d)
{
    uint64_t state = pn_delivery_remote_state(d);
    if (!state && !pn_delivery_settled(d))
        return; /* no outcome yet */
    amqp_out *o = pn_delivery_get_context(d);
    pn_link_t *l = pn_delivery_link(d);
    amqp_sender *s = pn_link_get_context(l);
    pn_delivery_set_context(d, NULL);
    pn_delivery_settle(d);
    if (!o || !s)
        return;
    list_unlink(&s->fl_head, &s->fl_tail, o);
    o->d = NULL;
    char text[600], cond[480];
    switch (state) {
    case PN_ACCEPTED:
    case 0: /* settled by the broker without a state: taken */
        out_finish(t, o, EW_OK, NULL);
        break;
    case PN_REJECTED:
        amqp_condition_text(pn_disposition_condition(pn_delivery_remote(d)),
                            "no reason given", cond, sizeof cond);
        amqp_textf(text, sizeof text, "rejected by the broker at %s: %s", s->target.addr,
                 cond);
        out_finish(t, o, EW_EBROKER, text);
        break;
    case PN_RELEASED:
        amqp_textf(text, sizeof text,
                 "released by the broker at %s: not delivered, the broker did not "
                 "take it", s->target.addr);
        out_finish(t, o, EW_EBROKER, text);
        break;
    case PN_MODIFIED:
        amqp_textf(text, sizeof text, "modified by the broker at %s%s: not delivered",
                 s->target.addr,
                 pn_disposition_is_undeliverable(pn_delivery_remote(d))
                     ? " (undeliverable here)" : "");
        out_finish(t, o, EW_EBROKER, text);
        break;
    default:
        amqp_textf(text, sizeof text, "unexpected outcome %s from the broker at %s",
                 pn_disposition_type_name(state), s->target.addr);
        out_finish(t, o, EW_EBROKER, text);
        break;
    }
}

static void take_pub(ewi_transport *t, amqp_out *o)
{
    amqp_sender *s = sender_for(t, &o->target);
    if (!s) {
        out_finish(t, o, EW_ENOMEM, "out of memory");
        return;
    }
    list_push(&s->pend_head, &s->pend_tail, o);
    if (!s->l)
        sender_attach(t, s);
    pump(t, s);
}

/* Fails whatever is past its deadline: queued ones, and sent ones the
 * broker did not answer in time (their record stays until it does). */
static void expire_pubs(ewi_transport *t, int64_t now)
{
    char detail[700];
    for (amqp_sender *s = t->senders; s; s = s->next) {
        amqp_out *o = s->pend_head;
        while (o && o->pub && o->pub->deadline_ms <= now) {
            amqp_out *next = o->next;
            list_unlink(&s->pend_head, &s->pend_tail, o);
            pthread_mutex_lock(&t->mu);
            bool down = t->state != AMQP_ST_UP;
            int64_t since = t->down_since;
            char last[512];
            amqp_textf(last, sizeof last, "%s", t->last_error);
            pthread_mutex_unlock(&t->mu);
            if (down)
                amqp_textf(detail, sizeof detail,
                         "not sent to %s within the send timeout: no connection to "
                         "%s for %lld ms (last error: %s); still reconnecting",
                         s->target.addr, t->where, (long long)(now - since), last);
            else
                amqp_textf(detail, sizeof detail,
                         "not sent to %s within the send timeout: no link credit from "
                         "the broker", s->target.addr);
            out_finish(t, o, EW_ETIMEDOUT, detail);
            o = next;
        }
        for (o = s->fl_head; o; o = o->next) {
            if (!o->pub)
                continue;
            if (o->pub->deadline_ms > now)
                break;
            amqp_textf(detail, sizeof detail,
                     "sent to %s but no outcome from the broker within the send "
                     "timeout (it may still arrive)", s->target.addr);
            out_done(t, o, EW_ETIMEDOUT, detail);
        }
    }
}

/* ---- subscriptions ------------------------------------------------------ */

static void sub_signal(ewi_transport *t, amqp_sub *s, amqp_sub_state st,
                       const char *error)
{
    pthread_mutex_lock(&t->mu);
    if (s->state != AMQP_SUB_GONE) {
        s->state = st;
        if (error)
            amqp_textf(s->error, sizeof s->error, "%s", error);
    }
    if (st == AMQP_SUB_GONE && s->unsub_done) {
        *s->unsub_done = true; /* s may be freed right after this */
        s->unsub_done = NULL;
    }
    pthread_cond_broadcast(&t->cond);
    pthread_mutex_unlock(&t->mu);
}

static void sub_attach(ewi_transport *t, amqp_sub *s)
{
    if (s->l || s->unsubscribed || !is_up(t))
        return;
    s->attached = false;
    s->outstanding = 0;
    s->l = amqp_open_link(t, false, &s->source, s);
    s->link_id = t->next_link_id;
    pn_link_flow(s->l, (int)s->prefetch);
}

static void sub_unlink(ewi_transport *t, amqp_sub *s)
{
    for (amqp_sub **pp = &t->subs; *pp; pp = &(*pp)->next)
        if (*pp == s) {
            *pp = s->next;
            return;
        }
}

/* Frees s once nothing refers to it any more. */
static void sub_maybe_free(ewi_transport *t, amqp_sub *s)
{
    if (!s->unsubscribed)
        return;
    if (s->l && s->outstanding == 0) {
        amqp_close_link(s->l); /* parked deliveries go back to the queue */
        s->l = NULL;
        s->link_id = 0;
    }
    if (s->l || s->nrecs)
        return;
    sub_unlink(t, s);
    free(s);
}

/* Credit back up to the prefetch window once half of it is free: one flow
 * frame per half window, not one per message. */
static void top_up(amqp_sub *s)
{
    if (!s->l || s->unsubscribed)
        return;
    long want = (long)s->prefetch - (long)s->outstanding - pn_link_credit(s->l);
    if (want > 0 && want >= ((long)s->prefetch + 1) / 2)
        pn_link_flow(s->l, (int)want);
}

/* The broker detached a receiver (or ended its session). */
static void sub_lost(ewi_transport *t, amqp_sub *s, const char *why)
{
    amqp_close_link(s->l);
    s->l = NULL;
    s->link_id = 0;
    s->outstanding = 0;
    bool was_attached = s->attached;
    s->attached = false;
    if (s->unsubscribed) {
        sub_maybe_free(t, s);
        return;
    }
    pthread_mutex_lock(&t->mu);
    amqp_sub_state st = s->state;
    pthread_mutex_unlock(&t->mu);
    if (st == AMQP_SUB_PENDING && !was_attached) {
        char text[700];
        amqp_textf(text, sizeof text, "attaching a consumer to %s refused: %s",
                 s->source.addr, why);
        sub_signal(t, s, AMQP_SUB_FAILED, text);
        return;
    }
    int delay = ewi_backoff_next(&s->bo);
    s->reattach_at = ewi_now_ms() + delay;
    ewi_report(t->m, EW_EBROKER, s->queue, NULL, NULL,
               "amqp %s: the broker detached the consumer of %s: %s; attaching "
               "again in %d ms", t->where, s->source.addr, why, delay);
}

static void sub_reattach_due(ewi_transport *t, int64_t now)
{
    for (amqp_sub *s = t->subs; s; s = s->next) {
        if (!s->reattach_at || s->reattach_at > now || s->unsubscribed || !is_up(t))
            continue;
        s->reattach_at = 0;
        if (s->sub && t->opt.dialect == AMQP_DIALECT_RABBITMQ) {
            /* The queue may be gone (deleted by hand): declare it again. */
            char err[512];
            amqp_decl d = {AMQP_DECL_LISTENER, s->sub->event, s->queue, s->sub->dlq,
                           s->sub->durable, s->sub->per_process};
            amqp_topo *tp = NULL;
            ew_err rc = amqp_topo_open(&t->opt, TOPO_TIMEOUT_MS, &tp, err, sizeof err);
            if (rc == EW_OK)
                rc = amqp_topo_listener(tp, d.event, d.queue, d.durable, d.per_process,
                                        t->opt.expires_ms, d.dlq, err, sizeof err);
            amqp_topo_close(tp);
            if (rc != EW_OK) {
                int delay = ewi_backoff_next(&s->bo);
                s->reattach_at = now + delay;
                ewi_log(t->m, EW_LOG_WARN, "amqp %s: %s: %s; trying again in %d ms",
                        t->where, s->queue, err, delay);
                continue;
            }
        }
        sub_attach(t, s);
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
    if (t->opt.dialect != AMQP_DIALECT_RABBITMQ || !t->opt.queue_check_ms ||
        now < t->next_queue_check || !is_up(t))
        return;
    t->next_queue_check = now + t->opt.queue_check_ms;
    bool any = false;
    for (amqp_sub *s = t->subs; s && !any; s = s->next)
        any = s->attached && !s->unsubscribed;
    if (!any)
        return;
    char err[512];
    amqp_topo *tp = NULL;
    if (amqp_topo_open(&t->opt, TOPO_TIMEOUT_MS, &tp, err, sizeof err) != EW_OK)
        return; /* an outage shows on the AMQP 1.0 connection itself */
    for (amqp_sub *s = t->subs; s; s = s->next) {
        if (!s->attached || s->unsubscribed)
            continue;
        if (amqp_topo_queue_exists(tp, s->queue, err, sizeof err) != EW_ENOTFOUND)
            continue;
        ewi_report(t->m, EW_EBROKER, s->queue, NULL, NULL,
                   "amqp %s: the queue %s is gone (%s) and the broker did not tell its "
                   "consumer; declaring it again and attaching again",
                   t->where, s->queue, err);
        amqp_close_link(s->l);
        s->l = NULL;
        s->link_id = 0;
        s->outstanding = 0;
        s->attached = false;
        s->reattach_at = now;
    }
    amqp_topo_close(tp);
}

static void on_message(ewi_transport *t, amqp_sub *s, pn_delivery_t *d)
{
    pn_link_t *l = pn_delivery_link(d);
    if (pn_delivery_aborted(d)) {
        pn_delivery_settle(d);
        pn_link_advance(l);
        top_up(s);
        return;
    }
    if (!pn_delivery_readable(d) || pn_delivery_partial(d))
        return; /* the rest is still coming */
    size_t len = 0;
    char *bytes = amqp_read_delivery(d, &len);
    if (s->unsubscribed) {
        /* Parked unsettled: it goes back to the queue when the link closes
         * (releasing it now would bring it straight back on this link). */
        free(bytes);
        return;
    }
    if (!bytes) {
        pn_delivery_update(d, PN_RELEASED);
        pn_delivery_settle(d);
        top_up(s);
        return;
    }
    ew_envelope *env = ewi_envelope_new();
    amqp_wire_meta meta = {0, false, false};
    char err[512];
    ew_err rc = env ? amqp_message_decode(bytes, len, env, &meta, err, sizeof err)
                    : EW_ENOMEM;
    free(bytes);
    if (rc == EW_EDECODE) {
        ewi_log(t->m, EW_LOG_WARN, "amqp %s: %s: %s", t->where, s->queue, err);
        rc = EW_OK; /* core dead-letters what it cannot read */
    }
    amqp_rec *rec = rc == EW_OK ? calloc(1, sizeof *rec) : NULL;
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
    if (t->opt.dialect == AMQP_DIALECT_RABBITMQ && !meta.first_acquirer &&
        redelivered == 0)
        redelivered = 1; /* RabbitMQ 3.x marks redeliveries only this way */
    msg->redeliveries = redelivered;
    msg->tag = ++t->next_tag;
    msg->tdata = rec;
    rec->w.kind = AMQP_W_SETTLE;
    rec->owner = AMQP_REC_SUB;
    rec->holder = s;
    rec->msg = msg;
    rec->link_id = s->link_id;
    rec->d = d;
    s->outstanding++;
    s->nrecs++;
    ewi_deliver(msg);
}

static void settle_rec(ewi_transport *t, amqp_rec *rec)
{
    if (rec->owner == AMQP_REC_FETCH) {
        amqp_fetch_settle(t, rec);
        return;
    }
    amqp_sub *s = rec->holder;
    if (rec->link_id && rec->link_id == s->link_id && s->l) {
        pn_delivery_t *d = rec->d;
        if (rec->how == EWI_ACK) {
            pn_delivery_update(d, PN_ACCEPTED);
        } else if (t->opt.dialect == AMQP_DIALECT_ARTEMIS) {
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
    free(rec);
    sub_maybe_free(t, s);
}

static void take_sub(ewi_transport *t, amqp_sub *s)
{
    s->next = t->subs;
    t->subs = s;
    ewi_backoff_init(&s->bo, 200, (int)t->opt.reconnect_max_ms);
    sub_attach(t, s);
}

static void take_unsub(ewi_transport *t, amqp_sub *s)
{
    s->unsubscribed = true;
    s->reattach_at = 0;
    sub_signal(t, s, AMQP_SUB_GONE, NULL);
    sub_maybe_free(t, s);
}

/* ---- work from other threads -------------------------------------------- */

static void begin_stop(ewi_transport *t);

static void process_work(ewi_transport *t)
{
    pthread_mutex_lock(&t->mu);
    amqp_work *w = t->work_head;
    t->work_head = t->work_tail = NULL;
    bool stopping = t->stopping;
    pthread_mutex_unlock(&t->mu);
    while (w) {
        amqp_work *next = w->next;
        switch (w->kind) {
        case AMQP_W_PUB:
            take_pub(t, (amqp_out *)w);
            break;
        case AMQP_W_SETTLE:
            settle_rec(t, (amqp_rec *)w);
            break;
        case AMQP_W_SUB:
            take_sub(t, (amqp_sub *)((char *)w - offsetof(amqp_sub, w_sub)));
            break;
        case AMQP_W_UNSUB:
            take_unsub(t, (amqp_sub *)((char *)w - offsetof(amqp_sub, w_unsub)));
            break;
        case AMQP_W_FETCH:
            amqp_fetch_work(t, w);
            break;
        }
        w = next;
    }
    if (stopping && !t->closing)
        begin_stop(t);
}

void amqp_post_locked(ewi_transport *t, amqp_work *w)
{
    w->next = NULL;
    bool was_empty = !t->work_head;
    if (t->work_tail)
        t->work_tail->next = w;
    else
        t->work_head = w;
    t->work_tail = w;
    /* One wake per batch: the I/O thread takes the whole queue at once, and
     * none while it is busy with the connection (it looks at the queue
     * before it finishes). The connection cannot be freed while mu is held
     * (the I/O thread clears conn_live under mu before proton frees it). */
    if (was_empty && !t->io_busy) {
        if (t->conn_live)
            pn_connection_wake(t->conn_live);
        else
            pn_proactor_interrupt(t->proactor);
    }
}

void amqp_post(ewi_transport *t, amqp_work *w)
{
    pthread_mutex_lock(&t->mu);
    amqp_post_locked(t, w);
    pthread_mutex_unlock(&t->mu);
}

/* ---- the connection ----------------------------------------------------- */

static void set_state(ewi_transport *t, amqp_state st, const char *error)
{
    pthread_mutex_lock(&t->mu);
    t->state = st;
    if (error)
        amqp_textf(t->last_error, sizeof t->last_error, "%s", error);
    pthread_cond_broadcast(&t->cond);
    pthread_mutex_unlock(&t->mu);
}

static bool connect_now(ewi_transport *t)
{
    const amqp_options *o = &t->opt;
    pn_transport_t *tr = pn_transport();
    pn_connection_t *c = pn_connection();
    if (!tr || !c) {
        if (tr)
            pn_transport_free(tr);
        if (c)
            pn_connection_free(c);
        return false;
    }
    pn_sasl_t *sasl = pn_sasl(tr);
    pn_sasl_allowed_mechs(sasl, o->sasl_mechs ? o->sasl_mechs
                                : o->user ? "PLAIN" : "ANONYMOUS");
    /* PLAIN on a plain socket: the URL asked for it (amqp://user:pass@). */
    pn_sasl_set_allow_insecure_mechs(sasl, true);
    pn_transport_set_idle_timeout(tr, 30000);
    if (o->tls) {
        pn_ssl_domain_t *dom = pn_ssl_domain(PN_SSL_MODE_CLIENT);
        int rc = dom ? 0 : PN_OUT_OF_MEMORY;
        if (!rc && o->ca_file)
            rc = pn_ssl_domain_set_trusted_ca_db(dom, o->ca_file);
        if (!rc)
            rc = pn_ssl_domain_set_peer_authentication(
                dom,
                o->verify == AMQP_VERIFY_NAME ? PN_SSL_VERIFY_PEER_NAME
                : o->verify == AMQP_VERIFY_PEER ? PN_SSL_VERIFY_PEER
                                                : PN_SSL_ANONYMOUS_PEER,
                NULL);
        pn_ssl_t *ssl = rc ? NULL : pn_ssl(tr);
        if (!rc)
            rc = ssl ? pn_ssl_init(ssl, dom, NULL) : PN_ERR;
        if (!rc)
            rc = pn_ssl_set_peer_hostname(ssl, o->host);
        if (dom)
            pn_ssl_domain_free(dom);
        if (rc) {
            char text[600];
            amqp_textf(text, sizeof text, "TLS setup failed (%s)%s%s", pn_code(rc),
                     o->ca_file ? ": check the CA file " : "",
                     o->ca_file ? o->ca_file : "");
            set_state(t, t->state, text);
            ewi_log(t->m, EW_LOG_ERROR, "amqp %s: %s", t->where, text);
            pn_transport_free(tr);
            pn_connection_free(c);
            return false;
        }
    }
    pn_connection_set_container(c, t->container_id);
    if (o->user)
        pn_connection_set_user(c, o->user);
    if (o->password)
        pn_connection_set_password(c, o->password);
    char host[400];
    if (o->dialect == AMQP_DIALECT_RABBITMQ && o->vhost)
        amqp_textf(host, sizeof host, "vhost:%s", o->vhost);
    else
        amqp_textf(host, sizeof host, "%s", o->host);
    pn_connection_set_hostname(c, host);
    pn_connection_open(c);
    char port[16], addr[PN_MAX_ADDR];
    amqp_textf(port, sizeof port, "%d", o->port);
    pn_proactor_addr(addr, sizeof addr, o->host, port);
    t->conn = c;
    t->connected = false;
    pthread_mutex_lock(&t->mu);
    pn_proactor_connect2(t->proactor, c, tr, addr);
    t->conn_live = c;
    pthread_mutex_unlock(&t->mu);
    return true;
}

static void schedule_reconnect(ewi_transport *t, int64_t now)
{
    int delay = ewi_backoff_next(&t->backoff);
    t->reconnect_at = now + delay;
}

static void on_remote_open(ewi_transport *t)
{
    t->connected = true;
    ewi_backoff_reset(&t->backoff);
    if (t->was_up)
        ewi_log(t->m, EW_LOG_WARN, "amqp %s: reconnected", t->where);
    else
        ewi_log(t->m, EW_LOG_INFO, "amqp %s: connected", t->where);
    t->was_up = true;
    set_state(t, AMQP_ST_UP, NULL);
    for (amqp_sub *s = t->subs; s; s = s->next)
        if (!s->reattach_at)
            sub_attach(t, s);
    for (amqp_sender *s = t->senders; s; s = s->next)
        if (s->pend_head)
            sender_attach(t, s);
    amqp_fetch_attach_all(t);
}

static bool is_auth_failure(pn_condition_t *c)
{
    const char *n = c && pn_condition_is_set(c) ? pn_condition_get_name(c) : NULL;
    return n && (strcmp(n, "amqp:unauthorized-access") == 0 ||
                 strcmp(n, "amqp:sasl-auth") == 0 ||
                 strstr(n, "unauthorized") != NULL);
}

static bool is_ip_literal(const char *host)
{
    unsigned char buf[sizeof(struct in6_addr)];
    return inet_pton(AF_INET, host, buf) == 1 || inet_pton(AF_INET6, host, buf) == 1;
}

static void on_transport_closed(ewi_transport *t, pn_event_t *e)
{
    pn_condition_t *tc = pn_transport_condition(pn_event_transport(e));
    pn_condition_t *rc = t->conn ? pn_connection_remote_condition(t->conn) : NULL;
    pn_condition_t *c = rc && pn_condition_is_set(rc) ? rc : tc;
    char why[480];
    amqp_condition_text(c, "connection closed", why, sizeof why);
    /* proton 0.37 matches the host name against the certificate's DNS
     * names and common name only, never its IP addresses. */
    if (t->opt.tls && t->opt.verify == AMQP_VERIFY_NAME && is_ip_literal(t->opt.host) &&
        strstr(why, "certificate verify failed")) {
        size_t n = strlen(why);
        amqp_textf(why + n, sizeof why - n,
                   " (the host is an IP address: proton checks names against the "
                   "certificate's DNS names only; connect by name, or use verify=peer)");
    }
    bool auth = is_auth_failure(tc) || is_auth_failure(rc);
    /* A certificate the client does not trust stays untrusted: no retry
     * during start (later, a reconnect keeps trying: it may be a broker's
     * certificate being replaced). */
    bool cert = t->opt.tls && strstr(why, "SSL Failure") && strstr(why, "certificate");
    int64_t now = ewi_now_ms();

    /* Forget every proton object of this connection: proton frees them
     * when this batch is done. */
    pthread_mutex_lock(&t->mu);
    t->conn_live = NULL;
    amqp_state was = t->state;
    bool stopping = t->stopping;
    if (was == AMQP_ST_UP)
        t->down_since = now;
    pthread_mutex_unlock(&t->mu);
    t->conn = NULL;
    t->connected = false;
    for (amqp_sender *s = t->senders; s; s = s->next) {
        /* Unsettled sends go out again on the next connection, first. */
        amqp_out *o;
        while ((o = s->fl_tail)) {
            list_unlink(&s->fl_head, &s->fl_tail, o);
            o->d = NULL;
            if (!o->pub) {
                out_free(o);
                continue;
            }
            o->next = s->pend_head;
            o->prev = NULL;
            if (s->pend_head)
                s->pend_head->prev = o;
            else
                s->pend_tail = o;
            s->pend_head = o;
        }
        s->l = NULL;
        s->opened = false;
    }
    for (amqp_sub *s = t->subs, *next; s; s = next) {
        next = s->next;
        s->l = NULL;
        s->link_id = 0;
        s->attached = false;
        s->outstanding = 0;
        s->reattach_at = 0;
        sub_maybe_free(t, s);
    }
    amqp_fetch_disconnect_all(t, why, false);

    if (stopping || t->closing) {
        t->exit_now = true;
        return;
    }
    if (was == AMQP_ST_CONNECTING) {
        bool give_up = auth || cert || now + t->backoff.cur_ms >= t->start_deadline;
        char text[700];
        amqp_textf(text, sizeof text, "%s to %s: %s",
                 auth ? "authentication refused" : "cannot connect", t->where, why);
        if (give_up) {
            pthread_mutex_lock(&t->mu);
            t->start_err = auth ? EW_EAUTH : EW_ECONNECT;
            pthread_mutex_unlock(&t->mu);
            set_state(t, AMQP_ST_FAILED, text);
            t->exit_now = true;
            return;
        }
        set_state(t, AMQP_ST_CONNECTING, text);
        ewi_log(t->m, EW_LOG_INFO, "amqp: %s; trying again", text);
        schedule_reconnect(t, now);
        return;
    }
    set_state(t, AMQP_ST_DOWN, why);
    schedule_reconnect(t, now);
    if (was == AMQP_ST_UP)
        ewi_report(t->m, auth ? EW_EAUTH : EW_EDISCONNECTED, NULL, NULL, NULL,
                   "amqp %s: connection lost: %s; reconnecting (backoff up to %ld ms)",
                   t->where, why, t->opt.reconnect_max_ms);
    else
        ewi_log(t->m, auth ? EW_LOG_ERROR : EW_LOG_INFO,
                "amqp %s: reconnect failed: %s; next try in %lld ms", t->where, why,
                (long long)(t->reconnect_at - now));
}

static void reconnect_if_due(ewi_transport *t, int64_t now)
{
    if (t->conn || !t->reconnect_at || now < t->reconnect_at || t->closing)
        return;
    t->reconnect_at = 0;
    pthread_mutex_lock(&t->mu);
    bool starting = t->state == AMQP_ST_CONNECTING;
    pthread_mutex_unlock(&t->mu);
    if (!starting) {
        /* rabbitmq: a restarted broker lost the non-durable topology; declare
         * it before any link needs it. */
        char err[512];
        ew_err rc = amqp_redeclare_all(t, TOPO_TIMEOUT_MS, err, sizeof err);
        if (rc != EW_OK) {
            ewi_log(t->m, EW_LOG_INFO, "amqp %s: redeclaring the topology: %s",
                    t->where, err);
            set_state(t, AMQP_ST_DOWN, err);
            schedule_reconnect(t, ewi_now_ms());
            return;
        }
    }
    if (!connect_now(t))
        schedule_reconnect(t, now);
}

static void begin_stop(ewi_transport *t)
{
    t->closing = true;
    t->reconnect_at = 0;
    if (t->conn) {
        pn_connection_close(t->conn);
        t->close_deadline = ewi_now_ms() + CLOSE_GRACE_MS;
    } else {
        t->exit_now = true;
    }
}

static void tick(ewi_transport *t)
{
    int64_t now = ewi_now_ms();
    process_work(t);
    expire_pubs(t, now);
    if (is_up(t)) {
        check_queues(t, now);
        sub_reattach_due(t, now);
    }
    if (t->closing && t->conn && now >= t->close_deadline) {
        pn_proactor_disconnect(t->proactor, NULL);
        t->close_deadline = now + CLOSE_GRACE_MS;
    }
    reconnect_if_due(t, now);
    pthread_mutex_lock(&t->mu);
    bool start_over = t->state == AMQP_ST_CONNECTING && now >= t->start_deadline;
    if (start_over && !t->conn) {
        t->start_err = EW_ECONNECT;
        t->state = AMQP_ST_FAILED;
        if (!t->last_error[0])
            amqp_textf(t->last_error, sizeof t->last_error, "no answer from %s", t->where);
        pthread_cond_broadcast(&t->cond);
        t->exit_now = true;
    }
    pthread_mutex_unlock(&t->mu);
    /* A broker that accepts the socket but never answers: give up on it. */
    if (start_over && t->conn && !t->closing)
        pn_proactor_disconnect(t->proactor, NULL);
}

/* ---- events ------------------------------------------------------------- */

static void on_link_gone(ewi_transport *t, pn_link_t *l, pn_condition_t *c)
{
    void *ctx = l ? pn_link_get_context(l) : NULL;
    if (!ctx) {
        if (l && pn_link_state(l) & PN_LOCAL_ACTIVE)
            pn_link_close(l);
        return;
    }
    char why[480];
    amqp_condition_text(c, "detached by the broker", why, sizeof why);
    switch (*(amqp_obj_kind *)ctx) {
    case AMQP_OBJ_SENDER:
        sender_lost(t, ctx, why);
        break;
    case AMQP_OBJ_SUB:
        sub_lost(t, ctx, why);
        break;
    case AMQP_OBJ_FETCH:
        amqp_fetch_on_lost(t, ctx, why);
        break;
    }
}

static void on_link_open(ewi_transport *t, pn_link_t *l)
{
    void *ctx = pn_link_get_context(l);
    if (!ctx)
        return;
    /* A refused attach comes back without a terminus, then a detach. */
    pn_terminus_t *rt = pn_link_is_sender(l) ? pn_link_remote_target(l)
                                             : pn_link_remote_source(l);
    if (pn_terminus_get_type(rt) == PN_UNSPECIFIED)
        return;
    switch (*(amqp_obj_kind *)ctx) {
    case AMQP_OBJ_SENDER: {
        amqp_sender *s = ctx;
        s->opened = true;
        pump(t, s);
        break;
    }
    case AMQP_OBJ_SUB: {
        amqp_sub *s = ctx;
        s->attached = true;
        ewi_backoff_reset(&s->bo);
        pthread_mutex_lock(&t->mu);
        bool again = s->state == AMQP_SUB_ACTIVE;
        pthread_mutex_unlock(&t->mu);
        if (again)
            ewi_log(t->m, EW_LOG_INFO, "amqp %s: %s: consuming %s again", t->where,
                    s->queue, s->source.addr);
        sub_signal(t, s, AMQP_SUB_ACTIVE, NULL);
        break;
    }
    case AMQP_OBJ_FETCH:
        amqp_fetch_on_open(t, ctx, l);
        break;
    }
}

static void on_delivery(ewi_transport *t, pn_delivery_t *d)
{
    pn_link_t *l = pn_delivery_link(d);
    if (pn_link_is_sender(l)) {
        on_outcome(t, d);
        return;
    }
    void *ctx = pn_link_get_context(l);
    if (!ctx) {
        /* A link we closed: leave the delivery unsettled, the broker gets it
         * back with the link. */
        if (pn_delivery_readable(d) && !pn_delivery_partial(d))
            pn_link_advance(l);
        return;
    }
    if (*(amqp_obj_kind *)ctx == AMQP_OBJ_SUB)
        on_message(t, ctx, d);
    else if (*(amqp_obj_kind *)ctx == AMQP_OBJ_FETCH)
        amqp_fetch_on_delivery(t, ctx, d);
}

static void handle(ewi_transport *t, pn_event_t *e)
{
    switch (pn_event_type(e)) {
    case PN_CONNECTION_REMOTE_OPEN:
        if (pn_event_connection(e) == t->conn)
            on_remote_open(t);
        break;
    case PN_CONNECTION_REMOTE_CLOSE: {
        pn_connection_t *c = pn_event_connection(e);
        if (pn_connection_state(c) & PN_LOCAL_ACTIVE)
            pn_connection_close(c);
        break;
    }
    case PN_SESSION_REMOTE_CLOSE: {
        pn_session_t *ssn = pn_event_session(e);
        pn_link_t *l = pn_session_get_context(ssn);
        if (l)
            on_link_gone(t, l, pn_session_remote_condition(ssn));
        if (pn_session_state(ssn) & PN_LOCAL_ACTIVE)
            pn_session_close(ssn);
        break;
    }
    case PN_LINK_REMOTE_OPEN:
        on_link_open(t, pn_event_link(e));
        break;
    case PN_LINK_REMOTE_CLOSE:
    case PN_LINK_REMOTE_DETACH: {
        pn_link_t *l = pn_event_link(e);
        on_link_gone(t, l, pn_link_remote_condition(l));
        break;
    }
    case PN_LINK_FLOW: {
        pn_link_t *l = pn_event_link(e);
        void *ctx = pn_link_get_context(l);
        if (!ctx)
            break;
        if (*(amqp_obj_kind *)ctx == AMQP_OBJ_SENDER)
            pump(t, ctx);
        else if (*(amqp_obj_kind *)ctx == AMQP_OBJ_FETCH)
            amqp_fetch_on_flow(t, ctx, l);
        break;
    }
    case PN_DELIVERY:
        on_delivery(t, pn_event_delivery(e));
        break;
    case PN_CONNECTION_WAKE:
        process_work(t);
        if (t->tick_due) {
            t->tick_due = false;
            tick(t);
        }
        break;
    case PN_TRANSPORT_CLOSED:
        on_transport_closed(t, e);
        process_work(t);
        break;
    case PN_PROACTOR_INTERRUPT:
        if (!t->conn)
            process_work(t);
        else
            pn_connection_wake(t->conn);
        break;
    case PN_PROACTOR_TIMEOUT:
        if (!t->exit_now)
            pn_proactor_set_timeout(t->proactor, TICK_MS);
        if (t->conn) {
            /* Touch proton objects only in the connection's own batch. */
            t->tick_due = true;
            pn_connection_wake(t->conn);
        } else {
            tick(t);
        }
        break;
    default:
        break;
    }
}

/* ---- the thread --------------------------------------------------------- */

/* End of a batch of the connection: take the work that arrived meanwhile
 * (posters did not wake us), a few rounds at most so that the proactor gets
 * to write; what is left then gets a wake of its own. */
static void drain_tail(ewi_transport *t)
{
    for (int round = 0;; round++) {
        pthread_mutex_lock(&t->mu);
        bool more = t->work_head != NULL;
        if (!more || round == 4 || !t->conn || t->exit_now) {
            t->io_busy = false;
            if (more && t->conn_live)
                pn_connection_wake(t->conn_live);
            else if (more)
                pn_proactor_interrupt(t->proactor);
            pthread_mutex_unlock(&t->mu);
            return;
        }
        pthread_mutex_unlock(&t->mu);
        process_work(t);
    }
}

/* After the loop: whatever is left fails or is freed. */
static void finish(ewi_transport *t)
{
    pthread_mutex_lock(&t->mu);
    amqp_state st = t->state;
    pthread_mutex_unlock(&t->mu);
    const char *why = st == AMQP_ST_FAILED ? "the transport could not connect"
                                           : "the transport stopped";
    /* Readers first, while their callers still wait for us. */
    amqp_fetch_disconnect_all(t, why, true);
    pthread_mutex_lock(&t->mu);
    amqp_work *w = t->work_head;
    t->work_head = t->work_tail = NULL;
    t->io_exited = true;
    t->conn_live = NULL;
    pthread_mutex_unlock(&t->mu);
    while (w) {
        amqp_work *next = w->next;
        switch (w->kind) {
        case AMQP_W_PUB:
            out_finish(t, (amqp_out *)w, EW_ECLOSED, why);
            break;
        case AMQP_W_SETTLE: {
            amqp_rec *rec = (amqp_rec *)w;
            if (rec->owner == AMQP_REC_SUB) {
                ((amqp_sub *)rec->holder)->nrecs--;
                ewi_msg_free(rec->msg);
                free(rec);
            } else {
                amqp_fetch_settle(t, rec);
            }
            break;
        }
        case AMQP_W_SUB:
            take_sub(t, (amqp_sub *)((char *)w - offsetof(amqp_sub, w_sub)));
            break;
        case AMQP_W_UNSUB:
            take_unsub(t, (amqp_sub *)((char *)w - offsetof(amqp_sub, w_unsub)));
            break;
        case AMQP_W_FETCH:
            amqp_fetch_work(t, w);
            break;
        }
        w = next;
    }
    for (amqp_sender *s = t->senders; s; s = s->next) {
        amqp_out *o;
        while ((o = s->fl_head)) {
            list_unlink(&s->fl_head, &s->fl_tail, o);
            out_finish(t, o, EW_ECLOSED, "the transport stopped before the broker "
                                         "confirmed it (it may have been delivered)");
        }
        while ((o = s->pend_head)) {
            list_unlink(&s->pend_head, &s->pend_tail, o);
            out_finish(t, o, EW_ECLOSED, why);
        }
    }
    pthread_mutex_lock(&t->mu);
    for (amqp_sub *s = t->subs; s; s = s->next)
        if (s->state == AMQP_SUB_PENDING) {
            s->state = AMQP_SUB_FAILED;
            amqp_textf(s->error, sizeof s->error, "%s", why);
        }
    if (t->state != AMQP_ST_FAILED)
        t->state = AMQP_ST_STOPPED;
    pthread_cond_broadcast(&t->cond);
    pthread_mutex_unlock(&t->mu);
}

void *amqp_io_main(void *arg)
{
    ewi_transport *t = arg;
    ewi_backoff_init(&t->backoff, 100, (int)t->opt.reconnect_max_ms);
    pn_proactor_set_timeout(t->proactor, TICK_MS);
    if (!connect_now(t))
        schedule_reconnect(t, ewi_now_ms());
    while (!t->exit_now) {
        pn_event_batch_t *b = pn_proactor_wait(t->proactor);
        pn_event_t *e;
        bool conn_batch = false;
        while ((e = pn_event_batch_next(b))) {
            if (!conn_batch && t->conn && pn_event_connection(e) == t->conn) {
                conn_batch = true;
                pthread_mutex_lock(&t->mu);
                t->io_busy = true;
                pthread_mutex_unlock(&t->mu);
            }
            handle(t, e);
        }
        if (conn_batch)
            drain_tail(t);
        pn_proactor_done(t->proactor, b);
    }
    pn_proactor_cancel_timeout(t->proactor);
    if (t->conn) {
        /* start gave up or stop timed out: drop the socket now. */
        pthread_mutex_lock(&t->mu);
        t->conn_live = NULL;
        pthread_mutex_unlock(&t->mu);
        pn_proactor_disconnect(t->proactor, NULL);
        t->conn = NULL;
    }
    finish(t);
    return NULL;
}
