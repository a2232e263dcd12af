/* The STOMP I/O thread's frames in: reads the socket, parses, and dispatches
 * MESSAGE (to its subscription), RECEIPT (a SEND confirmed, a subscription or
 * request done) and ERROR (what it refers to fails or is retried). */
#include "transports/stomp/io.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* ---- frames in ------------------------------------------------------------ */

/* A message's settle record with its ack id in the same allocation. */
static stomp_msgdata *msgdata_new(const char *ack)
{
    size_t n = strlen(ack) + 1;
    stomp_msgdata *md = calloc(1, sizeof *md + n);
    if (!md)
        return NULL;
    md->ack_id = (char *)(md + 1);
    memcpy(md->ack_id, ack, n);
    return md;
}

void stomp_io_fail_pub_now(io *s, stomp_pending *pd, int err, const char *text)
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
    stomp_io_complete_pub(s->t, pd, err, text);
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
            abandoned |= stomp_io_finish_req(s->t, r, EW_OK, NULL);
        } else {
            pp = &r->next;
        }
    }
    if (abandoned) {
        /* The caller gave up waiting: core never got ss. */
        ss->closing = true;
        ss->release = true;
        stomp_io_sub_check(s, ss);
        return false;
    }
    if (ss->sub && !ss->closing)
        ewi_sub_state(ss->sub, true);
    return true;
}

/* The number in a receipt or subscription id we made: what strtoull gives,
 * without its cost for the usual all-digit text (once or twice a message). */
static uint64_t id_number(const char *s)
{
    uint64_t n = 0;
    size_t i = 0;
    for (; i < 19 && s[i] >= '0' && s[i] <= '9'; i++)
        n = n * 10 + (uint64_t)(s[i] - '0');
    return i > 0 && s[i] == '\0' ? n : strtoull(s, NULL, 10);
}

void stomp_io_on_receipt(io *s, const char *id)
{
    if (id[0] == 'p') {
        uint64_t n = id_number(id + 1);
        for (stomp_pending *pd = s->infl_head; pd; pd = pd->next)
            if (pd->receipt == n) {
                stomp_io_fail_pub_now(s, pd, EW_OK, NULL);
                return;
            }
        return; /* a late receipt of a SEND that already timed out */
    }
    if (id[0] == 's') {
        stomp_sub *ss = stomp_io_sub_by_gen(s->t, id_number(id + 1));
        if (ss)
            sub_confirmed(s, ss);
    }
}

/* The headers of a MESSAGE that on_message reads, in one pass over them;
 * the first of a repeated header counts, as with ewi_stomp_frame_get. */
typedef struct message_refs {
    const char *subid, *ack, *red;
} message_refs;

static message_refs message_refs_of(const ewi_stomp_frame *f)
{
    message_refs r = {NULL, NULL, NULL};
    for (size_t i = 0; i < f->nheaders; i++) {
        const ewi_stomp_header *h = &f->headers[i];
        const char **slot = h->klen == 12 && memcmp(h->key, "subscription", 12) == 0 ? &r.subid
                           : h->klen == 3 && memcmp(h->key, "ack", 3) == 0         ? &r.ack
                           : h->klen == 11 && memcmp(h->key, "redelivered", 11) == 0 ? &r.red
                                                                                    : NULL;
        if (slot && !*slot)
            *slot = h->value;
    }
    return r;
}

static void on_message(io *s, ewi_stomp_frame *f)
{
    ewi_transport *t = s->t;
    message_refs refs = message_refs_of(f);
    const char *subid = refs.subid, *ack = refs.ack;
    stomp_sub *ss = subid ? stomp_io_sub_by_gen(t, id_number(subid)) : NULL;
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
    const char *red = refs.red;
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
        stomp_msgdata *md = msgdata_new(ack);
        ew_envelope *env = ewi_envelope_new();
        if (!md || !env || stomp_message_read(f, env) != EW_OK) {
            ewi_envelope_unref(env);
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
    stomp_msgdata *md = msgdata_new(ack);
    if (!msg || !md || stomp_message_read(f, msg->env) != EW_OK) {
        /* Out of memory: leave it unacknowledged for redelivery. */
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
    ewi_deliveries_add(&s->dl, msg);
}

/* RabbitMQ's "Server cancelled subscription" for a subscription of a
 * listener removed by ew_unlisten (its queue deleted): the broker keeps the
 * connection, and so do we; the other listeners go on. */
static bool cancel_of_removed(io *s, const ewi_stomp_frame *f)
{
    ewi_transport *t = s->t;
    const char *id = ewi_stomp_frame_get(f, "subscription");
    if (t->opt.dialect != STOMP_RABBITMQ || !id || ewi_stomp_frame_get(f, "receipt-id"))
        return false;
    stomp_sub *ss = stomp_io_sub_by_gen(t, strtoull(id, NULL, 10));
    if (ss && !ss->closing)
        return false;
    ewi_log(t->m, EW_LOG_INFO, "STOMP broker %s cancelled subscription %s of a removed "
            "listener (its queue was deleted)", t->url_text, id);
    return true;
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
                stomp_io_fail_pub_now(s, pd, EW_EBROKER, text);
                return;
            }
    }
    /* RabbitMQ's ERRORs often carry no receipt-id. The broker handles
     * frames in order, so the oldest frame still waiting for its RECEIPT is
     * the likely cause: it takes the blame. Not for RabbitMQ's "Server
     * cancelled subscription" (its queue was deleted), which names the
     * subscription and no frame of ours: the reconnect that follows
     * declares the queue again and subscribes. */
    bool cancelled = !rid && ewi_stomp_frame_get(f, "subscription");
    stomp_sub *ss = rid && rid[0] == 's' ? stomp_io_sub_by_gen(t, strtoull(rid + 1, NULL, 10)) : NULL;
    if (!ss && !cancelled && !(rid && rid[0] == 'p') && s->role == STOMP_SUB) {
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
                stomp_io_finish_req(t, r, EW_EBROKER, text);
                waited = true;
                break;
            }
        }
        if (waited) {
            /* Its subscribe fails with the broker's text: core never got it. */
            ss->closing = true;
            ss->release = true;
            ss->active = false;
            stomp_io_sub_check(s, ss);
        } else {
            /* The reconnect that follows subscribes it again. */
            stomp_io_sub_refused(s, ss, false, text);
        }
    }
    ewi_report(t->m, EW_EBROKER, NULL, NULL, NULL, "STOMP broker %s: %s", t->url_text,
               text);
}

void stomp_io_sub_refused(io *s, stomp_sub *ss, bool retry_here, const char *text)
{
    ewi_transport *t = s->t;
    ss->active = false;
    if (ss->sub)
        ewi_sub_state(ss->sub, false);
    ss->wseq = 0;
    if (++ss->error_strikes < MAX_ERROR_RESENDS) {
        if (retry_here) {
            /* Nothing closed the connection: try again shortly. */
            int ms = t->opt.reconnect_max_ms < 100    ? 100
                     : t->opt.reconnect_max_ms > 5000 ? 5000
                                                      : t->opt.reconnect_max_ms;
            ss->decl_wait = true;
            ss->retry_at = ewi_now_ms() + ms;
        }
        return;
    }
    /* Refused again and again: stop resubscribing with every reconnect
     * (each refused SUBSCRIBE closes the connection of every listener),
     * retry now and then. Core still holds ss. */
    ss->decl_wait = false;
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
    /* ewi_report names the listener's queue; a dead-letter reader is named
     * by its destination. */
    ewi_report(t->m, EW_EBROKER, ss->sub ? ss->sub->queue : NULL,
               ss->sub ? ss->sub->event : NULL, NULL,
               "%sSUBSCRIBE to %s refused %d times in a row, no deliveries until the "
               "broker takes it (next try in %d s): %s",
               ss->sub ? "" : "dead-letter reader: ", ss->target.dest, ss->error_strikes,
               ss->retry_ms / 1000, text);
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
    stomp_sub *ss = subid ? stomp_io_sub_by_gen(t, strtoull(subid, NULL, 10)) : NULL;
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

static bool read_frames(io *s, char *why, size_t whylen)
{
    for (int rounds = 0; rounds < 16; rounds++) {
        bool want_write;
        long n = ewi_sock_read(s->sock, s->rbuf, sizeof s->rbuf, &want_write, why,
                                 whylen);
        if (n < 0)
            return false;
        if (n == 0 && !ewi_sock_pending(s->sock))
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
                    stomp_io_on_receipt(s, id);
                break;
            }
            case EWI_STOMP_ERROR:
                if (cancel_of_removed(s, f))
                    break;
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

/* Reads and dispatches; false when the connection must be dropped. The
 * messages read go to the workers together, before any drop. */
bool stomp_io_read_in(io *s, char *why, size_t whylen)
{
    bool ok = read_frames(s, why, whylen);
    ewi_deliveries_flush(&s->dl);
    return ok;
}
