/* Metrics and readiness: the histograms the workers and senders add to, the
 * transports' reports of connections and subscriptions, the copy that
 * ew_metrics_visit hands out point by point, and its Prometheus rendering.
 * The names and their meaning are listed in eventwire/metrics.h. */
#include "manager_priv.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

const int64_t ewi_hist_bounds_ns[EWI_HIST_BOUNDS] = {
    10000,      25000,      50000,      100000,     250000,    500000,     1000000,
    2500000,    5000000,    10000000,   25000000,   50000000,  100000000,  250000000,
    500000000,  1000000000, 2500000000, 5000000000, 10000000000};

static const double BOUNDS_S[EWI_HIST_BOUNDS] = {
    0.00001, 0.000025, 0.00005, 0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01,
    0.025,   0.05,     0.1,     0.25,   0.5,     1,      2.5,   5,      10};

int64_t ewi_now_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000000000 + ts.tv_nsec;
}

void ewi_hist_add(ewi_hist *h, int64_t ns, bool single)
{
    if (ns < 0)
        ns = 0;
    size_t i = 0;
    while (i < EWI_HIST_BOUNDS && ns > ewi_hist_bounds_ns[i])
        i++;
    ewi_ctr_add(&h->n[i], 1, single);
    ewi_ctr_add(&h->sum_ns, (uint64_t)ns, single);
}

/* ---- what the transports report ------------------------------------------ */

void ewi_conn_state(ew_manager *m, unsigned conn, bool up)
{
    uint32_t bit = 1u << (conn & 7);
    ewi_mmetrics *x = &m->mx;
    if (up) {
        atomic_fetch_and(&x->down, ~bit);
        atomic_fetch_add_explicit(&x->connects, 1, memory_order_relaxed);
        if (atomic_fetch_or(&x->ever, bit) & bit)
            atomic_fetch_add_explicit(&x->reconnects, 1, memory_order_relaxed);
        return;
    }
    if (!(atomic_fetch_or(&x->down, bit) & bit))
        atomic_fetch_add_explicit(&x->disconnects, 1, memory_order_relaxed);
}

void ewi_sub_state(ewi_sub *sub, bool consuming)
{
    ewi_listener *l = sub->core;
    pthread_mutex_lock(&l->mu);
    l->sub_gen++;
    atomic_store(&l->consuming, consuming);
    pthread_mutex_unlock(&l->mu);
}

uint64_t ewi_listener_sub_gen(ewi_listener *l)
{
    pthread_mutex_lock(&l->mu);
    uint64_t gen = l->sub_gen;
    pthread_mutex_unlock(&l->mu);
    return gen;
}

void ewi_listener_consuming(ewi_listener *l, uint64_t gen0)
{
    pthread_mutex_lock(&l->mu);
    if (l->sub_gen == gen0)
        atomic_store(&l->consuming, true);
    pthread_mutex_unlock(&l->mu);
}

bool ew_manager_ready(ew_manager *m)
{
    if (!m || atomic_load(&m->state) != EWI_STARTED || atomic_load(&m->mx.down) != 0)
        return false;
    bool ready = true;
    pthread_mutex_lock(&m->mu);
    for (ewi_listener *l = m->listeners; l && ready; l = l->next)
        ready = atomic_load(&l->consuming);
    pthread_mutex_unlock(&m->mu);
    /* A stop that began meanwhile. */
    return ready && atomic_load(&m->state) == EWI_STARTED;
}

/* ---- the copy ------------------------------------------------------------ */

enum { L_DELIVERED, L_HANDLED, L_FAILED, L_RETRIED, L_DEAD, L_REDELIVERED, L_INFLIGHT,
       L_CONSUMING, L_N };

typedef struct hsnap {
    uint64_t n[EWI_HIST_BOUNDS + 1];
    uint64_t count;
    double sum_s;
} hsnap;

typedef struct lsnap {
    char queue[EW_MAX_QUEUE_NAME];
    uint64_t v[L_N];
    hsnap duration;
} lsnap;

static void hist_copy(ewi_hist *h, hsnap *out)
{
    out->count = 0;
    for (size_t i = 0; i <= EWI_HIST_BOUNDS; i++) {
        out->n[i] = atomic_load_explicit(&h->n[i], memory_order_relaxed);
        out->count += out->n[i];
    }
    out->sum_s = (double)atomic_load_explicit(&h->sum_ns, memory_order_relaxed) / 1e9;
}

static void listener_copy(ewi_listener *l, lsnap *o)
{
    ewi_lmetrics *x = &l->mx;
    memcpy(o->queue, l->queue, sizeof o->queue);
    /* Settles first: each follows its delivery, so in flight never goes
     * below 0 however the reads interleave with the workers. */
    uint64_t settled = atomic_load_explicit(&x->settled, memory_order_acquire) +
                       atomic_load_explicit(&x->settled_other, memory_order_acquire);
    o->v[L_DELIVERED] = atomic_load_explicit(&x->delivered, memory_order_acquire);
    o->v[L_INFLIGHT] = o->v[L_DELIVERED] > settled ? o->v[L_DELIVERED] - settled : 0;
    o->v[L_HANDLED] = atomic_load_explicit(&x->handled, memory_order_relaxed);
    o->v[L_FAILED] = atomic_load_explicit(&x->failed, memory_order_relaxed);
    o->v[L_RETRIED] = atomic_load_explicit(&x->retried, memory_order_relaxed);
    o->v[L_DEAD] = atomic_load_explicit(&x->dead_lettered, memory_order_relaxed);
    o->v[L_REDELIVERED] = atomic_load_explicit(&x->redelivered, memory_order_relaxed);
    o->v[L_CONSUMING] = atomic_load(&l->consuming);
    hist_copy(&x->duration, &o->duration);
}

/* ---- the visitor ---------------------------------------------------------- */

typedef struct lmeta {
    const char *name, *unit, *help;
    ew_metric_kind kind;
} lmeta;

static const lmeta LISTENER_METRICS[L_N] = {
    [L_DELIVERED] = {"messaging.client.consumed.messages", "{message}",
                     "Messages the transport handed to the listener, redeliveries included.",
                     EW_METRIC_COUNTER},
    [L_HANDLED] = {"eventwire.listener.handled", "{message}",
                   "Messages the listener handled (returned EW_OK) and acknowledged.",
                   EW_METRIC_COUNTER},
    [L_FAILED] = {"eventwire.listener.failed", "{run}",
                  "Listener runs that returned an error, each attempt counted.",
                  EW_METRIC_COUNTER},
    [L_RETRIED] = {"eventwire.listener.retried", "{run}",
                   "Listener runs that retried a failed run.", EW_METRIC_COUNTER},
    [L_DEAD] = {"eventwire.listener.dead_lettered", "{message}",
                "Messages put on the listener's dead-letter queue.", EW_METRIC_COUNTER},
    [L_REDELIVERED] = {"eventwire.listener.redelivered", "{message}",
                       "Deliveries the broker flagged as redelivered.", EW_METRIC_COUNTER},
    [L_INFLIGHT] = {"eventwire.listener.in_flight", "{message}",
                    "Messages delivered to the listener and not settled yet.",
                    EW_METRIC_GAUGE},
    [L_CONSUMING] = {"eventwire.listener.consuming", "1",
                     "1 while the listener's subscription is live.", EW_METRIC_GAUGE},
};

static const char DEST_KEY[] = "messaging.destination.name";

static void emit_value(ew_metric_fn fn, void *user, const char *name, const char *unit,
                       const char *help, ew_metric_kind kind, const ew_metric_label *labels,
                       size_t nlabels, uint64_t value)
{
    ew_metric x = {.name = name, .unit = unit, .help = help, .kind = kind,
                   .labels = labels, .nlabels = nlabels, .value = value};
    fn(user, &x);
}

static void emit_hist(ew_metric_fn fn, void *user, const char *name, const char *help,
                      const ew_metric_label *labels, size_t nlabels, const hsnap *h)
{
    ew_metric x = {.name = name, .unit = "s", .help = help, .kind = EW_METRIC_HISTOGRAM,
                   .labels = labels, .nlabels = nlabels, .nbounds = EWI_HIST_BOUNDS,
                   .bounds = BOUNDS_S, .counts = h->n, .count = h->count, .sum = h->sum_s};
    fn(user, &x);
}

ew_err ew_metrics_visit(ew_manager *m, ew_metric_fn fn, void *user)
{
    ewi_last_error_clear();
    if (!m || !fn)
        return ewi_fail(EW_EINVAL, "ew_metrics_visit: NULL manager or callback");
    /* The manager's own counters. */
    ewi_mmetrics *x = &m->mx;
    bool ready = ew_manager_ready(m);
    uint64_t connects = atomic_load_explicit(&x->connects, memory_order_relaxed);
    uint64_t reconnects = atomic_load_explicit(&x->reconnects, memory_order_relaxed);
    uint64_t disconnects = atomic_load_explicit(&x->disconnects, memory_order_relaxed);
    uint64_t sent[EWI_NERR];
    for (size_t i = 0; i < EWI_NERR; i++)
        sent[i] = atomic_load_explicit(&x->sent[i], memory_order_relaxed);
    int64_t pending = atomic_load_explicit(&x->pending, memory_order_relaxed);
    hsnap confirm;
    hist_copy(&x->confirm, &confirm);

    /* The listeners', copied under the registry lock, in registration order
     * (the list is newest first). */
    pthread_mutex_lock(&m->mu);
    size_t n = 0;
    for (ewi_listener *l = m->listeners; l; l = l->next)
        n++;
    lsnap *ls = n ? malloc(n * sizeof *ls) : NULL;
    if (n && !ls) {
        pthread_mutex_unlock(&m->mu);
        return ewi_fail(EW_ENOMEM, "ew_metrics_visit: out of memory for %zu listeners", n);
    }
    size_t k = n;
    for (ewi_listener *l = m->listeners; l; l = l->next)
        listener_copy(l, &ls[--k]);
    pthread_mutex_unlock(&m->mu);

    emit_value(fn, user, "eventwire.manager.ready", "1",
               "1 when the manager is started, connected and every listener consumes.",
               EW_METRIC_GAUGE, NULL, 0, ready);
    emit_value(fn, user, "eventwire.client.connects", "{connection}",
               "Connections established to the broker, the first ones included.",
               EW_METRIC_COUNTER, NULL, 0, connects);
    emit_value(fn, user, "eventwire.client.reconnects", "{connection}",
               "Connections established again after a connection was lost.",
               EW_METRIC_COUNTER, NULL, 0, reconnects);
    emit_value(fn, user, "eventwire.client.disconnects", "{connection}",
               "Connections to the broker that were lost.", EW_METRIC_COUNTER, NULL, 0,
               disconnects);
    static const char SENT[] = "messaging.client.sent.messages";
    static const char SENT_HELP[] =
        "Outcomes of sends: without error.type taken by the broker, else the error code.";
    emit_value(fn, user, SENT, "{message}", SENT_HELP, EW_METRIC_COUNTER, NULL, 0,
               sent[EW_OK]);
    for (size_t i = 1; i < EWI_NERR; i++) {
        if (i != EW_EINDOUBT && sent[i] == 0)
            continue;
        const char *name = ew_errname((ew_err)i);
        ew_metric_label lb = {"error.type", name ? name : "_OTHER"};
        emit_value(fn, user, SENT, "{message}", SENT_HELP, EW_METRIC_COUNTER, &lb, 1,
                   sent[i]);
    }
    emit_value(fn, user, "eventwire.client.confirms.pending", "{message}",
               "Sends handed to the transport whose outcome is not known yet.",
               EW_METRIC_GAUGE, NULL, 0, pending > 0 ? (uint64_t)pending : 0);
    ew_metric_label op = {"messaging.operation.name", "send"};
    emit_hist(fn, user, "messaging.client.operation.duration",
              "Time from a send handed to the transport to the broker's confirm.", &op, 1,
              &confirm);

    for (size_t j = 0; j < L_N; j++)
        for (size_t i = 0; i < n; i++) {
            ew_metric_label lb = {DEST_KEY, ls[i].queue};
            const lmeta *d = &LISTENER_METRICS[j];
            emit_value(fn, user, d->name, d->unit, d->help, d->kind, &lb, 1, ls[i].v[j]);
        }
    for (size_t i = 0; i < n; i++) {
        ew_metric_label lb = {DEST_KEY, ls[i].queue};
        emit_hist(fn, user, "messaging.process.duration",
                  "Duration of one run of the handle hooks, the listener and the after hooks.",
                  &lb, 1, &ls[i].duration);
    }
    free(ls);
    return EW_OK;
}

/* ---- Prometheus text ------------------------------------------------------ */

typedef struct prom {
    ew_metrics_write_fn write;
    void *user;
    ew_err rc;
    char last[128];   /* the metric whose HELP and TYPE are out */
    char fam[192];    /* its Prometheus family name */
    size_t famlen;
    char lbl[1024];   /* the current point's labels, escaped, without braces */
    size_t lbllen;
    size_t len;
    char buf[16384];
} prom;

/* The bucket bounds as "le" values, in plain decimal. */
static const char *const LE[EWI_HIST_BOUNDS + 1] = {
    "0.00001", "0.000025", "0.00005", "0.0001", "0.00025", "0.0005", "0.001",
    "0.0025",  "0.005",    "0.01",    "0.025",  "0.05",    "0.1",    "0.25",
    "0.5",     "1",        "2.5",     "5",      "10",      "+Inf"};

static void prom_flush(prom *p)
{
    if (p->rc == EW_OK && p->len)
        p->rc = p->write(p->user, p->buf, p->len);
    p->len = 0;
}

static void prom_put(prom *p, const char *s, size_t n)
{
    if (p->len + n > sizeof p->buf)
        prom_flush(p);
    if (n > sizeof p->buf) { /* longer than the buffer: on its own */
        if (p->rc == EW_OK)
            p->rc = p->write(p->user, s, n);
        return;
    }
    memcpy(p->buf + p->len, s, n);
    p->len += n;
}

static void prom_str(prom *p, const char *s)
{
    prom_put(p, s, strlen(s));
}

/* Appends to out (cap bytes, NUL kept) at *len. */
static void cat(char *out, size_t cap, size_t *len, const char *s, size_t n)
{
    if (*len + 1 >= cap)
        return; /* full: the NUL is there */
    size_t room = cap - 1 - *len;
    if (n > room)
        n = room;
    memcpy(out + *len, s, n);
    *len += n;
    out[*len] = '\0';
}

/* An OpenTelemetry name as a Prometheus name: what is not [a-zA-Z0-9_:]
 * becomes '_'. */
static void cat_name(char *out, size_t cap, size_t *len, const char *s)
{
    for (; *s; s++) {
        char c = *s;
        bool ok = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') ||
                  (c >= '0' && c <= '9') || c == '_' || c == ':';
        cat(out, cap, len, ok ? &c : "_", 1);
    }
}

/* A label value (quote) or HELP text, escaped: \\, \n, and " in values. */
static void cat_escaped(char *out, size_t cap, size_t *len, const char *s, bool quote)
{
    for (; *s; s++) {
        if (*s == '\\')
            cat(out, cap, len, "\\\\", 2);
        else if (*s == '\n')
            cat(out, cap, len, "\\n", 2);
        else if (*s == '"' && quote)
            cat(out, cap, len, "\\\"", 2);
        else
            cat(out, cap, len, s, 1);
    }
}

/* name[suffix]{labels[,le="le"]} value\n */
static void prom_sample(prom *p, const char *suffix, const char *le, const char *value)
{
    prom_put(p, p->fam, p->famlen);
    prom_str(p, suffix);
    if (p->lbllen || le) {
        prom_put(p, "{", 1);
        prom_put(p, p->lbl, p->lbllen);
        if (le) {
            if (p->lbllen)
                prom_put(p, ",", 1);
            prom_put(p, "le=\"", 4);
            prom_str(p, le);
            prom_put(p, "\"", 1);
        }
        prom_put(p, "}", 1);
    }
    prom_put(p, " ", 1);
    prom_str(p, value);
    prom_put(p, "\n", 1);
}

static const char *u64_text(char out[24], uint64_t v)
{
    char *o = out + 23;
    *o = '\0';
    do {
        *--o = (char)('0' + v % 10);
        v /= 10;
    } while (v);
    return o;
}

static void prom_point(void *user, const ew_metric *x)
{
    prom *p = user;
    if (p->rc != EW_OK)
        return;
    bool counter = x->kind == EW_METRIC_COUNTER;
    if (strcmp(p->last, x->name) != 0) {
        snprintf(p->last, sizeof p->last, "%s", x->name);
        /* The family name: the unit "s" adds "_seconds"; annotations
         * ({message}) and "1" add nothing; counters end in "_total". */
        p->famlen = 0;
        p->fam[0] = '\0';
        cat_name(p->fam, sizeof p->fam, &p->famlen, x->name);
        if (strcmp(x->unit, "s") == 0)
            cat(p->fam, sizeof p->fam, &p->famlen, "_seconds", 8);
        if (counter)
            cat(p->fam, sizeof p->fam, &p->famlen, "_total", 6);
        static const char *const TYPES[] = {[EW_METRIC_COUNTER] = "counter",
                                            [EW_METRIC_GAUGE] = "gauge",
                                            [EW_METRIC_HISTOGRAM] = "histogram"};
        char help[512];
        size_t hl = 0;
        help[0] = '\0';
        cat_escaped(help, sizeof help, &hl, x->help, false);
        prom_str(p, "# HELP ");
        prom_put(p, p->fam, p->famlen);
        prom_put(p, " ", 1);
        prom_put(p, help, hl);
        prom_str(p, "\n# TYPE ");
        prom_put(p, p->fam, p->famlen);
        prom_put(p, " ", 1);
        prom_str(p, TYPES[x->kind]);
        prom_put(p, "\n", 1);
    }
    p->lbllen = 0;
    p->lbl[0] = '\0';
    for (size_t i = 0; i < x->nlabels; i++) {
        if (i)
            cat(p->lbl, sizeof p->lbl, &p->lbllen, ",", 1);
        cat_name(p->lbl, sizeof p->lbl, &p->lbllen, x->labels[i].key);
        cat(p->lbl, sizeof p->lbl, &p->lbllen, "=\"", 2);
        cat_escaped(p->lbl, sizeof p->lbl, &p->lbllen, x->labels[i].value, true);
        cat(p->lbl, sizeof p->lbl, &p->lbllen, "\"", 1);
    }
    char num[24];
    if (x->kind != EW_METRIC_HISTOGRAM) {
        prom_sample(p, "", NULL, u64_text(num, x->value));
        return;
    }
    uint64_t cum = 0;
    for (size_t i = 0; i <= x->nbounds; i++) {
        cum += x->counts[i];
        char other[32];
        const char *le = LE[i];
        if (x->nbounds != EWI_HIST_BOUNDS || x->bounds != BOUNDS_S) {
            if (i < x->nbounds)
                snprintf(other, sizeof other, "%.9g", x->bounds[i]);
            else
                snprintf(other, sizeof other, "+Inf");
            le = other;
        }
        prom_sample(p, "_bucket", le, u64_text(num, cum));
    }
    char sum[48];
    snprintf(sum, sizeof sum, "%.9g", x->sum);
    prom_sample(p, "_sum", NULL, sum);
    prom_sample(p, "_count", NULL, u64_text(num, cum));
}

ew_err ew_metrics_prometheus(ew_manager *m, ew_metrics_write_fn write, void *user)
{
    if (!m || !write) {
        ewi_last_error_clear();
        return ewi_fail(EW_EINVAL, "ew_metrics_prometheus: NULL manager or writer");
    }
    prom *p = malloc(sizeof *p);
    if (!p) {
        ewi_last_error_clear();
        return ewi_fail(EW_ENOMEM, "ew_metrics_prometheus: out of memory");
    }
    p->write = write;
    p->user = user;
    p->rc = EW_OK;
    p->last[0] = '\0';
    p->len = 0;
    ew_err rc = ew_metrics_visit(m, prom_point, p);
    prom_flush(p);
    if (rc == EW_OK && p->rc != EW_OK)
        rc = ewi_fail(p->rc, "ew_metrics_prometheus: the writer returned %s",
                      ew_strerror(p->rc));
    free(p);
    return rc;
}
