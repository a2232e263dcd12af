/* The send path: event registry lookup, encoding, the send pipelines, the
 * hand-off to the transport and the wait for its outcome. */
#include "codec_internal.h"
#include "manager_priv.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* ---- events ------------------------------------------------------------- */

static bool same_event(const ewi_event *ev, const ew_event_desc *d)
{
    const char *name = d->name ? d->name : d->type->name;
    ew_format f = d->format;
    return ev->desc.type == d->type && ev->desc.durable == d->durable &&
           (f == EW_FORMAT_DEFAULT || f == ev->format) && strcmp(ev->name, name) == 0;
}

static size_t cache_slot(const ew_event_desc *d)
{
    uintptr_t p = (uintptr_t)d;
    return (size_t)((p >> 4) ^ (p >> 12)) % EWI_EVENT_CACHE;
}

ew_err ewi_event_declare(ew_manager *m, ewi_event *ev)
{
    if (atomic_load_explicit(&ev->declared, memory_order_acquire))
        return EW_OK;
    ew_err rc = m->ops->declare(m->t, ev->name, ev->desc.durable);
    if (rc != EW_OK) {
        /* The transport reported the broker's reason already. */
        ewi_log(m, EW_LOG_ERROR, "declaring event %s failed: %s", ev->name, ew_strerror(rc));
        return rc;
    }
    atomic_store_explicit(&ev->declared, true, memory_order_release);
    return EW_OK;
}

ew_err ewi_event_get(ew_manager *m, const ew_event_desc *d, ewi_event **out)
{
    size_t slot = cache_slot(d);
    if (atomic_load_explicit(&m->cache_key[slot], memory_order_acquire) == d) {
        ewi_event *ev = atomic_load_explicit(&m->cache_val[slot], memory_order_acquire);
        if (ev && same_event(ev, d)) {
            *out = ev;
            return EW_OK;
        }
    }
    if (!d->type)
        return ewi_fail(EW_EINVAL, "event %s: the descriptor has no type",
                        d->name ? d->name : "(unnamed)");
    if (d->version != 0)
        return ewi_fail(EW_EINVAL, "event %s: ew_event_desc.version is %u; this library "
                        "knows layout 0", d->name ? d->name : d->type->name, d->version);
    const char *name = d->name ? d->name : d->type->name;
    char err[256];
    ew_err rc = ewi_check_event_name(name, err, sizeof err);
    if (rc == EW_OK && m->ops->check_names)
        rc = m->ops->check_names(m->t, name, NULL, err, sizeof err);
    if (rc == EW_OK)
        rc = ewi_type_check(d->type, err, sizeof err);
    if (rc != EW_OK) {
        ewi_log(m, EW_LOG_ERROR, "event %s: %s", name ? name : "(null)", err);
        return rc;
    }

    pthread_mutex_lock(&m->mu);
    ewi_event *ev = m->events;
    while (ev && strcmp(ev->name, name) != 0)
        ev = ev->next;
    if (ev && !same_event(ev, d)) {
        pthread_mutex_unlock(&m->mu);
        ewi_log(m, EW_LOG_ERROR,
                "event %s is already registered with another type, durability or format",
                name);
        return EW_ECONFLICT;
    }
    if (!ev) {
        ev = calloc(1, sizeof *ev);
        if (!ev) {
            pthread_mutex_unlock(&m->mu);
            return ewi_fail(EW_ENOMEM, "event %s: out of memory", name);
        }
        strcpy(ev->name, name);
        ev->desc = *d;
        ev->desc.name = ev->name;
        ev->format = d->format == EW_FORMAT_DEFAULT ? m->format : d->format;
        ev->desc.format = ev->format;
        ev->content_type = ew_format_content_type(ev->format);
        atomic_init(&ev->declared, false);
        ev->next = m->events;
        m->events = ev;
    }
    atomic_store_explicit(&m->cache_val[slot], ev, memory_order_release);
    atomic_store_explicit(&m->cache_key[slot], d, memory_order_release);
    pthread_mutex_unlock(&m->mu);
    *out = ev;
    return EW_OK;
}

/* ---- message ids -------------------------------------------------------- */

static void hex_bytes(char *o, const uint8_t *b, size_t n)
{
    static const char hex[] = "0123456789abcdef";
    for (size_t i = 0; i < n; i++) {
        o[2 * i] = hex[b[i] >> 4];
        o[2 * i + 1] = hex[b[i] & 15];
    }
}

/* The first ten bytes of a manager's ids never change (the sequence only
 * touches the last six): each thread keeps their text, "xxxxxxxx-xxxx-
 * xxxx-xxxx-", for the manager it last made an id for, and takes sequence
 * numbers from the manager ID_BLOCK at a time (one atomic add per block
 * rather than per message: ids stay unique, not in the order of sends). */
#define ID_BLOCK 256
static _Thread_local uint8_t tl_id_base[16];
static _Thread_local char tl_id_prefix[24];
static _Thread_local bool tl_id_ready;
static _Thread_local uint64_t tl_id_next, tl_id_end;

void ewi_new_message_id(ew_manager *m, char out[37])
{
    if (!tl_id_ready || memcmp(tl_id_base, m->id_base, sizeof tl_id_base) != 0) {
        memcpy(tl_id_base, m->id_base, sizeof tl_id_base);
        char *o = tl_id_prefix;
        hex_bytes(o, m->id_base, 4);
        o[8] = '-';
        hex_bytes(o + 9, m->id_base + 4, 2);
        o[13] = '-';
        hex_bytes(o + 14, m->id_base + 6, 2);
        o[18] = '-';
        hex_bytes(o + 19, m->id_base + 8, 2);
        o[23] = '-';
        tl_id_ready = true;
        tl_id_next = tl_id_end = 0;
    }
    if (tl_id_next == tl_id_end) {
        tl_id_next = atomic_fetch_add_explicit(&m->id_seq, ID_BLOCK, memory_order_relaxed);
        tl_id_end = tl_id_next + ID_BLOCK;
    }
    uint64_t seq = tl_id_next++;
    uint8_t tail[6];
    memcpy(tail, m->id_base + 10, sizeof tail);
    for (int i = 0; i < 6; i++)
        tail[5 - i] ^= (uint8_t)(seq >> (8 * i));
    memcpy(out, tl_id_prefix, sizeof tl_id_prefix);
    hex_bytes(out + 24, tail, sizeof tail);
    out[36] = '\0';
}

/* ---- building an envelope ----------------------------------------------- */

/* Each sending thread's encode buffer, freed when the thread exits. */
static _Thread_local ewi_buf tl_buf;
static _Thread_local bool tl_buf_registered;
static pthread_key_t buf_key;
static pthread_once_t buf_once = PTHREAD_ONCE_INIT;

static void buf_destroy(void *p)
{
    ewi_buf_free(p);
}

static void buf_key_init(void)
{
    pthread_key_create(&buf_key, buf_destroy);
}

/* The size of this thread's last body if it was handed over whole, else 0. */
static _Thread_local size_t tl_last_big;

static ewi_buf *thread_buf(void)
{
    if (!tl_buf_registered) {
        pthread_once(&buf_once, buf_key_init);
        pthread_setspecific(buf_key, &tl_buf);
        tl_buf_registered = true;
    }
    tl_buf.len = 0;
    /* After a large body was handed over, start the next one as large: one
     * allocation now rather than several copies as the encoder grows it. */
    if (!tl_buf.data && tl_last_big)
        (void)ewi_buf_reserve(&tl_buf, tl_last_big + tl_last_big / 8);
    return &tl_buf;
}

/* Gives a body that does not fit inline to the envelope: the thread's
 * buffer itself, trimmed, so that a large event is not copied once more;
 * the thread gets a new buffer for its next send. */
static ew_err put_body(ew_envelope *env, ewi_buf *buf)
{
    size_t len = buf->len;
    if (len <= EWI_ENV_INLINE_BODY) {
        ew_err rc = ewi_envelope_set_body(env, buf->data, len);
        tl_last_big = 0;
        if (buf->cap > (64u << 10))
            ewi_buf_free(buf); /* do not keep a huge buffer per thread */
        return rc;
    }
    uint8_t *body = buf->data;
    if (buf->cap - len > len / 8) {
        uint8_t *trimmed = realloc(body, len); /* glibc shrinks it in place */
        if (trimmed)
            body = trimmed;
    }
    ewi_envelope_take_body(env, body, len);
    buf->data = NULL;
    buf->len = buf->cap = 0;
    tl_last_big = len;
    return EW_OK;
}

static ew_err build(ew_manager *m, ewi_event *ev, const void *event, ew_envelope **out)
{
    ew_envelope *env = ewi_envelope_new();
    if (!env)
        return EW_ENOMEM;
    ewi_envelope_set_limits(env, &m->env_limits);
    /* Encode into this thread's reusable buffer; a small body is copied
     * into the envelope, a larger one is the buffer itself (put_body). */
    ewi_buf *buf = thread_buf();
    char err[256];
    err[0] = '\0'; /* not an initializer: that clears all 256 bytes per send */
    ew_err rc = ewi_encode(ev->desc.type, ev->format, event, buf, err, sizeof err);
    if (rc != EW_OK) {
        ewi_log(m, EW_LOG_ERROR, "send %s: %s", ev->name, err[0] ? err : "out of memory");
        goto fail;
    }
    size_t len = buf->len;
    if ((rc = put_body(env, buf)) != EW_OK)
        goto fail;
    if (len > m->cfg.max_body) {
        ewi_log(m, EW_LOG_ERROR, "send %s: body of %zu bytes is over the limit %zu",
                ev->name, len, m->cfg.max_body);
        rc = EW_ETOOBIG;
        goto fail;
    }
    char id[37];
    ewi_new_message_id(m, id);
    /* A raw body names its own format (see ew_raw_event). */
    const char *ct = ev->content_type;
    if (ev->desc.type == &ew_raw_type && ((const ew_raw_event *)event)->format)
        ct = ew_format_content_type(((const ew_raw_event *)event)->format);
    if ((rc = ewi_envelope_set_content_type(env, ct)) != EW_OK ||
        (rc = ewi_envelope_put_framework(env, ev->name, strlen(ev->name), id,
                                         (uint64_t)ewi_wall_ms())) != EW_OK)
        goto fail;
    ewi_pipes *pipes = ewi_pipes_get(m);
    for (size_t i = 0; pipes && i < pipes->n; i++) {
        const ewi_pipe *p = &pipes->items[i];
        if (!p->p.send)
            continue;
        ew_err prc = p->p.send(p->user, env, &ev->desc);
        if (prc != EW_OK) {
            ewi_log(m, EW_LOG_WARN, "send %s: pipeline %s refused: %s", ev->name,
                    p->name, ew_strerror(prc));
            ewi_set_last_error("send %s: pipeline %s refused: %s", ev->name, p->name,
                               ew_strerror(prc));
            rc = prc;
            goto fail;
        }
    }
    *out = env;
    return EW_OK;
fail:
    ewi_envelope_unref(env);
    return rc;
}

/* ---- waiting for one publish -------------------------------------------- */

typedef struct waiter {
    pthread_mutex_t mu;
    pthread_cond_t cv;
    bool done;
    int err;
    char detail[256];
    ew_manager *metered; /* an application's send: counted there */
    int64_t t0_ns;       /* when it was handed to the transport */
} waiter;

/* A send handed to the transport at t0_ns completed with err. */
static void count_done(ew_manager *m, int64_t t0_ns, int err)
{
    atomic_fetch_sub_explicit(&m->mx.pending, 1, memory_order_relaxed);
    if (err == EW_OK)
        ewi_hist_add(&m->mx.confirm, ewi_now_ns() - t0_ns, false);
}

/* The waiter of the send this thread is handing to its transport, while
 * publish runs: a transport that completes the send inside publish (local://)
 * calls done on this very thread, and then no lock or wake-up is needed. */
static _Thread_local waiter *tl_publishing;

static void sync_done(ewi_pub *p, int err, const char *detail)
{
    /* Whatever a transport says, a written message without its confirm may
     * have been delivered: never report it as not sent. */
    err = ewi_pub_unconfirmed(p, err);
    waiter *w = p->user;
    if (w->metered)
        count_done(w->metered, w->t0_ns, err);
    bool inline_done = w == tl_publishing;
    if (!inline_done)
        pthread_mutex_lock(&w->mu);
    w->done = true;
    w->err = err;
    /* Not snprintf: this runs once per synchronous send. */
    size_t n = detail ? strnlen(detail, sizeof w->detail - 1) : 0;
    memcpy(w->detail, detail ? detail : "", n);
    w->detail[n] = '\0';
    if (inline_done) {
        tl_publishing = NULL; /* publish_wait sees it done, without the lock */
        return;
    }
    pthread_cond_signal(&w->cv);
    pthread_mutex_unlock(&w->mu);
}

/* One waiter per thread, made on first use (mutexes and condition variables
 * hold no resources on Linux, so they need no destructor). */
static _Thread_local waiter tl_waiter;
static _Thread_local bool tl_waiter_ready;

/* Publishes p and waits for its outcome; metered: an application's send
 * handed over at t0_ns, counted in the manager's metrics. */
static ew_err publish_wait(ew_manager *m, ewi_pub *p, bool metered, int64_t t0_ns)
{
    waiter *w = &tl_waiter;
    if (!tl_waiter_ready) {
        ewi_mutex_init(&w->mu);
        ewi_cond_init_mono(&w->cv);
        tl_waiter_ready = true;
    }
    w->done = false;
    w->err = EW_OK;
    w->detail[0] = '\0';
    w->metered = metered ? m : NULL;
    p->done = sync_done;
    p->user = w;
    if (metered) {
        w->t0_ns = t0_ns;
        atomic_fetch_add_explicit(&m->mx.pending, 1, memory_order_relaxed);
    }
    tl_publishing = w;
    ew_err rc = m->ops->publish(m->t, p);
    /* Cleared by done when it ran on this thread within publish. */
    bool done_here = tl_publishing == NULL;
    tl_publishing = NULL;
    if (rc != EW_OK) {
        if (metered)
            atomic_fetch_sub_explicit(&m->mx.pending, 1, memory_order_relaxed);
        return rc;
    }
    /* The transport calls done exactly once, by the deadline at the latest. */
    if (!done_here) {
        pthread_mutex_lock(&w->mu);
        while (!w->done)
            pthread_cond_wait(&w->cv, &w->mu);
        pthread_mutex_unlock(&w->mu);
    }
    if (w->err != EW_OK)
        ewi_log(m, EW_LOG_ERROR, "send %s to %s failed: %s%s%s", p->event,
                p->queue ? p->queue : p->event, ew_strerror(w->err),
                w->detail[0] ? ": " : "", w->detail);
    return (ew_err)w->err;
}

ew_err ewi_publish_sync(ew_manager *m, ewi_pub *p)
{
    return publish_wait(m, p, false, 0);
}

/* ---- public sends ------------------------------------------------------- */

typedef struct async_pub {
    ewi_pub pub;
    ew_manager *m;
    int64_t t0_ns; /* when it was handed to the transport */
    ew_send_fn fn;
    void *user;
    char queue[EW_MAX_QUEUE_NAME];
    char listener[EW_MAX_LISTENER_NAME + 1];
} async_pub;

/* Builds p; *t0_ns is when it was ready for the transport (the send
 * timeout runs from there). */
static ew_err prepare(ew_manager *m, const ew_event_desc *desc, const char *listener,
                      const void *event, ewi_pub *p, char *queue, char *lname,
                      int64_t *t0_ns)
{
    ewi_last_error_clear();
    if (!m || !desc || !event)
        return ewi_fail(EW_EINVAL, "send: NULL manager, event descriptor or event");
    int state = atomic_load_explicit(&m->state, memory_order_acquire);
    if (state != EWI_STARTED)
        return state >= EWI_STOPPING
                   ? ewi_fail(EW_ECLOSED, "send: the manager is stopping or stopped")
                   : ewi_fail(EW_ESTATE, "send: the manager is not started");
    ewi_event *ev;
    ew_err rc = ewi_event_get(m, desc, &ev);
    if (rc == EW_OK)
        rc = ewi_event_declare(m, ev);
    if (rc != EW_OK)
        return rc;
    memset(p, 0, sizeof *p);
    p->dest = EWI_DEST_EVENT;
    p->event = ev->name;
    p->durable = ev->desc.durable;
    if (listener) {
        char err[256];
        if ((rc = ewi_queue_names(m, ev->name, listener, false, queue, NULL, err,
                                  sizeof err)) != EW_OK) {
            ewi_log(m, EW_LOG_ERROR, "send_to: %s", err);
            return rc;
        }
        strcpy(lname, listener);
        p->dest = EWI_DEST_LISTENER;
        p->listener = lname;
        p->queue = queue;
    }
    if ((rc = build(m, ev, event, &p->env)) != EW_OK) {
        if (!ewi_last_error_peek()[0])
            ewi_set_last_error("send %s: %s", ev->name, ew_strerror(rc));
        return rc;
    }
    /* One clock read for the deadline and the confirm latency (the same
     * monotonic clock as ewi_now_ms). */
    *t0_ns = ewi_now_ns();
    p->deadline_ms = *t0_ns / 1000000 + m->cfg.send_timeout_ms;
    return EW_OK;
}

static ew_err send_sync(ew_manager *m, const ew_event_desc *desc, const char *listener,
                        const void *event)
{
    ewi_pub p;
    char queue[EW_MAX_QUEUE_NAME], lname[EW_MAX_LISTENER_NAME + 1];
    int64_t t0;
    ew_err rc = prepare(m, desc, listener, event, &p, queue, lname, &t0);
    if (rc != EW_OK) {
        if (m)
            ewi_count_send(m, rc);
        return rc;
    }
    rc = publish_wait(m, &p, true, t0);
    if (rc != EW_OK && !ewi_last_error_peek()[0])
        ewi_set_last_error("send %s: %s", p.event, ew_strerror(rc));
    ewi_envelope_unref(p.env);
    ewi_count_send(m, rc);
    return rc;
}

ew_err ew_send(ew_manager *m, const ew_event_desc *ev, const void *event)
{
    return send_sync(m, ev, NULL, event);
}

ew_err ew_send_to(ew_manager *m, const ew_event_desc *ev, const char *listener,
                  const void *event)
{
    if (!listener)
        return ewi_fail(EW_EINVAL, "ew_send_to: the listener name is NULL");
    return send_sync(m, ev, listener, event);
}

static void async_done(ewi_pub *p, int err, const char *detail)
{
    async_pub *a = (async_pub *)p;
    ew_manager *m = a->m;
    err = ewi_pub_unconfirmed(p, err);
    count_done(m, a->t0_ns, err);
    ewi_count_send(m, (ew_err)err);
    if (err != EW_OK)
        ewi_report(m, (ew_err)err, a->pub.queue, a->pub.event,
                   ew_envelope_message_id(a->pub.env), "asynchronous send failed%s%s",
                   detail ? ": " : "", detail ? detail : "");
    if (a->fn)
        a->fn(a->user, (ew_err)err);
    ewi_envelope_unref(a->pub.env);
    free(a);
    pthread_mutex_lock(&m->fmu);
    if (--m->inflight == 0)
        pthread_cond_broadcast(&m->fcv);
    pthread_mutex_unlock(&m->fmu);
}

ew_err ew_send_async(ew_manager *m, const ew_event_desc *ev, const char *listener,
                     const void *event, ew_send_fn done, void *user)
{
    async_pub *a = malloc(sizeof *a);
    if (!a) {
        if (m)
            ewi_count_send(m, EW_ENOMEM);
        return ewi_fail(EW_ENOMEM, "ew_send_async: out of memory");
    }
    ew_err rc = prepare(m, ev, listener, event, &a->pub, a->queue, a->listener, &a->t0_ns);
    if (rc != EW_OK) {
        free(a);
        if (m)
            ewi_count_send(m, rc);
        return rc;
    }
    a->m = m;
    a->fn = done;
    a->user = user;
    a->pub.done = async_done;
    pthread_mutex_lock(&m->fmu);
    m->inflight++;
    pthread_mutex_unlock(&m->fmu);
    atomic_fetch_add_explicit(&m->mx.pending, 1, memory_order_relaxed);
    rc = m->ops->publish(m->t, &a->pub);
    if (rc != EW_OK) {
        atomic_fetch_sub_explicit(&m->mx.pending, 1, memory_order_relaxed);
        ewi_count_send(m, rc);
        if (!ewi_last_error_peek()[0])
            ewi_set_last_error("send %s: %s", a->pub.event, ew_strerror(rc));
        ewi_envelope_unref(a->pub.env);
        free(a);
        pthread_mutex_lock(&m->fmu);
        if (--m->inflight == 0)
            pthread_cond_broadcast(&m->fcv);
        pthread_mutex_unlock(&m->fmu);
    }
    return rc;
}

ew_err ew_flush(ew_manager *m, int timeout_ms)
{
    if (!m)
        return ewi_fail(EW_EINVAL, "ew_flush: the manager is NULL");
    int64_t deadline = ewi_now_ms() + (timeout_ms > 0 ? timeout_ms : 0);
    ew_err rc = EW_OK;
    pthread_mutex_lock(&m->fmu);
    while (m->inflight > 0) {
        if (ewi_left_ms(deadline) == 0) {
            rc = ewi_fail(EW_ETIMEDOUT, "ew_flush: %zu sends still in flight after %d ms",
                          m->inflight, timeout_ms);
            break;
        }
        ewi_cond_wait_until(&m->fcv, &m->fmu, deadline);
    }
    pthread_mutex_unlock(&m->fmu);
    return rc;
}
