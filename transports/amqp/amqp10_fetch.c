/* dlq_take: reading a dead-letter queue E::L.dlq on the caller's thread.
 *
 * The caller asks the I/O thread for a receiver on the queue with credit 1
 * and waits up to its timeout for the first message. Each message is passed
 * to the callback, then accepted (removed); the next one is asked for with
 * credit 1 in drain mode (artemis), so an empty queue answers at once
 * instead of making the caller wait out a timeout. RabbitMQ 3.10's plugin
 * fails a drain on a classic queue (function_clause in
 * rabbit_classic_queue:handle_event send_drained, the session ends with
 * amqp:internal-error), so the rabbitmq dialect asks with plain credit 1 and
 * takes a short silence (LINGER_MS) as the end of the queue. The link is
 * closed at the end, and whatever the broker sent and nobody took goes
 * back; the caller returns once the broker answered the close (see
 * FETCH_CLOSE), so that the next read sees the queue in its order. */
#include "amqp10.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <proton/connection.h>
#include <proton/delivery.h>
#include <proton/link.h>

#define LINGER_MS 300
/* A drain not answered by then is asked again (artemis). Artemis 2.40
 * ignores a drain that arrives while it is still finishing the previous
 * one (its sender keeps a "draining" flag that its queue's thread clears
 * only after handing the answer to the connection's thread). When the
 * previous answer went out before the new drain came in and the flag was
 * cleared after it, nothing ever answers the new drain, and no message
 * comes either: the read waited out the send timeout and failed with
 * EW_ETIMEDOUT. A flow with drain set, sent again, asks again. A drain
 * answered without a message ends the read only when a second one, asked
 * right after it, is answered the same way: the first answer can be the
 * late answer to an earlier drain. */
#define DRAIN_AGAIN_MS 1000

typedef enum fetch_op { FETCH_OPEN, FETCH_MORE, FETCH_CLOSE } fetch_op;

/* One work item per request kind: a CLOSE must queue behind the accepts
 * posted before it (a reused item would jump ahead of them and the link
 * would close with messages taken but never accepted). */
typedef struct fetch_work {
    amqp10_work w; /* first */
    amqp10_fetch *f;
    fetch_op op;
} fetch_work;

struct amqp10_fetch {
    amqp10_obj_kind kind;  /* AMQP10_OBJ_FETCH: first, for link contexts */
    fetch_work w_open, w_more, w_close;
    amqp10_addr source;
    /* under t->mu */
    int queued;          /* items of this fetch in the work queue */
    bool more_queued;    /* w_more is in the work queue */
    int more;            /* messages asked for since the last w_more ran */
    amqp10_rec *ready_head, *ready_tail;
    bool empty;          /* a drain ended without a message */
    bool attached;       /* the broker answered the attach */
    bool failed;
    bool lost;           /* failed because the connection went */
    char error[512];
    bool closed;         /* the I/O thread is done with it */
    /* I/O thread only */
    pn_link_t *l;
    uint64_t link_id;
    amqp10_acc acc;        /* the delivery being received */
    bool want_open;      /* attach once connected */
    bool detaching;      /* closed, waiting for the broker's detach */
    int64_t detach_by;   /* ... until then */
    bool draining;
    bool confirming;     /* a drain answered empty: asked once more */
    int64_t drain_again_at; /* ... asked again then (while credit is left) */
    bool got_since_more;
    amqp10_fetch *next;
};


/* ---- the I/O thread's side ---------------------------------------------- */

static void unlink_fetch(ewi_transport *t, amqp10_fetch *f)
{
    for (amqp10_fetch **pp = &t->fetches; *pp; pp = &(*pp)->next)
        if (*pp == f) {
            *pp = f->next;
            return;
        }
}

static void attach(ewi_transport *t, amqp10_fetch *f)
{
    f->want_open = false;
    /* A session of its own: a reader comes and goes, and a refused attach
     * (RabbitMQ ends the session) disturbs no listener. */
    f->l = amqp10_open_link(t, false, &f->source, f, true);
    f->link_id = t->next_link_id;
    f->draining = false;
    pn_link_flow(f->l, 1);
}

static void fail_locked(ewi_transport *t, amqp10_fetch *f, const char *why)
{
    if (!f->failed) {
        f->failed = true;
        amqp10_textf(f->error, sizeof f->error, "%s", why);
    }
    pthread_cond_broadcast(&t->cond);
}

/* Releases every delivery of l not settled yet: the broker gives each
 * to a consumer again. */
static void release_unsettled(pn_link_t *l)
{
    for (pn_delivery_t *d = pn_unsettled_head(l), *next; d; d = next) {
        next = pn_unsettled_next(d);
        pn_delivery_update(d, PN_RELEASED);
        pn_delivery_settle(d);
    }
}

/* Drops what the caller has not taken yet: the broker keeps it. */
static void drop_ready_locked(amqp10_fetch *f)
{
    for (amqp10_rec *r = f->ready_head, *n; r; r = n) {
        n = r->next;
        ewi_envelope_unref(r->env);
        free(r);
    }
    f->ready_head = f->ready_tail = NULL;
}

/* The I/O thread is done with f (its link closed and let go). */
static void closed(ewi_transport *t, amqp10_fetch *f)
{
    f->l = NULL;
    f->detaching = false;
    amqp10_acc_reset(&f->acc);
    f->link_id = 0;
    pthread_mutex_lock(&t->mu);
    drop_ready_locked(f);
    f->closed = true;
    pthread_cond_broadcast(&t->cond);
    pthread_mutex_unlock(&t->mu);
}

void amqp10_fetch_work(ewi_transport *t, amqp10_work *w)
{
    fetch_work *fw = (fetch_work *)w;
    amqp10_fetch *f = fw->f;
    fetch_op op = fw->op;
    pthread_mutex_lock(&t->mu);
    f->queued--;
    int more = 0;
    if (op == FETCH_MORE) {
        more = f->more;
        f->more = 0;
        f->more_queued = false;
    }
    bool exited = t->io_exited;
    pthread_mutex_unlock(&t->mu);

    switch (op) {
    case FETCH_OPEN:
        if (exited) {
            pthread_mutex_lock(&t->mu);
            fail_locked(t, f, "the transport stopped");
            pthread_mutex_unlock(&t->mu);
            break;
        }
        f->next = t->fetches;
        t->fetches = f;
        if (t->conn && t->connected && !t->closing) {
            attach(t, f);
        } else {
            f->want_open = true;
        }
        break;
    case FETCH_MORE:
        if (f->l && more > 0) {
            f->got_since_more = false;
            f->confirming = false;
            if (t->opt.dialect == AMQP10_DIALECT_RABBITMQ) {
                pn_link_flow(f->l, more);
            } else {
                f->draining = true;
                f->drain_again_at = ewi_now_ms() + DRAIN_AGAIN_MS;
                pn_link_drain(f->l, more);
            }
        }
        break;
    case FETCH_CLOSE: {
        /* What was fetched and not taken goes back to the queue: a closed
         * link leaves its unsettled deliveries with its session, which
         * lives on for the next link (RabbitMQ gives them back only when
         * the session ends). */
        bool live = f->l && t->conn && t->connected && !t->closing &&
                    !(pn_link_state(f->l) & PN_REMOTE_CLOSED);
        bool rabbitmq = t->opt.dialect == AMQP10_DIALECT_RABBITMQ;
        if (f->l && !(live && rabbitmq))
            release_unsettled(f->l);
        if (live) {
            /* The caller returns once the broker answered the detach
             * (and on RabbitMQ the end of the read's session, below): a
             * read that looked (peek) and the next read must see the
             * messages in their order. Released while this consumer was
             * still there, and read again at once on a new session,
             * RabbitMQ 3.10 now and then put the first one back behind
             * the others. So on RabbitMQ the consumer goes first, the
             * deliveries are released after its detach, and the session
             * ends before the caller goes on. */
            amqp10_close_link_waiting(t, f->l);
            f->detaching = true;
            f->detach_by = ewi_now_ms() + AMQP10_ANSWER_MS;
            break;
        }
        unlink_fetch(t, f);
        amqp10_close_link(t, f->l);
        closed(t, f);
        break;
    }
    }
    pthread_mutex_lock(&t->mu);
    pthread_cond_broadcast(&t->cond); /* the caller may wait for queued == 0 */
    pthread_mutex_unlock(&t->mu);
}

void amqp10_fetch_on_open(ewi_transport *t, amqp10_fetch *f, pn_link_t *l)
{
    (void)l; /* credit was given with the attach */
    pthread_mutex_lock(&t->mu);
    f->attached = true;
    pthread_cond_broadcast(&t->cond);
    pthread_mutex_unlock(&t->mu);
}

/* The session a read was alone on ended (amqp10_ssn_end_then). */
static void session_ended(ewi_transport *t, void *arg)
{
    closed(t, arg);
}

void amqp10_fetch_on_lost(ewi_transport *t, amqp10_fetch *f, const char *why)
{
    if (f->detaching) {
        /* The broker answered the detach of FETCH_CLOSE (or the session
         * ended): what is still unsettled goes back now (the session
         * holds it, the consumer is gone). On RabbitMQ the session then
         * ends, and the caller returns once the broker answered that, so
         * the messages are back in their order before the next read's
         * consumer exists. */
        release_unsettled(f->l);
        pn_link_set_context(f->l, NULL);
        unlink_fetch(t, f);
        if (t->opt.dialect == AMQP10_DIALECT_RABBITMQ &&
            amqp10_ssn_end_then(t, f->l, session_ended, f))
            return;
        closed(t, f);
        return;
    }
    amqp10_close_link(t, f->l);
    f->l = NULL;
    amqp10_acc_reset(&f->acc);
    f->link_id = 0;
    char text[700];
    amqp10_textf(text, sizeof text, "reading %s: %s", f->source.addr, why);
    pthread_mutex_lock(&t->mu);
    drop_ready_locked(f);
    fail_locked(t, f, text);
    pthread_mutex_unlock(&t->mu);
}

void amqp10_fetch_on_flow(ewi_transport *t, amqp10_fetch *f, pn_link_t *l)
{
    if (!f->draining || pn_link_credit(l) > 0)
        return;
    f->draining = false;
    pn_link_set_drain(l, false);
    if (!f->got_since_more && !f->confirming) {
        f->confirming = true;
        f->draining = true;
        f->drain_again_at = ewi_now_ms() + DRAIN_AGAIN_MS;
        pn_link_drain(l, 1);
        return;
    }
    if (!f->got_since_more) {
        pthread_mutex_lock(&t->mu);
        f->empty = true;
        pthread_cond_broadcast(&t->cond);
        pthread_mutex_unlock(&t->mu);
    }
}

void amqp10_fetch_on_delivery(ewi_transport *t, amqp10_fetch *f, pn_delivery_t *d)
{
    if (!pn_delivery_readable(d))
        return; /* read already (an update of it): nothing to read */
    int got = amqp10_acc_read(&f->acc, d);
    if (got == 0)
        return; /* the rest is still coming */
    if (got == -1) {
        pn_link_flow(pn_delivery_link(d), 1); /* aborted: ask for another */
        return;
    }
    size_t len = 0;
    char *bytes = got == 1 ? amqp10_acc_take(&f->acc, &len) : NULL;
    ew_envelope *env = bytes ? ewi_envelope_new() : NULL;
    amqp10_rec *rec = env ? calloc(1, sizeof *rec) : NULL;
    char err[512];
    ew_err rc = rec ? amqp10_message_decode(bytes, len, env, NULL, err, sizeof err)
                    : EW_ENOMEM;
    free(bytes);
    if (rc == EW_EDECODE) {
        ewi_log(t->m, EW_LOG_WARN, "amqp %s: %s: %s", t->where, f->source.addr, err);
        rc = EW_OK; /* the caller still gets the raw bytes */
    }
    if (rc != EW_OK) {
        free(rec);
        ewi_envelope_unref(env);
        pn_delivery_update(d, PN_RELEASED);
        pn_delivery_settle(d);
        pthread_mutex_lock(&t->mu);
        fail_locked(t, f, "out of memory");
        pthread_mutex_unlock(&t->mu);
        return;
    }
    rec->w.kind = AMQP10_W_SETTLE;
    rec->owner = AMQP10_REC_FETCH;
    rec->holder = f;
    rec->env = env;
    rec->link_id = f->link_id;
    rec->d = d;
    f->got_since_more = true;
    pthread_mutex_lock(&t->mu);
    if (f->ready_tail)
        f->ready_tail->next = rec;
    else
        f->ready_head = rec;
    f->ready_tail = rec;
    pthread_cond_broadcast(&t->cond);
    pthread_mutex_unlock(&t->mu);
}

void amqp10_fetch_settle(ewi_transport *t, amqp10_rec *rec)
{
    (void)t;
    amqp10_fetch *f = rec->holder;
    if (rec->link_id && f && rec->link_id == f->link_id && f->l) {
        pn_delivery_update(rec->d, rec->how == EWI_ACK ? PN_ACCEPTED : PN_RELEASED);
        pn_delivery_settle(rec->d);
    }
    ewi_envelope_unref(rec->env);
    free(rec);
}

void amqp10_fetch_tick(ewi_transport *t, int64_t now)
{
    for (amqp10_fetch *f = t->fetches, *next; f; f = next) {
        next = f->next;
        if (f->draining && f->l && !f->detaching && now >= f->drain_again_at &&
            pn_link_credit(f->l) > 0) {
            ewi_log(t->m, EW_LOG_DEBUG,
                    "amqp %s: no answer to the drain of a read of %s in %d ms; asking again",
                    t->where, f->source.addr, DRAIN_AGAIN_MS);
            pn_link_drain(f->l, 0); /* the same credit, drain set: a flow again */
            f->drain_again_at = now + DRAIN_AGAIN_MS;
        }
        if (!f->detaching || now < f->detach_by)
            continue;
        ewi_log(t->m, EW_LOG_WARN,
                "amqp %s: the broker did not answer the detach of a read of %s in %d ms; "
                "going on",
                t->where, f->source.addr, AMQP10_ANSWER_MS);
        amqp10_fetch_on_lost(t, f, "no answer to the detach");
    }
}

void amqp10_fetch_attach_all(ewi_transport *t)
{
    for (amqp10_fetch *f = t->fetches; f; f = f->next)
        if (f->want_open && !f->l)
            attach(t, f);
}

void amqp10_fetch_disconnect_all(ewi_transport *t, const char *why, bool final)
{
    for (amqp10_fetch *f = t->fetches, *next; f; f = next) {
        next = f->next;
        if (f->detaching) {
            /* Its messages go back with the connection. */
            unlink_fetch(t, f);
            closed(t, f);
            continue;
        }
        if (f->want_open && !f->l && !final)
            continue; /* not attached yet: it will be on the next connection */
        f->l = NULL;
        amqp10_acc_reset(&f->acc);
        f->link_id = 0;
        char text[700];
        amqp10_textf(text, sizeof text, "reading %s: connection lost: %s", f->source.addr,
                 why);
        pthread_mutex_lock(&t->mu);
        if (!f->failed)
            f->lost = true;
        drop_ready_locked(f);
        fail_locked(t, f, text);
        pthread_mutex_unlock(&t->mu);
    }
    if (final)
        t->fetches = NULL; /* their callers free them once they see the exit */
}

/* ---- the caller's side -------------------------------------------------- */

/* Asks the I/O thread for op; false when it is gone. t->mu held. */
static bool request_locked(ewi_transport *t, amqp10_fetch *f, fetch_op op)
{
    if (t->io_exited)
        return false;
    fetch_work *fw = op == FETCH_OPEN ? &f->w_open : op == FETCH_MORE ? &f->w_more
                                                                       : &f->w_close;
    if (op == FETCH_MORE) {
        f->more++;
        if (f->more_queued)
            return true; /* the queued one asks for all of them */
        f->more_queued = true;
    }
    fw->w.kind = AMQP10_W_FETCH;
    fw->f = f;
    fw->op = op;
    f->queued++;
    amqp10_post_locked(t, &fw->w);
    return true;
}

/* Waits on t->cond until deadline (monotonic ms); false on timeout. */
static bool wait_until(ewi_transport *t, int64_t deadline)
{
    if (ewi_left_ms(deadline) == 0)
        return false;
    ewi_cond_wait_until(&t->cond, &t->mu, deadline);
    return true;
}

/* Asks the I/O thread to close f's link, and frees f once no item of it is
 * queued and the I/O thread let go. t->mu held; released on return. */
static void close_and_free(ewi_transport *t, amqp10_fetch *f)
{
    if (!request_locked(t, f, FETCH_CLOSE)) {
        drop_ready_locked(f);
        f->closed = true;
    }
    while (!(f->queued == 0 && (f->closed || t->io_exited)))
        pthread_cond_wait(&t->cond, &t->mu);
    drop_ready_locked(f);
    pthread_mutex_unlock(&t->mu);
    amqp10_acc_reset(&f->acc); /* the I/O thread is done with f */
    free(f);
}

ew_err amqp10_dlq_take(ewi_transport *t, ewi_dlq_req *req)
{
    req->taken = 0;
    if (req->max == 0)
        return EW_OK;
    char err[512];
    int64_t deadline = ewi_now_ms() + (req->timeout_ms > 0 ? req->timeout_ms : 0);
    /* rabbitmq: consuming a missing queue ends the session. A dead-letter
     * queue is declared by its first dead letter: none yet means none to
     * read, and reading makes none, so look again until it exists or the
     * wait for the first message is over. */
    bool rabbitmq = t->opt.dialect == AMQP10_DIALECT_RABBITMQ;
    amqp10_decl d = {rabbitmq ? AMQP10_DECL_EXISTS : AMQP10_DECL_DLQ, req->event, req->dlq,
                     NULL, true, false};
    ew_err rc;
    for (;;) {
        int64_t decl_deadline = ewi_now_ms() + t->cfg->send_timeout_ms;
        rc = amqp10_ensure(t, &d, decl_deadline, err, sizeof err);
        if (rc != EW_ENOTFOUND || !rabbitmq)
            break;
        int left = ewi_left_ms(deadline);
        if (left == 0)
            return EW_OK;
        ewi_sleep_ms(left < 50 ? left : 50);
    }
    if (rc != EW_OK) {
        ewi_report(t->m, rc, req->dlq, req->event, NULL, "amqp %s: %s", t->where, err);
        return rc;
    }
    amqp10_fetch *f = calloc(1, sizeof *f);
    if (!f)
        return EW_ENOMEM;
    f->kind = AMQP10_OBJ_FETCH;
    if (amqp10_source_of_dlq(&t->opt, req->event, req->dlq, &f->source) != EW_OK) {
        free(f);
        return EW_EINVAL;
    }

    pthread_mutex_lock(&t->mu);
    if (t->stopping || !request_locked(t, f, FETCH_OPEN)) {
        pthread_mutex_unlock(&t->mu);
        free(f);
        return EW_ECLOSED;
    }
    rc = EW_OK;
    /* The first message may take up to the caller's timeout; later ones are
     * answered by the drain (bounded by the send timeout should the broker
     * never answer). */
    int64_t wait_deadline = deadline;
    amqp10_rec *held = NULL, **held_tail = &held;
    while (req->taken < req->max) {
        while (!f->ready_head && !f->failed && !f->empty && !t->io_exited &&
               wait_until(t, wait_deadline)) {
        }
        amqp10_rec *rec = f->ready_head;
        if (!rec) {
            if (f->failed) {
                ewi_report(t->m, EW_EBROKER, req->dlq, req->event, NULL, "amqp %s: %s",
                           t->where, f->error);
                rc = req->taken ? EW_OK : (t->io_exited ? EW_ECLOSED : EW_EBROKER);
            } else if (!f->empty && req->taken &&
                       t->opt.dialect != AMQP10_DIALECT_RABBITMQ) {
                rc = EW_ETIMEDOUT; /* the broker did not answer the drain */
            }
            break;
        }
        f->ready_head = rec->next;
        if (!f->ready_head)
            f->ready_tail = NULL;
        pthread_mutex_unlock(&t->mu);
        bool taken = req->fn(req->user, rec->env) == EW_OK;
        pthread_mutex_lock(&t->mu);
        req->taken += taken;
        if (req->keep) {
            /* Only looked at: held unsettled, released below. */
            rec->next = NULL;
            *held_tail = rec;
            held_tail = &rec->next;
            if (!taken || t->io_exited)
                break;
            if (req->taken < req->max && !f->ready_head) {
                f->empty = false;
                request_locked(t, f, FETCH_MORE);
                wait_deadline = ewi_now_ms() + (t->opt.dialect == AMQP10_DIALECT_RABBITMQ
                                                    ? LINGER_MS
                                                    : t->cfg->send_timeout_ms);
            }
            continue;
        }
        /* Refused: released, it stays on the queue; the batch ends (the
         * close releases what was fetched after it). */
        rec->how = taken ? EWI_ACK : EWI_REQUEUE;
        if (t->io_exited) {
            /* Not acknowledged: the broker keeps it and gives it again. */
            ewi_envelope_unref(rec->env);
            free(rec);
            break;
        }
        amqp10_post_locked(t, &rec->w);
        if (!taken)
            break;
        if (req->taken < req->max && !f->ready_head) {
            f->empty = false;
            request_locked(t, f, FETCH_MORE);
            wait_deadline = ewi_now_ms() + (t->opt.dialect == AMQP10_DIALECT_RABBITMQ
                                                ? LINGER_MS
                                                : t->cfg->send_timeout_ms);
        }
    }
    for (amqp10_rec *rec = held, *next; rec; rec = next) {
        next = rec->next;
        if (t->io_exited) {
            ewi_envelope_unref(rec->env); /* unsettled: the broker keeps it */
            free(rec);
            continue;
        }
        rec->how = EWI_REQUEUE;
        amqp10_post_locked(t, &rec->w);
    }
    close_and_free(t, f);
    return rc;
}

/* ---- a request and its reply (artemis management) ----------------------- */

ew_err amqp10_fetch_reply(ewi_transport *t, const amqp10_addr *source,
                        ew_err (*request)(ewi_transport *t, void *arg), void *arg,
                        int64_t deadline, char *reply, size_t replylen, char *err,
                        size_t errlen)
{
    reply[0] = '\0';
    amqp10_fetch *f = calloc(1, sizeof *f);
    if (!f)
        return EW_ENOMEM;
    f->kind = AMQP10_OBJ_FETCH;
    f->source = *source;
    pthread_mutex_lock(&t->mu);
    if (t->stopping || !request_locked(t, f, FETCH_OPEN)) {
        pthread_mutex_unlock(&t->mu);
        free(f);
        return EW_ECLOSED;
    }
    /* The reply queue exists once the attach is answered: ask only then. */
    while (!f->attached && !f->failed && !t->io_exited && wait_until(t, deadline)) {
    }
    ew_err rc = f->attached && !f->failed ? EW_OK
                : f->failed                ? (f->lost ? EW_EDISCONNECTED : EW_EBROKER)
                : t->io_exited             ? EW_ECLOSED
                                           : EW_ETIMEDOUT;
    if (rc == EW_OK) {
        pthread_mutex_unlock(&t->mu);
        rc = request(t, arg);
        pthread_mutex_lock(&t->mu);
    }
    if (rc == EW_OK) {
        while (!f->ready_head && !f->failed && !t->io_exited && wait_until(t, deadline)) {
        }
        amqp10_rec *rec = f->ready_head;
        if (rec) {
            f->ready_head = rec->next;
            if (!f->ready_head)
                f->ready_tail = NULL;
            size_t blen = 0;
            const char *b = ew_envelope_body(rec->env, &blen);
            amqp10_textf(reply, replylen, "%.*s", (int)(blen < replylen ? blen : replylen - 1),
                       b ? b : "");
            rec->how = EWI_ACK;
            if (t->io_exited) {
                ewi_envelope_unref(rec->env);
                free(rec);
            } else {
                amqp10_post_locked(t, &rec->w);
            }
        } else {
            rc = f->failed   ? (f->lost ? EW_EDISCONNECTED : EW_EBROKER)
                 : t->io_exited ? EW_ECLOSED
                                : EW_ETIMEDOUT;
        }
    }
    if (f->failed)
        amqp10_textf(err, errlen, "%s", f->error);
    else if (rc == EW_ETIMEDOUT)
        amqp10_textf(err, errlen, "no answer from %s in time", source->addr);
    close_and_free(t, f);
    return rc;
}
