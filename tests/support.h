/* Test support shared by the conformance suite and the transport tests:
 * a thread-safe tally of handled events by id, managers with a server name,
 * bulk sends, raw publishes and dead-letter collection. Header-only. */
#ifndef EW_TEST_SUPPORT_H
#define EW_TEST_SUPPORT_H

#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <pthread.h>
#include <cmocka.h>

#include "manager_priv.h"

#define SUPPORT_UNUSED __attribute__((unused))
#define ODD_VALUE "a:b\\c\nd é ü 漢字"

typedef struct {
    int64_t id;
    const char *text;
} conf_event;

static const ew_field conf_event_fields_[] = {
    EW_FIELD(conf_event, id, EW_INT64),
    EW_FIELD(conf_event, text, EW_STRING),
};
static const ew_type conf_event_type SUPPORT_UNUSED = {
    "conf_event", sizeof(conf_event), conf_event_fields_, 2};

static char support_run_id[32];

static SUPPORT_UNUSED void support_init(const char *url)
{
    (void)url;
    snprintf(support_run_id, sizeof support_run_id, "%x%x", (unsigned)getpid(),
             (unsigned)(ewi_wall_ms() & 0xfffff));
}

/* An event descriptor named <base>_<run id>, for this test only. */
#define EV(var, base, dur)                                                  \
    char var##_name[64];                                                    \
    snprintf(var##_name, sizeof var##_name, "%s_%s", base, support_run_id); \
    ew_event_desc var = {.type = &conf_event_type, .name = var##_name, .durable = dur}

/* ---- tally -------------------------------------------------------------- */

typedef struct tally tally;

typedef struct tally_ref {
    tally *t;
    char label[32];
    struct tally_ref *next;
} tally_ref;

struct tally {
    pthread_mutex_t mu;
    pthread_cond_t cv;
    size_t n;
    uint32_t *seen;             /* successful handlings per id */
    uint32_t *attempts;         /* listener runs per id */
    uint32_t *max_attempt_seen; /* ew_delivery_attempt, highest */
    const char **label;         /* who handled each id last */
    size_t started, finished;
    size_t out_of_order;
    int64_t last_id;
    char last_queue[EW_MAX_QUEUE_NAME];
    int64_t fail_always, fail_once;
    int slow_ms;
    tally_ref *refs;
};

static SUPPORT_UNUSED void tally_init(tally *t, size_t n)
{
    memset(t, 0, sizeof *t);
    pthread_mutex_init(&t->mu, NULL);
    pthread_cond_init(&t->cv, NULL);
    t->n = n;
    t->seen = calloc(n, sizeof *t->seen);
    t->attempts = calloc(n, sizeof *t->attempts);
    t->max_attempt_seen = calloc(n, sizeof *t->max_attempt_seen);
    t->label = calloc(n, sizeof *t->label);
    t->last_id = -1;
    t->fail_always = t->fail_once = -1;
}

static SUPPORT_UNUSED void tally_free(tally *t)
{
    free(t->seen);
    free(t->attempts);
    free(t->max_attempt_seen);
    free(t->label);
    for (tally_ref *r = t->refs, *n; r; r = n) {
        n = r->next;
        free(r);
    }
    pthread_mutex_destroy(&t->mu);
    pthread_cond_destroy(&t->cv);
}

static SUPPORT_UNUSED void tally_slow(tally *t, int ms)
{
    pthread_mutex_lock(&t->mu);
    t->slow_ms = ms;
    pthread_mutex_unlock(&t->mu);
}

/* A listener user pointer that labels what it handles (e.g. the server). */
static SUPPORT_UNUSED tally_ref *tref(tally *t, const char *label)
{
    tally_ref *r = calloc(1, sizeof *r);
    r->t = t;
    snprintf(r->label, sizeof r->label, "%s", label);
    pthread_mutex_lock(&t->mu);
    r->next = t->refs;
    t->refs = r;
    pthread_mutex_unlock(&t->mu);
    return r;
}

static SUPPORT_UNUSED void tally_note(tally *t, int64_t id, const char *label,
                                      const char *queue)
{
    pthread_mutex_lock(&t->mu);
    if (id >= 0 && (size_t)id < t->n) {
        t->seen[id]++;
        t->label[id] = label;
    }
    snprintf(t->last_queue, sizeof t->last_queue, "%s", queue ? queue : "");
    pthread_cond_broadcast(&t->cv);
    pthread_mutex_unlock(&t->mu);
}

/* The listener: user is a tally_ref (or a tally, labelled ""). */
static SUPPORT_UNUSED ew_err tally_listener_ref(ew_delivery *d, const void *event,
                                                tally_ref *r)
{
    tally *t = r->t;
    const conf_event *e = event;
    pthread_mutex_lock(&t->mu);
    t->started++;
    bool in = e->id >= 0 && (size_t)e->id < t->n;
    uint32_t runs = in ? ++t->attempts[e->id] : 0;
    if (in && ew_delivery_attempt(d) > t->max_attempt_seen[e->id])
        t->max_attempt_seen[e->id] = ew_delivery_attempt(d);
    if (e->id < t->last_id)
        t->out_of_order++;
    t->last_id = e->id;
    int slow = t->slow_ms;
    bool fail = e->id == t->fail_always || (e->id == t->fail_once && runs == 1);
    pthread_mutex_unlock(&t->mu);
    if (slow)
        ewi_sleep_ms(slow);
    if (!fail)
        tally_note(t, e->id, r->label, ew_delivery_queue(d));
    pthread_mutex_lock(&t->mu);
    t->finished++;
    pthread_cond_broadcast(&t->cv);
    pthread_mutex_unlock(&t->mu);
    return fail ? EW_ELISTENER : EW_OK;
}

static SUPPORT_UNUSED ew_err tally_listener(ew_delivery *d, const void *event, void *user)
{
    return tally_listener_ref(d, event, user);
}

static bool tally_wait_(tally *t, bool (*cond)(tally *, size_t, size_t), size_t a,
                        size_t b, int timeout_ms)
{
    int64_t deadline = ewi_now_ms() + timeout_ms;
    pthread_mutex_lock(&t->mu);
    bool ok;
    while (!(ok = cond(t, a, b)) && ewi_left_ms(deadline) > 0) {
        struct timespec ts;
        clock_gettime(CLOCK_REALTIME, &ts);
        ts.tv_nsec += 20 * 1000000L;
        if (ts.tv_nsec >= 1000000000L) {
            ts.tv_sec++;
            ts.tv_nsec -= 1000000000L;
        }
        pthread_cond_timedwait(&t->cv, &t->mu, &ts);
    }
    pthread_mutex_unlock(&t->mu);
    return ok;
}

static bool ids_seen_(tally *t, size_t from, size_t to)
{
    for (size_t i = from; i < to && i < t->n; i++)
        if (!t->seen[i])
            return false;
    return true;
}

static bool started_(tally *t, size_t k, size_t unused)
{
    (void)unused;
    return t->started >= k;
}

static SUPPORT_UNUSED bool tally_wait_ids(tally *t, size_t from, size_t to, int timeout_ms)
{
    bool ok = tally_wait_(t, ids_seen_, from, to, timeout_ms);
    if (!ok) {
        size_t missing = 0;
        pthread_mutex_lock(&t->mu);
        for (size_t i = from; i < to; i++)
            missing += !t->seen[i];
        pthread_mutex_unlock(&t->mu);
        print_message("tally: %zu of ids [%zu, %zu) missing\n", missing, from, to);
    }
    return ok;
}

static SUPPORT_UNUSED bool tally_wait_all(tally *t, int timeout_ms)
{
    return tally_wait_ids(t, 0, t->n, timeout_ms);
}

/* Waits until k handler runs have started. */
static SUPPORT_UNUSED bool tally_wait_count(tally *t, size_t k, int timeout_ms)
{
    return tally_wait_(t, started_, k, 0, timeout_ms);
}

static SUPPORT_UNUSED size_t tally_dups(tally *t)
{
    size_t d = 0;
    pthread_mutex_lock(&t->mu);
    for (size_t i = 0; i < t->n; i++)
        d += t->seen[i] > 1 ? t->seen[i] - 1 : 0;
    pthread_mutex_unlock(&t->mu);
    return d;
}

static SUPPORT_UNUSED size_t tally_total(tally *t)
{
    size_t s = 0;
    pthread_mutex_lock(&t->mu);
    for (size_t i = 0; i < t->n; i++)
        s += t->seen[i];
    pthread_mutex_unlock(&t->mu);
    return s;
}

/* Ids whose last handler had this label. */
static SUPPORT_UNUSED size_t tally_by_label(tally *t, const char *label)
{
    size_t s = 0;
    pthread_mutex_lock(&t->mu);
    for (size_t i = 0; i < t->n; i++)
        s += t->label[i] && strcmp(t->label[i], label) == 0;
    pthread_mutex_unlock(&t->mu);
    return s;
}

/* ---- managers and sends ------------------------------------------------- */

static SUPPORT_UNUSED ew_manager *mgr_new_opts(const char *url, const char *server,
                                               ew_options *o)
{
    ew_manager *m = NULL;
    o->server_name = server;
    if (!o->send_timeout_ms)
        o->send_timeout_ms = 15000;
    if (!o->start_timeout_ms)
        o->start_timeout_ms = 20000;
    ew_err rc = ew_manager_new(&m, url, o);
    if (rc != EW_OK)
        fail_msg("ew_manager_new(%s): %s", url, ew_strerror(rc));
    return m;
}

static SUPPORT_UNUSED ew_manager *mgr_new(const char *url, const char *server)
{
    ew_options o = {0};
    return mgr_new_opts(url, server, &o);
}

static SUPPORT_UNUSED void listen_tally(ew_manager *m, const ew_event_desc *ev,
                                        const char *name, bool per_process,
                                        uint32_t concurrency, tally *t)
{
    ew_listener_desc d = {.event = ev, .name = name, .per_process = per_process,
                          .concurrency = concurrency};
    ew_err rc = ew_listen(m, &d, tally_listener, tref(t, ew_manager_server_name(m)));
    if (rc != EW_OK)
        fail_msg("ew_listen(%s): %s", name, ew_strerror(rc));
}

static SUPPORT_UNUSED void send_range(ew_manager *m, const ew_event_desc *ev,
                                      int64_t from, int64_t to)
{
    for (int64_t i = from; i < to; i++) {
        conf_event e = {.id = i, .text = "x"};
        ew_err rc = ew_send(m, ev, &e);
        if (rc != EW_OK)
            fail_msg("ew_send(%lld): %s", (long long)i, ew_strerror(rc));
    }
}

static _Atomic size_t support_async_failures;

static void count_failure_(void *user, ew_err err)
{
    (void)user;
    if (err != EW_OK)
        support_async_failures++;
}

static SUPPORT_UNUSED void send_range_async(ew_manager *m, const ew_event_desc *ev,
                                            int64_t from, int64_t to)
{
    support_async_failures = 0;
    for (int64_t i = from; i < to; i++) {
        conf_event e = {.id = i, .text = "0123456789012345678901234567890123456789"};
        ew_err rc = ew_send_async(m, ev, NULL, &e, count_failure_, NULL);
        if (rc != EW_OK)
            fail_msg("ew_send_async(%lld): %s", (long long)i, ew_strerror(rc));
    }
    if (ew_flush(m, 120000) != EW_OK)
        fail_msg("ew_flush timed out");
    if (support_async_failures)
        fail_msg("%zu asynchronous sends failed", (size_t)support_async_failures);
}

/* Publishes bytes as a message of event `event`, past the codec: what a
 * foreign or broken producer would put on the broker. */
static SUPPORT_UNUSED void publish_raw(ew_manager *m, const char *event, const char *ct,
                                       const void *body, size_t len)
{
    ew_envelope *env = ewi_envelope_new();
    ewi_envelope_set_body(env, body, len);
    ewi_envelope_set_content_type(env, ct);
    ewi_envelope_put(env, EW_HDR_EVENT, strlen(EW_HDR_EVENT), event, strlen(event));
    char id[37];
    ewi_new_message_id(m, id);
    ewi_envelope_put(env, EW_HDR_MESSAGE_ID, strlen(EW_HDR_MESSAGE_ID), id, 36);
    ewi_pub p = {.dest = EWI_DEST_EVENT, .event = event, .durable = true, .env = env,
                 .deadline_ms = ewi_now_ms() + 15000};
    ew_err rc = ewi_publish_sync(m, &p);
    ewi_envelope_unref(env);
    if (rc != EW_OK)
        fail_msg("raw publish: %s", ew_strerror(rc));
}

/* ---- dead letters ------------------------------------------------------- */

typedef struct dlq_box {
    size_t n;
    int64_t ids[16];
    char reason[16][32], attempts[16][16], queue[16][EW_MAX_QUEUE_NAME], error[16][256];
} dlq_box;

static SUPPORT_UNUSED ew_err dlq_collect(void *user, const ew_envelope *env)
{
    dlq_box *b = user;
    if (b->n >= 16)
        return EW_OK;
    size_t i = b->n++, len;
    const void *body = ew_envelope_body(env, &len);
    void *ev = NULL;
    b->ids[i] = -1;
    if (ew_decode(&conf_event_type, ew_format_from_content_type(ew_envelope_content_type(env)),
                  body, len, NULL, &ev, NULL, 0) == EW_OK) {
        b->ids[i] = ((conf_event *)ev)->id;
        ew_event_free(&conf_event_type, ev);
    }
    const char *h;
    snprintf(b->reason[i], sizeof b->reason[i], "%s",
             (h = ew_envelope_header(env, EW_HDR_DLQ_REASON)) ? h : "");
    snprintf(b->attempts[i], sizeof b->attempts[i], "%s",
             (h = ew_envelope_header(env, EW_HDR_DLQ_ATTEMPTS)) ? h : "");
    snprintf(b->queue[i], sizeof b->queue[i], "%s",
             (h = ew_envelope_header(env, EW_HDR_DLQ_QUEUE)) ? h : "");
    snprintf(b->error[i], sizeof b->error[i], "%s",
             (h = ew_envelope_header(env, EW_HDR_DLQ_ERROR)) ? h : "");
    return EW_OK;
}

#endif
