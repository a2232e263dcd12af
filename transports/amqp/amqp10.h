/* The AMQP 1.0 transport (qpid-proton-c): what its files share.
 *
 * Files, one job each:
 *   amqp10_options.c   the URL's options (dialect, TLS, SASL, naming)     pure
 *   amqp10_address.c   dialect addressing: targets, sources, queue names  pure
 *   amqp10_message.c   envelope <-> AMQP 1.0 message bytes                pure
 *   amqp10_declare.c   rabbitmq dialect: exchanges, queues and bindings
 *                      over AMQP 0-9-1 (the shared transports/rmqadmin)
 *   amqp10_io.c        the I/O thread: a poll() loop over core's socket
 *                      that drives proton's connection engine and owns
 *                      the connection, its sessions, links and deliveries
 *   amqp10_send.c      on the I/O thread: senders, credit, outcomes
 *   amqp10_recv.c      on the I/O thread: receivers, deliveries, settles
 *   amqp10_transport.c the ops table: what application and worker threads
 *                      call; they only queue work for the I/O thread
 *   amqp10_fetch.c     dlq_take: reading a queue on the caller's thread
 *
 * Threads: proton objects are touched only by the I/O thread. Other threads
 * push amqp10_work items onto t->work (an ewi_workq) under t->mu; the first
 * of a batch wakes the I/O thread through t->waker. */
#ifndef EVENTWIRE_AMQP10_H
#define EVENTWIRE_AMQP10_H

#include <pthread.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include <proton/condition.h>
#include <proton/connection_driver.h>
#include <proton/event.h>
#include <proton/types.h>

#include "ewi.h"
#include "sock.h"
#include "waker.h"
#include "workq.h"

/* ---- options (amqp10_options.c) ------------------------------------------- */

typedef enum amqp10_dialect {
    AMQP10_DIALECT_ARTEMIS = 0, /* the default */
    AMQP10_DIALECT_RABBITMQ
} amqp10_dialect;

typedef enum amqp10_naming {
    AMQP10_NAMING_EVENTWIRE = 0, /* listener queue E::L[-S] (the default) */
    AMQP10_NAMING_ASPYX          /* listener queue L[-S], as aspyx-event names it */
} amqp10_naming;

typedef enum amqp10_verify {
    AMQP10_VERIFY_NAME = 0, /* TLS: the CA chain and the host name (default) */
    AMQP10_VERIFY_PEER,     /* TLS: the CA chain only */
    AMQP10_VERIFY_NONE      /* TLS: nothing (tests with self-made certs only) */
} amqp10_verify;

typedef struct amqp10_options {
    amqp10_dialect dialect;
    amqp10_naming naming;
    bool tls;             /* amqps:// */
    char *host;           /* "127.0.0.1" when the URL has none (hosts[0]) */
    int port;             /* 5672, or 5671 for amqps */
    ewi_hosts hosts;      /* every node of the URL (rabbitmq: a cluster; its
                             AMQP 0-9-1 administration uses the same ports) */
    bool quorum;          /* rabbitmq: ?queue_type=quorum */
    char *user, *password; /* NULL when absent; the password is never logged */
    char *vhost;          /* rabbitmq: the URL path, or ?vhost=; NULL: "/" */
    char *ca_file;        /* ?ca=: PEM CA bundle for amqps */
    char *cert_file, *key_file; /* ?cert=, ?key=: client certificate, or NULL */
    amqp10_verify verify;   /* ?verify=name|peer|none */
    char *sasl_mechs;     /* ?sasl=: space separated; NULL: PLAIN with a user,
                             else ANONYMOUS */
    long max_inflight;    /* ?max_inflight=: sends queued or unconfirmed */
    long max_inflight_bytes; /* ?max_inflight_bytes=: and their bodies */
    long reconnect_max_ms; /* ?reconnect_max_ms=: backoff cap */
    long expires_ms;      /* ?per_process_expires_ms=: rabbitmq x-expires */
    long queue_check_ms;  /* ?queue_check_ms=: rabbitmq, how often consumed
                             queues are checked for existence (0: never) */
    long heartbeat_ms;    /* ?heartbeat_ms=: traffic asked of the broker at
                             least this often; silence for twice as long
                             drops the connection (0: never) */
} amqp10_options;

/* Parses url (scheme amqp or amqps) into o; EW_EINVAL with the reason in err
 * for an unknown option or a bad value; old option names are logged on m
 * (NULL: not logged). Frees nothing on failure: call amqp10_options_free
 * either way. Not thread-safe on o. */
ew_err amqp10_options_parse(const ew_manager *m, const ewi_url *url, amqp10_options *o,
                          char *err, size_t errlen);
void amqp10_options_free(amqp10_options *o);
const char *amqp10_dialect_name(amqp10_dialect d);

/* ---- addressing (amqp10_address.c) ---------------------------------------- */

/* The AMQP 1.0 terminus capability a link announces. */
typedef enum amqp10_cap {
    AMQP10_CAP_NONE = 0,
    AMQP10_CAP_TOPIC, /* Artemis: multicast */
    AMQP10_CAP_QUEUE  /* Artemis: anycast */
} amqp10_cap;

#define AMQP10_ADDR_MAX (2 * EW_MAX_QUEUE_NAME + 32)

typedef struct amqp10_addr {
    char addr[AMQP10_ADDR_MAX];
    amqp10_cap cap;
} amqp10_addr;

/* The broker-side queue of a listener: E::L[-S] (rabbitmq), E:L[-S]
 * (artemis, which cannot hold "::" in a queue name), or L[-S] with aspyx
 * naming. queue is core's E::L[-S] of event. EW_EINVAL when it does not fit. */
ew_err amqp10_listener_queue(const amqp10_options *o, const char *event,
                           const char *queue, char *buf, size_t len);

/* Where a publish goes: artemis E (topic), FQQN E::Q (topic) or the DLQ's
 * E.dlq::E:L.dlq (queue); rabbitmq /exchange/E/E or /amq/queue/Q. */
ew_err amqp10_target_of(const amqp10_options *o, ewi_dest dest, const char *event,
                      const char *queue, amqp10_addr *out);

/* Where a listener consumes: artemis FQQN E::Q (topic); rabbitmq
 * /amq/queue/Q. q is amqp10_listener_queue's result. */
ew_err amqp10_source_of_listener(const amqp10_options *o, const char *event,
                               const char *q, amqp10_addr *out);

/* Where a dead-letter queue E::L.dlq is read (artemis: E.dlq::E:L.dlq). */
ew_err amqp10_source_of_dlq(const amqp10_options *o, const char *event,
                          const char *dlq, amqp10_addr *out);

/* ---- messages (amqp10_message.c) ------------------------------------------ */

typedef struct amqp10_wire_meta {
    uint32_t delivery_count; /* header delivery-count */
    bool first_acquirer;     /* header first-acquirer */
    bool durable;
} amqp10_wire_meta;

/* Encodes env as an AMQP 1.0 message (header durable, properties message-id
 * subject content-type creation-time, application-properties, body) into a
 * malloc'd buffer *out of *len bytes. A JSON body becomes an amqp-value
 * string, any other body one data section. env is only read. Thread-safe
 * (no shared state). */
ew_err amqp10_message_encode(const ew_envelope *env, bool durable, uint8_t **out,
                           size_t *len, char *err, size_t errlen);
/* The same into a malloc'd block of head + *len bytes, the message at
 * *block + head: the first head bytes are the caller's (a record that then
 * needs no allocation of its own). */
ew_err amqp10_message_encode_after(const ew_envelope *env, bool durable, size_t head,
                                   uint8_t **block, size_t *len, char *err, size_t errlen);
/* A management request: application-properties props (key, value, ...,
 * NULL), reply-to, and body (NULL: none) as an amqp-value string. */
ew_err amqp10_mgmt_encode(const char *const *props, const char *reply_to, const char *body,
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
ew_err amqp10_message_decode(const char *bytes, size_t len, ew_envelope *env,
                           amqp10_wire_meta *meta, char *err, size_t errlen);
/* The same through proton's decoder only (amqp10_message_decode reads the
 * common shapes in place and leaves the rest to it): for tests, which check
 * that the two agree. */
ew_err amqp10_message_decode_generic(const char *bytes, size_t len, ew_envelope *env,
                                     amqp10_wire_meta *meta, char *err, size_t errlen);
/* Whether amqp10_message_decode reads these bytes in place (for tests). */
bool amqp10_message_in_place(const char *bytes, size_t len);

#define AMQP10_CT_UNREADABLE "application/x-amqp-unreadable"
#define AMQP10_CT_VALUE "application/x-amqp-value"
#define AMQP10_CT_TOO_LONG "application/x-content-type-too-long"

/* snprintf for messages, where cutting a long text short is fine (and
 * -Wformat-truncation has nothing to say). */
void amqp10_textf(char *buf, size_t len, const char *fmt, ...) EWI_PRINTF(3, 4);

/* ---- rabbitmq: declarations over AMQP 0-9-1 (amqp10_declare.c) ------------ */

typedef enum amqp10_decl_kind {
    AMQP10_DECL_EXCHANGE, /* event, durable */
    AMQP10_DECL_LISTENER, /* event, queue, durable, per_process (dlq: NULL, the
                             dead-letter queue is AMQP10_DECL_DLQ on first use) */
    AMQP10_DECL_DLQ,      /* queue */
    AMQP10_DECL_EXISTS    /* queue must exist (checked, not declared) */
} amqp10_decl_kind;

typedef struct amqp10_decl {
    amqp10_decl_kind kind;
    const char *event, *queue, *dlq;
    bool durable, per_process;
} amqp10_decl;

typedef struct ewi_transport ewi_transport;

/* The administration handle of the rabbitmq dialect (none for others):
 * create / destroy. */
ew_err amqp10_admin_open(ewi_transport *t);
void amqp10_admin_close(ewi_transport *t);
/* Makes d true on the broker (rabbitmq dialect; for artemis see
 * amqp10_artemis_ensure) unless
 * this transport did so already since its last reconnect. Connection
 * failures are retried until deadline (monotonic ms); the broker's refusal
 * is final (406 EW_ECONFLICT, 403 EW_EAUTH, 404 EW_ENOTFOUND, else
 * EW_EBROKER). On failure err holds why. Any thread but the I/O thread. */
ew_err amqp10_ensure(ewi_transport *t, const amqp10_decl *d, int64_t deadline,
                   char *err, size_t errlen);
/* amqp10_ensure for ds[0..n) at once (their round trips overlap); rcs[i]
 * each one's result, the first failure's text in err. done (may be NULL)
 * is called once for each ds[i] as soon as it succeeded, while the others
 * may still be on their way (as rmqa_done_fn: no declarations from it). */
ew_err amqp10_ensure_many(ewi_transport *t, const amqp10_decl *ds, size_t n, int64_t deadline,
                        ew_err *rcs, char *err, size_t errlen,
                        void (*done)(void *user, size_t i), void *user);
/* d now, whatever was remembered (a queue deleted by hand); no retry. */
ew_err amqp10_declare_now(ewi_transport *t, const amqp10_decl *d, char *err, size_t errlen);
/* After a reconnect (I/O thread): declares everything remembered again,
 * forgets the existence checks. */
ew_err amqp10_redeclare_all(ewi_transport *t, char *err, size_t errlen);

/* ---- the transport ------------------------------------------------------ */

/* The bytes of the incoming delivery of one link, read frame by frame (a
 * link has one unfinished delivery at most). I/O thread. */
typedef struct amqp10_acc {
    char *buf;
    size_t len, cap;
} amqp10_acc;

typedef enum amqp10_work_kind {
    AMQP10_W_PUB,    /* amqp10_out: send it */
    AMQP10_W_SETTLE, /* amqp10_rec: settle it */
    AMQP10_W_SUB,    /* amqp10_sub: attach its receiver */
    AMQP10_W_UNSUB,  /* amqp10_sub: stop its deliveries, detach when idle */
    AMQP10_W_FETCH   /* amqp10_fetch: open, ask for more, or close (f->op) */
} amqp10_work_kind;

typedef struct amqp10_work amqp10_work;
struct amqp10_work {
    amqp10_work_kind kind;
    ewi_workq_item link; /* in t->work */
};

/* What a proton link's context points to: the first member of each. */
typedef enum amqp10_obj_kind {
    AMQP10_OBJ_SENDER = 1,
    AMQP10_OBJ_SUB,
    AMQP10_OBJ_FETCH
} amqp10_obj_kind;

/* A publish on its way: queued, waiting for credit, or sent and unsettled.
 * Made by publish() on the caller's thread, then owned by the I/O thread. */
typedef struct amqp10_out amqp10_out;
struct amqp10_out {
    amqp10_work w;           /* first: the work item */
    ewi_pub *pub;          /* NULL once done ran (e.g. timed out unsettled) */
    uint8_t *bytes;        /* the encoded message, kept for a resend */
    size_t len;
    bool bytes_inline;     /* bytes are in this record's own block */
    amqp10_addr target;
    pn_delivery_t *d;      /* while sent and unsettled */
    size_t off;            /* bytes handed to proton (large ones stream) */
    amqp10_out *prev, *next; /* in its sender's pending or inflight list */
};

/* A sender link, one per target address; it outlives connections. I/O
 * thread only. */
typedef struct amqp10_sender amqp10_sender;
struct amqp10_sender {
    amqp10_obj_kind kind;    /* AMQP10_OBJ_SENDER */
    amqp10_addr target;
    pn_link_t *l;          /* NULL while not attached */
    bool opened;           /* the broker answered the attach */
    amqp10_out *streaming;   /* a large message still being handed to proton */
    amqp10_out *pend_head, *pend_tail; /* not yet sent */
    amqp10_out *fl_head, *fl_tail;     /* sent, outcome awaited */
    amqp10_sender *next;
};

typedef enum amqp10_rec_owner { AMQP10_REC_SUB, AMQP10_REC_FETCH } amqp10_rec_owner;

/* A received delivery held by core (or by a dlq_take caller). */
typedef struct amqp10_rec amqp10_rec;
struct amqp10_rec {
    amqp10_work w;           /* first: the settle work item */
    amqp10_rec_owner owner;
    void *holder;          /* amqp10_sub or amqp10_fetch */
    ewi_msg *msg;          /* AMQP10_REC_SUB: core's message */
    ew_envelope *env;      /* AMQP10_REC_FETCH: the dead letter */
    uint64_t link_id;      /* the link instance it arrived on */
    pn_delivery_t *d;      /* valid only while link_id is the holder's */
    ewi_settle how;
    amqp10_rec *next;        /* in a fetch's ready list */
};

typedef enum amqp10_sub_state {
    AMQP10_SUB_PENDING = 0,  /* subscribe() waits for the attach */
    AMQP10_SUB_ACTIVE,
    AMQP10_SUB_FAILED,       /* the attach was refused; error says why */
    AMQP10_SUB_GONE          /* unsubscribed: nothing more reaches core */
} amqp10_sub_state;

/* A listener's receiver. Made by subscribe(), freed by the I/O thread once
 * unsubscribed with no delivery left in core's hands (or by destroy). */
typedef struct amqp10_sub amqp10_sub;
struct amqp10_sub {
    amqp10_obj_kind kind;    /* AMQP10_OBJ_SUB */
    amqp10_work w_sub, w_unsub;
    ewi_sub *sub;          /* core's; used only while not unsubscribed */
    amqp10_addr source;
    char queue[EW_MAX_QUEUE_NAME + 8]; /* the broker's queue, for logs */
    uint32_t prefetch;
    /* under t->mu */
    amqp10_sub_state state;
    char error[512];
    bool *unsub_done;      /* unsubscribe()'s flag, set once GONE */
    /* I/O thread only */
    pn_link_t *l;
    uint64_t link_id;
    bool attached;         /* the broker answered the attach with a source */
    bool unsubscribed;
    uint32_t outstanding;  /* delivered on the current link, not settled */
    uint32_t nrecs;        /* records alive, any link */
    amqp10_acc acc;          /* the delivery being received */
    int64_t reattach_at;   /* after the broker detached it; 0: none */
    bool alone;            /* its last link was refused or dropped: the next
                              attach gets a session of its own */
    ewi_backoff bo;
    amqp10_sub *next;
};

typedef enum amqp10_state {
    AMQP10_ST_NEW = 0,
    AMQP10_ST_CONNECTING, /* start() waits */
    AMQP10_ST_UP,
    AMQP10_ST_DOWN,       /* lost; reconnecting */
    AMQP10_ST_FAILED,     /* start gave up */
    AMQP10_ST_STOPPED
} amqp10_state;

typedef struct amqp10_fetch amqp10_fetch;

/* A session and how many of our open links it carries (amqp10_link.c).
 * Receivers share sessions, up to AMQP10_LINKS_PER_SESSION each; a sender,
 * and a link whose attach may be refused, gets one of its own. A
 * session whose links are gone is kept for the next link. I/O thread only;
 * the proton session's context points to it until it ends. */
typedef struct amqp10_ssn amqp10_ssn;
struct amqp10_ssn {
    pn_session_t *ssn;
    unsigned links;        /* open links (closed ones no longer count) */
    bool sender;           /* the kind of links it takes */
    bool alone;            /* one link only */
    bool retired;          /* alone and its link gone: never reused, ended
                              once the next session of its kind is begun */
    /* Called once when the broker ended it, or when the connection went
     * (then from amqp10_ssn_forget_all). */
    void (*on_end)(ewi_transport *t, void *arg);
    void *on_end_arg;
    int64_t end_by;        /* on_end is called by then even without an answer */
    amqp10_ssn *next;      /* in t->ssns */
};

struct ewi_transport {
    ew_manager *m;
    const ewi_config *cfg;
    amqp10_options opt;
    char where[300];           /* "host:port (dialect)" for messages */
    char container_id[128];
    ewi_waker waker;           /* other threads wake the I/O thread */
    pthread_t thread;
    bool thread_started;

    /* ---- shared, under mu ---- */
    pthread_mutex_t mu;
    pthread_cond_t cond;       /* state, window room, subs, fetches */
    ewi_workq work;            /* for the I/O thread: pushed under mu */
    amqp10_state state;
    bool stopping;             /* stop() was called */
    bool io_exited;            /* the I/O thread is gone: settle only frees */
    ew_err start_err;
    char last_error[512];      /* why the connection is down / start failed */
    int64_t down_since;        /* monotonic ms the connection was lost */
    int64_t start_deadline;
    ewi_window window;         /* publishes taken and not yet done */

    /* ---- rabbitmq administration (amqp10_declare.c; thread-safe) ---- */
    struct rmqa *admin;

    /* ---- I/O thread only ---- */
    ewi_sock *sock;            /* while drv_live */
    pn_connection_driver_t drv; /* proton's engine over sock */
    bool drv_live;
    bool io_wants_in, io_wants_out; /* TLS: a write waits for input, a read for output */
    pn_connection_t *conn;     /* drv's, until its transport closed */
    bool connected;            /* the broker's open arrived on conn */
    bool was_up;               /* some connection was open before */
    bool closing;              /* stop: the connection is being closed */
    bool exit_now;
    uint64_t next_link_id;
    uint64_t next_tag;
    ewi_deliveries dl;         /* read and not yet handed to the workers */
    amqp10_rec *rec_spare;     /* settled records kept for the next deliveries */
    unsigned rec_spare_n;
    amqp10_sender *senders;
    amqp10_sub *subs;
    amqp10_fetch *fetches;
    amqp10_ssn *ssns;          /* the connection's sessions with links */
    ewi_reconnect rc;          /* when to connect again */
    size_t host_next;          /* the node the next connect tries first */
    size_t host_cur;           /* the node of the current socket */
    bool reconnect_planned;    /* at rc.next_ms */
    int64_t close_deadline;    /* stop: disconnect hard after it */
    bool start_cut;            /* start's deadline passed: we dropped the socket */
    int64_t next_queue_check;  /* rabbitmq: when consumed queues are checked */
    bool stream_wake;          /* a large send wants another round soon */
};

/* The I/O thread (amqp10_io.c): the loop. It calls the halves below
 * (amqp10_send.c, amqp10_recv.c, amqp10_fetch.c) and decides what a lost link or
 * connection means; the halves only report (return, or leave state for the
 * loop) and use the helpers of amqp10_link.c, never the loop. */
void *amqp10_io_main(void *arg);

/* Publishing on the I/O thread (amqp10_send.c). */
void amqp10_send_take(ewi_transport *t, amqp10_out *o);       /* a W_PUB */
void amqp10_send_pump(ewi_transport *t, amqp10_sender *s);    /* credit came */
void amqp10_send_opened(ewi_transport *t, amqp10_sender *s);  /* attach answered */
void amqp10_send_lost(ewi_transport *t, amqp10_sender *s, const char *why);
/* The broker ended s's session for another link's fault: attach again on
 * another session; unsettled sends go out again (as after a reconnect). */
void amqp10_send_moved(ewi_transport *t, amqp10_sender *s);
void amqp10_send_outcome(ewi_transport *t, pn_delivery_t *d);
void amqp10_send_expire(ewi_transport *t, int64_t now);
void amqp10_send_continue(ewi_transport *t);                /* large sends */
void amqp10_send_attach_pending(ewi_transport *t);          /* after a connect */
void amqp10_send_disconnected(ewi_transport *t);
void amqp10_send_finish(ewi_transport *t, const char *why); /* thread ends */
/* Completes a publish: done runs once, then the record is freed. */
void amqp10_out_finish(ewi_transport *t, amqp10_out *o, int err, const char *detail);

/* Receiving on the I/O thread (amqp10_recv.c). */
void amqp10_recv_take_sub(ewi_transport *t, amqp10_sub *s);   /* a W_SUB */
void amqp10_recv_take_unsub(ewi_transport *t, amqp10_sub *s); /* a W_UNSUB */
void amqp10_recv_settle(ewi_transport *t, amqp10_rec *rec);   /* a W_SETTLE */
void amqp10_recv_forget(amqp10_rec *rec);                     /* thread ends */
/* A zeroed record for a delivery, from the spares when there are (I/O
 * thread); NULL when out of memory. */
amqp10_rec *amqp10_rec_new(ewi_transport *t);
/* A record done with, kept as a spare up to a bound, else freed (I/O
 * thread). amqp10_rec_spares_free frees the spares (after the thread). */
void amqp10_rec_release(ewi_transport *t, amqp10_rec *rec);
void amqp10_rec_spares_free(ewi_transport *t);
void amqp10_recv_opened(ewi_transport *t, amqp10_sub *s);
void amqp10_recv_lost(ewi_transport *t, amqp10_sub *s, const char *why);
/* The broker ended s's session for another link's fault: attach again now,
 * on another session (deliveries in core's hands go back to the queue). */
void amqp10_recv_moved(ewi_transport *t, amqp10_sub *s);
void amqp10_recv_message(ewi_transport *t, amqp10_sub *s, pn_delivery_t *d);
void amqp10_recv_tick(ewi_transport *t, int64_t now);
void amqp10_recv_attach_all(ewi_transport *t);              /* after a connect */
void amqp10_recv_disconnected(ewi_transport *t);
void amqp10_recv_finish_locked(ewi_transport *t, const char *why);

/* ---- helpers (amqp10_link.c) ---- */

/* The connection is open and not closing (I/O thread). */
bool amqp10_is_up(ewi_transport *t);
/* t->work, whose first push of a batch wakes the I/O thread. */
void amqp10_work_init(ewi_transport *t);
/* Queues w for the I/O thread and wakes it; t->mu held by the caller, and
 * t->io_exited false (after it the queue is closed and w is not taken). */
void amqp10_post_locked(ewi_transport *t, amqp10_work *w);
/* Same, taking t->mu. */
void amqp10_post(ewi_transport *t, amqp10_work *w);

/* I/O thread: links, the sessions they share, conditions, deliveries. */
#ifndef AMQP10_LINKS_PER_SESSION
#define AMQP10_LINKS_PER_SESSION 64
#endif
/* Opens a link to or from a on a session with room (alone: on a new
 * session of its own). */
pn_link_t *amqp10_open_link(ewi_transport *t, bool sender, const amqp10_addr *a,
                          void *ctx, bool alone);
/* Closes l (NULL allowed); its session stays, for the next link. */
void amqp10_close_link(ewi_transport *t, pn_link_t *l);
/* Same, keeping the link's context: the broker's detach reaches its owner
 * (which then clears the context). */
void amqp10_close_link_waiting(ewi_transport *t, pn_link_t *l);
/* Ends l's session now if l was alone on it (retired), and calls
 * fn(t, arg) once the broker answered (or the connection went); false when
 * the session is shared or already ending (fn is not called). */
bool amqp10_ssn_end_then(ewi_transport *t, pn_link_t *l,
                         void (*fn)(ewi_transport *t, void *arg), void *arg);
/* Calls the fn of every session end the broker has not answered within
 * AMQP10_ANSWER_MS (and logs it): a broker that never answers an end
 * must not hold its waiter for ever. */
void amqp10_ssn_tick(ewi_transport *t, int64_t now);
/* The broker ended ssn (I/O thread): forgets it, and returns how many of
 * our open links it carried. */
unsigned amqp10_ssn_ended(ewi_transport *t, pn_session_t *ssn);
/* The connection is gone: every session with it. */
void amqp10_ssn_forget_all(ewi_transport *t);
/* How long the detach of a dead-letter read and the end of its session
 * may go unanswered before the read goes on without the answer. */
#define AMQP10_ANSWER_MS 20000
/* "condition: description" of c, or fallback when c is not set. */
void amqp10_condition_text(pn_condition_t *c, const char *fallback, char *buf,
                         size_t len);
/* Reads what d has: 1 when d is complete (the link advanced; take the bytes
 * with amqp10_acc_take, or read them with amqp10_acc_bytes), 0 when more is to come, -1 when the sender aborted d
 * (settled, advanced, nothing kept), -2 when out of memory (nothing kept; d
 * is left to the caller). */
int amqp10_acc_read(amqp10_acc *a, pn_delivery_t *d);
/* Hands the bytes out (caller frees; never NULL unless out of memory). */
char *amqp10_acc_take(amqp10_acc *a, size_t *len);
/* The bytes of a complete delivery, read in place (valid until
 * amqp10_acc_done); then amqp10_acc_done makes room for the next one,
 * keeping a small buffer for it. */
const char *amqp10_acc_bytes(const amqp10_acc *a, size_t *len);
void amqp10_acc_done(amqp10_acc *a);
void amqp10_acc_reset(amqp10_acc *a);

/* dlq_take (amqp10_fetch.c): the caller's side is the op; these run on the I/O
 * thread. */
ew_err amqp10_dlq_take(ewi_transport *t, ewi_dlq_req *req);
void amqp10_fetch_work(ewi_transport *t, amqp10_work *w);
void amqp10_fetch_on_open(ewi_transport *t, amqp10_fetch *f, pn_link_t *l);
void amqp10_fetch_on_lost(ewi_transport *t, amqp10_fetch *f, const char *why);
void amqp10_fetch_on_flow(ewi_transport *t, amqp10_fetch *f, pn_link_t *l);
void amqp10_fetch_on_delivery(ewi_transport *t, amqp10_fetch *f, pn_delivery_t *d);
void amqp10_fetch_settle(ewi_transport *t, amqp10_rec *rec);
void amqp10_fetch_attach_all(ewi_transport *t);    /* after a connect */
/* Fails the attached readers (final: every reader, and forgets them). */
void amqp10_fetch_disconnect_all(ewi_transport *t, const char *why, bool final);
/* Reads whose detach the broker has not answered within AMQP10_ANSWER_MS
 * go on without it (logged). */
void amqp10_fetch_tick(ewi_transport *t, int64_t now);
/* Attaches a receiver to source, calls request(t, arg) once the broker
 * answered the attach, and copies the body of the first message that
 * arrives (before deadline) into reply. Any thread but the I/O thread. */
ew_err amqp10_fetch_reply(ewi_transport *t, const amqp10_addr *source,
                        ew_err (*request)(ewi_transport *t, void *arg), void *arg,
                        int64_t deadline, char *reply, size_t replylen, char *err,
                        size_t errlen);

/* artemis (amqp10_artemis.c): what amqp10_ensure does there, through the broker's
 * management address: d of kind AMQP10_DECL_EXISTS asks whether queue d->queue
 * is on address d->event (EW_ENOTFOUND if not); AMQP10_DECL_LISTENER of a
 * per_process listener creates its queue with auto-delete. */
ew_err amqp10_artemis_ensure(ewi_transport *t, const amqp10_decl *d, int64_t deadline,
                           char *err, size_t errlen);
/* Deletes queue (the broker-side name, E:L-S) with its messages and
 * consumers (destroyQueue); a queue already gone is EW_OK. */
ew_err amqp10_artemis_destroy(ewi_transport *t, const char *event, const char *queue,
                              int64_t deadline, char *err, size_t errlen);

#endif
