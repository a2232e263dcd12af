/* Topology on the broker (the README's addressing table, RabbitMQ column):
 *   event E        durable topic exchange E; messages carry routing key E
 *   listener L     queue E::L bound to E with '#'
 *   per_process    queue E::L-<server>, x-expires so dead servers leave
 *                  nothing behind
 *   dead letters   durable queue E::L.dlq (core's name), fed through the
 *                  default exchange
 * Declarations run on the RPC channel; consumers get a channel each. All of
 * it on the I/O thread (or in start before the thread runs). */
#include "rmq.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static amqp_bytes_t b(const char *s)
{
    return amqp_cstring_bytes(s);
}

ew_err rmq_rpc_result(ewi_transport *t, uint16_t ch, const char *what, char *err,
                      size_t errlen)
{
    amqp_rpc_reply_t r = amqp_get_rpc_reply(t->conn);
    if (r.reply_type == AMQP_RESPONSE_NORMAL)
        return EW_OK;
    char text[300];
    rmq_reply_text(r, text, sizeof text);
    snprintf(err, errlen, "%s failed: %s", what, text);
    if (r.reply_type == AMQP_RESPONSE_SERVER_EXCEPTION && r.reply.id == AMQP_CHANNEL_CLOSE_METHOD) {
        uint16_t code = ((const amqp_channel_close_t *)r.reply.decoded)->reply_code;
        /* The broker closed the channel: confirm, and reopen the RPC
         * channel so the next declaration finds it. */
        amqp_channel_close_ok_t ok = {0};
        if (RMQ_GUARDED(t, amqp_send_method(t->conn, ch, AMQP_CHANNEL_CLOSE_OK_METHOD, &ok)) != AMQP_STATUS_OK) {
            rmq_lost(t, text);
            return EW_EDISCONNECTED;
        }
        if (ch == RMQ_CH_RPC) {
            char e2[256];
            if (rmq_channel_open(t, RMQ_CH_RPC, e2, sizeof e2) != EW_OK) {
                rmq_lost(t, e2);
                return EW_EDISCONNECTED;
            }
            t->rpc_epoch = ++t->epoch_seq;
        }
        return rmq_code_err(code);
    }
    if (r.reply_type == AMQP_RESPONSE_SERVER_EXCEPTION &&
        r.reply.id == AMQP_CONNECTION_CLOSE_METHOD) {
        amqp_connection_close_ok_t ok = {0};
        RMQ_GUARDED(t, amqp_send_method(t->conn, 0, AMQP_CONNECTION_CLOSE_OK_METHOD, &ok));
    }
    rmq_lost(t, text);
    return EW_EDISCONNECTED;
}

ew_err rmq_declare_exchange(ewi_transport *t, const char *event, char *err, size_t errlen)
{
    char what[EW_MAX_EVENT_NAME + 64];
    snprintf(what, sizeof what, "declaring exchange '%s' (topic, durable)", event);
    amqp_exchange_declare(t->conn, RMQ_CH_RPC, b(event), b("topic"), 0, 1, 0, 0,
                          amqp_empty_table);
    return rmq_rpc_result(t, RMQ_CH_RPC, what, err, errlen);
}

ew_err rmq_declare_sub(ewi_transport *t, rmq_sub *rs, char *err, size_t errlen)
{
    const ewi_sub *s = rs->sub;
    char what[2 * EW_MAX_QUEUE_NAME + 96];
    ew_err rc = rmq_declare_exchange(t, s->event, err, errlen);
    if (rc != EW_OK)
        return rc;

    amqp_table_entry_t expires = {b("x-expires"), {AMQP_FIELD_KIND_I64, {.i64 = t->o.queue_expires_ms}}};
    amqp_table_t args = amqp_empty_table;
    if (s->per_process) {
        args.num_entries = 1;
        args.entries = &expires;
    }
    snprintf(what, sizeof what, "declaring queue '%s' (%s%s)", s->queue,
             s->durable ? "durable" : "transient",
             s->per_process ? ", x-expires" : "");
    amqp_queue_declare(t->conn, RMQ_CH_RPC, b(s->queue), 0, s->durable, 0, 0, args);
    if ((rc = rmq_rpc_result(t, RMQ_CH_RPC, what, err, errlen)) != EW_OK)
        return rc;

    snprintf(what, sizeof what, "binding queue '%s' to exchange '%s' with '#'", s->queue,
             s->event);
    amqp_queue_bind(t->conn, RMQ_CH_RPC, b(s->queue), b(s->event), b("#"), amqp_empty_table);
    if ((rc = rmq_rpc_result(t, RMQ_CH_RPC, what, err, errlen)) != EW_OK)
        return rc;

    snprintf(what, sizeof what, "declaring dead-letter queue '%s' (durable)", s->dlq);
    amqp_queue_declare(t->conn, RMQ_CH_RPC, b(s->dlq), 0, 1, 0, 0, amqp_empty_table);
    return rmq_rpc_result(t, RMQ_CH_RPC, what, err, errlen);
}

ew_err rmq_consume(ewi_transport *t, rmq_sub *rs, char *err, size_t errlen)
{
    char what[EW_MAX_QUEUE_NAME + 64];
    if (t->next_ch == 0 || t->next_ch >= (uint16_t)amqp_get_channel_max(t->conn)) {
        snprintf(err, errlen, "consuming %s: no free channel (broker channel_max %d)",
                 rs->sub->queue, amqp_get_channel_max(t->conn));
        return EW_EBROKER;
    }
    uint16_t ch = t->next_ch++;
    ew_err rc = rmq_channel_open(t, ch, err, errlen);
    if (rc != EW_OK) {
        rmq_lost(t, err);
        return rc;
    }
    amqp_basic_qos(t->conn, ch, 0, rs->prefetch, 0);
    snprintf(what, sizeof what, "basic.qos %u on %s", rs->prefetch, rs->sub->queue);
    if ((rc = rmq_rpc_result(t, ch, what, err, errlen)) != EW_OK)
        return rc;
    snprintf(rs->ctag, sizeof rs->ctag, "ew-%s-%u", ewi_config_of(t->m)->server_name, ch);
    amqp_basic_consume(t->conn, ch, b(rs->sub->queue), b(rs->ctag), 0, 0, 0, amqp_empty_table);
    snprintf(what, sizeof what, "consuming queue '%s'", rs->sub->queue);
    if ((rc = rmq_rpc_result(t, ch, what, err, errlen)) != EW_OK)
        return rc;
    rs->ch = ch;
    rs->epoch = ++t->epoch_seq;
    rmq_tags_reset(&rs->tags);
    rs->resubscribe = false;
    return EW_OK;
}

ew_err rmq_cancel(ewi_transport *t, rmq_sub *rs)
{
    char err[400];
    if (!rs->ch)
        return EW_OK;
    amqp_basic_cancel(t->conn, rs->ch, b(rs->ctag));
    ew_err rc = rmq_rpc_result(t, rs->ch, "basic.cancel", err, sizeof err);
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
        amqp_rpc_reply_t r = amqp_basic_get(t->conn, RMQ_CH_RPC, b(req->queue), 0);
        if (r.reply_type != AMQP_RESPONSE_NORMAL) {
            ew_err rc = rmq_rpc_result(t, RMQ_CH_RPC, what, req->err, sizeof req->err);
            if (rc == EW_ENOTFOUND)
                snprintf(req->err, sizeof req->err,
                         "no dead-letter queue '%s' on %s (is the listener registered?)",
                         req->queue, t->o.label);
            return rc;
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
        *tail = g;
        tail = &g->next;
        req->ngot++;
        req->tag = tag;
        req->epoch = t->rpc_epoch;
    }
    amqp_maybe_release_buffers_on_channel(t->conn, RMQ_CH_RPC);
    return EW_OK;
}
