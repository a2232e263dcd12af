/* eventwire: W3C trace context (traceparent, tracestate) carried from the
 * sending thread to the listener's thread, as a ready-made pipeline.
 *
 * Each thread has a current trace context. ew_add_trace_pipeline adds a
 * pipeline whose send hook writes the sending thread's context (or the one
 * the application's tracer gives, see ew_trace_hooks.inject) into the
 * headers "traceparent" and "tracestate" (W3C Trace Context, version 00),
 * and whose handle hook makes the received context the worker thread's
 * current one while the listener runs (then restores the one before). The
 * context travels whether or not it is sampled: the sampled flag is carried
 * as it is, and a tracer decides. A received traceparent that is not valid
 * is ignored (the listener runs without a context), as the W3C text says;
 * it never refuses a message. It works on every transport, since headers do.
 *
 * Typical use without a tracer library:
 *
 *   ew_add_trace_pipeline(m, NULL);
 *   ew_trace_context ctx;
 *   ew_trace_parse(&ctx, incoming_http_traceparent, incoming_http_tracestate);
 *   ew_trace_set_current(&ctx);      // this thread's sends carry it
 *   ew_send(m, &EV, &event);
 *   // in a listener: ew_trace_current(&ctx) gives the sender's context
 */
#ifndef EVENTWIRE_TRACE_H
#define EVENTWIRE_TRACE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include <eventwire/error.h>
#include <eventwire/export.h>

EW_BEGIN_DECLS

typedef struct ew_manager ew_manager;
struct ew_event_desc;
struct ew_listener_desc;

#define EW_TRACE_FLAG_SAMPLED 0x01
#define EW_TRACESTATE_MAX 512 /* W3C: 32 members of at most 256 bytes is the
                                 floor; longer tracestate is not carried */

/* One W3C trace context: a plain value, copied freely. */
typedef struct ew_trace_context {
    uint8_t trace_id[16]; /* not all zero */
    uint8_t span_id[8];   /* the parent's span id; not all zero */
    uint8_t flags;        /* EW_TRACE_FLAG_SAMPLED, other bits as received */
    char tracestate[EW_TRACESTATE_MAX]; /* "" when none */
} ew_trace_context;

/* Parses a traceparent header ("00-<32 hex>-<16 hex>-<2 hex>"; later
 * versions are read by their first four fields) and a tracestate (NULL
 * allowed; one longer than EW_TRACESTATE_MAX - 1 is dropped). EW_EINVAL when
 * traceparent is not valid (ctx is then cleared). Thread-safe. */
EW_API ew_err ew_trace_parse(ew_trace_context *ctx, const char *traceparent,
                             const char *tracestate);

/* Writes ctx as a traceparent header value into buf (56 bytes with the
 * NUL). EW_EINVAL when buf is too small or ctx has zero ids. Thread-safe. */
EW_API ew_err ew_trace_format(const ew_trace_context *ctx, char *buf, size_t len);

/* Sets (NULL: clears) the calling thread's current context; copied. */
EW_API void ew_trace_set_current(const ew_trace_context *ctx);

/* Copies the calling thread's current context to out; false (out
 * untouched) when there is none. In a listener: the sender's context,
 * while the trace pipeline is added. */
EW_API bool ew_trace_current(ew_trace_context *out);

/* Hooks for an application's tracer; every member may be NULL. Copied by
 * ew_add_trace_pipeline. They run on eventwire's threads (inject on the
 * sending thread, begin and end on the worker thread) and must be
 * thread-safe. */
typedef struct ew_trace_hooks {
    unsigned version; /* 0 */
    /* Sending thread, inside ew_send*: fill ctx with the context to send
     * (e.g. a new span of the tracer's active one) and return true; false
     * sends the thread's current context, if any. ctx starts as that one
     * (or zeroed). */
    bool (*inject)(void *user, ew_trace_context *ctx, const struct ew_event_desc *event);
    /* Worker thread, before each run of the listener: ctx is the received
     * context, or NULL when the message carries none (or an invalid one). */
    void (*begin)(void *user, const ew_trace_context *ctx,
                  const struct ew_listener_desc *listener);
    /* Worker thread, after the run, with the listener's result. */
    void (*end)(void *user, const ew_trace_context *ctx,
                const struct ew_listener_desc *listener, ew_err result);
    void *user;
} ew_trace_hooks;

/* Adds the trace pipeline (name "trace") to m; hooks may be NULL. Add it
 * once, before the sends and listeners that need it. Pipelines added
 * earlier see the headers it sets only on receive. Thread-safe. */
EW_API ew_err ew_add_trace_pipeline(ew_manager *m, const ew_trace_hooks *hooks);

EW_END_DECLS

#endif
