/* The AMQP 1.0 transport's ops: what core calls from application and worker
 * threads. Nothing here touches proton objects: work is queued for the I/O
 * thread (amqp10_io.c), and callers wait on t->cond where the contract says
 * they wait. */
#include "amqp10.h"
#include "transports/rmqadmin/rmqadmin.h"

#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <uuid/uuid.h>


/* ---- waiting ------------------------------------------------------------ */

/* Waits on t->cond (t->mu held) until deadline; false once it passed. */
static bool wait_until(ewi_transport *t, int64_t deadline)
{
    if (ewi_left_ms(deadline) == 0)
        return false;
    ewi_cond_wait_until(&t->cond, &t->mu, deadline);
    return true;
}

/* ---- create, start, stop, destroy --------------------------------------- */

static ew_err a_create(ew_manager *m, const ewi_url *url, ewi_transport **out)
{
    *out = NULL;
    ewi_transport *t = calloc(1, sizeof *t);
    if (!t)
        return EW_ENOMEM;
    char err[300];
    ew_err rc = amqp10_options_parse(m, url, &t->opt, err, sizeof err);
    if (rc != EW_OK) {
        ewi_log(m, EW_LOG_ERROR, "amqp URL: %s", err);
        amqp10_options_free(&t->opt);
        free(t);
        return rc;
    }
    t->m = m;
    t->cfg = ewi_config_of(m);
    amqp10_work_init(t);
    pthread_mutex_init(&t->mu, NULL);
    pthread_condattr_t ca;
    pthread_condattr_init(&ca);
    pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
    pthread_cond_init(&t->cond, &ca);
    pthread_condattr_destroy(&ca);
    ewi_window_init(&t->window, (size_t)t->opt.max_inflight,
                    (size_t)t->opt.max_inflight_bytes);
    char hosts[240];
    ewi_hosts_text(&t->opt.hosts, hosts, sizeof hosts);
    amqp10_textf(t->where, sizeof t->where, "%s (%s%s)", hosts,
             amqp10_dialect_name(t->opt.dialect), t->opt.tls ? ", TLS" : "");
    /* Unique per connection: brokers list it, and some refuse duplicates. */
    uuid_t u;
    char us[37];
    uuid_generate(u);
    uuid_unparse_lower(u, us);
    amqp10_textf(t->container_id, sizeof t->container_id, "eventwire-%s-%.8s",
             t->cfg->server_name ? t->cfg->server_name : "server", us);
    if (ewi_waker_init(&t->waker) != EW_OK || amqp10_admin_open(t) != EW_OK) {
        ewi_waker_close(&t->waker);
        amqp10_options_free(&t->opt);
        ewi_workq_destroy(&t->work);
        pthread_mutex_destroy(&t->mu);
        pthread_cond_destroy(&t->cond);
        free(t);
        return EW_ENOMEM;
    }
    *out = t;
    return EW_OK;
}

/* Resets what one run of the I/O thread leaves behind (start after a
 * failed start). */
static void reset_run(ewi_transport *t)
{
    t->conn = NULL;
    t->connected = t->was_up = t->closing = t->exit_now = t->start_cut = false;
    t->close_deadline = 0;
    t->reconnect_planned = false;
}

static void join_thread(ewi_transport *t)
{
    if (t->thread_started) {
        pthread_join(t->thread, NULL);
        t->thread_started = false;
    }
}

static ew_err a_start(ewi_transport *t, int timeout_ms)
{
    join_thread(t);
    reset_run(t);
    pthread_mutex_lock(&t->mu);
    t->state = AMQP10_ST_CONNECTING;
    t->stopping = false;
    t->io_exited = false;
    ewi_window_open(&t->window);
    ewi_workq_open(&t->work);
    t->start_err = EW_OK;
    t->last_error[0] = '\0';
    t->start_deadline = ewi_now_ms() + (timeout_ms > 0 ? timeout_ms : 0);
    pthread_mutex_unlock(&t->mu);
    if (ewi_thread_start(t->m, &t->thread, amqp10_io_main, t, "ew:amqp-io") != 0) {
        pthread_mutex_lock(&t->mu);
        t->io_exited = true;
        ewi_window_close(&t->window);
        t->state = AMQP10_ST_FAILED;
        pthread_mutex_unlock(&t->mu);
        return EW_ENOMEM;
    }
    t->thread_started = true;
    int64_t t0 = ewi_now_ms();
    pthread_mutex_lock(&t->mu);
    while (t->state == AMQP10_ST_CONNECTING)
        pthread_cond_wait(&t->cond, &t->mu); /* the I/O thread ends it by the deadline */
    amqp10_state st = t->state;
    ew_err rc = t->start_err ? t->start_err : EW_ECONNECT;
    char why[512];
    amqp10_textf(why, sizeof why, "%s", t->last_error[0] ? t->last_error : "timed out");
    pthread_mutex_unlock(&t->mu);
    if (st == AMQP10_ST_UP)
        return EW_OK;
    join_thread(t);
    ewi_report(t->m, rc, NULL, NULL, NULL, "amqp: start failed after %lld ms: %s",
               (long long)(ewi_now_ms() - t0), why);
    return rc;
}

static void a_stop(ewi_transport *t)
{
    pthread_mutex_lock(&t->mu);
    if (t->thread_started && !t->io_exited && !t->stopping) {
        t->stopping = true;
        ewi_window_close(&t->window);
        ewi_waker_wake(&t->waker);
    }
    pthread_mutex_unlock(&t->mu);
    join_thread(t);
}

static void a_destroy(ewi_transport *t)
{
    if (!t)
        return;
    a_stop(t);
    for (amqp10_sub *s = t->subs, *n; s; s = n) {
        n = s->next;
        amqp10_acc_reset(&s->acc);
        free(s);
    }
    for (amqp10_sender *s = t->senders, *n; s; s = n) {
        n = s->next;
        free(s); /* their lists were emptied when the I/O thread ended */
    }
    amqp10_rec_spares_free(t);
    ewi_waker_close(&t->waker);
    amqp10_admin_close(t);
    amqp10_options_free(&t->opt);
    ewi_workq_destroy(&t->work);
    pthread_mutex_destroy(&t->mu);
    pthread_cond_destroy(&t->cond);
    ewi_window_destroy(&t->window);
    free(t);
}

/* ---- topology ----------------------------------------------------------- */

static ew_err a_declare(ewi_transport *t, const char *event, bool durable)
{
    amqp10_decl d = {AMQP10_DECL_EXCHANGE, event, NULL, NULL, durable, false};
    char err[512];
    ew_err rc = amqp10_ensure(t, &d, ewi_now_ms() + t->cfg->send_timeout_ms, err,
                            sizeof err);
    if (rc != EW_OK)
        ewi_report(t->m, rc, NULL, event, NULL, "amqp %s: %s", t->where, err);
    return rc;
}

/* A consumer for sub, not yet attached; NULL with *rc on failure. */
static amqp10_sub *sub_new(ewi_transport *t, ewi_sub *sub, ew_err *rc)
{
    amqp10_sub *s = calloc(1, sizeof *s);
    *rc = s ? EW_OK : EW_ENOMEM;
    if (!s)
        return NULL;
    s->kind = AMQP10_OBJ_SUB;
    s->sub = sub;
    s->prefetch = sub->prefetch ? sub->prefetch : 1;
    s->w_sub.kind = AMQP10_W_SUB;
    s->w_unsub.kind = AMQP10_W_UNSUB;
    if (amqp10_listener_queue(&t->opt, sub->event, sub->queue, s->queue,
                            sizeof s->queue) != EW_OK ||
        amqp10_source_of_listener(&t->opt, sub->event, s->queue, &s->source) != EW_OK) {
        ewi_log(t->m, EW_LOG_ERROR, "amqp: no source address for %s", sub->queue);
        free(s);
        *rc = EW_EINVAL;
        return NULL;
    }
    return s;
}

/* Waits (t->mu held) for the attach posted for s until deadline; on
 * failure the I/O thread forgets s and why is copied into err. Nothing is
 * reported here: the report runs the application's callbacks, which may send
 * through this transport, so the caller reports after unlocking t->mu. */
static ew_err sub_wait_locked(ewi_transport *t, amqp10_sub *s, int64_t deadline, char *err,
                              size_t errsz)
{
    ewi_sub *sub = s->sub;
    while (s->state == AMQP10_SUB_PENDING && !t->io_exited && wait_until(t, deadline)) {
    }
    amqp10_sub_state st = s->state;
    amqp10_textf(err, errsz, "%s", s->error);
    if (st == AMQP10_SUB_ACTIVE) {
        sub->tdata = s;
        amqp10_textf(err, errsz, "consuming %s", s->source.addr);
        return EW_OK;
    }
    /* Refused or timed out: the I/O thread forgets it (after the exit the
     * transport's destroy frees it). */
    if (!t->io_exited)
        amqp10_post_locked(t, &s->w_unsub);
    ew_err rc = st == AMQP10_SUB_FAILED ? EW_EBROKER : EW_ETIMEDOUT;
    if (st != AMQP10_SUB_FAILED)
        amqp10_textf(err, errsz, "attaching a consumer to %s: no answer within %d ms",
                   s->source.addr, t->cfg->start_timeout_ms);
    return rc;
}

/* After sub_wait_locked, with t->mu released. */
static void sub_waited(ewi_transport *t, ewi_sub *sub, ew_err rc, const char *err)
{
    if (rc == EW_OK)
        ewi_log(t->m, EW_LOG_DEBUG, "amqp %s: %s", t->where, err);
    else
        ewi_report(t->m, rc, sub->queue, sub->event, NULL, "amqp %s: %s", t->where, err);
}

static ew_err a_subscribe(ewi_transport *t, ewi_sub *sub)
{
    char err[600];
    ew_err rc;
    amqp10_sub *s = sub_new(t, sub, &rc);
    if (!s)
        return rc;
    int64_t deadline = ewi_now_ms() + t->cfg->start_timeout_ms;
    /* The dead-letter queue is declared on first use (check_target,
     * amqp10_dlq_take), not here: durable queues are what costs the broker
     * most at start. */
    amqp10_decl d = {AMQP10_DECL_LISTENER, sub->event, s->queue, NULL, sub->durable,
                   sub->per_process};
    rc = amqp10_ensure(t, &d, deadline, err, sizeof err);
    if (rc != EW_OK) {
        ewi_report(t->m, rc, sub->queue, sub->event, NULL, "amqp %s: %s", t->where, err);
        free(s);
        return rc;
    }

    pthread_mutex_lock(&t->mu);
    if (t->stopping || t->io_exited) {
        pthread_mutex_unlock(&t->mu);
        free(s);
        return EW_ECLOSED;
    }
    amqp10_post_locked(t, &s->w_sub);
    rc = sub_wait_locked(t, s, deadline, err, sizeof err);
    pthread_mutex_unlock(&t->mu);
    sub_waited(t, sub, rc, err);
    return rc;
}

/* Posts the attach of listener i of a batch (its queue ready), unless the
 * transport is stopping. */
typedef struct sub_batch {
    ewi_transport *t;
    amqp10_sub **ss;
    ew_err *rcs;
    bool *posted;
} sub_batch;

static void sub_post(void *user, size_t i)
{
    sub_batch *b = user;
    ewi_transport *t = b->t;
    if (!b->ss[i])
        return;
    pthread_mutex_lock(&t->mu);
    if (t->stopping || t->io_exited) {
        b->rcs[i] = EW_ECLOSED;
    } else {
        amqp10_post_locked(t, &b->ss[i]->w_sub);
        b->posted[i] = true;
    }
    pthread_mutex_unlock(&t->mu);
}

/* Every listener at start: rabbitmq's declarations in one batch, and the
 * attach of each listener posted as soon as its queue is declared (while
 * the broker creates the others); the answers are awaited at the end. */
static void a_subscribe_many(ewi_transport *t, ewi_sub *const *subs, size_t n, ew_err *rcs)
{
    char err[600];
    amqp10_sub **ss = calloc(n ? n : 1, sizeof *ss);
    amqp10_decl *ds = calloc(n ? n : 1, sizeof *ds);
    ew_err *drcs = calloc(n ? n : 1, sizeof *drcs);
    bool *posted = calloc(n ? n : 1, sizeof *posted);
    if (!ss || !ds || !drcs || !posted) {
        for (size_t i = 0; i < n; i++)
            rcs[i] = EW_ENOMEM;
        goto out;
    }
    int64_t deadline = ewi_now_ms() + t->cfg->start_timeout_ms;
    for (size_t i = 0; i < n; i++)
        if ((ss[i] = sub_new(t, subs[i], &rcs[i])))
            ds[i] = (amqp10_decl){AMQP10_DECL_LISTENER, subs[i]->event, ss[i]->queue,
                                NULL, subs[i]->durable, subs[i]->per_process};
        else
            ds[i] = (amqp10_decl){AMQP10_DECL_EXCHANGE, subs[i]->event, NULL, NULL, true, false};
    sub_batch b = {t, ss, rcs, posted};
    if (amqp10_ensure_many(t, ds, n, deadline, drcs, err, sizeof err, sub_post, &b) != EW_OK) {
        /* The broker's text is the first failure's. */
        bool first = true;
        for (size_t i = 0; i < n; i++)
            if (ss[i] && drcs[i] != EW_OK) {
                rcs[i] = drcs[i];
                ewi_report(t->m, rcs[i], subs[i]->queue, subs[i]->event, NULL,
                           "amqp %s: %s", t->where, first ? err : ew_strerror(rcs[i]));
                first = false;
            }
    }
    for (size_t i = 0; i < n; i++)
        if (ss[i] && !posted[i]) {
            free(ss[i]); /* refused, or the transport is stopping */
            ss[i] = NULL;
        }
    /* The texts are kept until t->mu is released: reporting runs the
     * application's callbacks, which may send through this transport. */
    char (*errs)[600] = calloc(n ? n : 1, sizeof *errs);
    pthread_mutex_lock(&t->mu);
    for (size_t i = 0; i < n; i++)
        if (ss[i]) {
            rcs[i] = sub_wait_locked(t, ss[i], deadline, errs ? errs[i] : err,
                                     errs ? sizeof errs[i] : sizeof err);
        }
    pthread_mutex_unlock(&t->mu);
    for (size_t i = 0; i < n; i++)
        if (ss[i])
            sub_waited(t, subs[i], rcs[i], errs ? errs[i] : ew_strerror(rcs[i]));
    free(errs);
out:
    free(ss);
    free(ds);
    free(drcs);
    free(posted);
}

static void a_unsubscribe(ewi_transport *t, ewi_sub *sub)
{
    amqp10_sub *s = sub->tdata;
    if (!s)
        return;
    sub->tdata = NULL;
    bool done = false;
    pthread_mutex_lock(&t->mu);
    if (!t->io_exited) {
        s->unsub_done = &done;
        amqp10_post_locked(t, &s->w_unsub);
        while (!done && !t->io_exited)
            pthread_cond_wait(&t->cond, &t->mu);
        if (!done)
            s->unsub_done = NULL; /* the thread ended first: nothing is delivered */
    }
    pthread_mutex_unlock(&t->mu);
}

static ew_err a_delete_queue(ewi_transport *t, ewi_sub *sub, bool check, char *err,
                             size_t errlen)
{
    bool artemis = t->opt.dialect == AMQP10_DIALECT_ARTEMIS;
    if (!artemis && !t->admin) {
        amqp10_textf(err, errlen, "amqp %s declares nothing on the broker, so it deletes "
                     "nothing either", t->where);
        return EW_ENOTSUP;
    }
    if (check)
        return EW_OK;
    char q[AMQP10_ADDR_MAX];
    ew_err rc = amqp10_listener_queue(&t->opt, sub->event, sub->queue, q, sizeof q);
    if (rc != EW_OK)
        return rc;
    if (!artemis)
        return rmqa_delete_queue(t->admin, q, err, errlen);
    return amqp10_artemis_destroy(t, sub->event, q,
                                  ewi_now_ms() + t->cfg->send_timeout_ms, err, errlen);
}

/* ---- sends -------------------------------------------------------------- */

static ew_err check_target(ewi_transport *t, ewi_pub *p, const char *q)
{
    if (p->dest == EWI_DEST_EVENT ||
        (t->opt.dialect == AMQP10_DIALECT_ARTEMIS && p->dest != EWI_DEST_LISTENER))
        return EW_OK;
    /* rabbitmq: the plugin silently drops a send to a missing /amq/queue/Q;
     * artemis would create the missing queue: check that a listener's queue
     * exists. On rabbitmq a dead-letter queue is declared here, before the
     * first dead letter to it: once per administration connection, and
     * again after every reconnect (amqp10_redeclare_all). */
    amqp10_decl d = {p->dest == EWI_DEST_DLQ ? AMQP10_DECL_DLQ : AMQP10_DECL_EXISTS,
                   p->event, q, NULL, true, false};
    char err[512];
    ew_err rc = amqp10_ensure(t, &d, p->deadline_ms, err, sizeof err);
    if (rc == EW_ENOTFOUND)
        ewi_log(t->m, EW_LOG_ERROR,
                "amqp %s: send to %s: the queue %s does not exist (no listener %s of "
                "event %s has subscribed yet): not sent",
                t->where, p->listener ? p->listener : q, q,
                p->listener ? p->listener : "?", p->event);
    else if (rc != EW_OK)
        ewi_log(t->m, EW_LOG_ERROR, "amqp %s: send to %s: %s", t->where, q, err);
    return rc;
}

static ew_err a_publish(ewi_transport *t, ewi_pub *p)
{
    char q[EW_MAX_QUEUE_NAME + 8] = "";
    if (p->dest == EWI_DEST_LISTENER &&
        amqp10_listener_queue(&t->opt, p->event, p->queue, q, sizeof q) != EW_OK)
        return EW_EINVAL;
    if (p->dest == EWI_DEST_DLQ)
        amqp10_textf(q, sizeof q, "%s", p->queue ? p->queue : "");
    amqp10_addr target;
    if (amqp10_target_of(&t->opt, p->dest, p->event, p->queue, &target) != EW_OK) {
        ewi_log(t->m, EW_LOG_ERROR, "amqp: no target address for event %s", p->event);
        return EW_EINVAL;
    }
    ew_err rc = check_target(t, p, q);
    if (rc != EW_OK)
        return rc;
    /* The record and the message bytes in one block. */
    char err[300];
    uint8_t *block;
    size_t len;
    if ((rc = amqp10_message_encode_after(p->env, p->durable, sizeof(amqp10_out), &block,
                                          &len, err, sizeof err)) != EW_OK) {
        ewi_log(t->m, EW_LOG_ERROR, "amqp: event %s: %s", p->event, err);
        return rc;
    }
    amqp10_out *o = (amqp10_out *)(void *)block;
    memset(o, 0, sizeof *o);
    o->bytes = block + sizeof *o;
    o->len = len;
    o->bytes_inline = true;
    o->target.cap = target.cap;
    memcpy(o->target.addr, target.addr, strlen(target.addr) + 1);
    o->pub = p;
    o->w.kind = AMQP10_W_PUB;

    pthread_mutex_lock(&t->mu);
    /* Bound what waits for the broker: a full window blocks the sender up
     * to its deadline (an outage fills it); still full then, the send
     * fails here, never written. */
    size_t bytes = ewi_pub_bytes(p);
    rc = t->stopping || t->io_exited
             ? EW_ECLOSED
             : ewi_window_take(&t->window, &t->mu, p->deadline_ms, bytes);
    if (rc != EW_OK) {
        char last[sizeof t->last_error];
        amqp10_textf(last, sizeof last, "%s", t->last_error[0] ? t->last_error : "none");
        size_t n = t->window.used, nb = t->window.used_bytes;
        pthread_mutex_unlock(&t->mu);
        if (rc == EW_ETIMEDOUT)
            ewi_log(t->m, EW_LOG_ERROR,
                    "amqp %s: send of %s timed out: %zu sends (%zu bytes of bodies) wait "
                    "for the broker (last error: %s)", t->where, p->event, n, nb, last);
        free(o);
        return rc;
    }
    /* Queued under mu (the I/O thread has not exited), woken after it. */
    bool wake;
    (void)ewi_workq_push_list(&t->work, &o->w.link, &o->w.link, &wake);
    pthread_mutex_unlock(&t->mu);
    if (wake)
        ewi_workq_wake(&t->work);
    return EW_OK;
}

/* ---- receiving ---------------------------------------------------------- */

/* Settles the messages linked by qnext, all the same way: one lock and at
 * most one wake-up of the I/O thread for all of them. */
static void settle_list(ewi_transport *t, ewi_msg *first, ewi_settle how)
{
    ewi_workq_item *head = NULL, *tail = NULL;
    ewi_msg *gone = NULL; /* to free: no record, or no I/O thread */
    pthread_mutex_lock(&t->mu);
    for (ewi_msg *msg = first, *next; msg; msg = next) {
        next = msg->qnext;
        amqp10_rec *rec = msg->tdata;
        if (!rec || t->io_exited) {
            msg->qnext = gone;
            gone = msg;
            continue;
        }
        rec->how = how;
        if (tail)
            tail->next = &rec->w.link;
        else
            head = &rec->w.link;
        tail = &rec->w.link;
    }
    bool wake = false;
    if (head)
        (void)ewi_workq_push_list(&t->work, head, tail, &wake);
    pthread_mutex_unlock(&t->mu);
    if (wake)
        ewi_workq_wake(&t->work);
    /* The connection is gone: the broker requeued what it held. */
    for (ewi_msg *next; gone; gone = next) {
        next = gone->qnext;
        free(gone->tdata);
        ewi_msg_free(gone);
    }
}

static void a_settle(ewi_transport *t, ewi_msg *msg, ewi_settle how)
{
    msg->qnext = NULL;
    settle_list(t, msg, how);
}

/* A worker's acknowledgements (linked by qnext). */
static void a_settle_acks(ewi_transport *t, ewi_msg *first)
{
    settle_list(t, first, EWI_ACK);
}

static ew_err a_dlq_take(ewi_transport *t, ewi_dlq_req *req)
{
    return amqp10_dlq_take(t, req);
}

static const char *const amqp10_schemes[] = {"amqp", "amqps", NULL};

const ewi_transport_ops ewi_amqp_transport = {
    .name = "amqp",
    .schemes = amqp10_schemes,
    .features = EWI_FEAT_DLQ_READ,
    .create = a_create,
    .check_names = NULL,
    .start = a_start,
    .declare = a_declare,
    .subscribe = a_subscribe,
    .subscribe_many = a_subscribe_many,
    .unsubscribe = a_unsubscribe,
    .delete_queue = a_delete_queue,
    .publish = a_publish,
    .settle = a_settle,
    .settle_acks = a_settle_acks,
    .dlq_take = a_dlq_take,
    .stop = a_stop,
    .destroy = a_destroy,
};
