/* The manager's layout and the functions its modules share. Core only. */
#ifndef EVENTWIRE_MANAGER_PRIV_H
#define EVENTWIRE_MANAGER_PRIV_H

#include <pthread.h>
#include <stdatomic.h>

#include "envelope_priv.h"
#include "ewi.h"

enum ewi_state { EWI_NEW, EWI_STARTING, EWI_STARTED, EWI_STOPPING, EWI_STOPPED };

/* A registered event. Immutable after registration but for `declared`. */
typedef struct ewi_event {
    ew_event_desc desc;      /* copy; desc.name points at name */
    char name[EW_MAX_EVENT_NAME + 1];
    ew_format format;        /* resolved: never EW_FORMAT_DEFAULT */
    const char *content_type;
    atomic_bool declared;    /* declared on the transport since start */
    struct ewi_event *next;
} ewi_event;

typedef struct ewi_pipe {
    ew_pipeline p;
    char *name;
    void *user;
} ewi_pipe;

/* An immutable snapshot of the pipelines: replaced whole when one is added,
 * so senders and workers read it without a lock. Old snapshots are kept
 * until the manager is freed (pipelines are few). */
typedef struct ewi_pipes {
    size_t n;
    struct ewi_pipes *older;
    ewi_pipe items[];
} ewi_pipes;

/* ---- metrics (core/metrics.c) -------------------------------------------- */

/* Fixed bucket bounds of every histogram, in ns (see eventwire/metrics.h). */
#define EWI_HIST_BOUNDS 19
extern const int64_t ewi_hist_bounds_ns[EWI_HIST_BOUNDS];

typedef struct ewi_hist {
    _Atomic uint64_t n[EWI_HIST_BOUNDS + 1];
    _Atomic uint64_t sum_ns;
} ewi_hist;

/* Adds one observation. single: only one thread ever adds to h (a plain
 * load and store instead of an atomic addition). */
void ewi_hist_add(ewi_hist *h, int64_t ns, bool single);

/* Adds n to a counter: one writer (single), or several at once. Readers
 * load it relaxed at any time. */
static inline void ewi_ctr_add(_Atomic uint64_t *c, uint64_t n, bool single)
{
    if (single)
        atomic_store_explicit(c, atomic_load_explicit(c, memory_order_relaxed) + n,
                              memory_order_relaxed);
    else
        atomic_fetch_add_explicit(c, n, memory_order_relaxed);
}

/* A listener's counters, on cache lines of their own: the transport's
 * thread writes the first group, the workers the second. */
typedef struct ewi_lmetrics {
    _Alignas(64) _Atomic uint64_t delivered, redelivered; /* by ewi_deliver (atomic adds) */
    _Alignas(64) _Atomic uint64_t handled, failed, retried, dead_lettered;
    _Atomic uint64_t settled;       /* by the workers */
    _Atomic uint64_t settled_other; /* by stop's drain and free (atomic adds) */
    ewi_hist duration;
} ewi_lmetrics;

/* The manager's send and connection counters. */
#define EWI_NERR 32 /* above every ew_err value */
typedef struct ewi_mmetrics {
    _Alignas(64) _Atomic uint64_t sent[EWI_NERR]; /* by outcome; [EW_OK] taken */
    _Atomic int64_t pending;                      /* handed to the transport */
    ewi_hist confirm;                             /* EW_OK outcomes */
    _Alignas(64) _Atomic uint64_t connects, reconnects, disconnects;
    _Atomic uint32_t down;  /* connections lost and not up again (bit per conn) */
    _Atomic uint32_t ever;  /* connections that were up once */
} ewi_mmetrics;

typedef struct ewi_listener {
    ew_manager *m;
    ewi_event *event;
    ew_listener_desc desc;   /* copy; desc.name → name, desc.event → &event->desc */
    char name[EW_MAX_LISTENER_NAME + 1];
    char queue[EW_MAX_QUEUE_NAME];
    char dlq[EW_MAX_QUEUE_NAME];
    ew_listener_fn fn;
    void *user;
    ewi_sub sub;
    ew_retry_policy retry;   /* resolved defaults */

    /* The inbox: deliveries waiting for a worker. */
    pthread_mutex_t mu;
    pthread_cond_t cv;       /* workers wait for messages / stop */
    pthread_cond_t idle;     /* stop waits for busy == 0 */
    pthread_cond_t backoff_cv; /* retry backoffs wait here, woken by stop */
    ewi_msg *head, *tail;    /* under mu, in delivery order */
    size_t nhead;            /* messages at head..tail (under mu) */
    /* Deliveries pushed without the lock (a listener with its own workers),
     * newest first: a worker moves them to head..tail under mu. A
     * deliverer takes mu only when a worker sleeps or a napping worker has
     * a batch waiting (sleeping and napping are read lock-free after the
     * push; a worker that goes to sleep looks at posted after it counts
     * itself, so one of the two sees the other). */
    _Atomic(ewi_msg *) posted;
    /* Counts, each written by one side, so that a delivery and a worker do
     * not take turns on one cache line per message. With mx.delivered
     * (the deliverers' count) they give the inbox (ewi_inbox) and what was
     * handed to the listener and not started yet, the inbox and the rest
     * of workers' batches (ewi_queued). */
    _Atomic size_t taken;    /* moved to workers' batches or drained (mu) */
    size_t drained;          /* given back by stop's drain (mu) */
    _Alignas(64) _Atomic size_t nstarted; /* by workers, as they start one */
    /* Written under mu, read lock-free by deliverers (ewi_deliver_list). */
    _Atomic size_t busy;     /* workers holding a batch */
    _Atomic size_t sleeping; /* workers waiting on cv */
    _Atomic size_t polling;  /* of them, those that wake up now and then */
    atomic_bool napping;     /* a worker naps on nap_cv (at most one;
                                written under mu) */
    pthread_cond_t nap_cv;   /* ends a nap early: a batch waits */
    _Atomic int64_t handle_ns; /* moving average of a message's handling
                                  time (measured with concurrency > 1) */
    atomic_bool stopping;    /* written under mu; read by workers between
                                the messages of a batch */
    bool subscribed;
    /* Consumption state for ew_manager_ready: consuming is written under
     * mu, with sub_gen counting the transport's reports (ewi_sub_state), so
     * that core's own mark after subscribe never hides a loss reported
     * meanwhile. */
    atomic_bool consuming;
    uint64_t sub_gen;
    ewi_lmetrics mx;
    pthread_t *threads;
    uint32_t nthreads;
    /* The workers (concurrency > 1), for what they lent (worker.c); the
     * array under mu. */
    struct worker_ctx **wctx;
    uint32_t nwctx;
    bool started;            /* ewi_listener_start_workers ran */
    /* With the manager's worker pool: on the pool's run queue (pool_next),
     * and pool threads looking at it; both under the pool's lock. */
    bool pool_ready;
    uint32_t pool_visits;
    struct ewi_listener *pool_next;
    struct ewi_listener *next;
} ewi_listener;

/* Messages delivered to l and not yet taken by a worker (a hint, lock-free). */
static inline size_t ewi_inbox(const ewi_listener *l)
{
    size_t t = atomic_load(&l->taken);
    uint64_t d = atomic_load(&l->mx.delivered);
    return d > t ? (size_t)(d - t) : 0;
}

/* Messages delivered to l and not started yet (mu held: exact). */
static inline size_t ewi_queued(const ewi_listener *l)
{
    size_t s = atomic_load(&l->nstarted) + l->drained;
    uint64_t d = atomic_load(&l->mx.delivered);
    return d > s ? (size_t)(d - s) : 0;
}

/* The worker threads a manager's listeners share (ew_options.worker_pool):
 * a run queue of the listeners that have messages and a free slot under
 * their concurrency, served in turn. Lock order: a listener's mu, then the
 * pool's mu. */
#define EWI_POOL_MAX 1024

typedef struct ewi_pool {
    pthread_mutex_t mu;
    pthread_cond_t cv;       /* idle pool threads wait for a listener */
    pthread_cond_t left;     /* a pool thread stopped looking at a listener */
    ewi_listener *head, *tail;
    _Atomic size_t nready;   /* listeners on the run queue */
    struct ewi_parked *timers; /* messages waiting out a retry's backoff,
                                  earliest first */
    size_t sleeping;
    bool stopping;
    uint32_t size;           /* threads to run */
    uint32_t nthreads;       /* threads running */
    pthread_t *threads;
} ewi_pool;

#define EWI_EVENT_CACHE 64

struct ew_manager {
    char *url_redacted;
    ewi_url url;
    const ewi_transport_ops *ops;
    ewi_transport *t;
    ewi_config cfg;
    ewi_env_limits env_limits;
    char server[EW_MAX_SERVER_NAME + 1];
    ew_format format;
    uint32_t default_prefetch;
    ew_error_fn on_error;
    void *error_user;
    ew_log_fn log;
    void *log_user;
    ew_log_level level;

    pthread_mutex_t mu; /* registry and state; never held across callbacks */
    /* Serializes stop's unsubscribe-and-drain with the activation of a
     * listener added after start (taken before mu when both are held). */
    pthread_mutex_t life;
    _Atomic int state;
    ewi_event *events;
    ewi_listener *listeners;
    _Atomic(ewi_pipes *) pipes;

    /* Lock-free lookup from a descriptor pointer to its event on the send
     * path; the entry is re-checked against the descriptor's contents. */
    _Atomic(const ew_event_desc *) cache_key[EWI_EVENT_CACHE];
    ewi_event *_Atomic cache_val[EWI_EVENT_CACHE];

    /* Asynchronous sends in flight, for ew_flush and stop. */
    pthread_mutex_t fmu;
    pthread_cond_t fcv;
    size_t inflight;

    /* Message ids: a random UUID from libuuid per manager, its low 48 bits
     * counting up per message (each sending thread takes them in blocks). */
    uint8_t id_base[16];
    _Atomic uint64_t id_seq;

    ewi_mmetrics mx;

    /* Shared worker threads, or NULL: every listener has its own. */
    ewi_pool *pool;

    /* The trace pipeline's hooks (core/trace.c), once added. */
    ew_trace_hooks trace;
    bool trace_added;
};

/* worker.c */
ew_err ewi_listener_start_workers(ewi_listener *l);
/* Stops taking messages; waits up to deadline for busy handlers; requeues
 * what is still in the inbox. EW_ETIMEDOUT if handlers still run. */
ew_err ewi_listener_drain(ewi_listener *l, int64_t deadline_ms);
/* Joins the workers (waits for them) and frees the listener. */
void ewi_listener_free(ewi_listener *l);
/* The manager's worker pool of size threads (started with the first
 * listener's workers), and its end: joins the threads once every listener
 * was freed. */
ew_err ewi_pool_new(ew_manager *m, uint32_t size);
void ewi_pool_free(ew_manager *m);

/* send.c */
/* The registered event for a descriptor; registers (and, when started,
 * declares) it on first use. */
ew_err ewi_event_get(ew_manager *m, const ew_event_desc *desc, ewi_event **out);
ew_err ewi_event_declare(ew_manager *m, ewi_event *ev);
/* Publishes env to dest and waits for the outcome (or the deadline). */
ew_err ewi_publish_sync(ew_manager *m, ewi_pub *p);
void ewi_new_message_id(ew_manager *m, char out[37]);

/* metrics.c */
/* The outcome of one application send (ew_send, ew_send_to, ew_send_async). */
static inline void ewi_count_send(ew_manager *m, ew_err rc)
{
    atomic_fetch_add_explicit(&m->mx.sent[(unsigned)rc < EWI_NERR ? (unsigned)rc : EW_EIO], 1,
                              memory_order_relaxed);
}
/* Monotonic ns. */
int64_t ewi_now_ns(void);
/* Core's mark after subscribe(l) returned EW_OK: consuming, unless the
 * transport reported a change since gen0 (l->sub_gen read before). */
void ewi_listener_consuming(ewi_listener *l, uint64_t gen0);
uint64_t ewi_listener_sub_gen(ewi_listener *l);

/* log.c: ewi_report at a chosen level (retries are warnings). */
void ewi_vreport(ew_manager *m, ew_log_level level, ew_err code, const char *queue,
                 const char *event, const char *message_id, const char *fmt, va_list ap)
    EWI_PRINTF(7, 0);

/* manager.c */
ewi_pipes *ewi_pipes_get(ew_manager *m);
ew_err ewi_queue_names(const ew_manager *m, const char *event,
                       const char *listener, bool per_process, char *queue,
                       char *dlq, char *err, size_t errlen);

#endif
