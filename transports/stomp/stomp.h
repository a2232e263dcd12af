/* The STOMP 1.2 transport's internals, shared by its files:
 *   frame.c      the pure frame codec (frame.h)
 *   options.c    URL options
 *   dialect.c    addressing per broker dialect, header and name rules (pure)
 *   heartbeat.c  heart-beat negotiation (pure)
 *   message.c    envelope <-> SEND/MESSAGE frames (pure)
 *   (the TCP or TLS socket is core's: core/sock.h)
 *   (rabbitmq dialect: exchanges, queues and checks over AMQP 0-9-1 through
 *   the shared transports/rmqadmin)
 *   io.c         the I/O thread's loop: frames out, settles, reconnects
 *   io_frames.c  frames in and their dispatch
 *   io_conn.c    connect, CONNECTED, resubscribe, drop
 *   transport.c  the ewi_transport_ops table: what core calls
 * Two connections, each with its own I/O thread (io.c): one publishes, one
 * consumes. RabbitMQ throttles a publishing connection under flow control,
 * and ACKs must never wait behind that; separate connections also let the
 * broker work on both directions in parallel. Only the I/O threads touch
 * the sockets; other threads queue requests on an ewi_workq and wake the
 * consuming thread. */
#ifndef EVENTWIRE_STOMP_H
#define EVENTWIRE_STOMP_H

#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>

#include "codec_internal.h"
#include "ewi.h"
#include "sock.h"
#include "transports/stomp/frame.h"
#include "waker.h"
#include "workq.h"

/* ---- options (options.c) -------------------------------------------------- */

typedef enum stomp_dialect {
    STOMP_RABBITMQ,
    STOMP_ACTIVEMQ,
    STOMP_ARTEMIS
} stomp_dialect;

typedef struct stomp_options {
    stomp_dialect dialect;
    bool tls;
    char *host;            /* TCP host (the first of hosts) */
    int port;              /* its port */
    ewi_hosts hosts;       /* every node of the URL (rabbitmq: a cluster),
                              each with its port */
    char *login, *passcode; /* NULL: none sent */
    char *vhost;           /* CONNECT's host header */
    char *ca_file;         /* TLS: trust these CAs (else the system's) */
    char *cert_file, *key_file; /* TLS: client certificate and its key, or NULL */
    bool verify;           /* TLS: verify the peer's chain (default on) */
    bool verify_name;      /* TLS: and its host name (verify=name, the default) */
    int heartbeat_ms;      /* both directions; 0 disables */
    int max_inflight;      /* unreceipted SENDs at most */
    long max_inflight_bytes; /* and their bodies' bytes */
    int reconnect_max_ms;  /* backoff cap */
    int connect_timeout_ms;
    long expires_ms;       /* rabbitmq: per_process queue expiry */
    int amqp_port;         /* rabbitmq: AMQP 0-9-1 port for topology (the
                              first node's); 0: none */
    ewi_hosts admin_hosts; /* rabbitmq with amqp_port: each node's host with
                              its AMQP 0-9-1 port */
    bool quorum;           /* rabbitmq: ?queue_type=quorum */
} stomp_options;

const char *stomp_dialect_name(stomp_dialect d);
/* Fills o from the URL (scheme stomp or stomp+ssl); EW_EINVAL with the reason
 * in err. Old option names are logged on m (NULL: not logged). o is freed
 * with stomp_options_free also on failure. */
ew_err stomp_options_parse(const ew_manager *m, const ewi_url *url, stomp_options *o,
                           char *err, size_t errlen);
void stomp_options_free(stomp_options *o);

/* ---- dialects (dialect.c) ------------------------------------------------ */

#define STOMP_MAX_EXTRA 6
#define STOMP_DEST_LEN (EW_MAX_QUEUE_NAME * 2 + 64)

/* A destination and the extra headers that go with it. */
typedef struct stomp_target {
    char dest[STOMP_DEST_LEN];
    size_t n;
    struct {
        const char *key;
        char value[STOMP_DEST_LEN];
    } h[STOMP_MAX_EXTRA];
} stomp_target;

/* Where a SEND of p goes (destination plus persistent and routing headers). */
ew_err stomp_send_target(const stomp_options *o, ewi_dest dest, const char *event,
                         const char *queue, bool durable, stomp_target *out);
/* What a listener's SUBSCRIBE says (destination, queue declaration, prefetch);
 * ack and id are added by the caller. */
ew_err stomp_sub_target(const stomp_options *o, const ewi_sub *sub,
                        stomp_target *out);
/* What a SUBSCRIBE that reads dead-letter queue dlq of event says. */
ew_err stomp_dlq_target(const stomp_options *o, const char *event,
                        const char *dlq, uint32_t prefetch, stomp_target *out);
/* The dialect's extra name rules; EW_EINVAL with the reason. */
ew_err stomp_check_names(stomp_dialect d, const char *event, const char *listener,
                         char *err, size_t errlen);
/* Headers that STOMP or the broker give a meaning to: never sent as user
 * headers, never delivered as such. */
bool stomp_reserved_header(const char *key, size_t klen);
/* How EWI_REQUEUE gives a message back: NACK (rabbitmq), or by closing the
 * subscription (activemq and artemis, whose NACK discards or dead-letters). */
bool stomp_requeue_by_nack(stomp_dialect d);

/* ---- heart-beats (heartbeat.c) ----------------------------------------- */

typedef struct stomp_heartbeat {
    int send_ms;   /* we send at least this often; 0: never */
    int expect_ms; /* the broker promised this often; 0: nothing expected */
} stomp_heartbeat;

/* From our CONNECT's "cx,cy" and the CONNECTED header (NULL: absent). */
ew_err stomp_heartbeat_negotiate(int cx, int cy, const char *connected_value,
                                 stomp_heartbeat *out);
/* How long silence may last before the connection counts as dropped. */
int stomp_heartbeat_grace_ms(int expect_ms);

/* ---- messages (message.c) ---------------------------------------------- */

/* Appends a SEND frame for env to out. EW_EINVAL with the reason in err for a
 * header that cannot travel (a reserved name). */
ew_err stomp_message_write(ewi_buf *out, const stomp_target *to, const char *receipt,
                           const ew_envelope *env, char *err, size_t errlen);
/* Fills env from a MESSAGE frame: the body (taken out of f), content type and
 * headers except reserved ones; the first of repeated headers counts. */
ew_err stomp_message_read(ewi_stomp_frame *f, ew_envelope *env);
/* A SEND's receipt id, "p" and n in decimal (what snprintf "p%" PRIu64
 * writes), NUL-terminated; buf holds at least STOMP_RECEIPT_LEN bytes. */
#define STOMP_RECEIPT_LEN 24
void stomp_receipt_text(char *buf, uint64_t n);
/* "broker's message: body" of an ERROR frame, for error reports. */
void stomp_error_text(const ewi_stomp_frame *f, char *buf, size_t len);

/* ---- rabbitmq topology over AMQP 0-9-1 ---------------------------------- *
 *
 * RabbitMQ's STOMP adapter cannot declare exchanges (a SEND to
 * /exchange/E/E of a missing E is an ERROR that closes the connection) and
 * silently drops a SEND to /amq/queue/Q of a missing Q. So the rabbitmq
 * dialect administers RabbitMQ over AMQP 0-9-1 on the same host (option
 * amqp_port) through the shared module (transports/rmqadmin): the topic
 * exchange E, each listener's queue and its binding (all listeners at start
 * in one pipelined batch, which the broker works on in parallel, where the
 * STOMP adapter would declare them one after the other), the durable
 * dead-letter queue E::L.dlq before the first dead letter sent to it
 * (never at start; a read finds none until then, and makes none), and the
 * check that a
 * listener's queue exists before a send to it. STOMP then only consumes
 * and sends through /amq/queue/, which declares nothing; a SUBSCRIBE to a
 * missing /amq/queue/ is an ERROR that closes the connection, so after a
 * reconnect the consuming thread declares everything again before it
 * subscribes (a restarted broker lost the transient queues, a deleted
 * queue took the connection with it). */

typedef struct rmqa rmqa;

/* The administration handle for o (NULL: out of memory). */
rmqa *stomp_admin_new(const stomp_options *o);

/* ---- the transport (transport.c, io.c) --------------------------------- */

typedef struct stomp_sub stomp_sub;
typedef struct stomp_pending stomp_pending;
typedef struct stomp_req stomp_req;

/* A SEND on its way: the frame is built on the caller's thread. */
struct stomp_pending {
    ewi_pub *pub;
    ewi_buf frame;
    uint64_t receipt;
    int error_sends; /* ERRORs blamed on it */
    uint64_t wseq;   /* order written on the current connection */
    stomp_pending *next;
};

/* A zeroed SEND record for t, a finished one reused when there is one (its
 * frame buffer kept: allocated on the sending thread and freed on the I/O
 * thread, each send would otherwise take malloc's slow paths). NULL on
 * ENOMEM. Free with ewi_buf_free(&pd->frame) and free(pd). */
stomp_pending *stomp_pending_new(ewi_transport *t);

/* What a delivered message carries for its ACK/NACK. */
typedef struct stomp_msgdata {
    stomp_sub *sub;
    uint64_t gen;      /* connection generation it came on */
    uint64_t sub_gen;  /* subscription generation (id) it came on */
    ewi_settle how;
    char *ack_id;               /* in the same allocation: freed with it */
    ew_envelope *env;           /* dead-letter readers only */
    struct stomp_msgdata *next; /* settle queue */
    ewi_msg *msg;
} stomp_msgdata;

struct stomp_sub {
    ewi_sub *sub;         /* NULL for a dead-letter reader */
    stomp_target target;
    uint64_t sub_gen;     /* the STOMP id is "<sub_gen>" */
    bool active;          /* subscribed on the current connection */
    bool closing;         /* core unsubscribed: no more deliveries */
    bool recycle;         /* requeued messages wait for a re-subscribe */
    uint32_t outstanding; /* delivered to core, not settled */
    uint64_t wseq;        /* SUBSCRIBE written, not confirmed yet: its order */
    int error_strikes;    /* ERRORs blamed on its SUBSCRIBE, or refused
                             declarations of its queue */
    /* rabbitmq with amqp_port: its queue (a listener's, or the dead-letter
     * queue of a reader) is declared over AMQP 0-9-1 before each SUBSCRIBE
     * to /amq/queue/ that is not part of the first one (a reconnect, a
     * retry). */
    bool admin_decl;
    /* Its queue's declaration was refused fewer than MAX_ERROR_RESENDS
     * times: declared and subscribed again at retry_at. */
    bool decl_wait;
    /* Refused MAX_ERROR_RESENDS times in a row: not subscribed again with
     * every reconnect, but only every retry_ms (long, capped backoff) until
     * the broker takes it. Never freed for this: core still holds it. */
    bool given_up;
    int64_t retry_at;     /* given_up, decl_wait: next SUBSCRIBE not before */
    int retry_ms;         /* given_up: current retry period */
    /* Its owner let go: freed once nothing of it is in core's hands. Set by
     * REQ_UNSUBSCRIBE / REQ_DLQ_CLOSE, or when the subscribe itself failed
     * or was abandoned (then core never got it). */
    bool release;
    stomp_sub *next;
    /* dead-letter reading */
    stomp_msgdata *dq_head, *dq_tail; /* under mu: read, not yet taken */
    /* rabbitmq: a dead-letter reader that stays subscribed until stop (under
     * mu; set once its SUBSCRIBE was confirmed, never released after). See
     * stomp_dlq_take for why it is never UNSUBSCRIBEd. */
    bool dlq_kept;
    /* activemq registry browsing (ack:auto, browser:true); under mu */
    bool browse;
    bool browse_end;
    int browse_found;
};

typedef enum stomp_req_kind {
    REQ_SUBSCRIBE,
    REQ_UNSUBSCRIBE,
    REQ_DLQ_OPEN,
    REQ_DLQ_CLOSE
} stomp_req_kind;

/* A request from an application thread to the I/O thread; the caller waits
 * for done on t->cv. */
struct stomp_req {
    stomp_req_kind kind;
    stomp_sub *ss;
    uint64_t receipt;
    bool queued;    /* taken by stomp_request into the queue */
    bool done;
    bool abandoned; /* the caller gave up waiting: the I/O thread frees it */
    ew_err rc;
    char err[512];
    ewi_workq_item link; /* in t->reqs */
    stomp_req *next;     /* in the consuming thread's list of those waiting */
};

/* The two connections. */
enum { STOMP_PUB = 0, STOMP_SUB = 1, STOMP_ROLES = 2 };

typedef enum stomp_state {
    ST_DOWN,       /* not connected; the I/O thread retries */
    ST_CONNECTING, /* CONNECT sent */
    ST_UP
} stomp_state;

struct ewi_transport {
    ew_manager *m;
    const ewi_config *cfg;
    stomp_options opt;
    char url_text[256];   /* redacted host:port for logs */
    rmqa *topo;           /* rabbitmq with an amqp_port only */
    ewi_stomp_limits limits;

    struct stomp_io_arg {
        ewi_transport *t;
        int role;
    } io_arg[STOMP_ROLES];
    pthread_t thread[STOMP_ROLES];
    bool thread_started;  /* both I/O threads run */
    ewi_waker waker[STOMP_ROLES];
    ewi_workq reqs;       /* requests for the consuming thread (own lock) */
    atomic_uint_fast64_t next_receipt;

    pthread_mutex_t mu;   /* everything below */
    pthread_cond_t cv;    /* requests done, state changes */
    bool stopping;
    stomp_state state[STOMP_ROLES];
    uint64_t gen;         /* connection generation, +1 per connect */
    ew_err last_code;
    bool last_final;      /* the last failure cannot be cured by retrying */
    char last_error[512];
    bool ever_up;
    stomp_pending *pend_head, *pend_tail; /* not written yet */
    stomp_pending *pend_free; /* finished SENDs kept for reuse, frame buffer and all */
    size_t pend_free_n;
    ewi_window window;    /* SENDs pending + in flight */
    stomp_msgdata *settle_head, *settle_tail;
    stomp_sub *subs;      /* every subscription, listeners and DLQ readers */
    struct amq_known {    /* activemq, artemis: listener queues seen lately */
        char *queue;
        int64_t at;       /* when it was seen (ewi_now_ms) */
        struct amq_known *next;
    } *amq_known;
};

/* arg: a struct stomp_io_arg. */
void *stomp_io_main(void *arg);
/* Queues r (malloc'd) for the I/O thread and waits until it is done or the
 * deadline passed (t->mu not held). On EW_ETIMEDOUT r belongs to the I/O
 * thread, which frees it; otherwise the caller frees it. r->queued tells
 * whether the I/O thread ever saw it. */
ew_err stomp_request(ewi_transport *t, stomp_req *r, int64_t deadline);

#endif
