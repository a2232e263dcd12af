/* Opening and closing the AMQP connection, its fixed channels, and the
 * texts of librabbitmq results. Runs on the thread that owns t->conn. */
#include "rmq.h"

#include <amqp_ssl_socket.h>
#include <amqp_tcp_socket.h>
#include <arpa/inet.h>
#include <openssl/ssl.h>
#include <openssl/x509v3.h>
#include <stdio.h>
#include <string.h>

ew_err rmq_code_err(uint16_t code)
{
    switch (code) {
    case 403: /* ACCESS_REFUSED */
    case 530: /* NOT_ALLOWED: the vhost */
        return EW_EAUTH;
    case 404:
        return EW_ENOTFOUND;
    case 406: /* PRECONDITION_FAILED: an existing object differs */
        return EW_ECONFLICT;
    default:
        return EW_EBROKER;
    }
}

const char *rmq_reply_text(amqp_rpc_reply_t r, char *buf, size_t len)
{
    switch (r.reply_type) {
    case AMQP_RESPONSE_NORMAL:
        snprintf(buf, len, "ok");
        break;
    case AMQP_RESPONSE_NONE:
        snprintf(buf, len, "no reply from the broker");
        break;
    case AMQP_RESPONSE_LIBRARY_EXCEPTION:
        snprintf(buf, len, "%s", amqp_error_string2(r.library_error));
        break;
    case AMQP_RESPONSE_SERVER_EXCEPTION:
        if (r.reply.id == AMQP_CONNECTION_CLOSE_METHOD) {
            const amqp_connection_close_t *c = r.reply.decoded;
            snprintf(buf, len, "%u %.*s", c->reply_code, (int)c->reply_text.len,
                     (const char *)c->reply_text.bytes);
        } else if (r.reply.id == AMQP_CHANNEL_CLOSE_METHOD) {
            const amqp_channel_close_t *c = r.reply.decoded;
            snprintf(buf, len, "%u %.*s", c->reply_code, (int)c->reply_text.len,
                     (const char *)c->reply_text.bytes);
        } else {
            snprintf(buf, len, "unexpected method 0x%08x from the broker",
                     (unsigned)r.reply.id);
        }
        break;
    }
    return buf;
}

static uint16_t reply_code(amqp_rpc_reply_t r)
{
    if (r.reply_type != AMQP_RESPONSE_SERVER_EXCEPTION)
        return 0;
    if (r.reply.id == AMQP_CONNECTION_CLOSE_METHOD)
        return ((const amqp_connection_close_t *)r.reply.decoded)->reply_code;
    if (r.reply.id == AMQP_CHANNEL_CLOSE_METHOD)
        return ((const amqp_channel_close_t *)r.reply.decoded)->reply_code;
    return 0;
}

static struct timeval tv_of(int ms)
{
    struct timeval tv = {ms / 1000, (ms % 1000) * 1000};
    return tv;
}

static ew_err tls_setup(ewi_transport *t, amqp_socket_t *s, char *err, size_t errlen)
{
    const rmq_opts *o = &t->o;
    int st;
    if (o->cacert && (st = amqp_ssl_socket_set_cacert(s, o->cacert)) != AMQP_STATUS_OK) {
        snprintf(err, errlen, "TLS CA file %s: %s", o->cacert, amqp_error_string2(st));
        return EW_ECONNECT;
    }
    if (o->cert && (st = amqp_ssl_socket_set_key(s, o->cert, o->key)) != AMQP_STATUS_OK) {
        snprintf(err, errlen, "TLS certificate %s / key %s: %s", o->cert, o->key,
                 amqp_error_string2(st));
        return EW_ECONNECT;
    }
    amqp_ssl_socket_set_verify_peer(s, o->verify);
    /* librabbitmq 0.11 matches the host against DNS names only: for an IP
     * address host, have OpenSSL check the certificate's IP entries during
     * the handshake instead. */
    unsigned char addr[16];
    bool ip = inet_pton(AF_INET, o->host, addr) == 1 || inet_pton(AF_INET6, o->host, addr) == 1;
    SSL_CTX *ctx = amqp_ssl_socket_get_context(s);
    if (o->verify_name && ip) {
        if (!ctx || X509_VERIFY_PARAM_set1_ip_asc(SSL_CTX_get0_param(ctx), o->host) != 1) {
            snprintf(err, errlen, "TLS: cannot set up the check of IP address %s", o->host);
            return EW_ECONNECT;
        }
        amqp_ssl_socket_set_verify_hostname(s, 0);
    } else {
        amqp_ssl_socket_set_verify_hostname(s, o->verify_name);
    }
    return EW_OK;
}

ew_err rmq_channel_open(ewi_transport *t, uint16_t ch, char *err, size_t errlen)
{
    amqp_channel_open(t->conn, ch);
    amqp_rpc_reply_t r = amqp_get_rpc_reply(t->conn);
    if (r.reply_type == AMQP_RESPONSE_NORMAL)
        return EW_OK;
    char text[256];
    snprintf(err, errlen, "opening channel %u: %s", ch, rmq_reply_text(r, text, sizeof text));
    return EW_EDISCONNECTED;
}

ew_err rmq_connect(ewi_transport *t, char *err, size_t errlen)
{
    const rmq_opts *o = &t->o;
    char text[300];
    t->conn = amqp_new_connection();
    if (!t->conn) {
        snprintf(err, errlen, "out of memory");
        return EW_ENOMEM;
    }
    amqp_socket_t *s = o->tls ? amqp_ssl_socket_new(t->conn) : amqp_tcp_socket_new(t->conn);
    ew_err rc = s ? EW_OK : EW_ENOMEM;
    if (!s)
        snprintf(err, errlen, "cannot make a %s socket", o->tls ? "TLS" : "TCP");
    if (rc == EW_OK && o->tls)
        rc = tls_setup(t, s, err, errlen);
    if (rc != EW_OK)
        goto fail;

    struct timeval cto = tv_of(o->connect_timeout_ms), rto = tv_of(o->rpc_timeout_ms);
    int st = amqp_socket_open_noblock(s, o->host, o->port, &cto);
    if (st != AMQP_STATUS_OK) {
        snprintf(err, errlen, "cannot connect to %s:%d: %s", o->host, o->port,
                 amqp_error_string2(st));
        rc = EW_ECONNECT;
        goto fail;
    }
    amqp_set_handshake_timeout(t->conn, &cto);
    amqp_set_rpc_timeout(t->conn, &rto);

    /* consumer_cancel_notify: the broker tells us when a queue we consume
     * is deleted, instead of the consumer going silent. */
    char cname[128];
    snprintf(cname, sizeof cname, "eventwire %s", ewi_config_of(t->m)->server_name);
    amqp_table_entry_t caps[] = {
        {amqp_cstring_bytes("consumer_cancel_notify"), {AMQP_FIELD_KIND_BOOLEAN, {.boolean = 1}}},
        {amqp_cstring_bytes("basic.nack"), {AMQP_FIELD_KIND_BOOLEAN, {.boolean = 1}}},
        {amqp_cstring_bytes("publisher_confirms"), {AMQP_FIELD_KIND_BOOLEAN, {.boolean = 1}}},
    };
    amqp_table_entry_t props[2];
    props[0].key = amqp_cstring_bytes("connection_name");
    props[0].value.kind = AMQP_FIELD_KIND_UTF8;
    props[0].value.value.bytes = amqp_cstring_bytes(cname);
    props[1].key = amqp_cstring_bytes("capabilities");
    props[1].value.kind = AMQP_FIELD_KIND_TABLE;
    props[1].value.value.table.num_entries = (int)(sizeof caps / sizeof caps[0]);
    props[1].value.value.table.entries = caps;
    amqp_table_t ptable = {2, props};

    amqp_rpc_reply_t r = amqp_login_with_properties(
        t->conn, o->vhost, 0, 131072, o->heartbeat_s, &ptable, AMQP_SASL_METHOD_PLAIN,
        o->user, o->password);
    if (r.reply_type != AMQP_RESPONSE_NORMAL) {
        uint16_t code = reply_code(r);
        rmq_reply_text(r, text, sizeof text);
        if (code == 403)
            snprintf(err, errlen, "the broker refused the login of user '%s' on %s: %s",
                     o->user, o->label, text);
        else if (code == 530)
            snprintf(err, errlen, "the broker refused vhost '%s' to user '%s' on %s: %s",
                     o->vhost, o->user, o->label, text);
        else
            snprintf(err, errlen, "login to %s failed: %s", o->label, text);
        rc = code ? rmq_code_err(code) : EW_ECONNECT;
        goto fail;
    }
    static const uint16_t fixed[] = {RMQ_CH_CONFIRM, RMQ_CH_FIRE, RMQ_CH_RPC};
    for (size_t i = 0; i < sizeof fixed / sizeof fixed[0]; i++)
        if ((rc = rmq_channel_open(t, fixed[i], err, errlen)) != EW_OK) {
            rc = EW_ECONNECT;
            goto fail;
        }
    amqp_confirm_select(t->conn, RMQ_CH_CONFIRM);
    r = amqp_get_rpc_reply(t->conn);
    if (r.reply_type != AMQP_RESPONSE_NORMAL) {
        snprintf(err, errlen, "confirm.select: %s", rmq_reply_text(r, text, sizeof text));
        rc = EW_ECONNECT;
        goto fail;
    }
    t->next_seq = 1;
    t->hb_s = amqp_get_heartbeat(t->conn);
    t->rpc_epoch = ++t->epoch_seq;
    t->next_ch = RMQ_CH_FIRST_SUB;
    t->connected = true;
    return EW_OK;
fail:
    amqp_destroy_connection(t->conn);
    t->conn = NULL;
    return rc;
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
}
