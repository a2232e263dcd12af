/* The transport table for rabbitmq:// and rabbitmqs://, and the side of it
 * other threads call: they queue work for the I/O thread (rmq_io.c) and,
 * for requests, wait for its answer. */
#include "rmq.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

/* ---- handing work to the I/O thread ------------------------------------ */

/* Wakes the I/O thread if it sleeps; mu held. */
static bool need_wake(ewi_transport *t)
{
    if (t->sleeping && !t->woken) {
        t->woken = true;
        return true;
    }
    return false;
}

/* Queues r and waits until the I/O thread completed it. */
static ew_err request(ewi_transport *t, rmq_req *r)
{
    r->done = false;
    r->next = NULL;
    r->err[0] = '\0';
    pthread_mutex_lock(&t->mu);
    bool running = !t->closed && t->io_started;
    pthread_mutex_unlock(&t->mu);
    /* The I/O thread closes the queue when it finishes: a request is either
     * taken or refused here. */
    if (!running || !ewi_workq_push(&t->reqs, &r->link)) {
        snprintf(r->err, sizeof r->err, "the transport is not running");
        return r->rc = EW_ECLOSED;
    }
    pthread_mutex_lock(&t->mu);
    while (!r->done)
        pthread_cond_wait(&t->done_cv, &t->mu);
    pthread_mutex_unlock(&t->mu);
    return r->rc;
}

/* ---- the ops ------------------------------------------------------------- */

static ew_err r_create(ew_manager *m, const ewi_url *url, ewi_transport **out)
{
    ewi_transport *t = calloc(1, sizeof *t);
    if (!t)
        return EW_ENOMEM;
    t->m = m;
    ew_err rc = rmq_opts_parse(m, url, &t->o);
    if (rc != EW_OK) {
        free(t);
        return rc;
    }
    if ((rc = ewi_waker_init(&t->waker)) != EW_OK) {
        rmq_opts_free(&t->o);
        free(t);
        return rc;
    }
    ewi_workq_init(&t->reqs, &t->waker);
    pthread_mutex_init(&t->mu, NULL);
    pthread_condattr_t ca;
    pthread_condattr_init(&ca);
    pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
    pthread_cond_init(&t->done_cv, &ca);
    pthread_condattr_destroy(&ca);
    ewi_window_init(&t->window, t->o.max_inflight, t->o.max_inflight_bytes);
    pthread_mutex_init(&t->guard_mu, NULL);
    ewi_cond_init_mono(&t->guard_cv);
    atomic_init(&t->wr_since_ms, 0);
    atomic_init(&t->wr_fd, -1);
    ewi_reconnect_init(&t->rc, t->o.reconnect_base_ms, t->o.reconnect_max_ms);
    *out = t;
    return EW_OK;
}

static ew_err r_check_names(ewi_transport *t, const char *event, const char *listener,
                            char *err, size_t errlen)
{
    EWI_UNUSED(t);
    EWI_UNUSED(listener);
    /* RabbitMQ reserves amq.* exchange and queue names (403 on declare). */
    if (event && strncmp(event, "amq.", 4) == 0) {
        snprintf(err, errlen, "event name '%s': names starting with 'amq.' are reserved by "
                              "RabbitMQ", event);
        return EW_EINVAL;
    }
    return EW_OK;
}

static ew_err r_start(ewi_transport *t, int timeout_ms)
{
    if (t->io_started || t->closed)
        return EW_ESTATE;
    int64_t deadline = ewi_now_ms() + (timeout_ms > 0 ? timeout_ms : 0);
    ewi_backoff b;
    ewi_backoff_init(&b, t->o.reconnect_base_ms, t->o.reconnect_max_ms);
    char err[512];
    unsigned attempts = 0;
    for (;;) {
        attempts++;
        ew_err rc = rmq_connect(t, err, sizeof err);
        if (rc == EW_OK)
            break;
        /* Refused credentials and an untrusted certificate stay so on every
         * retry: fail at once. */
        if (rc == EW_EAUTH || rc == EW_ETLS || rc == EW_ENOMEM) {
            ewi_report(t->m, rc, NULL, NULL, NULL, "%s", err);
            return rc;
        }
        int left = ewi_left_ms(deadline);
        if (left == 0) {
            ewi_report(t->m, EW_ECONNECT, NULL, NULL, NULL,
                       "cannot reach RabbitMQ at %s within %d ms (%u attempts): %s",
                       t->o.label, timeout_ms, attempts, err);
            return EW_ECONNECT;
        }
        int delay = ewi_backoff_next(&b);
        ewi_log(t->m, EW_LOG_INFO, "%s: connect attempt %u failed: %s; next in %d ms",
                t->o.label, attempts, err, delay < left ? delay : left);
        ewi_sleep_ms(delay < left ? delay : left);
    }
    t->last_rx_ms = ewi_now_ms();
    ewi_reconnect_up(&t->rc, t->last_rx_ms);
    ewi_log(t->m, EW_LOG_INFO, "connected to %s as %s (heartbeat %d s)", t->o.label,
            t->o.user, amqp_get_heartbeat(t->conn));
    if (!rmq_guard_start(t)) {
        rmq_disconnect(t, true);
        ewi_log(t->m, EW_LOG_ERROR, "%s: cannot start the write guard thread", t->o.label);
        return EW_ENOMEM;
    }
    if (ewi_thread_start(t->m, &t->io, rmq_io_main, t, "ew:rmq-io") != 0) {
        rmq_guard_stop(t);
        rmq_disconnect(t, true);
        ewi_log(t->m, EW_LOG_ERROR, "%s: cannot start the I/O thread", t->o.label);
        return EW_ENOMEM;
    }
    pthread_mutex_lock(&t->mu);
    t->io_started = true;
    pthread_mutex_unlock(&t->mu);
    return EW_OK;
}

static ew_err r_declare(ewi_transport *t, const char *event, bool durable)
{
    EWI_UNUSED(durable); /* exchanges are durable for every event */
    rmq_req r = {.kind = RMQ_REQ_DECLARE, .event = event,
                 .deadline_ms = ewi_now_ms() + ewi_config_of(t->m)->send_timeout_ms};
    ew_err rc = request(t, &r);
    if (rc != EW_OK)
        ewi_report(t->m, rc, NULL, event, NULL, "%s: %s", t->o.label, r.err);
    return rc;
}

static void sub_free(rmq_sub *rs)
{
    if (rs) {
        rmq_tags_free(&rs->tags);
        free(rs);
    }
}

static rmq_sub *sub_new(ewi_transport *t, ewi_sub *sub)
{
    rmq_sub *rs = calloc(1, sizeof *rs);
    if (!rs)
        return NULL;
    rs->sub = sub;
    uint32_t pf = sub->prefetch ? sub->prefetch : 1;
    if (pf > 65535) {
        ewi_log(t->m, EW_LOG_WARN, "%s: prefetch %u is over AMQP's 65535; using 65535",
                sub->queue, pf);
        pf = 65535;
    }
    rs->prefetch = (uint16_t)pf;
    sub->tdata = rs;
    return rs;
}

static void r_subscribe_many(ewi_transport *t, ewi_sub *const *subs, size_t n, ew_err *rcs)
{
    rmq_sub **rss = calloc(n ? n : 1, sizeof *rss);
    bool oom = !rss;
    for (size_t i = 0; i < n; i++) {
        rcs[i] = EW_EDISCONNECTED; /* to do */
        if (!oom && !(rss[i] = sub_new(t, subs[i])))
            oom = true;
    }
    rmq_req r = {.kind = RMQ_REQ_SUBSCRIBE_MANY, .many = rss, .nmany = n, .rcs = rcs,
                 .deadline_ms = ewi_now_ms() + ewi_config_of(t->m)->send_timeout_ms};
    ew_err rc = oom ? EW_ENOMEM : request(t, &r);
    for (size_t i = 0; i < n; i++) {
        if (rcs[i] == EW_EDISCONNECTED) {
            /* Never got through (the I/O thread reported the others). */
            rcs[i] = rc != EW_OK ? rc : EW_EDISCONNECTED;
            ewi_report(t->m, rcs[i], subs[i]->queue, subs[i]->event, NULL, "%s: %s",
                       t->o.label, r.err[0] ? r.err : "not subscribed");
        }
        if (rcs[i] != EW_OK) {
            subs[i]->tdata = NULL;
            if (rss)
                sub_free(rss[i]);
        }
    }
    free(rss);
}

static ew_err r_subscribe(ewi_transport *t, ewi_sub *sub)
{
    rmq_sub *rs = sub_new(t, sub);
    if (!rs)
        return EW_ENOMEM;
    rmq_req r = {.kind = RMQ_REQ_SUBSCRIBE, .rs = rs,
                 .deadline_ms = ewi_now_ms() + ewi_config_of(t->m)->send_timeout_ms};
    ew_err rc = request(t, &r);
    if (rc != EW_OK) {
        ewi_report(t->m, rc, sub->queue, sub->event, NULL, "%s: %s", t->o.label, r.err);
        sub->tdata = NULL;
        sub_free(rs);
    }
    return rc;
}

static void r_unsubscribe(ewi_transport *t, ewi_sub *sub)
{
    if (!sub->tdata)
        return;
    rmq_req r = {.kind = RMQ_REQ_UNSUBSCRIBE, .rs = sub->tdata,
                 .deadline_ms = ewi_now_ms() + t->o.rpc_timeout_ms};
    request(t, &r); /* EW_ECLOSED: the I/O thread is gone, nothing arrives */
}

static ew_err r_delete_queue(ewi_transport *t, ewi_sub *sub, bool check, char *err,
                             size_t errlen)
{
    if (check)
        return EW_OK;
    /* Waits for a connection while the send timeout runs. */
    rmq_req r = {.kind = RMQ_REQ_DELETE, .queue = sub->queue,
                 .deadline_ms = ewi_now_ms() + ewi_config_of(t->m)->send_timeout_ms};
    ew_err rc = request(t, &r);
    if (rc != EW_OK)
        snprintf(err, errlen, "%s", r.err[0] ? r.err : ew_strerror(rc));
    return rc;
}

static ew_err r_publish(ewi_transport *t, ewi_pub *p)
{
    pthread_mutex_lock(&t->mu);
    if (t->closed || !t->io_started) {
        pthread_mutex_unlock(&t->mu);
        return EW_ECLOSED;
    }
    /* Backpressure: at most max_inflight publishes queued or unconfirmed,
     * and max_inflight_bytes of their bodies; still full at the deadline,
     * the send fails here, never written. */
    ew_err rc = ewi_window_take(&t->window, &t->mu, p->deadline_ms, ewi_pub_bytes(p));
    if (rc != EW_OK) {
        size_t n = t->window.used, nb = t->window.used_bytes;
        pthread_mutex_unlock(&t->mu);
        if (rc == EW_ETIMEDOUT)
            ewi_log(t->m, EW_LOG_ERROR,
                    "send %s: %zu earlier messages (%zu bytes of bodies) were still waiting "
                    "for %s at the send deadline (the broker is slow, blocked or "
                    "unreachable)", p->event, n, nb, t->o.label);
        return rc;
    }
    p->next = NULL;
    if (t->pub_tail)
        t->pub_tail->next = p;
    else
        t->pub_head = p;
    t->pub_tail = p;
    bool wake = need_wake(t);
    pthread_mutex_unlock(&t->mu);
    if (wake)
        ewi_waker_wake(&t->waker);
    return EW_OK;
}

/* Hands settles to the I/O thread, first..last linked by qnext (tdata
 * set): one lock and at most one wake-up. */
static void settle_list(ewi_transport *t, ewi_msg *first, ewi_msg *last)
{
    pthread_mutex_lock(&t->mu);
    if (t->closed) {
        /* The connection is gone: the broker requeued what it held. */
        pthread_mutex_unlock(&t->mu);
        for (ewi_msg *msg = first, *next; msg; msg = next) {
            next = msg->qnext;
            ewi_msg_free(msg);
        }
        return;
    }
    if (t->settle_tail)
        t->settle_tail->qnext = first;
    else
        t->settle_head = first;
    t->settle_tail = last;
    bool wake = need_wake(t);
    pthread_mutex_unlock(&t->mu);
    if (wake)
        ewi_waker_wake(&t->waker);
}

static void r_settle(ewi_transport *t, ewi_msg *msg, ewi_settle how)
{
    msg->tdata = RMQ_TDATA(RMQ_TDATA_EPOCH(msg->tdata), how == EWI_REQUEUE);
    msg->qnext = NULL;
    settle_list(t, msg, msg);
}

/* A worker's acknowledgements, linked by qnext. */
static void r_settle_acks(ewi_transport *t, ewi_msg *first)
{
    ewi_msg *last = first;
    for (ewi_msg *msg = first; msg; msg = msg->qnext) {
        msg->tdata = RMQ_TDATA(RMQ_TDATA_EPOCH(msg->tdata), false);
        last = msg;
    }
    settle_list(t, first, last);
}

static ew_err r_dlq_take(ewi_transport *t, ewi_dlq_req *req)
{
    int64_t deadline = ewi_now_ms() + (req->timeout_ms > 0 ? req->timeout_ms : 0);
    const ewi_config *cfg = ewi_config_of(t->m);
    for (;;) {
        rmq_req r = {.kind = RMQ_REQ_DLQ_GET, .queue = req->dlq, .max = req->max - req->taken,
                     .deadline_ms = ewi_now_ms() + cfg->send_timeout_ms};
        if (r.max == 0)
            return EW_OK;
        ew_err rc = request(t, &r);
        /* Hand them over, then acknowledge them all at once: a crash in
         * between leaves them on the queue. A refused one and those after
         * it are requeued, and so is every one only looked at (keep). */
        uint64_t acked = 0;
        bool refused = false;
        for (rmq_got *g = r.got, *next; g; g = next) {
            next = g->next;
            if (!refused && req->fn(req->user, g->env) == EW_OK) {
                if (!req->keep)
                    acked = g->tag;
                req->taken++;
            } else {
                refused = true;
            }
            ewi_envelope_unref(g->env);
            free(g);
        }
        if (r.ngot) {
            rmq_req ack = {.kind = RMQ_REQ_DLQ_ACK, .tag = acked,
                           .nack_tag = refused || req->keep ? r.tag : 0, .epoch = r.epoch,
                           .deadline_ms = ewi_now_ms() + cfg->send_timeout_ms};
            request(t, &ack);
        }
        if (rc != EW_OK) {
            ewi_log(t->m, EW_LOG_ERROR, "reading dead letters of %s: %s", req->dlq, r.err);
            return rc;
        }
        if (refused || req->taken > 0 || (req->keep && r.ngot) || ewi_left_ms(deadline) == 0)
            return EW_OK;
        int left = ewi_left_ms(deadline);
        ewi_sleep_ms(left < 50 ? left : 50);
    }
}

static void r_stop(ewi_transport *t)
{
    pthread_mutex_lock(&t->mu);
    bool running = t->io_started && !t->closed;
    t->quit = true;
    if (!running) {
        t->closed = true;
        ewi_window_close(&t->window);
    }
    pthread_mutex_unlock(&t->mu);
    if (running) {
        ewi_waker_wake(&t->waker);
        pthread_join(t->io, NULL);
        rmq_guard_stop(t);
    } else {
        rmq_disconnect(t, true);
    }
}

static void r_destroy(ewi_transport *t)
{
    if (!t)
        return;
    for (rmq_sub *rs = t->subs, *next; rs; rs = next) {
        next = rs->next;
        sub_free(rs);
    }
    for (rmq_event *e = t->events, *next; e; e = next) {
        next = e->next;
        free(e);
    }
    for (size_t i = 0; i < t->nin; i++) {
        ewi_envelope_unref(t->in[i].env);
        free(t->in[i].body);
    }
    free(t->in);
    rmq_wire_reset(t);
    free(t->wbuf);
    free(t->wseg);
    rmq_props_buf_free(&t->props);
    rmq_disconnect(t, false);
    ewi_workq_destroy(&t->reqs);
    ewi_waker_close(&t->waker);
    pthread_mutex_destroy(&t->mu);
    pthread_cond_destroy(&t->done_cv);
    ewi_window_destroy(&t->window);
    rmq_guard_stop(t); /* started, never stopped: stop was not called */
    pthread_mutex_destroy(&t->guard_mu);
    pthread_cond_destroy(&t->guard_cv);
    rmq_opts_free(&t->o);
    free(t);
}

static const char *const rabbitmq_schemes[] = {"rabbitmq", "rabbitmqs", NULL};

const ewi_transport_ops ewi_rabbitmq_transport = {
    .name = "rabbitmq",
    .schemes = rabbitmq_schemes,
    .features = EWI_FEAT_DLQ_READ,
    .create = r_create,
    .check_names = r_check_names,
    .start = r_start,
    .declare = r_declare,
    .subscribe = r_subscribe,
    .subscribe_many = r_subscribe_many,
    .unsubscribe = r_unsubscribe,
    .delete_queue = r_delete_queue,
    .publish = r_publish,
    .settle = r_settle,
    .settle_acks = r_settle_acks,
    .dlq_take = r_dlq_take,
    .stop = r_stop,
    .destroy = r_destroy,
};
