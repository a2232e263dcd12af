/* eventwire internals shared by core and the transports. Nothing here is
 * installed. Core knows no broker: a transport is the table ewi_transport_ops
 * below, and talks back to core only through the ewi_* functions here. */
#ifndef EVENTWIRE_EWI_H
#define EVENTWIRE_EWI_H

#include <stdarg.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include <eventwire/eventwire.h>

#define EWI_UNUSED(x) ((void)(x))
#define EWI_PRINTF(a, b) __attribute__((format(printf, a, b)))

/* ---- time, backoff ------------------------------------------------------ */

int64_t ewi_now_ms(void);  /* monotonic clock */
int64_t ewi_wall_ms(void); /* ms since the Unix epoch */
void ewi_sleep_ms(int ms);
/* ms left until deadline (a monotonic ms), never below 0. */
int ewi_left_ms(int64_t deadline_ms);

/* Capped exponential backoff with full jitter: each next() returns a delay
 * in [base/2, cur] and doubles cur up to cap. reset() after a success. */
typedef struct ewi_backoff {
    int base_ms, cap_ms, cur_ms;
    uint64_t seed;
} ewi_backoff;
void ewi_backoff_init(ewi_backoff *b, int base_ms, int cap_ms);
int ewi_backoff_next(ewi_backoff *b);
void ewi_backoff_reset(ewi_backoff *b);

/* Reconnect scheduling of a transport's connection, one rule for all: after
 * a loss or a failed attempt the next attempt comes after the next backoff
 * delay; the backoff starts over only after a connection that stayed up
 * EWI_RECONNECT_STABLE_MS (one the broker closes at once keeps it growing).
 * down_since feeds error texts ("down since 10.0 s"). One thread only. */
#define EWI_RECONNECT_STABLE_MS 5000
typedef struct ewi_reconnect {
    ewi_backoff backoff;
    int64_t next_ms;    /* monotonic ms of the next attempt */
    int64_t down_since; /* monotonic ms the connection was lost; 0: up or never */
    int64_t up_since;   /* monotonic ms of the last successful connect */
    unsigned failures;  /* attempts failed since the loss (or the start) */
} ewi_reconnect;
void ewi_reconnect_init(ewi_reconnect *r, int base_ms, int cap_ms);
/* Connected at now. */
void ewi_reconnect_up(ewi_reconnect *r, int64_t now);
/* The connection was lost at now: plans the next attempt; returns its delay. */
int ewi_reconnect_lost(ewi_reconnect *r, int64_t now);
/* An attempt failed at now: plans the next one; returns its delay. */
int ewi_reconnect_failed(ewi_reconnect *r, int64_t now);
/* ms until the next attempt, 0 when due. */
int ewi_reconnect_wait_ms(const ewi_reconnect *r, int64_t now);

/* ---- threads ------------------------------------------------------------ */

#include <pthread.h>

/* An adaptive mutex (spins briefly before sleeping). */
void ewi_mutex_init(pthread_mutex_t *mu);
/* Starts one of m's threads (a transport's I/O thread, a worker): named
 * name (15 characters at most) for top, gdb and perf, and scheduled as
 * ew_options.threads says. 0, or pthread_create's error. */
int ewi_thread_start(const ew_manager *m, pthread_t *th, void *(*fn)(void *), void *arg,
                     const char *name);
/* A condition variable on CLOCK_MONOTONIC, for ewi_cond_wait_until. */
void ewi_cond_init_mono(pthread_cond_t *cv);
/* Waits until deadline_ms (monotonic, as ewi_now_ms) at the latest; cv must
 * come from ewi_cond_init_mono. Returns what pthread_cond_timedwait does. */
int ewi_cond_wait_until(pthread_cond_t *cv, pthread_mutex_t *mu, int64_t deadline_ms);

/* ---- URL ---------------------------------------------------------------- */

/* scheme://[user[:password]@]host[:port][,host[:port]...][/path][?k=v&k=v]
 * Percent-escapes are decoded in user, password, path and params. A host may
 * be an IPv6 literal in brackets (kept without them). Several hosts, comma
 * separated, name the nodes of one cluster; each has its own port or none
 * (the transport's default). */
typedef struct ewi_url_kv {
    char *key, *value;
} ewi_url_kv;

typedef struct ewi_url_host {
    char *host; /* "" only when the URL names no host at all */
    int port;   /* 0 when absent */
} ewi_url_host;

typedef struct ewi_url {
    char *scheme;   /* lowercased */
    char *user;     /* NULL when absent */
    char *password; /* NULL when absent; never log it */
    char *host;     /* "" when absent; the first host of a list */
    int port;       /* 0 when absent; the first host's */
    ewi_url_host *hosts; /* every host in the URL's order (hosts[0] is host,
                            port); nhosts >= 1 once parsed */
    size_t nhosts;
    char *path;     /* without the leading '/'; NULL when absent ("/" gives "") */
    ewi_url_kv *params;
    size_t nparams;
} ewi_url;

/* EW_EINVAL with a reason in err (never containing the password). */
ew_err ewi_url_parse(const char *text, ewi_url *out, char *err, size_t errlen);
void ewi_url_free(ewi_url *u);
/* The value of query parameter key, or NULL. */
const char *ewi_url_param(const ewi_url *u, const char *key);
/* Integer parameter in [min, max]; dflt when absent; EW_EINVAL otherwise. */
ew_err ewi_url_param_int(const ewi_url *u, const char *key, long dflt,
                         long min, long max, long *out);
/* The URL with the password replaced by "***", for logs. Caller frees. */
char *ewi_url_redacted(const char *text);

/* ---- host lists (hosts.c) ----------------------------------------------- */

/* The nodes of one cluster, as a URL lists them, each with its port (the
 * transport's default filled in). A connection tries them in turn: one
 * round starts at *next, and the first node that answers wins; the next
 * round (once that connection goes) starts with the node after it, so a
 * service leaves the node that just went rather than dialling it again. */
typedef struct ewi_hosts {
    ewi_url_host *v;
    size_t n; /* >= 1 once made */
} ewi_hosts;

/* url's hosts, default_port where a host has none. EW_ENOMEM. */
ew_err ewi_hosts_from_url(const ewi_url *url, int default_port, ewi_hosts *out);
/* A copy of n hosts; ports as given. EW_ENOMEM. */
ew_err ewi_hosts_copy(const ewi_url_host *v, size_t n, ewi_hosts *out);
void ewi_hosts_free(ewi_hosts *h);
/* "h1:p1,h2:p2" (IPv6 literals in brackets) into buf; what snprintf
 * returns. */
int ewi_hosts_text(const ewi_hosts *h, char *buf, size_t len);

/* Connects to one node; err says why not. */
typedef ew_err (*ewi_host_try_fn)(void *user, const ewi_url_host *h, char *err, size_t errlen);
/* One round over h from *next: try(user, node) until one returns EW_OK,
 * which is then *used, and *next the node after it. A refusal that every
 * node would repeat (EW_EAUTH: the cluster's credentials; EW_ETLS: the
 * cluster's certificates or ours; EW_EINVAL, EW_ENOMEM) ends the round at
 * once. A round where none answers leaves *next as it was and returns the
 * last node's code, with every node's reason in err ("h:p: why; ..."; one
 * node: its reason alone). */
ew_err ewi_hosts_round(const ewi_hosts *h, size_t *next, size_t *used, ewi_host_try_fn try_fn,
                       void *user, char *err, size_t errlen);

/* ---- envelope internals ------------------------------------------------- */

/* Envelopes are reference counted: a transport may share one among queues.
 * Once handed to a transport (publish) or to core (a delivered message) an
 * envelope is read-only. */
ew_envelope *ewi_envelope_new(void);
ew_envelope *ewi_envelope_ref(ew_envelope *env);
void ewi_envelope_unref(ew_envelope *env); /* NULL allowed */
/* Copies len bytes as the body. */
ew_err ewi_envelope_set_body(ew_envelope *env, const void *data, size_t len);
/* Takes ownership of data (malloc'd). */
void ewi_envelope_take_body(ew_envelope *env, void *data, size_t len);
/* Copies ct; NULL or "" clears it. */
ew_err ewi_envelope_set_content_type(ew_envelope *env, const char *ct);
/* Adds a header as it came off the wire, ew-* names included; replaces an
 * earlier value of the same key. Lengths are explicit (no NUL needed). */
ew_err ewi_envelope_put(ew_envelope *env, const char *key, size_t klen,
                        const char *value, size_t vlen);
/* One header for ewi_envelope_put_received. */
typedef struct ewi_env_kv {
    const char *key, *value;
    size_t klen, vlen;
} ewi_env_kv;
/* The headers of a received message, n at a time, with room reserved once
 * for all of them (ewi_envelope_put checks, allocates and maybe grows per
 * header). The first value of a key counts: a pair whose key env holds
 * already, or that came earlier in kv, is left out, and so is a pair with
 * an empty key or a NUL in its key or value (no C string carries it).
 * EW_ENOMEM or EW_ETOOBIG: nothing of kv was put. */
ew_err ewi_envelope_put_received(ew_envelope *env, const ewi_env_kv *kv, size_t n);
/* Header i with its lengths (the key and value are NUL-terminated too);
 * EW_ENOTFOUND past the end. For transports that copy every header out. */
ew_err ewi_envelope_header_n(const ew_envelope *env, size_t i, const char **key,
                             size_t *klen, const char **value, size_t *vlen);
/* A writable body of len bytes (inside the envelope when small), replacing
 * any earlier body; NULL on ENOMEM. For a transport that reads a body in. */
void *ewi_envelope_body_buf(ew_envelope *env, size_t len);
/* A deep copy (new reference count 1). */
ew_envelope *ewi_envelope_clone(const ew_envelope *env);
/* Drops every header and the body and content type. */
void ewi_envelope_clear(ew_envelope *env);

/* ---- what a transport sees of core ------------------------------------- */

typedef struct ewi_transport ewi_transport; /* each transport defines it */

/* The manager's settings a transport needs; valid for the manager's life. */
typedef struct ewi_config {
    const char *server_name;
    int send_timeout_ms;
    int start_timeout_ms;
    size_t max_body;
    size_t max_headers;
    size_t max_header_len;
    bool batch_threads; /* ew_options.threads: the manager's threads SCHED_BATCH */
} ewi_config;
const ewi_config *ewi_config_of(const ew_manager *m);

/* A listener's subscription. Core owns it; strings live as long as it. */
typedef struct ewi_sub {
    const char *event;    /* E */
    const char *listener; /* L */
    const char *queue;    /* E::L or E::L-<server> */
    const char *dlq;      /* E::L.dlq: shared by a per_process listener's servers */
    bool per_process;     /* the queue must vanish when its server is gone */
    bool durable;         /* the event is durable */
    uint32_t prefetch;    /* unacknowledged deliveries held at most; >= 1 */
    void *core;           /* core's; do not touch */
    void *tdata;          /* the transport's */
} ewi_sub;

/* A received message. The transport makes it (with ewi_msg_new, or inside
 * its own structures), fills env and hands it to ewi_deliver; core settles
 * it exactly once through ops->settle, which gives it back: the transport
 * then releases it (ewi_msg_free for one made by ewi_msg_new). */
typedef struct ewi_msg {
    ew_envelope *env;        /* one reference, owned by the msg */
    ewi_sub *sub;
    uint32_t redeliveries;   /* deliveries before this one the broker knows
                                of: 0 the first time, >= 1 when redelivered */
    uint64_t tag;            /* the transport's (delivery tag, message id) */
    void *tdata;             /* the transport's */
    struct ewi_msg *qnext;   /* core's (inbox link) */
} ewi_msg;

/* A message for sub holding env (the caller's reference moves into it), or a
 * fresh empty envelope when env is NULL. NULL on ENOMEM (env is then
 * released). */
ewi_msg *ewi_msg_new(ewi_sub *sub, ew_envelope *env);
void ewi_msg_free(ewi_msg *msg);    /* unrefs env */

/* Hands a message to the listener's workers. Any thread; never blocks for
 * long (it appends to the listener's inbox; prefetch bounds the inbox). */
void ewi_deliver(ewi_msg *msg);
/* ewi_deliver for a chain of messages of one sub linked by qnext, in order:
 * one lock and at most one wake-up for all of them. */
void ewi_deliver_list(ewi_msg *first);

/* Deliveries gathered by an I/O thread while it reads what the broker sent
 * (one thread owns it; the messages are core's once flushed), handed over
 * together: a worker woken once for a read's messages rather
 * than once per message (which on a small machine is a switch between the
 * I/O thread and the worker per message). Zero-initialised; messages of one
 * sub stay in order, and a message of another sub hands over what was
 * gathered first. The owner calls ewi_deliveries_flush when it is done
 * reading, and before anything that would make a delivery stale (a lost
 * connection, an unsubscribe). */
typedef struct ewi_deliveries {
    ewi_msg *first, *last;
} ewi_deliveries;

void ewi_deliveries_add(ewi_deliveries *d, ewi_msg *msg);
void ewi_deliveries_flush(ewi_deliveries *d);

/* ---- consumption state: readiness and connection counts ---------------- */

/* Connection conn of m (0..7, the transport's own numbering: one connection
 * is 0; STOMP's publishing and consuming connections are 0 and 1) is up
 * (true: established, the first time too) or was lost (false: only for a
 * connection that was up, not for a failed attempt). Feeds ew_manager_ready
 * (every connection up) and the connects, reconnects and disconnects
 * counters. Any thread; cheap (atomics). */
void ewi_conn_state(ew_manager *m, unsigned conn, bool up);

/* sub consumes again (true: the broker confirmed its consumer, receiver or
 * subscription after a reconnect or a re-attach) or does not any more
 * (false: its connection, channel or link was lost, or the broker cancelled
 * it). Core marks a subscription consuming itself when subscribe returned
 * EW_OK; a transport reports what changes after that (reporting true at the
 * first subscribe too is harmless). Feeds ew_manager_ready. Never after
 * unsubscribe(sub) returned. Any thread, also with the transport's locks
 * held (it takes only the listener's inbox lock). */
void ewi_sub_state(ewi_sub *sub, bool consuming);

typedef enum ewi_settle {
    EWI_ACK,    /* handled, or safely dead-lettered: remove it */
    EWI_REQUEUE /* not handled (stopping, dead-letter publish failed): give
                   it back for redelivery, counted as a redelivery */
} ewi_settle;

typedef enum ewi_dest {
    EWI_DEST_EVENT,    /* every listener of event */
    EWI_DEST_LISTENER, /* only queue (E::L) of listener */
    EWI_DEST_DLQ       /* the dead-letter queue (E::L.dlq) of listener */
} ewi_dest;

/* A publish. Core owns it and keeps env and strings alive until done ran. */
typedef struct ewi_pub ewi_pub;
struct ewi_pub {
    ewi_dest dest;
    const char *event;    /* E, always */
    const char *listener; /* L for EWI_DEST_LISTENER and EWI_DEST_DLQ */
    const char *queue;    /* E::L or E::L.dlq for those, else NULL */
    bool durable;         /* persistent message, broker-confirmed completion */
    ew_envelope *env;     /* read-only for the transport */
    int64_t deadline_ms;  /* monotonic: fail after it (see written) and drop the
                             message: nothing sends it after its failure */
    /* Called exactly once when publish returned EW_OK: err EW_OK once the
     * broker took it (durable: confirmed), else the failure with detail (may be
     * NULL), e.g. the broker's text. Any thread, maybe inside publish. After
     * done ran the transport holds p nowhere (core frees it). */
    void (*done)(ewi_pub *p, int err, const char *detail);
    void *user;           /* core's */
    ewi_pub *next;        /* free for the transport's queues */
    uint64_t tag;         /* free for the transport (e.g. confirm sequence) */
    /* Set by the transport (from its I/O thread, never cleared) before the
     * first byte of the message can reach the broker: from then on the
     * broker may have it. A publish that ends without its confirm reports
     * EW_EINDOUBT once written, EW_ETIMEDOUT or EW_ECLOSED only while not:
     * see ewi_pub_unconfirmed. Core maps it again on completion. */
    bool written;
    /* Set by the transport when it writes p again on a new connection, its
     * first copy unconfirmed: a refusal of the copy (nack, return) is then
     * EW_EINDOUBT, since the first may have been delivered. */
    bool resent;
};

/* The outcome of a publish that ends without a confirm for reason err
 * (EW_ETIMEDOUT at its deadline, EW_ECLOSED at stop, EW_EDISCONNECTED):
 * EW_EINDOUBT when p was written, since the broker may have it; else err,
 * which then means "never sent, and never will be". Other codes (a broker's
 * refusal, EW_ENOMEM before writing) are returned as they are. */
int ewi_pub_unconfirmed(const ewi_pub *p, int err);
/* A detail text for that outcome: why_written when p was written (e.g. "no
 * confirm before the deadline"), else why_unsent. */
const char *ewi_pub_detail(const ewi_pub *p, const char *why_unsent,
                           const char *why_written);

/* ---- the in-flight window ------------------------------------------------ */

/* Publishes accepted and not completed (queued, written, unconfirmed) are
 * bounded per transport: the default max_inflight of every broker
 * transport, unless ?max_inflight= says otherwise. Deeper windows cost the
 * brokers more per event (RabbitMQ queues a backlog rather than handing each
 * message straight to its consumer): 4096 gave 5-50 % fewer events a second
 * than 512 on RabbitMQ (all three protocols) and on STOMP on ActiveMQ and
 * Artemis, and the same within its noise on AMQP 1.0 on Artemis; neither
 * 256 nor 1000 did better than 512 on all of them. */
#define EWI_DEFAULT_MAX_INFLIGHT 512

/* The bodies of the publishes in a window, in bytes, at most by default:
 * the count alone (then 4096) let 400 MB of 100 KB bodies wait in
 * the client while the broker was slower than the sender. */
#define EWI_DEFAULT_MAX_INFLIGHT_BYTES (16L << 20)

/* One rule for a full window on every transport: publish waits for a slot
 * until the publish's deadline; if the window is still full then, publish
 * returns EW_ETIMEDOUT itself (the message was never written) and done never
 * runs; EW_ECLOSED the same way once the window is closed. Full means
 * max_inflight publishes, or bodies of max_inflight_bytes with this one (a
 * larger body alone is let in, so that every body that passes max_body can
 * be sent). The window is guarded by a mutex of the transport's, held
 * around every call below. */
typedef struct ewi_window {
    pthread_cond_t room; /* on CLOCK_MONOTONIC */
    size_t max, used, waiters;
    size_t max_bytes, used_bytes;
    size_t wake_room;  /* free slots that wake a waiting sender */
    size_t wake_bytes; /* and free bytes */
    bool closed;
} ewi_window;

void ewi_window_init(ewi_window *w, size_t max, size_t max_bytes);
void ewi_window_destroy(ewi_window *w);
/* The bytes p holds of a window: its body's length. */
size_t ewi_pub_bytes(const ewi_pub *p);
/* Takes a slot for a body of `bytes` (mu held; released while waiting).
 * EW_OK, EW_ETIMEDOUT when full at deadline_ms, EW_ECLOSED once closed. */
ew_err ewi_window_take(ewi_window *w, pthread_mutex_t *mu, int64_t deadline_ms, size_t bytes);
/* Gives n slots and their bytes back (mu held) and wakes waiting senders
 * once a sixteenth of the window, at most 64 slots, and a sixteenth of its
 * bytes are free: woken for each slot, a sender blocked on a full window
 * would take turns with the I/O thread message by message. */
void ewi_window_give(ewi_window *w, size_t n, size_t bytes);
/* Fails waiting and later takes with EW_ECLOSED (mu held). */
void ewi_window_close(ewi_window *w);
/* Takes are allowed again (a transport started again; mu held). */
void ewi_window_open(ewi_window *w);

/* Reading a dead-letter queue. */
typedef struct ewi_dlq_req {
    const char *event, *listener, *dlq;
    size_t max;     /* fn may lower it to end the batch early */
    int timeout_ms; /* for the first message */
    /* Called once per message taken, on the calling thread. EW_OK: the
     * message is removed once it returns. Anything else: the transport
     * leaves that message and every later one of the batch on the queue
     * (gives them back unacknowledged), calls fn no more and returns. */
    ew_err (*fn)(void *user, const ew_envelope *env);
    void *user;
    size_t taken;   /* out: how many fn accepted (keep: how many it saw) */
    /* Reads without taking: fn sees up to max messages from the head (until
     * it refuses one), and every one stays on the queue, in its order. */
    bool keep;
} ewi_dlq_req;

enum {
    EWI_FEAT_DLQ_READ = 1u << 0, /* dlq_take is implemented */
    /* Deliveries come from threads of this process (local://): an idle
     * worker spins briefly before sleeping, since the next event is usually
     * microseconds away. Broker transports leave it off: there the spin
     * would take CPU from the broker and the I/O thread. */
    EWI_FEAT_INPROC = 1u << 1,
    /* Queues live in this process and die with it: a graceful stop first
     * lets the listeners take what is already queued (backlog is
     * implemented), within the stop's timeout. */
    EWI_FEAT_VOLATILE = 1u << 2,
    /* The URL names no account: $EW_USER and $EW_PASSWORD do not apply. */
    EWI_FEAT_NO_CREDENTIALS = 1u << 3
};

/* The transport table. Unless said otherwise, ops are called by core from
 * application threads (never from a transport callback), serialized per
 * transport for create/start/stop/destroy, concurrent for the rest. */
typedef struct ewi_transport_ops {
    const char *name;          /* "local", "rabbitmq", "stomp", "amqp" */
    const char *const *schemes; /* NULL-terminated URL schemes it serves */
    unsigned features;

    /* Parses the URL's transport options; connects nothing. Logs why on
     * EW_EINVAL. */
    ew_err (*create)(ew_manager *m, const ewi_url *url, ewi_transport **out);
    /* Extra name rules of a dialect (NULL: core's rules only). Called at
     * ew_listen; listener may be NULL when only an event is checked. On
     * refusal, writes the reason to err. */
    ew_err (*check_names)(ewi_transport *t, const char *event,
                          const char *listener, char *err, size_t errlen);
    /* Connects, retrying with backoff until timeout_ms; then EW_ECONNECT or
     * EW_EAUTH with the reason logged and reported. */
    ew_err (*start)(ewi_transport *t, int timeout_ms);
    /* Declares what event E needs before sends (exchange, address).
     * Idempotent; the transport repeats it itself after a reconnect. */
    ew_err (*declare)(ewi_transport *t, const char *event, bool durable);
    /* Declares sub's queue, its dead-letter queue and its binding, then
     * consumes; returns once deliveries can arrive. Resumed by the transport
     * itself after a reconnect. */
    ew_err (*subscribe)(ewi_transport *t, ewi_sub *sub);
    /* Optional (NULL: core calls subscribe for each): subscribe for subs[0..n)
     * at once, so that their broker round trips overlap; rcs[i] is what
     * subscribe would have returned for subs[i]. Called by start. */
    void (*subscribe_many)(ewi_transport *t, ewi_sub *const *subs, size_t n, ew_err *rcs);
    /* Stops deliveries for sub; once it returns ewi_deliver is not called for
     * sub again, and sub is not subscribed again after a reconnect. Messages
     * already delivered are still settled later. Called at stop, and by
     * ew_unlisten while the connection runs and other subs consume. */
    void (*unsubscribe)(ewi_transport *t, ewi_sub *sub);
    /* Optional (NULL: EW_ENOTSUP): deletes sub's queue (sub->queue, never
     * its dead-letter queue) on the broker with what it holds, and forgets
     * it, so that nothing declares it again after a reconnect. check: only
     * says whether this transport (dialect) can, without touching the
     * broker; on EW_ENOTSUP err says why. Called by ew_unlisten after
     * unsubscribe(sub) returned and the listener's messages were settled;
     * a queue already gone is EW_OK. */
    ew_err (*delete_queue)(ewi_transport *t, ewi_sub *sub, bool check, char *err,
                           size_t errlen);
    /* Sends p; see ewi_pub. On an error return done never runs; a full
     * window follows ewi_window's rule. */
    ew_err (*publish)(ewi_transport *t, ewi_pub *p);
    /* Settles msg (from a worker thread) and releases it, now or later on
     * the transport's thread. Safe after stop (it only
     * frees: the broker requeues what the closed connection held). */
    void (*settle)(ewi_transport *t, ewi_msg *msg, ewi_settle how);
    /* Optional (NULL: settle for each): acknowledges (EWI_ACK) the messages
     * of a chain linked by qnext at once, all of one sub, as settle would
     * one by one. A worker acknowledges what it handled from a batch so. */
    void (*settle_acks)(ewi_transport *t, ewi_msg *first);
    /* Optional (EWI_FEAT_DLQ_READ): takes messages off a dead-letter queue. */
    ew_err (*dlq_take)(ewi_transport *t, ewi_dlq_req *req);
    /* Optional (EWI_FEAT_VOLATILE), for a graceful stop: from the first
     * call on, sub receives only messages that were on its queue at that
     * call (later ones wait for other consumers or the next start).
     * Returns how many of those are not yet handed to sub. */
    size_t (*backlog)(ewi_transport *t, ewi_sub *sub);
    /* Closes the connection; pending publishes complete with EW_ECLOSED.
     * Afterwards no callback into core runs. */
    void (*stop)(ewi_transport *t);
    /* Frees; called after stop once every message was settled. */
    void (*destroy)(ewi_transport *t);
} ewi_transport_ops;

/* The transport serving a URL scheme, or NULL. */
const ewi_transport_ops *ewi_transport_find(const char *scheme);

/* ---- logging and errors from anywhere ----------------------------------- */

bool ewi_log_on(const ew_manager *m, ew_log_level level);
void ewi_log(const ew_manager *m, ew_log_level level, const char *fmt, ...)
    EWI_PRINTF(3, 4);
void ewi_vlog(const ew_manager *m, ew_log_level level, const char *fmt,
              va_list ap) EWI_PRINTF(3, 0);
/* Logs at error level (warn for EW_EDISCONNECTED) and passes the error to the
 * application's error handler. queue, event and message_id may be NULL. On
 * an application's thread (inside a public call) the text also becomes that
 * call's ew_last_error, so an op that fails reports its reason here, on the
 * calling thread, before it returns: a failing start names the broker's or
 * the TLS library's refusal. */
void ewi_report(ew_manager *m, ew_err code, const char *queue,
                const char *event, const char *message_id, const char *fmt, ...)
    EWI_PRINTF(6, 7);

/* ---- the caller's last error (ew_last_error) --------------------------- */

/* Each public call that can fail clears the text on entry. The first error
 * logged (error level) or reported on the calling thread during the call is
 * kept, since it names the root cause; ewi_set_last_error and ewi_fail
 * overwrite it. Texts are per thread and never hold credentials. */
void ewi_last_error_clear(void);
const char *ewi_last_error_peek(void);
void ewi_note_error(const char *text); /* kept unless a text is there already */
void ewi_set_last_error(const char *fmt, ...) EWI_PRINTF(1, 2);
void ewi_vset_last_error(const char *fmt, va_list ap) EWI_PRINTF(1, 0);
/* Sets the text and returns rc: `return ewi_fail(EW_EINVAL, "...", ...);` */
ew_err ewi_fail(ew_err rc, const char *fmt, ...) EWI_PRINTF(2, 3);

/* ---- names -------------------------------------------------------------- */

/* Core's name rules (see EW_MAX_*_NAME); on refusal err says why. */
ew_err ewi_check_event_name(const char *name, char *err, size_t errlen);
ew_err ewi_check_listener_name(const char *name, char *err, size_t errlen);
ew_err ewi_check_server_name(const char *name, char *err, size_t errlen);

#endif
