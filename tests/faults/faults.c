/* The fault programs' shared parts: see faults.h. */
#include "faults.h"

#include <malloc.h>

#if defined(__SANITIZE_ADDRESS__)
#define FAULTS_ASAN 1
#elif defined(__has_feature)
#if __has_feature(address_sanitizer)
#define FAULTS_ASAN 1
#endif
#endif
#ifdef FAULTS_ASAN
/* The sanitizer runtime's count of live heap bytes (its header is not
 * always installed with gcc). */
size_t __sanitizer_get_current_allocated_bytes(void);
void __sanitizer_print_memory_profile(size_t top_percent, size_t max_number_of_contexts);
#endif

void fcapture_init(fcapture *c)
{
    capture_init(c);
    c->keep_level = EW_LOG_WARN;
}

void heap_profile(void)
{
#ifdef FAULTS_ASAN
    if (getenv("EW_FAULT_HEAP_PROFILE"))
        __sanitizer_print_memory_profile(90, 8);
#endif
}

ftarget ftarget_of(const char *url)
{
    ftarget t = {.url = url};
    ewi_url u;
    char err[128];
    if (ewi_url_parse(url, &u, err, sizeof err) != EW_OK)
        fail_msg("bad URL %s: %s", url, err);
    const char *dialect = ewi_url_param(&u, "dialect");
    if (strcmp(u.scheme, "local") == 0) {
        t.local = true;
        snprintf(t.name, sizeof t.name, "local");
    } else if (strcmp(u.scheme, "rabbitmq") == 0) {
        t.is_rabbitmq = t.rmq_backed = true;
        t.port = u.port ? u.port : 5672;
        snprintf(t.name, sizeof t.name, "rabbitmq");
    } else if (strcmp(u.scheme, "stomp") == 0) {
        t.is_stomp = true;
        t.port = u.port ? u.port : 61613;
        t.stomp_rmq = t.rmq_backed = dialect && strcmp(dialect, "rabbitmq") == 0;
        snprintf(t.name, sizeof t.name, "stomp-%s", dialect ? dialect : "?");
    } else if (strcmp(u.scheme, "amqp") == 0) {
        t.is_amqp10 = true;
        t.port = u.port ? u.port : 5672;
        t.rmq_backed = dialect && strcmp(dialect, "rabbitmq") == 0;
        snprintf(t.name, sizeof t.name, "amqp-%s", dialect ? dialect : "artemis");
    } else {
        fail_msg("no fault scenarios for scheme %s", u.scheme);
    }
    ewi_url_free(&u);
    return t;
}

const char *url_with(char *buf, size_t len, const char *url, int port, const char *extra)
{
    const char *auth = strstr(url, "://");
    assert_non_null(auth);
    auth += 3;
    size_t alen = strcspn(auth, "/?");
    const char *at = memchr(auth, '@', alen);
    const char *hostp = at ? at + 1 : auth;
    size_t hlen = alen - (size_t)(hostp - auth);
    const char *colon = memchr(hostp, ':', hlen);
    size_t keep = (size_t)((colon ? colon : hostp + hlen) - url);
    const char *rest = auth + alen;
    int n;
    if (port)
        n = snprintf(buf, len, "%.*s:%d%s", (int)keep, url, port, rest);
    else
        n = snprintf(buf, len, "%s", url);
    assert_true(n > 0 && (size_t)n < len);
    if (extra && *extra) {
        size_t used = strlen(buf);
        n = snprintf(buf + used, len - used, "%s%s", strchr(buf, '?') ? "&" : "?", extra);
        assert_true(n > 0 && (size_t)n < len - used);
    }
    return buf;
}

const char *fast_heartbeat(const ftarget *t)
{
    if (t->is_rabbitmq)
        return "heartbeat=1";
    if (t->is_stomp || t->is_amqp10)
        return "heartbeat_ms=1000";
    return NULL;
}

static void quiet_log_(void *user, ew_log_level level, const char *msg)
{
    (void)user;
    (void)level;
    (void)msg;
}

const char *fast_heartbeat_supported(const ftarget *t)
{
    const char *opt = fast_heartbeat(t);
    if (!opt)
        return NULL;
    char url[512];
    url_with(url, sizeof url, t->url, 0, opt);
    ew_options o = {.log = quiet_log_};
    ew_manager *m = NULL;
    ew_err rc = ew_manager_new(&m, url, &o);
    ew_manager_free(m);
    return rc == EW_OK ? opt : NULL;
}

void fpath_open(fpath *p, const ftarget *t, bool up, const char *extra)
{
    memset(p, 0, sizeof *p);
    p->main = relay_new(0, t->port, up);
    assert_non_null(p->main);
    char opts[256];
    snprintf(opts, sizeof opts, "%s", extra ? extra : "");
    if (t->stomp_rmq) {
        p->topo = relay_new(0, 5672, up);
        assert_non_null(p->topo);
        size_t used = strlen(opts);
        snprintf(opts + used, sizeof opts - used, "%samqp_port=%d", used ? "&" : "",
                 relay_port(p->topo));
    }
    url_with(p->url, sizeof p->url, t->url, relay_port(p->main), opts);
}

void fpath_freeze(fpath *p)
{
    relay_freeze(p->main);
    if (p->topo)
        relay_freeze(p->topo);
}

void fpath_break(fpath *p)
{
    relay_break(p->main);
    if (p->topo)
        relay_break(p->topo);
}

void fpath_restore(fpath *p)
{
    if (p->topo)
        relay_restore(p->topo);
    relay_restore(p->main);
}

void fpath_close(fpath *p)
{
    relay_free(p->main);
    relay_free(p->topo);
    p->main = p->topo = NULL;
}

void flow_init(flow *f, size_t n)
{
    tally_init(&f->t, n);
    atomic_init(&f->last_ms, 0);
    atomic_init(&f->mark_ms, 0);
    atomic_init(&f->first_after_mark_ms, 0);
}

ew_err flow_listener(ew_delivery *d, const void *event, void *user)
{
    tally_ref *r = user;
    flow *f = (flow *)r->t;
    int rc = tally_listener_ref(d, event, r);
    int64_t now = ewi_now_ms();
    atomic_store(&f->last_ms, now);
    int64_t mark = atomic_load(&f->mark_ms), zero = 0;
    if (mark && rc == EW_OK)
        atomic_compare_exchange_strong(&f->first_after_mark_ms, &zero, now);
    return rc;
}

void flow_mark(flow *f)
{
    atomic_store(&f->first_after_mark_ms, 0);
    atomic_store(&f->mark_ms, ewi_now_ms());
}

int64_t flow_resume_ms(flow *f)
{
    int64_t first = atomic_load(&f->first_after_mark_ms);
    return first ? first - atomic_load(&f->mark_ms) : -1;
}

void flow_listen(ew_manager *m, const ew_event_desc *ev, const char *name,
                 uint32_t concurrency, uint32_t prefetch, flow *f, const char *label)
{
    ew_listener_desc d = {.event = ev, .name = name, .concurrency = concurrency,
                          .prefetch = prefetch};
    ew_err rc = ew_listen(m, &d, flow_listener, tref(&f->t, label));
    if (rc != EW_OK)
        fail_msg("ew_listen(%s): %s", name, ew_strerror(rc));
}

size_t flow_missing(flow *f)
{
    size_t k = 0;
    pthread_mutex_lock(&f->t.mu);
    for (size_t i = 0; i < f->t.n; i++)
        k += !f->t.seen[i];
    pthread_mutex_unlock(&f->t.mu);
    return k;
}

void fsends_init(fsends *s, size_t n)
{
    s->mem = calloc(n, sizeof *s->state);
    s->state = s->mem;
    s->n = n;
    atomic_init(&s->ok, 0);
    atomic_init(&s->failed, 0);
}

void fsends_free(fsends *s)
{
    free(s->mem);
}

static void fsend_done_(void *user, ew_err err)
{
    fsend_ref *r = user;
    atomic_store(&r->s->state[r->id], err == EW_OK ? 1 : 2);
    if (err == EW_OK)
        atomic_fetch_add(&r->s->ok, 1);
    else
        atomic_fetch_add(&r->s->failed, 1);
    free(r);
}

ew_err fsend_async_text(ew_manager *m, const ew_event_desc *ev, fsends *s, size_t id,
                        const char *text)
{
    fsend_ref *r = malloc(sizeof *r);
    assert_non_null(r);
    r->s = s;
    r->id = id;
    conf_event e = {.id = (int64_t)id, .text = text};
    ew_err rc = ew_send_async(m, ev, NULL, &e, fsend_done_, r);
    if (rc != EW_OK) {
        free(r);
        atomic_store(&s->state[id], 2);
        atomic_fetch_add(&s->failed, 1);
    }
    return rc;
}

ew_err fsend_async(ew_manager *m, const ew_event_desc *ev, fsends *s, size_t id)
{
    return fsend_async_text(m, ev, s, id, FAULTS_TEXT);
}

size_t lost_of(fsends *s, flow *f)
{
    size_t k = 0;
    pthread_mutex_lock(&f->t.mu);
    for (size_t i = 0; i < s->n && i < f->t.n; i++)
        k += atomic_load(&s->state[i]) == 1 && !f->t.seen[i];
    pthread_mutex_unlock(&f->t.mu);
    return k;
}

ew_err fdlq_collect(void *user, const ew_envelope *env)
{
    fdlq *b = user;
    b->n++;
    const char *reason = ew_envelope_header(env, EW_HDR_DLQ_REASON);
    size_t r = 4;
    if (reason) {
        for (r = 0; r < 4 && strcmp(FDLQ_REASON[r], reason) != 0; r++)
            ;
        if (r == 4)
            r = 5;
    }
    b->by_reason[r]++;
    const char *h = ew_envelope_header(env, EW_HDR_DLQ_ERROR);
    snprintf(b->error[r], sizeof b->error[r], "%s", h ? h : "");
    h = ew_envelope_header(env, EW_HDR_DLQ_QUEUE);
    snprintf(b->queue, sizeof b->queue, "%s", h ? h : "");
    h = ew_envelope_content_type(env);
    snprintf(b->last_ct, sizeof b->last_ct, "%s", h ? h : "");
    size_t len;
    const void *body = ew_envelope_body(env, &len);
    if (len > b->biggest_body)
        b->biggest_body = len;
    void *ev = NULL;
    if (b->nids < FDLQ_IDS && len < 4096 &&
        ew_decode(&conf_event_type, ew_format_from_content_type(ew_envelope_content_type(env)),
                  body, len, NULL, &ev, NULL, 0) == EW_OK) {
        b->ids[b->nids] = ((conf_event *)ev)->id;
        h = ew_envelope_header(env, EW_HDR_DLQ_ATTEMPTS);
        snprintf(b->attempts[b->nids], sizeof b->attempts[0], "%s", h ? h : "");
        b->nids++;
        ew_event_free(&conf_event_type, ev);
    }
    return EW_OK;
}

size_t fdlq_take(ew_manager *m, const ew_event_desc *ev, const char *listener, fdlq *b,
                 size_t want, int quiet_ms)
{
    size_t before = b->n;
    while (b->n - before < want) {
        size_t got = 0;
        size_t ask = want - (b->n - before);
        ew_err rc = ew_dead_letters(m, &(ew_dead_letter_options){.event = ev, .listener = listener, .max = ask < 64 ? ask : 64, .timeout_ms = quiet_ms, .fn = fdlq_collect, .user = b}, &got);
        if (rc != EW_OK) {
            print_message("ew_dead_letters: %s\n", ew_strerror(rc));
            break;
        }
        if (got == 0)
            break;
    }
    return b->n - before;
}

long rss_kib(void)
{
    FILE *f = fopen("/proc/self/status", "r");
    if (!f)
        return -1;
    char line[256];
    long kb = -1;
    while (fgets(line, sizeof line, f))
        if (sscanf(line, "VmRSS: %ld kB", &kb) == 1)
            break;
    fclose(f);
    return kb;
}

size_t heap_live_bytes(void)
{
#ifdef FAULTS_ASAN
    return __sanitizer_get_current_allocated_bytes();
#else
    struct mallinfo2 mi = mallinfo2();
    return mi.uordblks + mi.hblkhd;
#endif
}

void cleanup_event(const ftarget *t, const char *event, const char *const *listeners)
{
    if (t->rmq_backed)
        rmq_cleanup(0, event, listeners);
}

const char *err_name(ew_err rc)
{
    const char *n = ew_errname(rc);
    return n ? n : "EW_E?";
}

void fault_result(const char *scenario, const ftarget *t, const char *fmt, ...)
{
    char fields[1024];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(fields, sizeof fields, fmt, ap);
    va_end(ap);
    char line[1200];
    snprintf(line, sizeof line, "RESULT scenario=%s transport=%s %s\n", scenario, t->name,
             fields);
    fputs(line, stdout);
    fflush(stdout);
    const char *path = getenv("EW_FAULT_RESULTS");
    if (path && *path) {
        FILE *f = fopen(path, "a");
        if (f) {
            fputs(line, f);
            fclose(f);
        }
    }
}
