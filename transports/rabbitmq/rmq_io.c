/* The I/O thread: the only user of the librabbitmq connection once start
 * returned. Each turn of its loop takes what other threads queued (settles,
 * publishes, requests), writes it, reads every frame that arrived without
 * blocking, and then sleeps in poll() on the socket and the waker.
 *
 * Acknowledgements are coalesced (rmq_acks.c): the settles of one turn are
 * acknowledged with one basic.ack(multiple) for those below the oldest
 * delivery core still holds, and one by one for the rest, so a slow handler
 * never holds the others' acks (and the prefetch window) hostage, and the
 * bookkeeping stays bounded by prefetch however long it is stuck.
 *
 * Reconnection: when the connection fails, unconfirmed publishes go back in
 * line, consumers are forgotten (the broker requeues what they held), and
 * the loop retries with capped exponential backoff and jitter; on success
 * it declares every exchange and listener queue again, consumes again and
 * resends. Settles of deliveries from the old connection are dropped. */
#include "rmq.h"

#include <errno.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define READ_BATCH 4096  /* frames read per turn, so writes get their turn */
#define WRITE_BATCH 1024 /* publishes written per turn, so reads get theirs */
#define LARGE_BODY (64u << 10) /* body frames released one by one above this */

/* ---- requests ------------------------------------------------------------ */

static void handle_frame(ewi_transport *t, const amqp_frame_t *f);

static void req_done(ewi_transport *t, rmq_req *r, ew_err rc)
{
    pthread_mutex_lock(&t->mu);
    r->rc = rc;
    r->done = true;
    pthread_cond_broadcast(&t->done_cv);
    pthread_mutex_unlock(&t->mu);
}

static void park(ewi_transport *t, rmq_req *r)
{
    r->next = NULL;
    rmq_req **pp = &t->parked;
    while (*pp)
        pp = &(*pp)->next;
    *pp = r;
}

static bool event_known(ewi_transport *t, const char *name)
{
    for (rmq_event *e = t->events; e; e = e->next)
        if (strcmp(e->name, name) == 0)
            return true;
    return false;
}

/* Runs r; false when it must wait for a connection (parked by the caller). */
static bool req_run(ewi_transport *t, rmq_req *r)
{
    /* Deliveries an earlier request's replies brought along go first: this
     * one may end a listener (core then frees its subscription). */
    ewi_deliveries_flush(&t->dl);
    ew_err rc = EW_OK;
    switch (r->kind) {
    case RMQ_REQ_DECLARE:
        if (event_known(t, r->event))
            break;
        if (!t->connected)
            return false;
        rc = rmq_declare_exchange(t, r->event, r->err, sizeof r->err);
        if (rc == EW_EDISCONNECTED) {
            rmq_lost(t, r->err);
            return false;
        }
        if (rc == EW_OK) {
            size_t n = strlen(r->event) + 1;
            rmq_event *e = malloc(sizeof *e + n);
            if (!e) {
                rc = EW_ENOMEM;
                break;
            }
            memcpy(e->name, r->event, n);
            e->next = t->events;
            t->events = e;
        }
        break;
    case RMQ_REQ_SUBSCRIBE:
        if (!t->connected)
            return false;
        rc = rmq_subscribe(t, r->rs, handle_frame, r->err, sizeof r->err);
        if (rc == EW_EDISCONNECTED) {
            rmq_lost(t, r->err);
            return false;
        }
        if (rc == EW_OK) {
            r->rs->active = true;
            r->rs->next = t->subs;
            t->subs = r->rs;
        }
        break;
    case RMQ_REQ_SUBSCRIBE_MANY: {
        if (!t->connected)
            return false;
        /* Those a lost connection interrupted are tried again. */
        size_t left = 0;
        if (rmq_subscribe_many(t, r->many, r->nmany, r->rcs, true, handle_frame, r->err,
                               sizeof r->err) == EW_EDISCONNECTED)
            rmq_lost(t, r->err);
        for (size_t i = 0; i < r->nmany; i++)
            left += r->rcs[i] == EW_EDISCONNECTED;
        if (left)
            return false;
        break;
    }
    case RMQ_REQ_UNSUBSCRIBE:
        r->rs->active = false;
        r->rs->resubscribe = false;
        if (t->connected && r->rs->ch &&
            rmq_cancel(t, r->rs, r->err, sizeof r->err) == EW_EDISCONNECTED)
            rmq_lost(t, r->err);
        break;
    case RMQ_REQ_DELETE:
        if (!t->connected)
            return false;
        rc = rmq_queue_delete(t, r->queue, r->err, sizeof r->err);
        if (rc == EW_EDISCONNECTED) {
            rmq_lost(t, r->err);
            return false;
        }
        break;
    case RMQ_REQ_DLQ_GET:
        if (!t->connected)
            return false;
        rc = rmq_dlq_get(t, r);
        if (rc == EW_EDISCONNECTED) {
            rmq_lost(t, r->err);
            if (r->ngot == 0)
                return false;
        }
        break;
    case RMQ_REQ_DLQ_ACK:
        /* Those taken acknowledged, those refused (after them) requeued. */
        if (t->connected && r->epoch == t->rpc_epoch &&
            ((r->tag &&
              RMQ_GUARDED(t, amqp_basic_ack(t->conn, RMQ_CH_RPC, r->tag, 1)) != AMQP_STATUS_OK) ||
             (r->nack_tag && RMQ_GUARDED(t, amqp_basic_nack(t->conn, RMQ_CH_RPC, r->nack_tag,
                                                            1, 1)) != AMQP_STATUS_OK)))
            rmq_lost(t, "writing basic.ack or basic.nack failed");
        break;
    case RMQ_REQ_STOP:
        break;
    }
    req_done(t, r, rc);
    return true;
}

static void run_parked(ewi_transport *t)
{
    rmq_req *list = t->parked;
    t->parked = NULL;
    for (rmq_req *r = list, *next; r; r = next) {
        next = r->next;
        if (!req_run(t, r))
            park(t, r);
    }
}

static void expire_parked(ewi_transport *t)
{
    int64_t now = ewi_now_ms();
    for (rmq_req **pp = &t->parked; *pp;) {
        rmq_req *r = *pp;
        if (r->deadline_ms > now) {
            pp = &r->next;
            continue;
        }
        *pp = r->next;
        snprintf(r->err, sizeof r->err,
                 "the connection to %s is down since %.1f s (%s); still reconnecting",
                 t->o.label, (double)(now - t->rc.down_since) / 1000.0, t->down_reason);
        req_done(t, r, EW_ETIMEDOUT);
    }
}

/* ---- settles and coalesced acks ----------------------------------------- */

static rmq_sub *sub_by_channel(ewi_transport *t, uint16_t ch)
{
    for (rmq_sub *rs = t->subs; rs; rs = rs->next)
        if (rs->ch == ch)
            return rs;
    return NULL;
}

typedef struct ack_ctx {
    ewi_transport *t;
    uint16_t ch;
} ack_ctx;

static int ack_one(void *user, uint64_t tag, bool multiple)
{
    ack_ctx *c = user;
    return RMQ_GUARDED(c->t, amqp_basic_ack(c->t->conn, c->ch, tag, multiple)) != AMQP_STATUS_OK;
}

static void settle_batch(ewi_transport *t, ewi_msg *list)
{
    for (ewi_msg *msg = list, *next; msg; msg = next) {
        next = msg->qnext;
        rmq_sub *rs = ((rmq_msg *)msg)->rs;
        rs->outstanding--;
        uint64_t tag = msg->tag;
        bool requeue = RMQ_TDATA_REQUEUE(msg->tdata);
        bool current = t->connected && rs->ch && RMQ_TDATA_EPOCH(msg->tdata) == rs->epoch;
        ewi_msg_free(msg);
        /* From an older connection or channel: the broker requeued it. */
        if (!current || !rmq_tags_close(&rs->tags, tag))
            continue;
        if (requeue) {
            if (RMQ_GUARDED(t, amqp_basic_nack(t->conn, rs->ch, tag, 0, 1)) != AMQP_STATUS_OK)
                rmq_lost(t, "writing basic.nack failed");
        } else if (!rmq_tags_settled(&rs->tags, tag)) {
            /* No memory to coalesce it: acknowledge it on its own. */
            if (RMQ_GUARDED(t, amqp_basic_ack(t->conn, rs->ch, tag, 0)) != AMQP_STATUS_OK)
                rmq_lost(t, "writing basic.ack failed");
        }
    }
    for (rmq_sub *rs = t->subs; rs && t->connected; rs = rs->next)
        if (rs->ch && rs->tags.ndone) {
            ack_ctx c = {t, rs->ch};
            if (rmq_tags_flush(&rs->tags, ack_one, &c) != 0)
                rmq_lost(t, "writing basic.ack failed");
        }
}

/* ---- inbound frames ------------------------------------------------------ */

static rmq_inbound *inbound(ewi_transport *t, uint16_t ch)
{
    if (ch >= t->nin) {
        size_t n = (size_t)ch + 8;
        rmq_inbound *in = realloc(t->in, n * sizeof *in);
        if (!in)
            return NULL;
        memset(in + t->nin, 0, (n - t->nin) * sizeof *in);
        t->in = in;
        t->nin = n;
    }
    return &t->in[ch];
}

static void inbound_reset(rmq_inbound *in)
{
    ewi_envelope_unref(in->env); /* and with it the body */
    memset(in, 0, sizeof *in);
}

/* A delivery nobody may take any more (unsubscribed, out of memory): back
 * to the queue. It was never handed to core, so this is its only settle. */
static void refuse(ewi_transport *t, uint16_t ch, uint64_t tag)
{
    if (RMQ_GUARDED(t, amqp_basic_nack(t->conn, ch, tag, 0, 1)) != AMQP_STATUS_OK)
        rmq_lost(t, "writing basic.nack failed");
}

/* in holds a whole delivery (env NULL when it could not be held): hands it
 * to core, or refuses it. Either way exactly once. */
static void delivered(ewi_transport *t, uint16_t ch, rmq_inbound *in)
{
    rmq_sub *rs = sub_by_channel(t, ch);
    uint64_t tag = in->tag;
    /* A classic queue only says "delivered before": that is one earlier
     * attempt. A quorum queue also counts the deliveries that were given
     * back (x-delivery-count, from the second delivery on). */
    uint32_t redeliveries = in->redelivered ? 1 : 0;
    const char *count = in->env ? ew_envelope_header(in->env, "x-delivery-count") : NULL;
    if (count) {
        char *end;
        unsigned long n = strtoul(count, &end, 10);
        if (end != count && !*end && n > redeliveries)
            redeliveries = n > UINT32_MAX ? UINT32_MAX : (uint32_t)n;
    }
    if (!in->env || !rs || !rs->active || !rmq_tags_open(&rs->tags, tag)) {
        inbound_reset(in);
        refuse(t, ch, tag);
        return;
    }
    /* The message names its rmq_sub itself: it is settled on this thread
     * after core let go of it, when ew_unlisten may have freed rs->sub. */
    rmq_msg *rm = malloc(sizeof *rm); /* not calloc: glibc's skips its thread cache */
    if (rm)
        memset(rm, 0, sizeof *rm);
    if (!rm) {
        inbound_reset(in);
        rmq_tags_close(&rs->tags, tag);
        refuse(t, ch, tag);
        return;
    }
    rm->rs = rs;
    ewi_msg *msg = &rm->m;
    msg->env = in->env;
    msg->sub = rs->sub;
    in->env = NULL;
    inbound_reset(in);
    msg->redeliveries = redeliveries;
    msg->tag = tag;
    msg->tdata = RMQ_TDATA(rs->epoch, 0);
    rs->outstanding++;
    ewi_deliveries_add(&t->dl, msg);
}

static void content_complete(ewi_transport *t, uint16_t ch, rmq_inbound *in)
{
    if (in->kind == RMQ_IN_DELIVER) {
        delivered(t, ch, in);
    } else {
        /* A return without its envelope still fails its send. */
        rmq_pub_on_return(t, in);
        inbound_reset(in);
    }
}

static void on_header(ewi_transport *t, const amqp_frame_t *f)
{
    rmq_inbound *in = f->channel < t->nin ? &t->in[f->channel] : NULL;
    if (!in || in->kind == RMQ_IN_NONE || in->have_header) {
        ewi_log(t->m, EW_LOG_WARN, "%s: unexpected content header on channel %u",
                t->o.label, f->channel);
        return;
    }
    uint64_t size = f->payload.properties.body_size;
    /* Core dead-letters a body over max_body as too-big without reading it:
     * keep one byte more than max_body so it sees that, and drop the rest as
     * it arrives. The broker announces the size; it never decides what we
     * allocate. */
    size_t max_body = ewi_config_of(t->m)->max_body;
    size_t keep = size > (uint64_t)max_body ? max_body + 1 : (size_t)size;
    if (size > (uint64_t)max_body)
        ewi_log(t->m, EW_LOG_WARN,
                "%s: a message of %llu bytes on channel %u is over max_body %zu; keeping "
                "its first %zu bytes for the dead letter",
                t->o.label, (unsigned long long)size, f->channel, max_body, keep);
    in->have_header = true;
    in->env = ewi_envelope_new();
    /* Read straight into the envelope (inside it when small). */
    in->body = in->env ? ewi_envelope_body_buf(in->env, keep) : NULL;
    size_t skipped = 0;
    if (!in->env || !in->body ||
        rmq_props_to_env(f->payload.properties.decoded, in->env, &skipped) != EW_OK) {
        /* Cannot hold it: read past it, then hand it back to the broker. */
        ewi_log(t->m, EW_LOG_ERROR, "%s: out of memory for a message of %llu bytes: "
                "returned to the broker", t->o.label, (unsigned long long)size);
        ewi_envelope_unref(in->env);
        in->env = NULL;
        in->body = NULL;
    }
    if (skipped)
        ewi_log(t->m, EW_LOG_DEBUG, "%s: %zu AMQP header(s) not taken into the envelope",
                t->o.label, skipped);
    in->len = (size_t)size;
    in->keep = keep;
    in->got = 0;
    if (size == 0)
        content_complete(t, f->channel, in);
}

static void on_body(ewi_transport *t, const amqp_frame_t *f)
{
    rmq_inbound *in = f->channel < t->nin ? &t->in[f->channel] : NULL;
    if (!in || !in->have_header)
        return;
    size_t n = f->payload.body_fragment.len;
    if (n > in->len - in->got)
        n = in->len - in->got;
    if (in->body && in->got < in->keep) {
        size_t c = in->keep - in->got < n ? in->keep - in->got : n;
        memcpy(in->body + in->got, f->payload.body_fragment.bytes, c);
    }
    in->got += n;
    /* The frame is copied: give its buffer back now, so a large message
     * never sits in librabbitmq's pool as a whole (small ones are released
     * after each read batch). */
    if (in->len > LARGE_BODY)
        amqp_maybe_release_buffers_on_channel(t->conn, f->channel);
    if (in->got < in->len)
        return;
    content_complete(t, f->channel, in);
}

/* The broker closed channel ch (not the RPC channel's own replies). */
static void channel_closed(ewi_transport *t, uint16_t ch, const amqp_channel_close_t *c)
{
    char text[300], err[300];
    snprintf(text, sizeof text, "%u %.*s", c->reply_code, (int)c->reply_text.len,
             (const char *)c->reply_text.bytes);
    amqp_channel_close_ok_t ok = {0};
    if (RMQ_GUARDED(t, amqp_send_method(t->conn, ch, AMQP_CHANNEL_CLOSE_OK_METHOD, &ok)) != AMQP_STATUS_OK) {
        rmq_lost(t, text);
        return;
    }
    if (ch < t->nin)
        inbound_reset(&t->in[ch]);
    if (ch == RMQ_CH_CONFIRM) {
        /* What the broker refused (e.g. "no exchange 'E'") fails; the rest
         * is resent on the reopened channel. */
        const char *q1 = strchr(text, '\''), *q2 = q1 ? strchr(q1 + 1, '\'') : NULL;
        ewi_pub *keep = NULL, **kt = &keep;
        for (ewi_pub *p = t->unconf_head, *next; p; p = next) {
            next = p->next;
            p->next = NULL;
            if (q2 && p->dest == EWI_DEST_EVENT && strlen(p->event) == (size_t)(q2 - q1 - 1) &&
                strncmp(p->event, q1 + 1, (size_t)(q2 - q1 - 1)) == 0) {
                rmq_pub_complete(t, p, rmq_code_err(c->reply_code), text);
            } else {
                *kt = p;
                kt = &p->next;
            }
        }
        t->unconf_head = keep;
        t->unconf_tail = NULL;
        for (ewi_pub *p = keep; p; p = p->next)
            t->unconf_tail = p;
        rmq_pub_requeue_unconfirmed(t);
    }
    ewi_report(t->m, rmq_code_err(c->reply_code), NULL, NULL, NULL,
               "%s: the broker closed channel %u: %s", t->o.label, ch, text);
    if (ch == RMQ_CH_CONFIRM || ch == RMQ_CH_FIRE || ch == RMQ_CH_RPC) {
        if (rmq_channel_open(t, ch, err, sizeof err) != EW_OK) {
            rmq_lost(t, err);
            return;
        }
        if (ch == RMQ_CH_RPC)
            t->rpc_epoch = ++t->epoch_seq;
        if (ch == RMQ_CH_CONFIRM) {
            amqp_confirm_select(t->conn, RMQ_CH_CONFIRM);
            if (rmq_rpc_result(t, RMQ_CH_CONFIRM, "confirm.select", err, sizeof err) != EW_OK) {
                if (t->connected)
                    rmq_lost(t, err);
                return;
            }
            t->next_seq = 1;
        }
        return;
    }
    rmq_chans_give(&t->chans, ch); /* closed: free for the next listener */
    rmq_sub *rs = sub_by_channel(t, ch);
    if (rs) {
        rs->ch = 0;
        if (rs->active) {
            ewi_sub_state(rs->sub, false);
            rs->resubscribe = true;
            rs->retry_at_ms = ewi_now_ms() + 1000;
        }
    }
}

static void on_method(ewi_transport *t, const amqp_frame_t *f)
{
    uint16_t ch = f->channel;
    const void *d = f->payload.method.decoded;
    amqp_method_number_t id = f->payload.method.id;
    /* What was read before a close or a cancel reaches the workers first. */
    if (id != AMQP_BASIC_DELIVER_METHOD && id != AMQP_BASIC_ACK_METHOD &&
        id != AMQP_BASIC_NACK_METHOD)
        ewi_deliveries_flush(&t->dl);
    switch (id) {
    case AMQP_BASIC_DELIVER_METHOD: {
        const amqp_basic_deliver_t *m = d;
        rmq_inbound *in = inbound(t, ch);
        if (!in) {
            refuse(t, ch, m->delivery_tag);
            return;
        }
        inbound_reset(in);
        in->kind = RMQ_IN_DELIVER;
        in->tag = m->delivery_tag;
        in->redelivered = m->redelivered;
        return;
    }
    case AMQP_BASIC_RETURN_METHOD: {
        const amqp_basic_return_t *m = d;
        rmq_inbound *in = inbound(t, ch);
        if (!in)
            return;
        inbound_reset(in);
        in->kind = RMQ_IN_RETURN;
        in->reply_code = m->reply_code;
        snprintf(in->reply_text, sizeof in->reply_text, "%.*s", (int)m->reply_text.len,
                 (const char *)m->reply_text.bytes);
        return;
    }
    case AMQP_BASIC_ACK_METHOD:
        if (ch == RMQ_CH_CONFIRM) {
            const amqp_basic_ack_t *m = d;
            rmq_pub_on_ack(t, m->delivery_tag, m->multiple, false);
        }
        return;
    case AMQP_BASIC_NACK_METHOD:
        if (ch == RMQ_CH_CONFIRM) {
            const amqp_basic_nack_t *m = d;
            rmq_pub_on_ack(t, m->delivery_tag, m->multiple, true);
            /* RabbitMQ 3.10 keeps, per channel, the quorum queue leader it
             * saw first: a channel opened on a surviving node before the
             * queue's new leader was elected has every publish refused
             * while it lives. A new connection asks again (the refused
             * sends stay failed; the unconfirmed ones are resent). */
            if (t->o.quorum)
                rmq_lost(t, "the broker refused a message to a quorum queue (basic.nack); "
                            "reconnecting for a fresh view of the queue leaders");
        }
        return;
    case AMQP_BASIC_CANCEL_METHOD: {
        /* consumer_cancel_notify: the queue was deleted under us. */
        const amqp_basic_cancel_t *m = d;
        rmq_sub *rs = sub_by_channel(t, ch);
        if (!m->nowait) {
            amqp_basic_cancel_ok_t ok = {m->consumer_tag};
            if (RMQ_GUARDED(t, amqp_send_method(t->conn, ch, AMQP_BASIC_CANCEL_OK_METHOD, &ok)) != AMQP_STATUS_OK) {
                rmq_lost(t, "writing basic.cancel-ok failed");
                return;
            }
        }
        if (rs && rs->active) {
            ewi_report(t->m, EW_EBROKER, rs->sub->queue, rs->sub->event, NULL,
                       "%s: the broker cancelled the consumer of %s (queue deleted?); "
                       "declaring and consuming it again",
                       t->o.label, rs->sub->queue);
            ewi_sub_state(rs->sub, false);
            rs->resubscribe = true;
            rs->retry_at_ms = ewi_now_ms();
        }
        return;
    }
    case AMQP_CHANNEL_CLOSE_METHOD:
        channel_closed(t, ch, d);
        return;
    case AMQP_CONNECTION_CLOSE_METHOD: {
        const amqp_connection_close_t *c = d;
        char text[300];
        snprintf(text, sizeof text, "the broker closed the connection: %u %.*s",
                 c->reply_code, (int)c->reply_text.len, (const char *)c->reply_text.bytes);
        amqp_connection_close_ok_t ok = {0};
        RMQ_GUARDED(t, amqp_send_method(t->conn, 0, AMQP_CONNECTION_CLOSE_OK_METHOD, &ok));
        rmq_lost(t, text);
        return;
    }
    case AMQP_CONNECTION_BLOCKED_METHOD:
        ewi_log(t->m, EW_LOG_WARN, "%s: the broker blocks publishing (resource alarm)",
                t->o.label);
        return;
    case AMQP_CONNECTION_UNBLOCKED_METHOD:
        ewi_log(t->m, EW_LOG_INFO, "%s: the broker unblocked publishing", t->o.label);
        return;
    default:
        return; /* late RPC replies (e.g. after a timeout) and the like */
    }
}

/* Handles one frame read off the connection. */
static void handle_frame(ewi_transport *t, const amqp_frame_t *f)
{
    switch (f->frame_type) {
    case AMQP_FRAME_METHOD:
        on_method(t, f);
        break;
    case AMQP_FRAME_HEADER:
        on_header(t, f);
        break;
    case AMQP_FRAME_BODY:
        on_body(t, f);
        break;
    default:
        break;
    }
}

/* Reads what is there, without blocking. */
static void read_frames(ewi_transport *t)
{
    struct timeval zero = {0, 0};
    for (int n = 0; n < READ_BATCH && t->connected; n++) {
        amqp_frame_t f;
        int st = RMQ_GUARDED(t, amqp_simple_wait_frame_noblock(t->conn, &f, &zero));
        if (st == AMQP_STATUS_TIMEOUT)
            break;
        if (st != AMQP_STATUS_OK) {
            rmq_lost(t, amqp_error_string2(st));
            return;
        }
        t->last_rx_ms = ewi_now_ms();
        handle_frame(t, &f);
    }
    ewi_deliveries_flush(&t->dl);
    if (t->connected)
        amqp_maybe_release_buffers(t->conn);
}

/* ---- connection loss and recovery --------------------------------------- */

void rmq_lost(ewi_transport *t, const char *why)
{
    ewi_deliveries_flush(&t->dl);
    if (!t->connected)
        return;
    size_t unconfirmed = 0, consumers = 0;
    for (ewi_pub *p = t->unconf_head; p; p = p->next)
        unconfirmed++;
    for (rmq_sub *rs = t->subs; rs; rs = rs->next) {
        consumers += rs->active;
        if (rs->active)
            ewi_sub_state(rs->sub, false);
        rs->ch = 0;
        rs->resubscribe = false;
    }
    ewi_conn_state(t->m, 0, false);
    rmq_disconnect(t, false);
    rmq_pub_unflushed_back(t);
    rmq_pub_requeue_unconfirmed(t);
    for (size_t i = 0; i < t->nin; i++)
        inbound_reset(&t->in[i]);
    ewi_reconnect_lost(&t->rc, ewi_now_ms());
    snprintf(t->down_reason, sizeof t->down_reason, "%.200s", why);
    if (!t->quit)
        ewi_report(t->m, EW_EDISCONNECTED, NULL, NULL, NULL,
                   "connection to %s lost: %s; reconnecting (%zu unconfirmed messages "
                   "will be resent, %zu listener(s) to resume)",
                   t->o.label, why, unconfirmed, consumers);
}

/* Declares and consumes again what rs had; on failure retries later. */
static void resubscribe(ewi_transport *t, rmq_sub *rs)
{
    char err[512];
    ew_err rc = rmq_subscribe(t, rs, handle_frame, err, sizeof err);
    if (rc == EW_EDISCONNECTED)
        rmq_lost(t, err);
    if (rc == EW_OK || rc == EW_EDISCONNECTED)
        return;
    rs->resubscribe = true;
    rs->retry_at_ms = ewi_now_ms() + 5000;
    ewi_report(t->m, rc, rs->sub->queue, rs->sub->event, NULL,
               "resuming %s on %s failed: %s; retrying in 5 s", rs->sub->queue, t->o.label,
               err);
}

static void reconnect(ewi_transport *t)
{
    char err[512];
    ew_err rc = rmq_connect(t, err, sizeof err);
    int64_t now = ewi_now_ms();
    if (rc != EW_OK) {
        int delay = ewi_reconnect_failed(&t->rc, now);
        snprintf(t->down_reason, sizeof t->down_reason, "%.200s", err);
        ewi_log(t->m, t->rc.failures % 10 == 0 ? EW_LOG_WARN : EW_LOG_INFO,
                "%s: reconnect attempt %u failed: %s; next in %d ms", t->o.label,
                t->rc.failures, err, delay);
        return;
    }
    t->last_rx_ms = now;
    /* Every exchange in one round trip; if the broker refuses one, one by
     * one, so that each refusal is reported with its event. */
    size_t nev = 0;
    for (rmq_event *e = t->events; e; e = e->next)
        nev++;
    const char **names = calloc(nev ? nev : 1, sizeof *names);
    rc = EW_ENOMEM;
    if (names) {
        size_t k = 0;
        for (rmq_event *e = t->events; e; e = e->next)
            names[k++] = e->name;
        rc = rmq_declare_exchanges(t, names, nev, err, sizeof err);
        free(names);
    }
    if (rc == EW_EDISCONNECTED)
        rmq_lost(t, err);
    for (rmq_event *e = t->events; e && t->connected && rc != EW_OK && rc != EW_EDISCONNECTED;
         e = e->next) {
        ew_err rc1 = rmq_declare_exchange(t, e->name, err, sizeof err);
        if (rc1 == EW_EDISCONNECTED)
            rmq_lost(t, err);
        else if (rc1 != EW_OK)
            ewi_report(t->m, rc1, NULL, e->name, NULL, "%s", err);
    }
    /* Every listener at once: their round trips overlap. */
    size_t resumed = 0, resend = 0, nsubs = 0;
    for (rmq_sub *rs = t->subs; rs; rs = rs->next)
        nsubs += rs->active;
    rmq_sub **rss = calloc(nsubs ? nsubs : 1, sizeof *rss);
    ew_err *rcs = calloc(nsubs ? nsubs : 1, sizeof *rcs);
    if (rss && rcs) {
        size_t k = 0;
        for (rmq_sub *rs = t->subs; rs; rs = rs->next)
            if (rs->active) {
                rss[k] = rs;
                rcs[k++] = EW_EDISCONNECTED; /* to do */
            }
        if (rmq_subscribe_many(t, rss, nsubs, rcs, false, handle_frame, err, sizeof err) ==
            EW_EDISCONNECTED)
            rmq_lost(t, err);
        for (k = 0; k < nsubs && t->connected; k++)
            if (rcs[k] != EW_OK) {
                rss[k]->resubscribe = true;
                rss[k]->retry_at_ms = ewi_now_ms() + 5000;
            }
    } else {
        for (rmq_sub *rs = t->subs; rs && t->connected; rs = rs->next)
            if (rs->active)
                resubscribe(t, rs);
    }
    free(rss);
    free(rcs);
    for (rmq_sub *rs = t->subs; rs && t->connected; rs = rs->next)
        resumed += rs->active && rs->ch != 0;
    if (!t->connected)
        return; /* lost again: the next attempt starts over */
    for (ewi_pub *p = t->resend_head; p; p = p->next)
        resend++;
    ewi_log(t->m, EW_LOG_WARN,
            "%s: reconnected after %u attempt(s), %.1f s down; %zu listener(s) resumed, "
            "%zu message(s) to resend",
            t->o.label, t->rc.failures + 1, (double)(now - t->rc.down_since) / 1000.0, resumed,
            resend);
    ewi_reconnect_up(&t->rc, now);
}

/* ---- the loop ------------------------------------------------------------ */

static void write_pubs(ewi_transport *t, ewi_pub *batch)
{
    /* What waits for a resend goes first, in order. */
    if (batch) {
        ewi_pub *tail = batch;
        while (tail->next)
            tail = tail->next;
        if (t->resend_tail)
            t->resend_tail->next = batch;
        else
            t->resend_head = batch;
        t->resend_tail = tail;
    }
    char why[200];
    for (int n = 0; n < WRITE_BATCH && t->connected && t->resend_head; n++) {
        ewi_pub *p = t->resend_head;
        t->resend_head = p->next;
        if (!t->resend_head)
            t->resend_tail = NULL;
        if (!rmq_pub_write(t, p, why, sizeof why)) {
            rmq_lost(t, why);
            return;
        }
    }
    if (t->connected && !rmq_pub_flush(t, why, sizeof why))
        rmq_lost(t, why);
}

static void finish(ewi_transport *t)
{
    ewi_deliveries_flush(&t->dl);
    pthread_mutex_lock(&t->mu);
    t->closed = true;
    ewi_msg *settles = t->settle_head;
    t->settle_head = t->settle_tail = NULL;
    ewi_window_close(&t->window);
    pthread_mutex_unlock(&t->mu);
    /* From here on a request is refused by ewi_workq_push. */
    ewi_workq_item *reqs = ewi_workq_close(&t->reqs);
    rmq_pub_fail_all(t, EW_ECLOSED, "the transport stopped before the message was sent");
    for (ewi_msg *msg = settles, *next; msg; msg = next) {
        next = msg->qnext;
        ewi_msg_free(msg);
    }
    for (ewi_workq_item *it = reqs, *next; it; it = next) {
        next = it->next;
        rmq_req *r = EWI_WORKQ_ENTRY(it, rmq_req, link);
        snprintf(r->err, sizeof r->err, "the transport is stopping");
        req_done(t, r, EW_ECLOSED);
    }
    for (rmq_req *r = t->parked, *next; r; r = next) {
        next = r->next;
        snprintf(r->err, sizeof r->err, "the transport is stopping");
        req_done(t, r, EW_ECLOSED);
    }
    t->parked = NULL;
    rmq_disconnect(t, true);
    rmq_room_release(t);
}

void *rmq_io_main(void *arg)
{
    ewi_transport *t = arg;
    struct pollfd fds[2];
    int64_t next_hb_ms = 0;
    for (;;) {
        pthread_mutex_lock(&t->mu);
        ewi_msg *settles = t->settle_head;
        ewi_pub *pubs = t->pub_head;
        t->settle_head = t->settle_tail = NULL;
        t->pub_head = t->pub_tail = NULL;
        bool quit = t->quit;
        pthread_mutex_unlock(&t->mu);
        ewi_workq_item *reqs = ewi_workq_take(&t->reqs);

        settle_batch(t, settles);
        if (t->connected) {
            write_pubs(t, pubs);
        } else if (pubs) {
            ewi_pub *tail = pubs;
            while (tail->next)
                tail = tail->next;
            if (t->resend_tail)
                t->resend_tail->next = pubs;
            else
                t->resend_head = pubs;
            t->resend_tail = tail;
        }
        if (t->connected && t->parked)
            run_parked(t);
        for (ewi_workq_item *it = reqs, *next; it; it = next) {
            next = it->next;
            rmq_req *r = EWI_WORKQ_ENTRY(it, rmq_req, link);
            if (!req_run(t, r))
                park(t, r);
        }
        if (quit)
            break;

        int64_t now = ewi_now_ms();
        if (!t->connected && ewi_reconnect_wait_ms(&t->rc, now) == 0) {
            reconnect(t);
            if (t->connected) {
                run_parked(t);
                /* What passed its deadline during the outage has failed (or
                 * fails now): it is never resent. */
                rmq_pub_expire_all(t);
                write_pubs(t, NULL);
            }
        }
        for (rmq_sub *rs = t->subs; rs && t->connected; rs = rs->next)
            if (rs->resubscribe && rs->active && now >= rs->retry_at_ms) {
                rs->resubscribe = false;
                resubscribe(t, rs);
            }
        if (t->connected && t->hb_s > 0 && now - t->last_rx_ms > 2000L * t->hb_s + 1000)
            rmq_lost(t, "no heartbeat from the broker");
        rmq_pub_expire(t);
        if (t->parked && !t->connected)
            expire_parked(t);
        rmq_room_release(t);

        /* Deliveries read while a request waited for its reply. */
        ewi_deliveries_flush(&t->dl);
        /* Sleep unless work is waiting. */
        int timeout = t->hb_s > 0 ? t->hb_s * 500 : 1000;
        if (!t->connected || t->unconf_head || t->parked || t->resend_head)
            timeout = 50;
        if (!t->connected && ewi_reconnect_wait_ms(&t->rc, now) < timeout)
            timeout = ewi_reconnect_wait_ms(&t->rc, now);
        if (t->connected && (t->resend_head || amqp_frames_enqueued(t->conn) ||
                             amqp_data_in_buffer(t->conn)))
            timeout = 0;
        if (ewi_workq_pending(&t->reqs))
            timeout = 0;
        pthread_mutex_lock(&t->mu);
        if (t->settle_head || t->pub_head || t->quit)
            timeout = 0;
        t->sleeping = timeout != 0;
        pthread_mutex_unlock(&t->mu);

        int nfds = 1;
        fds[0].fd = ewi_waker_fd(&t->waker);
        fds[0].events = POLLIN;
        fds[0].revents = 0;
        if (t->connected) {
            fds[1].fd = amqp_get_sockfd(t->conn);
            fds[1].events = POLLIN;
            fds[1].revents = 0;
            nfds = 2;
        }
        int n = poll(fds, (nfds_t)nfds, timeout);
        if (n < 0 && errno != EINTR)
            ewi_log(t->m, EW_LOG_ERROR, "%s: poll failed: %s", t->o.label, strerror(errno));
        if (t->sleeping) {
            pthread_mutex_lock(&t->mu);
            t->sleeping = false;
            t->woken = false;
            pthread_mutex_unlock(&t->mu);
        }
        if (n > 0 && (fds[0].revents & POLLIN))
            ewi_waker_drain(&t->waker);
        if (t->connected) {
            bool readable = nfds == 2 && (fds[1].revents & (POLLIN | POLLHUP | POLLERR));
            int64_t after = ewi_now_ms();
            if (readable)
                t->last_rx_ms = after;
            /* A read with nothing there still lets librabbitmq send a due
             * heartbeat: do one every half interval. */
            bool hb = t->hb_s > 0 && after >= next_hb_ms;
            if (hb)
                next_hb_ms = after + t->hb_s * 500;
            if (readable || hb || amqp_frames_enqueued(t->conn) || amqp_data_in_buffer(t->conn))
                read_frames(t);
        }
    }
    finish(t);
    return NULL;
}
