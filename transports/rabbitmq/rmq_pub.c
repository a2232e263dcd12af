/* Publishing on the I/O thread: writing basic.publish, pipelined publisher
 * confirms (basic.ack / basic.nack read by our own frame loop: librabbitmq
 * 0.11 has no confirm helper), basic.return of mandatory messages, send
 * deadlines, and resending after a reconnect.
 *
 * Which channel: durable events, send_to (mandatory: an unroutable message
 * must come back as an error) and dead letters go to the confirm channel,
 * and complete on their basic.ack. Transient events go to the fire channel
 * and complete once written: they are at-least-once only while the
 * connection holds. */
#include "rmq.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

void rmq_pub_complete(ewi_transport *t, ewi_pub *p, int err, const char *detail)
{
    p->next = NULL;
    t->freed_bytes += ewi_pub_bytes(p); /* before done: p goes with it */
    p->done(p, err, detail);
    t->freed++;
}

void rmq_room_release(ewi_transport *t)
{
    if (!t->freed)
        return;
    pthread_mutex_lock(&t->mu);
    ewi_window_give(&t->window, t->freed, t->freed_bytes);
    pthread_mutex_unlock(&t->mu);
    t->freed = t->freed_bytes = 0;
}

static bool confirmed(const ewi_pub *p)
{
    return p->durable || p->dest != EWI_DEST_EVENT;
}

static void track_confirm(ewi_transport *t, ewi_pub *p)
{
    p->tag = t->next_seq++;
    p->next = NULL;
    if (t->unconf_tail)
        t->unconf_tail->next = p;
    else
        t->unconf_head = p;
    t->unconf_tail = p;
}

/* p back first in line, for the next connection. */
static void resend_first(ewi_transport *t, ewi_pub *p)
{
    p->next = t->resend_head;
    t->resend_head = p;
    if (!t->resend_tail)
        t->resend_tail = p;
}

bool rmq_pub_write(ewi_transport *t, ewi_pub *p, char *why, size_t whylen)
{
    if (p->dest == EWI_DEST_DLQ) {
        /* Its queue first: a publish to a missing queue would only come
         * back as returned. Declared on the RPC channel: a refusal (the
         * queue exists with other arguments) fails this dead letter with
         * the broker's text, and the caller keeps the original. */
        char err[400];
        ew_err rc = rmq_dlq_declare(t, p->queue, err, sizeof err);
        if (rc == EW_EDISCONNECTED) {
            resend_first(t, p);
            snprintf(why, whylen, "%s", err);
            return false;
        }
        if (rc != EW_OK) {
            rmq_pub_complete(t, p, rc, err);
            return true;
        }
    }
    bool confirm = confirmed(p);
    size_t len;
    const void *body = ew_envelope_body(p->env, &len);
    amqp_bytes_t bb = {len, (void *)(uintptr_t)body};
    bool to_event = p->dest == EWI_DEST_EVENT;
    amqp_bytes_t exchange = to_event ? amqp_cstring_bytes(p->event) : amqp_empty_bytes;
    amqp_bytes_t key = amqp_cstring_bytes(to_event ? p->event : p->queue);
    uint16_t ch = confirm ? RMQ_CH_CONFIRM : RMQ_CH_FIRE;
    amqp_basic_properties_t props;
    ew_err rc;
    if (!t->o.tls) {
        /* The properties go straight from the envelope into the frame. */
        rc = rmq_wire_publish(t, ch, exchange, key, !to_event, p->env, p->durable, bb);
        if (rc == EW_OK) {
            /* Buffered, written within this turn: from here the broker may
             * get it whatever happens to the connection. */
            p->written = true;
            if (confirm) {
                track_confirm(t, p);
            } else {
                p->next = NULL;
                if (t->fire_tail)
                    t->fire_tail->next = p;
                else
                    t->fire_head = p;
                t->fire_tail = p;
            }
            return !rmq_wire_due(t) || rmq_pub_flush(t, why, whylen);
        }
    } else {
        rc = rmq_props_from_env(p->env, p->durable, &t->props, &props);
        if (rc == EW_OK && t->props.header_bytes + 64 > (size_t)amqp_get_frame_max(t->conn))
            rc = EW_ETOOBIG;
    }
    if (rc != EW_OK) {
        char detail[160];
        snprintf(detail, sizeof detail, "%s",
                 rc == EW_ETOOBIG
                     ? "the headers do not fit one AMQP frame (or a key is over 255 bytes)"
                     : "out of memory");
        rmq_pub_complete(t, p, rc, detail);
        return true;
    }
    p->written = true; /* a failed write may still have sent part or all of it */
    int st = RMQ_GUARDED(t, amqp_basic_publish(t->conn, ch, exchange, key, !to_event, 0, &props, bb));
    if (st != AMQP_STATUS_OK) {
        /* p is the oldest of what is left to write: first in line again. */
        resend_first(t, p);
        snprintf(why, whylen, "publish failed: %s", amqp_error_string2(st));
        return false;
    }
    if (confirm)
        track_confirm(t, p);
    else
        rmq_pub_complete(t, p, EW_OK, NULL);
    return true;
}

void rmq_pub_unflushed_back(ewi_transport *t)
{
    rmq_wire_reset(t);
    if (!t->fire_head)
        return;
    t->fire_tail->next = t->resend_head;
    if (!t->resend_head)
        t->resend_tail = t->fire_tail;
    t->resend_head = t->fire_head;
    t->fire_head = t->fire_tail = NULL;
}

bool rmq_pub_flush(ewi_transport *t, char *why, size_t whylen)
{
    /* On failure the unflushed ones stay where they are: the loop's
     * rmq_lost puts them back in line. */
    if ((t->wlen || t->nwseg) && rmq_wire_flush(t, why, whylen) != EW_OK)
        return false;
    ewi_pub *p = t->fire_head;
    t->fire_head = t->fire_tail = NULL;
    for (ewi_pub *next; p; p = next) {
        next = p->next;
        rmq_pub_complete(t, p, EW_OK, NULL);
    }
    return true;
}

/* Completes p after its confirm: a basic.return seen before wins. A copy
 * sent again after a reconnect that the broker refuses is in doubt: the
 * first copy was written and may have been delivered. */
static void finish(ewi_transport *t, ewi_pub *p, bool nack)
{
    static const char again[] = "sent again after a reconnect and refused this time; the "
                                "first copy was written before the connection was lost and "
                                "may have been delivered: ";
    char text[900];
    for (rmq_returned **r = &t->returned; *r; r = &(*r)->next)
        if ((*r)->p == p) {
            rmq_returned *ret = *r;
            *r = ret->next;
            snprintf(text, sizeof text, "%s%s", p->resent ? again : "", ret->text);
            rmq_pub_complete(t, p,
                             p->resent                  ? EW_EINDOUBT
                             : p->dest == EWI_DEST_EVENT ? EW_EBROKER
                                                         : EW_ENOTFOUND,
                             text);
            free(ret);
            return;
        }
    if (nack) {
        snprintf(text, sizeof text, "%sthe broker refused the message (basic.nack): it could "
                 "not store it, e.g. a queue over its limit or an internal error",
                 p->resent ? again : "");
        rmq_pub_complete(t, p, p->resent ? EW_EINDOUBT : EW_EBROKER, text);
    } else
        rmq_pub_complete(t, p, EW_OK, NULL);
}

void rmq_pub_on_ack(ewi_transport *t, uint64_t tag, bool multiple, bool nack)
{
    if (multiple) {
        while (t->unconf_head && t->unconf_head->tag <= tag) {
            ewi_pub *p = t->unconf_head;
            t->unconf_head = p->next;
            if (!t->unconf_head)
                t->unconf_tail = NULL;
            finish(t, p, nack);
        }
        return;
    }
    /* A single confirm is nearly always for the oldest publish. */
    for (ewi_pub **pp = &t->unconf_head, *prev = NULL; *pp; prev = *pp, pp = &(*pp)->next) {
        ewi_pub *p = *pp;
        if (p->tag > tag)
            return; /* already expired */
        if (p->tag == tag) {
            *pp = p->next;
            if (t->unconf_tail == p)
                t->unconf_tail = prev;
            finish(t, p, nack);
            return;
        }
    }
}

void rmq_pub_on_return(ewi_transport *t, const rmq_inbound *in)
{
    const char *id = in->env ? ew_envelope_message_id(in->env) : NULL;
    ewi_pub *match = NULL;
    for (ewi_pub *p = t->unconf_head; p && !match; p = p->next) {
        if (p->dest == EWI_DEST_EVENT)
            continue;
        bool seen = false;
        for (rmq_returned *r = t->returned; r && !seen; r = r->next)
            seen = r->p == p;
        if (seen)
            continue;
        const char *pid = ew_envelope_message_id(p->env);
        if (!id || (pid && strcmp(pid, id) == 0))
            match = p;
    }
    if (!match) {
        ewi_log(t->m, EW_LOG_WARN, "%s: basic.return (%u %s) for a message no send waits for",
                t->o.label, in->reply_code, in->reply_text);
        return;
    }
    rmq_returned *r = calloc(1, sizeof *r);
    if (!r) {
        /* Cannot remember it: failing the send now is still not a loss. */
        for (ewi_pub **pp = &t->unconf_head, *prev = NULL; *pp; prev = *pp, pp = &(*pp)->next)
            if (*pp == match) {
                *pp = match->next;
                if (t->unconf_tail == match)
                    t->unconf_tail = prev;
                break;
            }
        rmq_pub_complete(t, match, EW_ENOTFOUND, "the broker returned the message");
        return;
    }
    r->p = match;
    if (match->dest == EWI_DEST_DLQ)
        snprintf(r->text, sizeof r->text,
                 "dead-letter queue '%s' does not exist: the broker returned the message (%u %s)",
                 match->queue, in->reply_code, in->reply_text);
    else
        snprintf(r->text, sizeof r->text,
                 "no queue '%s': the broker returned the message (%u %s)", match->queue,
                 in->reply_code, in->reply_text);
    r->next = t->returned;
    t->returned = r;
}

/* Fails what is past its deadline and drops it: nothing sends it later.
 * EW_ETIMEDOUT for what was never written, EW_EINDOUBT for the rest. */
static void expire_list(ewi_transport *t, ewi_pub **head, ewi_pub **tail, bool all,
                        int64_t now, const char *unsent, const char *written)
{
    ewi_pub *prev = NULL;
    for (ewi_pub *p = *head, *next; p; p = next) {
        next = p->next;
        if (p->deadline_ms > now) {
            if (!all)
                break; /* oldest first: the rest is younger */
            prev = p;
            continue;
        }
        if (prev)
            prev->next = next;
        else
            *head = next;
        if (*tail == p)
            *tail = prev;
        rmq_pub_complete(t, p, ewi_pub_unconfirmed(p, EW_ETIMEDOUT),
                         ewi_pub_detail(p, unsent, written));
    }
}

void rmq_pub_expire(ewi_transport *t)
{
    int64_t now = ewi_now_ms();
    char detail[400];
    if (t->connected) {
        if (t->unconf_head && t->unconf_head->deadline_ms <= now) {
            /* Forget any return noted for what expires. */
            snprintf(detail, sizeof detail,
                     "written, but no confirm from %s within the send timeout (the "
                     "broker is slow or blocked): it may have been delivered",
                     t->o.label);
            ewi_pub *keep = t->unconf_head;
            while (keep && keep->deadline_ms <= now)
                keep = keep->next;
            for (rmq_returned **r = &t->returned; *r;) {
                bool gone = true;
                for (ewi_pub *p = keep; p && gone; p = p->next)
                    gone = p != (*r)->p;
                if (gone) {
                    rmq_returned *dead = *r;
                    *r = dead->next;
                    free(dead);
                } else {
                    r = &(*r)->next;
                }
            }
            expire_list(t, &t->unconf_head, &t->unconf_tail, false, now, detail, detail);
        }
        return;
    }
    rmq_pub_expire_all(t);
}

void rmq_pub_expire_all(ewi_transport *t)
{
    int64_t now = ewi_now_ms();
    char detail[400], written[500];
    snprintf(detail, sizeof detail,
             "not sent within the send timeout: the connection to %s is down since %.1f s "
             "(%s); reconnecting; the message will not be sent",
             t->o.label, (double)(now - t->rc.down_since) / 1000.0, t->down_reason);
    snprintf(written, sizeof written,
             "written to %s, but the connection was lost before its confirm (%s) and it "
             "was not confirmed by the send deadline: it may have been delivered; it "
             "will not be sent again",
             t->o.label, t->down_reason);
    expire_list(t, &t->resend_head, &t->resend_tail, true, now, detail, written);
}

void rmq_pub_requeue_unconfirmed(ewi_transport *t)
{
    for (ewi_pub *p = t->unconf_head; p; p = p->next)
        p->resent = true;
    if (t->unconf_head) {
        t->unconf_tail->next = t->resend_head;
        if (!t->resend_head)
            t->resend_tail = t->unconf_tail;
        t->resend_head = t->unconf_head;
        t->unconf_head = t->unconf_tail = NULL;
    }
    for (rmq_returned *r = t->returned, *next; r; r = next) {
        next = r->next;
        free(r);
    }
    t->returned = NULL;
}

void rmq_pub_fail_all(ewi_transport *t, int err, const char *detail)
{
    rmq_pub_unflushed_back(t);
    rmq_pub_requeue_unconfirmed(t);
    pthread_mutex_lock(&t->mu);
    ewi_pub *shared = t->pub_head;
    t->pub_head = t->pub_tail = NULL;
    pthread_mutex_unlock(&t->mu);
    for (ewi_pub *p = t->resend_head, *next; p; p = next) {
        next = p->next;
        rmq_pub_complete(t, p, ewi_pub_unconfirmed(p, err),
                         ewi_pub_detail(p, detail, "written, but the transport stopped "
                                                   "before the broker confirmed it: it may "
                                                   "have been delivered"));
    }
    t->resend_head = t->resend_tail = NULL;
    for (ewi_pub *p = shared, *next; p; p = next) {
        next = p->next;
        rmq_pub_complete(t, p, err, detail);
    }
}
