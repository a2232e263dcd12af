/* RabbitMQ administration over AMQP 0-9-1 (librabbitmq), shared by the
 * three RabbitMQ-backed transports: rabbitmq:// itself, and the rabbitmq
 * dialects of stomp:// and amqp://, which cannot declare exchanges and
 * bindings over their own protocol.
 *
 * One place for: opening a connection (plain or TLS: CA, host-name or IP
 * address check, client certificate, login); turning broker replies into
 * ew_err (406 -> EW_ECONFLICT, 403 -> EW_EAUTH, 404 -> EW_ENOTFOUND, refused
 * login or vhost -> EW_EAUTH, untrusted certificate or wrong host ->
 * EW_ETLS, other refusals -> EW_EBROKER) with the broker's text kept; the
 * README's addressing table (RabbitMQ column):
 *   event E        durable topic exchange E
 *   listener L     queue E::L (E::L-<server> when per_process, with
 *                  x-expires), durable as the event, bound to E with '#'
 *   dead letters   durable queue E::L.dlq, no arguments
 * With queue_type=quorum the durable listener queues that
 * do not expire and the dead-letter queues get x-queue-type quorum.
 * and a handle (rmqa) that declares over a connection of its own,
 * remembers what it declared and declares it again after a reconnect.
 *
 * Declarations are pipelined: the methods of one listener (exchange, queue,
 * binding, dead-letter queue) are written with nowait and only the last one
 * waits, so a listener costs one round trip; a refusal closes the channel
 * with a text that names the exchange or queue at fault. */
#ifndef EW_RMQADMIN_H
#define EW_RMQADMIN_H

#include "ewi.h"

#include <amqp.h>
#include <amqp_framing.h>

/* How to reach the broker. Strings are borrowed by rmqa_connect and copied
 * by rmqa_new. */
typedef struct rmqa_conf {
    const char *host;
    int port;
    const ewi_url_host *hosts;      /* nhosts > 0: the nodes of a cluster,
                                       tried in turn from the one after the
                                       last connected to (host and port are
                                       then unused); each with its port */
    size_t nhosts;
    const char *vhost;              /* NULL: "/" */
    const char *user, *password;    /* NULL: guest */
    bool tls;
    const char *ca, *cert, *key;    /* PEM files; NULL: none / system CAs */
    bool verify_peer;               /* the chain must lead to a trusted CA */
    bool verify_name;               /* and name the host (DNS name or IP) */
    int connect_timeout_ms;         /* TCP connect and handshake */
    int rpc_timeout_ms;             /* one round trip; 0: connect_timeout_ms */
    int heartbeat_s;                /* 0: none */
    const char *conn_name;          /* connection_name shown by the broker */
    bool capabilities;              /* announce consumer_cancel_notify,
                                       basic.nack, publisher_confirms */
    const char *label;              /* "scheme://host:port/vhost" for texts */
} rmqa_conf;

/* ---- connection and replies (rmqa_conn.c) ------------------------------- */

/* Opens a socket and logs in. EW_OK with *out set, else *out is NULL and
 * err says why: EW_ETLS (certificate not trusted or not for this host; our
 * certificate files unreadable), EW_EAUTH (credentials or vhost refused),
 * EW_ECONNECT (not reachable, handshake cut), EW_ENOMEM. Thread-safe; the
 * connection is the caller's (amqp_destroy_connection). One node: c->host,
 * c->port (c->hosts is not read; the handle below makes the round). */
ew_err rmqa_connect(const rmqa_conf *c, amqp_connection_state_t *out, char *err,
                    size_t errlen);

/* The ew_err of an AMQP reply code. */
ew_err rmqa_code_err(unsigned code);
/* "406 PRECONDITION_FAILED - ..." or the library's text, into buf. */
const char *rmqa_reply_text(amqp_rpc_reply_t r, char *buf, size_t len);
/* The reply code of a server exception (channel or connection close), else 0. */
unsigned rmqa_reply_code(amqp_rpc_reply_t r);
/* The ew_err of a non-normal reply: the code's for a server exception,
 * EW_ETIMEDOUT for a library timeout, else EW_EDISCONNECTED (the
 * connection is unusable). EW_OK for a normal reply. */
ew_err rmqa_reply_err(amqp_rpc_reply_t r);

/* ---- declarations (rmqa_admin.c) ----------------------------------------- */

/* One declaration. */
typedef enum rmqa_kind {
    RMQA_EXCHANGE, /* event */
    RMQA_LISTENER, /* event's exchange, queue bound to it, dlq (may be NULL) */
    RMQA_DLQ,      /* queue: a dead-letter queue alone */
    RMQA_EXISTS    /* queue must exist: checked, never declared */
} rmqa_kind;

typedef struct rmqa_decl {
    rmqa_kind kind;
    const char *event, *queue, *dlq;
    bool durable;    /* the listener queue's durability */
    long expires_ms; /* > 0: the listener queue's x-expires (per_process) */
    bool quorum;     /* x-queue-type quorum on the dead-letter queue, and on
                        the listener queue when it is durable and does not
                        expire (a quorum queue must be durable and cannot
                        expire or be exclusive: the others stay classic) */
} rmqa_decl;

/* Writes d's methods on channel ch, every one with nowait; librabbitmq's
 * status of the writes. A refusal comes later as a channel.close. On the
 * thread that owns conn, like the next one. */
int rmqa_write_decl(amqp_connection_state_t conn, amqp_channel_t ch, const rmqa_decl *d);
/* Writes d's methods on channel ch, nowait but the last, and waits for the
 * last one's reply (the broker answers in order, so it also says whether
 * the earlier ones failed): one round trip. Frames of other channels that
 * arrive meanwhile stay queued in conn. */
amqp_rpc_reply_t rmqa_rpc_decl(amqp_connection_state_t conn, amqp_channel_t ch,
                               const rmqa_decl *d);

/* "declaring queue 'Q' bound to 'E'"-like text for d, into buf. */
const char *rmqa_decl_what(const rmqa_decl *d, char *buf, size_t len);

/* ---- the administration handle (rmqa_admin.c) ---------------------------- */

/* A connection of its own, opened when needed (on a cluster, to the first
 * node that answers, from the one after the node of its last connection:
 * a node that went is left for the next). Every call is thread-safe
 * (one mutex) and may block for a connect and a round trip. */
typedef struct rmqa rmqa;

rmqa *rmqa_new(const rmqa_conf *c); /* NULL: out of memory */
void rmqa_free(rmqa *a);            /* NULL allowed */

/* Makes d true on the broker unless this handle did so already (existence
 * checks are remembered until rmqa_forget_checks). One round trip. On
 * failure err holds what failed and the broker's text. A connection that
 * went stale is reopened once; EW_ECONNECT / EW_ETIMEDOUT when the broker
 * cannot be reached, which a caller may retry. */
ew_err rmqa_ensure(rmqa *a, const rmqa_decl *d, char *err, size_t errlen);
/* Called by rmqa_ensure_many once for each ds[i] that succeeded, as soon
 * as the broker confirmed it (the others are being declared meanwhile), on
 * the caller's thread with the handle's mutex held: it must not call rmqa
 * functions, nor wait for a thread that may. */
typedef void (*rmqa_done_fn)(void *user, size_t i);

/* rmqa_ensure for ds[0..n), all written before any reply is read and
 * spread over several channels, so that the broker creates the queues in
 * parallel; an exchange that several listeners share is declared once,
 * before their queues. rcs[i] is ds[i]'s result; the first failure's text
 * is in err and is the result (EW_OK when all succeeded). */
ew_err rmqa_ensure_many(rmqa *a, const rmqa_decl *ds, size_t n, ew_err *rcs, char *err,
                        size_t errlen);
/* rmqa_ensure_many, and done (may be NULL) hears of each success as it
 * comes, so that a caller can start using the first queues while the
 * broker still creates the rest. */
ew_err rmqa_ensure_many_cb(rmqa *a, const rmqa_decl *ds, size_t n, ew_err *rcs, char *err,
                           size_t errlen, rmqa_done_fn done, void *user);
/* d now, whatever was remembered (e.g. a queue deleted by hand), and
 * remembered when it succeeds; an existence check that finds the queue gone
 * (EW_ENOTFOUND) forgets that queue only. */
ew_err rmqa_declare(rmqa *a, const rmqa_decl *d, char *err, size_t errlen);
/* Reconnects and declares everything remembered again (exchanges first),
 * pipelined; forgets the existence checks. */
ew_err rmqa_redeclare(rmqa *a, char *err, size_t errlen);
/* Forgets the queues known to exist (after the transport reconnected). */
void rmqa_forget_checks(rmqa *a);
/* Deletes queue (queue.delete, unconditionally: its messages, also those
 * held unacknowledged by a consumer, go with it, and the broker cancels its
 * consumers) and forgets every declaration and existence check of it, so
 * that rmqa_redeclare does not make it again. A queue already gone is
 * EW_OK. One round trip; a stale connection is reopened once. */
ew_err rmqa_delete_queue(rmqa *a, const char *queue, char *err, size_t errlen);

#endif
