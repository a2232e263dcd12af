/* Opening an AMQP 0-9-1 connection to RabbitMQ, and what its replies mean. */
#include "transports/rmqadmin/rmqadmin.h"

#include <amqp_ssl_socket.h>
#include <amqp_tcp_socket.h>
#include <arpa/inet.h>
#include <openssl/ssl.h>
#include <openssl/x509v3.h>
#include <stdio.h>
#include <string.h>

ew_err rmqa_code_err(unsigned code)
{
    switch (code) {
    case 403: /* ACCESS_REFUSED: credentials, or no permission on a name */
    case 530: /* NOT_ALLOWED: the vhost */
        return EW_EAUTH;
    case 404: /* NOT_FOUND */
        return EW_ENOTFOUND;
    case 406: /* PRECONDITION_FAILED: an existing object differs */
        return EW_ECONFLICT;
    default:
        return EW_EBROKER;
    }
}

unsigned rmqa_reply_code(amqp_rpc_reply_t r)
{
    if (r.reply_type != AMQP_RESPONSE_SERVER_EXCEPTION)
        return 0;
    if (r.reply.id == AMQP_CONNECTION_CLOSE_METHOD)
        return ((const amqp_connection_close_t *)r.reply.decoded)->reply_code;
    if (r.reply.id == AMQP_CHANNEL_CLOSE_METHOD)
        return ((const amqp_channel_close_t *)r.reply.decoded)->reply_code;
    return 0;
}

ew_err rmqa_reply_err(amqp_rpc_reply_t r)
{
    switch (r.reply_type) {
    case AMQP_RESPONSE_NORMAL:
        return EW_OK;
    case AMQP_RESPONSE_SERVER_EXCEPTION: {
        unsigned code = rmqa_reply_code(r);
        return code ? rmqa_code_err(code) : EW_EPROTO;
    }
    case AMQP_RESPONSE_LIBRARY_EXCEPTION:
        if (r.library_error == AMQP_STATUS_TIMEOUT)
            return EW_ETIMEDOUT;
        return EW_EDISCONNECTED;
    case AMQP_RESPONSE_NONE:
    default:
        return EW_EDISCONNECTED;
    }
}

const char *rmqa_reply_text(amqp_rpc_reply_t r, char *buf, size_t len)
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

static struct timeval tv_of(int ms)
{
    if (ms <= 0)
        ms = 1;
    struct timeval tv = {ms / 1000, (ms % 1000) * 1000};
    return tv;
}

static ew_err tls_setup(const rmqa_conf *c, amqp_socket_t *s, char *err, size_t errlen)
{
    int st;
    if (c->ca && (st = amqp_ssl_socket_set_cacert(s, c->ca)) != AMQP_STATUS_OK) {
        snprintf(err, errlen, "TLS CA file %s: %s", c->ca, amqp_error_string2(st));
        return EW_ETLS;
    }
    if (c->cert && (st = amqp_ssl_socket_set_key(s, c->cert, c->key ? c->key : c->cert)) !=
                       AMQP_STATUS_OK) {
        snprintf(err, errlen, "TLS certificate %s / key %s: %s", c->cert,
                 c->key ? c->key : c->cert, amqp_error_string2(st));
        return EW_ETLS;
    }
    amqp_ssl_socket_set_verify_peer(s, c->verify_peer);
    /* librabbitmq 0.11 matches the host against DNS names only: for an IP
     * address host, have OpenSSL check the certificate's IP entries during
     * the handshake instead. */
    unsigned char addr[16];
    bool ip = inet_pton(AF_INET, c->host, addr) == 1 || inet_pton(AF_INET6, c->host, addr) == 1;
    SSL_CTX *ctx = amqp_ssl_socket_get_context(s);
    if (c->verify_peer && c->verify_name && ip) {
        if (!ctx || X509_VERIFY_PARAM_set1_ip_asc(SSL_CTX_get0_param(ctx), c->host) != 1) {
            snprintf(err, errlen, "TLS: cannot set up the check of IP address %s", c->host);
            return EW_ETLS;
        }
        amqp_ssl_socket_set_verify_hostname(s, 0);
    } else {
        amqp_ssl_socket_set_verify_hostname(s, c->verify_peer && c->verify_name);
    }
    return EW_OK;
}

static ew_err login(const rmqa_conf *c, amqp_connection_state_t conn, char *err,
                    size_t errlen)
{
    const char *vhost = c->vhost ? c->vhost : "/";
    const char *user = c->user ? c->user : "guest";
    /* consumer_cancel_notify: the broker tells us when a queue we consume
     * is deleted, instead of the consumer going silent. */
    amqp_table_entry_t caps[] = {
        {amqp_cstring_bytes("consumer_cancel_notify"), {AMQP_FIELD_KIND_BOOLEAN, {.boolean = 1}}},
        {amqp_cstring_bytes("basic.nack"), {AMQP_FIELD_KIND_BOOLEAN, {.boolean = 1}}},
        {amqp_cstring_bytes("publisher_confirms"), {AMQP_FIELD_KIND_BOOLEAN, {.boolean = 1}}},
    };
    amqp_table_entry_t props[2];
    int n = 0;
    props[n].key = amqp_cstring_bytes("connection_name");
    props[n].value.kind = AMQP_FIELD_KIND_UTF8;
    props[n++].value.value.bytes = amqp_cstring_bytes(c->conn_name ? c->conn_name : "eventwire");
    if (c->capabilities) {
        props[n].key = amqp_cstring_bytes("capabilities");
        props[n].value.kind = AMQP_FIELD_KIND_TABLE;
        props[n].value.value.table.num_entries = (int)(sizeof caps / sizeof caps[0]);
        props[n++].value.value.table.entries = caps;
    }
    amqp_table_t ptable = {n, props};
    amqp_rpc_reply_t r = amqp_login_with_properties(
        conn, vhost, 0, 131072, c->heartbeat_s, &ptable, AMQP_SASL_METHOD_PLAIN, user,
        c->password ? c->password : "guest");
    if (r.reply_type == AMQP_RESPONSE_NORMAL)
        return EW_OK;
    char text[300];
    unsigned code = rmqa_reply_code(r);
    rmqa_reply_text(r, text, sizeof text);
    const char *label = c->label ? c->label : c->host;
    if (code == 530) {
        snprintf(err, errlen, "the broker refused vhost '%s' to user '%s' on %s: %s", vhost,
                 user, label, text);
        return EW_EAUTH;
    }
    if (code == 403) {
        snprintf(err, errlen, "the broker refused the login of user '%s' on %s: %s", user,
                 label, text);
        return EW_EAUTH;
    }
    /* A socket closed without a reply is an outage (a relay in front of a
     * broker that is down, a broker shutting down), which a retry may
     * overcome: RabbitMQ refuses credentials with 403, a vhost with 530. */
    snprintf(err, errlen, "login to %s failed: %s", label, text);
    return code ? rmqa_code_err(code) : EW_ECONNECT;
}

ew_err rmqa_connect(const rmqa_conf *c, amqp_connection_state_t *out, char *err,
                    size_t errlen)
{
    *out = NULL;
    amqp_connection_state_t conn = amqp_new_connection();
    if (!conn) {
        snprintf(err, errlen, "out of memory");
        return EW_ENOMEM;
    }
    amqp_socket_t *s = c->tls ? amqp_ssl_socket_new(conn) : amqp_tcp_socket_new(conn);
    ew_err rc = s ? EW_OK : EW_ENOMEM;
    if (!s)
        snprintf(err, errlen, "cannot make a %s socket", c->tls ? "TLS" : "TCP");
    if (rc == EW_OK && c->tls)
        rc = tls_setup(c, s, err, errlen);
    if (rc != EW_OK)
        goto fail;

    struct timeval cto = tv_of(c->connect_timeout_ms);
    struct timeval rto = tv_of(c->rpc_timeout_ms > 0 ? c->rpc_timeout_ms : c->connect_timeout_ms);
    int st = amqp_socket_open_noblock(s, c->host, c->port, &cto);
    if (st != AMQP_STATUS_OK) {
        snprintf(err, errlen, "cannot connect to %s:%d: %s", c->host, c->port,
                 amqp_error_string2(st));
        /* A certificate that is not trusted or does not name the host stays
         * so on every retry. */
        rc = st == AMQP_STATUS_SSL_PEER_VERIFY_FAILED ||
                     st == AMQP_STATUS_SSL_HOSTNAME_VERIFY_FAILED
                 ? EW_ETLS
                 : EW_ECONNECT;
        goto fail;
    }
    amqp_set_handshake_timeout(conn, &cto);
    amqp_set_rpc_timeout(conn, &rto);
    if ((rc = login(c, conn, err, errlen)) != EW_OK)
        goto fail;
    *out = conn;
    return EW_OK;
fail:
    amqp_destroy_connection(conn);
    return rc;
}
