/* The rabbitmq dialect's topology over AMQP 0-9-1 (librabbitmq).
 *
 * RabbitMQ's STOMP adapter cannot declare exchanges (a SEND to
 * /exchange/E/E of a missing E is an ERROR that closes the connection) and
 * silently drops a SEND to /amq/queue/Q of a missing Q. So this dialect keeps
 * a 0-9-1 connection on the same host (amqp_port) for what STOMP cannot do:
 * the topic exchange E (the same one the rabbitmq:// transport declares),
 * the durable dead-letter queue E::L.dlq, and checking that a listener's
 * queue exists before a send to it. Listener queues themselves are declared
 * by the STOMP SUBSCRIBE (x-queue-name). Thread-safe: one mutex. */
#include "transports/stomp/stomp.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/time.h>

#include <arpa/inet.h>

#include <amqp.h>
#include <amqp_framing.h>
#include <amqp_ssl_socket.h>
#include <amqp_tcp_socket.h>
#include <openssl/ssl.h>
#include <openssl/x509v3.h>

typedef struct name_node {
    char *name;
    bool durable;
    struct name_node *next;
} name_node;

struct stomp_topo {
    pthread_mutex_t mu;
    const stomp_options *o;
    amqp_connection_state_t conn; /* NULL when closed */
    amqp_channel_t ch;            /* open channel; 0: none */
    name_node *exchanges;         /* declared, for redeclare */
    name_node *queues;            /* known to exist until forgotten */
};

stomp_topo *stomp_topo_new(const stomp_options *o)
{
    stomp_topo *tp = calloc(1, sizeof *tp);
    if (!tp)
        return NULL;
    pthread_mutex_init(&tp->mu, NULL);
    tp->o = o;
    return tp;
}

static void close_conn(stomp_topo *tp)
{
    if (!tp->conn)
        return;
    if (tp->ch)
        amqp_channel_close(tp->conn, tp->ch, AMQP_REPLY_SUCCESS);
    amqp_connection_close(tp->conn, AMQP_REPLY_SUCCESS);
    amqp_destroy_connection(tp->conn);
    tp->conn = NULL;
    tp->ch = 0;
}

static void list_free(name_node *n)
{
    while (n) {
        name_node *next = n->next;
        free(n->name);
        free(n);
        n = next;
    }
}

void stomp_topo_free(stomp_topo *tp)
{
    if (!tp)
        return;
    close_conn(tp);
    list_free(tp->exchanges);
    list_free(tp->queues);
    pthread_mutex_destroy(&tp->mu);
    free(tp);
}

/* The text of a failed RPC; the channel (or connection) is gone after a
 * server exception, so it is reset. */
static ew_err reply(stomp_topo *tp, amqp_rpc_reply_t r, const char *what, char *err,
                    size_t errlen)
{
    switch (r.reply_type) {
    case AMQP_RESPONSE_NORMAL:
        return EW_OK;
    case AMQP_RESPONSE_NONE:
        snprintf(err, errlen, "%s: no reply from RabbitMQ", what);
        close_conn(tp);
        return EW_ECONNECT;
    case AMQP_RESPONSE_LIBRARY_EXCEPTION:
        snprintf(err, errlen, "%s (AMQP 0-9-1 on %s:%d): %s", what, tp->o->host,
                 tp->o->amqp_port, amqp_error_string2(r.library_error));
        close_conn(tp);
        return EW_ECONNECT;
    case AMQP_RESPONSE_SERVER_EXCEPTION:
        break;
    }
    if (r.reply.id == AMQP_CHANNEL_CLOSE_METHOD) {
        /* The decoded method lives in the connection's pools: read it
         * before anything else touches the connection. */
        amqp_channel_close_t *c = r.reply.decoded;
        unsigned code = c->reply_code;
        snprintf(err, errlen, "%s: %u %.*s", what, code,
                 (int)c->reply_text.len, (const char *)c->reply_text.bytes);
        amqp_channel_close_ok_t ok;
        amqp_send_method(tp->conn, tp->ch, AMQP_CHANNEL_CLOSE_OK_METHOD, &ok);
        tp->ch = 0;
        return code == 404 ? EW_ENOTFOUND : code == 403 ? EW_EAUTH : EW_EBROKER;
    }
    if (r.reply.id == AMQP_CONNECTION_CLOSE_METHOD) {
        /* c is freed with the connection below: keep its code. */
        amqp_connection_close_t *c = r.reply.decoded;
        unsigned code = c->reply_code;
        snprintf(err, errlen, "%s: %u %.*s", what, code,
                 (int)c->reply_text.len, (const char *)c->reply_text.bytes);
        amqp_connection_close_ok_t ok;
        amqp_send_method(tp->conn, 0, AMQP_CONNECTION_CLOSE_OK_METHOD, &ok);
        amqp_destroy_connection(tp->conn);
        tp->conn = NULL;
        tp->ch = 0;
        return code == 530 || code == 403 ? EW_EAUTH : EW_EBROKER;
    }
    snprintf(err, errlen, "%s: unexpected AMQP method 0x%08x", what, r.reply.id);
    close_conn(tp);
    return EW_EPROTO;
}

/* Opens the connection and a channel as needed. */
static ew_err ready(stomp_topo *tp, char *err, size_t errlen)
{
    const stomp_options *o = tp->o;
    if (!o->amqp_port) {
        snprintf(err, errlen, "amqp_port=0: this dialect=rabbitmq transport cannot "
                              "declare topology");
        return EW_ENOTSUP;
    }
    if (!tp->conn) {
        tp->conn = amqp_new_connection();
        if (!tp->conn)
            return EW_ENOMEM;
        amqp_socket_t *s;
        if (o->tls) {
            s = amqp_ssl_socket_new(tp->conn);
            if (s) {
                amqp_ssl_socket_set_verify_peer(s, o->verify);
                /* librabbitmq 0.11 matches the host against the
                 * certificate's DNS names only: for an IP address, have
                 * OpenSSL check its IP entries during the handshake. */
                unsigned char addr[16];
                bool ip = inet_pton(AF_INET, o->host, addr) == 1 ||
                          inet_pton(AF_INET6, o->host, addr) == 1;
                SSL_CTX *ctx = amqp_ssl_socket_get_context(s);
                if (o->verify && ip) {
                    if (!ctx ||
                        X509_VERIFY_PARAM_set1_ip_asc(SSL_CTX_get0_param(ctx), o->host) != 1) {
                        snprintf(err, errlen, "AMQP 0-9-1: cannot set up the TLS check of "
                                              "IP address %s", o->host);
                        close_conn(tp);
                        return EW_ECONNECT;
                    }
                    amqp_ssl_socket_set_verify_hostname(s, 0);
                } else {
                    amqp_ssl_socket_set_verify_hostname(s, o->verify);
                }
                if (o->ca_file && amqp_ssl_socket_set_cacert(s, o->ca_file) != AMQP_STATUS_OK) {
                    snprintf(err, errlen, "AMQP 0-9-1: cannot load CA file %s", o->ca_file);
                    close_conn(tp);
                    return EW_EINVAL;
                }
            }
        } else {
            s = amqp_tcp_socket_new(tp->conn);
        }
        if (!s) {
            close_conn(tp);
            return EW_ENOMEM;
        }
        struct timeval tv = {.tv_sec = o->connect_timeout_ms / 1000,
                             .tv_usec = (o->connect_timeout_ms % 1000) * 1000};
        int st = amqp_socket_open_noblock(s, o->host, o->amqp_port, &tv);
        if (st != AMQP_STATUS_OK) {
            snprintf(err, errlen,
                     "AMQP 0-9-1 connection to %s:%d (needed by dialect=rabbitmq to "
                     "declare exchanges; option amqp_port): %s",
                     o->host, o->amqp_port, amqp_error_string2(st));
            close_conn(tp);
            return EW_ECONNECT;
        }
        amqp_set_rpc_timeout(tp->conn, &tv);
        amqp_rpc_reply_t r = amqp_login(tp->conn, o->vhost, 0, 131072, 0,
                                        AMQP_SASL_METHOD_PLAIN,
                                        o->login ? o->login : "guest",
                                        o->passcode ? o->passcode : "guest");
        ew_err rc = reply(tp, r, "AMQP 0-9-1 login", err, errlen);
        if (rc != EW_OK) {
            if (rc == EW_ECONNECT)
                rc = EW_EAUTH; /* RabbitMQ closes the socket on a bad login */
            close_conn(tp);
            return rc;
        }
    }
    if (!tp->ch) {
        /* A channel error closed the last one: take a new number. */
        static const amqp_channel_t first = 1;
        amqp_channel_t ch = first;
        amqp_channel_open(tp->conn, ch);
        ew_err rc = reply(tp, amqp_get_rpc_reply(tp->conn), "AMQP 0-9-1 channel",
                          err, errlen);
        if (rc != EW_OK) {
            close_conn(tp);
            return rc;
        }
        tp->ch = ch;
    }
    return EW_OK;
}

/* Runs one declaration, reconnecting once if the connection went stale. */
typedef ew_err (*topo_op)(stomp_topo *tp, const char *name, bool flag, char *err,
                          size_t errlen);

static ew_err run(stomp_topo *tp, topo_op op, const char *name, bool flag, char *err,
                  size_t errlen)
{
    ew_err rc = EW_ECONNECT;
    for (int attempt = 0; attempt < 2 && rc == EW_ECONNECT; attempt++) {
        if ((rc = ready(tp, err, errlen)) == EW_OK)
            rc = op(tp, name, flag, err, errlen);
        if (rc == EW_EBROKER && !tp->ch && tp->conn) {
            /* A channel-level refusal: the connection is fine. */
            break;
        }
    }
    return rc;
}

static ew_err op_exchange(stomp_topo *tp, const char *event, bool durable, char *err,
                          size_t errlen)
{
    /* Always durable, whatever the event's durability (its queues keep
     * that): rabbitmq:// and amqp:// declare E durable too, and a second
     * declaration with another durable flag is a 406 PRECONDITION_FAILED. */
    (void)durable;
    amqp_exchange_declare(tp->conn, tp->ch, amqp_cstring_bytes(event),
                          amqp_cstring_bytes("topic"), 0, 1, 0, 0,
                          amqp_empty_table);
    char what[EW_MAX_EVENT_NAME + 64];
    snprintf(what, sizeof what, "declaring topic exchange %s", event);
    return reply(tp, amqp_get_rpc_reply(tp->conn), what, err, errlen);
}

static ew_err op_queue(stomp_topo *tp, const char *q, bool passive, char *err,
                       size_t errlen)
{
    /* The dead-letter queue: durable, no arguments (as rabbitmq:// and
     * amqp:// declare it). passive: only check that it exists. */
    amqp_queue_declare(tp->conn, tp->ch, amqp_cstring_bytes(q), passive, true, 0, 0,
                       amqp_empty_table);
    char what[EW_MAX_QUEUE_NAME + 64];
    snprintf(what, sizeof what, passive ? "queue %s" : "declaring queue %s", q);
    return reply(tp, amqp_get_rpc_reply(tp->conn), what, err, errlen);
}

static bool in_list(const name_node *n, const char *name)
{
    for (; n; n = n->next)
        if (strcmp(n->name, name) == 0)
            return true;
    return false;
}

static void remember(name_node **list, const char *name, bool durable)
{
    name_node *n = calloc(1, sizeof *n);
    if (!n || !(n->name = strdup(name))) {
        free(n);
        return; /* only costs a second declaration later */
    }
    n->durable = durable;
    n->next = *list;
    *list = n;
}

ew_err stomp_topo_exchange(stomp_topo *tp, const char *event, bool durable, char *err,
                           size_t errlen)
{
    pthread_mutex_lock(&tp->mu);
    ew_err rc = EW_OK;
    if (!in_list(tp->exchanges, event)) {
        rc = run(tp, op_exchange, event, durable, err, errlen);
        if (rc == EW_OK)
            remember(&tp->exchanges, event, durable);
    }
    pthread_mutex_unlock(&tp->mu);
    return rc;
}

ew_err stomp_topo_dlq(stomp_topo *tp, const char *dlq, char *err, size_t errlen)
{
    pthread_mutex_lock(&tp->mu);
    ew_err rc = EW_OK;
    if (!in_list(tp->queues, dlq)) {
        rc = run(tp, op_queue, dlq, false, err, errlen);
        if (rc == EW_OK)
            remember(&tp->queues, dlq, true);
    }
    pthread_mutex_unlock(&tp->mu);
    return rc;
}

ew_err stomp_topo_queue_exists(stomp_topo *tp, const char *q, char *err, size_t errlen)
{
    pthread_mutex_lock(&tp->mu);
    ew_err rc = EW_OK;
    if (!in_list(tp->queues, q)) {
        rc = run(tp, op_queue, q, true, err, errlen);
        if (rc == EW_OK)
            remember(&tp->queues, q, true);
    }
    pthread_mutex_unlock(&tp->mu);
    return rc;
}

ew_err stomp_topo_redeclare(stomp_topo *tp, char *err, size_t errlen)
{
    pthread_mutex_lock(&tp->mu);
    ew_err rc = EW_OK;
    /* The old connection died with the broker; start afresh. */
    close_conn(tp);
    for (name_node *n = tp->exchanges; n && rc == EW_OK; n = n->next)
        rc = run(tp, op_exchange, n->name, n->durable, err, errlen);
    pthread_mutex_unlock(&tp->mu);
    return rc;
}

void stomp_topo_forget_queues(stomp_topo *tp)
{
    pthread_mutex_lock(&tp->mu);
    list_free(tp->queues);
    tp->queues = NULL;
    pthread_mutex_unlock(&tp->mu);
}
