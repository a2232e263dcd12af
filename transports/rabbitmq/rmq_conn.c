/* Opening and closing the AMQP connection and its fixed channels (to one
 * node of the URL's list, in turn), and the
 * bookkeeping of the listeners' channels (the socket, TLS and login are the
 * shared administration module's). Runs on the thread that owns t->conn. */
#include "rmq.h"

#include <stdio.h>
#include <string.h>

ew_err rmq_channel_open(ewi_transport *t, uint16_t ch, char *err, size_t errlen)
{
    amqp_channel_open(t->conn, ch);
    amqp_rpc_reply_t r = amqp_get_rpc_reply(t->conn);
    if (r.reply_type == AMQP_RESPONSE_NORMAL)
        return EW_OK;
    char text[256];
    snprintf(err, errlen, "opening channel %u: %s", ch, rmqa_reply_text(r, text, sizeof text));
    return EW_EDISCONNECTED;
}

/* Connects to node h of the URL and opens the fixed channels. */
static ew_err connect_node(void *user, const ewi_url_host *h, char *err, size_t errlen)
{
    ewi_transport *t = user;
    const rmq_opts *o = &t->o;
    char cname[128], text[300];
    snprintf(cname, sizeof cname, "eventwire %s", ewi_config_of(t->m)->server_name);
    rmqa_conf c = {.host = h->host, .port = h->port, .vhost = o->vhost,
                   .user = o->user, .password = o->password, .tls = o->tls, .ca = o->cacert,
                   .cert = o->cert, .key = o->key, .verify_peer = o->verify,
                   .verify_name = o->verify_name, .connect_timeout_ms = o->connect_timeout_ms,
                   .rpc_timeout_ms = o->rpc_timeout_ms, .heartbeat_s = o->heartbeat_s,
                   .conn_name = cname, .capabilities = true, .label = o->label};
    ew_err rc = rmqa_connect(&c, &t->conn, err, errlen);
    if (rc != EW_OK)
        return rc;
    static const uint16_t fixed[] = {RMQ_CH_CONFIRM, RMQ_CH_FIRE, RMQ_CH_RPC};
    for (size_t k = 0; k < sizeof fixed / sizeof fixed[0]; k++)
        if ((rc = rmq_channel_open(t, fixed[k], err, errlen)) != EW_OK) {
            rc = EW_ECONNECT;
            goto fail;
        }
    amqp_confirm_select(t->conn, RMQ_CH_CONFIRM);
    amqp_rpc_reply_t r = amqp_get_rpc_reply(t->conn);
    if (r.reply_type != AMQP_RESPONSE_NORMAL) {
        snprintf(err, errlen, "confirm.select: %s", rmqa_reply_text(r, text, sizeof text));
        rc = EW_ECONNECT;
        goto fail;
    }
    return EW_OK;
fail:
    amqp_destroy_connection(t->conn);
    t->conn = NULL;
    return rc;
}

/* One round over the URL's nodes (core's ewi_hosts_round): the first that
 * answers wins, the next round starts with the node after it; the caller's
 * backoff runs between rounds. */
ew_err rmq_connect(ewi_transport *t, char *err, size_t errlen)
{
    rmq_opts *o = &t->o;
    ew_err rc = ewi_hosts_round(&o->hosts, &o->host_next, &o->host_cur, connect_node, t, err,
                                errlen);
    if (rc != EW_OK)
        return rc;
    if (o->hosts.n > 1)
        ewi_log(t->m, EW_LOG_INFO, "%s: connected to node %s:%d (%zu of %zu)", o->label,
                o->hosts.v[o->host_cur].host, o->hosts.v[o->host_cur].port, o->host_cur + 1,
                o->hosts.n);
    t->next_seq = 1;
    t->hb_s = amqp_get_heartbeat(t->conn);
    t->rpc_epoch = ++t->epoch_seq;
    rmq_chans_reset(&t->chans);
    t->connected = true;
    ewi_conn_state(t->m, 0, true);
    return EW_OK;
}

void rmq_disconnect(ewi_transport *t, bool polite)
{
    if (!t->conn)
        return;
    if (polite && t->connected)
        amqp_connection_close(t->conn, AMQP_REPLY_SUCCESS);
    /* Under guard_mu: the write guard never shuts down a socket number
     * that was closed and reused meanwhile. */
    pthread_mutex_lock(&t->guard_mu);
    amqp_destroy_connection(t->conn);
    t->conn = NULL;
    atomic_store(&t->wr_fd, -1);
    pthread_mutex_unlock(&t->guard_mu);
    t->connected = false;
    rmq_dlqs_forget(t);
}

void rmq_chans_reset(rmq_chans *c)
{
    memset(c->used, 0, sizeof c->used);
}

uint16_t rmq_chans_take(rmq_chans *c, int channel_max)
{
    /* channel_max 0: no limit but the protocol's. */
    unsigned max = channel_max <= 0 || channel_max > 65535 ? 65535 : (unsigned)channel_max;
    for (unsigned ch = RMQ_CH_FIRST_SUB; ch <= max; ch++)
        if (!(c->used[ch / 8] & (1u << (ch % 8)))) {
            c->used[ch / 8] |= (uint8_t)(1u << (ch % 8));
            return (uint16_t)ch;
        }
    return 0;
}

void rmq_chans_give(rmq_chans *c, uint16_t ch)
{
    if (ch >= RMQ_CH_FIRST_SUB)
        c->used[ch / 8] &= (uint8_t)~(1u << (ch % 8));
}
