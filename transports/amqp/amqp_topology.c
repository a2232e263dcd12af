/* The rabbitmq dialect's topology, declared over AMQP 0-9-1.
 *
 * RabbitMQ 3.x's AMQP 1.0 plugin cannot declare exchanges, queues or
 * bindings (and its /exchange and /topic sources make queues that are never
 * deleted), so this dialect opens a short 0-9-1 connection on the same host
 * and port (librabbitmq) and declares the same topology as the rabbitmq://
 * transport: a durable topic exchange E, listener queues E::L[-S] bound with '#',
 * per_process queues with x-expires, a durable dead-letter queue E::L.dlq.
 * Everything is idempotent; a declaration that contradicts an existing one
 * fails with the broker's PRECONDITION_FAILED text. */
#include "amqp.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/time.h>

#include <amqp.h>
#include <amqp_framing.h>
#include <amqp_ssl_socket.h>
#include <amqp_tcp_socket.h>

struct amqp_topo {
    amqp_connection_state_t conn;
    amqp_channel_t ch; /* the open channel; a channel error closes it */
};

/* Writes the text of a failed RPC into err; EW_EAUTH for refused logins. */
static ew_err reply_text(amqp_rpc_reply_t r, const char *what, char *err,
                         size_t errlen)
{
    switch (r.reply_type) {
    case AMQP_RESPONSE_NORMAL:
        return EW_OK;
    case AMQP_RESPONSE_NONE:
        amqp_textf(err, errlen, "%s: no reply from the broker", what);
        return EW_ECONNECT;
    case AMQP_RESPONSE_LIBRARY_EXCEPTION:
        amqp_textf(err, errlen, "%s: %s", what, amqp_error_string2(r.library_error));
        return r.library_error == AMQP_STATUS_TIMEOUT ? EW_ETIMEDOUT : EW_ECONNECT;
    case AMQP_RESPONSE_SERVER_EXCEPTION:
        if (r.reply.id == AMQP_CHANNEL_CLOSE_METHOD) {
            amqp_channel_close_t *c = r.reply.decoded;
            amqp_textf(err, errlen, "%s: %u %.*s", what, c->reply_code,
                     (int)c->reply_text.len, (const char *)c->reply_text.bytes);
            return c->reply_code == 404 ? EW_ENOTFOUND : EW_EBROKER;
        }
        if (r.reply.id == AMQP_CONNECTION_CLOSE_METHOD) {
            amqp_connection_close_t *c = r.reply.decoded;
            amqp_textf(err, errlen, "%s: %u %.*s", what, c->reply_code,
                     (int)c->reply_text.len, (const char *)c->reply_text.bytes);
            return c->reply_code == 403 || c->reply_code == 530 ? EW_EAUTH
                                                                : EW_EBROKER;
        }
        amqp_textf(err, errlen, "%s: broker exception (method 0x%08x)", what,
                 (unsigned)r.reply.id);
        return EW_EBROKER;
    }
    amqp_textf(err, errlen, "%s: unknown reply", what);
    return EW_EPROTO;
}

/* After a channel error: acknowledge the close and open the next channel. */
static ew_err reopen_channel(amqp_topo *tp, amqp_rpc_reply_t r, char *err,
                             size_t errlen)
{
    if (r.reply_type != AMQP_RESPONSE_SERVER_EXCEPTION ||
        r.reply.id != AMQP_CHANNEL_CLOSE_METHOD)
        return EW_OK; /* the connection is gone; nothing to reopen */
    amqp_channel_close_ok_t ok = {0};
    amqp_send_method(tp->conn, tp->ch, AMQP_CHANNEL_CLOSE_OK_METHOD, &ok);
    tp->ch++;
    amqp_channel_open(tp->conn, tp->ch);
    char tmp[256];
    return reply_text(amqp_get_rpc_reply(tp->conn), "channel.open", tmp, sizeof tmp) == EW_OK
               ? EW_OK
               : (amqp_textf(err, errlen, "%s", tmp), EW_ECONNECT);
}

static ew_err check(amqp_topo *tp, const char *what, char *err, size_t errlen)
{
    amqp_rpc_reply_t r = amqp_get_rpc_reply(tp->conn);
    ew_err rc = reply_text(r, what, err, errlen);
    if (rc != EW_OK)
        reopen_channel(tp, r, err, 0);
    return rc;
}

ew_err amqp_topo_open(const amqp_options *o, int timeout_ms, amqp_topo **out,
                      char *err, size_t errlen)
{
    *out = NULL;
    amqp_topo *tp = calloc(1, sizeof *tp);
    if (!tp || !(tp->conn = amqp_new_connection())) {
        free(tp);
        amqp_textf(err, errlen, "out of memory");
        return EW_ENOMEM;
    }
    amqp_socket_t *s = o->tls ? amqp_ssl_socket_new(tp->conn)
                              : amqp_tcp_socket_new(tp->conn);
    ew_err rc = EW_ECONNECT;
    if (!s) {
        amqp_textf(err, errlen, "AMQP 0-9-1 socket: out of memory");
        goto fail;
    }
    if (o->tls) {
        if (o->ca_file && amqp_ssl_socket_set_cacert(s, o->ca_file) != AMQP_STATUS_OK) {
            amqp_textf(err, errlen, "AMQP 0-9-1 TLS: cannot read CA file %s", o->ca_file);
            goto fail;
        }
        amqp_ssl_socket_set_verify_peer(s, o->verify != AMQP_VERIFY_NONE);
        amqp_ssl_socket_set_verify_hostname(s, o->verify == AMQP_VERIFY_NAME);
    }
    int ms = timeout_ms > 0 ? timeout_ms : 1;
    struct timeval tv = {ms / 1000, (ms % 1000) * 1000};
    int st = amqp_socket_open_noblock(s, o->host, o->port, &tv);
    if (st != AMQP_STATUS_OK) {
        amqp_textf(err, errlen, "AMQP 0-9-1 connect to %s:%d (topology): %s", o->host,
                 o->port, amqp_error_string2(st));
        goto fail;
    }
    amqp_set_handshake_timeout(tp->conn, &tv);
    amqp_set_rpc_timeout(tp->conn, &tv);
    /* librabbitmq speaks PLAIN only: without a user, RabbitMQ's default
     * guest account, which is what its AMQP 1.0 ANONYMOUS maps to. */
    amqp_rpc_reply_t r = amqp_login(tp->conn, o->vhost ? o->vhost : "/", 0, 131072, 0,
                                    AMQP_SASL_METHOD_PLAIN, o->user ? o->user : "guest",
                                    o->password ? o->password : "guest");
    if ((rc = reply_text(r, "AMQP 0-9-1 login (topology)", err, errlen)) != EW_OK) {
        /* A refused login closes the socket: librabbitmq reports it as a
         * library error, the broker's reason is in its log. */
        if (r.reply_type == AMQP_RESPONSE_LIBRARY_EXCEPTION &&
            r.library_error == AMQP_STATUS_CONNECTION_CLOSED) {
            amqp_textf(err, errlen,
                     "AMQP 0-9-1 login (topology) as '%s' on vhost '%s' refused "
                     "(bad credentials or no access to the vhost)",
                     o->user ? o->user : "guest", o->vhost ? o->vhost : "/");
            rc = EW_EAUTH;
        }
        goto fail;
    }
    tp->ch = 1;
    amqp_channel_open(tp->conn, tp->ch);
    if ((rc = reply_text(amqp_get_rpc_reply(tp->conn), "channel.open", err, errlen)) != EW_OK)
        goto fail;
    *out = tp;
    return EW_OK;
fail:
    amqp_destroy_connection(tp->conn);
    free(tp);
    return rc == EW_OK ? EW_ECONNECT : rc;
}

void amqp_topo_close(amqp_topo *tp)
{
    if (!tp)
        return;
    amqp_connection_close(tp->conn, AMQP_REPLY_SUCCESS);
    amqp_destroy_connection(tp->conn);
    free(tp);
}

ew_err amqp_topo_exchange(amqp_topo *tp, const char *event, bool durable,
                          char *err, size_t errlen)
{
    /* Always durable, whatever the event: the rabbitmq:// and stomp://
     * transports declare it so, and a second declaration that differs in
     * durability fails with PRECONDITION_FAILED. */
    (void)durable;
    amqp_exchange_declare(tp->conn, tp->ch, amqp_cstring_bytes(event),
                          amqp_cstring_bytes("topic"), 0, 1, 0, 0, amqp_empty_table);
    char what[EW_MAX_EVENT_NAME + 64];
    amqp_textf(what, sizeof what, "declaring topic exchange %s", event);
    return check(tp, what, err, errlen);
}

static ew_err declare_queue(amqp_topo *tp, const char *q, bool passive,
                            bool durable, long expires_ms, char *err, size_t errlen)
{
    amqp_table_entry_t args[1];
    amqp_table_t table = amqp_empty_table;
    if (expires_ms > 0) {
        args[0].key = amqp_cstring_bytes("x-expires");
        /* long, like the rabbitmq:// transport: RabbitMQ compares the
         * arguments of a second declaration type and all. */
        args[0].value.kind = AMQP_FIELD_KIND_I64;
        args[0].value.value.i64 = expires_ms;
        table.num_entries = 1;
        table.entries = args;
    }
    amqp_queue_declare(tp->conn, tp->ch, amqp_cstring_bytes(q), passive, durable, 0,
                       0, table);
    char what[EW_MAX_QUEUE_NAME + 64];
    amqp_textf(what, sizeof what, passive ? "queue %s" : "declaring queue %s", q);
    return check(tp, what, err, errlen);
}

ew_err amqp_topo_listener(amqp_topo *tp, const char *event, const char *q,
                          bool durable, bool per_process, long expires_ms,
                          const char *dlq, char *err, size_t errlen)
{
    ew_err rc = declare_queue(tp, q, false, durable, per_process ? expires_ms : 0,
                              err, errlen);
    if (rc != EW_OK)
        return rc;
    amqp_queue_bind(tp->conn, tp->ch, amqp_cstring_bytes(q), amqp_cstring_bytes(event),
                    amqp_cstring_bytes("#"), amqp_empty_table);
    char what[EW_MAX_QUEUE_NAME + EW_MAX_EVENT_NAME + 64];
    amqp_textf(what, sizeof what, "binding queue %s to exchange %s", q, event);
    if ((rc = check(tp, what, err, errlen)) != EW_OK)
        return rc;
    return dlq ? amqp_topo_dlq(tp, dlq, err, errlen) : EW_OK;
}

ew_err amqp_topo_dlq(amqp_topo *tp, const char *dlq, char *err, size_t errlen)
{
    return declare_queue(tp, dlq, false, true, 0, err, errlen);
}

ew_err amqp_topo_queue_exists(amqp_topo *tp, const char *q, char *err,
                              size_t errlen)
{
    return declare_queue(tp, q, true, false, 0, err, errlen);
}
