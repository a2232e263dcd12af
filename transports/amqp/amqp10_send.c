/* Publishing on the I/O thread: one sender link per target, queued sends
 * go out within the link's credit as unsettled transfers, the broker's
 * outcome completes them (accepted: done; rejected, released, modified or
 * a detach: an error with the broker's text), deadlines fail what waits too
 * long, and a lost connection puts unsettled sends back in front. */
#include "amqp10.h"

#include <stdlib.h>
#include <string.h>

#include <proton/delivery.h>
#include <proton/disposition.h>
#include <proton/link.h>

static void list_push(amqp10_out **head, amqp10_out **tail, amqp10_out *o)
{
    o->next = NULL;
    o->prev = *tail;
    if (*tail)
        (*tail)->next = o;
    else
        *head = o;
    *tail = o;
}

static void list_unlink(amqp10_out **head, amqp10_out **tail, amqp10_out *o)
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
static void out_done(ewi_transport *t, amqp10_out *o, int err, const char *detail)
{
    ewi_pub *p = o->pub;
    if (!p)
        return;
    o->pub = NULL;
    /* Sent once (then put back in line by a lost connection), it may have
     * arrived: without its outcome it is in doubt, never "not sent". */
    size_t bytes = ewi_pub_bytes(p); /* before done: p goes with it */
    p->done(p, ewi_pub_unconfirmed(p, err), detail);
    pthread_mutex_lock(&t->mu);
    ewi_window_give(&t->window, 1, bytes);
    pthread_mutex_unlock(&t->mu);
}

static void out_free(amqp10_out *o)
{
    if (!o->bytes_inline)
        free(o->bytes);
    free(o);
}

void amqp10_out_finish(ewi_transport *t, amqp10_out *o, int err, const char *detail)
{
    out_done(t, o, err, detail);
    out_free(o);
}

static amqp10_sender *sender_for(ewi_transport *t, const amqp10_addr *a)
{
    for (amqp10_sender *s = t->senders; s; s = s->next)
        if (s->target.cap == a->cap && strcmp(s->target.addr, a->addr) == 0)
            return s;
    amqp10_sender *s = calloc(1, sizeof *s);
    if (!s)
        return NULL;
    s->kind = AMQP10_OBJ_SENDER;
    s->target = *a;
    s->next = t->senders;
    t->senders = s;
    return s;
}

static void amqp10_send_attach(ewi_transport *t, amqp10_sender *s)
{
    if (s->l || !amqp10_is_up(t))
        return;
    s->opened = false;
    /* A session of its own: RabbitMQ 3.10 loses messages (and Artemis gave
     * an empty one) when the frames of large messages on two links of one
     * session interleave. */
    s->l = amqp10_open_link(t, true, &s->target, s, true);
}

/* Large messages go out in chunks, each once proton has turned the last one
 * into frames: proton keeps finished deliveries in a per-connection pool
 * with their buffers' capacity, and one 10 MB pn_link_send would pin 16 MB
 * there for the connection's life. Smaller ones go in one call. */
#define STREAM_CHUNK (256u << 10)
#define STREAM_LOW (64u << 10)

/* Feeds the message being streamed; true once all of it is in. */
static bool stream_more(ewi_transport *t, amqp10_sender *s)
{
    amqp10_out *o = s->streaming;
    if (pn_delivery_pending(o->d) > STREAM_LOW)
        return false; /* proton has not taken the last chunk yet */
    size_t n = o->len - o->off < STREAM_CHUNK ? o->len - o->off : STREAM_CHUNK;
    pn_link_send(s->l, (const char *)o->bytes + o->off, n);
    o->off += n;
    if (o->off < o->len) {
        t->stream_wake = true; /* come back once this chunk is framed */
        return false;
    }
    pn_link_advance(s->l);
    s->streaming = NULL;
    return true;
}

void amqp10_send_pump(ewi_transport *t, amqp10_sender *s)
{
    if (!s->l || !s->opened)
        return;
    if (s->streaming && !stream_more(t, s))
        return; /* one message at a time on a link */
    while (s->pend_head && pn_link_credit(s->l) > 0) {
        amqp10_out *o = s->pend_head;
        list_unlink(&s->pend_head, &s->pend_tail, o);
        uint64_t tag = ++t->next_tag;
        pn_delivery_t *d = pn_delivery(s->l, pn_dtag((const char *)&tag, sizeof tag));
        pn_delivery_set_context(d, o);
        o->d = d;
        o->off = 0;
        if (o->pub)
            o->pub->written = true; /* from here proton may put it on the wire */
        list_push(&s->fl_head, &s->fl_tail, o);
        if (o->len <= STREAM_CHUNK) {
            pn_link_send(s->l, (const char *)o->bytes, o->len);
            pn_link_advance(s->l);
        } else {
            s->streaming = o;
            if (!stream_more(t, s))
                return;
        }
    }
}

void amqp10_send_continue(ewi_transport *t)
{
    for (amqp10_sender *s = t->senders; s; s = s->next)
        if (s->streaming)
            amqp10_send_pump(t, s);
}

/* The broker refused or dropped this sender: every publish on it fails with
 * the broker's text; the next publish attaches again. A publish already
 * written without its outcome may have been taken: it is in doubt. */
void amqp10_send_lost(ewi_transport *t, amqp10_sender *s, const char *why)
{
    char detail[600], doubt[700];
    amqp10_textf(detail, sizeof detail, "sender to %s: %s", s->target.addr, why);
    amqp10_textf(doubt, sizeof doubt, "%s; it was written before, without an outcome: it "
               "may have been delivered", detail);
    ewi_log(t->m, EW_LOG_WARN, "amqp %s: %s", t->where, detail);
    amqp10_out *o;
    while ((o = s->fl_head)) {
        list_unlink(&s->fl_head, &s->fl_tail, o);
        if (o->d)
            pn_delivery_set_context(o->d, NULL);
        amqp10_out_finish(t, o, EW_EINDOUBT, doubt);
    }
    while ((o = s->pend_head)) {
        list_unlink(&s->pend_head, &s->pend_tail, o);
        amqp10_out_finish(t, o, EW_EBROKER, detail);
    }
    amqp10_close_link(t, s->l);
    s->l = NULL;
    s->opened = false;
    s->streaming = NULL;
}

void amqp10_send_outcome(ewi_transport *t, pn_delivery_t *d)
{
    uint64_t state = pn_delivery_remote_state(d);
    if (!state && !pn_delivery_settled(d))
        return; /* no outcome yet */
    amqp10_out *o = pn_delivery_get_context(d);
    pn_link_t *l = pn_delivery_link(d);
    amqp10_sender *s = pn_link_get_context(l);
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
        amqp10_out_finish(t, o, EW_OK, NULL);
        break;
    case PN_REJECTED:
        amqp10_condition_text(pn_disposition_condition(pn_delivery_remote(d)),
                            "no reason given", cond, sizeof cond);
        amqp10_textf(text, sizeof text, "rejected by the broker at %s: %s", s->target.addr,
                 cond);
        amqp10_out_finish(t, o, EW_EBROKER, text);
        break;
    case PN_RELEASED:
        amqp10_textf(text, sizeof text,
                 "released by the broker at %s: not delivered, the broker did not "
                 "take it", s->target.addr);
        amqp10_out_finish(t, o, EW_EBROKER, text);
        break;
    case PN_MODIFIED:
        amqp10_textf(text, sizeof text, "modified by the broker at %s%s: not delivered",
                 s->target.addr,
                 pn_disposition_is_undeliverable(pn_delivery_remote(d))
                     ? " (undeliverable here)" : "");
        amqp10_out_finish(t, o, EW_EBROKER, text);
        break;
    default:
        amqp10_textf(text, sizeof text, "unexpected outcome %s from the broker at %s",
                 pn_disposition_type_name(state), s->target.addr);
        amqp10_out_finish(t, o, EW_EBROKER, text);
        break;
    }
}

void amqp10_send_take(ewi_transport *t, amqp10_out *o)
{
    amqp10_sender *s = sender_for(t, &o->target);
    if (!s) {
        amqp10_out_finish(t, o, EW_ENOMEM, "out of memory");
        return;
    }
    list_push(&s->pend_head, &s->pend_tail, o);
    if (!s->l)
        amqp10_send_attach(t, s);
    amqp10_send_pump(t, s);
}

/* Fails whatever is past its deadline: queued ones, and sent ones the
 * broker did not answer in time (their record stays until it does). */
void amqp10_send_expire(ewi_transport *t, int64_t now)
{
    char detail[700];
    for (amqp10_sender *s = t->senders; s; s = s->next) {
        amqp10_out *o = s->pend_head;
        while (o && o->pub && o->pub->deadline_ms <= now) {
            amqp10_out *next = o->next;
            list_unlink(&s->pend_head, &s->pend_tail, o);
            pthread_mutex_lock(&t->mu);
            bool down = t->state != AMQP10_ST_UP;
            int64_t since = t->down_since;
            char last[512];
            amqp10_textf(last, sizeof last, "%s", t->last_error);
            pthread_mutex_unlock(&t->mu);
            if (down && o->pub->written)
                amqp10_textf(detail, sizeof detail,
                         "sent to %s, but the connection to %s was lost before the "
                         "broker's outcome (last error: %s) and no outcome came within "
                         "the send timeout: it may have been delivered; it will not be "
                         "sent again", s->target.addr, t->where, last);
            else if (down)
                amqp10_textf(detail, sizeof detail,
                         "not sent to %s within the send timeout: no connection to "
                         "%s for %lld ms (last error: %s); still reconnecting",
                         s->target.addr, t->where, (long long)(now - since), last);
            else
                amqp10_textf(detail, sizeof detail,
                         "not sent to %s within the send timeout: no link credit from "
                         "the broker", s->target.addr);
            amqp10_out_finish(t, o, EW_ETIMEDOUT, detail);
            o = next;
        }
        for (o = s->fl_head; o; o = o->next) {
            if (!o->pub)
                continue;
            if (o->pub->deadline_ms > now)
                break;
            amqp10_textf(detail, sizeof detail,
                     "sent to %s but no outcome from the broker within the send "
                     "timeout: it may have been delivered", s->target.addr);
            out_done(t, o, EW_ETIMEDOUT, detail);
        }
    }
}

/* s's link is gone without a fault of its own: unsettled sends go out
 * again on its next link, ahead of the queued ones. */
static void requeue_unsettled(amqp10_sender *s)
{
    amqp10_out *o;
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
    s->streaming = NULL;
}

/* The connection is gone (I/O thread): unsettled sends go out again on the
 * next connection, ahead of the queued ones. */
void amqp10_send_disconnected(ewi_transport *t)
{
    for (amqp10_sender *s = t->senders; s; s = s->next)
        requeue_unsettled(s);
}

void amqp10_send_moved(ewi_transport *t, amqp10_sender *s)
{
    requeue_unsettled(s); /* its link is freed with its session */
    if (s->pend_head) {
        amqp10_send_attach(t, s);
        amqp10_send_pump(t, s);
    }
}

void amqp10_send_attach_pending(ewi_transport *t)
{
    for (amqp10_sender *s = t->senders; s; s = s->next)
        if (s->pend_head)
            amqp10_send_attach(t, s);
}

void amqp10_send_opened(ewi_transport *t, amqp10_sender *s)
{
    s->opened = true;
    amqp10_send_pump(t, s);
}

/* The I/O thread ends: what was not sent fails, what was sent but not
 * confirmed fails too (it may have arrived). */
void amqp10_send_finish(ewi_transport *t, const char *why)
{
    for (amqp10_sender *s = t->senders; s; s = s->next) {
        amqp10_out *o;
        while ((o = s->fl_head)) {
            list_unlink(&s->fl_head, &s->fl_tail, o);
            amqp10_out_finish(t, o, EW_ECLOSED, "the transport stopped before the broker "
                                         "confirmed it (it may have been delivered)");
        }
        while ((o = s->pend_head)) {
            list_unlink(&s->pend_head, &s->pend_tail, o);
            bool written = o->pub && o->pub->written;
            amqp10_out_finish(t, o, EW_ECLOSED,
                            written ? "sent on a lost connection, but the transport "
                                      "stopped before the broker's outcome: it may have "
                                      "been delivered"
                                    : why);
        }
    }
}
