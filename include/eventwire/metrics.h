/* eventwire: metrics and readiness of a manager.
 *
 * Every manager counts, per listener queue "E::L[-S]" and for its transport,
 * what happened since ew_manager_new. They cost the hot paths a few relaxed
 * atomic additions (plain stores where only one thread writes), two clock
 * reads per listener run and one per send (for the histograms); no lock is
 * added. They are read with ew_metrics_visit, which copies them (one short
 * hold of the manager's registry lock, about 500 bytes per listener; no
 * worker stops) and then hands every value to a callback, or rendered as
 * Prometheus text with ew_metrics_prometheus. With 500 listeners a rendering
 * (about 1.5 MB of text) took 14 ms in an ASan build on a loaded 2-core
 * machine: fine every second.
 *
 * Names follow the OpenTelemetry semantic conventions for messaging where
 * one exists; the others are in the "eventwire." namespace. Units are UCUM
 * as OpenTelemetry writes them ("s", "{message}", "{connection}", "1").
 *
 * Per listener, with label messaging.destination.name = "E::L[-S]":
 *
 *   messaging.client.consumed.messages  counter {message}  delivered: handed
 *                                        to the listener's workers by the
 *                                        transport (redeliveries included)
 *   eventwire.listener.handled          counter {message}  the listener
 *                                        returned EW_OK; acknowledged
 *   eventwire.listener.failed           counter {run}      listener runs that
 *                                        returned an error (each attempt)
 *   eventwire.listener.retried          counter {run}      runs that were a
 *                                        retry after a failed run
 *   eventwire.listener.dead_lettered    counter {message}  messages put on the
 *                                        dead-letter queue (its publish
 *                                        confirmed), whatever the reason
 *   eventwire.listener.redelivered      counter {message}  deliveries the
 *                                        broker flagged as redelivered (or
 *                                        with a delivery count above 1)
 *   eventwire.listener.in_flight        gauge   {message}  delivered and not
 *                                        settled yet (waiting in the inbox,
 *                                        being handled, in a retry backoff)
 *   eventwire.listener.consuming        gauge   1          1 while the
 *                                        listener's subscription is live
 *   messaging.process.duration          histogram s        one run of the
 *                                        handle hooks, the listener and the
 *                                        after hooks (each attempt)
 *
 * Per manager (its transport), without labels unless said:
 *
 *   eventwire.manager.ready             gauge 1   ew_manager_ready()
 *   eventwire.client.connects           counter {connection}  connections
 *                                        established, the first ones too
 *                                        (0 on local://, which has none)
 *   eventwire.client.reconnects         counter {connection}  of them, those
 *                                        made after a connection was lost
 *   eventwire.client.disconnects        counter {connection}  connections lost
 *   messaging.client.sent.messages      counter {message}  outcomes of ew_send,
 *                                        ew_send_to and ew_send_async: without
 *                                        label, taken by the broker (EW_OK);
 *                                        with error.type = "EW_EINDOUBT",
 *                                        written but unconfirmed; with
 *                                        error.type = the code's name
 *                                        ("EW_ETIMEDOUT", ...), failed. The
 *                                        EW_OK and EW_EINDOUBT series are
 *                                        always there, the others once they
 *                                        happened
 *   eventwire.client.confirms.pending   gauge {message}  sends handed to the
 *                                        transport whose outcome is not known
 *                                        yet (queued, written, unconfirmed)
 *   messaging.client.operation.duration histogram s, label
 *                                        messaging.operation.name = "send":
 *                                        from the moment a send was handed to
 *                                        the transport (after encoding and
 *                                        the send pipelines) to its EW_OK
 *                                        outcome, i.e. the broker's confirm
 *                                        for durable events
 *
 * Histograms share fixed bucket bounds, in seconds: 10 µs, 25 µs, 50 µs,
 * 100 µs, 250 µs, 500 µs, 1 ms, 2.5 ms, 5 ms, 10 ms, 25 ms, 50 ms, 100 ms,
 * 250 ms, 500 ms, 1 s, 2.5 s, 5 s, 10 s, and a last bucket above 10 s.
 *
 * Prometheus names replace the dots by '_', add the unit ("_seconds") and,
 * for counters, "_total": messaging_process_duration_seconds,
 * messaging_client_consumed_messages_total, eventwire_listener_in_flight,
 * with labels messaging_destination_name, error_type,
 * messaging_operation_name.
 *
 * Values are monotonic counters and current gauges. Each value is read
 * atomically, but not all at one instant: a counter read a moment after
 * another may count an event the other does not yet. */
#ifndef EVENTWIRE_METRICS_H
#define EVENTWIRE_METRICS_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include <eventwire/error.h>
#include <eventwire/export.h>

EW_BEGIN_DECLS

typedef struct ew_manager ew_manager;

typedef enum ew_metric_kind {
    EW_METRIC_COUNTER = 1,  /* monotonic since ew_manager_new */
    EW_METRIC_GAUGE = 2,    /* the current value */
    EW_METRIC_HISTOGRAM = 3 /* counts per bucket, their count and sum */
} ew_metric_kind;

typedef struct ew_metric_label {
    const char *key;   /* OpenTelemetry attribute, e.g. "messaging.destination.name" */
    const char *value; /* e.g. "OrderPlaced::Billing" */
} ew_metric_label;

/* One value (a point) of one metric. Every pointer in it is valid until the
 * callback it was passed to returns. */
typedef struct ew_metric {
    const char *name;  /* OpenTelemetry-style name, e.g. "messaging.process.duration" */
    const char *unit;  /* UCUM, e.g. "s", "{message}" */
    const char *help;  /* one sentence */
    ew_metric_kind kind;
    const ew_metric_label *labels;
    size_t nlabels;
    uint64_t value;    /* counters and gauges */
    /* Histograms: nbounds ascending finite upper bounds, in unit; counts has
     * nbounds + 1 entries, counts[i] observations in (bounds[i-1],
     * bounds[i]] (not cumulative), the last one those above the last bound.
     * count is their sum, sum the sum of the observations, in unit. */
    size_t nbounds;
    const double *bounds;
    const uint64_t *counts;
    uint64_t count;
    double sum;
} ew_metric;

/* Receives each point. Runs on the thread calling ew_metrics_visit, with no
 * library lock held; may call any eventwire function but ew_manager_stop and
 * ew_manager_free of this manager. */
typedef void (*ew_metric_fn)(void *user, const ew_metric *metric);

/* Copies every counter of m, then calls fn once per point: the manager's
 * points first, then each per-listener metric for every listener in turn
 * (the points of one metric name always come one after another, listeners
 * in registration order). Names and units are fixed strings; a new version
 * of the library may add metrics but keeps these. EW_EINVAL for NULL
 * arguments, EW_ENOMEM when the copy cannot be made (fn then never runs).
 * Thread-safe; valid from ew_manager_new until ew_manager_free. */
EW_API ew_err ew_metrics_visit(ew_manager *m, ew_metric_fn fn, void *user);

/* Receives the Prometheus text, piece by piece (text is not NUL-terminated
 * and valid until it returns). Non-EW_OK stops the rendering, which then
 * returns that code. */
typedef ew_err (*ew_metrics_write_fn)(void *user, const char *text, size_t len);

/* Renders the metrics of m in the Prometheus text exposition format 0.0.4
 * (Content-Type "text/plain; version=0.0.4"): a "# HELP" and a "# TYPE" line
 * per metric, histograms as _bucket{le=...} (cumulative, up to "+Inf"),
 * _sum and _count. Calls write as it goes, on the calling thread, with no
 * library lock held. Thread-safe, as ew_metrics_visit. */
EW_API ew_err ew_metrics_prometheus(ew_manager *m, ew_metrics_write_fn write, void *user);

/* true when m consumes: it was started and not stopped, every connection of
 * its transport is up, and every listener is subscribed (after a reconnect:
 * subscribed again). A connected manager whose listeners are not consuming
 * yet is not ready. Meant for a readiness probe. Thread-safe; cheap (one
 * short hold of the registry lock, a look at each listener). */
EW_API bool ew_manager_ready(ew_manager *m);

EW_END_DECLS

#endif
