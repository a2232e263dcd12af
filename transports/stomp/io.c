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
#include "transports/stomp/io.h"

#include <errno.h>
#include <inttypes.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* ---- completions, outside the lock --------------------------------------- */

/* Finished SEND records kept for reuse, and the largest frame buffer kept
 * with one: enough for the usual window, and no large body held on to. */
#define PEND_KEEP 256
#define PEND_KEEP_BUF 65536

stomp_pending *stomp_pending_new(ewi_transport *t)
{
    pthread_mutex_lock(&t->mu);
    stomp_pending *pd = t->pend_free;
    if (pd) {
        t->pend_free = pd->next;
        t->pend_free_n--;
    }
    pthread_mutex_unlock(&t->mu);
    if (!pd)
        return calloc(1, sizeof *pd);
    ewi_buf frame = pd->frame;
    *pd = (stomp_pending){0};
    pd->frame = frame;
    pd->frame.len = 0;
    return pd;
}

void stomp_io_complete_pub(ewi_transport *t, stomp_pending *pd, int err, const char *detail)
{
    ewi_pub *p = pd->pub;
    /* A SEND written once (then put back in line by a drop) may have
     * reached the broker: unconfirmed, it is in doubt, never "not sent". */
    size_t bytes = ewi_pub_bytes(p); /* before done: p goes with it */
    p->done(p, ewi_pub_unconfirmed(p, err), detail);
    pthread_mutex_lock(&t->mu);
    ewi_window_give(&t->window, 1, bytes);
    if (t->pend_free_n < PEND_KEEP && pd->frame.cap <= PEND_KEEP_BUF) {
        pd->next = t->pend_free;
        t->pend_free = pd;
        t->pend_free_n++;
        pd = NULL;
    }
    pthread_mutex_unlock(&t->mu);
    if (pd) {
        ewi_buf_free(&pd->frame);
        free(pd);
    }
}

/* true when the caller had given up: r is freed, and what it asked for
 * must be undone by the caller of finish_req. */
bool stomp_io_finish_req(ewi_transport *t, stomp_req *r, ew_err rc, const char *text)
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
bool stomp_io_ever_up(ewi_transport *t)
{
    pthread_mutex_lock(&t->mu);
    bool up = t->ever_up;
    pthread_mutex_unlock(&t->mu);
    return up;
}

bool stomp_io_out_pending(const io *s)
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

ew_err stomp_io_write_subscribe(io *s, stomp_sub *ss)
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
bool stomp_io_flush_out(io *s, char *err, size_t errlen)
{
    while (stomp_io_out_pending(s)) {
        bool want_read;
        long n = ewi_sock_write(s->sock, s->out.data + s->out_off,
                                  s->out.len - s->out_off, &want_read, err, errlen);
        if (n < 0)
            return false;
        if (n == 0)
            break;
        s->out_off += (size_t)n;
        s->last_tx = ewi_now_ms();
    }
    if (!stomp_io_out_pending(s))
        s->out.len = s->out_off = 0;
    return true;
}

/* ---- subscriptions ------------------------------------------------------- */

stomp_sub *stomp_io_sub_by_gen(ewi_transport *t, uint64_t gen)
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

void stomp_io_free_dlq_queue(stomp_sub *ss)
{
    for (stomp_msgdata *md = ss->dq_head, *next; md; md = next) {
        next = md->next;
        ewi_envelope_unref(md->env);
        free(md);
    }
    ss->dq_head = ss->dq_tail = NULL;
}

/* A closing subscription goes once core settled everything it holds: then
 * UNSUBSCRIBE returns whatever the broker still had sent us. A subscription
 * with requeued messages (dialects without a requeueing NACK) is closed and
 * opened again at that point, which gives those messages back; meanwhile
 * on_message delivers nothing new for it, so that point comes promptly. */
void stomp_io_sub_check(io *s, stomp_sub *ss)
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
        stomp_io_free_dlq_queue(ss);
        pthread_mutex_unlock(&t->mu);
        free(ss);
        return;
    }
    if (ss->closing)
        return;
    if (ss->recycle && s->sock && ss->active) {
        write_unsubscribe(s, ss);
        ss->recycle = false;
        stomp_io_write_subscribe(s, ss);
    }
}

/* Given-up subscriptions, and those whose queue's declaration was refused,
 * whose retry time came: declared (rabbitmq) and subscribed once more. */
static void retry_given_up(io *s, int64_t now)
{
    for (stomp_sub *ss = s->t->subs; ss; ss = ss->next) {
        if (!(ss->given_up || ss->decl_wait) || ss->closing || ss->active ||
            now < ss->retry_at)
            continue;
        bool transient;
        if (!stomp_io_declare_sub(s, ss, &transient)) {
            if (transient)
                ss->retry_at = now + 1000; /* the administration connection */
            continue;
        }
        ss->decl_wait = false;
        stomp_io_write_subscribe(s, ss);
    }
}

/* ---- work from other threads --------------------------------------------- */

static void take_work(io *s)
{
    ewi_transport *t = s->t;
    stomp_pending *pend = NULL;
    stomp_msgdata *settles = NULL;
    ewi_workq_item *reqs = NULL;
    /* Requests first, then settles, which are handled first: a settle
     * queued before a request (the ACKs of a dead-letter read before its
     * close) is then always taken with it or earlier, never after the
     * request freed its subscription. */
    if (s->role == STOMP_SUB)
        reqs = ewi_workq_take(&t->reqs);
    pthread_mutex_lock(&t->mu);
    if (s->role == STOMP_PUB) {
        pend = t->pend_head;
        t->pend_head = t->pend_tail = NULL;
    } else {
        settles = t->settle_head;
        t->settle_head = t->settle_tail = NULL;
    }
    pthread_mutex_unlock(&t->mu);

    /* SENDs: into the output buffer, then in flight until their RECEIPT. */
    while (pend) {
        stomp_pending *pd = pend;
        pend = pd->next;
        pd->next = NULL;
        if (ewi_buf_append(&s->out, pd->frame.data, pd->frame.len) != EW_OK) {
            stomp_io_complete_pub(t, pd, EW_ENOMEM, "out of memory");
            continue;
        }
        pd->wseq = ++s->wseq;
        pd->pub->written = true; /* in the output buffer: it may reach the broker */
        if (pd->pub->deadline_ms < s->infl_due)
            s->infl_due = pd->pub->deadline_ms;
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
        free(md);
        stomp_io_sub_check(s, ss);
    }

    while (reqs) {
        stomp_req *r = EWI_WORKQ_ENTRY(reqs, stomp_req, link);
        reqs = reqs->next;
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
                stomp_io_write_subscribe(s, ss);
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
                    stomp_io_finish_req(t, w, EW_ECLOSED, "unsubscribed before it was subscribed");
                    break;
                }
            if (!ss->sub) {
                pthread_mutex_lock(&t->mu);
                stomp_io_free_dlq_queue(ss);
                pthread_mutex_unlock(&t->mu);
            }
            stomp_io_finish_req(t, r, EW_OK, NULL);
            stomp_io_sub_check(s, ss); /* may free ss */
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
    t->pend_tail = NULL;
    for (stomp_pending **pp = &t->pend_head; *pp;) {
        stomp_pending *pd = *pp;
        if (pd->pub->deadline_ms <= now) {
            *pp = pd->next;
            pd->next = dead;
            dead = pd;
        } else {
            t->pend_tail = pd;
            pp = &pd->next;
        }
    }
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
        stomp_io_complete_pub(t, pd, EW_ETIMEDOUT, ewi_pub_detail(pd->pub, detail, written));
    }
    /* The in-flight list (up to the window) is walked only when its
     * earliest deadline may have passed. */
    if (s->infl_due > now)
        return;
    snprintf(detail, sizeof detail, "sent, but no receipt from the STOMP broker before the "
             "deadline: it may have been delivered");
    int64_t due = INT64_MAX;
    for (stomp_pending *pd = s->infl_head, *next; pd; pd = next) {
        next = pd->next;
        if (pd->pub->deadline_ms <= now)
            stomp_io_fail_pub_now(s, pd, EW_ETIMEDOUT, detail);
        else if (pd->pub->deadline_ms < due)
            due = pd->pub->deadline_ms;
    }
    s->infl_due = due;
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
            ok = stomp_io_flush_out(s, why, sizeof why);
            struct pollfd p = {.fd = ewi_sock_fd(s->sock),
                               .events = POLLIN | (stomp_io_out_pending(s) ? POLLOUT : 0)};
            if (ok && poll(&p, 1, ewi_left_ms(deadline)) > 0) {
                /* RECEIPTs of SENDs still count; the DISCONNECT's ends it. */
                bool ww;
                long n = ewi_sock_read(s->sock, s->rbuf, sizeof s->rbuf, &ww, why,
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
                            stomp_io_on_receipt(s, id);
                    }
                    ewi_stomp_frame_free(f);
                }
                if (n < 0 || bye)
                    break;
            }
        }
    }
    ewi_sock_close(s->sock);
    s->sock = NULL;
    /* What is left fails: the transport is closed. */
    stomp_pending *pend = NULL;
    ewi_workq_item *reqs = NULL;
    pthread_mutex_lock(&t->mu);
    if (s->role == STOMP_PUB) {
        pend = t->pend_head;
        t->pend_head = t->pend_tail = NULL;
    }
    t->state[s->role] = ST_DOWN;
    pthread_mutex_unlock(&t->mu);
    /* From here on a request is refused by ewi_workq_push. */
    if (s->role == STOMP_SUB)
        reqs = ewi_workq_close(&t->reqs);
    for (stomp_pending *pd = s->infl_head, *next; pd; pd = next) {
        next = pd->next;
        stomp_io_complete_pub(t, pd, EW_ECLOSED, "the transport stopped before the broker's receipt: "
                                        "it may have been delivered");
    }
    s->infl_head = s->infl_tail = NULL;
    for (stomp_pending *pd = pend, *next; pd; pd = next) {
        next = pd->next;
        stomp_io_complete_pub(t, pd, EW_ECLOSED,
                     ewi_pub_detail(pd->pub, "the transport stopped before the send",
                                    "written on a lost connection, but the transport "
                                    "stopped before the broker's receipt: it may have "
                                    "been delivered"));
    }
    for (stomp_req *r = s->waiting, *next; r; r = next) {
        next = r->next;
        stomp_io_finish_req(t, r, EW_ECLOSED, "the transport stopped");
    }
    s->waiting = NULL;
    for (ewi_workq_item *it = reqs, *next; it; it = next) {
        next = it->next;
        stomp_req *r = EWI_WORKQ_ENTRY(it, stomp_req, link);
        if (r->kind == REQ_SUBSCRIBE || r->kind == REQ_DLQ_OPEN) {
            pthread_mutex_lock(&t->mu);
            r->ss->next = t->subs; /* freed with the transport */
            t->subs = r->ss;
            r->ss->closing = true;
            pthread_mutex_unlock(&t->mu);
        } else {
            r->ss->closing = true;
        }
        stomp_io_finish_req(t, r, EW_ECLOSED, "the transport stopped");
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
    bool has = t->settle_head != NULL;
    pthread_mutex_unlock(&t->mu);
    if (!has && !ewi_workq_pending(&t->reqs))
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
    ewi_reconnect_init(&s->rc, 100, t->opt.reconnect_max_ms);
    char why[1024] = "";
    if (!s->parser) {
        stomp_io_set_state(s, ST_DOWN, EW_ENOMEM, "out of memory");
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
            if (ewi_reconnect_wait_ms(&s->rc, now) == 0) {
                ew_err code;
                /* What passed its deadline during the outage fails now, so
                 * the new connection never sends it. */
                if (s->role == STOMP_PUB)
                    expire(s, why);
                if (stomp_io_connect_once(s, why, sizeof why, &code)) {
                    ewi_reconnect_up(&s->rc, ewi_now_ms());
                    stomp_io_set_state(s, ST_UP, EW_OK, NULL);
                    ewi_conn_state(t->m, (unsigned)s->role, true);
                    ewi_log(t->m, EW_LOG_INFO, "STOMP %s connection to %s up (dialect %s, "
                            "heart-beats: send %d ms, expect %d ms)", stomp_io_role_name(s), t->url_text,
                            stomp_dialect_name(t->opt.dialect), s->hb.send_ms,
                            s->hb.expect_ms);
                } else {
                    ewi_sock_close(s->sock);
                    s->sock = NULL;
                    stomp_io_set_state(s, ST_DOWN, code, why);
                    /* The first failure of an outage is news; the next ones
                     * (every backoff step) only now and then. */
                    ewi_reconnect_failed(&s->rc, ewi_now_ms());
                    unsigned fails = s->rc.failures;
                    ew_log_level lvl = fails == 1 || fails % 20 == 0 ? EW_LOG_WARN
                                                                     : EW_LOG_DEBUG;
                    if (stomp_io_ever_up(t))
                        ewi_log(t->m, lvl, "STOMP %s reconnect to %s failed (attempt %u): %s",
                                stomp_io_role_name(s), t->url_text, fails, why);
                    continue;
                }
            } else {
                /* Down: wait for the next attempt, keep deadlines. */
                struct pollfd p = {.fd = ewi_waker_fd(wk), .events = POLLIN};
                int wait = ewi_reconnect_wait_ms(&s->rc, now);
                if (s->role == STOMP_SUB && ewi_workq_pending(&t->reqs))
                    wait = 0; /* its wake-up was cleared before it was taken */
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
        if (s->hb.send_ms && !stomp_io_out_pending(s) && now - s->last_tx >= s->hb.send_ms / 2)
            ewi_buf_append(&s->out, "\n", 1);
        if (!stomp_io_flush_out(s, why, sizeof why)) {
            stomp_io_drop(s, EW_EDISCONNECTED, why);
            continue;
        }
        if (s->hb.expect_ms && now - s->last_rx > stomp_heartbeat_grace_ms(s->hb.expect_ms)) {
            snprintf(why, sizeof why, "no heart-beat from the broker for %lld ms",
                     (long long)(now - s->last_rx));
            stomp_io_drop(s, EW_EDISCONNECTED, why);
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
            {.fd = ewi_sock_fd(s->sock),
             .events = POLLIN | (stomp_io_out_pending(s) ? POLLOUT : 0)},
        };
        if (ewi_sock_pending(s->sock))
            timeout = 0;
        int n = poll(p, 2, timeout);
        if (n < 0 && errno != EINTR) {
            snprintf(why, sizeof why, "poll: %s", strerror(errno));
            stomp_io_drop(s, EW_EIO, why);
            continue;
        }
        if (p[0].revents & POLLIN)
            ewi_waker_drain(wk);
        if ((p[1].revents & (POLLIN | POLLERR | POLLHUP)) || ewi_sock_pending(s->sock)) {
            if (!stomp_io_read_in(s, why, sizeof why)) {
                stomp_io_drop(s, EW_EDISCONNECTED, why);
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

