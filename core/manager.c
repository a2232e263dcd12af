/* The manager: configuration, the registry of events, listeners and
 * pipelines, and the lifecycle (start, stop, free). Sends are in send.c,
 * the listener workers in worker.c. */
#include "manager_priv.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <uuid/uuid.h>

void ewi_log_stderr(void *user, ew_log_level level, const char *msg);

#define DEFAULT_PREFETCH 256

const ewi_config *ewi_config_of(const ew_manager *m)
{
    return &m->cfg;
}

/* hostname-pid, with every character a queue name cannot carry made '_'. */
static void default_server_name(char *out, size_t len)
{
    char host[256] = "host";
    if (gethostname(host, sizeof host - 1) != 0 || !host[0])
        strcpy(host, "host");
    host[sizeof host - 1] = '\0';
    char pid[24];
    int pn = snprintf(pid, sizeof pid, "-%ld", (long)getpid());
    size_t hmax = len - 1 - (size_t)pn;
    size_t hn = strlen(host) < hmax ? strlen(host) : hmax;
    for (size_t i = 0; i < hn; i++) {
        char c = host[i];
        bool ok = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') ||
                  (c >= '0' && c <= '9') || c == '-' || c == '_';
        out[i] = ok ? c : '_';
    }
    memcpy(out + hn, pid, (size_t)pn + 1);
}

ew_err ew_manager_new(ew_manager **out, const char *url, const ew_options *opts)
{
    ewi_last_error_clear();
    if (!out)
        return ewi_fail(EW_EINVAL, "ew_manager_new: out is NULL");
    *out = NULL;
    ew_options o = {0};
    if (opts)
        o = *opts;
    if (o.version != 0)
        return ewi_fail(EW_EINVAL, "ew_manager_new: ew_options.version is %u; this "
                        "library knows layout 0", o.version);
    if ((unsigned)o.threads > EW_THREADS_INHERIT)
        return ewi_fail(EW_EINVAL, "ew_manager_new: ew_options.threads is %u; not an "
                        "ew_threads value", (unsigned)o.threads);
    if (o.worker_pool > EWI_POOL_MAX)
        return ewi_fail(EW_EINVAL, "ew_manager_new: ew_options.worker_pool is %u; at "
                        "most %u threads", o.worker_pool, EWI_POOL_MAX);
    ew_manager *m = calloc(1, sizeof *m);
    if (!m)
        return ewi_fail(EW_ENOMEM, "ew_manager_new: out of memory");
    m->log = o.log ? o.log : ewi_log_stderr;
    m->log_user = o.log ? o.log_user : NULL;
    m->level = o.log_level != EW_LOG_DEFAULT
                   ? o.log_level
                   : ew_log_level_parse(getenv("EW_LOG"), EW_LOG_WARN);
    m->on_error = o.on_error;
    m->error_user = o.error_user;
    ewi_mutex_init(&m->mu);
    pthread_mutex_init(&m->life, NULL);
    ewi_mutex_init(&m->fmu);
    ewi_cond_init_mono(&m->fcv);
    atomic_init(&m->state, EWI_NEW);
    atomic_init(&m->pipes, NULL);
    m->cfg.send_timeout_ms = o.send_timeout_ms > 0 ? o.send_timeout_ms : 10000;
    m->cfg.start_timeout_ms = o.start_timeout_ms > 0 ? o.start_timeout_ms : 30000;
    m->cfg.max_body = o.max_body ? o.max_body : 1u << 20;
    m->cfg.max_headers = o.max_headers ? o.max_headers : 64;
    m->cfg.max_header_len = o.max_header_len ? o.max_header_len : 4096;
    m->env_limits.max_headers = m->cfg.max_headers;
    m->env_limits.max_header_len = m->cfg.max_header_len;
    m->format = o.format == EW_FORMAT_JSON ? EW_FORMAT_JSON : EW_FORMAT_MSGPACK;
    m->cfg.batch_threads = o.threads == EW_THREADS_BATCH;
    if (o.threads == EW_THREADS_DEFAULT) {
        const char *env = getenv("EW_THREADS");
        m->cfg.batch_threads = !env || strcmp(env, "inherit") != 0;
        if (env && *env && strcmp(env, "batch") != 0 && strcmp(env, "inherit") != 0)
            ewi_log(m, EW_LOG_WARN, "EW_THREADS=%s is neither batch nor inherit: batch",
                    env);
    }
    uuid_generate(m->id_base);
    atomic_init(&m->id_seq, 0);

    ew_err rc;
    char err[256];
    if (o.worker_pool && (rc = ewi_pool_new(m, o.worker_pool)) != EW_OK)
        goto fail;
    if (o.server_name) {
        if ((rc = ewi_check_server_name(o.server_name, err, sizeof err)) != EW_OK) {
            ewi_log(m, EW_LOG_ERROR, "%s", err);
            goto fail;
        }
        strcpy(m->server, o.server_name);
    } else {
        default_server_name(m->server, sizeof m->server);
    }
    m->cfg.server_name = m->server;

    if (!url)
        url = "local://";
    m->url_redacted = ewi_url_redacted(url);
    if (!m->url_redacted) {
        rc = EW_ENOMEM;
        goto fail;
    }
    if ((rc = ewi_url_parse(url, &m->url, err, sizeof err)) != EW_OK) {
        ewi_log(m, EW_LOG_ERROR, "bad URL %s: %s", m->url_redacted, err);
        goto fail;
    }
    long prefetch;
    if (ewi_url_param_int(&m->url, "prefetch", DEFAULT_PREFETCH, 1, 1000000,
                          &prefetch) != EW_OK) {
        ewi_log(m, EW_LOG_ERROR, "URL %s: prefetch must be 1..1000000",
                m->url_redacted);
        rc = EW_EINVAL;
        goto fail;
    }
    m->default_prefetch = (uint32_t)prefetch;
    m->ops = ewi_transport_find(m->url.scheme);
    if (!m->ops) {
        ewi_log(m, EW_LOG_ERROR, "URL %s: no transport for scheme '%s' in this build",
                m->url_redacted, m->url.scheme);
        rc = EW_ENOTFOUND;
        goto fail;
    }
    /* Credentials may stay out of the URL (and so out of command lines and
     * configuration files): $EW_USER and $EW_PASSWORD fill what it lacks. */
    if (!(m->ops->features & EWI_FEAT_NO_CREDENTIALS)) {
        const char *user = getenv("EW_USER"), *pass = getenv("EW_PASSWORD");
        if ((!m->url.user && user && *user && !(m->url.user = strdup(user))) ||
            (!m->url.password && pass && *pass && !(m->url.password = strdup(pass)))) {
            rc = EW_ENOMEM;
            goto fail;
        }
    }
    if ((rc = m->ops->create(m, &m->url, &m->t)) != EW_OK)
        goto fail;
    ewi_log(m, EW_LOG_INFO, "manager %s on %s (%s transport)", m->server,
            m->url_redacted, m->ops->name);
    *out = m;
    return EW_OK;
fail:
    if (!ewi_last_error_peek()[0])
        ewi_set_last_error("ew_manager_new: %s", ew_strerror(rc));
    ewi_url_free(&m->url);
    free(m->url_redacted);
    ewi_pool_free(m);
    pthread_mutex_destroy(&m->mu);
    pthread_mutex_destroy(&m->life);
    pthread_mutex_destroy(&m->fmu);
    pthread_cond_destroy(&m->fcv);
    free(m);
    return rc;
}

const char *ew_manager_server_name(const ew_manager *m)
{
    return m ? m->server : NULL;
}

ew_err ewi_queue_names(const ew_manager *m, const char *event,
                       const char *listener, bool per_process, char *queue,
                       char *dlq, char *err, size_t errlen)
{
    ew_err rc = ewi_check_event_name(event, err, errlen);
    if (rc == EW_OK)
        rc = ewi_check_listener_name(listener, err, errlen);
    if (rc != EW_OK)
        return rc;
    if (per_process)
        snprintf(queue, EW_MAX_QUEUE_NAME, "%s::%s-%s", event, listener, m->server);
    else
        snprintf(queue, EW_MAX_QUEUE_NAME, "%s::%s", event, listener);
    if (dlq)
        snprintf(dlq, EW_MAX_QUEUE_NAME, "%s::%s.dlq", event, listener);
    return EW_OK;
}

static const char *desc_name(const ew_event_desc *d)
{
    return d->name ? d->name : d->type ? d->type->name : NULL;
}

ew_err ew_queue_name(const ew_manager *m, const ew_listener_desc *l, char *buf,
                     size_t len)
{
    ewi_last_error_clear();
    if (!m || !l || !l->event || !buf)
        return ewi_fail(EW_EINVAL, "ew_queue_name: NULL argument");
    if (l->version != 0 || l->event->version != 0)
        return ewi_fail(EW_EINVAL, "ew_queue_name: descriptor version %u; this library "
                        "knows layout 0", l->version ? l->version : l->event->version);
    char q[EW_MAX_QUEUE_NAME], err[256];
    ew_err rc = ewi_queue_names(m, desc_name(l->event), l->name, l->per_process,
                                q, NULL, err, sizeof err);
    if (rc != EW_OK)
        return ewi_fail(rc, "ew_queue_name: %s", err);
    if (strlen(q) >= len)
        return ewi_fail(EW_EINVAL, "ew_queue_name: %s needs %zu bytes, the buffer has %zu",
                        q, strlen(q) + 1, len);
    strcpy(buf, q);
    return EW_OK;
}

ewi_pipes *ewi_pipes_get(ew_manager *m)
{
    return atomic_load_explicit(&m->pipes, memory_order_acquire);
}

ew_err ew_add_pipeline(ew_manager *m, const ew_pipeline *p, void *user)
{
    ewi_last_error_clear();
    if (!m || !p)
        return ewi_fail(EW_EINVAL, "ew_add_pipeline: NULL argument");
    if (p->version != 0)
        return ewi_fail(EW_EINVAL, "ew_add_pipeline: ew_pipeline.version is %u; this "
                        "library knows layout 0", p->version);
    pthread_mutex_lock(&m->mu);
    ewi_pipes *old = ewi_pipes_get(m);
    size_t n = old ? old->n : 0;
    ewi_pipes *np = malloc(sizeof *np + (n + 1) * sizeof np->items[0]);
    char *name = strdup(p->name ? p->name : "pipeline");
    if (!np || !name) {
        pthread_mutex_unlock(&m->mu);
        free(np);
        free(name);
        return ewi_fail(EW_ENOMEM, "ew_add_pipeline: out of memory");
    }
    np->n = n + 1;
    np->older = old;
    if (n)
        memcpy(np->items, old->items, n * sizeof np->items[0]);
    np->items[n].p = *p;
    np->items[n].p.name = name;
    np->items[n].name = name;
    np->items[n].user = user;
    atomic_store_explicit(&m->pipes, np, memory_order_release);
    pthread_mutex_unlock(&m->mu);
    return EW_OK;
}

/* Subscribes l and starts its workers; m->mu not held. */
static ew_err activate(ew_manager *m, ewi_listener *l)
{
    ew_err rc = ewi_event_declare(m, l->event);
    if (rc == EW_OK)
        rc = ewi_listener_start_workers(l);
    uint64_t gen = ewi_listener_sub_gen(l);
    if (rc == EW_OK)
        rc = m->ops->subscribe(m->t, &l->sub);
    if (rc != EW_OK) {
        ewi_log(m, EW_LOG_ERROR, "%s: subscribe failed: %s", l->queue, ew_strerror(rc));
        return rc;
    }
    l->subscribed = true;
    ewi_listener_consuming(l, gen);
    ewi_log(m, EW_LOG_INFO, "%s: consuming (concurrency %u, prefetch %u)", l->queue,
            l->desc.concurrency, l->sub.prefetch);
    return EW_OK;
}

/* Subscribes every listener registered so far with one call to the
 * transport's subscribe_many (their round trips overlap); m->mu not held. */
static ew_err activate_all(ew_manager *m)
{
    pthread_mutex_lock(&m->mu);
    size_t n = 0;
    for (ewi_listener *l = m->listeners; l; l = l->next)
        n += !l->subscribed && !l->started;
    ewi_listener **ls = calloc(n ? n : 1, sizeof *ls);
    ewi_sub **subs = calloc(n ? n : 1, sizeof *subs);
    ew_err *rcs = calloc(n ? n : 1, sizeof *rcs);
    uint64_t *gens = calloc(n ? n : 1, sizeof *gens);
    size_t k = n; /* the list is newest first: subscribe in registration order */
    for (ewi_listener *l = m->listeners; l && ls && subs && rcs; l = l->next)
        if (!l->subscribed && !l->started)
            ls[--k] = l;
    pthread_mutex_unlock(&m->mu);
    ew_err rc = ls && subs && rcs && gens ? EW_OK : EW_ENOMEM;
    for (size_t i = 0; i < n && rc == EW_OK; i++) {
        if ((rc = ewi_event_declare(m, ls[i]->event)) == EW_OK)
            rc = ewi_listener_start_workers(ls[i]);
        subs[i] = &ls[i]->sub;
        gens[i] = ewi_listener_sub_gen(ls[i]);
    }
    if (rc == EW_OK && n)
        m->ops->subscribe_many(m->t, subs, n, rcs);
    for (size_t i = 0; i < n && rc == EW_OK; i++)
        if (rcs[i] == EW_OK) {
            ls[i]->subscribed = true;
            ewi_listener_consuming(ls[i], gens[i]);
            ewi_log(m, EW_LOG_INFO, "%s: consuming (concurrency %u, prefetch %u)",
                    ls[i]->queue, ls[i]->desc.concurrency, ls[i]->sub.prefetch);
        }
    for (size_t i = 0; i < n && rc == EW_OK; i++)
        if (rcs[i] != EW_OK) {
            ewi_log(m, EW_LOG_ERROR, "%s: subscribe failed: %s", ls[i]->queue,
                    ew_strerror(rcs[i]));
            rc = rcs[i];
        }
    free(ls);
    free(subs);
    free(rcs);
    free(gens);
    return rc;
}

ew_err ew_listen(ew_manager *m, const ew_listener_desc *d, ew_listener_fn fn,
                 void *user)
{
    ewi_last_error_clear();
    if (!m || !d || !d->event || !fn)
        return ewi_fail(EW_EINVAL, "ew_listen: NULL manager, descriptor, event or callback");
    if (d->version != 0)
        return ewi_fail(EW_EINVAL, "ew_listen: ew_listener_desc.version is %u; this "
                        "library knows layout 0", d->version);
    ewi_event *ev;
    ew_err rc = ewi_event_get(m, d->event, &ev);
    if (rc != EW_OK)
        return rc;
    ewi_listener *l = calloc(1, sizeof *l);
    if (!l)
        return ewi_fail(EW_ENOMEM, "ew_listen: out of memory");
    char err[256];
    if ((rc = ewi_queue_names(m, ev->name, d->name, d->per_process, l->queue, l->dlq,
                              err, sizeof err)) != EW_OK ||
        (m->ops->check_names &&
         (rc = m->ops->check_names(m->t, ev->name, d->name, err, sizeof err)) != EW_OK)) {
        ewi_log(m, EW_LOG_ERROR, "ew_listen: %s", err);
        free(l);
        return rc;
    }
    l->m = m;
    l->event = ev;
    l->desc = *d;
    strcpy(l->name, d->name);
    l->desc.name = l->name;
    l->desc.event = &ev->desc;
    l->desc.concurrency = d->concurrency ? d->concurrency : 1;
    l->desc.prefetch = d->prefetch ? d->prefetch : m->default_prefetch;
    if (l->desc.prefetch < l->desc.concurrency)
        l->desc.prefetch = l->desc.concurrency;
    l->retry.attempts = d->retry.attempts ? d->retry.attempts : 3;
    l->retry.backoff_ms = d->retry.backoff_ms ? d->retry.backoff_ms : 100;
    l->retry.multiplier = d->retry.multiplier >= 1.0 ? d->retry.multiplier : 2.0;
    l->retry.max_backoff_ms = d->retry.max_backoff_ms ? d->retry.max_backoff_ms : 10000;
    l->desc.retry = l->retry;
    l->fn = fn;
    l->user = user;
    l->sub = (ewi_sub){.event = ev->name, .listener = l->name, .queue = l->queue,
                       .dlq = l->dlq, .per_process = d->per_process,
                       .durable = ev->desc.durable, .prefetch = l->desc.prefetch,
                       .core = l};
    ewi_mutex_init(&l->mu);
    ewi_cond_init_mono(&l->cv);
    ewi_cond_init_mono(&l->nap_cv);
    ewi_cond_init_mono(&l->idle);
    ewi_cond_init_mono(&l->backoff_cv);

    /* life from registration to activation: ew_unlisten never sees a
     * listener that is registered but not yet subscribed here. */
    pthread_mutex_lock(&m->life);
    pthread_mutex_lock(&m->mu);
    int state = atomic_load(&m->state);
    if (state == EWI_STOPPING || state == EWI_STOPPED) {
        pthread_mutex_unlock(&m->mu);
        pthread_mutex_unlock(&m->life);
        ewi_listener_free(l);
        return ewi_fail(EW_ECLOSED, "ew_listen: the manager is stopping or stopped");
    }
    for (ewi_listener *o = m->listeners; o; o = o->next) {
        if (strcmp(o->queue, l->queue) == 0 ||
            (o->event == ev && strcmp(o->name, l->name) == 0)) {
            pthread_mutex_unlock(&m->mu);
            pthread_mutex_unlock(&m->life);
            ewi_log(m, EW_LOG_ERROR, "ew_listen: %s is already registered", l->queue);
            ewi_listener_free(l);
            return EW_ECONFLICT;
        }
    }
    l->next = m->listeners;
    m->listeners = l;
    pthread_mutex_unlock(&m->mu);

    /* A listener added while the manager runs is subscribed now; start
     * subscribes the others. STARTING: start's loop will reach it. */
    if (state != EWI_STARTED) {
        pthread_mutex_unlock(&m->life);
        return EW_OK;
    }
    ew_err rc2 = atomic_load(&m->state) == EWI_STARTED ? activate(m, l) : EW_ECLOSED;
    if (rc2 != EW_OK) {
        /* Never leave a listener registered but dead: a retry of ew_listen
         * must be able to register it again. */
        pthread_mutex_lock(&m->mu);
        for (ewi_listener **p = &m->listeners; *p; p = &(*p)->next)
            if (*p == l) {
                *p = l->next;
                break;
            }
        pthread_mutex_unlock(&m->mu);
        if (l->subscribed)
            m->ops->unsubscribe(m->t, &l->sub);
        l->subscribed = false;
        ewi_listener_drain(l, ewi_now_ms());
        ewi_listener_free(l);
    }
    pthread_mutex_unlock(&m->life);
    if (rc2 == EW_ECLOSED && !ewi_last_error_peek()[0])
        ewi_set_last_error("ew_listen: the manager is stopping or stopped");
    return rc2;
}

ew_err ew_unlisten(ew_manager *m, const ew_listener_desc *d, unsigned flags)
{
    ewi_last_error_clear();
    if (!m || !d || !d->event)
        return ewi_fail(EW_EINVAL, "ew_unlisten: NULL manager, descriptor or event");
    if (d->version != 0 || d->event->version != 0)
        return ewi_fail(EW_EINVAL, "ew_unlisten: descriptor version %u; this library "
                        "knows layout 0", d->version ? d->version : d->event->version);
    if (flags & ~(unsigned)EW_UNLISTEN_DELETE_QUEUE)
        return ewi_fail(EW_EINVAL, "ew_unlisten: unknown flags 0x%x", flags);
    bool del = flags & EW_UNLISTEN_DELETE_QUEUE;
    char queue[EW_MAX_QUEUE_NAME], err[256];
    ew_err rc = ewi_queue_names(m, desc_name(d->event), d->name, d->per_process, queue,
                                NULL, err, sizeof err);
    if (rc != EW_OK)
        return ewi_fail(rc, "ew_unlisten: %s", err);
    if (del && !d->per_process)
        return ewi_fail(EW_EINVAL, "ew_unlisten: %s is shared by every server of listener "
                        "%s: only a per_process listener's queue may be deleted", queue,
                        d->name);

    /* Under life: a stop, a start's activation and another ew_unlisten do
     * not run meanwhile. */
    pthread_mutex_lock(&m->life);
    pthread_mutex_lock(&m->mu);
    int state = atomic_load(&m->state);
    ewi_listener **pl = &m->listeners;
    while (*pl && strcmp((*pl)->queue, queue) != 0)
        pl = &(*pl)->next;
    ewi_listener *l = *pl;
    if (state == EWI_STOPPING || state == EWI_STOPPED)
        rc = ewi_fail(EW_ECLOSED, "ew_unlisten: the manager is stopping or stopped");
    else if (state == EWI_STARTING)
        rc = ewi_fail(EW_ESTATE, "ew_unlisten: the manager is starting");
    else if (!l)
        rc = ewi_fail(EW_ENOTFOUND, "ew_unlisten: no listener %s is registered", queue);
    else if (del && state == EWI_NEW)
        rc = ewi_fail(EW_ESTATE, "ew_unlisten: %s: the manager is not started, so its "
                      "queue cannot be deleted", queue);
    else if (del && !m->ops->delete_queue)
        rc = ewi_fail(EW_ENOTSUP, "ew_unlisten: %s: the %s transport cannot delete a queue",
                      queue, m->ops->name);
    else if (del && (err[0] = '\0', m->ops->delete_queue(m->t, &l->sub, true, err,
                                                         sizeof err)) != EW_OK)
        rc = ewi_fail(EW_ENOTSUP, "ew_unlisten: %s: %s", queue,
                      err[0] ? err : "this transport cannot delete a queue");
    if (rc == EW_OK)
        *pl = l->next; /* ready, metrics and sends no longer see it */
    pthread_mutex_unlock(&m->mu);
    if (rc != EW_OK) {
        pthread_mutex_unlock(&m->life);
        return rc;
    }
    if (l->subscribed) {
        m->ops->unsubscribe(m->t, &l->sub);
        l->subscribed = false;
        atomic_store(&l->consuming, false);
    }
    /* What it was handed and did not start goes back; running handlers
     * finish and settle (free waits for them past the bound). */
    ewi_listener_drain(l, ewi_now_ms() + m->cfg.send_timeout_ms);
    /* The sub outlives the listener for the delete (its strings copied). */
    char event[EW_MAX_EVENT_NAME + 1], name[EW_MAX_LISTENER_NAME + 1];
    strcpy(event, l->event->name);
    strcpy(name, l->name);
    ewi_sub sub = l->sub;
    sub.event = event;
    sub.listener = name;
    sub.queue = queue;
    sub.dlq = NULL;
    sub.core = NULL;
    ewi_listener_free(l); /* joins its workers: every handler has returned */
    if (del) {
        err[0] = '\0';
        rc = m->ops->delete_queue(m->t, &sub, false, err, sizeof err);
        if (rc != EW_OK)
            ewi_report(m, rc, queue, event, NULL, "ew_unlisten: deleting queue %s failed: %s",
                       queue, err[0] ? err : ew_strerror(rc));
        else
            ewi_log(m, EW_LOG_INFO, "%s: unlistened, queue deleted", queue);
    } else {
        ewi_log(m, EW_LOG_INFO, "%s: unlistened", queue);
    }
    pthread_mutex_unlock(&m->life);
    return rc;
}

ew_err ew_manager_start(ew_manager *m)
{
    ewi_last_error_clear();
    if (!m)
        return ewi_fail(EW_EINVAL, "ew_manager_start: the manager is NULL");
    int expected = EWI_NEW;
    if (!atomic_compare_exchange_strong(&m->state, &expected, EWI_STARTING))
        return ewi_fail(EW_ESTATE, "ew_manager_start: the manager was started already");
    ew_err rc = m->ops->start(m->t, m->cfg.start_timeout_ms);
    if (rc != EW_OK) {
        ewi_log(m, EW_LOG_ERROR, "start on %s failed: %s", m->url_redacted,
                ew_strerror(rc));
        atomic_store(&m->state, EWI_NEW);
        return rc;
    }
    /* Declare and subscribe everything registered so far. Listeners added
     * meanwhile land at the list's head and are caught by the re-scan; the
     * state turns STARTED under the lock once nothing is left, so ew_listen
     * either sees STARTED (and subscribes itself) or is caught here. */
    pthread_mutex_lock(&m->mu);
    ewi_event *events = m->events;
    pthread_mutex_unlock(&m->mu);
    for (ewi_event *ev = events; ev; ev = ev->next)
        if ((rc = ewi_event_declare(m, ev)) != EW_OK)
            goto fail;
    if (m->ops->subscribe_many && (rc = activate_all(m)) != EW_OK)
        goto fail;
    for (;;) {
        ewi_listener *todo = NULL;
        pthread_mutex_lock(&m->mu);
        for (ewi_listener *l = m->listeners; l; l = l->next)
            if (!l->subscribed && !l->started)
                todo = l;
        if (!todo)
            atomic_store(&m->state, EWI_STARTED);
        pthread_mutex_unlock(&m->mu);
        if (!todo)
            break;
        if ((rc = activate(m, todo)) != EW_OK)
            goto fail;
    }
    ewi_log(m, EW_LOG_INFO, "manager %s started", m->server);
    return EW_OK;
fail:;
    /* The stop must not replace the reason start failed. */
    char why[1024];
    snprintf(why, sizeof why, "%s", ewi_last_error_peek());
    atomic_store(&m->state, EWI_STARTED);
    ew_manager_stop(m, 0);
    ewi_set_last_error("%s", why[0] ? why : ew_strerror(rc));
    return rc;
}

/* Messages of l not handled yet: on its transport queue when the stop
 * began, or handed to l and not finished by a worker. From the first call
 * on, l receives no message that arrived later. */
static size_t pending(ew_manager *m, ewi_listener *l)
{
    size_t n = m->ops->backlog(m->t, &l->sub);
    pthread_mutex_lock(&l->mu);
    n += ewi_queued(l) + l->busy;
    pthread_mutex_unlock(&l->mu);
    return n;
}

/* Lets the listeners handle what their in-process queues held when the
 * stop began, until the deadline; then reports, per queue, how many of
 * those were not handled. */
static void deliver_backlog(ew_manager *m, ewi_listener *all, int64_t deadline,
                            int timeout_ms)
{
    /* Marks every queue's end first: none takes a later message meanwhile. */
    for (ewi_listener *l = all; l; l = l->next)
        if (l->subscribed)
            m->ops->backlog(m->t, &l->sub);
    for (ewi_listener *l = all; l; l = l->next) {
        if (!l->subscribed)
            continue;
        size_t left;
        while ((left = pending(m, l)) > 0 && ewi_left_ms(deadline) > 0)
            ewi_sleep_ms(1);
        if (left == 0)
            continue;
        /* Handlers still running get the stop's timeout below; the rest is
         * not handled by this manager. */
        pthread_mutex_lock(&l->mu);
        left = ewi_queued(l);
        pthread_mutex_unlock(&l->mu);
        left += m->ops->backlog(m->t, &l->sub);
        if (left > 0)
            ewi_report(m, EW_ETIMEDOUT, l->queue, l->event->name, NULL,
                       "stop: %zu queued message(s) not handled within %d ms; "
                       "they stay on the in-process queue %s and are lost when "
                       "the last manager on it is freed",
                       left, timeout_ms, l->queue);
    }
}

ew_err ew_manager_stop(ew_manager *m, int timeout_ms)
{
    ewi_last_error_clear();
    if (!m)
        return ewi_fail(EW_EINVAL, "ew_manager_stop: the manager is NULL");
    int state = EWI_NEW;
    if (atomic_compare_exchange_strong(&m->state, &state, EWI_STOPPED))
        return EW_OK;
    state = EWI_STARTED;
    if (!atomic_compare_exchange_strong(&m->state, &state, EWI_STOPPING))
        return state == EWI_STOPPED || state == EWI_STOPPING
                   ? EW_OK
                   : ewi_fail(EW_ESTATE, "ew_manager_stop: the manager is starting");
    int64_t deadline = ewi_now_ms() + (timeout_ms > 0 ? timeout_ms : 0);
    ew_err result = EW_OK;

    pthread_mutex_lock(&m->life);
    pthread_mutex_lock(&m->mu);
    ewi_listener *all = m->listeners; /* ew_listen adds and ew_unlisten removes, under life */
    pthread_mutex_unlock(&m->mu);
    /* 0. Queues that die with this process are handled first. */
    if (m->ops->features & EWI_FEAT_VOLATILE)
        deliver_backlog(m, all, deadline, timeout_ms);
    /* 1. No new deliveries. */
    for (ewi_listener *l = all; l; l = l->next)
        if (l->subscribed) {
            m->ops->unsubscribe(m->t, &l->sub);
            l->subscribed = false;
            atomic_store(&l->consuming, false);
        }
    /* 2. In-flight handlers finish; the rest goes back to the broker. */
    for (ewi_listener *l = all; l; l = l->next)
        if (ewi_listener_drain(l, deadline) != EW_OK)
            result = EW_ETIMEDOUT;
    pthread_mutex_unlock(&m->life);
    /* 3. Asynchronous sends complete (the transport fails them past their
     * own deadline). */
    if (ew_flush(m, ewi_left_ms(deadline) + m->cfg.send_timeout_ms) != EW_OK)
        result = EW_ETIMEDOUT;
    m->ops->stop(m->t);
    atomic_store(&m->state, EWI_STOPPED);
    if (result != EW_OK) {
        ewi_log(m, EW_LOG_WARN, "stop: handlers still running after %d ms", timeout_ms);
        ewi_set_last_error("ew_manager_stop: handlers or sends still running after %d ms",
                           timeout_ms);
    }
    ewi_log(m, EW_LOG_INFO, "manager %s stopped", m->server);
    return result;
}

void ew_manager_free(ew_manager *m)
{
    if (!m)
        return;
    ew_manager_stop(m, m->cfg.send_timeout_ms);
    for (ewi_listener *l = m->listeners, *next; l; l = next) {
        next = l->next;
        ewi_listener_free(l);
    }
    ewi_pool_free(m);
    if (m->t)
        m->ops->destroy(m->t);
    for (ewi_event *ev = m->events, *next; ev; ev = next) {
        next = ev->next;
        free(ev);
    }
    for (ewi_pipes *p = ewi_pipes_get(m), *older; p; p = older) {
        older = p->older;
        if (p->n)
            free(p->items[p->n - 1].name);
        free(p);
    }
    ewi_url_free(&m->url);
    free(m->url_redacted);
    pthread_mutex_destroy(&m->mu);
    pthread_mutex_destroy(&m->life);
    pthread_mutex_destroy(&m->fmu);
    pthread_cond_destroy(&m->fcv);
    free(m);
}
