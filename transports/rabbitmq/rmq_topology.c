/* Topology on the broker, as the shared administration module declares it
 * (transports/rmqadmin/rmqadmin.h): exchanges on the RPC channel, each
 * listener's queue and binding on the channel it consumes on, and a
 * listener's dead-letter queue on the RPC channel before its first dead
 * letter. All of it on the I/O thread (or in start before the thread
 * runs). A failed connection is EW_EDISCONNECTED with the reason in err:
 * what it means (rmq_lost) is for the I/O loop to decide, as are frames of
 * other channels that arrive during a wait (the loop's handler, passed in). */
#include "rmq.h"

#include <stdio.h>
#include <sys/time.h>
#include <stdlib.h>
#include <string.h>

/* r as an ew_err: a channel refusal is answered and the RPC channel
 * reopened; a connection failure is EW_EDISCONNECTED. */
static ew_err check(ewi_transport *t, uint16_t ch, amqp_rpc_reply_t r, const char *what,
                    char *err, size_t errlen)
{
    if (r.reply_type == AMQP_RESPONSE_NORMAL)
        return EW_OK;
    char text[300];
    rmqa_reply_text(r, text, sizeof text);
    snprintf(err, errlen, "%s failed: %s", what, text);
    if (r.reply_type == AMQP_RESPONSE_SERVER_EXCEPTION && r.reply.id == AMQP_CHANNEL_CLOSE_METHOD) {
        ew_err rc = rmqa_reply_err(r);
        /* The broker closed the channel: confirm, and reopen the RPC
         * channel so the next declaration finds it. */
        amqp_channel_close_ok_t ok = {0};
        if (RMQ_GUARDED(t, amqp_send_method(t->conn, ch, AMQP_CHANNEL_CLOSE_OK_METHOD, &ok)) != AMQP_STATUS_OK)
            return EW_EDISCONNECTED;
        if (ch == RMQ_CH_RPC) {
            char e2[256];
            if (rmq_channel_open(t, RMQ_CH_RPC, e2, sizeof e2) != EW_OK) {
                snprintf(err, errlen, "%s failed: %s; reopening the channel: %s", what, text, e2);
                return EW_EDISCONNECTED;
            }
            t->rpc_epoch = ++t->epoch_seq;
        }
        return rc;
    }
    if (r.reply_type == AMQP_RESPONSE_SERVER_EXCEPTION &&
        r.reply.id == AMQP_CONNECTION_CLOSE_METHOD) {
        amqp_connection_close_ok_t ok = {0};
        RMQ_GUARDED(t, amqp_send_method(t->conn, 0, AMQP_CONNECTION_CLOSE_OK_METHOD, &ok));
    }
    return EW_EDISCONNECTED;
}

ew_err rmq_rpc_result(ewi_transport *t, uint16_t ch, const char *what, char *err,
                      size_t errlen)
{
    return check(t, ch, amqp_get_rpc_reply(t->conn), what, err, errlen);
}

ew_err rmq_dlq_declare(ewi_transport *t, const char *queue, char *err, size_t errlen)
{
    for (rmq_event *e = t->dlqs; e; e = e->next)
        if (strcmp(e->name, queue) == 0)
            return EW_OK;
    size_t n = strlen(queue) + 1;
    rmq_event *e = malloc(sizeof *e + n);
    if (!e) {
        snprintf(err, errlen, "out of memory declaring '%s'", queue);
        return EW_ENOMEM;
    }
    char what[EW_MAX_QUEUE_NAME + 64];
    rmqa_decl d = {.kind = RMQA_DLQ, .queue = queue, .quorum = t->o.quorum};
    ew_err rc = check(t, RMQ_CH_RPC, rmqa_rpc_decl(t->conn, RMQ_CH_RPC, &d),
                      rmqa_decl_what(&d, what, sizeof what), err, errlen);
    if (rc != EW_OK) {
        free(e);
        return rc;
    }
    memcpy(e->name, queue, n);
    e->next = t->dlqs;
    t->dlqs = e;
    return EW_OK;
}

ew_err rmq_queue_delete(ewi_transport *t, const char *queue, char *err, size_t errlen)
{
    char what[EW_MAX_QUEUE_NAME + 32];
    snprintf(what, sizeof what, "deleting queue '%s'", queue);
    amqp_queue_delete(t->conn, RMQ_CH_RPC, amqp_cstring_bytes(queue), 0, 0);
    return check(t, RMQ_CH_RPC, amqp_get_rpc_reply(t->conn), what, err, errlen);
}

void rmq_dlqs_forget(ewi_transport *t)
{
    for (rmq_event *e = t->dlqs, *next; e; e = next) {
        next = e->next;
        free(e);
    }
    t->dlqs = NULL;
}

ew_err rmq_declare_exchange(ewi_transport *t, const char *event, char *err, size_t errlen)
{
    char what[EW_MAX_EVENT_NAME + 64];
    rmqa_decl d = {.kind = RMQA_EXCHANGE, .event = event};
    return check(t, RMQ_CH_RPC, rmqa_rpc_decl(t->conn, RMQ_CH_RPC, &d),
                 rmqa_decl_what(&d, what, sizeof what), err, errlen);
}

ew_err rmq_declare_exchanges(ewi_transport *t, const char *const *events, size_t n, char *err,
                             size_t errlen)
{
    if (n == 0)
        return EW_OK;
    rmq_guard_begin(t);
    int st = AMQP_STATUS_OK;
    for (size_t i = 0; i + 1 < n && st == AMQP_STATUS_OK; i++) {
        rmqa_decl d = {.kind = RMQA_EXCHANGE, .event = events[i]};
        st = rmqa_write_decl(t->conn, RMQ_CH_RPC, &d);
    }
    rmq_guard_end(t, st);
    if (st != AMQP_STATUS_OK) {
        snprintf(err, errlen, "writing the declarations of %zu exchange(s): %s", n,
                 amqp_error_string2(st));
        return EW_EDISCONNECTED;
    }
    char what[EW_MAX_EVENT_NAME + 96];
    rmqa_decl last = {.kind = RMQA_EXCHANGE, .event = events[n - 1]};
    snprintf(what, sizeof what, "declaring %zu exchange(s) (the last '%s')", n, events[n - 1]);
    return check(t, RMQ_CH_RPC, rmqa_rpc_decl(t->conn, RMQ_CH_RPC, &last), what, err, errlen);
}

/* Writes everything rs needs on a new channel of its own: open, exchange,
 * queue, binding (nowait), qos and consume; not the dead-letter queue,
 * declared before its first dead letter (a durable queue is what costs
 * the broker most to make, and most listeners never dead-letter). The broker
 * handles a channel's methods in order, so a refusal of any of them closes
 * the channel instead of consume-ok, with a text that names the exchange
 * or queue. The open-ok and qos-ok on the way are passed over. *ch: the
 * channel, 0 when none is free (EW_EBROKER, err says why). */
static ew_err write_sub(ewi_transport *t, rmq_sub *rs, uint16_t *ch, char *err, size_t errlen)
{
    const ewi_sub *s = rs->sub;
    *ch = rmq_chans_take(&t->chans, amqp_get_channel_max(t->conn));
    if (!*ch) {
        snprintf(err, errlen, "consuming %s: no free channel (broker channel_max %d)",
                 s->queue, amqp_get_channel_max(t->conn));
        return EW_EBROKER;
    }
    rmqa_decl d = {.kind = RMQA_LISTENER, .event = s->event, .queue = s->queue,
                   .durable = s->durable,
                   .expires_ms = s->per_process ? t->o.queue_expires_ms : 0,
                   .quorum = t->o.quorum};
    amqp_channel_open_t open = {.out_of_band = amqp_empty_bytes};
    amqp_basic_qos_t qos = {.prefetch_count = rs->prefetch};
    snprintf(rs->ctag, sizeof rs->ctag, "ew-%s-%u", ewi_config_of(t->m)->server_name, *ch);
    amqp_basic_consume_t consume = {.queue = amqp_cstring_bytes(s->queue),
                                    .consumer_tag = amqp_cstring_bytes(rs->ctag),
                                    .arguments = amqp_empty_table};
    rmq_guard_begin(t);
    int st = amqp_send_method(t->conn, *ch, AMQP_CHANNEL_OPEN_METHOD, &open);
    if (st == AMQP_STATUS_OK)
        st = rmqa_write_decl(t->conn, *ch, &d);
    if (st == AMQP_STATUS_OK)
        st = amqp_send_method(t->conn, *ch, AMQP_BASIC_QOS_METHOD, &qos);
    if (st == AMQP_STATUS_OK)
        st = amqp_send_method(t->conn, *ch, AMQP_BASIC_CONSUME_METHOD, &consume);
    rmq_guard_end(t, st);
    if (st == AMQP_STATUS_OK)
        return EW_OK;
    snprintf(err, errlen, "writing the declarations of %s: %s", s->queue,
             amqp_error_string2(st));
    return EW_EDISCONNECTED;
}

static const char *what_of(ewi_transport *t, const rmq_sub *rs, char *buf, size_t len)
{
    const ewi_sub *s = rs->sub;
    rmqa_decl d = {.kind = RMQA_LISTENER, .event = s->event, .queue = s->queue,
                   .durable = s->durable,
                   .expires_ms = s->per_process ? t->o.queue_expires_ms : 0,
                   .quorum = t->o.quorum};
    rmqa_decl_what(&d, buf, len);
    snprintf(buf + strlen(buf), len - strlen(buf), " and consuming it");
    return buf;
}

static void consuming(ewi_transport *t, rmq_sub *rs, uint16_t ch)
{
    ewi_sub_state(rs->sub, true);
    rs->ch = ch;
    rs->epoch = ++t->epoch_seq;
    rmq_tags_reset(&rs->tags);
    rs->resubscribe = false;
}

ew_err rmq_subscribe(ewi_transport *t, rmq_sub *rs, rmq_frame_fn other, char *err,
                     size_t errlen)
{
    uint16_t ch;
    ew_err rc = write_sub(t, rs, &ch, err, errlen);
    if (rc != EW_OK)
        return rc;
    /* One wait, for consume-ok (frames of other channels stay queued). */
    amqp_frame_t f;
    char what[3 * EW_MAX_QUEUE_NAME + 160];
    what_of(t, rs, what, sizeof what);
    for (;;) {
        struct timeval tv = {t->o.rpc_timeout_ms / 1000, (t->o.rpc_timeout_ms % 1000) * 1000};
        int st = amqp_simple_wait_frame_noblock(t->conn, &f, &tv);
        amqp_rpc_reply_t r = {.reply_type = AMQP_RESPONSE_LIBRARY_EXCEPTION, .library_error = st};
        if (st != AMQP_STATUS_OK)
            return check(t, ch, r, what, err, errlen);
        t->last_rx_ms = ewi_now_ms();
        if (f.frame_type == AMQP_FRAME_METHOD && f.channel == ch) {
            if (f.payload.method.id == AMQP_BASIC_CONSUME_OK_METHOD) {
                consuming(t, rs, ch);
                return EW_OK;
            }
            if (f.payload.method.id == AMQP_CHANNEL_CLOSE_METHOD) {
                r = (amqp_rpc_reply_t){.reply_type = AMQP_RESPONSE_SERVER_EXCEPTION,
                                       .reply = f.payload.method};
                ew_err refused = check(t, ch, r, what, err, errlen);
                if (refused != EW_EDISCONNECTED)
                    rmq_chans_give(&t->chans, ch); /* closed: free for the next one */
                return refused;
            }
            continue; /* open-ok, qos-ok */
        }
        other(t, &f);
        if (!t->connected) {
            snprintf(err, errlen, "%s: the connection was lost", what);
            return EW_EDISCONNECTED;
        }
    }
}

ew_err rmq_subscribe_many(ewi_transport *t, rmq_sub **rss, size_t n, ew_err *rcs, bool link,
                          rmq_frame_fn other, char *why, size_t whylen)
{
    char err[600], what[3 * EW_MAX_QUEUE_NAME + 160];
    uint16_t *chs = calloc(n ? n : 1, sizeof *chs);
    if (!chs) {
        for (size_t i = 0; i < n; i++)
            if (rcs[i] == EW_EDISCONNECTED)
                rcs[i] = EW_ENOMEM;
        return EW_OK;
    }
    /* Everything written first, then the replies as they come. */
    size_t pending = 0;
    bool lost = false;
    for (size_t i = 0; i < n && t->connected && !lost; i++) {
        if (rcs[i] != EW_EDISCONNECTED)
            continue;
        ew_err rc = write_sub(t, rss[i], &chs[i], err, sizeof err);
        if (rc == EW_OK) {
            pending++;
        } else if (rc == EW_EDISCONNECTED) {
            lost = true;
            snprintf(why, whylen, "%s", err);
        } else {
            rcs[i] = rc;
            ewi_report(t->m, rc, rss[i]->sub->queue, rss[i]->sub->event, NULL, "%s: %s",
                       t->o.label, err);
        }
    }
    while (pending && t->connected && !lost) {
        amqp_frame_t f;
        struct timeval tv = {t->o.rpc_timeout_ms / 1000, (t->o.rpc_timeout_ms % 1000) * 1000};
        int st = amqp_simple_wait_frame_noblock(t->conn, &f, &tv);
        if (st != AMQP_STATUS_OK) {
            snprintf(why, whylen, "waiting for %zu listener(s) to consume: %s", pending,
                     amqp_error_string2(st));
            lost = true;
            break;
        }
        t->last_rx_ms = ewi_now_ms();
        size_t i = n;
        if (f.frame_type == AMQP_FRAME_METHOD && f.channel >= RMQ_CH_FIRST_SUB)
            for (i = 0; i < n && !(chs[i] == f.channel && rcs[i] == EW_EDISCONNECTED); i++)
                ;
        if (i == n) {
            other(t, &f); /* another channel's, or the connection's */
            continue;
        }
        rmq_sub *rs = rss[i];
        if (f.payload.method.id == AMQP_BASIC_CONSUME_OK_METHOD) {
            consuming(t, rs, chs[i]);
            if (link) {
                rs->active = true;
                rs->next = t->subs;
                t->subs = rs;
            }
            rcs[i] = EW_OK;
            pending--;
        } else if (f.payload.method.id == AMQP_CHANNEL_CLOSE_METHOD) {
            amqp_rpc_reply_t r = {.reply_type = AMQP_RESPONSE_SERVER_EXCEPTION,
                                  .reply = f.payload.method};
            ew_err rc = check(t, chs[i], r, what_of(t, rs, what, sizeof what), err, sizeof err);
            if (rc == EW_EDISCONNECTED) {
                lost = true;
                snprintf(why, whylen, "%s", err);
            } else {
                rmq_chans_give(&t->chans, chs[i]); /* closed: free for the next one */
                rcs[i] = rc;
                pending--;
                ewi_report(t->m, rc, rs->sub->queue, rs->sub->event, NULL, "%s: %s",
                           t->o.label, err);
            }
        }
        /* else open-ok, qos-ok: passed over */
    }
    /* Those still to do wait for the next connection (rcs EW_EDISCONNECTED). */
    if (t->connected && !lost)
        amqp_maybe_release_buffers(t->conn);
    free(chs);
    return lost ? EW_EDISCONNECTED : EW_OK;
}

ew_err rmq_cancel(ewi_transport *t, rmq_sub *rs, char *err, size_t errlen)
{
    if (!rs->ch)
        return EW_OK;
    amqp_basic_cancel(t->conn, rs->ch, amqp_cstring_bytes(rs->ctag));
    ew_err rc = rmq_rpc_result(t, rs->ch, "basic.cancel", err, errlen);
    if (rc != EW_OK && rc != EW_EDISCONNECTED)
        ewi_log(t->m, EW_LOG_WARN, "%s: %s", rs->sub->queue, err);
    return rc;
}

ew_err rmq_dlq_get(ewi_transport *t, rmq_req *req)
{
    rmq_got **tail = &req->got;
    char what[EW_MAX_QUEUE_NAME + 32];
    snprintf(what, sizeof what, "basic.get from '%s'", req->queue);
    while (req->ngot < req->max) {
        amqp_rpc_reply_t r = amqp_basic_get(t->conn, RMQ_CH_RPC, amqp_cstring_bytes(req->queue), 0);
        if (r.reply_type != AMQP_RESPONSE_NORMAL) {
            ew_err rc = rmq_rpc_result(t, RMQ_CH_RPC, what, req->err, sizeof req->err);
            /* Declared before the first dead letter: none yet. Reading
             * makes no queue. */
            return rc == EW_ENOTFOUND ? EW_OK : rc;
        }
        if (r.reply.id != AMQP_BASIC_GET_OK_METHOD)
            break; /* get-empty */
        uint64_t tag = ((const amqp_basic_get_ok_t *)r.reply.decoded)->delivery_tag;
        amqp_message_t msg;
        r = amqp_read_message(t->conn, RMQ_CH_RPC, &msg, 0);
        if (r.reply_type != AMQP_RESPONSE_NORMAL)
            return rmq_rpc_result(t, RMQ_CH_RPC, what, req->err, sizeof req->err);
        ew_envelope *env = ewi_envelope_new();
        rmq_got *g = calloc(1, sizeof *g);
        size_t skipped;
        ew_err rc = env && g ? EW_OK : EW_ENOMEM;
        if (rc == EW_OK)
            rc = rmq_props_to_env(&msg.properties, env, &skipped);
        if (rc == EW_OK)
            rc = ewi_envelope_set_body(env, msg.body.bytes, msg.body.len);
        amqp_destroy_message(&msg);
        if (rc != EW_OK) {
            ewi_envelope_unref(env);
            free(g);
            snprintf(req->err, sizeof req->err, "out of memory reading %s", req->queue);
            return rc;
        }
        g->env = env;
        g->tag = tag;
        *tail = g;
        tail = &g->next;
        req->ngot++;
        req->tag = tag;
        req->epoch = t->rpc_epoch;
    }
    amqp_maybe_release_buffers_on_channel(t->conn, RMQ_CH_RPC);
    return EW_OK;
}
