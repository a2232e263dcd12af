/* The STOMP transport's I/O thread: the only code that touches the socket.
 *
 * One loop: take the work other threads queued (SENDs, ACK/NACKs, requests)
 * into the output buffer, poll the socket and the waker, write what is
 * buffered, read and dispatch frames, keep heart-beats both ways, fail what
 * passed its deadline. Because queued ACKs are written before every poll, a
 * consumer at its prefetch limit never waits on a broker that waits on it.
 *
 * On a drop (socket error, ERROR frame, missed heart-beats) it reconnects
 * with capped backoff and jitter, declares the rabbitmq exchanges again,
 * re-subscribes every listener and resends every SEND whose RECEIPT had not
 * arrived (at-least-once: the broker may have taken it). Messages delivered on
 * the old connection are not acknowledged on the new one: the broker
 * redelivers them. */
#include "transports/stomp/stomp.h"
#include "transports/rmqadmin/rmqadmin.h"

#include <errno.h>
#include <inttypes.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define RBUF 65536
#define DEADLINE_SCAN_MS 100
/* A SEND resent this many times, each ended by an ERROR, fails with it. */
#define MAX_ERROR_RESENDS 3
/* A subscription given up after MAX_ERROR_RESENDS refusals is tried again
 * after GIVEN_UP_FACTOR x reconnect_max_ms, doubling up to GIVEN_UP_CAP_MS:
 * each refusal costs every listener its connection (the broker closes it),
 * so not with every reconnect, but a transport resumes every listener. */
#define GIVEN_UP_FACTOR 10
#define GIVEN_UP_CAP_MS 600000

typedef struct io {
    ewi_transport *t;
    int role; /* STOMP_PUB or STOMP_SUB */
    stomp_sock *sock;
    ewi_stomp_parser *parser;
    ewi_buf out;
    size_t out_off;
    stomp_pending *infl_head, *infl_tail; /* written, waiting for RECEIPT */
    stomp_req *waiting;                   /* requests waiting for a RECEIPT */
    stomp_heartbeat hb;
    int64_t last_rx, last_tx, last_scan;
    ewi_backoff backoff;
    int64_t next_attempt;
    uint64_t gen;          /* connection generation */
    uint64_t wseq;         /* receipt-bearing frames written, in order */
    int64_t up_since;
    int fails;             /* connect attempts failed in a row */
    uint64_t next_sub_gen;
    bool dropped_by_error; /* the last drop came with an ERROR frame */
    uint8_t rbuf[RBUF];
} io;

/* ---- completions, outside the lock --------------------------------------- */

static void complete_pub(ewi_transport *t, stomp_pending *pd, int err, const char *detail)
{
    ewi_pub *p = pd->pub;
    ewi_buf_free(&pd->frame);
    free(pd);
    /* A SEND written once (then put back in line by a drop) may have
     * reached the broker: unconfirmed, it is in doubt, never "not sent". */
    p->done(p, ewi_pub_unconfirmed(p, err), detail);
    pthread_mutex_lock(&t->mu);
    ewi_window_give(&t->window, 1);
    pthread_mutex_unlock(&t->mu);
}

/* true when the caller had given up: r is freed, and what it asked for
 * must be undone by the caller of finish_req. */
static bool finish_req(ewi_transport *t, stomp_req *r, ew_err rc, const char *text)
{
    pthread_mutex_lock(&t->mu);
    if (r->abandoned) {
        pthread_mutex_unlock(&t->mu);
        free(r);
        return true;
    }
    r->rc = rc;
    if (text)
        snprintf(r->err, sizeof r->err, "%s", text);
    r->done = true;
    pthread_cond_broadcast(&t->cv);
    pthread_mutex_unlock(&t->mu);
    return false;
}

/* ---- output --------------------------------------------------------------- */

/* Both threads set it: read it under the lock. */
static bool ever_up(ewi_transport *t)
{
    pthread_mutex_lock(&t->mu);
    bool up = t->ever_up;
    pthread_mutex_unlock(&t->mu);
    return up;
}

static bool out_pending(const io *s)
{
    return s->out.len > s->out_off;
}

static ew_err write_simple(io *s, ewi_stomp_cmd cmd, const char *k1, const char *v1,
                           const char *k2, const char *v2)
{
    ewi_stomp_writer w;
    ewi_stomp_write_begin(&w, &s->out, cmd);
    if (k1)
        ewi_stomp_write_header(&w, k1, v1);
    if (k2)
        ewi_stomp_write_header(&w, k2, v2);
    return ewi_stomp_write_end(&w, NULL, 0, false);
}

static ew_err write_subscribe(io *s, stomp_sub *ss)
{
    char id[32], receipt[40];
    ss->sub_gen = ++s->next_sub_gen;
    ss->wseq = ++s->wseq;
    if (ss->given_up)
        ss->retry_at = ewi_now_ms() + ss->retry_ms;
    snprintf(id, sizeof id, "%" PRIu64, ss->sub_gen);
    snprintf(receipt, sizeof receipt, "s%" PRIu64, ss->sub_gen);
    ewi_stomp_writer w;
    ewi_stomp_write_begin(&w, &s->out, EWI_STOMP_SUBSCRIBE);
    ewi_stomp_write_header(&w, "id", id);
    ewi_stomp_write_header(&w, "destination", ss->target.dest);
    ewi_stomp_write_header(&w, "ack", ss->browse ? "auto" : "client-individual");
    if (ss->browse)
        ewi_stomp_write_header(&w, "browser", "true");
    ewi_stomp_write_header(&w, "receipt", receipt);
    for (size_t i = 0; i < ss->target.n; i++)
        ewi_stomp_write_header(&w, ss->target.h[i].key, ss->target.h[i].value);
    return ewi_stomp_write_end(&w, NULL, 0, false);
}

static void write_unsubscribe(io *s, stomp_sub *ss)
{
    char id[32];
    snprintf(id, sizeof id, "%" PRIu64, ss->sub_gen);
    write_simple(s, EWI_STOMP_UNSUBSCRIBE, "id", id, NULL, NULL);
    ss->active = false;
}

/* Writes what the socket takes; false when the connection is gone. */
static bool flush_out(io *s, char *err, size_t errlen)
{
    while (out_pending(s)) {
        bool want_read;
        long n = stomp_sock_write(s->sock, s->out.data + s->out_off,
                                  s->out.len - s->out_off, &want_read, err, errlen);
        if (n < 0)
            return false;
        if (n == 0)
            break;
        s->out_off += (size_t)n;
        s->last_tx = ewi_now_ms();
    }
    if (!out_pending(s))
        s->out.len = s->out_off = 0;
    return true;
}

/* ---- subscriptions ------------------------------------------------------- */

static stomp_sub *sub_by_gen(ewi_transport *t, uint64_t gen)
{
    for (stomp_sub *ss = t->subs; ss; ss = ss->next)
        if (ss->sub_gen == gen)
            return ss;
    return NULL;
}

static void unlink_sub(ewi_transport *t, stomp_sub *ss)
{
    pthread_mutex_lock(&t->mu);
    for (stomp_sub **pp = &t->subs; *pp; pp = &(*pp)->next)
        if (*pp == ss) {
            *pp = ss->next;
            break;
        }
    pthread_mutex_unlock(&t->mu);
}

static void free_dlq_queue(stomp_sub *ss)
{
    for (stomp_msgdata *md = ss->dq_head, *next; md; md = next) {
        next = md->next;
        ewi_envelope_unref(md->env);
        free(md->ack_id);
        free(md);
    }
    ss->dq_head = ss->dq_tail = NULL;
}

/* A closing subscription goes once core settled everything it holds: then
 * UNSUBSCRIBE returns whatever the broker still had sent us. A subscription
 * with requeued messages (dialects without a requeueing NACK) is closed and
 * opened again at that point, which gives those messages back; meanwhile
 * on_message delivers nothing new for it, so that point comes promptly. */
static void sub_check(io *s, stomp_sub *ss)
{
    ewi_transport *t = s->t;
    if (ss->outstanding)
        return;
    if (ss->closing && ss->release) {
        /* Only now is it ours alone: core (sub->tdata) or dlq_take let go.
         * Not on rabbitmq: a MESSAGE dispatched before the UNSUBSCRIBE and
         * arriving after it makes RabbitMQ send "ERROR Subscription not
         * found", which drops the connection of every listener (and the
         * ACKs queued behind it), and its UNSUBSCRIBE does not give back
         * what was delivered anyway. Core unsubscribes only at stop (then
         * DISCONNECT follows) or when a listener's activation failed: what
         * still arrives for the id stays unacknowledged and returns when
         * the connection closes. */
        if (ss->active && s->sock && s->t->opt.dialect != STOMP_RABBITMQ)
            write_unsubscribe(s, ss);
        unlink_sub(t, ss);
        pthread_mutex_lock(&t->mu);
        free_dlq_queue(ss);
        pthread_mutex_unlock(&t->mu);
        free(ss);
        return;
    }
    if (ss->closing)
        return;
    if (ss->recycle && s->sock && ss->active) {
        write_unsubscribe(s, ss);
        ss->recycle = false;
        write_subscribe(s, ss);
    }
}

/* Given-up subscriptions whose retry time came: SUBSCRIBE once more. */
static void retry_given_up(io *s, int64_t now)
{
    for (stomp_sub *ss = s->t->subs; ss; ss = ss->next)
        if (ss->given_up && !ss->closing && !ss->active && now >= ss->retry_at)
            write_subscribe(s, ss);
}

/* ---- frames in ------------------------------------------------------------ */

static void fail_pub_now(io *s, stomp_pending *pd, int err, const char *text)
{
    /* unlink from in-flight */
    stomp_pending **pp = &s->infl_head, *prev = NULL;
    while (*pp && *pp != pd) {
        prev = *pp;
        pp = &(*pp)->next;
    }
    if (*pp) {
        *pp = pd->next;
        if (s->infl_tail == pd)
            s->infl_tail = prev;
    }
    complete_pub(s->t, pd, err, text);
}

/* The broker took a SUBSCRIBE (its RECEIPT, or a first MESSAGE that came
 * before it). false when ss was closed because its caller gave up. */
static bool sub_confirmed(io *s, stomp_sub *ss)
{
    if (ss->active)
        return true;
    ss->active = true;
    ss->wseq = 0;
    ss->error_strikes = 0;
    if (ss->given_up) {
        ss->given_up = false;
        ewi_log(s->t->m, EW_LOG_WARN, "%s: the broker took the SUBSCRIBE to %s again: "
                "deliveries resume", ss->sub ? ss->sub->queue : "dead-letter reader",
                ss->target.dest);
    }
    bool abandoned = false;
    for (stomp_req **pp = &s->waiting; *pp;) {
        stomp_req *r = *pp;
        if (r->ss == ss) {
            *pp = r->next;
            abandoned |= finish_req(s->t, r, EW_OK, NULL);
        } else {
            pp = &r->next;
        }
    }
    if (abandoned) {
        /* The caller gave up waiting: core never got ss. */
        ss->closing = true;
        ss->release = true;
        sub_check(s, ss);
        return false;
    }
    return true;
}

static void on_receipt(io *s, const char *id)
{
    if (id[0] == 'p') {
        uint64_t n = strtoull(id + 1, NULL, 10);
        for (stomp_pending *pd = s->infl_head; pd; pd = pd->next)
            if (pd->receipt == n) {
                fail_pub_now(s, pd, EW_OK, NULL);
                return;
            }
        return; /* a late receipt of a SEND that already timed out */
    }
    if (id[0] == 's') {
        stomp_sub *ss = sub_by_gen(s->t, strtoull(id + 1, NULL, 10));
        if (ss)
            sub_confirmed(s, ss);
    }
}

static void on_message(io *s, ewi_stomp_frame *f)
{
    ewi_transport *t = s->t;
    const char *subid = ewi_stomp_frame_get(f, "subscription");
    const char *ack = ewi_stomp_frame_get(f, "ack");
    stomp_sub *ss = subid ? sub_by_gen(t, strtoull(subid, NULL, 10)) : NULL;
    /* Messages of an old or closing subscription stay unacknowledged: the
     * broker gets them back with the UNSUBSCRIBE or the connection. */
    if (ss && ss->browse && !ss->closing && sub_confirmed(s, ss)) {
        /* ActiveMQ ends a browse with a MESSAGE holding browser:end. */
        const char *b = ewi_stomp_frame_get(f, "browser");
        pthread_mutex_lock(&t->mu);
        if (b && strcmp(b, "end") == 0)
            ss->browse_end = true;
        else
            ss->browse_found++;
        pthread_cond_broadcast(&t->cv);
        pthread_mutex_unlock(&t->mu);
        return;
    }
    if (!ss || ss->closing || !ack || !sub_confirmed(s, ss))
        return;
    /* A requeued message waits for the re-subscribe (activemq, artemis),
     * which happens once core holds nothing of ss: deliver nothing new until
     * then, or steady traffic would keep outstanding above 0 and hold the
     * requeued message for ever. What arrives meanwhile stays
     * unacknowledged and comes back with it. */
    if (ss->recycle)
        return;
    const char *red = ewi_stomp_frame_get(f, "redelivered");
    if (f->truncated) {
        /* Over the parser's body limit (a multiple of max_body): what fits
         * was kept, so core sees a body over max_body and dead-letters it as
         * too-big, instead of the connection failing on it for ever. */
        const char *mid = ewi_stomp_frame_get(f, "message-id");
        ewi_report(t->m, EW_ETOOBIG, ss->sub ? ss->sub->queue : NULL,
                   ss->sub ? ss->sub->event : NULL, NULL,
                   "a message from %s (broker message-id %s) has a body of %zu bytes, over "
                   "the limit of %zu: only its first %zu bytes were kept%s",
                   ss->target.dest, mid ? mid : "?", f->wire_body_len,
                   t->limits.max_body, f->body_len,
                   ss->sub ? " (it is dead-lettered as too big)" : "");
    }
    if (!ss->sub) {
        /* A dead-letter reader: the waiting dlq_take takes it. */
        stomp_msgdata *md = calloc(1, sizeof *md);
        ew_envelope *env = ewi_envelope_new();
        if (!md || !env || !(md->ack_id = strdup(ack)) ||
            stomp_message_read(f, env) != EW_OK) {
            ewi_envelope_unref(env);
            if (md)
                free(md->ack_id);
            free(md);
            return;
        }
        md->env = env;
        md->gen = s->gen;
        md->sub_gen = ss->sub_gen;
        md->sub = ss;
        pthread_mutex_lock(&t->mu);
        if (ss->dq_tail)
            ss->dq_tail->next = md;
        else
            ss->dq_head = md;
        ss->dq_tail = md;
        pthread_cond_broadcast(&t->cv);
        pthread_mutex_unlock(&t->mu);
        return;
    }
    ewi_msg *msg = ewi_msg_new(ss->sub, NULL);
    stomp_msgdata *md = calloc(1, sizeof *md);
    if (!msg || !md || !(md->ack_id = strdup(ack)) ||
        stomp_message_read(f, msg->env) != EW_OK) {
        /* Out of memory: leave it unacknowledged for redelivery. */
        if (md)
            free(md->ack_id);
        free(md);
        ewi_msg_free(msg);
        ewi_log(t->m, EW_LOG_ERROR, "%s: out of memory reading a message",
                ss->sub->queue);
        return;
    }
    md->sub = ss;
    md->gen = s->gen;
    md->sub_gen = ss->sub_gen;
    md->msg = msg;
    msg->tdata = md;
    msg->redeliveries = red && strcmp(red, "true") == 0 ? 1 : 0;
    ss->outstanding++;
    ewi_deliver(msg);
}

/* An ERROR frame: the broker closes the connection after it. */
static void on_error(io *s, const ewi_stomp_frame *f, char *why, size_t whylen)
{
    ewi_transport *t = s->t;
    char text[400];
    stomp_error_text(f, text, sizeof text);
    snprintf(why, whylen, "ERROR from the broker: %s", text);
    s->dropped_by_error = true;
    const char *rid = ewi_stomp_frame_get(f, "receipt-id");
    if (rid && rid[0] == 'p') {
        uint64_t n = strtoull(rid + 1, NULL, 10);
        for (stomp_pending *pd = s->infl_head; pd; pd = pd->next)
            if (pd->receipt == n) {
                ewi_report(t->m, EW_EBROKER, NULL, pd->pub->event,
                           ew_envelope_message_id(pd->pub->env), "send refused: %s", text);
                fail_pub_now(s, pd, EW_EBROKER, text);
                return;
            }
    }
    /* RabbitMQ's ERRORs often carry no receipt-id. The broker handles
     * frames in order, so the oldest frame still waiting for its RECEIPT is
     * the likely cause: it takes the blame. */
    stomp_sub *ss = rid && rid[0] == 's' ? sub_by_gen(t, strtoull(rid + 1, NULL, 10)) : NULL;
    if (!ss && !(rid && rid[0] == 'p') && s->role == STOMP_SUB) {
        for (stomp_sub *c = t->subs; c; c = c->next)
            if (!c->active && c->wseq && (!ss || c->wseq < ss->wseq))
                ss = c;
    }
    if (!ss && !(rid && rid[0] == 'p') && s->role == STOMP_PUB && s->infl_head)
        s->infl_head->error_sends++;
    if (ss && !ss->closing) {
        bool waited = false;
        for (stomp_req **pp = &s->waiting; *pp; pp = &(*pp)->next) {
            stomp_req *r = *pp;
            if (r->ss == ss) {
                *pp = r->next;
                finish_req(t, r, EW_EBROKER, text);
                waited = true;
                break;
            }
        }
        if (waited) {
            /* Its subscribe fails with the broker's text: core never got it. */
            ss->closing = true;
            ss->release = true;
            ss->active = false;
            sub_check(s, ss);
        } else if (++ss->error_strikes >= MAX_ERROR_RESENDS) {
            /* Refused again and again after reconnects: stop resubscribing
             * with every reconnect (each refusal closes the connection of
             * every listener), retry now and then. Core still holds ss. */
            int base = t->opt.reconnect_max_ms * GIVEN_UP_FACTOR;
            if (base < 1000)
                base = 1000;
            if (!ss->given_up)
                ss->retry_ms = base > GIVEN_UP_CAP_MS ? GIVEN_UP_CAP_MS : base;
            else if (ss->retry_ms < GIVEN_UP_CAP_MS / 2)
                ss->retry_ms *= 2;
            else
                ss->retry_ms = GIVEN_UP_CAP_MS;
            ss->given_up = true;
            ss->retry_at = ewi_now_ms() + ss->retry_ms;
            ss->active = false;
            ss->wseq = 0;
            /* ewi_report names the listener's queue; a dead-letter reader
             * is named by its destination. */
            ewi_report(t->m, EW_EBROKER, ss->sub ? ss->sub->queue : NULL,
                       ss->sub ? ss->sub->event : NULL, NULL,
                       "%sSUBSCRIBE to %s refused %d times in a row, no deliveries "
                       "until the broker takes it (next try in %d s): %s",
                       ss->sub ? "" : "dead-letter reader: ", ss->target.dest,
                       ss->error_strikes, ss->retry_ms / 1000, text);
        }
    }
    ewi_report(t->m, EW_EBROKER, NULL, NULL, NULL, "STOMP broker %s: %s", t->url_text,
               text);
}

/* A frame that cannot be parsed (too many headers, an overlong header line,
 * malformed): the connection must go. When it was a MESSAGE the broker sends
 * it again after the reconnect, so this happens again and again: say each
 * time which listener and message it is, so that someone can remove it. */
static void report_bad_frame(io *s, const char *why)
{
    ewi_transport *t = s->t;
    const char *subid = ewi_stomp_parser_partial_header(s->parser, "subscription");
    const char *mid = ewi_stomp_parser_partial_header(s->parser, "message-id");
    stomp_sub *ss = subid ? sub_by_gen(t, strtoull(subid, NULL, 10)) : NULL;
    if (ss) {
        ewi_report(t->m, EW_EPROTO, ss->sub ? ss->sub->queue : NULL,
                   ss->sub ? ss->sub->event : NULL, NULL,
                   "a message from %s (broker message-id %s) cannot be read: %s; the "
                   "connection is dropped and the broker will deliver it again, which "
                   "stops this connection's listeners each time until it is removed "
                   "from the queue", ss->target.dest, mid ? mid : "?", why);
        return;
    }
    ewi_report(t->m, EW_EPROTO, NULL, NULL, NULL, "STOMP broker %s: %s%s%s%s", t->url_text,
               why, mid ? " (broker message-id " : "", mid ? mid : "", mid ? ")" : "");
}

/* Reads and dispatches; false when the connection must be dropped. */
static bool read_in(io *s, char *why, size_t whylen)
{
    for (int rounds = 0; rounds < 16; rounds++) {
        bool want_write;
        long n = stomp_sock_read(s->sock, s->rbuf, sizeof s->rbuf, &want_write, why,
                                 whylen);
        if (n < 0)
            return false;
        if (n == 0 && !stomp_sock_pending(s->sock))
            return true;
        s->last_rx = ewi_now_ms();
        size_t off = 0;
        while (off < (size_t)n) {
            size_t used;
            ewi_stomp_status st = ewi_stomp_parse(s->parser, s->rbuf + off,
                                                  (size_t)n - off, &used);
            off += used;
            if (st == EWI_STOMP_MORE)
                break;
            if (st != EWI_STOMP_FRAME) {
                snprintf(why, whylen, "protocol error from the broker: %s",
                         ewi_stomp_parser_error(s->parser));
                report_bad_frame(s, why);
                return false;
            }
            ewi_stomp_frame *f = ewi_stomp_parser_take(s->parser);
            bool keep = true;
            switch (f->cmd) {
            case EWI_STOMP_MESSAGE:
                on_message(s, f);
                break;
            case EWI_STOMP_RECEIPT: {
                const char *id = ewi_stomp_frame_get(f, "receipt-id");
                if (id)
                    on_receipt(s, id);
                break;
            }
            case EWI_STOMP_ERROR:
                on_error(s, f, why, whylen);
                keep = false;
                break;
            default:
                break; /* CONNECTED again, or a client frame: ignore */
            }
            ewi_stomp_frame_free(f);
            if (!keep)
                return false;
        }
    }
    return true;
}

/* ---- work from other threads --------------------------------------------- */

static void take_work(io *s)
{
    ewi_transport *t = s->t;
    stomp_pending *pend = NULL;
    stomp_msgdata *settles = NULL;
    stomp_req *reqs = NULL;
    pthread_mutex_lock(&t->mu);
    if (s->role == STOMP_PUB) {
        pend = t->pend_head;
        t->pend_head = t->pend_tail = NULL;
    } else {
        settles = t->settle_head;
        t->settle_head = t->settle_tail = NULL;
        reqs = t->req_head;
        t->req_head = t->req_tail = NULL;
    }
    pthread_mutex_unlock(&t->mu);

    /* SENDs: into the output buffer, then in flight until their RECEIPT. */
    while (pend) {
        stomp_pending *pd = pend;
        pend = pd->next;
        pd->next = NULL;
        if (ewi_buf_append(&s->out, pd->frame.data, pd->frame.len) != EW_OK) {
            complete_pub(t, pd, EW_ENOMEM, "out of memory");
            continue;
        }
        pd->wseq = ++s->wseq;
        pd->pub->written = true; /* in the output buffer: it may reach the broker */
        if (s->infl_tail)
            s->infl_tail->next = pd;
        else
            s->infl_head = pd;
        s->infl_tail = pd;
    }

    /* ACK/NACK before anything else is read. */
    while (settles) {
        stomp_msgdata *md = settles;
        settles = md->next;
        stomp_sub *ss = md->sub;
        bool same = md->gen == s->gen && ss->active && md->sub_gen == ss->sub_gen;
        if (same && md->ack_id) {
            if (md->how == EWI_ACK || stomp_requeue_by_nack(t->opt.dialect))
                write_simple(s, md->how == EWI_ACK ? EWI_STOMP_ACK : EWI_STOMP_NACK,
                             "id", md->ack_id, NULL, NULL);
            else
                ss->recycle = true;
        }
        if (md->msg) {
            ss->outstanding--;
            ewi_msg_free(md->msg);
        }
        free(md->ack_id);
        free(md);
        sub_check(s, ss);
    }

    while (reqs) {
        stomp_req *r = reqs;
        reqs = r->next;
        r->next = NULL;
        stomp_sub *ss = r->ss;
        switch (r->kind) {
        case REQ_SUBSCRIBE:
        case REQ_DLQ_OPEN:
            pthread_mutex_lock(&t->mu);
            ss->next = t->subs;
            t->subs = ss;
            pthread_mutex_unlock(&t->mu);
            if (s->sock && t->state[STOMP_SUB] == ST_UP)
                write_subscribe(s, ss);
            /* done on its RECEIPT (after a reconnect if need be) */
            r->next = s->waiting;
            s->waiting = r;
            break;
        case REQ_UNSUBSCRIBE:
        case REQ_DLQ_CLOSE:
            /* From here on nothing more is delivered for it, and once core
             * settled all it holds, ss goes. */
            ss->closing = true;
            ss->release = true;
            for (stomp_req **pp = &s->waiting; *pp; pp = &(*pp)->next)
                if ((*pp)->ss == ss) {
                    stomp_req *w = *pp;
                    *pp = w->next;
                    finish_req(t, w, EW_ECLOSED, "unsubscribed before it was subscribed");
                    break;
                }
            if (!ss->sub) {
                pthread_mutex_lock(&t->mu);
                free_dlq_queue(ss);
                pthread_mutex_unlock(&t->mu);
            }
            finish_req(t, r, EW_OK, NULL);
            sub_check(s, ss); /* may free ss */
            break;
        }
    }
}

/* Fails SENDs past their deadline, queued or in flight. */
static void expire(io *s, const char *why)
{
    ewi_transport *t = s->t;
    int64_t now = ewi_now_ms();
    char detail[700];
    stomp_pending *dead = NULL;
    pthread_mutex_lock(&t->mu);
    for (stomp_pending **pp = &t->pend_head; *pp;) {
        stomp_pending *pd = *pp;
        if (pd->pub->deadline_ms <= now) {
            *pp = pd->next;
            pd->next = dead;
            dead = pd;
        } else {
            pp = &pd->next;
        }
    }
    t->pend_tail = NULL;
    for (stomp_pending *pd = t->pend_head; pd; pd = pd->next)
        t->pend_tail = pd;
    pthread_mutex_unlock(&t->mu);
    if (s->sock)
        snprintf(detail, sizeof detail, "not sent before the deadline: the STOMP "
                 "connection is up but the send window stayed full");
    else
        snprintf(detail, sizeof detail, "not sent: the STOMP broker was unreachable until "
                 "the deadline%s%s", why && *why ? ": " : "", why ? why : "");
    const char *written = "written, but the connection was lost before the STOMP broker's "
                          "receipt and no receipt came before the deadline: it may have "
                          "been delivered; it will not be sent again";
    while (dead) {
        stomp_pending *pd = dead;
        dead = pd->next;
        complete_pub(t, pd, EW_ETIMEDOUT, ewi_pub_detail(pd->pub, detail, written));
    }
    snprintf(detail, sizeof detail, "sent, but no receipt from the STOMP broker before the "
             "deadline: it may have been delivered");
    for (stomp_pending *pd = s->infl_head, *next; pd; pd = next) {
        next = pd->next;
        if (pd->pub->deadline_ms <= now)
            fail_pub_now(s, pd, EW_ETIMEDOUT, detail);
    }
}

/* ---- connection ------------------------------------------------------------ */

static const char *role_name(const io *s)
{
    return s->role == STOMP_PUB ? "publishing" : "consuming";
}

static void set_state(io *s, stomp_state st, ew_err code, const char *why)
{
    ewi_transport *t = s->t;
    pthread_mutex_lock(&t->mu);
    t->state[s->role] = st;
    if (code != EW_OK) {
        t->last_code = code;
        snprintf(t->last_error, sizeof t->last_error, "%s", why);
    }
    if (st == ST_UP)
        t->ever_up = true;
    pthread_cond_broadcast(&t->cv);
    pthread_mutex_unlock(&t->mu);
}

static void drop(io *s, ew_err code, const char *why)
{
    ewi_transport *t = s->t;
    bool was_up = t->state[s->role] == ST_UP;
    stomp_sock_close(s->sock);
    s->sock = NULL;
    ewi_stomp_parser_reset(s->parser);
    s->out.len = s->out_off = 0;
    /* Unreceipted SENDs go back to the head of the queue, in order. */
    if (s->infl_head) {
        stomp_pending *keep = NULL, **kt = &keep;
        for (stomp_pending *pd = s->infl_head, *next; pd; pd = next) {
            next = pd->next;
            pd->next = NULL;
            if (pd->error_sends >= MAX_ERROR_RESENDS) {
                complete_pub(t, pd, EW_EBROKER, why);
                continue;
            }
            *kt = pd;
            kt = &pd->next;
        }
        pthread_mutex_lock(&t->mu);
        if (keep) {
            *kt = t->pend_head;
            if (!t->pend_head) {
                t->pend_tail = keep;
                while (t->pend_tail->next)
                    t->pend_tail = t->pend_tail->next;
            }
            t->pend_head = keep;
        }
        pthread_mutex_unlock(&t->mu);
        s->infl_head = s->infl_tail = NULL;
    }
    if (s->role == STOMP_SUB) {
        for (stomp_sub *ss = t->subs; ss; ss = ss->next) {
            ss->active = false;
            ss->recycle = false; /* the closed connection gave them back */
        }
        /* Dead letters read on the lost connection come again on the new
         * one; taken now, their ACKs would be dropped (duplicates). */
        pthread_mutex_lock(&t->mu);
        for (stomp_sub *ss = t->subs; ss; ss = ss->next)
            if (!ss->sub)
                free_dlq_queue(ss);
        pthread_mutex_unlock(&t->mu);
        /* Closing subscriptions whose messages are all settled can go now. */
        for (stomp_sub *ss = t->subs, *next; ss; ss = next) {
            next = ss->next;
            sub_check(s, ss);
        }
    } else if (t->topo) {
        rmqa_forget_checks(t->topo);
    }
    /* A connection that lived a while resets the backoff; one that the
     * broker closes at once (a refused frame) keeps it growing. */
    if (was_up && ewi_now_ms() - s->up_since >= 5000)
        ewi_backoff_reset(&s->backoff);
    set_state(s, ST_DOWN, code, why);
    if (was_up)
        ewi_report(t->m, EW_EDISCONNECTED, NULL, NULL, NULL,
                   "STOMP %s connection to %s lost: %s; reconnecting", role_name(s),
                   t->url_text, why);
    s->next_attempt = ewi_now_ms() + ewi_backoff_next(&s->backoff);
}

/* Waits for the CONNECTED frame; false with the reason. */
static bool handshake(io *s, int64_t deadline, ew_err *code, char *why, size_t whylen)
{
    ewi_transport *t = s->t;
    const stomp_options *o = &t->opt;
    char hb[32];
    snprintf(hb, sizeof hb, "%d,%d", o->heartbeat_ms, o->heartbeat_ms);
    ewi_stomp_writer w;
    ewi_stomp_write_begin(&w, &s->out, EWI_STOMP_CONNECT);
    ewi_stomp_write_header(&w, "accept-version", "1.2");
    ewi_stomp_write_header(&w, "host", o->vhost);
    if (o->login)
        ewi_stomp_write_header(&w, "login", o->login);
    if (o->passcode)
        ewi_stomp_write_header(&w, "passcode", o->passcode);
    ewi_stomp_write_header(&w, "heart-beat", hb);
    if (ewi_stomp_write_end(&w, NULL, 0, false) != EW_OK) {
        *code = EW_EINVAL;
        snprintf(why, whylen, "cannot write CONNECT");
        return false;
    }
    *code = EW_ECONNECT;
    int fd = stomp_sock_fd(s->sock);
    for (;;) {
        if (!flush_out(s, why, whylen))
            return false;
        int left = ewi_left_ms(deadline);
        if (left <= 0) {
            snprintf(why, whylen, "no CONNECTED frame from %s within %d ms", t->url_text,
                     o->connect_timeout_ms);
            return false;
        }
        struct pollfd p = {.fd = fd, .events = POLLIN | (out_pending(s) ? POLLOUT : 0)};
        if (!stomp_sock_pending(s->sock) && poll(&p, 1, left) < 0 && errno != EINTR) {
            snprintf(why, whylen, "poll: %s", strerror(errno));
            return false;
        }
        bool ww;
        long n = stomp_sock_read(s->sock, s->rbuf, sizeof s->rbuf, &ww, why, whylen);
        if (n < 0) {
            /* RabbitMQ may close right after its ERROR; the reason was read. */
            return false;
        }
        size_t off = 0;
        while (off < (size_t)n) {
            size_t used;
            ewi_stomp_status st = ewi_stomp_parse(s->parser, s->rbuf + off,
                                                  (size_t)n - off, &used);
            off += used;
            if (st == EWI_STOMP_MORE)
                break;
            if (st != EWI_STOMP_FRAME) {
                *code = EW_EPROTO;
                snprintf(why, whylen, "protocol error in the broker's answer to CONNECT: %s",
                         ewi_stomp_parser_error(s->parser));
                return false;
            }
            ewi_stomp_frame *f = ewi_stomp_parser_take(s->parser);
            if (f->cmd == EWI_STOMP_ERROR) {
                char text[400];
                stomp_error_text(f, text, sizeof text);
                ewi_stomp_frame_free(f);
                /* RabbitMQ and ActiveMQ answer a bad login or vhost so. */
                *code = EW_EAUTH;
                snprintf(why, whylen, "%s refused the connection: %s", t->url_text, text);
                return false;
            }
            if (f->cmd != EWI_STOMP_CONNECTED) {
                snprintf(why, whylen, "expected CONNECTED, got %s",
                         ewi_stomp_cmd_name(f->cmd));
                ewi_stomp_frame_free(f);
                *code = EW_EPROTO;
                return false;
            }
            const char *version = ewi_stomp_frame_get(f, "version");
            if (!version || strcmp(version, "1.2") != 0) {
                snprintf(why, whylen, "%s does not speak STOMP 1.2 (version %s)",
                         t->url_text, version ? version : "1.0");
                ewi_stomp_frame_free(f);
                *code = EW_EPROTO;
                return false;
            }
            ew_err rc = stomp_heartbeat_negotiate(o->heartbeat_ms, o->heartbeat_ms,
                                                  ewi_stomp_frame_get(f, "heart-beat"),
                                                  &s->hb);
            ewi_stomp_frame_free(f);
            if (rc != EW_OK) {
                snprintf(why, whylen, "malformed heart-beat header in CONNECTED");
                *code = EW_EPROTO;
                return false;
            }
            return true;
        }
    }
}

static bool connect_once(io *s, char *why, size_t whylen, ew_err *code)
{
    ewi_transport *t = s->t;
    int64_t deadline = ewi_now_ms() + t->opt.connect_timeout_ms;
    set_state(s, ST_CONNECTING, EW_OK, NULL);
    bool final;
    s->sock = stomp_sock_open(&t->opt, t->opt.connect_timeout_ms, code, &final, why, whylen);
    if (!s->sock) {
        if (final) {
            pthread_mutex_lock(&t->mu);
            t->last_final = true;
            t->last_code = *code;
            snprintf(t->last_error, sizeof t->last_error, "%s", why);
            pthread_mutex_unlock(&t->mu);
        }
        return false;
    }
    ewi_stomp_parser_reset(s->parser);
    s->out.len = s->out_off = 0;
    if (!handshake(s, deadline, code, why, whylen))
        return false;
    /* A restarted broker lost the non-durable exchanges. */
    if (t->topo && s->role == STOMP_PUB && ever_up(t)) {
        char err[512];
        ew_err rc = rmqa_redeclare(t->topo, err, sizeof err);
        if (rc != EW_OK) {
            *code = rc;
            snprintf(why, whylen, "%s", err);
            return false;
        }
    }
    s->gen++;
    s->dropped_by_error = false;
    s->last_rx = s->last_tx = ewi_now_ms();
    /* Every listener again, in registration order does not matter. */
    if (s->role == STOMP_SUB) {
        int64_t now = ewi_now_ms();
        for (stomp_sub *ss = t->subs; ss; ss = ss->next)
            if (!ss->closing && !(ss->given_up && now < ss->retry_at))
                write_subscribe(s, ss);
    }
    /* Resent SENDs were put back at the head of the queue: take_work adds
     * them before anything newer. */
    return true;
}

/* ---- shutdown -------------------------------------------------------------- */

static void shutdown_io(io *s)
{
    ewi_transport *t = s->t;
    if (s->sock && t->state[s->role] == ST_UP) {
        /* Last ACKs, then DISCONNECT with a receipt: once it arrives the
         * broker has processed everything before it. */
        take_work(s);
        write_simple(s, EWI_STOMP_DISCONNECT, "receipt", "bye", NULL, NULL);
        int64_t deadline = ewi_now_ms() + 2000;
        char why[256];
        bool ok = true;
        while (ok && ewi_left_ms(deadline) > 0) {
            ok = flush_out(s, why, sizeof why);
            struct pollfd p = {.fd = stomp_sock_fd(s->sock),
                               .events = POLLIN | (out_pending(s) ? POLLOUT : 0)};
            if (ok && poll(&p, 1, ewi_left_ms(deadline)) > 0) {
                /* RECEIPTs of SENDs still count; the DISCONNECT's ends it. */
                bool ww;
                long n = stomp_sock_read(s->sock, s->rbuf, sizeof s->rbuf, &ww, why,
                                         sizeof why);
                size_t off = 0;
                bool bye = false;
                while (n > 0 && off < (size_t)n && !bye) {
                    size_t used;
                    ewi_stomp_status st = ewi_stomp_parse(s->parser, s->rbuf + off,
                                                          (size_t)n - off, &used);
                    off += used;
                    if (st != EWI_STOMP_FRAME)
                        break;
                    ewi_stomp_frame *f = ewi_stomp_parser_take(s->parser);
                    const char *id = ewi_stomp_frame_get(f, "receipt-id");
                    if (f->cmd == EWI_STOMP_RECEIPT && id) {
                        if (strcmp(id, "bye") == 0)
                            bye = true;
                        else if (id[0] == 'p')
                            on_receipt(s, id);
                    }
                    ewi_stomp_frame_free(f);
                }
                if (n < 0 || bye)
                    break;
            }
        }
    }
    stomp_sock_close(s->sock);
    s->sock = NULL;
    /* What is left fails: the transport is closed. */
    stomp_pending *pend = NULL;
    stomp_req *reqs = NULL;
    pthread_mutex_lock(&t->mu);
    if (s->role == STOMP_PUB) {
        pend = t->pend_head;
        t->pend_head = t->pend_tail = NULL;
    } else {
        reqs = t->req_head;
        t->req_head = t->req_tail = NULL;
    }
    t->state[s->role] = ST_DOWN;
    pthread_mutex_unlock(&t->mu);
    for (stomp_pending *pd = s->infl_head, *next; pd; pd = next) {
        next = pd->next;
        complete_pub(t, pd, EW_ECLOSED, "the transport stopped before the broker's receipt: "
                                        "it may have been delivered");
    }
    s->infl_head = s->infl_tail = NULL;
    for (stomp_pending *pd = pend, *next; pd; pd = next) {
        next = pd->next;
        complete_pub(t, pd, EW_ECLOSED,
                     ewi_pub_detail(pd->pub, "the transport stopped before the send",
                                    "written on a lost connection, but the transport "
                                    "stopped before the broker's receipt: it may have "
                                    "been delivered"));
    }
    for (stomp_req *r = s->waiting, *next; r; r = next) {
        next = r->next;
        finish_req(t, r, EW_ECLOSED, "the transport stopped");
    }
    s->waiting = NULL;
    for (stomp_req *r = reqs, *next; r; r = next) {
        next = r->next;
        if (r->kind == REQ_SUBSCRIBE || r->kind == REQ_DLQ_OPEN) {
            pthread_mutex_lock(&t->mu);
            r->ss->next = t->subs; /* freed with the transport */
            t->subs = r->ss;
            r->ss->closing = true;
            pthread_mutex_unlock(&t->mu);
        } else {
            r->ss->closing = true;
        }
        finish_req(t, r, EW_ECLOSED, "the transport stopped");
    }
}

/* ---- the loop -------------------------------------------------------------- */

/* While the consuming connection is down, requests and settles are still
 * taken: subscriptions wait in the list, ACKs of the lost connection are
 * dropped. (SENDs wait for the publishing connection, deadlines running.) */
static void take_work_down(io *s)
{
    ewi_transport *t = s->t;
    pthread_mutex_lock(&t->mu);
    bool has = t->settle_head || t->req_head;
    pthread_mutex_unlock(&t->mu);
    if (!has)
        return;
    take_work(s);
    s->out.len = s->out_off = 0;
}

void *stomp_io_main(void *arg)
{
    struct stomp_io_arg *a = arg;
    ewi_transport *t = a->t;
    /* TLS writes go through write(2): a peer that vanished must not kill the
     * process with SIGPIPE. Blocked here, it stays pending on this thread. */
    sigset_t set;
    sigemptyset(&set);
    sigaddset(&set, SIGPIPE);
    pthread_sigmask(SIG_BLOCK, &set, NULL);

    io *s = calloc(1, sizeof *s);
    if (!s) {
        pthread_mutex_lock(&t->mu);
        t->last_code = EW_ENOMEM;
        snprintf(t->last_error, sizeof t->last_error, "out of memory");
        pthread_cond_broadcast(&t->cv);
        pthread_mutex_unlock(&t->mu);
        return NULL;
    }
    s->t = t;
    s->role = a->role;
    ewi_waker *wk = &t->waker[s->role];
    s->parser = ewi_stomp_parser_new(&t->limits);
    ewi_backoff_init(&s->backoff, 100, t->opt.reconnect_max_ms);
    char why[1024] = "";
    if (!s->parser) {
        set_state(s, ST_DOWN, EW_ENOMEM, "out of memory");
        free(s);
        return NULL;
    }

    for (;;) {
        pthread_mutex_lock(&t->mu);
        bool stopping = t->stopping;
        pthread_mutex_unlock(&t->mu);
        if (stopping)
            break;
        int64_t now = ewi_now_ms();

        if (!s->sock) {
            if (now >= s->next_attempt) {
                ew_err code;
                /* What passed its deadline during the outage fails now, so
                 * the new connection never sends it. */
                if (s->role == STOMP_PUB)
                    expire(s, why);
                if (connect_once(s, why, sizeof why, &code)) {
                    s->up_since = ewi_now_ms();
                    s->fails = 0;
                    set_state(s, ST_UP, EW_OK, NULL);
                    ewi_log(t->m, EW_LOG_INFO, "STOMP %s connection to %s up (dialect %s, "
                            "heart-beats: send %d ms, expect %d ms)", role_name(s), t->url_text,
                            stomp_dialect_name(t->opt.dialect), s->hb.send_ms,
                            s->hb.expect_ms);
                } else {
                    stomp_sock_close(s->sock);
                    s->sock = NULL;
                    set_state(s, ST_DOWN, code, why);
                    /* The first failure of an outage is news; the next ones
                     * (every backoff step) only now and then. */
                    s->fails++;
                    ew_log_level lvl = s->fails == 1 || s->fails % 20 == 0 ? EW_LOG_WARN
                                                                           : EW_LOG_DEBUG;
                    if (ever_up(t))
                        ewi_log(t->m, lvl, "STOMP %s reconnect to %s failed (attempt %d): %s",
                                role_name(s), t->url_text, s->fails, why);
                    s->next_attempt = ewi_now_ms() + ewi_backoff_next(&s->backoff);
                    continue;
                }
            } else {
                /* Down: wait for the next attempt, keep deadlines. */
                struct pollfd p = {.fd = ewi_waker_fd(wk), .events = POLLIN};
                int wait = (int)(s->next_attempt - now);
                poll(&p, 1, wait < DEADLINE_SCAN_MS ? wait : DEADLINE_SCAN_MS);
                if (p.revents & POLLIN)
                    ewi_waker_drain(wk);
                if (s->role == STOMP_SUB)
                    take_work_down(s);
                else {
                    /* The consuming thread writes last_error too (under mu). */
                    char last[sizeof t->last_error];
                    pthread_mutex_lock(&t->mu);
                    memcpy(last, t->last_error, sizeof last);
                    pthread_mutex_unlock(&t->mu);
                    expire(s, last);
                }
                continue;
            }
        }

        take_work(s);
        /* Heart-beat out: an EOL when nothing else was written lately. */
        now = ewi_now_ms();
        if (s->role == STOMP_SUB)
            retry_given_up(s, now);
        if (s->hb.send_ms && !out_pending(s) && now - s->last_tx >= s->hb.send_ms / 2)
            ewi_buf_append(&s->out, "\n", 1);
        if (!flush_out(s, why, sizeof why)) {
            drop(s, EW_EDISCONNECTED, why);
            continue;
        }
        if (s->hb.expect_ms && now - s->last_rx > stomp_heartbeat_grace_ms(s->hb.expect_ms)) {
            snprintf(why, sizeof why, "no heart-beat from the broker for %lld ms",
                     (long long)(now - s->last_rx));
            drop(s, EW_EDISCONNECTED, why);
            continue;
        }
        if (s->role == STOMP_PUB && now - s->last_scan >= DEADLINE_SCAN_MS) {
            s->last_scan = now;
            expire(s, NULL);
        }

        int timeout = DEADLINE_SCAN_MS;
        if (s->hb.send_ms && s->hb.send_ms / 2 < timeout)
            timeout = s->hb.send_ms / 2;
        struct pollfd p[2] = {
            {.fd = ewi_waker_fd(wk), .events = POLLIN},
            {.fd = stomp_sock_fd(s->sock),
             .events = POLLIN | (out_pending(s) ? POLLOUT : 0)},
        };
        if (stomp_sock_pending(s->sock))
            timeout = 0;
        int n = poll(p, 2, timeout);
        if (n < 0 && errno != EINTR) {
            snprintf(why, sizeof why, "poll: %s", strerror(errno));
            drop(s, EW_EIO, why);
            continue;
        }
        if (p[0].revents & POLLIN)
            ewi_waker_drain(wk);
        if ((p[1].revents & (POLLIN | POLLERR | POLLHUP)) || stomp_sock_pending(s->sock)) {
            if (!read_in(s, why, sizeof why)) {
                drop(s, EW_EDISCONNECTED, why);
                continue;
            }
        }
    }
    shutdown_io(s);
    ewi_stomp_parser_free(s->parser);
    ewi_buf_free(&s->out);
    free(s);
    return NULL;
}
