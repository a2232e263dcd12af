/* eventwire: the manager, events, listeners, pipelines and sends.
 *
 * Lifecycle: ew_manager_new → (ew_listen, ew_add_pipeline)* →
 * ew_manager_start → ew_send* → ew_manager_stop → ew_manager_free.
 * Listeners and pipelines may also be added after start, and listeners
 * removed (ew_unlisten) at any time before the stop; listeners and
 * pipelines die with their manager. Descriptors passed in are copied (names
 * too), except the ew_type an event points to, which must outlive the manager
 * (it is normally a static object made by EW_TYPE).
 *
 * Every descriptor and options struct starts with `version`: leave it 0 (this
 * layout). Any other value is refused with EW_EINVAL, so a program built for
 * a later layout fails clearly instead of being misread. */
#ifndef EVENTWIRE_MANAGER_H
#define EVENTWIRE_MANAGER_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include <eventwire/codec.h>
#include <eventwire/envelope.h>
#include <eventwire/error.h>
#include <eventwire/export.h>
#include <eventwire/log.h>
#include <eventwire/schema.h>

EW_BEGIN_DECLS

typedef struct ew_manager ew_manager;
typedef struct ew_delivery ew_delivery;

/* Longest event name, listener name and server name, in bytes. Names are
 * ASCII letters, digits, '_' and '-'; event names may also hold single dots
 * between other characters ("order.created"). */
#define EW_MAX_EVENT_NAME 100
#define EW_MAX_LISTENER_NAME 100
#define EW_MAX_SERVER_NAME 48
/* Longest queue name "<event>::<listener>-<server>.dlq", plus the NUL. */
#define EW_MAX_QUEUE_NAME (EW_MAX_EVENT_NAME + 2 + EW_MAX_LISTENER_NAME + 1 + \
                           EW_MAX_SERVER_NAME + 4 + 1)

/* An event: its type, its name on the wire and its durability. */
typedef struct ew_event_desc {
    unsigned version;     /* 0 (see above) */
    const ew_type *type;  /* required */
    const char *name;     /* NULL: type->name */
    bool durable;         /* persistent queues and messages, confirmed sends */
    ew_format format;     /* EW_FORMAT_DEFAULT: the manager's format */
} ew_event_desc;

/* How a failing listener is retried before its message is dead-lettered.
 * Zero members take the defaults. */
typedef struct ew_retry_policy {
    uint32_t attempts;       /* handler runs in all, 1 = no retry; default 3 */
    uint32_t backoff_ms;     /* before the second run; default 100 */
    double multiplier;       /* growth per run; default 2.0 */
    uint32_t max_backoff_ms; /* cap; default 10000 */
} ew_retry_policy;

/* A listener callback. Runs on one of the listener's worker threads (with
 * concurrency > 1, on several at once), never while a library lock is held.
 * event is the decoded struct and d the delivery; both are valid until the
 * callback returns. Return EW_OK to acknowledge; EW_ENORETRY to dead-letter
 * at once; any other code to be retried by the policy, then dead-lettered
 * (the dead letter's ew-dlq-error header names the code). */
typedef ew_err (*ew_listener_fn)(ew_delivery *d, const void *event, void *user);

typedef struct ew_listener_desc {
    unsigned version;            /* 0 (see above) */
    const ew_event_desc *event;  /* required */
    const char *name;            /* required, unique per event */
    bool per_process;            /* every server gets its own copy */
    uint32_t concurrency;        /* worker threads (with ew_options.worker_pool: how
                                    many of the pool's threads at most run it at
                                    once); 0: 1 */
    uint32_t prefetch;           /* unacknowledged messages held; 0: transport default */
    ew_retry_policy retry;
} ew_listener_desc;

/* An envelope pipeline (interceptor). Hooks may be NULL. Hooks run in
 * registration order. They must be thread-safe: send runs on every sending
 * thread, handle and after on every worker thread. */
typedef struct ew_pipeline {
    unsigned version;  /* 0 (see above) */
    const char *name;  /* for logs and dead-letter reasons */
    /* On the sending thread inside ew_send*, before the envelope goes to the
     * transport; may set headers. Non-EW_OK refuses: the send fails with it. */
    ew_err (*send)(void *user, ew_envelope *env, const ew_event_desc *event);
    /* On the worker thread right before the listener runs (before every
     * attempt). Non-EW_OK refuses: the message is dead-lettered at once. */
    ew_err (*handle)(void *user, const ew_envelope *env,
                     const ew_listener_desc *listener);
    /* On the worker thread right after the listener returned result (or after
     * a later pipeline's handle refused): a place to clear what handle set. */
    void (*after)(void *user, const ew_envelope *env,
                  const ew_listener_desc *listener, ew_err result);
} ew_pipeline;

/* What the error handler receives. Strings are valid until it returns. */
typedef struct ew_error_info {
    ew_err code;
    const char *queue;      /* "E::L[-S]" when a listener is concerned, else NULL */
    const char *event;      /* event name, or NULL */
    const char *message_id; /* or NULL */
    const char *text;       /* what happened, with the broker's own text */
} ew_error_info;

/* The error handler: every error the application cannot see otherwise
 * (listener failures, dead letters, decode failures, transport errors and
 * reconnects). Runs on worker or transport threads, possibly concurrently;
 * must not block and must not call ew_manager_stop or ew_manager_free. */
typedef void (*ew_error_fn)(void *user, const ew_error_info *info);

/* How the threads a manager starts (transport I/O threads, listener
 * workers, the worker pool) are scheduled. */
typedef enum ew_threads {
    EW_THREADS_DEFAULT = 0, /* $EW_THREADS ("batch" or "inherit"), else batch */
    /* SCHED_BATCH (Linux; nice unchanged): a thread that wakes does not
     * preempt the one running, so a delivery or a confirmation no longer
     * forces a thread switch per message. Fewer switches and less CPU per
     * event where switches are dear (small virtual machines); a wake-up can
     * wait for the running thread's time slice when every core is busy. */
    EW_THREADS_BATCH,
    EW_THREADS_INHERIT /* the policy of the thread that starts them */
} ew_threads;

/* Manager options; zero members take the defaults. Copied by ew_manager_new. */
typedef struct ew_options {
    unsigned version;        /* 0 (see above) */
    const char *server_name; /* NULL: hostname-pid (dots become '_') */
    ew_format format;        /* body format of events that do not say; msgpack */
    int send_timeout_ms;     /* bound on a send's wait (room, reconnect, confirm); 10000 */
    int start_timeout_ms;    /* bound on start's connect attempts; 30000 */
    size_t max_body;         /* bytes, on send and receive; 1 MiB */
    size_t max_headers;      /* headers per envelope; 64 */
    size_t max_header_len;   /* bytes in one header key or value; 4096 */
    ew_error_fn on_error;    /* NULL: errors are only logged */
    void *error_user;
    ew_log_fn log;           /* NULL: stderr */
    void *log_user;
    ew_log_level log_level;  /* EW_LOG_DEFAULT: $EW_LOG, else warn */
    /* Worker threads shared by every listener of the manager; 0 (default):
     * each listener has threads of its own, as many as its concurrency.
     * With a pool, a listener's concurrency caps how many of the pool's
     * threads run its handler at once (concurrency 1 keeps its order), and
     * listeners with messages waiting take turns. At most 1024. */
    uint32_t worker_pool;
    ew_threads threads;      /* EW_THREADS_DEFAULT: batch unless $EW_THREADS */
} ew_options;

/* Creates a manager for url (NULL: "local://"): "local://[name]",
 * "rabbitmq://user:pass@host:5672/vhost", "stomp://host:61613?dialect=...",
 * "amqp://host:5672?dialect=...". A broker URL without a user or password
 * takes them from $EW_USER and $EW_PASSWORD when set. Credentials never
 * appear in logs or error texts. Nothing connects before ew_manager_start.
 * opts may be NULL. EW_ENOTFOUND for a scheme this build does not have,
 * EW_EINVAL for a malformed URL or option. Thread-safe. */
EW_API ew_err ew_manager_new(ew_manager **out, const char *url,
                             const ew_options *opts);

/* Connects (retrying until start_timeout_ms), declares every registered
 * event, subscribes every registered listener and starts their workers;
 * returns once every listener consumes. On failure ew_last_error() says why
 * (the broker's or the TLS library's reason). Not thread-safe with
 * ew_manager_stop and ew_manager_free on the same manager; call it once. */
EW_API ew_err ew_manager_start(ew_manager *m);

/* Drains: no new deliveries, in-flight handlers finish (bounded by
 * timeout_ms), messages not yet handled go back to the broker, waiting sends
 * complete or fail, then the connection closes. EW_ETIMEDOUT when handlers
 * were still running at the bound (free then waits for them). Idempotent.
 * Must not be called from a listener or a callback. Thread-safe with sends
 * and ew_listen (they fail with EW_ECLOSED once it began); not with
 * ew_manager_start or ew_manager_free. */
EW_API ew_err ew_manager_stop(ew_manager *m, int timeout_ms);

/* Stops (if needed, with the send timeout) and frees the manager with its
 * listeners and pipelines. NULL is allowed. Call it once, from a thread that
 * is not one of its callbacks. Not thread-safe: no other call on the
 * manager may run or follow. */
EW_API void ew_manager_free(ew_manager *m);

/* Registers a listener. Before start it is subscribed by start; after start
 * it is declared and subscribed now, on the live connection, and the call
 * returns EW_OK once it consumes; like the others it is subscribed again
 * after a reconnect (and readiness waits for it). If this fails the callback
 * never runs and nothing stays registered. EW_EINVAL for a bad name (the log says why),
 * EW_ECONFLICT when the event already has a listener of that name.
 * Thread-safe. */
EW_API ew_err ew_listen(ew_manager *m, const ew_listener_desc *listener,
                        ew_listener_fn fn, void *user);

/* Flags of ew_unlisten. */
enum {
    /* Also deletes the listener's queue on the broker, with every message
     * still on it (including those the listener had not acknowledged: they
     * are gone, by definition of a per_process queue that dies with its
     * consumer). The dead-letter queue E::L.dlq, which a per_process
     * listener's servers share, stays. Only for per_process listeners: a
     * shared queue E::L belongs to every server of L and is refused with
     * EW_EINVAL. Supported on local://, rabbitmq://, and amqp:// and
     * stomp:// with the rabbitmq dialect (queue.delete over the AMQP 0-9-1
     * administration connection, so not with amqp_port=0) and the artemis
     * dialect (destroyQueue through the broker's management address, which
     * needs the "manage" permission, as per_process listeners do there).
     * stomp:// with the activemq dialect refuses it with EW_ENOTSUP:
     * ActiveMQ 5 offers no way to remove a queue over STOMP (its queue
     * stays until the broker's own policy removes it).
     * A refusal happens before anything else: the listener keeps
     * consuming. */
    EW_UNLISTEN_DELETE_QUEUE = 1u << 0
};

/* Removes a listener registered with ew_listen, found by l's event name,
 * listener name and per_process (the other members are not read). On a
 * started manager: the listener stops consuming (its consumer, subscription
 * or link is cancelled), messages handed to it but not started go back to
 * the broker, its running handlers finish (waited for without a bound; their
 * acknowledgements go out), its workers end, and with
 * EW_UNLISTEN_DELETE_QUEUE its queue is deleted; then it returns. It is not
 * subscribed again after a reconnect, and readiness no longer waits for it.
 * Messages that reach its queue later wait there for another consumer of
 * it (the queue of a per_process listener expires as it would after a
 * stop). Before start the listener is simply forgotten (the delete flag is
 * refused with EW_ESTATE: nothing is connected). The same name may be
 * registered again afterwards. On stomp:// with the rabbitmq dialect a
 * listener removed without EW_UNLISTEN_DELETE_QUEUE keeps its subscription
 * on the consuming connection until that connection ends (reconnect or
 * stop), since RabbitMQ's UNSUBSCRIBE does not give back what it already
 * sent: up to prefetch messages reaching its queue meanwhile are held
 * there and only then go back to the queue. On rabbitmq:// a removed
 * listener's consumer is cancelled but its channel stays open until the
 * connection ends (a reconnect or the stop): a connection has at most the
 * broker's channel_max of them (2047 by default), so a manager that adds and
 * removes listeners for ever must reconnect now and then; adding listeners
 * fails with EW_EBROKER ("no free channel") past that. EW_ENOTFOUND when no such listener is
 * registered; EW_ECLOSED once a stop began; the delete's failure (e.g.
 * EW_ECONNECT, EW_EBROKER) when the listener was removed but its queue
 * could not be deleted (ew_last_error says why). Must not be called from a
 * listener or a callback. Thread-safe. */
EW_API ew_err ew_unlisten(ew_manager *m, const ew_listener_desc *l, unsigned flags);

/* Adds a pipeline (copied) with its user pointer. Thread-safe; a pipeline
 * added while sends run applies to the sends that start after it. */
EW_API ew_err ew_add_pipeline(ew_manager *m, const ew_pipeline *p, void *user);

/* Sends event to every listener of ev. Returns when the transport has taken
 * it: for durable events once the broker confirmed it. Waits at most the
 * send timeout (full queue, reconnect, confirm). The outcome is truthful:
 *   EW_OK        taken (durable: confirmed by the broker).
 *   EW_ETIMEDOUT never written to the broker within the send timeout (a
 *                full window, an outage), and dropped: nothing sends it
 *                later, also not after a reconnect. It was not delivered.
 *   EW_ECLOSED   the manager stopped before the message was written; the
 *                same guarantee.
 *   EW_EINDOUBT  written to the broker, but its confirm did not come before
 *                the send timeout or before the manager stopped: it may have
 *                been delivered (once, or more than once), and it will not be
 *                sent again.
 *   other codes  refused before or by the broker (EW_EBROKER, EW_ENOTFOUND,
 *                EW_ETOOBIG, ...): not delivered.
 * When the connection drops after a durable message was written and before
 * its confirm, the transport sends it again on the next connection while its
 * send timeout runs (at-least-once, same ew-message-id, so a listener may see
 * it twice): EW_OK if that copy is confirmed in time, EW_EINDOUBT if the send
 * timeout passes first. On rabbitmq:// a transient (non-durable) event is
 * taken once written to the connection (no confirm): it is lost if the
 * connection dies before the broker routed it.
 * Thread-safe. */
EW_API ew_err ew_send(ew_manager *m, const ew_event_desc *ev, const void *event);

/* Like ew_send, but only listener `listener`'s queue E::L receives it.
 * Thread-safe. */
EW_API ew_err ew_send_to(ew_manager *m, const ew_event_desc *ev,
                         const char *listener, const void *event);

/* Completion of an asynchronous send: err is EW_OK once the transport took
 * the message (durable: confirmed), else the outcome as ew_send describes it
 * (EW_ETIMEDOUT and EW_ECLOSED: never written and never will be;
 * EW_EINDOUBT: written, unconfirmed, may have been delivered). Runs exactly
 * once, on the transport's thread or, when the send failed early, on the
 * calling thread; it must not block and must not call ew_send or ew_flush. */
typedef void (*ew_send_fn)(void *user, ew_err err);

/* Encodes, runs the send pipelines and hands the message to the transport,
 * then returns; done (may be NULL) reports the outcome. Many sends are in
 * flight at once (max_inflight, 4096 by default), so confirms are pipelined.
 * Waits only while the transport's in-flight window is full: if it is still
 * full at the send timeout, ew_send_async itself returns EW_ETIMEDOUT (the
 * message was never written), the same on every transport. listener NULL
 * sends to every listener. If it returns an error, done has not run and
 * never runs. Thread-safe. */
EW_API ew_err ew_send_async(ew_manager *m, const ew_event_desc *ev,
                            const char *listener, const void *event,
                            ew_send_fn done, void *user);

/* Waits until every ew_send_async issued before the call has completed.
 * EW_ETIMEDOUT after timeout_ms. Thread-safe. */
EW_API ew_err ew_flush(ew_manager *m, int timeout_ms);

/* Reads a dead letter: the callback sees the envelope (original body and
 * headers plus the ew-dlq-* reason headers) valid until it returns. Return
 * EW_OK to take the message off the dead-letter queue. Any other code keeps
 * it: it stays on the dead-letter queue, given back unacknowledged as it was
 * (so are the rest of the batch the transport already fetched; nothing is
 * published again), and ew_dead_letters returns that code. Runs on the
 * thread calling ew_dead_letters. */
typedef ew_err (*ew_dead_letter_fn)(void *user, const ew_envelope *env);

/* What ew_dead_letters reads; zero members take the defaults. */
typedef struct ew_dead_letter_options {
    unsigned version;           /* 0 (see above) */
    const ew_event_desc *event; /* required */
    const char *listener;       /* required: reads its queue "<E>::<L>.dlq" */
    size_t max;                 /* messages at most; 0: 1 */
    int timeout_ms;             /* wait for the first one; 0: do not wait */
    ew_dead_letter_fn fn;       /* required */
    void *user;                 /* passed to fn */
} ew_dead_letter_options;

/* Takes up to o->max messages off the dead-letter queue of listener
 * o->listener of o->event (per_process listeners share one), waiting up to
 * o->timeout_ms for the first; each is passed to o->fn and, when it returns
 * EW_OK, removed. *taken (may be NULL) counts the removed ones. The manager
 * must be started. Thread-safe. */
EW_API ew_err ew_dead_letters(ew_manager *m, const ew_dead_letter_options *o,
                              size_t *taken);

/* Looks at dead letters without taking them: o->fn sees up to o->max
 * messages from the head of the dead-letter queue, in order (waiting up to
 * o->timeout_ms for the first), and every one stays on the queue. fn
 * returns EW_OK to go on; any other code ends the call with that code.
 * *seen (may be NULL) counts the messages fn saw. The messages are held by
 * this call while it runs, so other readers do not see them meanwhile; on
 * stomp:// with the rabbitmq dialect they stay held by this manager's
 * dead-letter reader until the manager stops or the next call takes them.
 * Since they are held unacknowledged, a call sees at most what the broker's
 * flow control lets one consumer hold: 100 messages on stomp:// with
 * RabbitMQ and ActiveMQ, and on Artemis its consumer window in bytes (for
 * STOMP 10 KiB by default), so fn may see fewer than are there. The
 * manager must be started. Thread-safe. */
EW_API ew_err ew_dead_letters_peek(ew_manager *m, const ew_dead_letter_options *o,
                                   size_t *seen);

/* This process's server name (suffix of per_process queues). Valid for the
 * manager's life. Thread-safe. */
EW_API const char *ew_manager_server_name(const ew_manager *m);

/* Writes the queue name of a listener, "E::L" or "E::L-<server>", into buf.
 * EW_EINVAL for bad names or a short buffer. Thread-safe. */
EW_API ew_err ew_queue_name(const ew_manager *m, const ew_listener_desc *l,
                            char *buf, size_t len);

/* ---- inside a listener ------------------------------------------------ */

/* A delivery lives only while the listener callback (and the pipelines'
 * handle and after hooks) it was passed to runs. The ew_delivery_* functions
 * only read it: call them from that callback, on its worker thread, before it
 * returns; they may run at the same time on other deliveries in other
 * workers. A delivery must not be kept or handed to another thread. */

/* The delivered envelope; valid until the listener returns. Thread-safe as
 * above (the envelope is read-only). */
EW_API const ew_envelope *ew_delivery_envelope(const ew_delivery *d);
/* Shorthand for ew_envelope_header(ew_delivery_envelope(d), key); valid
 * until the listener returns. Thread-safe as above. */
EW_API const char *ew_delivery_header(const ew_delivery *d, const char *key);
/* The queue, "E::L" or "E::L-<server>"; valid until the listener returns.
 * Thread-safe as above. */
EW_API const char *ew_delivery_queue(const ew_delivery *d);
/* 1 on the first run; counts retries and broker redeliveries. Thread-safe
 * as above. */
EW_API uint32_t ew_delivery_attempt(const ew_delivery *d);

EW_END_DECLS

#endif
