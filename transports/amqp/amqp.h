/* The AMQP 1.0 transport (qpid-proton-c): what its files share.
 *
 * Files, one job each:
 *   amqp_options.c   the URL's options (dialect, TLS, SASL, naming)     pure
 *   amqp_address.c   dialect addressing: targets, sources, queue names  pure
 *   amqp_message.c   envelope <-> AMQP 1.0 message bytes                pure
 *   amqp_declare.c   rabbitmq dialect: exchanges, queues and bindings
 *                    over AMQP 0-9-1 (the shared transports/rmqadmin)
 *   amqp_io.c        the I/O thread: the proactor loop that owns the
 *                    connection, its sessions, links and deliveries
 *   amqp_send.c      on the I/O thread: senders, credit, outcomes
 *   amqp_recv.c      on the I/O thread: receivers, deliveries, settles
 *   amqp_transport.c the ops table: what application and worker threads
 *                    call; they only queue work for the I/O thread
 *   amqp_fetch.c     dlq_take: reading a queue on the caller's thread
 *
 * Threads: proton objects are touched only by the I/O thread. Other threads
 * append amqp_work items to t->work under t->mu and wake the I/O thread with
 * pn_connection_wake (or pn_proactor_interrupt while no connection exists). */
#ifndef EVENTWIRE_AMQP_H
#define EVENTWIRE_AMQP_H

#include <pthread.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include <proton/condition.h>
#include <proton/event.h>
#include <proton/types.h>

#include "ewi.h"

/* ---- options (amqp_options.c) ------------------------------------------- */

typedef enum amqp_dialect {
    AMQP_DIALECT_ARTEMIS = 0, /* the default */
    AMQP_DIALECT_RABBITMQ
} amqp_dialect;

typedef enum amqp_naming {
    AMQP_NAMING_EVENTWIRE = 0, /* listener queue E::L[-S] (the default) */
    AMQP_NAMING_ASPYX          /* listener queue L[-S], as aspyx-event names it */
} amqp_naming;

typedef enum amqp_verify {
    AMQP_VERIFY_NAME = 0, /* TLS: the CA chain and the host name (default) */
    AMQP_VERIFY_PEER,     /* TLS: the CA chain only */
    AMQP_VERIFY_NONE      /* TLS: nothing (tests with self-made certs only) */
} amqp_verify;

typedef struct amqp_options {
    amqp_dialect dialect;
    amqp_naming naming;
    bool tls;             /* amqps:// */
    char *host;           /* "127.0.0.1" when the URL has none */
    int port;             /* 5672, or 5671 for amqps */
    char *user, *password; /* NULL when absent; the password is never logged */
    char *vhost;          /* rabbitmq: the URL path, or ?vhost=; NULL: "/" */
    char *ca_file;        /* ?ca=: PEM CA bundle for amqps */
    char *cert_file, *key_file; /* ?cert=, ?key=: client certificate, or NULL */
    amqp_verify verify;   /* ?verify=name|peer|none */
    char *sasl_mechs;     /* ?sasl=: space separated; NULL: PLAIN with a user,
                             else ANONYMOUS */
    long max_inflight;    /* ?max_inflight=: sends queued or unconfirmed */
    long reconnect_max_ms; /* ?reconnect_max_ms=: backoff cap */
    long expires_ms;      /* ?per_process_expires_ms=: rabbitmq x-expires */
    long queue_check_ms;  /* ?queue_check_ms=: rabbitmq, how often consumed
                             queues are checked for existence (0: never) */
    long heartbeat_ms;    /* ?heartbeat_ms=: traffic asked of the broker at
                             least this often; silence for twice as long
                             drops the connection (0: never) */
} amqp_options;

/* Parses url (scheme amqp or amqps) into o; EW_EINVAL with the reason in err
 * for an unknown option or a bad value; old option names are logged on m
 * (NULL: not logged). Frees nothing on failure: call amqp_options_free
 * either way. Not thread-safe on o. */
ew_err amqp_options_parse(const ew_manager *m, const ewi_url *url, amqp_options *o,
                          char *err, size_t errlen);
void amqp_options_free(amqp_options *o);
const char *amqp_dialect_name(amqp_dialect d);

/* ---- addressing (amqp_address.c) ---------------------------------------- */

/* The AMQP 1.0 terminus capability a link announces. */
typedef enum amqp_cap {
    AMQP_CAP_NONE = 0,
    AMQP_CAP_TOPIC, /* Artemis: multicast */
    AMQP_CAP_QUEUE  /* Artemis: anycast */
} amqp_cap;

#define AMQP_ADDR_MAX (2 * EW_MAX_QUEUE_NAME + 32)

typedef struct amqp_addr {
    char addr[AMQP_ADDR_MAX];
    amqp_cap cap;
} amqp_addr;

/* The broker-side queue of a listener: E::L[-S] (rabbitmq), E:L[-S]
 * (artemis, which cannot hold "::" in a queue name), or L[-S] with aspyx
 * naming. queue is core's E::L[-S] of event. EW_EINVAL when it does not fit. */
ew_err amqp_listener_queue(const amqp_options *o, const char *event,
                           const char *queue, char *buf, size_t len);

/* Where a publish goes: artemis E (topic), FQQN E::Q (topic) or the DLQ's
 * E.dlq::E:L.dlq (queue); rabbitmq /exchange/E/E or /amq/queue/Q. */
ew_err amqp_target_of(const amqp_options *o, ewi_dest dest, const char *event,
                      const char *queue, amqp_addr *out);

/* Where a listener consumes: artemis FQQN E::Q (topic); rabbitmq
 * /amq/queue/Q. q is amqp_listener_queue's result. */
ew_err amqp_source_of_listener(const amqp_options *o, const char *event,
                               const char *q, amqp_addr *out);

/* Where a dead-letter queue E::L.dlq is read (artemis: E.dlq::E:L.dlq). */
ew_err amqp_source_of_dlq(const amqp_options *o, const char *event,
                          const char *dlq, amqp_addr *out);

/* ---- messages (amqp_message.c) ------------------------------------------ */

typedef struct amqp_wire_meta {
    uint32_t delivery_count; /* header delivery-count */
    bool first_acquirer;     /* header first-acquirer */
    bool durable;
} amqp_wire_meta;

/* Encodes env as an AMQP 1.0 message (header durable, properties message-id
 * subject content-type creation-time, application-properties, body) into a
 * malloc'd buffer *out of *len bytes. A JSON body becomes an amqp-value
 * string, any other body one data section. env is only read. Thread-safe
 * (no shared state). */
ew_err amqp_message_encode(const ew_envelope *env, bool durable, uint8_t **out,
                           size_t *len, char *err, size_t errlen);
/* A management request: application-properties props (key, value, ...,
 * NULL), reply-to, and body (NULL: none) as an amqp-value string. */
ew_err amqp_mgmt_encode(const char *const *props, const char *reply_to, const char *body,
                        uint8_t **out, size_t *len);

/* Decodes len bytes of an AMQP 1.0 message into env (which must be empty):
 * application-properties become headers (non-string scalars as text),
 * subject/message-id/creation-time become ew-event/ew-message-id/ew-sent-at
 * when those headers are absent; a data section or amqp-value binary is the
 * body as is, an amqp-value string is the body and means JSON when no
 * content type says otherwise. Bytes that are not an AMQP message, or a body
 * of another type, still give an envelope (raw bytes, content type
 * application/x-amqp-unreadable, application/x-amqp-value or
 * application/x-content-type-too-long) so that core
 * dead-letters them instead of losing them; then err holds why and the
 * result is EW_EDECODE. meta may be NULL. Thread-safe. */
ew_err amqp_message_decode(const char *bytes, size_t len, ew_envelope *env,
                           amqp_wire_meta *meta, char *err, size_t errlen);

#define AMQP_CT_UNREADABLE "application/x-amqp-unreadable"
#define AMQP_CT_VALUE "application/x-amqp-value"
#define AMQP_CT_TOO_LONG "application/x-content-type-too-long"

/* snprintf for messages, where cutting a long text short is fine (and
 * -Wformat-truncation has nothing to say). */
void amqp_textf(char *buf, size_t len, const char *fmt, ...) EWI_PRINTF(3, 4);

/* ---- rabbitmq: declarations over AMQP 0-9-1 (amqp_declare.c) ------------ */

typedef enum amqp_decl_kind {
    AMQP_DECL_EXCHANGE, /* event, durable */
    AMQP_DECL_LISTENER, /* event, queue, durable, per_process, dlq */
    AMQP_DECL_DLQ,      /* queue */
    AMQP_DECL_EXISTS    /* queue must exist (checked, not declared) */
} amqp_decl_kind;

typedef struct amqp_decl {
    amqp_decl_kind kind;
    const char *event, *queue, *dlq;
    bool durable, per_process;
} amqp_decl;

typedef struct ewi_transport ewi_transport;

/* The administration handle of the rabbitmq dialect (none for others):
 * create / destroy. */
ew_err amqp_admin_open(ewi_transport *t);
void amqp_admin_close(ewi_transport *t);
/* Makes d true on the broker (rabbitmq dialect; for artemis see
 * amqp_artemis_ensure) unless
 * this transport did so already since its last reconnect. Connection
 * failures are retried until deadline (monotonic ms); the broker's refusal
 * is final (406 EW_ECONFLICT, 403 EW_EAUTH, 404 EW_ENOTFOUND, else
 * EW_EBROKER). On failure err holds why. Any thread but the I/O thread. */
ew_err amqp_ensure(ewi_transport *t, const amqp_decl *d, int64_t deadline,
                   char *err, size_t errlen);
/* amqp_ensure for ds[0..n) at once (their round trips overlap); rcs[i]
 * each one's result, the first failure's text in err. */
ew_err amqp_ensure_many(ewi_transport *t, const amqp_decl *ds, size_t n, int64_t deadline,
                        ew_err *rcs, char *err, size_t errlen);
/* d now, whatever was remembered (a queue deleted by hand); no retry. */
ew_err amqp_declare_now(ewi_transport *t, const amqp_decl *d, char *err, size_t errlen);
/* After a reconnect (I/O thread): declares everything remembered again,
 * forgets the existence checks. */
ew_err amqp_redeclare_all(ewi_transport *t, char *err, size_t errlen);

/* ---- the transport ------------------------------------------------------ */

/* The bytes of the incoming delivery of one link, read frame by frame (a
 * link has one unfinished delivery at most). I/O thread. */
typedef struct amqp_acc {
    char *buf;
    size_t len, cap;
} amqp_acc;

typedef enum amqp_work_kind {
    AMQP_W_PUB,    /* amqp_out: send it */
    AMQP_W_SETTLE, /* amqp_rec: settle it */
    AMQP_W_SUB,    /* amqp_sub: attach its receiver */
    AMQP_W_UNSUB,  /* amqp_sub: stop its deliveries, detach when idle */
    AMQP_W_FETCH   /* amqp_fetch: open, ask for more, or close (f->op) */
} amqp_work_kind;

typedef struct amqp_work amqp_work;
struct amqp_work {
    amqp_work_kind kind;
    amqp_work *next;
};

/* What a proton link's context points to: the first member of each. */
typedef enum amqp_obj_kind { AMQP_OBJ_SENDER = 1, AMQP_OBJ_SUB, AMQP_OBJ_FETCH } amqp_obj_kind;

/* A publish on its way: queued, waiting for credit, or sent and unsettled.
 * Made by publish() on the caller's thread, then owned by the I/O thread. */
typedef struct amqp_out amqp_out;
struct amqp_out {
    amqp_work w;           /* first: the work item */
    ewi_pub *pub;          /* NULL once done ran (e.g. timed out unsettled) */
    uint8_t *bytes;        /* the encoded message, kept for a resend */
    size_t len;
    amqp_addr target;
    pn_delivery_t *d;      /* while sent and unsettled */
    size_t off;            /* bytes handed to proton (large ones stream) */
    amqp_out *prev, *next; /* in its sender's pending or inflight list */
};

/* A sender link, one per target address; it outlives connections. I/O
 * thread only. */
typedef struct amqp_sender amqp_sender;
struct amqp_sender {
    amqp_obj_kind kind;    /* AMQP_OBJ_SENDER */
    amqp_addr target;
    pn_link_t *l;          /* NULL while not attached */
    bool opened;           /* the broker answered the attach */
    amqp_out *streaming;   /* a large message still being handed to proton */
    amqp_out *pend_head, *pend_tail; /* not yet sent */
    amqp_out *fl_head, *fl_tail;     /* sent, outcome awaited */
    amqp_sender *next;
};

typedef enum amqp_rec_owner { AMQP_REC_SUB, AMQP_REC_FETCH } amqp_rec_owner;

/* A received delivery held by core (or by a dlq_take caller). */
typedef struct amqp_rec amqp_rec;
struct amqp_rec {
    amqp_work w;           /* first: the settle work item */
    amqp_rec_owner owner;
    void *holder;          /* amqp_sub or amqp_fetch */
    ewi_msg *msg;          /* AMQP_REC_SUB: core's message */
    ew_envelope *env;      /* AMQP_REC_FETCH: the dead letter */
    uint64_t link_id;      /* the link instance it arrived on */
    pn_delivery_t *d;      /* valid only while link_id is the holder's */
    ewi_settle how;
    amqp_rec *next;        /* in a fetch's ready list */
};

typedef enum amqp_sub_state {
    AMQP_SUB_PENDING = 0,  /* subscribe() waits for the attach */
    AMQP_SUB_ACTIVE,
    AMQP_SUB_FAILED,       /* the attach was refused; error says why */
    AMQP_SUB_GONE          /* unsubscribed: nothing more reaches core */
} amqp_sub_state;

/* A listener's receiver. Made by subscribe(), freed by the I/O thread once
 * unsubscribed with no delivery left in core's hands (or by destroy). */
typedef struct amqp_sub amqp_sub;
struct amqp_sub {
    amqp_obj_kind kind;    /* AMQP_OBJ_SUB */
    amqp_work w_sub, w_unsub;
    ewi_sub *sub;          /* core's; used only while not unsubscribed */
    amqp_addr source;
    char queue[EW_MAX_QUEUE_NAME + 8]; /* the broker's queue, for logs */
    uint32_t prefetch;
    /* under t->mu */
    amqp_sub_state state;
    char error[512];
    bool *unsub_done;      /* unsubscribe()'s flag, set once GONE */
    /* I/O thread only */
    pn_link_t *l;
    uint64_t link_id;
    bool attached;         /* the broker answered the attach with a source */
    bool unsubscribed;
    uint32_t outstanding;  /* delivered on the current link, not settled */
    uint32_t nrecs;        /* records alive, any link */
    amqp_acc acc;          /* the delivery being received */
    int64_t reattach_at;   /* after the broker detached it; 0: none */
    ewi_backoff bo;
    amqp_sub *next;
};

typedef enum amqp_state {
    AMQP_ST_NEW = 0,
    AMQP_ST_CONNECTING, /* start() waits */
    AMQP_ST_UP,
    AMQP_ST_DOWN,       /* lost; reconnecting */
    AMQP_ST_FAILED,     /* start gave up */
    AMQP_ST_STOPPED
} amqp_state;

typedef struct amqp_fetch amqp_fetch;

struct ewi_transport {
    ew_manager *m;
    const ewi_config *cfg;
    amqp_options opt;
    char where[300];           /* "host:port (dialect)" for messages */
    char container_id[128];
    pn_proactor_t *proactor;
    pthread_t thread;
    bool thread_started;

    /* ---- shared, under mu ---- */
    pthread_mutex_t mu;
    pthread_cond_t cond;       /* state, window room, subs, fetches */
    amqp_work *work_head, *work_tail;
    pn_connection_t *conn_live; /* the connection wakes go to, or NULL */
    amqp_state state;
    bool stopping;             /* stop() was called */
    bool io_exited;            /* the I/O thread is gone: settle only frees */
    ew_err start_err;
    char last_error[512];      /* why the connection is down / start failed */
    int64_t down_since;        /* monotonic ms the connection was lost */
    int64_t start_deadline;
    ewi_window window;         /* publishes taken and not yet done */
    bool io_busy;              /* the I/O thread is in a batch of the
                                  connection and takes new work at its end:
                                  no wake needed */

    /* ---- rabbitmq administration (amqp_declare.c; thread-safe) ---- */
    struct rmqa *admin;

    /* ---- I/O thread only ---- */
    pn_connection_t *conn;
    bool connected;            /* the broker's open arrived on conn */
    bool was_up;               /* some connection was open before */
    bool closing;              /* stop: the connection is being closed */
    bool exit_now;
    uint64_t next_link_id;
    uint64_t next_tag;
    amqp_sender *senders;
    amqp_sub *subs;
    amqp_fetch *fetches;
    ewi_reconnect rc;          /* when to connect again */
    bool reconnect_planned;    /* at rc.next_ms */
    int64_t close_deadline;    /* stop: disconnect hard after it */
    bool start_cut;            /* start's deadline passed: we dropped the socket */
    bool start_cut_seen;       /* ... and it has closed */
    int64_t next_queue_check;  /* rabbitmq: when consumed queues are checked */
    bool tick_due;
    int64_t stuck_since;       /* a wake-up for the tick is outstanding since */
    bool stream_wake;          /* a large send wants another round soon */
};

/* The I/O thread (amqp_io.c): the loop. It calls the halves below
 * (amqp_send.c, amqp_recv.c, amqp_fetch.c) and decides what a lost link or
 * connection means; the halves only report (return, or leave state for the
 * loop) and use the helpers of amqp_link.c, never the loop. */
void *amqp_io_main(void *arg);

/* Publishing on the I/O thread (amqp_send.c). */
void amqp_send_take(ewi_transport *t, amqp_out *o);       /* a W_PUB */
void amqp_send_pump(ewi_transport *t, amqp_sender *s);    /* credit came */
void amqp_send_opened(ewi_transport *t, amqp_sender *s);  /* attach answered */
void amqp_send_lost(ewi_transport *t, amqp_sender *s, const char *why);
void amqp_send_outcome(ewi_transport *t, pn_delivery_t *d);
void amqp_send_expire(ewi_transport *t, int64_t now);
void amqp_send_continue(ewi_transport *t);                /* large sends */
void amqp_send_attach_pending(ewi_transport *t);          /* after a connect */
void amqp_send_disconnected(ewi_transport *t);
void amqp_send_finish(ewi_transport *t, const char *why); /* thread ends */
/* Completes a publish: done runs once, then the record is freed. */
void amqp_out_finish(ewi_transport *t, amqp_out *o, int err, const char *detail);

/* Receiving on the I/O thread (amqp_recv.c). */
void amqp_recv_take_sub(ewi_transport *t, amqp_sub *s);   /* a W_SUB */
void amqp_recv_take_unsub(ewi_transport *t, amqp_sub *s); /* a W_UNSUB */
void amqp_recv_settle(ewi_transport *t, amqp_rec *rec);   /* a W_SETTLE */
void amqp_recv_forget(amqp_rec *rec);                     /* thread ends */
void amqp_recv_opened(ewi_transport *t, amqp_sub *s);
void amqp_recv_lost(ewi_transport *t, amqp_sub *s, const char *why);
void amqp_recv_message(ewi_transport *t, amqp_sub *s, pn_delivery_t *d);
void amqp_recv_tick(ewi_transport *t, int64_t now);
void amqp_recv_attach_all(ewi_transport *t);              /* after a connect */
void amqp_recv_disconnected(ewi_transport *t);
void amqp_recv_finish_locked(ewi_transport *t, const char *why);

/* ---- helpers (amqp_link.c) ---- */

/* The connection is open and not closing (I/O thread). */
bool amqp_is_up(ewi_transport *t);
/* Queues w for the I/O thread and wakes it; t->mu held by the caller. */
void amqp_post_locked(ewi_transport *t, amqp_work *w);
/* Same, taking t->mu. */
void amqp_post(ewi_transport *t, amqp_work *w);

/* I/O thread: links (each on its own session), conditions, deliveries. */
pn_link_t *amqp_open_link(ewi_transport *t, bool sender, const amqp_addr *a,
                          void *ctx);
void amqp_close_link(pn_link_t *l); /* link and its session; NULL allowed */
/* "condition: description" of c, or fallback when c is not set. */
void amqp_condition_text(pn_condition_t *c, const char *fallback, char *buf,
                         size_t len);
/* Reads what d has: 1 when d is complete (the link advanced; take the bytes
 * with amqp_acc_take), 0 when more is to come, -1 when the sender aborted d
 * (settled, advanced, nothing kept), -2 when out of memory (nothing kept; d
 * is left to the caller). */
int amqp_acc_read(amqp_acc *a, pn_delivery_t *d);
/* Hands the bytes out (caller frees; never NULL unless out of memory). */
char *amqp_acc_take(amqp_acc *a, size_t *len);
void amqp_acc_reset(amqp_acc *a);

/* dlq_take (amqp_fetch.c): the caller's side is the op; these run on the I/O
 * thread. */
ew_err amqp_dlq_take(ewi_transport *t, ewi_dlq_req *req);
void amqp_fetch_work(ewi_transport *t, amqp_work *w);
void amqp_fetch_on_open(ewi_transport *t, amqp_fetch *f, pn_link_t *l);
void amqp_fetch_on_lost(ewi_transport *t, amqp_fetch *f, const char *why);
void amqp_fetch_on_flow(ewi_transport *t, amqp_fetch *f, pn_link_t *l);
void amqp_fetch_on_delivery(ewi_transport *t, amqp_fetch *f, pn_delivery_t *d);
void amqp_fetch_settle(ewi_transport *t, amqp_rec *rec);
void amqp_fetch_attach_all(ewi_transport *t);    /* after a connect */
/* Fails the attached readers (final: every reader, and forgets them). */
void amqp_fetch_disconnect_all(ewi_transport *t, const char *why, bool final);
/* Attaches a receiver to source, calls request(t, arg) once the broker
 * answered the attach, and copies the body of the first message that
 * arrives (before deadline) into reply. Any thread but the I/O thread. */
ew_err amqp_fetch_reply(ewi_transport *t, const amqp_addr *source,
                        ew_err (*request)(ewi_transport *t, void *arg), void *arg,
                        int64_t deadline, char *reply, size_t replylen, char *err,
                        size_t errlen);

/* artemis (amqp_artemis.c): what amqp_ensure does there, through the broker's
 * management address: d of kind AMQP_DECL_EXISTS asks whether queue d->queue
 * is on address d->event (EW_ENOTFOUND if not); AMQP_DECL_LISTENER of a
 * per_process listener creates its queue with auto-delete. */
ew_err amqp_artemis_ensure(ewi_transport *t, const amqp_decl *d, int64_t deadline,
                           char *err, size_t errlen);

#endif
