/* rabbitmq:// and rabbitmqs:// — AMQP 0-9-1 through librabbitmq 0.11.
 *
 * One I/O thread owns the librabbitmq connection (it is not thread-safe).
 * Application and worker threads hand it publishes, settles and requests
 * through queues guarded by t->mu and wake it with an eventfd; it polls the
 * socket and the eventfd and reads frames without blocking, so publishing
 * and consuming never wait for each other.
 *
 * Channels on one connection:
 *   1  confirmed publishes (durable events, send_to, dead letters)
 *   2  transient publishes (non-durable events: no confirms)
 *   3  declarations, basic.get of dead letters
 *   4… one per consuming listener (its own basic.qos and delivery tags)
 *
 * Internal to the transport; nothing here is installed. */
#ifndef EW_RMQ_H
#define EW_RMQ_H

#include <amqp.h>
#include <pthread.h>
#include <stdatomic.h>

#include "ewi.h"
#include "transports/rmqadmin/rmqadmin.h"
#include "waker.h"
#include "workq.h"

#define RMQ_CH_CONFIRM 1
#define RMQ_CH_FIRE 2
#define RMQ_CH_RPC 3
#define RMQ_CH_FIRST_SUB 4

/* The channel numbers of listeners in use on a connection: a channel the
 * broker closed (a refused listener) is given back and taken again by the
 * next listener or retry. */
typedef struct rmq_chans {
    uint8_t used[65536 / 8];
} rmq_chans;
void rmq_chans_reset(rmq_chans *c); /* a new connection: all free */
/* The lowest free number from RMQ_CH_FIRST_SUB up to channel_max (the
 * highest the broker allows), or 0 when none is free. */
uint16_t rmq_chans_take(rmq_chans *c, int channel_max);
void rmq_chans_give(rmq_chans *c, uint16_t ch);

/* ---- options (rmq_options.c) --------------------------------------------- */

typedef struct rmq_opts {
    bool tls;
    char *host;                /* the first node's (hosts[0]) */
    int port;
    ewi_hosts hosts;           /* every node of the URL, in its order (the
                                  scheme's port where it gives none) */
    size_t host_next;          /* the node the next connect tries first */
    size_t host_cur;           /* the node of the current connection */
    bool quorum;               /* ?queue_type=quorum */
    char *user, *password, *vhost;
    char *cacert, *cert, *key; /* TLS files; NULL when not given */
    bool verify;               /* TLS: verify the peer's certificate chain */
    bool verify_name;          /* TLS: and its host name (verify=name) */
    int heartbeat_ms;          /* ?heartbeat_ms=; 0 disables heartbeats */
    int heartbeat_s;           /* the same in whole seconds, rounded up */
    int connect_timeout_ms;    /* one TCP connect + handshake */
    int rpc_timeout_ms;        /* one declaration round trip */
    long queue_expires_ms;     /* x-expires of per_process queues */
    size_t max_inflight;       /* publishes queued or unconfirmed at most */
    size_t max_inflight_bytes; /* and their bodies' bytes */
    int reconnect_base_ms, reconnect_max_ms;
    char *label;               /* "rabbitmq://host:port/vhost" for texts */
} rmq_opts;

/* Parses the URL into o (EW_EINVAL with the reason logged). */
ew_err rmq_opts_parse(ew_manager *m, const ewi_url *url, rmq_opts *o);
void rmq_opts_free(rmq_opts *o);

/* ---- envelope <-> AMQP properties (rmq_props.c) ------------------------- */

/* Scratch space for one message's header table, reused between publishes. */
typedef struct rmq_props_buf {
    amqp_table_entry_t *entries;
    size_t cap;
    size_t header_bytes; /* the last table's encoded size, from above */
} rmq_props_buf;

/* Fills props from env: every header in the header table (string values),
 * content type, message id (ew-message-id), timestamp (ew-sent-at, seconds),
 * type (ew-event), delivery mode 2 when persistent. props and its table
 * point into env and buf: valid while both are unchanged. buf->header_bytes
 * is then a bound on the header frame's size. EW_ENOMEM, EW_ETOOBIG (a key
 * over 255 bytes). */
ew_err rmq_props_from_env(const ew_envelope *env, bool persistent, rmq_props_buf *buf,
                          amqp_basic_properties_t *props);
void rmq_props_buf_free(rmq_props_buf *buf);

/* Fills env (empty) from received properties: header table entries become
 * headers (non-string values as text; nested tables and arrays are
 * skipped), content type, and ew-message-id / ew-sent-at / ew-event from
 * message_id / timestamp / type when the table lacks them (foreign
 * producers). Copies everything. EW_ENOMEM only; *skipped counts headers
 * that could not be taken (nested values, NUL bytes, over the limits). */
ew_err rmq_props_to_env(const amqp_basic_properties_t *props, ew_envelope *env,
                        size_t *skipped);

/* ---- texts and codes of librabbitmq results (the shared module's) ------- */

#define rmq_reply_text rmqa_reply_text
#define rmq_code_err rmqa_code_err

/* ---- inbound message assembly (rmq_io.c) -------------------------------- */

enum rmq_in_kind { RMQ_IN_NONE, RMQ_IN_DELIVER, RMQ_IN_RETURN };

typedef struct rmq_inbound {
    enum rmq_in_kind kind;
    uint64_t tag;         /* delivery tag */
    bool redelivered;
    uint16_t reply_code;  /* basic.return */
    char reply_text[160];
    ew_envelope *env;     /* made when the header frame arrives */
    uint8_t *body;        /* env's body: at most max_body + 1 bytes are kept */
    size_t len, got;      /* announced body size, bytes received */
    size_t keep;          /* bytes of it kept in body */
    bool have_header;
} rmq_inbound;

/* ---- subscriptions ------------------------------------------------------- */

/* ---- delivery tags and coalesced acks (rmq_acks.c) --------------------- */

/* The tags of one consumer channel that core holds (open) and that were
 * settled since the last flush (done). Memory is bounded by what is
 * outstanding (prefetch), never by the range of the tags. I/O thread only. */
typedef struct rmq_tags {
    uint64_t *open;       /* ascending; settled ones marked until compacted */
    size_t head, len, cap, live;
    uint64_t last;        /* the newest tag opened */
    uint64_t *done;       /* settled, not yet acknowledged */
    size_t ndone, done_cap;
} rmq_tags;

/* Forgets every tag (a new channel); keeps the memory. */
void rmq_tags_reset(rmq_tags *g);
void rmq_tags_free(rmq_tags *g);
/* tag was handed to core. false when it cannot be tracked (out of memory,
 * or not above the newest tag): refuse the delivery then. */
bool rmq_tags_open(rmq_tags *g, uint64_t tag);
/* tag was settled; false when it was not open (nothing to acknowledge). */
bool rmq_tags_close(rmq_tags *g, uint64_t tag);
/* Records a closed tag for the next flush; false when out of memory
 * (acknowledge it at once then). */
bool rmq_tags_settled(rmq_tags *g, uint64_t tag);
/* Acknowledges exactly the recorded tags: one ack(multiple) for those below
 * the oldest open tag, one ack each for the rest. Stops at the first
 * non-zero return of ack and returns it; nothing is recorded afterwards. */
typedef int (*rmq_ack_fn)(void *user, uint64_t tag, bool multiple);
int rmq_tags_flush(rmq_tags *g, rmq_ack_fn ack, void *user);

typedef struct rmq_sub {
    ewi_sub *sub;
    bool active;          /* consuming wanted (false after unsubscribe) */
    uint16_t ch;          /* its channel; 0 while it has none */
    uint32_t epoch;       /* of ch: settles from an older epoch are dropped */
    char ctag[96];        /* consumer tag */
    uint16_t prefetch;
    rmq_tags tags;        /* of ch: held by core, settled and not acked */
    size_t outstanding;   /* delivered to core, not settled */
    bool resubscribe;     /* lost its consumer: declare and consume again */
    int64_t retry_at_ms;  /* when to try that */
    struct rmq_sub *next;
} rmq_sub;

/* A received message: core's part first (ewi_msg_free frees the whole),
 * then the subscription it came on, which outlives the ewi_sub that
 * ew_unlisten frees. */
typedef struct rmq_msg {
    ewi_msg m;
    rmq_sub *rs;
} rmq_msg;

/* A declared event (exchange), re-declared after a reconnect; also a
 * dead-letter queue declared on the current connection. */
typedef struct rmq_event {
    struct rmq_event *next;
    char name[];
} rmq_event;

/* ---- requests from application threads --------------------------------- */

typedef enum rmq_req_kind {
    RMQ_REQ_DECLARE,
    RMQ_REQ_SUBSCRIBE,
    RMQ_REQ_SUBSCRIBE_MANY,
    RMQ_REQ_UNSUBSCRIBE,
    RMQ_REQ_DELETE,
    RMQ_REQ_DLQ_GET,
    RMQ_REQ_DLQ_ACK,
    RMQ_REQ_STOP
} rmq_req_kind;

typedef struct rmq_got {
    ew_envelope *env;
    uint64_t tag;
    struct rmq_got *next;
} rmq_got;

typedef struct rmq_req {
    rmq_req_kind kind;
    const char *event;    /* DECLARE */
    rmq_sub *rs;          /* SUBSCRIBE, UNSUBSCRIBE */
    rmq_sub **many;       /* SUBSCRIBE_MANY: nmany subs, their results in rcs */
    size_t nmany;
    ew_err *rcs;
    const char *queue;    /* DLQ_GET, DELETE */
    size_t max;           /* DLQ_GET */
    uint64_t tag;         /* DLQ_GET out (last tag), DLQ_ACK in: acks up to it */
    uint64_t nack_tag;    /* DLQ_ACK in: then requeues up to it (0: none) */
    uint32_t epoch;       /* DLQ_GET out, DLQ_ACK in */
    rmq_got *got;         /* DLQ_GET out, in order */
    size_t ngot;
    int64_t deadline_ms;  /* waits for a connection until then */
    bool done;
    ew_err rc;
    char err[512];
    ewi_workq_item link;  /* in t->reqs */
    struct rmq_req *next; /* in t->parked */
} rmq_req;

/* ---- the transport ------------------------------------------------------- */

struct ewi_transport {
    ew_manager *m;
    rmq_opts o;
    ewi_waker waker;
    ewi_workq reqs;          /* requests for the I/O thread (own lock) */
    pthread_t io;
    bool io_started;

    /* Shared with other threads, under mu. */
    pthread_mutex_t mu;
    pthread_cond_t done_cv;  /* a request completed */
    ewi_pub *pub_head, *pub_tail;
    ewi_msg *settle_head, *settle_tail;
    ewi_window window;       /* publishes accepted and not completed */
    bool sleeping;           /* the I/O thread is (about to be) in poll */
    bool woken;              /* a wake-up is pending */
    bool closed;             /* stop ran: publishes fail with EW_ECLOSED */
    bool quit;               /* stop asked the I/O thread to finish */

    /* The I/O thread's own (and start's, before the thread runs). */
    amqp_connection_state_t conn;
    ewi_deliveries dl;       /* read and not yet handed to the workers */
    bool connected;
    uint32_t epoch_seq;      /* source of channel epochs */
    uint32_t rpc_epoch;      /* epoch of the RPC channel */
    rmq_chans chans;         /* listener channels in use */
    rmq_inbound *in;         /* assembly per channel number */
    size_t nin;
    rmq_props_buf props;
    /* Confirmed publishes written and waiting for basic.ack, in order. */
    ewi_pub *unconf_head, *unconf_tail;
    uint64_t next_seq;       /* publish sequence on the confirm channel */
    /* basic.return seen for these sequences (acked next). */
    struct rmq_returned *returned;
    /* Publishes to (re)send before the shared queue: after a reconnect. */
    ewi_pub *resend_head, *resend_tail;
    size_t freed;            /* completed publishes not yet taken off inflight */
    size_t freed_bytes;      /* and their bodies' bytes */
    /* Plain TCP: publishes encoded and not yet written (rmq_wire.c), and
     * the transient ones among them, completed once written. */
    uint8_t *wbuf;
    size_t wlen, wcap;
    /* Large bodies are not copied into wbuf: each is written from its
     * envelope (held by a reference) where it belongs among wbuf's bytes. */
    struct rmq_wseg *wseg;
    size_t nwseg, wsegcap, wseg_bytes;
    ewi_pub *fire_head, *fire_tail;
    rmq_req *parked;         /* requests waiting for a connection */
    rmq_sub *subs;
    rmq_event *events;
    /* Dead-letter queues declared on this connection: each is declared
     * before its first dead letter, not at subscribe (forgotten when the
     * connection goes). */
    rmq_event *dlqs;
    ewi_reconnect rc;      /* when to connect again, down since when */
    char down_reason[256];
    int64_t last_rx_ms;      /* last sign of life from the broker */
    int hb_s;                /* heartbeat negotiated on this connection */

    /* The write guard (rmq_guard.c). guard_mu covers guard_quit and
     * closing the socket. */
    pthread_t guard;
    bool guard_started, guard_quit;
    pthread_mutex_t guard_mu;
    pthread_cond_t guard_cv;
    _Atomic int64_t wr_since_ms; /* in an unbounded librabbitmq write since; 0 */
    _Atomic int wr_fd;           /* its socket */
};

typedef struct rmq_returned {
    ewi_pub *p;
    char text[600];
    struct rmq_returned *next;
} rmq_returned;

/* ---- connection (rmq_conn.c) -------------------------------------------- */

/* Opens a socket, logs in and opens the fixed channels (confirm.select on
 * the confirm channel), on the first node of the URL's list that answers,
 * from t->o.host_next on (one round over the list). On failure writes why into err and returns EW_EAUTH
 * (credentials, vhost), EW_ETLS (certificate), EW_ECONNECT or EW_ENOMEM;
 * t->conn is then NULL. */
ew_err rmq_connect(ewi_transport *t, char *err, size_t errlen);
/* Closes politely when possible and frees the connection. */
void rmq_disconnect(ewi_transport *t, bool polite);
/* Opens channel ch (after close-ok when the broker closed it). */
ew_err rmq_channel_open(ewi_transport *t, uint16_t ch, char *err, size_t errlen);

/* ---- topology (rmq_topology.c) ------------------------------------------ */

/* Each returns EW_OK or the error with "what failed: broker text" in err;
 * a channel exception on the RPC channel is answered and the channel
 * reopened; EW_EDISCONNECTED when the connection itself failed, with why in
 * err: none of them calls rmq_lost, the I/O loop decides what a loss means.
 * Frames of other channels read while waiting for a reply go to other (the
 * loop's own frame handler), in order. */
typedef void (*rmq_frame_fn)(ewi_transport *t, const amqp_frame_t *f);
ew_err rmq_declare_exchange(ewi_transport *t, const char *event, char *err, size_t errlen);
/* Declares dead-letter queue queue (durable, no arguments) on the RPC
 * channel unless this connection did so already. */
ew_err rmq_dlq_declare(ewi_transport *t, const char *queue, char *err, size_t errlen);
/* queue.delete of queue on the RPC channel (ew_unlisten's delete). */
ew_err rmq_queue_delete(ewi_transport *t, const char *queue, char *err, size_t errlen);
/* Forgets the dead-letter queues declared (the connection went). */
void rmq_dlqs_forget(ewi_transport *t);
/* The exchanges of events[0..n) in one round trip (all but the last
 * nowait; the broker answers in order). A refusal closes the channel at the
 * exchange it names, and those after it are not declared: the caller then
 * declares them one by one. */
ew_err rmq_declare_exchanges(ewi_transport *t, const char *const *events, size_t n, char *err,
                             size_t errlen);
/* Declares rs's exchange, queue, binding and dead-letter queue and consumes
 * it on a channel of its own, in one round trip. */
ew_err rmq_subscribe(ewi_transport *t, rmq_sub *rs, rmq_frame_fn other, char *err,
                     size_t errlen);
/* rmq_subscribe for each rss[i] whose rcs[i] is EW_EDISCONNECTED (to do),
 * all written before any reply is read: their round trips overlap (the
 * broker runs channels in parallel). rcs[i] becomes the result; failures
 * are reported. With link, those that succeed are made active and linked
 * into t->subs (new ones; resumed ones are there already). */
ew_err rmq_subscribe_many(ewi_transport *t, rmq_sub **rss, size_t n, ew_err *rcs, bool link,
                          rmq_frame_fn other, char *why, size_t whylen);
ew_err rmq_cancel(ewi_transport *t, rmq_sub *rs, char *err, size_t errlen);
/* basic.get of up to req->max messages off req->queue (no auto-ack). */
ew_err rmq_dlq_get(ewi_transport *t, rmq_req *req);
/* Turns the last RPC's reply into an ew_err (EW_OK when normal). */
ew_err rmq_rpc_result(ewi_transport *t, uint16_t ch, const char *what, char *err,
                      size_t errlen);

/* ---- the I/O thread (rmq_io.c) ------------------------------------------ */

void *rmq_io_main(void *arg);
/* Marks the connection lost: unconfirmed publishes wait to be resent,
 * consumers to be resumed; logs and reports once. */
void rmq_lost(ewi_transport *t, const char *why);

/* Settle encoding in ewi_msg.tdata: the channel epoch, and the requeue bit. */
#define RMQ_TDATA(epoch, requeue) ((void *)(uintptr_t)(((uintptr_t)(epoch) << 1) | (requeue)))
#define RMQ_TDATA_EPOCH(p) ((uint32_t)((uintptr_t)(p) >> 1))
#define RMQ_TDATA_REQUEUE(p) (((uintptr_t)(p)&1u) != 0)

/* ---- the write guard (rmq_guard.c) -------------------------------------- */

/* I/O thread: a librabbitmq call that may wait for socket room without a
 * deadline starts / ended. RMQ_GUARDED(t, call) brackets one. */
void rmq_guard_begin(ewi_transport *t);
static inline int rmq_guard_end(ewi_transport *t, int st)
{
    atomic_store(&t->wr_since_ms, 0);
    return st;
}
#define RMQ_GUARDED(t, call) (rmq_guard_begin(t), rmq_guard_end((t), (call)))
/* The thread that shuts the socket down under a write blocked for longer
 * than rpc_timeout. start: false when it cannot run. stop: after the I/O
 * thread ended. */
bool rmq_guard_start(ewi_transport *t);
void rmq_guard_stop(ewi_transport *t);

/* ---- batched publish writes (rmq_wire.c) -------------------------------- */

/* The basic content header's property list for env, byte for byte what
 * amqp_encode_properties writes for rmq_props_from_env's properties, without
 * building them: the bytes written, or -1 when it does not fit out or a key
 * is over 255 bytes. */
int rmq_wire_encode_env(const ew_envelope *env, bool persistent, amqp_bytes_t out);
/* Appends the frames of one basic.publish to the write buffer; body frames
 * of 4 KiB or more stay in env, which the buffer holds a reference to until
 * they are written (rmq_wire_flush) or dropped (rmq_wire_reset). EW_ETOOBIG
 * when they do not fit the negotiated frame size, EW_ENOMEM (nothing
 * appended either way). */
ew_err rmq_wire_publish(ewi_transport *t, uint16_t ch, amqp_bytes_t exchange,
                        amqp_bytes_t key, bool mandatory, ew_envelope *env,
                        bool persistent, amqp_bytes_t body);
/* The buffer is big enough to be written now. */
bool rmq_wire_due(const ewi_transport *t);
/* Drops what is buffered, unwritten (the connection is gone). */
void rmq_wire_reset(ewi_transport *t);
/* Writes the whole buffer (waiting while the socket is full). EW_EIO with
 * the reason in err when the connection failed; the buffer is empty after. */
ew_err rmq_wire_flush(ewi_transport *t, char *err, size_t errlen);

/* ---- publishing on the I/O thread (rmq_pub.c) --------------------------- */

/* Completes a publish (done callback); its window slot is given back by
 * the next rmq_room_release. */
void rmq_pub_complete(ewi_transport *t, ewi_pub *p, int err, const char *detail);
/* Takes completed publishes off the window and wakes senders waiting for room. */
void rmq_room_release(ewi_transport *t);
/* Writes p, or on plain TCP appends it to the write buffer; confirmed ones
 * wait in the unconfirmed list. false when the connection failed, with why:
 * p is then queued for resending, and the caller (the I/O loop) decides
 * what the loss means (rmq_lost). Never calls back into the loop. */
bool rmq_pub_write(ewi_transport *t, ewi_pub *p, char *why, size_t whylen);
/* Writes what rmq_pub_write buffered and completes the transient publishes
 * in it; false when the connection failed, with why (the unflushed ones
 * wait for rmq_lost to put them back in line). */
bool rmq_pub_flush(ewi_transport *t, char *why, size_t whylen);
/* Connection lost: buffered transient publishes go back in line. */
void rmq_pub_unflushed_back(ewi_transport *t);
void rmq_pub_on_ack(ewi_transport *t, uint64_t tag, bool multiple, bool nack);
void rmq_pub_on_return(ewi_transport *t, const rmq_inbound *in);
/* Fails publishes whose deadline passed (all queues when disconnected):
 * EW_ETIMEDOUT when never written, EW_EINDOUBT otherwise; either way they
 * leave every queue and are never sent again. */
void rmq_pub_expire(ewi_transport *t);
/* The same for the resend queue alone, whether connected or not (right
 * after a reconnect, before resending). */
void rmq_pub_expire_all(ewi_transport *t);
/* Moves every unconfirmed publish to the resend queue (connection lost). */
void rmq_pub_requeue_unconfirmed(ewi_transport *t);
/* Fails every publish the I/O thread holds with err (stop). */
void rmq_pub_fail_all(ewi_transport *t, int err, const char *detail);

#endif
